/* chat-forking's wake-up, the wave, alone: reader processes that copy
 * nothing, only follow the published head and sleep as a chat-forking child
 * does (shared_room.h), and this process, which publishes and plays the
 * parent.
 *
 *   1. Batching: with every reader asleep, 2,000 lines published back to
 *      back wake each reader far fewer times than there are lines, and every
 *      reader reaches the last one.
 *   2. Killed mid-wave: 300 rounds of a burst of lines with a reader killed
 *      (SIGKILL) a random moment into it, reaped and replaced, as the parent
 *      does (shared_room_child_ended); after each, every live reader must
 *      reach the head within a second, with no help from the timeout: a
 *      reader killed after it was counted in a wave and before it paid would
 *      stall every later wave, were the wave not given up when it is
 *      reaped.
 *   3. Stopped mid-wave: a reader stopped (SIGSTOP) while asleep, then lines
 *      published: the others must still reach each head (the wave that
 *      counts the stopped one is given up after WAVE_TIMEOUT_MILLISECONDS,
 *      by this process, which left its lines to it, as a writer does), and
 *      the stopped one too once continued.
 *   4. Mail (with --redis, a room with mailboxes): this process posts to
 *      a lone reader under the lock, publishing no line, 2,000 times at
 *      random moments (as it sleeps, works or goes to sleep; it also wakes
 *      now and then by itself, as a child does for its socket): each post
 *      must reach it within a second. Alone, it gets no edge from a wave
 *      that wakes others: only shared_room_may_sleep's look at the mailbox
 *      keeps it from sleeping on a post made while it worked.
 *
 * Every wait has a deadline; on failure, the readers are killed with the
 * test (PR_SET_PDEATHSIG). */
#include "shared_room.h"

#include "os/clock.h"
#include "os/log.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READERS 8
#define SLOTS 64
#define RING_BYTES (1 << 20)
#define BATCH_LINES 2000
#define KILL_ROUNDS 300
#define STOP_ROUNDS 3
#define MAIL_POSTS 2000

static struct shared_room *shared;

/* What the readers tell the test, in memory of its own. */
struct progress {
  _Atomic uint64_t seen[SLOTS]; /* the head each reader has reached */
  _Atomic uint64_t wakes[SLOTS];
  _Atomic uint64_t mail[SLOTS]; /* posts each reader has taken */
};
static struct progress *progress;

static pid_t readers[READERS];
static unsigned slot_of[READERS];
static unsigned next_slot;
static bool mailboxes; /* part 4: the room has them */

static void fail(const char *what) {
  fprintf(stderr, "test_wave: %s\n", what);
  exit(1);
}

static void busy_microseconds(long microseconds) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  do
    clock_gettime(CLOCK_MONOTONIC, &now);
  while ((now.tv_sec - start.tv_sec) * 1000000L +
             (now.tv_nsec - start.tv_nsec) / 1000 <
         microseconds);
}

/* A reader: a chat-forking child's waiting, with nothing to copy. */
static _Noreturn void read_room(unsigned slot) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  int epoll = epoll_create1(0);
  struct epoll_event event = {.events = EPOLLIN | EPOLLET};
  if (epoll < 0 ||
      epoll_ctl(epoll, EPOLL_CTL_ADD, shared_room_wake_fd(shared), &event) < 0)
    _exit(2);
  shared_room_wave_enter(shared, slot);
  for (;;) {
    uint64_t seen = shared_room_published(shared);
    atomic_store(&progress->seen[slot], seen);
    uint64_t arrival;
    unsigned mail =
        mailboxes ? shared_room_take_mail(shared, slot, &arrival) : 0;
    if (mail)
      atomic_fetch_add(&progress->mail[slot], mail / SHARED_MAIL_REFUSED);
    if (mailboxes) /* a child works here: reads, copies, sends */
      busy_microseconds(rand() % 100);
    if (shared_room_may_sleep(shared, slot, seen)) {
      struct epoll_event ready;
      /* With mailboxes, it also wakes now and then as a child does for
       * its socket: not woken by a wave, it owes none, and only the
       * mailbox check keeps it from sleeping on mail posted meanwhile. */
      epoll_wait(epoll, &ready, 1, mailboxes && rand() % 2 ? 1 : -1);
      shared_room_awake(shared, slot);
      atomic_fetch_add(&progress->wakes[slot], 1);
    }
  }
}

