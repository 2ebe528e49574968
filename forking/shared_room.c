/* The shared mapping, its robust lock, and the commit that makes every
 * change all or nothing (see shared_room.h). */
#include "shared_room.h"

#include "event_ring.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* What is in force: how far the ring is written, and which copy of the room
 * is the right one. */
struct commit {
  uint64_t head;
  uint32_t room; /* 0 or 1 */
};

/* Atomics shared by processes must work without a hidden lock. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_BOOL_LOCK_FREE == 2,
               "lock-free atomics");

/* The start of the mapping. */
struct shared_header {
  pthread_mutex_t lock;
  struct commit commits[2];
  atomic_uint current; /* commits[current] is in force */
  atomic_bool shutting_down;
};

/* Each process's handle on the mapping: the parent fills it in before the
 * first fork, so every child inherits the same addresses. */
struct shared_room {
  struct shared_header *header;
  size_t mapping_size;
  struct room *rooms[2];
  size_t room_bytes;
  struct event_ring *ring;
  int wake_fd;    /* the room changed */
  int stop_fd;    /* the server is stopping */
  int goodbye_fd; /* counts the children that said goodbye */
  /* The change this process staged on the spare room, to repeat on the
   * other copy once it is committed. */
  enum { STAGED_NOTHING, STAGED_JOIN, STAGED_LEAVE } staged;
  struct chat_text staged_name;
  uintptr_t staged_owner;
  int staged_member;
  bool changed; /* a line was published since the lock was taken */
};

static size_t align64(size_t size) {
  return (size + 63) & ~(size_t)63;
}

static const struct commit *in_force(const struct shared_room *shared) {
  struct shared_header *header = shared->header;
  return &header->commits[atomic_load_explicit(&header->current,
                                               memory_order_relaxed)];
}

static struct room *spare_room(const struct shared_room *shared) {
  return shared->rooms[1 - in_force(shared)->room];
}

static bool init_lock(pthread_mutex_t *lock) {
  pthread_mutexattr_t attributes;
  if (pthread_mutexattr_init(&attributes) != 0)
    return false;
  bool done =
      pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED) == 0 &&
      pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST) == 0 &&
      pthread_mutex_init(lock, &attributes) == 0;
  pthread_mutexattr_destroy(&attributes);
  return done;
}

struct shared_room *shared_room_create(size_t max_clients,
                                       size_t ring_capacity) {
  struct shared_room *shared = calloc(1, sizeof *shared);
  if (!shared)
    return NULL;
  size_t header_bytes = align64(sizeof(struct shared_header));
  shared->room_bytes = align64(room_size(max_clients));
  shared->mapping_size =
      header_bytes + 2 * shared->room_bytes + event_ring_size(ring_capacity);
  /* Shared and anonymous: no name to unlink, zero-filled, and freed when the
   * last process that maps it is gone. */
  char *mapping = mmap(NULL, shared->mapping_size, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) {
    free(shared);
    return NULL;
  }
  shared->header = (struct shared_header *)mapping;
  shared->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  shared->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  shared->goodbye_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (shared->wake_fd < 0 || shared->stop_fd < 0 || shared->goodbye_fd < 0 ||
      !init_lock(&shared->header->lock)) {
    int saved = errno;
    if (shared->wake_fd >= 0)
      close(shared->wake_fd);
    if (shared->stop_fd >= 0)
      close(shared->stop_fd);
    if (shared->goodbye_fd >= 0)
      close(shared->goodbye_fd);
    munmap(mapping, shared->mapping_size);
    free(shared);
    errno = saved;
    return NULL;
  }
  for (int copy = 0; copy < 2; copy++) {
    void *memory = mapping + header_bytes + copy * shared->room_bytes;
    shared->rooms[copy] = room_init(memory, max_clients);
  }
  shared->ring = event_ring_init(
      mapping + header_bytes + 2 * shared->room_bytes, ring_capacity);
  return shared;
}

void shared_room_destroy(struct shared_room *shared) {
  if (!shared)
    return;
  pthread_mutex_destroy(&shared->header->lock);
  munmap(shared->header, shared->mapping_size);
  close(shared->wake_fd);
  close(shared->stop_fd);
  close(shared->goodbye_fd);
  free(shared);
}

