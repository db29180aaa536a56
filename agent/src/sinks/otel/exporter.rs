//! Exporters, counted: a batch an exporter gives up on (after its own retries
//! with backoff) is counted per exporter and signal (OTLP's, and profiles
//! pushed to Pyroscope), exported as `inferscope.export.dropped_batches`, and
//! said once per outage in the log.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SpanData, SpanExporter},
};

/// What is exported over OTLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpSignal {
    Metrics,
    Traces,
    Logs,
    /// Continuous profiles (`run --profile`), which the SDK does not export: sent by the profiler.
    Profiles,
}

impl OtlpSignal {
    pub const ALL: [OtlpSignal; 4] = [
        OtlpSignal::Metrics,
        OtlpSignal::Traces,
        OtlpSignal::Logs,
        OtlpSignal::Profiles,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OtlpSignal::Metrics => "metrics",
            OtlpSignal::Traces => "traces",
            OtlpSignal::Logs => "logs",
            OtlpSignal::Profiles => "profiles",
        }
    }
}

/// Where batches go: an exporter and the signal it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    Otlp(OtlpSignal),
    /// Profiles pushed to Pyroscope.
    Pyroscope,
}

impl Export {
    pub const ALL: [Export; 5] = [
        Export::Otlp(OtlpSignal::Metrics),
        Export::Otlp(OtlpSignal::Traces),
        Export::Otlp(OtlpSignal::Logs),
        Export::Otlp(OtlpSignal::Profiles),
        Export::Pyroscope,
    ];

    fn index(self) -> usize {
        match self {
            Export::Otlp(signal) => signal as usize,
            Export::Pyroscope => OtlpSignal::ALL.len(),
        }
    }

    /// `exporter` of `inferscope.export.dropped_batches`.
    pub fn exporter(self) -> &'static str {
        match self {
            Export::Otlp(_) => "otlp",
            Export::Pyroscope => "pyroscope",
        }
    }

    /// `signal` of `inferscope.export.dropped_batches`.
    pub fn signal(self) -> &'static str {
        match self {
            Export::Otlp(signal) => signal.name(),
            Export::Pyroscope => "profiles",
        }
    }
}

const EXPORTS: usize = Export::ALL.len();

/// What export has lost so far, per exporter and signal; shared with the
/// instrument that reports it.
#[derive(Clone, Default)]
pub struct ExportHealth {
    failed_batches: Arc<[AtomicU64; EXPORTS]>,
    failing: Arc<[AtomicBool; EXPORTS]>,
    /// Those with an exporter.
    exported: Arc<[AtomicBool; EXPORTS]>,
}

impl ExportHealth {
    /// Where there is an exporter.
    pub fn exported(&self) -> impl Iterator<Item = Export> + '_ {
        Export::ALL
            .into_iter()
            .filter(|&e| self.exported[e.index()].load(Ordering::Relaxed))
    }

    /// Counts `export`'s results from now on.
    pub fn register(&self, export: Export) {
        self.exported[export.index()].store(true, Ordering::Relaxed);
    }

    pub fn failed_batches(&self, export: Export) -> u64 {
        self.failed_batches[export.index()].load(Ordering::Relaxed)
    }

    /// One batch's fate: a failure is counted, and said once per outage.
    pub fn record<E: std::fmt::Display>(&self, export: Export, result: &Result<(), E>) {
        let failing = &self.failing[export.index()];
        let name = || match export {
            Export::Otlp(signal) => format!("OTLP {}", signal.name()),
            Export::Pyroscope => "Pyroscope profile".to_string(),
        };
        match result {
            Ok(()) => {
                if failing.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "{} export works again ({} batches dropped so far)",
                        name(),
                        self.failed_batches(export)
                    );
                }
            }
            Err(e) => {
                self.failed_batches[export.index()].fetch_add(1, Ordering::Relaxed);
                if !failing.swap(true, Ordering::Relaxed) {
                    log::warn!("{} export failed, will keep trying: {e}", name());
                }
            }
        }
    }
}

impl std::fmt::Debug for ExportHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_map();
        for export in Export::ALL {
            d.entry(
                &(export.exporter(), export.signal()),
                &self.failed_batches(export),
            );
        }
        d.finish()
    }
}

/// An exporter with every result recorded in [`ExportHealth`].
#[derive(Debug)]
pub struct Counting<E> {
    inner: E,
    health: ExportHealth,
    signal: OtlpSignal,
}

impl<E> Counting<E> {
    pub fn new(inner: E, health: ExportHealth, signal: OtlpSignal) -> Self {
        health.register(Export::Otlp(signal));
        Self {
            inner,
            health,
            signal,
        }
    }

    fn recorded(&self, result: OTelSdkResult) -> OTelSdkResult {
        self.health.record(Export::Otlp(self.signal), &result);
        result
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Counting<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.recorded(self.inner.export(metrics).await)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.recorded(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counting<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.recorded(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
