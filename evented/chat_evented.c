/* chat-evented: the chat server as one event loop (libevent).
 *
 * The model: one thread, one event_base. The kernel tells the loop which
 * sockets are ready (epoll); the loop runs the callback of each, and no
 * callback ever blocks. Every client is a struct with one event in it: when
 * its socket has input, read_input() reads it and carries out each line. The
 * room is a plain data structure: with one thread, nothing else can touch
 * it, so it needs no lock.
 *
 * Writing: a line for a client is appended to its output buffer, nothing
 * more. After each turn of the loop, before it sleeps again, every client
 * that was given output in that turn gets one send() for all of it, however
 * many lines the turn queued (Redis's handleClientsWithPendingWrites works
 * this way). Only when the socket does not take everything does the client's
 * event also wait for the socket to have room, and the rest goes out then.
 * So a delivery costs a copy and, at most, its share of one system call:
 * no write event armed and disarmed around each line, as libevent's
 * bufferevents do (two epoll_ctl calls around each writev, PITFALLS.md).
 *
 * Its cost: a connection is a few hundred bytes (this struct with its
 * event, libevent's record of the descriptor, a slot in the room; see
 * README.md) and a file descriptor; no stack, no process, no context switch.
 *
 * Where it breaks: it uses one core. One slow callback (a huge NAMES list, a
 * burst of long lines) delays every client; CPU-heavy work would need
 * threads behind the loop. And it is the hardest of the three to read: the
 * session's flow is spread over callbacks instead of down one function. */
#include "byte_buffer.h"
#include "cluster.h"
#include "os/clock.h"
#include "os/heap.h"
#include "line_framer.h"
#include "os/listener.h"
#include "os/log.h"
#include "options.h"
#include "os/policy.h"
#include "os/redis_room.h"
#include "os/refuse.h"
#include "room.h"
#include "session.h"
#include "os/startup.h"
#include "step.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <hiredis/adapters/libevent.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum client_state {
  CLIENT_OPEN,    /* reading and writing */
  CLIENT_CLOSING, /* saying its last lines, then closed */
  CLIENT_DROPPED, /* closed at the end of the callback that dropped it */
};

/* The lists a client can be on, each through its own pair of links. */
enum list_kind {
  LIST_ALL,     /* every client, for shutdown */
  LIST_WAITING, /* unregistered, oldest first, for the login timeout */
  LIST_PENDING, /* given output this turn: written before the loop sleeps */
  LIST_ECHO,    /* with --redis: a line held until its sender's own lines
                   are back from Redis */
  LIST_KINDS,
};

struct links {
  struct client *previous, *next;
};

/* Input taken from the socket and not yet carried out, with --redis: the
 * lines after a name that waits for the room's answer, or a line whose
 * answer to its sender waits for the sender's own lines to come back from
 * Redis (step_for_frame). On the heap only while it waits. */
struct held_input {
  struct byte_buffer frame; /* the frame that waits, if has_frame */
  struct byte_buffer rest;  /* the bytes after it, not yet framed */
  unsigned char frame_kind; /* enum frame_kind */
  bool has_frame;
  bool end_of_input; /* the client closed its side meanwhile */
};

struct client {
  struct links links[LIST_KINDS];
  struct client *next_dropped;
  long long deadline; /* login, then the last lines' flush; monotonic ms */
  struct byte_buffer output; /* what its socket has not taken yet */
  struct held_input *held;   /* with --redis, while it waits */
  uint64_t last_said;        /* with --redis: the number of its last line */
  struct line_framer framer;
  struct session session;
  struct peer_address peer;
  int member; /* index in the room while registered */
  evutil_socket_t fd;
  unsigned char state;      /* enum client_state */
  unsigned char cause;      /* enum departure_cause, once dropped */
  unsigned char watching;   /* EV_READ and EV_WRITE: what the event waits for */
  unsigned char joining;    /* its name waits for Redis's answer */
  max_align_t event_data[]; /* its event: event_get_struct_event_size() */
};

struct client_list {
  struct client *first, *last;
};

