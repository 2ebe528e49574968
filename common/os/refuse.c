#include "os/refuse.h"

#include "os/log.h"
#include "protocol.h"

#include <sys/socket.h>
#include <unistd.h>

void refuse(int fd, const struct peer_address *peer, const char *reason) {
  log_refused(peer, reason);
  /* A new socket's send buffer is empty: the notice fits at once. */
  static const char full[] = CHAT_SERVER_FULL;
  ssize_t sent = send(fd, full, sizeof full - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)sent; /* if it fails, the peer is gone anyway */
  shutdown(fd, SHUT_WR);
  close(fd);
}

void refuse_full(int fd, const struct peer_address *peer) {
  refuse(fd, peer, "server full");
}
