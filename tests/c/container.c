// A container runtime's start, reduced to what the tests need: a mount
// namespace of its own, its mounts made, then the program exec'd. As with a
// container's entrypoint, the program is the namespace's first exec and finds
// the namespace's files in place (`unshare sh -c 'mount ...; exec ...'` would
// exec the shell first, before anything is mounted).
//
// usage: container [--tmpfs DIR | --bind SOURCE TARGET]... -- PROGRAM [ARG]...
//   --tmpfs: an empty tmpfs at DIR (created if missing);
//   --bind: SOURCE (file or directory) at TARGET (created if missing).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static void fail(const char *what, const char *path)
{
	fprintf(stderr, "container: %s %s: %s\n", what, path, strerror(errno));
	exit(2);
}

/* mkdir -p */
static void make_dirs(const char *path)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			fail("mkdir", buf);
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		fail("mkdir", buf);
}

static void bind(const char *source, const char *target)
{
	struct stat st;
	if (stat(source, &st))
		fail("stat", source);
	if (S_ISDIR(st.st_mode)) {
		make_dirs(target);
	} else {
		char parent[4096];
		snprintf(parent, sizeof parent, "%s", target);
		char *slash = strrchr(parent, '/');
		if (slash && slash != parent) {
			*slash = 0;
			make_dirs(parent);
		}
		int fd = open(target, O_WRONLY | O_CREAT, 0644);
		if (fd < 0)
			fail("create", target);
		close(fd);
	}
	if (mount(source, target, NULL, MS_BIND, NULL))
		fail("bind-mount onto", target);
}

int main(int argc, char **argv)
{
	if (unshare(CLONE_NEWNS))
		fail("unshare", "the mount namespace");
	/* Nothing mounted here may reach the namespace this one came from. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		fail("make private", "/");
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--"); i++) {
		if (!strcmp(argv[i], "--tmpfs") && i + 1 < argc) {
			make_dirs(argv[++i]);
			if (mount("tmpfs", argv[i], "tmpfs", 0, NULL))
				fail("mount tmpfs on", argv[i]);
		} else if (!strcmp(argv[i], "--bind") && i + 2 < argc) {
			bind(argv[i + 1], argv[i + 2]);
			i += 2;
		} else {
			fprintf(stderr, "usage: container [--tmpfs DIR | --bind SOURCE TARGET]... -- PROGRAM [ARG]...\n");
			return 2;
		}
	}
	if (i + 1 >= argc) {
		fprintf(stderr, "container: no program after --\n");
		return 2;
	}
	execvp(argv[i + 1], argv + i + 1);
	fail("exec", argv[i + 1]);
}
