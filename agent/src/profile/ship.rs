//! Shipping periods to a profile store, the same for every protocol: a batch
//! is built on the pipeline's thread and sent from a thread of its own, one
//! at a time, with retries; while the store is down at most
//! [`QUEUED_PERIODS`] wait, and a batch that finds the queue full, or that
//! fails every try, is counted as a dropped batch
//! (`inferscope.export.dropped_batches`) and never holds the pipeline.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::sinks::{Export, ExportHealth};

/// Periods waiting to be sent while one is being sent: what memory holds when the store is down.
pub const QUEUED_PERIODS: usize = 2;
/// Tries per batch, the first included, with [`BACKOFF`] doubling between them.
const TRIES: u32 = 3;
const BACKOFF: Duration = Duration::from_secs(1);

/// One protocol's way to send a batch once.
pub trait Push<B>: Send {
    fn push(&mut self, batch: &B) -> Result<(), PushError>;
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Not answered at all (refused, timed out, reset).
    #[error("{0}")]
    Unreachable(String),
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("gRPC {code:?}: {message}")]
    Grpc { code: tonic::Code, message: String },
    /// The batch could not be encoded (compressed, say).
    #[error("encoding: {0}")]
    Encoding(io::Error),
    /// Taken, but the store said it kept only part of it.
    #[error("{rejected} profiles rejected: {message}")]
    Rejected { rejected: i64, message: String },
}

impl PushError {
    /// Worth another try: the store may answer later (down, overloaded,
    /// rate limiting), as OTLP's specification lists the retryable answers.
    fn transient(&self) -> bool {
        use tonic::Code;
        match self {
            PushError::Unreachable(_) => true,
            PushError::Http { status, .. } => *status == 429 || *status >= 500,
            PushError::Grpc { code, .. } => matches!(
                code,
                Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            PushError::Rejected { .. } | PushError::Encoding(_) => false,
        }
    }

    /// A store's own words, bounded for the log.
    pub fn bounded(message: &str) -> String {
        message.trim().chars().take(200).collect()
    }
}

/// Batches on their way to one store.
pub struct Shipper<B> {
    export: Export,
    queue: Option<SyncSender<B>>,
    sender: Option<JoinHandle<()>>,
    /// Set at close: the last batches get one try each, not a backoff.
    closing: Arc<AtomicBool>,
    health: ExportHealth,
}

impl<B: Send + 'static> Shipper<B> {
    /// Starts the sending thread, `thread` by name; `health` counts under `export`.
    pub fn start(
        thread: &str,
        export: Export,
        mut pusher: impl Push<B> + 'static,
        health: ExportHealth,
    ) -> io::Result<Self> {
        health.register(export);
        let (queue, queued) = sync_channel(QUEUED_PERIODS);
        let closing = Arc::new(AtomicBool::new(false));
        let sender = std::thread::Builder::new().name(thread.into()).spawn({
            let (closing, health) = (closing.clone(), health.clone());
            move || send_all(&mut pusher, &queued, &closing, &health, export)
        })?;
        Ok(Self {
            export,
            queue: Some(queue),
            sender: Some(sender),
            closing,
            health,
        })
    }

    /// Queues `batch`, or counts it as dropped when [`QUEUED_PERIODS`] wait already.
    pub fn ship(&self, batch: B) -> io::Result<()> {
        let queue = self.queue.as_ref().ok_or_else(|| io::Error::other("closed"))?;
        match queue.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let full = format!("{QUEUED_PERIODS} periods already wait to be sent");
                self.health.record(self.export, &Err(full));
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(io::Error::other("the sending thread ended")),
        }
    }

    /// Sends what waits, one try each, and ends the sending thread.
    pub fn close(&mut self) -> io::Result<()> {
        self.closing.store(true, Ordering::Relaxed);
        self.queue = None;
        if let Some(sender) = self.sender.take() {
            sender
                .join()
                .map_err(|_| io::Error::other("a profile sending thread panicked"))?;
        }
        Ok(())
    }
}

/// Sends every batch queued until the queue closes.
fn send_all<B>(
    pusher: &mut impl Push<B>,
    queued: &Receiver<B>,
    closing: &AtomicBool,
    health: &ExportHealth,
    export: Export,
) {
    for batch in queued {
        let mut backoff = BACKOFF;
        let mut tries = 1;
        let result = loop {
            match pusher.push(&batch) {
                Err(e) if e.transient() && tries < TRIES && !closing.load(Ordering::Relaxed) => {
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    tries += 1;
                }
                result => break result,
            }
        };
        health.record(export, &result);
    }
}

/// A POST of each batch, encoded, to one URL with the headers every push carries.
pub struct HttpPush {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    /// Reads a successful answer's body: a store may say it kept only part.
    accepted: fn(&[u8]) -> Result<(), PushError>,
}

impl HttpPush {
    pub fn new(
        url: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
        accepted: fn(&[u8]) -> Result<(), PushError>,
    ) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            url,
            headers,
            accepted,
        }
    }
}

impl Push<Vec<u8>> for HttpPush {
    fn push(&mut self, body: &Vec<u8>) -> Result<(), PushError> {
        let mut request = self.agent.post(&self.url);
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut response = request
            .send(body.as_slice())
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        // An answer is small (a status, or why not); bounded all the same.
        let answer = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        if response.status().is_success() {
            return (self.accepted)(&answer);
        }
        Err(PushError::Http {
            status,
            message: PushError::bounded(&String::from_utf8_lossy(&answer)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_store_that_may_answer_later_is_tried_again() {
        let http = |status| PushError::Http {
            status,
            message: String::new(),
        };
        assert!(http(503).transient() && http(429).transient());
        assert!(!http(400).transient() && !http(401).transient());
        let grpc = |code| PushError::Grpc {
            code,
            message: String::new(),
        };
        assert!(grpc(tonic::Code::Unavailable).transient());
        assert!(!grpc(tonic::Code::Unimplemented).transient());
        assert!(!grpc(tonic::Code::InvalidArgument).transient());
        assert!(PushError::Unreachable("refused".into()).transient());
        assert!(
            !PushError::Rejected {
                rejected: 1,
                message: String::new()
            }
            .transient()
        );
    }
}
