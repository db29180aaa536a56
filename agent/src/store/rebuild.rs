//! Series back into snapshots: per node, one [`Snapshot`] per step, with the
//! step's increase of each counter as its delta and each gauge's value, as
//! the agent's own join would have made them, for the fields the rules read.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Series, Slice, Store, StoreError, at_ms,
    dialect::{Dialect, Metric},
    metrics::*,
};
use crate::{
    diagnose::Recording,
    model::{
        Counted, DeviceProcess, DeviceView, GpuActivity, GpuUsage, ModelView, PodRef, ProcessGpu,
        ProcessIdentity, ProcessView, QueueView, RequestStats, SCHEMA_VERSION, ServerView, Signal, Snapshot,
        Vendor,
    },
};

/// One node's series as the snapshots a live watch of it would have given.
#[derive(Clone, Debug)]
pub struct NodeRecording {
    /// `k8s.node.name`, else `host.name`, else the scrape target.
    pub node: String,
    /// Labels (attribute names) that select this node's series in the store.
    pub selector: Vec<(String, String)>,
    pub recording: Recording,
}

/// Values of one series (or of several summed) by time in ms.
type Values = BTreeMap<i64, f64>;

#[derive(Default)]
struct ServerSeries {
    waiting: Values,
    waiting_time: Values,
}

#[derive(Default)]
struct ModelSeries {
    ttft_sum: Values,
    ttft_count: Values,
    /// Requests by `error.type` (`None`: succeeded).
    outcomes: BTreeMap<Option<String>, Values>,
}

#[derive(Default)]
struct ProcessSeries {
    name: Option<String>,
    pod: Option<PodRef>,
    launches: Values,
    sync_calls: Values,
    sync_time: Values,
    launch_bound: Values,
    /// Memory and SM share on each GPU, by UUID.
    gpus: BTreeMap<String, (Values, Values)>,
}

#[derive(Default)]
struct DeviceSeries {
    index: u32,
    model: String,
    vendor: Option<Vendor>,
    utilization: Values,
    memory_used: Values,
    memory_limit: Values,
    xid: Values,
}

impl ServerSeries {
    fn series(&self) -> impl Iterator<Item = &Values> {
        [&self.waiting, &self.waiting_time].into_iter()
    }
}

impl ModelSeries {
    fn series(&self) -> impl Iterator<Item = &Values> {
        [&self.ttft_sum, &self.ttft_count]
            .into_iter()
            .chain(self.outcomes.values())
    }
}

impl ProcessSeries {
    fn series(&self) -> impl Iterator<Item = &Values> {
        [
            &self.launches,
            &self.sync_calls,
            &self.sync_time,
            &self.launch_bound,
        ]
        .into_iter()
        .chain(self.gpus.values().flat_map(|(memory, sm)| [memory, sm]))
    }
}

impl DeviceSeries {
    fn series(&self) -> impl Iterator<Item = &Values> {
        [
            &self.utilization,
            &self.memory_used,
            &self.memory_limit,
            &self.xid,
        ]
        .into_iter()
    }
}

/// Whether any of `series` has a value at `t`: what it describes was there.
fn seen_at<'a>(mut series: impl Iterator<Item = &'a Values>, t: i64) -> bool {
    series.any(|v| v.contains_key(&t))
}

#[derive(Default)]
struct NodeSeries {
    selector: Vec<(String, String)>,
    servers: BTreeMap<(u32, u16), ServerSeries>,
    models: BTreeMap<(u16, String), ModelSeries>,
    processes: BTreeMap<u32, ProcessSeries>,
    devices: BTreeMap<String, DeviceSeries>,
    dropped_events: BTreeMap<String, Values>,
    dropped_requests: BTreeMap<String, Values>,
}

/// Which node a series is from, and the labels selecting that node.
struct Nodes {
    dialect: Dialect,
    /// (job, instance) → node name, from `target_info` (Prometheus dialect).
    targets: BTreeMap<(String, String), String>,
}

