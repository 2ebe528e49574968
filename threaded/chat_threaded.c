/* chat-threaded: the chat server with a thread per connection (POSIX
 * threads).
 *
 * The model: every connection gets a thread of its own, which runs its
 * session from top to bottom: sleep until its socket has input, read, carry
 * out each step. The kernel's scheduler does the multiplexing that an event
 * loop does by hand. The main thread accepts, starts the threads, joins
 * those that ended, and waits for SIGINT, SIGTERM or SIGHUP. The room is
 * shared by every thread, so it sits behind a lock.
 *
 * The locks, always taken in this order:
 * 1. server.room_lock: the room (names and members) and the list of
 *    clients whose threads ended. A broadcast holds it while it queues the
 *    line for every recipient, so every queue gets the room's events in one
 *    order (SPEC.md section 5).
 * 2. client->lock: one client's queue, its backlog, its state, and who
 *    writes to its socket. Taken alone or inside the room lock, never two
 *    at once.
 * No socket is read or written while a lock is held, so holding the room
 * lock costs a copy per recipient, whatever the recipients do; and nothing
 * is logged under a lock (the log never waits, but costs a system call).
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
 * 10,000 clients, the hard limit here). A SIGUSR1 sent from outside only
 * wakes a thread for nothing; SIGUSR2 is ignored.
 *
 * Its cost: a connection is a thread: a stack (76 KiB reserved, about
 * 20 KiB of it touched), a kernel task with a kernel stack, and a context
 * switch for each chunk of input it reads.
 *
 * Where it breaks: memory and limits grow with the threads (stacks, kernel
 * tasks, pid_max, RLIMIT_NPROC, vm.max_map_count); the one room lock
 * serialises every broadcast, and a sender's thread spends a send per
 * recipient. What it buys is the code: each session reads down one
 * function, as if it were the only one. */
#include "byte_buffer.h"
#include "clock.h"
#include "heap.h"
#include "line_framer.h"
#include "listener.h"
#include "log.h"
#include "options.h"
#include "policy.h"
#include "refuse.h"
#include "room.h"
#include "session.h"
#include "startup.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The timeouts and the accepting policy every model shares are in
 * policy.h. Bytes read from a socket at once, into the thread's stack:
 * less than policy.h's READ_CHUNK, as every thread has its own. */
#define THREAD_READ_CHUNK 4096
/* A client thread's stack, beyond its read chunk and its session scratch,
 * for its calls (framer, session, room, log, printf's family, malloc, a
 * signal frame): the deepest page they touch lies 20 KiB below the stack's
 * top, 24 KiB under ASan, scratch and read chunk included (README.md); the
 * rest is margin, and costs address space only. */
#define STACK_FOR_CALLS (64 * 1024)
/* What a sanitizer's runtime takes from the top of each stack: the build
 * sets it for ThreadSanitizer, which keeps about 900 KiB per thread in
 * static TLS. */
#ifndef STACK_FOR_SANITIZER
#define STACK_FOR_SANITIZER 0
#endif
/* Times a writer takes what was queued meanwhile before it lets go. */
#define WRITE_ROUNDS 4
/* The signal that ends a client thread's ppoll. */
#define WAKE_SIGNAL SIGUSR1

enum client_state {
  CLIENT_OPEN,    /* reading, and hearing the room */
  CLIENT_CLOSING, /* hears no more room lines; says its last ones, closes */
  CLIENT_DROPPED, /* closed at once: too slow, reset, or out of time */
};

struct client {
  pthread_t thread;               /* set by itself; read to wake or join it */
  void *stack;                    /* the thread's, from take_stack() */
  int fd;                         /* closed by the client's thread only */
  struct client *previous, *next; /* in server.clients */
  struct client *next_ended;      /* closed, its thread to be joined */
  long long login_deadline;       /* milliseconds, monotonic clock */
  struct line_framer framer;
  struct session session;
  struct session_context context; /* its scratch is on the thread's stack */
  struct peer_address peer;
  int member;        /* index in the room while registered */
  bool writing_self; /* the client's thread holds `writing` */

  /* Used by the thread that holds `writing`: */
  struct byte_buffer sending;   /* taken from `queued`, written unlocked */
  size_t sent;                  /* bytes of `sending` already written */
  struct client *next_to_write; /* sockets claimed in one broadcast */

