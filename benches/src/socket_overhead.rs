//! What the socket capture programs cost processes on the host. They fire on
//! every socket send and receive of every process, so the figure that matters
//! most is the cost to processes the agent does not watch.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use anyhow::{Context as _, Result};
use aya::Btf;
use inferscope::probes::{NetProbes, compat, raise_memlock_limit};

use crate::{median, newest_program};

const WRITES: u32 = 1_000_000;
const ROUND_TRIPS: u32 = 100_000;
const ROUNDS: usize = 7;

pub fn run() -> Result<()> {
    raise_memlock_limit();
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut client = TcpStream::connect(("127.0.0.1", port))?;
    let (mut server, _) = listener.accept()?;
    client.set_nodelay(true)?;

    let (mut write_off, mut write_on, mut rt_off, mut rt_on, mut rt_watched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        write_off.push(time_writes(&devnull)?);
        rt_off.push(time_round_trips(&mut client, &mut server)?);
        let mut probes = NetProbes::load(&btf, 4096)?;
        // Some other port is watched: the filter runs and says no, as for any unwatched process.
        probes.watch_port(port.wrapping_add(1), None)?;
        write_on.push(time_writes(&devnull)?);
        rt_on.push(time_round_trips(&mut client, &mut server)?);
        probes.watch_port(port, None)?;
        let _ring = probes.events()?; // kept, unread: the kernel still copies every capture into it
        rt_watched.push(time_round_trips(&mut client, &mut server)?);
    }
    let (w0, w1) = (median(write_off), median(write_on));
    let (r0, r1, r2) = (median(rt_off), median(rt_on), median(rt_watched));
    println!("socket capture, {ROUNDS} rounds (median):");
    println!(
        "  write() to /dev/null, unwatched process:   {w0:>8.1} ns without, {w1:>8.1} ns with   = {:.3}x (target <= 1.05x)",
        w1 / w0
    );
    println!(
        "  TCP loopback round trip, unwatched port:   {r0:>8.1} ns without, {r1:>8.1} ns with   = {:.3}x (target <= 1.05x)",
        r1 / r0
    );
    println!(
        "  TCP loopback round trip, watched port:     {r2:>8.1} ns (capture of 2 x 64 B)      = {:.3}x",
        r2 / r0
    );
    in_kernel(&btf, &mut client, &mut server, port)
}

/// Run time of the capture programs per send or receive, as the kernel's BPF
/// statistics count it (their own clock reads included): what each event
/// costs inside the socket call, on an unwatched port (the filter) and on a
/// watched one whose ring is drained as the agent drains it.
fn in_kernel(btf: &Btf, client: &mut TcpStream, server: &mut TcpStream, port: u16) -> Result<()> {
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let mut probes = NetProbes::load(btf, 4096)?;
    probes.watch_port(port.wrapping_add(1), None)?;
    let before = capture_run_time()?;
    time_round_trips(client, server)?;
    let unwatched = capture_run_time()?.per_run_since(before);
    probes.watch_port(port, None)?;
    let mut ring = probes.events()?;
    let before = capture_run_time()?;
    for _ in 0..ROUND_TRIPS / DRAIN_EVERY {
        round_trips(client, server, DRAIN_EVERY)?;
        while ring.next().is_some() {}
    }
    let watched = capture_run_time()?.per_run_since(before);
    println!("  capture programs' run time per send or receive (BPF statistics, {ROUND_TRIPS} round trips):");
    println!("    {unwatched:>6.1} ns  unwatched port (the filter)");
    println!("    {watched:>6.1} ns  watched port (capture of 64 B into the ring)");
    Ok(())
}

/// Round trips between drains of the ring (4 events each: well within its 8 MiB).
const DRAIN_EVERY: u32 = 1_000;

#[derive(Clone, Copy)]
struct RunTime {
    ns: u64,
    runs: u64,
}

impl RunTime {
    fn per_run_since(self, before: RunTime) -> f64 {
        (self.ns - before.ns) as f64 / (self.runs - before.runs).max(1) as f64
    }
}

/// The send and receive capture programs' totals (this process's: the newest of each name).
fn capture_run_time() -> Result<RunTime> {
    [compat::ON_SOCK_SEND.name, compat::ON_SOCK_RECV.name]
        .into_iter()
        .try_fold(RunTime { ns: 0, runs: 0 }, |sum, name| {
            let info = newest_program(name)?;
            Ok(RunTime {
                ns: sum.ns + info.run_time().as_nanos() as u64,
                runs: sum.runs + info.run_count(),
            })
        })
}

fn time_writes(devnull: &std::fs::File) -> Result<f64> {
    let buf = [0u8; 64];
    let mut f = devnull;
    let start = Instant::now();
    for _ in 0..WRITES {
        f.write_all(&buf)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(WRITES))
}

fn time_round_trips(client: &mut TcpStream, server: &mut TcpStream) -> Result<f64> {
    let start = Instant::now();
    round_trips(client, server, ROUND_TRIPS)?;
    Ok(start.elapsed().as_nanos() as f64 / f64::from(ROUND_TRIPS))
}

/// 64 bytes client -> server and back: two sends and two receives each.
fn round_trips(client: &mut TcpStream, server: &mut TcpStream, n: u32) -> Result<()> {
    let mut buf = [0u8; 64];
    for _ in 0..n {
        client.write_all(&buf)?;
        server.read_exact(&mut buf)?;
        server.write_all(&buf)?;
        client.read_exact(&mut buf)?;
    }
    Ok(())
}
