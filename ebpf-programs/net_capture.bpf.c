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
/* A receive that leaves the bytes queued: they arrive again with the real read. */
#define MSG_PEEK 2
#define MAX_IOVECS 16

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

/* Listening ports of the watched servers (host byte order) -> the network
 * namespace they listen in (its inode), WATCH_ANY_NETNS, or WATCH_NONE.
 * Containers each have their own namespace and often the same port numbers.
 * An array, not a hash: the verifier inlines array lookups into one load, and
 * this lookup runs on every socket send and receive on the host. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} watched_ports SEC(".maps");

/* A socket seen carrying watched traffic, in the socket's own storage: one
 * load through the socket per event instead of hashing its cookie, and freed
 * with the socket, so a missed close leaks nothing. By the time a connection
 * reaches TCP_CLOSE the kernel has already released its port (inet_put_port
 * zeroes skc_num), so the port is kept here. `lost` is set when one of its
 * events does not fit in the ring buffer, and cleared by the next one
 * delivered, which carries NET_FLAG_AFTER_LOSS: the agent then knows which
 * connection has a hole, rather than only that events were lost. */
struct watched_sock {
	__u16 local_port;
	__u8 lost;
	__u8 pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct watched_sock);
} watched_socks SEC(".maps");

/* Sockets an OpenSSL call was seen on, by cookie (the OpenSSL probes know the
 * cookie, not the socket): their ciphertext is not captured, the plaintext
 * comes from the OpenSSL probes, whose events mark losses here. Looked up only
 * once a TLS server is probed. LRU: a missed close must not leak an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct watched_sock);
} tls_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} net_events SEC(".maps");

/*
 * TLS: an OpenSSL SSL_read/SSL_write call in flight on a thread (uprobes
 * attached per server process). The socket I/O it does underneath happens on
 * the same thread, inside the call: the socket tracepoint links the call to its
 * socket (cookie, ports) and drops the ciphertext; the return probe then
 * captures the plaintext under the socket's identity, so that connection ends
 * and everything downstream work as for plain HTTP.
 */
struct ssl_link {
	__u64 sock_cookie;
	__u16 local_port;
	__u16 remote_port;
	__u32 pad;
};

struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 out;         /* SSL_*_ex: where the byte count is written; 0 otherwise */
	__u64 sock_cookie; /* set by the socket tracepoint */
	__u16 local_port;
	__u16 remote_port;
	__u8 direction;
	__u8 linked;
	__u8 pad[2];
};

/* An SSL object or BIO of one process: heap addresses repeat across processes. */
struct tls_object {
	__u32 tgid;
	__u32 pad;
	__u64 addr;
};

/*
 * SSL object -> its watched socket, set where that is known: by the socket I/O
 * inside an SSL call (a socket BIO: blocking servers), or by the ciphertext an
 * event loop feeds the object's read BIO (a memory BIO: asyncio, uvloop), which
 * is the buffer a receive from that socket filled. Both are seen again with
 * every call or receive, so a new object at a freed one's address is linked
 * anew before its first read. Later calls on the same object (writes included)
 * use the link. Where neither is seen, an SSL_read without a link takes the
 * socket its thread received from last.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_object);
	__type(value, struct ssl_link);
} ssl_links SEC(".maps");

/* Read BIO -> the SSL object reading from it (SSL_set_bio). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_object);
	__type(value, __u64);
} bio_ssls SEC(".maps");

/* A watched receive of a TLS server (read, recvfrom), by the buffer it filled:
 * an event loop writes those bytes into an SSL object's read BIO next,
 * whichever other sockets it read in between. */
struct recv_buffer {
	struct ssl_link link;
	__u32 len;  /* bytes received: BIO_write is given as many */
	__u32 tid;  /* the thread that received them writes them */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tls_object);
	__type(value, struct recv_buffer);
} recv_buffers SEC(".maps");

/* Processes whose OpenSSL calls are probed, by tgid (set by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} tls_pids SEC(".maps");

/*
 * Per thread (task storage: freed with the thread, and one lookup per socket
 * event where two hash operations were): the OpenSSL call in flight, and the
 * watched socket the thread last received from.
 */
struct tls_thread {
	struct ssl_call call;
	struct ssl_link last_recv;
	__u8 in_call;
	__u8 has_last_recv;
	__u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_thread);
} tls_threads SEC(".maps");

static __always_inline struct tls_thread *tls_thread(__u64 flags)
{
	return bpf_task_storage_get(&tls_threads, bpf_get_current_task_btf(), 0, flags);
}

