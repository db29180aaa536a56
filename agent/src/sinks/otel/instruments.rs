//! Every exported metric: its name, unit, instrument and where its value comes
//! from. The reference for users is docs/metrics.md; keep the two in step.

use std::collections::HashMap;

use opentelemetry::{
    KeyValue,
    metrics::{AsyncInstrument, Histogram, Meter},
};

use super::{
    ExportHealth, Latest, Shared,
    attributes::{self, ModelNames},
};
use crate::{
    model::{
        DeviceView, DropReason, GpuActivity, PodRef, RequestDrop, RequestRecord, Signal, Snapshot,
        histogram::{DURATION_BOUNDS, TPOT_BOUNDS, TTFT_BOUNDS},
    },
    runtimes::Family,
};

/// The conventions' buckets for token counts (`gen_ai.client.token.usage`).
const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Emits one observation: a value and its attributes.
type Emit<'a, T> = &'a mut dyn FnMut(T, &[KeyValue]);

/// A row of a metric table: what the metric is, and how its value is read.
struct Metric<F> {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    value: F,
}

const fn metric<F>(name: &'static str, unit: &'static str, description: &'static str, value: F) -> Metric<F> {
    Metric {
        name,
        unit,
        description,
        value,
    }
}

macro_rules! observable {
    ($helper:ident, $builder:ident, $t:ty) => {
        /// Registers an instrument observed from the latest snapshot at each collection.
        fn $helper(
            meter: &Meter,
            shared: &Shared,
            name: &'static str,
            unit: &'static str,
            description: &'static str,
            read: impl Fn(&Latest, Emit<'_, $t>) + Send + Sync + 'static,
        ) {
            let shared = shared.clone();
            meter
                .$builder(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer: &dyn AsyncInstrument<$t>| {
                    let latest = shared.lock();
                    read(&latest, &mut |value, attributes| {
                        observer.observe(value, attributes)
                    });
                })
                .build();
        }
    };
}

observable!(counter_u64, u64_observable_counter, u64);
observable!(counter_f64, f64_observable_counter, f64);
observable!(up_down_i64, i64_observable_up_down_counter, i64);
observable!(gauge_f64, f64_observable_gauge, f64);

/// Registers every figure read from snapshots.
pub fn observe_snapshots(meter: &Meter, shared: &Shared, health: &ExportHealth) {
    gpu_runtime(meter, shared);
    process_gpus(meter, shared);
    devices(meter, shared);
    servers(meter, shared);
    agent(meter, shared, health);
}

/// A counter of each process's cumulative GPU activity.
type ActivityCounter = Metric<fn(&GpuActivity) -> u64>;

/// Registers `m` for the processes of `family` (all when `None`).
fn process_counter(meter: &Meter, shared: &Shared, m: ActivityCounter, family: Option<Family>) {
    let value = m.value;
    counter_u64(
        meter,
        shared,
        m.name,
        m.unit,
        m.description,
        move |latest, emit| {
            for p in latest.processes() {
                if family.is_none_or(|f| f == Family::of(&p.runtimes)) {
                    emit(value(&p.gpu.total), &attributes::process(p));
                }
            }
        },
    );
}

/// Kernel launches, copies, allocations, synchronisation, NCCL: per process, from the uprobes.
fn gpu_runtime(meter: &Meter, shared: &Shared) {
    // The names OpenTelemetry eBPF Instrumentation gives CUDA processes, and ours for HIP.
    let by_family: [(ActivityCounter, &'static str); 3] = [
        (
            metric(
                "gpu.cuda.kernel.launch.calls",
                "{call}",
                "Kernel launches (cudaLaunchKernel and kin, cuLaunchKernel, hipLaunchKernel).",
                |g| g.kernel_launches,
            ),
            "inferscope.hip.kernel.launch.calls",
        ),
        (
            metric(
                "gpu.cuda.graph.launch.calls",
                "{call}",
                "Graph launches (cudaGraphLaunch, cuGraphLaunch, hipGraphLaunch).",
                |g| g.graph_launches,
            ),
            "inferscope.hip.graph.launch.calls",
        ),
        (
            metric(
                "gpu.cuda.memory.allocations",
                "By",
                "Bytes of device memory allocated.",
                |g| g.alloc_bytes,
            ),
            "inferscope.hip.memory.allocations",
        ),
    ];
    for (cuda, hip_name) in by_family {
        let hip = metric(hip_name, cuda.unit, cuda.description, cuda.value);
        process_counter(meter, shared, cuda, Some(Family::Cuda));
        process_counter(meter, shared, hip, Some(Family::Hip));
    }
    let counters: [ActivityCounter; 7] = [
        metric(
            "inferscope.gpu.memory.allocation.calls",
            "{call}",
            "Device memory allocations.",
            |g| g.alloc_calls,
        ),
        metric(
            "inferscope.gpu.memory.free.calls",
            "{call}",
            "Device memory frees.",
            |g| g.free_calls,
        ),
        metric(
            "inferscope.gpu.memory.copy.calls",
            "{call}",
            "Memory copies (all directions).",
            |g| g.memcpy_calls,
        ),
        metric("inferscope.gpu.memset.calls", "{call}", "Device memsets.", |g| {
            g.memset_calls
        }),
        metric(
            "inferscope.gpu.memset.size",
            "By",
            "Bytes set by device memsets.",
            |g| g.memset_bytes,
        ),
        metric(
            "inferscope.gpu.sync.calls",
            "{call}",
            "Calls that wait for the GPU (device, stream, event synchronize).",
            |g| g.sync_calls,
        ),
        metric(
            "inferscope.gpu.errors",
            "{error}",
            "GPU runtime calls that returned an error.",
            |g| g.errors,
        ),
    ];
    for m in counters {
        process_counter(meter, shared, m, None);
    }
    counter_u64(
        meter,
        shared,
        "inferscope.gpu.memory.copied",
        "By",
        "Bytes copied by memory copies, by direction.",
        |latest, emit| {
            for p in latest.processes() {
                let bytes = &p.gpu.total.memcpy_bytes;
                for (direction, value) in [
                    ("host_to_device", bytes.htod),
                    ("device_to_host", bytes.dtoh),
                    ("device_to_device", bytes.dtod),
                    ("other", bytes.other),
                ] {
                    emit(
                        value,
                        &with(attributes::process(p), "inferscope.copy.direction", direction),
                    );
                }
            }
        },
    );
    counter_f64(
        meter,
        shared,
        "inferscope.gpu.sync.time",
        "s",
        "Time threads spent blocked waiting for the GPU.",
        |latest, emit| {
            for p in latest.processes() {
                emit(p.gpu.total.sync_seconds, &attributes::process(p));
            }
        },
    );
    up_down_i64(
        meter,
        shared,
        "inferscope.gpu.memory.live",
        "By",
        "Device memory allocated through the runtime and not yet freed (since the agent watched).",
        |latest, emit| {
            for p in latest.processes() {
                emit(p.gpu.total.live_bytes, &attributes::process(p));
            }
        },
    );
    for (name, unit, description, value) in [
        (
            "inferscope.nccl.calls",
            "{call}",
            "NCCL collective and point-to-point calls, by operation.",
            nccl_calls as fn(&crate::model::NcclActivity) -> u64,
        ),
        (
            "inferscope.nccl.size",
            "By",
            "Bytes NCCL operations were asked to move, by operation.",
            nccl_bytes,
        ),
    ] {
        counter_u64(meter, shared, name, unit, description, move |latest, emit| {
            for p in latest.processes() {
                for (operation, nccl) in &p.gpu.total.nccl {
                    emit(
                        value(nccl),
                        &with(
                            attributes::process(p),
                            "inferscope.nccl.operation",
                            operation.clone(),
                        ),
                    );
                }
            }
        });
    }
}

fn nccl_calls(n: &crate::model::NcclActivity) -> u64 {
    n.calls
}

fn nccl_bytes(n: &crate::model::NcclActivity) -> u64 {
    n.bytes
}

/// A process's share of each GPU (NVML), and whether it is launch-bound.
fn process_gpus(meter: &Meter, shared: &Shared) {
    up_down_i64(
        meter,
        shared,
        "inferscope.process.gpu.memory.usage",
        "By",
        "Device memory a process holds on a GPU (NVML).",
        |latest, emit| {
            for p in latest.processes() {
                for gpu in &p.gpus {
                    if let Some(bytes) = gpu.usage.memory_used_bytes {
                        emit(
                            saturating_i64(bytes),
                            &with(attributes::process(p), "hw.id", gpu.uuid.clone()),
                        );
                    }
                }
            }
        },
    );
    for (name, description, value) in [
        (
            "inferscope.process.gpu.utilization",
            "A process's share of a GPU's SM time over the last interval (NVML).",
            (|u| u.sm_utilization_percent) as fn(&crate::model::GpuUsage) -> Option<u32>,
        ),
        (
            "inferscope.process.gpu.memory_controller.utilization",
            "A process's share of a GPU's memory controller time over the last interval (NVML).",
            |u| u.memory_utilization_percent,
        ),
    ] {
        gauge_f64(meter, shared, name, "1", description, move |latest, emit| {
            for p in latest.processes() {
                for gpu in &p.gpus {
                    if let Some(percent) = value(&gpu.usage) {
                        emit(
                            ratio(percent),
                            &with(attributes::process(p), "hw.id", gpu.uuid.clone()),
                        );
                    }
                }
            }
        });
    }
    gauge_f64(
        meter,
        shared,
        "inferscope.process.launch_bound",
        "",
        "1 while a process launches kernels fast but keeps the GPU's SMs mostly idle (docs/output.md).",
        |latest, emit| {
            for p in latest.processes() {
                let bound = p.signals.iter().any(|s| matches!(s, Signal::LaunchBound { .. }));
                emit(f64::from(u8::from(bound)), &attributes::process(p));
            }
        },
    );
}

/// A figure of a device, absent where its library could not give it.
type DeviceFigure<T> = Metric<fn(&DeviceView) -> Option<T>>;

/// GPUs, from NVML or ROCm SMI: the hardware conventions' `hw.*`, and ours for the rest.
fn devices(meter: &Meter, shared: &Shared) {
    let gauges: [DeviceFigure<f64>; 12] = [
        metric(
            "hw.gpu.utilization",
            "1",
            "Share of time a kernel ran on the GPU (hw.gpu.task=general).",
            |d| d.utilization_percent.map(ratio),
        ),
        metric(
            "hw.gpu.memory.utilization",
            "1",
            "Share of the GPU's memory in use.",
            |d| Some(d.memory_used_bytes? as f64 / d.memory_total_bytes.filter(|&t| t > 0)? as f64),
        ),
        metric("hw.power", "W", "Power drawn by the GPU.", |d| d.power_watts),
        metric(
            "inferscope.gpu.power.limit",
            "W",
            "The GPU's enforced power limit.",
            |d| d.power_limit_watts,
        ),
        metric("inferscope.gpu.temperature", "Cel", "GPU die temperature.", |d| {
            d.temperature_celsius.map(f64::from)
        }),
        metric(
            "inferscope.gpu.memory_controller.utilization",
            "1",
            "Share of time the GPU's memory controller was busy (NVML).",
            |d| d.memory_utilization_percent.map(ratio),
        ),
        metric(
            "inferscope.gpu.sm.active",
            "1",
            "Share of time SMs had a warp resident (GPM).",
            |d| d.gpm.as_ref()?.sm_active_percent.map(|p| p / 100.0),
        ),
        metric(
            "inferscope.gpu.sm.occupancy",
            "1",
            "Resident warps over the SMs' maximum (GPM).",
            |d| d.gpm.as_ref()?.sm_occupancy_percent.map(|p| p / 100.0),
        ),
        metric(
            "inferscope.gpu.tensor.active",
            "1",
            "Share of time a tensor pipe was active (GPM).",
            |d| d.gpm.as_ref()?.tensor_active_percent.map(|p| p / 100.0),
        ),
        metric(
            "inferscope.gpu.dram.bandwidth.utilization",
            "1",
            "DRAM bandwidth used over its peak (GPM).",
            |d| d.gpm.as_ref()?.dram_bandwidth_percent.map(|p| p / 100.0),
        ),
        metric(
            "inferscope.gpu.energy_per_output_token",
            "J",
            "GPU energy per output token served by processes on it, over the last interval.",
            |d| d.energy_per_output_token_joules,
        ),
        metric(
            "inferscope.gpu.output_token.rate",
            "{token}/s",
            "Output tokens per second served by processes on the GPU, over the last interval.",
            |d| d.output_tokens_per_second,
        ),
    ];
    for Metric {
        name,
        unit,
        description,
        value,
    } in gauges
    {
        gauge_f64(meter, shared, name, unit, description, move |latest, emit| {
            for d in latest.devices() {
                if let Some(v) = value(d) {
                    let mut attributes = attributes::device(d);
                    if name == "hw.gpu.utilization" {
                        attributes.push(KeyValue::new("hw.gpu.task", "general"));
                    }
                    emit(v, &attributes);
                }
            }
        });
    }
    gauge_f64(
        meter,
        shared,
        "inferscope.gpu.clock.frequency",
        "Hz",
        "Current clock frequency, by clock (sm, memory).",
        |latest, emit| {
            for d in latest.devices() {
                for (clock, mhz) in [("sm", d.sm_clock_mhz), ("memory", d.memory_clock_mhz)] {
                    if let Some(mhz) = mhz {
                        emit(
                            f64::from(mhz) * 1e6,
                            &with(attributes::device(d), "inferscope.clock", clock),
                        );
                    }
                }
            }
        },
    );
    gauge_f64(
        meter,
        shared,
        "inferscope.gpu.pcie.throughput",
        "By/s",
        "PCIe throughput sampled by NVML, by direction (NVML gives rates, not the byte counts hw.gpu.io needs).",
        |latest, emit| {
            for d in latest.devices() {
                for (direction, rate) in [
                    ("transmit", d.pcie_tx_bytes_per_second),
                    ("receive", d.pcie_rx_bytes_per_second),
                ] {
                    if let Some(rate) = rate {
                        emit(
                            rate as f64,
                            &with(attributes::device(d), "network.io.direction", direction),
                        );
                    }
                }
            }
        },
    );
    let memory: [DeviceFigure<u64>; 2] = [
        metric("hw.gpu.memory.usage", "By", "GPU memory used.", |d| {
            d.memory_used_bytes
        }),
        metric("hw.gpu.memory.limit", "By", "Size of the GPU memory.", |d| {
            d.memory_total_bytes
        }),
    ];
    for Metric {
        name,
        unit,
        description,
        value,
    } in memory
    {
        up_down_i64(meter, shared, name, unit, description, move |latest, emit| {
            for d in latest.devices() {
                if let Some(bytes) = value(d) {
                    emit(saturating_i64(bytes), &attributes::device(d));
                }
            }
        });
    }
    up_down_i64(
        meter,
        shared,
        "inferscope.gpu.mig.memory.usage",
        "By",
        "Memory used in a MIG instance (hw.id: the instance's UUID; hw.parent: its GPU's).",
        |latest, emit| {
            for d in latest.devices() {
                for mig in &d.mig_instances {
                    if let Some(used) = mig.memory_used_bytes {
                        emit(
                            saturating_i64(used),
                            &[
                                KeyValue::new("hw.id", mig.uuid.clone()),
                                KeyValue::new("hw.type", "gpu"),
                                KeyValue::new("hw.parent", d.uuid.clone()),
                            ],
                        );
                    }
                }
            }
        },
    );
    up_down_i64(
        meter,
        shared,
        "hw.status",
        "1",
        "1 for the GPU's current state: degraded after an XID error or an uncorrected ECC error in the last interval, else ok. A GPU NVML lost is absent.",
        |latest, emit| {
            for d in latest.devices() {
                let uncorrected = d.ecc_uncorrected_errors.as_ref().is_some_and(|e| e.delta > 0);
                let degraded = d.xid_errors.delta > 0 || uncorrected;
                for (state, value) in [("ok", !degraded), ("degraded", degraded)] {
                    emit(i64::from(value), &with(attributes::device(d), "hw.state", state));
                }
            }
        },
    );
    counter_f64(
        meter,
        shared,
        "hw.energy",
        "J",
        "Energy consumed by the GPU since the agent started.",
        |latest, emit| {
            for d in latest.devices() {
                if let Some(energy) = &d.energy_joules {
                    emit(energy.total, &attributes::device(d));
                }
            }
        },
    );
    counter_u64(
        meter,
        shared,
        "hw.errors",
        "{error}",
        "GPU errors by error.type: ECC corrected and uncorrected (volatile counts), and XID errors.",
        |latest, emit| {
            for d in latest.devices() {
                let counts = [
                    ("corrected", d.ecc_corrected_errors.as_ref().map(|e| e.total)),
                    ("uncorrected", d.ecc_uncorrected_errors.as_ref().map(|e| e.total)),
                    ("xid", Some(d.xid_errors.total)),
                ];
                for (kind, count) in counts {
                    if let Some(count) = count {
                        emit(count, &with(attributes::device(d), "error.type", kind));
                    }
                }
            }
        },
    );
}

/// Inference servers' queues and arrivals, and energy per token per model.
fn servers(meter: &Meter, shared: &Shared) {
    for (name, description, value) in [
        (
            "inferscope.server.queue.waiting",
            "Requests received whose response has not started.",
            (|q| q.waiting) as fn(&crate::model::QueueView) -> u64,
        ),
        (
            "inferscope.server.queue.running",
            "Requests whose response is streaming.",
            |q| q.running,
        ),
    ] {
        up_down_i64(
            meter,
            shared,
            name,
            "{request}",
            description,
            move |latest, emit| {
                for s in latest.servers() {
                    emit(saturating_i64(value(&s.queue)), &server_attributes(latest, s));
                }
            },
        );
    }
    up_down_i64(
        meter,
        shared,
        "inferscope.server.connections",
        "{connection}",
        "Client connections open, as far as capture saw them.",
        move |latest, emit| {
            for s in latest.servers() {
                emit(saturating_i64(s.connections), &server_attributes(latest, s));
            }
        },
    );
    counter_u64(
        meter,
        shared,
        "inferscope.server.request.arrivals",
        "{request}",
        "Requests received (whether or not they finished).",
        move |latest, emit| {
            for s in latest.servers() {
                emit(s.arrivals.total, &server_attributes(latest, s));
            }
        },
    );
    counter_f64(
        meter,
        shared,
        "inferscope.server.queue.waiting.time",
        "s",
        "Request-seconds spent waiting for a first response byte: the integral of queue.waiting, so that its rate over any window is the mean queue.",
        move |latest, emit| {
            for s in latest.servers() {
                emit(s.queue.waiting_time_s, &server_attributes(latest, s));
            }
        },
    );
    gauge_f64(
        meter,
        shared,
        "inferscope.model.energy_per_output_token",
        "J",
        "Energy of the GPUs serving a model per output token, over the last interval (NVML).",
        move |latest, emit| {
            for s in latest.servers() {
                for m in &s.models {
                    if let Some(joules) = m.energy_per_output_token_joules {
                        let mut attributes = server_attributes(latest, s);
                        attributes.push(KeyValue::new("gen_ai.request.model", m.model.clone()));
                        emit(joules, &attributes);
                    }
                }
            }
        },
    );
}

/// A server's `process.pid` and `server.port`, and its pod's `k8s.*` where
/// its process is a GPU process in one (as its requests carry them).
fn server_attributes(latest: &Latest, s: &crate::model::ServerView) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("process.pid", i64::from(s.pid)),
        KeyValue::new("server.port", i64::from(s.port)),
    ];
    let pod = latest
        .processes()
        .find(|p| p.identity.pid == s.pid)
        .and_then(|p| p.pod.as_ref());
    attributes.extend(pod.map(attributes::pod_attributes).unwrap_or_default());
    attributes
}

