// Short-lived GPU processes with a known answer. The parent maps the CUDA
// runtime (so its probes stay attached) and forks children that run no loader
// and no exec before calling it: each names itself, makes 7 kernel launches and
// 3 host-to-device copies, and ends one of three ways:
//   exit      returns at once;
//   exec      exec's /bin/true (a program without a GPU runtime);
//   mid_call  exits while another thread is inside cudaStreamSynchronize on a
//             stream that never completes (the stand-in driver's STUCK_STREAM).
//
// usage: gpu_churn LIBRARY N
// protocol on stdin/stdout (lines): prints "ready", waits "go", forks the N
// children, reaps them, prints one JSON line per child, then "done", waits "exit".
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "expect_line.h"
#include "stuck_stream.h"

typedef struct { unsigned x, y, z; } dim3;
typedef int (*launch_fn)(const void *, dim3, dim3, void **, size_t, void *);
typedef int (*copy_fn)(void *, const void *, size_t, int);
typedef int (*sync_fn)(void *);

enum { LAUNCHES = 7, COPIES = 3, BYTES = 4096 };
static const char *const ENDS[] = {"exit", "exec", "mid_call"};

static void *lib;

static void *stuck_sync(void *stream)
{
	((sync_fn)dlsym(lib, "cudaStreamSynchronize"))(stream);
	return NULL;
}

static void child(int i)
{
	static char a[BYTES], b[BYTES];
	char name[16];
	dim3 one = {1, 1, 1};
	snprintf(name, sizeof name, "churn-%d", i);
	prctl(PR_SET_NAME, name);
	launch_fn launch = (launch_fn)dlsym(lib, "cudaLaunchKernel");
	copy_fn copy = (copy_fn)dlsym(lib, "cudaMemcpy");
	for (int n = 0; n < LAUNCHES; n++)
		launch((void *)child, one, one, NULL, 0, NULL);
	for (int n = 0; n < COPIES; n++)
		copy(a, b, BYTES, 1);
	switch (i % 3) {
	case 1:
		execl("/bin/true", "true", (char *)NULL);
		_exit(3);
	case 2: {
		/* Exits once the other thread is inside the call (the driver said so). */
		int fds[2];
		char byte;
		pthread_t t;
		if (pipe(fds) != 0)
			_exit(4);
		struct stuck_stream stream = {STUCK_STREAM_MAGIC, fds[1]};
		pthread_create(&t, NULL, stuck_sync, &stream);
		if (read(fds[0], &byte, 1) != 1)
			_exit(5);
		_exit(0);
	}
	default:
		_exit(0);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: gpu_churn LIBRARY N\n");
		return 2;
	}
	int n = atoi(argv[2]);
	pid_t *pids = calloc(n, sizeof *pids);
	setvbuf(stdout, NULL, _IOLBF, 0);
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib || !pids) {
		fprintf(stderr, "gpu_churn: %s\n", lib ? "out of memory" : dlerror());
		return 2;
	}
	printf("ready\n");
	expect_line("gpu_churn", "go");
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			child(i);
		if (pids[i] < 0) {
			perror("gpu_churn: fork");
			return 2;
		}
	}
	for (int i = 0; i < n; i++) {
		int status;
		if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "gpu_churn: child %d failed (status %d)\n", i, status);
			return 2;
		}
		printf("{\"pid\":%d,\"name\":\"churn-%d\",\"end\":\"%s\",\"kernel_launches\":%d,"
		       "\"memcpy_calls\":%d,\"htod\":%d,\"sync_calls\":%d}\n",
		       pids[i], i, ENDS[i % 3], LAUNCHES, COPIES, COPIES * BYTES, i % 3 == 2);
	}
	printf("done\n");
	expect_line("gpu_churn", "exit");
	return 0;
}
