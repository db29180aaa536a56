//! A real LLM server for the tests: llama.cpp's `llama-server` running
//! SmolLM2-135M on the CPU (built by `cargo xtask fixtures`).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread,
    time::Instant,
};

use serde_json::{Value, json};

use crate::{STEP, fixtures};

/// llama.cpp's `llama-server` with SmolLM2-135M on the CPU, killed when dropped.
pub struct LlamaServer {
    child: Child,
    pub port: u16,
}

impl LlamaServer {
    /// Returns once it listens, on a free port of 127.0.0.1, with `slots` request slots.
    pub fn start(slots: u32) -> Self {
        let path = |f: &str| {
            std::fs::read_to_string(fixtures().join(f))
                .unwrap_or_else(|e| panic!("{f}: {e}: run `cargo xtask fixtures`"))
        };
        let (server, model) = (path("llama-server.path"), path("smollm2.path"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(server)
            .args(["-m", &model, "--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-np",
                &slots.to_string(),
                "-c",
                &(1024 * slots).to_string(),
                "-t",
                "2",
                "--metrics",
                "--no-webui",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting llama-server");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        // Built first, so that a failed start still kills the process.
        let server = Self { child, port };
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STEP;
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("llama-server never said it is listening");
            if line.contains("listening on") {
                break;
            }
        }
        thread::spawn(move || rx.iter().for_each(drop));
        server
    }

    /// One HTTP/1.1 exchange; llama-server closes the connection after each response.
    pub fn exchange(&self, method: &str, path: &str, body: Option<&Value>) -> String {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(STEP)).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(conn, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    }

    /// `llamacpp:<name>` from the Prometheus text of `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.exchange("GET", "/metrics", None);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("llamacpp:{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no llamacpp:{name} in /metrics"))
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat completion request for [`LlamaServer`], greedy, with usage in streams.
pub fn chat(stream: bool, max_tokens: u32) -> Value {
    json!({"model": "smollm2", "stream": stream, "max_tokens": max_tokens, "temperature": 0,
           "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "Name three colours."}]})
}

/// The JSON objects of an SSE response's `data:` lines.
pub fn sse_events(response: &str) -> Vec<Value> {
    response
        .lines()
        .filter_map(|l| serde_json::from_str(l.strip_prefix("data: ")?).ok())
        .collect()
}
