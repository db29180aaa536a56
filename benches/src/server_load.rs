//! What watching a server costs the server: requests per second of a streaming
//! HTTP/1.1 server at saturation, with and without the agent's socket capture
//! and request decoding running, in paired rounds.
//!
//! The server is minimal Rust (no framework), so the agent's share of the
//! work is as large as it gets: a Python server spends far more per request.
//! Everything shares the machine's cores: the load, the server and the agent.
//! Where the time goes is printed per request: the agent thread's CPU time in
//! the measured rounds, and the capture programs' run time in one more round
//! with the kernel's BPF statistics on (they cost a clock read per run, so
//! that round is not one of the measured ones).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
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
use aya::Btf;
use inferscope::{
    clock::Clock,
    decode::NetEvent,
    derive::requests::RequestTracker,
    pipeline::NET_DRAIN_PERIOD,
    probes::{NetProbes, raise_memlock_limit},
};

use crate::{median, newest_program};

/// Pairs of rounds, one without the agent and one with it, in alternating
/// order. The machine's speed drifts by more than the effect between rounds
/// (a shared 2-vCPU VM: the same server did 12.3 k to 14.0 k requests/s in
/// one hour), so each pair's ratio is taken, and their median reported.
const ROUNDS: usize = 15;
const ROUND: Duration = Duration::from_secs(2);
pub(crate) const TOKENS: usize = 16;

