//! `inferscope profile`: sampled stacks of GPU processes and inference
//! servers, named with blazesym (ELF symbol tables, the kernel's symbols;
//! files of processes in containers through their `/proc/PID/map_files`),
//! written as folded stacks or a flame graph (inferno).
//! CPython processes get their Python frames too ([`python`]).

pub mod continuous;
pub mod otlp;
pub mod pprof;
pub mod pyroscope;
pub mod python;
mod ship;
pub mod workload;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{self, Write},
};

/// Names addresses; one kept across calls caches what it parsed of each file.
pub use blazesym::symbolize::Symbolizer;
use blazesym::symbolize::{
    Input, Symbolized,
    source::{Kernel, Process, Source},
};

pub use self::{
    continuous::{Continuous, Destination, Folder, Period},
    workload::Workload,
};
use crate::{
    model::Snapshot,
    probes::{CallStackSample, GpuCall, GpuCallStacks, ProfileProbes, StackSample},
};

/// 1 in how many GPU launches and synchronisations records its stack unless
/// told otherwise: the cost of a recorded stack spread over the calls that
/// record none (see `bench launch-stacks`).
pub const DEFAULT_GPU_CALL_STACK_EVERY: u32 = 64;

/// What a profile counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileKind {
    /// CPU time: stacks interrupted by the sampling clock.
    Cpu,
    /// Where GPU kernels and graphs are launched from (estimated launches).
    GpuLaunches,
    /// Where the process waits for the GPU (estimated nanoseconds waited).
    GpuSyncWait,
}

impl ProfileKind {
    /// Its name in profile stores (Pyroscope's `__name__`): the CPU's as
    /// Grafana Alloy's eBPF profiler names it, so that its views apply.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "process_cpu",
            Self::GpuLaunches => "gpu_launches",
            Self::GpuSyncWait => "gpu_sync_wait",
        }
    }

    /// Inserted before a file's extension for profiles other than the CPU's.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Self::Cpu => "",
            Self::GpuLaunches => ".gpu-launches",
            Self::GpuSyncWait => ".gpu-sync-wait",
        }
    }

    /// What was sampled, for people.
    pub fn sampled(self) -> &'static str {
        match self {
            Self::Cpu => "CPU samples",
            Self::GpuLaunches => "GPU launches",
            Self::GpuSyncWait => "GPU synchronisations",
        }
    }

    /// What a flame graph's widths are.
    pub fn count_name(self) -> &'static str {
        match self {
            Self::Cpu => "samples",
            Self::GpuLaunches => "launches",
            Self::GpuSyncWait => "ns",
        }
    }

    /// What a flame graph of it shows, in a line.
    pub fn caption(self) -> &'static str {
        match self {
            Self::Cpu => "Sampled stacks of the GPU processes and servers (widths: share of samples).",
            Self::GpuLaunches => {
                "Native and Python stacks of sampled kernel and graph launches (widths: estimated launches)."
            }
            Self::GpuSyncWait => {
                "Native and Python stacks of sampled synchronisations (widths: estimated time waited)."
            }
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Cpu => "CPU time of GPU processes and servers",
            Self::GpuLaunches => "Where GPU kernels and graphs are launched from",
            Self::GpuSyncWait => "Where GPU processes wait for the GPU",
        }
    }

    /// What each sample's value is, as (type, unit): a CPU sample counts
    /// one interruption of the sampling clock, as the OpenTelemetry eBPF
    /// profiler and Pyroscope count them.
    pub fn sample_type(self) -> (&'static str, &'static str) {
        match self {
            Self::Cpu => ("samples", "count"),
            Self::GpuLaunches => ("gpu_launches", "count"),
            Self::GpuSyncWait => ("gpu_sync_wait", "nanoseconds"),
        }
    }

    /// What lies between two samples, as (type, unit), and how much of it at
    /// `rate` (CPU: samples per second; GPU calls: 1 call in `rate` recorded).
    pub fn period(self, rate: u64) -> ((&'static str, &'static str), i64) {
        let rate = i64::try_from(rate.max(1)).unwrap_or(i64::MAX);
        match self {
            Self::Cpu => (("cpu", "nanoseconds"), 1_000_000_000 / rate),
            Self::GpuLaunches => (("gpu_launches", "count"), rate),
            Self::GpuSyncWait => (("gpu_sync_calls", "count"), rate),
        }
    }
}

