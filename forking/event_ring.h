/* The event ring: the room's lines, one after another, in a fixed block of
 * memory that chat-forking places in shared memory.
 *
 * A byte ring addressed by 64-bit positions that only grow: the byte at
 * position p is stored at p % capacity, and 2^64 bytes are never reached.
 * The lines are the records: each ends with CR LF, so the ring needs no
 * framing of its own, and a reader copies out bytes, not lines.
 *
 * The ring keeps no head and no cursors. The head (how far it is written)
 * is committed together with the room (shared_room.h), and each reader keeps
 * its cursor in its own memory. A writer never waits for a reader: it
 * overwrites what is older than `capacity` bytes, and a reader that far
 * behind has lost its place (chat-forking drops a reader long before that).
 * The ring does no locking. */
#ifndef CHAT_EVENT_RING_H
#define CHAT_EVENT_RING_H

#include <stddef.h>
#include <stdint.h>

struct event_ring;

/* Bytes needed for a ring that holds `capacity` bytes. */
size_t event_ring_size(size_t capacity);

/* Prepares `memory` (event_ring_size(capacity) bytes) as a ring. */
struct event_ring *event_ring_init(void *memory, size_t capacity);

size_t event_ring_capacity(const struct event_ring *ring);

/* Stores `length` bytes (at most the capacity) from `position` on. */
void event_ring_write(struct event_ring *ring, uint64_t position,
                      const char *bytes, size_t length);

/* Copies `length` bytes (at most the capacity) from `position` on. */
void event_ring_read(const struct event_ring *ring, uint64_t position,
                     char *out, size_t length);

#endif
