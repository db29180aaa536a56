//! The rules: each reads the recording and returns findings with the figures
//! that triggered them. Thresholds are named here, once.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use super::{
    Finding, FindingKind, Recording, Severity, Subject,
    evidence::{Evidence, Slowdown},
};
use crate::{
    model::{
        GpuEventKind, LAUNCH_BOUND_MAX_SM_PERCENT, Outcome, ServerRef, Signal, Snapshot, saturating_sum,
    },
    units::GIB,
};

/// Intervals with finished requests a trend needs (compared in thirds).
pub const MIN_TREND_INTERVALS: usize = 3;
/// Mean TTFT of the last third at least this multiple of the first third's...
pub const TTFT_RISE_RATIO: f64 = 1.5;
/// ...and at least this much higher, so that 2 ms becoming 3 ms is no finding.
pub const TTFT_RISE_MIN_S: f64 = 0.05;
/// Requests waiting for their first token, time-weighted mean of the last third.
pub const QUEUE_MIN_WAITING: f64 = 1.0;
/// A GPU at least this busy (NVML utilisation, mean) has no room for more work.
pub const GPU_BUSY_PERCENT: f64 = 80.0;
/// A GPU at most this busy is mostly idle.
pub const GPU_IDLE_PERCENT: f64 = 30.0;
/// A mean time to first token this long, with no queue, is slow.
pub const SLOW_TTFT_S: f64 = 0.5;
/// Seconds blocked in GPU synchronisation per second of wall time (summed
/// over a process's threads) from which the CPU mostly waits.
pub const SYNC_SHARE: f64 = 0.25;
/// Device memory used, as a share of its total.
pub const MEMORY_NEAR_LIMIT: f64 = 0.95;
/// Failed or cancelled requests, as a share of finished ones.
pub const REQUEST_PROBLEM_SHARE: f64 = 0.05;

/// Every rule's findings, and the checks that could not run.
pub fn run(recording: &Recording) -> (Vec<Finding>, Vec<String>) {
    let snapshots = &recording.snapshots;
    let mut findings = Vec::new();
    let mut not_checked = Vec::new();
    let has_devices = snapshots.iter().any(|s| !s.devices.is_empty());
    let servers = servers(snapshots);
    if !has_devices {
        not_checked.push(
            "GPU device figures (no NVML or ROCm SMI readings): whether queueing comes from a busy GPU, \
             slow first tokens on an idle GPU, memory, XID errors, clock throttling"
                .to_string(),
        );
    }
    if servers.is_empty() {
        not_checked.push("requests: no inference server's traffic was captured".to_string());
    }
    if !snapshots.iter().any(|s| !s.processes.is_empty()) {
        not_checked.push("GPU runtime activity: no process used a GPU runtime".to_string());
    }
    let who = Who::of(snapshots);
    for key in &servers {
        let points = server_points(snapshots, *key);
        let subject = Subject {
            port: Some(key.port),
            ..who.subject(key.pid)
        };
        let with_requests = points.iter().filter(|p| p.ttft.1 > 0).count();
        if with_requests < MIN_TREND_INTERVALS {
            not_checked.push(format!(
                "time-to-first-token trends of {}: {with_requests} intervals with streamed requests, {MIN_TREND_INTERVALS} needed",
                subject
            ));
        }
        findings.extend(queueing(&points, &subject));
        findings.extend(slow_first_token(&points, &subject));
        for model in models(snapshots, *key) {
            let subject = Subject {
                model: Some(model.clone()),
                ..subject.clone()
            };
            findings.extend(request_problems(recording, *key, &model, &subject));
        }
    }
    findings.extend(processes(snapshots, &who));
    findings.extend(devices(snapshots));
    findings.extend(measurement_gaps(snapshots));
    (findings, not_checked)
}

fn servers(snapshots: &[Snapshot]) -> BTreeSet<ServerRef> {
    snapshots
        .iter()
        .flat_map(|s| &s.servers)
        .map(|v| ServerRef {
            pid: v.pid,
            port: v.port,
        })
        .collect()
}

fn models(snapshots: &[Snapshot], key: ServerRef) -> BTreeSet<String> {
    snapshots
        .iter()
        .flat_map(|s| &s.servers)
        .filter(|v| v.pid == key.pid && v.port == key.port)
        .flat_map(|v| v.models.iter().map(|m| m.model.clone()))
        .collect()
}

/// Who each pid of the recording is: its command name and, in Kubernetes, its pod.
#[derive(Default)]
struct Who {
    comms: BTreeMap<u32, String>,
    /// `namespace/name`: a GPU process's own, and a server's that a GPU
    /// process of a pod serves (an API server beside its engine's workers).
    pods: BTreeMap<u32, String>,
}