/// Named stacks of one kind. `rate`: CPU samples per second per CPU; for GPU
/// calls, 1 in how many calls was recorded (counts are scaled by it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackProfile {
    pub kind: ProfileKind,
    pub rate: u64,
    pub stacks: Vec<Stack>,
}

/// Sampling in progress, and who is sampled under which name.
pub struct Profiler {
    probes: ProfileProbes,
    frequency_hz: u64,
    /// Where GPU calls are made from, once the GPU probes hand their tables over.
    call_stacks: Option<GpuCallStacks>,
    /// Processes sampled now.
    sampled: BTreeSet<u32>,
    /// Who each process sampled is; exited ones until their last samples are taken.
    workloads: BTreeMap<u32, Workload>,
    /// CPython processes whose frames are read.
    pythons: BTreeMap<u32, python::Python>,
    /// Kept: it caches what it parsed of each file.
    symbolizer: Symbolizer,
    /// When sampling started.
    started: (std::time::SystemTime, std::time::Instant),
    /// What was sampled, once [`Self::finish`] ended it.
    finished: Option<Finished>,
}

/// The samples of a profile that ended, not yet named.
struct Finished {
    cpu: Vec<StackSample>,
    calls: Option<Vec<CallStackSample>>,
    sampled_for: std::time::Duration,
}

impl Profiler {
    /// Starts sampling at `frequency_hz`, `pids` from now (named ones, whatever
    /// they are), the rest as the pipeline reports them.
    pub fn start(frequency_hz: u64, pids: &[u32]) -> anyhow::Result<Self> {
        let mut profiler = Self {
            probes: ProfileProbes::start(frequency_hz)?,
            frequency_hz,
            call_stacks: None,
            sampled: Default::default(),
            workloads: BTreeMap::new(),
            pythons: BTreeMap::new(),
            symbolizer: Symbolizer::new(),
            started: (std::time::SystemTime::now(), std::time::Instant::now()),
            finished: None,
        };
        for &pid in pids {
            profiler.sample(pid);
        }
        Ok(profiler)
    }

    /// Names the stacks the GPU probes record at launches and synchronisations
    /// too, with the Python frames of the CPython processes found so far.
    pub fn add_call_stacks(&mut self, mut call_stacks: GpuCallStacks) {
        for &pid in &self.sampled {
            if let Err(e) = call_stacks.sample(pid) {
                log::warn!("pid {pid}: no stacks at GPU calls: {e:#}");
            }
        }
        for (&pid, py) in &self.pythons {
            if let Err(e) = call_stacks.sample_python(pid, py.proc) {
                log::warn!("pid {pid}: no Python frames at GPU calls: {e:#}");
            }
        }
        self.call_stacks = Some(call_stacks);
    }

    /// Samples `pid` from now on (once), under its command name (and engine,
    /// where recognised) until a snapshot says more of it.
    pub fn sample(&mut self, pid: u32) {
        if !self.sampled.insert(pid) {
            return;
        }
        self.workloads.insert(pid, Workload::of_pid(pid));
        if let Err(e) = self.probes.sample(pid) {
            log::warn!("pid {pid} is not profiled: {e:#}");
        }
        if let Some(calls) = &mut self.call_stacks
            && let Err(e) = calls.sample(pid)
        {
            log::warn!("pid {pid}: no stacks at GPU calls: {e:#}");
        }
        self.pythons.remove(&pid);
        let Some(py) = python::detect(pid) else {
            return;
        };
        let registered = self
            .probes
            .sample_python(pid, py.proc)
            .and_then(|()| match &mut self.call_stacks {
                Some(calls) => calls.sample_python(pid, py.proc),
                None => Ok(()),
            });
        match registered {
            Ok(()) => {
                log::info!("pid {pid}: reading CPython 3.{} frames", py.minor);
                self.pythons.insert(pid, py);
            }
            Err(e) => log::warn!("pid {pid}: Python frames not read: {e:#}"),
        }
    }

