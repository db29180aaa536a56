// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * One trivial program per attach type, for `inferscope check`: a kernel that
 * loads and attaches one supports that type, whatever its version or config
 * claims. The uprobe also counts its hits, to prove it fires.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} uprobe_hits SEC(".maps");

SEC("uprobe")
int probe_uprobe(struct pt_regs *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&uprobe_hits, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

SEC("uretprobe")
int probe_uretprobe(struct pt_regs *ctx) { return 0; }

SEC("tracepoint")
int probe_tracepoint(void *ctx) { return 0; }

SEC("raw_tp")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe_tp_btf) { return 0; }

SEC("perf_event")
int probe_perf_event(void *ctx) { return 0; }

SEC("kprobe")
int probe_kprobe(struct pt_regs *ctx) { return 0; }

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry) { return 0; }