static struct server {
  struct chat_options options;
  struct event_base *base;
  struct evconnlistener *listener;
  struct event *on_signal[3]; /* SIGINT, SIGTERM, SIGHUP */
  struct event *login_timer;  /* fires at the oldest login deadline */
  struct event *accept_retry; /* re-enables accepting after EMFILE */
  struct event *drop_dropped; /* closes dropped clients after a broadcast */
  struct event *shutdown_deadline;
  struct event *heap_timer;     /* gives freed heap back once quiet (heap.h) */
  struct event *redis_timer;    /* the link's clock (redis_room_tick) */
  struct event *release_echoed; /* carries on with clients whose lines are
                                   back (after the callback in progress) */
  struct redis_room *redis; /* with --redis: the room shared through Redis */
  struct room *room;        /* with --redis, every server's users (owner 0: not
                               ours) */
  struct session_context session;
  struct client_list clients, waiting_for_name, pending_output,
      waiting_for_echo;
  struct client *dropped;
  size_t connections;
  bool accept_paused;  /* the listener is disabled for want of descriptors */
  bool accept_stalled; /* out of descriptors since "accept paused" */
  bool shutting_down;
  bool stopped; /* the loop ends */
} server;

/* The story (main, accept, serve, depart, shut down) comes first; what it
 * calls is declared here. */
static struct event_base *new_event_base(void);
static void on_accept(struct evconnlistener *listener, evutil_socket_t fd,
                      struct sockaddr *address, int length, void *arg);
static bool create_events(void);
static void free_everything(void);
static void on_accept_error(struct evconnlistener *listener, void *arg);
static void run_loop(void);
static void list_append(struct client_list *list, struct client *client,
                        enum list_kind kind);
static struct event *client_event(struct client *client);
static void serve(evutil_socket_t fd, short events, void *arg);
static void carry_out(struct client *client, struct session_step step);
static void resume_accepting(void);
static void lose_client(struct client *client, int error);
static void depart(struct client *client, enum departure_cause cause);
static void close_after_flush(struct client *client);
static bool on_frame(void *context, const struct frame *frame);
static void drop_client(struct client *client, enum departure_cause cause);
static void close_client(struct client *client);
static bool watch(struct client *client, unsigned char events);
static void stop_loop(void);
static bool write_output(struct client *client);
static void list_remove(struct client_list *list, struct client *client,
                        enum list_kind kind);
static bool list_contains(const struct client_list *list,
                          const struct client *client, enum list_kind kind);
static void queue_output(struct client *client, const char *bytes,
                         size_t length);
static void deliver(void *context, uintptr_t owner, struct chat_text line);
static bool open_redis_room(void);
static bool take_input(struct client *client, const char *bytes, size_t length);
static void stop_joining(struct client *client);
static bool lines_out(const struct client *client);
static bool hold_end_of_input(struct client *client);
static bool hold_frame(struct client *client, const struct frame *frame);
static bool hold_rest(struct client *client, const char *bytes, size_t length);
static bool waits(const struct client *client);
static void resume_input(struct client *client);

/* ---- main ------------------------------------------------------------ */

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  int fd = startup_listen(&server.options, argc, argv, &port, &status);
  if (fd < 0)
    return status;
  server.session = session_context_make(server.options.room_name,
                                        server.options.max_line, true);
  server.room = room_create(cluster_room_capacity(&server.options));
  server.base = new_event_base();
  if (server.base)
    server.listener = evconnlistener_new(server.base, on_accept, NULL,
                                         LEV_OPT_CLOSE_ON_FREE, 0, fd);
  const char *failed = !server.session.scratch ? "malloc (the scratch)"
                       : !server.room          ? "room_create"
                       : !server.base          ? "event_base_new"
                       : !server.listener      ? "evconnlistener_new"
                       : !create_events()      ? "event_new"
                                               : NULL;
  if (failed) {
    fprintf(stderr, "chat-evented: %s failed\n", failed);
    if (!server.listener)
      close(fd);
    free_everything();
    return 1;
  }
  if (server.options.redis_url && !open_redis_room()) {
    free_everything();
    return 1;
  }
  evconnlistener_set_error_cb(server.listener, on_accept_error);

  options_print_startup(&server.options, port, stdout);
  log_line("%s running on port %u: chat-evented, libevent %s (%s)",
           server.options.room_name, port, event_get_version(),
           event_base_get_method(server.base));

  run_loop();

  free_everything();
  log_line("stopped");
  return 0;
}

/* ---- Accept ---------------------------------------------------------- */

