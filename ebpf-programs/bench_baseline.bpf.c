// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Reference uprobes for the benchmarks. `bare_uprobe` is the cheapest possible
 * probe: what any probe on the function costs before the program does
 * anything; inferscope's own probes are judged against it. The `part_*`
 * programs each do one piece of the launch probe's work (gpu_calls.bpf.c) and
 * nothing else, so that the benchmark can say which part costs what.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("uprobe")
int bare_uprobe(struct pt_regs *ctx)
{
	return 0;
}

/* As gpu_calls' per-process counters: a per-CPU hash by tgid, allocated on demand. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct gpu_stats);
} part_stats SEC(".maps");

/* As gpu_calls' per-thread state. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64[8]);
} part_thread_states SEC(".maps");

static const struct gpu_stats part_zero;

/* The attach cookie and the argument registers. */
SEC("uprobe")
int part_cookie_and_args(struct pt_regs *ctx)
{
	struct call_args args;
	__u64 cookie = bpf_get_attach_cookie(ctx);

	read_args(ctx, &args);
	return arg_n(&args, cookie & 7) == 1;
}

/* The per-process counter: one lookup (insert once) and an increment. */
SEC("uprobe")
int part_counter(struct pt_regs *ctx)
{
	__u32 tgid = current_tgid();
	struct gpu_stats *s = bpf_map_lookup_elem(&part_stats, &tgid);

	if (!s) {
		bpf_map_update_elem(&part_stats, &tgid, &part_zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&part_stats, &tgid);
		if (!s)
			return 0;
	}
	s->kernel_launches += 1;
	return 0;
}

/* The thread's state, for the runtime -> driver de-duplication. */
SEC("uprobe")
int part_thread_state(struct pt_regs *ctx)
{
	__u64 *t = bpf_task_storage_get(&part_thread_states, bpf_get_current_task_btf(), 0,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (t)
		t[0] = PT_REGS_SP(ctx);
	return 0;
}

/* The return address read from the user stack (staleness check of the marker). */
SEC("uprobe")
int part_stack_read(struct pt_regs *ctx)
{
	__u64 ret = 0;

	bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	return ret == 1;
}
