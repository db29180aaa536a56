//! The OTLP exporter, counted: a batch the exporter gives up on (after its own
//! retries with backoff) is counted, exported as
//! `inferscope.export.dropped_batches`, and said once per outage in the log.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
};

/// What export has lost so far; shared with the instrument that reports it.
#[derive(Clone, Default)]
pub struct ExportHealth {
    failed_batches: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
}

impl ExportHealth {
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }

    fn record(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "OTLP export works again ({} batches dropped so far)",
                        self.failed_batches()
                    );
                }
            }
            Err(e) => {
                self.failed_batches.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!("OTLP export failed, will keep trying each interval: {e}");
                }
            }
        }
    }
}

/// [`MetricExporter`] with every result recorded in [`ExportHealth`].
#[derive(Debug)]
pub struct Counting {
    inner: MetricExporter,
    health: ExportHealth,
}

impl std::fmt::Debug for ExportHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHealth")
            .field("failed_batches", &self.failed_batches())
            .finish()
    }
}

impl Counting {
    pub fn new(inner: MetricExporter, health: ExportHealth) -> Self {
        Self { inner, health }
    }
}

impl PushMetricExporter for Counting {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.health.record(&result);
        result
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
