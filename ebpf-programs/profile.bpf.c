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

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Frames kept per stack: the kernel's own default limit (perf_event_max_stack). */
#define MAX_FRAMES 127

#define MAX_PY_FRAMES 32

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

/* Samples whose stacks are lost, by cause (index); read by the agent. */
enum profile_loss {
	PROFILE_LOSS_TABLE_FULL = 0,
	PROFILE_LOSS_USER_STACK = 1,
	PROFILE_LOSS_STACK_COLLISION = 2,
	PROFILE_LOSSES = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} profiled SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_FRAMES * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stack_sample);
	__type(value, __u64);
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROFILE_LOSSES);
	__type(key, __u32);
	__type(value, __u64);
} profile_losses SEC(".maps");

/* What the sampler needs of one CPython process: where its interpreter's
 * thread states are, and the offsets of its version (set by the agent). */
struct python_proc {
	__u64 interpreters_head; /* address of _PyRuntime.interpreters.head */
	__u16 interp_threads_head;
	__u16 tstate_next;
	__u16 tstate_thread_id;
	__u16 tstate_cframe;
	__u16 cframe_current_frame;
	__u16 frame_code;
	__u16 frame_previous;
	__u16 frame_owner;
	__u8 shim_owner; /* frames with this owner are the interpreter's own (3.12's C-stack shims); 0xff: none */
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct python_proc);
} python_procs SEC(".maps");

/* Code objects of a Python stack, innermost first; zeros are no frame. */
struct py_stack {
	__u64 code[MAX_PY_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct py_stack);
} py_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct py_stack);
} py_scratch SEC(".maps");

const struct stack_sample *unused_stack_sample __attribute__((unused));
const struct python_proc *unused_python_proc __attribute__((unused));

static __always_inline void lost(__u32 why)
{
	__u64 *n = bpf_map_lookup_elem(&profile_losses, &why);
	if (n)
		*n += 1;
}

#define EEXIST 17

#define MAX_PY_THREADS 32

/* The Python stack of the sampled thread, if it runs Python: its key in
 * py_stacks (a hash of the code objects), or 0. The thread's state is found
 * among the main interpreter's by the thread's id (pthread_self(), the
 * thread pointer), so a thread in C code without the GIL still shows the
 * Python that called it. */
static __always_inline __u64 python_stack(__u32 pid)
{
	struct python_proc *py = bpf_map_lookup_elem(&python_procs, &pid);
	if (!py)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 self = BPF_CORE_READ(task, thread.fsbase);
	__u64 interp = 0, tstate = 0, thread_id = 0;
	if (bpf_probe_read_user(&interp, sizeof(interp), (void *)py->interpreters_head) || !interp)
		return 0;
	if (bpf_probe_read_user(&tstate, sizeof(tstate), (void *)(interp + py->interp_threads_head)))
		return 0;
	for (int i = 0; i < MAX_PY_THREADS; i++) {
		if (!tstate ||
		    bpf_probe_read_user(&thread_id, sizeof(thread_id), (void *)(tstate + py->tstate_thread_id)))
			return 0;
		if (thread_id == self)
			break;
		if (bpf_probe_read_user(&tstate, sizeof(tstate), (void *)(tstate + py->tstate_next)))
			return 0;
	}
	__u64 cframe = 0, frame = 0;
	if (thread_id != self || bpf_probe_read_user(&cframe, sizeof(cframe), (void *)(tstate + py->tstate_cframe)) ||
	    !cframe || bpf_probe_read_user(&frame, sizeof(frame), (void *)(cframe + py->cframe_current_frame)))
		return 0;
	__u32 zero = 0;
	struct py_stack *stack = bpf_map_lookup_elem(&py_scratch, &zero);
	if (!stack)
		return 0;
	__builtin_memset(stack, 0, sizeof(*stack));
	/* Slot i holds the i-th frame's code object, 0 for an interpreter shim:
	 * indexing by the loop counter keeps the verifier's states few. */
	__u64 hash = 14695981039346656037ULL; /* FNV-1a over the code objects */
	for (int i = 0; i < MAX_PY_FRAMES; i++) {
		__u64 code = 0;
		__u8 owner = 0;
		if (!frame || bpf_probe_read_user(&code, sizeof(code), (void *)(frame + py->frame_code)) ||
		    bpf_probe_read_user(&owner, sizeof(owner), (void *)(frame + py->frame_owner)))
			break;
		if (owner != py->shim_owner) {
			stack->code[i] = code;
			hash = (hash ^ code) * 1099511628211ULL;
		}
		if (bpf_probe_read_user(&frame, sizeof(frame), (void *)(frame + py->frame_previous)))
			break;
	}
	if (hash == 14695981039346656037ULL)
		return 0;
	hash |= 1; /* never 0, which means none */
	bpf_map_update_elem(&py_stacks, &hash, stack, BPF_NOEXIST);
	return hash;
}

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
		lost(PROFILE_LOSS_STACK_COLLISION);
	else if (key.user_stack < 0 && key.kernel_stack < 0)
		lost(PROFILE_LOSS_USER_STACK);
	__u64 *n = bpf_map_lookup_elem(&samples, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&samples, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	/* Another CPU added it meanwhile, or the table is full. */
	n = bpf_map_lookup_elem(&samples, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		lost(PROFILE_LOSS_TABLE_FULL);
	return 0;
}
