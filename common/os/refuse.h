/* Turning a connection away when the server is full (docs/PROTOCOL.md section
 * 4). */
#ifndef CHAT_REFUSE_H
#define CHAT_REFUSE_H

#include "os/peer_address.h"

/* Logs the refusal with its reason, sends CHAT_SERVER_FULL without waiting
 * and closes fd: for --max-clients, and for a server out of what a
 * connection needs (memory, a thread), where the client can only try again
 * later too. */
void refuse(int fd, const struct peer_address *peer, const char *reason);

/* refuse() for --max-clients connections already open: "server full". */
void refuse_full(int fd, const struct peer_address *peer);

#endif
