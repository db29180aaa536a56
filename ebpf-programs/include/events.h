/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI: every struct the programs write into a map or ring
 * buffer, and the attach-cookie layout the agent encodes. Mirrored field for
 * field by the Rust crate `inferscope-shared`; its tests read these types back
 * from the compiled objects' BTF and fail on any size or offset mismatch.
 */
#ifndef INFERSCOPE_EVENTS_H
#define INFERSCOPE_EVENTS_H

/* What a probed GPU runtime function does, as far as the counters care. */
enum gpu_op {
	GPU_OP_KERNEL_LAUNCH = 1,
	GPU_OP_GRAPH_LAUNCH = 2,
	GPU_OP_MEMCPY = 3,
	GPU_OP_MEMSET = 4,
	GPU_OP_ALLOC = 5,
	GPU_OP_FREE = 6,
	GPU_OP_SYNC = 7,
	GPU_OP_NCCL = 8,
};

/* Copy direction; COPY_FROM_KIND_ARG means "read the cudaMemcpyKind /
 * hipMemcpyKind argument" (both enums share their values). */
enum copy_dir {
	COPY_HTOD = 0,
	COPY_DTOH = 1,
	COPY_DTOD = 2,
	COPY_OTHER = 3,
	COPY_DIRECTIONS = 4,
	COPY_FROM_KIND_ARG = 15,
};

/* NCCL calls, the index into gpu_stats.nccl_*. */
enum nccl_op {
	NCCL_ALL_REDUCE = 0,
	NCCL_ALL_GATHER = 1,
	NCCL_REDUCE_SCATTER = 2,
	NCCL_BROADCAST = 3,
	NCCL_SEND = 4,
	NCCL_RECV = 5,
	NCCL_OPS = 6,
};

/*
 * Attach cookie (bpf_get_attach_cookie), one per probed symbol, so that one
 * program serves every function and the per-function facts stay in a table in
 * the agent. Argument positions are 1-based; 0 means "none".
 */
enum cookie_layout {
	COOKIE_SIZE_ARG_SHIFT = 8,
	COOKIE_AUX_ARG_SHIFT = 12,
	COOKIE_DIR_SHIFT = 16,
	COOKIE_NCCL_OP_SHIFT = 20,
	COOKIE_DRIVER_SHIFT = 24,
	COOKIE_RETURN_PROBE_SHIFT = 25,
	COOKIE_CODE_SCALE_SHIFT = 26,
	COOKIE_CODE_BEFORE_SHIFT = 32,
	COOKIE_CODE_AFTER_SHIFT = 48,
	CALL_ARGS_MAX = 6, /* the last argument position the probes read */
};
#define COOKIE_OP(c) ((c) & 0xff)
#define COOKIE_SIZE_ARG(c) (((c) >> COOKIE_SIZE_ARG_SHIFT) & 0xf) /* bytes or element count */
#define COOKIE_AUX_ARG(c) (((c) >> COOKIE_AUX_ARG_SHIFT) & 0xf)   /* copy kind, NCCL datatype, or alloc out-pointer */
#define COOKIE_DIR(c) (((c) >> COOKIE_DIR_SHIFT) & 0xf)           /* enum copy_dir */
#define COOKIE_NCCL_OP(c) (((c) >> COOKIE_NCCL_OP_SHIFT) & 0xf)   /* enum nccl_op */
#define COOKIE_DRIVER(c) (((c) >> COOKIE_DRIVER_SHIFT) & 0x1)     /* CUDA driver API: skip when called by the runtime */
/* The function also has the return probe (the agent decides which do). */
#define COOKIE_RETURN_PROBE(c) (((c) >> COOKIE_RETURN_PROBE_SHIFT) & 0x1)
/* Where the code of the runtime library around a runtime function lies, as
 * bytes before and after its entry, each in units of 1 << scale; 0 after for a
 * runtime linked into a program with other code. */
#define COOKIE_CODE_SCALE(c) (((c) >> COOKIE_CODE_SCALE_SHIFT) & 0x3f)
#define COOKIE_CODE_BEFORE(c) (((c) >> COOKIE_CODE_BEFORE_SHIFT) & 0xffff)
#define COOKIE_CODE_AFTER(c) (((c) >> COOKIE_CODE_AFTER_SHIFT) & 0xffff)

/* Per-process GPU activity, summed over CPUs by the agent (PERCPU_HASH by tgid). */
struct gpu_stats {
	__u64 kernel_launches;
	__u64 graph_launches;
	__u64 memcpy_calls;
	__u64 memcpy_bytes[COPY_DIRECTIONS];
	__u64 memset_calls;
	__u64 memset_bytes;
	__u64 alloc_calls;
	__u64 alloc_bytes;
	__u64 free_calls;
	__s64 live_bytes;
	__u64 sync_calls;
	__u64 sync_ns;
	__u64 errors;
	__u64 nccl_calls[NCCL_OPS];
	__u64 nccl_bytes[NCCL_OPS];
};