  pthread_mutex_t lock;      /* guards the fields below */
  struct byte_buffer queued; /* added to by any thread, taken by the writer */
  size_t backlog;            /* queued, plus taken and not yet written */
  bool writing;              /* a thread has claimed the socket to write */
  bool sleeping;             /* the client's thread is going to sleep */
  enum client_state state;
  enum departure_cause cause; /* why it stopped being open */
};

/* A doubly linked list of every client. */
struct client_list {
  struct client *first, *last;
};

static struct server {
  struct chat_options options;
  pthread_mutex_t room_lock; /* the room, and the clients that ended */
  struct room *room;
  struct client *ended; /* closed clients whose threads are to be joined */
  sigset_t wake_mask;   /* the signal mask inside ppoll: WAKE_SIGNAL passes */
  struct session_context session; /* each thread copies it, with a scratch */
  /* The main thread's alone: */
  int listener;
  int signals;                /* SIGINT, SIGTERM and SIGHUP */
  int finished;               /* an eventfd: a client's thread has ended */
  struct client_list clients; /* every client whose thread is not joined */
  size_t connections;         /* how many */
  pthread_attr_t thread_attributes;
  size_t stack_size;
  void **free_stacks; /* the stacks of joined threads, to reuse */
  size_t free_stack_count;
  bool accept_paused;           /* the listener is out of the poll set */
  long long accept_retry;       /* when it goes back in, at the latest */
  bool accept_short;            /* out of descriptors since "accept paused" */
  unsigned long short_accepted; /* connections accepted meanwhile */
} server = {.room_lock = PTHREAD_MUTEX_INITIALIZER,
            .listener = -1,
            .signals = -1,
            .finished = -1};

/* ---- Lists ---------------------------------------------------------- */

static void list_append(struct client_list *list, struct client *client) {
  client->previous = list->last;
  client->next = NULL;
  if (list->last)
    list->last->next = client;
  else
    list->first = client;
  list->last = client;
}

static void list_remove(struct client_list *list, struct client *client) {
  if (client->previous)
    client->previous->next = client->next;
  else
    list->first = client->next;
  if (client->next)
    client->next->previous = client->previous;
  else
    list->last = client->previous;
  client->previous = client->next = NULL;
}

static struct timespec milliseconds(long long ms) {
  return (struct timespec){.tv_sec = ms / 1000,
                           .tv_nsec = (ms % 1000) * 1000000};
}

/* ---- Output --------------------------------------------------------- */

static void drop_client(struct client *client, enum departure_cause cause);

/* Under client->lock: ends the ppoll of the client's thread, if it said it
 * was going to sleep; only once. The thread cannot finish meanwhile: it
 * takes the lock before it does. */
static void wake(struct client *client) {
  if (client->sleeping)
    pthread_kill(client->thread, WAKE_SIGNAL);
  client->sleeping = false;
}

/* Queues bytes for one client, unless that would put more than
 * --max-backlog bytes in its queue: then it is dropped instead, and
 * nobody else waits for it. Room lines reach open clients only; a client's
 * own replies, its last lines included, reach it until it is dropped.
 * Returns true when the caller, queuing a room line, has claimed the socket
 * to write it: it does so once it has let go of the room lock. */
static bool queue_output(struct client *client, const char *bytes,
                         size_t length, bool room_line) {
  if (length == 0)
    return false;
  bool claimed = false;
  pthread_mutex_lock(&client->lock);
  if (client->state == CLIENT_OPEN ||
      (client->state == CLIENT_CLOSING && !room_line)) {
    if (client->backlog + length > server.options.max_backlog) {
      drop_client(client, DEPARTURE_SLOW);
    } else if (!byte_buffer_append(&client->queued, bytes, length)) {
      drop_client(client, DEPARTURE_ERROR); /* out of memory */
    } else {
      client->backlog += length;
      claimed = room_line && !client->writing;
      if (claimed)
        client->writing = true;
    }
  }
  pthread_mutex_unlock(&client->lock);
  return claimed;
}

/* The room's delivery interface: a room line to one member. The line was
 * formatted once; each recipient gets a copy of its bytes in its queue.
 * Sockets claimed here go on the broadcasting thread's list (the context),
 * to be written once it has let go of the room lock. */
