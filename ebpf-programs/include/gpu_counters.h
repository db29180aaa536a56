/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-process GPU counters and per-thread call state: what every probed GPU
 * call pays for (gpu_calls.bpf.c), and what the launch benchmark measures
 * (bench_baseline.bpf.c), from this one definition.
 */
#ifndef INFERSCOPE_GPU_COUNTERS_H
#define INFERSCOPE_GPU_COUNTERS_H

#include "common.h"
#include "stacks.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, __u32); /* tgid */
	__type(value, struct gpu_stats);
} gpu_stats SEC(".maps");

/* tgid -> who it is, written with its gpu_stats entry and removed with it by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct gpu_process);
} gpu_processes SEC(".maps");

/*
 * Per-thread state, freed by the kernel with the thread.
 * `runtime_*` marks the CUDA runtime call in flight on this thread, so that the
 * driver call it makes underneath is not counted a second time. Runtime calls
 * with a return probe (allocation, synchronisation) clear the marker there.
 * Launches and copies have no return probe (hot path), so their marker is
 * checked for staleness instead, at the driver call: it is nested in the
 * runtime call only if its stack pointer is below the runtime call's and
 *  - for a runtime library of its own, the driver call returns into that
 *    library's code (`runtime_code_*`, from the entry address and the cookie:
 *    no memory read on the runtime call's hot path);
 *  - for a runtime linked into a program (whose code calls the driver too), the
 *    runtime call's return address is still on the stack where it was pushed
 *    (`runtime_ret`, read at the runtime call).
 * (A return probe replaces the return address with its trampoline, which is why
 * calls with one are cleared instead.)
 * `pending_*` carries what a return probe needs from its entry.
 */
struct thread_state {
	struct call_stack_key pending_stack; /* the synchronisation's stack, when sampled */
	__u64 runtime_sp;
	__u64 runtime_ret;
	__u64 runtime_code_start;
	__u64 runtime_code_end; /* 0: check runtime_ret instead */
	__u32 runtime_op;
	__u32 runtime_return_probe; /* the runtime call has a return probe (cookie bit) */
	__u64 pending_cookie;
	__u64 pending_start_ns;
	__u64 pending_size;
	__u64 pending_out_ptr;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} thread_states SEC(".maps");

static const struct gpu_stats zero_stats;


/* Records who the calling process is, at its first counted call (cold path). */
static __always_inline void remember_process(__u32 tgid)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct gpu_process p = {};

	BPF_CORE_READ_INTO(&p.comm, task, group_leader, comm);
	p.ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_map_update_elem(&gpu_processes, &tgid, &p, BPF_NOEXIST);
}

/* The calling process's counters, created at its first counted call. */
static __always_inline struct gpu_stats *stats_for(__u32 tgid)
{
	struct gpu_stats *s = bpf_map_lookup_elem(&gpu_stats, &tgid);
	if (s)
		return s;
	remember_process(tgid);
	s = lookup_or_init(&gpu_stats, &tgid, &zero_stats);
	if (!s)
		count_drop(DROP_STATS_TABLE_FULL);
	return s;
}

static __always_inline struct thread_state *thread_state(void)
{
	struct thread_state *t = bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		count_drop(DROP_THREAD_STATE_UNAVAILABLE);
	return t;
}

/* NCCL's ncclDataType_t -> bytes per element (ncclInt8 .. ncclFloat8e5m2). */

#endif
