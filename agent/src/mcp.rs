//! `inferscope mcp`: a Model Context Protocol server (the official Rust SDK,
//! rmcp) for assistants, over what the agent watches live: what runs now,
//! the slowest recent requests, `diagnose` over a recent window and, with
//! `--profile`, a recent profile as text; with `--prometheus`, also over the
//! fleet's store: `diagnose_fleet` and a read-only `query_store`. Tools are
//! read-only and their answers bounded (at most [`MAX_ITEMS`] entries a
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
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock},
    schemars, tool, tool_handler, tool_router,
};
use serde::Serialize;

use crate::{
    diagnose::{self, Recording},
    model::{Outcome, Protocol, RequestRecord, Snapshot},
    profile::{Destination, Period, ProfileKind, StackProfile},
    sinks::Sink,
    store::{Slice, Store, StoreError},
};

/// The most entries of any list a tool answers with.
pub const MAX_ITEMS: usize = 50;
/// The most points of a series `query_store` answers with over a range.
const MAX_POINTS: u64 = 100;
/// The deepest frames of a stack `profile` shows (the innermost).
const MAX_FRAMES: usize = 48;
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
    /// Profile periods (with --profile), by the time each ended.
    profiles: VecDeque<(SystemTime, Vec<StackProfile>)>,
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

/// With --profile, each period's profiles are kept for the `profile` tool.
impl Destination for Window {
    fn deliver(&mut self, period: &Period<'_>) -> io::Result<()> {
        let end = period.start + period.duration;
        let keep = self.keep;
        let mut kept = self.lock();
        kept.profiles
            .push_back((end, period.delivered().cloned().collect()));
        let oldest = end.checked_sub(keep);
        while kept
            .profiles
            .front()
            .is_some_and(|(t, _)| oldest.is_some_and(|oldest| *t < oldest))
        {
            kept.profiles.pop_front();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "the MCP server's profile tool".into()
    }
}

/// The server's tools, over one window and, if given, a store.
#[derive(Clone)]
pub struct Tools {
    window: Window,
    store: Option<Arc<Store>>,
    router: ToolRouter<Self>,
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct Since {
    /// Only the last this many seconds (default: all the agent keeps, `--keep`).
    pub last_seconds: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct ProfileAsk {
    /// Only the profile periods that ended in the last this many seconds (default: all kept).
    pub last_seconds: Option<u64>,
    /// How many stacks of each kind, the heaviest first, at most 50 (default 10).
    pub limit: Option<usize>,
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct FleetAsk {
    /// The range starts this many seconds before its end (default 3600).
    pub since_seconds: Option<u64>,
    /// The range ends this many seconds before now (default 0).
    pub until_seconds_ago: Option<u64>,
    /// PromQL label matchers narrowing the servers, requests and processes
    /// (`k8s.namespace.name="chat"`; `k8s_namespace_name="chat"` in a scraped store).
    #[serde(rename = "match")]
    pub matchers: Option<String>,
    /// The interval length the rules compare, in seconds (default: the range / 240).
    pub step_seconds: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct StoreQuery {
    /// A PromQL expression (MetricsQL on VictoriaMetrics).
    pub query: String,
    /// Evaluate over the last this many seconds (at most 100 points a
    /// series); without it, at this moment only.
    pub range_seconds: Option<u64>,
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

/// The heaviest stacks of one kind of profile.
#[derive(Serialize)]
struct TopStacks {
    kind: &'static str,
    /// What was sampled, and what a stack's count is.
    sampled: &'static str,
    unit: &'static str,
    total: u64,
    stacks: Vec<TopStack>,
    /// Distinct stacks left out past the limit.
    left_out: usize,
}

#[derive(Serialize)]
struct TopStack {
    count: u64,
    share: f64,
    pid: u32,
    /// Outermost first, `;` between frames; the innermost [`MAX_FRAMES`] when deeper.
    stack: String,
}

/// A series a store answered with.
#[derive(Serialize)]
struct StoreSeries {
    labels: std::collections::BTreeMap<String, String>,
    /// (Unix seconds, value).
    values: Vec<(f64, f64)>,
}

#[derive(Serialize)]
struct StoreAnswer {
    series: Vec<StoreSeries>,
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
    /// The tools over `window`; the store's only with `store`, `profile` only when `profiling`.
    pub fn new(window: Window, store: Option<Store>, profiling: bool) -> Self {
        let mut router = Self::tool_router();
        if store.is_none() {
            router.remove_route("diagnose_fleet");
            router.remove_route("query_store");
        }
        if !profiling {
            router.remove_route("profile");
        }
        Self {
            window,
            store: store.map(Arc::new),
            router,
        }
    }

    /// Runs `read` on the store, off the protocol's thread.
    async fn with_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, McpError> {
        let store = self.store.clone().ok_or_else(|| {
            McpError::invalid_request("no store: start inferscope mcp with --prometheus", None)
        })?;
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| McpError::internal_error(format!("reading the store: {e}"), None))?
            .map_err(|e| match e {
                StoreError::Query { .. } | StoreError::EmptyRange | StoreError::TooManyPoints { .. } => {
                    McpError::invalid_params(e.to_string(), None)
                }
                _ => McpError::internal_error(e.to_string(), None),
            })
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

    #[tool(
        description = "Where time went recently on this host, from the agent's continuous profile: per \
                       kind (CPU samples; where GPU kernels are launched from; where processes wait for \
                       the GPU) the heaviest native and Python stacks, with their counts and shares.",
        annotations(read_only_hint = true)
    )]
    async fn profile(
        &self,
        Parameters(ProfileAsk { last_seconds, limit }): Parameters<ProfileAsk>,
    ) -> Result<CallToolResult, McpError> {
        let since = Self::since(last_seconds);
        let periods: Vec<Vec<StackProfile>> = self
            .window
            .lock()
            .profiles
            .iter()
            .filter(|(end, _)| since.is_none_or(|since| *end >= since))
            .map(|(_, profiles)| profiles.clone())
            .collect();
        answer(&top_stacks(&periods, limit.unwrap_or(10).min(MAX_ITEMS)))
    }

    #[tool(
        description = "inferscope's diagnosis across the fleet, from the metrics store the agents export \
                       to: the same findings as `diagnose`, per node, over a past range (default the last \
                       hour), each with its time range, evidence and the PromQL behind it.",
        annotations(read_only_hint = true)
    )]
    async fn diagnose_fleet(
        &self,
        Parameters(ask): Parameters<FleetAsk>,
    ) -> Result<CallToolResult, McpError> {
        let now = SystemTime::now();
        let until = now
            .checked_sub(Duration::from_secs(ask.until_seconds_ago.unwrap_or(0)))
            .unwrap_or(now);
        let since = until
            .checked_sub(Duration::from_secs(ask.since_seconds.unwrap_or(3600)))
            .unwrap_or(until);
        let step = ask.step_seconds.map(|s| Duration::from_secs(s.max(1)));
        let mut diagnosis = self
            .with_store(move |store| store.diagnose(&Slice::new(since, until, step, ask.matchers)?))
            .await?
            .diagnosis;
        diagnosis.findings.truncate(MAX_ITEMS);
        diagnosis.not_checked.truncate(MAX_ITEMS);
        answer(&diagnosis)
    }

    #[tool(
        description = "A read-only PromQL query of the metrics store the agents export to (names as the \
                       store keeps them: gen_ai.server.time_to_first_token_sum as OTLP sent it, or \
                       gen_ai_server_time_to_first_token_seconds_sum as scraped), now or over the last \
                       range_seconds; at most 50 series of at most 100 points.",
        annotations(read_only_hint = true)
    )]
    async fn query_store(
        &self,
        Parameters(StoreQuery { query, range_seconds }): Parameters<StoreQuery>,
    ) -> Result<CallToolResult, McpError> {
        let series = self
            .with_store(move |store| {
                let now = SystemTime::now();
                match range_seconds {
                    None => store.instant(&query, now),
                    Some(seconds) => {
                        let seconds = seconds.max(1);
                        let step = Duration::from_secs(seconds.div_ceil(MAX_POINTS - 1).max(1));
                        let since = now.checked_sub(Duration::from_secs(seconds)).unwrap_or(now);
                        store.range(&query, &Slice::new(since, now, Some(step), None)?)
                    }
                }
            })
            .await?;
        let mut left_out = 0;
        let series = bounded(series, &mut left_out)
            .into_iter()
            .map(|s| StoreSeries {
                labels: s.labels,
                values: s.values.into_iter().map(|(ms, v)| (ms as f64 / 1e3, v)).collect(),
            })
            .collect();
        answer(&StoreAnswer { series, left_out })
    }
}

