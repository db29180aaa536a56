//! Throughput of the userspace pipeline a captured event goes through: HTTP/1.1
//! framing, chunked decoding, SSE splitting, JSON reading of each record, and
//! the per-request state machine. Events come from a realistic stream shape
//! (one ~270-byte chunk per token, as llama.cpp writes).

use std::time::Instant;

use anyhow::Result;
use inferscope::{clock::Clock, decode::NetEvent, derive::requests::RequestTracker};
use inferscope_shared::{NET_CLOSED, NET_DATA, NET_RECV, NET_SEND, NetEventHeader};

const REQUESTS: u64 = 20_000;
const TOKENS: u64 = 64;

pub fn run() -> Result<()> {
    let events = stream_events();
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
        done.len() as u64 == REQUESTS,
        "{} of {REQUESTS} requests finished",
        done.len()
    );
    anyhow::ensure!(
        done.iter().all(|r| r.output_tokens == Some(TOKENS)),
        "token counts are off"
    );
    println!("decode pipeline (HTTP/1.1 + chunked + SSE + JSON + request state), one core:");
    println!(
        "  {} events, {REQUESTS} requests in {secs:.2} s = {:.2} M events/s (target >= 1 M)",
        events.len(),
        events.len() as f64 / secs / 1e6
    );
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

fn chunk(payload: &str) -> Vec<u8> {
    format!("{:x}\r\n{payload}\r\n", payload.len()).into_bytes()
}

/// Each event's header and captured bytes.
fn stream_events() -> Vec<(NetEventHeader, Vec<u8>)> {
    let body = r#"{"model":"smollm2","messages":[{"role":"user","content":"Write a haiku about kernels."}],"stream":true}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let token = chunk(
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","choices":[{"index":0,"delta":{"content":" kernel"},"finish_reason":null}],"system_fingerprint":"b1"}

"#,
    );
    let mut done = chunk("data: [DONE]\n\n");
    done.extend_from_slice(b"0\r\n\r\n");
    let mut events = Vec::new();
    let mut ts = 0;
    for cookie in 0..REQUESTS {
        let mut push = |kind, dir, data: &[u8]| {
            ts += 1000;
            events.push(event(cookie, ts, kind, dir, data));
        };
        push(NET_DATA, NET_RECV, request.as_bytes());
        push(NET_DATA, NET_SEND, head.as_bytes());
        for _ in 0..TOKENS {
            push(NET_DATA, NET_SEND, &token);
        }
        push(NET_DATA, NET_SEND, &done);
        push(NET_CLOSED, 0, b"");
    }
    events
}
