/* chat-coroutine: the chat server as coroutines on a hand-written event
 * loop.
 *
 * The model: one thread, one loop (loop.h: epoll and timers, no library),
 * and a coroutine per connection (coro.h: a stack of its own, switched by
 * hand). Each connection's session is one function, serve(), read
 * from top to bottom like chat-threaded's: greet, read lines and carry out
 * each step, depart, say the last lines, close. Where a thread would block,
 * the coroutine calls co_read() or co_write() (task.h): they try the system
 * call, and when the socket is not ready they register interest with the
 * loop and yield; the loop resumes the coroutine when the socket is ready
 * or its deadline passes. That is the talk's Task and Future. The room is a
 * plain data structure: one thread touches it, so it needs no lock, and a
 * coroutine is never suspended in the middle of a step (carrying one out
 * never waits), so no other session sees the room half changed.
 *
 * Writing: a line for a client is appended to its output buffer, nothing
 * more: a broadcast never waits for a slow reader. Before the loop sleeps,
 * every client given output in that turn gets one send() for all of it
 * (write_pending); only when the socket does not take everything does the
 * loop also wait for it to have room. --max-backlog bytes waiting for one
 * client drop it. Once a client is closing, its own coroutine writes its
 * last lines with co_write().
 *
 * One room across servers (--redis URL, docs/PROTOCOL.md section 7;
 * common/CLUSTER.md): the room here is then every server's, mirrored from
 * Redis (os/redis_room.h, whose hiredis connections run on this same loop
 * through redis_loop.h), and the step hooks hand the room's part to Redis.
 * A line said reaches this server's users, the sender included, only when
 * Redis gives it back, so that every server sees one order. A name is
 * granted by Redis: the session's coroutine sleeps until the answer comes
 * (wait_for_room), the name on its stack and the client's next lines unread
 * in the socket, then carries it out and reads on, as if the join had been
 * a blocking call. Anything said to a sender alone (a reply, the names, a
 * goodbye, the close after a half-close) must not overtake the sender's
 * own lines, as it cannot in a room of one server: the coroutine sleeps
 * until its last line is back (wait_for_echo), then goes on.
 *
 * Its cost: a connection is a small struct, a slot in the room, and a
 * stack: CORO_STACK_SIZE bytes of address space, of which an idle
 * connection keeps one page (README.md measures it). A context switch is a
 * handful of instructions: no kernel, no scheduler.
 *
 * Where it breaks: like chat-evented, it uses one core, and one slow step
 * delays everyone. Each stack is a fixed size chosen by measurement: a call
 * deeper than it dies on the guard page (a clean SIGSEGV, never silent
 * corruption). Each stack is two memory mappings: vm.max_map_count (65,530
 * by default) caps the connections near 32,000. And a coroutine must never
 * block the thread: a blocking call would stop every session at once. */
#include "byte_buffer.h"
#include "cluster.h"
#include "os/clock.h"
#include "os/heap.h"
#include "line_framer.h"
#include "os/listener.h"
#include "os/log.h"
#include "loop.h"
#include "options.h"
#include "os/policy.h"
#include "os/redis_room.h"
#include "os/refuse.h"
#include "protocol.h"
#include "redis_loop.h"
#include "room.h"
#include "session.h"
#include "os/startup.h"
#include "step.h"
#include "task.h"
#ifdef CORO_MEASURE_STACK
#include "coro.h"
#endif

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Each coroutine's stack: over ten times the deepest the session went
 * under the whole conformance suite, plain and under AddressSanitizer,
 * whose frames are larger and which gets a larger stack from the build
 * (README.md: the measurement). The margin costs address space only; a call
 * deeper still dies on the guard page. */
#ifndef CORO_STACK_SIZE
#define CORO_STACK_SIZE (64 * 1024)
#endif

enum client_state {
  CLIENT_OPEN,    /* reading, and hearing the room */
  CLIENT_CLOSING, /* hears no more room lines; says its last ones, closes */
  CLIENT_DROPPED, /* closed at once: too slow, reset, or out of time */
};

struct client {
  /* What a broadcast touches for each recipient, in one cache line: */
  struct byte_buffer output;   /* what its socket has not taken yet */
  size_t sent;                 /* bytes of `output` already sent */
  struct client *next_pending; /* given output this turn */
  int fd;
  unsigned char state;  /* enum client_state */
  bool pending;         /* on server.pending */
  bool watching_output; /* the loop waits for its socket to take more */
  bool ran;             /* ran since its stack was last trimmed */
  /* The rest: */
  unsigned char cause;            /* enum departure_cause, once not open */
  int member;                     /* index in the room while registered */
  uint64_t last_said;             /* with --redis: the number of its last
                                     line (redis_room_say) */
  struct join *join;              /* with --redis, while it names itself: the
                                     name asked of the room, on its stack */
  struct task *task;              /* its coroutine, running serve */
  struct client *previous, *next; /* every client */
  long long login_deadline;       /* monotonic ms */
  struct line_framer framer;
  struct session session;
  struct peer_address peer;
};