/// The agent's own losses: events the kernel side dropped, batches export dropped.
fn agent(meter: &Meter, shared: &Shared, health: &ExportHealth) {
    counter_u64(
        meter,
        shared,
        "inferscope.dropped_events",
        "{event}",
        "Events the eBPF programs could not record, by reason.",
        |latest, emit| {
            // Every reason, at zero until it occurs: an alert on its increase needs the series.
            let totals = latest.snapshot.as_ref().map(|s| &s.drops.total);
            for reason in DropReason::ALL.map(DropReason::name) {
                let count = totals.and_then(|t| t.get(reason)).copied().unwrap_or(0);
                emit(count, &[KeyValue::new("reason", reason)]);
            }
        },
    );
    counter_u64(
        meter,
        shared,
        "inferscope.dropped_requests",
        "{request}",
        "Generation requests seen arriving but not measured (their figures would be wrong), by reason.",
        |latest, emit| {
            let totals = latest.snapshot.as_ref().map(|s| &s.dropped_requests.total);
            for reason in RequestDrop::ALL.map(RequestDrop::name) {
                let count = totals.and_then(|t| t.get(reason)).copied().unwrap_or(0);
                emit(count, &[KeyValue::new("reason", reason)]);
            }
        },
    );
    let health = health.clone();
    meter
        .u64_observable_counter("inferscope.export.dropped_batches")
        .with_unit("{batch}")
        .with_description("Export batches given up after retries, by exporter and signal (cumulative metrics recover with the next batch).")
        .with_callback(move |observer| {
            for export in health.exported() {
                let attributes = [
                    KeyValue::new("exporter", export.exporter()),
                    KeyValue::new("signal", export.signal()),
                ];
                observer.observe(health.failed_batches(export), &attributes);
            }
        })
        .build();
}