static void schedule_login_timer(void) {
  struct client *oldest = server.waiting_for_name.first;
  if (!oldest || evtimer_pending(server.login_timer, NULL))
    return;
  long long wait = oldest->deadline - now_milliseconds();
  struct timeval delay = timeval_from_milliseconds(wait > 0 ? wait : 0);
  evtimer_add(server.login_timer, &delay);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd,
                      struct sockaddr *address, int length, void *arg) {
  (void)listener;
  (void)length;
  (void)arg;
  struct peer_address peer = peer_address_from(address);
  if (server.connections >= server.options.max_clients) {
    refuse_full(fd, &peer);
    return;
  }
  struct client *client =
      calloc(1, sizeof *client + event_get_struct_event_size());
  if (!client) {
    log_refused(&peer, "out of memory");
    evutil_closesocket(fd);
    return;
  }
  listener_send_at_once(fd);
  client->fd = fd;
  client->peer = peer;
  client->member = -1;
  line_framer_init(&client->framer, server.options.max_line);
  server.connections++;
  list_append(&server.clients, client, LIST_ALL);
  log_accepted(&peer);
  if (server.options.login_timeout > 0) {
    client->deadline =
        now_milliseconds() + server.options.login_timeout * 1000LL;
    list_append(&server.waiting_for_name, client, LIST_WAITING);
    schedule_login_timer();
  }
  event_assign(client_event(client), server.base, fd, EV_READ | EV_PERSIST,
               serve, client);
  event_add(client_event(client), NULL);
  client->watching = EV_READ;
  carry_out(client, session_start(&client->session, &server.session));
}

static void on_accept_retry(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  if (server.accept_paused) {
    resume_accepting();
  } else if (server.accept_stalled) {
    server.accept_stalled = false;
    log_line("accept resumed");
  }
}

/* accept() failed. Out of descriptors (or memory), the listener would fire
 * again at once and spin: pause it until a client leaves or a moment has
 * passed. A shortage is logged once when it starts, and once when it ends
 * (a retry period without running out), however many retries and
 * admissions it takes: accept() fails for want of a descriptor even when
 * nobody is waiting, so a failure says nothing about the queue. */
static void on_accept_error(struct evconnlistener *listener, void *arg) {
  (void)arg;
  int error = EVUTIL_SOCKET_ERROR();
  if (!accept_error_is_exhaustion(error)) {
    log_line("accept failed: %s", strerror(error));
    return;
  }
  if (!server.accept_stalled)
    log_line("accept paused: %s", strerror(error));
  server.accept_stalled = true;
  server.accept_paused = true;
  evconnlistener_disable(listener);
  struct timeval retry = timeval_from_milliseconds(ACCEPT_RETRY_MILLISECONDS);
  evtimer_add(server.accept_retry, &retry);
}

/* ---- Serve: a connection's events ------------------------------------ */

/* The client's socket has input: one read, and every line in it carried
 * out. Returns false when the client was freed. */
static bool read_input(struct client *client) {
  static char input[READ_CHUNK];
  ssize_t got = recv(client->fd, input, sizeof input, 0);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return true;
    lose_client(client, errno); /* reset, or worse */
    return false;
  }
  if (got == 0) {
    /* End of input, maybe only a half-close: every complete line was
     * already handled; once its own lines are back (with --redis), answer
     * what is pending, then close. */
    if (lines_out(client))
      return hold_end_of_input(client);
    depart(client, DEPARTURE_CLOSED);
    close_after_flush(client); /* which may free it */
    return false;
  }
  return take_input(client, input, (size_t)got);
}

/* Carries out every line in `bytes`. With --redis a line may have to
 * wait (a name for the room's answer, an answer for the sender's own lines
 * on their way): the lines stop there, the rest is held, and the socket is
 * not read until the wait is over (resume_input). Returns false when the
 * client was freed, or reads no more. */
static bool take_input(struct client *client, const char *bytes,
                       size_t length) {
  enum framer_status status =
      line_framer_push(&client->framer, bytes, length, on_frame, client);
  if (status == FRAMER_NO_MEMORY && client->state == CLIENT_OPEN)
    drop_client(client, DEPARTURE_ERROR);
  if (client->state == CLIENT_CLOSING) { /* it said QUIT */
    depart(client, DEPARTURE_QUIT);
    close_after_flush(client); /* which may free it */
    return false;
  }
  if (status == FRAMER_STOPPED && client->state == CLIENT_OPEN &&
      waits(client)) {
    size_t taken = client->framer.consumed;
    return hold_rest(client, bytes + taken, length - taken) &&
           watch(client, client->watching & EV_WRITE);
  }
  return client->state == CLIENT_OPEN;
}

static void serve(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  struct client *client = arg;
  if (client->state == CLIENT_DROPPED)
    return; /* on_drop_dropped closes it */
  if (client->state == CLIENT_CLOSING) {
    if (events & EV_TIMEOUT)
      close_client(client); /* it did not take its last lines in time */
    else
      write_output(client);
    return;
  }
  if ((events & EV_READ) && !read_input(client))
    return;
  if ((events & EV_WRITE) && client->state == CLIENT_OPEN)
    write_output(client);
}

/* ---- Serve: the login deadline --------------------------------------- */

