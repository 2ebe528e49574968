/* The event loop: one epoll instance, a table of file events indexed by
 * descriptor, and a binary heap of timers.
 *
 * Level-triggered, as Redis's ae.c. A descriptor stays reported for as long
 * as it is ready, so a callback may do part of the work (read one chunk,
 * send what the socket takes) and hear again next turn, and watching or
 * unwatching at any moment loses no event. Edge-triggered would report each
 * change once: every callback would have to read or write until EAGAIN, or
 * remember that it did not, and a descriptor watched again after its edge
 * would never be reported. The price of level triggering is the epoll_ctl
 * that turns interest off once it is no longer wanted, so the server arms
 * write interest only for output a socket did not take, and keeps read
 * interest armed for the whole life of a connection.
 *
 * A turn: the before-sleep hook, epoll_wait until the nearest timer, the
 * callbacks of the descriptors that fired, the timers that are due.
 *
 * Safety: a callback may unwatch or close any descriptor, its own included,
 * and free what the other events point to. Before each callback the loop
 * looks again at what the descriptor is watched for now (as ae.c does), and
 * every fired event carries the generation of its descriptor's watch, so a
 * descriptor closed and reused by a later accept in the same turn does not
 * get the old socket's event. A timer is taken out of the heap before its
 * proc runs, so a proc may cancel, restart or free its own timer or any
 * other. */
#include "loop.h"

#include "os/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Events taken from the kernel per turn; the rest stay ready (level
 * triggered) and come in the next turn. */
#define MAX_FIRED 1024
/* Timers the heap has room for beyond one per descriptor before it grows. */
#define SPARE_TIMERS 64
/* In a timer's slot: it is due in this turn, at this index of `expired`. */
#define EXPIRED ((size_t)1 << (sizeof(size_t) * 8 - 1))

struct file_event {
  int mask;            /* LOOP_READABLE | LOOP_WRITABLE, as watched now */
  uint32_t generation; /* bumped each time the descriptor stops being watched */
  loop_file_proc *read_proc, *write_proc;
  void *read_data, *write_data;
};

struct loop {
  int epoll;
  int size; /* descriptors 0 to size - 1 */
  struct file_event *files;
  struct epoll_event fired[MAX_FIRED];
  struct loop_timer **heap;    /* heap[0] is the nearest; slot = index + 1 */
  struct loop_timer **expired; /* this turn's due timers, in order */
  size_t timers, capacity;     /* of both arrays */
  uint64_t next_order;
  long long now;
  bool stopped;
  void (*before_sleep)(struct loop *loop, void *data);
  void *before_sleep_data;
};

struct loop *loop_create(int size) {
  struct loop *loop = calloc(1, sizeof *loop);
  if (!loop)
    return NULL;
  loop->size = size;
  loop->capacity = (size_t)size + SPARE_TIMERS;
  /* calloc of a large table maps zero pages: only the entries of the
   * descriptors in use are ever touched. */
  loop->files = calloc((size_t)size, sizeof *loop->files);
  loop->heap = calloc(loop->capacity, sizeof *loop->heap);
  loop->expired = calloc(loop->capacity, sizeof *loop->expired);
  loop->epoll = epoll_create1(EPOLL_CLOEXEC);
  if (!loop->files || !loop->heap || !loop->expired || loop->epoll < 0) {
    loop_destroy(loop);
    return NULL;
  }
  loop->now = now_milliseconds();
  return loop;
}

void loop_destroy(struct loop *loop) {
  if (!loop)
    return;
  if (loop->epoll >= 0)
    close(loop->epoll);
  free(loop->files);
  free(loop->heap);
  free(loop->expired);
  free(loop);
}

/* ---- Descriptors ---------------------------------------------------- */

static uint32_t epoll_events(int mask) {
  return (mask & LOOP_READABLE ? EPOLLIN : 0) |
         (mask & LOOP_WRITABLE ? EPOLLOUT : 0);
}

/* What epoll_data carries: the descriptor, and the generation of its
 * watch, so that an event of a descriptor since closed is recognised. */
