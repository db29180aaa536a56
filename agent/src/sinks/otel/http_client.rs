//! OTLP/HTTP through ureq: the same small blocking client (rustls, web PKI
//! roots) the Kubernetes source uses, instead of a second HTTP stack. The
//! exporter calls it from the periodic reader's own thread, where blocking is
//! what is wanted.

use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

use super::exporter::OtlpSignal;

#[derive(Debug)]
pub struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // The exporter classifies statuses itself (429 and 503 are retried).
            .http_status_as_error(false)
            .build()
            .into();
        Self { agent }
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let response = self.agent.run(request)?;
        let (parts, mut body) = response.into_parts();
        // Collectors answer with a small protobuf; cap what is read all the same.
        let body = body.with_config().limit(4 << 20).read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }
}

/// The export timeout as the OTLP exporter reads it: `OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`,
/// else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
pub fn timeout(signal: OtlpSignal) -> Duration {
    let own = format!(
        "OTEL_EXPORTER_OTLP_{}_TIMEOUT",
        signal.name().to_ascii_uppercase()
    );
    [own.as_str(), "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}
