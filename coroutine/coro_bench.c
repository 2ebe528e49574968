/* coro-bench: what a coroutine switch and a loop turn cost on this machine
 * (coroutine/README.md quotes it; the rows for chat-latency come from it).
 *
 *   coro-bench [ROUNDS]
 *
 * - a switch: a coroutine resumed and yielding back, ROUNDS times; one
 *   resume plus one yield is two switches. Built twice: coro-bench with the
 *   hand-written switch, coro-bench-ucontext with swapcontext.
 * - an idle loop turn: loop_turn() with nothing ready and no wait (the
 *   epoll_wait system call and the timer check).
 * - a task woken by its socket: one byte written to a socket pair, then a
 *   turn in which the loop sees it, resumes the task waiting in co_read(),
 *   which reads it and waits again.
 * Each figure is the median of 5 runs, in nanoseconds. */
#include "os/clock.h"
#include "coro.h"
#include "loop.h"
#include "task.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RUNS 5

static double now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec * 1e9 + (double)now.tv_nsec;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *values) {
  qsort(values, RUNS, sizeof *values, by_value);
  return values[RUNS / 2];
}

static void bounce(void *arg) {
  (void)arg;
  for (;;)
    coro_yield();
}

static double switch_ns(long rounds) {
  struct coro *coro = coro_create(bounce, NULL, 64 * 1024);
  if (!coro)
    return -1;
  coro_resume(coro); /* first touch of its stack, outside the timing */
  double start = now_ns();
  for (long i = 0; i < rounds; i++)
    coro_resume(coro);
  double elapsed = now_ns() - start;
  coro_destroy(coro); /* suspended: discarded as it is */
  return elapsed / (2.0 * (double)rounds);
}

static double idle_turn_ns(struct loop *loop, long rounds) {
  double start = now_ns();
  for (long i = 0; i < rounds; i++)
    loop_turn(loop, 0);
  return (now_ns() - start) / (double)rounds;
}

static int pair[2];
static long reads;

static void reader(void *arg) {
  (void)arg;
  char byte;
  while (co_read(pair[0], &byte, 1, 0) == 1)
    reads++;
}

static double wake_ns(struct loop *loop, long rounds) {
  long before = reads;
  double start = now_ns();
  for (long i = 0; i < rounds; i++) {
    if (write(pair[1], "x", 1) != 1)
      return -1;
    loop_turn(loop, 1000);
  }
  double elapsed = now_ns() - start;
  return reads - before == rounds ? elapsed / (double)rounds : -1;
}

int main(int argc, char *argv[]) {
  long rounds = argc > 1 ? atol(argv[1]) : 1000000;
  if (rounds <= 0) {
    fprintf(stderr, "usage: coro-bench [ROUNDS]\n");
    return 2;
  }
  struct loop *loop = loop_create(1024);
  if (!loop ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) <
          0 ||
      !task_spawn(loop, reader, NULL, 64 * 1024)) {
    perror("coro-bench: setup");
    return 1;
  }
  loop_turn(loop, 0); /* the reader starts and waits */
  double switches[RUNS], turns[RUNS], wakes[RUNS];
  for (int run = 0; run < RUNS; run++) {
    switches[run] = switch_ns(rounds);
    turns[run] = idle_turn_ns(loop, rounds / 10);
    wakes[run] = wake_ns(loop, rounds / 10);
  }
#ifdef CORO_UCONTEXT
  const char *how = "ucontext (swapcontext)";
#else
  const char *how = "by hand";
#endif
  printf("coroutine switch, %s: %.1f ns\n", how, median(switches));
  printf("idle loop turn (epoll_wait, nothing ready): %.1f ns\n",
         median(turns));
  printf("task woken by its socket (write, turn, co_read): %.1f ns\n",
         median(wakes));
  return 0;
}
