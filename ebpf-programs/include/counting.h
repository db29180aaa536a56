/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Counting in maps: counters by reason (refusals among them), and entries
 * created on first use. */
#ifndef INFERSCOPE_COUNTING_H
#define INFERSCOPE_COUNTING_H

/* Every map or buffer that can refuse an entry counts the refusal here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* One more in slot `reason` of a per-CPU array of counters. */
static __always_inline void count_reason(void *counters, __u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(counters, &reason);
	if (n)
		*n += 1;
}

static __always_inline void count_drop(__u32 reason)
{
	count_reason(&drops, reason);
}

/* The value of `key` in a hash map, created from `init` where absent (another
 * CPU may create it first, which is fine); NULL when the map is full. */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *init)
{
	void *v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

#endif
