/* chat-forking's shared room, killed at random instants.
 *
 * A child changes the room as fast as it can (joins, departures, room
 * lines), so that it holds the lock most of the time; the parent kills it
 * with SIGKILL after a random moment, round after round. After each kill the
 * parent takes the lock, which repairs the room if the child died holding
 * it, and checks that the room as committed is exactly what the ring says
 * happened: replaying every arrival and departure line since the start
 * gives the same names in the same order. The spare copy of the room is
 * checked on the way: every change is repeated on it, and shared_room.c
 * aborts if the two copies give different members. At the end, at least a
 * tenth of the kills must have needed a repair. */
#include "shared_room.h"

#include "os/log.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 1000
#define CAPACITY 64
#define NAMES 48 /* fewer than CAPACITY: joins never fail for room */
#define RING_BYTES (16 << 20)

static struct shared_room *shared;

/* The room as the ring tells it. */
static char expected[CAPACITY][16];
static int expected_count;
static uint64_t replayed; /* ring bytes replayed so far */

static void fail(const char *what, int round) {
  fprintf(stderr, "test_shared_room: round %d: %s\n", round, what);
  exit(1);
}

static struct chat_text text(const char *bytes) {
  return (struct chat_text){bytes, strlen(bytes)};
}

/* The child: changes the room until it is killed. */
static void churn(unsigned seed) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  srand(seed);
  char name[16], line[64];
  for (;;) {
    shared_room_lock(shared);
    const struct room *room = shared_room_members(shared);
    int choice = rand() % 3;
    if (choice == 0) { /* a join: the name may be taken */
      snprintf(name, sizeof name, "n%d", rand() % NAMES);
      if (shared_room_join(shared, text(name), (uintptr_t)getpid()) >= 0) {
        snprintf(line, sizeof line, "User %s arrived.\r\n", name);
        shared_room_publish(shared, text(line));
      }
    } else if (choice == 1 && room_count(room) > 0) { /* a departure */
      int member = room_first(room);
      for (int skip = rand() % (int)room_count(room); skip > 0; skip--)
        member = room_next(room, member);
      struct chat_text gone = room_member_name(room, member);
      snprintf(line, sizeof line, "User %.*s departed.\r\n", (int)gone.length,
               gone.bytes);
      shared_room_leave(shared, member);
      shared_room_publish(shared, text(line));
    } else {
      shared_room_publish(shared, text("someone: a line\r\n"));
    }
    shared_room_unlock(shared);
  }
}

/* "User NAME arrived." or "User NAME departed.": the name, if it is one. */
static bool parse(const char *line, const char *suffix, char name[16]) {
  size_t length = strlen(line), tail = strlen(suffix);
  if (strncmp(line, "User ", 5) != 0 || length < 5 + tail ||
      strcmp(line + length - tail, suffix) != 0 || length - 5 - tail >= 16)
    return false;
  memcpy(name, line + 5, length - 5 - tail);
  name[length - 5 - tail] = '\0';
  return true;
}

/* Applies the ring's arrival and departure lines since the last replay. */
static void replay(int round) {
  uint64_t head = shared_room_head(shared);
  if (head - replayed > RING_BYTES)
    fail("the ring was lapped: make it larger", round);
  size_t length = (size_t)(head - replayed);
  char *bytes = malloc(length + 1);
  if (!bytes)
    fail("out of memory", round);
  shared_room_read(shared, replayed, bytes, length);
  bytes[length] = '\0';
  replayed = head;
  char *line = bytes;
  char *end;
  char name[16];
  while ((end = strstr(line, "\r\n"))) {
    *end = '\0';
    if (parse(line, " arrived.", name)) {
      if (expected_count == CAPACITY)
        fail("more arrivals than places", round);
      strcpy(expected[expected_count++], name);
    } else if (parse(line, " departed.", name)) {
      int i = 0;
      while (i < expected_count && strcmp(expected[i], name) != 0)
        i++;
      if (i == expected_count)
        fail("a departure of someone not there", round);
      memmove(expected[i], expected[i + 1],
              (size_t)(expected_count - i - 1) * sizeof expected[0]);
      expected_count--;
    } else if (strcmp(line, "someone: a line") != 0) {
      fail("a line the child never wrote", round);
    }
    line = end + 2;
  }
  if (*line != '\0')
    fail("a line without its end was published", round);
  free(bytes);
}

/* The committed room must hold the replayed names, in order. */
static void compare(int round) {
  const struct room *room = shared_room_members(shared);
  if ((int)room_count(room) != expected_count)
    fail("the room's count differs from the ring's story", round);
  int member = room_first(room);
  for (int i = 0; i < expected_count; i++) {
    if (member < 0)
      fail("the room's list ends early", round);
    struct chat_text name = room_member_name(room, member);
    if (name.length != strlen(expected[i]) ||
        memcmp(name.bytes, expected[i], name.length) != 0)
      fail("the room's names differ from the ring's story", round);
    member = room_next(room, member);
  }
  if (member >= 0)
    fail("the room's list goes on", round);
}

int main(void) {
  log_set_quiet(true); /* one "room repaired" line per repair otherwise */
  shared = shared_room_create(CAPACITY, RING_BYTES);
  if (!shared) {
    perror("shared_room_create");
    return 1;
  }
  srand((unsigned)time(NULL));
  int repairs = 0;
  for (int round = 0; round < ROUNDS; round++) {
    pid_t child = fork();
    if (child < 0) {
      perror("fork");
      return 1;
    }
    if (child == 0)
      churn((unsigned)rand());
    struct timespec pause = {0, (rand() % 2000) * 1000L};
    nanosleep(&pause, NULL);
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    repairs += shared_room_lock(shared);
    replay(round);
    compare(round);
    shared_room_unlock(shared);
  }
  printf("test_shared_room: %d kills, %d needed a repair; the room always "
         "matched the ring\n",
         ROUNDS, repairs);
  shared_room_destroy(shared);
  if (repairs < ROUNDS / 10) {
    fprintf(stderr, "test_shared_room: too few kills landed in the lock\n");
    return 1;
  }
  return 0;
}
