//! The ground-truth SSE server of `tests/servers/sse_server.py`, in plain Rust
//! with blocking sockets: one thread per connection, one `write()` per chunk,
//! CLOCK_MONOTONIC read just before and just after each. Those two timestamps
//! bound when the kernel saw the bytes however slow the machine is, which is
//! what the kernel matrix needs (guests under emulation, no Python there).
//!
//! usage: sse_truth_server [--peek] [--gpu-library PATH]   (prints "listening PORT", then per request one JSON
//! line `{"path", "body_sends": [[before, after], ...], "last_send": [before, after]}`)
//! request: POST /v1/chat/completions {"model", "tokens": N, "ttft_ms", "gap_ms", "usage": bool}
//! `--peek`: look at each request with `recv(MSG_PEEK)` before reading it, as
//! some servers do to sniff the protocol; the bytes are then received twice.
//! `--gpu-library PATH`: load a GPU runtime first, as an inference server that
//! runs its model in-process does, so that one process is both.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use inferscope_tests::monotonic_ns;
use serde_json::{Value, json};

/// Writes with one syscall and returns `[before, after]`.
fn timed_write(conn: &mut TcpStream, bytes: &[u8]) -> io::Result<[u64; 2]> {
    let before = monotonic_ns();
    let n = conn.write(bytes)?;
    let after = monotonic_ns();
    if n != bytes.len() {
        return Err(io::Error::other("short write: the test's chunks are small"));
    }
    Ok([before, after])
}

/// One HTTP/1.1 request: (path, JSON body); `None` when the client closed.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<(String, Value)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(io::Error::other)?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((path, serde_json::from_slice(&body)?)))
}

fn chunk(payload: &str) -> Vec<u8> {
    format!("{:x}\r\n{payload}\r\n", payload.len()).into_bytes()
}

fn event(payload: &Value) -> String {
    format!("data: {payload}\n\n")
}

fn delta(model: &str, delta: Value) -> String {
    event(
        &json!({"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": delta}]}),
    )
}

/// Streams one completion on the request's schedule; returns the truth record.
fn stream(conn: &mut TcpStream, path: &str, req: &Value) -> io::Result<Value> {
    let model = req["model"].as_str().unwrap_or("");
    let tokens = req["tokens"].as_u64().unwrap_or(1);
    let ms = |key| Duration::from_millis(req[key].as_u64().unwrap_or(0));
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let mut sends = Vec::new();
    // A role-only delta goes out at once, before any token exists.
    sends.push(timed_write(
        conn,
        &chunk(&delta(model, json!({"role": "assistant", "content": ""}))),
    )?);
    thread::sleep(ms("ttft_ms"));
    for i in 0..tokens {
        if i > 0 {
            thread::sleep(ms("gap_ms"));
        }
        sends.push(timed_write(
            conn,
            &chunk(&delta(model, json!({"content": format!("tok{i} ")}))),
        )?);
    }
    if req["usage"].as_bool() == Some(true) {
        let usage = json!({"model": model, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": tokens}});
        sends.push(timed_write(conn, &chunk(&event(&usage)))?);
    }
    sends.push(timed_write(conn, &chunk("data: [DONE]\n\n"))?);
    let last = timed_write(conn, b"0\r\n\r\n")?;
    Ok(json!({"path": path, "body_sends": sends, "last_send": last}))
}

fn serve(conn: TcpStream, peek: bool) -> io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        if peek && reader.buffer().is_empty() {
            reader.get_ref().peek(&mut [0; 512])?;
        }
        let Some((path, req)) = read_request(&mut reader)? else {
            break;
        };
        let truth = stream(&mut writer, &path, &req)?;
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{truth}")?;
        stdout.flush()?;
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let peek = args.iter().any(|a| a == "--peek");
    if let Some(i) = args.iter().position(|a| a == "--gpu-library") {
        let path = std::ffi::CString::new(args.get(i + 1).expect("--gpu-library PATH").as_str())?;
        // SAFETY: a NUL-terminated path; the library stays loaded for the process's life.
        if unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) }.is_null() {
            return Err(io::Error::other(format!("cannot load {path:?}")));
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?.port());
    for conn in listener.incoming() {
        let conn = conn?;
        thread::spawn(move || {
            if let Err(e) = serve(conn, peek) {
                eprintln!("sse_truth_server: {e}");
            }
        });
    }
    Ok(())
}
