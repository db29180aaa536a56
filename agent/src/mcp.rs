//! `inferscope mcp`: a Model Context Protocol server (the official Rust SDK,
//! rmcp) for assistants, over what the agent watches live: what runs now,
//! the slowest recent requests, and `diagnose` over a recent window. Tools
//! are read-only and their answers bounded (at most [`MAX_ITEMS`] entries a
//! list); like every output of the agent, they carry figures and names, never
//! a prompt or an answer.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use rmcp::{
    ErrorData as McpError, ServerHandler,
    handler::server::wrapper::Parameters,
    model::{CallToolResult, ContentBlock},
    schemars, tool, tool_handler, tool_router,
};
use serde::Serialize;

use crate::{
    diagnose::{self, Recording},
    model::{Outcome, Protocol, RequestRecord, Snapshot},
    sinks::Sink,
};

/// The most entries of any list a tool answers with.
pub const MAX_ITEMS: usize = 50;
/// Finished requests kept for `slowest_requests`, newest first out.
const KEPT_REQUESTS: usize = 10_000;

/// What the tools look at: the snapshots and finished requests of the last
/// `keep`, shared between the pipeline (a sink) and the server.
#[derive(Clone)]
pub struct Window {
    kept: Arc<Mutex<Kept>>,
    keep: Duration,
}

#[derive(Default)]
struct Kept {
    snapshots: VecDeque<Snapshot>,
    requests: VecDeque<RequestRecord>,
}

impl Window {
    pub fn new(keep: Duration) -> Self {
        Self {
            kept: Arc::default(),
            keep,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A tool that panicked leaves plain data behind.
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What was seen since `since` (everything kept when `None`).
    fn recording(&self, since: Option<SystemTime>) -> Recording {
        let kept = self.lock();
        let after = |time: SystemTime| since.is_none_or(|since| time >= since);
        Recording {
            snapshots: kept.snapshots.iter().filter(|s| after(s.time)).cloned().collect(),
            requests: kept.requests.iter().filter(|r| after(r.time)).cloned().collect(),
        }
    }
}

impl Sink for Window {
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        let keep = self.keep;
        let mut kept = self.lock();
        kept.snapshots.push_back(snapshot.clone());
        let oldest = snapshot.time.checked_sub(keep);
        while kept
            .snapshots
            .front()
            .is_some_and(|s| oldest.is_some_and(|oldest| s.time < oldest))
        {
            kept.snapshots.pop_front();
        }
        while kept
            .requests
            .front()
            .is_some_and(|r| oldest.is_some_and(|oldest| r.time < oldest))
        {
            kept.requests.pop_front();
        }
        Ok(())
    }

    fn request(&mut self, request: &RequestRecord) -> io::Result<()> {
        let mut kept = self.lock();
        if kept.requests.len() == KEPT_REQUESTS {
            kept.requests.pop_front();
        }
        kept.requests.push_back(request.clone());
        Ok(())
    }
}

/// The server's tools, over one window.
#[derive(Clone)]
pub struct Tools {
    window: Window,
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct Since {
    /// Only the last this many seconds (default: all the agent keeps, `--keep`).
    pub last_seconds: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct Slowest {
    /// How many requests, at most 50 (default 10).
    pub limit: Option<usize>,
    /// Only requests that finished in the last this many seconds (default: all kept).
    pub last_seconds: Option<u64>,
}

/// A server as `running_now` tells it.
#[derive(Serialize)]
struct Server {
    pid: u32,
    comm: Option<String>,
    port: u16,
    protocol: Protocol,
    waiting: u64,
    running: u64,
    models: Vec<Model>,
}

#[derive(Serialize)]
struct Model {
    model: String,
    /// Over the last interval.
    requests: u64,
    errors: u64,
    ttft_mean_s: Option<f64>,
    output_tokens: u64,
}

#[derive(Serialize)]
struct GpuProcess {
    pid: u32,
    comm: String,
    pod: Option<String>,
    /// Over the last interval.
    kernel_launches: u64,
    sync_seconds: f64,
    gpus: Vec<String>,
}

#[derive(Serialize)]
struct Gpu {
    index: u32,
    name: String,
    uuid: String,
    utilization_percent: Option<u32>,
    memory_used_bytes: Option<u64>,
    memory_total_bytes: Option<u64>,
    temperature_celsius: Option<u32>,
    power_watts: Option<f64>,
}

#[derive(Serialize)]
struct RunningNow {
    /// The latest snapshot's end, and the interval it covers.
    time: Option<String>,
    interval_s: Option<f64>,
    servers: Vec<Server>,
    gpu_processes: Vec<GpuProcess>,
    gpus: Vec<Gpu>,
    /// Entries left out past [`MAX_ITEMS`] a list.
    left_out: usize,
}

/// A finished request, its figures only.
#[derive(Serialize)]
struct Request {
    time: String,
    pid: u32,
    port: u16,
    model: Option<String>,
    status: u16,
    outcome: Outcome,
    duration_s: f64,
    ttft_s: Option<f64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[tool_router]
impl Tools {
    pub fn new(window: Window) -> Self {
        Self { window }
    }

    /// The moment `last_seconds` before now, if given.
    fn since(last_seconds: Option<u64>) -> Option<SystemTime> {
        last_seconds.and_then(|s| SystemTime::now().checked_sub(Duration::from_secs(s)))
    }

    #[tool(
        description = "What runs now, from the agent's latest snapshot: inference servers (port, queue, \
                       per model the last interval's requests, errors, mean time to first token), GPU \
                       processes (kernel launches, time blocked in synchronisation, GPUs used) and GPUs \
                       (utilisation, memory, temperature, power).",
        annotations(read_only_hint = true)
    )]
    async fn running_now(&self) -> Result<CallToolResult, McpError> {
        let latest = self.window.lock().snapshots.back().cloned();
        answer(&running_now(latest.as_ref()))
    }

    #[tool(
        description = "The slowest finished requests the agent saw (by duration), with their model, \
                       server, status, time to first token and token counts. Never their text.",
        annotations(read_only_hint = true)
    )]
    async fn slowest_requests(
        &self,
        Parameters(Slowest { limit, last_seconds }): Parameters<Slowest>,
    ) -> Result<CallToolResult, McpError> {
        let limit = limit.unwrap_or(10).min(MAX_ITEMS);
        let mut requests = self.window.recording(Self::since(last_seconds)).requests;
        requests.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
        let slowest: Vec<Request> = requests.iter().take(limit).map(request).collect();
        answer(&slowest)
    }

