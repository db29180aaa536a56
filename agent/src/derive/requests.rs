//! Per-request LLM metrics from a server's socket traffic: a state machine per
//! connection that pairs each request with its response (keep-alive and
//! pipelining: responses come back in request order), times the first content
//! event (TTFT) and the gaps between later ones, counts tokens, and keeps each
//! server's queue (waiting: request read, no token yet; running: streaming).

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, VecDeque},
};

use inferscope_shared::{
    NET_CLOSED, NET_DATA, NET_FLAG_AFTER_LOSS, NET_FLAG_RESET_BY_PEER, NET_FLAG_TLS, NET_FLAG_UNREADABLE,
    NET_PEER_CLOSED, NET_RECV, NET_SEND,
};

use crate::{
    clock::Clock,
    decode::{
        NetEvent, Segment,
        http1::{Head, Http1Event, Http1Parser, Role},
        http2::{GrpcSplitter, H2Event, H2Parser, PREFACE},
        sse::{LineSplitter, SseSplitter},
    },
    derive::llm::{self, Usage},
    model::{Outcome, Protocol, RequestDrop, RequestRecord, TokenSource},
};

/// Most request-body bytes kept to find the model, and response bytes kept to read usage.
const REQUEST_BODY_KEEP: usize = 64 * 1024;
const RESPONSE_BODY_KEEP: usize = 1024 * 1024;

/// Connections followed at once (the kernel side keeps its state in each
/// socket, unbounded). A connection whose close was lost stays until the table
/// is full; then the least recently active eighth is evicted.
const MAX_CONNECTIONS: usize = 65_536;

/// Requests followed at once on one connection (HTTP/1.1 pipelined requests,
/// HTTP/2 open streams); more are counted as dropped.
const MAX_IN_FLIGHT: usize = 256;

/// A server: a process and one of its listening ports.
pub type ServerKey = (u32, u16);

/// Requests given up on so far, by reason.
type Dropped = BTreeMap<RequestDrop, u64>;

/// Finished requests go here, stamped with wall-clock time.
struct Finished<'a> {
    clock: &'a Clock,
    records: &'a mut Vec<RequestRecord>,
}

#[derive(Debug, Default)]
enum BodyKind {
    #[default]
    Plain,
    Sse(SseSplitter),
    Ndjson(LineSplitter),
    /// gRPC over HTTP/2: each response message is one streamed item.
    Grpc(GrpcSplitter),
}