static void start_reader(int i) {
  /* Slots are not reused here: a new reader never inherits a word. */
  unsigned slot = next_slot++;
  if (slot >= SLOTS)
    fail("out of slots");
  shared_room_slots_in_use(shared, next_slot);
  atomic_store(&progress->seen[slot], 0);
  atomic_store(&progress->wakes[slot], 0);
  atomic_store(&progress->mail[slot], 0);
  if (mailboxes)
    shared_room_clear_mail(shared, slot);
  pid_t pid = fork();
  if (pid < 0)
    fail("fork");
  if (pid == 0)
    read_room(slot);
  readers[i] = pid;
  slot_of[i] = slot;
}

static void publish(int count) {
  static const char line[] = "someone: a line\r\n";
  for (int n = 0; n < count; n++) {
    shared_room_lock(shared);
    shared_room_publish(shared, (struct chat_text){line, sizeof line - 1});
    shared_room_unlock(shared);
  }
}

static void pause_microseconds(long microseconds) {
  struct timespec pause = {microseconds / 1000000,
                           (microseconds % 1000000) * 1000};
  nanosleep(&pause, NULL);
}

/* Waits until every reader but `except` (-1: none) has reached the head;
 * with `alarm`, giving up an overdue wave as a writer that left lines to it
 * does. */
static void expect_everyone(int except, int milliseconds, bool alarm,
                            const char *what) {
  uint64_t head = shared_room_published(shared);
  long long deadline = now_milliseconds() + milliseconds;
  for (int i = 0; i < READERS; i++) {
    while (i != except && atomic_load(&progress->seen[slot_of[i]]) != head) {
      if (now_milliseconds() > deadline) {
        char message[200];
        snprintf(message, sizeof message,
                 "%s: reader %d stayed at %llu of %llu bytes", what, i,
                 (unsigned long long)atomic_load(&progress->seen[slot_of[i]]),
                 (unsigned long long)head);
        fail(message);
      }
      if (alarm)
        shared_room_wave_alarm(shared);
      pause_microseconds(200);
    }
  }
}

static void end_reader(int i, int signal_number) {
  kill(readers[i], signal_number);
  int status;
  if (waitpid(readers[i], &status, 0) != readers[i])
    fail("waitpid");
  shared_room_child_ended(shared, slot_of[i], true);
}

