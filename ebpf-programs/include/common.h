/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What every inferscope program includes: the kernel types, libbpf, the ABI, counting. */
#ifndef INFERSCOPE_COMMON_H
#define INFERSCOPE_COMMON_H

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "counting.h"

static __always_inline __u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

#endif