impl Who {
    fn of(snapshots: &[Snapshot]) -> Self {
        let mut who = Self::default();
        for s in snapshots {
            for v in &s.servers {
                if let Some(comm) = &v.comm {
                    who.comms.insert(v.pid, comm.clone());
                }
            }
            for p in &s.processes {
                who.comms.insert(p.identity.pid, p.identity.comm.clone());
                if let Some(pod) = &p.pod {
                    let name = format!("{}/{}", pod.namespace, pod.name);
                    for server in &p.serves {
                        who.pods.entry(server.pid).or_insert_with(|| name.clone());
                    }
                    who.pods.insert(p.identity.pid, name);
                }
            }
        }
        who
    }

    /// A finding's subject: the process `pid`, named.
    fn subject(&self, pid: u32) -> Subject {
        Subject {
            pid: Some(pid),
            comm: self.comms.get(&pid).cloned(),
            pod: self.pods.get(&pid).cloned(),
            ..Subject::default()
        }
    }
}

/// One server over one interval, all its models together.
struct Point {
    from: SystemTime,
    to: SystemTime,
    /// Sum and count of the interval's times to first token.
    ttft: (f64, u64),
    waiting: f64,
    /// Mean utilisation of the GPUs its processes use, where NVML says.
    gpu_percent: Option<f64>,
}

fn server_points(snapshots: &[Snapshot], key: ServerRef) -> Vec<Point> {
    snapshots
        .iter()
        .filter_map(|s| {
            let v = s
                .servers
                .iter()
                .find(|v| v.pid == key.pid && v.port == key.port)?;
            let ttft = v.models.iter().fold((0.0, 0), |(sum, n), m| {
                let h = &m.requests.delta.ttft_s;
                (sum + h.sum, n + h.count)
            });
            Some(Point {
                from: s.start(),
                to: s.time,
                ttft,
                waiting: v.queue.waiting_mean,
                gpu_percent: server_gpu_percent(s, key),
            })
        })
        .collect()
}

/// The mean utilisation of the GPUs the server's processes (itself and its
/// workers) have a context on.
fn server_gpu_percent(s: &Snapshot, key: ServerRef) -> Option<f64> {
    let uuids: BTreeSet<&str> = s
        .processes
        .iter()
        .filter(|p| p.identity.pid == key.pid || p.serves.contains(&key))
        .flat_map(|p| p.gpus.iter().map(|g| g.uuid.as_str()))
        .collect();
    mean(
        s.devices
            .iter()
            .filter(|d| uuids.contains(d.uuid.as_str()))
            .filter_map(|d| d.utilization_percent.map(f64::from)),
    )
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// Mean TTFT over some points; `None` without any.
fn mean_ttft<'a>(points: impl Iterator<Item = &'a Point>) -> Option<f64> {
    let (sum, n) = points.fold((0.0, 0), |(s, n), p| (s + p.ttft.0, n + p.ttft.1));
    (n > 0).then(|| sum / n as f64)
}

/// Time to first token rising while requests queue: saturated when the GPU
/// is busy, a concurrency limit when it has room, unexplained without NVML.
fn queueing(points: &[Point], subject: &Subject) -> Option<Finding> {
    let points: Vec<&Point> = points.iter().filter(|p| p.ttft.1 > 0).collect();
    let third = points.len() / 3;
    if points.len() < MIN_TREND_INTERVALS {
        return None;
    }
    let (first, last) = (&points[..third], &points[points.len() - third..]);
    let ttft_first = mean_ttft(first.iter().copied())?;
    let ttft_last = mean_ttft(last.iter().copied())?;
    let waiting_first = mean(first.iter().map(|p| p.waiting))?;
    let waiting_last = mean(last.iter().map(|p| p.waiting))?;
    if !(ttft_last >= TTFT_RISE_RATIO * ttft_first
        && ttft_last - ttft_first >= TTFT_RISE_MIN_S
        && waiting_last >= QUEUE_MIN_WAITING
        && waiting_last > waiting_first)
    {
        return None;
    }
    let gpu = mean(last.iter().filter_map(|p| p.gpu_percent));
    let rise = format!(
        "Time to first token rose from {ttft_first:.3} s to {ttft_last:.3} s (mean) while requests waiting rose from {waiting_first:.1} to {waiting_last:.1}"
    );
    let (finding, severity, summary) = match gpu {
        Some(g) if g >= GPU_BUSY_PERCENT => (
            FindingKind::Saturated,
            Severity::Warning,
            format!(
                "{rise}, with its GPUs {g:.0} % busy: the server is at capacity. More replicas or GPUs, \
                 shorter prompts or a lower request rate would help."
            ),
        ),
        Some(g) => (
            FindingKind::QueueWithIdleGpu,
            Severity::Warning,
            format!(
                "{rise}, although its GPUs were only {g:.0} % busy: a concurrency limit (max running \
                 requests, slots, batch size) or the front end holds requests back, not the GPU."
            ),
        ),
        None => (
            FindingKind::Queueing,
            Severity::Warning,
            format!("{rise}. No GPU figures say whether the GPU is the limit."),
        ),
    };
    let mut evidence = BTreeMap::from([
        (Evidence::TtftMeanFirstThirdS, ttft_first),
        (Evidence::TtftMeanLastThirdS, ttft_last),
        (Evidence::WaitingMeanFirstThird, waiting_first),
        (Evidence::WaitingMeanLastThird, waiting_last),
    ]);
    if let Some(g) = gpu {
        evidence.insert(Evidence::GpuUtilizationMeanLastThirdPercent, g);
    }
    Some(Finding {
        finding,
        severity,
        summary,
        subject: subject.clone(),
        from: first[0].from,
        to: last[last.len() - 1].to,
        evidence,
        queries: Vec::new(),
    })
}

