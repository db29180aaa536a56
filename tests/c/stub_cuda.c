// A stand-in libcuda.so.1 for the success paths no GPU-less machine can reach
// with the real driver: every call succeeds, allocations return distinct
// device-looking addresses, and synchronisation blocks for a known 1 ms (or
// forever, on a stuck stream: see stuck_stream.h).
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "stuck_stream.h"

typedef uint64_t CUdeviceptr;
static CUdeviceptr next_address = 0x7f3a00000000ull;

static void block_1ms(void)
{
	struct timespec t = {0, 1000000};
	nanosleep(&t, NULL);
}

int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
		   unsigned shmem, void *stream, void **params, void **extra) { return 0; }
int cuLaunchKernelEx(const void *config, void *f, void **params, void **extra) { return 0; }
int cuGraphLaunch(void *exec, void *stream) { return 0; }
int cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { return 0; }
int cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { return 0; }
int cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) { return 0; }
int cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) { return 0; }
int cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, void *stream) { return 0; }
int cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) { return 0; }
int cuMemAlloc_v2(CUdeviceptr *p, size_t n)
{
	*p = next_address;
	next_address += (n + 0xfffff) & ~0xfffffull;
	return 0;
}
int cuMemFree_v2(CUdeviceptr p) { return 0; }
int cuStreamSynchronize(void *stream)
{
	const struct stuck_stream *stuck = stream;
	if (stuck && stuck->magic == STUCK_STREAM_MAGIC) {
		char byte = 1;
		if (write(stuck->ready_fd, &byte, 1) == 1)
			for (;;)
				pause();
	}
	block_1ms();
	return 0;
}
int cuCtxSynchronize(void) { block_1ms(); return 0; }
