//! The kernel/user ABI of inferscope, mirrored from `ebpf-programs/include/events.h`.
//!
//! Every `#[repr(C)]` type here has a twin in the C header; `tests/layout.rs`
//! reads the twins back from the compiled objects' BTF and fails on any
//! difference in size or field offset. Plain data only: no logic that the
//! agent could keep elsewhere.

#![no_std]

/// What a probed GPU runtime function does, as far as the counters care (`enum gpu_op`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuOp {
    KernelLaunch = 1,
    GraphLaunch = 2,
    Memcpy = 3,
    Memset = 4,
    Alloc = 5,
    Free = 6,
    Sync = 7,
    Nccl = 8,
}

/// Copy direction (`enum copy_dir`); the index into [`GpuStats::memcpy_bytes`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyDir {
    HostToDevice = 0,
    DeviceToHost = 1,
    DeviceToDevice = 2,
    Other = 3,
    /// Read the direction from the `cudaMemcpyKind`/`hipMemcpyKind` argument.
    FromKindArg = 15,
}

pub const COPY_DIRECTIONS: usize = 4;

/// NCCL collectives and point-to-point calls, in the order of [`GpuStats::nccl_calls`].
pub const NCCL_OPS: [&str; 6] = [
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "broadcast",
    "send",
    "recv",
];

/// The attach cookie of one probed symbol: what it does and where its arguments are.
/// Argument positions are 1-based (0: none), at most [`CALL_ARGS_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub op: GpuOp,
    /// Argument holding the byte count (or element count, for NCCL).
    pub size_arg: u8,
    /// Copy-kind argument, NCCL datatype argument, or allocation out-pointer.
    pub aux_arg: u8,
    pub dir: CopyDir,
    /// Index into [`NCCL_OPS`].
    pub nccl_op: u8,
    /// A CUDA driver API function: not counted when the CUDA runtime calls it.
    pub driver: bool,
    /// The function also gets the return probe (the agent's choice, told to the kernel side).
    pub return_probe: bool,
    /// The runtime library's code around the function, in units of
    /// `1 << code_scale` bytes before and after its entry (see
    /// [`Cookie::within_code`]); `code_after` 0 when unknown.
    pub code_scale: u8,
    pub code_before: u16,
    pub code_after: u16,
}

/// The last argument position the probes read (the sixth: the last passed in
/// a register on x86-64 and the first to need its own on other ABIs).
pub const CALL_ARGS_MAX: u8 = 6;

/// Bit positions of the packed cookie (`enum cookie_layout`).
pub const COOKIE_SIZE_ARG_SHIFT: u32 = 8;
pub const COOKIE_AUX_ARG_SHIFT: u32 = 12;
pub const COOKIE_DIR_SHIFT: u32 = 16;
pub const COOKIE_NCCL_OP_SHIFT: u32 = 20;
pub const COOKIE_DRIVER_SHIFT: u32 = 24;
pub const COOKIE_RETURN_PROBE_SHIFT: u32 = 25;
pub const COOKIE_CODE_SCALE_SHIFT: u32 = 26;
pub const COOKIE_CODE_BEFORE_SHIFT: u32 = 32;
pub const COOKIE_CODE_AFTER_SHIFT: u32 = 48;

impl Cookie {
    pub const fn new(op: GpuOp) -> Self {
        Self {
            op,
            size_arg: 0,
            aux_arg: 0,
            dir: CopyDir::Other,
            nccl_op: 0,
            driver: false,
            return_probe: false,
            code_scale: 0,
            code_before: 0,
            code_after: 0,
        }
    }

    /// Says that the function's library has code from `before` bytes before its
    /// entry to `after` bytes after it: the kernel side then knows a driver
    /// call made from the runtime by where it returns to, rather than by a
    /// stack read on every runtime call. Both are rounded up to the smallest
    /// unit that fits 16 bits (a few bytes of slack at each end).
    pub fn within_code(mut self, before: u64, after: u64) -> Self {
        let larger = before.max(after);
        let mut scale = 0;
        while scale < 63 && (larger >> scale) > 0xfffe {
            scale += 1;
        }
        let units = |bytes: u64| bytes.div_ceil(1u64 << scale) as u16;
        self.code_scale = scale as u8;
        self.code_before = units(before);
        self.code_after = units(after);
        self
    }

    /// The packed form read by `COOKIE_*` in events.h.
    pub const fn encode(self) -> u64 {
        (self.op as u64)
            | ((self.size_arg as u64 & 0xf) << COOKIE_SIZE_ARG_SHIFT)
            | ((self.aux_arg as u64 & 0xf) << COOKIE_AUX_ARG_SHIFT)
            | ((self.dir as u64 & 0xf) << COOKIE_DIR_SHIFT)
            | ((self.nccl_op as u64 & 0xf) << COOKIE_NCCL_OP_SHIFT)
            | ((self.driver as u64) << COOKIE_DRIVER_SHIFT)
            | ((self.return_probe as u64) << COOKIE_RETURN_PROBE_SHIFT)
            | ((self.code_scale as u64 & 0x3f) << COOKIE_CODE_SCALE_SHIFT)
            | ((self.code_before as u64) << COOKIE_CODE_BEFORE_SHIFT)
            | ((self.code_after as u64) << COOKIE_CODE_AFTER_SHIFT)
    }
}

/// Per-process GPU activity (`struct gpu_stats`), one copy per CPU; the agent sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub kernel_launches: u64,
    pub graph_launches: u64,
    pub memcpy_calls: u64,
    pub memcpy_bytes: [u64; COPY_DIRECTIONS],
    pub memset_calls: u64,
    pub memset_bytes: u64,
    pub alloc_calls: u64,
    pub alloc_bytes: u64,
    pub free_calls: u64,
    /// A sum of signed per-CPU changes: one CPU may free what another allocated.
    pub live_bytes: i64,
    pub sync_calls: u64,
    pub sync_ns: u64,
    pub errors: u64,
    pub nccl_calls: [u64; NCCL_OPS.len()],
    pub nccl_bytes: [u64; NCCL_OPS.len()],
}