static void on_login_timer(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  long long now = now_milliseconds();
  struct client *client;
  while ((client = server.waiting_for_name.first) && client->deadline <= now) {
    list_remove(&server.waiting_for_name, client, LIST_WAITING);
    log_departed(&client->peer, NULL, 0, DEPARTURE_TIMEOUT);
    carry_out(client, session_timed_out(&client->session));
    if (client->state == CLIENT_CLOSING)
      close_after_flush(client);
  }
  schedule_login_timer();
}

/* ---- Depart, drop, close after the last lines ------------------------ */

/* A registered user leaves the room: everyone else is told, once. */
static void depart(struct client *client, enum departure_cause cause) {
  list_remove(&server.waiting_for_name, client, LIST_WAITING);
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  carry_out(client, session_end(&client->session, &server.session));
}

/* Says the last lines, then closes. Its output may not even have been
 * written yet (that happens at the end of the turn): it goes out first, for
 * FLUSH_TIMEOUT_MILLISECONDS at most, so a client that never reads cannot
 * keep it. */
static void close_after_flush(struct client *client) {
  client->state = CLIENT_CLOSING;
  client->deadline = now_milliseconds() + FLUSH_TIMEOUT_MILLISECONDS;
  list_remove(&server.waiting_for_name, client, LIST_WAITING);
  if (list_contains(&server.pending_output, client, LIST_PENDING))
    return; /* written at the end of the turn, then freed or watched */
  if (client->output.length == 0)
    close_client(client);
  else
    watch(client, EV_WRITE); /* its socket is full: wait for room */
}

/* Dropping happens in two steps, because a client dropped in the middle of
 * a broadcast must not hear of its own departure before the others have
 * had the line being broadcast: it is closed (and departs) from an event
 * that runs once the callback in progress has returned. Until then it is
 * given nothing and reads nothing. */
static void drop_client(struct client *client, enum departure_cause cause) {
  stop_joining(client);
  list_remove(&server.waiting_for_echo, client, LIST_ECHO);
  client->state = CLIENT_DROPPED;
  client->cause = (unsigned char)cause;
  list_remove(&server.pending_output, client, LIST_PENDING);
  list_remove(&server.waiting_for_name, client, LIST_WAITING);
  client->next_dropped = server.dropped;
  server.dropped = client;
  event_active(server.drop_dropped, 0, 0);
}

static void on_drop_dropped(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  while (server.dropped) { /* a departure may drop more clients */
    struct client *client = server.dropped;
    server.dropped = client->next_dropped;
    depart(client, (enum departure_cause)client->cause);
    close_client(client);
  }
}

/* A read or a write failed (`error`): the connection is gone, or unusable.
 * Nothing more can be said to it. */
static void lose_client(struct client *client, int error) {
  if (client->state == CLIENT_OPEN)
    depart(client, error == ECONNRESET || error == EPIPE ||
                           error == ETIMEDOUT || error == ECONNABORTED
                       ? DEPARTURE_CLOSED
                       : DEPARTURE_FAILED);
  close_client(client);
}

static void close_client(struct client *client) {
  stop_joining(client);
  list_remove(&server.waiting_for_echo, client, LIST_ECHO);
  if (client->held) {
    byte_buffer_release(&client->held->frame);
    byte_buffer_release(&client->held->rest);
    free(client->held);
  }
  list_remove(&server.clients, client, LIST_ALL);
  list_remove(&server.waiting_for_name, client, LIST_WAITING);
  list_remove(&server.pending_output, client, LIST_PENDING);
  event_del(client_event(client));
  evutil_closesocket(client->fd);
  line_framer_release(&client->framer);
  byte_buffer_release(&client->output);
  free(client);
  server.connections--;
  resume_accepting(); /* a descriptor is free: waiting clients get it now */
  if (server.shutting_down && server.connections == 0)
    stop_loop();
}

/* Points the client's event at what it waits for: its input while it is
 * open, room in its socket while output is left over. A closing client
 * waits for room only, until its deadline, once per call. Returns false
 * when it was freed instead (its deadline has passed). With libevent's
 * epoll changelist, the change costs one epoll_ctl at the next wait, and
 * none when it is undone within the same turn. */
static bool watch(struct client *client, unsigned char events) {
  struct event *event = client_event(client);
  struct timeval left, *timeout = NULL;
  if (client->state == CLIENT_CLOSING) {
    long long ms = client->deadline - now_milliseconds();
    if (ms <= 0) {
      close_client(client);
      return false;
    }
    left = timeval_from_milliseconds(ms);
    timeout = &left;
  } else if (events == client->watching) {
    return true;
  }
  event_del(event);
  short persist = client->state == CLIENT_CLOSING ? 0 : EV_PERSIST;
  event_assign(event, server.base, client->fd, (short)(events | persist), serve,
               client);
  event_add(event, timeout);
  client->watching = events;
  return true;
}

