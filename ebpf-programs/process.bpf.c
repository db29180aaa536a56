// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process lifecycle for discovery: exec, exit of a whole process, and "the
 * dynamic loader changed the set of loaded objects" (a uprobe on ld.so's
 * _dl_debug_state, the hook debuggers use: it runs around start-up loading and
 * every dlopen/dlclose). The agent reacts by reading /proc/PID/maps, so
 * no syscall tracepoint (which would slow every syscall on the host) is needed.
 * And which file each mapping really is (`mapped_files`), which maps cannot say
 * under overlayfs.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} proc_events SEC(".maps");

/* Ring buffers carry untyped bytes: this keeps struct proc_event in the BTF,
 * where the ABI layout test finds it. */
const struct proc_event *unused_proc_event __attribute__((unused));

static __always_inline void send(__u32 kind, __u32 pid)
{
	struct proc_event *e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_PROC_EVENT_RING_FULL);
		return;
	}
	e->kind = kind;
	e->pid = pid;
	e->ktime_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, void *bprm)
{
	send(PROC_EXEC, BPF_CORE_READ(p, tgid));
	return 0;
}

/*
 * One event per process, not per thread. Only kernels from 6.16 on pass
 * `group_dead` to this tracepoint; every kernel calls it after do_exit() has
 * decremented the thread group's `signal->live`, so a count of zero means the
 * last thread is leaving (Tetragon reads it the same way). Two threads exiting
 * at once may both see zero: the agent treats a second exit as a no-op.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	if (BPF_CORE_READ(p, signal, live.counter) == 0)
		send(PROC_EXIT, BPF_CORE_READ(p, tgid));
	return 0;
}

/* glibc's struct r_debug (link.h, 64-bit): r_state after r_version, r_map and r_brk. */
#define R_DEBUG_STATE_OFFSET 24
#define RT_CONSISTENT 0

/*
 * The loader calls _dl_debug_state twice per change: with r_state RT_ADD or
 * RT_DELETE before it maps or unmaps anything, and RT_CONSISTENT once done.
 * Only the second is worth a look at the process's maps. The attach cookie is
 * the distance from _dl_debug_state to _r_debug in the loader file (0 when it
 * has none: then every call is reported); a state that cannot be read is
 * reported too.
 */
SEC("uprobe")
int on_loader_debug_state(struct pt_regs *ctx)
{
	__u64 to_r_debug = bpf_get_attach_cookie(ctx);
	int state = RT_CONSISTENT;

	if (to_r_debug) {
		void *r_state = (void *)(PT_REGS_IP(ctx) + to_r_debug + R_DEBUG_STATE_OFFSET);
		bpf_probe_read_user(&state, sizeof(state), r_state);
	}
	if (state == RT_CONSISTENT)
		send(PROC_LIBS_CHANGED, current_tgid());
	return 0;
}

/* Ring buffers carry untyped bytes and iterators write them: keeps struct mapped_file in the BTF. */
const struct mapped_file *unused_mapped_file __attribute__((unused));

/* The process whose mappings `mapped_files` writes (its tgid, in slot 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mapped_files_of SEC(".maps");

/*
 * Each file-backed mapping of one process, with the inode its uprobes belong
 * to. Under overlayfs a mapping's file is the layer's file underneath (the
 * kernel maps that one and uprobes are set on it), while /proc/PID/maps shows
 * the overlay's own inode from 6.8 on, a different one in every container: two
 * replicas of one image look like two files there and would be probed twice.
 * The agent limits the walk to the process where the kernel allows it (6.1);
 * the tgid check keeps older kernels' walk of every task to that process.
 */
SEC("iter/task_vma")
int mapped_files(struct bpf_iter__task_vma *ctx)
{
	struct vm_area_struct *vma = ctx->vma;
	struct task_struct *task = ctx->task;
	__u32 slot = 0;
	__u32 *tgid = bpf_map_lookup_elem(&mapped_files_of, &slot);

	if (!vma || !task || !tgid || BPF_CORE_READ(task, tgid) != *tgid)
		return 0;
	struct file *file = BPF_CORE_READ(vma, vm_file);
	if (!file)
		return 0;
	struct mapped_file out = {
		.start = BPF_CORE_READ(vma, vm_start),
		.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(file, f_inode, i_ino),
	};
	bpf_seq_write(ctx->meta->seq, &out, sizeof(out));
	return 0;
}