    /// Samples each GPU process and server of `s` from now on, named as the
    /// snapshot names it; an exited process is let go (who it was stays for
    /// the samples it left).
    pub fn follow(&mut self, s: &Snapshot) {
        for v in &s.servers {
            self.sample(v.pid);
            if let Some(comm) = v.comm.as_ref().filter(|c| !c.is_empty())
                && let Some(w) = self.workloads.get_mut(&v.pid)
            {
                w.identity.comm = comm.clone();
            }
        }
        for p in &s.processes {
            self.sample(p.identity.pid);
            // A worker under a server's front end runs the server's engine.
            let served = p
                .serves
                .iter()
                .find_map(|server| self.workloads.get(&server.pid)?.engine.clone());
            if let Some(w) = self.workloads.get_mut(&p.identity.pid) {
                // A name read before stays where the snapshot has none.
                let comm = std::mem::take(&mut w.identity.comm);
                w.identity = p.identity.clone();
                if w.identity.comm.is_empty() {
                    w.identity.comm = comm;
                }
                w.pod = p.pod.clone();
                w.engine = w.engine.take().or(served);
            }
        }
        for p in s.processes.iter().filter(|p| p.exited) {
            let pid = p.identity.pid;
            if !self.sampled.remove(&pid) {
                continue;
            }
            if let Err(e) = self.probes.forget(pid) {
                log::debug!("pid {pid}: {e:#}");
            }
            if let Some(calls) = &mut self.call_stacks {
                calls.forget(pid);
            }
        }
    }

    /// Who each process sampled is (exited ones until their last samples are taken).
    pub fn workloads(&self) -> &BTreeMap<u32, Workload> {
        &self.workloads
    }