impl BodyKind {
    fn for_content_type(ct: &str) -> Self {
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
struct InFlight {
    llm: bool,
    start_ns: u64,
    method: String,
    path: String,
    request_body: Vec<u8>,
    request_complete: bool,
    model: Option<String>,
    status: u16,
    body: BodyKind,
    /// Reads the streamed body's records.
    records: llm::StreamReader,
    response_body: Vec<u8>,
    first_token_ns: Option<u64>,
    last_content_ns: u64,
    itl_s: Vec<f64>,
    content_events: u64,
    usage: Usage,
    truncated: bool,
    grpc_status: Option<u32>,
    /// When the stream's end marker was sent: clients that stop reading there
    /// and close before the transfer's own end still got a whole answer.
    ended_ns: Option<u64>,
    /// The body said the generation failed, whatever the status said.
    failure_reported: bool,
}

impl InFlight {
    fn new(head: Head, start_ns: u64) -> Self {
        Self {
            llm: llm::is_generation_endpoint(&head.path),
            start_ns,
            method: head.method,
            path: head.path,
            ..Self::default()
        }
    }

    /// Feeds response body bytes; each record goes to `absorb` as it completes.
    fn response_body(&mut self, ts_ns: u64, data: &[u8], missing: usize, queue: &mut Queue) {
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

    fn request_body(&mut self, data: &[u8], missing: usize) {
        let room = REQUEST_BODY_KEEP.saturating_sub(self.request_body.len());
        self.request_body.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= missing > 0;
    }
}

/// An HTTP/2 connection: a parser per direction, and its open streams.
struct H2Conn {
    client: H2Parser,
    server: H2Parser,
    streams: BTreeMap<u32, InFlight>,
}

struct Conn {
    server: ServerKey,
    /// When its latest event was captured (eviction order).
    last_ns: u64,
    /// False once an HTTP/2 connection lost its place: HPACK state cannot be rebuilt.
    followed: bool,
    requests: Http1Parser,
    responses: Http1Parser,
    /// When the first byte of the request being received arrived.
    request_first_byte_ns: Option<u64>,
    in_flight: VecDeque<InFlight>,
    peer_closed: bool,
    /// Plaintext arrives from OpenSSL: the socket's own (encrypted) bytes are ignored.
    tls: bool,
    /// Nothing received yet: the first bytes tell HTTP/1.1 from HTTP/2.
    fresh: bool,
    h2: Option<H2Conn>,
}

impl Conn {
    fn new(server: ServerKey) -> Self {
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

    fn protocol(&self) -> Protocol {
        Protocol::of(self.h2.is_some(), self.tls)
    }

    /// Gives up on every request in flight and waits for the next message in
    /// each direction (HTTP/1.1), or stops following the connection (HTTP/2).
    fn lose_place(&mut self, at_ns: u64, why: RequestDrop, queue: &mut Queue, dropped: &mut Dropped) {
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
    fn end(mut self, at_ns: u64, outcome: Outcome, queue: &mut Queue, done: &mut Finished<'_>) {
        let protocol = self.protocol();
        let streams = self.h2.take().map(|h2| h2.streams).unwrap_or_default();
        for r in streams.into_values().chain(self.in_flight.drain(..)) {
            finish(self.server, protocol, r, at_ns, outcome, queue, done);
        }
    }
}

/// A server's queue, integrated over time for interval means.
#[derive(Debug, Default)]
struct Queue {
    waiting: u64,
    running: u64,
    since_ns: u64,
    waiting_area: f64,
    running_area: f64,
    started: u64,
    /// The protocol of the server's latest traffic: its connections' framing,
    /// refined by its latest finished request (gRPC is HTTP/2 carrying gRPC).
    protocol: Option<Protocol>,
}

impl Queue {
    fn advance(&mut self, now_ns: u64) {
        if now_ns > self.since_ns {
            let dt = (now_ns - self.since_ns) as f64;
            self.waiting_area += self.waiting as f64 * dt;
            self.running_area += self.running as f64 * dt;
            self.since_ns = now_ns;
        }
    }
}

/// Queue depth of one server over one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueReport {
    pub waiting: u64,
    pub running: u64,
    pub waiting_mean: f64,
    pub running_mean: f64,
    /// Generation requests that arrived during the interval.
    pub arrived: u64,
    /// Connections open at the interval's end.
    pub connections: u64,
    pub protocol: Protocol,
}

/// Hashes a socket cookie for the connection table: cookies are numbers the
/// kernel hands out in sequence, not chosen by peers, so one multiplication
/// spreads them (SipHash's flooding resistance buys nothing here, on every event).
#[derive(Default)]
struct CookieHasher(u64);

impl std::hash::Hasher for CookieHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|b| self.write_u64(u64::from(*b)));
    }
    fn write_u64(&mut self, cookie: u64) {
        // Fibonacci hashing: the golden ratio's odd 64-bit multiple.
        self.0 = (self.0 ^ cookie).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Connections = HashMap<u64, Conn, std::hash::BuildHasherDefault<CookieHasher>>;

pub struct RequestTracker {
    clock: Clock,
    conns: Connections,
    queues: BTreeMap<ServerKey, Queue>,
    interval_start_ns: u64,
    dropped: Dropped,
    /// What an HTTP/1.1 parser completed from the event being handled (kept: one allocation).
    http1_events: Vec<Http1Event>,
}

impl RequestTracker {
    /// `clock` stamps finished requests with wall-clock time.
    pub fn new(clock: Clock, now_ns: u64) -> Self {
        Self {
            clock,
            conns: Connections::default(),
            queues: BTreeMap::new(),
            interval_start_ns: now_ns,
            dropped: Dropped::new(),
            http1_events: Vec::new(),
        }
    }

    /// Requests given up on since the start, by reason (every reason, zeros too).
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        RequestDrop::ALL
            .iter()
            .map(|why| (why.name(), self.dropped.get(why).copied().unwrap_or(0)))
            .collect()
    }

    /// Feeds one captured event; finished requests are appended to `done`.
    pub fn on_event(&mut self, ev: &NetEvent<'_>, done: &mut Vec<RequestRecord>) {
        let h = &ev.header;
        if h.kind == NET_DATA
            && self.conns.len() >= MAX_CONNECTIONS
            && !self.conns.contains_key(&h.sock_cookie)
        {
            self.evict(h.ktime_ns);
        }
        let done = &mut Finished {
            clock: &self.clock,
            records: done,
        };
        let server = (h.pid, h.local_port);
        let after_loss = h.flags & NET_FLAG_AFTER_LOSS != 0;
        match h.kind {
            NET_DATA => {
                let conn = self
                    .conns
                    .entry(h.sock_cookie)
                    .or_insert_with(|| Conn::new(server));
                conn.last_ns = h.ktime_ns;
                let tls = h.flags & NET_FLAG_TLS != 0;
                if tls && !conn.tls {
                    // The first plaintext: what was captured before was the handshake.
                    *conn = Conn {
                        tls: true,
                        ..Conn::new(server)
                    };
                } else if conn.tls && !tls {
                    return; // ciphertext of a TLS connection
                }
                let missing = if h.flags & NET_FLAG_UNREADABLE != 0 {
                    h.len as usize
                } else {
                    h.len as usize - ev.data.len().min(h.len as usize)
                };
                let seg = Segment {
                    ts_ns: h.ktime_ns,
                    data: ev.data,
                    missing,
                };
                let queue = self.queues.entry(conn.server).or_insert_with(|| Queue {
                    since_ns: h.ktime_ns,
                    ..Queue::default()
                });
                if after_loss {
                    conn.lose_place(h.ktime_ns, RequestDrop::EventsLost, queue, &mut self.dropped);
                }
                if !conn.followed {
                    return;
                }
                if conn.fresh && h.direction == NET_RECV && !ev.data.is_empty() {
                    conn.fresh = false;
                    let n = ev.data.len().min(PREFACE.len());
                    if ev.data[..n] == PREFACE[..n] {
                        conn.h2 = Some(H2Conn {
                            client: H2Parser::new(true),
                            server: H2Parser::new(false),
                            streams: BTreeMap::new(),
                        });
                    }
                }
                queue.protocol.get_or_insert(conn.protocol());
                if conn.h2.is_some() {
                    conn.on_h2(seg, h.direction, queue, done, &mut self.dropped);
                    return;
                }
                let events = &mut self.http1_events;
                if h.direction == NET_RECV {
                    conn.request_first_byte_ns.get_or_insert(h.ktime_ns);
                    conn.requests.feed(seg, events);
                    conn.on_request_events(events, h.ktime_ns, queue, &mut self.dropped);
                } else if h.direction == NET_SEND && !conn.streamed_record(seg, queue) {
                    conn.responses.feed(seg, events);
                    conn.on_response_events(events, h.ktime_ns, queue, done, &mut self.dropped);
                }
            }
            NET_PEER_CLOSED => {
                if let Some(conn) = self.conns.get_mut(&h.sock_cookie) {
                    conn.peer_closed = true;
                }
            }
            NET_CLOSED => {
                if let Some(mut conn) = self.conns.remove(&h.sock_cookie) {
                    let queue = self.queues.entry(conn.server).or_default();
                    if after_loss {
                        conn.lose_place(h.ktime_ns, RequestDrop::EventsLost, queue, &mut self.dropped);
                    }
                    let events = &mut self.http1_events;
                    conn.responses.close(h.ktime_ns, events);
                    conn.on_response_events(events, h.ktime_ns, queue, done, &mut self.dropped);
                    let client_left = conn.peer_closed || h.flags & NET_FLAG_RESET_BY_PEER != 0;
                    let outcome = if client_left {
                        Outcome::Cancelled
                    } else {
                        Outcome::Aborted
                    };
                    conn.end(h.ktime_ns, outcome, queue, done);
                }
            }
            _ => {}
        }
    }

    /// Makes room in a full connection table: the least recently active eighth
    /// goes (closes that were lost, or idle keep-alive connections, which start
    /// afresh at their next request); what they had in flight is counted.
    fn evict(&mut self, now_ns: u64) {
        let mut by_age: Vec<(u64, u64)> = self.conns.iter().map(|(k, c)| (c.last_ns, *k)).collect();
        by_age.sort_unstable();
        for (_, cookie) in by_age.into_iter().take(MAX_CONNECTIONS / 8) {
            if let Some(mut conn) = self.conns.remove(&cookie) {
                let queue = self.queues.entry(conn.server).or_default();
                conn.lose_place(now_ns, RequestDrop::ConnectionEvicted, queue, &mut self.dropped);
            }
        }
    }

    /// Queue depth of every server seen, for the interval ending at `now_ns`.
    pub fn interval_end(&mut self, now_ns: u64) -> BTreeMap<ServerKey, QueueReport> {
        let span = now_ns.saturating_sub(self.interval_start_ns).max(1) as f64;
        self.interval_start_ns = now_ns;
        let mut connections: HashMap<ServerKey, u64> = HashMap::new();
        for conn in self.conns.values() {
            *connections.entry(conn.server).or_default() += 1;
        }
        self.queues
            .iter_mut()
            .map(|(key, q)| {
                q.advance(now_ns);
                let report = QueueReport {
                    waiting: q.waiting,
                    running: q.running,
                    waiting_mean: q.waiting_area / span,
                    running_mean: q.running_area / span,
                    arrived: q.started,
                    connections: connections.get(key).copied().unwrap_or(0),
                    protocol: q.protocol.unwrap_or_default(),
                };
                q.waiting_area = 0.0;
                q.running_area = 0.0;
                q.started = 0;
                (*key, report)
            })
            .collect()
    }

    /// Forgets a server's connections and queue (its process exited).
    /// Forgets a server process that exited; requests still open are recorded as aborted.
    pub fn forget_pid(&mut self, pid: u32, now_ns: u64, done: &mut Vec<RequestRecord>) {
        let done = &mut Finished {
            clock: &self.clock,
            records: done,
        };
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.server.0 == pid)
            .map(|(k, _)| *k)
            .collect();
        for cookie in gone {
            if let Some(conn) = self.conns.remove(&cookie) {
                let queue = self.queues.entry(conn.server).or_default();
                conn.end(now_ns, Outcome::Aborted, queue, done);
            }
        }
        self.queues.retain(|k, _| k.0 != pid);
    }
}

impl Conn {
    /// Request-side events of one capture at `at_ns`.
    fn on_request_events(
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
    fn on_response_events(
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
    fn streamed_record(&mut self, seg: Segment<'_>, queue: &mut Queue) -> bool {
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

    /// HTTP/2: requests and responses are streams, answered in any order.
    fn on_h2(
        &mut self,
        seg: Segment<'_>,
        direction: u8,
        queue: &mut Queue,
        done: &mut Finished<'_>,
        dropped: &mut Dropped,
    ) {
        let protocol = self.protocol();
        let Some(h2) = self.h2.as_mut() else { return };
        let mut events = Vec::new();
        let from_client = direction == NET_RECV;
        if from_client {
            h2.client.feed(seg, &mut events);
        } else {
            h2.server.feed(seg, &mut events);
        }
        for ev in events {
            match ev {
                H2Event::Headers {
                    ts_ns,
                    stream,
                    head,
                    grpc_status,
                    end_stream,
                } => {
                    if from_client {
                        if h2.streams.contains_key(&stream) {
                            continue; // trailers
                        }
                        let r = arrived(InFlight::new(head, ts_ns), queue);
                        if h2.streams.len() >= MAX_IN_FLIGHT {
                            abandon(r, ts_ns, RequestDrop::TooManyInFlight, queue, dropped);
                        } else {
                            h2.streams.insert(stream, r);
                        }
                        continue;
                    }
                    let Some(r) = h2.streams.get_mut(&stream) else {
                        continue;
                    };
                    if head.status != 0 {
                        r.status = head.status;
                        r.body = BodyKind::for_content_type(&head.content_type);
                    }
                    r.grpc_status = grpc_status.or(r.grpc_status);
                    if end_stream && let Some(r) = h2.streams.remove(&stream) {
                        finish(self.server, protocol, r, ts_ns, Outcome::Ok, queue, done);
                    }
                }
                H2Event::Data {
                    ts_ns,
                    stream,
                    data,
                    missing,
                    end_stream,
                } => {
                    let Some(r) = h2.streams.get_mut(&stream) else {
                        continue;
                    };
                    if from_client {
                        r.request_body(&data, missing);
                        if end_stream {
                            r.model = llm::requested_model(&r.path, &grpc_first_message(&r.request_body))
                                .or_else(|| llm::requested_model(&r.path, &r.request_body));
                            r.request_complete = true;
                        }
                    } else {
                        r.response_body(ts_ns, &data, missing, queue);
                        if end_stream && let Some(r) = h2.streams.remove(&stream) {
                            finish(self.server, protocol, r, ts_ns, Outcome::Ok, queue, done);
                        }
                    }
                }
                H2Event::Reset { ts_ns, stream } => {
                    if let Some(r) = h2.streams.remove(&stream) {
                        let outcome = if from_client {
                            Outcome::Cancelled
                        } else {
                            Outcome::Aborted
                        };
                        finish(self.server, protocol, r, ts_ns, outcome, queue, done);
                    }
                }
                H2Event::Desync { reason } => {
                    log::debug!(
                        "pid {} port {}: HTTP/2 not followed any more: {reason}",
                        self.server.0,
                        self.server.1
                    );
                    self.lose_place(seg.ts_ns, RequestDrop::Unframed, queue, dropped);
                    return;
                }
            }
        }
    }
}

/// The first gRPC message of a request body (the body itself when it is not gRPC-framed).
fn grpc_first_message(body: &[u8]) -> Vec<u8> {
    let mut first = None;
    GrpcSplitter::default().feed(body, 0, |m| {
        first.get_or_insert_with(|| m.to_vec());
    });
    first.unwrap_or_default()
}

impl InFlight {
    /// One record of the streamed body, whether the splitter lent it or it
    /// was read in place: both go through the stream's reader.
    fn absorb_streamed(&mut self, bytes: &[u8], ts_ns: u64, queue: &mut Queue) {
        let rec = self.records.read(bytes);
        self.absorb(rec, ts_ns, queue);
    }

    fn absorb(&mut self, rec: llm::Record<'_>, ts_ns: u64, queue: &mut Queue) {
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

/// Counts a generation request's arrival in its server's queue.
fn arrived(r: InFlight, queue: &mut Queue) -> InFlight {
    if r.llm {
        queue.advance(r.start_ns);
        queue.waiting += 1;
        queue.started += 1;
    }
    r
}

/// Gives up on a request: it leaves its server's queue and is counted, not recorded.
fn abandon(r: InFlight, at_ns: u64, why: RequestDrop, queue: &mut Queue, dropped: &mut Dropped) {
    if r.llm {
        leave_queue(&r, at_ns, queue);
        *dropped.entry(why).or_default() += 1;
    }
}

fn leave_queue(r: &InFlight, at_ns: u64, queue: &mut Queue) {
    queue.advance(at_ns);
    if r.first_token_ns.is_some() {
        queue.running = queue.running.saturating_sub(1);
    } else {
        queue.waiting = queue.waiting.saturating_sub(1);
    }
}

/// Records a request that ended; `outcome` is how the connection saw it end
/// (`ok` is refined by the status and, for gRPC, `grpc-status`).
fn finish(
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

#[cfg(test)]
mod tests {
    use super::*;
    use inferscope_shared::NetEventHeader;

    const MS: u64 = 1_000_000;

    fn data(cookie: u64, ts_ms: u64, direction: u8, bytes: &[u8]) -> NetEvent<'_> {
        NetEvent {
            header: NetEventHeader {
                ktime_ns: ts_ms * MS,
                sock_cookie: cookie,
                pid: 42,
                len: bytes.len() as u32,
                captured: bytes.len() as u32,
                local_port: 8000,
                kind: NET_DATA,
                direction,
                ..NetEventHeader::default()
            },
            data: bytes,
        }
    }

    fn chunk(payload: &str) -> Vec<u8> {
        format!("{:x}\r\n{payload}\r\n", payload.len()).into_bytes()
    }

    const REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 36\r\n\r\n{\"model\":\"smol\",\"stream\":true,\"x\":1}";
    const HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

    fn token(text: &str) -> Vec<u8> {
        chunk(&format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
        ))
    }

    /// Request at 0 ms, headers at 5 ms, role-only delta at 6 ms, tokens at 120, 145 and 170 ms.
    fn scripted_stream(t: &mut RequestTracker, cookie: u64, at: u64, done: &mut Vec<RequestRecord>) {
        t.on_event(&data(cookie, at, NET_RECV, REQUEST), done);
        t.on_event(&data(cookie, at + 5, NET_SEND, HEAD), done);
        let role = chunk("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        t.on_event(&data(cookie, at + 6, NET_SEND, &role), done);
        for (i, ms) in [120, 145, 170].into_iter().enumerate() {
            t.on_event(&data(cookie, at + ms, NET_SEND, &token(&format!("t{i}"))), done);
        }
        let mut end = chunk("data: [DONE]\n\n");
        end.extend_from_slice(b"0\r\n\r\n");
        t.on_event(&data(cookie, at + 171, NET_SEND, &end), done);
    }

    #[test]
    fn ttft_is_the_first_content_event_not_the_headers_or_the_role_delta() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        scripted_stream(&mut t, 1, 0, &mut done);
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!(r.ttft_s, Some(0.120));
        assert_eq!(r.itl_s, [0.025, 0.025]);
        assert_eq!(r.duration_s, 0.171);
        assert_eq!(
            (r.output_tokens, r.token_source),
            (Some(3), Some(TokenSource::Events))
        );
        assert_eq!(
            (r.model.as_deref(), r.status, r.stream, r.outcome),
            (Some("smol"), 200, true, Outcome::Ok)
        );
    }

    #[test]
    fn keep_alive_requests_on_one_connection_are_each_measured_from_their_own_start() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        scripted_stream(&mut t, 1, 0, &mut done);
        scripted_stream(&mut t, 1, 1000, &mut done);
        assert_eq!(done.len(), 2);
        assert!(
            done.iter()
                .all(|r| r.ttft_s == Some(0.120) && r.duration_s == 0.171),
            "{done:?}"
        );
    }

    #[test]
    fn queue_depth_is_waiting_until_the_first_token_then_running() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
        t.on_event(&data(2, 0, NET_RECV, REQUEST), &mut done);
        t.on_event(&data(1, 50, NET_SEND, HEAD), &mut done);
        t.on_event(&data(1, 100, NET_SEND, &token("a")), &mut done);
        let q = t.interval_end(200 * MS)[&(42, 8000)].clone();
        assert_eq!((q.waiting, q.running, q.arrived), (1, 1, 2));
        // Waiting: two for 100 ms, then one for 100 ms; running: one for the last 100 ms.
        assert!((q.waiting_mean - 1.5).abs() < 1e-9, "{q:?}");
        assert!((q.running_mean - 0.5).abs() < 1e-9, "{q:?}");
    }

    #[test]
    fn a_client_that_leaves_mid_stream_is_a_cancellation() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
        t.on_event(&data(1, 5, NET_SEND, HEAD), &mut done);
        t.on_event(&data(1, 100, NET_SEND, &token("a")), &mut done);
        for kind in [NET_PEER_CLOSED, NET_CLOSED] {
            let mut ev = data(1, 130, 0, b"");
            ev.header.kind = kind;
            t.on_event(&ev, &mut done);
        }
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!((r.outcome, r.ttft_s), (Outcome::Cancelled, Some(0.1)));
        let q = &t.interval_end(200 * MS)[&(42, 8000)];
        assert_eq!((q.waiting, q.running), (0, 0));
    }

    #[test]
    fn a_client_that_closes_after_the_end_marker_got_a_whole_answer() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
        t.on_event(&data(1, 5, NET_SEND, HEAD), &mut done);
        t.on_event(&data(1, 100, NET_SEND, &token("a")), &mut done);
        t.on_event(&data(1, 110, NET_SEND, &chunk("data: [DONE]\n\n")), &mut done);
        // The client read [DONE] and left before the chunked body's terminator.
        for kind in [NET_PEER_CLOSED, NET_CLOSED] {
            let mut ev = data(1, 150, 0, b"");
            ev.header.kind = kind;
            t.on_event(&ev, &mut done);
        }
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!(
            (r.outcome, r.duration_s, r.output_tokens),
            (Outcome::Ok, 0.11, Some(1))
        );
    }

    /// The Responses and Messages APIs report a failure inside a stream whose
    /// status said 200: the request is an error, not a success with few tokens.
    #[test]
    fn a_stream_that_reports_a_failure_is_an_error() {
        for failure in [
            r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"}}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ] {
            let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
            let mut done = Vec::new();
            t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
            t.on_event(&data(1, 5, NET_SEND, HEAD), &mut done);
            t.on_event(&data(1, 100, NET_SEND, &token("a")), &mut done);
            let mut end = chunk(&format!("event: error\ndata: {failure}\n\n"));
            end.extend_from_slice(b"0\r\n\r\n");
            t.on_event(&data(1, 110, NET_SEND, &end), &mut done);
            let [r] = done.as_slice() else { panic!("{done:?}") };
            assert_eq!((r.status, r.outcome), (200, Outcome::Error), "{failure}");
        }
    }

    #[test]
    fn non_streaming_responses_get_duration_and_usage_but_no_ttft() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
        let body = br#"{"model":"smol","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        t.on_event(&data(1, 300, NET_SEND, &response), &mut done);
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!((r.ttft_s, r.stream, r.duration_s), (None, false, 0.3));
        assert_eq!(
            (r.output_tokens, r.input_tokens, r.token_source),
            (Some(2), Some(5), Some(TokenSource::Usage))
        );
    }

