//! `inferscope profile`: sampled stacks of GPU processes and inference
//! servers, named with blazesym (ELF symbols, DWARF where present, the
//! kernel's symbols; files of processes in containers through their
//! `/proc/PID/map_files`), written as folded stacks or a flame graph (inferno).
//! CPython processes get their Python frames too ([`python`]).

pub mod pprof;
pub mod python;

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    io::{self, Write},
    rc::Rc,
};

/// Names addresses; one kept across calls caches what it parsed of each file.
pub use blazesym::symbolize::Symbolizer;
use blazesym::symbolize::{
    Input, Symbolized,
    source::{Kernel, Process, Source},
};

use crate::{
    model::Snapshot,
    probes::{ProfileProbes, StackSample},
    sinks::Sink,
};

/// Sampling in progress, and who is sampled under which name.
pub struct Profiler {
    probes: ProfileProbes,
    /// Processes sampled now.
    sampled: std::collections::BTreeSet<u32>,
    /// Names of every process sampled (exited ones too, for their samples).
    comms: BTreeMap<u32, String>,
    /// CPython processes whose frames are read: their minor version.
    pythons: BTreeMap<u32, u32>,
    /// Kept: it caches what it parsed of each file.
    symbolizer: Symbolizer,
}

impl Profiler {
    /// Starts sampling at `frequency_hz`, `pids` from now (named ones, whatever
    /// they are), the rest as the pipeline reports them.
    pub fn start(frequency_hz: u64, pids: &[u32]) -> anyhow::Result<Self> {
        let mut profiler = Self {
            probes: ProfileProbes::start(frequency_hz)?,
            sampled: Default::default(),
            comms: BTreeMap::new(),
            pythons: BTreeMap::new(),
            symbolizer: Symbolizer::new(),
        };
        for &pid in pids {
            profiler.sample(pid);
        }
        Ok(profiler)
    }

    /// Samples `pid` from now on (once), under its command name.
    pub fn sample(&mut self, pid: u32) {
        if !self.sampled.insert(pid) {
            return;
        }
        if let Err(e) = self.probes.sample(pid) {
            log::warn!("pid {pid} is not profiled: {e:#}");
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        self.comms.insert(pid, comm.trim_end().to_string());
        self.pythons.remove(&pid);
        if let Some(py) = python::detect(pid) {
            match self.probes.sample_python(pid, py.proc) {
                Ok(()) => {
                    log::info!("pid {pid}: reading CPython 3.{} frames", py.minor);
                    self.pythons.insert(pid, py.minor);
                }
                Err(e) => log::warn!("pid {pid}: Python frames not read: {e:#}"),
            }
        }
    }

    /// Samples each GPU process and server of `s` from now on; an exited
    /// process is let go (its name stays for the samples it left).
    fn follow(&mut self, s: &Snapshot) {
        let processes = s
            .processes
            .iter()
            .map(|p| (p.identity.pid, Some(&p.identity.comm)));
        let servers = s.servers.iter().map(|v| (v.pid, v.comm.as_ref()));
        for (pid, comm) in processes.chain(servers) {
            self.sample(pid);
            if let Some(comm) = comm.filter(|c| !c.is_empty()) {
                self.comms.insert(pid, comm.clone());
            }
        }
        for p in s.processes.iter().filter(|p| p.exited) {
            if self.sampled.remove(&p.identity.pid)
                && let Err(e) = self.probes.forget(p.identity.pid)
            {
                log::debug!("pid {}: {e:#}", p.identity.pid);
            }
        }
    }

    /// The stacks sampled so far, named; call while the processes still run.
    pub fn stacks(&self) -> anyhow::Result<Vec<Stack>> {
        Ok(self.name(&self.probes.samples()?))
    }

    /// The stacks sampled since the last call, named, and taken out of the
    /// kernel's tables (a continuous profile's periods).
    pub fn take_stacks(&mut self) -> anyhow::Result<Vec<Stack>> {
        let samples = self.probes.drain()?;
        Ok(self.name(&samples))
    }

    fn name(&self, samples: &[StackSample]) -> Vec<Stack> {
        let mut python_names = HashMap::new();
        for (&pid, &minor) in &self.pythons {
            let Some(names) = python::CodeNames::open(pid, minor) else {
                continue;
            };
            for code in samples.iter().filter(|s| s.pid == pid).flat_map(|s| &s.python) {
                python_names.entry((pid, *code)).or_insert_with(|| {
                    names
                        .name(*code)
                        .map_or_else(|| "[unknown python]".into(), |n| sanitize(&n))
                });
            }
        }
        symbolize(&self.symbolizer, samples, &self.comms, &python_names)
    }

    /// Samples that lost their stack, by cause.
    pub fn losses(&self) -> anyhow::Result<BTreeMap<&'static str, u64>> {
        self.probes.losses()
    }
}

