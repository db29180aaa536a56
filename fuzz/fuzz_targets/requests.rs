//! The request state machine over every decoder: captured sends, receives and
//! closes of a few connections, interleaved, with any flags, truncation and
//! framing (HTTP/1.1, HTTP/2, TLS switches), plus interval ends and server exits.
#![no_main]

use arbitrary::Arbitrary;
use inferscope::{clock::Clock, decode::NetEvent, derive::requests::RequestTracker};
use inferscope_shared::{NET_CLOSED, NET_DATA, NET_PEER_CLOSED, NetEventHeader};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step<'a> {
    Data {
        conn: u8,
        send: bool,
        flags: u8,
        missing: u16,
        data: &'a [u8],
        after_ns: u16,
    },
    PeerClosed {
        conn: u8,
    },
    Closed {
        conn: u8,
        flags: u8,
    },
    IntervalEnd,
    ServerExited {
        conn: u8,
    },
}

fuzz_target!(|steps: Vec<Step<'_>>| {
    let mut tracker = RequestTracker::new(Clock::system(), 0);
    let mut done = Vec::new();
    let mut now_ns = 0u64;
    for step in steps {
        let (kind, conn, direction, flags, data, len) = match step {
            Step::Data {
                conn,
                send,
                flags,
                missing,
                data,
                after_ns,
            } => {
                now_ns += u64::from(after_ns);
                let len = (data.len() + usize::from(missing)) as u32;
                (NET_DATA, conn, u8::from(send), flags, data, len)
            }
            Step::PeerClosed { conn } => (NET_PEER_CLOSED, conn, 0, 0, &[][..], 0),
            Step::Closed { conn, flags } => (NET_CLOSED, conn, 0, flags, &[][..], 0),
            Step::IntervalEnd => {
                tracker.interval_end(now_ns);
                continue;
            }
            Step::ServerExited { conn } => {
                tracker.forget_pid(u32::from(conn % 2), now_ns, &mut done);
                continue;
            }
        };
        let header = NetEventHeader {
            ktime_ns: now_ns,
            sock_cookie: u64::from(conn % 4),
            pid: u32::from(conn % 2),
            len,
            captured: data.len() as u32,
            local_port: 8000,
            remote_port: u16::from(conn),
            kind,
            direction,
            flags,
            pad: [0; 5],
        };
        tracker.on_event(&NetEvent { header, data }, &mut done);
    }
});