    /// Ends the profile: what was sampled until now is what [`Self::profiles`]
    /// names. Called as the watch ends, before its probes are let go: closing
    /// them takes seconds, while the processes go on running (and a runtime's
    /// calls seen without its probes would be counted at the driver).
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if self.finished.is_none() {
            let (cpu, calls) = self.samples()?;
            self.finished = Some(Finished {
                cpu,
                calls,
                sampled_for: self.started.1.elapsed(),
            });
        }
        Ok(())
    }

    /// What the kernel's tables hold now: CPU samples, and GPU call stacks when recorded.
    fn samples(&self) -> anyhow::Result<(Vec<StackSample>, Option<Vec<CallStackSample>>)> {
        let calls = self
            .call_stacks
            .as_ref()
            .map(GpuCallStacks::samples)
            .transpose()?;
        Ok((self.probes.samples()?, calls))
    }

    /// When sampling started and how long it lasted (until [`Self::finish`], or now).
    pub fn sampled(&self) -> (std::time::SystemTime, std::time::Duration) {
        let sampled_for = match &self.finished {
            Some(f) => f.sampled_for,
            None => self.started.1.elapsed(),
        };
        (self.started.0, sampled_for)
    }

    /// The profiles sampled (until [`Self::finish`], or so far), named: CPU
    /// first, then GPU calls when sampled. Call while the processes still run.
    pub fn profiles(&self) -> anyhow::Result<Vec<StackProfile>> {
        let (cpu, calls) = match &self.finished {
            Some(f) => (f.cpu.clone(), f.calls.clone()),
            None => self.samples()?,
        };
        Ok(self.name(cpu, calls))
    }

    /// The profiles since the last call, named, and taken out of the kernel's
    /// tables (a continuous profile's periods). Who made them is in
    /// [`Self::workloads`] until the next call.
    pub fn take_profiles(&mut self) -> anyhow::Result<Vec<StackProfile>> {
        let cpu = self.probes.drain()?;
        let calls = self.call_stacks.as_mut().map(GpuCallStacks::drain).transpose()?;
        let profiles = self.name(cpu, calls);
        let in_period: BTreeSet<u32> = profiles.iter().flat_map(|p| &p.stacks).map(|s| s.pid).collect();
        let sampled = &self.sampled;
        self.workloads
            .retain(|pid, _| sampled.contains(pid) || in_period.contains(pid));
        Ok(profiles)
    }

    fn name(&self, cpu: Vec<StackSample>, calls: Option<Vec<CallStackSample>>) -> Vec<StackProfile> {
        let mut profiles = vec![(ProfileKind::Cpu, self.frequency_hz, cpu)];
        if let (Some(calls), Some(tables)) = (calls, &self.call_stacks) {
            let every = u64::from(tables.every());
            // A synchronisation still waiting (or failed) has no time: no stack.
            let of = |kinds: &[GpuCall], value: fn(&CallStackSample) -> u64| -> Vec<StackSample> {
                calls
                    .iter()
                    .filter(|c| kinds.contains(&c.call) && value(c) > 0)
                    .map(|c| StackSample {
                        pid: c.pid,
                        user: c.user.clone(),
                        kernel: Vec::new(),
                        python: c.python.clone(),
                        count: value(c).saturating_mul(every),
                    })
                    .collect()
            };
            profiles.push((
                ProfileKind::GpuLaunches,
                every,
                of(&[GpuCall::KernelLaunch, GpuCall::GraphLaunch], |c| c.calls),
            ));
            profiles.push((
                ProfileKind::GpuSyncWait,
                every,
                of(&[GpuCall::Sync], |c| c.wait_ns),
            ));
        }
        let python_names = self.python_names(profiles.iter().flat_map(|(_, _, s)| s));
        profiles
            .into_iter()
            .map(|(kind, rate, samples)| StackProfile {
                kind,
                rate,
                stacks: symbolize(&self.symbolizer, &samples, &self.workloads, &python_names),
            })
            .collect()
    }

    /// Names the Python code objects of `samples`, read from their processes.
    fn python_names<'a>(
        &self,
        samples: impl Iterator<Item = &'a StackSample>,
    ) -> HashMap<(u32, u64), String> {
        let mut wanted: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for s in samples.filter(|s| self.pythons.contains_key(&s.pid)) {
            wanted.entry(s.pid).or_default().extend(&s.python);
        }
        let mut names = HashMap::new();
        for (pid, codes) in wanted {
            let Some(reader) = self
                .pythons
                .get(&pid)
                .and_then(|py| python::CodeNames::open(pid, py.minor))
            else {
                continue;
            };
            for code in codes {
                names.entry((pid, code)).or_insert_with(|| {
                    reader
                        .name(code)
                        .map_or_else(|| "[unknown python]".into(), |n| sanitize(&n))
                });
            }
        }
        names
    }

    /// Samples that lost their stack, by cause; GPU calls' under `gpu_call_`.
    pub fn losses(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .probes
            .losses()
            .into_iter()
            .map(|(why, n)| (why.to_string(), n))
            .collect();
        if let Some(calls) = &self.call_stacks {
            out.extend(
                calls
                    .losses()
                    .into_iter()
                    .map(|(why, n)| (format!("gpu_call_{why}"), n)),
            );
        }
        out
    }
}

/// One stack of one process, root first, and its sample count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub pid: u32,
    pub frames: Vec<String>,
    pub count: u64,
}

