/* The hand-written event loop (coroutine/loop.h).
 *
 * Timers run in deadline order, equal deadlines in the order started, never
 * before their deadline, and a cancelled one never; a large random heap
 * against a sorted copy; a proc may cancel itself or a timer due in the
 * same turn, and restarting itself for "now" moves it to the next turn. A
 * descriptor unwatched or closed by the callback of another one that fired
 * in the same turn gets no callback, not even when its number is reused at
 * once by a new descriptor; a read callback that closes its descriptor
 * stops its write callback; level-triggered readiness repeats until
 * drained; the before-sleep hook runs every turn; loop_stop ends loop_run.
 * Every wait is bounded by loop_turn's own limit. */
#include "check.h"
#include "os/clock.h"
#include "loop.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#define TURN_LIMIT_MS 1000

static struct byte_buffer fired; /* one byte per timer run: its name */

static void record(struct loop *loop, struct loop_timer *timer) {
  (void)loop;
  char name = (char)(uintptr_t)timer->data;
  buffer_append(&fired, &name, 1);
}

static void timers_run_in_deadline_order(void) {
  struct loop *loop = loop_create(64);
  long long now = loop_now(loop);
  struct loop_timer timers[6] = {{0}};
  /* Already due, out of order; c and d share a deadline: c started first. */
  loop_timer_start(loop, &timers[0], now - 5, record, (void *)(uintptr_t)'b');
  loop_timer_start(loop, &timers[1], now - 10, record, (void *)(uintptr_t)'a');
  loop_timer_start(loop, &timers[2], now - 1, record, (void *)(uintptr_t)'c');
  loop_timer_start(loop, &timers[3], now - 1, record, (void *)(uintptr_t)'d');
  /* Cancelled: never runs. */
  loop_timer_start(loop, &timers[4], now - 3, record, (void *)(uintptr_t)'x');
  loop_timer_cancel(loop, &timers[4]);
  CHECK(!loop_timer_pending(&timers[4]));
  buffer_clear(&fired);
  CHECK(loop_turn(loop, TURN_LIMIT_MS) == 4);
  CHECK_EQ_TEXT(fired, "abcd");
  for (int i = 0; i < 4; i++)
    CHECK(!loop_timer_pending(&timers[i]));

  /* In the future: each runs no earlier than its deadline. */
  buffer_clear(&fired);
  long long start = now_milliseconds();
  loop_timer_start(loop, &timers[0], start + 40, record,
                   (void *)(uintptr_t)'z');
  loop_timer_start(loop, &timers[1], start + 20, record,
                   (void *)(uintptr_t)'y');
  for (int turn = 0; turn < 20 && fired.length < 2; turn++) {
    loop_turn(loop, TURN_LIMIT_MS);
    if (fired.length == 1)
      CHECK(now_milliseconds() >= start + 20);
  }
  CHECK_EQ_TEXT(fired, "yz");
  CHECK(now_milliseconds() >= start + 40);
  loop_destroy(loop);
}

static struct loop_timer many[3000];
static bool cancelled[3000];
static long long last_when;
static uint64_t last_order;
static int many_ran, out_of_order, ran_cancelled;

static void check_order(struct loop *loop, struct loop_timer *timer) {
  (void)loop;
  size_t index = (size_t)(timer - many);
  if (cancelled[index])
    ran_cancelled++;
  if (timer->when < last_when ||
      (timer->when == last_when && timer->order < last_order))
    out_of_order++;
  last_when = timer->when;
  last_order = timer->order;
  many_ran++;
}

/* Thousands of timers, some restarted, a third cancelled: the heap keeps
 * its order through every removal. */
