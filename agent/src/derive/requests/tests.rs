//! The tracker fed scripted captures: pairing, timing, queue, drops.

use super::{conn::MAX_IN_FLIGHT, *};
use crate::{
    engines,
    model::{Protocol, TokenSource},
};
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
    // 0.3 request-seconds in all.
    assert!((q.waiting_time_s - 0.3).abs() < 1e-9, "{q:?}");
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

/// KServe serves the OpenAI APIs under `/openai`: measured as the bare paths are.
#[test]
fn a_generation_endpoint_under_a_route_prefix_is_measured() {
    let mut t = tracker();
    let mut done = Vec::new();
    let body = br#"{"model":"llama","stream":false}"#;
    let request = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    t.on_event(&data(1, 0, NET_RECV, request.as_bytes()), &mut done);
    let answer =
        br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":4,"completion_tokens":2}}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        answer.len(),
        std::str::from_utf8(answer).unwrap()
    );
    t.on_event(&data(1, 30, NET_SEND, response.as_bytes()), &mut done);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(engines::operation_name(&done[0].path), Some("chat"));
    assert_eq!(
        (done[0].model.as_deref(), done[0].output_tokens),
        (Some("llama"), Some(2))
    );
}

fn tracker() -> RequestTracker {
    RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0)
}

fn dropped(t: &RequestTracker, why: RequestDrop) -> u64 {
    t.dropped()[&why]
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
