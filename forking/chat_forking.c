/* chat-forking: the chat server as one process per connection.
 *
 * The model: the parent process listens and accepts; for each connection it
 * forks a child, which serves that one client down a plain loop (wait, read,
 * act, write) and exits when the client leaves. Processes share no heap, so
 * the room lives in memory the parent shared before the first fork
 * (shared_room.h): the registered names, and a ring of the room's lines
 * (event_ring.h) that each child copies from its own cursor, without a lock,
 * to its own client. A process-shared, robust mutex guards every change. A
 * child killed at any instant, even holding the lock, leaves the room whole,
 * and the parent, which reaps every child, makes a dead child's user depart.
 *
 * Waiting: a child must wake for its socket or for new lines, and cost
 * nothing while both are quiet. It waits in epoll on its socket and on an
 * eventfd that the parent made before forking, which every child in the
 * room watches edge-triggered and never reads: one write wakes them all,
 * inside the kernel. It is written once per wave, not once per line: a
 * wave wakes the children that are asleep, and the lines published while
 * they run wait for the last of them to catch up, which starts the next
 * wave. So each child is woken at most once for any number of lines
 * published while it ran (the sender is no longer preempted, line after
 * line, by the crowd it has just woken). The others do not fit: a futex or
 * a process-shared condition variable cannot be waited on together with a
 * socket (and the condition variable can hang when a waiter dies, glibc
 * bug 21422); a signal per child would cost each writer one kill() per
 * child.
 *
 * A client is dropped for its backlog only when its own process has had
 * the chance to write: what its socket refused, plus what the room
 * published since, beyond --max-backlog. The ring holds --max-backlog and
 * at least 2 MiB more, so that a child the scheduler has not run yet is not
 * judged (or lapped) for it.
 *
 * Its cost: a process per connection: a kernel task with its kernel stack
 * and page tables, and private copies of the pages it writes (its stack, its
 * buffers, libc's data); the code and the rest stay shared with the parent.
 * A wave costs a context switch into every child in the room, a copy and a
 * send each, however many lines it carries; a line costs its writer one
 * turn of the lock. Under a steady load a wave carries hundreds of lines;
 * when the room is quiet between messages, every message is a wave of its
 * own, and every delivery a context switch (README.md: the figures at 1,000
 * and 10,000).
 *
 * Where it breaks: at thousands of connections, memory and the scheduler,
 * a fork per connection, and the process limits (pid_max, RLIMIT_NPROC).
 * A child stopped (SIGSTOP) while it holds the room lock freezes the room:
 * no line, arrival or departure can be published until it goes on (readers
 * still get what was published; the parent never waits for the lock more
 * than 10 ms, and shutdown continues every child first); the one lock that
 * lets processes share a room is the price of this model. A child stopped
 * without the lock holds the room's wake-ups back once, for 250 ms. What
 * the model buys: each session reads as straight-line code, and a crash
 * takes one connection with it. */
#include "byte_buffer.h"
#include "os/clock.h"
#include "os/heap.h"
#include "line_framer.h"
#include "os/listener.h"
#include "os/log.h"
#include "options.h"
#include "os/policy.h"
#include "protocol.h"
#include "os/refuse.h"
#include "room.h"
#include "session.h"
#include "shared_room.h"
#include "os/startup.h"
#include "step.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* Room lines copied into a child's output at a time, and copies (each
 * followed by a send) per turn of its loop. */
#define COPY_CHUNK (64 * 1024)
#define PUMP_TURNS 64
/* The ring holds at least this much beyond --max-backlog: a reader is lost
 * (and dropped) only when the room published that much while its process
 * did not run at all. */
#define RING_SLACK_BYTES (2u << 20)
/* The parent waits this long for the room lock to make a dead child's user
 * depart, and tries again this much later if it could not: the lock's
 * holder may be stopped, and the parent must go on serving signals. */
#define RELEASE_LOCK_MILLISECONDS 10
#define RELEASE_RETRY_MILLISECONDS 50

enum client_state {
  CLIENT_OPEN,    /* reading and writing */
  CLIENT_CLOSING, /* saying its last lines, then closed */
  CLIENT_DROPPED, /* too slow, or the connection failed: closed at once */
};

/* The one client a child serves. */
struct client {
  int fd;
  int epoll;                 /* its socket and the wake-ups */
  unsigned slot;             /* its slot in the shared room's waves */
  struct byte_buffer output; /* what its socket has not taken yet */
  size_t sent;               /* bytes of `output` already sent */
  uint64_t cursor;           /* the first byte of the ring it has not copied */
  uint64_t seen;             /* the published head it last copied or judged */
  long long login_deadline;  /* milliseconds, monotonic clock */
  struct line_framer framer;
  struct session session;
  struct peer_address peer;
  int member;        /* index in the room while registered */
  bool in_room;      /* registered, and woken by the room's waves */
  bool holding_room; /* between lock_room() and unlock_room() */
  enum client_state state;
  enum departure_cause cause;     /* why it was dropped */
  bool watching_output;           /* epoll reports when the socket takes more */
  char name[CHAT_NAME_MAX_BYTES]; /* the session's name, in our own memory */
};