impl Nodes {
    fn read(store: &Store, dialect: Dialect, slice: &Slice) -> Result<Self, StoreError> {
        let mut targets = BTreeMap::new();
        if dialect == Dialect::Prometheus {
            for s in store.range(&dialect.selector(&TARGET_INFO, &[], None), slice)? {
                let label = |key: &str| s.labels.get(key).cloned().unwrap_or_default();
                let name = ["k8s_node_name", "host_name"]
                    .iter()
                    .find_map(|k| s.labels.get(*k).filter(|v| !v.is_empty()).cloned());
                if let Some(name) = name {
                    targets.insert((label("job"), label("instance")), name);
                }
            }
        }
        Ok(Self { dialect, targets })
    }

    fn of(&self, labels: &BTreeMap<String, String>) -> Option<(String, Vec<(String, String)>)> {
        match self.dialect {
            Dialect::Otlp => ["k8s.node.name", "host.name"].iter().find_map(|key| {
                let value = labels.get(*key).filter(|v| !v.is_empty())?;
                Some((value.clone(), vec![(key.to_string(), value.clone())]))
            }),
            Dialect::Prometheus => {
                let job = labels.get("job").cloned().unwrap_or_default();
                let instance = labels.get("instance")?.clone();
                let name = self
                    .targets
                    .get(&(job.clone(), instance.clone()))
                    .cloned()
                    .unwrap_or_else(|| instance.clone());
                Some((name, vec![("job".into(), job), ("instance".into(), instance)]))
            }
        }
    }
}

/// Adds `from`'s values into `into`, time by time.
fn add(into: &mut Values, from: &Values) {
    for (t, v) in from {
        *into.entry(*t).or_default() += v;
    }
}

