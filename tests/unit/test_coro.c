/* The coroutines (coroutine/coro.h) and their glue with the loop
 * (coroutine/task.h).
 *
 * Ping-pong: a value handed back and forth across 100,000 switches, each
 * side's locals intact; 10,000 coroutines alive at once, resumed in turns
 * until all finish; a coroutine that resumes another (nesting); locals of
 * a deep recursion survive a yield at its bottom; a suspended stack's
 * pages below its live frames go back to the kernel and it still runs
 * after; and the death test: a call deeper than the stack, in a forked
 * child, must die of SIGSEGV on the guard page (while the same recursion,
 * not as deep, completes). Then tasks on the loop: co_read and co_write
 * wait for a socket and resume when it is ready, co_sleep for a deadline,
 * task_wake ends a wait early. */
#include "check.h"
#include "os/clock.h"
#include "coro.h"
#include "loop.h"
#include "task.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define STACK (64 * 1024)

/* ---- Ping-pong ------------------------------------------------------ */

static long ball;
static double floating;

/* Locals live across a switch sit in callee-saved registers (aarch64 has
 * floating-point ones, d8-d15): each side keeps an integer and a double. */
static void ping(void *arg) {
  long rounds = (long)(intptr_t)arg;
  long mine = 0;
  double mine_too = 1.0;
  for (long i = 0; i < rounds; i++) {
    mine += 2;
    mine_too *= 1.5;
    if (mine_too > 1e6)
      mine_too = 1.0 + (double)i;
    ball = ball * 2 + 1; /* the caller checks and answers */
    coro_yield();
  }
  ball = -mine;
  floating = mine_too;
}

/* What ping's double ends as, computed without switching. */
static double expected_double(long rounds) {
  double value = 1.0;
  for (long i = 0; i < rounds; i++) {
    value *= 1.5;
    if (value > 1e6)
      value = 1.0 + (double)i;
  }
  return value;
}

static void ping_pong(void) {
  const long rounds = 100000;
  struct coro *coro = coro_create(ping, (void *)(intptr_t)rounds, STACK);
  CHECK(coro != NULL);
  CHECK(coro_current() == NULL);
  bool in_order = true;
  double mine = 0.25;
  for (long i = 0; i < rounds; i++) {
    ball = i;
    mine = mine * 3.0 > 1e9 ? 0.25 : mine * 3.0;
    coro_resume(coro);
    in_order &= ball == i * 2 + 1 && !coro_finished(coro);
  }
  CHECK(in_order);
  coro_resume(coro);
  CHECK(coro_finished(coro));
  CHECK(ball == -2 * rounds);
  CHECK(floating == expected_double(rounds));
  double check = 0.25;
  for (long i = 0; i < rounds; i++)
    check = check * 3.0 > 1e9 ? 0.25 : check * 3.0;
  CHECK(mine == check);
  coro_destroy(coro);
}

/* ---- Thousands ------------------------------------------------------ */

#define MANY 10000
#define TURNS 5
static struct coro *crowd[MANY];
static int progress[MANY];

static void take_turns(void *arg) {
  int *mine = arg;
  for (int turn = 0; turn < TURNS; turn++) {
    (*mine)++;
    coro_yield();
  }
}

static void thousands_at_once(void) {
  int created = 0;
  for (int i = 0; i < MANY; i++) {
    crowd[i] = coro_create(take_turns, &progress[i], STACK);
    created += crowd[i] != NULL;
  }
  CHECK(created == MANY);
  if (created != MANY)
    return;
  for (int turn = 0; turn <= TURNS; turn++) {
    for (int i = 0; i < MANY; i++)
      coro_resume(crowd[i]);
  }
  int finished = 0, right = 0;
  for (int i = 0; i < MANY; i++) {
    finished += coro_finished(crowd[i]);
    right += progress[i] == TURNS;
    coro_destroy(crowd[i]);
  }
  CHECK(finished == MANY && right == MANY);
}

/* ---- Nesting -------------------------------------------------------- */

static struct byte_buffer trace;

static void inner(void *arg) {
  (void)arg;
  buffer_append_string(&trace, "i1 ");
  coro_yield();
  buffer_append_string(&trace, "i2 ");
}

static void outer(void *arg) {
  struct coro *callee = arg;
  CHECK(coro_current() != NULL);
  buffer_append_string(&trace, "o1 ");
  coro_resume(callee); /* yields back here, not to the thread */
  buffer_append_string(&trace, "o2 ");
  coro_yield();
  coro_resume(callee);
  buffer_append_string(&trace, "o3 ");
}