/* A child, as the parent knows it. */
struct child {
  pid_t pid;
  unsigned slot;
  bool ended; /* reaped; its user has yet to depart (the lock was busy) */
  struct peer_address peer;
};

static struct server {
  struct chat_options options;
  int listener;
  int signals;     /* SIGINT, SIGTERM, SIGHUP and SIGCHLD, as a descriptor */
  int lifeline[2]; /* a pipe every child holds the write end of */
  pid_t parent;
  struct shared_room *shared;
  struct session_context session;
  struct child *children; /* the live ones and the ended ones, in no order */
  size_t connections;     /* how many */
  size_t ended;           /* how many of them ended, their users still here */
  unsigned *free_slots;   /* slots given back, to give again */
  size_t free_count;
  unsigned slots_high; /* slots ever given: [0, slots_high) */
  long long accept_retry_at;
  bool accept_paused; /* the listener is left alone until accept_retry_at */
  bool accept_logged; /* "accept paused" was logged, "resumed" not yet */
  bool shutting_down;
} server;

/* The story (main, accept, serve, depart, shut down) comes first; what it
 * calls is declared here. */
static void depart(struct client *client, enum departure_cause cause);
static void run(void);
static int open_signals(void);
static void free_everything(void);
static unsigned take_slot(void);
static void run_child(int fd, const struct peer_address *peer, unsigned slot,
                      long long accepted_at);
static void drop_client(struct client *client, enum departure_cause cause);
static bool on_frame(void *context, const struct frame *frame);
static void append_output(struct client *client, const char *bytes,
                          size_t length);
static void flush_last_lines(struct client *client, long long deadline);
static size_t pending(const struct client *client);
static void carry_out(struct client *client, struct session_step step);
static void pump(struct client *client);
static void watch_output(struct client *client, bool reading);
static void close_after_flush(struct client *client, long long deadline);
static bool watch_wake_up(struct client *client, int fd);
static void catch_up(struct client *client);
static bool flush_output(struct client *client);
static uintptr_t owner_of(unsigned slot);
static void remove_child(struct child *child);
static struct child *find_child(pid_t pid);
static void queue_output(struct client *client, const char *bytes,
                         size_t length);

/* ---- main ------------------------------------------------------------ */

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  server.lifeline[0] = server.lifeline[1] = -1;
  server.listener = startup_listen(&server.options, argc, argv, &port, &status);
  if (server.listener < 0)
    return status;
  server.session = session_context_make(server.options.room_name,
                                        server.options.max_line, true);
  /* The ring holds --max-backlog bytes and RING_SLACK_BYTES more (at least
   * as much again), plus one line: a child is judged by its backlog when it
   * runs, long before a writer (even one killed half-way through a line)
   * can overwrite what it has yet to read; and one the scheduler has not
   * run yet has that much slack. */
  size_t backlog = server.options.max_backlog;
  size_t slack = backlog > RING_SLACK_BYTES ? backlog : RING_SLACK_BYTES;
  server.shared =
      shared_room_create(server.options.max_clients,
                         backlog + slack + server.session.scratch_size);
  server.children = calloc(server.options.max_clients, sizeof(struct child));
  server.free_slots = calloc(server.options.max_clients, sizeof(unsigned));
  server.signals = open_signals();
  server.parent = getpid();
  /* Whatever a child leaves behind comes back to the parent, which reaps
   * it: no process outlives the server, even one a child started (under
   * ASan, LeakSanitizer's tracer, if the child is killed during its leak
   * check; it shares the child's descriptors, the lifeline with them, so
   * the parent's last reaping waits for it). */
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1); /* fails only before Linux 3.4 */
  const char *failed = !server.session.scratch ? "malloc (the scratch)"
                       : !server.shared        ? "shared_room_create"
                       : !server.children      ? "calloc (the children)"
                       : !server.free_slots    ? "calloc (the slots)"
                       : server.signals < 0    ? "signalfd"
                       : pipe2(server.lifeline, O_CLOEXEC) < 0 ? "pipe2"
                                                               : NULL;
  if (failed) {
    fprintf(stderr, "chat-forking: %s: %s\n", failed, strerror(errno));
    free_everything();
    return 1;
  }

  options_print_startup(&server.options, port, stdout);
  log_line("%s running on port %u: chat-forking, a process per connection",
           server.options.room_name, port);

  run();

  free_everything();
  log_line("stopped");
  return 0;
}

