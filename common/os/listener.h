/* The listening socket every model opens the same way. */
#ifndef CHAT_LISTENER_H
#define CHAT_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

/* Binds and listens on host (NULL: every address, one dual-stack IPv6
 * socket that takes IPv4 too, or IPv4 alone where there is no IPv6) at port
 * (0: any free port). The socket is non-blocking and close-on-exec. With
 * reuse_port (--reuse-port) it is bound with SO_REUSEPORT, so that several
 * servers, each bound so, listen on one port and the kernel hands every new
 * connection to one of them. Returns the descriptor and sets *bound_port,
 * or returns -1 with a message in error. */
int listener_open(const char *host, unsigned port, bool reuse_port,
                  unsigned *bound_port, char *error, size_t error_size);

/* What a listening socket is bound to, for the log: "0.0.0.0:1234",
 * "[::1]:1234", or "[::]:1234 (every IPv6 and IPv4 address)". */
void listener_describe(int fd, char *text, size_t size);

/* Lets an accepted connection send each small write at once (no Nagle
 * delay): room lines are small, and a chat wants them now. */
void listener_send_at_once(int fd);

#endif
