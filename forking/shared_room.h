/* The room in shared memory, for chat-forking.
 *
 * One anonymous shared mapping, made by the parent before the first fork,
 * so that every child finds it at the same address:
 *
 *   header   the lock, two commit records, the published head, the wave
 *   slots    one word per child: is it running, asleep, or woken by a wave
 *   mail     with --redis: one mailbox per child, the parent's answers
 *   room 0   the room of common/room.h: the names in registration order
 *   room 1   a second copy of that room
 *   ring     the room's lines, in the room's order (event_ring.h)
 *
 * Writers. The lock is a process-shared, robust mutex, taken only to change
 * the room. A child can die at any instant, also while it holds the lock, so
 * every change is first made where nobody looks yet, then committed by one
 * store:
 *   1. the line is written into the ring past the head; a join or a
 *      departure is made on the spare copy of the room;
 *   2. the new head, and which copy of the room is now the right one, are
 *      written in the spare commit record;
 *   3. `current` is pointed at that record: this single store is the commit;
 *   4. the new head is published to readers; the other copy of the room is
 *      given the same change.
 * Killed before step 3, a process leaves the old state; after it, the new
 * one. The next process to take the lock hears that the owner died
 * (EOWNERDEAD), copies the right room over the spare one and publishes the
 * committed head, and the room is whole again: no line half-written, no
 * member half-linked.
 *
 * Readers take no lock: they copy the ring's bytes up to the published head,
 * then check that no writer can have overwritten what they copied (a
 * seqlock's check, with the ring's positions as the sequence).
 *
 * The wake-up, a wave: whoever publishes when no wave is running starts one:
 * it marks every child asleep in the room as woken by this wave, counts
 * them, and writes the shared eventfd once. Lines published while a wave
 * runs only raise a flag; the last child of the wave to catch up starts the
 * next one, for all of them at once. So a child is woken at most once for
 * any number of lines published while it runs. (forking/README.md draws it,
 * with what happens to a child killed or stopped in the middle of a wave.)
 *
 * A dead child's user is then made to depart by the parent, which finds it
 * by the member's owner (the child's slot) under the lock, so that the
 * child's own departure and the parent's can never both happen..
 *
 * With --redis (the room shared by several servers) the parent is the only
 * writer: it publishes what Redis gives back, in Redis's order, and the
 * children only read, as above, and take the lock only to list the names.
 * The room then holds every server's users, and each slot has a mailbox
 * through which the parent answers its child (a name granted or refused, a
 * line refused, how many of its lines are back, the room lost), woken by
 * the same wave. */
#ifndef CHAT_SHARED_ROOM_H
#define CHAT_SHARED_ROOM_H

#include "room.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct shared_room;

/* How long a wave may go without any child paying its part before anyone
 * may give it up and start the next one: a child stopped (SIGSTOP) while
 * the wave counts it would otherwise hold back every wake-up after it. */
#define WAVE_TIMEOUT_MILLISECONDS 250

/* Maps and prepares a room for max_clients members and children and a ring
 * of ring_capacity bytes, and the wake-ups; call it before the first fork.
 * Returns NULL (errno set) when it cannot. */
struct shared_room *shared_room_create(size_t max_clients,
                                       size_t ring_capacity);

/* The same for a room shared through Redis: a room of `members` (every
 * server's users), and a mailbox per slot (shared_room_post). */
struct shared_room *shared_room_create_cluster(size_t max_clients,
                                               size_t members,
                                               size_t ring_capacity);

/* Unmaps the room in this process (the memory goes with the last one). */
void shared_room_destroy(struct shared_room *shared);

/* Takes the lock, repairing the room first if the last owner died with it;
 * returns true when it did (shared_room_unlock logs the repair). */
bool shared_room_lock(struct shared_room *shared);

enum shared_room_locked {
  SHARED_ROOM_LOCKED,
  SHARED_ROOM_REPAIRED, /* locked, after a repair */
  SHARED_ROOM_BUSY,     /* not locked: its holder kept it `milliseconds` */
};
/* The same, waiting at most `milliseconds`: for the parent, which must go
 * on serving signals and newcomers when the holder is stopped. */
enum shared_room_locked shared_room_lock_within(struct shared_room *shared,
                                                int milliseconds);

/* Releases the lock; if the room changed, wakes the room (see the wave).
 * Logs the repair, if the lock needed one. */
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

/* Stages emptying the room (with --redis, when this server lost its
 * place in it), to commit by shared_room_publish. */
void shared_room_clear(struct shared_room *shared);

/* Appends a line (no longer than the ring's capacity) to the ring and
 * commits it, with the join, departure or emptying staged before it if any;
 * an empty line commits the staged change alone. */
void shared_room_publish(struct shared_room *shared, struct chat_text line);

/* ---- Without the lock: reading ---- */

/* The head as last published: every byte before it is committed. */
uint64_t shared_room_published(const struct shared_room *shared);

/* Copies the ring's bytes [from, from + length), from <= the published
 * head. Returns false when a writer may have overwritten some of them
 * before or while they were copied: the reader has lost its place. */
