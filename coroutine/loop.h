/* The event loop, by hand: epoll, timers, and a callback run when a
 * descriptor is ready or a deadline passes. The talk's "simple IOLoop" in
 * C, in the manner of Redis's ae.c (whose shape it keeps: a table of file
 * events indexed by descriptor, a fired list re-checked before each call, a
 * hook run before each sleep), with a binary heap of timers instead of
 * ae.c's list, because every connection here has a deadline of its own.
 *
 * One thread owns a loop; nothing here locks. */
#ifndef CHAT_LOOP_H
#define CHAT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
  LOOP_READABLE = 1, /* input waits, or the peer closed or failed */
  LOOP_WRITABLE = 2, /* the send buffer has room, or the peer failed */
};

struct loop;

/* Called when fd is ready for `ready` (one of the masks above). */
typedef void loop_file_proc(struct loop *loop, int fd, void *data, int ready);

struct loop_timer;
typedef void loop_timer_proc(struct loop *loop, struct loop_timer *timer);

/* A timer belongs to its owner (embed it in a struct, so that starting
 * and cancelling one allocates nothing). Zero-initialised, it is idle. */
struct loop_timer {
  long long when;        /* milliseconds on the monotonic clock */
  uint64_t order;        /* equal deadlines fire in the order started */
  size_t slot;           /* where the loop keeps it; 0: idle */
  loop_timer_proc *proc; /* run once, when `when` has passed */
  void *data;            /* the owner's, for proc */
};

/* A loop for descriptors below `size` (the open-file limit). NULL when
 * out of memory or descriptors (epoll_create1 failed). */
struct loop *loop_create(int size);
void loop_destroy(struct loop *loop);

/* Adds `mask` to what fd is watched for, with `proc(loop, fd, data, ...)`
 * to run for it; a mask already watched gets the new proc and data.
 * Returns false (errno set) when fd is out of range or epoll refuses. */
bool loop_watch(struct loop *loop, int fd, int mask, loop_file_proc *proc,
                void *data);

/* Stops watching fd for `mask`. Safe at any time, from any callback, for
 * a descriptor whose event is being dispatched too: a fired event is
 * checked against what is still watched before its callback runs. */
void loop_unwatch(struct loop *loop, int fd, int mask);

/* What fd is watched for (0: nothing). */
int loop_watched(const struct loop *loop, int fd);

/* Starts (or restarts) a timer to run proc at `when` (monotonic
 * milliseconds, as loop_now()). A timer already due runs in this turn's
 * timer phase, or in the next turn's when a timer's proc started it: never
 * inside the call that started it, and a proc that restarts its own timer
 * for now cannot keep the loop in one turn. Returns false when out of
 * memory (the timer then stays idle). */
bool loop_timer_start(struct loop *loop, struct loop_timer *timer,
                      long long when, loop_timer_proc *proc, void *data);

/* Cancels a timer; nothing if it is idle, or already running (a timer is
 * idle while its own proc runs, which may start it again). */
void loop_timer_cancel(struct loop *loop, struct loop_timer *timer);

static inline bool loop_timer_pending(const struct loop_timer *timer) {
  return timer->slot != 0;
}

/* The time at the start of this turn's callbacks, in monotonic
 * milliseconds: one clock read per turn. */
long long loop_now(const struct loop *loop);

/* Runs before the loop sleeps in each turn (at most one hook). The server
 * writes its queued output there: one send per client per turn. */
void loop_set_before_sleep(struct loop *loop,
                           void (*hook)(struct loop *loop, void *data),
                           void *data);

/* One turn: sleep until a descriptor is ready or the nearest timer is due
 * (no longer than `wait_limit` ms when it is >= 0: 0 for a look without
 * sleeping), then run the callbacks of what fired. Returns how many ran,
 * or -1 when epoll_wait failed for another reason than a signal. */
int loop_turn(struct loop *loop, int wait_limit);

/* Turns until loop_stop(). */
void loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

#endif
