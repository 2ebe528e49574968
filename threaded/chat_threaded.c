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
 *    order (docs/PROTOCOL.md section 5).
 * 2. client->lock: one client's queue, its backlog, its state, and who
 *    writes to its socket. Taken alone or inside the room lock, never two
 *    at once.
 * No socket is read or written while a lock is held, so holding the room
 * lock costs a copy per recipient, whatever the recipients do; and nothing
 * is logged under a lock (the log never waits, but costs a system call).
 *
 * Writing and waking (outbox.h): one thread at a time writes to a
 * socket, from the socket's queue; a broadcast writes to the recipients'
 * sockets itself once it has let go of the room lock, and what a socket
 * cannot take waits for the client's own thread, which a signal wakes from
 * its ppoll. The threads' stacks come from a pool (stack_pool.h).
 *
 * One room across servers (--redis, docs/PROTOCOL.md section 7): one more
 * thread, the bridge (bridge.h), owns the link to Redis; no client's
 * thread ever speaks to Redis. A line said or a name released is a request
 * handed to the bridge, and the sender goes on at once. A name asked for
 * is one too, and the client's thread waits for the answer, reading
 * nothing more meanwhile; so does an answer to the sender alone (a reply,
 * NAMES, a goodbye) until the sender's own lines are back from Redis,
 * which a room of one server gives first by itself. Every room line comes
 * back from Redis, this server's own users' included (everyone on every
 * server sees Redis's one order), and the bridge hands it to the room as a
 * sender's thread does without Redis: under the room lock, through the
 * outbox. The room then holds the users of every server; those of other
 * servers have no client here (owner 0), and deliveries skip them. Redis
 * lost for good: the bridge stops this server's users the way shutdown
 * stops every client.
 *
 * Its cost: a connection is a thread: a stack (76 KiB reserved, about
 * 20 KiB of it touched), a kernel task with a kernel stack, and a context
 * switch for each chunk of input it reads. With --redis, one thread and
 * two Redis connections more per server, a copy of each line said into
 * the bridge's queue, and two context switches for each name asked for and
 * each answer that waits for the sender's lines.
 *
 * Where it breaks: memory and limits grow with the threads (stacks, kernel
 * tasks, pid_max, RLIMIT_NPROC, vm.max_map_count); the one room lock
 * serialises every broadcast, and a sender's thread spends a send per
 * recipient. With --redis the bridge's one thread spends that send per
 * recipient for every line of every server: it, not the senders, bounds
 * the server's deliveries. What it buys is the code: each session reads
 * down one function, as if it were the only one. */
#include "bridge.h"
#include "client.h"
#include "cluster.h"
#include "options.h"
#include "os/clock.h"
#include "os/heap.h"
#include "os/listener.h"
#include "os/log.h"
#include "os/policy.h"
#include "os/redis_room.h"
#include "os/refuse.h"
#include "os/startup.h"
#include "outbox.h"
#include "room.h"
#include "session.h"
#include "stack_pool.h"
#include "step.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* The timeouts and the accepting policy every model shares are in
 * os/policy.h. Bytes read from a socket at once, into the thread's stack:
 * less than policy.h's READ_CHUNK, as every thread has its own. */
#define THREAD_READ_CHUNK 4096
/* A client thread's stack, beyond its read chunk and its session scratch,
 * for its calls (framer, session, room, log, printf's family, malloc, a
 * signal frame): README.md measures the deepest page they touch; the rest
 * is margin, and costs address space only. */
#define STACK_FOR_CALLS (64 * 1024)
/* What a sanitizer's runtime takes from the top of each stack: the build
 * sets it for ThreadSanitizer, which keeps about 900 KiB per thread in
 * static TLS. */
#ifndef STACK_FOR_SANITIZER
#define STACK_FOR_SANITIZER 0
#endif

/* A doubly linked list of every client. */
struct client_list {
  struct client *first, *last;
};

static struct server {
  struct chat_options options;
  pthread_mutex_t room_lock; /* the room, and the clients that ended */
  struct room *room;         /* with --redis, every server's users */
  struct client *ended;      /* closed clients whose threads are to be joined */
  struct bridge *bridge;     /* with --redis: the link to Redis; NULL without */
  struct client *bridge_to_write; /* sockets the bridge claimed (its own) */
  struct session_context session; /* each thread copies it, with a scratch */
  /* The main thread's alone: */
  int listener;
  int signals;                /* SIGINT, SIGTERM and SIGHUP */
  int finished;               /* an eventfd: a client's thread has ended */
  struct client_list clients; /* every client whose thread is not joined */
  size_t connections;         /* how many */
  pthread_attr_t thread_attributes;
  struct stack_pool stacks;
  bool accept_paused;           /* the listener is out of the poll set */
  long long accept_retry;       /* when it goes back in, at the latest */
  bool accept_short;            /* out of descriptors since "accept paused" */
  unsigned long short_accepted; /* connections accepted meanwhile */
} server = {.room_lock = PTHREAD_MUTEX_INITIALIZER,
            .listener = -1,
            .signals = -1,
            .finished = -1};

/* The story below, in the order a connection lives; the helpers after it. */
static int accept_until_signal(void);
static void accept_waiting(void);
static void on_accept(int fd, const struct sockaddr *address);
static void on_accept_error(int error);
static void *serve(void *arg);
static bool serve_turn(struct client *client);
static void read_input(struct client *client);
static bool on_frame(void *context, const struct frame *frame);
static void await_join(struct client *client);
static void await_echo(struct client *client);
static const char *await_answer(struct client *client);
static void depart(struct client *client, enum departure_cause cause);
static void close_after_flush(struct client *client);
static bool flush_last_lines(struct client *client, long long deadline);
static void close_client(struct client *client);
static void reap_ended(void);
static void shut_down(int signal_number);
static void stop_all(enum client_state state);

static void carry_out(struct client *client, struct session_step step);
static void carry_out_answer(struct client *client, const char *stored);
static bool is_open(struct client *client);
static bool stop_client(struct client *client, enum client_state state,
                        enum departure_cause cause);
static bool set_state_locked(struct client *client, enum client_state state,
                             enum departure_cause cause);
static long long login_deadline(const struct client *client);
static void on_login_timeout(struct client *client);
static void list_append(struct client_list *list, struct client *client);
static void list_remove(struct client_list *list, struct client *client);
static const char *set_up_threads(void);
static const char *set_up_signals(void);
static bool open_redis_room(void);
static void free_everything(void);

/* ---- main ------------------------------------------------------------ */

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  server.listener = startup_listen(&server.options, argc, argv, &port, &status);
  if (server.listener < 0)
    return status;
  /* Each thread has its own scratch, on its stack. */
  server.session = session_context_make(server.options.room_name,
                                        server.options.max_line, false);
  /* With --redis, the room is the whole cluster's: it holds more users
   * than this server's --max-clients (pages are touched only as used). */
  server.room = room_create(cluster_room_capacity(&server.options));
  const char *failed = !server.room ? "room_create" : set_up_threads();
  if (!failed) {
    server.finished = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    failed = server.finished < 0 ? "eventfd" : set_up_signals();
  }
  if (failed) {
    fprintf(stderr, "chat-threaded: %s: %s\n", failed, strerror(errno));
    free_everything();
    return 1;
  }
  if (server.options.redis_url && !open_redis_room()) {
    free_everything();
    return 1;
  }

  options_print_startup(&server.options, port, stdout);
  log_line("%s running on port %u: chat-threaded, a thread per connection "
           "(%zu KiB stacks)%s",
           server.options.room_name, port, server.stacks.stack_size / 1024,
           server.bridge ? "; the room through Redis, by a bridge thread" : "");

  shut_down(accept_until_signal());

  free_everything();
  log_line("stopped");
  return 0;
}