/* A name asked of the room (--redis), from the join to its answer: kept on
 * the stack of the coroutine that waits for it, in read_name's frame. */
struct join {
  bool waiting;       /* asked; on_join_answered has not answered yet */
  const char *answer; /* then: the room's copy of the name, NULL (taken) or
                         STEP_ROOM_UNAVAILABLE */
  unsigned char length;
  char name[CHAT_NAME_MAX_BYTES]; /* the name asked for */
};

/* A coroutine asleep until its client's own lines are back from Redis
 * (wait_for_echo): kept on its stack, listed for the echoed hook. */
struct echo_wait {
  struct client *client;
  struct echo_wait *previous, *next;
};

static struct server {
  struct chat_options options;
  struct loop *loop;
  int listener;
  int signals; /* SIGINT, SIGTERM and SIGHUP, read as a descriptor */
  struct task *acceptor;
  struct redis_room *redis; /* with --redis: the room shared through Redis */
  struct room *room;        /* with --redis, every server's users (owner 0:
                               a user of another server) */
  struct session_context session;
  struct client *first, *last;  /* every client */
  struct echo_wait *echo_waits; /* with --redis: coroutines waiting for
                                   their clients' own lines */
  struct client *pending;       /* clients given output this turn */
  size_t connections;
  struct loop_timer heap_timer;        /* gives memory back once quiet */
  struct loop_timer shutdown_deadline; /* cuts the goodbyes short */
  struct loop_timer redis_timer;       /* the link's clock (redis_room_tick) */
  bool accept_paused;  /* the acceptor sleeps for want of descriptors */
  bool accept_stalled; /* short of descriptors since the accept queue was
                          last found empty: one shortage, logged once */
  bool shutting_down;
  /* The chunk every coroutine reads into. One is enough: a coroutine uses
   * it from co_read()'s return to the end of line_framer_push(), and
   * carrying out a step never waits, so no other coroutine runs between;
   * a frame that waits for its sender's own lines first (wait_mid_input)
   * puts the chunk aside while it sleeps, and back when it wakes. */
  char input[READ_CHUNK];
  size_t input_length; /* the bytes in `input` now */
} server = {.listener = -1, .signals = -1};

static void carry_out(struct client *client, struct session_step step);
static void read_input(struct client *client);
static void depart(struct client *client, enum departure_cause cause);
static void flush_last_lines(struct client *client, long long deadline);
static void close_client(struct client *client);

/* The story (main, accept, serve, depart, shut down) comes first; what it
 * calls is declared here. */
static void serve(void *arg);
static void close_after_flush(struct client *client);
static void write_pending(struct loop *loop, void *data);
static int descriptor_limit(void);
static void free_everything(void);
static bool set_up_signals(void);
static void accept_waiting(void *arg);
#ifdef CORO_MEASURE_STACK
static void report_stack_depth(void);
#endif
static void note_busy(struct loop *loop);
static void stop_client(struct client *client, enum client_state state,
                        enum departure_cause cause);
static void watch_output(struct client *client, bool on);
static bool open_redis_room(void);
static void close_redis_room(void);
static void read_name(struct client *client);
static void release_name(struct client *client);
static void lose_place(struct client *client);
static void carry_out_answer(struct client *client, struct chat_text name,
                             const char *stored);
static bool lines_out(const struct client *client);

/* ---- main ------------------------------------------------------------ */

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  server.listener = startup_listen(&server.options, argc, argv, &port, &status);
  if (server.listener < 0)
    return status;
  server.session = session_context_make(server.options.room_name,
                                        server.options.max_line, true);
  server.room = room_create(cluster_room_capacity(&server.options));
  server.loop = loop_create(descriptor_limit());
  const char *failed = !server.session.scratch ? "malloc (the scratch)"
                       : !server.room          ? "room_create"
                       : !server.loop          ? "loop_create"
                                               : NULL;
  if (failed) {
    fprintf(stderr, "chat-coroutine: %s failed: %s\n", failed, strerror(errno));
    free_everything();
    return 1;
  }
  if (!set_up_signals()) {
    fprintf(stderr, "chat-coroutine: cannot set up signals: %s\n",
            strerror(errno));
    free_everything();
    return 1;
  }
  if (server.options.redis_url && !open_redis_room()) {
    free_everything();
    return 1;
  }
  server.acceptor =
      task_spawn(server.loop, accept_waiting, NULL, CORO_STACK_SIZE);
  if (!server.acceptor) {
    fprintf(stderr, "chat-coroutine: cannot start the acceptor: %s\n",
            strerror(errno));
    free_everything();
    return 1;
  }
  loop_set_before_sleep(server.loop, write_pending, NULL);

  options_print_startup(&server.options, port, stdout);
  log_line("%s running on port %u: chat-coroutine, epoll by hand, %zu KiB "
           "stacks",
           server.options.room_name, port, (size_t)CORO_STACK_SIZE / 1024);

  loop_run(server.loop);

#ifdef CORO_MEASURE_STACK
  report_stack_depth();
#endif
  free_everything();
  log_line("stopped");
  return 0;
}

/* ---- Accept: one more coroutine -------------------------------------- */

