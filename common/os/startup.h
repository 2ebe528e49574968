/* What every model does before it listens. */
#ifndef CHAT_STARTUP_H
#define CHAT_STARTUP_H

#include <sys/resource.h>

/* Raises the open-file soft limit to the hard limit (SPEC.md section 1) and
 * ignores SIGPIPE, so that a write to a closed socket fails with EPIPE
 * instead of killing the server. Returns the open-file limit now in force. */
rlim_t startup_prepare_process(void);

#endif
