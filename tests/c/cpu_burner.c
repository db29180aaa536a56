// A CPU-bound program with a known profile: three quarters of its time in
// hot_path -> spin, one quarter in cold_path -> spin. Built with frame
// pointers, as a profile of user stacks needs. Prints "ready", then burns
// until killed.
#include <stdio.h>

static volatile unsigned long sink;

__attribute__((noinline)) static void spin(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i;
}

__attribute__((noinline)) void hot_path(void) { spin(3000000); }

__attribute__((noinline)) void cold_path(void) { spin(1000000); }

int main(void)
{
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		hot_path();
		cold_path();
	}
}