/* Processes whose OpenSSL calls are probed (set by the agent). Until there is
 * one, no thread can be inside an SSL call, and a plain server's sends and
 * receives skip the per-thread bookkeeping: an inlined load, not a lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tls_processes SEC(".maps");

static __always_inline bool tls_probed(void)
{
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&tls_processes, &zero);
	return n && *n;
}

/* Scratch space: an event is too big for the 512-byte stack. Room past the
 * event for the largest copy the verifier can prove (copy_user's masks). */
struct scratch {
	struct net_event e;
	__u8 spill[2 * NET_CAPTURE_MAX];
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
const struct abi_enums *unused_abi_enums __attribute__((unused));

/* Direct loads (tp_btf arguments are trusted pointers), not bpf_probe_read: cheaper. */
static __always_inline bool watched(const struct sock_common *skc, __u16 *port)
{
	__u16 family = skc->skc_family;
	if (family != AF_INET && family != AF_INET6)
		return false;
	__u32 key = skc->skc_num;
	__u32 *netns = bpf_map_lookup_elem(&watched_ports, &key);
	*port = key;
	if (!netns || !*netns)
		return false;
	return *netns == WATCH_ANY_NETNS || *netns == skc->skc_net.net->ns.inum;
}

/* The socket's cookie, read from the socket once it has one (the helper reads
 * the same field, and makes the cookie on first use). Calls are much of what
 * this path costs on CPUs whose every return goes through a mitigation thunk
 * (AMD's SRSO "safe RET"), so the hot path makes as few as it can. */
static __always_inline __u64 sock_cookie(const struct sock_common *skc)
{
	__u64 cookie = skc->skc_cookie.counter;
	return cookie ? cookie : bpf_get_socket_cookie((void *)skc);
}

static __always_inline void fill_header(struct net_event *e, __u64 cookie, __u32 pid, __u16 local_port,
					__u16 remote_port, __u8 kind)
{
	e->ktime_ns = bpf_ktime_get_ns();
	e->sock_cookie = cookie;
	e->pid = pid;
	e->local_port = local_port;
	e->remote_port = remote_port;
	e->kind = kind;
	e->flags = 0;
	e->len = 0;
	e->captured = 0;
}

/* The per-CPU event under construction, its header filled for a NET_DATA. */
static __always_inline struct net_event *data_event(__u64 cookie, __u32 pid, __u16 local_port,
						    __u16 remote_port, __u8 direction)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	fill_header(&s->e, cookie, pid, local_port, remote_port, NET_DATA);
	s->e.direction = direction;
	return &s->e;
}

/* Copies up to `want` (at most NET_CAPTURE_MAX) bytes from user memory to
 * data[at]; returns bytes copied. The mask is what every verifier can bound
 * (a range check is lost on 6.1); masking with the next power of two, not
 * NET_CAPTURE_MAX - 1, lets a full-size copy through, and the scratch space
 * has room for any masked size. Keep it this shape: copy_iovecs repeats it
 * 16 times, and variants that bounded the size with a range check or an
 * extra branch ran 6.1's verifier past its limit (E2BIG) on the fexit
 * programs, which the kernel matrix shows. */
static __always_inline __u32 copy_user(struct net_event *e, __u32 at, const void *src, __u64 want)
{
	__u32 n = want > NET_CAPTURE_MAX ? NET_CAPTURE_MAX : want;
	at &= NET_CAPTURE_MAX - 1;
	n &= 2 * NET_CAPTURE_MAX - 1;
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

/*
 * The agent is woken only once this much is waiting (or by its own short
 * timer, which drains the rest): a wake-up per event costs the sender an
 * interrupt (on a VM, an exit) and the agent a context switch, which at tens
 * of thousands of events a second was most of what watching cost a server.
 */
#define WAKEUP_BYTES (256 * 1024)

static __always_inline __u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&net_events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
									      : BPF_RB_NO_WAKEUP;
}

/* Data events since this CPU last asked how much waits. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} unchecked_events SEC(".maps");

/* The question costs a call and a read of the consumer's cache line on every
 * event; asked every 16th data event per CPU, a wake-up comes at most 16
 * events late (<= 64 KiB past the mark in a 8 MiB ring). */
#define WAKEUP_CHECK_EVERY 16
static __always_inline __u64 sampled_wakeup_flag(void)
{
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&unchecked_events, &zero);
	if (n && ++*n < WAKEUP_CHECK_EVERY)
		return BPF_RB_NO_WAKEUP;
	if (n)
		*n = 0;
	return wakeup_flag();
}

