//! Export into the OpenTelemetry ecosystem: OTLP (gRPC or HTTP/protobuf) and a
//! Prometheus text endpoint, both fed by one OpenTelemetry SDK meter provider.
//!
//! Figures the model already counts (GPU calls, energy, drops, queues) are
//! observed from the latest snapshot when a reader collects; request
//! distributions are recorded per finished request into histograms with the
//! GenAI conventions' buckets. The SDK keeps cumulative state and turns it into
//! deltas where delta temporality is asked for. Collection and export run on
//! the readers' own threads: a slow or absent collector never holds the
//! pipeline, which only swaps the latest snapshot in. With OTLP, XID errors
//! also go out as log records and, when asked for, a sampled share of requests
//! as spans. Names and attributes: docs/metrics.md.

mod attributes;
mod exporter;
mod http_client;
mod instruments;
mod prometheus;
mod traces;

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use opentelemetry::{
    KeyValue, logs::LoggerProvider as _, metrics::MeterProvider as _, trace::TracerProvider as _,
};
use opentelemetry_otlp::{
    LogExporter, MetricExporter, SpanExporter, WithExportConfig as _, WithHttpConfig as _,
};
use opentelemetry_sdk::{
    Resource,
    logs::SdkLoggerProvider,
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{Sampler, SdkTracerProvider},
};
use thiserror::Error;

use self::{
    exporter::Counting,
    instruments::RequestInstruments,
    traces::{GpuEventLogs, RequestSpans},
};
pub use self::{
    exporter::{Export, ExportHealth, OtlpSignal},
    http_client::timeout as otlp_timeout,
};
use super::Sink;
use crate::model::{RequestRecord, Snapshot};

/// How OTLP reaches a collector. Unset fields come from the standard
/// `OTEL_EXPORTER_OTLP_*` variables, read by the exporter itself.
#[derive(Clone, Debug, Default)]
pub struct OtlpConfig {
    /// Base endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/metrics` is added for HTTP).
    pub endpoint: Option<String>,
    pub protocol: Option<OtlpProtocol>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpConfig {
    /// OTLP export as the command line and the environment ask for it: on when an
    /// endpoint is named either way, unless `OTEL_SDK_DISABLED=true` or
    /// `OTEL_METRICS_EXPORTER=none`.
    pub fn from_env(endpoint: Option<String>, protocol: Option<OtlpProtocol>) -> Option<Self> {
        let disabled = env_is("OTEL_SDK_DISABLED", "true") || env_is("OTEL_METRICS_EXPORTER", "none");
        let named = endpoint.is_some()
            || env_value("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || env_value("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some();
        let protocol = protocol.or_else(|| {
            match env_value("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                .or_else(|| env_value("OTEL_EXPORTER_OTLP_PROTOCOL"))?
                .as_str()
            {
                "grpc" => Some(OtlpProtocol::Grpc),
                _ => Some(OtlpProtocol::HttpProtobuf),
            }
        });
        (named && !disabled).then_some(Self { endpoint, protocol })
    }

    /// Whether continuous profiles go over OTLP too: unless `OTEL_PROFILES_EXPORTER=none`,
    /// as spans and log records go unless theirs say so.
    pub fn exports_profiles() -> bool {
        !env_is("OTEL_PROFILES_EXPORTER", "none")
    }

    pub fn protocol(&self) -> OtlpProtocol {
        // The specification's default.
        self.protocol.unwrap_or(OtlpProtocol::HttpProtobuf)
    }
}

#[derive(Debug, Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("listening for Prometheus scrapes on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("starting the OTLP gRPC runtime: {0}")]
    Runtime(io::Error),
}

/// Where telemetry goes, and what identifies this agent.
pub struct TelemetryConfig {
    pub otlp: Option<OtlpConfig>,
    /// Share of requests sent as spans over OTLP (0: none).
    pub trace_ratio: f64,
    pub prometheus_listen: Option<SocketAddr>,
    /// `k8s.node.name` of the resource, when known.
    pub node_name: Option<String>,
    /// Where every exporter of this agent counts what it could not deliver.
    pub health: ExportHealth,
}

/// The latest snapshot, read by instrument callbacks on the readers' threads.
#[derive(Default)]
struct Latest {
    snapshot: Option<Snapshot>,
    /// Processes that exited, kept for [`EXITED_RETENTION`] so that every
    /// reader sees their final totals once.
    exited: Vec<(std::time::Instant, crate::model::ProcessView)>,
}

impl Latest {
    /// Processes of the latest snapshot, and those that exited before it but
    /// are still within their retention.
    fn processes(&self) -> impl Iterator<Item = &crate::model::ProcessView> {
        let current: &[crate::model::ProcessView] = self
            .snapshot
            .as_ref()
            .map(|s| s.processes.as_slice())
            .unwrap_or_default();
        let gone = self
            .exited
            .iter()
            .map(|(_, p)| p)
            .filter(move |p| !current.iter().any(|c| c.identity.pid == p.identity.pid));
        current.iter().chain(gone)
    }

