//! What continuous profiling adds to the agent (`run --profile` with its
//! defaults: 49 Hz, 1 in 64 GPU launches and synchronisations recording their
//! stacks, 15 s periods pushed to a Pyroscope stand-in that takes every
//! push), against `run` alone, in alternating rounds under the same load: a
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
    let (receiver, pushed) = pyroscope_stand_in()?;
    let mut alone = Vec::new();
    let mut profiling = Vec::new();
    for _ in 0..ROUNDS {
        alone.push(measure(agent, port, None)?);
        profiling.push(measure(agent, port, Some(receiver))?);
    }
    stop.store(true, Ordering::Relaxed);
    streams.into_iter().for_each(|s| drop(s.join()));
    let mean = |costs: &[Cost]| costs.iter().map(|c| c.cpu_percent).sum::<f64>() / costs.len() as f64;
    let peak = |costs: &[Cost]| costs.iter().map(|c| c.peak_mib).fold(0.0, f64::max);
    let periods = (ROUNDS as f64) * (WARM_UP + WINDOW).as_secs_f64() / PERIOD.as_secs_f64();
    println!(
        "Continuous profiling's cost to the agent (run --profile: 49 Hz, 1 in 64 launch stacks, 15 s periods pushed to a \
         Pyroscope stand-in), under a launch loop and {STREAMS} streams, {ROUNDS} alternating rounds of {} s after {} s:",
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
    println!(
        "  added: {:.2} % of a core (target <= 1 %); peak RSS {:.1} MiB (target <= 64 MiB); about {:.0} KiB pushed per period",
        mean(&profiling) - mean(&alone),
        peak(&profiling),
        pushed.load(Ordering::Relaxed) as f64 / 1024.0 / periods
    );
    Ok(())
}

/// Runs the agent watching the server's port (and finding the launch loop
/// itself), profiling to `pyroscope` when given; its cost over [`WINDOW`].
fn measure(agent: &Path, port: u16, pyroscope: Option<u16>) -> Result<Cost> {
    let mut command = Command::new(agent);
    command.args([
        "run",
        "--output",
        "none",
        "--interval",
        "1s",
        "--port",
        &port.to_string(),
    ]);
    if let Some(receiver) = pyroscope {
        command.args([
            "--profile",
            "--profile-every",
            &format!("{}s", PERIOD.as_secs()),
            "--pyroscope-url",
            &format!("http://127.0.0.1:{receiver}"),
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

/// A Pyroscope stand-in: takes every push (HTTP/1.1, kept alive), answers
/// 200, and counts the bytes it took. Its port, and the count.
fn pyroscope_stand_in() -> Result<(u16, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let pushed = Arc::new(AtomicU64::new(0));
    let counted = pushed.clone();
    thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let counted = counted.clone();
            thread::spawn(move || take_pushes(conn, &counted));
        }
    });
    Ok((port, pushed))
}

fn take_pushes(conn: TcpStream, pushed: &AtomicU64) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut length = 0;
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
        pushed.fetch_add(length as u64, Ordering::Relaxed);
        writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n")?;
    }
}
