/* The listening socket every model opens the same way. */
#ifndef CHAT_LISTENER_H
#define CHAT_LISTENER_H

#include <stddef.h>

/* Binds and listens on host (NULL: every address, one dual-stack IPv6
 * socket that takes IPv4 too, or IPv4 alone where there is no IPv6) at port
 * (0: any free port). The socket is non-blocking and close-on-exec. Returns
 * the descriptor and sets *bound_port, or returns -1 with a message in
 * error. */
int listener_open(const char *host, unsigned port, unsigned *bound_port,
                  char *error, size_t error_size);

#endif