/* ---- Accept: the main thread ----------------------------------------- */

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

static void on_accept(int fd, const struct sockaddr *address) {
  struct peer_address peer = peer_address_from(address);
  if (server.connections >= server.options.max_clients) {
    refuse_full(fd, &peer);
    return;
  }
  struct client *client = calloc(1, sizeof *client);
  void *stack = client ? stack_pool_take(&server.stacks) : NULL;
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
  pthread_cond_init(&client->answered, NULL);
  line_framer_init(&client->framer, server.options.max_line);
  if (server.options.login_timeout > 0)
    client->login_deadline =
        now_milliseconds() + server.options.login_timeout * 1000LL;
  log_accepted(&peer);
  list_append(&server.clients, client);
  server.connections++;
  pthread_attr_setstack(&server.thread_attributes, stack,
                        server.stacks.stack_size);
  pthread_t thread; /* the thread keeps its own id in client->thread */
  int error = pthread_create(&thread, &server.thread_attributes, serve, client);
  if (error != 0) { /* out of threads: told so, as if it never came */
    list_remove(&server.clients, client);
    server.connections--;
    stack_pool_give_back(&server.stacks, stack);
    pthread_mutex_destroy(&client->lock);
    pthread_cond_destroy(&client->answered);
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

/* ---- Serve: the client's thread -------------------------------------- */

/* A client's thread: its whole session, top to bottom. */
static void *serve(void *arg) {
  struct client *client = arg;
  /* The session formats its steps here, on this thread's stack, which
   * set_up_threads() sized for it. */
  char scratch[server.session.scratch_size];
  client->thread = pthread_self();
  client->context = server.session;
  client->context.scratch = scratch;

  carry_out(client, session_start(&client->session, &client->context));
  while (serve_turn(client))
    ;
  /* No longer open; client->cause was set once, when it stopped. */
  if (client->cause == DEPARTURE_SHUTDOWN) { /* nobody is told */
    carry_out(client, session_shutdown(&client->session));
  } else {
    depart(client, client->cause);
  }
  close_after_flush(client);
  return NULL;
}

/* An open client's turn: write what is left to it, sleep until there is
 * something to do, read. Returns false once the client is no longer open. */
static bool serve_turn(struct client *client) {
  if (outbox_write_own(client) == WRITE_BROKEN) {
    /* Reset: there is nothing more to say to it. */
    stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED);
    return false;
  }
  short ready =
      outbox_wait(client, POLLIN, CLIENT_OPEN, login_deadline(client));
  if ((ready & (POLLIN | POLLHUP | POLLERR)) && is_open(client))
    read_input(client);
  long long deadline = login_deadline(client);
  if (deadline > 0 && now_milliseconds() >= deadline)
    on_login_timeout(client);
  return is_open(client);
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
     * already handled; once its own lines are back (with --redis), answer
     * what is pending, then close. */
    await_echo(client);
    stop_client(client, CLIENT_CLOSING, DEPARTURE_CLOSED);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED); /* reset */
  }
}

