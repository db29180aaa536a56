//! The exported metrics the store is read for, as `sinks::otel::instruments`
//! registers them (name, unit, instrument).

use super::dialect::{Kind, Metric};

pub const WAITING: Metric = Metric::new("inferscope.server.queue.waiting", "{request}", Kind::Gauge);
pub const WAITING_TIME: Metric = Metric::new("inferscope.server.queue.waiting.time", "s", Kind::Counter);
pub const TTFT_SUM: Metric = Metric::new("gen_ai.server.time_to_first_token", "s", Kind::HistogramSum);
pub const TTFT_COUNT: Metric = Metric::new("gen_ai.server.time_to_first_token", "s", Kind::HistogramCount);
pub const REQUESTS: Metric = Metric::new("gen_ai.server.request.duration", "s", Kind::HistogramCount);
pub const CUDA_LAUNCHES: Metric = Metric::new("gpu.cuda.kernel.launch.calls", "{call}", Kind::Counter);
pub const HIP_LAUNCHES: Metric = Metric::new("inferscope.hip.kernel.launch.calls", "{call}", Kind::Counter);
pub const SYNC_CALLS: Metric = Metric::new("inferscope.gpu.sync.calls", "{call}", Kind::Counter);
pub const SYNC_TIME: Metric = Metric::new("inferscope.gpu.sync.time", "s", Kind::Counter);
pub const LAUNCH_BOUND: Metric = Metric::new("inferscope.process.launch_bound", "", Kind::Gauge);
pub const PROCESS_MEMORY: Metric = Metric::new("inferscope.process.gpu.memory.usage", "By", Kind::Gauge);
pub const PROCESS_SM: Metric = Metric::new("inferscope.process.gpu.utilization", "1", Kind::Gauge);
pub const GPU_UTILIZATION: Metric = Metric::new("hw.gpu.utilization", "1", Kind::Gauge);
pub const GPU_MEMORY_USED: Metric = Metric::new("hw.gpu.memory.usage", "By", Kind::Gauge);
pub const GPU_MEMORY_LIMIT: Metric = Metric::new("hw.gpu.memory.limit", "By", Kind::Gauge);
pub const GPU_ERRORS: Metric = Metric::new("hw.errors", "{error}", Kind::Counter);
pub const DROPPED_EVENTS: Metric = Metric::new("inferscope.dropped_events", "{event}", Kind::Counter);
pub const DROPPED_REQUESTS: Metric = Metric::new("inferscope.dropped_requests", "{request}", Kind::Counter);
/// The resource of each scraped target (Prometheus dialect only).
pub const TARGET_INFO: Metric = Metric::new("target_info", "", Kind::Gauge);
