/* chat-evented: the chat server as one event loop (libevent).
 *
 * The model: one thread, one event_base. The kernel tells the loop which
 * sockets are ready (epoll); the loop runs the callback of each, and no
 * callback ever blocks. Every client is a bufferevent: libevent reads into
 * its input buffer and writes out of its output buffer when the socket can
 * take more. The room is a plain data structure: with one thread, nothing
 * else can touch it, so it needs no lock.
 *
 * Its cost: a connection is some memory (a bufferevent, our client record,
 * a slot in the room) and a file descriptor; no stack, no process, no
 * context switch. A message to the room costs one copy into each recipient's
 * output buffer, and one write per recipient per loop turn.
 *
 * Where it breaks: it uses one core. One slow callback (a huge NAMES list, a
 * burst of long lines) delays every client; CPU-heavy work would need
 * threads behind the loop. And it is the hardest of the three to read: the
 * session's flow is spread over callbacks instead of down one function. */
#include "clock.h"
#include "heap.h"
#include "line_framer.h"
#include "listener.h"
#include "log.h"
#include "options.h"
#include "refuse.h"
#include "room.h"
#include "session.h"
#include "startup.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a closing client may take to read its last lines. */
#define FLUSH_TIMEOUT_SECONDS 5
/* How long shutdown waits for goodbyes to drain (SPEC.md: exit within 2 s). */
#define SHUTDOWN_GRACE_MILLISECONDS 1500
/* How long accepting pauses when the process runs out of descriptors. */
#define ACCEPT_RETRY_MILLISECONDS 250
/* How long the room must be quiet before freed heap goes back (heap.h). */
#define QUIET_MILLISECONDS 1000

enum client_state {
  CLIENT_OPEN,    /* reading and writing */
  CLIENT_CLOSING, /* saying its last lines, then closed */
  CLIENT_DROPPED, /* too slow: closed at the end of this loop turn */
};

struct client {
  struct bufferevent *bev;
  struct client *previous, *next; /* every client, for shutdown */
  struct client *waiting_previous, *waiting_next; /* login-timeout queue */
  struct client *next_dropped;
  long long login_deadline; /* milliseconds, monotonic clock */
  struct line_framer framer;
  struct session session;
  struct peer_address peer;
  int member; /* index in the room while registered */
  enum client_state state;
};

/* A doubly linked list, through one of two pairs of links in struct
 * client: every client; and the unregistered ones, oldest first. */
struct client_list {
  struct client *first, *last;
};

static struct server {
  struct chat_options options;
  struct event_base *base;
  struct evconnlistener *listener;
  struct event *on_sigint, *on_sigterm;
  struct event *login_timer;  /* fires at the oldest login deadline */
  struct event *accept_retry; /* re-enables accepting after EMFILE */
  struct event *drop_slow;    /* closes dropped clients after a broadcast */
  struct event *shutdown_deadline;
  struct event *quiet_check; /* gives heap back once output stops */
  struct room *room;
  struct session_context session;
  struct client_list clients;
  struct client_list waiting_for_name;
  struct client *dropped;
  size_t connections;
  size_t output_since_quiet_check; /* bytes queued */
  bool accept_paused;
  bool shutting_down;
} server;

/* ---- Lists ---------------------------------------------------------- */

static void list_append(struct client_list *list, struct client *client,
                        bool waiting) {
  struct client **previous =
      waiting ? &client->waiting_previous : &client->previous;
  struct client **next = waiting ? &client->waiting_next : &client->next;
  *previous = list->last;
  *next = NULL;
  if (list->last)
    *(waiting ? &list->last->waiting_next : &list->last->next) = client;
  else
    list->first = client;
  list->last = client;
}

