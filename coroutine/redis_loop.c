/* hiredis on the hand-written loop: the five hooks of an event-library
 * adapter, as <hiredis/adapters/ae.h> writes them for Redis's own loop.
 *
 * How hiredis is driven. An asynchronous context owns a non-blocking socket,
 * an output buffer of queued commands and a reply parser, but it never waits:
 * it tells the event library what to watch through the hooks in context->ev
 * (addRead, delRead, addWrite, delWrite, cleanup), and the library calls it
 * when the socket is ready. redisAsyncHandleRead() reads one chunk (16 KiB)
 * and runs the callback of every reply complete in what it has;
 * redisAsyncHandleWrite() sends what the socket takes of the queued commands.
 * The first event of either kind finishes the connect: the connect callback
 * hears REDIS_OK, or REDIS_ERR and the context is freed.
 *
 * Why level triggering fits. hiredis reads one chunk per call and never says
 * whether the socket is drained; this loop reports a socket for as long as it
 * is ready, so the rest comes in the next turn, where an edge-triggered loop
 * would never report it again. Write interest is armed only while commands
 * wait to be sent (hiredis adds it when it queues one or the socket took only
 * part, and deletes it once the buffer is empty), so an idle connection does
 * not wake the loop each turn.
 *
 * Read interest is armed at attach and kept until cleanup: hiredis wants it
 * for the connection's whole life (it re-adds it after every read and write,
 * and 0.14 never calls delRead). So the descriptor is in the epoll set from
 * attach on, and every later change of interest is an EPOLL_CTL_MOD, which
 * allocates nothing and does not fail for a descriptor in the set: the one
 * call that can fail, the first, is attach's, which reports it. That is why
 * the hooks, which return nothing to hiredis, may ignore what loop_watch()
 * returns. (Before the connect completes, read interest is harmless: a
 * connecting socket is readable only once the connect failed, and then
 * redisAsyncHandleRead reports the failure as a write event would.)
 *
 * Freeing. hiredis frees a context on an error, at the end of a disconnect,
 * or on redisAsyncFree() (from a reply callback: once that callback returns),
 * so often inside redisAsyncHandleRead() or redisAsyncHandleWrite() called
 * from this file. Before freeing it calls cleanup, with the descriptor still
 * open: the adapter stops watching it and frees its record. Hence the
 * invariant: on_readable and on_writable touch nothing after their call into
 * hiredis. And a write event fired in the same turn as the read that freed
 * the context is not delivered: the loop checks what a descriptor is watched
 * for before each callback, and cleanup left nothing (loop.h). */
#include "redis_loop.h"

#include <stdlib.h>

/* What hiredis's hooks get as their privdata: the context's ev.data. */
struct redis_watch {
  redisAsyncContext *context;
  struct loop *loop;
  int fd; /* the context's socket; hiredis 0.14 keeps one for life */
};

static void on_readable(struct loop *loop, int fd, void *data, int ready) {
  (void)loop;
  (void)fd;
  (void)ready;
  struct redis_watch *watch = data;
  redisAsyncHandleRead(watch->context); /* may free watch */
}

static void on_writable(struct loop *loop, int fd, void *data, int ready) {
  (void)loop;
  (void)fd;
  (void)ready;
  struct redis_watch *watch = data;
  redisAsyncHandleWrite(watch->context); /* may free watch */
}

/* The hooks. hiredis calls them often (add_read after every read and write)
 * and wants them idempotent: loop_watch() of what is watched already, and
 * loop_unwatch() of what is not, make no system call. */

static void add_read(void *data) {
  struct redis_watch *watch = data;
  (void)loop_watch(watch->loop, watch->fd, LOOP_READABLE, on_readable, watch);
}

static void del_read(void *data) {
  struct redis_watch *watch = data;
  loop_unwatch(watch->loop, watch->fd, LOOP_READABLE);
}

static void add_write(void *data) {
  struct redis_watch *watch = data;
  (void)loop_watch(watch->loop, watch->fd, LOOP_WRITABLE, on_writable, watch);
}

static void del_write(void *data) {
  struct redis_watch *watch = data;
  loop_unwatch(watch->loop, watch->fd, LOOP_WRITABLE);
}

/* The context is being freed; its socket is still open (hiredis closes it
 * next), so unwatching it takes it out of the epoll set. */
static void cleanup(void *data) {
  struct redis_watch *watch = data;
  loop_unwatch(watch->loop, watch->fd, LOOP_READABLE | LOOP_WRITABLE);
  free(watch);
}

int redis_loop_attach(redisAsyncContext *context, struct loop *loop) {
  if (context->ev.data != NULL)
    return -1; /* another adapter drives it */
  struct redis_watch *watch = malloc(sizeof *watch);
  if (!watch)
    return -1;
  *watch = (struct redis_watch){context, loop, context->c.fd};
  if (!loop_watch(loop, watch->fd, LOOP_READABLE, on_readable, watch)) {
    free(watch);
    return -1;
  }
  context->ev.data = watch;
  context->ev.addRead = add_read;
  context->ev.delRead = del_read;
  context->ev.addWrite = add_write;
  context->ev.delWrite = del_write;
  context->ev.cleanup = cleanup;
  return 0;
}
