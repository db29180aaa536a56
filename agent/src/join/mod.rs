//! Builds each interval's [`Snapshot`] from what the sources read: per process
//! (identity, runtimes, GPU activity), per server and model (finished requests,
//! queue), and drops. This is the one place totals and deltas are computed, so
//! that every sink shows the same numbers; [`signals`] then derives what a
//! person needs from the whole snapshot.

mod signals;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use inferscope_shared::GpuStats;

use crate::{
    derive::requests::{QueueReport, ServerKey},
    model::{
        Counted, DeviceView, GpuActivity, GpuEvent, GpuEventKind, ModelView, PodView, ProcessGpu,
        ProcessView, QueueView, RequestRecord, RequestStats, SCHEMA_VERSION, ServerRef, ServerView, Snapshot,
        gpu::zip_with,
    },
    sources::{ProcessReading, Readings},
};

/// What is carried from one interval to the next: the previous readings and running totals.
#[derive(Default)]
pub struct Join {
    gpu_seen: HashMap<u32, GpuStats>,
    servers: BTreeMap<ServerKey, ServerTotals>,
    drops_seen: BTreeMap<String, u64>,
    dropped_requests_seen: BTreeMap<String, u64>,
    devices_seen: HashMap<String, DeviceTotals>,
    /// Each pod's GPU counters summed over the interval deltas of its processes.
    pods_seen: HashMap<(String, String), GpuStats>,
}

/// A device's counted figures at the last snapshot.
#[derive(Default)]
struct DeviceTotals {
    energy_joules: Option<f64>,
    ecc_corrected: Option<u64>,
    ecc_uncorrected: Option<u64>,
    xid_errors: u64,
}

#[derive(Default)]
struct ServerTotals {
    /// Its process's command name, kept once known (its last snapshot comes after it exited).
    comm: Option<String>,
    arrivals: u64,
    waiting_time_s: f64,
    models: BTreeMap<String, RequestStats>,
}

impl Join {
    pub fn snapshot(&mut self, readings: Readings) -> Snapshot {
        let Readings {
            time,
            interval,
            processes,
            finished,
            queues,
            server_comms,
            drops,
            dropped_requests,
            devices,
            gpu_events,
        } = readings;
        let devices = self.devices(devices, &gpu_events);
        let (mut processes, deltas) = self.processes(processes);
        for p in &mut processes {
            p.gpus = gpus_of(p.identity.pid, &devices);
        }
        // Server processes are named by the server source, GPU processes by their own identity.
        let mut comms = server_comms;
        for p in &processes {
            comms
                .entry(p.identity.pid)
                .or_insert_with(|| p.identity.comm.clone());
        }
        let mut snapshot = Snapshot {
            schema: SCHEMA_VERSION,
            time,
            interval,
            servers: self.servers(&finished, &queues, &comms),
            processes,
            devices,
            pods: Vec::new(),
            gpu_events,
            drops: by_reason(
                drops.by_reason().map(|(r, n)| (r.name(), n)),
                &mut self.drops_seen,
            ),
            dropped_requests: by_reason(
                dropped_requests.into_iter().map(|(r, n)| (r.name(), n)),
                &mut self.dropped_requests_seen,
            ),
        };
        signals::derive(&mut snapshot);
        snapshot.pods = self.pods(&snapshot, &deltas);
        snapshot
    }

