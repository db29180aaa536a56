//! `inferscope top` in a real terminal: tmux runs it, `send-keys` types, and
//! `capture-pane` is what a person would see. A server on a "GPU" (the stub
//! runtime, NVML's stand-in) serves requests with a known first-token time.

use std::{
    io::Write as _,
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use inferscope_tests::{
    STEP, TestServer, agent_binary, chat_request, read_chunked_response, require_root, stub_library,
};

/// A tmux session, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, width: u16, height: u16, env: &[(&str, &Path)], command: &str) -> Self {
        let mut tmux = Command::new("tmux");
        tmux.args([
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        for (k, v) in env {
            tmux.args(["-e", &format!("{k}={}", v.display())]);
        }
        let status = tmux.arg(command).status().expect("running tmux");
        assert!(status.success(), "tmux new-session failed");
        Self(name.to_string())
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.0])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The screen once `done` holds for it.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

#[test]
fn top_shows_a_server_its_requests_and_its_gpu_and_drills_into_it() {
    require_root();
    let lib = stub_library("libcudart.so.12");
    let server = TestServer::start_program_with(
        Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
        &["--gpu-library", lib.to_str().unwrap()],
    );
    let pid = server.pid();
    let script = std::env::temp_dir().join(format!("nvml-top-{pid}"));
    std::fs::write(
        &script,
        format!(
            "device GPU-77777777-2222-3333-4444-555555555555 NVIDIA_H100 00000000:18:00.0 \
             63 20 {used} {total} 60 300000 700000 1000000 1980 2619 0 0 0 0 0\n\
             process 0 {pid} {used} 63 20\n",
            used = 6u64 << 30,
            total = 80u64 << 30,
        ),
    )
    .unwrap();
    let nvml = stub_library("libnvidia-ml.so.1");
    let command = format!(
        "{} top --interval 200ms --pid {pid} --nvml-library {}; echo top exited $?; sleep 600",
        agent_binary().display(),
        nvml.display()
    );
    let tmux = Tmux::start(
        &format!("inferscope-top-{pid}"),
        160,
        40,
        &[("FAKE_NVML_SCRIPT", &script)],
        &command,
    );
    let screen = tmux.wait_for("the server listed with its GPU", |s| {
        line_with(s, &pid.to_string()).is_some() && s.contains("GPU0 NVIDIA_H100")
    });
    assert!(
        line_with(&screen, "GPU0 NVIDIA_H100")
            .unwrap()
            .contains("util 63%  mem 6.0/80.0 GiB"),
        "{screen}"
    );

    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    for _ in 0..3 {
        conn.write_all(&chat_request("top-model", 4, 300, 20, false))
            .unwrap();
        read_chunked_response(&mut conn);
    }
    // Three requests with 300 ms first tokens: TTFT p50 and p95 in the 300s of ms.
    let screen = tmux.wait_for("the requests' figures in the server's row", |s| {
        line_with(s, &format!("{pid} "))
            .is_some_and(|row| row.matches("ms").count() >= 4 && row.contains(" 3"))
    });
    let row = line_with(&screen, &format!("{pid} ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    // PID COMM REQ/s TTFT50 TTFT95 ITL50 ITL95 WAIT RUN TOK/s LAUNCH/s SYNC% GPU-MEM SM% J/TOK
    assert_eq!(cells[1], "sse_truth_serve", "{row}");
    for ttft in [cells[3], cells[4]] {
        let ms: f64 = ttft
            .trim_end_matches("ms")
            .parse()
            .unwrap_or_else(|_| panic!("{row}"));
        assert!(
            (300.0..400.0).contains(&ms),
            "TTFT {ttft} for 300 ms first tokens: {row}"
        );
    }
    assert_eq!(cells[12], "6.0GiB", "NVML's memory for the process: {row}");
    assert_eq!(cells[13], "63", "NVML's SM share for the process: {row}");

    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the server's details with its three requests", |s| {
        s.lines().filter(|l| l.contains("top-model  TTFT")).count() == 3
    });
    assert!(
        line_with(&screen, &format!("Server port {}", server.port)).is_some(),
        "{screen}"
    );
    assert!(line_with(&screen, "Slowest requests").is_some(), "{screen}");
    assert!(
        line_with(&screen, "on GPU0").is_some_and(|l| l.contains("memory 6.0GiB, SM 63%")),
        "{screen}"
    );

    tmux.keys(&["Escape", "q"]);
    tmux.wait_for("top to exit cleanly", |s| s.contains("top exited 0"));
    std::fs::remove_file(script).unwrap();
}