static uint64_t event_key(int fd, uint32_t generation) {
  return (uint64_t)generation << 32 | (uint32_t)fd;
}

bool loop_watch(struct loop *loop, int fd, int mask, loop_file_proc *proc,
                void *data) {
  if (fd < 0 || fd >= loop->size) {
    errno = ERANGE;
    return false;
  }
  struct file_event *file = &loop->files[fd];
  int now_watched = file->mask | mask;
  if (now_watched != file->mask) {
    struct epoll_event event = {
        .events = epoll_events(now_watched),
        .data.u64 = event_key(fd, file->generation),
    };
    int operation = file->mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epoll, operation, fd, &event) < 0)
      return false;
    file->mask = now_watched;
  }
  if (mask & LOOP_READABLE) {
    file->read_proc = proc;
    file->read_data = data;
  }
  if (mask & LOOP_WRITABLE) {
    file->write_proc = proc;
    file->write_data = data;
  }
  return true;
}

void loop_unwatch(struct loop *loop, int fd, int mask) {
  if (fd < 0 || fd >= loop->size)
    return;
  struct file_event *file = &loop->files[fd];
  int still_watched = file->mask & ~mask;
  if (still_watched == file->mask)
    return;
  if (still_watched == 0) {
    /* Fails harmlessly when fd was closed already: closing took it out. */
    epoll_ctl(loop->epoll, EPOLL_CTL_DEL, fd, NULL);
    file->generation++;
  } else {
    struct epoll_event event = {
        .events = epoll_events(still_watched),
        .data.u64 = event_key(fd, file->generation),
    };
    epoll_ctl(loop->epoll, EPOLL_CTL_MOD, fd, &event);
  }
  file->mask = still_watched;
}

int loop_watched(const struct loop *loop, int fd) {
  return fd >= 0 && fd < loop->size ? loop->files[fd].mask : 0;
}

/* ---- Timers: a binary heap on (when, order) --------------------------- */

static bool earlier(const struct loop_timer *a, const struct loop_timer *b) {
  return a->when < b->when || (a->when == b->when && a->order < b->order);
}

static void place(struct loop *loop, size_t index, struct loop_timer *timer) {
  loop->heap[index] = timer;
  timer->slot = index + 1;
}

static void sift_up(struct loop *loop, size_t index) {
  struct loop_timer *timer = loop->heap[index];
  while (index > 0) {
    size_t parent = (index - 1) / 2;
    if (!earlier(timer, loop->heap[parent]))
      break;
    place(loop, index, loop->heap[parent]);
    index = parent;
  }
  place(loop, index, timer);
}

static void sift_down(struct loop *loop, size_t index) {
  struct loop_timer *timer = loop->heap[index];
  for (;;) {
    size_t child = 2 * index + 1;
    if (child >= loop->timers)
      break;
    if (child + 1 < loop->timers &&
        earlier(loop->heap[child + 1], loop->heap[child]))
      child++;
    if (!earlier(loop->heap[child], timer))
      break;
    place(loop, index, loop->heap[child]);
    index = child;
  }
  place(loop, index, timer);
}

static void heap_remove(struct loop *loop, size_t index) {
  loop->heap[index]->slot = 0;
  struct loop_timer *last = loop->heap[--loop->timers];
  if (index == loop->timers)
    return;
  place(loop, index, last);
  sift_down(loop, index);
  sift_up(loop, last->slot - 1);
}

void loop_timer_cancel(struct loop *loop, struct loop_timer *timer) {
  if (timer->slot == 0)
    return;
  if (timer->slot & EXPIRED) { /* due this turn: it will not run */
    loop->expired[timer->slot & ~EXPIRED] = NULL;
    timer->slot = 0;
    return;
  }
  heap_remove(loop, timer->slot - 1);
}

static bool grow_timers(struct loop *loop) {
  size_t capacity = loop->capacity * 2;
  struct loop_timer **heap = realloc(loop->heap, capacity * sizeof *heap);
  if (!heap)
    return false;
  loop->heap = heap;
  struct loop_timer **expired =
      realloc(loop->expired, capacity * sizeof *expired);
  if (!expired)
    return false;
  loop->expired = expired;
  loop->capacity = capacity;
  return true;
}