    #[tool(
        description = "inferscope's diagnosis over a recent window: findings (saturation, queueing on an \
                       idle GPU, launch-bound or sync-bound processes, memory pressure, XID errors, \
                       throttling, failed or cancelled requests, measurement gaps), each with its \
                       subject, time range and the figures behind it, and what could not be checked.",
        annotations(read_only_hint = true)
    )]
    async fn diagnose(
        &self,
        Parameters(Since { last_seconds }): Parameters<Since>,
    ) -> Result<CallToolResult, McpError> {
        let mut diagnosis = diagnose::diagnose(&self.window.recording(Self::since(last_seconds)));
        diagnosis.findings.truncate(MAX_ITEMS);
        diagnosis.not_checked.truncate(MAX_ITEMS);
        answer(&diagnosis)
    }
}

#[tool_handler(
    name = "inferscope",
    instructions = "Live figures of the GPU inference servers and GPU processes on this host, measured \
                    from the kernel by inferscope: what runs now, the slowest recent requests, and a \
                    diagnosis with evidence. Figures and names only; never request or response text."
)]
impl ServerHandler for Tools {}

/// A tool's answer: JSON text.
fn answer(value: &impl Serialize) -> Result<CallToolResult, McpError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| McpError::internal_error(format!("encoding the answer: {e}"), None))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn running_now(latest: Option<&Snapshot>) -> RunningNow {
    let Some(s) = latest else {
        return RunningNow {
            time: None,
            interval_s: None,
            servers: Vec::new(),
            gpu_processes: Vec::new(),
            gpus: Vec::new(),
            left_out: 0,
        };
    };
    let servers = s
        .servers
        .iter()
        .map(|v| Server {
            pid: v.pid,
            comm: v.comm.clone(),
            port: v.port,
            protocol: v.protocol,
            waiting: v.queue.waiting,
            running: v.queue.running,
            models: v
                .models
                .iter()
                .take(MAX_ITEMS)
                .map(|m| {
                    let delta = &m.requests.delta;
                    Model {
                        model: m.model.clone(),
                        requests: delta.requests,
                        errors: delta.errors,
                        ttft_mean_s: (delta.ttft_s.count > 0)
                            .then(|| delta.ttft_s.sum / delta.ttft_s.count as f64),
                        output_tokens: delta.output_tokens,
                    }
                })
                .collect(),
        })
        .collect();
    // The busiest first.
    let mut processes: Vec<_> = s.processes.iter().collect();
    processes.sort_by_key(|p| std::cmp::Reverse(p.gpu.delta.kernel_launches));
    let gpu_processes = processes
        .into_iter()
        .map(|p| GpuProcess {
            pid: p.identity.pid,
            comm: p.identity.comm.clone(),
            pod: p
                .pod
                .as_ref()
                .map(|pod| format!("{}/{}", pod.namespace, pod.name)),
            kernel_launches: p.gpu.delta.kernel_launches,
            sync_seconds: p.gpu.delta.sync_seconds,
            gpus: p.gpus.iter().map(|g| g.uuid.clone()).collect(),
        })
        .collect();
    let gpus = s
        .devices
        .iter()
        .map(|d| Gpu {
            index: d.index,
            name: d.name.clone(),
            uuid: d.uuid.clone(),
            utilization_percent: d.utilization_percent,
            memory_used_bytes: d.memory_used_bytes,
            memory_total_bytes: d.memory_total_bytes,
            temperature_celsius: d.temperature_celsius,
            power_watts: d.power_watts,
        })
        .collect();
    let mut left_out = 0;
    RunningNow {
        time: Some(humantime::format_rfc3339_millis(s.time).to_string()),
        interval_s: Some(s.interval.as_secs_f64()),
        servers: bounded(servers, &mut left_out),
        gpu_processes: bounded(gpu_processes, &mut left_out),
        gpus: bounded(gpus, &mut left_out),
        left_out,
    }
}

