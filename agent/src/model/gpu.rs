//! A process's GPU runtime activity, from the kernel's cumulative counters:
//! totals are one reading, deltas the difference of two.

use std::collections::BTreeMap;

use inferscope_shared::{CopyDir, GpuStats, NCCL_OPS};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyBytes {
    pub htod: u64,
    pub dtoh: u64,
    pub dtod: u64,
    pub other: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NcclActivity {
    pub calls: u64,
    pub bytes: u64,
}

/// What a process asked of its GPU runtimes: counts of calls and bytes, and
/// `live_bytes`, a level (the same in a total and a delta). The JSON schema is
/// documented in docs/output.md.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuActivity {
    pub kernel_launches: u64,
    pub graph_launches: u64,
    pub memcpy_bytes: CopyBytes,
    pub memcpy_calls: u64,
    pub memset_calls: u64,
    pub memset_bytes: u64,
    pub alloc_calls: u64,
    pub alloc_bytes: u64,
    pub free_calls: u64,
    pub live_bytes: i64,
    pub sync_calls: u64,
    pub sync_seconds: f64,
    pub errors: u64,
    /// Only the NCCL operations that were called.
    pub nccl: BTreeMap<String, NcclActivity>,
}

impl GpuActivity {
    /// Everything a cumulative reading counts.
    pub fn total(now: &GpuStats) -> Self {
        Self::between(&GpuStats::default(), now)
    }

    /// The activity between two cumulative readings of the same process.
    pub fn between(previous: &GpuStats, now: &GpuStats) -> Self {
        let d = zip_with(now, previous, u64::wrapping_sub);
        let bytes = |dir: CopyDir| d.memcpy_bytes[dir as usize];
        Self {
            kernel_launches: d.kernel_launches,
            graph_launches: d.graph_launches,
            memcpy_bytes: CopyBytes {
                htod: bytes(CopyDir::HostToDevice),
                dtoh: bytes(CopyDir::DeviceToHost),
                dtod: bytes(CopyDir::DeviceToDevice),
                other: bytes(CopyDir::Other),
            },
            memcpy_calls: d.memcpy_calls,
            memset_calls: d.memset_calls,
            memset_bytes: d.memset_bytes,
            alloc_calls: d.alloc_calls,
            alloc_bytes: d.alloc_bytes,
            free_calls: d.free_calls,
            live_bytes: now.live_bytes,
            sync_calls: d.sync_calls,
            sync_seconds: d.sync_ns as f64 / 1e9,
            errors: d.errors,
            nccl: NCCL_OPS
                .iter()
                .enumerate()
                .filter(|&(i, _)| d.nccl_calls[i] > 0)
                .map(|(i, &name)| {
                    (
                        name.to_string(),
                        NcclActivity {
                            calls: d.nccl_calls[i],
                            bytes: d.nccl_bytes[i],
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Combines two counter sets field by field; `live_bytes` (signed) goes through
/// the same two's-complement arithmetic. Sums CPUs' shares and takes deltas.
pub fn zip_with(a: &GpuStats, b: &GpuStats, f: impl Fn(u64, u64) -> u64) -> GpuStats {
    let mut out = GpuStats {
        kernel_launches: f(a.kernel_launches, b.kernel_launches),
        graph_launches: f(a.graph_launches, b.graph_launches),
        memcpy_calls: f(a.memcpy_calls, b.memcpy_calls),
        memset_calls: f(a.memset_calls, b.memset_calls),
        memset_bytes: f(a.memset_bytes, b.memset_bytes),
        alloc_calls: f(a.alloc_calls, b.alloc_calls),
        alloc_bytes: f(a.alloc_bytes, b.alloc_bytes),
        free_calls: f(a.free_calls, b.free_calls),
        live_bytes: f(a.live_bytes as u64, b.live_bytes as u64) as i64,
        sync_calls: f(a.sync_calls, b.sync_calls),
        sync_ns: f(a.sync_ns, b.sync_ns),
        errors: f(a.errors, b.errors),
        ..GpuStats::default()
    };
    for (o, (x, y)) in out
        .memcpy_bytes
        .iter_mut()
        .zip(a.memcpy_bytes.iter().zip(&b.memcpy_bytes))
    {
        *o = f(*x, *y);
    }
    for (o, (x, y)) in out
        .nccl_calls
        .iter_mut()
        .zip(a.nccl_calls.iter().zip(&b.nccl_calls))
    {
        *o = f(*x, *y);
    }
    for (o, (x, y)) in out
        .nccl_bytes
        .iter_mut()
        .zip(a.nccl_bytes.iter().zip(&b.nccl_bytes))
    {
        *o = f(*x, *y);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_deltas_and_live_bytes_is_a_level() {
        let before = GpuStats {
            kernel_launches: 10,
            live_bytes: 4096,
            memcpy_bytes: [1, 2, 3, 4],
            ..Default::default()
        };
        let mut now = GpuStats {
            kernel_launches: 15,
            live_bytes: 1024,
            memcpy_bytes: [11, 2, 5, 4],
            ..Default::default()
        };
        now.nccl_calls[0] = 2;
        now.nccl_bytes[0] = 800;
        let a = GpuActivity::between(&before, &now);
        assert_eq!(a.kernel_launches, 5);
        assert_eq!(a.live_bytes, 1024);
        assert_eq!(
            a.memcpy_bytes,
            CopyBytes {
                htod: 10,
                dtoh: 0,
                dtod: 2,
                other: 0
            }
        );
        assert_eq!(a.nccl.len(), 1);
        assert_eq!(a.nccl["all_reduce"], NcclActivity { calls: 2, bytes: 800 });
    }

    #[test]
    fn live_bytes_freed_on_another_cpu_sum_right() {
        // One CPU's share goes negative when it frees what another CPU allocated.
        let cpu0 = GpuStats {
            live_bytes: 1024,
            alloc_calls: 1,
            ..Default::default()
        };
        let cpu1 = GpuStats {
            live_bytes: -512,
            free_calls: 1,
            ..Default::default()
        };
        let total = zip_with(&cpu0, &cpu1, u64::wrapping_add);
        let a = GpuActivity::between(&GpuStats::default(), &total);
        assert_eq!((a.live_bytes, a.alloc_calls, a.free_calls), (512, 1, 1));
    }
}
