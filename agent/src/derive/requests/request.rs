//! One request in flight: its head, its bodies as they arrive (kept up to a
//! bound, or read record by record when streamed), its first content event and
//! the gaps after, its usage; and the record it becomes when it ends.

use std::borrow::Cow;

use super::{
    Finished, ServerKey,
    queue::{Queue, leave_queue},
};
use crate::{
    decode::{
        http1::Head,
        http2::GrpcSplitter,
        sse::{LineSplitter, SseSplitter},
    },
    derive::llm::{self, Usage},
    model::{Outcome, Protocol, RequestRecord, TokenSource},
};

/// Most request-body bytes kept to find the model, and response bytes kept to read usage.
pub(super) const REQUEST_BODY_KEEP: usize = 64 * 1024;
pub(super) const RESPONSE_BODY_KEEP: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub(super) enum BodyKind {
    #[default]
    Plain,
    Sse(SseSplitter),
    Ndjson(LineSplitter),
    /// gRPC over HTTP/2: each response message is one streamed item.
    Grpc(GrpcSplitter),
}

impl BodyKind {
    pub(super) fn for_content_type(ct: &str) -> Self {
        if ct.starts_with("text/event-stream") {
            BodyKind::Sse(SseSplitter::default())
        } else if ct.contains("ndjson") || ct.contains("jsonl") {
            BodyKind::Ndjson(LineSplitter::default())
        } else if ct.starts_with("application/grpc") {
            BodyKind::Grpc(GrpcSplitter::default())
        } else {
            BodyKind::Plain
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct InFlight {
    pub(super) llm: bool,
    pub(super) start_ns: u64,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) request_body: Vec<u8>,
    pub(super) request_complete: bool,
    pub(super) model: Option<String>,
    pub(super) status: u16,
    pub(super) body: BodyKind,
    /// Reads the streamed body's records.
    pub(super) records: llm::StreamReader,
    pub(super) response_body: Vec<u8>,
    pub(super) first_token_ns: Option<u64>,
    pub(super) last_content_ns: u64,
    pub(super) itl_s: Vec<f64>,
    pub(super) content_events: u64,
    pub(super) usage: Usage,
    pub(super) truncated: bool,
    pub(super) grpc_status: Option<u32>,
    /// When the stream's end marker was sent: clients that stop reading there
    /// and close before the transfer's own end still got a whole answer.
    pub(super) ended_ns: Option<u64>,
    /// The body said the generation failed, whatever the status said.
    pub(super) failure_reported: bool,
}

impl InFlight {
    pub(super) fn new(head: Head, start_ns: u64) -> Self {
        Self {
            llm: crate::engines::is_generation_endpoint(&head.path),
            start_ns,
            method: head.method,
            path: head.path,
            ..Self::default()
        }
    }

    /// Feeds response body bytes; each record goes to `absorb` as it completes.
    pub(super) fn response_body(&mut self, ts_ns: u64, data: &[u8], missing: usize, queue: &mut Queue) {
        if missing > 0 {
            self.truncated = true;
        }
        // The splitter lends each record; it is read and absorbed before the next.
        let mut body = std::mem::take(&mut self.body);
        match &mut body {
            BodyKind::Sse(s) => {
                if missing > 0 {
                    s.gap();
                }
                s.feed(data, |rec| self.absorb_streamed(rec, ts_ns, queue));
            }
            BodyKind::Ndjson(s) => {
                if missing > 0 {
                    s.gap();
                }
                s.feed(data, |rec| self.absorb_streamed(rec, ts_ns, queue));
            }
            BodyKind::Grpc(g) => {
                let content = llm::Record {
                    content: true,
                    ..llm::Record::default()
                };
                g.feed(data, missing, |_| self.absorb(content.clone(), ts_ns, queue));
            }
            BodyKind::Plain => {
                let room = RESPONSE_BODY_KEEP.saturating_sub(self.response_body.len());
                self.response_body
                    .extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        self.body = body;
    }

    pub(super) fn request_body(&mut self, data: &[u8], missing: usize) {
        let room = REQUEST_BODY_KEEP.saturating_sub(self.request_body.len());
        self.request_body.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= missing > 0;
    }
}

impl InFlight {
    /// One record of the streamed body, whether the splitter lent it or it
    /// was read in place: both go through the stream's reader.
    pub(super) fn absorb_streamed(&mut self, bytes: &[u8], ts_ns: u64, queue: &mut Queue) {
        let rec = self.records.read(bytes);
        self.absorb(rec, ts_ns, queue);
    }

    pub(super) fn absorb(&mut self, rec: llm::Record<'_>, ts_ns: u64, queue: &mut Queue) {
        if rec.end {
            self.ended_ns = Some(ts_ns);
        }
        self.failure_reported |= rec.failed;
        self.usage.merge(rec.usage);
        if self.model.is_none() {
            self.model = rec.model.map(Cow::into_owned);
        }
        if !rec.content {
            return;
        }
        self.content_events += 1;
        match self.first_token_ns {
            None => {
                self.first_token_ns = Some(ts_ns);
                if self.llm {
                    queue.advance(ts_ns);
                    queue.waiting = queue.waiting.saturating_sub(1);
                    queue.running += 1;
                }
            }
            // Several events in one send are one burst: no gap between them.
            Some(_) if ts_ns > self.last_content_ns => {
                self.itl_s.push((ts_ns - self.last_content_ns) as f64 / 1e9)
            }
            Some(_) => {}
        }
        self.last_content_ns = ts_ns;
    }
}

/// Records a request that ended; `outcome` is how the connection saw it end
/// (`ok` is refined by the status and, for gRPC, `grpc-status`).
pub(super) fn finish(
    server: ServerKey,
    protocol: Protocol,
    mut r: InFlight,
    end_ns: u64,
    outcome: Outcome,
    queue: &mut Queue,
    done: &mut Finished<'_>,
) {
    if !r.llm {
        return;
    }
    if !r.request_complete {
        // Answered (or cut off) before its body was all seen: use what was.
        r.model = r.model.or_else(|| llm::requested_model(&r.path, &r.request_body));
    }
    // A client that closes once it read the end marker left a finished answer.
    let (end_ns, outcome) = match (r.ended_ns, outcome) {
        (Some(at), Outcome::Cancelled | Outcome::Aborted) => (at, Outcome::Ok),
        _ => (end_ns, outcome),
    };
    leave_queue(&r, end_ns, queue);
    let stream = match r.body {
        BodyKind::Plain => false,
        // A gRPC call streams when its method does (ModelStreamInfer, GenerateStream).
        BodyKind::Grpc(_) => r.path.contains("Stream"),
        BodyKind::Sse(_) | BodyKind::Ndjson(_) => true,
    };
    let failed = r.status >= 400 || r.grpc_status.is_some_and(|s| s != 0) || r.failure_reported;
    let outcome = if outcome == Outcome::Ok && failed {
        Outcome::Error
    } else {
        outcome
    };
    let protocol = match r.body {
        BodyKind::Grpc(_) => protocol.grpc(),
        _ => protocol,
    };
    queue.protocol = Some(protocol);
    let (output_tokens, token_source) = match (r.usage.output_tokens, stream) {
        (Some(n), _) => (Some(n), Some(TokenSource::Usage)),
        (None, true) => (Some(r.content_events), Some(TokenSource::Events)),
        (None, false) => (None, None),
    };
    done.records.push(RequestRecord {
        time: done.clock.wall(end_ns),
        pid: server.0,
        port: server.1,
        protocol,
        method: r.method,
        path: r.path,
        status: r.status,
        model: r.model,
        stream,
        ttft_s: r
            .first_token_ns
            .filter(|_| stream)
            .map(|t| (t - r.start_ns) as f64 / 1e9),
        itl_s: r.itl_s,
        duration_s: end_ns.saturating_sub(r.start_ns) as f64 / 1e9,
        output_tokens,
        input_tokens: r.usage.input_tokens,
        token_source,
        outcome,
        truncated: r.truncated,
        engine: None,
    });
}