/// The sink through which the pipeline tells the profiler whom to sample
/// (on the pipeline's own thread: the symbolizer stays on one thread).
pub struct Targets(pub Rc<RefCell<Profiler>>);

impl Sink for Targets {
    fn snapshot(&mut self, s: &Snapshot) -> io::Result<()> {
        self.0.borrow_mut().follow(s);
        Ok(())
    }
}

/// Continuous profiling: the sink that also writes the period's profile as a
/// pprof file every `every`, keeping the newest `keep` in `dir`.
pub struct Continuous {
    profiler: Rc<RefCell<Profiler>>,
    dir: std::path::PathBuf,
    every: std::time::Duration,
    keep: usize,
    frequency_hz: u64,
    period_start: std::time::SystemTime,
}

/// Names of the files a continuous profile writes.
const ROTATED_PREFIX: &str = "inferscope-";
const ROTATED_SUFFIX: &str = ".pb.gz";

impl Continuous {
    pub fn new(
        profiler: Rc<RefCell<Profiler>>,
        dir: std::path::PathBuf,
        every: std::time::Duration,
        keep: usize,
        frequency_hz: u64,
    ) -> Self {
        Self {
            profiler,
            dir,
            every,
            keep: keep.max(1),
            frequency_hz,
            period_start: std::time::SystemTime::now(),
        }
    }

    /// Writes the period that ends now and drops the oldest files past `keep`.
    fn rotate(&mut self, now: std::time::SystemTime) -> io::Result<()> {
        let stacks = self
            .profiler
            .borrow_mut()
            .take_stacks()
            .map_err(io::Error::other)?;
        let duration = now.duration_since(self.period_start).unwrap_or_default();
        let profile = pprof::profile(&stacks, self.frequency_hz, self.period_start, duration);
        let stamp = humantime::format_rfc3339_millis(self.period_start)
            .to_string()
            .replace(':', "-");
        let path = self.dir.join(format!("{ROTATED_PREFIX}{stamp}{ROTATED_SUFFIX}"));
        pprof::write(std::io::BufWriter::new(std::fs::File::create(&path)?), &profile)?;
        log::info!("wrote {} ({} stacks)", path.display(), stacks.len());
        self.period_start = now;
        let mut written: Vec<std::path::PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(ROTATED_PREFIX) && n.ends_with(ROTATED_SUFFIX))
            })
            .collect();
        written.sort();
        let excess = written.len().saturating_sub(self.keep);
        for old in &written[..excess] {
            // Someone else may have removed it already.
            if let Err(e) = std::fs::remove_file(old)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Sink for Continuous {
    fn snapshot(&mut self, s: &Snapshot) -> io::Result<()> {
        self.profiler.borrow_mut().follow(s);
        let now = std::time::SystemTime::now();
        if now.duration_since(self.period_start).unwrap_or_default() >= self.every {
            // A period that cannot be written is lost, not the profiling.
            if let Err(e) = self.rotate(now) {
                log::warn!("profile period not written to {}: {e}", self.dir.display());
                self.period_start = now;
            }
        }
        Ok(())
    }

    /// The last, shorter period is written too.
    fn close(&mut self) -> io::Result<()> {
        self.rotate(std::time::SystemTime::now())
    }
}

/// One stack, root first, and its sample count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<String>,
    pub count: u64,
}

/// Names every address of `samples`: user frames in their process, kernel
/// frames (suffixed `_[k]`, as perf does) from kallsyms. A process gone by now
/// or a frame without a symbol reads `[unknown]`. Each stack starts with the
/// process's name from `comms` (else its pid). `symbolizer` keeps what it
/// parsed of each file for the next call. Python frames (named in
/// `python_names` by pid and code object) take the place of the interpreter's
/// own: native frames before its first evaluation loop, the Python frames,
/// then the native frames its innermost loop called.
pub fn symbolize(
    symbolizer: &Symbolizer,
    samples: &[StackSample],
    comms: &BTreeMap<u32, String>,
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
        let source = Source::Process(Process::new(pid.into()));
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
    let mut merged: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for s in samples {
        let root = comms
            .get(&s.pid)
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
        *merged.entry(frames).or_default() += s.count;
    }
    merged
        .into_iter()
        .map(|(frames, count)| Stack { frames, count })
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

/// An interactive SVG flame graph of `stacks`.
pub fn write_flamegraph(out: &mut impl Write, stacks: &[Stack], title: &str) -> io::Result<()> {
    let mut folded = Vec::new();
    write_folded(&mut folded, stacks)?;
    let folded = String::from_utf8_lossy(&folded);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "samples".to_string();
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
        let comms = BTreeMap::from([(u32::MAX, "a;b".to_string())]);
        let stacks = symbolize(&Symbolizer::new(), &samples, &comms, &HashMap::new());
        assert_eq!(
            stacks,
            [Stack {
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
        write_flamegraph(&mut svg, &stacks, "test").unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("<svg"));
    }
}
