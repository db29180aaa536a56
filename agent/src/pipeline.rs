//! The one data path: sources → join → sinks, on one clock and one tick, and
//! [`watch`], where every live command builds it (the composition root).
//!
//! Sources: [`GpuProcesses`] (process lifecycle, discovery, GPU calls),
//! [`Servers`] (socket capture), then those only read at a tick: GPU devices
//! (NVML, ROCm SMI) and Kubernetes pods. Ring buffers are drained as they
//! fill; at each tick the pipeline reads every [`Source`] once, in order, the
//! join builds one [`Snapshot`](crate::model::Snapshot), and every sink gets
//! it. Finished requests reach sinks as they finish, and are counted in the
//! next snapshot.

use std::{cell::RefCell, collections::HashSet, path::PathBuf, rc::Rc, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf,
    maps::{MapData, RingBuf},
};
use inferscope_shared::{PROC_EXEC, PROC_EXIT};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::Notify,
    time::{Instant, MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    clock::Clock,
    decode::NetEvent,
    discover::Discovery,
    join::Join,
    model::RequestRecord,
    probes::{self, GpuProbes, NetProbes, ProcessProbes, decode_event},
    profile::Profiler,
    sinks::Sink,
    sources::{GpuProcesses, KubeConfig, KubePods, NvmlSource, Readings, RocmSmiSource, Servers, Source},
};

/// How often socket captures are drained without a wake-up: the kernel wakes
/// the agent only once 256 KiB wait (`net_capture.bpf.c`), so this bounds how
/// late a trickle of captures is read; shorter costs wake-ups and small
/// batches decoded cold (docs/architecture.md, *Wake-ups are batched*).
pub const NET_DRAIN_PERIOD: Duration = Duration::from_millis(100);

/// When to report, and for how long.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub interval: Duration,
    /// Stop after this long (a last snapshot covers the remainder); `None`: until a signal.
    pub duration: Option<Duration>,
    /// Stop when notified, as on a signal (a command's own way to end, e.g. a key).
    pub stop: Option<Arc<Notify>>,
}

/// What to watch: the live commands' flags, parsed.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Time between snapshots.
    pub interval: Duration,
    /// Only these processes, when any; their listening ports are captured too.
    pub pids: Vec<u32>,
    /// Local ports whose requests are captured whoever serves them.
    pub ports: Vec<u16>,
    /// Command names treated as inference servers.
    pub comms: Vec<String>,
    /// How long a GPU library keeps its probes once no process maps it.
    pub probe_linger: Duration,
    /// Bytes of each send or receive copied for decoding.
    pub capture_bytes: u32,
    /// NVML and ROCm SMI libraries other than the system's.
    pub nvml_library: Option<PathBuf>,
    pub rocm_smi_library: Option<PathBuf>,
    /// Pod names from this API server, listed again every `kube_refresh`.
    pub kube: Option<KubeConfig>,
    pub kube_refresh: Duration,
}

/// How long a command watches, and who else follows what it sees.
#[derive(Default)]
pub struct WatchOptions {
    /// Until this passes (else until a signal or `stop`).
    pub duration: Option<Duration>,
    pub stop: Option<Arc<Notify>>,
    /// Samples the processes each snapshot names, and gets the GPU call stacks.
    pub profiler: Option<Rc<RefCell<Profiler>>>,
    /// 1 in how many GPU launches and synchronisations records its stack; 0: none.
    pub gpu_call_stack_every: u32,
}

/// What the sinks are built with: once the GPU probes are loaded, before they attach.
pub struct Started {
    /// The node whose pods are known (`--kube-node`, `NODE_NAME` or the host
    /// name), when they are: sinks name the pods, and the node.
    pub kube_node: Option<String>,
}