static void random_heap_keeps_order(void) {
  struct loop *loop = loop_create(16); /* the heap must grow past 80 */
  struct test_random random = {0x9E3779B97F4A7C15ULL};
  long long now = loop_now(loop);
  int expected = 0;
  for (size_t i = 0; i < 3000; i++)
    loop_timer_start(loop, &many[i],
                     now - 1 - (long long)random_below(&random, 500),
                     check_order, NULL);
  for (size_t i = 0; i < 3000; i++) {
    switch (random_below(&random, 3)) {
    case 0:
      loop_timer_cancel(loop, &many[i]);
      cancelled[i] = true;
      break;
    case 1:
      loop_timer_start(loop, &many[i],
                       now - 1 - (long long)random_below(&random, 500),
                       check_order, NULL);
      expected++;
      break;
    default:
      expected++;
    }
  }
  loop_turn(loop, TURN_LIMIT_MS);
  CHECK(many_ran == expected);
  CHECK(out_of_order == 0);
  CHECK(ran_cancelled == 0);
  loop_destroy(loop);
}

static struct loop_timer self, victim, again;
static int self_runs, victim_runs, again_runs;

static void cancel_self(struct loop *loop, struct loop_timer *timer) {
  self_runs++;
  loop_timer_cancel(loop, timer);   /* idle while it runs: nothing happens */
  loop_timer_cancel(loop, &victim); /* due in this turn too: it must not run */
}

static void count_victim(struct loop *loop, struct loop_timer *timer) {
  (void)loop;
  (void)timer;
  victim_runs++;
}

static void restart_now(struct loop *loop, struct loop_timer *timer) {
  if (++again_runs < 3)
    loop_timer_start(loop, timer, loop_now(loop), restart_now, NULL);
}

static void timer_cancelled_from_its_own_callback(void) {
  struct loop *loop = loop_create(64);
  long long now = loop_now(loop);
  loop_timer_start(loop, &self, now - 2, cancel_self, NULL);
  loop_timer_start(loop, &victim, now - 1, count_victim, NULL);
  CHECK(loop_turn(loop, 0) == 1);
  CHECK(self_runs == 1 && victim_runs == 0);
  CHECK(!loop_timer_pending(&self) && !loop_timer_pending(&victim));
  CHECK(loop_turn(loop, 0) == 0);
  CHECK(self_runs == 1 && victim_runs == 0);

  /* Restarted for now from its own proc: once per turn, not a spin. */
  loop_timer_start(loop, &again, now, restart_now, NULL);
  CHECK(loop_turn(loop, 0) == 1 && again_runs == 1);
  CHECK(loop_turn(loop, 0) == 1 && again_runs == 2);
  CHECK(loop_turn(loop, 0) == 1 && again_runs == 3);
  CHECK(loop_turn(loop, 0) == 0 && !loop_timer_pending(&again));
  loop_destroy(loop);
}

/* ---- Descriptors ---------------------------------------------------- */

struct watched {
  int fd;
  int calls;
  struct watched *other; /* to close when this one fires */
};

static struct watched *reused; /* the newcomer at the closed one's number */
static int reused_pipe[2] = {-1, -1};

static void close_the_other(struct loop *loop, int fd, void *data, int ready) {
  (void)fd;
  (void)ready;
  struct watched *self_watched = data;
  self_watched->calls++;
  struct watched *other = self_watched->other;
  if (other->fd < 0)
    return;
  int number = other->fd;
  loop_unwatch(loop, other->fd, LOOP_READABLE | LOOP_WRITABLE);
  close(other->fd);
  other->fd = -1;
  /* The lowest free number is the one just closed: a new pipe takes it. */
  if (pipe2(reused_pipe, O_CLOEXEC) == 0 && reused_pipe[0] == number)
    loop_watch(loop, reused_pipe[0], LOOP_READABLE, close_the_other, reused);
}

