//! Events as OpenTelemetry signals: one SERVER span per sampled request (its
//! timing, GenAI attributes, outcome, and its first token as a span event at
//! the time it was sent), and each GPU XID error as a log record. Never prompt
//! or answer text: the span carries what the metrics carry, plus counts.

use std::time::Duration;

use opentelemetry::{
    KeyValue,
    logs::{AnyValue, LogRecord as _, Logger as _, Severity},
    trace::{Span as _, SpanKind, Status, Tracer as _},
};
use opentelemetry_sdk::{logs::SdkLogger, trace::SdkTracer};

use super::attributes;
use crate::{
    engines,
    model::{GpuEvent, GpuEventKind, RequestRecord},
};

/// Spans of finished requests; the tracer's sampler picks which are kept.
pub struct RequestSpans {
    tracer: SdkTracer,
}

impl RequestSpans {
    pub fn new(tracer: SdkTracer) -> Self {
        Self { tracer }
    }

    pub fn record(&self, r: &RequestRecord) {
        let end = r.time;
        let start = end
            .checked_sub(Duration::from_secs_f64(r.duration_s.max(0.0)))
            .unwrap_or(end);
        // The GenAI conventions' span name: "{operation} {model}".
        let name = match (engines::operation_name(&r.path), &r.model) {
            (Some(op), Some(model)) => format!("{op} {model}"),
            (Some(op), None) => op.to_string(),
            (None, _) => format!("{} {}", r.method, r.path.split('?').next().unwrap_or_default()),
        };
        let mut attributes = attributes::request(r, r.model.clone());
        attributes.extend([
            KeyValue::new("process.pid", i64::from(r.pid)),
            KeyValue::new("http.request.method", r.method.clone()),
            KeyValue::new("http.response.status_code", i64::from(r.status)),
        ]);
        for (key, tokens) in [
            ("gen_ai.usage.input_tokens", r.input_tokens),
            ("gen_ai.usage.output_tokens", r.output_tokens),
        ] {
            if let Some(tokens) = tokens {
                attributes.push(KeyValue::new(key, i64::try_from(tokens).unwrap_or(i64::MAX)));
            }
        }
        let error = attributes::error_type(r);
        if let Some(error) = &error {
            attributes.push(KeyValue::new("error.type", error.clone()));
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
            .start(&self.tracer);
        if !span.is_recording() {
            return;
        }
        if let Some(ttft) = r.ttft_s {
            span.add_event_with_timestamp(
                "gen_ai.first_token",
                start + Duration::from_secs_f64(ttft.max(0.0)),
                vec![KeyValue::new("gen_ai.server.time_to_first_token", ttft)],
            );
        }
        if let Some(error) = error {
            span.set_status(Status::error(error));
        }
        span.end_with_timestamp(end);
    }
}

/// GPU events (XID errors) as log records.
pub struct GpuEventLogs {
    logger: SdkLogger,
}

impl GpuEventLogs {
    pub fn new(logger: SdkLogger) -> Self {
        Self { logger }
    }

    pub fn emit(&self, event: &GpuEvent) {
        let GpuEventKind::Xid { xid } = event.kind;
        let mut record = self.logger.create_log_record();
        record.set_event_name("hw.gpu.xid");
        record.set_timestamp(event.time);
        record.set_severity_number(Severity::Error);
        record.set_severity_text("ERROR");
        record.set_body(format!("XID {xid} on GPU {} ({})", event.index, event.uuid).into());
        record.add_attributes([
            ("hw.id", AnyValue::from(event.uuid.clone())),
            ("hw.type", AnyValue::from("gpu")),
            ("hw.name", AnyValue::from(attributes::device_name(event.index))),
            (
                "inferscope.gpu.xid",
                AnyValue::from(i64::try_from(xid).unwrap_or(i64::MAX)),
            ),
        ]);
        self.logger.emit(record);
    }
}
