//! Continuous profiling: the sink that ends a period every `every`, takes its
//! profiles out of the kernel's tables and hands them, with who made them, to
//! each destination (files in a folder, a Pyroscope server, ...).

use std::{
    cell::RefCell,
    collections::BTreeMap,
    io,
    path::PathBuf,
    rc::Rc,
    time::{Duration, SystemTime},
};

use super::{ProfileKind, Profiler, StackProfile, Workload, pprof};
use crate::{model::Snapshot, sinks::Sink};

/// One period's profiles: CPU first, then GPU calls where recorded.
pub struct Period<'a> {
    pub start: SystemTime,
    pub duration: Duration,
    pub profiles: &'a [StackProfile],
    /// Who made the samples, by pid.
    pub workloads: &'a BTreeMap<u32, Workload>,
}

impl Period<'_> {
    /// Its profiles worth delivering: the CPU's always, GPU calls' only where a process made any.
    pub fn delivered(&self) -> impl Iterator<Item = &StackProfile> {
        self.profiles
            .iter()
            .filter(|p| p.kind == ProfileKind::Cpu || !p.stacks.is_empty())
    }

    /// Who made `pid`'s samples; for a process the profiler did not follow,
    /// what its pid alone tells.
    pub fn workload(&self, pid: u32) -> Workload {
        self.workloads
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| Workload::of_pid(pid))
    }
}

/// Where a continuous profile's periods go.
pub trait Destination {
    /// A period that ended; an error loses that period, not the profiling.
    fn deliver(&mut self, period: &Period<'_>) -> io::Result<()>;

    /// Profiling stops, after the last period: deliver what is still held.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// For the log.
    fn describe(&self) -> String;
}

pub struct Continuous {
    profiler: Rc<RefCell<Profiler>>,
    every: Duration,
    destinations: Vec<Box<dyn Destination>>,
    period_start: SystemTime,
}

impl Continuous {
    pub fn new(
        profiler: Rc<RefCell<Profiler>>,
        every: Duration,
        destinations: Vec<Box<dyn Destination>>,
    ) -> Self {
        Self {
            profiler,
            every,
            destinations,
            period_start: SystemTime::now(),
        }
    }

    /// Ends the period at `now` and delivers it everywhere.
    fn end_period(&mut self, now: SystemTime) -> io::Result<()> {
        let start = std::mem::replace(&mut self.period_start, now);
        let profiles = self
            .profiler
            .borrow_mut()
            .take_profiles()
            .map_err(io::Error::other)?;
        let profiler = self.profiler.borrow();
        let period = Period {
            start,
            duration: now.duration_since(start).unwrap_or_default(),
            profiles: &profiles,
            workloads: profiler.workloads(),
        };
        for destination in &mut self.destinations {
            if let Err(e) = destination.deliver(&period) {
                log::warn!("profile period not delivered to {}: {e}", destination.describe());
            }
        }
        Ok(())
    }
}

impl Sink for Continuous {
    /// The pipeline has the profiler follow each snapshot; this only marks the periods.
    fn snapshot(&mut self, _: &Snapshot) -> io::Result<()> {
        let now = SystemTime::now();
        // A period that cannot be read is lost, not the profiling.
        if now.duration_since(self.period_start).unwrap_or_default() >= self.every
            && let Err(e) = self.end_period(now)
        {
            log::warn!("profile period lost: {e}");
        }
        Ok(())
    }

    /// The last, shorter period is delivered too.
    fn close(&mut self) -> io::Result<()> {
        self.end_period(SystemTime::now())?;
        for destination in &mut self.destinations {
            destination.close()?;
        }
        Ok(())
    }
}

/// Periods as pprof files in a folder, the newest `keep` periods kept.
pub struct Folder {
    dir: PathBuf,
    keep: usize,
}

/// Names of the files a continuous profile writes: the prefix, the period's
/// start (RFC 3339, `:` as `-`, ending in `Z`), the kind's suffix, the extension.
const ROTATED_PREFIX: &str = "inferscope-";
const ROTATED_EXTENSION: &str = ".pb.gz";

impl Folder {
    pub fn new(dir: PathBuf, keep: usize) -> Self {
        Self {
            dir,
            keep: keep.max(1),
        }
    }
}

impl Destination for Folder {
    /// Writes the period and drops the files of the oldest periods past `keep`.
    fn deliver(&mut self, period: &Period<'_>) -> io::Result<()> {
        let stamp = humantime::format_rfc3339_millis(period.start)
            .to_string()
            .replace(':', "-");
        for profile in period.delivered() {
            let name = format!(
                "{ROTATED_PREFIX}{stamp}{}{ROTATED_EXTENSION}",
                profile.kind.file_suffix()
            );
            let path = self.dir.join(name);
            let encoded = pprof::profile(profile, period.start, period.duration);
            pprof::write(io::BufWriter::new(std::fs::File::create(&path)?), &encoded)?;
            log::info!("wrote {} ({} stacks)", path.display(), profile.stacks.len());
        }
        let names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for old in past_keep(&names, self.keep) {
            let old = self.dir.join(old);
            // Someone else may have removed it already.
            if let Err(e) = std::fs::remove_file(&old)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(e);
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

/// The files of `names` (a continuous profile's folder) that belong to
/// periods older than the newest `keep`: every kind of profile of a period
/// goes or stays together. Other files are not touched.
fn past_keep(names: &[String], keep: usize) -> Vec<&String> {
    let period = |name: &str| -> Option<String> {
        let (stamp, _) = name
            .strip_prefix(ROTATED_PREFIX)
            .filter(|n| n.ends_with(ROTATED_EXTENSION))?
            .split_once('Z')?;
        Some(stamp.to_string())
    };
    let mut periods: Vec<String> = names.iter().filter_map(|n| period(n)).collect();
    periods.sort_unstable();
    periods.dedup();
    let Some(oldest_kept) = periods.len().checked_sub(keep).map(|i| periods[i].clone()) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| period(n).is_some_and(|p| p < oldest_kept))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_whole_periods_and_nothing_else_is_touched() {
        let names: Vec<String> = [
            "inferscope-2026-11-30T21-00-00.000Z.pb.gz",
            "inferscope-2026-11-30T21-00-00.000Z.gpu-launches.pb.gz",
            "inferscope-2026-11-30T21-01-00.000Z.pb.gz",
            "inferscope-2026-11-30T21-02-00.000Z.pb.gz",
            "inferscope-2026-11-30T21-02-00.000Z.gpu-sync-wait.pb.gz",
            "notes.txt",
            "inferscope-junk.pb.gz",
        ]
        .map(String::from)
        .to_vec();
        let gone: Vec<&str> = past_keep(&names, 2).into_iter().map(String::as_str).collect();
        assert_eq!(
            gone,
            [
                "inferscope-2026-11-30T21-00-00.000Z.pb.gz",
                "inferscope-2026-11-30T21-00-00.000Z.gpu-launches.pb.gz"
            ]
        );
        assert!(past_keep(&names, 3).is_empty());
    }
}