static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  struct client **to_write = context;
  struct client *client = (struct client *)owner;
  if (queue_output(client, line.bytes, line.length, true)) {
    client->next_to_write = *to_write;
    *to_write = client;
  }
}

static void write_to_client(void *context, const char *bytes, size_t length) {
  queue_output(context, bytes, length, false);
}

enum write_result {
  WRITE_DONE,    /* all it took was written (more may have come since) */
  WRITE_BLOCKED, /* the socket is full */
  WRITE_BROKEN,  /* the connection is gone */
};

/* Writes what is queued for a client, as far as its socket takes it
 * without waiting: the queue is taken whole under the lock and written
 * outside it. The caller holds client->writing. */
static enum write_result write_queued(struct client *client) {
  for (int round = 0; round < WRITE_ROUNDS; round++) {
    if (client->sent == client->sending.length) {
      byte_buffer_release(&client->sending); /* an idle client holds none */
      pthread_mutex_lock(&client->lock);
      client->sending = client->queued;
      client->queued = (struct byte_buffer){0};
      pthread_mutex_unlock(&client->lock);
      client->sent = 0;
      if (client->sending.length == 0)
        return WRITE_DONE;
    }
    while (client->sent < client->sending.length) {
      ssize_t sent = send(client->fd, client->sending.bytes + client->sent,
                          client->sending.length - client->sent,
                          MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent <= 0)
        return sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                            errno == EINTR)
                   ? WRITE_BLOCKED
                   : WRITE_BROKEN;
      client->sent += (size_t)sent;
      pthread_mutex_lock(&client->lock);
      client->backlog -= (size_t)sent;
      pthread_mutex_unlock(&client->lock);
    }
  }
  return WRITE_DONE;
}

/* Lets go of a socket claimed in a broadcast. What is left to write (the
 * socket was full, or was lost) is for the client's own thread: it is
 * woken, as it is when it must stop. After this, the client may be gone. */
static void let_go(struct client *client) {
  pthread_mutex_lock(&client->lock);
  client->writing = false;
  if (client->backlog > 0 || client->state != CLIENT_OPEN)
    wake(client);
  pthread_mutex_unlock(&client->lock);
}

/* After a broadcast, out of the room lock: writes to every socket it
 * claimed, and lets each go. */
static void write_claimed(struct client *to_write) {
  while (to_write) {
    struct client *client = to_write;
    to_write = client->next_to_write; /* before let_go: it may be freed */
    write_queued(client);
    let_go(client);
  }
}

/* ---- Closing -------------------------------------------------------- */

/* Under client->lock. A client stops being open once, for the first cause
 * found; dropping it also cuts short a closing client's last lines. Returns
 * whether it was open. */
static bool set_state(struct client *client, enum client_state state,
                      enum departure_cause cause) {
  bool was_open = client->state == CLIENT_OPEN;
  if (was_open)
    client->cause = cause;
  if (was_open || state == CLIENT_DROPPED)
    client->state = state;
  return was_open;
}

/* Stops a client and wakes its thread, which then departs and closes. The
 * caller is that thread, or a broadcast holding the room lock with the
 * client in the room, or the main thread, which alone frees clients.
 * Returns whether the client was open: then `cause` is why it leaves. */
static bool stop_client(struct client *client, enum client_state state,
                        enum departure_cause cause) {
  pthread_mutex_lock(&client->lock);
  bool was_open = set_state(client, state, cause);
  wake(client);
  pthread_mutex_unlock(&client->lock);
  return was_open;
}

/* Under client->lock: a client too slow, or that memory ran out for.
 * Dropping only marks the client, because one dropped in the middle of a
 * broadcast must not hear of its own departure before the others have had
 * the line being broadcast: its thread departs (and logs why) when it
 * wakes, once the broadcast has let go of the room lock. */
static void drop_client(struct client *client, enum departure_cause cause) {
  set_state(client, CLIENT_DROPPED, cause);
  wake(client);
}

/* The thread's last act, once its client is no longer open (so no
 * broadcast claims its socket any more). It waits for a broadcast still
 * writing to the socket, closes it, takes the client out of the room
 * (silently, at shutdown), so that no other client's thread can reach it,
 * and hands it to the main thread, which joins the thread and frees the
 * record: only the main thread frees clients. */