static void list_remove(struct client_list *list, struct client *client,
                        bool waiting) {
  struct client *previous =
      waiting ? client->waiting_previous : client->previous;
  struct client *next = waiting ? client->waiting_next : client->next;
  if (previous)
    *(waiting ? &previous->waiting_next : &previous->next) = next;
  else if (list->first == client)
    list->first = next;
  else
    return; /* not in this list */
  if (next)
    *(waiting ? &next->waiting_previous : &next->previous) = previous;
  else
    list->last = previous;
  if (waiting)
    client->waiting_previous = client->waiting_next = NULL;
  else
    client->previous = client->next = NULL;
}

static struct timeval milliseconds(long long ms) {
  return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* ---- Output --------------------------------------------------------- */

static void drop_slow_client(struct client *client);

/* Queues bytes for one client, unless that would put more than
 * --max-backlog bytes in its output buffer: then it is dropped instead, and
 * nobody else waits for it. */
static void queue_output(struct client *client, const char *bytes,
                         size_t length) {
  if (client->state != CLIENT_OPEN || length == 0)
    return;
  struct evbuffer *output = bufferevent_get_output(client->bev);
  if (evbuffer_get_length(output) + length > server.options.max_backlog) {
    drop_slow_client(client);
    return;
  }
  if (evbuffer_add(output, bytes, length) < 0) {
    drop_slow_client(client); /* out of memory: the same remedy */
    return;
  }
  if (server.output_since_quiet_check == 0 &&
      !evtimer_pending(server.quiet_check, NULL)) {
    struct timeval quiet = milliseconds(QUIET_MILLISECONDS);
    evtimer_add(server.quiet_check, &quiet);
  }
  server.output_since_quiet_check += length;
}

/* Output buffers come and go with every broadcast, and their heap is kept
 * meanwhile (heap.h); once nothing was queued for a whole second, an idle
 * room gives it back. */
static void on_quiet_check(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  if (server.output_since_quiet_check == 0) {
    heap_return_freed_memory();
    return;
  }
  server.output_since_quiet_check = 0;
  struct timeval quiet = milliseconds(QUIET_MILLISECONDS);
  evtimer_add(server.quiet_check, &quiet);
}

/* The room's delivery interface: a room line to one member. The line was
 * formatted once; each recipient gets a copy of its bytes, which for a chat
 * line is cheaper than a shared reference (one malloc per recipient). */
static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  (void)context;
  queue_output((struct client *)owner, line.bytes, line.length);
}

static void write_to_client(void *context, const char *bytes, size_t length) {
  queue_output(context, bytes, length);
}

/* ---- Closing -------------------------------------------------------- */

static void client_free(struct client *client) {
  list_remove(&server.clients, client, false);
  list_remove(&server.waiting_for_name, client, true);
  line_framer_release(&client->framer);
  bufferevent_free(client->bev); /* closes the socket */
  free(client);
  server.connections--;
  if (server.accept_paused && !server.shutting_down) {
    server.accept_paused = false;
    evconnlistener_enable(server.listener);
  }
  if (server.shutting_down && server.connections == 0)
    event_base_loopbreak(server.base);
}

/* A registered user leaves the room: everyone else is told, once. */
static void depart(struct client *client, enum departure_cause cause) {
  list_remove(&server.waiting_for_name, client, true);
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  struct session_step step = session_end(&client->session, &server.session);
  if (step.room == SESSION_ROOM_LEAVE) {
    room_leave(server.room, client->member);
    room_broadcast(server.room, step.room_line, deliver, NULL);
  }
}

static void on_flushed(struct bufferevent *bev, void *arg) {
  (void)bev;
  client_free(arg);
}

static void on_closing_event(struct bufferevent *bev, short events, void *arg) {
  (void)bev;
  (void)events; /* the peer went away, or the flush timed out */
  client_free(arg);
}

/* Says the last lines, then closes: libevent would drop pending output if
 * we freed the bufferevent now. A write timeout frees a client that never
 * reads them. */
