// The test programs' stdin protocol: the driving test writes one word per line
// ("go", "exit", ...), and a program that reads anything else stops at once.
#ifndef EXPECT_LINE_H
#define EXPECT_LINE_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads one line from stdin; exits with status 2, naming `program`, unless it starts with `want`. */
static void expect_line(const char *program, const char *want)
{
	char line[64];
	if (!fgets(line, sizeof line, stdin) || strncmp(line, want, strlen(want)) != 0) {
		fprintf(stderr, "%s: expected '%s' on stdin\n", program, want);
		exit(2);
	}
}
#endif
