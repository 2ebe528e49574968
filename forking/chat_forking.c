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
 * One room across servers (--redis, docs/PROTOCOL.md section 7): the
 * parent owns the link to Redis (common/os/redis_room.h, over its own
 * poll(): redis_poll.h), and no child ever opens a connection. A child
 * hands the parent its requests (claim a name, say a line, release the
 * name) as messages on one SOCK_SEQPACKET socket pair that every child
 * shares; the parent says them to Redis, and publishes what Redis gives
 * back (every server's arrivals, messages and departures, in the one order
 * of the room) to the ring, where the children read it as before: a line
 * crosses Redis once per server. The parent is then the room's only
 * writer; it answers a child (its name granted or taken, a line refused,
 * how many of its lines are back, the room lost) through the child's
 * mailbox in the shared mapping, woken by the same wave as the room's
 * lines. A step that would answer its sender alone waits until the
 * sender's own lines are back (README.md: one room across servers).
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
#include "cluster.h"
#include "os/clock.h"
#include "os/heap.h"
#include "line_framer.h"
#include "os/listener.h"
#include "os/log.h"
#include "options.h"
#include "os/policy.h"
#include "protocol.h"
#include "os/redis_room.h"
#include "redis_poll.h"
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
#include <sys/uio.h>
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
/* With --redis: the longest piece of a request a child sends the parent in
 * one message (a longer line goes in pieces), how many requests the parent
 * reads at a time, and the send buffer of the children's end of the pair
 * (the kernel caps it at net.core.wmem_max): how much may wait for the
 * parent before a child's send waits. */
#define REQUEST_PIECE_BYTES (32 * 1024)
#define REQUEST_BATCH 256
#define REQUEST_BUFFER_BYTES (4 << 20)

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
  bool watching_input;            /* epoll reports input (not while joining) */
  bool in_wave;                   /* woken by the room's waves */
  char name[CHAT_NAME_MAX_BYTES]; /* the session's name, in our own memory */
  /* With --redis. */
  uint64_t serial;           /* this connection's number, in its requests */
  bool joining;              /* its name waits for the parent's answer */
  unsigned char name_length; /* of the name it claimed */
  /* A line whose answer to its sender waits until the sender's own lines
   * are back from Redis (step_for_frame): its frame, and the end of input
   * if it came (then it departs once they are back). */
  bool holding_frame;
  bool end_of_input;
  unsigned char frame_kind;      /* enum frame_kind */
  struct byte_buffer held_frame; /* the frame that waits */
  struct byte_buffer held;       /* input after the name or the frame that
                                    waits, not yet framed */
  uint64_t lines_said;           /* lines handed to the parent */
};

/* A child, as the parent knows it. */
struct child {
  pid_t pid;
  unsigned slot;
  bool ended;  /* reaped; its user has yet to depart (the lock was busy) */
  bool ending; /* with --redis: its end is on its way through the pair */
  struct peer_address peer;
};

/* With --redis: what a child asks the parent, one message on the pair
 * (followed by the name or the line), and a child's slot as the parent
 * knows it. */
enum request_kind {
  REQUEST_CLAIM, /* the name that follows */
  REQUEST_SAY,   /* the line that follows (more: the next piece follows) */
  REQUEST_LEAVE, /* the name it holds */
  REQUEST_ENDED, /* the parent's own: the child has ended, and every
                    request it sent was read before this one */
};
struct request {
  uint8_t kind;
  uint8_t more; /* a piece of a line, and not its last one */
  uint16_t unused;
  uint32_t slot;
  uint64_t serial; /* of the connection: a request of an ended one is
                      dropped, its slot may have a new child */
};
/* With --redis: a line the parent said for a child, until it is done. */
struct said_line {
  uint64_t number; /* redis_room_say's */
  uint64_t serial; /* of the child's connection */
  uint32_t slot;
};
struct seat {
  uint64_t serial;           /* the connection in this slot; 0: none */
  uint64_t arrival;          /* where its arrival begins in the ring */
  struct byte_buffer pieces; /* the pieces of a long line so far */
  bool broken;               /* a piece was lost (out of memory) */
  unsigned char name_length; /* the name it holds in the room, or 0 */
  char name[CHAT_NAME_MAX_BYTES];
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
  size_t ending;          /* how many of those are ending (--redis) */
  unsigned *free_slots;   /* slots given back, to give again */
  size_t free_count;
  unsigned slots_high; /* slots ever given: [0, slots_high) */
  long long accept_retry_at;
  bool accept_paused; /* the listener is left alone until accept_retry_at */
  bool accept_logged; /* "accept paused" was logged, "resumed" not yet */
  bool shutting_down;
  /* With --redis: the link, watched by the parent's poll(); the children's
   * requests ([0] the parent reads, [1] every child writes); a seat per
   * slot; the room's changes Redis gave back, to publish under the lock. */
  struct redis_room *redis;
  struct redis_poll redis_poll;
  long long next_tick; /* redis_room_tick, milliseconds */
  int requests[2];
  char *request;      /* one request, as read */
  struct seat *seats; /* by slot */
  uint64_t serials;   /* connections accepted */
  struct byte_buffer changes;
  /* The lines said for children and not yet done, in the order of their
   * numbers (redis_room_say): [said_first, said_count) of `said`. */
  struct said_line *said;
  size_t said_first, said_count, said_capacity;
  size_t ring_bytes; /* the ring's capacity */
} server;