    /// Sums each pod's processes: GPU activity (totals kept across exits), device memory, requests.
    fn pods(&mut self, s: &Snapshot, deltas: &HashMap<u32, GpuStats>) -> Vec<PodView> {
        let mut members: BTreeMap<(String, String), Vec<&ProcessView>> = BTreeMap::new();
        for p in &s.processes {
            if let Some(pod) = &p.pod {
                members
                    .entry((pod.namespace.clone(), pod.name.clone()))
                    .or_default()
                    .push(p);
            }
        }
        let mut seen = HashMap::with_capacity(members.len());
        let pods = members
            .into_iter()
            .map(|(key, procs)| {
                let add = |a: &GpuStats, b: &GpuStats| zip_with(a, b, u64::wrapping_add);
                let delta = procs
                    .iter()
                    .filter_map(|p| deltas.get(&p.identity.pid))
                    .fold(GpuStats::default(), |sum, d| add(&sum, d));
                let previous = self.pods_seen.remove(&key).unwrap_or_default();
                let total = add(&previous, &delta);
                seen.insert(key.clone(), total);
                // Live bytes are a level: what its processes hold now.
                let live: i64 = procs.iter().map(|p| p.gpu.total.live_bytes).sum();
                let activity = |stats: &GpuStats| GpuActivity {
                    live_bytes: live,
                    ..GpuActivity::total(stats)
                };
                let memory: Vec<u64> = procs
                    .iter()
                    .flat_map(|p| p.gpus.iter().filter_map(|g| g.usage.memory_used_bytes))
                    .collect();
                let servers: BTreeSet<ServerRef> =
                    procs.iter().flat_map(|p| p.serves.iter().copied()).collect();
                let models = || {
                    s.servers
                        .iter()
                        .filter(|v| {
                            servers.contains(&ServerRef {
                                pid: v.pid,
                                port: v.port,
                            })
                        })
                        .flat_map(|v| &v.models)
                };
                PodView {
                    pids: procs.iter().map(|p| p.identity.pid).collect(),
                    gpu: Counted {
                        total: activity(&total),
                        delta: activity(&delta),
                    },
                    gpu_memory_used_bytes: (!memory.is_empty()).then(|| memory.iter().sum()),
                    requests: Counted {
                        total: models().map(|m| m.requests.total.requests).sum(),
                        delta: models().map(|m| m.requests.delta.requests).sum(),
                    },
                    output_tokens: Counted {
                        total: models().map(|m| m.requests.total.output_tokens).sum(),
                        delta: models().map(|m| m.requests.delta.output_tokens).sum(),
                    },
                    namespace: key.0,
                    name: key.1,
                }
            })
            .collect();
        // Pods with no tracked process left are forgotten.
        self.pods_seen = seen;
        pods
    }

    /// Sets each device's deltas from the previous totals, and counts its XID errors.
    fn devices(&mut self, mut devices: Vec<DeviceView>, events: &[GpuEvent]) -> Vec<DeviceView> {
        let mut seen = HashMap::with_capacity(devices.len());
        for d in &mut devices {
            let previous = self.devices_seen.remove(&d.uuid).unwrap_or_default();
            let xids = events
                .iter()
                .filter(|e| e.uuid == d.uuid && matches!(e.kind, GpuEventKind::Xid { .. }))
                .count() as u64;
            d.xid_errors = Counted {
                total: previous.xid_errors + xids,
                delta: xids,
            };
            if let Some(e) = &mut d.energy_joules {
                // The first reading has no interval to cover.
                e.delta = previous.energy_joules.map_or(0.0, |p| (e.total - p).max(0.0));
            }
            for (counter, before) in [
                (&mut d.ecc_corrected_errors, previous.ecc_corrected),
                (&mut d.ecc_uncorrected_errors, previous.ecc_uncorrected),
            ] {
                if let Some(c) = counter {
                    c.delta = before.map_or(0, |b| c.total.saturating_sub(b));
                }
            }
            seen.insert(
                d.uuid.clone(),
                DeviceTotals {
                    energy_joules: d.energy_joules.as_ref().map(|e| e.total),
                    ecc_corrected: d.ecc_corrected_errors.as_ref().map(|c| c.total),
                    ecc_uncorrected: d.ecc_uncorrected_errors.as_ref().map(|c| c.total),
                    xid_errors: d.xid_errors.total,
                },
            );
        }
        self.devices_seen = seen;
        devices
    }

    /// Each process's view, and its counters' interval deltas (for its pod).
    fn processes(&mut self, readings: Vec<ProcessReading>) -> (Vec<ProcessView>, HashMap<u32, GpuStats>) {
        let mut seen = HashMap::with_capacity(readings.len());
        let mut deltas = HashMap::with_capacity(readings.len());
        let views = readings
            .into_iter()
            .map(|p| {
                let previous = self.gpu_seen.remove(&p.identity.pid).unwrap_or_default();
                if !p.exited {
                    seen.insert(p.identity.pid, p.stats);
                }
                deltas.insert(p.identity.pid, zip_with(&p.stats, &previous, u64::wrapping_sub));
                ProcessView {
                    pod: p.pod,
                    gpus: Vec::new(),
                    serves: Vec::new(),
                    signals: Vec::new(),
                    gpu: Counted {
                        total: GpuActivity::total(&p.stats),
                        delta: GpuActivity::between(&previous, &p.stats),
                    },
                    identity: p.identity,
                    runtimes: p.runtimes,
                    counted_since: p.counted_since,
                    exited: p.exited,
                }
            })
            .collect();
        // Processes no longer read (exited, released) are forgotten.
        self.gpu_seen = seen;
        (views, deltas)
    }