    /// Servers of the latest snapshot.
    fn servers(&self) -> impl Iterator<Item = &crate::model::ServerView> {
        self.snapshot.iter().flat_map(|s| &s.servers)
    }

    /// GPUs of the latest snapshot.
    fn devices(&self) -> &[crate::model::DeviceView] {
        self.snapshot
            .as_ref()
            .map(|s| s.devices.as_slice())
            .unwrap_or_default()
    }
}

/// How long an exited process's final figures stay exported (longer than the
/// usual export and scrape intervals).
const EXITED_RETENTION: Duration = Duration::from_secs(300);

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Latest>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Latest> {
        // A panicking callback must not stop export for good: the data is plain.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The OpenTelemetry sink: OTLP and/or Prometheus.
pub struct Telemetry {
    provider: SdkMeterProvider,
    latest: Shared,
    requests: RequestInstruments,
    /// Spans of sampled requests (OTLP, `--trace-ratio`).
    spans: Option<(SdkTracerProvider, RequestSpans)>,
    /// XID errors as log records (OTLP, unless `OTEL_LOGS_EXPORTER=none`).
    gpu_events: Option<(SdkLoggerProvider, GpuEventLogs)>,
    /// Drives the gRPC client's connections.
    grpc_runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    pub fn start(config: TelemetryConfig) -> Result<Self, TelemetryError> {
        let resource = resource(config.node_name.as_deref());
        let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
        let health = config.health.clone();
        let mut otlp = match &config.otlp {
            Some(otlp) => Some(Otlp::new(otlp, health.clone())?),
            None => None,
        };
        let (mut spans, mut gpu_events) = (None, None);
        if let Some(otlp) = &mut otlp {
            builder = builder.with_reader(PeriodicReader::builder(otlp.metrics()?).build());
            if config.trace_ratio > 0.0 && !env_is("OTEL_TRACES_EXPORTER", "none") {
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_sampler(Sampler::TraceIdRatioBased(config.trace_ratio.min(1.0)))
                    .with_batch_exporter(otlp.spans()?)
                    .build();
                let spans_of = RequestSpans::new(provider.tracer("inferscope"));
                spans = Some((provider, spans_of));
            }
            if !env_is("OTEL_LOGS_EXPORTER", "none") {
                let provider = SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(otlp.logs()?)
                    .build();
                let logs = GpuEventLogs::new(provider.logger("inferscope"));
                gpu_events = Some((provider, logs));
            }
        }
        if let Some(addr) = config.prometheus_listen {
            let registry = ::prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
            builder = builder.with_reader(reader);
            prometheus::serve_in_background(addr, registry)?;
        }
        let provider = builder.build();
        let meter = provider.meter("inferscope");
        let latest = Shared::default();
        instruments::observe_snapshots(&meter, &latest, &health);
        let requests = RequestInstruments::new(&meter);
        Ok(Self {
            provider,
            latest,
            requests,
            spans,
            gpu_events,
            grpc_runtime: otlp.and_then(|o| o.runtime),
        })
    }
}

impl Sink for Telemetry {
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        let now = std::time::Instant::now();
        let copy = snapshot.clone();
        let exited: Vec<_> = snapshot
            .processes
            .iter()
            .filter(|p| p.exited)
            .map(|p| (now, p.clone()))
            .collect();
        // Held only to swap: collections read under the same lock.
        let mut latest = self.latest.lock();
        latest
            .exited
            .retain(|(at, _)| now.duration_since(*at) < EXITED_RETENTION);
        latest.exited.extend(exited);
        let previous = latest.snapshot.replace(copy);
        drop(latest);
        drop(previous);
        self.requests.learn_pods(snapshot);
        if let Some((_, logs)) = &self.gpu_events {
            snapshot.gpu_events.iter().for_each(|e| logs.emit(e));
        }
        Ok(())
    }

    fn request(&mut self, request: &RequestRecord) -> io::Result<()> {
        self.requests.record(request);
        if let Some((_, spans)) = &self.spans {
            spans.record(request);
        }
        Ok(())
    }

    /// Exports what is left (each bounded by its exporter's timeout).
    fn close(&mut self) -> io::Result<()> {
        let results = [
            ("metrics", self.provider.shutdown()),
            ("spans", self.spans.as_ref().map_or(Ok(()), |(p, _)| p.shutdown())),
            (
                "logs",
                self.gpu_events.as_ref().map_or(Ok(()), |(p, _)| p.shutdown()),
            ),
        ];
        for (what, result) in results {
            if let Err(e) = result {
                log::warn!("final export of {what}: {e}");
            }
        }
        Ok(())
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Dropped from the pipeline's async context, where a runtime may not block to stop.
        if let Some(runtime) = self.grpc_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The agent's resource: `service.name` (unless set by `OTEL_SERVICE_NAME`),
/// `host.name`, `k8s.node.name`, and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource(node_name: Option<&str>) -> Resource {
    let mut builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        builder = builder.with_service_name("inferscope");
    }
    let mut attributes = Vec::new();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attributes.push(KeyValue::new("host.name", host.trim().to_string()));
    }
    if let Some(node) = node_name {
        attributes.push(KeyValue::new("k8s.node.name", node.to_string()));
    }
    attributes.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    // The environment's own attributes win over what the agent found.
    let from_env = Resource::builder_empty()
        .with_detector(Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()))
        .build();
    attributes.retain(|kv| from_env.get(&kv.key).is_none());
    builder.with_attributes(attributes).build()
}

