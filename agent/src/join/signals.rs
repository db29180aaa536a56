//! What a person needs to know, computed once from the snapshot's own figures
//! (so every sink shows the same): which servers each process works for,
//! launch-bound processes, and tokens per second and energy per output token
//! per GPU and per model.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{
    LAUNCH_BOUND_MAX_SM_PERCENT, LAUNCH_BOUND_MIN_RATE, ServerRef, Signal, Snapshot, per_second,
};

/// Longest parent chain followed (a loop guard; real chains are a few deep).
const MAX_ANCESTORS: usize = 32;

pub fn derive(s: &mut Snapshot) {
    let parents: HashMap<u32, u32> = s
        .processes
        .iter()
        .map(|p| (p.identity.pid, p.identity.ppid))
        .collect();
    let servers: BTreeMap<u32, Vec<ServerRef>> = s.servers.iter().fold(BTreeMap::new(), |mut m, v| {
        m.entry(v.pid).or_insert_with(Vec::new).push(ServerRef {
            pid: v.pid,
            port: v.port,
        });
        m
    });
    // The servers a pid works for: its own, or its nearest ancestor's.
    let serves = |pid: u32| -> Vec<ServerRef> {
        let mut at = pid;
        for _ in 0..MAX_ANCESTORS {
            if let Some(own) = servers.get(&at) {
                return own.clone();
            }
            match parents.get(&at) {
                Some(&parent) if parent > 1 => at = parent,
                _ => break,
            }
        }
        Vec::new()
    };
    let interval = s.interval;
    for p in &mut s.processes {
        p.serves = serves(p.identity.pid);
        let launches_per_second = per_second(p.gpu.delta.kernel_launches as f64, interval);
        let sm = p.gpus.iter().filter_map(|g| g.usage.sm_utilization_percent).max();
        if let Some(sm) = sm
            && launches_per_second >= LAUNCH_BOUND_MIN_RATE
            && sm <= LAUNCH_BOUND_MAX_SM_PERCENT
        {
            p.signals.push(Signal::LaunchBound {
                kernel_launches_per_second: launches_per_second,
                sm_utilization_percent: sm,
            });
        }
    }

    // Output tokens of the interval per server, all models together.
    let tokens: BTreeMap<ServerRef, u64> = s
        .servers
        .iter()
        .map(|v| {
            let key = ServerRef {
                pid: v.pid,
                port: v.port,
            };
            (key, v.models.iter().map(|m| m.requests.delta.output_tokens).sum())
        })
        .collect();
    // Which servers each device works for, and the energy it used in the interval.
    let mut device_servers: Vec<BTreeSet<ServerRef>> = Vec::with_capacity(s.devices.len());
    for d in &mut s.devices {
        let on_it: BTreeSet<ServerRef> = d.processes.iter().flat_map(|p| serves(p.pid)).collect();
        let device_tokens: u64 = on_it.iter().filter_map(|k| tokens.get(k)).sum();
        if !on_it.is_empty() && !interval.is_zero() {
            d.output_tokens_per_second = Some(per_second(device_tokens as f64, interval));
        }
        if let Some(energy) = &d.energy_joules
            && device_tokens > 0
        {
            d.energy_per_output_token_joules = Some(energy.delta / device_tokens as f64);
        }
        device_servers.push(on_it);
    }
    // Each model's share of the energy of the devices its server uses, by tokens.
    for server in &mut s.servers {
        let key = ServerRef {
            pid: server.pid,
            port: server.port,
        };
        let devices: Vec<(f64, u64)> = s
            .devices
            .iter()
            .zip(&device_servers)
            .filter(|(_, on_it)| on_it.contains(&key))
            .filter_map(|(d, on_it)| {
                let energy = d.energy_joules.as_ref()?.delta;
                let device_tokens = on_it.iter().filter_map(|k| tokens.get(k)).sum();
                Some((energy, device_tokens))
            })
            .collect();
        if devices.is_empty() {
            continue;
        }
        for m in &mut server.models {
            let t = m.requests.delta.output_tokens;
            if t == 0 {
                continue;
            }
            let energy: f64 = devices
                .iter()
                .filter(|&&(_, total)| total > 0)
                .map(|&(e, total)| e * t as f64 / total as f64)
                .sum();
            m.energy_joules = Some(energy);
            m.energy_per_output_token_joules = Some(energy / t as f64);
        }
    }
}