/// `items`, at most [`MAX_ITEMS`] of them; counts those left out.
fn bounded<T>(mut items: Vec<T>, left_out: &mut usize) -> Vec<T> {
    *left_out += items.len().saturating_sub(MAX_ITEMS);
    items.truncate(MAX_ITEMS);
    items
}

fn request(r: &RequestRecord) -> Request {
    Request {
        time: humantime::format_rfc3339_millis(r.time).to_string(),
        pid: r.pid,
        port: r.port,
        model: r.model.clone(),
        status: r.status,
        outcome: r.outcome,
        duration_s: r.duration_s,
        ttft_s: r.ttft_s,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_at(seconds: u64) -> Snapshot {
        Snapshot::empty_at(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn the_window_keeps_only_its_length_of_the_past() {
        let mut window = Window::new(Duration::from_secs(60));
        for seconds in [1_000, 1_030, 1_061, 1_090] {
            window.snapshot(&snapshot_at(seconds)).unwrap();
        }
        let kept: Vec<SystemTime> = window.recording(None).snapshots.iter().map(|s| s.time).collect();
        assert_eq!(kept, [1_030, 1_061, 1_090].map(|s| snapshot_at(s).time));
        let since = snapshot_at(1_061).time;
        assert_eq!(window.recording(Some(since)).snapshots.len(), 2);
    }

    #[test]
    fn every_list_of_an_answer_is_bounded_and_says_what_it_left_out() {
        let mut left_out = 0;
        assert_eq!(bounded((0..120).collect(), &mut left_out).len(), MAX_ITEMS);
        assert_eq!(bounded(vec![1, 2], &mut left_out).len(), 2);
        assert_eq!(left_out, 120 - MAX_ITEMS);
        let empty = running_now(None);
        assert!(empty.time.is_none() && empty.servers.is_empty());
    }
}