/// A variable's value, unless unset or blank (which the OpenTelemetry
/// specification reads as unset).
pub fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_is(name: &str, value: &str) -> bool {
    env_value(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
}

/// Builds each signal's OTLP exporter as the configuration says, counted.
struct Otlp<'a> {
    config: &'a OtlpConfig,
    health: ExportHealth,
    /// tonic's channels spawn their connection tasks on the current runtime:
    /// one worker thread of our own, away from the pipeline's (gRPC only).
    runtime: Option<tokio::runtime::Runtime>,
}

/// One signal's exporter over the configured protocol; HTTP gets the signal's path.
macro_rules! otlp_exporter {
    ($self:ident, $builder:expr, $signal:expr, $path:literal) => {{
        let config = $self.config;
        let inner = match (config.protocol(), &$self.runtime) {
            (OtlpProtocol::Grpc, Some(runtime)) => {
                let _entered = runtime.enter();
                let mut builder = $builder.with_tonic();
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                builder.build()?
            }
            _ => {
                let client = http_client::UreqClient::new(http_client::timeout($signal));
                let mut builder = $builder.with_http().with_http_client(client);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(format!("{}{}", endpoint.trim_end_matches('/'), $path));
                }
                builder.build()?
            }
        };
        Ok(Counting::new(inner, $self.health.clone(), $signal))
    }};
}

impl<'a> Otlp<'a> {
    fn new(config: &'a OtlpConfig, health: ExportHealth) -> Result<Self, TelemetryError> {
        let runtime = match config.protocol() {
            OtlpProtocol::Grpc => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-grpc")
                    .enable_all()
                    .build()
                    .map_err(TelemetryError::Runtime)?,
            ),
            OtlpProtocol::HttpProtobuf => None,
        };
        Ok(Self {
            config,
            health,
            runtime,
        })
    }

    /// For a periodic reader (interval: `OTEL_METRIC_EXPORT_INTERVAL`, 60 s by default).
    fn metrics(&self) -> Result<Counting<MetricExporter>, TelemetryError> {
        otlp_exporter!(
            self,
            MetricExporter::builder(),
            OtlpSignal::Metrics,
            "/v1/metrics"
        )
    }

    fn spans(&self) -> Result<Counting<SpanExporter>, TelemetryError> {
        otlp_exporter!(self, SpanExporter::builder(), OtlpSignal::Traces, "/v1/traces")
    }

    fn logs(&self) -> Result<Counting<LogExporter>, TelemetryError> {
        otlp_exporter!(self, LogExporter::builder(), OtlpSignal::Logs, "/v1/logs")
    }
}