static void client_close(struct client *client) {
  pthread_mutex_lock(&client->lock);
  if (client->writing_self)
    client->writing = false;
  while (client->writing) { /* let_go() wakes us */
    client->sleeping = true;
    pthread_mutex_unlock(&client->lock);
    ppoll(NULL, 0, NULL, &server.wake_mask);
    pthread_mutex_lock(&client->lock);
  }
  client->sleeping = false;
  pthread_mutex_unlock(&client->lock);
  close(client->fd);
  line_framer_release(&client->framer);
  byte_buffer_release(&client->sending);
  byte_buffer_release(&client->queued);
  pthread_mutex_lock(&server.room_lock);
  if (client->member >= 0)
    room_leave(server.room, client->member);
  client->next_ended = server.ended;
  server.ended = client;
  pthread_mutex_unlock(&server.room_lock);
  eventfd_write(server.finished, 1);
}

/* A stack for a new client's thread: one a joined thread left, or a new
 * mapping with a guard page below it. Stacks are never unmapped: with
 * stacks of its own, glibc would give their unused pages back (madvise)
 * as each thread ends and unmap those beyond a 40 MiB cache as each is
 * joined, each time a TLB shootdown across the cores; that made ending
 * 2,000 threads take 0.5 s instead of 0.04 s here (README.md). */
static void *take_stack(void) {
  if (server.free_stack_count > 0)
    return server.free_stacks[--server.free_stack_count];
  size_t guard = (size_t)sysconf(_SC_PAGESIZE);
  char *memory = mmap(NULL, guard + server.stack_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (memory == MAP_FAILED)
    return NULL;
  if (mprotect(memory, guard, PROT_NONE) < 0) { /* no stack without guard */
    munmap(memory, guard + server.stack_size);
    return NULL;
  }
  return memory + guard;
}

static void give_back_stack(void *stack) {
  server.free_stacks[server.free_stack_count++] = stack;
}

/* Joins the threads of the clients that ended and frees their records: no
 * thread outlives its client, nor the server. At most --max-clients stacks
 * are ever taken, so free_stacks has room for them all. */
static void reap_ended(void) {
  pthread_mutex_lock(&server.room_lock);
  struct client *client = server.ended;
  server.ended = NULL;
  pthread_mutex_unlock(&server.room_lock);
  while (client) {
    struct client *next = client->next_ended;
    pthread_join(client->thread, NULL);
    list_remove(&server.clients, client);
    server.connections--;
    give_back_stack(client->stack);
    pthread_mutex_destroy(&client->lock);
    free(client);
    client = next;
  }
}

/* A registered user leaves the room: everyone else is told, once. */
static void depart(struct client *client, enum departure_cause cause) {
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  struct session_step step = session_end(&client->session, &client->context);
  if (step.room == SESSION_ROOM_LEAVE) {
    struct client *to_write = NULL;
    pthread_mutex_lock(&server.room_lock);
    room_leave(server.room, client->member);
    client->member = -1;
    room_broadcast(server.room, step.room_line, deliver, &to_write);
    pthread_mutex_unlock(&server.room_lock);
    write_claimed(to_write);
  }
}

/* ---- The session's steps ---------------------------------------------- */

static void act_on_room(struct client *client, struct session_step step,
                        struct client **to_write);

/* Under the room lock, which stays held from the name's registration to
 * the end of its arrival's broadcast. */
static void join_room(struct client *client, struct chat_text name,
                      struct client **to_write) {
  const char *stored = NULL;
  int member = room_join(server.room, name, (uintptr_t)client, &stored);
  if (member >= 0)
    client->member = member;
  struct session_step step =
      session_joined(&client->session, &client->context, name, stored);
  queue_output(client, step.reply.bytes, step.reply.length, false);
  act_on_room(client, step, to_write);
}

/* Under the room lock: what a step asks of the room. */
static void act_on_room(struct client *client, struct session_step step,
                        struct client **to_write) {
  switch (step.room) {
  case SESSION_ROOM_NONE:
    break;
  case SESSION_ROOM_JOIN:
    join_room(client, step.name, to_write);
    break;
  case SESSION_ROOM_SAY:
    room_broadcast(server.room, step.room_line, deliver, to_write);
    break;
  case SESSION_ROOM_NAMES:
    room_names(server.room, write_to_client, client);
    break;
  case SESSION_ROOM_LEAVE: /* only session_end asks for it: see depart() */
    break;
  }
}

static bool is_open(struct client *client) {
  pthread_mutex_lock(&client->lock);
  bool open = client->state == CLIENT_OPEN;
  pthread_mutex_unlock(&client->lock);
  return open;
}

/* Carries out one step of the session logic: the room's part under the
 * room lock, then the writing and the log line. Returns false when the
 * client stops reading (it said QUIT, or was dropped). */
static bool carry_out(struct client *client, struct session_step step) {
  queue_output(client, step.reply.bytes, step.reply.length, false);
  if (step.room != SESSION_ROOM_NONE) {
    struct client *to_write = NULL;
    pthread_mutex_lock(&server.room_lock);
    act_on_room(client, step, &to_write);
    pthread_mutex_unlock(&server.room_lock);
    write_claimed(to_write);
  }
  if (step.room == SESSION_ROOM_JOIN && session_is_registered(&client->session))
    log_registered(&client->peer, client->session.name,
                   client->session.name_length);
  if (step.close)
    stop_client(client, CLIENT_CLOSING, DEPARTURE_QUIT);
  return is_open(client);
}

static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  return carry_out(client,
                   session_on_frame(&client->session, &client->context, frame));
}