/* Remembers on the socket whether its latest event was delivered. */
static __always_inline void delivered(struct watched_sock *ws, bool ok)
{
	if (!ok)
		count_drop(DROP_NET_EVENT_RING_FULL);
	if (ws)
		ws->lost = !ok;
}

/* Sends the header and the captured bytes only; `ws` is the socket's state
 * (null if it could not be had), marked when an earlier event was lost. */
static __always_inline void submit(struct net_event *e, struct watched_sock *ws)
{
	__u64 size = sizeof(*e) - NET_CAPTURE_MAX + (e->captured & (NET_CAPTURE_MAX - 1));
	if (e->captured == NET_CAPTURE_MAX)
		size = sizeof(*e);
	if (ws && ws->lost)
		e->flags |= NET_FLAG_AFTER_LOSS;
	delivered(ws, bpf_ringbuf_output(&net_events, e, size, sampled_wakeup_flag()) == 0);
}

static __always_inline __u32 capture_limit(__u64 len)
{
	__u32 limit = capture_bytes < NET_CAPTURE_MAX ? capture_bytes : NET_CAPTURE_MAX;
	return len < limit ? len : limit;
}

/* In a TLS server: where this receive's `len` bytes went, and from which socket. */
static __always_inline void remember_recv_buffer(const struct ssl_link *link, int len)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	if (!bpf_map_lookup_elem(&tls_pids, &tgid))
		return;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	long nr = regs->orig_ax;
	if (nr != NR_READ && nr != NR_RECVFROM)
		return;
	struct tls_object buf = { .tgid = tgid, .addr = regs->si };
	struct recv_buffer received = { .link = *link, .len = len, .tid = task->pid };
	bpf_map_update_elem(&recv_buffers, &buf, &received, BPF_ANY);
}

static __always_inline int capture(struct sock *sk, int ret, __u8 direction)
{
	const struct sock_common *skc = (const struct sock_common *)sk;
	__u16 port;
	if (ret <= 0 || !watched(skc, &port))
		return 0;

	__u64 cookie = sock_cookie(skc);
	__u16 remote_port = __builtin_bswap16(skc->skc_dport);
	struct watched_sock *ws = bpf_sk_storage_get(&watched_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (ws)
		ws->local_port = port;

	/* Inside SSL_read/SSL_write: link the call to this socket; the plaintext comes at its return. */
	struct ssl_link link = { .sock_cookie = cookie, .local_port = port, .remote_port = remote_port };
	struct tls_thread *tt = 0;
	bool tls_on = tls_probed();
	if (tls_on)
		tt = tls_thread(direction == NET_RECV ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (tt && tt->in_call) {
		tt->call.sock_cookie = cookie;
		tt->call.local_port = port;
		tt->call.remote_port = remote_port;
		tt->call.linked = 1;
		struct tls_object ssl = { .tgid = current_tgid(), .addr = tt->call.ssl };
		bpf_map_update_elem(&ssl_links, &ssl, &link, BPF_ANY);
		return 0;
	}
	if (tt && direction == NET_RECV) {
		tt->last_recv = link;
		tt->has_last_recv = 1;
		remember_recv_buffer(&link, ret);
	}
	if (tls_on && bpf_map_lookup_elem(&tls_socks, &cookie))
		return 0;

	/* Trusted pointers: direct loads, not a helper call per field. */
	struct task_struct *task = bpf_get_current_task_btf();
	struct net_event *e = data_event(cookie, task->tgid, port, remote_port, direction);
	if (!e)
		return 0;
	e->len = ret;

	__u32 limit = capture_limit(ret);
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	long nr = regs->orig_ax;
	void *buf = (void *)regs->si;
	__u64 count = regs->dx;
	/* One call site for the iovec loop: the verifier walks each inlined copy. */
	struct user_iovec *iov = NULL;
	switch (nr) {
	case NR_READ:
	case NR_WRITE:
	case NR_SENDTO:
	case NR_RECVFROM:
		e->captured = copy_user(e, 0, buf, limit);
		break;
	case NR_READV:
	case NR_WRITEV:
		iov = buf;
		break;
	case NR_SENDMSG:
	case NR_RECVMSG: {
		struct user_msghdr_abi msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), buf) == 0) {
			iov = msg.iov;
			count = msg.iovlen;
		}
		break;
	}
	default:
		e->flags |= NET_FLAG_UNREADABLE;
	}
	if (iov)
		e->captured = copy_iovecs(e, iov, count, limit);
	if (e->captured < limit && !(e->flags & NET_FLAG_UNREADABLE))
		count_drop(DROP_UNREADABLE_ARGUMENT);

	submit(e, ws);
	return 0;
}