static void stop_loop(void) {
  server.stopped = true;
  event_base_loopbreak(server.base);
}

/* Accepting again after running out of descriptors; if it does not run
 * out again before accept_retry fires, the shortage is over. */
static void resume_accepting(void) {
  if (server.accept_paused && !server.shutting_down) {
    server.accept_paused = false;
    evconnlistener_enable(server.listener);
    struct timeval retry = timeval_from_milliseconds(ACCEPT_RETRY_MILLISECONDS);
    evtimer_add(server.accept_retry, &retry);
  }
}

/* ---- Shut down ------------------------------------------------------- */

static void on_shutdown_deadline(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  stop_loop();
}

/* SIGINT, SIGTERM or SIGHUP: stop accepting, tell every client, let the
 * goodbyes drain for a moment, then leave the loop. */
static void shut_down(evutil_socket_t signal_number, short events, void *arg) {
  (void)events;
  (void)arg;
  if (server.shutting_down)
    return;
  server.shutting_down = true;
  log_shutting_down((int)signal_number, server.connections);
  evconnlistener_disable(server.listener);
  /* The other servers hear of our users' departures now, not after the
   * lease; from here on the room is this server's own, for the goodbyes. */
  if (server.redis_timer)
    event_del(server.redis_timer);
  redis_room_close(server.redis);
  server.redis = NULL;
  struct client *client = server.clients.first;
  while (client) {
    struct client *next = client->links[LIST_ALL].next; /* may be freed */
    if (client->state == CLIENT_OPEN) {
      carry_out(client, session_shutdown(&client->session));
      if (client->state == CLIENT_CLOSING) /* not dropped: its goodbye fit */
        close_after_flush(client);
    }
    client = next;
  }
  if (server.connections == 0) {
    stop_loop();
    return;
  }
  struct timeval grace = timeval_from_milliseconds(SHUTDOWN_GRACE_MILLISECONDS);
  evtimer_add(server.shutdown_deadline, &grace);
}

/* ---- Helpers: the session's steps, over this model's hooks (step.h) -- */

static void send_to_client(void *client, const char *bytes, size_t length) {
  queue_output(client, bytes, length);
}

static const char *join_room(void *client, struct chat_text name) {
  struct client *joining = client;
  if (server.redis) {
    const char *answer = redis_room_join(server.redis, joining, name);
    joining->joining = answer == STEP_JOIN_PENDING;
    return answer;
  }
  return room_join_member(server.room, name, (uintptr_t)joining,
                          &joining->member);
}

static bool say_to_room(void *client, struct chat_text line) {
  (void)client;
  if (server.redis) { /* heard when Redis gives it back */
    uint64_t number = redis_room_say(server.redis, line);
    if (number)
      ((struct client *)client)->last_said = number;
    return number != 0;
  }
  room_broadcast(server.room, line, deliver, NULL);
  return true;
}

/* With Redis, the member stays in the room, owned by nobody, until its
 * departure comes back from Redis in the room's order (on_departed). */