static void close_after_flush(struct client *client) {
  client->state = CLIENT_CLOSING;
  bufferevent_disable(client->bev, EV_READ);
  if (evbuffer_get_length(bufferevent_get_output(client->bev)) == 0) {
    client_free(client);
    return;
  }
  struct timeval timeout = {.tv_sec = FLUSH_TIMEOUT_SECONDS};
  bufferevent_setcb(client->bev, NULL, on_flushed, on_closing_event, client);
  bufferevent_setwatermark(client->bev, EV_WRITE, 0, 0);
  bufferevent_set_timeouts(client->bev, NULL, &timeout);
  bufferevent_enable(client->bev, EV_WRITE);
}

/* Dropping happens in two steps, because a client found slow in the middle
 * of a broadcast must not hear of its own departure before the others have
 * had the line being broadcast. */
static void drop_slow_client(struct client *client) {
  client->state = CLIENT_DROPPED;
  client->next_dropped = server.dropped;
  server.dropped = client;
  event_active(server.drop_slow, 0, 0);
}

static void on_drop_slow(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  while (server.dropped) { /* a departure may drop more clients */
    struct client *client = server.dropped;
    server.dropped = client->next_dropped;
    depart(client, DEPARTURE_SLOW);
    client_free(client);
  }
}

/* ---- The session's steps ---------------------------------------------- */

static bool carry_out(struct client *client, struct session_step step);

static void join_room(struct client *client, struct chat_text name) {
  const char *stored = NULL;
  int member = room_join(server.room, name, (uintptr_t)client, &stored);
  if (member >= 0) {
    client->member = member;
    list_remove(&server.waiting_for_name, client, true);
    log_registered(&client->peer, stored, (unsigned)name.length);
  }
  carry_out(client,
            session_joined(&client->session, &server.session, name, stored));
}

/* Carries out one step of the session logic. Returns false when the client
 * stops reading (it said QUIT, or was dropped). */
static bool carry_out(struct client *client, struct session_step step) {
  queue_output(client, step.reply.bytes, step.reply.length);
  switch (step.room) {
  case SESSION_ROOM_NONE:
    break;
  case SESSION_ROOM_JOIN:
    join_room(client, step.name);
    break;
  case SESSION_ROOM_SAY:
    room_broadcast(server.room, step.room_line, deliver, NULL);
    break;
  case SESSION_ROOM_NAMES:
    room_names(server.room, write_to_client, client);
    break;
  case SESSION_ROOM_LEAVE: /* only session_end asks for it: see depart() */
    break;
  }
  if (step.close && client->state == CLIENT_OPEN)
    client->state = CLIENT_CLOSING; /* the caller closes it after a flush */
  return client->state == CLIENT_OPEN;
}

static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  return carry_out(client,
                   session_on_frame(&client->session, &server.session, frame));
}

/* ---- Client callbacks --------------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg) {
  struct client *client = arg;
  struct evbuffer *input = bufferevent_get_input(bev);
  /* Hand the framer every chunk of the input buffer in place, then drain
   * it all: an undrained input would make libevent call us again forever. */
  struct evbuffer_iovec chunks[8];
  while (client->state == CLIENT_OPEN && evbuffer_get_length(input) > 0) {
    int count = evbuffer_peek(input, -1, NULL, chunks, 8);
    if (count > 8)
      count = 8;
    size_t consumed = 0;
    for (int i = 0; i < count && client->state == CLIENT_OPEN; i++) {
      enum framer_status status =
          line_framer_push(&client->framer, chunks[i].iov_base,
                           chunks[i].iov_len, on_frame, client);
      consumed += chunks[i].iov_len;
      if (status == FRAMER_NO_MEMORY) {
        depart(client, DEPARTURE_ERROR);
        client_free(client);
        return;
      }
    }
    evbuffer_drain(input, consumed);
  }
  if (client->state != CLIENT_OPEN)
    evbuffer_drain(input, evbuffer_get_length(input));
  if (client->state == CLIENT_CLOSING) { /* it said QUIT */
    depart(client, DEPARTURE_QUIT);
    close_after_flush(client);
  }
}