/// Slow first tokens with no queue while the server's GPUs idle.
fn slow_first_token(points: &[Point], subject: &Subject) -> Option<Finding> {
    let points: Vec<&Point> = points.iter().filter(|p| p.ttft.1 > 0).collect();
    let ttft = mean_ttft(points.iter().copied())?;
    let waiting = mean(points.iter().map(|p| p.waiting))?;
    let gpu = mean(points.iter().filter_map(|p| p.gpu_percent))?;
    if ttft < SLOW_TTFT_S || waiting >= QUEUE_MIN_WAITING || gpu > GPU_IDLE_PERCENT {
        return None;
    }
    Some(Finding {
        finding: FindingKind::SlowFirstTokenGpuIdle,
        severity: Severity::Warning,
        summary: format!(
            "First tokens took {ttft:.3} s on average with {waiting:.1} requests waiting and its GPUs only \
             {gpu:.0} % busy: the time goes before the GPU (tokenizer, front end, scheduling, host-side \
             preprocessing), not to queueing or compute."
        ),
        subject: subject.clone(),
        from: points[0].from,
        to: points[points.len() - 1].to,
        evidence: BTreeMap::from([
            (Evidence::TtftMeanS, ttft),
            (Evidence::WaitingMean, waiting),
            (Evidence::GpuUtilizationMeanPercent, gpu),
            (
                Evidence::RequestsWithFirstToken,
                saturating_sum(points.iter().map(|p| p.ttft.1)) as f64,
            ),
        ]),
        queries: Vec::new(),
    })
}

/// Failed and cancelled requests of one server and model.
fn request_problems(recording: &Recording, key: ServerRef, model: &str, subject: &Subject) -> Vec<Finding> {
    let mut stats = (0u64, 0u64, 0u64, 0.0, 0u64);
    let mut range: Option<(SystemTime, SystemTime)> = None;
    for s in &recording.snapshots {
        let Some(m) = s
            .servers
            .iter()
            .filter(|v| v.pid == key.pid && v.port == key.port)
            .flat_map(|v| &v.models)
            .find(|m| m.model == model)
        else {
            continue;
        };
        let d = &m.requests.delta;
        // Saturating: a saved stream may hold any numbers.
        stats = (
            stats.0.saturating_add(d.requests),
            stats.1.saturating_add(d.errors.saturating_sub(d.cancelled)),
            stats.2.saturating_add(d.cancelled),
            stats.3 + d.ttft_s.sum,
            stats.4.saturating_add(d.ttft_s.count),
        );
        if d.errors > 0 {
            range = Some(range.map_or((s.start(), s.time), |(a, _)| (a, s.time)));
        }
    }
    let (requests, failed, cancelled, ttft_sum, ttft_n) = stats;
    let Some((from, to)) = range else {
        return Vec::new();
    };
    let share = |n: u64| n as f64 / requests.max(1) as f64;
    let mut findings = Vec::new();
    if failed > 0 && share(failed) >= REQUEST_PROBLEM_SHARE {
        findings.push(Finding {
            finding: FindingKind::RequestErrors,
            severity: Severity::Warning,
            summary: format!(
                "{failed} of {requests} requests ({:.1} %) failed: an error status, or cut off by the server.",
                100.0 * share(failed)
            ),
            subject: subject.clone(),
            from,
            to,
            evidence: BTreeMap::from([
                (Evidence::Requests, requests as f64),
                (Evidence::Failed, failed as f64),
                (Evidence::FailedShare, share(failed)),
            ]),
            queries: Vec::new(),
        });
    }
    if cancelled > 0 && share(cancelled) >= REQUEST_PROBLEM_SHARE {
        let mut evidence = BTreeMap::from([
            (Evidence::Requests, requests as f64),
            (Evidence::Cancelled, cancelled as f64),
            (Evidence::CancelledShare, share(cancelled)),
        ]);
        if ttft_n > 0 {
            evidence.insert(Evidence::TtftMeanS, ttft_sum / ttft_n as f64);
        }
        // Finished-request records, where the recording has them, say how long clients waited.
        let waits: Vec<(f64, bool)> = recording
            .requests
            .iter()
            .filter(|r| r.pid == key.pid && r.port == key.port && r.outcome == Outcome::Cancelled)
            .filter(|r| r.model.as_deref().unwrap_or("unknown") == model)
            .map(|r| (r.duration_s, r.ttft_s.is_none()))
            .collect();
        let mut waited = String::new();
        if let Some(m) = mean(waits.iter().map(|w| w.0)) {
            let before_first = waits.iter().filter(|w| w.1).count();
            evidence.insert(Evidence::CancelledAfterMeanS, m);
            evidence.insert(Evidence::CancelledBeforeFirstToken, before_first as f64);
            waited = format!(
                " Clients gave up after {m:.2} s on average; {before_first} of {} before the first token.",
                waits.len()
            );
        }
        findings.push(Finding {
            finding: FindingKind::ClientCancellations,
            severity: Severity::Warning,
            summary: format!(
                "{cancelled} of {requests} requests ({:.1} %) were cancelled by their clients.{waited}",
                100.0 * share(cancelled)
            ),
            subject: subject.clone(),
            from,
            to,
            evidence,
            queries: Vec::new(),
        });
    }
    findings
}

