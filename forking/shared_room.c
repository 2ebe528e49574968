/* The shared mapping, its robust lock, the commit that makes every change
 * all or nothing, the lock-free reads and the wave (see shared_room.h). */
#include "shared_room.h"

#include "os/clock.h"
#include "event_ring.h"
#include "os/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* What is in force: how far the ring is written, and which copy of the room
 * is the right one. */
struct commit {
  uint64_t head;
  uint32_t room; /* 0 or 1 */
};

/* Atomics shared by processes must work without a hidden lock. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_BOOL_LOCK_FREE == 2 &&
                   ATOMIC_LLONG_LOCK_FREE == 2,
               "lock-free atomics");

/* A slot's word: what its child is doing, as far as waves are concerned.
 * A child woken by a wave keeps the wave's number in its word until it has
 * caught up and pays its part (shared_room_may_sleep): a single exchange
 * both clears the mark and tells it what it owes. */
enum {
  SLOT_OFF = 0,      /* not in the room (or no child) */
  SLOT_RUNNING = 1,  /* in the room, not waiting */
  SLOT_SLEEPING = 2, /* in the room, waiting: a wave must wake it */
};
#define WAVE_NUMBER_MASK 0x3fffffffu /* 30 bits: the rest of a slot word */
static unsigned slot_woken(uint32_t wave) {
  return (wave & WAVE_NUMBER_MASK) << 2 | 3u;
}
static bool is_woken(unsigned word) {
  return (word & 3u) == 3u;
}
static uint32_t woken_by(unsigned word) {
  return word >> 2;
}

/* The wave word: the wave's number above, how many children it still waits
 * for below (the one that started it counts as one until it has woken
 * them all, so that the count cannot reach 0 while it counts). No wave runs
 * while the count is 0. */
static uint64_t wave_word(uint32_t number, uint32_t owing) {
  return (uint64_t)(number & WAVE_NUMBER_MASK) << 32 | owing;
}
static uint32_t wave_number(uint64_t word) {
  return (uint32_t)(word >> 32);
}
static uint32_t wave_owing(uint64_t word) {
  return (uint32_t)word;
}

/* The start of the mapping. */
struct shared_header {
  pthread_mutex_t lock;
  struct commit commits[2];
  atomic_uint current; /* commits[current] is in force */
  atomic_bool shutting_down;
  atomic_bool available; /* with --redis: the room can be reached now */
  /* Read without the lock. Every byte before `published` is committed;
   * a writer may be writing bytes up to `reserved`, which is ahead of it
   * only while a line is being written (or after a writer died doing so). */
  _Atomic uint64_t published;
  _Atomic uint64_t reserved;
  /* The wave. */
  _Atomic uint64_t wave; /* wave_word() */
  atomic_bool more;      /* lines published that no wave covers */
  /* When the wave in progress started or was last paid a part of
   * (milliseconds, monotonic clock): a wave is given up only when it stops
   * moving, not for being long (at 10,000 children one takes longer than
   * any fixed deadline worth having). */
  _Atomic long long wave_moved;
  atomic_uint slots_high; /* every slot in use is below it */
  /* For the figures: waves started, those that wrote the eventfd, those
   * given up. */
  _Atomic uint64_t waves_started, waves_signalled, waves_given_up;
};

/* A slot's mailbox, with --redis: what the parent has to tell its child
 * (shared_room_post). */
struct mailbox {
  atomic_uint word;         /* SHARED_MAIL_* bits; refusals add up */
  _Atomic uint64_t arrival; /* with SHARED_MAIL_ACCEPTED */
  _Atomic uint64_t done;    /* its lines done so far (SHARED_MAIL_ECHOED) */
};

/* Each process's handle on the mapping: the parent fills it in before the
 * first fork, so every child inherits the same addresses. */
