/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The arguments of a probed function, by position. */
#ifndef INFERSCOPE_ARGS_H
#define INFERSCOPE_ARGS_H

#include "common.h"

/*
 * The integer arguments of the probed function, copied out of the registers
 * once: the verifier refuses a context read at a computed offset, which a
 * switch on the argument number compiles into. Eight slots, all written, so
 * that a masked index is a bounded read of initialised stack: verifiers before
 * 6.x lose the bounds of a range check on the index ("unbounded
 * variable-offset read from stack" on 6.1).
 */
struct call_args {
	__u64 v[8];
};

/* libbpf before 1.2 names five argument registers; the sixth, as it does since. */
#ifndef PT_REGS_PARM6
#if defined(__TARGET_ARCH_x86)
#define PT_REGS_PARM6(x) (__PT_REGS_CAST(x)->r9)
#elif defined(__TARGET_ARCH_arm64)
#define PT_REGS_PARM6(x) (__PT_REGS_CAST(x)->regs[5])
#else
#error "the sixth argument register of this architecture is not named"
#endif
#endif

static __always_inline void read_args(struct pt_regs *ctx, struct call_args *a)
{
	a->v[0] = PT_REGS_PARM1(ctx);
	a->v[1] = PT_REGS_PARM2(ctx);
	a->v[2] = PT_REGS_PARM3(ctx);
	a->v[3] = PT_REGS_PARM4(ctx);
	a->v[4] = PT_REGS_PARM5(ctx);
	a->v[5] = PT_REGS_PARM6(ctx);
	a->v[6] = 0;
	a->v[7] = 0;
}

/* Argument n (1-based, up to CALL_ARGS_MAX); 0 when n is 0 ("none"). */
static __always_inline __u64 arg_n(const struct call_args *a, __u32 n)
{
	if (n < 1 || n > CALL_ARGS_MAX)
		return 0;
	return a->v[(n - 1) & 7];
}

#endif