static void descriptor_removed_while_dispatched(void) {
  struct loop *loop = loop_create(1024);
  int a[2], b[2];
  CHECK(pipe2(a, O_CLOEXEC) == 0 && pipe2(b, O_CLOEXEC) == 0);
  struct watched first = {.fd = a[0]}, second = {.fd = b[0]};
  struct watched newcomer = {.fd = -1};
  first.other = &second;
  second.other = &first;
  newcomer.other = &newcomer;
  reused = &newcomer;
  CHECK(loop_watch(loop, a[0], LOOP_READABLE, close_the_other, &first));
  CHECK(loop_watch(loop, b[0], LOOP_READABLE, close_the_other, &second));
  CHECK(write(a[1], "x", 1) == 1 && write(b[1], "y", 1) == 1);
  /* Both fired in one epoll_wait; whichever runs first closes the other. */
  loop_turn(loop, TURN_LIMIT_MS);
  CHECK(first.calls + second.calls == 1);
  CHECK(reused_pipe[0] >= 0);
  CHECK(newcomer.calls == 0); /* the old event did not reach the newcomer */
  CHECK(loop_watched(loop, reused_pipe[0]) == LOOP_READABLE);
  /* The newcomer works: it fires once it has input. */
  newcomer.fd = reused_pipe[0];
  newcomer.other = &(struct watched){.fd = -1};
  CHECK(write(reused_pipe[1], "z", 1) == 1);
  loop_turn(loop, TURN_LIMIT_MS);
  CHECK(newcomer.calls == 1);
  close(first.fd >= 0 ? first.fd : second.fd);
  close(a[1]);
  close(b[1]);
  close(reused_pipe[0]);
  close(reused_pipe[1]);
  loop_destroy(loop);
}

static int read_calls, write_calls;

static void read_then_close(struct loop *loop, int fd, void *data, int ready) {
  (void)data;
  CHECK(ready == LOOP_READABLE);
  read_calls++;
  loop_unwatch(loop, fd, LOOP_READABLE | LOOP_WRITABLE);
  close(fd);
}

static void count_write(struct loop *loop, int fd, void *data, int ready) {
  (void)loop;
  (void)fd;
  (void)data;
  CHECK(ready == LOOP_WRITABLE);
  write_calls++;
}

static void closing_in_read_callback_stops_write_callback(void) {
  struct loop *loop = loop_create(1024);
  int pair[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  CHECK(write(pair[1], "x", 1) == 1);
  CHECK(loop_watch(loop, pair[0], LOOP_READABLE, read_then_close, NULL));
  CHECK(loop_watch(loop, pair[0], LOOP_WRITABLE, count_write, NULL));
  CHECK(loop_watched(loop, pair[0]) == (LOOP_READABLE | LOOP_WRITABLE));
  loop_turn(loop, TURN_LIMIT_MS);
  CHECK(read_calls == 1 && write_calls == 0);
  close(pair[1]);
  loop_destroy(loop);
}

static int level_calls, hook_calls;

static void count_level(struct loop *loop, int fd, void *data, int ready) {
  (void)fd;
  (void)data;
  (void)ready;
  if (++level_calls == 3)
    loop_stop(loop);
}

static void count_hook(struct loop *loop, void *data) {
  (void)loop;
  (void)data;
  hook_calls++;
}

/* Input left unread is reported again each turn (level-triggered), the
 * hook runs before each sleep, and loop_stop() ends loop_run(). */
static void level_triggered_until_stopped(void) {
  struct loop *loop = loop_create(1024);
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0);
  CHECK(write(p[1], "x", 1) == 1);
  loop_set_before_sleep(loop, count_hook, NULL);
  CHECK(loop_watch(loop, p[0], LOOP_READABLE, count_level, NULL));
  loop_run(loop);
  CHECK(level_calls == 3 && hook_calls == 3);
  /* Out of range: refused, not written past the table. */
  CHECK(!loop_watch(loop, 5000, LOOP_READABLE, count_level, NULL));
  close(p[0]);
  close(p[1]);
  loop_destroy(loop);
}

int main(void) {
  timers_run_in_deadline_order();
  random_heap_keeps_order();
  timer_cancelled_from_its_own_callback();
  descriptor_removed_while_dispatched();
  closing_in_read_callback_stops_write_callback();
  level_triggered_until_stopped();
  buffer_free(&fired);
  return check_report();
}