static void on_event(struct bufferevent *bev, short events, void *arg) {
  (void)bev;
  struct client *client = arg;
  if (client->state == CLIENT_DROPPED)
    return; /* on_drop_slow will close it */
  if (events & BEV_EVENT_EOF) {
    /* End of input, maybe only a half-close: every complete line was
     * already handled; answer what is pending, then close. */
    depart(client, DEPARTURE_CLOSED);
    close_after_flush(client);
  } else if (events & BEV_EVENT_ERROR) { /* reset, or worse: nothing to say */
    depart(client, DEPARTURE_CLOSED);
    client_free(client);
  }
}

/* ---- Accepting ------------------------------------------------------ */

static void schedule_login_timer(void) {
  struct client *oldest = server.waiting_for_name.first;
  if (!oldest || evtimer_pending(server.login_timer, NULL))
    return;
  long long wait = oldest->login_deadline - now_milliseconds();
  struct timeval delay = milliseconds(wait > 0 ? wait : 0);
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
  struct client *client = calloc(1, sizeof *client);
  struct bufferevent *bev =
      client ? bufferevent_socket_new(server.base, fd, BEV_OPT_CLOSE_ON_FREE)
             : NULL;
  if (!bev) {
    log_refused(&peer, "out of memory");
    free(client);
    evutil_closesocket(fd);
    return;
  }
  listener_send_at_once(fd);
  client->bev = bev;
  client->peer = peer;
  client->member = -1;
  line_framer_init(&client->framer, server.options.max_line);
  server.connections++;
  list_append(&server.clients, client, false);
  log_accepted(&peer);
  if (server.options.login_timeout > 0) {
    client->login_deadline =
        now_milliseconds() + server.options.login_timeout * 1000LL;
    list_append(&server.waiting_for_name, client, true);
    schedule_login_timer();
  }
  bufferevent_setcb(bev, on_read, NULL, on_event, client);
  bufferevent_enable(bev, EV_READ); /* a new bufferevent reads nothing */
  carry_out(client, session_start(&client->session, &server.session));
}

static void on_accept_retry(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  if (server.accept_paused && !server.shutting_down) {
    server.accept_paused = false;
    evconnlistener_enable(server.listener);
  }
}

/* accept() failed. Out of descriptors (or memory), the listener would fire
 * again at once and spin: pause it until a client leaves or a moment has
 * passed. */
static void on_accept_error(struct evconnlistener *listener, void *arg) {
  (void)arg;
  int error = EVUTIL_SOCKET_ERROR();
  if (error != EMFILE && error != ENFILE && error != ENOBUFS &&
      error != ENOMEM) {
    log_line("accept failed: %s", strerror(error));
    return;
  }
  if (!server.accept_paused)
    log_line("accept paused: %s", strerror(error));
  server.accept_paused = true;
  evconnlistener_disable(listener);
  struct timeval retry = milliseconds(ACCEPT_RETRY_MILLISECONDS);
  evtimer_add(server.accept_retry, &retry);
}

/* ---- Timers --------------------------------------------------------- */

static void on_login_timer(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  long long now = now_milliseconds();
  struct client *client;
  while ((client = server.waiting_for_name.first) &&
         client->login_deadline <= now) {
    list_remove(&server.waiting_for_name, client, true);
    log_departed(&client->peer, NULL, 0, DEPARTURE_TIMEOUT);
    carry_out(client, session_timed_out(&client->session));
    if (client->state == CLIENT_CLOSING)
      close_after_flush(client);
  }
  schedule_login_timer();
}

/* ---- Shutdown ------------------------------------------------------- */

static void on_shutdown_deadline(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  (void)arg;
  event_base_loopbreak(server.base);
}

/* SIGINT or SIGTERM: stop accepting, tell every client, let the goodbyes
 * drain for a moment, then leave the loop. */
