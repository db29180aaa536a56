// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Counts GPU runtime calls per process: CUDA runtime and driver, HIP, NCCL.
 *
 * One entry program and one return program serve every probed function; the
 * agent attaches them with a cookie (see events.h) that says what the function
 * does and where its interesting arguments are. Hot calls (launches, copies)
 * only have the entry probe and are aggregated here, per CPU, per process.
 * Calls that need a duration (synchronisation) or a result (allocation: the
 * returned pointer) also get the return probe.
 *
 * When the agent profiles, 1 in `call_stack_every` kernel launches, graph
 * launches and synchronisations (at random) also records the user
 * stack and the Python stack it was called from: which code launches, which
 * code waits (and how long). Inside this program, because a probe of its own
 * would pay the trap on every call.
 */
#include "args.h"
#include "gpu_counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Device pointer -> bytes, so that frees lower live bytes by the right amount. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct alloc_key);
	__type(value, __u64);
} live_allocs SEC(".maps");

/* 1 in how many launches and synchronisations records its stack; 0: none.
 * Set by the agent at load: read-only, so with 0 the verifier drops the code. */
const volatile __u32 call_stack_every = 0;

/* Sized for profiling; with call_stack_every 0 the agent shrinks these and
 * the Python tables (stacks.h) to one entry each. */
STACK_TABLE(stacks, 8192);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct call_stack_key);
	__type(value, struct call_stack_count);
} call_samples SEC(".maps");

static const struct call_stack_count zero_count;

/* The processes profiled (set by the agent): the others' calls record no
 * stack, so they neither pay for it nor fill the tables. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} stacked SEC(".maps");

static __always_inline __u64 nccl_type_size(__u64 datatype)
{
	switch (datatype) {
	case 0: case 1: case 10: case 11: return 1; /* int8, uint8, fp8 e4m3/e5m2 */
	case 6: case 9: return 2;                   /* float16, bfloat16 */
	case 2: case 3: case 7: return 4;           /* int32, uint32, float32 */
	case 4: case 5: case 8: return 8;           /* int64, uint64, float64 */
	default: return 0;
	}
}

static __always_inline __u32 copy_direction(const struct call_args *args, __u64 cookie)
{
	__u32 dir = COOKIE_DIR(cookie);
	if (dir != COPY_FROM_KIND_ARG)
		return dir;
	/* cudaMemcpyKind / hipMemcpyKind: 1 HtoD, 2 DtoH, 3 DtoD; 0 HtoH and 4 Default -> other */
	switch (arg_n(args, COOKIE_AUX_ARG(cookie))) {
	case 1: return COPY_HTOD;
	case 2: return COPY_DTOH;
	case 3: return COPY_DTOD;
	default: return COPY_OTHER;
	}
}

/* Returns true when this driver call is made by a CUDA runtime call already counted. */
static __always_inline bool nested_in_runtime_call(struct thread_state *t, __u32 op, __u64 sp)
{
	__u64 ret = 0;
	if (t->runtime_op != op || sp >= t->runtime_sp)
		return false;
	if (t->runtime_return_probe)
		return true; /* cleared by the runtime call's return probe */
	if (t->runtime_code_end) {
		/* Where this driver call returns to: the runtime library, or its caller's code. */
		if (bpf_probe_read_user(&ret, sizeof(ret), (void *)sp))
			return false;
		return ret >= t->runtime_code_start && ret < t->runtime_code_end;
	}
	if (bpf_probe_read_user(&ret, sizeof(ret), (void *)t->runtime_sp))
		return false;
	return ret == t->runtime_ret;
}

static __always_inline void mark_runtime_call(struct thread_state *t, __u64 cookie, __u64 ip, __u64 sp)
{
	__u32 scale = COOKIE_CODE_SCALE(cookie);
	__u64 after = COOKIE_CODE_AFTER(cookie) << scale;
	__u32 return_probe = COOKIE_RETURN_PROBE(cookie);

	t->runtime_ret = 0;
	t->runtime_code_start = ip - (COOKIE_CODE_BEFORE(cookie) << scale);
	t->runtime_code_end = after ? ip + after : 0;
	if (!after && !return_probe)
		bpf_probe_read_user(&t->runtime_ret, sizeof(t->runtime_ret), (void *)sp);
	t->runtime_sp = sp;
	t->runtime_op = COOKIE_OP(cookie);
	t->runtime_return_probe = return_probe;
}

/* Records where this call was made from, as `key`; false when it is lost. */
static __always_inline bool sample_call_stack(struct pt_regs *ctx, __u32 op, __u64 sp, struct call_stack_key *key)
{
	__u32 pid = current_tgid();
	key->pid = pid;
	key->op = op;
	key->pad = 0;
	key->py_stack = python_stack(pid);
	/* At the function's first instruction its caller is only in the return
	 * address: the kernel walks frame pointers from the caller's caller on. */
	key->caller = 0;
	bpf_probe_read_user(&key->caller, sizeof(key->caller), (void *)sp);
	key->user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	if (key->user_stack == -EEXIST)
		stack_lost(STACK_LOSS_COLLISION);
	else if (key->user_stack < 0)
		stack_lost(STACK_LOSS_NO_STACK);
	struct call_stack_count *n = lookup_or_init(&call_samples, key, &zero_count);
	if (!n) {
		stack_lost(STACK_LOSS_TABLE_FULL);
		return false;
	}
	__sync_fetch_and_add(&n->calls, 1);
	return true;
}