int main(void) {
  log_set_quiet(true);
  srand((unsigned)time(NULL));
  shared = shared_room_create(SLOTS, RING_BYTES);
  progress = mmap(NULL, sizeof *progress, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (!shared || progress == MAP_FAILED)
    fail("cannot map");
  for (int i = 0; i < READERS; i++)
    start_reader(i);
  expect_everyone(-1, 5000, true, "start");

  /* 1. Batching. */
  for (int i = 0; i < READERS; i++)
    atomic_store(&progress->wakes[slot_of[i]], 0);
  publish(BATCH_LINES);
  expect_everyone(-1, 5000, true, "batching");
  uint64_t wakes = 0;
  for (int i = 0; i < READERS; i++)
    wakes += atomic_load(&progress->wakes[slot_of[i]]);
  struct shared_room_waves waves = shared_room_wave_counts(shared);
  printf("test_wave: %d lines back to back woke %d readers %.1f times each "
         "(%.0f lines per wake-up); %llu waves\n",
         BATCH_LINES, READERS, (double)wakes / READERS,
         (double)BATCH_LINES * READERS / (double)(wakes ? wakes : 1),
         (unsigned long long)waves.started);
  if (wakes > (uint64_t)BATCH_LINES * READERS / 4)
    fail("the readers were woken nearly once per line");

  /* 2. Killed mid-wave. */
  for (int round = 0; round < KILL_ROUNDS; round++) {
    int victim = rand() % READERS;
    publish(1 + rand() % 20);
    pause_microseconds(rand() % 500);
    end_reader(victim, SIGKILL);
    publish(1);
    expect_everyone(victim, 1000, false, "after a kill");
    start_reader(victim);
    if (next_slot == SLOTS) { /* start over with fresh slots */
      for (int i = 0; i < READERS; i++)
        end_reader(i, SIGKILL);
      next_slot = 0;
      for (int i = 0; i < READERS; i++)
        start_reader(i);
    }
    expect_everyone(-1, 1000, false, "after a new reader");
  }
  waves = shared_room_wave_counts(shared);
  printf("test_wave: %d readers killed at random moments, the room went on "
         "(%llu waves given up)\n",
         KILL_ROUNDS, (unsigned long long)waves.given_up);

  /* 3. Stopped mid-wave. */
  for (int round = 0; round < STOP_ROUNDS; round++) {
    int stopped = rand() % READERS;
    expect_everyone(-1, 1000, true, "before a stop");
    kill(readers[stopped], SIGSTOP);
    int status;
    if (waitpid(readers[stopped], &status, WUNTRACED) != readers[stopped] ||
        !WIFSTOPPED(status))
      fail("the reader did not stop");
    for (int burst = 0; burst < 5; burst++) {
      publish(10);
      expect_everyone(stopped, 2 * WAVE_TIMEOUT_MILLISECONDS + 1000, true,
                      "while one reader is stopped");
    }
    kill(readers[stopped], SIGCONT);
    publish(1);
    expect_everyone(-1, 2 * WAVE_TIMEOUT_MILLISECONDS + 1000, true,
                    "after the stopped reader went on");
  }
  waves = shared_room_wave_counts(shared);
  printf("test_wave: %d readers stopped in turn, the others went on; %llu "
         "waves, %llu woke someone, %llu given up; ok\n",
         STOP_ROUNDS, (unsigned long long)waves.started,
         (unsigned long long)waves.signalled,
         (unsigned long long)waves.given_up);
  for (int i = 0; i < READERS; i++)
    end_reader(i, SIGKILL);
  shared_room_destroy(shared);

  /* 4. Mail, in a room with mailboxes, as with --redis. */
  shared = shared_room_create_cluster(SLOTS, SLOTS, RING_BYTES);
  if (!shared)
    fail("cannot map the room with mailboxes");
  mailboxes = true;
  next_slot = 0;
  start_reader(0);
  uint64_t posted[READERS] = {0};
  for (int post = 0; post < MAIL_POSTS; post++) {
    int to = 0;
    if (rand() % 4 == 0)
      publish(1); /* lines too, now and then */
    shared_room_lock(shared);
    shared_room_post(shared, slot_of[to], SHARED_MAIL_REFUSED, 0);
    shared_room_unlock(shared);
    posted[to]++;
    long long deadline = now_milliseconds() + 1000;
    while (atomic_load(&progress->mail[slot_of[to]]) != posted[to]) {
      if (now_milliseconds() > deadline) {
        char message[160];
        snprintf(message, sizeof message,
                 "post %d: reader %d took %llu of %llu posts", post, to,
                 (unsigned long long)atomic_load(&progress->mail[slot_of[to]]),
                 (unsigned long long)posted[to]);
        fail(message);
      }
      pause_microseconds(50);
    }
    pause_microseconds(rand() % 2000); /* it may wake by itself */
  }
  printf("test_wave: %d posts to a reader at random moments, each taken; "
         "ok\n",
         MAIL_POSTS);
  end_reader(0, SIGKILL);
  shared_room_destroy(shared);
  return 0;
}
