// Launches kernels and waits for the GPU through the CUDA runtime named by
// argv[1] (the stand-in: a synchronisation blocks 1 ms), with a known shape:
// three quarters of the launches and of the waits under prefill, a quarter
// under decode. Built with frame pointers, as user stacks need. Prints
// "ready", then runs until killed.
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
	unsigned x, y, z;
} dim3;

static int (*launch_kernel)(const void *, dim3, dim3, void **, size_t, void *);
static int (*synchronize)(void);

__attribute__((noinline)) static void launch(int n)
{
	dim3 one = {1, 1, 1};
	for (int i = 0; i < n; i++)
		launch_kernel(NULL, one, one, NULL, 0, NULL);
}

__attribute__((noinline)) void prefill(void)
{
	launch(300);
	for (int i = 0; i < 3; i++)
		synchronize();
}

__attribute__((noinline)) void decode(void)
{
	launch(100);
	synchronize();
}

int main(int argc, char **argv)
{
	void *cudart = argc > 1 ? dlopen(argv[1], RTLD_NOW) : NULL;
	if (!cudart) {
		fprintf(stderr, "usage: gpu_launcher LIBCUDART (%s)\n", dlerror());
		return 2;
	}
	launch_kernel = dlsym(cudart, "cudaLaunchKernel");
	synchronize = dlsym(cudart, "cudaDeviceSynchronize");
	if (!launch_kernel || !synchronize) {
		fprintf(stderr, "%s: no cudaLaunchKernel or cudaDeviceSynchronize\n", argv[1]);
		return 2;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		prefill();
		decode();
	}
}