static void on_accept(int fd, const struct sockaddr *address) {
  struct peer_address peer = peer_address_from(address);
  if (server.connections >= server.options.max_clients) {
    refuse_full(fd, &peer);
    return;
  }
  struct client *client = calloc(1, sizeof *client);
  struct task *task =
      client ? task_spawn(server.loop, serve, client, CORO_STACK_SIZE) : NULL;
  if (!task) {
    log_refused(&peer, "out of memory");
    free(client);
    close(fd);
    return;
  }
  listener_send_at_once(fd);
  client->fd = fd;
  client->task = task;
  client->peer = peer;
  client->member = -1;
  line_framer_init(&client->framer, server.options.max_line);
  if (server.options.login_timeout > 0)
    client->login_deadline =
        loop_now(server.loop) + server.options.login_timeout * 1000LL;
  client->previous = server.last;
  if (server.last)
    server.last->next = client;
  else
    server.first = client;
  server.last = client;
  server.connections++;
  note_busy(server.loop);
  log_accepted(&peer);
}

/* Out of descriptors (or memory), the listener stays ready and accepting
 * again would spin: pause until a client closes or a moment has passed.
 * The log says so once per shortage, not at every retry. */
static void pause_accepting(int error) {
  if (!server.accept_stalled)
    log_line("accept paused: %s", strerror(error));
  server.accept_stalled = true;
  server.accept_paused = true;
  co_sleep(loop_now(server.loop) + ACCEPT_RETRY_MILLISECONDS);
  server.accept_paused = false;
}

/* The acceptor's coroutine: accept until shutdown, a batch at a time. */
static void accept_waiting(void *arg) {
  (void)arg;
  int in_a_row = 0;
  while (!server.shutting_down) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4(server.listener, (struct sockaddr *)&address, &length,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      on_accept(fd, (struct sockaddr *)&address);
      if (++in_a_row == ACCEPT_BATCH) { /* the others' turn */
        in_a_row = 0;
        co_sleep(loop_now(server.loop));
      }
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (server.accept_stalled) { /* everyone waiting got in */
        server.accept_stalled = false;
        log_line("accept resumed");
      }
      in_a_row = 0;
      co_wait(server.listener, LOOP_READABLE, 0);
    } else if (accept_error_is_exhaustion(errno)) {
      pause_accepting(errno);
    } else if (!accept_error_is_transient(errno)) {
      log_line("accept failed: %s", strerror(errno));
    }
  }
  co_close(server.listener);
  server.listener = -1;
  server.acceptor = NULL;
  if (server.connections == 0)
    loop_stop(server.loop);
}

/* ---- Serve: one coroutine per connection ----------------------------- */

/* A client's whole session, top to bottom. Each co_read() inside may
 * suspend it; the loop resumes it when its socket has input, its login
 * deadline passes, or it is stopped from outside (dropped for being slow,
 * or the server shutting down). */
static void serve(void *arg) {
  struct client *client = arg;
  carry_out(client, session_start(&client->session, &server.session));
  while (client->state == CLIENT_OPEN)
    read_input(client);
  /* No longer open; client->cause was set once, when it stopped. At
   * shutdown nobody is told; a user whose place in the room was lost has
   * no departure to announce, and was logged then (lose_place). */
  if (client->cause != DEPARTURE_SHUTDOWN &&
      client->cause != DEPARTURE_ROOM_LOST)
    depart(client, client->cause);
  close_after_flush(client);
}

/* ---- Serve: read input ----------------------------------------------- */

static bool wait_mid_input(struct client *client);
static void wait_for_echo(struct client *client);

/* Returns false to stop the framer: the client reads no more (it said QUIT,
 * or was dropped), or its name waits for the room shared through Redis. A
 * step that would answer the sender while its own lines are still on their
 * way through Redis waits for them first (step_for_frame): the coroutine
 * sleeps here, between two steps, and carries it out when it wakes. */
static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  struct session_step step;
  while (!step_for_frame(&client->session, &server.session, frame,
                         lines_out(client), &step)) {
    if (!wait_mid_input(client))
      return false; /* stopped meanwhile: the frame goes with it */
  }
  carry_out(client, step);
  return client->state == CLIENT_OPEN &&
         !(client->join && client->join->waiting);
}

static void on_login_timeout(struct client *client) {
  stop_client(client, CLIENT_CLOSING, DEPARTURE_TIMEOUT);
  carry_out(client, session_timed_out(&client->session));
}

static void end_of_input(struct client *client, ssize_t got);

/* Waits for input (until the login deadline while the client has no name),
 * and carries out every line in it. */
static void read_input(struct client *client) {
  if (server.redis && !session_is_registered(&client->session)) {
    read_name(client); /* its name may have to wait for Redis */
    return;
  }
  ssize_t got = co_read(
      client->fd, server.input, sizeof server.input,
      session_is_registered(&client->session) ? 0 : client->login_deadline);
  client->ran = true;
  if (got > 0) {
    server.input_length = (size_t)got;
    if (line_framer_push(&client->framer, server.input, (size_t)got, on_frame,
                         client) == FRAMER_NO_MEMORY)
      stop_client(client, CLIENT_DROPPED, DEPARTURE_ERROR);
  } else {
    end_of_input(client, got);
  }
}