/// Who a process with GPU counters is, recorded by the kernel at its first
/// counted call (`struct gpu_process`, the `gpu_processes` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuProcess {
    /// The thread group leader's command name, NUL-padded.
    pub comm: [u8; 16],
    pub ppid: u32,
    pub pad: u32,
}

/// Key of the live device allocation table (`struct alloc_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocKey {
    pub tgid: u32,
    pub pad: u32,
    pub ptr: u64,
}

/// Why the kernel side did not count something (`enum drop_reason`); its value indexes `drops`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    StatsTableFull = 0,
    AllocTableFull = 1,
    ThreadStateUnavailable = 2,
    ProcEventRingFull = 3,
    UnreadableArgument = 4,
    NetEventRingFull = 5,
    TlsUnattributed = 6,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [Self; 7] = [
        Self::StatsTableFull,
        Self::AllocTableFull,
        Self::ThreadStateUnavailable,
        Self::ProcEventRingFull,
        Self::UnreadableArgument,
        Self::NetEventRingFull,
        Self::TlsUnattributed,
    ];

    /// Its name in reports and exported labels (the C name, lower case, without `DROP_`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::StatsTableFull => "stats_table_full",
            Self::AllocTableFull => "alloc_table_full",
            Self::ThreadStateUnavailable => "thread_state_unavailable",
            Self::ProcEventRingFull => "proc_event_ring_full",
            Self::UnreadableArgument => "unreadable_argument",
            Self::NetEventRingFull => "net_event_ring_full",
            Self::TlsUnattributed => "tls_unattributed",
        }
    }
}

/// A `watched_ports` value meaning "in every network namespace" (`enum watch_netns`;
/// namespace inodes are far larger).
pub const WATCH_ANY_NETNS: u32 = 1;

/// Kinds of [`ProcEvent`] (`enum proc_event_kind`).
pub const PROC_EXEC: u32 = 1;
pub const PROC_EXIT: u32 = 2;
pub const PROC_LIBS_CHANGED: u32 = 3;

/// A process lifecycle event from the `proc_events` ring buffer (`struct proc_event`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    pub pid: u32,
    pub ktime_ns: u64,
}

/// A process's file-backed mapping and the inode its uprobes belong to
/// (`struct mapped_file`), as the `mapped_files` iterator writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappedFile {
    pub start: u64,
    /// The kernel's encoding of a device number: major << 20 | minor.
    pub dev: u64,
    pub ino: u64,
}

/// Most bytes of one send or receive the kernel copies (`NET_CAPTURE_MAX`).
pub const NET_CAPTURE_MAX: usize = 4096;

/// Kinds of [`NetEventHeader`] (`enum net_event_kind`).
pub const NET_DATA: u8 = 1;
pub const NET_PEER_CLOSED: u8 = 2;
pub const NET_CLOSED: u8 = 3;

/// Directions (`enum net_direction`).
pub const NET_RECV: u8 = 0;
pub const NET_SEND: u8 = 1;

/// The bytes could not be reached (io_uring, sendfile...): timing only.
pub const NET_FLAG_UNREADABLE: u8 = 1;
/// On [`NET_CLOSED`]: the client reset the connection.
pub const NET_FLAG_RESET_BY_PEER: u8 = 2;
/// On [`NET_DATA`]: plaintext read or written through OpenSSL.
pub const NET_FLAG_TLS: u8 = 4;
/// Events of this socket were lost to a full ring buffer since the last one delivered.
pub const NET_FLAG_AFTER_LOSS: u8 = 8;

/// The fixed part of `struct net_event`; `captured` bytes of payload follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEventHeader {
    pub ktime_ns: u64,
    pub sock_cookie: u64,
    pub pid: u32,
    pub len: u32,
    pub captured: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub kind: u8,
    pub direction: u8,
    pub flags: u8,
    pub pad: [u8; 5],
}

#[cfg(feature = "user")]
mod pod {
    // Each is plain #[repr(C)] integers with explicit padding fields, valid for any bit pattern.
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GpuStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GpuProcess {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetEventHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_fields_land_in_their_bits() {
        let c = Cookie {
            op: GpuOp::Nccl,
            size_arg: 3,
            aux_arg: 4,
            dir: CopyDir::FromKindArg,
            nccl_op: 5,
            driver: true,
            return_probe: true,
            code_scale: 7,
            code_before: 0x1234,
            code_after: 0xfedc,
        };
        assert_eq!(
            c.encode(),
            8 | 3 << 8
                | 4 << 12
                | 15 << 16
                | 5 << 20
                | 1 << 24
                | 1 << 25
                | 7 << 26
                | 0x1234 << 32
                | 0xfedc << 48
        );
    }

    #[test]
    fn code_around_a_function_is_scaled_to_fit_and_never_shrinks() {
        let small = Cookie::new(GpuOp::KernelLaunch).within_code(0x1000, 0x8000);
        assert_eq!(
            (small.code_scale, small.code_before, small.code_after),
            (0, 0x1000, 0x8000)
        );
        // 1 GiB after the entry (a runtime in a large library): 16 KiB units, rounded up.
        let large = Cookie::new(GpuOp::KernelLaunch).within_code(3, 1 << 30);
        assert_eq!(large.code_scale, 15);
        assert_eq!(large.code_before, 1);
        assert!((large.code_after as u64) << large.code_scale >= 1 << 30);
    }
}
