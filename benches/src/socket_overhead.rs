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
use inferscope::probes::{NetProbes, raise_memlock_limit};

use crate::median;

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
    Ok(())
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

/// 64 bytes client -> server and back: two sends and two receives.
fn time_round_trips(client: &mut TcpStream, server: &mut TcpStream) -> Result<f64> {
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        client.write_all(&buf)?;
        server.read_exact(&mut buf)?;
        server.write_all(&buf)?;
        client.read_exact(&mut buf)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(ROUND_TRIPS))
}
