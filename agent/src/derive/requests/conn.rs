//! One connection: which protocol it speaks, HTTP/1.1 requests paired with
//! their responses (keep-alive and pipelining: answered in request order), and
//! what happens to its requests when its place in the byte stream is lost or
//! it ends.

use std::{borrow::Cow, collections::VecDeque};

use super::{
    Dropped, Finished, ServerKey,
    http2::H2Conn,
    queue::{Queue, abandon, arrived},
    request::{BodyKind, InFlight, finish},
};
use crate::{
    decode::{
        Segment,
        http1::{Http1Event, Http1Parser, Role},
    },
    derive::llm,
    model::{Outcome, Protocol, RequestDrop},
};

/// Requests followed at once on one connection (HTTP/1.1 pipelined requests,
/// HTTP/2 open streams); more are counted as dropped.
pub(super) const MAX_IN_FLIGHT: usize = 256;

pub(super) struct Conn {
    pub(super) server: ServerKey,
    /// When its latest event was captured (eviction order).
    pub(super) last_ns: u64,
    /// False once an HTTP/2 connection lost its place: HPACK state cannot be rebuilt.
    pub(super) followed: bool,
    pub(super) requests: Http1Parser,
    pub(super) responses: Http1Parser,
    /// When the first byte of the request being received arrived.
    pub(super) request_first_byte_ns: Option<u64>,
    pub(super) in_flight: VecDeque<InFlight>,
    pub(super) peer_closed: bool,
    /// Plaintext arrives from OpenSSL: the socket's own (encrypted) bytes are ignored.
    pub(super) tls: bool,
    /// Nothing received yet: the first bytes tell HTTP/1.1 from HTTP/2.
    pub(super) fresh: bool,
    pub(super) h2: Option<H2Conn>,
}

impl Conn {
    pub(super) fn new(server: ServerKey) -> Self {
        Self {
            server,
            last_ns: 0,
            followed: true,
            requests: Http1Parser::new(Role::Request),
            responses: Http1Parser::new(Role::Response),
            request_first_byte_ns: None,
            in_flight: VecDeque::new(),
            peer_closed: false,
            tls: false,
            fresh: true,
            h2: None,
        }
    }

    pub(super) fn protocol(&self) -> Protocol {
        Protocol::of(self.h2.is_some(), self.tls)
    }

    /// Gives up on every request in flight and waits for the next message in
    /// each direction (HTTP/1.1), or stops following the connection (HTTP/2).
    pub(super) fn lose_place(
        &mut self,
        at_ns: u64,
        why: RequestDrop,
        queue: &mut Queue,
        dropped: &mut Dropped,
    ) {
        if let Some(h2) = self.h2.take() {
            self.followed = false;
            for r in h2.streams.into_values() {
                abandon(r, at_ns, why, queue, dropped);
            }
        }
        for r in self.in_flight.drain(..) {
            abandon(r, at_ns, why, queue, dropped);
        }
        self.requests.resync();
        self.responses.resync();
    }

    /// The connection ended: what is still in flight ends with `outcome`.
    pub(super) fn end(mut self, at_ns: u64, outcome: Outcome, queue: &mut Queue, done: &mut Finished<'_>) {
        let protocol = self.protocol();
        let streams = self.h2.take().map(|h2| h2.streams).unwrap_or_default();
        for r in streams.into_values().chain(self.in_flight.drain(..)) {
            finish(self.server, protocol, r, at_ns, outcome, queue, done);
        }
    }
}

