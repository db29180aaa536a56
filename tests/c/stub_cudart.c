// A stand-in libcudart.so.12 that, like the real runtime, implements its calls
// with the CUDA driver API (the stub libcuda.so.1 it links): what the agent
// must count once, not twice.
#include <stddef.h>
#include <stdint.h>

typedef uint64_t CUdeviceptr;
typedef struct { unsigned x, y, z; } dim3;

int cuLaunchKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **);
int cuLaunchKernelEx(const void *, void *, void **, void **);
int cuGraphLaunch(void *, void *);
int cuMemcpyHtoD_v2(CUdeviceptr, const void *, size_t);
int cuMemcpyDtoH_v2(void *, CUdeviceptr, size_t);
int cuMemcpyDtoD_v2(CUdeviceptr, CUdeviceptr, size_t);
int cuMemcpy(CUdeviceptr, CUdeviceptr, size_t);
int cuMemcpyAsync(CUdeviceptr, CUdeviceptr, size_t, void *);
int cuMemsetD8_v2(CUdeviceptr, unsigned char, size_t);
int cuMemAlloc_v2(CUdeviceptr *, size_t);
int cuMemFree_v2(CUdeviceptr);
int cuStreamSynchronize(void *);
int cuCtxSynchronize(void);

static int copy(void *dst, const void *src, size_t n, int kind)
{
	CUdeviceptr d = (CUdeviceptr)(uintptr_t)dst, s = (CUdeviceptr)(uintptr_t)src;
	switch (kind) {
	case 1: return cuMemcpyHtoD_v2(d, src, n);
	case 2: return cuMemcpyDtoH_v2(dst, s, n);
	case 3: return cuMemcpyDtoD_v2(d, s, n);
	default: return cuMemcpy(d, s, n);
	}
}

/* Exported functions never call each other: a call to a probed address is a call. */
static int launch(const void *f, dim3 g, dim3 b, void **args, size_t shmem, void *stream)
{
	return cuLaunchKernel((void *)f, g.x, g.y, g.z, b.x, b.y, b.z, shmem, stream, args, NULL);
}

static int memset8(void *p, int value, size_t n)
{
	return cuMemsetD8_v2((CUdeviceptr)(uintptr_t)p, value, n);
}

int cudaLaunchKernel(const void *f, dim3 g, dim3 b, void **args, size_t shmem, void *stream)
{
	return launch(f, g, b, args, shmem, stream);
}
int cudaLaunchKernel_ptsz(const void *f, dim3 g, dim3 b, void **args, size_t shmem, void *stream)
{
	return launch(f, g, b, args, shmem, stream);
}
int cudaLaunchKernelExC(const void *config, const void *f, void **args)
{
	return cuLaunchKernelEx(config, (void *)f, args, NULL);
}
int cudaGraphLaunch(void *exec, void *stream) { return cuGraphLaunch(exec, stream); }
int cudaMemcpy(void *dst, const void *src, size_t n, int kind) { return copy(dst, src, n, kind); }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream)
{
	if (kind == 4)
		return cuMemcpyAsync((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n, stream);
	return copy(dst, src, n, kind);
}
int cudaMemset(void *p, int value, size_t n) { return memset8(p, value, n); }
int cudaMemsetAsync(void *p, int value, size_t n, void *stream) { return memset8(p, value, n); }
int cudaMalloc(void **p, size_t n) { return cuMemAlloc_v2((CUdeviceptr *)p, n); }
int cudaFree(void *p) { return cuMemFree_v2((CUdeviceptr)(uintptr_t)p); }
int cudaStreamSynchronize(void *stream) { return cuStreamSynchronize(stream); }
int cudaDeviceSynchronize(void) { return cuCtxSynchronize(); }
int cudaEventSynchronize(void *event) { return cuCtxSynchronize(); }
