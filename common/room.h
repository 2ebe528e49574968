/* The room: who is here, in the order they arrived.
 *
 * A fixed block of memory sized for the server's --max-clients, with indexes
 * instead of pointers, so that chat-forking can place it in shared memory
 * where every process maps it; the other models keep it on their heap. The
 * room does no locking: each model guards it its own way. Slots are handed
 * out from the front and reused, so pages are touched only as users arrive.
 *
 * Each member carries an owner, a value the model chooses (its client), which
 * room_broadcast hands back: that is the whole interface a model implements
 * to deliver a room line to its clients. */
#ifndef CHAT_ROOM_H
#define CHAT_ROOM_H

#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct room;

/* Bytes needed for a room of `capacity` members. */
size_t room_size(size_t capacity);

/* Prepares `memory` (room_size(capacity) bytes, zero-filled) as a room. */
struct room *room_init(void *memory, size_t capacity);
/* A room on the heap (calloc), freed with free(); NULL when out of memory. */
struct room *room_create(size_t capacity);

/* Registers a name; returns the member's index and sets *stored_name to the
 * room's copy of it, or returns -1 when the name is taken (or the room is
 * full). */
int room_join(struct room *room, struct chat_text name, uintptr_t owner,
              const char **stored_name);

/* Releases a member's name and slot. */
void room_leave(struct room *room, int member);

/* The join and leave of a model that keeps its member's index in its own
 * record (*member, -1 while not in the room), as common/step.h's hooks
 * want them: room_join_member returns the room's copy of the name, or NULL
 * when it is taken; room_leave_member releases the name and sets *member
 * to -1. */
const char *room_join_member(struct room *room, struct chat_text name,
                             uintptr_t owner, int *member);
void room_leave_member(struct room *room, int *member);

/* The member holding `name`, or -1. */
int room_find(const struct room *room, struct chat_text name);
/* Hands a member to another owner: 0 for one no client of this process
 * owns (a user of another server, in a room shared through Redis). */
void room_set_owner(struct room *room, int member, uintptr_t owner);
/* Empties the room. */
void room_clear(struct room *room);

size_t room_count(const struct room *room);

/* Members in registration order: first, then next until -1. */
int room_first(const struct room *room);
int room_next(const struct room *room, int member);
uintptr_t room_owner(const struct room *room, int member);
struct chat_text room_member_name(const struct room *room, int member);

/* Calls deliver(context, owner, line) for every member, in registration
 * order. The callback may remove the member it was handed (a slow client),
 * but no other. */
typedef void (*room_deliver)(void *context, uintptr_t owner,
                             struct chat_text line);
void room_broadcast(const struct room *room, struct chat_text line,
                    room_deliver deliver, void *context);

/* The answer to NAMES, written piece by piece to `write`: the header, then
 * one " NAME" line per member in registration order. */
typedef void (*room_write)(void *context, const char *bytes, size_t length);
void room_names(const struct room *room, room_write write, void *context);

#endif