/* ---- The client's thread ------------------------------------------------ */

static long long login_deadline(const struct client *client);
static void on_login_timeout(struct client *client);

/* The client's thread writes what is queued for its socket, unless a
 * broadcast is writing to it (which wakes us if it leaves anything). While
 * the socket is full, the thread keeps its claim and waits for room. */
static enum write_result write_own(struct client *client) {
  if (!client->writing_self) {
    pthread_mutex_lock(&client->lock);
    client->writing_self = !client->writing && client->backlog > 0;
    if (client->writing_self)
      client->writing = true;
    pthread_mutex_unlock(&client->lock);
    if (!client->writing_self)
      return WRITE_DONE;
  }
  enum write_result result = write_queued(client);
  if (result == WRITE_DONE) {
    pthread_mutex_lock(&client->lock);
    client->writing = client->writing_self = false;
    pthread_mutex_unlock(&client->lock);
  }
  return result;
}

/* Sleeps until the socket is ready for `events`, the deadline passes (0:
 * none) or another thread wakes us; does not sleep when there is something
 * to write that nobody is writing, or the state is no longer `state`.
 * WAKE_SIGNAL gets through only inside this ppoll: sent earlier, it stays
 * pending and ends the ppoll at once, so no wake-up is lost between our
 * last look and the sleep. Returns the socket's ready events (0: woken, or
 * out of time). */
static short wait_for_socket(struct client *client, short events,
                             enum client_state state, long long deadline) {
  if (client->writing_self) /* the socket was full */
    events |= POLLOUT;
  pthread_mutex_lock(&client->lock);
  bool busy =
      client->state != state || (!client->writing && client->backlog > 0);
  client->sleeping = !busy;
  pthread_mutex_unlock(&client->lock);
  struct timespec timeout = {0, 0}; /* busy: only a look at the socket */
  if (!busy && deadline > 0) {
    long long left = deadline - now_milliseconds();
    timeout = milliseconds(left > 0 ? left : 0);
  }
  struct pollfd watched = {.fd = client->fd, .events = events};
  int ready = ppoll(&watched, 1, busy || deadline > 0 ? &timeout : NULL,
                    &server.wake_mask);
  if (!busy) {
    pthread_mutex_lock(&client->lock);
    client->sleeping = false;
    pthread_mutex_unlock(&client->lock);
  }
  return ready > 0 ? watched.revents : 0;
}

static void read_input(struct client *client) {
  char input[THREAD_READ_CHUNK];
  ssize_t length = recv(client->fd, input, sizeof input, MSG_DONTWAIT);
  if (length > 0) {
    if (line_framer_push(&client->framer, input, (size_t)length, on_frame,
                         client) == FRAMER_NO_MEMORY)
      stop_client(client, CLIENT_DROPPED, DEPARTURE_ERROR);
  } else if (length == 0) {
    /* End of input, maybe only a half-close: every complete line was
     * already handled; answer what is pending, then close. */
    stop_client(client, CLIENT_CLOSING, DEPARTURE_CLOSED);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED); /* reset */
  }
}

/* An open client's turn: write what is left to it, sleep until there is
 * something to do, read. Returns false once the client is no longer open. */