static void leave_room(void *client, struct chat_text departure) {
  struct client *leaving = client;
  if (server.redis) {
    room_set_owner(server.room, leaving->member, 0);
    redis_room_leave(server.redis,
                     room_member_name(server.room, leaving->member));
    leaving->member = -1;
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
  list_remove(&server.waiting_for_name, registered, LIST_WAITING);
  log_registered(&registered->peer, registered->session.name,
                 registered->session.name_length);
}

/* It reads no more; whoever carried the step out closes it once its last
 * lines are out (close_after_flush), having logged why. */
static void close_session(void *client) {
  struct client *closing = client;
  stop_joining(closing);
  if (closing->state == CLIENT_OPEN)
    closing->state = CLIENT_CLOSING;
}

/* One thread, so no lock and nothing to do after one. */
static const struct step_model evented_model = {
    .send = send_to_client,
    .join = join_room,
    .leave = leave_room,
    .say = say_to_room,
    .members = room_members,
    .registered = on_registered,
    .close = close_session,
};

static void carry_out(struct client *client, struct session_step step) {
  step_carry_out(&evented_model, client, &client->session, &server.session,
                 step);
}

/* ---- Helpers: the room shared through Redis (os/redis_room.h) -------- */

static void on_redis_tick(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  redis_room_tick(server.redis);
}

static int attach_redis(void *model, redisAsyncContext *context) {
  (void)model;
  return redisLibeventAttach(context, server.base) == REDIS_OK ? 0 : -1;
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
  if (owner) { /* retired while still here: this user alone is lost */
    owner->member = -1;
    log_departed(&owner->peer, owner->session.name, owner->session.name_length,
                 DEPARTURE_ROOM_LOST);
    carry_out(owner, session_room_lost(&owner->session));
    if (owner->state == CLIENT_CLOSING)
      close_after_flush(owner);
  }
  room_broadcast(server.room, line, deliver, NULL);
}

/* The answer to a name: carried on as any step, then the input held
 * meanwhile is taken, and the socket read again. */
static void on_join_answered(void *model, void *client, struct chat_text name,
                             const char *stored) {
  (void)model;
  struct client *joining = client;
  joining->joining = false;
  step_join_answered(&evented_model, joining, &joining->session,
                     &server.session, name, stored);
  resume_input(joining);
}

/* This server's lines are back from Redis up to a new one: the clients
 * whose answers waited for their own lines carry on, from an event that
 * runs once the callback in progress has returned (carrying on says more
 * lines, which may move this on again). */
static void on_echoed(void *model, uint64_t done) {
  (void)model;
  (void)done;
  if (server.waiting_for_echo.first)
    event_active(server.release_echoed, 0, 0);
}

static void on_release_echoed(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  struct client *client = server.waiting_for_echo.first;
  while (client) {
    struct client *next = client->links[LIST_ECHO].next;
    if (!lines_out(client)) {
      list_remove(&server.waiting_for_echo, client, LIST_ECHO);
      resume_input(client); /* which may free it, not `next` */
    }
    client = next;
  }
}

/* Retired from the room: its users are told and closed; naming clients
 * stay, and their names wait for Redis to be back. */
static void on_room_lost(void *model) {
  (void)model;
  struct client *client = server.clients.first;
  while (client) {
    struct client *next = client->links[LIST_ALL].next; /* may be freed */
    if (client->state == CLIENT_OPEN &&
        session_is_registered(&client->session)) {
      log_departed(&client->peer, client->session.name,
                   client->session.name_length, DEPARTURE_ROOM_LOST);
      client->member = -1;
      carry_out(client, session_room_lost(&client->session));
      if (client->state == CLIENT_CLOSING)
        close_after_flush(client);
    }
    client = next;
  }
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
    .read_after_turn = true,
};

static bool open_redis_room(void) {
  char error[512];
  server.redis =
      redis_room_open(&server.options, &redis_model, error, sizeof error);
  if (!server.redis) {
    fprintf(stderr, "chat-evented: %s\n", error);
    return false;
  }
  server.release_echoed =
      event_new(server.base, -1, 0, on_release_echoed, NULL);
  server.redis_timer =
      event_new(server.base, -1, EV_PERSIST, on_redis_tick, NULL);
  struct timeval tick = timeval_from_milliseconds(
      (long long)(redis_room_tick_seconds(server.redis) * 1000));
  if (!server.release_echoed || !server.redis_timer ||
      event_add(server.redis_timer, &tick) != 0) {
    fprintf(stderr, "chat-evented: event_new failed\n");
    return false;
  }
  return true;
}

/* A client that stops reading while its name waits: the room releases the
 * name, if it grants it, with nobody to give it to. */
static void stop_joining(struct client *client) {
  if (client->joining && server.redis)
    redis_room_forget(server.redis, client);
  client->joining = false;
}

/* Whether the client has lines on their way through Redis, which anything
 * said to it alone must not overtake. */
static bool lines_out(const struct client *client) {
  return server.redis && client->last_said != 0 &&
         !redis_room_echoed(server.redis, client->last_said);
}

/* Whether its input stops: its name, or a line, waits. */
static bool waits(const struct client *client) {
  return client->joining || (client->held && client->held->has_frame);
}

static struct held_input *held_input(struct client *client) {
  if (!client->held)
    client->held = calloc(1, sizeof *client->held);
  if (!client->held)
    drop_client(client, DEPARTURE_ERROR);
  return client->held;
}

static void wait_for_echo(struct client *client) {
  if (!list_contains(&server.waiting_for_echo, client, LIST_ECHO))
    list_append(&server.waiting_for_echo, client, LIST_ECHO);
}

/* Returns false: the framer stops at this frame. */
static bool hold_frame(struct client *client, const struct frame *frame) {
  struct held_input *held = held_input(client);
  if (!held)
    return false;
  if (!byte_buffer_append(&held->frame, frame->bytes, frame->length)) {
    drop_client(client, DEPARTURE_ERROR);
    return false;
  }
  held->frame_kind = (unsigned char)frame->kind;
  held->has_frame = true;
  wait_for_echo(client);
  return false;
}

static bool hold_rest(struct client *client, const char *bytes, size_t length) {
  struct held_input *held = held_input(client);
  if (held && byte_buffer_append(&held->rest, bytes, length))
    return true;
  if (held)
    drop_client(client, DEPARTURE_ERROR);
  return false;
}

static bool hold_end_of_input(struct client *client) {
  struct held_input *held = held_input(client);
  if (!held)
    return false;
  held->end_of_input = true;
  wait_for_echo(client);
  return watch(client, client->watching & EV_WRITE);
}

/* The wait is over (the name answered, or the client's own lines back):
 * the held frame, then the held bytes, then the end of input if it came,
 * and the socket is read again, unless something waits anew. */
static void resume_input(struct client *client) {
  struct held_input *held = client->held;
  client->held = NULL;
  bool open = client->state == CLIENT_OPEN;
  if (held && open && held->has_frame) {
    struct frame frame = {(enum frame_kind)held->frame_kind, held->frame.bytes,
                          held->frame.length};
    bool go_on = on_frame(client, &frame);
    if (client->state == CLIENT_CLOSING) { /* it said QUIT */
      depart(client, DEPARTURE_QUIT);
      close_after_flush(client);
      open = false;
    } else if (!go_on) {
      open = client->state == CLIENT_OPEN &&
             hold_rest(client, held->rest.bytes, held->rest.length);
      held->rest.length = 0;
    }
  }
  if (held && open && held->rest.length > 0)
    open = take_input(client, held->rest.bytes, held->rest.length);
  open = open && client->state == CLIENT_OPEN;
  if (held && open && held->end_of_input) {
    if (waits(client) || lines_out(client)) {
      hold_end_of_input(client);
    } else {
      depart(client, DEPARTURE_CLOSED);
      close_after_flush(client);
    }
    open = false;
  }
  if (held) {
    byte_buffer_release(&held->frame);
    byte_buffer_release(&held->rest);
    free(held);
  }
  if (open && !waits(client))
    watch(client, (unsigned char)(EV_READ | (client->watching & EV_WRITE)));
}

/* Returns false to stop the framer: the client reads no more (it said
 * QUIT, or was dropped). */
static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  struct session_step step;
  if (!step_for_frame(&client->session, &server.session, frame,
                      lines_out(client), &step))
    return hold_frame(client, frame); /* false: the lines stop here */
  carry_out(client, step);
  return client->state == CLIENT_OPEN && !client->joining;
}