    fn servers(
        &mut self,
        finished: &[RequestRecord],
        queues: &BTreeMap<ServerKey, QueueReport>,
        comms: &BTreeMap<u32, String>,
    ) -> Vec<ServerView> {
        let mut deltas: BTreeMap<ServerKey, BTreeMap<String, RequestStats>> = BTreeMap::new();
        let mut latest_protocol = BTreeMap::new();
        for r in finished {
            latest_protocol.insert((r.pid, r.port), r.protocol);
            let model = r.model.clone().unwrap_or_else(|| "unknown".into());
            deltas
                .entry((r.pid, r.port))
                .or_default()
                .entry(model)
                .or_insert_with(RequestStats::empty)
                .record(r);
        }
        // Servers whose process is gone (no queue) and that finished nothing are forgotten.
        self.servers
            .retain(|key, _| queues.contains_key(key) || deltas.contains_key(key));
        let mut keys: Vec<ServerKey> = queues.keys().chain(deltas.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let q = queues.get(&key);
                let totals = self.servers.entry(key).or_default();
                if let Some(comm) = comms.get(&key.0) {
                    totals.comm = Some(comm.clone());
                }
                let arrived = q.map_or(0, |q| q.arrived);
                totals.arrivals += arrived;
                totals.waiting_time_s += q.map_or(0.0, |q| q.waiting_time_s);
                let mut delta_models = deltas.remove(&key).unwrap_or_default();
                for (model, delta) in &delta_models {
                    totals
                        .models
                        .entry(model.clone())
                        .or_insert_with(RequestStats::empty)
                        .add(delta);
                }
                let models = totals
                    .models
                    .iter()
                    .map(|(model, total)| {
                        let mut delta = delta_models.remove(model).unwrap_or_else(RequestStats::empty);
                        for h in [&mut delta.ttft_s, &mut delta.itl_s, &mut delta.duration_s] {
                            h.close_interval();
                        }
                        ModelView {
                            model: model.clone(),
                            energy_joules: None,
                            energy_per_output_token_joules: None,
                            requests: Counted {
                                total: total.clone(),
                                delta,
                            },
                        }
                    })
                    .collect();
                ServerView {
                    pid: key.0,
                    comm: totals.comm.clone(),
                    port: key.1,
                    protocol: q
                        .map(|q| q.protocol)
                        .or_else(|| latest_protocol.get(&key).copied())
                        .unwrap_or_default(),
                    queue: q.map_or_else(QueueView::default, |q| QueueView {
                        waiting: q.waiting,
                        running: q.running,
                        waiting_mean: q.waiting_mean,
                        running_mean: q.running_mean,
                        waiting_time_s: totals.waiting_time_s,
                    }),
                    connections: q.map_or(0, |q| q.connections),
                    arrivals: Counted {
                        total: totals.arrivals,
                        delta: arrived,
                    },
                    models,
                }
            })
            .collect()
    }
}