#[tool_handler(
    router = self.router,
    name = "inferscope",
    instructions = "Figures of the GPU inference servers and GPU processes measured from the kernel by \
                    inferscope: live on this host (what runs now, the slowest recent requests, a \
                    diagnosis with evidence, a recent profile) and, where a metrics store is configured, \
                    across the fleet's history. Figures and names only; never request or response text."
)]
impl ServerHandler for Tools {}

/// Samples of each distinct stack: by pid and frames.
type Counts<'a> = std::collections::HashMap<(u32, &'a [String]), u64>;

/// Per kind, the heaviest `limit` stacks over `periods` (same process and frames added up).
fn top_stacks(periods: &[Vec<StackProfile>], limit: usize) -> Vec<TopStacks> {
    let mut kinds: Vec<(ProfileKind, Counts<'_>)> = Vec::new();
    for profile in periods.iter().flatten() {
        let index = match kinds.iter().position(|(kind, _)| *kind == profile.kind) {
            Some(i) => i,
            None => {
                kinds.push((profile.kind, Default::default()));
                kinds.len() - 1
            }
        };
        for stack in &profile.stacks {
            *kinds[index].1.entry((stack.pid, &stack.frames)).or_default() += stack.count;
        }
    }
    kinds
        .into_iter()
        .map(|(kind, stacks)| {
            let total = crate::model::saturating_sum(stacks.values().copied());
            let mut stacks: Vec<_> = stacks.into_iter().collect();
            stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let left_out = stacks.len().saturating_sub(limit);
            let stacks = stacks
                .into_iter()
                .take(limit)
                .map(|((pid, frames), count)| {
                    let cut = frames.len().saturating_sub(MAX_FRAMES);
                    let mut stack = frames[cut..].join(";");
                    if cut > 0 {
                        stack = format!("…;{stack}");
                    }
                    TopStack {
                        count,
                        share: count as f64 / total.max(1) as f64,
                        pid,
                        stack,
                    }
                })
                .collect();
            TopStacks {
                kind: kind.name(),
                sampled: kind.sampled(),
                unit: kind.count_name(),
                total,
                stacks,
                left_out,
            }
        })
        .collect()
}

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
