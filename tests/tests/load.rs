//! Connection churn and overload against the real agent and a real server
//! (`src/bin/sse_truth_server.rs`): every request is either reported or
//! counted as dropped, state for closed connections is released, a full ring
//! buffer is counted per reason and per request without slowing the server,
//! and capture recovers when the agent reads again.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    sync::{Arc, Barrier, Mutex},
    thread,
};

use inferscope::model::{RequestStats, Snapshot};
use inferscope_tests::{Agent, STEP, TestServer, chat_request, monotonic_ns};

/// Both tests load the machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn rust_server() -> TestServer {
    TestServer::start_program(Path::new(env!("CARGO_BIN_EXE_sse_truth_server")))
}

/// Reads one chunked response in large reads: after its last chunk the server
/// sends nothing until the next request, so nothing of another is consumed.
fn read_response(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(STEP)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !got.ends_with(b"\r\n0\r\n\r\n") {
        let n = conn.read(&mut buf).expect("reading a response");
        assert!(n > 0, "the server closed the connection mid-response");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// One streamed completion on a connection of its own, closed by the client after the response.
fn one_request(port: u16, model: &str, tokens: u32, ttft_ms: u32, gap_ms: u32) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the server");
    conn.write_all(&chat_request(model, tokens, ttft_ms, gap_ms, false))
        .unwrap();
    read_response(&mut conn);
}

/// The server's per-model totals in a snapshot.
fn models(snapshot: &Snapshot, port: u16) -> BTreeMap<String, RequestStats> {
    snapshot
        .servers
        .iter()
        .filter(|s| s.port == port)
        .flat_map(|s| &s.models)
        .map(|m| (m.model.clone(), m.requests.total.clone()))
        .collect()
}

/// Reads snapshots until `done` holds for one (at most `limit` of them), and returns it.
fn snapshot_until(agent: &mut Agent, limit: usize, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let mut last = None;
    for _ in 0..limit {
        let s = agent.next_snapshot(what);
        if done(&s) {
            return s;
        }
        last = Some(s);
    }
    panic!("{what}: not reached in {limit} snapshots; the last: {last:#?}");
}

#[test]
fn a_thousand_short_connections_and_200_concurrent_streams_are_each_reported_and_released() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = rust_server();
    let port = server.port;
    let mut agent = Agent::start(&["--port", &port.to_string()]);
    // A keep-alive connection that stays open throughout, idle after one request.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(&chat_request("short", 2, 0, 0, false)).unwrap();
    read_response(&mut idle);

    // 1 000 connections, four clients at a time, one request each.
    let clients: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || (0..250).for_each(|_| one_request(port, "short", 2, 0, 0))))
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    // 200 streams open at once: every client connects and sends before any first token.
    let ready = Arc::new(Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let ready = ready.clone();
            thread::spawn(move || {
                let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
                conn.write_all(&chat_request("concurrent", 5, 400, 20, false))
                    .unwrap();
                ready.wait();
                read_response(&mut conn);
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());

    let last = snapshot_until(&mut agent, 600, "every request reported", |s| {
        let m = models(s, port);
        let count = |model: &str| m.get(model).map_or(0, |r| r.requests);
        count("short") == 1001 && count("concurrent") == 200
    });
    let m = models(&last, port);
    assert_eq!(
        (m["short"].output_tokens, m["short"].errors),
        (2002, 0),
        "every short request's tokens"
    );
    assert_eq!(
        (
            m["concurrent"].output_tokens,
            m["concurrent"].errors,
            m["concurrent"].ttft_s.count
        ),
        (1000, 0, 200),
        "every concurrent stream's tokens and first token"
    );
    assert!(
        last.dropped_requests.total.is_empty(),
        "{:?}",
        last.dropped_requests
    );
    assert!(last.drops.total.is_empty(), "{:?}", last.drops);
    // Every connection the clients closed is released; the idle one is still known.
    let open = |n: u64| move |s: &Snapshot| s.servers.iter().any(|s| s.port == port && s.connections == n);
    snapshot_until(&mut agent, 50, "only the idle connection left open", open(1));
    drop(idle);
    snapshot_until(&mut agent, 50, "no connection left open", open(0));
}

#[test]
fn a_full_ring_buffer_is_counted_without_slowing_the_server_and_capture_recovers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = rust_server();
    let port = server.port;
    let mut agent = Agent::start(&["--port", &port.to_string()]);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(&chat_request("before", 3, 0, 0, false)).unwrap();
    read_response(&mut conn);
    snapshot_until(&mut agent, 300, "the first request reported", |s| {
        models(s, port).get("before").is_some_and(|r| r.requests == 1)
    });

    // The agent stops reading (as a starved agent would). 100 000 token sends
    // are far more than the 8 MiB ring holds: the server must not wait for it.
    let agent_pid = agent.pid() as i32;
    // SAFETY: signals to our own child process.
    // SAFETY: a signal to the agent this test started, still running.
    unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
    conn.write_all(&chat_request("flood", 100_000, 0, 0, false))
        .unwrap();
    let flood = read_response(&mut conn);
    // SAFETY: as above.
    unsafe { libc::kill(agent_pid, libc::SIGCONT) };
    assert!(String::from_utf8_lossy(&flood[flood.len() - 200..]).contains("[DONE]"));

    // The same keep-alive connection is measured again from its next request.
    let sent_at = monotonic_ns();
    conn.write_all(&chat_request("after", 4, 50, 10, false)).unwrap();
    read_response(&mut conn);
    // The server's records: "before", "flood", then this one.
    let (_before, _flood, after) = (server.next_truth(), server.next_truth(), server.next_truth());
    let send = |i: usize| {
        let s = &after["body_sends"][i];
        (s[0].as_u64().unwrap(), s[1].as_u64().unwrap())
    };
    let (role, first) = (send(0), send(1));
    let last = snapshot_until(&mut agent, 300, "the request after the flood reported", |s| {
        models(s, port).get("after").is_some_and(|r| r.requests == 1)
    });
    let m = models(&last, port);
    assert_eq!(m["after"].output_tokens, 4, "{:?}", m["after"]);
    // Read after the client sent it and before the role-only delta; the first
    // token left between the timestamps around its send.
    let ttft = m["after"].ttft_s.sum;
    let (low, high) = ((first.0 - role.0) as f64 / 1e9, (first.1 - sent_at) as f64 / 1e9);
    assert!(
        m["after"].ttft_s.count == 1 && low <= ttft && ttft <= high,
        "ttft {ttft} outside [{low}, {high}]"
    );
    assert!(
        !m.contains_key("flood"),
        "a request with lost events was reported: {:?}",
        m.get("flood")
    );
    assert_eq!(
        last.dropped_requests.total.get("events_lost"),
        Some(&1),
        "exactly the flooded request is dropped: {:?}",
        last.dropped_requests
    );
    let lost_events = last.drops.total.get("net_event_ring_full").copied().unwrap_or(0);
    assert!(
        lost_events > 10_000,
        "the ring buffer overflowed, and was counted: {:?}",
        last.drops
    );
}