bool loop_timer_start(struct loop *loop, struct loop_timer *timer,
                      long long when, loop_timer_proc *proc, void *data) {
  loop_timer_cancel(loop, timer);
  if (loop->timers == loop->capacity && !grow_timers(loop))
    return false;
  timer->when = when;
  timer->order = loop->next_order++;
  timer->proc = proc;
  timer->data = data;
  place(loop, loop->timers++, timer);
  sift_up(loop, loop->timers - 1);
  return true;
}

/* Takes every due timer out of the heap first, then runs them in order:
 * one started or restarted meanwhile goes into the heap, for a later turn,
 * and one cancelled meanwhile leaves a hole that is skipped. */
static int run_due_timers(struct loop *loop) {
  size_t due = 0;
  while (loop->timers > 0 && loop->heap[0]->when <= loop->now) {
    struct loop_timer *timer = loop->heap[0];
    heap_remove(loop, 0);
    loop->expired[due] = timer;
    timer->slot = EXPIRED | due;
    due++;
  }
  int ran = 0;
  for (size_t i = 0; i < due; i++) {
    struct loop_timer *timer = loop->expired[i];
    if (!timer)
      continue; /* cancelled by an earlier proc */
    loop->expired[i] = NULL;
    timer->slot = 0;
    timer->proc(loop, timer);
    ran++;
  }
  return ran;
}

long long loop_now(const struct loop *loop) {
  return loop->now;
}

/* ---- Turns ---------------------------------------------------------- */

void loop_set_before_sleep(struct loop *loop,
                           void (*hook)(struct loop *loop, void *data),
                           void *data) {
  loop->before_sleep = hook;
  loop->before_sleep_data = data;
}

/* Milliseconds epoll_wait may sleep: until the nearest timer, at most
 * wait_limit (when >= 0); -1 for as long as it takes. */
static int sleep_time(struct loop *loop, int wait_limit) {
  long long wait = -1;
  if (loop->timers > 0) {
    wait = loop->heap[0]->when - now_milliseconds();
    if (wait < 0)
      wait = 0;
  }
  if (wait_limit >= 0 && (wait < 0 || wait > wait_limit))
    wait = wait_limit;
  return wait > 0x7fffffff ? 0x7fffffff : (int)wait;
}

/* The callbacks of one fired event. What fd is watched for is looked up
 * again before each: an earlier callback of this turn may have unwatched or
 * closed it. */
static int dispatch(struct loop *loop, const struct epoll_event *event) {
  int fd = (int)(uint32_t)event->data.u64;
  uint32_t generation = (uint32_t)(event->data.u64 >> 32);
  struct file_event *file = &loop->files[fd];
  int ready = 0;
  if (event->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
    ready |= LOOP_READABLE;
  if (event->events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
    ready |= LOOP_WRITABLE;
  int ran = 0;
  if (file->generation == generation && (file->mask & ready & LOOP_READABLE)) {
    file->read_proc(loop, fd, file->read_data, LOOP_READABLE);
    ran++;
  }
  if (file->generation == generation && (file->mask & ready & LOOP_WRITABLE)) {
    file->write_proc(loop, fd, file->write_data, LOOP_WRITABLE);
    ran++;
  }
  return ran;
}

int loop_turn(struct loop *loop, int wait_limit) {
  if (loop->before_sleep)
    loop->before_sleep(loop, loop->before_sleep_data);
  int count = epoll_wait(loop->epoll, loop->fired, MAX_FIRED,
                         loop->stopped ? 0 : sleep_time(loop, wait_limit));
  if (count < 0 && errno != EINTR)
    return -1;
  loop->now = now_milliseconds();
  int ran = 0;
  for (int i = 0; i < count; i++)
    ran += dispatch(loop, &loop->fired[i]);
  return ran + run_due_timers(loop);
}

void loop_run(struct loop *loop) {
  loop->stopped = false;
  while (!loop->stopped && loop_turn(loop, -1) >= 0)
    ;
}

void loop_stop(struct loop *loop) {
  loop->stopped = true;
}
