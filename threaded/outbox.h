/* chat-threaded's outbox: how bytes reach a client's socket, and how a
 * client's thread is woken.
 *
 * Writing: one thread at a time writes to a socket, the one that claimed it
 * (client->writing), and always from the socket's queue, so bytes go out in
 * queue order. A broadcast claims the recipients' sockets that nobody is
 * writing to, and once it has let go of the room lock writes to them
 * itself, without waiting: a message costs one send per recipient, not a
 * context switch. Bytes a socket cannot take stay queued for the client's
 * own thread, which waits until the socket has room; a client that stops
 * reading only fills its own queue, and is dropped past --max-backlog.
 *
 * The wake-up: a client's thread sleeps in ppoll() on its socket. It must
 * be woken when another thread left its socket full, and when it must stop.
 * WAKE_SIGNAL (SIGUSR1) is blocked in every thread except inside that
 * ppoll; whoever finds, under the client's lock, that its thread said it is
 * going to sleep sends it WAKE_SIGNAL, once. A signal sent just before the
 * ppoll stays pending and ends it at once: none is lost. It costs no file
 * descriptor, where an eventfd per client would double them (20,000 for
 * 10,000 clients). A SIGUSR1 sent from outside only wakes a thread for
 * nothing. */
#ifndef CHAT_THREADED_OUTBOX_H
#define CHAT_THREADED_OUTBOX_H

#include "client.h"
#include "protocol.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The signal that ends a client thread's ppoll. */
#define WAKE_SIGNAL SIGUSR1

enum write_result {
  WRITE_DONE,    /* all it took was written (more may have come since) */
  WRITE_BLOCKED, /* the socket is full */
  WRITE_BROKEN,  /* the connection is gone */
};

/* Before the first thread starts (threads inherit the mask): blocks
 * `stop_signals` and WAKE_SIGNAL in the calling thread, and lets
 * WAKE_SIGNAL through, and only it, inside outbox_wait(); a queue holds at
 * most `max_backlog` bytes. Returns false if a system call failed. */
bool outbox_init(size_t max_backlog, const sigset_t *stop_signals);

/* Queues bytes for one client, unless that would put more than
 * --max-backlog bytes in its queue: then it is dropped instead, and
 * nobody else waits for it. Room lines reach open clients only; a client's
 * own replies, its last lines included, reach it until it is dropped.
 * Returns true when the caller, queuing a room line, has claimed the socket
 * to write it: it does so once it has let go of the room lock. */
bool queue_output(struct client *client, const char *bytes, size_t length,
                  bool room_line);

/* The room's delivery interface (room_broadcast), under the room lock: a
 * room line to one member. The line was formatted once; each recipient
 * gets a copy of its bytes in its queue. Sockets claimed here go on the
 * list `context` points to, for outbox_write_claimed(). A member with no
 * client (owner 0: with --redis, a user of another server) is skipped. */
void outbox_deliver(void *context, uintptr_t owner, struct chat_text line);

/* After a broadcast, out of the room lock: writes to every socket it
 * claimed, and lets each go. A client whose socket was left full is woken
 * to write the rest itself. */
void outbox_write_claimed(struct client *to_write);

/* The client's thread writes what is queued for its socket, unless a
 * broadcast is writing to it (which wakes it if it leaves anything). While
 * the socket is full, the thread keeps its claim and waits for room. */
enum write_result outbox_write_own(struct client *client);

/* Under client->lock: ends the ppoll of the client's thread, if it said it
 * was going to sleep; only once. The thread cannot finish meanwhile: it
 * takes the lock before it does. */
void outbox_wake_locked(struct client *client);

/* The client's thread sleeps until its socket is ready for `events`, the
 * deadline passes (0: none) or another thread wakes it; it does not sleep
 * when there is something to write that nobody is writing, or the state is
 * no longer `state`. Returns the socket's ready events (0: woken, or out of
 * time). */
short outbox_wait(struct client *client, short events, enum client_state state,
                  long long deadline);

/* The client's thread, once its client is no longer open (so no broadcast
 * claims its socket any more), gives up its claim and waits for a
 * broadcast still writing to the socket: after this, nobody writes to it. */
void outbox_stop_writing(struct client *client);

#endif