/* Returns false to stop the framer: the client reads no more (it said
 * QUIT, or was dropped). */
static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  struct session_step step;
  if (!step_for_frame(&client->session, &client->context, frame,
                      client->lines_out, &step)) {
    await_echo(client); /* with --redis: an answer waits for its lines */
    if (!is_open(client))
      return false; /* stopped meanwhile: its last line comes next */
    (void)step_for_frame(&client->session, &client->context, frame, false,
                         &step);
  }
  carry_out(client, step);
  if (client->joining) /* with --redis: Redis answers a name */
    await_join(client);
  return is_open(client);
}

/* With --redis, a name asked for is Redis's to accept: the thread waits for
 * the bridge's answer, reading nothing more meanwhile, then carries it out.
 * A name accepted is carried out even for a client that is closing (the
 * room must hear of its departure); any other answer, only for one still
 * open (for one closing, its last line is next). */
static void await_join(struct client *client) {
  const char *answer = await_answer(client);
  client->joining = false;
  bool accepted = answer && answer != STEP_ROOM_UNAVAILABLE;
  if (accepted || is_open(client)) /* accepted: the name is its own copy */
    carry_out_answer(client, accepted ? client->name : answer);
}

/* With --redis, the client's own lines come back through Redis, and what
 * is said to it alone (a reply, the names, a goodbye, the close after a
 * half-close) must not overtake them, as it cannot in a room of one server:
 * the thread waits until the bridge has seen them back. */
static void await_echo(struct client *client) {
  if (client->lines_out && bridge_echo(server.bridge, client))
    await_answer(client);
  client->lines_out = false;
}

/* The client's thread waits for the bridge to answer what it asked (a
 * name, its lines back, or to forget it), whatever else happens meanwhile:
 * the bridge answers everything it took, within the lease at the latest
 * (bridge.h), and the client does not end before, so that no answer ever
 * finds it gone. */