/* ---- Accept: the parent ---------------------------------------------- */

/* Logged once when a pause starts, and once when a connection is served
 * again: not once per retry. */
static void pause_accepting(const char *why) {
  if (!server.accept_logged)
    log_line("accept paused: %s", why);
  server.accept_logged = true;
  server.accept_paused = true;
  server.accept_retry_at = now_milliseconds() + ACCEPT_RETRY_MILLISECONDS;
}

static void on_accept(int fd, const struct peer_address *peer) {
  long long accepted_at = now_milliseconds();
  unsigned slot = take_slot();
  pid_t pid = fork();
  if (pid < 0) { /* out of processes or memory: the server is full */
    server.free_slots[server.free_count++] = slot;
    pause_accepting(strerror(errno));
    refuse_full(fd, peer);
    return;
  }
  if (pid == 0)
    run_child(fd, peer, slot, accepted_at); /* does not return */
  close(fd);
  server.children[server.connections++] =
      (struct child){.pid = pid, .slot = slot, .peer = *peer};
  if (server.accept_logged) {
    log_line("accept resumed");
    server.accept_logged = false;
  }
}

static void accept_waiting(void) {
  for (int i = 0; i < ACCEPT_BATCH && !server.accept_paused; i++) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4(server.listener, (struct sockaddr *)&address, &length,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      /* Out of descriptors (or memory), the listener would be ready again
       * at once and spin: pause it for a moment. */
      if (accept_error_is_exhaustion(errno))
        pause_accepting(strerror(errno));
      else if (!accept_error_is_transient(errno))
        log_line("accept failed: %s", strerror(errno));
      return;
    }
    struct peer_address peer = peer_address_from((struct sockaddr *)&address);
    if (server.connections >= server.options.max_clients) {
      refuse_full(fd, &peer);
      continue;
    }
    listener_send_at_once(fd);
    on_accept(fd, &peer);
  }
}

/* ---- Serve: the child's loop ----------------------------------------- */

static void read_input(struct client *client) {
  if (client->state != CLIENT_OPEN)
    return;
  char chunk[READ_CHUNK];
  ssize_t got = recv(client->fd, chunk, sizeof chunk, MSG_DONTWAIT);
  if (got < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      drop_client(client, DEPARTURE_CLOSED); /* reset, or worse */
    return;
  }
  if (got == 0) {
    /* End of input, maybe only a half-close: every complete line was
     * already handled; it departs, hears the room up to then, is closed. */
    depart(client, DEPARTURE_CLOSED);
    client->state = CLIENT_CLOSING;
    return;
  }
  if (line_framer_push(&client->framer, chunk, (size_t)got, on_frame, client) ==
      FRAMER_NO_MEMORY)
    drop_client(client, DEPARTURE_ERROR); /* out of memory */
  if (client->state == CLIENT_CLOSING)    /* it said QUIT */
    depart(client, DEPARTURE_QUIT);
}

/* Milliseconds epoll may wait: until the login deadline, or for ever. */
static int login_wait(const struct client *client) {
  if (client->session.phase != SESSION_NAMING || client->login_deadline == 0)
    return -1;
  long long left = client->login_deadline - now_milliseconds();
  return left > 0 ? (int)left : 0;
}

/* SIGINT, SIGTERM or SIGHUP reached the parent: say so (the user does not
 * depart: the whole room is going), tell the parent, and wait for it to end
 * this process. Ending a process is the dear part (README.md measures it
 * with `exit-floor`): if each child ended itself after its goodbye, the
 * goodbyes of 10,000 would queue behind 10,000 exits, and the parent's
 * deadline would cut most of them off. So every child says goodbye first,
 * and the parent then ends them all at once. */
static _Noreturn void say_goodbye(struct client *client) {
  struct session_step step = session_shutdown(&client->session);
  client->in_room = false; /* no more room lines: the goodbye is next */
  append_output(client, step.reply.bytes, step.reply.length);
  flush_last_lines(client, now_milliseconds() + SHUTDOWN_GRACE_MILLISECONDS);
  /* The client sees the end now; a connection already gone has nothing
   * more to be told. */
  (void)shutdown(client->fd, SHUT_WR);
  shared_room_said_goodbye(server.shared);
  for (;;)
    pause(); /* until the parent's SIGKILL */
}

/* Waits for the socket, the room's next wave, the stop, or a deadline.
 * A child in the room says it sleeps only when it has nothing left to do:
 * it has copied and sent all it saw, or its socket is full. */
