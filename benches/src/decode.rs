//! Throughput of the userspace pipeline a captured event goes through: HTTP/1.1
//! framing, chunked decoding, SSE splitting, JSON reading of each record, and
//! the per-request state machine, on two stream shapes: llama.cpp's (one
//! ~270-byte chunk per token, a connection per request), and the one `bench
//! server` measures (16 small chunks per request on keep-alive connections),
//! whose per-request figure is the agent's part of that benchmark's loss.

use std::time::Instant;

use anyhow::Result;
use inferscope::{clock::Clock, decode::NetEvent, derive::requests::RequestTracker};
use inferscope_shared::{NET_CLOSED, NET_DATA, NET_RECV, NET_SEND, NetEventHeader};

use crate::server_load;

/// One request's stream, repeated.
struct Shape {
    what: &'static str,
    request: Vec<u8>,
    token: Vec<u8>,
    tokens: u64,
    requests: u64,
    /// Each request on a connection of its own, closed after it; else two keep-alive connections.
    connection_per_request: bool,
}

pub fn run() -> Result<()> {
    let llama = r#"{"model":"smollm2","messages":[{"role":"user","content":"Write a haiku about kernels."}],"stream":true}"#;
    let shapes = [
        Shape {
            what: "llama.cpp-shaped tokens, a connection per request",
            request: format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{llama}",
                llama.len()
            )
            .into_bytes(),
            token: server_load::chunk(
                r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","choices":[{"index":0,"delta":{"content":" kernel"},"finish_reason":null}],"system_fingerprint":"b1"}

"#,
            )
            .into_bytes(),
            tokens: 64,
            requests: 20_000,
            connection_per_request: true,
        },
        Shape {
            what: "bench server's stream, keep-alive",
            request: server_load::chat_request("bench"),
            token: server_load::token_chunk().into_bytes(),
            tokens: server_load::TOKENS as u64,
            requests: 100_000,
            connection_per_request: false,
        },
    ];
    println!("decode pipeline (HTTP/1.1 + chunked + SSE + JSON + request state), one core:");
    for shape in shapes {
        let events = stream_events(&shape);
        let mut tracker = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        let start = Instant::now();
        for (header, data) in &events {
            tracker.on_event(
                &NetEvent {
                    header: *header,
                    data,
                },
                &mut done,
            );
        }
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            done.len() as u64 == shape.requests,
            "{}: {} of {} requests finished",
            shape.what,
            done.len(),
            shape.requests
        );
        anyhow::ensure!(
            done.iter().all(|r| r.output_tokens == Some(shape.tokens)),
            "{}: token counts are off",
            shape.what
        );
        println!(
            "  {}: {:.2} M events/s (target >= 1 M), {:.2} us per request of {} tokens",
            shape.what,
            events.len() as f64 / secs / 1e6,
            secs * 1e6 / shape.requests as f64,
            shape.tokens
        );
    }
    Ok(())
}

fn event(cookie: u64, ts: u64, kind: u8, direction: u8, data: &[u8]) -> (NetEventHeader, Vec<u8>) {
    (
        NetEventHeader {
            ktime_ns: ts,
            sock_cookie: cookie,
            pid: 1,
            len: data.len() as u32,
            captured: data.len() as u32,
            local_port: 8080,
            kind,
            direction,
            ..NetEventHeader::default()
        },
        data.to_vec(),
    )
}

/// Each event's header and captured bytes.
fn stream_events(shape: &Shape) -> Vec<(NetEventHeader, Vec<u8>)> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let done = server_load::done_chunks();
    let mut events = Vec::new();
    let mut ts = 0;
    for request in 0..shape.requests {
        let cookie = if shape.connection_per_request {
            request
        } else {
            request % 2
        };
        let mut push = |kind, dir, data: &[u8]| {
            ts += 1000;
            events.push(event(cookie, ts, kind, dir, data));
        };
        push(NET_DATA, NET_RECV, &shape.request);
        push(NET_DATA, NET_SEND, head.as_bytes());
        for _ in 0..shape.tokens {
            push(NET_DATA, NET_SEND, &shape.token);
        }
        push(NET_DATA, NET_SEND, done.as_bytes());
        if shape.connection_per_request {
            push(NET_CLOSED, 0, b"");
        }
    }
    events
}
