//! What continuous profiling adds to the agent (`run --profile` with its
//! defaults: 49 Hz, 1 in 64 GPU launches and synchronisations recording their
//! stacks, 15 s periods shipped both to Pyroscope and as OTLP profiles, to a
//! stand-in that takes every push), against `run` alone (exporting its
//! metrics over OTLP to the same stand-in, as both do), in alternating rounds
//! under the same load: a
//! process calling the real `libcudart.so.12` about 2 000 times a second (the
//! launch loop) and the Starlette ground-truth server streaming to 100
//! clients. Targets: at most 1 % of a core added, at most 64 MiB peak RSS.

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
    export_outage::memory_kib,
    soak::{GPU_CALLER, STREAMS, clock_ticks_per_second, cpu_ticks, stream_client, stream_server},
    startup::Killed,
};

const ROUNDS: usize = 2;
/// Before measuring: the agent attached, its first period pushed (names parsed once).
const WARM_UP: Duration = Duration::from_secs(20);
/// Four periods.
const WINDOW: Duration = Duration::from_secs(60);
/// `run --profile`'s default period, named so that pushes per period can be told.
const PERIOD: Duration = Duration::from_secs(15);

/// The agent's CPU share over a window and its peak RSS.
struct Cost {
    cpu_percent: f64,
    peak_mib: f64,
}

pub fn run(fixtures: &Path, agent: &Path) -> Result<()> {
    let python = fixtures.join("venv/bin/python");
    let cudart = fixtures.join("nvidia/cuda_runtime/lib/libcudart.so.12");
    let (_server, port) = stream_server(&python)?;
    let _launches = Killed(
        Command::new(&python)
            .args(["-c", GPU_CALLER])
            .arg(&cudart)
            .spawn()?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (stop, requests) = (stop.clone(), requests.clone());
            thread::spawn(move || stream_client(port, i, &stop, &requests))
        })
        .collect();
    let (receiver, pushed) = stand_in()?;
    let mut alone = Vec::new();
    let mut profiling = Vec::new();
    for _ in 0..ROUNDS {
        alone.push(measure(agent, port, receiver, false)?);
        profiling.push(measure(agent, port, receiver, true)?);
    }
    stop.store(true, Ordering::Relaxed);
    streams.into_iter().for_each(|s| drop(s.join()));
    let mean = |costs: &[Cost]| costs.iter().map(|c| c.cpu_percent).sum::<f64>() / costs.len() as f64;
    let peak = |costs: &[Cost]| costs.iter().map(|c| c.peak_mib).fold(0.0, f64::max);
    let periods = (ROUNDS as f64) * (WARM_UP + WINDOW).as_secs_f64() / PERIOD.as_secs_f64();
    println!(
        "Continuous profiling's cost to the agent (run --profile: 49 Hz, 1 in 64 launch stacks, 15 s periods shipped to \
         Pyroscope and over OTLP/HTTP), under a launch loop and {STREAMS} streams, {ROUNDS} alternating rounds of {} s \
         after {} s:",
        WINDOW.as_secs(),
        WARM_UP.as_secs()
    );
    println!(
        "  run alone        {:.2} % of a core, peak RSS {:.1} MiB",
        mean(&alone),
        peak(&alone)
    );
    println!(
        "  run --profile    {:.2} % of a core, peak RSS {:.1} MiB",
        mean(&profiling),
        peak(&profiling)
    );
    let per_period = |path: usize| pushed[path].load(Ordering::Relaxed) as f64 / 1024.0 / periods;
    println!(
        "  added: {:.2} % of a core (target <= 1 %); peak RSS {:.1} MiB (target <= 64 MiB); per period about {:.0} KiB \
         pushed to Pyroscope and {:.0} KiB of OTLP profiles",
        mean(&profiling) - mean(&alone),
        peak(&profiling),
        per_period(PYROSCOPE),
        per_period(OTLP_PROFILES)
    );
    Ok(())
}

/// Runs the agent watching the server's port (and finding the launch loop
/// itself), exporting to the stand-in at `receiver`, profiling when
/// `profile`; its cost over [`WINDOW`].
fn measure(agent: &Path, port: u16, receiver: u16, profile: bool) -> Result<Cost> {
    let receiver = format!("http://127.0.0.1:{receiver}");
    let mut command = Command::new(agent);
    command.args([
        "run",
        "--output",
        "none",
        "--interval",
        "1s",
        "--port",
        &port.to_string(),
        "--otlp-endpoint",
        &receiver,
    ]);
    if profile {
        command.args([
            "--profile",
            "--profile-every",
            &format!("{}s", PERIOD.as_secs()),
            "--pyroscope-url",
            &receiver,
        ]);
    }
    let child = Killed(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?,
    );
    let pid = child.0.id();
    thread::sleep(WARM_UP);
    let before = cpu_ticks(pid)?;
    let start = Instant::now();
    thread::sleep(WINDOW);
    let ticks = cpu_ticks(pid)? - before;
    Ok(Cost {
        cpu_percent: 100.0 * ticks as f64 / clock_ticks_per_second() / start.elapsed().as_secs_f64(),
        peak_mib: memory_kib(pid, "VmHWM")? as f64 / 1024.0,
    })
}

/// What the stand-in counts, by the path pushed to: Pyroscope's push, OTLP
/// profiles, anything else (OTLP metrics).
const PYROSCOPE: usize = 0;
const OTLP_PROFILES: usize = 1;
const OTHER: usize = 2;

/// A stand-in for Pyroscope and an OTLP collector: takes every push
/// (HTTP/1.1, kept alive), answers 200 with an empty body (an empty
/// protobuf message: all taken), and counts the bytes it took by path. Its
/// port, and the counts.
fn stand_in() -> Result<(u16, Arc<[AtomicU64; 3]>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let pushed: Arc<[AtomicU64; 3]> = Arc::default();
    let counted = pushed.clone();
    thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let counted = counted.clone();
            thread::spawn(move || take_pushes(conn, &counted));
        }
    });
    Ok((port, pushed))
}

fn take_pushes(conn: TcpStream, pushed: &[AtomicU64; 3]) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut length = 0;
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = match request_line.split(' ').nth(1) {
            Some("/push.v1.PusherService/Push") => PYROSCOPE,
            Some("/v1development/profiles") => OTLP_PROFILES,
            _ => OTHER,
        };
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        pushed[path].fetch_add(length as u64, Ordering::Relaxed);
        writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n")?;
    }
}