/* The story (main, accept, serve, depart, shut down) comes first; what it
 * calls is declared here. */
static void depart(struct client *client, enum departure_cause cause);
static void run(void);
static int open_signals(void);
static void free_everything(void);
static unsigned take_slot(void);
static void run_child(int fd, const struct peer_address *peer, unsigned slot,
                      long long accepted_at, uint64_t serial);
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
static void take_input(struct client *client, const char *bytes, size_t length);
static bool enter_wave(struct client *client);
static void hear_parent(struct client *client);
static bool lines_out(const struct client *client);
static bool waits(const struct client *client);
static bool hold_frame(struct client *client, const struct frame *frame);
static void resume_input(struct client *client);
static bool open_redis_room(void);
static void seat_child(unsigned slot, uint64_t serial);
static bool end_seat(struct child *child);
static void release_seat(unsigned slot);
static bool read_requests(void);
static void serve_cluster(const struct pollfd *fds, size_t count);

/* ---- main ------------------------------------------------------------ */

int main(int argc, char *argv[]) {
  unsigned port;
  int status;
  server.lifeline[0] = server.lifeline[1] = -1;
  server.requests[0] = server.requests[1] = -1;
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
  size_t ring = backlog + slack + server.session.scratch_size;
  server.ring_bytes = ring;
  /* With --redis the room holds every server's users. */
  server.shared = server.options.redis_url
                      ? shared_room_create_cluster(
                            server.options.max_clients,
                            cluster_room_capacity(&server.options), ring)
                      : shared_room_create(server.options.max_clients, ring);
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
  if (server.options.redis_url && !open_redis_room()) {
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
  uint64_t serial = ++server.serials;
  if (server.redis)
    seat_child(slot, serial);
  pid_t pid = fork();
  if (pid < 0) { /* out of processes or memory: the server is full */
    server.free_slots[server.free_count++] = slot;
    pause_accepting(strerror(errno));
    refuse_full(fd, peer);
    return;
  }
  if (pid == 0)
    run_child(fd, peer, slot, accepted_at, serial); /* does not return */
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
     * already handled; once its own lines are back (with --redis), it
     * departs, hears the room up to then, and is closed. */
    if (lines_out(client)) {
      client->end_of_input = true; /* resume_input departs */
      return;
    }
    depart(client, DEPARTURE_CLOSED);
    client->state = CLIENT_CLOSING;
    return;
  }
  take_input(client, chunk, (size_t)got);
}

/* Carries out every line in `bytes`. With --redis a line may have to wait
 * (a name for the room's answer, an answer for the sender's own lines on
 * their way): the lines stop there, the rest is held, and the socket is not
 * read until the wait is over (hear_parent, resume_input). */