bool shared_room_copy(const struct shared_room *shared, uint64_t from,
                      char *out, size_t length);

/* ---- Without the lock: the wave ----
 *
 * Each child has a slot, given by the parent before the fork and taken
 * back after it is reaped. A child in the room watches the room's eventfd
 * (EPOLLIN | EPOLLET, never read) and, around every wait:
 *
 *   if (shared_room_may_sleep(shared, slot, seen)) {
 *     epoll_wait(...);
 *     shared_room_awake(shared, slot);
 *   }
 *
 * where `seen` is the published head it has copied or judged up to. */

/* The child joined the room (enter) or left it (leave). */
void shared_room_wave_enter(struct shared_room *shared, unsigned slot);
void shared_room_wave_leave(struct shared_room *shared, unsigned slot);

/* The child is about to wait: pays its part of the wave that woke it, if
 * one did. Returns false, and the child must not wait, when a line was
 * published after `seen`, or its mailbox holds something. */
bool shared_room_may_sleep(struct shared_room *shared, unsigned slot,
                           uint64_t seen);

/* The child woke up (for any reason). */
void shared_room_awake(struct shared_room *shared, unsigned slot);

/* A process that published while a wave ran has left its lines to the next
 * wave; if the wave in progress then stalls (a child it counts is stopped),
 * it must give it up itself. Returns how many milliseconds it may wait
 * before calling this again (-1: for ever: its lines are on their way),
 * giving the wave up and starting the next if nobody has paid it a part for
 * WAVE_TIMEOUT_MILLISECONDS. */
int shared_room_wave_alarm(struct shared_room *shared);

/* The parent, when a child has ended: lines it published before it ended
 * may wait for the next wave, and nobody else may be left to give the wave
 * in progress up if it stalls: this process takes that on (its alarm). */
void shared_room_wave_adopt(struct shared_room *shared);

/* The parent: the highest slot in use is below `high` (waves look at the
 * slots below it). */
void shared_room_slots_in_use(struct shared_room *shared, unsigned high);

/* The parent reaped the child of `slot`: its part of a wave is paid. If it
 * died (killed, crashed), the wave in progress is given up and the next one
 * started: it may have died in the middle of starting one, or between
 * catching up and paying its part. */
void shared_room_child_ended(struct shared_room *shared, unsigned slot,
                             bool died);

/* What the waves did since the start, for the log and the README's
 * figures: waves started, those that wrote the eventfd (the others found
 * nobody asleep), those given up, and the bytes of lines published. */
struct shared_room_waves {
  uint64_t started, signalled, given_up, bytes;
};
struct shared_room_waves
shared_room_wave_counts(const struct shared_room *shared);

/* ---- With --redis: the parent's word to its children ---- */

/* Whether the room can be reached now (the parent sets it as its link to
 * Redis comes and goes): a child answers `Room unavailable` at once when it
 * cannot. */
void shared_room_set_available(struct shared_room *shared, bool available);
bool shared_room_available(const struct shared_room *shared);

/* What a slot's mailbox holds: the answer to its name (ACCEPTED, with where
 * its arrival begins in the ring, TAKEN or UNAVAILABLE), that the room was
 * lost, that more of its lines are done (ECHOED: shared_room_lines_done
 * moved), and how many of its lines were refused (in units of REFUSED). */
enum {
  SHARED_MAIL_ACCEPTED = 1,
  SHARED_MAIL_TAKEN = 2,
  SHARED_MAIL_UNAVAILABLE = 3,
  SHARED_MAIL_ANSWER = 3, /* the answer's bits */
  SHARED_MAIL_LOST = 4,
  SHARED_MAIL_ECHOED = 8,
  SHARED_MAIL_REFUSED = 16,
};

/* The parent, with the lock held: posts one of the above to the slot's
 * child, which the unlock's wave wakes (a child that waits for mail watches
 * the room's eventfd, and shared_room_may_sleep looks at its mailbox). */
void shared_room_post(struct shared_room *shared, unsigned slot, unsigned mail,
                      uint64_t arrival);

/* The child: takes what its mailbox holds (0: nothing), and where its
 * arrival begins if the mail says ACCEPTED. */
unsigned shared_room_take_mail(struct shared_room *shared, unsigned slot,
                               uint64_t *arrival);

/* The parent, with the lock held: `count` more of the slot's lines are
 * done (back from Redis and published before this, refused, or lost with
 * the connection); posts ECHOED, which wakes the child as any mail does. */
void shared_room_post_done(struct shared_room *shared, unsigned slot,
                           uint64_t count);

/* The child: how many of its lines are done so far (its connection's
 * lines, counted from 0 when the slot was given to it). */
uint64_t shared_room_lines_done(const struct shared_room *shared,
                                unsigned slot);

/* The parent, before it gives a slot to a new child: an empty mailbox, no
 * line done. */
void shared_room_clear_mail(struct shared_room *shared, unsigned slot);

/* ---- Without the lock: stopping ---- */

/* The stop eventfd, written once at shutdown and watched by every child,
 * and the room's (see above). */
int shared_room_wake_fd(const struct shared_room *shared);
int shared_room_stop_fd(const struct shared_room *shared);

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