pub(super) fn read(store: &Store, dialect: Dialect, slice: &Slice) -> Result<Vec<NodeRecording>, StoreError> {
    let nodes = Nodes::read(store, dialect, slice)?;
    let matchers = slice.matchers.as_deref();
    let mut by_node: BTreeMap<String, NodeSeries> = BTreeMap::new();
    // Each metric's series, each handed to `file` with its node's series.
    let mut each = |m: &Metric, workload: bool, file: &mut dyn FnMut(&mut NodeSeries, &Series)| {
        let query = dialect.selector(m, &[], matchers.filter(|_| workload));
        for s in store.range(&query, slice)? {
            if let Some((name, selector)) = nodes.of(&s.labels) {
                let node = by_node.entry(name).or_default();
                node.selector = selector;
                file(node, &s);
            }
        }
        Ok::<_, StoreError>(())
    };
    let label = |s: &Series, attribute: &str| s.labels.get(&dialect.label(attribute)).cloned();
    let number = |s: &Series, attribute: &str| label(s, attribute).and_then(|v| v.parse::<u64>().ok());
    let server = |s: &Series| {
        Some((
            u32::try_from(number(s, "process.pid")?).ok()?,
            u16::try_from(number(s, "server.port")?).ok()?,
        ))
    };
    each(&WAITING, true, &mut |n, s| {
        if let Some(key) = server(s) {
            add(&mut n.servers.entry(key).or_default().waiting, &s.values);
        }
    })?;
    each(&WAITING_TIME, true, &mut |n, s| {
        if let Some(key) = server(s) {
            add(&mut n.servers.entry(key).or_default().waiting_time, &s.values);
        }
    })?;
    let model = |s: &Series| {
        let port = u16::try_from(number(s, "server.port")?).ok()?;
        Some((
            port,
            label(s, "gen_ai.request.model").unwrap_or_else(|| "unknown".into()),
        ))
    };
    for (metric, ttft_sum) in [(&TTFT_SUM, true), (&TTFT_COUNT, false)] {
        each(metric, true, &mut |n, s| {
            if let Some(key) = model(s) {
                let m = n.models.entry(key).or_default();
                add(
                    if ttft_sum {
                        &mut m.ttft_sum
                    } else {
                        &mut m.ttft_count
                    },
                    &s.values,
                );
            }
        })?;
    }
    each(&REQUESTS, true, &mut |n, s| {
        if let Some(key) = model(s) {
            let outcome = label(s, "error.type");
            add(
                n.models
                    .entry(key)
                    .or_default()
                    .outcomes
                    .entry(outcome)
                    .or_default(),
                &s.values,
            );
        }
    })?;
    let pid = |s: &Series| u32::try_from(number(s, "process.pid")?).ok();
    // A process's name and pod, from whichever of its series carries them.
    let identify = |p: &mut ProcessSeries, s: &Series| {
        p.name = p.name.take().or_else(|| label(s, "process.executable.name"));
        if p.pod.is_none()
            && let (Some(namespace), Some(name)) = (label(s, "k8s.namespace.name"), label(s, "k8s.pod.name"))
        {
            p.pod = Some(PodRef {
                namespace,
                name,
                container: label(s, "k8s.container.name").unwrap_or_default(),
                owner: None,
            });
        }
    };
    type Field = fn(&mut ProcessSeries) -> &mut Values;
    let fields: [(&Metric, Field); 5] = [
        (&CUDA_LAUNCHES, |p| &mut p.launches),
        (&HIP_LAUNCHES, |p| &mut p.launches),
        (&SYNC_CALLS, |p| &mut p.sync_calls),
        (&SYNC_TIME, |p| &mut p.sync_time),
        (&LAUNCH_BOUND, |p| &mut p.launch_bound),
    ];
    for (metric, field) in fields {
        each(metric, true, &mut |n, s| {
            if let Some(pid) = pid(s) {
                let p = n.processes.entry(pid).or_default();
                identify(p, s);
                add(field(p), &s.values);
            }
        })?;
    }
    for (metric, memory) in [(&PROCESS_MEMORY, true), (&PROCESS_SM, false)] {
        each(metric, true, &mut |n, s| {
            if let (Some(pid), Some(uuid)) = (pid(s), label(s, "hw.id")) {
                let p = n.processes.entry(pid).or_default();
                identify(p, s);
                let gpu = p.gpus.entry(uuid).or_default();
                add(if memory { &mut gpu.0 } else { &mut gpu.1 }, &s.values);
            }
        })?;
    }
    type DeviceField = fn(&mut DeviceSeries) -> &mut Values;
    let device_fields: [(&Metric, DeviceField); 4] = [
        (&GPU_UTILIZATION, |d| &mut d.utilization),
        (&GPU_MEMORY_USED, |d| &mut d.memory_used),
        (&GPU_MEMORY_LIMIT, |d| &mut d.memory_limit),
        (&GPU_ERRORS, |d| &mut d.xid),
    ];
    for (metric, field) in device_fields {
        each(metric, false, &mut |n, s| {
            let Some(uuid) = label(s, "hw.id") else { return };
            if metric.name == GPU_ERRORS.name && label(s, "error.type").as_deref() != Some("xid") {
                return;
            }
            let d = n.devices.entry(uuid).or_default();
            if let Some(index) = label(s, "hw.name").and_then(|n| n.strip_prefix("gpu")?.parse().ok()) {
                d.index = index;
            }
            if let Some(model) = label(s, "hw.model") {
                d.model = model;
            }
            d.vendor = match label(s, "hw.vendor").as_deref() {
                Some("AMD") => Some(Vendor::Amd),
                Some(_) => Some(Vendor::Nvidia),
                None => d.vendor,
            };
            add(field(d), &s.values);
        })?;
    }
    for (metric, requests) in [(&DROPPED_EVENTS, false), (&DROPPED_REQUESTS, true)] {
        each(metric, false, &mut |n, s| {
            let reason = label(s, "reason").unwrap_or_else(|| "unknown".into());
            let counts = if requests {
                &mut n.dropped_requests
            } else {
                &mut n.dropped_events
            };
            add(counts.entry(reason).or_default(), &s.values);
        })?;
    }
    let step_ms = slice.step.as_millis() as i64;
    Ok(by_node
        .into_iter()
        .filter_map(|(node, mut series)| {
            if matchers.is_some() {
                // The slice is the workloads matched, and the GPUs they use.
                if series.servers.is_empty() && series.models.is_empty() && series.processes.is_empty() {
                    return None;
                }
                let used: BTreeSet<String> = series
                    .processes
                    .values()
                    .flat_map(|p| p.gpus.keys().cloned())
                    .collect();
                series.devices.retain(|uuid, _| used.contains(uuid));
            }
            let recording = Recording {
                snapshots: snapshots(&series, step_ms),
                requests: Vec::new(),
            };
            Some(NodeRecording {
                node,
                selector: series.selector,
                recording,
            })
        })
        .collect())
}

