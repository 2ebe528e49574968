#include "heap.h"

#include <malloc.h>

/* Enough for one broadcast's output to 10,000 recipients, several times. */
#define KEEP_FREED_BYTES (64 * 1024 * 1024)

void heap_keep_freed_memory(void) {
  mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
}

void heap_return_freed_memory(void) {
  malloc_trim(0);
}
