/* A byte ring: every access is at most two copies, before and after the
 * point where the ring wraps. */
#include "event_ring.h"

#include <string.h>

struct event_ring {
  uint64_t capacity;
  char bytes[];
};

size_t event_ring_size(size_t capacity) {
  return sizeof(struct event_ring) + capacity;
}

struct event_ring *event_ring_init(void *memory, size_t capacity) {
  struct event_ring *ring = memory;
  ring->capacity = capacity;
  return ring;
}

size_t event_ring_capacity(const struct event_ring *ring) {
  return (size_t)ring->capacity;
}

void event_ring_write(struct event_ring *ring, uint64_t position,
                      const char *bytes, size_t length) {
  size_t at = (size_t)(position % ring->capacity);
  size_t first = length < ring->capacity - at ? length : ring->capacity - at;
  memcpy(ring->bytes + at, bytes, first);
  memcpy(ring->bytes, bytes + first, length - first);
}

void event_ring_read(const struct event_ring *ring, uint64_t position,
                     char *out, size_t length) {
  size_t at = (size_t)(position % ring->capacity);
  size_t first = length < ring->capacity - at ? length : ring->capacity - at;
  memcpy(out, ring->bytes + at, first);
  memcpy(out + first, ring->bytes, length - first);
}