/// A counter's increase over the step ending at `t`: none at the first time
/// (nothing before to compare with), its value where the series is new or
/// restarted (its agent restarted).
fn increase(values: &Values, t: i64, step_ms: i64, first: i64) -> f64 {
    let Some(&now) = values.get(&t) else {
        return 0.0;
    };
    match values.get(&(t - step_ms)) {
        Some(&before) if now >= before => now - before,
        Some(_) => now,
        None if t > first => now,
        None => 0.0,
    }
}

fn snapshots(series: &NodeSeries, step_ms: i64) -> Vec<Snapshot> {
    let all = series
        .servers
        .values()
        .flat_map(ServerSeries::series)
        .chain(series.models.values().flat_map(ModelSeries::series))
        .chain(series.processes.values().flat_map(ProcessSeries::series))
        .chain(series.devices.values().flat_map(DeviceSeries::series))
        .chain(series.dropped_events.values())
        .chain(series.dropped_requests.values());
    let times: BTreeSet<i64> = all.flat_map(|v| v.keys().copied()).collect();
    let Some(&first) = times.first() else {
        return Vec::new();
    };
    let step = std::time::Duration::from_millis(step_ms as u64);
    let step_s = step.as_secs_f64();
    let grow = |v: &Values, t| increase(v, t, step_ms, first);
    times
        .iter()
        .filter(|&&t| t > first)
        .map(|&t| {
            let processes: Vec<ProcessView> = series
                .processes
                .iter()
                .filter(|(_, p)| seen_at(p.series(), t))
                .map(|(&pid, p)| process(pid, p, t, step_s, &series.devices, &grow))
                .collect();
            Snapshot {
                schema: SCHEMA_VERSION,
                time: at_ms(t),
                interval: step,
                servers: servers(series, t, step_s, &grow),
                devices: devices(series, &processes, t, &grow),
                processes,
                pods: Vec::new(),
                gpu_events: Vec::new(),
                drops: reasons(&series.dropped_events, t, &grow),
                dropped_requests: reasons(&series.dropped_requests, t, &grow),
            }
        })
        .collect()
}