static const char *await_answer(struct client *client) {
  pthread_mutex_lock(&client->lock);
  while (!client->has_answer)
    pthread_cond_wait(&client->answered, &client->lock);
  const char *answer = client->answer;
  client->has_answer = false;
  pthread_mutex_unlock(&client->lock);
  return answer;
}

/* There is no timer to schedule: each thread sleeps with its own deadline
 * (the login timeout, then the flush of its last lines), counted from the
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

/* ---- Depart, close after the last lines ------------------------------ */

/* A registered user leaves the room: everyone else is told, once. With
 * --redis, a user whose room was lost (its name retired by Redis already)
 * is only told. */
static void depart(struct client *client, enum departure_cause cause) {
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  if (cause == DEPARTURE_ROOM_LOST)
    carry_out(client, session_room_lost(&client->session));
  else
    carry_out(client, session_end(&client->session, &client->context));
}

/* Says the last lines, for FLUSH_TIMEOUT_MILLISECONDS at most, so that a
 * client that never reads cannot keep its thread; then closes. */
static void close_after_flush(struct client *client) {
  long long deadline = now_milliseconds() + FLUSH_TIMEOUT_MILLISECONDS;
  while (flush_last_lines(client, deadline))
    ;
  close_client(client);
}

/* A closing client's turn: write its last lines. Returns false once they
 * are all written, or it was dropped, or time is up. */
static bool flush_last_lines(struct client *client, long long deadline) {
  if (outbox_write_own(client) == WRITE_BROKEN)
    return false;
  pthread_mutex_lock(&client->lock);
  bool done = client->state == CLIENT_DROPPED || client->backlog == 0;
  pthread_mutex_unlock(&client->lock);
  if (done || now_milliseconds() >= deadline)
    return false;
  outbox_wait(client, 0, CLIENT_CLOSING, deadline);
  return true;
}

/* The thread's last act: with nobody writing to the socket any more
 * (outbox_stop_writing), it closes it, takes the client out of the room
 * (silently, at shutdown), so that no other client's thread can reach it,
 * and hands it to the main thread, which joins the thread and frees the
 * record: only the main thread frees clients. */
static void close_client(struct client *client) {
  /* With --redis, the bridge may hold a line of its still: it is done with
   * the client once it has forgotten it. */
  if (server.bridge && bridge_forget(server.bridge, client))
    await_answer(client);
  outbox_stop_writing(client);
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
  /* Fails only if the count reached 2^64 - 1: never. */
  (void)eventfd_write(server.finished, 1);
}

/* Joins the threads of the clients that ended and frees their records: no
 * thread outlives its client, nor the server. At most --max-clients stacks
 * are ever taken, so the pool has room for them all. */
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
    stack_pool_give_back(&server.stacks, client->stack);
    pthread_mutex_destroy(&client->lock);
    pthread_cond_destroy(&client->answered);
    free(client);
    client = next;
  }
}

/* ---- Shut down ------------------------------------------------------- */

/* SIGINT, SIGTERM or SIGHUP: stop accepting, tell every client's thread to
 * say goodbye and close, give the goodbyes a moment to drain, then drop the
 * clients that could not take theirs; return once every thread is joined.
 * With --redis the bridge leaves the room meanwhile (once no client hears
 * anything more of the room), so that this server's users depart on every
 * other server at once. */
static void shut_down(int signal_number) {
  log_shutting_down(signal_number, server.connections);
  long long grace = now_milliseconds() + SHUTDOWN_GRACE_MILLISECONDS;
  stop_all(CLIENT_CLOSING);
  if (server.bridge)
    bridge_stop(server.bridge);
  while (server.clients.first) {
    long long left = grace - now_milliseconds();
    if (left <= 0 && grace > 0) { /* out of time: no more last lines */
      stop_all(CLIENT_DROPPED);
      grace = 0;
    }
    struct pollfd finished = {.fd = server.finished, .events = POLLIN};
    eventfd_t count;
    if (poll(&finished, 1, grace > 0 ? (int)left : -1) > 0)
      (void)eventfd_read(server.finished, &count); /* only to empty it */
    reap_ended();
  }
  if (server.bridge)
    bridge_close(server.bridge);
  server.bridge = NULL;
}