/// Launch-bound processes, and processes mostly blocked in synchronisation.
fn processes(snapshots: &[Snapshot], who: &Who) -> Vec<Finding> {
    #[derive(Default)]
    struct Seen {
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        seconds: f64,
        active: usize,
        flagged: Vec<(f64, u32)>,
        sync_seconds: f64,
        sync_calls: u64,
        launches: u64,
    }
    let mut seen: BTreeMap<u32, Seen> = BTreeMap::new();
    for s in snapshots {
        for p in &s.processes {
            let e = seen.entry(p.identity.pid).or_default();
            e.from.get_or_insert(s.start());
            e.to = Some(s.time);
            e.seconds += s.interval.as_secs_f64();
            let d = &p.gpu.delta;
            e.active += usize::from(d.kernel_launches > 0);
            e.sync_seconds += d.sync_seconds;
            e.sync_calls = e.sync_calls.saturating_add(d.sync_calls);
            e.launches = e.launches.saturating_add(d.kernel_launches);
            for signal in &p.signals {
                let Signal::LaunchBound {
                    kernel_launches_per_second,
                    sm_utilization_percent,
                } = signal;
                e.flagged
                    .push((*kernel_launches_per_second, *sm_utilization_percent));
            }
        }
    }
    let mut findings = Vec::new();
    for (pid, e) in seen {
        let (Some(from), Some(to)) = (e.from, e.to) else {
            continue;
        };
        let subject = who.subject(pid);
        if e.flagged.len() >= 2 && 2 * e.flagged.len() >= e.active {
            let rate = mean(e.flagged.iter().map(|f| f.0)).unwrap_or(0.0);
            let sm = e.flagged.iter().map(|f| f.1).max().unwrap_or(0);
            findings.push(Finding {
                finding: FindingKind::LaunchBound,
                severity: Severity::Warning,
                summary: format!(
                    "{rate:.0} kernel launches/s while its SM share stayed at or under {sm} % \
                     (in {} of {} active intervals): the CPU cannot feed the GPU. CUDA graphs, \
                     larger batches or torch.compile would help.",
                    e.flagged.len(),
                    e.active
                ),
                subject: subject.clone(),
                from,
                to,
                evidence: BTreeMap::from([
                    (Evidence::KernelLaunchesPerSecond, rate),
                    (Evidence::SmUtilizationMaxPercent, f64::from(sm)),
                    (
                        Evidence::SmUtilizationLimitPercent,
                        f64::from(LAUNCH_BOUND_MAX_SM_PERCENT),
                    ),
                    (Evidence::IntervalsLaunchBound, e.flagged.len() as f64),
                    (Evidence::IntervalsWithLaunches, e.active as f64),
                ]),
                queries: Vec::new(),
            });
        }
        let share = if e.seconds > 0.0 {
            e.sync_seconds / e.seconds
        } else {
            0.0
        };
        if e.sync_calls > 0 && share >= SYNC_SHARE {
            let per_s = |n: u64| n as f64 / e.seconds;
            findings.push(Finding {
                finding: FindingKind::BlockedInSync,
                severity: Severity::Warning,
                summary: format!(
                    "Its threads spent {share:.2} s per second blocked in GPU synchronisation \
                     ({:.0} calls/s): the CPU waits for the GPU instead of preparing the next work. \
                     Fewer synchronisations (asynchronous copies, events) would let them overlap.",
                    per_s(e.sync_calls)
                ),
                subject,
                from,
                to,
                evidence: BTreeMap::from([
                    (Evidence::SyncSecondsPerSecond, share),
                    (Evidence::SyncCallsPerSecond, per_s(e.sync_calls)),
                    (Evidence::KernelLaunchesPerSecond, per_s(e.launches)),
                ]),
                queries: Vec::new(),
            });
        }
    }
    findings
}

