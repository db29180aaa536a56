//! The one clock: eBPF timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) and
//! the agent's own readings on the same scale, turned into wall-clock time
//! with one offset taken at start-up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in nanoseconds.
    wall_offset_ns: i128,
}

impl Clock {
    /// The host's clocks, as they relate now.
    pub fn system() -> Self {
        Self {
            wall_offset_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC),
        }
    }

    /// A clock whose monotonic zero is `epoch` (for replaying recorded events).
    pub fn starting_at(epoch: SystemTime) -> Self {
        let ns = epoch.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self {
            wall_offset_ns: ns as i128,
        }
    }

    /// Now, on the kernel's timestamp scale.
    pub fn now_ns(&self) -> u64 {
        read(libc::CLOCK_MONOTONIC) as u64
    }

    /// The wall-clock time of a kernel timestamp.
    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (ktime_ns as i128 + self.wall_offset_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// Time since boot, suspended time included: the scale of a process's start
/// time in `/proc/PID/stat`.
pub fn since_boot() -> Duration {
    Duration::from_nanos(read(libc::CLOCK_BOOTTIME) as u64)
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}