/// Names every address of `samples`: user frames in their process, kernel
/// frames (suffixed `_[k]`, as perf does) from kallsyms. A process gone by now
/// or a frame without a symbol reads `[unknown]`. Each stack starts with the
/// process's command name from `workloads` (else its pid). `symbolizer` keeps what it
/// parsed of each file for the next call. Python frames (named in
/// `python_names` by pid and code object) take the place of the interpreter's
/// own: native frames before its first evaluation loop, the Python frames,
/// then the native frames its innermost loop called.
pub fn symbolize(
    symbolizer: &Symbolizer,
    samples: &[StackSample],
    workloads: &BTreeMap<u32, Workload>,
    python_names: &HashMap<(u32, u64), String>,
) -> Vec<Stack> {
    let mut by_pid: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut kernel: Vec<u64> = Vec::new();
    for s in samples {
        by_pid.entry(s.pid).or_default().extend(&s.user);
        kernel.extend(&s.kernel);
    }
    let mut names: HashMap<(u32, u64), String> = HashMap::new();
    for (pid, mut addrs) in by_pid {
        addrs.sort_unstable();
        addrs.dedup();
        // Names from the ELF symbol tables: DWARF would name little more
        // (frames are not expanded into inlined functions), and parsing it
        // keeps tens of MiB of a large library's debug sections resident.
        let source = Source::Process(Process {
            debug_syms: false,
            ..Process::new(pid.into())
        });
        name_all(symbolizer, &source, &addrs, "", |addr, name| {
            names.insert((pid, addr), name);
        });
    }
    kernel.sort_unstable();
    kernel.dedup();
    let source = Source::Kernel(Kernel::default());
    name_all(symbolizer, &source, &kernel, "_[k]", |addr, name| {
        names.insert((0, addr), name);
    });
    let mut merged: BTreeMap<(Vec<String>, u32), u64> = BTreeMap::new();
    for s in samples {
        let root = workloads
            .get(&s.pid)
            .map(|w| &w.identity.comm)
            .filter(|c| !c.is_empty())
            .map_or_else(|| format!("pid {}", s.pid), |c| format!("{c} ({})", s.pid));
        let name = |n: Option<&String>| n.cloned().unwrap_or_else(|| "[unknown]".into());
        let user: Vec<String> = s
            .user
            .iter()
            .rev()
            .map(|a| name(names.get(&(s.pid, *a))))
            .collect();
        let python: Vec<String> = s
            .python
            .iter()
            .rev()
            .map(|c| name(python_names.get(&(s.pid, *c))))
            .collect();
        let kernel = s.kernel.iter().rev().map(|a| name(names.get(&(0, *a))));
        let mut frames = vec![sanitize(&root)];
        frames.extend(with_python(user, python));
        frames.extend(kernel);
        *merged.entry((frames, s.pid)).or_default() += s.count;
    }
    merged
        .into_iter()
        .map(|((frames, pid), count)| Stack { pid, frames, count })
        .collect()
}

/// A native user stack (root first) with the Python frames in the place of the
/// interpreter's own: native frames before its first evaluation loop (only
/// when the walk reached the program's entry: one cut short by code without
/// frame pointers has only its leaf to trust), the Python frames, then what
/// its innermost loop called.
fn with_python(user: Vec<String>, python: Vec<String>) -> Vec<String> {
    if python.is_empty() {
        return user;
    }
    let eval = |n: &String| n.starts_with("_PyEval_EvalFrame");
    let whole = user
        .first()
        .is_some_and(|f| f == "_start" || f.starts_with("__libc_start"));
    match (user.iter().position(eval), user.iter().rposition(eval)) {
        (Some(first), Some(last)) if whole => {
            let mut frames = user[..first].to_vec();
            frames.extend(python);
            frames.extend_from_slice(&user[last + 1..]);
            frames
        }
        _ => {
            let mut frames = python;
            frames.extend(user.last().cloned());
            frames
        }
    }
}