impl Conn {
    /// Request-side events of one capture at `at_ns`.
    pub(super) fn on_request_events(
        &mut self,
        events: &mut Vec<Http1Event>,
        at_ns: u64,
        queue: &mut Queue,
        dropped: &mut Dropped,
    ) {
        for ev in events.drain(..) {
            match ev {
                Http1Event::Head { ts_ns, head } => {
                    let start_ns = self.request_first_byte_ns.take().unwrap_or(ts_ns);
                    self.in_flight
                        .push_back(arrived(InFlight::new(head, start_ns), queue));
                    if self.in_flight.len() > MAX_IN_FLIGHT {
                        // Pipelined beyond reason: answers can no longer be paired.
                        self.lose_place(ts_ns, RequestDrop::TooManyInFlight, queue, dropped);
                        return;
                    }
                }
                Http1Event::Body { data, missing, .. } => {
                    if let Some(r) = self.in_flight.back_mut() {
                        r.request_body(&data, missing);
                    }
                }
                Http1Event::End { .. } => {
                    if let Some(r) = self.in_flight.back_mut() {
                        r.request_complete = true;
                        r.model = llm::requested_model(&r.path, &r.request_body);
                        r.request_body = Vec::new();
                    }
                    self.request_first_byte_ns = None;
                }
                Http1Event::Desync { reason } => {
                    log::debug!(
                        "pid {} port {}: requests not framed until the next one: {reason}",
                        self.server.0,
                        self.server.1
                    );
                    self.lose_place(at_ns, RequestDrop::Unframed, queue, dropped);
                    return;
                }
            }
        }
    }

    /// Response-side events of one capture at `at_ns` (or of the close).
    pub(super) fn on_response_events(
        &mut self,
        events: &mut Vec<Http1Event>,
        at_ns: u64,
        queue: &mut Queue,
        done: &mut Finished<'_>,
        dropped: &mut Dropped,
    ) {
        for ev in events.drain(..) {
            // Responses answer requests in order: the oldest unanswered one.
            let Some(r) = self.in_flight.front_mut() else {
                continue;
            };
            match ev {
                Http1Event::Head { head, .. } => {
                    r.status = head.status;
                    r.body = BodyKind::for_content_type(&head.content_type);
                }
                Http1Event::Body { ts_ns, data, missing } => r.response_body(ts_ns, &data, missing, queue),
                Http1Event::End { ts_ns } => {
                    let mut r = self.in_flight.pop_front().expect("front exists");
                    if matches!(r.body, BodyKind::Plain) && !r.response_body.is_empty() {
                        let rec = llm::read_record(&r.response_body);
                        r.failure_reported |= rec.failed;
                        r.usage.merge(rec.usage);
                        r.model = r.model.or(rec.model.map(Cow::into_owned));
                    }
                    finish(self.server, self.protocol(), r, ts_ns, Outcome::Ok, queue, done);
                }
                Http1Event::Desync { reason } => {
                    // The response being framed is lost; the next one answers the next request.
                    log::debug!(
                        "pid {} port {}: a response not framed: {reason}",
                        self.server.0,
                        self.server.1
                    );
                    let r = self.in_flight.pop_front().expect("front exists");
                    abandon(r, at_ns, RequestDrop::Unframed, queue, dropped);
                }
            }
        }
    }
}

impl Conn {
    /// The common send of a token stream read in place: one whole chunk
    /// holding one whole record, with nothing pending in the parsers. It is
    /// what feeding the parsers would yield, without copying the bytes through
    /// their buffers and a Vec per chunk (about a quarter of the decode path's
    /// time per token event, `bench decode`). False leaves the segment to them.
    pub(super) fn streamed_record(&mut self, seg: Segment<'_>, queue: &mut Queue) -> bool {
        let Some(payload) = self.responses.whole_chunk(seg) else {
            return false;
        };
        let Some(r) = self.in_flight.front_mut() else {
            return false;
        };
        let record = match &r.body {
            BodyKind::Sse(s) => s.whole_event(payload),
            BodyKind::Ndjson(s) => s.whole_line(payload),
            BodyKind::Grpc(_) | BodyKind::Plain => None,
        };
        let Some(record) = record else {
            return false;
        };
        r.absorb_streamed(record, seg.ts_ns, queue);
        true
    }
}
