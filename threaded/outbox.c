#include "outbox.h"

#include "os/clock.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

/* Times a writer takes what was queued meanwhile before it lets go. */
#define WRITE_ROUNDS 4

static struct {
  size_t max_backlog;
  sigset_t wake_mask; /* the signal mask inside ppoll: WAKE_SIGNAL passes */
} outbox;

static void on_wake(int signal_number) {
  (void)signal_number; /* it only has to end a ppoll */
}

bool outbox_init(size_t max_backlog, const sigset_t *stop_signals) {
  outbox.max_backlog = max_backlog;
  struct sigaction wake = {.sa_handler = on_wake};
  sigemptyset(&wake.sa_mask);
  sigset_t blocked = *stop_signals;
  sigaddset(&blocked, WAKE_SIGNAL);
  if (sigaction(WAKE_SIGNAL, &wake, NULL) < 0 ||
      pthread_sigmask(SIG_BLOCK, &blocked, &outbox.wake_mask) != 0)
    return false;
  /* Inside ppoll the stop signals stay blocked (the main thread reads
   * them), and WAKE_SIGNAL alone gets through. */
  for (int signal_number = 1; signal_number < NSIG; signal_number++) {
    if (sigismember(stop_signals, signal_number) == 1)
      sigaddset(&outbox.wake_mask, signal_number);
  }
  sigdelset(&outbox.wake_mask, WAKE_SIGNAL);
  return true;
}

void outbox_wake_locked(struct client *client) {
  /* The thread is alive (it ends only after taking this lock): the signal
   * cannot fail. */
  if (client->sleeping)
    (void)pthread_kill(client->thread, WAKE_SIGNAL);
  client->sleeping = false;
}

bool queue_output(struct client *client, const char *bytes, size_t length,
                  bool room_line) {
  if (length == 0)
    return false;
  bool claimed = false;
  pthread_mutex_lock(&client->lock);
  if (client->state == CLIENT_OPEN ||
      (client->state == CLIENT_CLOSING && !room_line)) {
    if (client->backlog + length > outbox.max_backlog) {
      drop_client_locked(client, DEPARTURE_SLOW);
    } else if (!byte_buffer_append(&client->queued, bytes, length)) {
      drop_client_locked(client, DEPARTURE_ERROR); /* out of memory */
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

void outbox_deliver(void *context, uintptr_t owner, struct chat_text line) {
  struct client **to_write = context;
  struct client *client = (struct client *)owner;
  if (!client) /* a user of another server, or one that left (--redis) */
    return;
  if (queue_output(client, line.bytes, line.length, true)) {
    client->next_to_write = *to_write;
    *to_write = client;
  }
}

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
    outbox_wake_locked(client);
  pthread_mutex_unlock(&client->lock);
}

void outbox_write_claimed(struct client *to_write) {
  while (to_write) {
    struct client *client = to_write;
    to_write = client->next_to_write; /* before let_go: it may be freed */
    write_queued(client);
    let_go(client);
  }
}

enum write_result outbox_write_own(struct client *client) {
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

short outbox_wait(struct client *client, short events, enum client_state state,
                  long long deadline) {
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
    timeout = timespec_from_milliseconds(left > 0 ? left : 0);
  }
  /* WAKE_SIGNAL gets through only inside this ppoll: sent earlier, it
   * stays pending and ends the ppoll at once, so no outbox_wake_locked-up is
   * lost between our last look and the sleep. */
  struct pollfd watched = {.fd = client->fd, .events = events};
  int ready = ppoll(&watched, 1, busy || deadline > 0 ? &timeout : NULL,
                    &outbox.wake_mask);
  if (!busy) {
    pthread_mutex_lock(&client->lock);
    client->sleeping = false;
    pthread_mutex_unlock(&client->lock);
  }
  return ready > 0 ? watched.revents : 0;
}

void outbox_stop_writing(struct client *client) {
  pthread_mutex_lock(&client->lock);
  if (client->writing_self)
    client->writing = false;
  while (client->writing) { /* let_go() wakes us */
    client->sleeping = true;
    pthread_mutex_unlock(&client->lock);
    ppoll(NULL, 0, NULL, &outbox.wake_mask);
    pthread_mutex_lock(&client->lock);
  }
  client->sleeping = false;
  pthread_mutex_unlock(&client->lock);
}