/// XID errors, memory near the limit and clock slowdowns, per GPU.
fn devices(snapshots: &[Snapshot]) -> Vec<Finding> {
    let uuids: BTreeSet<&str> = snapshots
        .iter()
        .flat_map(|s| s.devices.iter().map(|d| d.uuid.as_str()))
        .collect();
    let mut findings = Vec::new();
    for uuid in uuids {
        let seen: Vec<(&Snapshot, &crate::model::DeviceView)> = snapshots
            .iter()
            .filter_map(|s| Some((s, s.devices.iter().find(|d| d.uuid == uuid)?)))
            .collect();
        let (first, last) = (seen[0].0, seen[seen.len() - 1].0);
        let subject = Subject {
            gpu: Some(seen[0].1.index),
            gpu_uuid: Some(uuid.to_string()),
            ..Subject::default()
        };
        let xids = seen
            .iter()
            .fold(0u64, |n, (_, d)| n.saturating_add(d.xid_errors.delta));
        if xids > 0 {
            let events: Vec<(SystemTime, u64)> = snapshots
                .iter()
                .flat_map(|s| &s.gpu_events)
                .filter(|e| e.uuid == uuid)
                .map(|e| match e.kind {
                    GpuEventKind::Xid { xid } => (e.time, xid),
                })
                .collect();
            let mut evidence = BTreeMap::from([(Evidence::XidErrors, xids as f64)]);
            for (_, xid) in &events {
                *evidence.entry(Evidence::Xid(*xid)).or_insert(0.0) += 1.0;
            }
            let codes: BTreeSet<u64> = events.iter().map(|e| e.1).collect();
            let codes: Vec<String> = codes.iter().map(u64::to_string).collect();
            let (from, to) = match (events.first(), events.last()) {
                (Some(a), Some(b)) => (a.0, b.0),
                _ => (first.start(), last.time),
            };
            findings.push(Finding {
                finding: FindingKind::XidErrors,
                severity: Severity::Critical,
                summary: format!(
                    "The GPU reported {xids} XID error(s){}: driver-level faults (79: fallen off the bus, \
                     48: double-bit ECC, 13/31/43: application faults); check the kernel log and the \
                     processes on it.",
                    if codes.is_empty() {
                        String::new()
                    } else {
                        format!(" (XID {})", codes.join(", "))
                    }
                ),
                subject: subject.clone(),
                from,
                to,
                evidence,
                queries: Vec::new(),
            });
        }
        let fullest = seen
            .iter()
            .filter_map(|(s, d)| {
                Some((
                    *s,
                    *d,
                    d.memory_used_bytes?,
                    d.memory_total_bytes.filter(|&t| t > 0)?,
                ))
            })
            .max_by(|a, b| (a.2 as f64 / a.3 as f64).total_cmp(&(b.2 as f64 / b.3 as f64)));
        if let Some((s, d, used, total)) = fullest {
            let share = used as f64 / total as f64;
            if share >= MEMORY_NEAR_LIMIT {
                let biggest = d
                    .processes
                    .iter()
                    .filter_map(|p| Some((p.pid, p.usage.memory_used_bytes?)))
                    .max_by_key(|p| p.1);
                let mut evidence = BTreeMap::from([
                    (Evidence::MemoryUsedBytes, used as f64),
                    (Evidence::MemoryTotalBytes, total as f64),
                    (Evidence::MemoryUsedShare, share),
                ]);
                let mut holder = String::new();
                if let Some((pid, bytes)) = biggest {
                    evidence.insert(Evidence::LargestProcessPid, f64::from(pid));
                    evidence.insert(Evidence::LargestProcessMemoryUsedBytes, bytes as f64);
                    holder = format!(" Pid {pid} holds {:.1} GiB.", bytes as f64 / GIB);
                }
                findings.push(Finding {
                    finding: FindingKind::GpuMemoryNearLimit,
                    severity: Severity::Warning,
                    summary: format!(
                        "{:.1} of {:.1} GiB of GPU memory in use ({:.1} %): the next allocation or a \
                         larger batch may fail.{holder}",
                        used as f64 / GIB,
                        total as f64 / GIB,
                        100.0 * share
                    ),
                    subject: subject.clone(),
                    from: s.start(),
                    to: s.time,
                    evidence,
                    queries: Vec::new(),
                });
            }
        }
        let throttled: Vec<(&Snapshot, Vec<Slowdown>)> = seen
            .iter()
            .filter_map(|(s, d)| {
                let reasons: Vec<Slowdown> = d
                    .clock_event_reasons
                    .iter()
                    .flatten()
                    .filter_map(|r| Slowdown::of(r))
                    .collect();
                (!reasons.is_empty()).then_some((*s, reasons))
            })
            .collect();
        if let (Some(a), Some(b)) = (throttled.first(), throttled.last()) {
            let mut evidence = BTreeMap::from([
                (Evidence::IntervalsThrottled, throttled.len() as f64),
                (Evidence::Intervals, seen.len() as f64),
            ]);
            for (_, reasons) in &throttled {
                for &r in reasons {
                    *evidence.entry(Evidence::IntervalsSlowedBy(r)).or_insert(0.0) += 1.0;
                }
            }
            let reasons: BTreeSet<Slowdown> = throttled.iter().flat_map(|t| t.1.iter().copied()).collect();
            let thermal = reasons.iter().any(|r| r.thermal());
            findings.push(Finding {
                finding: FindingKind::ClockThrottled,
                severity: if thermal {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                summary: format!(
                    "The GPU slowed its clocks in {} of {} intervals ({}): it ran below its speed{}.",
                    throttled.len(),
                    seen.len(),
                    reasons
                        .into_iter()
                        .map(Slowdown::name)
                        .collect::<Vec<_>>()
                        .join(", "),
                    if thermal {
                        "; check cooling"
                    } else {
                        " to stay within its power limit"
                    }
                ),
                subject,
                from: a.0.start(),
                to: b.0.time,
                evidence,
                queries: Vec::new(),
            });
        }
    }
    findings
}

/// Events the kernel side lost, and requests left unmeasured.
fn measurement_gaps(snapshots: &[Snapshot]) -> Option<Finding> {
    let mut evidence = BTreeMap::new();
    let mut range: Option<(SystemTime, SystemTime)> = None;
    for s in snapshots {
        let lost = s
            .drops
            .delta
            .iter()
            .map(|(k, v)| (Evidence::EventsLost(k.clone()), v));
        let unmeasured = s
            .dropped_requests
            .delta
            .iter()
            .map(|(k, v)| (Evidence::RequestsUnmeasured(k.clone()), v));
        let mut any = false;
        for (k, v) in lost.chain(unmeasured).filter(|(_, v)| **v > 0) {
            *evidence.entry(k).or_insert(0.0) += *v as f64;
            any = true;
        }
        if any {
            range = Some(range.map_or((s.start(), s.time), |(a, _)| (a, s.time)));
        }
    }
    let (from, to) = range?;
    let sum = |events: bool| -> f64 {
        evidence
            .iter()
            .filter(|(k, _)| matches!(k, Evidence::EventsLost(_)) == events)
            .map(|(_, v)| v)
            .sum()
    };
    let (events, requests) = (sum(true), sum(false));
    Some(Finding {
        finding: FindingKind::MeasurementGaps,
        severity: Severity::Info,
        summary: format!(
            "The agent lost {events:.0} kernel events and left {requests:.0} requests unmeasured (reasons in the \
             evidence): figures here may undercount."
        ),
        subject: Subject::default(),
        from,
        to,
        evidence,
        queries: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{
        diagnose::diagnose,
        model::{
            Counted, DeviceView, GpuActivity, ModelView, ProcessGpu, ProcessIdentity, ProcessView, QueueView,
            RequestStats, ServerView, Vendor,
        },
    };

    const SERVER: ServerRef = ServerRef { pid: 10, port: 8000 };
    const UUID: &str = "GPU-0";

    fn snapshot(second: u64) -> Snapshot {
        Snapshot::empty_at(UNIX_EPOCH + Duration::from_secs(1_000 + second))
    }

    /// Requests finished in the interval with these first-token times, and the mean queue.
    fn with_requests(mut s: Snapshot, ttfts: &[f64], waiting: f64) -> Snapshot {
        let mut stats = RequestStats::empty();
        for &t in ttfts {
            stats.ttft_s.record(t);
            stats.requests += 1;
        }
        s.servers.push(ServerView {
            pid: SERVER.pid,
            comm: Some("server".into()),
            port: SERVER.port,
            protocol: Default::default(),
            queue: QueueView {
                waiting_mean: waiting,
                ..QueueView::default()
            },
            connections: 0,
            arrivals: Counted::default(),
            models: vec![ModelView {
                model: "m".into(),
                energy_joules: None,
                energy_per_output_token_joules: None,
                requests: Counted {
                    total: RequestStats::empty(),
                    delta: stats,
                },
            }],
        });
        s
    }

    /// The server's own process on a GPU this busy.
    fn on_gpu(mut s: Snapshot, busy: u32) -> Snapshot {
        let mut d = DeviceView::new(Vendor::Nvidia, 0, UUID.into(), "H100".into());
        d.utilization_percent = Some(busy);
        s.devices.push(d);
        s.processes.push(process(SERVER.pid, GpuActivity::default()));
        s.processes[0].serves = vec![SERVER];
        s.processes[0].gpus = vec![ProcessGpu {
            uuid: UUID.into(),
            index: 0,
            usage: Default::default(),
        }];
        s
    }

    fn process(pid: u32, delta: GpuActivity) -> ProcessView {
        ProcessView {
            identity: ProcessIdentity {
                pid,
                comm: "worker".into(),
                ..ProcessIdentity::default()
            },
            runtimes: Vec::new(),
            counted_since: None,
            gpu: Counted {
                total: delta.clone(),
                delta,
            },
            gpus: Vec::new(),
            pod: None,
            serves: Vec::new(),
            signals: Vec::new(),
            exited: false,
        }
    }

    fn kinds(snapshots: Vec<Snapshot>) -> Vec<FindingKind> {
        let d = diagnose(&Recording {
            snapshots,
            requests: Vec::new(),
        });
        d.findings.iter().map(|f| f.finding).collect()
    }

    /// Nine intervals: TTFT 0.1 s -> 0.4 s and the queue 0 -> 4, or flat.
    fn rising(rises: bool, gpu: Option<u32>) -> Vec<Snapshot> {
        (0..9)
            .map(|i| {
                let step = if rises { i as f64 } else { 0.0 };
                let s = with_requests(snapshot(i), &[0.1 + step * 0.04], step * 0.5);
                match gpu {
                    Some(busy) => on_gpu(s, busy),
                    None => s,
                }
            })
            .collect()
    }

    #[test]
    fn rising_ttft_with_a_growing_queue_is_saturation_only_when_the_gpu_is_busy() {
        assert_eq!(kinds(rising(true, Some(95))), [FindingKind::Saturated]);
        assert_eq!(kinds(rising(true, Some(40))), [FindingKind::QueueWithIdleGpu]);
        assert_eq!(kinds(rising(true, None)), [FindingKind::Queueing]);
        assert_eq!(kinds(rising(false, Some(95))), []);
        let d = diagnose(&Recording {
            snapshots: rising(true, Some(95)),
            requests: Vec::new(),
        });
        let f = &d.findings[0];
        assert_eq!(f.subject.pid, Some(SERVER.pid));
        // Thirds of nine intervals: the first three and the last three.
        assert!(
            (f.evidence[&Evidence::TtftMeanFirstThirdS] - 0.14).abs() < 1e-9,
            "{f:#?}"
        );
        assert!(
            (f.evidence[&Evidence::TtftMeanLastThirdS] - 0.38).abs() < 1e-9,
            "{f:#?}"
        );
        assert_eq!(f.evidence[&Evidence::GpuUtilizationMeanLastThirdPercent], 95.0);
        assert_eq!(f.from, UNIX_EPOCH + Duration::from_secs(999));
        assert_eq!(f.to, UNIX_EPOCH + Duration::from_secs(1_008));
        // A server is in the pod of a GPU process serving it (an engine's worker).
        let mut snapshots = rising(true, Some(95));
        let mut worker = process(11, GpuActivity::default());
        worker.serves = vec![SERVER];
        worker.pod = Some(crate::model::PodRef {
            namespace: "chat".into(),
            name: "llm-0".into(),
            container: "engine".into(),
            owner: None,
        });
        snapshots[0].processes.push(worker);
        let d = diagnose(&Recording {
            snapshots,
            requests: Vec::new(),
        });
        assert_eq!(d.findings[0].subject.pod.as_deref(), Some("chat/llm-0"));
        assert!(d.findings[0].subject.to_string().contains("pod chat/llm-0"));
    }

    #[test]
    fn without_gpu_figures_the_diagnosis_says_what_it_could_not_check() {
        let d = diagnose(&Recording {
            snapshots: rising(false, None),
            requests: Vec::new(),
        });
        assert!(
            d.not_checked.iter().any(|n| n.starts_with("GPU device figures")),
            "{d:#?}"
        );
        let d = diagnose(&Recording::default());
        assert_eq!((d.intervals, d.from, d.findings.len()), (0, None, 0));
        assert_eq!(d.not_checked.len(), 3, "{d:#?}");
    }

    #[test]
    fn slow_first_tokens_on_an_idle_gpu_point_before_the_gpu() {
        let slow = |busy, waiting| {
            (0..4)
                .map(|i| on_gpu(with_requests(snapshot(i), &[0.8], waiting), busy))
                .collect()
        };
        assert_eq!(kinds(slow(10, 0.5)), [FindingKind::SlowFirstTokenGpuIdle]);
        assert_eq!(kinds(slow(90, 0.5)), []);
        assert_eq!(kinds(slow(10, 3.0)), []);
    }

    #[test]
    fn launch_bound_needs_the_signal_in_most_active_intervals() {
        let flagged = |n: u64| -> Vec<Snapshot> {
            (0..4)
                .map(|i| {
                    let mut s = snapshot(i);
                    let mut p = process(
                        20,
                        GpuActivity {
                            kernel_launches: 5_000,
                            ..GpuActivity::default()
                        },
                    );
                    if i < n {
                        p.signals.push(Signal::LaunchBound {
                            kernel_launches_per_second: 5_000.0,
                            sm_utilization_percent: 12,
                        });
                    }
                    s.processes.push(p);
                    s
                })
                .collect()
        };
        let d = diagnose(&Recording {
            snapshots: flagged(3),
            requests: Vec::new(),
        });
        assert_eq!(d.findings.len(), 1, "{d:#?}");
        let f = &d.findings[0];
        assert_eq!((f.finding, f.subject.pid), (FindingKind::LaunchBound, Some(20)));
        assert_eq!(f.evidence[&Evidence::KernelLaunchesPerSecond], 5_000.0);
        assert_eq!(f.evidence[&Evidence::SmUtilizationMaxPercent], 12.0);
        assert_eq!(kinds(flagged(1)), []);
    }

    #[test]
    fn time_blocked_in_sync_is_a_share_of_wall_time() {
        let blocked = |seconds: f64| -> Vec<Snapshot> {
            (0..4)
                .map(|i| {
                    let mut s = snapshot(i);
                    s.processes.push(process(
                        30,
                        GpuActivity {
                            sync_calls: 100,
                            sync_seconds: seconds,
                            ..GpuActivity::default()
                        },
                    ));
                    s
                })
                .collect()
        };
        let d = diagnose(&Recording {
            snapshots: blocked(0.6),
            requests: Vec::new(),
        });
        let f = &d.findings[0];
        assert_eq!(f.finding, FindingKind::BlockedInSync);
        assert!((f.evidence[&Evidence::SyncSecondsPerSecond] - 0.6).abs() < 1e-9);
        assert_eq!(f.evidence[&Evidence::SyncCallsPerSecond], 100.0);
        assert_eq!(kinds(blocked(0.1)), []);
    }

    #[test]
    fn thermal_slowdowns_warn_and_power_caps_inform() {
        let throttled = |reason: &str| -> Vec<Snapshot> {
            (0..4)
                .map(|i| {
                    let mut s = snapshot(i);
                    let mut d = DeviceView::new(Vendor::Nvidia, 0, UUID.into(), "H100".into());
                    d.clock_event_reasons = Some(if i % 2 == 0 {
                        vec![reason.into()]
                    } else {
                        vec!["gpu_idle".into()]
                    });
                    s.devices.push(d);
                    s
                })
                .collect()
        };
        let d = diagnose(&Recording {
            snapshots: throttled("hw_thermal_slowdown"),
            requests: Vec::new(),
        });
        let f = &d.findings[0];
        assert_eq!(
            (f.finding, f.severity),
            (FindingKind::ClockThrottled, Severity::Warning)
        );
        assert_eq!(f.evidence[&Evidence::IntervalsThrottled], 2.0);
        assert_eq!(f.evidence[&Evidence::IntervalsSlowedBy(Slowdown::HwThermal)], 2.0);
        let d = diagnose(&Recording {
            snapshots: throttled("sw_power_cap"),
            requests: Vec::new(),
        });
        assert_eq!(d.findings[0].severity, Severity::Info);
        assert_eq!(kinds(throttled("gpu_idle")), []);
    }

    #[test]
    fn failures_are_told_apart_from_cancellations_and_lost_events_are_owned_up_to() {
        let mut s = with_requests(snapshot(0), &[0.1; 10], 0.0);
        let d = &mut s.servers[0].models[0].requests.delta;
        (d.errors, d.cancelled) = (3, 1);
        s.drops.delta.insert("net_event_ring_full".into(), 7);
        s.dropped_requests.delta.insert("events_lost".into(), 2);
        let d = diagnose(&Recording {
            snapshots: vec![s],
            requests: Vec::new(),
        });
        let find = |k| d.findings.iter().find(|f| f.finding == k).unwrap();
        let failed = find(FindingKind::RequestErrors);
        assert_eq!(
            (
                failed.evidence[&Evidence::Failed],
                failed.evidence[&Evidence::Requests]
            ),
            (2.0, 10.0)
        );
        assert_eq!(failed.subject.model.as_deref(), Some("m"));
        assert_eq!(
            find(FindingKind::ClientCancellations).evidence[&Evidence::Cancelled],
            1.0
        );
        let gaps = find(FindingKind::MeasurementGaps);
        assert_eq!(
            gaps.evidence[&Evidence::EventsLost("net_event_ring_full".into())],
            7.0
        );
        assert_eq!(
            gaps.evidence[&Evidence::RequestsUnmeasured("events_lost".into())],
            2.0
        );
    }
}
