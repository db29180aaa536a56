//! Export while the collector is away (`cargo xtask bench outage [MINUTES]`, 10 by
//! default; not part of the default set). The "collector" accepts connections
//! and never answers, the worst case: every export waits out its timeout. The
//! agent meanwhile watches a streaming server taking requests for 50 models and
//! a churn of short-lived processes mapping the real `libcudart.so.12`, so its
//! export state has many series. Prints its RSS over time (target: growth under
//! 16 MiB), whether snapshots kept coming every interval, and the batches it
//! counted as dropped. With `OTEL_SDK_DISABLED=true` in the environment the
//! agent exports nothing: the same load as a baseline.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
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
    server_load::{chat_request, exchange},
    startup::Killed,
};

const MODELS: usize = 50;
const SAMPLE: Duration = Duration::from_secs(30);

pub fn run(fixtures: &Path, agent: &Path, minutes: u64) -> Result<()> {
    println!(
        "OTLP collector unresponsive for {minutes} min, under request load ({MODELS} models) and process churn (target: RSS growth < 16 MiB)"
    );
    let server = TcpListener::bind("127.0.0.1:0")?;
    let port = server.local_addr()?.port();
    thread::spawn(move || crate::server_load::serve(server));
    let collector = TcpListener::bind("127.0.0.1:0")?;
    let collector_port = collector.local_addr()?.port();
    thread::spawn(move || blackhole(collector));
    let scrape_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();

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
            .args(["--prometheus-listen", &format!("127.0.0.1:{scrape_port}")])
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{collector_port}"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "5000")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?,
    );
    let snapshots = Arc::new(AtomicU64::new(0));
    let stdout = child.0.stdout.take().context("agent stdout")?;
    let counted = snapshots.clone();
    thread::spawn(move || {
        for _ in BufReader::new(stdout).lines().map_while(Result::ok) {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, requests) = (stop.clone(), requests.clone());
        thread::spawn(move || clients(port, &stop, &requests))
    };
    let churn = {
        let stop = stop.clone();
        let cudart = fixtures.join("nvidia/cuda_runtime/lib/libcudart.so.12");
        thread::spawn(move || churn(&cudart, &stop))
    };

    // Warm-up: attached, series for every model and some processes exist.
    thread::sleep(SAMPLE);
    let pid = child.0.id();
    let start = Instant::now();
    let first = rss_kib(pid)?;
    let (mut max, mut last) = (first, first);
    println!(
        "  t=0 s (after 30 s of warm-up): RSS {:.1} MiB",
        first as f64 / 1024.0
    );
    let snapshots_at_start = snapshots.load(Ordering::Relaxed);
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        thread::sleep(SAMPLE);
        last = rss_kib(pid)?;
        max = max.max(last);
        println!(
            "  t={:.0} s: RSS {:.1} MiB",
            start.elapsed().as_secs_f64(),
            last as f64 / 1024.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let _ = churn.join();
    let elapsed = start.elapsed().as_secs_f64();
    let reported = snapshots.load(Ordering::Relaxed) - snapshots_at_start;
    // Absent when export is off (OTEL_SDK_DISABLED=true: the same load as a baseline).
    let dropped = scrape(scrape_port)?
        .lines()
        .find(|l| {
            l.starts_with("inferscope_export_dropped_batches_total{") && l.contains(r#"signal="metrics""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or("no".to_string(), |d| d.to_string());
    println!(
        "  RSS {:.1} MiB after warm-up, {:.1} MiB at the end, {:.1} MiB at most: growth {:+.1} MiB",
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0,
        (last as f64 - first as f64) / 1024.0
    );
    println!(
        "  {reported} snapshots in {elapsed:.0} s at a 1 s interval; {} requests served; {dropped} export batches counted as dropped",
        requests.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Accepts and reads, never answers.
fn blackhole(listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut conn = conn;
            let mut sink = [0u8; 4096];
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
        });
    }
}

/// Streaming requests round-robin over the models, about 20 per second.
fn clients(port: u16, stop: &AtomicBool, requests: &AtomicU64) -> Result<()> {
    let conn = TcpStream::connect(("127.0.0.1", port))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        exchange(
            &mut writer,
            &mut reader,
            &chat_request(&format!("bench-{}", i % MODELS)),
        )?;
        requests.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A short-lived process mapping the CUDA runtime every 2 s.
fn churn(cudart: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let _ = Command::new("python3")
            .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
            .arg(cudart)
            .status();
        thread::sleep(Duration::from_secs(2));
    }
}

pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    memory_kib(pid, "VmRSS")
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`: the peak), in KiB.
pub(crate) fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/PID/status"))
}

fn scrape(port: u16) -> Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}
