/* The serving policy the models share: how long the last lines may take,
 * how long shutdown waits, how accepting backs off, how much is read at
 * once. One place, so that the models differ only in how they serve. */
#ifndef CHAT_POLICY_H
#define CHAT_POLICY_H

#include <errno.h>
#include <stdbool.h>

/* How long a closing client may take to read its last lines. */
#define FLUSH_TIMEOUT_MILLISECONDS 5000
/* How long shutdown waits for goodbyes to drain (docs/PROTOCOL.md: exit within
 * 2 s, with room left to close everything after). */
#define SHUTDOWN_GRACE_MILLISECONDS 1500
/* How long accepting pauses when the process runs out of descriptors, if
 * no connection closes before. */
#define ACCEPT_RETRY_MILLISECONDS 250
/* Connections accepted in a row before the others get a turn. */
#define ACCEPT_BATCH 64
/* Bytes read from a socket at a time. */
#define READ_CHUNK 16384

/* accept() failed for want of descriptors or memory: the listener stays
 * ready, and accepting again at once would spin. Pause instead. */
static inline bool accept_error_is_exhaustion(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS ||
         error == ENOMEM;
}

/* accept() failed for this connection alone (it went away before it was
 * taken, or a signal came): take the next. */
static inline bool accept_error_is_transient(int error) {
  return error == EAGAIN || error == EWOULDBLOCK || error == EINTR ||
         error == ECONNABORTED || error == EPERM || error == EPROTO;
}

#endif