/* A read that brought no bytes: the end of input, the login deadline, a
 * wake-up from outside, or an error. */
static void end_of_input(struct client *client, ssize_t got) {
  if (got == 0) {
    /* End of input, maybe only a half-close: every complete line was
     * already handled; once its own lines are back (with --redis), answer
     * what is pending, then close. Stopped meanwhile, it keeps that cause. */
    wait_for_echo(client);
    stop_client(client, CLIENT_CLOSING, DEPARTURE_CLOSED);
  } else if (errno == ETIMEDOUT) {
    on_login_timeout(client);
  } else if (errno != ECANCELED) { /* woken: stopped from outside */
    stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED); /* reset */
  }
}

/* ---- Serve: a name that waits for the room shared through Redis ------ */

static bool skip_input(struct client *client, size_t length);
static void wait_for_room(struct client *client, struct join *join);

/* With --redis, a client without a name: a name line goes to Redis, and the
 * session waits for the answer (wait_for_room) before it reads on. What the
 * client sent after that line waits in the socket meanwhile, not here: the
 * coroutine only peeks at its input, and takes from the socket what it
 * carried out. */
static void read_name(struct client *client) {
  ssize_t got = co_peek(client->fd, server.input, sizeof server.input,
                        client->login_deadline);
  client->ran = true;
  if (got <= 0) {
    end_of_input(client, got);
    return;
  }
  server.input_length = (size_t)got;
  struct join join = {.waiting = false};
  client->join = &join;
  enum framer_status status = line_framer_push(&client->framer, server.input,
                                               (size_t)got, on_frame, client);
  bool waiting = join.waiting && client->state == CLIENT_OPEN;
  size_t taken = waiting ? client->framer.consumed : (size_t)got;
  if (!skip_input(client, taken))
    stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED);
  else if (status == FRAMER_NO_MEMORY)
    stop_client(client, CLIENT_DROPPED, DEPARTURE_ERROR);
  if (join.waiting) {
    wait_for_room(client, &join);
    /* Closing instead (timed out, shutdown): the rest of the chunk is
     * taken too, as a read would have taken it, so that the socket does
     * not close with unread input (a reset, not a FIN). */
    if (client->state != CLIENT_OPEN)
      (void)skip_input(client, (size_t)got - taken);
  }
  client->join = NULL;
}

/* Takes from the socket the bytes peeked at and carried out (MSG_TRUNC:
 * the kernel drops them without copying). */
static bool skip_input(struct client *client, size_t length) {
  while (length > 0) {
    ssize_t skipped =
        recv(client->fd, server.input,
             length < sizeof server.input ? length : sizeof server.input,
             MSG_TRUNC | MSG_DONTWAIT);
    if (skipped <= 0)
      return false;
    length -= (size_t)skipped;
  }
  return true;
}

/* The name went to Redis (join_room answered STEP_JOIN_PENDING): the
 * session waits here, reading nothing, until on_join_answered wakes it with
 * the answer, which it carries out as the rest of its step. The login
 * deadline still holds, and a client stopped meanwhile (shutdown) stops
 * waiting; a name the room grants later is then released by the room,
 * with nobody to give it to. */
static void wait_for_room(struct client *client, struct join *join) {
  enum task_outcome outcome = TASK_WOKEN;
  while (join->waiting && client->state == CLIENT_OPEN &&
         outcome != TASK_TIMEOUT)
    outcome = co_sleep(client->login_deadline);
  if (join->waiting) { /* no answer */
    join->waiting = false;
    if (server.redis)
      redis_room_forget(server.redis, client);
    if (outcome == TASK_TIMEOUT && client->state == CLIENT_OPEN)
      on_login_timeout(client);
    return;
  }
  if (client->state != CLIENT_OPEN) { /* stopped once it was answered */
    release_name(client);
    return;
  }
  carry_out_answer(client, (struct chat_text){join->name, join->length},
                   join->answer);
}

/* ---- Serve: an answer that waits for the sender's own lines ---------- */

/* With --redis, whether the client has lines on their way through Redis,
 * which anything said to it alone must not overtake (redis_room_echoed). */
static bool lines_out(const struct client *client) {
  return server.redis && client->last_said != 0 &&
         !redis_room_echoed(server.redis, client->last_said);
}

/* The session sleeps, reading nothing, until the client's last line is
 * done (on_echoed wakes it: back from Redis, refused, or lost with the
 * connection), or the client stops meanwhile (dropped, its place lost,
 * shutdown: stop_client wakes it, and shutdown has closed the link). Only
 * a registered user says lines, so the login deadline never runs here. The
 * wait is on the coroutine's stack; the coroutine itself takes it off the
 * list, and only it frees its client, so the list never outlives either. */
