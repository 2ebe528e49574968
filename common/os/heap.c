#include "os/heap.h"

#include "os/clock.h"

#include <malloc.h>
#include <stdbool.h>

/* Enough for one broadcast's output to 10,000 recipients, several times. */
#define KEEP_FREED_BYTES (64 * 1024 * 1024)

/* One thread calls heap_note_busy() and heap_wait() (heap.h): no lock. */
static bool freed_memory_kept; /* busy since memory last went back */
static long long busy_at;      /* when, on the monotonic clock */

void heap_keep_freed_memory(void) {
  mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
}

void heap_note_busy(void) {
  freed_memory_kept = true;
  busy_at = now_milliseconds();
}

int heap_wait(int wait) {
  if (!freed_memory_kept)
    return wait;
  long long left = busy_at + HEAP_QUIET_MILLISECONDS - now_milliseconds();
  if (left <= 0) {
    malloc_trim(0); /* every arena: chat-threaded's threads have several */
    freed_memory_kept = false;
    return wait;
  }
  return wait >= 0 && wait < left ? wait : (int)left;
}