/* Receives, whichever hook reports them: a peek leaves the bytes queued, and
 * they are captured when the real read takes them. */
static __always_inline int capture_recv(struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK)
		return 0;
	return capture(sk, ret, NET_RECV);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_sock_send, struct sock *sk, int ret, int flags)
{
	return capture(sk, ret, NET_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_sock_recv, struct sock *sk, int ret, int flags)
{
	return capture_recv(sk, ret, flags);
}

/*
 * Kernels before 6.3 have no sock_send_length/sock_recv_length tracepoints.
 * There the same capture runs at the return of tcp_sendmsg/tcp_recvmsg (fexit,
 * 5.5+): called across files through the protocol's function table, so never
 * inlined into the socket layer, and still inside the syscall whose registers
 * point at the user buffer. tcp_recvmsg lost its `nonblock` argument in 5.19:
 * the agent loads the six-argument form first, which a newer kernel refuses
 * (the verifier knows each function's argument count), then the five-argument
 * one. Only one pair is ever attached, so nothing is captured twice.
 */
SEC("fexit/tcp_sendmsg")
int BPF_PROG(on_tcp_sendmsg, struct sock *sk, void *msg, __u64 size, int ret)
{
	return capture(sk, ret, NET_SEND);
}

SEC("fexit/tcp_recvmsg")
int BPF_PROG(on_tcp_recvmsg, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len, int ret)
{
	return capture_recv(sk, ret, flags);
}

SEC("fexit/tcp_recvmsg")
int BPF_PROG(on_tcp_recvmsg_nonblock, struct sock *sk, void *msg, __u64 len, int nonblock, int flags,
	     int *addr_len, int ret)
{
	return capture_recv(sk, ret, flags);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (newstate != TCP_CLOSE && newstate != TCP_CLOSE_WAIT)
		return 0;
	const struct sock_common *skc = (const struct sock_common *)sk;
	__u64 cookie = sock_cookie(skc);
	struct watched_sock *ws = bpf_sk_storage_get(&watched_socks, (struct sock *)sk, 0, 0);
	if (!ws)
		return 0;
	/* A TLS socket's events are its plaintext: their losses are what count. */
	struct watched_sock *tls = tls_probed() ? bpf_map_lookup_elem(&tls_socks, &cookie) : 0;
	if (tls)
		ws->lost = tls->lost;
	struct net_event *e = bpf_ringbuf_reserve(&net_events, sizeof(*e) - NET_CAPTURE_MAX, 0);
	bool reserved = e != 0;
	if (e) {
		fill_header(e, cookie, current_tgid(), ws->local_port, __builtin_bswap16(skc->skc_dport),
			    newstate == TCP_CLOSE ? NET_CLOSED : NET_PEER_CLOSED);
		e->direction = 0;
		if (ws->lost)
			e->flags |= NET_FLAG_AFTER_LOSS;
		/* tcp_reset() records ECONNRESET before closing: the client reset the connection. */
		if (newstate == TCP_CLOSE && BPF_CORE_READ(sk, sk_err) == ECONNRESET)
			e->flags |= NET_FLAG_RESET_BY_PEER;
		bpf_ringbuf_submit(e, wakeup_flag());
	}
	/* A lost close: the agent's connection table is bounded and evicts it. */
	delivered(ws, reserved);
	if (newstate == TCP_CLOSE) {
		bpf_sk_storage_delete(&watched_socks, (struct sock *)sk);
		if (tls)
			bpf_map_delete_elem(&tls_socks, &cookie);
	}
	return 0;
}

static __always_inline int ssl_enter(struct pt_regs *ctx, __u8 direction, bool ex)
{
	struct tls_thread *tt = tls_thread(BPF_LOCAL_STORAGE_GET_F_CREATE);
	/* If one SSL call wraps another, the outer one's buffer is the caller's. */
	if (!tt || tt->in_call)
		return 0;
	tt->call = (struct ssl_call){
		.ssl = PT_REGS_PARM1(ctx),
		.buf = PT_REGS_PARM2(ctx),
		.out = ex ? PT_REGS_PARM4(ctx) : 0,
		.direction = direction,
	};
	tt->in_call = 1;
	return 0;
}

SEC("uprobe")
int ssl_read_enter(struct pt_regs *ctx) { return ssl_enter(ctx, NET_RECV, false); }

SEC("uprobe")
int ssl_read_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, NET_RECV, true); }

