// A stream the stand-in driver never completes: cuStreamSynchronize on it
// writes one byte to `ready_fd` (the caller is inside the call now) and blocks
// forever, so a test can end a process in the middle of a GPU call.
#ifndef STUCK_STREAM_H
#define STUCK_STREAM_H
#include <stdint.h>

#define STUCK_STREAM_MAGIC 0x5354554b53545245ull /* "STUKSTRE" */

struct stuck_stream {
	uint64_t magic;
	int ready_fd;
};
#endif
