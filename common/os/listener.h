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

/* What a listening socket is bound to, for the log: "0.0.0.0:1234",
 * "[::1]:1234", or "[::]:1234 (every IPv6 and IPv4 address)". */
void listener_describe(int fd, char *text, size_t size);

/* Lets an accepted connection send each small write at once (no Nagle
 * delay): room lines are small, and a chat wants them now. */
void listener_send_at_once(int fd);

#endif
