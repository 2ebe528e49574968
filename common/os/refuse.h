/* Turning a connection away when the server is full (SPEC.md section 4). */
#ifndef CHAT_REFUSE_H
#define CHAT_REFUSE_H

#include "log.h"

/* Logs the refusal, sends CHAT_SERVER_FULL without waiting and closes fd. */
void refuse_full(int fd, const struct peer_address *peer);

#endif
