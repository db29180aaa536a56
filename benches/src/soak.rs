//! Soak (`cargo xtask bench soak [MINUTES]`, 30 by default; only when named):
//! the release agent under mixed load for a long time, printing its CPU share
//! and RSS every minute. The load: the Starlette ground-truth server streaming
//! to 100 concurrent clients (32 tokens 20 ms apart each, back to back), a
//! process calling the real `libcudart.so.12` about 2 000 times a second, and a
//! short-lived process calling it every second. Targets: at most 1 % of a core
//! and 64 MiB, both flat (second half against the first).

use std::{
    io::{BufRead as _, BufReader},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    export_outage::rss_kib,
    server_load::{chat_request_paced, exchange},
    startup::Killed,
};

pub(crate) const STREAMS: usize = 100;
const SAMPLE: Duration = Duration::from_secs(60);
const WARM_UP: Duration = Duration::from_secs(30);

/// Launch attempts with the real runtime (no GPU here: each returns an error,
/// and each is still a probed call), in bursts of 100 every 50 ms.
pub(crate) const GPU_CALLER: &str = r#"
import ctypes, sys, time
rt = ctypes.CDLL(sys.argv[1])
launch = rt.cudaLaunchKernel
while True:
    for _ in range(100):
        launch(None, ctypes.c_uint64(1), ctypes.c_uint64(1), None, ctypes.c_size_t(0), None)
    time.sleep(0.05)
"#;

pub fn run(fixtures: &Path, agent: &Path, minutes: u64) -> Result<()> {
    println!(
        "soak, {minutes} min: {STREAMS} concurrent streams, GPU calls and process churn (targets: <= 1 % of a core, <= 64 MiB, flat)"
    );
    let cudart = fixtures.join("nvidia/cuda_runtime/lib/libcudart.so.12");
    // The interpreter itself: a `python3` found on PATH may be a version
    // manager's shim, which runs a score of shell processes per start.
    let python = fixtures.join("venv/bin/python");
    let (_server, port) = stream_server(&python)?;
    let _gpu = Killed(
        Command::new(&python)
            .args(["-c", GPU_CALLER])
            .arg(&cudart)
            .spawn()?,
    );
    let mut child = Killed(
        Command::new(agent)
            .args([
                "run",
                "--output",
                "json",
                "--interval",
                "1s",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?,
    );
    let stdout = child.0.stdout.take().context("agent stdout")?;
    thread::spawn(move || for _ in BufReader::new(stdout).lines().map_while(Result::ok) {});

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (stop, requests) = (stop.clone(), requests.clone());
            thread::spawn(move || stream_client(port, i, &stop, &requests))
        })
        .collect();
    let churn = {
        let stop = stop.clone();
        thread::spawn(move || churn(&python, &cudart, &stop))
    };

    thread::sleep(WARM_UP);
    let pid = child.0.id();
    let ticks = clock_ticks_per_second();
    let start = Instant::now();
    let mut cpu_before = cpu_ticks(pid)?;
    let mut samples = Vec::new();
    println!("  minute | agent CPU (% of a core) | RSS MiB | requests served");
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        let t0 = Instant::now();
        thread::sleep(SAMPLE);
        let cpu = cpu_ticks(pid)?;
        let share = 100.0 * (cpu - cpu_before) as f64 / ticks / t0.elapsed().as_secs_f64();
        cpu_before = cpu;
        let rss = rss_kib(pid)? as f64 / 1024.0;
        samples.push((share, rss));
        println!(
            "  {:>6} | {share:>23.2} | {rss:>7.1} | {}",
            samples.len(),
            requests.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    streams.into_iter().for_each(|s| drop(s.join()));
    let _ = churn.join();

    let half = samples.len() / 2;
    let mean =
        |s: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| s.iter().map(f).sum::<f64>() / s.len().max(1) as f64;
    let (first, second) = samples.split_at(half);
    println!(
        "  CPU: {:.2} % of a core on average (first half {:.2}, second {:.2}); RSS: {:.1} MiB at most (first half {:.1}, second {:.1} on average)",
        mean(&samples, |s| s.0),
        mean(first, |s| s.0),
        mean(second, |s| s.0),
        samples.iter().map(|s| s.1).fold(0.0, f64::max),
        mean(first, |s| s.1),
        mean(second, |s| s.1),
    );
    println!(
        "  {} requests served in {:.0} s",
        requests.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64() + WARM_UP.as_secs_f64()
    );
    Ok(())
}

/// The Starlette ground-truth server (tests/servers/sse_server.py), quiet, and its port.
pub(crate) fn stream_server(python: &Path) -> Result<(Killed, u16)> {
    let mut server = Killed(
        Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/sse_server.py"))
            .arg("--quiet")
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().context("server stdout")?).read_line(&mut first)?;
    let port: u16 = first
        .trim()
        .strip_prefix("listening ")
        .context("listening PORT")?
        .parse()?;
    Ok((server, port))
}

/// One client streaming completions back to back on a keep-alive connection.
pub(crate) fn stream_client(port: u16, i: usize, stop: &AtomicBool, requests: &AtomicU64) -> Result<()> {
    let conn = TcpStream::connect(("127.0.0.1", port))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let request = chat_request_paced(&format!("soak-{}", i % 4), 32, 100, 20);
    while !stop.load(Ordering::Relaxed) {
        exchange(&mut writer, &mut reader, &request)?;
        requests.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A short-lived process that calls the runtime once, every second.
fn churn(python: &Path, cudart: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let _ = Command::new(python)
            .args([
                "-c",
                "import ctypes, sys; ctypes.CDLL(sys.argv[1]).cudaDeviceSynchronize()",
            ])
            .arg(cudart)
            .status();
        thread::sleep(Duration::from_secs(1));
    }
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state (3rd).
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> { Ok(fields.get(n - 3).context("short /proc/PID/stat")?.parse()?) };
    Ok(field(14)? + field(15)?)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}
