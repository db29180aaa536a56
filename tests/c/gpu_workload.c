// A GPU workload with a known answer: it dlopens a GPU runtime library, calls
// every probed function of that runtime N times with known sizes, and prints
// what an exact observer must have seen, as one JSON line. The test driving it
// compares that line with what inferscope reports for this process.
//
// usage: gpu_workload RUNTIME LIBRARY N BYTES [--late | --at-once]
//   (built with -DSTATIC_CUDART as gpu_workload_static: LIBRARY is ignored)
//   RUNTIME: cudart | cuda | cudart+cuda | hip | nccl
// protocol on stdin/stdout (lines): [--late: "started", waits "open"] then
// "ready", waits "go", calls, prints the expectation JSON, waits "exit".
// --at-once: calls right after its dlopen (as a program that loads its
// runtime and uses it does), prints the expectation JSON, waits "exit".
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expect_line.h"

typedef struct { unsigned x, y, z; } dim3;

static void *lib;

#ifdef STATIC_CUDART
/* Built against libcudart_static.a: the runtime lives in this executable, its
 * symbols are local, so the calls are linked directly instead of looked up. */
#define LINKED(X) X(cudaLaunchKernel) X(cudaLaunchKernel_ptsz) X(cudaLaunchKernelExC) X(cudaGraphLaunch) \
	X(cudaMemcpy) X(cudaMemcpyAsync) X(cudaMemset) X(cudaMemsetAsync) X(cudaMalloc) X(cudaFree) \
	X(cudaStreamSynchronize) X(cudaDeviceSynchronize) X(cudaEventSynchronize)
#define DECLARE(f) extern void f(void);
LINKED(DECLARE)
#define ENTRY(f) {#f, (void *)f},
static const struct { const char *name; void *fn; } linked[] = { LINKED(ENTRY) };

static void *sym(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof linked / sizeof linked[0]; i++)
		if (!strcmp(linked[i].name, name))
			return linked[i].fn;
	return NULL;
}
#else
static void *sym(const char *name)
{
	return name ? dlsym(lib, name) : NULL;
}
#endif

/* What the observer must report; printed as JSON at the end. */
static struct {
	unsigned long long kernel_launches, graph_launches, memcpy_calls, htod, dtoh, dtod, other;
	unsigned long long memset_calls, memset_bytes, alloc_calls, alloc_bytes, free_calls, sync_calls, errors;
	long long live_bytes;
	unsigned long long nccl_calls[6], nccl_bytes[6];
} e;

static void copied(int kind, size_t bytes)
{
	e.memcpy_calls++;
	switch (kind) {
	case 1: e.htod += bytes; break;
	case 2: e.dtoh += bytes; break;
	case 3: e.dtod += bytes; break;
	default: e.other += bytes; break;
	}
}

/* A call with a return probe: its failure is an error the observer counts. */
static void result(int rc)
{
	if (rc != 0)
		e.errors++;
}

#define CALL(type, name, ...) ({ type f_ = (type)sym(name); f_ ? (f_(__VA_ARGS__), 1) : 0; })
#define CALL_RC(type, name, ...) ({ type f_ = (type)sym(name); int rc_ = -1; if (f_) rc_ = f_(__VA_ARGS__); if (f_) result(rc_); f_ != 0; })

typedef int (*launch_rt)(const void *, dim3, dim3, void **, size_t, void *);
typedef int (*launch_ex_rt)(const void *, const void *, void **);
typedef int (*ptr_ptr)(void *, void *);
typedef int (*copy_rt)(void *, const void *, size_t, int);
typedef int (*copy_async_rt)(void *, const void *, size_t, int, void *);
typedef int (*copy_to_array_rt)(void *, size_t, size_t, const void *, size_t, int);
typedef int (*copy_from_array_rt)(void *, const void *, size_t, size_t, size_t, int);
typedef int (*set_rt)(void *, int, size_t);
typedef int (*set_async_rt)(void *, int, size_t, void *);
typedef int (*alloc_rt)(void **, size_t);
typedef int (*alloc_async_rt)(void **, size_t, void *);
typedef int (*one_ptr)(void *);
typedef int (*no_arg)(void);
typedef int (*launch_drv)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **);
typedef int (*copy_drv)(uint64_t, const void *, size_t);
typedef int (*copy_dtoh_drv)(void *, uint64_t, size_t);
typedef int (*copy_dtod_drv)(uint64_t, uint64_t, size_t);
typedef int (*alloc_drv)(uint64_t *, size_t);
typedef int (*free_drv)(uint64_t);
typedef int (*coll)(const void *, void *, size_t, int, int, void *, void *);
typedef int (*gather)(const void *, void *, size_t, int, void *, void *);
typedef int (*p2p)(void *, size_t, int, int, void *, void *);