static void on_signal(evutil_socket_t signal_number, short events, void *arg) {
  (void)events;
  (void)arg;
  if (server.shutting_down)
    return;
  server.shutting_down = true;
  log_shutting_down((int)signal_number, server.connections);
  evconnlistener_disable(server.listener);
  struct client *client = server.clients.first;
  while (client) {
    struct client *next = client->next; /* client may be freed */
    if (client->state == CLIENT_OPEN) {
      carry_out(client, session_shutdown(&client->session));
      close_after_flush(client);
    }
    client = next;
  }
  if (server.connections == 0) {
    event_base_loopbreak(server.base);
    return;
  }
  struct timeval grace = milliseconds(SHUTDOWN_GRACE_MILLISECONDS);
  evtimer_add(server.shutdown_deadline, &grace);
}

/* ---- Setup, loop, teardown ---------------------------------------------- */

static bool create_events(void) {
  server.on_sigint = evsignal_new(server.base, SIGINT, on_signal, NULL);
  server.on_sigterm = evsignal_new(server.base, SIGTERM, on_signal, NULL);
  server.login_timer = evtimer_new(server.base, on_login_timer, NULL);
  server.accept_retry = evtimer_new(server.base, on_accept_retry, NULL);
  server.drop_slow = event_new(server.base, -1, 0, on_drop_slow, NULL);
  server.shutdown_deadline =
      evtimer_new(server.base, on_shutdown_deadline, NULL);
  server.quiet_check = evtimer_new(server.base, on_quiet_check, NULL);
  return server.on_sigint && server.on_sigterm && server.login_timer &&
         server.accept_retry && server.drop_slow && server.shutdown_deadline &&
         server.quiet_check && event_add(server.on_sigint, NULL) == 0 &&
         event_add(server.on_sigterm, NULL) == 0;
}

/* One thread, so no locks. And the epoll changelist: a bufferevent turns its
 * write interest off when its output empties and on again when a line comes,
 * usually within one loop turn; the changelist folds the pair into nothing
 * instead of two epoll_ctl calls per write. (Its caveat, dup()ed descriptors,
 * does not apply: every socket here is its own.) */
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

static void free_everything(void) {
  while (server.clients.first) /* clients that never finished closing */
    client_free(server.clients.first);
  struct event *events[] = {server.on_sigint,   server.on_sigterm,
                            server.login_timer, server.accept_retry,
                            server.drop_slow,   server.shutdown_deadline,
                            server.quiet_check};
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

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  int fd = startup_listen(&server.options, argc, argv, &port, &status);
  if (fd < 0)
    return status;
  size_t scratch_size = session_scratch_size(server.options.max_line);
  server.session = (struct session_context){
      .room_name = server.options.room_name,
      .max_line = server.options.max_line,
      .scratch = malloc(scratch_size),
      .scratch_size = scratch_size,
  };
  void *room_memory = calloc(1, room_size(server.options.max_clients));
  server.room =
      room_memory ? room_init(room_memory, server.options.max_clients) : NULL;
  server.base = new_event_base();
  if (server.base)
    server.listener = evconnlistener_new(server.base, on_accept, NULL,
                                         LEV_OPT_CLOSE_ON_FREE, 0, fd);
  if (!server.session.scratch || !server.room || !server.listener ||
      !create_events()) {
    fprintf(stderr, "chat-evented: cannot set up: out of memory\n");
    if (!server.listener)
      close(fd);
    free_everything();
    return 1;
  }
  evconnlistener_set_error_cb(server.listener, on_accept_error);

  options_print_startup(&server.options, port, stdout);
  log_line("%s running on port %u: chat-evented, libevent %s (%s)",
           server.options.room_name, port, event_get_version(),
           event_base_get_method(server.base));

  event_base_dispatch(server.base);

  free_everything();
  log_line("stopped");
  return 0;
}