pub fn run(fixtures: &Path) -> Result<()> {
    raise_memlock_limit();
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || serve(listener));
    compare(
        &btf,
        "minimal Rust server (worst case: the agent's share is largest)",
        port,
        2,
    )?;

    // The ground-truth server of the tests: Starlette on uvicorn, as vLLM and SGLang serve.
    let python = fixtures.join("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/sse_server.py");
    let mut server = Command::new(python)
        .arg(script)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(server.stdout.take().context("stdout")?).read_line(&mut first)?;
    let port = first
        .trim()
        .strip_prefix("listening ")
        .context("listening PORT")?
        .parse()?;
    // Many connections: each small write waits on delayed ACKs, so two would measure latency.
    let result = compare(&btf, "Starlette/uvicorn ground-truth server", port, 32);
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn compare(btf: &Btf, what: &str, port: u16, clients: usize) -> Result<()> {
    let (mut without, mut with, mut ratios, mut agent_ns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut decoded = 0;
    for round in 0..ROUNDS {
        let watched_first = round % 2 == 1;
        let before = if watched_first {
            None
        } else {
            Some(load(port, clients)?)
        };
        let agent = Agent::start(btf, port)?;
        let watched = load(port, clients)?;
        let (requests, cpu) = agent.stop()?;
        let unwatched = match before {
            Some(r) => r,
            None => load(port, clients)?,
        };
        agent_ns.push(cpu.as_nanos() as f64 / requests.max(1) as f64);
        decoded = requests;
        ratios.push(watched / unwatched);
        without.push(unwatched);
        with.push(watched);
    }
    let in_kernel = {
        let _stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
        let agent = Agent::start(btf, port)?;
        let requests = load(port, clients)? * ROUND.as_secs_f64();
        agent.stop()?;
        [
            inferscope::probes::compat::ON_SOCK_SEND.name,
            inferscope::probes::compat::ON_SOCK_RECV.name,
        ]
        .into_iter()
        .map(|name| {
            let info = newest_program(name)?;
            let runs = info.run_count() as f64 / requests;
            Ok((name, runs, info.run_time().as_nanos() as f64 / requests))
        })
        .collect::<Result<Vec<_>>>()?
    };
    let (a, b) = (median(without), median(with));
    let mut losses: Vec<f64> = ratios.iter().map(|r| 100.0 * (1.0 - r)).collect();
    losses.sort_by(f64::total_cmp);
    let quartile = |q: usize| losses[(losses.len() - 1) * q / 4];
    println!("{what}, at saturation ({clients} keep-alive clients, {TOKENS} SSE chunks per response):");
    println!("  without the agent {a:>8.0} requests/s (median of {ROUNDS} rounds)");
    println!("  with the agent    {b:>8.0} requests/s   ({decoded} requests decoded in the last round)");
    println!(
        "  loss = {:.1} %   (target <= 10 %; median of {ROUNDS} paired rounds, quartiles {:.1} .. {:.1} %)",
        quartile(2),
        quartile(1),
        quartile(3)
    );
    println!(
        "  per request: agent (drain + decode) {:.1} us of CPU",
        median(agent_ns) / 1e3
    );
    for (name, runs, ns) in in_kernel {
        println!(
            "               {name:<13} {:.1} us in {runs:.1} runs ({:.0} ns each)",
            ns / 1e3,
            ns / runs
        );
    }
    Ok(())
}

/// The agent's request path on its own thread, as the agent runs it: drain
/// captures when the kernel wakes it or its drain period passes, decode, derive.
struct Agent {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<(u64, Duration)>>,
}

impl Agent {
    fn start(btf: &Btf, port: u16) -> Result<Self> {
        let mut probes = NetProbes::load(btf, 4096)?;
        probes.watch_port(port, None)?;
        let mut ring = probes.events()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new().name("agent".into()).spawn(move || {
            let _probes = probes;
            let mut tracker = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
            let mut done = Vec::new();
            let mut finished = 0;
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                while let Some(record) = ring.next() {
                    idle = false;
                    if let Some(ev) = NetEvent::from_record(&record) {
                        tracker.on_event(&ev, &mut done);
                    }
                }
                finished += done.len() as u64;
                done.clear();
                if idle {
                    let mut ready = libc::pollfd {
                        fd: ring.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, whose descriptor the ring keeps open.
                    unsafe { libc::poll(&mut ready, 1, NET_DRAIN_PERIOD.as_millis() as i32) };
                }
            }
            Ok((finished, thread_cpu_time()?))
        })?;
        Ok(Self { stop, thread })
    }

    /// Requests finished, and the CPU time the thread used.
    fn stop(self) -> Result<(u64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("agent thread panicked"))?
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Result<Duration> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return Err(std::io::Error::last_os_error()).context("thread CPU time");
    }
    Ok(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

/// Requests per second that `clients` keep-alive clients get through in one round.
fn load(port: u16, clients: usize) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + ROUND;
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let done = done.clone();
            thread::spawn(move || -> Result<()> {
                let conn = TcpStream::connect(("127.0.0.1", port))?;
                conn.set_nodelay(true)?;
                let mut reader = BufReader::new(conn.try_clone()?);
                let mut writer = conn;
                let request = chat_request("bench");
                while Instant::now() < until {
                    exchange(&mut writer, &mut reader, &request)?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / ROUND.as_secs_f64())
}

/// A streaming chat completion request for `model`, as fast as the server goes.
pub(crate) fn chat_request(model: &str) -> Vec<u8> {
    chat_request_paced(model, TOKENS, 0, 0)
}

/// The same on a schedule (the ground-truth servers honour it).
pub(crate) fn chat_request_paced(model: &str, tokens: usize, ttft_ms: u32, gap_ms: u32) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{model}","stream":true,"tokens":{tokens},"ttft_ms":{ttft_ms},"gap_ms":{gap_ms},"messages":[]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` and reads its chunked response to the end.
pub(crate) fn exchange(
    writer: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &[u8],
) -> std::io::Result<()> {
    writer.write_all(request)?;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "0\r\n" {
            reader.read_line(&mut line)?;
            return Ok(());
        }
    }
}

pub(crate) fn serve(listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = handle(conn);
        });
    }
}

/// One chunk of a chunked body.
pub(crate) fn chunk(payload: &str) -> String {
    format!("{:x}\r\n{payload}\r\n", payload.len())
}

/// One token's chunk as the server writes it.
pub(crate) fn token_chunk() -> String {
    chunk("data: {\"choices\":[{\"delta\":{\"content\":\" tok\"}}],\"model\":\"bench\"}\n\n")
}

/// The stream's end marker and the chunked body's end, written together.
pub(crate) fn done_chunks() -> String {
    chunk("data: [DONE]\n\n") + "0\r\n\r\n"
}

/// Answers each request with TOKENS SSE chunks, one write each, as inference servers do.
fn handle(conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let token = token_chunk();
    let done = done_chunks();
    let mut line = String::new();
    loop {
        let mut length = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        )?;
        for _ in 0..TOKENS {
            writer.write_all(token.as_bytes())?;
        }
        writer.write_all(done.as_bytes())?;
    }
}