static int wait_for_events(struct client *client, struct epoll_event *events,
                           int size) {
  int wait = -1;
  bool asleep = false;
  if (!client->in_room) {
    wait = login_wait(client);
  } else if (client->cursor != client->seen && pending(client) == 0) {
    wait = 0; /* more to copy: only look at the socket */
  } else if ((asleep = shared_room_may_sleep(server.shared, client->slot,
                                             client->seen))) {
    wait = shared_room_wave_alarm(server.shared);
  } else {
    wait = 0; /* a line came meanwhile */
  }
  /* The heap policy every model shares (heap.h): what a burst freed is
   * kept while the child is busy, and given back after a quiet second. */
  int ready = epoll_wait(client->epoll, events, size, heap_wait(wait));
  if (asleep)
    shared_room_awake(server.shared, client->slot);
  if (ready > 0)
    heap_note_busy();
  return ready;
}

/* The child's whole life: one client, from the welcome to the close. */
static void serve(struct client *client) {
  carry_out(client, session_start(&client->session, &server.session));
  while (client->state == CLIENT_OPEN) {
    pump(client);
    if (client->state != CLIENT_OPEN)
      break;
    watch_output(client, true);
    struct epoll_event events[3];
    int ready = wait_for_events(client, events, 3);
    if (ready < 0 && errno != EINTR)
      drop_client(client, DEPARTURE_FAILED);
    if (shared_room_is_shutting_down(server.shared))
      say_goodbye(client);
    for (int i = 0; i < ready; i++) {
      if (events[i].data.fd == client->fd &&
          (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        read_input(client);
    }
    if (!session_is_registered(&client->session) &&
        client->state == CLIENT_OPEN && login_wait(client) == 0) {
      log_departed(&client->peer, NULL, 0, DEPARTURE_TIMEOUT);
      carry_out(client, session_timed_out(&client->session));
    }
  }
  if (client->state == CLIENT_DROPPED) {
    depart(client, client->cause);
    close(client->fd);
    return;
  }
  close_after_flush(client, now_milliseconds() + FLUSH_TIMEOUT_MILLISECONDS);
}

/* The start of a child: it serves one connection, and must not outlive the
 * parent. Then it leaves through _exit: the atexit handlers it inherited
 * are the parent's, not to run once per child. (Under AddressSanitizer, it
 * checks for leaks first: what it inherited is reachable from the server's
 * globals, so only what it allocated itself can show up.) */
static void run_child(int fd, const struct peer_address *peer, unsigned slot,
                      long long accepted_at) {
  (void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* a valid signal: cannot fail */
  if (getppid() != server.parent)         /* it died before prctl */
    _exit(0);
  close(server.listener);
  close(server.signals);
  close(server.lifeline[0]); /* it keeps lifeline[1] until it ends */
  /* Ctrl-C, a hangup, or a SIGTERM to the whole process group (a service
   * manager's, say), reaches every child too: the parent answers for the
   * server. (SIGUSR1 and SIGUSR2 stay ignored, as in the parent.) */
  (void)signal(SIGINT, SIG_IGN); /* fails only for SIGKILL and SIGSTOP */
  (void)signal(SIGTERM, SIG_IGN);
  (void)signal(SIGHUP, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  struct client client = {.fd = fd, .peer = *peer, .slot = slot, .member = -1};
  line_framer_init(&client.framer, server.options.max_line);
  if (server.options.login_timeout > 0)
    client.login_deadline = accepted_at + server.options.login_timeout * 1000LL;
  client.epoll = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event socket_event = {.events = EPOLLIN, .data.fd = fd};
  if (client.epoll < 0 ||
      epoll_ctl(client.epoll, EPOLL_CTL_ADD, fd, &socket_event) < 0 ||
      !watch_wake_up(&client, shared_room_stop_fd(server.shared))) {
    log_refused(peer, strerror(errno));
    _exit(1);
  }
  log_accepted(peer);
  serve(&client);
  line_framer_release(&client.framer);
  byte_buffer_release(&client.output);
#if defined(__SANITIZE_ADDRESS__)
  if (!shared_room_is_shutting_down(server.shared))
    __lsan_do_leak_check(); /* slow: not while the server must stop */
#endif
  _exit(0);
}

/* ---- Depart, close after the last lines ------------------------------ */

static void carry_out(struct client *client, struct session_step step);

/* A registered user leaves the room: everyone else is told, once. If it
 * still reads, its last lines are the room's up to its departure. */
static void depart(struct client *client, enum departure_cause cause) {
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  if (!session_is_registered(&client->session))
    return;         /* it leaves silently */
  catch_up(client); /* most of it, without the lock */
  carry_out(client, session_end(&client->session, &server.session));
  shared_room_wave_leave(server.shared, client->slot);
}

/* Says the last lines, unless the client does not take them before the
 * deadline. It hears no more of the room. */
static void flush_last_lines(struct client *client, long long deadline) {
  (void)epoll_ctl(client->epoll, EPOLL_CTL_DEL,
                  shared_room_wake_fd(server.shared),
                  NULL); /* if it was in the room */
  client->watching_output = false;
  long long left;
  while (flush_output(client) && pending(client) > 0 &&
         (left = deadline - now_milliseconds()) > 0) {
    watch_output(client, false);
    struct epoll_event event;
    epoll_wait(client->epoll, &event, 1, (int)left);
  }
}

static void close_after_flush(struct client *client, long long deadline) {
  flush_last_lines(client, deadline);
  close(client->fd);
}

/* ---- Depart: children that ended (the parent) ------------------------ */

/* A child ended without its user leaving the room (it was killed, or
 * crashed): the user departs now, as the child would have. Under the lock,
 * the room tells whether the child left it first: then nothing is done.
 * Returns false, having done nothing, if the lock stayed busy: its holder
 * may be stopped, and the parent must not wait for it. */
static bool release_user(const struct child *child) {
  enum shared_room_locked locked =
      shared_room_lock_within(server.shared, RELEASE_LOCK_MILLISECONDS);
  if (locked == SHARED_ROOM_BUSY)
    return false;
  const struct room *room = shared_room_members(server.shared);
  int member = room_first(room);
  while (member >= 0 && room_owner(room, member) != owner_of(child->slot))
    member = room_next(room, member);
  char name[CHAT_NAME_MAX_BYTES];
  unsigned name_length = 0;
  if (member >= 0) {
    struct chat_text text = room_member_name(room, member);
    name_length = (unsigned)text.length;
    memcpy(name, text.bytes, name_length);
    /* The dead child's session, as far as its end needs it. */
    struct session session = {.name = name,
                              .name_length = (unsigned char)name_length,
                              .phase = SESSION_CHATTING};
    struct session_step step = session_end(&session, &server.session);
    shared_room_leave(server.shared, member);
    shared_room_publish(server.shared, step.room_line);
  }
  shared_room_unlock(server.shared);
  if (member >= 0)
    log_departed(&child->peer, name, name_length, DEPARTURE_FAILED);
  return true;
}

/* Makes the users of ended children depart, while the lock can be had. */
static void release_users(void) {
  for (size_t i = 0; i < server.connections && server.ended > 0;) {
    struct child *child = &server.children[i];
    if (!child->ended) {
      i++;
      continue;
    }
    if (!release_user(child))
      return;            /* the lock is busy: later */
    remove_child(child); /* moves another child to i */
  }
}

/* Collects every child that ended: signals coalesce, one SIGCHLD may stand
 * for many. */
static void reap_children(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    struct child *child = find_child(pid);
    if (!child)
      continue;
    bool died = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (died) {
      char text[PEER_TEXT_SIZE];
      peer_address_format(&child->peer, text);
      if (WIFSIGNALED(status))
        log_line("%s: process %d killed by signal %d", text, (int)pid,
                 WTERMSIG(status));
      else
        log_line("%s: process %d exited with status %d", text, (int)pid,
                 WEXITSTATUS(status));
    }
    /* Its part of a wave is paid; if it died, it may have died in the
     * middle of one: the wave is given up and the next one started. */
    shared_room_child_ended(server.shared, child->slot, died);
    shared_room_wave_adopt(server.shared); /* its last lines, if any */
    server.accept_paused = false;          /* a descriptor came free */
    if (server.shutting_down) {
      remove_child(child);
      continue;
    }
    child->ended = true; /* however it ended, its user is gone */
    server.ended++;
  }
  if (!server.shutting_down)
    release_users();
}

/* ---- Shut down ------------------------------------------------------- */

/* Reads the signals that arrived; returns SIGINT, SIGTERM or SIGHUP if one
 * did. */
static int read_signals(void) {
  int stop = 0;
  struct signalfd_siginfo info;
  while (read(server.signals, &info, sizeof info) == sizeof info) {
    if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM ||
        info.ssi_signo == SIGHUP)
      stop = (int)info.ssi_signo;
  }
  reap_children();
  return stop;
}

/* SIGINT, SIGTERM or SIGHUP: stop accepting, tell every child, wait until
 * each has said goodbye (or ended) or the grace is over, then end them all
 * at once and reap them. */
static void shut_down(int signal_number) {
  server.shutting_down = true;
  for (size_t i = 0; i < server.connections;) { /* their users go too */
    if (server.children[i].ended)
      remove_child(&server.children[i]);
    else
      i++;
  }
  log_shutting_down(signal_number, server.connections);
  close(server.listener);
  server.listener = -1;
  long long started = now_milliseconds();
  shared_room_shut_down(server.shared);
  /* A stopped child cannot say goodbye, and one stopped while it holds the
   * room lock keeps every child that waits for the lock from hearing the
   * stop: all of them go on now. */
  for (size_t i = 0; i < server.connections; i++)
    kill(server.children[i].pid, SIGCONT);
  long long deadline = started + SHUTDOWN_GRACE_MILLISECONDS;
  size_t goodbyes = 0;
  long long left;
  while (goodbyes < server.connections &&
         (left = deadline - now_milliseconds()) > 0) {
    struct pollfd events[2] = {
        {.fd = server.signals, .events = POLLIN},
        {.fd = shared_room_goodbye_fd(server.shared), .events = POLLIN},
    };
    if (poll(events, 2, (int)left) > 0) {
      if (events[0].revents & POLLIN)
        read_signals(); /* children that ended on their own */
      goodbyes += shared_room_take_goodbyes(server.shared);
    }
  }
  size_t children = server.connections;
  log_line("%zu of %zu children said goodbye after %lld ms; ending them",
           goodbyes < children ? goodbyes : children, children,
           now_milliseconds() - started);
  for (size_t i = 0; i < server.connections; i++)
    kill(server.children[i].pid, SIGKILL);
  /* Reaping each child as it ends would rescan every live one each time
   * (quadratic: seconds at 10,000). The lifeline reads end-of-file when
   * the last child has closed its end, that is, has ended; then every
   * waitpid finds a zombie at once. */
  close(server.lifeline[1]);
  server.lifeline[1] = -1;
  char byte;
  while (read(server.lifeline[0], &byte, 1) < 0 && errno == EINTR) {
  }
  while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
  }
  server.connections = 0;
  log_line("%zu children ended after %lld ms", children,
           now_milliseconds() - started);
  struct shared_room_waves waves = shared_room_wave_counts(server.shared);
  log_line("room: %llu bytes of lines, %llu waves (%llu woke someone, %llu "
           "given up)",
           (unsigned long long)waves.bytes, (unsigned long long)waves.started,
           (unsigned long long)waves.signalled,
           (unsigned long long)waves.given_up);
}

/* ---- Helpers: the session's steps, over this model's hooks (step.h) -- */

/* A reply. Out of the lock, it comes after the room lines the client has
 * not had yet (queue_output catches up); under the lock, the client was
 * just brought up to date (room_members) or is not in the room yet (a name
 * refused), so it goes straight to the output. */
static void send_to_client(void *client, const char *bytes, size_t length) {
  struct client *self = client;
  if (self->holding_room)
    append_output(self, bytes, length);
  else
    queue_output(self, bytes, length);
}

static void lock_room(void *client) {
  shared_room_lock(server.shared);
  ((struct client *)client)->holding_room = true;
}

static void unlock_room(void *client) {
  ((struct client *)client)->holding_room = false;
  shared_room_unlock(server.shared);
}

/* The join and its announcement are one change of the room: a child killed
 * in between cannot leave a member nobody heard arrive. */
static const char *join_room(void *client, struct chat_text name) {
  struct client *joining = client;
  int member = shared_room_join(server.shared, name, owner_of(joining->slot));
  if (member < 0)
    return NULL;
  memcpy(joining->name, name.bytes, name.length);
  joining->member = member;
  joining->cursor = shared_room_head(server.shared); /* its arrival on */
  joining->seen = joining->cursor;
  return joining->name;
}

/* Its last lines are the room's up to its departure: what came since the
 * catch-up before the lock, now that no writer runs. */
static bool say_to_room(void *client, struct chat_text line) {
  (void)client;
  shared_room_publish(server.shared, line);
  return true;
}

static void leave_room(void *client, struct chat_text departure) {
  struct client *leaving = client;
  catch_up(leaving);
  shared_room_leave(server.shared, leaving->member);
  leaving->in_room = false;
  say_to_room(client, departure);
}

/* The names as of this head: the client first gets every line before it. */
static const struct room *room_members(void *client) {
  catch_up(client);
  return shared_room_members(server.shared);
}

static void on_registered(void *client) {
  struct client *registered = client;
  log_registered(&registered->peer, registered->session.name,
                 registered->session.name_length);
  /* Only now do the room's waves concern it: a connection still choosing
   * a name has no business waking for every line. */
  registered->in_room = true;
  shared_room_wave_enter(server.shared, registered->slot);
  if (!watch_wake_up(registered, shared_room_wake_fd(server.shared)))
    drop_client(registered, DEPARTURE_FAILED);
}

/* It reads no more; the child closes it after a flush. */
static void close_session(void *client) {
  struct client *closing = client;
  if (closing->state == CLIENT_OPEN)
    closing->state = CLIENT_CLOSING;
}

static const struct step_model forking_model = {
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

/* The room's lines the client has not had yet are copied without the lock
 * first, most of them, so that the lock is held only for what comes
 * meanwhile (room_members, leave_room). */
static void carry_out(struct client *client, struct session_step step) {
  if (step.room == SESSION_ROOM_NAMES)
    catch_up(client);
  step_carry_out(&forking_model, client, &client->session, &server.session,
                 step);
}

/* Returns false to stop the framer: the client reads no more (it said
 * QUIT, or was dropped). */
static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  carry_out(client, session_on_frame(&client->session, &server.session, frame));
  return client->state == CLIENT_OPEN;
}

/* ---- Helpers: output ------------------------------------------------- */

static size_t pending(const struct client *client) {
  return client->output.length - client->sent;
}

/* The client stops being served at once; it departs for `cause`. */
static void drop_client(struct client *client, enum departure_cause cause) {
  if (client->state != CLIENT_OPEN)
    return;
  client->state = CLIENT_DROPPED;
  client->cause = cause;
}

/* Makes room for `length` more bytes at the end of the output; returns
 * where they go, or NULL when out of memory. */
static char *output_tail(struct client *client, size_t length) {
  byte_buffer_consume(&client->output, client->sent);
  client->sent = 0;
  return byte_buffer_reserve(&client->output, length);
}

/* Sends what the socket takes now. Returns false if the connection failed. */
static bool flush_output(struct client *client) {
  struct byte_buffer *out = &client->output;
  while (client->sent < out->length) {
    ssize_t sent =
        send(client->fd, out->bytes + client->sent, out->length - client->sent,
             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK;
    client->sent += (size_t)sent;
  }
  byte_buffer_release(out); /* an idle client holds none */
  client->sent = 0;
  return true;
}

/* The backlog, judged when the process has just had the chance to write:
 * what its socket refused, and what the room published beyond it. */
static bool over_backlog(const struct client *client, size_t more) {
  size_t behind = client->in_room ? (size_t)(client->seen - client->cursor) : 0;
  return pending(client) + behind + more > server.options.max_backlog;
}

/* Adds bytes to a client's output. If that would leave more than
 * --max-backlog bytes waiting, it first sends what its socket takes; if the
 * socket takes too little, the client is dropped instead. */
static void append_output(struct client *client, const char *bytes,
                          size_t length) {
  if (client->state != CLIENT_OPEN || length == 0)
    return;
  if (over_backlog(client, length)) {
    if (!flush_output(client)) {
      drop_client(client, DEPARTURE_CLOSED);
      return;
    }
    if (pending(client) > 0 && over_backlog(client, length)) {
      drop_client(client, DEPARTURE_SLOW);
      return;
    }
  }
  char *tail = output_tail(client, length);
  if (!tail) {
    drop_client(client, DEPARTURE_ERROR); /* out of memory */
    return;
  }
  memcpy(tail, bytes, length);
  client->output.length += length;
}

/* Copies `length` bytes of room lines, from the client's cursor, into its
 * output. Returns false if it was dropped instead. */
static bool copy_lines(struct client *client, size_t length) {
  char *tail = output_tail(client, length);
  if (!tail) {
    drop_client(client, DEPARTURE_ERROR); /* out of memory */
    return false;
  }
  if (!shared_room_copy(server.shared, client->cursor, tail, length)) {
    /* A whole ring behind: what it had yet to read is gone. */
    drop_client(client, DEPARTURE_SLOW);
    return false;
  }
  client->output.length += length;
  client->cursor += length;
  return true;
}

/* Copies the room's new lines into the output and sends them, a chunk at a
 * time, for as long as the socket takes them (or PUMP_TURNS chunks). Then
 * judges the backlog: if the socket refused some, and the room is more
 * than --max-backlog bytes ahead of what it took, the client is dropped. */
static void pump(struct client *client) {
  for (int turn = 0; turn < PUMP_TURNS && client->state == CLIENT_OPEN;
       turn++) {
    if (client->in_room) {
      client->seen = shared_room_published(server.shared);
      size_t behind = (size_t)(client->seen - client->cursor);
      if (behind > 0 && pending(client) == 0 &&
          !copy_lines(client, behind < COPY_CHUNK ? behind : COPY_CHUNK))
        return;
    }
    if (!flush_output(client)) {
      drop_client(client, DEPARTURE_CLOSED);
      return;
    }
    if (pending(client) > 0) { /* the socket is full */
      if (over_backlog(client, 0))
        drop_client(client, DEPARTURE_SLOW);
      return;
    }
    if (!client->in_room || client->cursor == client->seen)
      return;
  }
}

/* Brings the client's output up to the room's published head, so that what
 * is queued next comes after every line published so far: its message,
 * then the answer to the NAMES it sent after it. Without the lock, or
 * with it. */
static void catch_up(struct client *client) {
  if (!client->in_room)
    return;
  /* The ring is at most this many chunks ahead: bounded. */
  for (int turn = 0; client->state == CLIENT_OPEN && turn < 1024; turn++) {
    pump(client);
    if (pending(client) > 0 || client->cursor == client->seen)
      break;
  }
  if (client->state != CLIENT_OPEN)
    return;
  client->seen = shared_room_published(server.shared);
  size_t behind = (size_t)(client->seen - client->cursor);
  if (behind == 0)
    return;
  if (pending(client) > 0 && over_backlog(client, 0)) {
    drop_client(client, DEPARTURE_SLOW);
    return;
  }
  copy_lines(client, behind);
}

/* Queues a reply for the client after the room lines it has not had yet. */
static void queue_output(struct client *client, const char *bytes,
                         size_t length) {
  if (length == 0)
    return;
  catch_up(client);
  append_output(client, bytes, length);
}

/* Adds one of the shared wake-ups (see shared_room.h) to the child's epoll:
 * edge-triggered, so that it can be left unread. */
static bool watch_wake_up(struct client *client, int fd) {
  struct epoll_event event = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
  return epoll_ctl(client->epoll, EPOLL_CTL_ADD, fd, &event) == 0;
}

/* Asks epoll to report a writable socket only while output waits for one:
 * otherwise an idle client's socket, always writable, would wake it. */
static void watch_output(struct client *client, bool reading) {
  bool watch = pending(client) > 0;
  if (watch == client->watching_output)
    return;
  struct epoll_event event = {.events = (reading ? EPOLLIN : 0) |
                                        (watch ? EPOLLOUT : 0),
                              .data.fd = client->fd};
  epoll_ctl(client->epoll, EPOLL_CTL_MOD, client->fd, &event);
  client->watching_output = watch;
}

/* ---- Helpers: children ----------------------------------------------- */

static struct child *find_child(pid_t pid) {
  for (size_t i = 0; i < server.connections; i++) {
    if (server.children[i].pid == pid && !server.children[i].ended)
      return &server.children[i];
  }
  return NULL;
}

static void remove_child(struct child *child) {
  server.free_slots[server.free_count++] = child->slot;
  if (child->ended)
    server.ended--;
  *child = server.children[--server.connections];
}

static unsigned take_slot(void) {
  if (server.free_count > 0)
    return server.free_slots[--server.free_count];
  shared_room_slots_in_use(server.shared, server.slots_high + 1);
  return server.slots_high++;
}

/* The room member's owner: the child's slot, which the parent gives to no
 * other child until that member has departed (a pid could come back). */
static uintptr_t owner_of(unsigned slot) {
  return (uintptr_t)slot + 1;
}

/* ---- Helpers: setup, loop, teardown ---------------------------------- */

/* How long the parent may wait in poll: for ever, unless accepting is
 * paused, a departure waits for the lock, or a wave it left lines to
 * may need giving up. */
static int parent_wait(void) {
  int wait = shared_room_wave_alarm(server.shared);
  if (server.ended > 0 && (wait < 0 || wait > RELEASE_RETRY_MILLISECONDS))
    wait = RELEASE_RETRY_MILLISECONDS;
  if (server.accept_paused) {
    long long left = server.accept_retry_at - now_milliseconds();
    if (left <= 0)
      server.accept_paused = false;
    else if (wait < 0 || left < wait)
      wait = (int)left;
  }
  return wait;
}

/* The parent waits for connections and for signals (SIGCHLD included)
 * with one poll. */
static void run(void) {
  for (;;) {
    int wait = parent_wait();
    struct pollfd fds[2] = {
        {.fd = server.signals, .events = POLLIN},
        {.fd = server.accept_paused ? -1 : server.listener, .events = POLLIN},
    };
    if (poll(fds, 2, wait) < 0 && errno != EINTR) {
      log_line("poll failed: %s", strerror(errno));
      shut_down(SIGTERM); /* cannot happen; stop cleanly if it does */
      return;
    }
    if (fds[0].revents & POLLIN) {
      int stop = read_signals();
      if (stop) {
        shut_down(stop);
        return;
      }
    }
    release_users(); /* any that waited for the lock */
    if (fds[1].revents & POLLIN)
      accept_waiting();
  }
}

/* SIGINT, SIGTERM, SIGHUP and SIGCHLD are blocked and read from a
 * descriptor, in the loop, instead of interrupting it. (SIGUSR1 and
 * SIGUSR2 are ignored since startup, here and in every child.) */
static int open_signals(void) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &signals, NULL) < 0)
    return -1;
  return signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void free_everything(void) {
  if (server.listener >= 0)
    close(server.listener);
  if (server.signals >= 0)
    close(server.signals);
  for (int end = 0; end < 2; end++) {
    if (server.lifeline[end] >= 0)
      close(server.lifeline[end]);
  }
  shared_room_destroy(server.shared);
  free(server.children);
  free(server.free_slots);
  free(server.session.scratch);
}