/// Names `addrs` in `source`, calling `named` for each; a source that cannot
/// be read (the process exited) leaves them unnamed.
fn name_all(
    symbolizer: &Symbolizer,
    source: &Source,
    addrs: &[u64],
    suffix: &str,
    mut named: impl FnMut(u64, String),
) {
    if addrs.is_empty() {
        return;
    }
    match symbolizer.symbolize(source, Input::AbsAddr(addrs)) {
        Ok(symbols) => {
            for (addr, sym) in addrs.iter().zip(symbols) {
                if let Symbolized::Sym(sym) = sym {
                    named(*addr, format!("{}{suffix}", sanitize(&sym.name)));
                }
            }
        }
        Err(e) => log::debug!("symbolizing {source:?}: {e}"),
    }
}

/// Folded stacks use `;` between frames and a space before the count.
fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// `frame;frame;frame count` per line (Brendan Gregg's folded format).
pub fn write_folded(out: &mut impl Write, stacks: &[Stack]) -> io::Result<()> {
    for s in stacks {
        writeln!(out, "{} {}", s.frames.join(";"), s.count)?;
    }
    Ok(())
}

/// An interactive SVG flame graph of `profile`.
pub fn write_flamegraph(out: &mut impl Write, profile: &StackProfile) -> io::Result<()> {
    let mut folded = Vec::new();
    write_folded(&mut folded, &profile.stacks)?;
    let folded = String::from_utf8_lossy(&folded);
    let mut options = inferno::flamegraph::Options::default();
    options.title = profile.kind.title().to_string();
    options.count_name = profile.kind.count_name().to_string();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_frames_take_the_interpreters_place() {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let python = v(&["main (app.py:1)", "f (app.py:9)"]);
        // A whole walk: the entry, the loops replaced, the C function f called.
        let whole = v(&[
            "_start",
            "Py_RunMain",
            "_PyEval_EvalFrameDefault",
            "_PyEval_EvalFrameDefault",
            "PyLong_FromLong",
        ]);
        assert_eq!(
            with_python(whole, python.clone()),
            v(&[
                "_start",
                "Py_RunMain",
                "main (app.py:1)",
                "f (app.py:9)",
                "PyLong_FromLong"
            ])
        );
        // A walk cut short (no frame pointers): only its leaf is trusted.
        let cut = v(&["PyLong_Type", "_PyEval_EvalFrameDefault", "_PyLong_Add"]);
        assert_eq!(
            with_python(cut, python.clone()),
            v(&["main (app.py:1)", "f (app.py:9)", "_PyLong_Add"])
        );
        assert_eq!(with_python(v(&["a", "b"]), Vec::new()), v(&["a", "b"]));
    }

    #[test]
    fn stacks_are_root_first_named_by_process_and_merged() {
        // Addresses nobody can name: the kernel's own text is not at 1 or 2.
        let samples = [
            StackSample {
                pid: u32::MAX,
                user: vec![2, 1],
                count: 3,
                ..StackSample::default()
            },
            StackSample {
                pid: u32::MAX,
                user: vec![2, 1],
                count: 4,
                ..StackSample::default()
            },
        ];
        let mut workload = Workload::of_pid(u32::MAX);
        workload.identity.comm = "a;b".into();
        let workloads = BTreeMap::from([(u32::MAX, workload)]);
        let stacks = symbolize(&Symbolizer::new(), &samples, &workloads, &HashMap::new());
        assert_eq!(
            stacks,
            [Stack {
                pid: u32::MAX,
                frames: vec![
                    format!("a:b ({})", u32::MAX),
                    "[unknown]".into(),
                    "[unknown]".into()
                ],
                count: 7
            }]
        );
        let mut folded = Vec::new();
        write_folded(&mut folded, &stacks).unwrap();
        assert_eq!(
            String::from_utf8(folded).unwrap(),
            format!("a:b ({});[unknown];[unknown] 7\n", u32::MAX)
        );
        let mut svg = Vec::new();
        let profile = StackProfile {
            kind: ProfileKind::Cpu,
            rate: 49,
            stacks,
        };
        write_flamegraph(&mut svg, &profile).unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("<svg"));
    }
}
