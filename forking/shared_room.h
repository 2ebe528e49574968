/* The room in shared memory, for chat-forking.
 *
 * One anonymous shared mapping, made by the parent before the first fork,
 * so that every child finds it at the same address:
 *
 *   header   the lock, two commit records, the shutdown flag
 *   room 0   the room of common/room.h: the names in registration order
 *   room 1   a second copy of that room
 *   ring     the room's lines, in the room's order (event_ring.h)
 *
 * The lock is a process-shared, robust mutex. A child can die at any
 * instant, also while it holds the lock, so every change is first made
 * where nobody looks yet, then committed by one store:
 *   1. the line is written into the ring past the head; a join or a
 *      departure is made on the spare copy of the room;
 *   2. the new head, and which copy of the room is now the right one, are
 *      written in the spare commit record;
 *   3. `current` is pointed at that record: this single store is the commit;
 *   4. the other copy of the room is given the same change.
 * Killed before step 3, a process leaves the old state; after it, the new
 * one. The next process to take the lock hears that the owner died
 * (EOWNERDEAD) and copies the right room over the spare one, and the room is
 * whole again: no line half-written, no member half-linked.
 *
 * A dead child's user is then made to depart by the parent, which finds it
 * by the member's owner (the pid of the child that joined it) under the
 * lock, so that the child's own departure and the parent's can never both
 * happen. */
#ifndef CHAT_SHARED_ROOM_H
#define CHAT_SHARED_ROOM_H

#include "room.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct shared_room;

/* Maps and prepares a room for max_clients members and a ring of
 * ring_capacity bytes, and the wake-up; call it before the first fork.
 * Returns NULL (errno set) when it cannot. */
struct shared_room *shared_room_create(size_t max_clients,
                                       size_t ring_capacity);

/* Unmaps the room in this process (the memory goes with the last one). */
void shared_room_destroy(struct shared_room *shared);

/* Takes the lock, repairing the room first if the last owner died with it;
 * returns true when it did. */
bool shared_room_lock(struct shared_room *shared);

/* Releases the lock, then wakes every child if the room changed. */
void shared_room_unlock(struct shared_room *shared);

/* ---- With the lock held ---- */

/* The room as committed, to read with room.h (room_names, room_owner...). */
const struct room *shared_room_members(const struct shared_room *shared);

/* How many bytes of lines the ring has received since the start. */
uint64_t shared_room_head(const struct shared_room *shared);

/* Copies the ring's bytes [from, from + length); `from` must be at most the
 * ring's capacity minus the longest line behind the head. */
void shared_room_read(const struct shared_room *shared, uint64_t from,
                      char *out, size_t length);

/* Stages a join: returns the member, or -1 when the name is taken (then
 * nothing is staged). shared_room_publish commits it with its line. */
int shared_room_join(struct shared_room *shared, struct chat_text name,
                     uintptr_t owner);

/* Stages a departure, to commit with its line by shared_room_publish. */
void shared_room_leave(struct shared_room *shared, int member);

/* Appends a line (no longer than the ring's capacity) to the ring and
 * commits it, with the join or departure staged before it if any. */
void shared_room_publish(struct shared_room *shared, struct chat_text line);

/* ---- Without the lock ---- */

/* The wake-ups: eventfds a child watches with EPOLLIN | EPOLLET and never
 * reads; each write is an edge that wakes every watcher once. The room's
 * is written when the room changes, and watched by the children in it;
 * the stop one is written once, at shutdown, and watched by all. */
int shared_room_wake_fd(const struct shared_room *shared);
int shared_room_stop_fd(const struct shared_room *shared);
void shared_room_wake(struct shared_room *shared);

/* The server is stopping: sets the flag every child checks when it wakes,
 * and wakes them all. */
void shared_room_shut_down(struct shared_room *shared);
bool shared_room_is_shutting_down(const struct shared_room *shared);

/* Shutdown's count: a child that has said goodbye tells the parent, which
 * waits on the descriptor and takes the number that came since it last
 * asked (an eventfd used as a counter). */
void shared_room_said_goodbye(struct shared_room *shared);
int shared_room_goodbye_fd(const struct shared_room *shared);
uint64_t shared_room_take_goodbyes(struct shared_room *shared);

#endif
