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

#define NCCL_OPS 6 /* all_reduce, all_gather, reduce_scatter, broadcast, send, recv */

/*
 * Attach cookie (bpf_get_attach_cookie), one per probed symbol, so that one
 * program serves every function and the per-function facts stay in a table in
 * the agent. Argument positions are 1-based; 0 means "none".
 */
#define COOKIE_OP(c) ((c) & 0xff)
#define COOKIE_SIZE_ARG(c) (((c) >> 8) & 0xf)  /* bytes or element count */
#define COOKIE_AUX_ARG(c) (((c) >> 12) & 0xf)  /* copy kind, NCCL datatype, or alloc out-pointer */
#define COOKIE_DIR(c) (((c) >> 16) & 0xf)      /* enum copy_dir */
#define COOKIE_NCCL_OP(c) (((c) >> 20) & 0xf)  /* index into nccl_* below */
#define COOKIE_DRIVER(c) (((c) >> 24) & 0x1)   /* CUDA driver API: skip when called by the runtime */

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
	DROP_THREAD_STATE = 2,
	DROP_PROC_EVENT = 3,
	DROP_UNREADABLE_ARG = 4,
	DROP_NET_EVENT = 5, /* socket capture ring buffer full */
	DROP_REASONS = 6,
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

#endif

/* ---- Socket payload capture (net_capture.bpf.c) ---- */

/* Most bytes of one send or receive copied to userspace (a power of two); the
 * agent may lower it with the `capture_bytes` global. */
#define NET_CAPTURE_MAX 4096

enum net_event_kind {
	NET_DATA = 1,       /* bytes moved by one send or receive */
	NET_PEER_CLOSED = 2, /* the client closed its side (TCP_CLOSE_WAIT) */
	NET_CLOSED = 3,     /* the connection is gone (TCP_CLOSE) */
};

enum net_direction {
	NET_RECV = 0,
	NET_SEND = 1,
};

/* The bytes could not be reached (io_uring, sendfile, sendmmsg...): timing only. */
#define NET_FLAG_UNREADABLE 1
/* On NET_CLOSED: the client reset the connection (it left, rather than the server aborting). */
#define NET_FLAG_RESET_BY_PEER 2
/* NET_DATA from SSL_read/SSL_write: plaintext of a TLS connection. */
#define NET_FLAG_TLS 4

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
