// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * CPU profile of chosen processes: a perf-event program per CPU (a software
 * clock where there is no PMU) counts each (process, user stack, kernel stack)
 * it interrupts. Stacks are walked by the kernel (frame pointers for user
 * code) and kept once in a stack map; userspace symbolizes them at the end.
 * Only processes in `profiled` are sampled: the agent names GPU processes and
 * inference servers as it finds them.
 *
 * In a CPython process (`python_procs`, with its version's offsets) a sample of
 * the thread holding the GIL also records the interpreter's own frames: the
 * code object of each, innermost first, read from the thread state. The agent
 * names code objects later, from the process's memory.
 */
#include "common.h"
#include "stacks.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct stack_sample {
	/* Key into py_stacks; 0: no Python frames. */
	__u64 py_stack;
	__u32 pid;
	/* Stack map ids; negative when there is none (a sample in user mode has no
	 * kernel stack) or it could not be stored. */
	__s32 user_stack;
	__s32 kernel_stack;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} profiled SEC(".maps");

STACK_TABLE(stacks, 16384);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stack_sample);
	__type(value, __u64);
} samples SEC(".maps");

static const __u64 zero_count;

const struct stack_sample *unused_stack_sample __attribute__((unused));

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u32 pid = current_tgid();
	if (pid == 0 || !bpf_map_lookup_elem(&profiled, &pid))
		return 0;
	struct stack_sample key = {
		.py_stack = python_stack(pid),
		.pid = pid,
		.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK),
		.kernel_stack = bpf_get_stackid(ctx, &stacks, 0),
	};
	if (key.user_stack == -EEXIST || key.kernel_stack == -EEXIST)
		stack_lost(STACK_LOSS_COLLISION);
	else if (key.user_stack < 0 && key.kernel_stack < 0)
		stack_lost(STACK_LOSS_NO_STACK);
	__u64 *n = lookup_or_init(&samples, &key, &zero_count);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		stack_lost(STACK_LOSS_TABLE_FULL);
	return 0;
}