static void wait_for_echo(struct client *client) {
  if (!lines_out(client))
    return;
  struct echo_wait wait = {.client = client, .next = server.echo_waits};
  if (wait.next)
    wait.next->previous = &wait;
  server.echo_waits = &wait;
  while (client->state == CLIENT_OPEN && lines_out(client))
    (void)co_sleep(0);
  if (wait.previous)
    wait.previous->next = wait.next;
  else
    server.echo_waits = wait.next;
  if (wait.next)
    wait.next->previous = wait.previous;
}

/* wait_for_echo in the middle of a chunk (on_frame): other coroutines read
 * into server.input while this one sleeps, so the chunk, which the framer
 * goes on with when the frame is carried out, is put aside on the heap
 * meanwhile, and back where it was when the coroutine wakes. Returns false
 * when the client stopped meanwhile. */
static bool wait_mid_input(struct client *client) {
  size_t length = server.input_length;
  char *aside = malloc(length > 0 ? length : 1);
  if (!aside) {
    stop_client(client, CLIENT_DROPPED, DEPARTURE_ERROR);
    return false;
  }
  memcpy(aside, server.input, length);
  wait_for_echo(client);
  memcpy(server.input, aside, length);
  server.input_length = length;
  free(aside);
  return client->state == CLIENT_OPEN;
}

/* ---- Depart, close after the last lines ------------------------------ */

/* A closing client says its last lines, for FLUSH_TIMEOUT_MILLISECONDS at
 * most (at shutdown, until shutdown's deadline), so that a client that never
 * reads cannot keep it; then it is closed. A dropped one is closed at once. */
static void close_after_flush(struct client *client) {
  if (client->state == CLIENT_CLOSING) {
    long long deadline =
        client->cause == DEPARTURE_SHUTDOWN
            ? server.shutdown_deadline.when
            : loop_now(server.loop) + FLUSH_TIMEOUT_MILLISECONDS;
    flush_last_lines(client, deadline);
  }
  close_client(client);
}

/* The coroutine writes its own last lines, waiting for the socket as long
 * as the deadline allows; a drop (shutdown's deadline) cuts them short. The
 * loop writes nothing more for it. */
static void flush_last_lines(struct client *client, long long deadline) {
  watch_output(client, false);
  while (client->state == CLIENT_CLOSING &&
         client->sent < client->output.length) {
    ssize_t sent = co_write(client->fd, client->output.bytes + client->sent,
                            client->output.length - client->sent, deadline);
    if (sent <= 0)
      return;
    client->sent += (size_t)sent;
  }
}

static void list_remove(struct client *client) {
  if (client->previous)
    client->previous->next = client->next;
  else
    server.first = client->next;
  if (client->next)
    client->next->previous = client->previous;
  else
    server.last = client->previous;
}

/* The coroutine's last act: the client leaves every list, its socket is
 * closed (and a descriptor is free again for accepting), its memory freed.
 * The task itself is freed by the loop once this function returns. */
static void close_client(struct client *client) {
  release_name(client);  /* at shutdown: silently */
  if (client->pending) { /* rare: unlink it from this turn's writes */
    struct client **link = &server.pending;
    while (*link != client)
      link = &(*link)->next_pending;
    *link = client->next_pending;
  }
  list_remove(client);
  co_close(client->fd);
  line_framer_release(&client->framer);
  byte_buffer_release(&client->output);
  free(client);
  server.connections--;
  note_busy(server.loop);
  if (server.accept_paused)
    task_wake(server.acceptor);
  if (server.shutting_down && server.connections == 0 && !server.acceptor)
    loop_stop(server.loop);
}

/* ---- Shut down ------------------------------------------------------- */

/* The goodbyes' time is up: whoever has not taken theirs is closed now. */
static void on_shutdown_deadline(struct loop *loop, struct loop_timer *timer) {
  (void)loop;
  (void)timer;
  for (struct client *client = server.first; client; client = client->next)
    stop_client(client, CLIENT_DROPPED, DEPARTURE_SHUTDOWN);
}

/* SIGINT, SIGTERM or SIGHUP: stop accepting, tell every client and let
 * each coroutine say it and close; the loop ends with the last of them. */
static void shut_down(struct loop *loop, int fd, void *data, int ready) {
  (void)data;
  (void)ready;
  struct signalfd_siginfo received;
  if (read(fd, &received, sizeof received) != sizeof received ||
      server.shutting_down)
    return;
  server.shutting_down = true;
  log_shutting_down((int)received.ssi_signo, server.connections);
  /* The other servers hear of our users' departures now, not after the
   * lease; from here on the room is this server's own, for the goodbyes. */
  close_redis_room();
  loop_unwatch(loop, fd, LOOP_READABLE);
  loop_timer_start(loop, &server.shutdown_deadline,
                   loop_now(loop) + SHUTDOWN_GRACE_MILLISECONDS,
                   on_shutdown_deadline, NULL);
  if (server.acceptor)
    task_wake(server.acceptor);
  for (struct client *client = server.first; client; client = client->next) {
    if (client->state == CLIENT_OPEN) {
      stop_client(client, CLIENT_CLOSING, DEPARTURE_SHUTDOWN);
      carry_out(client, session_shutdown(&client->session));
    }
  }
}

