//! One row per process: its requests (if it serves) and its GPU work (if it
//! has any), from the latest snapshot and the requests of a recent window.

use std::{collections::BTreeMap, time::Duration};

use crate::model::{RequestRecord, Snapshot, percentile};

/// What the list shows of one process; `None` where a figure does not apply
/// (a server's GPU columns without a runtime, a GPU worker's request columns).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    pub requests_per_second: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p95_s: Option<f64>,
    pub itl_p50_s: Option<f64>,
    pub itl_p95_s: Option<f64>,
    pub waiting: Option<u64>,
    pub running: Option<u64>,
    pub tokens_per_second: Option<f64>,
    pub launches_per_second: Option<f64>,
    /// Seconds blocked in GPU synchronisation per second (over its threads).
    pub sync_share: Option<f64>,
    /// NVML's figure where present, else the bytes live through the runtime's allocations.
    pub gpu_memory_bytes: Option<u64>,
    pub sm_percent: Option<u32>,
    pub joules_per_token: Option<f64>,
    /// It ended during the latest interval.
    pub exited: bool,
}

/// Every process of the snapshot, with request figures over `recent`: the
/// requests that finished in the last `span`.
pub fn rows<'a>(s: &Snapshot, recent: impl Iterator<Item = &'a RequestRecord>, span: Duration) -> Vec<Row> {
    let mut rows: BTreeMap<u32, Row> = BTreeMap::new();
    let interval = s.interval.as_secs_f64();
    let rate = |n: f64| if interval > 0.0 { n / interval } else { 0.0 };
    for p in &s.processes {
        let d = &p.gpu.delta;
        let nvml_memory: Option<u64> = p
            .gpus
            .iter()
            .filter_map(|g| g.usage.memory_used_bytes)
            .reduce(|a, b| a + b);
        rows.insert(
            p.identity.pid,
            Row {
                pid: p.identity.pid,
                comm: p.identity.comm.clone(),
                launches_per_second: Some(rate(d.kernel_launches as f64)),
                sync_share: Some(rate(d.sync_seconds)),
                gpu_memory_bytes: nvml_memory.or(u64::try_from(p.gpu.total.live_bytes).ok()),
                sm_percent: p.gpus.iter().filter_map(|g| g.usage.sm_utilization_percent).max(),
                exited: p.exited,
                ..Row::default()
            },
        );
    }
    let span = span.as_secs_f64().max(f64::MIN_POSITIVE);
    for v in &s.servers {
        let row = rows.entry(v.pid).or_insert_with(|| Row {
            pid: v.pid,
            comm: v.comm.clone().unwrap_or_default(),
            ..Row::default()
        });
        row.waiting = Some(row.waiting.unwrap_or(0) + v.queue.waiting);
        row.running = Some(row.running.unwrap_or(0) + v.queue.running);
        let (energy, tokens) = v
            .models
            .iter()
            .filter_map(|m| Some((m.energy_joules?, m.requests.delta.output_tokens)))
            .fold((None, 0), |(e, t), (j, n)| (Some(e.unwrap_or(0.0) + j), t + n));
        if let Some(e) = energy.filter(|_| tokens > 0) {
            row.joules_per_token = Some(e / tokens as f64);
        }
    }
    let mut by_pid: BTreeMap<u32, Vec<&RequestRecord>> = BTreeMap::new();
    for r in recent {
        by_pid.entry(r.pid).or_default().push(r);
    }
    for (pid, row) in rows.iter_mut() {
        if row.waiting.is_none() {
            continue;
        }
        let mine = by_pid.remove(pid).unwrap_or_default();
        let mut ttft: Vec<f64> = mine.iter().filter_map(|r| r.ttft_s).collect();
        let mut itl: Vec<f64> = mine.iter().flat_map(|r| r.itl_s.iter().copied()).collect();
        let tokens = crate::model::saturating_sum(mine.iter().filter_map(|r| r.output_tokens));
        row.requests_per_second = Some(mine.len() as f64 / span);
        row.tokens_per_second = Some(tokens as f64 / span);
        row.ttft_p50_s = percentile(&mut ttft, 50.0);
        row.ttft_p95_s = percentile(&mut ttft, 95.0);
        row.itl_p50_s = percentile(&mut itl, 50.0);
        row.itl_p95_s = percentile(&mut itl, 95.0);
    }
    rows.into_values().collect()
}

/// What the list is ordered by (highest first, pid ascending).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Requests,
    TtftP95,
    Launches,
    GpuMemory,
    Pid,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::Requests,
        SortKey::TtftP95,
        SortKey::Launches,
        SortKey::GpuMemory,
        SortKey::Pid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Requests => "REQ/s",
            SortKey::TtftP95 => "TTFT p95",
            SortKey::Launches => "LAUNCH/s",
            SortKey::GpuMemory => "GPU MEM",
            SortKey::Pid => "PID",
        }
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// Orders `rows` by this key.
    pub fn sort(self, rows: &mut [Row]) {
        let key = |r: &Row| -> f64 {
            match self {
                SortKey::Requests => r.requests_per_second.unwrap_or(-1.0),
                SortKey::TtftP95 => r.ttft_p95_s.unwrap_or(-1.0),
                SortKey::Launches => r.launches_per_second.unwrap_or(-1.0),
                SortKey::GpuMemory => r.gpu_memory_bytes.map_or(-1.0, |b| b as f64),
                SortKey::Pid => -f64::from(r.pid),
            }
        };
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
    }
}