SEC("uprobe")
int ssl_write_enter(struct pt_regs *ctx) { return ssl_enter(ctx, NET_SEND, false); }

SEC("uprobe")
int ssl_write_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, NET_SEND, true); }

/* SSL_set_bio(ssl, rbio, wbio): which SSL object reads the ciphertext written to rbio. */
SEC("uprobe")
int ssl_set_bio(struct pt_regs *ctx)
{
	struct tls_object rbio = { .tgid = current_tgid(), .addr = PT_REGS_PARM2(ctx) };
	__u64 ssl = PT_REGS_PARM1(ctx);

	if (rbio.addr)
		bpf_map_update_elem(&bio_ssls, &rbio, &ssl, BPF_ANY);
	return 0;
}

/*
 * BIO_write(bio, data, len) in libcrypto: an event loop hands an SSL object's
 * read BIO the ciphertext it received. When those are the bytes a watched
 * receive of this thread put there (same address, same length, not handed on
 * yet), the SSL object is that socket's. OpenSSL's own writes of records to a
 * write BIO (inside SSL calls, or of a buffer that reuses freed memory) are
 * not taken for one.
 */
SEC("uprobe")
int bio_write(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct tls_thread *tt = tls_thread(0);
	if (tt && tt->in_call)
		return 0;
	struct tls_object buf = { .tgid = tgid, .addr = PT_REGS_PARM2(ctx) };
	struct recv_buffer *received = bpf_map_lookup_elem(&recv_buffers, &buf);
	if (!received || received->tid != (__u32)pid_tgid || received->len != (__u32)PT_REGS_PARM3(ctx))
		return 0;
	struct ssl_link link = received->link;
	bpf_map_delete_elem(&recv_buffers, &buf);
	struct tls_object bio = { .tgid = tgid, .addr = PT_REGS_PARM1(ctx) };
	__u64 *ssl = bpf_map_lookup_elem(&bio_ssls, &bio);
	if (!ssl)
		return 0;
	struct tls_object key = { .tgid = tgid, .addr = *ssl };
	bpf_map_update_elem(&ssl_links, &key, &link, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int ssl_return(struct pt_regs *ctx)
{
	struct tls_thread *tt = tls_thread(0);
	if (!tt || !tt->in_call)
		return 0;
	struct ssl_call c = tt->call;
	tt->in_call = 0;
	if (!c.linked) {
		/* No socket I/O inside this call: a memory BIO, or data from OpenSSL's buffer. */
		struct tls_object ssl = { .tgid = current_tgid(), .addr = c.ssl };
		struct ssl_link *link = bpf_map_lookup_elem(&ssl_links, &ssl);
		if (!link && c.direction == NET_RECV && tt->has_last_recv) {
			link = &tt->last_recv;
			bpf_map_update_elem(&ssl_links, &ssl, link, BPF_ANY);
		}
		/* Still none: not a watched connection (the server as a TLS client, say). */
		if (!link) {
			count_drop(DROP_TLS_UNATTRIBUTED);
			return 0;
		}
		c.sock_cookie = link->sock_cookie;
		c.local_port = link->local_port;
		c.remote_port = link->remote_port;
	}
	struct watched_sock *ws = bpf_map_lookup_elem(&tls_socks, &c.sock_cookie);
	if (!ws) {
		struct watched_sock fresh = { .local_port = c.local_port };
		bpf_map_update_elem(&tls_socks, &c.sock_cookie, &fresh, BPF_NOEXIST);
		ws = bpf_map_lookup_elem(&tls_socks, &c.sock_cookie);
	}
	long rc = PT_REGS_RC(ctx);
	__u64 n = 0;
	if (c.out) {
		if (rc != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)c.out))
			return 0;
	} else if (rc > 0) {
		n = rc;
	}
	if (n == 0)
		return 0;

	struct net_event *e = data_event(c.sock_cookie, current_tgid(), c.local_port, c.remote_port, c.direction);
	if (!e)
		return 0;
	e->flags = NET_FLAG_TLS;
	e->len = n;
	e->captured = copy_user(e, 0, (void *)c.buf, capture_limit(n));
	submit(e, ws);
	return 0;
}
