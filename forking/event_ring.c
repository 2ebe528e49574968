/* A byte ring of atomic bytes, one at a time: lines are short, and a
 * reader copies only what is new. */
#include "event_ring.h"

#include <stdatomic.h>

struct event_ring {
  uint64_t capacity;
  _Atomic unsigned char bytes[];
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
  for (size_t i = 0; i < length; i++) {
    atomic_store_explicit(&ring->bytes[at], (unsigned char)bytes[i],
                          memory_order_relaxed);
    if (++at == ring->capacity)
      at = 0;
  }
}

void event_ring_read(const struct event_ring *ring, uint64_t position,
                     char *out, size_t length) {
  size_t at = (size_t)(position % ring->capacity);
  for (size_t i = 0; i < length; i++) {
    out[i] = (char)atomic_load_explicit(&ring->bytes[at], memory_order_relaxed);
    if (++at == ring->capacity)
      at = 0;
  }
}