/* Frees the allocation of every other round, so that live bytes stay above zero. */
static void free_half(int round, const char *name, void *p, size_t bytes)
{
	if (round % 2 == 0 && CALL(one_ptr, name, p)) {
		e.free_calls++;
		if (p)
			e.live_bytes -= bytes;
	}
}

static void allocated(int rc, size_t bytes)
{
	e.alloc_calls++, e.alloc_bytes += bytes;
	result(rc);
	if (rc == 0)
		e.live_bytes += bytes;
}

/* The CUDA runtime and HIP share their shape: the same calls under other names. */
struct runtime_api {
	const char *launch, *launch_twin, *graph_launch, *copy, *copy_async, *set, *set_async;
	const char *alloc, *free, *stream_sync, *device_sync, *event_sync;
};

static void runtime_round(const struct runtime_api *api, int round, size_t bytes, char *a, char *b)
{
	dim3 g = {1, 1, 1};
	const char *launches[] = {api->launch, api->launch_twin};
	for (int i = 0; i < 2; i++)
		e.kernel_launches += CALL(launch_rt, launches[i], (void *)runtime_round, g, g, NULL, 0, NULL);
	e.graph_launches += CALL(ptr_ptr, api->graph_launch, NULL, NULL);
	for (int kind = 1; kind <= 4; kind++) {
		if (CALL(copy_rt, api->copy, a, b, bytes + kind, kind))
			copied(kind, bytes + kind);
		if (CALL(copy_async_rt, api->copy_async, a, b, 2 * bytes + kind, kind, NULL))
			copied(kind, 2 * bytes + kind);
	}
	if (CALL(set_rt, api->set, a, 0, bytes))
		e.memset_calls++, e.memset_bytes += bytes;
	if (CALL(set_async_rt, api->set_async, a, 0, bytes / 2, NULL))
		e.memset_calls++, e.memset_bytes += bytes / 2;
	void *p = NULL;
	alloc_rt alloc = (alloc_rt)sym(api->alloc);
	if (alloc)
		allocated(alloc(&p, bytes), bytes);
	free_half(round, api->free, p, bytes);
	e.sync_calls += CALL_RC(one_ptr, api->stream_sync, NULL);
	e.sync_calls += CALL_RC(no_arg, api->device_sync);
	if (api->event_sync)
		e.sync_calls += CALL_RC(one_ptr, api->event_sync, NULL);
}

static void cuda_runtime(int round, size_t bytes, char *a, char *b)
{
	static const struct runtime_api cuda = {
		"cudaLaunchKernel", "cudaLaunchKernel_ptsz", "cudaGraphLaunch", "cudaMemcpy", "cudaMemcpyAsync",
		"cudaMemset", "cudaMemsetAsync", "cudaMalloc", "cudaFree", "cudaStreamSynchronize",
		"cudaDeviceSynchronize", "cudaEventSynchronize",
	};
	char config[256] = {0};
	runtime_round(&cuda, round, bytes, a, b);
	e.kernel_launches += CALL(launch_ex_rt, "cudaLaunchKernelExC", config, (void *)cuda_runtime, NULL);
	/* The array copies pass their kind sixth. */
	if (CALL(copy_to_array_rt, "cudaMemcpyToArray", NULL, 0, 0, b, bytes + 5, 1))
		copied(1, bytes + 5);
	if (CALL(copy_from_array_rt, "cudaMemcpyFromArray", a, NULL, 0, 0, bytes + 6, 2))
		copied(2, bytes + 6);
}