/* Stops every client whose thread is not joined yet (the main thread
 * alone frees clients, so all of them are still there). */
static void stop_all(enum client_state state) {
  for (struct client *client = server.clients.first; client;
       client = client->next)
    stop_client(client, state, DEPARTURE_SHUTDOWN);
}

/* ---- Helpers: the session's steps, over this model's hooks (step.h) -- */

static void send_to_client(void *client, const char *bytes, size_t length) {
  queue_output(client, bytes, length, false);
}

/* The room lock stays held from the name's registration to the end of its
 * arrival's broadcast. Sockets a broadcast claims are written once it has
 * let go (unlock_room): the client's own thread alone carries out its
 * steps, so the list of them can live in its record. */
static void lock_room(void *client) {
  pthread_mutex_lock(&server.room_lock);
  ((struct client *)client)->to_write = NULL;
}

static void unlock_room(void *client) {
  struct client *self = client;
  pthread_mutex_unlock(&server.room_lock);
  outbox_write_claimed(self->to_write);
  self->to_write = NULL;
}

/* With --redis the room's part of a step is a request to the bridge: a
 * name is answered later (await_join), a line and a departure come back
 * from Redis (the next section), and while Redis is away the room answers
 * "unavailable" at once. */
static const char *join_room(void *client, struct chat_text name) {
  struct client *self = client;
  if (!server.bridge)
    return room_join_member(server.room, name, (uintptr_t)client,
                            &self->member);
  memcpy(self->name, name.bytes, name.length);
  self->name_length = (unsigned char)name.length;
  if (!bridge_join(server.bridge, self, name))
    return STEP_ROOM_UNAVAILABLE;
  self->joining = true;
  return STEP_JOIN_PENDING;
}

static bool say_to_room(void *client, struct chat_text line) {
  struct client *self = client;
  if (server.bridge) {
    bool taken = bridge_say(server.bridge, client, line);
    self->lines_out = self->lines_out || taken;
    return taken;
  }
  room_broadcast(server.room, line, outbox_deliver, &self->to_write);
  return true;
}

/* With --redis the room keeps the name, with no client, until its
 * departure comes back from Redis. */
static void leave_room(void *client, struct chat_text departure) {
  struct client *self = client;
  if (!server.bridge) {
    room_leave_member(server.room, &self->member);
    say_to_room(client, departure);
    return;
  }
  if (self->member >= 0)
    room_set_owner(server.room, self->member, 0);
  self->member = -1;
  bridge_leave(server.bridge,
               (struct chat_text){self->name, self->name_length});
}

static const struct room *room_members(void *client) {
  (void)client;
  if (server.bridge && !bridge_available(server.bridge))
    return NULL;
  return server.room;
}

static void on_registered(void *client) {
  struct client *registered = client;
  log_registered(&registered->peer, registered->session.name,
                 registered->session.name_length);
}

/* It said QUIT, or timed out: its thread says the last lines, then closes. */
static void close_session(void *client) {
  stop_client(client, CLIENT_CLOSING, DEPARTURE_QUIT);
}

static const struct step_model threaded_model = {
    .send = send_to_client,
    .lock = lock_room,
    .unlock = unlock_room,
    .join = join_room,
    .leave = leave_room,
    .say = say_to_room,
    .members = room_members,
    .registered = on_registered,
    .close = close_session,
};

static void carry_out(struct client *client, struct session_step step) {
  step_carry_out(&threaded_model, client, &client->session, &client->context,
                 step);
}

/* With --redis: the room's answer to the name the client asked for. */
static void carry_out_answer(struct client *client, const char *stored) {
  step_join_answered(
      &threaded_model, client, &client->session, &client->context,
      (struct chat_text){client->name, client->name_length}, stored);
}

/* ---- Helpers: the room shared through Redis (bridge.h) -------------- */

/* The link's hooks (os/redis_room.h), which the bridge calls on its thread.
 * A room line from Redis is handed to the room as a sender's thread hands
 * one without Redis: queued for every member of this server under the room
 * lock, then written to the sockets it claimed once the lock is let go;
 * here once for a whole batch of lines (on_flush), since Redis hands them
 * over by the thousand, and a send per recipient per line would keep the
 * bridge from its heartbeat. */