/* ---- Helpers: output, written once per turn of the loop -------------- */

/* Queues bytes for one client, unless that would leave more than
 * --max-backlog bytes unsent: then it is dropped instead, and nobody else
 * waits for it. The bytes go out at the end of the turn (write_pending), or
 * when the socket has room, if it had none. */
static void queue_output(struct client *client, const char *bytes,
                         size_t length) {
  if (client->state != CLIENT_OPEN || length == 0)
    return;
  if (client->output.length + length > server.options.max_backlog) {
    drop_client(client, DEPARTURE_SLOW);
    return;
  }
  if (!byte_buffer_append(&client->output, bytes, length)) {
    drop_client(client, DEPARTURE_ERROR); /* out of memory */
    return;
  }
  if (!(client->watching & EV_WRITE) &&
      !list_contains(&server.pending_output, client, LIST_PENDING))
    list_append(&server.pending_output, client, LIST_PENDING);
}

/* The room's delivery interface: a room line to one member. The line was
 * formatted once; each recipient gets a copy of its bytes. */
static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  (void)context;
  if (owner) /* 0: a user of another server */
    queue_output((struct client *)owner, line.bytes, line.length);
}

/* One send() for everything the client has not taken yet. What the socket
 * does not take waits for room in it; an empty buffer is freed (an idle
 * client holds none), and a closing client whose last lines are out is
 * closed. Returns false when the client was freed. */
static bool write_output(struct client *client) {
  struct byte_buffer *output = &client->output;
  if (output->length > 0) {
    ssize_t sent = send(client->fd, output->bytes, output->length,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      lose_client(client, errno);
      return false;
    }
    if (sent > 0)
      byte_buffer_consume(output, (size_t)sent);
  }
  if (output->length > 0)
    return watch(client,
                 client->state == CLIENT_OPEN ? EV_READ | EV_WRITE : EV_WRITE);
  byte_buffer_release(output);
  if (client->state == CLIENT_CLOSING) {
    close_client(client);
    return false;
  }
  return watch(client, EV_READ);
}

