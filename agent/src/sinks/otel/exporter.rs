//! The OTLP exporters, counted: a batch an exporter gives up on (after its own
//! retries with backoff) is counted per signal, exported as
//! `inferscope.export.dropped_batches`, and said once per outage in the log.

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
}

impl OtlpSignal {
    pub const ALL: [OtlpSignal; 3] = [OtlpSignal::Metrics, OtlpSignal::Traces, OtlpSignal::Logs];

    pub fn name(self) -> &'static str {
        match self {
            OtlpSignal::Metrics => "metrics",
            OtlpSignal::Traces => "traces",
            OtlpSignal::Logs => "logs",
        }
    }
}

/// What export has lost so far, per signal; shared with the instrument that reports it.
#[derive(Clone, Default)]
pub struct ExportHealth {
    failed_batches: Arc<[AtomicU64; 3]>,
    failing: Arc<[AtomicBool; 3]>,
    /// Signals with an exporter.
    exported: Arc<[AtomicBool; 3]>,
}

impl ExportHealth {
    /// The signals that have an exporter.
    pub fn exported(&self) -> impl Iterator<Item = OtlpSignal> + '_ {
        OtlpSignal::ALL
            .into_iter()
            .filter(|&s| self.exported[s as usize].load(Ordering::Relaxed))
    }

    pub fn failed_batches(&self, signal: OtlpSignal) -> u64 {
        self.failed_batches[signal as usize].load(Ordering::Relaxed)
    }

    fn record(&self, signal: OtlpSignal, result: &OTelSdkResult) {
        let failing = &self.failing[signal as usize];
        match result {
            Ok(()) => {
                if failing.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "OTLP {} export works again ({} batches dropped so far)",
                        signal.name(),
                        self.failed_batches(signal)
                    );
                }
            }
            Err(e) => {
                self.failed_batches[signal as usize].fetch_add(1, Ordering::Relaxed);
                if !failing.swap(true, Ordering::Relaxed) {
                    log::warn!("OTLP {} export failed, will keep trying: {e}", signal.name());
                }
            }
        }
    }
}

impl std::fmt::Debug for ExportHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ExportHealth");
        for signal in OtlpSignal::ALL {
            d.field(signal.name(), &self.failed_batches(signal));
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
        health.exported[signal as usize].store(true, Ordering::Relaxed);
        Self {
            inner,
            health,
            signal,
        }
    }

    fn recorded(&self, result: OTelSdkResult) -> OTelSdkResult {
        self.health.record(self.signal, &result);
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