bool shared_room_lock(struct shared_room *shared) {
  int status = pthread_mutex_lock(&shared->header->lock);
  bool repaired = status == EOWNERDEAD;
  if (repaired) {
    /* We hold the lock its dead owner left. What it committed is whole; the
     * spare copy of the room may be half-changed: make it the right one
     * again. Bytes it wrote past the head were never published. */
    const struct commit *commit = in_force(shared);
    memcpy(shared->rooms[1 - commit->room], shared->rooms[commit->room],
           shared->room_bytes);
    pthread_mutex_consistent(&shared->header->lock);
    log_line("a process died holding the room lock: room repaired");
  } else if (status != 0) {
    /* Only a lock released without pthread_mutex_consistent could fail so
     * (ENOTRECOVERABLE); this code never does that. */
    log_line("cannot lock the room: %s", strerror(status));
    abort();
  }
  shared->staged = STAGED_NOTHING;
  shared->changed = false;
  return repaired;
}

void shared_room_unlock(struct shared_room *shared) {
  bool changed = shared->changed;
  pthread_mutex_unlock(&shared->header->lock);
  if (changed)
    shared_room_wake(shared);
}

const struct room *shared_room_members(const struct shared_room *shared) {
  return shared->rooms[in_force(shared)->room];
}

uint64_t shared_room_head(const struct shared_room *shared) {
  return in_force(shared)->head;
}

void shared_room_read(const struct shared_room *shared, uint64_t from,
                      char *out, size_t length) {
  event_ring_read(shared->ring, from, out, length);
}

int shared_room_join(struct shared_room *shared, struct chat_text name,
                     uintptr_t owner) {
  const char *stored;
  int member = room_join(spare_room(shared), name, owner, &stored);
  if (member >= 0) {
    shared->staged = STAGED_JOIN;
    shared->staged_name = name;
    shared->staged_owner = owner;
    shared->staged_member = member;
  }
  return member;
}

void shared_room_leave(struct shared_room *shared, int member) {
  room_leave(spare_room(shared), member);
  shared->staged = STAGED_LEAVE;
  shared->staged_member = member;
}

void shared_room_publish(struct shared_room *shared, struct chat_text line) {
  struct shared_header *header = shared->header;
  unsigned now = atomic_load_explicit(&header->current, memory_order_relaxed);
  const struct commit *old = &header->commits[now];
  struct commit *next = &header->commits[1 - now];
  event_ring_write(shared->ring, old->head, line.bytes, line.length);
  next->head = old->head + line.length;
  next->room = shared->staged == STAGED_NOTHING ? old->room : 1 - old->room;
  /* The commit. Release order: no store above may move below it. */
  atomic_store_explicit(&header->current, 1 - now, memory_order_release);

  /* The copy that was right until now gets the same change. Both copies
   * were equal, so the same call gives the same member. */
  struct room *other = shared->rooms[1 - next->room];
  if (shared->staged == STAGED_JOIN) {
    const char *stored;
    if (room_join(other, shared->staged_name, shared->staged_owner, &stored) !=
        shared->staged_member)
      abort(); /* the copies differed: cannot happen */
  } else if (shared->staged == STAGED_LEAVE) {
    room_leave(other, shared->staged_member);
  }
  shared->staged = STAGED_NOTHING;
  shared->changed = true;
}

int shared_room_wake_fd(const struct shared_room *shared) {
  return shared->wake_fd;
}

int shared_room_stop_fd(const struct shared_room *shared) {
  return shared->stop_fd;
}

/* Writes 1 to an eventfd nobody reads: an edge for every watcher. */
static void signal_watchers(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, sizeof one) < 0 && errno == EAGAIN) {
    /* The counter is full, after 2^64 - 2 wake-ups nobody read: empty it
     * (that wakes nobody) and write again (that wakes everyone). */
    uint64_t count;
    ssize_t emptied = read(fd, &count, sizeof count);
    (void)emptied; /* EAGAIN: another writer emptied it first */
    if (write(fd, &one, sizeof one) < 0)
      log_line("cannot wake the children: %s", strerror(errno));
  }
}

void shared_room_wake(struct shared_room *shared) {
  signal_watchers(shared->wake_fd);
}

void shared_room_shut_down(struct shared_room *shared) {
  atomic_store(&shared->header->shutting_down, true);
  signal_watchers(shared->stop_fd);
}

bool shared_room_is_shutting_down(const struct shared_room *shared) {
  return atomic_load(&shared->header->shutting_down);
}

void shared_room_said_goodbye(struct shared_room *shared) {
  uint64_t one = 1; /* the parent reads the sum long before it could fill */
  if (write(shared->goodbye_fd, &one, sizeof one) < 0)
    log_line("cannot tell the parent: %s", strerror(errno));
}

int shared_room_goodbye_fd(const struct shared_room *shared) {
  return shared->goodbye_fd;
}

uint64_t shared_room_take_goodbyes(struct shared_room *shared) {
  uint64_t count;
  return read(shared->goodbye_fd, &count, sizeof count) == sizeof count ? count
                                                                        : 0;
}