/* Whether this call records its stack: each of a profiled process with a
 * chance of 1 in `call_stack_every`. At random, not every n-th: a loop whose
 * calls repeat with a period dividing n would have one of them sampled every
 * time. The draw comes first: the lookup is paid 1 in n calls. */
static __always_inline bool stack_wanted(void)
{
	if (!call_stack_every || bpf_get_prandom_u32() % call_stack_every)
		return false;
	__u32 pid = current_tgid();
	return bpf_map_lookup_elem(&stacked, &pid);
}

SEC("uprobe")
int gpu_call(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 op = COOKIE_OP(cookie);
	__u64 sp = PT_REGS_SP(ctx);
	struct thread_state *t = 0;

	/* Only calls that can be forwarded runtime -> driver need the thread's state. */
	if (op != GPU_OP_NCCL) {
		t = thread_state();
		if (t) {
			if (COOKIE_DRIVER(cookie)) {
				if (nested_in_runtime_call(t, op, sp))
					return 0;
			} else {
				mark_runtime_call(t, cookie, PT_REGS_IP(ctx), sp);
			}
		}
	}

	struct gpu_stats *s = stats_for(current_tgid());
	if (!s)
		return 0;
	struct call_args args;
	read_args(ctx, &args);
	__u64 size = arg_n(&args, COOKIE_SIZE_ARG(cookie));

	switch (op) {
	case GPU_OP_KERNEL_LAUNCH:
		s->kernel_launches += 1;
		break;
	case GPU_OP_GRAPH_LAUNCH:
		s->graph_launches += 1;
		break;
	case GPU_OP_MEMCPY: {
		__u32 dir = copy_direction(&args, cookie);
		s->memcpy_calls += 1;
		if (dir < COPY_DIRECTIONS)
			s->memcpy_bytes[dir] += size;
		break;
	}
	case GPU_OP_MEMSET:
		s->memset_calls += 1;
		s->memset_bytes += size;
		break;
	case GPU_OP_ALLOC:
		s->alloc_calls += 1;
		s->alloc_bytes += size;
		if (t) {
			t->pending_cookie = cookie;
			t->pending_size = size;
			t->pending_out_ptr = arg_n(&args, COOKIE_AUX_ARG(cookie));
		}
		break;
	case GPU_OP_FREE: {
		struct alloc_key key = { .tgid = current_tgid(), .ptr = args.v[0] };
		__u64 *bytes;
		s->free_calls += 1;
		bytes = bpf_map_lookup_elem(&live_allocs, &key);
		if (bytes) {
			s->live_bytes -= *bytes;
			bpf_map_delete_elem(&live_allocs, &key);
		}
		break;
	}
	case GPU_OP_SYNC:
		s->sync_calls += 1;
		if (t) {
			t->pending_stack.pid = 0;
			t->pending_cookie = cookie;
			t->pending_start_ns = bpf_ktime_get_ns();
		}
		break;
	case GPU_OP_NCCL: {
		__u32 i = COOKIE_NCCL_OP(cookie);
		if (i < NCCL_OPS) {
			s->nccl_calls[i] += 1;
			s->nccl_bytes[i] += size * nccl_type_size(arg_n(&args, COOKIE_AUX_ARG(cookie)));
		}
		break;
	}
	}
	/* One call site: the verifier walks the stack and Python walks once. */
	if (call_stack_every && (op == GPU_OP_KERNEL_LAUNCH || op == GPU_OP_GRAPH_LAUNCH || (op == GPU_OP_SYNC && t)) &&
	    stack_wanted()) {
		struct call_stack_key key;
		if (sample_call_stack(ctx, op, sp, &key) && op == GPU_OP_SYNC && t)
			t->pending_stack = key;
	}
	return 0;
}

SEC("uretprobe")
int gpu_call_return(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	struct thread_state *t = bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), 0, 0);
	/* No pending entry for this function: its entry was skipped as nested, or
	 * it started before the probe was attached. */
	if (!t || t->pending_cookie != cookie)
		return 0;
	t->pending_cookie = 0;
	if (!COOKIE_DRIVER(cookie))
		t->runtime_op = 0;

	__u32 tgid = current_tgid();
	struct gpu_stats *s = stats_for(tgid);
	if (!s)
		return 0;
	long rc = PT_REGS_RC(ctx);
	if ((int)rc != 0) {
		s->errors += 1;
		return 0;
	}
	switch (COOKIE_OP(cookie)) {
	case GPU_OP_SYNC: {
		__u64 waited = bpf_ktime_get_ns() - t->pending_start_ns;
		s->sync_ns += waited;
		if (call_stack_every && t->pending_stack.pid) {
			/* Drained meanwhile (a continuous profile's period ended): the
			 * wait goes to the next period, not lost, long waits most of all. */
			struct call_stack_count *n = lookup_or_init(&call_samples, &t->pending_stack, &zero_count);
			if (n)
				__sync_fetch_and_add(&n->wait_ns, waited);
		}
		break;
	}
	case GPU_OP_ALLOC: {
		struct alloc_key key = { .tgid = tgid };
		if (bpf_probe_read_user(&key.ptr, sizeof(key.ptr), (void *)t->pending_out_ptr)) {
			count_drop(DROP_UNREADABLE_ARGUMENT);
			break;
		}
		if (bpf_map_update_elem(&live_allocs, &key, &t->pending_size, BPF_ANY)) {
			count_drop(DROP_ALLOC_TABLE_FULL);
			break;
		}
		s->live_bytes += t->pending_size;
		break;
	}
	}
	return 0;
}
