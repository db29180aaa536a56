//! The one data path: sources → join → sinks, on one clock and one tick.
//!
//! Sources: [`GpuProcesses`] (process lifecycle, discovery, GPU calls),
//! [`Servers`] (socket capture), [`NvmlSource`] and [`RocmSmiSource`] (GPU devices). Their ring buffers are drained as they fill;
//! at each tick the pipeline reads every source once, the join builds one
//! [`Snapshot`](crate::model::Snapshot), and every sink gets it. Finished
//! requests reach sinks as they finish, and are counted in the next snapshot.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use inferscope_shared::{DROP_REASONS, PROC_EXEC, PROC_EXIT};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    clock::Clock,
    decode::NetEvent,
    join::{Join, Readings},
    model::RequestRecord,
    probes::decode_event,
    sinks::Sink,
    sources::{GpuProcesses, KubePods, NvmlSource, RocmSmiSource, Servers},
};

/// How often socket captures are drained without a wake-up: the kernel wakes
/// the agent only once 256 KiB wait (`net_capture.bpf.c`), so this bounds how
/// late a trickle of captures is read. 25 ms cost the agent 0.4 % more of a
/// core in the soak benchmark (wake-ups, and small batches decoded cold).
pub const NET_DRAIN_PERIOD: Duration = Duration::from_millis(100);

/// When to report, and for how long.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub interval: Duration,
    /// Stop after this long (a last snapshot covers the remainder); `None`: until a signal.
    pub duration: Option<Duration>,
    /// Stop when notified, as on a signal (a command's own way to end, e.g. a key).
    pub stop: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// The sources a pipeline reads; only GPU processes are always there.
pub struct Sources {
    pub processes: GpuProcesses,
    pub servers: Option<Servers>,
    pub nvml: Option<NvmlSource>,
    pub rocm_smi: Option<RocmSmiSource>,
    /// Which pod each container is in.
    pub kube: Option<KubePods>,
}

pub struct Pipeline {
    clock: Clock,
    processes: GpuProcesses,
    servers: Option<Servers>,
    nvml: Option<NvmlSource>,
    rocm_smi: Option<RocmSmiSource>,
    kube: Option<KubePods>,
    join: Join,
    sinks: Vec<Box<dyn Sink>>,
    /// Processes named with `--pid`: their ports are captured whatever they run.
    named: Vec<u32>,
    /// Requests finished during the current interval.
    finished: Vec<RequestRecord>,
}

impl Pipeline {
    pub fn new(clock: Clock, sources: Sources, sinks: Vec<Box<dyn Sink>>, named: Vec<u32>) -> Result<Self> {
        let Sources {
            processes,
            mut servers,
            nvml,
            rocm_smi,
            kube,
        } = sources;
        if let Some(servers) = &mut servers {
            for pid in processes.all_pids()? {
                servers.consider(pid, named.contains(&pid));
            }
            for pid in processes.tracked_pids() {
                servers.consider(pid, true);
            }
        }
        Ok(Self {
            clock,
            processes,
            servers,
            nvml,
            rocm_smi,
            kube,
            join: Join::default(),
            sinks,
            named,
            finished: Vec::new(),
        })
    }

