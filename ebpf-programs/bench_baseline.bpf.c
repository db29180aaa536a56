// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Reference uprobes for the benchmarks. `bare_uprobe` is the cheapest possible
 * probe: what any probe on the function costs before the program does
 * anything; inferscope's own probes are judged against it. The `part_*`
 * programs each do one piece of the launch probe's work (gpu_calls.bpf.c),
 * through the helpers it uses itself (args.h, gpu_counters.h), and nothing
 * else, so that the benchmark can say which part costs what.
 */
#include "args.h"
#include "gpu_counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("uprobe")
int bare_uprobe(struct pt_regs *ctx)
{
	return 0;
}

/* The attach cookie and the argument registers. */
SEC("uprobe")
int part_cookie_and_args(struct pt_regs *ctx)
{
	struct call_args args;
	__u64 cookie = bpf_get_attach_cookie(ctx);

	read_args(ctx, &args);
	return arg_n(&args, cookie & 7) == 1;
}

/* The per-process counter: one lookup (created once) and an increment. */
SEC("uprobe")
int part_counter(struct pt_regs *ctx)
{
	struct gpu_stats *s = stats_for(current_tgid());

	if (s)
		s->kernel_launches += 1;
	return 0;
}

/* The thread's state, for the runtime -> driver de-duplication. */
SEC("uprobe")
int part_thread_state(struct pt_regs *ctx)
{
	struct thread_state *t = thread_state();

	if (t)
		t->runtime_sp = PT_REGS_SP(ctx);
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