static void nested_resume(void) {
  struct coro *callee = coro_create(inner, NULL, STACK);
  struct coro *caller = coro_create(outer, callee, STACK);
  coro_resume(caller);
  buffer_append_string(&trace, "t ");
  coro_resume(caller);
  CHECK(coro_finished(caller) && coro_finished(callee));
  CHECK_EQ_TEXT(trace, "o1 i1 o2 t i2 o3 ");
  coro_destroy(caller);
  coro_destroy(callee);
  buffer_free(&trace);
}

/* ---- Depth ---------------------------------------------------------- */

/* Each level keeps a page-sized array on the stack and checks it after the
 * deepest level returns: a clobbered frame shows. */
static int descend(int depth, bool yield_at_bottom) {
  volatile unsigned char frame[4096];
  for (size_t i = 0; i < sizeof frame; i += 512)
    frame[i] = (unsigned char)(depth + i);
  int below = depth > 0 ? descend(depth - 1, yield_at_bottom) : 0;
  if (depth == 0 && yield_at_bottom)
    coro_yield();
  int intact = 1;
  for (size_t i = 0; i < sizeof frame; i += 512)
    intact &= frame[i] == (unsigned char)(depth + i);
  return below + intact;
}

static int depth_result;

static void go_deep(void *arg) {
  depth_result = descend((int)(intptr_t)arg, true);
}

static void deep_locals_survive_a_yield(void) {
  struct coro *coro = coro_create(go_deep, (void *)(intptr_t)40, 256 * 1024);
  coro_resume(coro);
  CHECK(!coro_finished(coro));
  coro_resume(coro);
  CHECK(coro_finished(coro) && depth_result == 41);
  coro_destroy(coro);
}

/* Pages resident in [start, start + length), by mincore. */
static size_t resident_pages(void *start, size_t length) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  unsigned char vector[256];
  size_t pages = length / page;
  if (pages > sizeof vector || mincore(start, length, vector) < 0)
    return (size_t)-1;
  size_t resident = 0;
  for (size_t i = 0; i < pages; i++)
    resident += vector[i] & 1;
  return resident;
}

static void *stack_low;

static void deep_then_idle(void *arg) {
  (void)arg;
  volatile char here;
  stack_low = (void *)&here;
  descend(20, false); /* about 80 KiB below here, then back */
  coro_yield();       /* idle, near the top */
  depth_result = descend(4, false);
}

static void idle_stack_gives_pages_back(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t size = 256 * 1024;
  struct coro *coro = coro_create(deep_then_idle, NULL, size);
  coro_resume(coro);
  /* The stack lies below stack_low's page, up to its top. */
  char *top = (char *)((uintptr_t)stack_low / page * page) + page;
  char *bottom = top - size;
  size_t before = resident_pages(bottom, size);
  coro_release_unused_stack(coro);
  size_t after = resident_pages(bottom, size);
  CHECK(before != (size_t)-1 && before >= 20);
  CHECK(after <= 2);
  coro_resume(coro); /* the live frames are intact: it goes on */
  CHECK(coro_finished(coro) && depth_result == 5);
  coro_destroy(coro);
}

/* ---- The guard page: a death test ----------------------------------- */

static void too_deep(void *arg) {
  depth_result = descend((int)(intptr_t)arg, false);
}

/* Runs descend(depth) on a 64 KiB coroutine in a child; its wait status. */
static int run_in_child(int depth) {
  fflush(NULL);
  pid_t child = fork();
  if (child == 0) {
    struct coro *coro = coro_create(too_deep, (void *)(intptr_t)depth, STACK);
    coro_resume(coro);
    _exit(coro_finished(coro) && depth_result == depth + 1 ? 0 : 3);
  }
  int status = -1;
  if (child > 0)
    waitpid(child, &status, 0);
  return status;
}

static void overflow_dies_on_the_guard_page(void) {
  int fits = run_in_child(8); /* about 36 KiB of a 64 KiB stack */
  CHECK(WIFEXITED(fits) && WEXITSTATUS(fits) == 0);
  int overflows = run_in_child(40); /* about 160 KiB */
#if defined(__SANITIZE_ADDRESS__)
  /* AddressSanitizer catches the SIGSEGV itself, reports a stack
   * overflow, and exits with an error. */
  CHECK(WIFEXITED(overflows) && WEXITSTATUS(overflows) != 0 &&
        WEXITSTATUS(overflows) != 3);
#else
  CHECK(WIFSIGNALED(overflows) && WTERMSIG(overflows) == SIGSEGV);
#endif
}