    /// Runs until the schedule's end or SIGINT/SIGTERM, then hands out a last snapshot.
    pub async fn run(mut self, schedule: Schedule) -> Result<()> {
        let mut proc_events = watch(self.processes.events()?, "process event")?;
        let mut net_events = match &mut self.servers {
            Some(s) => Some(watch(s.events()?, "socket capture")?),
            None => None,
        };
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let start = Instant::now();
        let end = schedule.duration.map(|d| start + d);
        let mut ticks = interval_at(start + schedule.interval, schedule.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The kernel wakes us only for a batch of captures; this drains the rest.
        let mut net_drains = interval_at(start + NET_DRAIN_PERIOD, NET_DRAIN_PERIOD);
        net_drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = start;
        log::info!("attached; reporting every {:?}", schedule.interval);
        loop {
            let stop = tokio::select! {
                ready = proc_events.readable_mut() => {
                    let mut guard = ready?;
                    // Captures made before a process exited must be seen before its exit.
                    self.drain_net(net_events.as_mut().map(|n| n.get_mut()))?;
                    self.drain_processes(guard.get_inner_mut());
                    guard.clear_ready();
                    continue;
                }
                ready = async { net_events.as_mut().map(|n| n.readable_mut()).unwrap().await }, if net_events.is_some() => {
                    let mut guard = ready?;
                    self.drain_net(Some(guard.get_inner_mut()))?;
                    guard.clear_ready();
                    continue;
                }
                _ = net_drains.tick(), if net_events.is_some() => {
                    self.drain_net(net_events.as_mut().map(|n| n.get_mut()))?;
                    continue;
                }
                _ = ticks.tick() => end.is_some_and(|end| Instant::now() >= end),
                _ = async { sleep_until(end.unwrap()).await }, if end.is_some() => true,
                _ = terminate.recv() => true,
                _ = interrupt.recv() => true,
                _ = async { schedule.stop.as_ref().unwrap().notified().await }, if schedule.stop.is_some() => true,
            };
            // What happened before this instant belongs in this snapshot (captures before exits).
            self.drain_net(net_events.as_mut().map(|n| n.get_mut()))?;
            self.drain_processes(proc_events.get_mut());
            self.drain_net(net_events.as_mut().map(|n| n.get_mut()))?;
            let now = Instant::now();
            let interval = now - last;
            last = now;
            self.tick(interval)?;
            if stop {
                for sink in &mut self.sinks {
                    sink.close().context("closing a sink")?;
                }
                return Ok(());
            }
        }
    }

    /// Reads every source once and hands the snapshot to every sink.
    fn tick(&mut self, interval: Duration) -> Result<()> {
        let now_ns = self.clock.now_ns();
        let mut processes = self.processes.read()?;
        if let Some(kube) = &self.kube {
            for p in &mut processes {
                p.pod = p.identity.container_id.as_deref().and_then(|id| kube.pod_of(id));
            }
        }
        let mut drops = self.processes.drops()?;
        let mut dropped_requests = BTreeMap::new();
        let mut server_comms = BTreeMap::new();
        let queues = match &mut self.servers {
            Some(servers) => {
                let net_drops = servers.drops()?;
                drops.iter_mut().zip(net_drops).for_each(|(d, n)| *d += n);
                dropped_requests = servers.dropped_requests();
                let queues = servers.interval_end(now_ns);
                for pid in self.processes.tracked_pids() {
                    servers.consider(pid, true);
                }
                server_comms = servers.comms(queues.keys().map(|&(pid, _)| pid));
                queues
            }
            None => Default::default(),
        };
        let mut gpus = self.nvml.as_mut().map(NvmlSource::read).unwrap_or_default();
        if let Some(rocm) = &mut self.rocm_smi {
            gpus.devices.extend(rocm.read());
        }
        let snapshot = self.join.snapshot(Readings {
            time: self.clock.wall(now_ns),
            interval,
            processes,
            finished: std::mem::take(&mut self.finished),
            queues,
            server_comms,
            drops: DROP_REASONS.into_iter().zip(drops).collect(),
            dropped_requests,
            devices: gpus.devices,
            gpu_events: gpus.events,
        });
        for sink in &mut self.sinks {
            sink.snapshot(&snapshot).context("writing a snapshot")?;
        }
        Ok(())
    }

    fn drain_processes(&mut self, events: &mut RingBuf<MapData>) {
        while let Some(record) = events.next() {
            let Some(event) = decode_event(&record) else {
                log::warn!("process event of {} bytes ignored", record.len());
                continue;
            };
            self.processes.handle(&event);
            let Some(servers) = &mut self.servers else {
                continue;
            };
            match event.kind {
                PROC_EXEC => servers.consider(event.pid, self.named.contains(&event.pid)),
                PROC_EXIT => servers.process_exited(event.pid, event.ktime_ns),
                _ => {}
            }
        }
    }

    /// Decodes what was captured; finished requests go to the sinks at once.
    fn drain_net(&mut self, events: Option<&mut RingBuf<MapData>>) -> Result<()> {
        let (Some(events), Some(servers)) = (events, &mut self.servers) else {
            return Ok(());
        };
        while let Some(record) = events.next() {
            match NetEvent::from_record(&record) {
                Some(event) => servers.on_event(&event),
                None => log::warn!("socket capture of {} bytes ignored", record.len()),
            }
        }
        for request in servers.take_finished() {
            for sink in &mut self.sinks {
                sink.request(&request).context("writing a request")?;
            }
            self.finished.push(request);
        }
        Ok(())
    }
}

/// Wraps a ring buffer for readiness notifications.
fn watch(ring: RingBuf<MapData>, what: &str) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow!("watching the {what} ring buffer: {e}"))
}