static bool serve(struct client *client) {
  if (write_own(client) == WRITE_BROKEN) { /* reset: nothing more to say */
    stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED);
    return false;
  }
  short ready =
      wait_for_socket(client, POLLIN, CLIENT_OPEN, login_deadline(client));
  if ((ready & (POLLIN | POLLHUP | POLLERR)) && is_open(client))
    read_input(client);
  long long deadline = login_deadline(client);
  if (deadline > 0 && now_milliseconds() >= deadline)
    on_login_timeout(client);
  return is_open(client);
}

/* A closing client's turn: write its last lines. Returns false once they
 * are all written, or it was dropped, or time is up. */
static bool finish(struct client *client, long long deadline) {
  if (write_own(client) == WRITE_BROKEN)
    return false;
  pthread_mutex_lock(&client->lock);
  bool done = client->state == CLIENT_DROPPED || client->backlog == 0;
  pthread_mutex_unlock(&client->lock);
  if (done || now_milliseconds() >= deadline)
    return false;
  wait_for_socket(client, 0, CLIENT_CLOSING, deadline);
  return true;
}

/* A client's thread: its whole session, top to bottom. */
static void *client_thread(void *arg) {
  struct client *client = arg;
  /* The session formats its steps here, on this thread's stack, which
   * set_up_threads() sized for it. */
  char scratch[server.session.scratch_size];
  client->thread = pthread_self();
  client->context = server.session;
  client->context.scratch = scratch;

  carry_out(client, session_start(&client->session, &client->context));
  while (serve(client))
    ;
  /* No longer open; client->cause was set once, when it stopped. */
  if (client->cause == DEPARTURE_SHUTDOWN) { /* nobody is told */
    carry_out(client, session_shutdown(&client->session));
  } else {
    depart(client, client->cause);
  }
  long long deadline = now_milliseconds() + FLUSH_TIMEOUT_MILLISECONDS;
  while (finish(client, deadline))
    ;
  client_close(client);
  return NULL;
}

/* ---- Accepting ------------------------------------------------------ */

static void on_accept(int fd, const struct sockaddr *address) {
  struct peer_address peer = peer_address_from(address);
  if (server.connections >= server.options.max_clients) {
    refuse_full(fd, &peer);
    return;
  }
  struct client *client = calloc(1, sizeof *client);
  void *stack = client ? take_stack() : NULL;
  if (!stack) { /* the client can only try again later */
    free(client);
    refuse(fd, &peer, "out of memory");
    return;
  }
  listener_send_at_once(fd);
  client->stack = stack;
  client->fd = fd;
  client->peer = peer;
  client->member = -1;
  pthread_mutex_init(&client->lock, NULL);
  line_framer_init(&client->framer, server.options.max_line);
  if (server.options.login_timeout > 0)
    client->login_deadline =
        now_milliseconds() + server.options.login_timeout * 1000LL;
  log_accepted(&peer);
  list_append(&server.clients, client);
  server.connections++;
  pthread_attr_setstack(&server.thread_attributes, stack, server.stack_size);
  pthread_t thread; /* the thread keeps its own id in client->thread */
  int error =
      pthread_create(&thread, &server.thread_attributes, client_thread, client);
  if (error != 0) { /* out of threads: told so, as if it never came */
    list_remove(&server.clients, client);
    server.connections--;
    give_back_stack(stack);
    pthread_mutex_destroy(&client->lock);
    free(client);
    char reason[128];
    snprintf(reason, sizeof reason, "cannot start a thread: %s",
             strerror(error));
    refuse(fd, &peer, reason);
  }
}

/* accept() failed. Out of descriptors (or memory), the listener would be
 * ready again at once and the main thread would spin: accepting pauses
 * until a client's thread ends (which frees a descriptor), or for
 * ACCEPT_RETRY_MILLISECONDS at most. The log says so once, when the
 * server first runs short, not at every retry. */
