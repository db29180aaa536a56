//! Start-up with large real GPU libraries mapped: how long until the agent has
//! attached and until its first report, and its peak memory. A process maps
//! NVIDIA's real `libnccl.so.2` (over 200 MB) and `libcudart.so.12` before the
//! agent starts, as a PyTorch process does; the agent must read their symbols
//! and attach before reporting. Targets: first report within 2 s (at a 1 s
//! interval), peak RSS at most 64 MiB.
//!
//! Then a second process maps a fresh copy of the library (a new file, so its
//! symbols must be read and probes attached again) while the agent runs: how
//! long until it is probed, and the longest gap between reports meanwhile
//! (reporting must not stall while a library is attached).

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

/// A child process killed when dropped.
pub(crate) struct Killed(pub(crate) Child);

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
    let log_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let what = if line.contains("attached;") {
                "attached"
            } else if line.contains(" nccl functions in ") {
                "probing"
            } else {
                continue;
            };
            let _ = log_tx.send((what, start.elapsed(), line));
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
            "report" => reports.push((at, line)),
            _ => {}
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
    let peak_kib = crate::export_outage::memory_kib(child.0.id(), "VmHWM")?;
    println!(
        "  libnccl.so.2 of {:.0} MB mapped before start: attached after {:.2} s; first report after {:.2} s; peak RSS {:.1} MiB (after 3 reports)",
        size as f64 / 1e6,
        attached.map_or(f64::NAN, |a| a.as_secs_f64()),
        reports[0].0.as_secs_f64(),
        peak_kib as f64 / 1024.0,
    );
    late_library(&nccl, &rx, start)
}

/// A process maps a fresh copy of libnccl while the agent runs.
fn late_library(
    nccl: &Path,
    rx: &mpsc::Receiver<(&'static str, Duration, String)>,
    start: Instant,
) -> Result<()> {
    // Same name (runtimes are recognised by it), another file.
    let dir = std::env::temp_dir().join("inferscope-bench-nccl");
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("libnccl.so.2");
    std::fs::copy(nccl, &copy).context("copying libnccl.so.2")?;
    let mut holder = Killed(
        Command::new("python3")
            .args(["-c", HOLDER])
            .arg(&copy)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut ready = String::new();
    BufReader::new(holder.0.stdout.take().context("holder stdout")?).read_line(&mut ready)?;
    let mapped = start.elapsed();
    let copy_name = copy.display().to_string();
    let (mut probed, mut last_report, mut longest_gap) = (None, None::<Duration>, Duration::ZERO);
    let mut reports_after = 0;
    while probed.is_none() || reports_after < 3 {
        if start.elapsed() > mapped + Duration::from_secs(30) {
            bail!(
                "the copy of libnccl mapped by pid {} was never probed",
                holder.0.id()
            );
        }
        let (what, at, line) = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the agent went quiet")?;
        match what {
            "probing" if line.contains(&copy_name) => probed = Some(at),
            "report" => {
                if let Some(last) = last_report {
                    longest_gap = longest_gap.max(at - last);
                }
                last_report = Some(at);
                reports_after += usize::from(at > mapped);
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&copy);
    println!(
        "  a new copy mapped while running: probed {:.3} s after it was mapped; longest gap between reports {:.2} s (interval 1 s)",
        probed.map_or(f64::NAN, |p| p.saturating_sub(mapped).as_secs_f64()),
        longest_gap.as_secs_f64(),
    );
    Ok(())
}
