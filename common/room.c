/* The room as a slot table with two sets of links: a doubly linked list in
 * registration order, and hash chains for looking names up. */
#include "room.h"

#include "protocol.h"

#include <stdlib.h>
#include <string.h>

struct member {
  int32_t previous; /* registration order; -1 at either end */
  int32_t next;
  int32_t hash_next; /* next member in the same hash bucket, or -1 */
  uint8_t in_use;
  uint8_t name_length;
  char name[CHAT_NAME_MAX_BYTES];
  uintptr_t owner;
};

struct room {
  uint32_t capacity;
  uint32_t count;
  uint32_t bucket_mask;
  uint32_t never_used; /* slots from here on were never handed out */
  int32_t first;
  int32_t last;
  int32_t free_list;      /* slots released for reuse, linked through next */
  int32_t buckets_offset; /* in int32_t, from the start of the room */
  struct member members[];
};

static uint32_t bucket_count(size_t capacity) {
  uint32_t count = 16;
  while (count < capacity)
    count *= 2;
  return count;
}

size_t room_size(size_t capacity) {
  return sizeof(struct room) + capacity * sizeof(struct member) +
         bucket_count(capacity) * sizeof(int32_t);
}

static int32_t *buckets(const struct room *room) {
  return (int32_t *)((char *)room + sizeof(struct room) +
                     room->capacity * sizeof(struct member));
}

struct room *room_init(void *memory, size_t capacity) {
  struct room *room = memory;
  room->capacity = (uint32_t)capacity;
  room->count = 0;
  room->bucket_mask = bucket_count(capacity) - 1;
  room->never_used = 0;
  room->first = room->last = room->free_list = -1;
  /* -1 in every bucket: memset works since -1 is all ones. */
  memset(buckets(room), 0xFF, bucket_count(capacity) * sizeof(int32_t));
  return room;
}

/* FNV-1a: short, and good enough for names. */
static uint32_t hash_name(struct chat_text name) {
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < name.length; i++)
    hash = (hash ^ (unsigned char)name.bytes[i]) * 16777619u;
  return hash;
}

static bool has_name(const struct member *member, struct chat_text name) {
  return member->name_length == name.length &&
         memcmp(member->name, name.bytes, name.length) == 0;
}

int room_find(const struct room *room, struct chat_text name) {
  if (name.length == 0 || name.length > CHAT_NAME_MAX_BYTES)
    return -1;
  int32_t i = buckets(room)[hash_name(name) & room->bucket_mask];
  while (i >= 0 && !has_name(&room->members[i], name))
    i = room->members[i].hash_next;
  return i;
}

void room_set_owner(struct room *room, int member, uintptr_t owner) {
  room->members[member].owner = owner;
}

void room_clear(struct room *room) {
  room_init(room, room->capacity);
}

int room_join(struct room *room, struct chat_text name, uintptr_t owner,
              const char **stored_name) {
  if (name.length == 0 || name.length > CHAT_NAME_MAX_BYTES)
    return -1;
  if (room_find(room, name) >= 0)
    return -1;
  int32_t *bucket = &buckets(room)[hash_name(name) & room->bucket_mask];
  int32_t slot;
  if (room->free_list >= 0) {
    slot = room->free_list;
    room->free_list = room->members[slot].next;
  } else if (room->never_used < room->capacity) {
    slot = (int32_t)room->never_used++;
  } else {
    return -1;
  }
  struct member *member = &room->members[slot];
  member->in_use = 1;
  member->name_length = (uint8_t)name.length;
  memcpy(member->name, name.bytes, name.length);
  member->owner = owner;
  member->hash_next = *bucket;
  *bucket = slot;
  member->next = -1;
  member->previous = room->last;
  if (room->last >= 0)
    room->members[room->last].next = slot;
  else
    room->first = slot;
  room->last = slot;
  room->count++;
  *stored_name = member->name;
  return slot;
}

void room_leave(struct room *room, int slot) {
  if (slot < 0 || (uint32_t)slot >= room->capacity)
    return;
  struct member *member = &room->members[slot];
  if (!member->in_use)
    return;
  struct chat_text name = {member->name, member->name_length};
  int32_t *link = &buckets(room)[hash_name(name) & room->bucket_mask];
  while (*link != slot)
    link = &room->members[*link].hash_next;
  *link = member->hash_next;
  if (member->previous >= 0)
    room->members[member->previous].next = member->next;
  else
    room->first = member->next;
  if (member->next >= 0)
    room->members[member->next].previous = member->previous;
  else
    room->last = member->previous;
  member->in_use = 0;
  member->next = room->free_list;
  room->free_list = slot;
  room->count--;
}

size_t room_count(const struct room *room) {
  return room->count;
}

int room_first(const struct room *room) {
  return room->first;
}

int room_next(const struct room *room, int member) {
  return room->members[member].next;
}

uintptr_t room_owner(const struct room *room, int member) {
  return room->members[member].owner;
}

struct chat_text room_member_name(const struct room *room, int member) {
  return (struct chat_text){room->members[member].name,
                            room->members[member].name_length};
}

void room_broadcast(const struct room *room, struct chat_text line,
                    room_deliver deliver, void *context) {
  int member = room->first;
  while (member >= 0) {
    int next = room->members[member].next; /* deliver may remove member */
    deliver(context, room->members[member].owner, line);
    member = next;
  }
}

void room_names(const struct room *room, room_write write, void *context) {
  write(context, CHAT_NAMES_HEADER, sizeof CHAT_NAMES_HEADER - 1);
  for (int member = room->first; member >= 0;
       member = room->members[member].next) {
    write(context, " ", 1);
    write(context, room->members[member].name,
          room->members[member].name_length);
    write(context, CHAT_EOL, 2);
  }
}

const char *room_join_member(struct room *room, struct chat_text name,
                             uintptr_t owner, int *member) {
  const char *stored = NULL;
  int joined = room_join(room, name, owner, &stored);
  if (joined < 0)
    return NULL;
  *member = joined;
  return stored;
}

void room_leave_member(struct room *room, int *member) {
  room_leave(room, *member);
  *member = -1;
}

struct room *room_create(size_t capacity) {
  void *memory = calloc(1, room_size(capacity));
  return memory ? room_init(memory, capacity) : NULL;
}