/* ---- Helpers: a client's state --------------------------------------- */

/* A client stops being open once, for the first cause found; dropping it
 * also cuts short a closing client's last lines. Its coroutine, if another
 * one stops it, is woken to go on with the end of its session. */
static void stop_client(struct client *client, enum client_state state,
                        enum departure_cause cause) {
  bool was_open = client->state == CLIENT_OPEN;
  if (was_open)
    client->cause = (unsigned char)cause;
  if (!was_open && state != CLIENT_DROPPED)
    return;
  client->state = (unsigned char)state;
  if (task_current() != client->task)
    task_wake(client->task);
}

/* ---- Helpers: output, queued, written once per loop turn ------------- */

static void watch_output(struct client *client, bool on);

/* Sends what is queued for one client, as far as its socket takes it now.
 * What it does not take waits for the loop to say it has room. */
static void write_output(struct client *client) {
  size_t left = client->output.length - client->sent;
  if (left > 0) {
    ssize_t sent = send(client->fd, client->output.bytes + client->sent, left,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      stop_client(client, CLIENT_DROPPED, DEPARTURE_CLOSED); /* reset */
      return;
    }
    if (sent > 0)
      client->sent += (size_t)sent;
  }
  if (client->sent < client->output.length) {
    watch_output(client, true);
    return;
  }
  byte_buffer_release(&client->output); /* an idle client holds none */
  client->sent = 0;
  watch_output(client, false);
}

static void on_writable(struct loop *loop, int fd, void *data, int ready) {
  (void)loop;
  (void)fd;
  (void)ready;
  write_output(data);
}

static void watch_output(struct client *client, bool on) {
  if (on == client->watching_output)
    return;
  if (on && !loop_watch(server.loop, client->fd, LOOP_WRITABLE, on_writable,
                        client)) {
    stop_client(client, CLIENT_DROPPED, DEPARTURE_ERROR);
    return;
  }
  if (!on)
    loop_unwatch(server.loop, client->fd, LOOP_WRITABLE);
  client->watching_output = on;
}

static void on_heap_timer(struct loop *loop, struct loop_timer *timer);

/* Output buffers and connections come and go; their heap is kept meanwhile
 * (heap.h), and the heap timer gives it back once the process is quiet.
 * Once per turn that did such work, not per line: it reads the clock. */
static void note_busy(struct loop *loop) {
  heap_note_busy();
  if (!loop_timer_pending(&server.heap_timer))
    loop_timer_start(loop, &server.heap_timer, loop_now(loop) + heap_wait(-1),
                     on_heap_timer, NULL);
}

/* The loop's before-sleep hook: every client given output this turn gets
 * one send for all of it. */
static void write_pending(struct loop *loop, void *data) {
  (void)data;
  if (!server.pending)
    return;
  while (server.pending) {
    struct client *client = server.pending;
    server.pending = client->next_pending;
    client->pending = false;
    if (client->state != CLIENT_DROPPED)
      write_output(client);
  }
  note_busy(loop);
}

/* Queues bytes for one client, unless that would leave more than
 * --max-backlog bytes waiting for it: then it is dropped instead, and
 * nobody waits for it. */
static void queue_output(struct client *client, const char *bytes,
                         size_t length) {
  if (length == 0 || client->state == CLIENT_DROPPED)
    return;
  if (client->output.length - client->sent + length >
      server.options.max_backlog) {
    stop_client(client, CLIENT_DROPPED, DEPARTURE_SLOW);
    return;
  }
  if (client->sent > 0 && client->sent >= client->output.length / 2) {
    byte_buffer_consume(&client->output, client->sent); /* amortised */
    client->sent = 0;
  }
  if (!byte_buffer_append(&client->output, bytes, length)) {
    stop_client(client, CLIENT_DROPPED, DEPARTURE_ERROR);
    return;
  }
  if (!client->pending && !client->watching_output) {
    client->pending = true;
    client->next_pending = server.pending;
    server.pending = client;
  }
}

/* Once the process has been quiet for a second, freed heap goes back
 * (heap.h), and so do the stack pages a coroutine touched below the frames
 * it waits in: a session that went deep once keeps one page when idle. */
static void on_heap_timer(struct loop *loop, struct loop_timer *timer) {
  int wait = heap_wait(-1);
  if (wait >= 0) {
    loop_timer_start(loop, timer, loop_now(loop) + wait, on_heap_timer, NULL);
    return;
  }
  for (struct client *client = server.first; client; client = client->next) {
    if (client->ran && client->state == CLIENT_OPEN) {
      task_release_unused_stack(client->task);
      client->ran = false;
    }
  }
}

/* ---- Helpers: the session's steps, over this model's hooks (step.h) -- */

static void send_to_client(void *client, const char *bytes, size_t length) {
  queue_output(client, bytes, length);
}

/* With Redis, a name is granted later (on_join_answered): the name asked
 * for is kept in the join on the waiting coroutine's stack (read_name). */
