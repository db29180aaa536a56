// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Captures what inference servers send and receive on their listening ports.
 *
 * The `sock:` tracepoints fire only inside socket I/O, unlike syscall
 * tracepoints, whose mere presence slows every syscall of every process on the
 * host (../shared/FIELD-NOTES.md: +6 % vs +120 % on a tight write()). They carry
 * the socket and the byte count; the user buffer is reached through the
 * registers the current syscall was entered with (bpf_task_pt_regs).
 * Filtering comes first: one load of the local port and one hash lookup.
 * Connection ends come from inet_sock_set_state; only sockets that carried
 * watched traffic are reported.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define ECONNRESET 104
#define MAX_IOVECS 4

/* x86-64 syscall numbers whose buffer we know how to find. */
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47

/* Set by the agent before load; at most NET_CAPTURE_MAX. */
const volatile __u32 capture_bytes = NET_CAPTURE_MAX;

/* Listening ports of the watched servers (host byte order): non-zero = watched.
 * An array, not a hash: the verifier inlines array lookups into one load, and
 * this lookup runs on every socket send and receive on the host. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} watched_ports SEC(".maps");

/* Sockets seen carrying watched traffic: cookie -> local port. By the time a
 * connection reaches TCP_CLOSE the kernel has already released its port
 * (inet_put_port zeroes skc_num), so its end is recognised by cookie. LRU:
 * a missed close must not leak an entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u16);
} watched_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} net_events SEC(".maps");

/* Scratch space: an event is too big for the 512-byte stack. Twice the capture
 * size so that the verifier can bound every copy with two masks. */
struct scratch {
	struct net_event e;
	__u8 spill[NET_CAPTURE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* The userland ABI of struct iovec and struct msghdr (not kernel types). */
struct user_iovec {
	void *base;
	__u64 len;
};

struct user_msghdr_abi {
	void *name;
	__u64 namelen;
	struct user_iovec *iov;
	__u64 iovlen;
};

const struct net_event *unused_net_event __attribute__((unused));

/* Direct loads (tp_btf arguments are trusted pointers), not bpf_probe_read: cheaper. */
static __always_inline bool watched(const struct sock_common *skc, __u16 *port)
{
	__u16 family = skc->skc_family;
	if (family != AF_INET && family != AF_INET6)
		return false;
	__u32 key = skc->skc_num;
	__u8 *on = bpf_map_lookup_elem(&watched_ports, &key);
	*port = key;
	return on && *on;
}

static __always_inline void fill_header(struct net_event *e, const struct sock_common *skc, __u16 port,
					__u8 kind)
{
	e->ktime_ns = bpf_ktime_get_ns();
	e->sock_cookie = bpf_get_socket_cookie((void *)skc);
	e->pid = current_tgid();
	e->local_port = port;
	e->remote_port = __builtin_bswap16(skc->skc_dport);
	e->kind = kind;
	e->flags = 0;
	e->len = 0;
	e->captured = 0;
}

/* Copies up to `want` bytes from user memory to data[at]; returns bytes copied. */
static __always_inline __u32 copy_user(struct net_event *e, __u32 at, const void *src, __u64 want)
{
	__u32 n = want > NET_CAPTURE_MAX - 1 ? NET_CAPTURE_MAX - 1 : want;
	at &= NET_CAPTURE_MAX - 1;
	n &= NET_CAPTURE_MAX - 1;
	if (n == 0 || bpf_probe_read_user(&e->data[at], n, src))
		return 0;
	return n;
}

static __always_inline __u32 copy_iovecs(struct net_event *e, struct user_iovec *iov, __u64 count, __u32 limit)
{
	__u32 done = 0;
	for (int i = 0; i < MAX_IOVECS; i++) {
		struct user_iovec v;
		if (i >= count || done >= limit)
			break;
		if (bpf_probe_read_user(&v, sizeof(v), &iov[i]))
			break;
		__u64 want = v.len < limit - done ? v.len : limit - done;
		done += copy_user(e, done, v.base, want);
	}
	return done;
}

static __always_inline int capture(struct sock *sk, int ret, __u8 direction)
{
	const struct sock_common *skc = (const struct sock_common *)sk;
	__u16 port;
	if (ret <= 0 || !watched(skc, &port))
		return 0;

	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct net_event *e = &s->e;
	fill_header(e, skc, port, NET_DATA);
	bpf_map_update_elem(&watched_socks, &e->sock_cookie, &port, BPF_NOEXIST);
	e->direction = direction;
	e->len = ret;

	__u32 limit = capture_bytes < NET_CAPTURE_MAX ? capture_bytes : NET_CAPTURE_MAX;
	if (limit > (__u32)ret)
		limit = ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = BPF_CORE_READ(regs, orig_ax);
	void *buf = (void *)BPF_CORE_READ(regs, si);
	__u64 count = BPF_CORE_READ(regs, dx);
	switch (nr) {
	case NR_READ:
	case NR_WRITE:
	case NR_SENDTO:
	case NR_RECVFROM:
		e->captured = copy_user(e, 0, buf, limit);
		break;
	case NR_READV:
	case NR_WRITEV:
		e->captured = copy_iovecs(e, buf, count, limit);
		break;
	case NR_SENDMSG:
	case NR_RECVMSG: {
		struct user_msghdr_abi msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), buf) == 0)
			e->captured = copy_iovecs(e, msg.iov, msg.iovlen, limit);
		break;
	}
	default:
		e->flags |= NET_FLAG_UNREADABLE;
	}
	if (e->captured < limit && !(e->flags & NET_FLAG_UNREADABLE))
		count_drop(DROP_UNREADABLE_ARG);

	__u64 size = sizeof(*e) - NET_CAPTURE_MAX + (e->captured & (NET_CAPTURE_MAX - 1));
	if (e->captured == NET_CAPTURE_MAX)
		size = sizeof(*e);
	if (bpf_ringbuf_output(&net_events, e, size, 0))
		count_drop(DROP_NET_EVENT);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_sock_send, struct sock *sk, int ret, int flags)
{
	return capture(sk, ret, NET_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_sock_recv, struct sock *sk, int ret, int flags)
{
	return capture(sk, ret, NET_RECV);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (newstate != TCP_CLOSE && newstate != TCP_CLOSE_WAIT)
		return 0;
	const struct sock_common *skc = (const struct sock_common *)sk;
	__u64 cookie = bpf_get_socket_cookie((void *)skc);
	__u16 *port = bpf_map_lookup_elem(&watched_socks, &cookie);
	if (!port)
		return 0;
	struct net_event *e = bpf_ringbuf_reserve(&net_events, sizeof(*e) - NET_CAPTURE_MAX, 0);
	if (!e) {
		count_drop(DROP_NET_EVENT);
		return 0;
	}
	fill_header(e, skc, *port, newstate == TCP_CLOSE ? NET_CLOSED : NET_PEER_CLOSED);
	e->direction = 0;
	/* tcp_reset() records ECONNRESET before closing: the client reset the connection. */
	if (newstate == TCP_CLOSE && BPF_CORE_READ(sk, sk_err) == ECONNRESET)
		e->flags |= NET_FLAG_RESET_BY_PEER;
	bpf_ringbuf_submit(e, 0);
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&watched_socks, &cookie);
	return 0;
}