static void take_input(struct client *client, const char *bytes,
                       size_t length) {
  enum framer_status status =
      line_framer_push(&client->framer, bytes, length, on_frame, client);
  if (status == FRAMER_NO_MEMORY)
    drop_client(client, DEPARTURE_ERROR); /* out of memory */
  else if (status == FRAMER_STOPPED && client->state == CLIENT_OPEN &&
           waits(client) &&
           !byte_buffer_append(&client->held, bytes + client->framer.consumed,
                               length - client->framer.consumed))
    drop_client(client, DEPARTURE_ERROR);
  if (client->state == CLIENT_CLOSING) /* it said QUIT */
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
  if (client->joining) {
    /* Its name waits for the parent's answer, which comes with a wave: it
     * follows the head only to sleep between waves. */
    client->seen = shared_room_published(server.shared);
    asleep = shared_room_may_sleep(server.shared, client->slot, client->seen);
    wait = asleep ? login_wait(client) : 0;
  } else if (!client->in_room) {
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
    watch_output(client, !waits(client));
    struct epoll_event events[3];
    int ready = wait_for_events(client, events, 3);
    if (ready < 0 && errno != EINTR)
      drop_client(client, DEPARTURE_FAILED);
    if (shared_room_is_shutting_down(server.shared))
      say_goodbye(client);
    if (server.redis) {
      hear_parent(client);  /* an answer, lines back, a line refused, the
                               room lost */
      resume_input(client); /* if it waited for its own lines */
    }
    for (int i = 0; i < ready; i++) {
      if (events[i].data.fd != client->fd)
        continue;
      if (!waits(client) &&
          (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        read_input(client);
      else if (waits(client) && (events[i].events & (EPOLLHUP | EPOLLERR)))
        drop_client(client, DEPARTURE_CLOSED); /* reset: nothing to wait for */
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
                      long long accepted_at, uint64_t serial) {
  (void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* a valid signal: cannot fail */
  if (getppid() != server.parent)         /* it died before prctl */
    _exit(0);
  close(server.listener);
  close(server.signals);
  close(server.lifeline[0]); /* it keeps lifeline[1] until it ends */
  if (server.redis) {
    /* The parent's link to Redis is the parent's alone; the child keeps
     * the end of the pair it writes its requests to. */
    redis_poll_close_inherited(&server.redis_poll);
    close(server.requests[0]);
  }
  /* Ctrl-C, a hangup, or a SIGTERM to the whole process group (a service
   * manager's, say), reaches every child too: the parent answers for the
   * server. (SIGUSR1 and SIGUSR2 stay ignored, as in the parent.) */
  (void)signal(SIGINT, SIG_IGN); /* fails only for SIGKILL and SIGSTOP */
  (void)signal(SIGTERM, SIG_IGN);
  (void)signal(SIGHUP, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  struct client client = {.fd = fd,
                          .peer = *peer,
                          .slot = slot,
                          .serial = serial,
                          .member = -1,
                          .watching_input = true};
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
  byte_buffer_release(&client.held);
  byte_buffer_release(&client.held_frame);
#if defined(__SANITIZE_ADDRESS__)
  if (!shared_room_is_shutting_down(server.shared))
    __lsan_do_leak_check(); /* slow: not while the server must stop */
#endif
  _exit(0);
}

/* ---- Depart, close after the last lines ------------------------------ */

static void carry_out(struct client *client, struct session_step step);
static void leave_wave(struct client *client);

/* A registered user leaves the room: everyone else is told, once. If it
 * still reads, its last lines are the room's up to its departure. */
static void depart(struct client *client, enum departure_cause cause) {
  log_departed(&client->peer, client->session.name, client->session.name_length,
               cause);
  if (!session_is_registered(&client->session)) {
    leave_wave(client); /* if its name waited for Redis */
    return;             /* it leaves silently */
  }
  catch_up(client); /* most of it, without the lock */
  carry_out(client, session_end(&client->session, &server.session));
  shared_room_wave_leave(server.shared, client->slot);
  client->in_wave = false;
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
static bool release_user(struct child *child) {
  if (server.redis) /* the room is Redis's: no lock */
    return end_seat(child);
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

/* Makes the users of ended children depart, while the lock can be had.
 * (With --redis, once every request they sent before they ended is read:
 * their end goes through the pair, and they leave when it comes back.) */
static void release_users(void) {
  for (size_t i = 0; i < server.connections && server.ended > server.ending;) {
    struct child *child = &server.children[i];
    if (!child->ended || child->ending) {
      i++;
      continue;
    }
    if (!release_user(child))
      return; /* the lock is busy, or the pair full: later */
    if (child->ending)
      i++;
    else
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
  if (server.redis) {
    /* While the children say goodbye: this server's users depart from the
     * room at once (other servers see them go now, not after the lease).
     * Closing the pair ends any child's wait to send a request. */
    redis_room_close(server.redis);
    server.redis = NULL;
    for (int end = 0; end < 2; end++) {
      close(server.requests[end]);
      server.requests[end] = -1;
    }
  }
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
   * a name has no business waking for every line (with --redis it joined
   * them while its name waited for the answer). */
  registered->in_room = true;
  if (!enter_wave(registered))
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

/* With --redis the parent speaks to Redis for the room, and is the only
 * one to change the shared room: a child asks it (ask_parent), and hears
 * the room's answer later, as the room's lines and its mailbox
 * (hear_parent). So no hook holds the lock but NAMES's, which reads the
 * room; and a line is heard only when Redis gives it back, in the room's
 * order, like everyone else's. */

static bool ask_parent(struct client *client, enum request_kind kind,
                       struct chat_text text);

/* The name goes to the parent, and the child waits for the answer with the
 * room's waves (which bring it), reading nothing more meanwhile. */
static const char *claim_name(void *client, struct chat_text name) {
  struct client *joining = client;
  if (!shared_room_available(server.shared) || !enter_wave(joining) ||
      !ask_parent(joining, REQUEST_CLAIM, name)) {
    leave_wave(joining);
    return STEP_ROOM_UNAVAILABLE;
  }
  memcpy(joining->name, name.bytes, name.length);
  joining->name_length = (unsigned char)name.length;
  joining->joining = true;
  return STEP_JOIN_PENDING;
}

/* Heard when Redis gives it back, with everyone else's lines. Counted:
 * the parent counts it done (shared_room_lines_done) once it is back in
 * the ring, or refused, or lost with the connection to Redis. */
static bool say_through_parent(void *client, struct chat_text line) {
  struct client *saying = client;
  if (!shared_room_available(server.shared) ||
      !ask_parent(saying, REQUEST_SAY, line))
    return false;
  saying->lines_said++;
  return true;
}

/* Redis announces the departure; its last lines are the room's up to now.
 * With Redis away the parent releases the name once it is back. */
static void release_name(void *client, struct chat_text departure) {
  (void)departure;
  struct client *leaving = client;
  catch_up(leaving);
  leaving->in_room = false;
  ask_parent(leaving, REQUEST_LEAVE, (struct chat_text){NULL, 0});
}

/* The one hook that holds the lock: the names, and the lines before them,
 * as of one moment. */
static const struct room *cluster_members(void *client) {
  if (!shared_room_available(server.shared))
    return NULL;
  lock_room(client);
  return room_members(client);
}

static void unlock_if_held(void *client) {
  if (((struct client *)client)->holding_room)
    unlock_room(client);
}

static const struct step_model cluster_model = {
    .send = send_to_client,
    .unlock = unlock_if_held,
    .join = claim_name,
    .leave = release_name,
    .say = say_through_parent,
    .members = cluster_members,
    .registered = on_registered,
    .close = close_session,
};

/* The room's lines the client has not had yet are copied without the lock
 * first, most of them, so that the lock is held only for what comes
 * meanwhile (room_members, leave_room). */
static void carry_out(struct client *client, struct session_step step) {
  if (step.room == SESSION_ROOM_NAMES)
    catch_up(client);
  step_carry_out(server.redis ? &cluster_model : &forking_model, client,
                 &client->session, &server.session, step);
}

/* Returns false to stop the framer: the client reads no more (it said
 * QUIT, or was dropped), or not before its name is answered, or (with
 * --redis) not before its own lines are back, when the frame's step would
 * answer it alone (step_for_frame): the frame is held meanwhile. */
static bool on_frame(void *context, const struct frame *frame) {
  struct client *client = context;
  struct session_step step;
  if (!step_for_frame(&client->session, &server.session, frame,
                      lines_out(client), &step))
    return hold_frame(client, frame); /* false: the lines stop here */
  carry_out(client, step);
  return client->state == CLIENT_OPEN && !client->joining;
}

/* ---- Helpers: the parent's word to a child (with --redis) ------------- */

/* One request to the parent, in pieces of at most REQUEST_PIECE_BYTES, each
 * one message: messages of several children never mix. A child waits here
 * only while the pair holds as much as its send buffer. */
static bool ask_parent(struct client *client, enum request_kind kind,
                       struct chat_text text) {
  struct request request = {
      .kind = (uint8_t)kind, .slot = client->slot, .serial = client->serial};
  size_t sent = 0;
  do {
    size_t piece = text.length - sent;
    if (piece > REQUEST_PIECE_BYTES)
      piece = REQUEST_PIECE_BYTES;
    request.more = sent + piece < text.length;
    struct iovec parts[2] = {{&request, sizeof request},
                             {(char *)text.bytes + sent, piece}};
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = piece ? 2 : 1};
    while (sendmsg(server.requests[1], &message, MSG_NOSIGNAL) < 0) {
      if (errno != EINTR)
        return false; /* the parent is shutting down */
    }
    sent += piece;
  } while (sent < text.length);
  return true;
}

/* The answer to its name: carried on as any step, then the input held
 * meanwhile is taken. Granted, it reads the room from its own arrival on. */
static void answer_join(struct client *client, unsigned answer,
                        uint64_t arrival) {
  client->joining = false;
  const char *stored = answer == SHARED_MAIL_ACCEPTED ? client->name
                       : answer == SHARED_MAIL_TAKEN  ? NULL
                                                      : STEP_ROOM_UNAVAILABLE;
  if (stored == client->name)
    client->cursor = client->seen = arrival;
  else
    leave_wave(client);
  step_join_answered(&cluster_model, client, &client->session, &server.session,
                     (struct chat_text){client->name, client->name_length},
                     stored);
  resume_input(client);
}

/* This server lost its place in the room (Redis came back empty, or after
 * the lease): the room retired its users, and this one is told and
 * closed, after the room's lines up to then. */
static void lose_room(struct client *client) {
  log_departed(&client->peer, client->session.name, client->session.name_length,
               DEPARTURE_ROOM_LOST);
  catch_up(client);
  client->in_room = false;
  leave_wave(client);
  carry_out(client, session_room_lost(&client->session));
}

/* What the parent posted to this child's mailbox since it last looked. */
static void hear_parent(struct client *client) {
  uint64_t arrival;
  unsigned mail = shared_room_take_mail(server.shared, client->slot, &arrival);
  if (mail == 0)
    return;
  if ((mail & SHARED_MAIL_ANSWER) && client->joining)
    answer_join(client, mail & SHARED_MAIL_ANSWER, arrival);
  for (unsigned refused = mail / SHARED_MAIL_REFUSED;
       refused > 0 && client->state == CLIENT_OPEN; refused--)
    carry_out(client,
              session_room_unavailable(&client->session, &server.session));
  if ((mail & SHARED_MAIL_LOST) && client->state == CLIENT_OPEN &&
      session_is_registered(&client->session))
    lose_room(client);
}

/* Whether the client has lines on their way through Redis, which anything
 * said to it alone must not overtake: the parent counts them done in its
 * mailbox once they are in the ring (or refused, or lost with the
 * connection), and posts ECHOED, which wakes it. */
static bool lines_out(const struct client *client) {
  return server.redis && client->lines_said != 0 &&
         shared_room_lines_done(server.shared, client->slot) <
             client->lines_said;
}

/* Whether its input stops: its name, a line, or its end waits. */
static bool waits(const struct client *client) {
  return client->joining || client->holding_frame || client->end_of_input;
}

/* Returns false: the framer stops at this frame, which waits (the bytes
 * after it are held by take_input). */
static bool hold_frame(struct client *client, const struct frame *frame) {
  client->held_frame.length = 0;
  if (!byte_buffer_append(&client->held_frame, frame->bytes, frame->length)) {
    drop_client(client, DEPARTURE_ERROR); /* out of memory */
    return false;
  }
  client->frame_kind = (unsigned char)frame->kind;
  client->holding_frame = true;
  return false;
}

/* The wait is over once its name is answered and its own lines are back:
 * the held frame, then the held input, then the end of input if it came
 * (it departs), unless something waits anew. The loop reads the socket
 * again when nothing waits. */
static void resume_input(struct client *client) {
  if (client->joining || client->state != CLIENT_OPEN)
    return;
  if (client->holding_frame) {
    if (lines_out(client))
      return;
    struct byte_buffer bytes = client->held_frame;
    client->held_frame = (struct byte_buffer){0};
    client->holding_frame = false;
    struct frame frame = {(enum frame_kind)client->frame_kind, bytes.bytes,
                          bytes.length};
    bool go_on = on_frame(client, &frame);
    byte_buffer_release(&bytes);
    if (client->state == CLIENT_CLOSING) { /* it said QUIT */
      depart(client, DEPARTURE_QUIT);
      return;
    }
    if (!go_on)
      return; /* dropped, or it waits again: the rest stays held */
  }
  if (client->held.length > 0) {
    struct byte_buffer rest = client->held;
    client->held = (struct byte_buffer){0};
    take_input(client, rest.bytes, rest.length); /* holds what waits anew */
    byte_buffer_release(&rest);
  }
  if (client->end_of_input && client->state == CLIENT_OPEN &&
      !client->joining && !client->holding_frame && !lines_out(client)) {
    client->end_of_input = false;
    depart(client, DEPARTURE_CLOSED);
    client->state = CLIENT_CLOSING;
  }
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

/* Into the room's waves, once: a member, or (with --redis) a name waiting
 * for its answer. */
static bool enter_wave(struct client *client) {
  if (client->in_wave)
    return true;
  shared_room_wave_enter(server.shared, client->slot);
  client->in_wave = true;
  return watch_wake_up(client, shared_room_wake_fd(server.shared));
}

/* Out of them: a name refused, a room lost. */
static void leave_wave(struct client *client) {
  if (!client->in_wave)
    return;
  client->in_wave = false;
  shared_room_wave_leave(server.shared, client->slot);
  (void)epoll_ctl(client->epoll, EPOLL_CTL_DEL,
                  shared_room_wake_fd(server.shared), NULL);
}

/* Asks epoll to report a writable socket only while output waits for one:
 * otherwise an idle client's socket, always writable, would wake it; and
 * input only while it reads (not while its name waits for Redis). */
static void watch_output(struct client *client, bool reading) {
  bool watch = pending(client) > 0;
  if (watch == client->watching_output && reading == client->watching_input)
    return;
  struct epoll_event event = {.events = (reading ? EPOLLIN : 0) |
                                        (watch ? EPOLLOUT : 0),
                              .data.fd = client->fd};
  epoll_ctl(client->epoll, EPOLL_CTL_MOD, client->fd, &event);
  client->watching_output = watch;
  client->watching_input = reading;
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
  if (child->ending)
    server.ending--;
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

/* ---- Helpers: the room shared through Redis (the parent) ------------- */

/* The link's hooks (redis_room.h) run in the parent's loop. What Redis gives
 * back is queued as changes, and published to the shared room at the end of
 * the turn, in one hold of the lock (so one wave carries a whole batch of
 * XREAD), or later if a child holds the lock: the parent never waits for
 * it long (a child stopped while it lists the names). A join answered for
 * a child goes the same way, after its arrival. */
enum change_kind {
  CHANGE_ARRIVED,  /* name, line; the slot whose claim it answers, if any */
  CHANGE_SAID,     /* line */
  CHANGE_DEPARTED, /* name, line */
  CHANGE_MAIL,     /* SHARED_MAIL_* for the slot's child */
  CHANGE_ECHOED,   /* `mail` more of the slot's child's lines are done */
  CHANGE_EMPTIED,  /* the room was lost: empty it */
};
struct change {
  uint8_t kind;
  uint8_t name_length;
  uint16_t unused;
  uint32_t mail;
  uint32_t slot;
  uint32_t line_length;
  uint64_t serial; /* of the slot's connection when it was queued */
  /* then the name's bytes, then the line's */
};
#define NO_SLOT UINT32_MAX

/* A join's `client` for redis_room.h: the slot, never NULL. */
static void *client_of(unsigned slot) {
  return (void *)((uintptr_t)slot + 1);
}

static unsigned slot_of(void *client) {
  return (unsigned)((uintptr_t)client - 1);
}

/* The seat of `slot` if its connection is still `serial`'s. */
static struct seat *seat_of(uint32_t slot, uint64_t serial) {
  if (slot >= server.options.max_clients || serial == 0 ||
      server.seats[slot].serial != serial)
    return NULL;
  return &server.seats[slot];
}

static void queue_change(enum change_kind kind, uint32_t slot, uint32_t mail,
                         struct chat_text name, struct chat_text line) {
  struct change change = {.kind = (uint8_t)kind,
                          .name_length = (uint8_t)name.length,
                          .mail = mail,
                          .slot = slot,
                          .line_length = (uint32_t)line.length,
                          .serial =
                              slot == NO_SLOT ? 0 : server.seats[slot].serial};
  size_t size = sizeof change + name.length + line.length;
  char *at = byte_buffer_reserve(&server.changes, size);
  if (!at) {
    log_line("out of memory for the room's lines: one dropped");
    return;
  }
  memcpy(at, &change, sizeof change);
  if (name.length)
    memcpy(at + sizeof change, name.bytes, name.length);
  if (line.length)
    memcpy(at + sizeof change + name.length, line.bytes, line.length);
  server.changes.length += size;
}

/* Returns a name (any, not NULL): a member the room cannot hold (more than
 * cluster_room_capacity) is found when the change is applied. */
static const char *on_arrived(void *model, void *client, struct chat_text name,
                              struct chat_text line) {
  (void)model;
  queue_change(CHANGE_ARRIVED, client ? slot_of(client) : NO_SLOT, 0, name,
               line);
  return name.bytes;
}

/* The seat holds the name from now on: its child ending before it hears
 * the answer releases it (release_seat). */
static void on_join_answered(void *model, void *client, struct chat_text name,
                             const char *stored) {
  (void)model;
  unsigned slot = slot_of(client);
  unsigned mail = stored == STEP_ROOM_UNAVAILABLE ? SHARED_MAIL_UNAVAILABLE
                  : stored                        ? SHARED_MAIL_ACCEPTED
                                                  : SHARED_MAIL_TAKEN;
  if (mail == SHARED_MAIL_ACCEPTED) {
    struct seat *seat = &server.seats[slot];
    memcpy(seat->name, name.bytes, name.length);
    seat->name_length = (unsigned char)name.length;
  }
  queue_change(CHANGE_MAIL, slot, mail, (struct chat_text){NULL, 0},
               (struct chat_text){NULL, 0});
}

static void on_said(void *model, struct chat_text line) {
  (void)model;
  queue_change(CHANGE_SAID, NO_SLOT, 0, (struct chat_text){NULL, 0}, line);
}

static void on_departed(void *model, struct chat_text name,
                        struct chat_text line) {
  (void)model;
  queue_change(CHANGE_DEPARTED, NO_SLOT, 0, name, line);
}

/* The room retired this server's users: each is told and closed (a child
 * whose name waits was told `Room unavailable` already), and the room is
 * emptied; names wait for Redis to be back. */
static void on_room_lost(void *model) {
  (void)model;
  queue_change(CHANGE_EMPTIED, NO_SLOT, 0, (struct chat_text){NULL, 0},
               (struct chat_text){NULL, 0});
  for (unsigned slot = 0; slot < server.slots_high; slot++) {
    struct seat *seat = &server.seats[slot];
    if (seat->serial == 0 || seat->name_length == 0)
      continue;
    seat->name_length = 0; /* retired already: nothing to release */
    queue_change(CHANGE_MAIL, slot, SHARED_MAIL_LOST,
                 (struct chat_text){NULL, 0}, (struct chat_text){NULL, 0});
  }
}

/* Read by the children as they need the room: they answer at once. */
static void on_available(void *model, bool available) {
  (void)model;
  shared_room_set_available(server.shared, available);
}

static int attach_redis(void *model, redisAsyncContext *context) {
  (void)model;
  return redis_poll_attach(&server.redis_poll, context);
}

/* Remembers a line said for the child of `slot` (redis_room_say's
 * `number`), until on_echoed finds it done. Returns false when out of
 * memory. */
static bool remember_said(uint64_t number, uint32_t slot, uint64_t serial) {
  if (server.said_first > 0 &&
      server.said_first + server.said_count == server.said_capacity) {
    memmove(server.said, server.said + server.said_first,
            server.said_count * sizeof *server.said);
    server.said_first = 0;
  }
  if (server.said_first + server.said_count == server.said_capacity) {
    size_t capacity = server.said_capacity ? 2 * server.said_capacity : 256;
    struct said_line *grown =
        realloc(server.said, capacity * sizeof *server.said);
    if (!grown)
      return false;
    server.said = grown;
    server.said_capacity = capacity;
  }
  server.said[server.said_first + server.said_count++] =
      (struct said_line){.number = number, .serial = serial, .slot = slot};
  return true;
}

/* This server's lines are done up to `done` (back from the stream, whose
 * lines were queued as changes just before; refused; or lost with the
 * connection): each child whose lines those were is told how many, after
 * those changes, so that it sees its lines in the ring first. A run of one
 * child's lines is told at once. */
static void on_echoed(void *model, uint64_t done) {
  (void)model;
  while (server.said_count > 0 &&
         server.said[server.said_first].number <= done) {
    struct said_line line = server.said[server.said_first];
    uint32_t count = 0;
    while (server.said_count > 0 &&
           server.said[server.said_first].number <= done &&
           server.said[server.said_first].slot == line.slot &&
           server.said[server.said_first].serial == line.serial &&
           count < UINT32_MAX) {
      server.said_first++;
      server.said_count--;
      count++;
    }
    if (seat_of(line.slot, line.serial)) /* its child is still there */
      queue_change(CHANGE_ECHOED, line.slot, count, (struct chat_text){NULL, 0},
                   (struct chat_text){NULL, 0});
  }
  if (server.said_count == 0)
    server.said_first = 0;
}

static const struct redis_room_model redis_model = {
    .attach = attach_redis,
    .arrived = on_arrived,
    .join_answered = on_join_answered,
    .said = on_said,
    .departed = on_departed,
    .lost = on_room_lost,
    .available = on_available,
    .echoed = on_echoed,
};

/* One change, with the lock held. A line too long for this ring (another
 * server's --max-line) is not published: every reader would lose its
 * place. */
static void apply_change(const struct change *change, struct chat_text name,
                         struct chat_text line) {
  struct shared_room *shared = server.shared;
  struct seat *seat = seat_of(change->slot, change->serial);
  if (line.length > server.options.max_backlog + RING_SLACK_BYTES / 2)
    line.length = 0;
  switch ((enum change_kind)change->kind) {
  case CHANGE_ARRIVED:
    if (shared_room_join(shared, name, 0) < 0)
      break; /* beyond the room's capacity: not listed, not heard */
    if (seat)
      seat->arrival = shared_room_head(shared);
    shared_room_publish(shared, line); /* empty: users there at the start */
    break;
  case CHANGE_SAID:
    if (line.length > 0)
      shared_room_publish(shared, line);
    break;
  case CHANGE_DEPARTED: {
    int member = room_find(shared_room_members(shared), name);
    if (member < 0)
      break;
    shared_room_leave(shared, member);
    shared_room_publish(shared, line);
    break;
  }
  case CHANGE_MAIL:
    if (!seat)
      break; /* its child ended meanwhile */
    if (change->mail == SHARED_MAIL_ACCEPTED && seat->arrival == UINT64_MAX) {
      /* Granted, but the room could not hold it: release it again. */
      redis_room_leave(server.redis,
                       (struct chat_text){seat->name, seat->name_length});
      seat->name_length = 0;
      shared_room_post(shared, change->slot, SHARED_MAIL_UNAVAILABLE, 0);
      break;
    }
    shared_room_post(shared, change->slot, change->mail, seat->arrival);
    if (change->mail == SHARED_MAIL_REFUSED) /* done, as far as it waits */
      shared_room_post_done(shared, change->slot, 1);
    break;
  case CHANGE_ECHOED:
    if (seat)
      shared_room_post_done(shared, change->slot, change->mail);
    break;
  case CHANGE_EMPTIED:
    shared_room_clear(shared);
    shared_room_publish(shared, (struct chat_text){NULL, 0});
    break;
  }
}

/* Publishes what Redis gave back this turn, in one hold of the lock: one
 * wave for all of it. */
static void apply_changes(void) {
  if (server.changes.length == 0)
    return;
  if (shared_room_lock_within(server.shared, RELEASE_LOCK_MILLISECONDS) ==
      SHARED_ROOM_BUSY)
    return; /* its holder may be stopped: parent_wait tries again */
  for (size_t at = 0; at < server.changes.length;) {
    struct change change;
    memcpy(&change, server.changes.bytes + at, sizeof change);
    const char *name = server.changes.bytes + at + sizeof change;
    apply_change(
        &change, (struct chat_text){name, change.name_length},
        (struct chat_text){name + change.name_length, change.line_length});
    at += sizeof change + change.name_length + change.line_length;
  }
  server.changes.length = 0;
  shared_room_unlock(server.shared); /* starts the wave */
  if (server.changes.capacity > REQUEST_BUFFER_BYTES)
    byte_buffer_release(&server.changes); /* after a burst */
}

/* One request of a child. One that comes from a connection that has ended
 * (its slot released, maybe given to another) is dropped. */
static void handle_request(const struct request *request, const char *bytes,
                           size_t length) {
  struct seat *seat = seat_of(request->slot, request->serial);
  if (!seat)
    return;
  struct chat_text text = {bytes, length};
  switch ((enum request_kind)request->kind) {
  case REQUEST_CLAIM:
    if (length == 0 || length > CHAT_NAME_MAX_BYTES)
      return;
    seat->arrival = UINT64_MAX; /* until its arrival is published */
    if (redis_room_join(server.redis, client_of(request->slot), text) ==
        STEP_ROOM_UNAVAILABLE)
      on_join_answered(NULL, client_of(request->slot), text,
                       STEP_ROOM_UNAVAILABLE);
    break;
  case REQUEST_SAY: {
    if (request->more || seat->pieces.length > 0 || seat->broken) {
      if (!seat->broken && !byte_buffer_append(&seat->pieces, bytes, length)) {
        byte_buffer_release(&seat->pieces);
        seat->broken = true; /* the line is refused at its last piece */
      }
      if (request->more)
        return;
      text = (struct chat_text){seat->pieces.bytes, seat->pieces.length};
    }
    /* Every line a child sends is either said, and done once it is back,
     * or refused (its sender is told), and done at once: its child counts
     * on it (lines_out). */
    uint64_t number = seat->broken ? 0 : redis_room_say(server.redis, text);
    if (!number)
      queue_change(CHANGE_MAIL, request->slot, SHARED_MAIL_REFUSED,
                   (struct chat_text){NULL, 0}, (struct chat_text){NULL, 0});
    else if (!remember_said(number, request->slot, request->serial))
      queue_change(CHANGE_ECHOED, request->slot, 1, /* out of memory: its */
                   (struct chat_text){NULL, 0},     /* child waits no more */
                   (struct chat_text){NULL, 0});
    byte_buffer_release(&seat->pieces);
    seat->broken = false;
    break;
  }
  case REQUEST_LEAVE:
    if (seat->name_length > 0)
      redis_room_leave(server.redis,
                       (struct chat_text){seat->name, seat->name_length});
    seat->name_length = 0;
    break;
  case REQUEST_ENDED:
    release_seat(request->slot);
    break;
  }
}

/* Reads up to REQUEST_BATCH requests; returns true when none is left. */
static bool read_requests(void) {
  for (int i = 0; i < REQUEST_BATCH; i++) {
    ssize_t got =
        recv(server.requests[0], server.request,
             sizeof(struct request) + REQUEST_PIECE_BYTES, MSG_DONTWAIT);
    if (got < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK;
    if ((size_t)got < sizeof(struct request))
      continue;
    struct request request;
    memcpy(&request, server.request, sizeof request);
    handle_request(&request, server.request + sizeof request,
                   (size_t)got - sizeof request);
  }
  return false;
}

/* A new child in `slot`: its requests carry `serial`. */
static void seat_child(unsigned slot, uint64_t serial) {
  struct seat *seat = &server.seats[slot];
  byte_buffer_release(&seat->pieces);
  *seat = (struct seat){.serial = serial, .arrival = UINT64_MAX};
  shared_room_clear_mail(server.shared, slot);
}

/* The child in the seat ended: its end goes through the pair after every
 * request it sent (the pair keeps their order), and the seat is released
 * when it comes back. False when the pair is full: later. */
static bool end_seat(struct child *child) {
  struct request ended = {.kind = REQUEST_ENDED,
                          .slot = child->slot,
                          .serial = server.seats[child->slot].serial};
  if (send(server.requests[1], &ended, sizeof ended,
           MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
    return false;
  child->ending = true;
  server.ending++;
  return true;
}

/* Every request of the seat's child is read: a name it held (it was
 * killed, or ended before it heard its answer) is released, a claim still
 * in flight is released when Redis grants it, and the slot is free. */
static void release_seat(unsigned slot) {
  struct child *child = NULL;
  for (size_t i = 0; i < server.connections && !child; i++) {
    if (server.children[i].slot == slot && server.children[i].ending)
      child = &server.children[i];
  }
  if (!child)
    return; /* cannot happen: one end per child */
  struct seat *seat = &server.seats[slot];
  redis_room_forget(server.redis, client_of(slot));
  if (seat->name_length > 0) {
    redis_room_leave(server.redis,
                     (struct chat_text){seat->name, seat->name_length});
    log_departed(&child->peer, seat->name, seat->name_length, DEPARTURE_FAILED);
  }
  byte_buffer_release(&seat->pieces);
  *seat = (struct seat){0};
  remove_child(child);
}

/* After poll(): Redis's answers and lines, the children's requests, the
 * link's clock, then what Redis gave back published in one wave, and the
 * commands queued meanwhile sent. */
static void serve_cluster(const struct pollfd *fds, size_t count) {
  redis_poll_dispatch(&server.redis_poll, fds, count);
  read_requests();
  long long now = now_milliseconds();
  if (now >= server.next_tick) {
    redis_room_tick(server.redis);
    server.next_tick =
        now + (long long)(redis_room_tick_seconds(server.redis) * 1000);
  }
  apply_changes();
  redis_poll_flush(&server.redis_poll);
}

/* Before the first child: the room's users so far are queued as changes.
 * Redis unreachable: one line naming the URL, and exit 1. */
static bool open_redis_room(void) {
  server.request = malloc(sizeof(struct request) + REQUEST_PIECE_BYTES);
  server.seats = calloc(server.options.max_clients, sizeof(struct seat));
  if (!server.request || !server.seats ||
      socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, server.requests) <
          0) {
    fprintf(stderr, "chat-forking: %s\n", strerror(errno));
    return false;
  }
  int size = REQUEST_BUFFER_BYTES;
  (void)setsockopt(server.requests[1], SOL_SOCKET, SO_SNDBUF, &size,
                   sizeof size); /* the default, if refused */
  char error[512];
  server.redis =
      redis_room_open(&server.options, &redis_model, error, sizeof error);
  if (!server.redis) {
    fprintf(stderr, "chat-forking: %s\n", error);
    return false;
  }
  shared_room_set_available(server.shared, redis_room_available(server.redis));
  return true;
}

/* ---- Helpers: setup, loop, teardown ---------------------------------- */

/* How long the parent may wait in poll: for ever, unless accepting is
 * paused, a departure waits for the lock, or a wave it left lines to
 * may need giving up. */
static int parent_wait(void) {
  int wait = shared_room_wave_alarm(server.shared);
  if ((server.ended > 0 || server.changes.length > 0) &&
      (wait < 0 || wait > RELEASE_RETRY_MILLISECONDS))
    wait = RELEASE_RETRY_MILLISECONDS;
  if (server.redis) { /* the link's clock */
    long long left = server.next_tick - now_milliseconds();
    if (left < 0)
      left = 0;
    if (wait < 0 || left < wait)
      wait = (int)left;
  }
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
 * with one poll; with --redis, also for its children's requests and its
 * connections to Redis. */
static void run(void) {
  for (;;) {
    int wait = parent_wait();
    struct pollfd fds[3 + REDIS_POLL_MAX] = {
        {.fd = server.signals, .events = POLLIN},
        {.fd = server.accept_paused ? -1 : server.listener, .events = POLLIN},
        {.fd = server.requests[0], .events = POLLIN},
    };
    /* What Redis gave back waits while a child holds the room lock (one
     * stopped while it lists the names); more than the ring holds would
     * lap every reader anyway: Redis waits then. */
    nfds_t count =
        server.redis
            ? 3 + redis_poll_fill(&server.redis_poll, fds + 3,
                                  server.changes.length < server.ring_bytes)
            : 2;
    if (poll(fds, count, wait) < 0 && errno != EINTR) {
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
    if (server.redis)
      serve_cluster(fds + 3, count - 3);
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
  redis_room_close(server.redis); /* if it is still open */
  for (int end = 0; end < 2; end++) {
    if (server.requests[end] >= 0)
      close(server.requests[end]);
  }
  for (size_t slot = 0; server.seats && slot < server.options.max_clients;
       slot++)
    byte_buffer_release(&server.seats[slot].pieces);
  free(server.seats);
  free(server.said);
  free(server.request);
  byte_buffer_release(&server.changes);
  shared_room_destroy(server.shared);
  free(server.children);
  free(server.free_slots);
  free(server.session.scratch);
}
