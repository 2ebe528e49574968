/* The heap policy (common/os/heap.h): freed memory is kept while the
 * process is busy, and given back once it has been quiet for
 * HEAP_QUIET_MILLISECONDS, never before. */
#include "check.h"
#include "os/heap.h"

#include <time.h>
#include <unistd.h>

#define BLOCKS 5000
#define BLOCK_SIZE 4096 /* far below the mmap threshold: on the heap */

/* Resident memory of this process, in bytes. */
static long resident(void) {
  FILE *statm = fopen("/proc/self/statm", "r");
  long pages = 0, resident_pages = 0;
  if (!statm)
    return -1;
  if (fscanf(statm, "%ld %ld", &pages, &resident_pages) != 2)
    resident_pages = -1;
  fclose(statm);
  return resident_pages * sysconf(_SC_PAGESIZE);
}

static void sleep_milliseconds(int ms) {
  struct timespec pause = {.tv_sec = ms / 1000,
                           .tv_nsec = (ms % 1000) * 1000000L};
  nanosleep(&pause, NULL);
}

int main(void) {
  heap_keep_freed_memory();
  /* Nothing kept yet: the wait is left as it was. */
  CHECK(heap_wait(-1) == -1);
  CHECK(heap_wait(7) == 7);

  /* A burst: 20 MB allocated, written, freed. */
  static char *blocks[BLOCKS];
  for (int i = 0; i < BLOCKS; i++) {
    blocks[i] = malloc(BLOCK_SIZE);
    CHECK(blocks[i] != NULL);
    if (blocks[i])
      memset(blocks[i], 1, BLOCK_SIZE);
  }
  long during = resident();
  for (int i = BLOCKS - 1; i >= 0; i--)
    free(blocks[i]);
  heap_note_busy();
  long kept = resident();
  /* Kept through the burst: most of it is still resident. */
  CHECK(kept > during - BLOCKS * BLOCK_SIZE / 4);

  /* Busy a moment ago: the wait is cut to when it is due, at most a quiet
   * period; a shorter wait stays as it is; nothing goes back yet. */
  int wait = heap_wait(-1);
  CHECK(wait > 0 && wait <= HEAP_QUIET_MILLISECONDS);
  CHECK(heap_wait(5) == 5);
  CHECK(heap_wait(1000000) <= HEAP_QUIET_MILLISECONDS);

  /* Busy again half-way: the quiet period starts over. */
  sleep_milliseconds(HEAP_QUIET_MILLISECONDS / 2);
  heap_note_busy();
  wait = heap_wait(-1);
  CHECK(wait > HEAP_QUIET_MILLISECONDS / 2);

  /* Quiet for a whole period: given back, and nothing waits any more. */
  for (int round = 0; round < 10 && wait >= 0; round++) {
    sleep_milliseconds(wait + 5);
    wait = heap_wait(-1);
  }
  CHECK(wait == -1);
  long after = resident();
  CHECK(after < kept - BLOCKS * BLOCK_SIZE / 2);
  fprintf(stderr,
          "resident: %ld KiB in the burst, %ld kept, %ld after a "
          "quiet period\n",
          during / 1024, kept / 1024, after / 1024);
  CHECK(heap_wait(-1) == -1);
  return check_report();
}