static void unlock_room_for_bridge(void) {
  pthread_mutex_unlock(&server.room_lock);
  if (server.bridge_to_write)
    bridge_flush_later(server.bridge);
}

static void on_flush(void) {
  struct client *to_write = server.bridge_to_write;
  server.bridge_to_write = NULL;
  outbox_write_claimed(to_write);
}

/* A user arrived: `client` is this server's client whose name it is
 * (waiting in await_join), or NULL. */
static const char *on_arrived(void *model, void *client, struct chat_text name,
                              struct chat_text line) {
  (void)model;
  const char *stored = NULL;
  pthread_mutex_lock(&server.room_lock);
  int member = room_join(server.room, name, (uintptr_t)client, &stored);
  if (member >= 0 && client)
    ((struct client *)client)->member = member;
  if (member >= 0 && line.length > 0)
    room_broadcast(server.room, line, outbox_deliver, &server.bridge_to_write);
  unlock_room_for_bridge();
  return member >= 0 ? stored : NULL; /* -1: the room is full */
}

static void on_said(void *model, struct chat_text line) {
  (void)model;
  pthread_mutex_lock(&server.room_lock);
  room_broadcast(server.room, line, outbox_deliver, &server.bridge_to_write);
  unlock_room_for_bridge();
}

/* A departure. The name is another server's user, or one of ours that left
 * (no client any more), or one of ours still here: the room retired this
 * server's users while it was cut off, and the room is lost for it. */
static void on_departed(void *model, struct chat_text name,
                        struct chat_text line) {
  (void)model;
  pthread_mutex_lock(&server.room_lock);
  int member = room_find(server.room, name);
  if (member >= 0) { /* not found: its arrival found the room full */
    struct client *owner = (struct client *)room_owner(server.room, member);
    if (owner) {
      owner->member = -1;
      stop_client(owner, CLIENT_CLOSING, DEPARTURE_ROOM_LOST);
    }
    room_leave(server.room, member);
    room_broadcast(server.room, line, outbox_deliver, &server.bridge_to_write);
  }
  unlock_room_for_bridge();
}

/* Wakes the client's thread in await_answer. After the unlock, the client
 * may be gone. */
static void answer_client(struct client *waiting, const char *answer) {
  pthread_mutex_lock(&waiting->lock);
  waiting->answer = answer;
  waiting->has_answer = true;
  pthread_cond_signal(&waiting->answered);
  pthread_mutex_unlock(&waiting->lock);
}

static void on_join_answered(void *model, void *client, struct chat_text name,
                             const char *stored) {
  (void)model;
  (void)name;
  answer_client(client, stored);
}

/* This server lost its place in the room: every user of it is stopped the
 * way shutdown stops a client (its thread says "Room connection lost" and
 * closes), and the room is emptied, to be entered anew. */
static void on_room_lost(void *model) {
  (void)model;
  pthread_mutex_lock(&server.room_lock);
  for (int member = room_first(server.room); member >= 0;
       member = room_next(server.room, member)) {
    struct client *owner = (struct client *)room_owner(server.room, member);
    if (owner) {
      owner->member = -1;
      stop_client(owner, CLIENT_CLOSING, DEPARTURE_ROOM_LOST);
    }
  }
  room_clear(server.room);
  pthread_mutex_unlock(&server.room_lock);
}

/* A line said while the room looked reachable, which the link refused
 * after all (Redis went away meanwhile): its sender is told, as it would
 * have been at once, unless it is closing. */
static void on_refused(void *client) {
  static const char unavailable[] = CHAT_ROOM_UNAVAILABLE;
  outbox_deliver(&server.bridge_to_write, (uintptr_t)client,
                 (struct chat_text){unavailable, sizeof unavailable - 1});
  if (server.bridge_to_write)
    bridge_flush_later(server.bridge);
}

static void on_echoed(void *client) {
  answer_client(client, NULL);
}

static void on_forgotten(void *client) {
  answer_client(client, NULL);
}

static const struct bridge_model redis_model = {
    .room =
        {
            .arrived = on_arrived,
            .join_answered = on_join_answered,
            .said = on_said,
            .departed = on_departed,
            .lost = on_room_lost,
        },
    .refused = on_refused,
    .echoed = on_echoed,
    .forgotten = on_forgotten,
    .flush = on_flush,
};

