/* hiredis's asynchronous API over chat-forking's parent loop, one poll().
 *
 * With --redis the parent owns the link to Redis (common/os/redis_room.h):
 * two connections, never one per child. The parent already waits in one
 * poll() on the listener, its signals and its children's requests; this is
 * the adapter hiredis ships for ae, libevent and libev (<hiredis/adapters/>),
 * written for that loop, so that the connections are watched by the same
 * poll() and no other event library or descriptor is needed:
 *
 *   n = redis_poll_fill(&watches, fds + k);     before poll(): what to watch
 *   poll(fds, k + n, timeout);
 *   redis_poll_dispatch(&watches, fds + k, n);  after: hiredis reads, writes
 *   ...                                         commands queued meanwhile
 *   redis_poll_flush(&watches);                 sent without another turn
 *
 * hiredis calls the adapter's hooks to say what it wants to watch, and frees
 * a context (calling cleanup) on an error, after a disconnect or on
 * redisAsyncFree, often from inside redisAsyncHandleRead or Write: so each
 * watch has a generation, and an event polled for a context freed meanwhile
 * is not delivered. No memory is allocated: at most REDIS_POLL_MAX
 * connections at once. */
#ifndef CHAT_REDIS_POLL_H
#define CHAT_REDIS_POLL_H

#include <hiredis/async.h>

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* redis_room.c keeps two connections; one more pair may be on its way while
 * an old one is being freed. */
#define REDIS_POLL_MAX 4

struct redis_poll_watch {
  redisAsyncContext *context; /* NULL: the watch is free */
  int fd;
  bool read, write;    /* what hiredis wants to hear about */
  uint32_t generation; /* raised when the context is freed */
};

/* Zero-initialised, it watches nothing. */
struct redis_poll {
  struct redis_poll_watch watches[REDIS_POLL_MAX];
  /* What the last redis_poll_fill put in fds[i]. */
  struct {
    int watch;
    uint32_t generation;
  } polled[REDIS_POLL_MAX];
  size_t polled_count;
};

/* Lets the loop drive `context`: 0, or -1 when REDIS_POLL_MAX connections
 * are watched already (or the context has another adapter). */
int redis_poll_attach(struct redis_poll *watches, redisAsyncContext *context);

/* Fills fds[0 .. n) (room for REDIS_POLL_MAX) with what to watch; returns n.
 * Without `reading`, only what waits to be sent: what Redis says waits in
 * the sockets. */
size_t redis_poll_fill(struct redis_poll *watches, struct pollfd *fds,
                       bool reading);

/* After poll(): hands what is ready in fds[0 .. count) (as filled) to
 * hiredis, whose callbacks run now. */
void redis_poll_dispatch(struct redis_poll *watches, const struct pollfd *fds,
                         size_t count);

/* Sends the commands queued since the last poll(), as far as the sockets
 * take them now. */
void redis_poll_flush(struct redis_poll *watches);

/* In a child: closes its copies of the parent's connections (it never uses
 * them, and must not hold them open once the parent has closed them). */
void redis_poll_close_inherited(const struct redis_poll *watches);

#endif
