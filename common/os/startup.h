/* What every model does before it listens. */
#ifndef CHAT_STARTUP_H
#define CHAT_STARTUP_H

#include "options.h"

#include <sys/resource.h>

/* Raises the open-file soft limit to the hard limit (SPEC.md section 1),
 * ignores SIGPIPE, so that a write to a closed socket fails with EPIPE
 * instead of killing the server, and keeps freed heap through bursts
 * (heap.h). Returns the open-file limit now in force. */
rlim_t startup_prepare_process(void);

/* What every model does first: parses the command line, sets up the log,
 * prepares the process and opens the listening socket. Returns the
 * listening descriptor and sets *port; or returns -1 with *exit_status set,
 * having said why: 0 after --help or --version, 2 for a bad argument, 1 when
 * it cannot listen. */
int startup_listen(struct chat_options *options, int argc, char *argv[],
                   unsigned *port, int *exit_status);

#endif