struct shared_room {
  struct shared_header *header;
  size_t mapping_size;
  atomic_uint *slots;
  struct mailbox *mail; /* one per slot with --redis, else NULL */
  struct room *rooms[2];
  size_t room_bytes;
  struct event_ring *ring;
  int wake_fd;    /* the room changed */
  int stop_fd;    /* the server is stopping */
  int goodbye_fd; /* counts the children that said goodbye */
  /* The change this process staged on the spare room, to repeat on the
   * other copy once it is committed. */
  enum { STAGED_NOTHING, STAGED_JOIN, STAGED_LEAVE, STAGED_CLEAR } staged;
  struct chat_text staged_name;
  uintptr_t staged_owner;
  int staged_member;
  bool changed;  /* a line was published since the lock was taken */
  bool repaired; /* the lock needed a repair: logged after unlocking */
  /* This process published while wave `left_to` ran: its lines wait for the
   * next wave (shared_room_wave_alarm). */
  bool left_lines;
  uint32_t left_to;
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

/* Both kinds: a room of `members`, and a mailbox per slot or none. */
static struct shared_room *create(size_t max_clients, size_t members,
                                  size_t ring_capacity, bool mailboxes) {
  struct shared_room *shared = calloc(1, sizeof *shared);
  if (!shared)
    return NULL;
  size_t header_bytes = align64(sizeof(struct shared_header));
  size_t slot_bytes = align64(max_clients * sizeof(atomic_uint));
  size_t mail_bytes =
      mailboxes ? align64(max_clients * sizeof(struct mailbox)) : 0;
  shared->room_bytes = align64(room_size(members));
  shared->mapping_size = header_bytes + slot_bytes + mail_bytes +
                         2 * shared->room_bytes +
                         event_ring_size(ring_capacity);
  /* Shared and anonymous: no name to unlink, zero-filled (every slot
   * SLOT_OFF, no wave running), and freed when the last process that maps
   * it is gone. */
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
  shared->slots = (atomic_uint *)(mapping + header_bytes);
  if (mailboxes)
    shared->mail = (struct mailbox *)(mapping + header_bytes + slot_bytes);
  char *rooms = mapping + header_bytes + slot_bytes + mail_bytes;
  for (int copy = 0; copy < 2; copy++)
    shared->rooms[copy] = room_init(rooms + copy * shared->room_bytes, members);
  shared->ring = event_ring_init(rooms + 2 * shared->room_bytes, ring_capacity);
  return shared;
}

struct shared_room *shared_room_create(size_t max_clients,
                                       size_t ring_capacity) {
  return create(max_clients, max_clients, ring_capacity, false);
}

struct shared_room *shared_room_create_cluster(size_t max_clients,
                                               size_t members,
                                               size_t ring_capacity) {
  return create(max_clients, members, ring_capacity, true);
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

/* ---- The lock ------------------------------------------------------- */

/* What every way of taking the lock does next. */
static enum shared_room_locked took_lock(struct shared_room *shared,
                                         int status) {
  shared->staged = STAGED_NOTHING;
  shared->changed = false;
  shared->repaired = false;
  if (status == 0)
    return SHARED_ROOM_LOCKED;
  if (status == ETIMEDOUT)
    return SHARED_ROOM_BUSY;
  if (status != EOWNERDEAD) {
    /* Only a lock released without pthread_mutex_consistent could fail so
     * (ENOTRECOVERABLE); this code never does that. */
    log_line("cannot lock the room: %s", strerror(status));
    abort();
  }
  /* We hold the lock its dead owner left. What it committed is whole; the
   * spare copy of the room may be half-changed: make it the right one
   * again. Bytes it wrote past the head were never published; if it died
   * between its commit and publishing the head, publish it now. */
  const struct commit *commit = in_force(shared);
  memcpy(shared->rooms[1 - commit->room], shared->rooms[commit->room],
         shared->room_bytes);
  atomic_store(&shared->header->published, commit->head);
  pthread_mutex_consistent(&shared->header->lock);
  shared->repaired = true;
  shared->changed = true; /* what it published may not have been woken */
  return SHARED_ROOM_REPAIRED;
}

bool shared_room_lock(struct shared_room *shared) {
  return took_lock(shared, pthread_mutex_lock(&shared->header->lock)) ==
         SHARED_ROOM_REPAIRED;
}

enum shared_room_locked shared_room_lock_within(struct shared_room *shared,
                                                int milliseconds) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_nsec += (long)(milliseconds % 1000) * 1000000L;
  until.tv_sec += milliseconds / 1000 + until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  return took_lock(shared, pthread_mutex_clocklock(&shared->header->lock,
                                                   CLOCK_MONOTONIC, &until));
}

static void wake_room(struct shared_room *shared);

void shared_room_unlock(struct shared_room *shared) {
  bool changed = shared->changed, repaired = shared->repaired;
  pthread_mutex_unlock(&shared->header->lock);
  /* The log may block (a full pipe): never under the lock. */
  if (repaired)
    log_line("a process died holding the room lock: room repaired");
  if (changed)
    wake_room(shared);
}

/* ---- With the lock ---------------------------------------------------- */

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

void shared_room_clear(struct shared_room *shared) {
  room_clear(spare_room(shared));
  shared->staged = STAGED_CLEAR;
}

void shared_room_publish(struct shared_room *shared, struct chat_text line) {
  struct shared_header *header = shared->header;
  unsigned now = atomic_load_explicit(&header->current, memory_order_relaxed);
  const struct commit *old = &header->commits[now];
  struct commit *next = &header->commits[1 - now];
  /* Readers must hear that these bytes are being written before any of
   * them is (the release fence): a reader that copied one of them then
   * sees `reserved` past it, and knows its copy may be torn. */
  uint64_t end = old->head + line.length;
  /* It only grows: a writer killed half-way may have reserved more. */
  if (end > atomic_load_explicit(&header->reserved, memory_order_relaxed))
    atomic_store_explicit(&header->reserved, end, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  if (line.length > 0) /* an empty line only commits what was staged */
    event_ring_write(shared->ring, old->head, line.bytes, line.length);
  next->head = old->head + line.length;
  next->room = shared->staged == STAGED_NOTHING ? old->room : 1 - old->room;
  /* The commit. Release order: no store above may move below it. */
  atomic_store_explicit(&header->current, 1 - now, memory_order_release);
  /* Then the readers may have it (sequentially consistent: see the wave). */
  atomic_store(&header->published, next->head);

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
  } else if (shared->staged == STAGED_CLEAR) {
    room_clear(other);
  }
  shared->staged = STAGED_NOTHING;
  shared->changed = true;
}

/* ---- Reading without the lock ----------------------------------------- */

uint64_t shared_room_published(const struct shared_room *shared) {
  return atomic_load(&shared->header->published);
}

bool shared_room_copy(const struct shared_room *shared, uint64_t from,
                      char *out, size_t length) {
  size_t capacity = event_ring_capacity(shared->ring);
  /* The bytes are read while writers may write the ring: a data race by
   * the letter of C11, checked for afterwards as a seqlock does. */
  event_ring_read(shared->ring, from, out, length);
  atomic_thread_fence(memory_order_acquire);
  uint64_t reserved =
      atomic_load_explicit(&shared->header->reserved, memory_order_relaxed);
  /* A writer writing up to `reserved` overwrites what lies a capacity
   * before it: everything from `from` on is intact while reserved is at
   * most a capacity ahead of it. */
  return reserved - from <= capacity;
}

/* ---- The wave --------------------------------------------------------- */

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

/* Counts one more child in wave `number`; false if that wave is over. */
static bool wave_owe(struct shared_header *header, uint32_t number) {
  uint64_t word = atomic_load(&header->wave);
  while (wave_number(word) == number && wave_owing(word) > 0) {
    if (atomic_compare_exchange_weak(&header->wave, &word, word + 1))
      return true;
  }
  return false;
}

/* Pays one part of wave `number` (nothing if it is over or was given up);
 * returns true when that ended it. */
static bool wave_pay(struct shared_header *header, uint32_t number) {
  uint64_t word = atomic_load(&header->wave);
  while (wave_number(word) == number && wave_owing(word) > 0) {
    if (atomic_compare_exchange_weak(&header->wave, &word, word - 1)) {
      atomic_store_explicit(&header->wave_moved, now_milliseconds(),
                            memory_order_relaxed);
      return wave_owing(word) == 1;
    }
  }
  return false;
}

/* Starts waves while no wave runs and lines wait for one. The claim (the
 * count from 0 to 1) lets one process at a time start a wave. It clears
 * `more` before it looks at the slots: a line published after that raises
 * it again, and this loop, or the end of the wave, starts the next wave.
 *
 * Why no sleeper is missed: a child says SLEEPING, then reads `published`;
 * a writer stores `published`, then (through `more`) a wave reads the
 * slots. All four are sequentially consistent, so either the child sees the
 * new head (and does not sleep) or the wave sees it asleep (and wakes it). */
static void run_waves(struct shared_room *shared) {
  struct shared_header *header = shared->header;
  uint64_t word = atomic_load(&header->wave);
  while (wave_owing(word) == 0) {
    uint32_t number = (wave_number(word) + 1) & WAVE_NUMBER_MASK;
    if (!atomic_compare_exchange_weak(&header->wave, &word,
                                      wave_word(number, 1)))
      continue; /* word now holds what another process did */
    atomic_store(&header->wave_moved, now_milliseconds());
    atomic_store(&header->more, false);
    atomic_fetch_add_explicit(&header->waves_started, 1, memory_order_relaxed);
    bool signal = false;
    unsigned high = atomic_load(&header->slots_high);
    for (unsigned slot = 0; slot < high; slot++) {
      unsigned state = atomic_load(&shared->slots[slot]);
      if (state == SLOT_SLEEPING) {
        /* Counted before it is marked: woken at once, it may pay at once. */
        if (!wave_owe(header, number))
          break; /* given up meanwhile: its successor wakes everyone */
        if (atomic_compare_exchange_strong(&shared->slots[slot], &state,
                                           slot_woken(number)))
          signal = true;
        else
          wave_pay(header, number); /* it woke by itself: uncounted */
      } else if (is_woken(state) && woken_by(state) != number) {
        /* Marked by a wave that was given up: maybe by a process that
         * died or stopped before it wrote the eventfd. Waking everyone
         * once more costs little; the wave does not wait for it. */
        signal = true;
      }
    }
    if (signal) {
      signal_watchers(shared->wake_fd);
      atomic_fetch_add_explicit(&header->waves_signalled, 1,
                                memory_order_relaxed);
    }
    /* The starter's own part. A wave that found nobody asleep ends here. */
    if (!wave_pay(header, number) || !atomic_load(&header->more))
      return;
    word = atomic_load(&header->wave);
  }
}

/* Gives up wave `number` if it still runs, then starts the next. */
static void give_up_wave(struct shared_room *shared, uint32_t number) {
  struct shared_header *header = shared->header;
  uint64_t word = atomic_load(&header->wave);
  while (wave_number(word) == number && wave_owing(word) > 0) {
    if (atomic_compare_exchange_weak(&header->wave, &word,
                                     wave_word(number, 0))) {
      atomic_fetch_add_explicit(&header->waves_given_up, 1,
                                memory_order_relaxed);
      break;
    }
  }
  atomic_store(&header->more, true); /* whatever it held back */
  run_waves(shared);
}

/* After publishing: the lines go with a new wave, or wait for the next. */
static void wake_room(struct shared_room *shared) {
  struct shared_header *header = shared->header;
  atomic_store(&header->more, true);
  uint64_t word = atomic_load(&header->wave);
  if (wave_owing(word) == 0) {
    run_waves(shared);
    return;
  }
  shared->left_lines = true;
  shared->left_to = wave_number(word);
  shared_room_wave_alarm(shared); /* gives it up if it is overdue */
}

int shared_room_wave_alarm(struct shared_room *shared) {
  if (!shared->left_lines)
    return -1;
  struct shared_header *header = shared->header;
  uint64_t word = atomic_load(&header->wave);
  if (wave_owing(word) == 0 || wave_number(word) != shared->left_to) {
    /* That wave ended: the next one, started after our lines were
     * published, carries them. */
    shared->left_lines = false;
    return -1;
  }
  long long left = atomic_load(&header->wave_moved) +
                   WAVE_TIMEOUT_MILLISECONDS - now_milliseconds();
  if (left > 0)
    return (int)left;
  shared->left_lines = false;
  give_up_wave(shared, shared->left_to);
  return -1;
}

void shared_room_wave_adopt(struct shared_room *shared) {
  uint64_t word = atomic_load(&shared->header->wave);
  if (wave_owing(word) == 0)
    return;
  shared->left_lines = true;
  shared->left_to = wave_number(word);
}

void shared_room_wave_enter(struct shared_room *shared, unsigned slot) {
  atomic_store(&shared->slots[slot], SLOT_RUNNING);
}

/* The slot's word is now `state`, which was `old`: pays what it owed. */
static void settle(struct shared_room *shared, unsigned old) {
  if (is_woken(old) && wave_pay(shared->header, woken_by(old)) &&
      atomic_load(&shared->header->more))
    run_waves(shared); /* the last of its wave: start the next one */
}

void shared_room_wave_leave(struct shared_room *shared, unsigned slot) {
  settle(shared, atomic_exchange(&shared->slots[slot], SLOT_OFF));
}

/* Whether the parent posted to the slot's mailbox (sequentially consistent,
 * like `published`: see shared_room_post). */
static bool has_mail(const struct shared_room *shared, unsigned slot) {
  return shared->mail && atomic_load(&shared->mail[slot].word) != 0;
}

bool shared_room_may_sleep(struct shared_room *shared, unsigned slot,
                           uint64_t seen) {
  settle(shared, atomic_exchange(&shared->slots[slot], SLOT_SLEEPING));
  if (atomic_load(&shared->header->published) == seen &&
      !has_mail(shared, slot))
    return true;
  shared_room_awake(shared, slot);
  return false;
}

void shared_room_awake(struct shared_room *shared, unsigned slot) {
  /* Woken by a wave, it keeps the mark until it has caught up. */
  unsigned sleeping = SLOT_SLEEPING;
  atomic_compare_exchange_strong(&shared->slots[slot], &sleeping, SLOT_RUNNING);
}

void shared_room_slots_in_use(struct shared_room *shared, unsigned high) {
  atomic_store(&shared->header->slots_high, high);
}

void shared_room_child_ended(struct shared_room *shared, unsigned slot,
                             bool died) {
  settle(shared, atomic_exchange(&shared->slots[slot], SLOT_OFF));
  if (died) {
    uint64_t word = atomic_load(&shared->header->wave);
    give_up_wave(shared, wave_number(word));
  }
}

struct shared_room_waves
shared_room_wave_counts(const struct shared_room *shared) {
  struct shared_header *header = shared->header;
  return (struct shared_room_waves){
      .started = atomic_load(&header->waves_started),
      .signalled = atomic_load(&header->waves_signalled),
      .given_up = atomic_load(&header->waves_given_up),
      .bytes = atomic_load(&header->published),
  };
}

/* ---- With --redis: the parent's word to its children ------------------ */

void shared_room_set_available(struct shared_room *shared, bool available) {
  atomic_store(&shared->header->available, available);
}

bool shared_room_available(const struct shared_room *shared) {
  return atomic_load(&shared->header->available);
}

/* Stored before the wave that wakes the child, as `published` is: either
 * the child, which says SLEEPING before it looks at its mailbox, sees the
 * mail, or the wave sees it asleep and wakes it. */
void shared_room_post(struct shared_room *shared, unsigned slot, unsigned mail,
                      uint64_t arrival) {
  struct mailbox *box = &shared->mail[slot];
  if (mail & SHARED_MAIL_ANSWER)
    atomic_store_explicit(&box->arrival, arrival, memory_order_relaxed);
  if (mail == SHARED_MAIL_REFUSED)
    atomic_fetch_add(&box->word, SHARED_MAIL_REFUSED);
  else
    atomic_fetch_or(&box->word, mail);
  shared->changed = true; /* the unlock starts a wave */
}

unsigned shared_room_take_mail(struct shared_room *shared, unsigned slot,
                               uint64_t *arrival) {
  struct mailbox *box = &shared->mail[slot];
  /* Looked at first: a child looks on every turn, and two or three
   * mailboxes share a cache line. */
  if (atomic_load_explicit(&box->word, memory_order_relaxed) == 0)
    return 0;
  unsigned mail = atomic_exchange(&box->word, 0);
  *arrival = atomic_load_explicit(&box->arrival, memory_order_relaxed);
  return mail;
}

/* The count first, then the mail that says so, both sequentially
 * consistent and after the lines published before them: a child that sees
 * the count sees those lines published, and one that sleeps on the mail is
 * woken by the unlock's wave. */
void shared_room_post_done(struct shared_room *shared, unsigned slot,
                           uint64_t count) {
  struct mailbox *box = &shared->mail[slot];
  atomic_fetch_add(&box->done, count);
  atomic_fetch_or(&box->word, SHARED_MAIL_ECHOED);
  shared->changed = true; /* the unlock starts a wave */
}

uint64_t shared_room_lines_done(const struct shared_room *shared,
                                unsigned slot) {
  return atomic_load(&shared->mail[slot].done);
}

void shared_room_clear_mail(struct shared_room *shared, unsigned slot) {
  atomic_store(&shared->mail[slot].word, 0);
  atomic_store(&shared->mail[slot].done, 0);
}

/* ---- Stopping --------------------------------------------------------- */

int shared_room_wake_fd(const struct shared_room *shared) {
  return shared->wake_fd;
}

int shared_room_stop_fd(const struct shared_room *shared) {
  return shared->stop_fd;
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
