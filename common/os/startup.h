/* What every model does before it listens. */
#ifndef CHAT_STARTUP_H
#define CHAT_STARTUP_H

#include "options.h"

#include <sys/resource.h>

/* What every model does first: parses the command line, sets up the log,
 * prepares the process (the open-file limit raised to the hard limit,
 * SIGPIPE, SIGUSR1 and SIGUSR2 ignored, freed heap kept through bursts: heap.h)
 * and opens the listening socket. Returns the listening descriptor and sets
 * *port; or returns -1 with *exit_status set, having said why: 0 after --help
 * or --version, 2 for a bad argument, 1 when it cannot listen. */
int startup_listen(struct chat_options *options, int argc, char *argv[],
                   unsigned *port, int *exit_status);

#endif
