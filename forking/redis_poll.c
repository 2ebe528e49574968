/* hiredis over one poll() (redis_poll.h). hiredis reads one chunk per call
 * and never says whether the socket is drained; poll() is level-triggered,
 * so the rest is reported at the next turn. Write interest is set only
 * while commands wait to be sent (hiredis adds it when it queues one, and
 * deletes it once its buffer is empty), so an idle connection does not wake
 * the loop. Read interest is set from attach on: hiredis 0.14 adds it after
 * every read and write and never deletes it; a connecting socket is
 * readable only once its connect failed, which redisAsyncHandleRead then
 * reports. */
#include "redis_poll.h"

#include <unistd.h>

static void add_read(void *data) {
  ((struct redis_poll_watch *)data)->read = true;
}

static void del_read(void *data) {
  ((struct redis_poll_watch *)data)->read = false;
}

static void add_write(void *data) {
  ((struct redis_poll_watch *)data)->write = true;
}

static void del_write(void *data) {
  ((struct redis_poll_watch *)data)->write = false;
}

/* The context is being freed (hiredis closes its socket next). */
static void cleanup(void *data) {
  struct redis_poll_watch *watch = data;
  watch->context = NULL;
  watch->read = watch->write = false;
  watch->generation++;
}

int redis_poll_attach(struct redis_poll *watches, redisAsyncContext *context) {
  if (context->ev.data != NULL)
    return -1; /* another adapter drives it */
  for (int i = 0; i < REDIS_POLL_MAX; i++) {
    struct redis_poll_watch *watch = &watches->watches[i];
    if (watch->context)
      continue;
    watch->context = context;
    watch->fd = context->c.fd;
    watch->read = true;
    watch->write = false;
    context->ev.data = watch;
    context->ev.addRead = add_read;
    context->ev.delRead = del_read;
    context->ev.addWrite = add_write;
    context->ev.delWrite = del_write;
    context->ev.cleanup = cleanup;
    return 0;
  }
  return -1;
}

size_t redis_poll_fill(struct redis_poll *watches, struct pollfd *fds,
                       bool reading) {
  size_t count = 0;
  for (int i = 0; i < REDIS_POLL_MAX; i++) {
    struct redis_poll_watch *watch = &watches->watches[i];
    bool read = watch->read && reading;
    if (!watch->context || (!read && !watch->write))
      continue;
    fds[count] = (struct pollfd){
        .fd = watch->fd,
        .events = (short)((read ? POLLIN : 0) | (watch->write ? POLLOUT : 0)),
    };
    watches->polled[count].watch = i;
    watches->polled[count].generation = watch->generation;
    count++;
  }
  watches->polled_count = count;
  return count;
}

/* The watch polled in fds[k], if its context still lives. */
static struct redis_poll_watch *still(struct redis_poll *watches, size_t k) {
  struct redis_poll_watch *watch = &watches->watches[watches->polled[k].watch];
  return watch->context && watch->generation == watches->polled[k].generation
             ? watch
             : NULL;
}

void redis_poll_dispatch(struct redis_poll *watches, const struct pollfd *fds,
                         size_t count) {
  if (count > watches->polled_count)
    count = watches->polled_count;
  for (size_t k = 0; k < count; k++) {
    short ready = fds[k].revents;
    struct redis_poll_watch *watch = still(watches, k);
    /* An error or a hang-up goes to whichever side is watched: hiredis
     * reads the cause. */
    if (watch && watch->read && (fds[k].events & POLLIN) &&
        (ready & (POLLIN | POLLERR | POLLHUP)))
      redisAsyncHandleRead(watch->context); /* may free it */
    watch = still(watches, k);
    if (watch && watch->write && (ready & (POLLOUT | POLLERR | POLLHUP)))
      redisAsyncHandleWrite(watch->context); /* may free it */
  }
}

void redis_poll_flush(struct redis_poll *watches) {
  for (int i = 0; i < REDIS_POLL_MAX; i++) {
    struct redis_poll_watch *watch = &watches->watches[i];
    /* Only a connected socket: a connect in progress is finished by the
     * first poll that reports it. */
    if (watch->context && watch->write &&
        (watch->context->c.flags & REDIS_CONNECTED))
      redisAsyncHandleWrite(watch->context); /* may free it */
  }
}

void redis_poll_close_inherited(const struct redis_poll *watches) {
  for (int i = 0; i < REDIS_POLL_MAX; i++) {
    if (watches->watches[i].context)
      close(watches->watches[i].fd);
  }
}