static const char *join_room(void *client, struct chat_text name) {
  struct client *joining = client;
  if (server.redis) {
    struct join *join = joining->join;
    if (!join) /* cannot be: with Redis, a name is read by read_name */
      return STEP_ROOM_UNAVAILABLE;
    const char *answer = redis_room_join(server.redis, joining, name);
    if (answer == STEP_JOIN_PENDING) {
      join->waiting = true;
      join->length = (unsigned char)name.length;
      memcpy(join->name, name.bytes, name.length);
    }
    return answer;
  }
  return room_join_member(server.room, name, (uintptr_t)joining,
                          &joining->member);
}

/* The room's delivery interface: a room line, formatted once, copied into
 * each open member's output. */
static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  (void)context;
  struct client *client = (struct client *)owner;
  if (client && client->state == CLIENT_OPEN) /* 0: another server's user */
    queue_output(client, line.bytes, line.length);
}

static bool say_to_room(void *client, struct chat_text line) {
  if (server.redis) { /* heard when Redis gives it back */
    uint64_t number = redis_room_say(server.redis, line);
    if (number)
      ((struct client *)client)->last_said = number;
    return number != 0;
  }
  room_broadcast(server.room, line, deliver, NULL);
  return true;
}

/* With Redis, the departure is heard when Redis gives it back, in the
 * room's order (on_departed). */
static void leave_room(void *client, struct chat_text departure) {
  struct client *leaving = client;
  if (server.redis) {
    release_name(leaving);
    return;
  }
  room_leave_member(server.room, &leaving->member);
  say_to_room(client, departure);
}

static const struct room *room_members(void *client) {
  (void)client;
  if (server.redis && !redis_room_available(server.redis))
    return NULL;
  return server.room;
}

static void on_registered(void *client) {
  struct client *registered = client;
  log_registered(&registered->peer, registered->session.name,
                 registered->session.name_length);
}

static void close_session(void *client) {
  stop_client(client, CLIENT_CLOSING, DEPARTURE_QUIT);
}

/* One thread, so no lock and nothing to do after one. */
static const struct step_model coroutine_model = {
    .send = send_to_client,
    .join = join_room,
    .leave = leave_room,
    .say = say_to_room,
    .members = room_members,
    .registered = on_registered,
    .close = close_session,
};

static void carry_out(struct client *client, struct session_step step) {
  step_carry_out(&coroutine_model, client, &client->session, &server.session,
                 step);
}

/* The rest of a step whose name waited for the room (wait_for_room). */
static void carry_out_answer(struct client *client, struct chat_text name,
                             const char *stored) {
  step_join_answered(&coroutine_model, client, &client->session,
                     &server.session, name, stored);
}

/* A registered user leaves the room: everyone else is told, once. */
static void depart(struct client *client, enum departure_cause cause) {
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  carry_out(client, session_end(&client->session, &server.session));
}

/* ---- Helpers: the room shared through Redis (os/redis_room.h) -------- */

/* The link's hooks run on the loop, from its callbacks (hiredis's replies,
 * the tick), never inside a coroutine's step: they may touch any client, as
 * shut_down does, and wake the coroutine a name waits in. */

static void on_redis_tick(struct loop *loop, struct loop_timer *timer) {
  redis_room_tick(server.redis);
  loop_timer_start(
      loop, timer,
      loop_now(loop) +
          (long long)(redis_room_tick_seconds(server.redis) * 1000),
      on_redis_tick, NULL);
}

static int attach_redis(void *model, redisAsyncContext *context) {
  (void)model;
  return redis_loop_attach(context, server.loop);
}

/* Redis gives the room's lines back in the room's order; this server hands
 * each to its own users. */
static const char *on_arrived(void *model, void *client, struct chat_text name,
                              struct chat_text line) {
  (void)model;
  int ignored;
  struct client *joining = client;
  const char *stored = room_join_member(server.room, name, (uintptr_t)joining,
                                        joining ? &joining->member : &ignored);
  if (stored && line.length > 0)
    room_broadcast(server.room, line, deliver, NULL);
  return stored;
}

static void on_said(void *model, struct chat_text line) {
  (void)model;
  room_broadcast(server.room, line, deliver, NULL);
}

static void on_departed(void *model, struct chat_text name,
                        struct chat_text line) {
  (void)model;
  int member = room_find(server.room, name);
  if (member < 0)
    return;
  struct client *owner = (struct client *)room_owner(server.room, member);
  room_leave(server.room, member);
  if (owner) /* not ours to leave: retired while it was still here */
    lose_place(owner);
  room_broadcast(server.room, line, deliver, NULL);
}

/* The answer to a name: handed to the coroutine that waits for it
 * (wait_for_room), which carries it out in its own turn. */
static void on_join_answered(void *model, void *client, struct chat_text name,
                             const char *stored) {
  (void)model;
  (void)name; /* the join keeps its own copy */
  struct client *joining = client;
  if (!joining->join) /* cannot be: a join is forgotten when its wait ends */
    return;
  joining->join->waiting = false;
  joining->join->answer = stored;
  task_wake(joining->task);
}

