//! `inferscope run`: attach, then report every interval until stopped.

use std::{collections::HashSet, io::Write, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf,
    maps::{MapData, RingBuf},
};
use inferscope_shared::{NET_CAPTURE_MAX, PROC_EXEC, PROC_EXIT};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval_at, sleep_until},
};

use super::parse_duration;
use crate::{
    discover::Discovery,
    export::{self, Format},
    probes::{self, GpuProbes, NetProbes, ProcessProbes, decode_event, decode_net_event},
    server_watch::ServerWatch,
    session::Session,
};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Format,
    /// Time between reports.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this long (a last report covers the remainder).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Only watch these processes (repeatable); their listening ports are captured too.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Also capture requests to this local port (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Also treat processes with this command name as inference servers (repeatable).
    #[arg(long = "comm")]
    comms: Vec<String>,
    /// Bytes of each send or receive copied for decoding (at most 4096).
    #[arg(long, default_value_t = NET_CAPTURE_MAX as u32)]
    capture_bytes: u32,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    super::check::require_privileges()?;
    probes::raise_memlock_limit();
    let btf = Btf::from_sys_fs().context("reading kernel BTF from /sys/kernel/btf/vmlinux")?;
    let process = ProcessProbes::load(&btf)?;
    let gpu = GpuProbes::load()?;
    // Request metrics need the socket tracepoints; GPU activity does not. Say so and go on without.
    let net = NetProbes::load(&btf, args.capture_bytes)
        .inspect(|net| log::info!("socket capture through {}", net.socket_hook()))
        .inspect_err(|e| log::warn!("request metrics unavailable (socket capture did not load): {e:#}"))
        .ok();
    let only = (!args.pids.is_empty()).then(|| args.pids.iter().copied().collect::<HashSet<_>>());
    let discovery = Discovery::new("/proc");
    let pids = discovery.pids()?;
    let session = Session::start(discovery, gpu, process, only)?;
    let servers = match net {
        Some(net) => {
            let mut servers = ServerWatch::start(
                net,
                "/proc".into(),
                &args.ports,
                args.comms.clone(),
                monotonic_ns(),
            )?;
            for pid in pids {
                servers.consider(pid, args.pids.contains(&pid));
            }
            for pid in session.tracked_pids() {
                servers.consider(pid, true);
            }
            Some(servers)
        }
        None => None,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?
        .block_on(report_loop(session, servers, args))?;
    Ok(ExitCode::SUCCESS)
}

/// Wraps a ring buffer for readiness notifications.
fn watch(ring: RingBuf<MapData>, what: &str) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow!("watching the {what} ring buffer: {e}"))
}

async fn report_loop(mut session: Session, mut servers: Option<ServerWatch>, args: RunArgs) -> Result<()> {
    let mut proc_events = watch(session.process_probes().events()?, "process event")?;
    let mut net_events = match &mut servers {
        Some(s) => Some(watch(s.net_probes().events()?, "socket capture")?),
        None => None,
    };
    let mut out = Output {
        stdout: std::io::stdout().lock(),
        format: args.output,
        wall_offset_ns: wall_offset_ns(),
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let start = Instant::now();
    let end = args.duration.map(|d| start + d);
    let mut ticks = interval_at(start + args.interval, args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = start;
    log::info!("attached; reporting every {:?}", args.interval);
    loop {
        let stop = tokio::select! {
            ready = proc_events.readable_mut() => {
                let mut guard = ready?;
                // Captures made before a process exited must be seen before its exit.
                if let (Some(servers), Some(net)) = (servers.as_mut(), net_events.as_mut()) {
                    drain_net_events(net.get_mut(), servers, &mut out)?;
                }
                drain_process_events(guard.get_inner_mut(), &mut session, servers.as_mut(), &args.pids);
                guard.clear_ready();
                continue;
            }
            ready = async { net_events.as_mut().unwrap().readable_mut().await }, if net_events.is_some() => {
                let mut guard = ready?;
                drain_net_events(guard.get_inner_mut(), servers.as_mut().unwrap(), &mut out)?;
                guard.clear_ready();
                continue;
            }
            _ = ticks.tick() => end.is_some_and(|end| Instant::now() >= end),
            _ = async { sleep_until(end.unwrap()).await }, if end.is_some() => true,
            _ = terminate.recv() => true,
            _ = interrupt.recv() => true,
        };
        // What happened before this instant belongs in this report (captures before exits).
        if let (Some(servers), Some(net)) = (servers.as_mut(), net_events.as_mut()) {
            drain_net_events(net.get_mut(), servers, &mut out)?;
        }
        drain_process_events(proc_events.get_mut(), &mut session, servers.as_mut(), &args.pids);
        let now = Instant::now();
        let interval = now - last;
        last = now;
        let mut report = session.report(interval)?;
        if let (Some(servers), Some(net_events)) = (servers.as_mut(), net_events.as_mut()) {
            drain_net_events(net_events.get_mut(), servers, &mut out)?;
            report.servers = servers.report(interval.as_secs_f64(), monotonic_ns());
            report.add_drops(servers.drops()?);
            for pid in session.tracked_pids() {
                servers.consider(pid, true);
            }
        }
        if out.format != Format::Requests {
            export::write(&mut out.stdout, out.format, &report).context("writing the report")?;
        }
        if stop {
            return Ok(());
        }
    }
}

struct Output<W: Write> {
    stdout: W,
    format: Format,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC: turns kernel timestamps into wall-clock time.
    wall_offset_ns: i128,
}

fn drain_process_events(
    events: &mut RingBuf<MapData>,
    session: &mut Session,
    mut servers: Option<&mut ServerWatch>,
    named: &[u32],
) {
    while let Some(record) = events.next() {
        let Some(event) = decode_event(&record) else {
            log::warn!("process event of {} bytes ignored", record.len());
            continue;
        };
        session.handle(&event);
        let Some(servers) = servers.as_deref_mut() else {
            continue;
        };
        match event.kind {
            PROC_EXEC => servers.consider(event.pid, named.contains(&event.pid)),
            PROC_EXIT => servers.process_exited(event.pid, event.ktime_ns),
            _ => {}
        }
    }
}

fn drain_net_events<W: Write>(
    events: &mut RingBuf<MapData>,
    servers: &mut ServerWatch,
    out: &mut Output<W>,
) -> Result<()> {
    while let Some(record) = events.next() {
        match decode_net_event(&record) {
            Some(event) => servers.on_event(&event),
            None => log::warn!("socket capture of {} bytes ignored", record.len()),
        }
    }
    print_requests(servers, out)
}

/// With `--output requests`, the requests finished since the last call.
fn print_requests<W: Write>(servers: &mut ServerWatch, out: &mut Output<W>) -> Result<()> {
    if out.format != Format::Requests {
        return Ok(());
    }
    for r in servers.new_requests() {
        let time = std::time::UNIX_EPOCH
            + Duration::from_nanos((r.end_ns as i128 + out.wall_offset_ns).max(0) as u64);
        export::write_request(&mut out.stdout, time, r).context("writing a request")?;
    }
    Ok(())
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The kernel's bpf_ktime_get_ns clock.
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn wall_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}
