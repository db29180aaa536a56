// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The cheapest possible uprobe, for the benchmarks: what any probe on the
 * function costs before the program does anything. inferscope's own probes are
 * judged against it.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("uprobe")
int bare_uprobe(struct pt_regs *ctx)
{
	return 0;
}