static void on_accept_error(int error) {
  if (error == EAGAIN || error == EWOULDBLOCK) { /* nobody is waiting */
    if (server.accept_short)
      log_line("accept resumed: %lu connection%s accepted while short of "
               "descriptors or memory",
               server.short_accepted, server.short_accepted == 1 ? "" : "s");
    server.accept_short = false;
    return;
  }
  if (accept_error_is_transient(error))
    return;
  if (!accept_error_is_exhaustion(error)) {
    log_line("accept failed: %s", strerror(error));
    return;
  }
  if (!server.accept_short) {
    log_line("accept paused: %s; clients wait until one leaves",
             strerror(error));
    server.accept_short = true;
    server.short_accepted = 0;
  }
  server.accept_paused = true;
  server.accept_retry = now_milliseconds() + ACCEPT_RETRY_MILLISECONDS;
}

/* Accepts the connections waiting, a batch at a time, so that the main
 * thread soon looks for signals again. */
static void accept_waiting(void) {
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4(server.listener, (struct sockaddr *)&address, &length,
                     SOCK_CLOEXEC);
    if (fd < 0) {
      on_accept_error(errno);
      return;
    }
    if (server.accept_short)
      server.short_accepted++;
    on_accept(fd, (struct sockaddr *)&address);
  }
}

/* ---- Timers --------------------------------------------------------- */

/* There is none to schedule: each thread sleeps with its own deadline (the
 * login timeout, then the flush of its last lines), counted from the
 * connection, so failed attempts at a name do not restart the clock. */

static long long login_deadline(const struct client *client) {
  if (server.options.login_timeout == 0 ||
      session_is_registered(&client->session))
    return 0;
  return client->login_deadline;
}

static void on_login_timeout(struct client *client) {
  if (stop_client(client, CLIENT_CLOSING, DEPARTURE_TIMEOUT))
    carry_out(client, session_timed_out(&client->session));
}

/* ---- Shutdown ------------------------------------------------------- */

/* Stops every client whose thread is not joined yet (the main thread
 * alone frees clients, so all of them are still there). */
static void stop_all(enum client_state state) {
  for (struct client *client = server.clients.first; client;
       client = client->next)
    stop_client(client, state, DEPARTURE_SHUTDOWN);
}

/* SIGINT, SIGTERM or SIGHUP: stop accepting, tell every client's thread to
 * say goodbye and close, give the goodbyes a moment to drain, then drop the
 * clients that could not take theirs; return once every thread is joined. */
static void shut_down(int signal_number) {
  log_shutting_down(signal_number, server.connections);
  long long grace = now_milliseconds() + SHUTDOWN_GRACE_MILLISECONDS;
  stop_all(CLIENT_CLOSING);
  while (server.clients.first) {
    long long left = grace - now_milliseconds();
    if (left <= 0 && grace > 0) { /* out of time: no more last lines */
      stop_all(CLIENT_DROPPED);
      grace = 0;
    }
    struct pollfd finished = {.fd = server.finished, .events = POLLIN};
    eventfd_t count;
    if (poll(&finished, 1, grace > 0 ? (int)left : -1) > 0)
      eventfd_read(server.finished, &count);
    reap_ended();
  }
}

/* ---- Setup, loop, teardown ---------------------------------------------- */

static void on_wake(int signal_number) {
  (void)signal_number; /* it only has to end a ppoll */
}

/* SIGINT, SIGTERM and SIGHUP (each a graceful stop) are blocked in every
 * thread and read from a signalfd by the main thread; WAKE_SIGNAL is
 * blocked too, except inside a client's ppoll, where its handler does
 * nothing: sent from outside, it only wakes a thread for nothing. SIGUSR2
 * is ignored, so that neither user signal kills the server. Threads
 * inherit the mask: this comes before the first one. */
static bool set_up_signals(void) {
  struct sigaction wake = {.sa_handler = on_wake};
  sigemptyset(&wake.sa_mask);
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGHUP);
  sigaddset(&blocked, WAKE_SIGNAL);
  if (sigaction(WAKE_SIGNAL, &wake, NULL) < 0 ||
      signal(SIGUSR2, SIG_IGN) == SIG_ERR ||
      pthread_sigmask(SIG_BLOCK, &blocked, &server.wake_mask) != 0)
    return false;
  sigaddset(&server.wake_mask, SIGINT);
  sigaddset(&server.wake_mask, SIGTERM);
  sigaddset(&server.wake_mask, SIGHUP);
  sigdelset(&server.wake_mask, WAKE_SIGNAL);
  sigdelset(&blocked, WAKE_SIGNAL);
  server.signals = signalfd(-1, &blocked, SFD_CLOEXEC);
  return server.signals >= 0;
}