/// Cumulative counts by reason as totals and deltas (reasons that ever occurred);
/// `seen` holds the previous totals.
/// The snapshot names reasons as the JSON and exports do, so that a saved
/// stream reads back whatever reasons its agent knew.
fn by_reason(
    totals: impl Iterator<Item = (&'static str, u64)>,
    seen: &mut BTreeMap<String, u64>,
) -> Counted<BTreeMap<String, u64>> {
    let mut out = Counted::<BTreeMap<String, u64>>::default();
    for (reason, total) in totals.into_iter().filter(|&(_, n)| n > 0) {
        let previous = seen.insert(reason.to_string(), total).unwrap_or(0);
        out.total.insert(reason.to_string(), total);
        let delta = total.wrapping_sub(previous);
        if delta > 0 {
            out.delta.insert(reason.to_string(), delta);
        }
    }
    out
}

/// The devices whose process list names `pid`.
fn gpus_of(pid: u32, devices: &[DeviceView]) -> Vec<ProcessGpu> {
    devices
        .iter()
        .flat_map(|d| {
            d.processes.iter().filter(|p| p.pid == pid).map(|p| ProcessGpu {
                uuid: d.uuid.clone(),
                index: d.index,
                usage: p.usage.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{
        model::{DropReason, Outcome, PodRef, ProcessIdentity, Protocol, RequestDrop, TokenSource},
        probes::Drops,
        runtimes::Runtime,
    };

    fn process(pid: u32, launches: u64, exited: bool) -> ProcessReading {
        ProcessReading {
            identity: ProcessIdentity {
                pid,
                comm: "python3".into(),
                ..Default::default()
            },
            runtimes: vec![Runtime::Cudart],
            stats: GpuStats {
                kernel_launches: launches,
                ..Default::default()
            },
            exited,
            counted_since: None,
            pod: None,
        }
    }

    fn request(model: &str, ttft_s: f64, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            pid: 7,
            port: 8000,
            protocol: Protocol::Http1,
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: 200,
            model: Some(model.into()),
            stream: true,
            ttft_s: Some(ttft_s),
            itl_s: vec![0.02, 0.03],
            duration_s: ttft_s + 0.05,
            output_tokens: Some(3),
            input_tokens: Some(10),
            token_source: Some(TokenSource::Usage),
            outcome,
            truncated: false,
            engine: None,
        }
    }

    fn queue(arrived: u64) -> BTreeMap<ServerKey, QueueReport> {
        BTreeMap::from([(
            (7, 8000),
            QueueReport {
                waiting: 1,
                running: 2,
                waiting_mean: 0.5,
                running_mean: 1.5,
                waiting_time_s: 0.25,
                arrived,
                connections: 3,
                protocol: Protocol::Http2,
            },
        )])
    }

    fn readings(
        processes: Vec<ProcessReading>,
        finished: Vec<RequestRecord>,
        arrived: u64,
        dropped: u64,
    ) -> Readings {
        Readings {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_001_000),
            interval: Duration::from_millis(500),
            processes,
            finished,
            queues: queue(arrived),
            server_comms: BTreeMap::new(),
            drops: {
                let mut drops = Drops::default();
                drops.add(DropReason::NetEventRingFull, dropped);
                drops
            },
            dropped_requests: BTreeMap::from([(RequestDrop::EventsLost, dropped)]),
            devices: Vec::new(),
            gpu_events: Vec::new(),
        }
    }

    #[test]
    fn a_server_keeps_its_process_name_after_the_source_let_it_go() {
        let mut join = Join::default();
        let mut named = readings(vec![], vec![], 0, 0);
        named.server_comms = BTreeMap::from([(7, "llama-server".to_string())]);
        assert_eq!(
            join.snapshot(named).servers[0].comm.as_deref(),
            Some("llama-server")
        );
        // Its last snapshot, once exited: the source no longer lists it.
        assert_eq!(
            join.snapshot(readings(vec![], vec![], 0, 0)).servers[0]
                .comm
                .as_deref(),
            Some("llama-server")
        );
        // A GPU process serving its own port is named by its identity.
        let mut join = Join::default();
        let s = join.snapshot(readings(vec![process(7, 1, false)], vec![], 0, 0));
        assert_eq!(s.servers[0].comm.as_deref(), Some("python3"));
    }

    #[test]
    fn gpu_totals_are_the_reading_and_deltas_the_difference() {
        let mut join = Join::default();
        let first = join.snapshot(readings(vec![process(1, 10, false)], vec![], 0, 0));
        let second = join.snapshot(readings(vec![process(1, 25, false)], vec![], 0, 0));
        let last = join.snapshot(readings(vec![process(1, 26, true)], vec![], 0, 0));
        let launches = |s: &Snapshot| {
            let g = &s.processes[0].gpu;
            (g.total.kernel_launches, g.delta.kernel_launches)
        };
        assert_eq!(
            [launches(&first), launches(&second), launches(&last)],
            [(10, 10), (25, 15), (26, 1)]
        );
        // Its pid reused by a new process starts from zero again.
        let reused = join.snapshot(readings(vec![process(1, 4, false)], vec![], 0, 0));
        assert_eq!(launches(&reused), (4, 4));
    }

    #[test]
    fn request_totals_accumulate_and_percentiles_describe_the_interval() {
        let mut join = Join::default();
        let first = join.snapshot(readings(
            vec![],
            vec![
                request("a", 0.1, Outcome::Ok),
                request("a", 0.3, Outcome::Cancelled),
            ],
            2,
            0,
        ));
        let quiet = join.snapshot(readings(vec![], vec![], 0, 0));
        let third = join.snapshot(readings(vec![], vec![request("a", 0.2, Outcome::Ok)], 1, 0));

        let model = |s: &Snapshot| s.servers[0].models[0].requests.clone();
        let m = model(&first);
        assert_eq!((m.delta.requests, m.delta.errors, m.delta.cancelled), (2, 1, 1));
        assert_eq!((m.delta.ttft_s.p50, m.delta.ttft_s.p99), (Some(0.1), Some(0.3)));
        assert_eq!((m.total.ttft_s.count, m.total.ttft_s.p50), (2, None));

        let m = model(&quiet);
        assert_eq!(
            (m.delta.requests, m.total.requests, m.delta.ttft_s.p50),
            (0, 2, None)
        );

        let m = model(&third);
        assert_eq!((m.delta.requests, m.total.requests), (1, 3));
        assert_eq!((m.total.output_tokens, m.total.input_tokens), (9, 30));
        assert_eq!(m.total.itl_s.count, 6);
        assert_eq!(m.total.ttft_s.counts.iter().sum::<u64>(), 3);
        let s = &third.servers[0];
        assert_eq!(
            (s.protocol, s.arrivals.total, s.arrivals.delta, s.queue.running),
            (Protocol::Http2, 3, 1, 2)
        );
        // The time spent waiting accumulates over the three intervals.
        assert_eq!(s.queue.waiting_time_s, 0.75);
    }

    #[test]
    fn a_server_without_queue_or_requests_is_forgotten() {
        let mut join = Join::default();
        join.snapshot(readings(vec![], vec![request("a", 0.1, Outcome::Ok)], 1, 0));
        let mut gone = readings(vec![], vec![], 0, 0);
        gone.queues.clear();
        assert!(join.snapshot(gone).servers.is_empty());
        let back = join.snapshot(readings(vec![], vec![], 0, 0));
        assert_eq!(back.servers[0].models.len(), 0, "totals restart with the server");
    }

    #[test]
    fn drops_list_reasons_that_occurred_with_total_and_delta() {
        let mut join = Join::default();
        let first = join.snapshot(readings(vec![], vec![], 0, 5));
        let second = join.snapshot(readings(vec![], vec![], 0, 5));
        assert_eq!(
            first.drops.total,
            BTreeMap::from([("net_event_ring_full".to_string(), 5)])
        );
        assert_eq!(first.drops.delta, first.drops.total);
        assert_eq!((second.drops.total.len(), second.drops.delta.len()), (1, 0));
    }

    fn device(energy_joules: f64, pid: u32) -> DeviceView {
        DeviceView {
            utilization_percent: Some(40),
            energy_joules: Some(Counted {
                total: energy_joules,
                delta: energy_joules,
            }),
            processes: vec![crate::model::DeviceProcess {
                pid,
                usage: crate::model::GpuUsage {
                    memory_used_bytes: Some(1 << 30),
                    sm_utilization_percent: Some(0),
                    memory_utilization_percent: None,
                },
            }],
            ..DeviceView::new(crate::model::Vendor::Nvidia, 0, "GPU-1".into(), "H100".into())
        }
    }

    #[test]
    fn devices_get_energy_deltas_xid_counts_and_their_processes() {
        let mut join = Join::default();
        let xid = GpuEvent {
            time: UNIX_EPOCH,
            uuid: "GPU-1".into(),
            index: 0,
            kind: GpuEventKind::Xid { xid: 79 },
        };
        let mut first = readings(vec![process(1, 0, false)], vec![], 0, 0);
        (first.devices, first.gpu_events) = (vec![device(100.0, 1)], vec![xid]);
        let first = join.snapshot(first);
        let mut second = readings(vec![process(1, 0, false)], vec![], 0, 0);
        second.devices = vec![device(103.5, 2)];
        let second = join.snapshot(second);
        let energy = |s: &Snapshot| s.devices[0].energy_joules.clone().unwrap();
        assert_eq!(
            energy(&first),
            Counted {
                total: 100.0,
                delta: 0.0
            }
        );
        assert_eq!(
            energy(&second),
            Counted {
                total: 103.5,
                delta: 3.5
            }
        );
        let xids = |s: &Snapshot| s.devices[0].xid_errors.clone();
        assert_eq!(
            (xids(&first), xids(&second)),
            (Counted { total: 1, delta: 1 }, Counted { total: 1, delta: 0 })
        );
        assert_eq!(first.processes[0].gpus[0].usage.memory_used_bytes, Some(1 << 30));
        assert!(
            second.processes[0].gpus.is_empty(),
            "pid 1 is no longer on the device"
        );
    }

    /// `device(energy, pid)` with the process's SM share set.
    fn device_running(energy_joules: f64, pid: u32, sm_percent: u32) -> DeviceView {
        let mut d = device(energy_joules, pid);
        d.processes[0].usage.sm_utilization_percent = Some(sm_percent);
        d
    }

    #[test]
    fn many_launches_with_idle_sms_is_launch_bound_and_says_by_how_much() {
        let mut join = Join::default();
        join.snapshot(readings(vec![process(1, 0, false)], vec![], 0, 0));
        let mut busy = readings(vec![process(1, 2000, false)], vec![], 0, 0);
        busy.devices = vec![device_running(0.0, 1, 2)];
        let s = join.snapshot(busy);
        assert_eq!(
            s.processes[0].signals,
            [crate::model::Signal::LaunchBound {
                kernel_launches_per_second: 4000.0,
                sm_utilization_percent: 2,
            }]
        );
        let mut fed = readings(vec![process(1, 4000, false)], vec![], 0, 0);
        fed.devices = vec![device_running(0.0, 1, 90)];
        assert!(join.snapshot(fed).processes[0].signals.is_empty());
    }

    #[test]
    fn a_gpu_worker_under_a_server_gets_its_tokens_and_energy_per_token() {
        // vLLM's shape: the HTTP server (pid 7, no GPU) and its engine (pid 8, on the GPU).
        let mut engine = process(8, 0, false);
        engine.identity.ppid = 7;
        let mut join = Join::default();
        let mut first = readings(vec![engine.clone()], vec![], 0, 0);
        first.devices = vec![device(100.0, 8)];
        join.snapshot(first);
        let mut second = readings(
            vec![engine],
            vec![request("a", 0.1, Outcome::Ok), request("a", 0.2, Outcome::Ok)],
            2,
            0,
        );
        second.devices = vec![device(112.0, 8)];
        let s = join.snapshot(second);
        let key = ServerRef { pid: 7, port: 8000 };
        assert_eq!(s.processes[0].serves, [key]);
        let d = &s.devices[0];
        // 6 tokens in 0.5 s; 12 J over them.
        assert_eq!(
            (d.output_tokens_per_second, d.energy_per_output_token_joules),
            (Some(12.0), Some(2.0))
        );
        let m = &s.servers[0].models[0];
        assert_eq!(
            (m.energy_joules, m.energy_per_output_token_joules),
            (Some(12.0), Some(2.0))
        );
    }

    #[test]
    fn a_pod_sums_its_processes_and_keeps_what_exited_ones_did() {
        let pod = Some(PodRef {
            namespace: "inference".into(),
            name: "vllm-0".into(),
            container: "engine".into(),
            owner: None,
        });
        let in_pod = |pid, launches, exited| ProcessReading {
            pod: pod.clone(),
            ..process(pid, launches, exited)
        };
        let mut join = Join::default();
        let first = join.snapshot(readings(
            vec![in_pod(1, 10, false), in_pod(2, 5, false)],
            vec![],
            0,
            0,
        ));
        let second = join.snapshot(readings(
            vec![in_pod(1, 12, false), in_pod(2, 9, true)],
            vec![],
            0,
            0,
        ));
        let third = join.snapshot(readings(vec![in_pod(1, 20, false)], vec![], 0, 0));
        let launches = |s: &Snapshot| {
            let [p] = s.pods.as_slice() else {
                panic!("{:?}", s.pods)
            };
            (
                p.gpu.total.kernel_launches,
                p.gpu.delta.kernel_launches,
                p.pids.clone(),
            )
        };
        assert_eq!(launches(&first), (15, 15, vec![1, 2]));
        assert_eq!(launches(&second), (21, 6, vec![1, 2]));
        assert_eq!(launches(&third), (29, 8, vec![1]));
        let gone = join.snapshot(readings(vec![process(1, 20, false)], vec![], 0, 0));
        assert!(gone.pods.is_empty());
    }

    #[test]
    fn a_snapshot_reads_back_from_its_json() {
        let mut join = Join::default();
        join.snapshot(readings(
            vec![process(1, 3, false)],
            vec![request("a", 0.1, Outcome::Ok)],
            1,
            2,
        ));
        let mut last = readings(
            vec![process(1, 9, true)],
            vec![request("a", 0.25, Outcome::Error)],
            1,
            4,
        );
        last.devices = vec![device(1.0, 1)];
        let snapshot = join.snapshot(last);
        let json = serde_json::to_string(&snapshot).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot, "{json}");
        let request = request("b", 0.5, Outcome::Aborted);
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<RequestRecord>(&json).unwrap(),
            request,
            "{json}"
        );
    }
}
