/* chat-threaded's record of a connection, shared by the story
 * (chat_threaded.c) and the outbox (outbox.c). */
#ifndef CHAT_THREADED_CLIENT_H
#define CHAT_THREADED_CLIENT_H

#include "byte_buffer.h"
#include "line_framer.h"
#include "os/log.h"
#include "os/peer_address.h"
#include "protocol.h"
#include "session.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

enum client_state {
  CLIENT_OPEN,    /* reading, and hearing the room */
  CLIENT_CLOSING, /* hears no more room lines; says its last ones, closes */
  CLIENT_DROPPED, /* closed at once: too slow, reset, or out of time */
};

struct client {
  pthread_t thread;               /* set by itself; read to wake or join it */
  void *stack;                    /* the thread's, from the stack pool */
  int fd;                         /* closed by the client's thread only */
  struct client *previous, *next; /* in server.clients */
  struct client *next_ended;      /* closed, its thread to be joined */
  long long login_deadline;       /* milliseconds, monotonic clock */
  struct line_framer framer;
  struct session session;
  struct session_context context; /* its scratch is on the thread's stack */
  struct peer_address peer;
  int member;        /* index in the room while registered (under the
                        room lock) */
  bool writing_self; /* the client's thread holds `writing` */

  /* With --redis, the client's thread's own: the name it asked for, which
   * its session names it by once accepted (the room's copy goes when Redis
   * is lost), and whether it waits for the room's answer. */
  char name[CHAT_NAME_MAX_BYTES];
  unsigned char name_length;
  bool joining;
  bool lines_out; /* it said lines that may not be back from Redis yet */

  /* Used by the thread that holds `writing` (outbox.c): */
  struct byte_buffer sending;   /* taken from `queued`, written unlocked */
  size_t sent;                  /* bytes of `sending` already written */
  struct client *next_to_write; /* sockets claimed in one broadcast */
  struct client *to_write;      /* those its own steps claimed */

  pthread_mutex_t lock;      /* guards the fields below */
  struct byte_buffer queued; /* added to by any thread, taken by the writer */
  size_t backlog;            /* queued, plus taken and not yet written */
  bool writing;              /* a thread has claimed the socket to write */
  bool sleeping;             /* the client's thread is going to sleep */
  enum client_state state;
  enum departure_cause cause; /* why it stopped being open */
  /* With --redis: the bridge's answer to what its thread waits for (a
   * name, its own lines back, or being forgotten: await_answer). */
  pthread_cond_t answered; /* signalled when it comes */
  bool has_answer;
  const char *answer; /* a name's, as step_join_answered() takes it */
};

/* Under client->lock (chat_threaded.c): marks a client too slow, or that
 * memory ran out for, and wakes its thread, which departs and closes. */
void drop_client_locked(struct client *client, enum departure_cause cause);

#endif