/// Request distributions, recorded as requests finish.
pub struct RequestInstruments {
    duration: Histogram<f64>,
    ttft: Histogram<f64>,
    tpot: Histogram<f64>,
    itl: Histogram<f64>,
    tokens: Histogram<u64>,
    models: ModelNames,
    /// The pod of each process in the latest snapshot.
    pods: HashMap<u32, PodRef>,
}

impl RequestInstruments {
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str, bounds: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(bounds.to_vec())
                .build()
        };
        Self {
            duration: seconds(
                "gen_ai.server.request.duration",
                "Time from a request's first byte to its response's last.",
                DURATION_BOUNDS,
            ),
            ttft: seconds(
                "gen_ai.server.time_to_first_token",
                "Time from a request's first byte to its first content-carrying response event (streaming, successful).",
                TTFT_BOUNDS,
            ),
            tpot: seconds(
                "gen_ai.server.time_per_output_token",
                "(duration - time to first token) / (output tokens - 1), per successful streaming request.",
                TPOT_BOUNDS,
            ),
            itl: seconds(
                "inferscope.server.inter_token_latency",
                "Gaps between successive content-carrying response events.",
                TPOT_BOUNDS,
            ),
            tokens: meter
                .u64_histogram("inferscope.server.token.usage")
                .with_unit("{token}")
                .with_description("Tokens per request, by gen_ai.token.type (input, output).")
                .with_boundaries(TOKEN_BOUNDS.to_vec())
                .build(),
            models: ModelNames::default(),
            pods: HashMap::new(),
        }
    }

    pub fn learn_pods(&mut self, snapshot: &Snapshot) {
        self.pods = snapshot
            .processes
            .iter()
            .filter_map(|p| Some((p.identity.pid, p.pod.clone()?)))
            .collect();
    }

    pub fn record(&mut self, r: &RequestRecord) {
        let model = r.model.as_deref().map(|m| self.models.name(m));
        let mut attributes = attributes::request(r, model);
        if let Some(pod) = self.pods.get(&r.pid) {
            attributes.extend(attributes::pod_attributes(pod));
        }
        if let Some(error) = attributes::error_type(r) {
            self.duration
                .record(r.duration_s, &with(attributes, "error.type", error));
            return;
        }
        self.duration.record(r.duration_s, &attributes);
        if let Some(ttft) = r.ttft_s {
            self.ttft.record(ttft, &attributes);
            if let Some(tokens) = r.output_tokens.filter(|&n| n > 1) {
                self.tpot
                    .record((r.duration_s - ttft).max(0.0) / (tokens - 1) as f64, &attributes);
            }
        }
        for &gap in &r.itl_s {
            self.itl.record(gap, &attributes);
        }
        for (kind, count) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            if let Some(count) = count {
                self.tokens
                    .record(count, &with(attributes.clone(), "gen_ai.token.type", kind));
            }
        }
    }
}

pub(super) fn with(
    mut attributes: Vec<KeyValue>,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) -> Vec<KeyValue> {
    attributes.push(KeyValue::new(key, value));
    attributes
}

fn ratio(percent: u32) -> f64 {
    f64::from(percent) / 100.0
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