/// Watches what `config` names as `options` say, delivering to the sinks
/// `sinks` builds: the sources are built here, from the config, and nowhere else.
pub fn watch(
    config: &WatchConfig,
    options: WatchOptions,
    sinks: impl FnOnce(Started) -> Result<Vec<Box<dyn Sink>>>,
) -> Result<()> {
    probes::host::require_privileges()?;
    probes::raise_memlock_limit();
    let clock = Clock::system();
    let btf = Btf::from_sys_fs().context(
        "the programs need the kernel's BTF at /sys/kernel/btf/vmlinux (a kernel built with \
         CONFIG_DEBUG_INFO_BTF; in a container, mount the host's /sys/kernel/btf)",
    )?;
    let only = (!config.pids.is_empty()).then(|| config.pids.iter().copied().collect::<HashSet<_>>());
    let kube = config.kube.clone().and_then(|kube| {
        log::info!(
            "pods from the Kubernetes API at {} (node {})",
            kube.api,
            kube.node
        );
        KubePods::start(kube, config.kube_refresh)
            .inspect_err(|e| log::warn!("no pod names: {e}"))
            .ok()
    });
    // Stacks at GPU calls are extra: without them the counts still come.
    let mut gpu = match GpuProbes::load(&btf, options.gpu_call_stack_every) {
        Err(e) if options.gpu_call_stack_every > 0 => {
            log::warn!("no stacks at GPU calls (their probe variant did not load): {e:#}");
            GpuProbes::load(&btf, 0)?
        }
        loaded => loaded?,
    };
    // The profiler and the sinks before the probes attach: whoever names call
    // stacks must know the processes it reads Python frames of by the first call.
    if let (Some(profiler), Some(call_stacks)) = (&options.profiler, gpu.take_call_stacks()) {
        profiler.borrow_mut().add_call_stacks(call_stacks);
    }
    let sinks = sinks(Started {
        kube_node: config
            .kube
            .as_ref()
            .filter(|_| kube.is_some())
            .map(|k| k.node.clone()),
    })?;
    let processes = GpuProcesses::start(
        Discovery::new("/proc"),
        gpu,
        ProcessProbes::load(&btf)?,
        only,
        config.probe_linger,
    )?;
    let net = NetProbes::load(&btf, config.capture_bytes);
    // Kernel BTF is only needed to load; parsed, it weighs tens of MiB.
    drop(btf);
    // Hand what parsing it took back to the system, not only to the allocator.
    // SAFETY: malloc_trim only releases free memory at the heap's top.
    unsafe { libc::malloc_trim(0) };
    // Request metrics need socket capture; GPU activity does not. Say so and go on without.
    let servers = match net {
        Ok(net) => {
            log::info!("socket capture through {}", net.socket_hook());
            Some(Servers::start(
                net,
                "/proc".into(),
                &config.ports,
                config.comms.clone(),
                clock,
            )?)
        }
        Err(e) => {
            log::warn!("request metrics unavailable (socket capture did not load): {e:#}");
            None
        }
    };
    // Read at each tick after the two above, in this order; each only where present.
    let polled: Vec<Box<dyn Source>> = [
        kube.map(|k| Box::new(k) as Box<dyn Source>),
        NvmlSource::open(config.nvml_library.as_deref()).map(|n| Box::new(n) as Box<dyn Source>),
        RocmSmiSource::open(config.rocm_smi_library.as_deref()).map(|r| Box::new(r) as Box<dyn Source>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut pipeline = Pipeline::new(clock, processes, servers, polled, sinks, config.pids.clone())?;
    pipeline.profiler = options.profiler;
    let schedule = Schedule {
        interval: config.interval,
        duration: options.duration,
        stop: options.stop,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?
        .block_on(pipeline.run(schedule))?;
    Ok(())
}

pub struct Pipeline {
    clock: Clock,
    /// The two sources with ring buffers, kept apart from the rest: process
    /// events steer which servers are captured, and captures made before a
    /// process exited are drained before its exit.
    processes: GpuProcesses,
    servers: Option<Servers>,
    /// The sources only read at a tick, in the order they are read.
    polled: Vec<Box<dyn Source>>,
    join: Join,
    sinks: Vec<Box<dyn Sink>>,
    /// Told of each snapshot's processes, whom it samples.
    profiler: Option<Rc<RefCell<Profiler>>>,
    /// Processes named with `--pid`: their ports are captured whatever they run.
    named: Vec<u32>,
    /// Requests finished during the current interval.
    finished: Vec<RequestRecord>,
}

impl Pipeline {
    fn new(
        clock: Clock,
        processes: GpuProcesses,
        mut servers: Option<Servers>,
        polled: Vec<Box<dyn Source>>,
        sinks: Vec<Box<dyn Sink>>,
        named: Vec<u32>,
    ) -> Result<Self> {
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
            polled,
            join: Join::default(),
            sinks,
            profiler: None,
            named,
            finished: Vec::new(),
        })
    }

    /// Runs until the schedule's end or SIGINT/SIGTERM, then hands out a last snapshot.
    pub async fn run(mut self, schedule: Schedule) -> Result<()> {
        let mut proc_events = readiness(self.processes.events()?, "process event")?;
        let mut net_events = match &mut self.servers {
            Some(s) => Some(readiness(s.events()?, "socket capture")?),
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
                if let Some(profiler) = &self.profiler {
                    profiler.borrow_mut().finish().context("ending the profile")?;
                }
                return Ok(());
            }
        }
    }

    /// Reads every source once, in order, and hands the snapshot to every sink.
    fn tick(&mut self, interval: Duration) -> Result<()> {
        let now_ns = self.clock.now_ns();
        let mut readings = Readings::new(self.clock.wall(now_ns), interval);
        readings.finished = std::mem::take(&mut self.finished);
        self.processes.read(now_ns, &mut readings)?;
        if let Some(servers) = &mut self.servers {
            servers.read(now_ns, &mut readings)?;
        }
        for source in &mut self.polled {
            source.read(now_ns, &mut readings)?;
        }
        let snapshot = self.join.snapshot(readings);
        if let Some(profiler) = &self.profiler {
            profiler.borrow_mut().follow(&snapshot);
        }
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
fn readiness(ring: RingBuf<MapData>, what: &str) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow!("watching the {what} ring buffer: {e}"))
}