    #[test]
    fn a_tls_connection_is_read_from_its_plaintext_and_its_ciphertext_ignored() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        // The handshake, captured at the socket before the connection is known to be TLS.
        t.on_event(
            &data(1, 0, NET_RECV, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1"),
            &mut done,
        );
        fn tls(mut ev: NetEvent<'_>) -> NetEvent<'_> {
            ev.header.flags = NET_FLAG_TLS;
            ev
        }
        t.on_event(&tls(data(1, 10, NET_RECV, REQUEST)), &mut done);
        t.on_event(&data(1, 10, NET_RECV, b"\x17\x03\x03 ciphertext"), &mut done);
        t.on_event(&tls(data(1, 15, NET_SEND, HEAD)), &mut done);
        t.on_event(&tls(data(1, 130, NET_SEND, &token("a"))), &mut done);
        t.on_event(&data(1, 130, NET_SEND, b"\x17\x03\x03 ciphertext"), &mut done);
        let mut end = chunk("data: [DONE]\n\n");
        end.extend_from_slice(b"0\r\n\r\n");
        t.on_event(&tls(data(1, 131, NET_SEND, &end)), &mut done);
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!(
            (r.protocol, r.ttft_s, r.output_tokens),
            (Protocol::Http1Tls, Some(0.120), Some(1))
        );
        assert_eq!(t.interval_end(200 * MS)[&(42, 8000)].protocol, Protocol::Http1Tls);
    }

    #[test]
    fn health_checks_are_not_generation_requests() {
        let mut t = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, b"GET /health HTTP/1.1\r\n\r\n"), &mut done);
        t.on_event(
            &data(1, 1, NET_SEND, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            &mut done,
        );
        scripted_stream(&mut t, 1, 10, &mut done);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].ttft_s, Some(0.120));
    }

    fn tracker() -> RequestTracker {
        RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0)
    }

    fn dropped(t: &RequestTracker, why: RequestDrop) -> u64 {
        t.dropped()[why.name()]
    }

    #[test]
    fn lost_events_drop_the_requests_in_flight_and_the_next_request_is_measured() {
        let mut t = tracker();
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
        t.on_event(&data(1, 5, NET_SEND, HEAD), &mut done);
        // The rest of that response was lost; the next event on the socket says so.
        let late_token = token("late");
        let mut late = data(1, 300, NET_SEND, &late_token);
        late.header.flags = NET_FLAG_AFTER_LOSS;
        t.on_event(&late, &mut done);
        t.on_event(&data(1, 301, NET_SEND, b"0\r\n\r\n"), &mut done);
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(dropped(&t, RequestDrop::EventsLost), 1);
        let q = &t.interval_end(400 * MS)[&(42, 8000)];
        assert_eq!((q.waiting, q.running, q.connections), (0, 0, 1));
        scripted_stream(&mut t, 1, 1000, &mut done);
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!((r.ttft_s, r.outcome), (Some(0.120), Outcome::Ok));
    }

    #[test]
    fn a_response_whose_framing_was_not_captured_is_dropped_and_the_next_one_measured() {
        let mut t = tracker();
        let mut done = Vec::new();
        t.on_event(&data(1, 0, NET_RECV, REQUEST), &mut done);
        t.on_event(&data(1, 5, NET_SEND, HEAD), &mut done);
        // A send of 10 000 bytes of which only a chunk's first bytes were captured.
        let mut cut = data(1, 6, NET_SEND, b"2000\r\nabc");
        cut.header.len = 10_000;
        t.on_event(&cut, &mut done);
        t.on_event(&data(1, 7, NET_SEND, b"\r\n0\r\n\r\n"), &mut done);
        assert_eq!(dropped(&t, RequestDrop::Unframed), 1);
        scripted_stream(&mut t, 1, 1000, &mut done);
        let [r] = done.as_slice() else { panic!("{done:?}") };
        assert_eq!(r.ttft_s, Some(0.120));
        let q = &t.interval_end(2000 * MS)[&(42, 8000)];
        assert_eq!((q.waiting, q.running), (0, 0));
    }

    #[test]
    fn garbage_before_a_request_is_skipped_and_the_request_measured() {
        let mut t = tracker();
        let mut done = Vec::new();
        t.on_event(
            &data(1, 0, NET_RECV, b"\x16\x03\x01 not http at all\r\n\r\n"),
            &mut done,
        );
        t.on_event(&data(1, 1, NET_RECV, b"more garbage"), &mut done);
        scripted_stream(&mut t, 1, 10, &mut done);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(dropped(&t, RequestDrop::Unframed), 0, "nothing was in flight");
    }

    #[test]
    fn pipelining_beyond_the_limit_is_counted_not_buffered() {
        let mut t = tracker();
        let mut done = Vec::new();
        let burst = REQUEST.repeat(MAX_IN_FLIGHT + 1);
        t.on_event(&data(1, 0, NET_RECV, &burst), &mut done);
        assert_eq!(
            dropped(&t, RequestDrop::TooManyInFlight),
            MAX_IN_FLIGHT as u64 + 1
        );
        let q = &t.interval_end(MS)[&(42, 8000)];
        assert_eq!((q.waiting, q.arrived), (0, MAX_IN_FLIGHT as u64 + 1));
        scripted_stream(&mut t, 1, 10, &mut done);
        assert_eq!(done.len(), 1, "{done:?}");
    }

    #[test]
    fn lost_events_end_an_http2_connection_and_its_streams_are_counted() {
        let mut t = tracker();
        let mut done = Vec::new();
        let mut hpack = loona_hpack::Encoder::new();
        let block = hpack.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/inference.GRPCInferenceService/ModelStreamInfer"),
            (b"content-type", b"application/grpc"),
        ]);
        let mut bytes = PREFACE.to_vec();
        for stream in [1u32, 3] {
            bytes.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
            bytes.extend_from_slice(&[1, 0x4]);
            bytes.extend_from_slice(&stream.to_be_bytes());
            bytes.extend_from_slice(&block);
        }
        t.on_event(&data(1, 0, NET_RECV, &bytes), &mut done);
        assert_eq!(t.interval_end(MS)[&(42, 8000)].waiting, 2);
        let mut after = data(1, 50, NET_SEND, b"anything");
        after.header.flags = NET_FLAG_AFTER_LOSS;
        t.on_event(&after, &mut done);
        t.on_event(&data(1, 60, NET_RECV, &bytes[PREFACE.len()..]), &mut done);
        assert_eq!(dropped(&t, RequestDrop::EventsLost), 2);
        assert!(done.is_empty(), "{done:?}");
        let q = &t.interval_end(100 * MS)[&(42, 8000)];
        assert_eq!(
            (q.waiting, q.arrived, q.connections),
            (0, 0, 1),
            "not followed any more"
        );
    }

    #[test]
    fn a_full_connection_table_evicts_the_least_recently_active() {
        let mut t = tracker();
        let mut done = Vec::new();
        // The oldest connection has a request in flight: its close was lost, say.
        t.on_event(&data(0, 0, NET_RECV, REQUEST), &mut done);
        for cookie in 1..MAX_CONNECTIONS as u64 {
            t.on_event(
                &data(cookie, 1, NET_RECV, b"GET /health HTTP/1.1\r\n\r\n"),
                &mut done,
            );
        }
        assert_eq!(
            t.interval_end(2 * MS)[&(42, 8000)].connections,
            MAX_CONNECTIONS as u64
        );
        scripted_stream(&mut t, MAX_CONNECTIONS as u64, 10, &mut done);
        assert_eq!(done.len(), 1, "the newest connection is followed: {done:?}");
        assert_eq!(dropped(&t, RequestDrop::ConnectionEvicted), 1);
        let q = &t.interval_end(200 * MS)[&(42, 8000)];
        assert_eq!(q.connections, (MAX_CONNECTIONS - MAX_CONNECTIONS / 8 + 1) as u64);
        assert_eq!(q.waiting, 0);
    }
}
