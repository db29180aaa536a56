//! A server's queue: generation requests waiting (read, no token yet) and
//! running (streaming), integrated over time for the interval's means.

use super::{Dropped, request::InFlight};
use crate::model::{Protocol, RequestDrop};

/// A server's queue, integrated over time for interval means.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) waiting: u64,
    pub(super) running: u64,
    pub(super) since_ns: u64,
    pub(super) waiting_area: f64,
    pub(super) running_area: f64,
    pub(super) started: u64,
    /// The protocol of the server's latest traffic: its connections' framing,
    /// refined by its latest finished request (gRPC is HTTP/2 carrying gRPC).
    pub(super) protocol: Option<Protocol>,
}

impl Queue {
    pub(super) fn advance(&mut self, now_ns: u64) {
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
    /// Request-seconds spent waiting over the interval (the integral of `waiting`).
    pub waiting_time_s: f64,
    /// Generation requests that arrived during the interval.
    pub arrived: u64,
    /// Connections open at the interval's end.
    pub connections: u64,
    pub protocol: Protocol,
}

/// Counts a generation request's arrival in its server's queue.
pub(super) fn arrived(r: InFlight, queue: &mut Queue) -> InFlight {
    if r.llm {
        queue.advance(r.start_ns);
        queue.waiting += 1;
        queue.started += 1;
    }
    r
}

/// Gives up on a request: it leaves its server's queue and is counted, not recorded.
pub(super) fn abandon(r: InFlight, at_ns: u64, why: RequestDrop, queue: &mut Queue, dropped: &mut Dropped) {
    if r.llm {
        leave_queue(&r, at_ns, queue);
        *dropped.entry(why).or_default() += 1;
    }
}

pub(super) fn leave_queue(r: &InFlight, at_ns: u64, queue: &mut Queue) {
    queue.advance(at_ns);
    if r.first_token_ns.is_some() {
        queue.running = queue.running.saturating_sub(1);
    } else {
        queue.waiting = queue.waiting.saturating_sub(1);
    }
}
