/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What programs that record stacks share (the CPU sampler, and the GPU call
 * probes at launches and synchronisations): the stack map's frame limit and
 * the Python stack of the current thread. Each program that includes this has
 * its own tables, which the agent fills for the CPython processes it samples.
 */
#ifndef INFERSCOPE_STACKS_H
#define INFERSCOPE_STACKS_H

#include "common.h"

/* bpf_get_stackid: the stack's slot holds another stack (a hash collision). */
#define EEXIST 17

/* Frames kept per stack: the kernel's own default limit (perf_event_max_stack). */
#define MAX_FRAMES 127

/* A table of up to `entries` stacks, each kept once, for bpf_get_stackid. */
#define STACK_TABLE(name, entries)                                  \
	struct {                                                    \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);             \
		__uint(max_entries, entries);                       \
		__uint(key_size, sizeof(__u32));                    \
		__uint(value_size, MAX_FRAMES * sizeof(__u64));     \
	} name SEC(".maps")

#define MAX_PY_FRAMES 32
#define PY_NO_CFRAME 0xffff
#define PY_NO_SHIM 0xff

/* What the sampler needs of one CPython process: where its interpreter's
 * thread states are, and the offsets of its version (set by the agent). */
struct python_proc {
	__u64 interpreters_head; /* address of _PyRuntime.interpreters.head */
	__u16 interp_threads_head;
	__u16 tstate_next;
	__u16 tstate_thread_id;
	__u16 tstate_frame; /* the innermost frame, or (3.11, 3.12) the C frame that holds it */
	__u16 cframe_current_frame; /* PY_NO_CFRAME: tstate_frame is the frame itself */
	__u16 frame_code;
	__u16 frame_previous;
	__u16 frame_owner;
	__u8 shim_owner; /* frames with this owner are the interpreter's own (C-stack shims); PY_NO_SHIM: none */
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct python_proc);
} python_procs SEC(".maps");

/* Code objects of a Python stack, innermost first; zeros are no frame.
 * `owner`: the thread walking into this per-CPU scratch copy (a uprobe program
 * can be preempted, and another thread's walk on this CPU reuse it). */
struct py_stack {
	__u64 code[MAX_PY_FRAMES];
};

struct py_scratch {
	struct py_stack stack;
	__u64 owner;
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
	__type(value, struct py_scratch);
} py_scratch SEC(".maps");

const struct python_proc *unused_python_proc __attribute__((unused));

/* Samples whose stacks are lost, by cause (index); read by the agent. */
enum stack_loss {
	STACK_LOSS_TABLE_FULL = 0,
	STACK_LOSS_NO_STACK = 1,
	STACK_LOSS_COLLISION = 2,
	STACK_LOSSES = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STACK_LOSSES);
	__type(key, __u32);
	__type(value, __u64);
} stack_losses SEC(".maps");

static __always_inline void stack_lost(__u32 why)
{
	count_reason(&stack_losses, why);
}

/* Where GPU calls of one kind were made from (gpu_calls.bpf.c). */
struct call_stack_key {
	/* Key into py_stacks; 0: no Python frames. */
	__u64 py_stack;
	/* The return address at the call: the caller's frame, which a frame-pointer
	 * walk from a function's first instruction skips. */
	__u64 caller;
	__u32 pid; /* 0: none (a synchronisation not sampled) */
	__s32 user_stack; /* id in the stack table; negative: none */
	__u32 op; /* enum gpu_op */
	__u32 pad;
};

struct call_stack_count {
	__u64 calls;
	__u64 wait_ns; /* synchronisations: time until they returned */
};

const struct call_stack_key *unused_call_stack_key __attribute__((unused));
const struct call_stack_count *unused_call_stack_count __attribute__((unused));

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
	__u64 frame = 0;
	if (thread_id != self || bpf_probe_read_user(&frame, sizeof(frame), (void *)(tstate + py->tstate_frame)) || !frame)
		return 0;
	if (py->cframe_current_frame != PY_NO_CFRAME &&
	    bpf_probe_read_user(&frame, sizeof(frame), (void *)(frame + py->cframe_current_frame)))
		return 0;
	__u32 zero = 0;
	struct py_scratch *scratch = bpf_map_lookup_elem(&py_scratch, &zero);
	if (!scratch)
		return 0;
	__u64 me = bpf_get_current_pid_tgid();
	scratch->owner = me;
	struct py_stack *stack = &scratch->stack;
	__builtin_memset(stack, 0, sizeof(*stack));
	/* Slot i holds the i-th frame's code object, 0 for an interpreter shim:
	 * indexing by the loop counter keeps the verifier's states few. */
	__u64 hash = 14695981039346656037ULL; /* FNV-1a over the code objects */
	for (int i = 0; i < MAX_PY_FRAMES; i++) {
		__u64 code = 0;
		__u8 owner = 0;
		if (!frame || bpf_probe_read_user(&code, sizeof(code), (void *)(frame + py->frame_code)))
			break;
		/* Frames without an owner (3.10's frame objects) are all Python's. */
		if (py->shim_owner != PY_NO_SHIM &&
		    bpf_probe_read_user(&owner, sizeof(owner), (void *)(frame + py->frame_owner)))
			break;
		if (py->shim_owner == PY_NO_SHIM || owner != py->shim_owner) {
			stack->code[i] = code;
			hash = (hash ^ code) * 1099511628211ULL;
		}
		if (bpf_probe_read_user(&frame, sizeof(frame), (void *)(frame + py->frame_previous)))
			break;
	}
	/* Another thread's walk took the scratch copy meanwhile: no Python frames. */
	if (hash == 14695981039346656037ULL || scratch->owner != me)
		return 0;
	hash |= 1; /* never 0, which means none */
	bpf_map_update_elem(&py_stacks, &hash, stack, BPF_NOEXIST);
	return hash;
}

#endif
