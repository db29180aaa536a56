//! Start-up with large real GPU libraries mapped: how long until the agent has
//! attached and until its first report, and its peak memory. A process maps
//! NVIDIA's real `libnccl.so.2` (over 200 MB) and `libcudart.so.12` before the
//! agent starts, as a PyTorch process does; the agent must read their symbols
//! and attach before reporting. Targets: first report within 2 s (at a 1 s
//! interval), peak RSS at most 64 MiB.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Maps both libraries, says so, and waits for stdin to close.
const HOLDER: &str = "import ctypes, sys\n\
for lib in sys.argv[1:]: ctypes.CDLL(lib)\n\
print('ready', flush=True)\n\
sys.stdin.read()\n";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(fixtures: &Path, agent: &Path) -> Result<()> {
    println!(
        "Start-up with real libnccl.so.2 and libcudart.so.12 mapped (target: first report <= 2 s, peak RSS <= 64 MiB)"
    );
    let nccl = fixtures.join("nvidia/nccl/lib/libnccl.so.2");
    let cudart = fixtures.join("nvidia/cuda_runtime/lib/libcudart.so.12");
    let size = std::fs::metadata(&nccl)
        .context("libnccl.so.2 (run through `cargo xtask bench`)")?
        .len();
    let mut holder = Killed(
        Command::new("python3")
            .args(["-c", HOLDER])
            .arg(&nccl)
            .arg(&cudart)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut ready = String::new();
    BufReader::new(holder.0.stdout.take().context("holder stdout")?).read_line(&mut ready)?;
    if ready.trim() != "ready" {
        bail!("the process mapping the libraries did not start: {ready:?}");
    }
    let start = Instant::now();
    let mut child = Killed(
        Command::new(agent)
            .args(["run", "--output", "json", "--interval", "1s", "--log", "info"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?,
    );
    let (tx, rx) = mpsc::channel();
    let stderr = child.0.stderr.take().context("agent stderr")?;
    let attached_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached;") {
                let _ = attached_tx.send(("attached", start.elapsed(), line));
            }
        }
    });
    let stdout = child.0.stdout.take().context("agent stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(("report", start.elapsed(), line));
        }
    });
    let (mut attached, mut reports) = (None, Vec::new());
    while reports.len() < 3 {
        let (what, at, line) = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the agent went quiet")?;
        match what {
            "attached" => attached = Some(at),
            _ => reports.push((at, line)),
        }
    }
    let pid = holder.0.id();
    let first = &reports[0].1;
    if !reports
        .iter()
        .any(|(_, r)| r.contains(&format!("\"pid\":{pid},")) && r.contains("\"nccl\""))
    {
        bail!("no report lists pid {pid} with nccl: {first}");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))?;
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/PID/status")?;
    println!(
        "  libnccl.so.2: {:.0} MB; attached after {:.2} s; first report after {:.2} s; peak RSS {:.1} MiB (after 3 reports)",
        size as f64 / 1e6,
        attached.map_or(f64::NAN, |a| a.as_secs_f64()),
        reports[0].0.as_secs_f64(),
        peak_kib as f64 / 1024.0,
    );
    Ok(())
}