fn servers(series: &NodeSeries, t: i64, step_s: f64, grow: &dyn Fn(&Values, i64) -> f64) -> Vec<ServerView> {
    let mut servers: BTreeMap<(u32, u16), ServerView> = series
        .servers
        .iter()
        .filter(|(_, s)| seen_at(s.series(), t))
        .map(|(&(pid, port), s)| {
            let queue = QueueView {
                waiting: s.waiting.get(&t).map_or(0, |&w| w.max(0.0) as u64),
                waiting_mean: grow(&s.waiting_time, t) / step_s,
                waiting_time_s: s.waiting_time.get(&t).copied().unwrap_or_default(),
                ..QueueView::default()
            };
            ((pid, port), server_view(pid, port, queue, series))
        })
        .collect();
    for ((port, model), m) in &series.models {
        if !seen_at(m.series(), t) {
            continue;
        }
        // Requests carry the port, not the pid: they go to the port's server.
        let key = servers
            .keys()
            .find(|k| k.1 == *port)
            .copied()
            .or_else(|| series.servers.keys().rev().find(|k| k.1 == *port).copied())
            .unwrap_or((0, *port));
        let view = servers
            .entry(key)
            .or_insert_with(|| server_view(key.0, key.1, QueueView::default(), series));
        let mut delta = RequestStats::empty();
        for (outcome, values) in &m.outcomes {
            let n = grow(values, t).round() as u64;
            delta.requests += n;
            if let Some(error) = outcome {
                delta.errors += n;
                if error == "cancelled" {
                    delta.cancelled += n;
                }
            }
        }
        delta.ttft_s.sum = grow(&m.ttft_sum, t);
        delta.ttft_s.count = grow(&m.ttft_count, t).round() as u64;
        let mut total = RequestStats::empty();
        total.requests = m.outcomes.values().filter_map(|v| v.get(&t)).sum::<f64>() as u64;
        view.models.push(ModelView {
            model: model.clone(),
            energy_joules: None,
            energy_per_output_token_joules: None,
            requests: Counted { total, delta },
        });
    }
    servers.into_values().collect()
}

fn server_view(pid: u32, port: u16, queue: QueueView, series: &NodeSeries) -> ServerView {
    ServerView {
        pid,
        comm: series.processes.get(&pid).and_then(|p| p.name.clone()),
        port,
        protocol: Default::default(),
        queue,
        connections: 0,
        arrivals: Counted::default(),
        models: Vec::new(),
    }
}

fn process(
    pid: u32,
    p: &ProcessSeries,
    t: i64,
    step_s: f64,
    devices: &BTreeMap<String, DeviceSeries>,
    grow: &dyn Fn(&Values, i64) -> f64,
) -> ProcessView {
    let at = |v: &Values| v.get(&t).copied().unwrap_or_default();
    let activity = |read: &dyn Fn(&Values) -> f64| GpuActivity {
        kernel_launches: read(&p.launches).round() as u64,
        sync_calls: read(&p.sync_calls).round() as u64,
        sync_seconds: read(&p.sync_time),
        ..GpuActivity::default()
    };
    let gpus: Vec<ProcessGpu> = p
        .gpus
        .iter()
        .filter(|(_, (memory, sm))| seen_at([memory, sm].into_iter(), t))
        .map(|(uuid, (memory, sm))| ProcessGpu {
            uuid: uuid.clone(),
            index: devices.get(uuid).map_or(0, |d| d.index),
            usage: GpuUsage {
                memory_used_bytes: memory.get(&t).map(|&b| b as u64),
                sm_utilization_percent: sm.get(&t).map(|&r| (r * 100.0).round() as u32),
                memory_utilization_percent: None,
            },
        })
        .collect();
    let delta = activity(&|v| grow(v, t));
    let signals = if at(&p.launch_bound) >= 1.0 {
        vec![Signal::LaunchBound {
            kernel_launches_per_second: delta.kernel_launches as f64 / step_s,
            sm_utilization_percent: gpus
                .iter()
                .filter_map(|g| g.usage.sm_utilization_percent)
                .max()
                .unwrap_or(0),
        }]
    } else {
        Vec::new()
    };
    let name = p.name.clone().unwrap_or_default();
    ProcessView {
        identity: ProcessIdentity {
            pid,
            ppid: 0,
            comm: name.clone(),
            exe: name,
            container_id: None,
        },
        runtimes: Vec::new(),
        counted_since: None,
        gpu: Counted {
            total: activity(&at),
            delta,
        },
        gpus,
        pod: p.pod.clone(),
        serves: Vec::new(),
        signals,
        exited: false,
    }
}