/* A client thread's stack holds its session scratch (the longest line plus
 * a little), its read chunk and its calls: sized for them, it is 76 KiB
 * with the default --max-line, where glibc's default is RLIMIT_STACK
 * (8 MiB here). README.md measures the difference; build with
 * -DCHAT_DEFAULT_STACK to see it. */
static bool set_up_threads(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t stack = STACK_FOR_CALLS + THREAD_READ_CHUNK +
                 server.session.scratch_size + STACK_FOR_SANITIZER;
  server.stack_size = (stack + page - 1) / page * page;
#ifdef CHAT_DEFAULT_STACK
  server.stack_size = 8 << 20; /* glibc's default here: RLIMIT_STACK */
#endif
  server.free_stacks = calloc(server.options.max_clients, sizeof(void *));
  return server.free_stacks &&
         pthread_attr_init(&server.thread_attributes) == 0;
}

/* The main thread's loop: accept connections and join ended threads until
 * SIGINT, SIGTERM or SIGHUP, which it returns. While accepting is paused,
 * the listener is left out of the poll set, until the retry time comes or
 * a client's thread ends (it closed its descriptor first), whichever is
 * first: then the waiting connections are accepted at once. (Threads
 * ending within any retry delay must not keep the listener out.) */
static int accept_until_signal(void) {
  struct pollfd watched[3] = {{.fd = server.signals, .events = POLLIN},
                              {.fd = server.finished, .events = POLLIN},
                              {.fd = server.listener, .events = POLLIN}};
  for (;;) {
    int timeout = -1;
    if (server.accept_paused) {
      long long left = server.accept_retry - now_milliseconds();
      timeout = left > 0 ? (int)left : 0;
    }
    watched[2].fd = server.accept_paused ? -1 : server.listener;
    watched[2].revents = 0;
    /* heap.h: the main thread sees connections come and go (their
     * records, their buffers, the storm of arrivals each one sets off);
     * a second after the last, freed heap goes back. */
    int ready = poll(watched, 3, heap_wait(timeout));
    if (ready > 0)
      heap_note_busy();
    if (ready < 0)
      continue; /* EINTR */
    if (server.accept_paused && now_milliseconds() >= server.accept_retry)
      server.accept_paused = false;
    struct signalfd_siginfo received;
    if ((watched[0].revents & POLLIN) &&
        read(server.signals, &received, sizeof received) == sizeof received)
      return (int)received.ssi_signo;
    eventfd_t count;
    bool freed = (watched[1].revents & POLLIN) &&
                 eventfd_read(server.finished, &count) == 0;
    if (freed)
      reap_ended();
    if ((watched[2].revents & POLLIN) || (freed && server.accept_short)) {
      server.accept_paused = false; /* a descriptor is free: try at once */
      accept_waiting();
    }
  }
}

static void free_everything(void) {
  /* No client is left: shut_down() joined every thread. */
  if (server.listener >= 0)
    close(server.listener);
  if (server.signals >= 0)
    close(server.signals);
  if (server.finished >= 0)
    close(server.finished);
  pthread_attr_destroy(&server.thread_attributes);
  free(server.free_stacks); /* the stacks themselves go with the process */
  free(server.room);
}

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  server.listener = startup_listen(&server.options, argc, argv, &port, &status);
  if (server.listener < 0)
    return status;
  server.session = (struct session_context){
      .room_name = server.options.room_name,
      .max_line = server.options.max_line,
      .scratch = NULL, /* each thread has its own, on its stack */
      .scratch_size = session_scratch_size(server.options.max_line),
  };
  void *room_memory = calloc(1, room_size(server.options.max_clients));
  server.room =
      room_memory ? room_init(room_memory, server.options.max_clients) : NULL;
  bool threads_ready = set_up_threads();
  server.finished = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!server.room || !threads_ready || server.finished < 0 ||
      !set_up_signals()) {
    fprintf(stderr, "chat-threaded: cannot set up: out of memory or "
                    "descriptors\n");
    free_everything();
    return 1;
  }

  options_print_startup(&server.options, port, stdout);
  log_line("%s running on port %u: chat-threaded, a thread per connection "
           "(%zu KiB stacks)",
           server.options.room_name, port, server.stack_size / 1024);

  shut_down(accept_until_signal());

  free_everything();
  log_line("stopped");
  return 0;
}