static void cuda_driver(int round, size_t bytes, char *a, char *b)
{
	e.kernel_launches += CALL(launch_drv, "cuLaunchKernel", NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
	e.graph_launches += CALL(ptr_ptr, "cuGraphLaunch", NULL, NULL);
	if (CALL(copy_drv, "cuMemcpyHtoD_v2", (uint64_t)(uintptr_t)a, b, bytes))
		copied(1, bytes);
	if (CALL(copy_dtoh_drv, "cuMemcpyDtoH_v2", a, (uint64_t)(uintptr_t)b, bytes + 1))
		copied(2, bytes + 1);
	if (CALL(copy_dtod_drv, "cuMemcpyDtoD_v2", (uint64_t)(uintptr_t)a, (uint64_t)(uintptr_t)b, bytes + 2))
		copied(3, bytes + 2);
	uint64_t p = 0;
	alloc_drv alloc = (alloc_drv)sym("cuMemAlloc_v2");
	if (alloc)
		allocated(alloc(&p, bytes), bytes);
	free_half(round, "cuMemFree_v2", (void *)(uintptr_t)p, bytes);
	e.sync_calls += CALL_RC(one_ptr, "cuStreamSynchronize", NULL);
	e.sync_calls += CALL_RC(no_arg, "cuCtxSynchronize");
}

static void hip(int round, size_t bytes, char *a, char *b)
{
	/* hipModuleLaunchKernel takes the driver-style argument list; it is called below. */
	static const struct runtime_api hip_api = {
		"hipLaunchKernel", NULL, "hipGraphLaunch", "hipMemcpy", "hipMemcpyAsync", "hipMemset",
		"hipMemsetAsync", "hipMalloc", "hipFree", "hipStreamSynchronize", "hipDeviceSynchronize", NULL,
	};
	runtime_round(&hip_api, round, bytes, a, b);
	e.kernel_launches += CALL(launch_drv, "hipModuleLaunchKernel", NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
}

static void nccl(int round, size_t bytes, char *a, char *b)
{
	/* ncclFloat32 (7): 4 bytes; ncclBfloat16 (9): 2; ncclInt8 (0): 1; ncclFloat64 (8): 8. */
	size_t count = bytes / 8;
	int types[] = {7, 9, 0, 8, 7, 9}, sizes[] = {4, 2, 1, 8, 4, 2};
	int called[6] = {
		CALL(coll, "ncclAllReduce", a, b, count, types[0], 0, NULL, NULL),
		CALL(gather, "ncclAllGather", a, b, count + 1, types[1], NULL, NULL),
		CALL(coll, "ncclReduceScatter", a, b, count + 2, types[2], 0, NULL, NULL),
		CALL(coll, "ncclBroadcast", a, b, count + 3, types[3], 0, NULL, NULL),
		CALL(p2p, "ncclSend", a, count + 4, types[4], 1, NULL, NULL),
		CALL(p2p, "ncclRecv", b, count + 5, types[5], 1, NULL, NULL),
	};
	(void)round;
	for (int i = 0; i < 6; i++) {
		e.nccl_calls[i] += called[i];
		e.nccl_bytes[i] += called[i] * (count + i) * sizes[i];
	}
}

/* Runtime calls (which go through the driver underneath) and direct driver
 * calls on the same thread: each must be counted exactly once. */
static void cuda_both(int round, size_t bytes, char *a, char *b)
{
	cuda_runtime(round, bytes, a, b);
	cuda_driver(round, bytes, a, b);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: gpu_workload cudart|cuda|hip|nccl LIBRARY N BYTES [--late | --at-once]\n");
		return 2;
	}
	const char *runtime = argv[1];
	int rounds = atoi(argv[3]);
	size_t bytes = strtoull(argv[4], NULL, 10);
	void (*round_fn)(int, size_t, char *, char *) =
		!strcmp(runtime, "cudart") ? cuda_runtime :
		!strcmp(runtime, "cuda") ? cuda_driver :
		!strcmp(runtime, "cudart+cuda") ? cuda_both :
		!strcmp(runtime, "hip") ? hip :
		!strcmp(runtime, "nccl") ? nccl : NULL;
	if (!round_fn) {
		fprintf(stderr, "gpu_workload: unknown runtime %s\n", runtime);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int at_once = argc > 5 && !strcmp(argv[5], "--at-once");
	if (argc > 5 && !strcmp(argv[5], "--late")) {
		printf("started\n");
		expect_line("gpu_workload", "open");
	}
#ifndef STATIC_CUDART
	lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "gpu_workload: %s\n", dlerror());
		return 2;
	}
#endif
	/* Buffers big enough for any size used above; the calls may touch them. */
	char *a = calloc(1, 4 * bytes + 64), *b = calloc(1, 4 * bytes + 64);
	if (!at_once) {
		printf("ready\n");
		expect_line("gpu_workload", "go");
	}
	for (int i = 0; i < rounds; i++)
		round_fn(i, bytes, a, b);
	printf("{\"kernel_launches\":%llu,\"graph_launches\":%llu,\"memcpy_calls\":%llu,"
	       "\"memcpy_bytes\":{\"htod\":%llu,\"dtoh\":%llu,\"dtod\":%llu,\"other\":%llu},"
	       "\"memset_calls\":%llu,\"memset_bytes\":%llu,\"alloc_calls\":%llu,\"alloc_bytes\":%llu,"
	       "\"free_calls\":%llu,\"live_bytes\":%lld,\"sync_calls\":%llu,\"errors\":%llu,\"nccl\":{",
	       e.kernel_launches, e.graph_launches, e.memcpy_calls, e.htod, e.dtoh, e.dtod, e.other,
	       e.memset_calls, e.memset_bytes, e.alloc_calls, e.alloc_bytes, e.free_calls, e.live_bytes,
	       e.sync_calls, e.errors);
	const char *ops[] = {"all_reduce", "all_gather", "reduce_scatter", "broadcast", "send", "recv"};
	for (int i = 0, first = 1; i < 6; i++) {
		if (!e.nccl_calls[i])
			continue;
		printf("%s\"%s\":{\"calls\":%llu,\"bytes\":%llu}", first ? "" : ",", ops[i], e.nccl_calls[i], e.nccl_bytes[i]);
		first = 0;
	}
	printf("}}\n");
	expect_line("gpu_workload", "exit");
	return 0;
}
