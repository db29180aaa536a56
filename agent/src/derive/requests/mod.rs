//! Per-request LLM metrics from a server's socket traffic: a state machine per
//! connection that pairs each request with its response (keep-alive and
//! pipelining: responses come back in request order), times the first content
//! event (TTFT) and the gaps between later ones, counts tokens, and keeps each
//! server's queue (waiting: request read, no token yet; running: streaming).

//!
//! By concern: `conn.rs` (a connection, HTTP/1.1 pairing), `http2.rs`
//! (streams), `request.rs` (a request's bodies, timing and record),
//! `queue.rs` (waiting and running per server); here, the connection table
//! (eviction) and the tracker's interface.

mod conn;
mod http2;
mod queue;
mod request;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use conn::Conn;
use http2::H2Conn;
use inferscope_shared::{
    NET_CLOSED, NET_DATA, NET_FLAG_AFTER_LOSS, NET_FLAG_RESET_BY_PEER, NET_FLAG_TLS, NET_FLAG_UNREADABLE,
    NET_PEER_CLOSED, NET_RECV, NET_SEND,
};
use queue::Queue;
pub use queue::QueueReport;

use crate::{
    clock::Clock,
    decode::{
        NetEvent, Segment,
        http1::Http1Event,
        http2::{H2Parser, PREFACE},
    },
    model::{Outcome, RequestDrop, RequestRecord},
};

/// Connections followed at once (the kernel side keeps its state in each
/// socket, unbounded). A connection whose close was lost stays until the table
/// is full; then the least recently active eighth is evicted.
const MAX_CONNECTIONS: usize = 65_536;

/// A server: a process and one of its listening ports.
pub type ServerKey = (u32, u16);

/// Requests given up on so far, by reason.
type Dropped = BTreeMap<RequestDrop, u64>;

/// Finished requests go here, stamped with wall-clock time.
struct Finished<'a> {
    clock: &'a Clock,
    records: &'a mut Vec<RequestRecord>,
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
    pub fn dropped(&self) -> BTreeMap<RequestDrop, u64> {
        RequestDrop::ALL
            .iter()
            .map(|&why| (why, self.dropped.get(&why).copied().unwrap_or(0)))
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
                    waiting_time_s: q.waiting_area / 1e9,
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