/* ---- Helpers: a client's state --------------------------------------- */

static bool is_open(struct client *client) {
  pthread_mutex_lock(&client->lock);
  bool open = client->state == CLIENT_OPEN;
  pthread_mutex_unlock(&client->lock);
  return open;
}

/* Stops a client and wakes its thread, which then departs and closes. The
 * caller is that thread, or a broadcast or the bridge holding the room lock
 * with the client in the room, or the main thread, which alone frees
 * clients.
 * Returns whether the client was open: then `cause` is why it leaves. */
static bool stop_client(struct client *client, enum client_state state,
                        enum departure_cause cause) {
  pthread_mutex_lock(&client->lock);
  bool was_open = set_state_locked(client, state, cause);
  outbox_wake_locked(client);
  pthread_mutex_unlock(&client->lock);
  return was_open;
}

/* Under client->lock. A client stops being open once, for the first cause
 * found; dropping it also cuts short a closing client's last lines. Returns
 * whether it was open. */
static bool set_state_locked(struct client *client, enum client_state state,
                             enum departure_cause cause) {
  bool was_open = client->state == CLIENT_OPEN;
  if (was_open)
    client->cause = cause;
  if (was_open || state == CLIENT_DROPPED)
    client->state = state;
  return was_open;
}

/* Under client->lock: a client too slow, or that memory ran out for.
 * Dropping only marks the client, because one dropped in the middle of a
 * broadcast must not hear of its own departure before the others have had
 * the line being broadcast: its thread departs (and logs why) when it
 * wakes, once the broadcast has let go of the room lock. */
void drop_client_locked(struct client *client, enum departure_cause cause) {
  set_state_locked(client, CLIENT_DROPPED, cause);
  outbox_wake_locked(client);
}

/* ---- Helpers: lists, setup, teardown --------------------------------- */

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

/* SIGINT, SIGTERM and SIGHUP (each a graceful stop) are blocked in every
 * thread and read from a signalfd by the main thread; WAKE_SIGNAL is
 * blocked too, except inside a client's ppoll (outbox.h); SIGUSR2 stays
 * ignored (startup.h), so that neither user signal kills the server. Threads
 * inherit the mask: this comes before the first one. Returns the call that
 * failed, or NULL. */
static const char *set_up_signals(void) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  if (!outbox_init(server.options.max_backlog, &stop))
    return "sigaction or pthread_sigmask (the wake-up signal)";
  server.signals = signalfd(-1, &stop, SFD_CLOEXEC);
  return server.signals < 0 ? "signalfd" : NULL;
}

/* A client thread's stack holds its session scratch (the longest line plus
 * a little), its read chunk and its calls: sized for them, it is 76 KiB
 * with the default --max-line, where glibc's default is RLIMIT_STACK
 * (commonly 8 MiB). README.md measures the difference; build with
 * -DCHAT_DEFAULT_STACK to see it. Returns the call that failed, or NULL. */
static const char *set_up_threads(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t stack = STACK_FOR_CALLS + THREAD_READ_CHUNK +
                 server.session.scratch_size + STACK_FOR_SANITIZER;
  size_t stack_size = (stack + page - 1) / page * page;
#ifdef CHAT_DEFAULT_STACK
  stack_size = 8 << 20; /* glibc's default: RLIMIT_STACK */
#endif
  if (!stack_pool_init(&server.stacks, stack_size, server.options.max_clients))
    return "calloc (the stack pool)";
  int error = pthread_attr_init(&server.thread_attributes);
  if (error != 0) {
    errno = error;
    return "pthread_attr_init";
  }
  return NULL;
}

/* With --redis: enters the room through Redis and starts the bridge's
 * thread, which inherits the signal mask (set_up_signals comes first).
 * Returns false, having said why, when Redis cannot be used. */
static bool open_redis_room(void) {
  char error[512];
  server.bridge =
      bridge_open(&server.options, &redis_model, error, sizeof error);
  if (!server.bridge)
    fprintf(stderr, "chat-threaded: %s\n", error);
  return server.bridge != NULL;
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
  stack_pool_release(&server.stacks);
  free(server.room);
}