fn devices(
    series: &NodeSeries,
    processes: &[ProcessView],
    t: i64,
    grow: &dyn Fn(&Values, i64) -> f64,
) -> Vec<DeviceView> {
    series
        .devices
        .iter()
        .filter(|(_, d)| seen_at(d.series(), t))
        .map(|(uuid, d)| {
            let mut view = DeviceView::new(
                d.vendor.unwrap_or(Vendor::Nvidia),
                d.index,
                uuid.clone(),
                d.model.clone(),
            );
            view.utilization_percent = d.utilization.get(&t).map(|&r| (r * 100.0).round() as u32);
            view.memory_used_bytes = d.memory_used.get(&t).map(|&b| b as u64);
            view.memory_total_bytes = d.memory_limit.get(&t).map(|&b| b as u64);
            view.xid_errors = Counted {
                total: d.xid.get(&t).copied().unwrap_or_default() as u64,
                delta: grow(&d.xid, t).round() as u64,
            };
            view.processes = processes
                .iter()
                .flat_map(|p| {
                    p.gpus.iter().filter(|g| g.uuid == *uuid).map(|g| DeviceProcess {
                        pid: p.identity.pid,
                        usage: g.usage.clone(),
                    })
                })
                .collect();
            view
        })
        .collect()
}

fn reasons(
    counts: &BTreeMap<String, Values>,
    t: i64,
    grow: &dyn Fn(&Values, i64) -> f64,
) -> Counted<BTreeMap<String, u64>> {
    let present = || counts.iter().filter(|(_, v)| v.contains_key(&t));
    Counted {
        total: present().map(|(k, v)| (k.clone(), v[&t] as u64)).collect(),
        delta: present()
            .map(|(k, v)| (k.clone(), grow(v, t).round() as u64))
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(points: &[(i64, f64)]) -> Values {
        points.iter().copied().collect()
    }

    #[test]
    fn counters_become_per_step_increases_across_restarts_and_new_series() {
        let v = values(&[(1000, 5.0), (2000, 8.0), (3000, 2.0), (5000, 4.0)]);
        let grow = |t| increase(&v, t, 1000, 1000);
        // Nothing before the first point; a rise; a restart counts from zero;
        // a series back after a gap (or new) counts all it holds.
        assert_eq!(
            [grow(1000), grow(2000), grow(3000), grow(4000), grow(5000)],
            [0.0, 3.0, 2.0, 0.0, 4.0]
        );
    }

    #[test]
    fn a_servers_series_rebuild_its_queue_and_requests_per_step() {
        let mut node = NodeSeries::default();
        node.servers.insert(
            (7, 8000),
            ServerSeries {
                waiting: values(&[(0, 0.0), (2000, 3.0)]),
                waiting_time: values(&[(0, 1.0), (2000, 7.0)]),
            },
        );
        node.models.insert(
            (8000, "m".into()),
            ModelSeries {
                ttft_sum: values(&[(0, 1.0), (2000, 2.5)]),
                ttft_count: values(&[(0, 4.0), (2000, 7.0)]),
                outcomes: BTreeMap::from([
                    (None, values(&[(0, 4.0), (2000, 7.0)])),
                    (Some("cancelled".into()), values(&[(0, 0.0), (2000, 2.0)])),
                ]),
            },
        );
        let snapshots = snapshots(&node, 2000);
        let [s] = snapshots.as_slice() else {
            panic!("{snapshots:?}")
        };
        assert_eq!(
            (s.time, s.interval),
            (at_ms(2000), std::time::Duration::from_secs(2))
        );
        let v = &s.servers[0];
        assert_eq!((v.pid, v.port, v.queue.waiting), (7, 8000, 3));
        assert_eq!(v.queue.waiting_mean, 3.0, "6 request-seconds over 2 s");
        let d = &v.models[0].requests.delta;
        assert_eq!((d.requests, d.errors, d.cancelled), (5, 2, 2));
        assert_eq!((d.ttft_s.sum, d.ttft_s.count), (1.5, 3));
    }
}