/* ---- Tasks on the loop ---------------------------------------------- */

static struct loop *loop;
static int pair[2];
static struct byte_buffer got;
static int reader_done;

static void reader(void *arg) {
  (void)arg;
  char chunk[64];
  ssize_t n;
  while ((n = co_read(pair[0], chunk, sizeof chunk, 0)) > 0)
    buffer_append(&got, chunk, (size_t)n);
  reader_done = n == 0 ? 1 : -1; /* the end of the stream */
  co_close(pair[0]);
}

static enum task_outcome slept;
static long long woke_at;

static void sleeper(void *arg) {
  long long until = *(long long *)arg;
  slept = co_sleep(until);
  woke_at = now_milliseconds();
}

/* Turns the loop until *flag is set, at most `turns` times. */
static void turn_until(const int *flag, int turns) {
  for (int i = 0; i < turns && !*flag; i++)
    loop_turn(loop, 1000);
}

static void tasks_wait_for_sockets_and_time(void) {
  loop = loop_create(1024);
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   pair) == 0);
  CHECK(task_spawn(loop, reader, NULL, STACK) != NULL);
  loop_turn(loop, 0); /* it starts, finds nothing, waits */
  CHECK(got.length == 0 && reader_done == 0);
  CHECK(write(pair[1], "hello ", 6) == 6);
  loop_turn(loop, 1000);
  CHECK(write(pair[1], "world", 5) == 5);
  close(pair[1]);
  turn_until(&reader_done, 10);
  CHECK(reader_done == 1);
  CHECK_EQ_TEXT(got, "hello world");

  /* A deadline. */
  long long until = now_milliseconds() + 30;
  woke_at = 0;
  CHECK(task_spawn(loop, sleeper, &until, STACK) != NULL);
  for (int i = 0; i < 10 && woke_at == 0; i++)
    loop_turn(loop, 1000);
  CHECK(slept == TASK_TIMEOUT && woke_at >= until);

  /* A wake-up, long before the deadline. */
  until = now_milliseconds() + 60000;
  woke_at = 0;
  struct task *task = task_spawn(loop, sleeper, &until, STACK);
  loop_turn(loop, 0);
  CHECK(woke_at == 0);
  task_wake(task);
  for (int i = 0; i < 10 && woke_at == 0; i++)
    loop_turn(loop, 1000);
  CHECK(slept == TASK_WOKEN && woke_at < until);
  loop_destroy(loop);
  buffer_free(&got);
}

static int writer_done;
static size_t written;

/* Writes more than the socket holds: co_write waits for the reader. */
static void writer(void *arg) {
  (void)arg;
  static char block[65536];
  memset(block, 'w', sizeof block);
  while (written < 4 * sizeof block) {
    size_t left = 4 * sizeof block - written;
    ssize_t n =
        co_write(pair[1], block, left < sizeof block ? left : sizeof block, 0);
    if (n <= 0)
      break;
    written += (size_t)n;
  }
  writer_done = 1;
  co_close(pair[1]);
}

static void co_write_waits_for_room(void) {
  loop = loop_create(1024);
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   pair) == 0);
  task_spawn(loop, writer, NULL, STACK);
  loop_turn(loop, 0);
  CHECK(!writer_done && written < 4 * 65536); /* the socket is full */
  size_t drained = 0;
  char sink[65536];
  for (int i = 0; i < 1000 && !writer_done; i++) {
    ssize_t n = read(pair[0], sink, sizeof sink);
    if (n > 0)
      drained += (size_t)n;
    loop_turn(loop, 100);
  }
  CHECK(writer_done && written == 4 * 65536);
  ssize_t n;
  while ((n = read(pair[0], sink, sizeof sink)) > 0)
    drained += (size_t)n;
  CHECK(drained == written);
  close(pair[0]);
  loop_destroy(loop);
}

int main(void) {
  ping_pong();
  thousands_at_once();
  nested_resume();
  deep_locals_survive_a_yield();
  idle_stack_gives_pages_back();
  overflow_dies_on_the_guard_page();
  tasks_wait_for_sockets_and_time();
  co_write_waits_for_room();
  return check_report();
}
