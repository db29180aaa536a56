//! `inferscope run`: attach, then report every interval until stopped.

use std::{collections::HashSet, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use aya::{
    Btf,
    maps::{MapData, RingBuf},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval_at, sleep_until},
};

use super::parse_duration;
use crate::{
    discover::Discovery,
    export::{self, Format},
    probes::{self, GpuProbes, ProcessProbes, decode_event},
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
    /// Only watch these processes (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    super::check::require_privileges()?;
    probes::raise_memlock_limit();
    let btf = Btf::from_sys_fs().context("reading kernel BTF from /sys/kernel/btf/vmlinux")?;
    let process = ProcessProbes::load(&btf)?;
    let gpu = GpuProbes::load()?;
    let only = (!args.pids.is_empty()).then(|| args.pids.iter().copied().collect::<HashSet<_>>());
    let session = Session::start(Discovery::new("/proc"), gpu, process, only)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?
        .block_on(report_loop(session, args))?;
    Ok(ExitCode::SUCCESS)
}

async fn report_loop(mut session: Session, args: RunArgs) -> Result<()> {
    let ring = session.process_probes().events()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    let mut events = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the process event ring buffer: {e}"))?;
    let mut stdout = std::io::stdout().lock();
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
            ready = events.readable_mut() => {
                let mut guard = ready?;
                drain(guard.get_inner_mut(), &mut session);
                guard.clear_ready();
                continue;
            }
            _ = ticks.tick() => end.is_some_and(|end| Instant::now() >= end),
            _ = async { sleep_until(end.unwrap()).await }, if end.is_some() => true,
            _ = terminate.recv() => true,
            _ = interrupt.recv() => true,
        };
        // Exits and dlopens that happened before this instant belong in this report.
        drain(events.get_mut(), &mut session);
        let now = Instant::now();
        let report = session.report(now - last)?;
        last = now;
        export::write(&mut stdout, args.output, &report).context("writing the report")?;
        if stop {
            return Ok(());
        }
    }
}

fn drain(events: &mut RingBuf<MapData>, session: &mut Session) {
    while let Some(record) = events.next() {
        match decode_event(&record) {
            Some(event) => session.handle(&event),
            None => log::warn!("process event of {} bytes ignored", record.len()),
        }
    }
}