/* Who a process that made a counted GPU call is, recorded at its first one
 * (`gpu_processes`, a hash by tgid): a process can exit before the agent reads
 * /proc, and is still reported under its name. */
struct gpu_process {
	char comm[16]; /* the thread group leader's, as /proc/PID/comm shows */
	__u32 ppid;
	__u32 pad;
};

/* Key of the table of live device allocations. */
struct alloc_key {
	__u32 tgid;
	__u32 pad;
	__u64 ptr;
};

/* Why something was not counted; index into the per-CPU `drops` array. */
enum drop_reason {
	DROP_STATS_TABLE_FULL = 0,
	DROP_ALLOC_TABLE_FULL = 1,
	DROP_THREAD_STATE_UNAVAILABLE = 2,
	DROP_PROC_EVENT_RING_FULL = 3,
	DROP_UNREADABLE_ARGUMENT = 4,
	DROP_NET_EVENT_RING_FULL = 5, /* socket capture ring buffer full */
	DROP_TLS_UNATTRIBUTED = 6, /* OpenSSL plaintext whose connection is not known */
	DROP_REASONS = 7,
};

/* Process lifecycle, sent through the `proc_events` ring buffer. */
enum proc_event_kind {
	PROC_EXEC = 1,
	PROC_EXIT = 2,
	PROC_LIBS_CHANGED = 3, /* the dynamic loader finished loading or unloading objects */
};

struct proc_event {
	__u32 kind;
	__u32 pid;
	__u64 ktime_ns;
};

/*
 * A file a process maps, as the kernel's uprobes know it: the inode of the
 * mapping's file (under overlayfs, the layer's file underneath, which the
 * process's /proc/PID/maps no longer shows from 6.8 on). Written by the
 * `mapped_files` iterator, one per file-backed mapping.
 */
struct mapped_file {
	__u64 start; /* where the mapping starts in the process */
	__u64 dev;   /* the inode's superblock device, the kernel's encoding (major << 20 | minor) */
	__u64 ino;
};

/* ---- Socket payload capture (net_capture.bpf.c) ---- */

/* Most bytes of one send or receive copied to userspace (a power of two); the
 * agent may lower it with the `capture_bytes` global. */
enum net_capture_size {
	NET_CAPTURE_MAX = 4096,
};

/* watched_ports values other than a network namespace's inode. */
enum watch_netns {
	WATCH_NONE = 0,
	WATCH_ANY_NETNS = 1, /* namespace inodes are far larger */
};

enum net_event_kind {
	NET_DATA = 1,       /* bytes moved by one send or receive */
	NET_PEER_CLOSED = 2, /* the client closed its side (TCP_CLOSE_WAIT) */
	NET_CLOSED = 3,     /* the connection is gone (TCP_CLOSE) */
};

enum net_direction {
	NET_RECV = 0,
	NET_SEND = 1,
};

enum net_flag {
	/* The bytes could not be reached (io_uring, sendfile, sendmmsg...): timing only. */
	NET_FLAG_UNREADABLE = 1,
	/* On NET_CLOSED: the client reset the connection (it left, rather than the server aborting). */
	NET_FLAG_RESET_BY_PEER = 2,
	/* NET_DATA from SSL_read/SSL_write: plaintext of a TLS connection. */
	NET_FLAG_TLS = 4,
	/* Events of this socket were lost to a full ring buffer since the last one delivered. */
	NET_FLAG_AFTER_LOSS = 8,
};

struct net_event {
	__u64 ktime_ns;
	__u64 sock_cookie; /* connection identity, unique for the socket's life */
	__u32 pid;
	__u32 len;      /* bytes the call moved */
	__u32 captured; /* bytes of data[] that are valid: min(len, capture_bytes) */
	__u16 local_port;
	__u16 remote_port;
	__u8 kind;
	__u8 direction;
	__u8 flags;
	__u8 pad[5];
	__u8 data[NET_CAPTURE_MAX];
};

/* Never instantiated: names every ABI enum so that clang writes their values
 * into the BTF of the object that references it (net_capture.bpf.o), where
 * shared/tests/layout.rs compares them with the Rust constants. */
struct abi_enums {
	enum gpu_op gpu_op;
	enum copy_dir copy_dir;
	enum nccl_op nccl_op;
	enum cookie_layout cookie_layout;
	enum drop_reason drop_reason;
	enum proc_event_kind proc_event_kind;
	enum net_capture_size net_capture_size;
	enum watch_netns watch_netns;
	enum net_event_kind net_event_kind;
	enum net_direction net_direction;
	enum net_flag net_flag;
};

#endif
