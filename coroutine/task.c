#include "task.h"

#include "coro.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct task {
  struct coro *coro;
  struct loop *loop;
  task_function *function;
  void *arg;
  struct loop_timer timer; /* its deadline, or "now" to start or wake it */
  int fd, mask;            /* what it waits for, while waiting */
  bool waiting;
  bool woken; /* a wake-up not yet delivered */
  enum task_outcome outcome;
};

static struct task *current;

/* ---- The loop's side: resuming tasks ---------------------------------- */

static void run_task(void *arg) {
  struct task *task = arg;
  task->function(task->arg);
}

/* Steps a task: runs it until it waits again or ends; an ended task is
 * freed here, the loop's callback being the last to hold it. */
static void resume(struct task *task) {
  current = task;
  coro_resume(task->coro);
  current = NULL;
  if (coro_finished(task->coro)) {
    loop_timer_cancel(task->loop, &task->timer);
    coro_destroy(task->coro);
    free(task);
  }
}

/* The future is done: the descriptor is ready. Level-triggered, a ready
 * descriptor nobody waits on would be reported every turn: it is unwatched
 * until a task waits on it again. */
static void on_ready(struct loop *loop, int fd, void *data, int ready) {
  struct task *task = data;
  if (task->waiting && task->fd == fd && (task->mask & ready)) {
    task->outcome = TASK_READY;
    resume(task);
  } else {
    loop_unwatch(loop, fd, ready);
  }
}

/* The deadline passed, or the task was woken or spawned. */
static void on_timer(struct loop *loop, struct loop_timer *timer) {
  (void)loop;
  struct task *task = timer->data;
  if (task->waiting) { /* else this is its start, and a wake-up waits */
    task->outcome = task->woken ? TASK_WOKEN : TASK_TIMEOUT;
    task->woken = false;
  }
  resume(task);
}

struct task *task_spawn(struct loop *loop, task_function *function, void *arg,
                        size_t stack_size) {
  struct task *task = calloc(1, sizeof *task);
  if (!task)
    return NULL;
  task->coro = coro_create(run_task, task, stack_size);
  if (!task->coro) {
    free(task);
    return NULL;
  }
  task->loop = loop;
  task->function = function;
  task->arg = arg;
  task->fd = -1;
  /* Not woken: its first resume is its start. */
  if (!loop_timer_start(loop, &task->timer, loop_now(loop), on_timer, task)) {
    coro_destroy(task->coro);
    free(task);
    return NULL;
  }
  return task;
}

struct task *task_current(void) {
  return current;
}

void task_wake(struct task *task) {
  task->woken = true;
  if (task->waiting)
    loop_timer_start(task->loop, &task->timer, loop_now(task->loop), on_timer,
                     task);
}

void task_release_unused_stack(struct task *task) {
  coro_release_unused_stack(task->coro);
}

/* ---- The task's side: waiting ----------------------------------------- */

enum task_outcome co_wait(int fd, int mask, long long deadline) {
  struct task *task = current;
  if (task->woken) { /* woken while it was running */
    task->woken = false;
    return TASK_WOKEN;
  }
  if (fd >= 0 && !loop_watch(task->loop, fd, mask, on_ready, task))
    return TASK_TIMEOUT; /* cannot watch it: as if out of time */
  if (deadline > 0)
    loop_timer_start(task->loop, &task->timer, deadline, on_timer, task);
  task->fd = fd;
  task->mask = mask;
  task->waiting = true;
  coro_yield(); /* the loop resumes us: on_ready or on_timer */
  task->waiting = false;
  task->fd = -1;
  loop_timer_cancel(task->loop, &task->timer);
  return task->outcome;
}

/* Turns a wait that did not end in readiness into an errno. */
static ssize_t fail(enum task_outcome outcome) {
  errno = outcome == TASK_WOKEN ? ECANCELED : ETIMEDOUT;
  return -1;
}

static ssize_t receive(int fd, void *buffer, size_t length, int flags,
                       long long deadline) {
  for (;;) {
    ssize_t got = recv(fd, buffer, length, flags | MSG_DONTWAIT);
    if (got >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return got;
    enum task_outcome outcome = co_wait(fd, LOOP_READABLE, deadline);
    if (outcome != TASK_READY)
      return fail(outcome);
  }
}

ssize_t co_read(int fd, void *buffer, size_t length, long long deadline) {
  return receive(fd, buffer, length, 0, deadline);
}

ssize_t co_peek(int fd, void *buffer, size_t length, long long deadline) {
  return receive(fd, buffer, length, MSG_PEEK, deadline);
}

ssize_t co_write(int fd, const void *bytes, size_t length, long long deadline) {
  for (;;) {
    ssize_t sent = send(fd, bytes, length, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0 ||
        (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return sent;
    enum task_outcome outcome = co_wait(fd, LOOP_WRITABLE, deadline);
    if (outcome != TASK_READY)
      return fail(outcome);
  }
}

enum task_outcome co_sleep(long long deadline) {
  return co_wait(-1, 0, deadline);
}

void co_close(int fd) {
  if (current)
    loop_unwatch(current->loop, fd, LOOP_READABLE | LOOP_WRITABLE);
  close(fd);
}