/* This server's lines are done up to `done` (back from Redis, refused, or
 * lost with the connection): the coroutines whose last line that covers
 * are woken (wait_for_echo), and go on in their own turn. */
static void on_echoed(void *model, uint64_t done) {
  (void)model;
  for (struct echo_wait *wait = server.echo_waits; wait; wait = wait->next)
    if (wait->client->last_said <= done)
      task_wake(wait->client->task);
}

/* This server lost its place in the room (retired, or Redis came back
 * empty): its users are told and closed; clients still naming themselves
 * stay, and their names wait for Redis to be back. */
static void on_room_lost(void *model) {
  (void)model;
  for (struct client *client = server.first; client; client = client->next)
    lose_place(client);
  room_clear(server.room);
}

static const struct redis_room_model redis_model = {
    .attach = attach_redis,
    .arrived = on_arrived,
    .join_answered = on_join_answered,
    .said = on_said,
    .departed = on_departed,
    .lost = on_room_lost,
    .echoed = on_echoed,
};

/* Enters the room (redis_room_open waits for it: before anyone is served)
 * and starts the link's clock. */
static bool open_redis_room(void) {
  char error[512];
  server.redis =
      redis_room_open(&server.options, &redis_model, error, sizeof error);
  if (!server.redis) {
    fprintf(stderr, "chat-coroutine: %s\n", error);
    return false;
  }
  if (!loop_timer_start(
          server.loop, &server.redis_timer,
          loop_now(server.loop) +
              (long long)(redis_room_tick_seconds(server.redis) * 1000),
          on_redis_tick, NULL)) {
    fprintf(stderr, "chat-coroutine: cannot start the Redis timer: %s\n",
            strerror(errno));
    return false;
  }
  return true;
}

/* This server's users depart from the room at once; no hook runs after. */
static void close_redis_room(void) {
  if (!server.redis)
    return;
  loop_timer_cancel(server.loop, &server.redis_timer);
  redis_room_close(server.redis);
  server.redis = NULL;
}

/* Lets go of the client's name, without a line to its users: the room's
 * part of leave_room with Redis, a name granted to a client that stopped
 * meanwhile, a client closed at shutdown. With Redis the member stays in
 * the room, owned by nobody, until its departure comes back (on_departed);
 * Redis announces it. */
static void release_name(struct client *client) {
  if (client->member < 0)
    return;
  if (server.redis) {
    room_set_owner(server.room, client->member, 0);
    redis_room_leave(server.redis,
                     room_member_name(server.room, client->member));
  } else {
    room_leave(server.room, client->member);
  }
  client->member = -1;
}

/* The room let go of this client's name without its asking (the server was
 * retired): a user is told and closed, with no departure (the room
 * announced it); a name granted but not yet carried out is unavailable
 * instead. */
static void lose_place(struct client *client) {
  client->member = -1;
  struct join *join = client->join;
  if (join && !join->waiting && join->answer &&
      join->answer != STEP_ROOM_UNAVAILABLE)
    join->answer = STEP_ROOM_UNAVAILABLE;
  if (!session_is_registered(&client->session))
    return;
  if (client->state != CLIENT_OPEN) { /* it is going: nothing to announce */
    (void)session_room_lost(&client->session);
    return;
  }
  log_departed(&client->peer, client->session.name, client->session.name_length,
               DEPARTURE_ROOM_LOST);
  stop_client(client, CLIENT_CLOSING, DEPARTURE_ROOM_LOST);
  carry_out(client, session_room_lost(&client->session));
}

/* ---- Helpers: setup, loop, teardown ---------------------------------- */

static bool set_up_signals(void) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0)
    return false;
  server.signals = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
  return server.signals >= 0 && loop_watch(server.loop, server.signals,
                                           LOOP_READABLE, shut_down, NULL);
}

#ifdef CORO_MEASURE_STACK
/* The measuring build (CHAT_CORO_MEASURE_STACK): the deepest any
 * coroutine's stack went, in the log and appended to the file named by
 * CHAT_CORO_DEPTH_FILE, so that a whole test suite's servers can be read. */
static void report_stack_depth(void) {
  log_line("deepest coroutine stack: %zu bytes", coro_deepest_stack_use());
  const char *path = getenv("CHAT_CORO_DEPTH_FILE");
  FILE *file = path ? fopen(path, "a") : NULL;
  if (file) {
    fprintf(file, "%zu\n", coro_deepest_stack_use());
    fclose(file);
  }
}
#endif

/* The loop's table has a slot for every descriptor the process may open. */
static int descriptor_limit(void) {
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) < 0 || files.rlim_cur > 1 << 24)
    return 1 << 24;
  return (int)files.rlim_cur;
}

static void free_everything(void) {
  close_redis_room();
  while (server.first) { /* only after an early stop: none is left */
    struct client *client = server.first;
    list_remove(client);
    close(client->fd);
    line_framer_release(&client->framer);
    byte_buffer_release(&client->output);
    free(client);
  }
  if (server.listener >= 0)
    close(server.listener);
  if (server.signals >= 0)
    close(server.signals);
  loop_destroy(server.loop);
  free(server.room);
  free(server.session.scratch);
}