static void note_busy(void) {
  heap_note_busy();
  if (!evtimer_pending(server.heap_timer, NULL)) {
    struct timeval wait = timeval_from_milliseconds(heap_wait(-1));
    evtimer_add(server.heap_timer, &wait);
  }
}

/* The end of a turn of the loop: every client given output in it gets one
 * write for all of it. A write that fails makes its client depart, which
 * queues a line for the others: they are written in this same pass. */
static void write_pending(void) {
  if (!server.pending_output.first)
    return;
  struct client *client;
  while ((client = server.pending_output.first)) {
    list_remove(&server.pending_output, client, LIST_PENDING);
    write_output(client);
  }
  note_busy();
}

/* Output buffers come and go with every broadcast, and their heap is kept
 * meanwhile (heap.h); once nothing was written for a second, it goes back. */
static void on_heap_timer(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  int wait = heap_wait(-1);
  if (wait >= 0) {
    struct timeval delay = timeval_from_milliseconds(wait);
    evtimer_add(server.heap_timer, &delay);
  }
}

/* ---- Helpers: lists -------------------------------------------------- */

static void list_append(struct client_list *list, struct client *client,
                        enum list_kind kind) {
  client->links[kind] = (struct links){.previous = list->last, .next = NULL};
  if (list->last)
    list->last->links[kind].next = client;
  else
    list->first = client;
  list->last = client;
}

static bool list_contains(const struct client_list *list,
                          const struct client *client, enum list_kind kind) {
  return client->links[kind].previous || list->first == client;
}

static void list_remove(struct client_list *list, struct client *client,
                        enum list_kind kind) {
  if (!list_contains(list, client, kind))
    return;
  struct links *links = &client->links[kind];
  if (links->previous)
    links->previous->links[kind].next = links->next;
  else
    list->first = links->next;
  if (links->next)
    links->next->links[kind].previous = links->previous;
  else
    list->last = links->previous;
  *links = (struct links){0};
}

static struct event *client_event(struct client *client) {
  return (struct event *)(void *)client->event_data;
}

/* ---- Helpers: setup, loop, teardown ---------------------------------- */

static const int stop_signals[3] = {SIGINT, SIGTERM, SIGHUP};

static bool create_events(void) {
  bool created = true;
  for (int i = 0; i < 3; i++) {
    server.on_signal[i] =
        evsignal_new(server.base, stop_signals[i], shut_down, NULL);
    created = created && server.on_signal[i] &&
              event_add(server.on_signal[i], NULL) == 0;
  }
  server.login_timer = evtimer_new(server.base, on_login_timer, NULL);
  server.accept_retry = evtimer_new(server.base, on_accept_retry, NULL);
  server.drop_dropped = event_new(server.base, -1, 0, on_drop_dropped, NULL);
  server.shutdown_deadline =
      evtimer_new(server.base, on_shutdown_deadline, NULL);
  server.heap_timer = evtimer_new(server.base, on_heap_timer, NULL);
  return created && server.login_timer && server.accept_retry &&
         server.drop_dropped && server.shutdown_deadline && server.heap_timer;
}

/* One thread, so no locks. And the epoll changelist: a change of what a
 * client's event waits for is folded with the next one of the same turn
 * into at most one epoll_ctl, made just before the loop waits. (Its caveat,
 * dup()ed descriptors, does not apply: every socket here is its own.) */
static struct event_base *new_event_base(void) {
  struct event_config *config = event_config_new();
  if (!config)
    return NULL;
  event_config_set_flag(config, EVENT_BASE_FLAG_NOLOCK);
  event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  struct event_base *base = event_base_new_with_config(config);
  event_config_free(config);
  return base;
}

/* The loop: wait until something is ready and run every callback that is
 * (EVLOOP_ONCE), then write what they queued, then wait again. */
static void run_loop(void) {
  while (!server.stopped) {
    if (event_base_loop(server.base, EVLOOP_ONCE) < 0)
      break;
    write_pending();
    redis_room_turn_done(server.redis); /* the next lines from Redis */
  }
}

static void free_everything(void) {
  while (server.clients.first) /* clients that never finished closing */
    close_client(server.clients.first);
  redis_room_close(server.redis);
  server.redis = NULL;
  struct event *events[] = {server.on_signal[0],      server.on_signal[1],
                            server.on_signal[2],      server.login_timer,
                            server.accept_retry,      server.drop_dropped,
                            server.shutdown_deadline, server.heap_timer,
                            server.redis_timer,       server.release_echoed};
  for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
    if (events[i])
      event_free(events[i]);
  }
  if (server.listener)
    evconnlistener_free(server.listener);
  if (server.base)
    event_base_free(server.base);
  free(server.room);
  free(server.session.scratch);
}
