/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types inferscope's programs touch, declared CO-RE style:
 * `preserve_access_index` makes every field access a relocation that libbpf/aya
 * resolves against the running kernel's BTF, so only the fields we name must
 * exist, wherever they sit. Keeping this small (instead of a 3 MB vmlinux.h
 * dumped from one kernel) keeps the committed sources readable and the build
 * independent of the machine that compiles it.
 */
#ifndef INFERSCOPE_KERNEL_H
#define INFERSCOPE_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>

/* Tell bpf_tracing.h to use the kernel's names for the x86-64 registers. */
#define __VMLINUX_H__

typedef __u8 u8;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef _Bool bool;
typedef int pid_t;
#define true 1
#define false 0

struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	s64 counter;
} atomic64_t;

struct sock_common {
	possible_net_t skc_net;
	unsigned short skc_family;
	__be16 skc_dport;
	__u16 skc_num;
	atomic64_t skc_cookie; /* 0 until a cookie is asked for */
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	int sk_err;
} __attribute__((preserve_access_index));

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads of the group that have not yet exited */
} __attribute__((preserve_access_index));

struct thread_struct {
	unsigned long fsbase; /* x86-64: the thread pointer, glibc's pthread_self() */
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_struct thread;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct signal_struct *signal;
	char comm[16];
} __attribute__((preserve_access_index));

typedef __u32 dev_t;

struct super_block {
	dev_t s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode; /* for a file mapped through overlayfs: the layer's inode */
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	struct file *vm_file;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

/* The context of an `iter/task_vma` program: one call per mapping of each task. */
struct bpf_iter__task_vma {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	struct vm_area_struct *vma;
} __attribute__((preserve_access_index));

#endif
