/* chat-threaded's bridge to Redis (bridge.h): the queue the client threads
 * fill, and the thread that empties it into the room's link. */
#include "bridge.h"

#include "os/clock.h"
#include "step.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Requests that may wait for the bridge at once: beyond, a line or a name
 * is told "Room unavailable" (the bridge hands them to the link as fast as
 * they come, so the queue only grows when its thread cannot run). The
 * link bounds what waits for Redis the same way (CLUSTER_MAX_IN_FLIGHT). */
#define MAX_QUEUED 65536

enum request_kind {
  REQUEST_JOIN,   /* claim the name in `bytes` for `client` */
  REQUEST_SAY,    /* say the line in `bytes` (`client` said it) */
  REQUEST_LEAVE,  /* release the name in `bytes` */
  REQUEST_ECHO,   /* tell `client` once the lines said before are back */
  REQUEST_FORGET, /* `client` is going */
};

/* What a client's thread asks, with its own copy of the name or the line.
 * A join the link takes stays, as the link's `client`, on the list of
 * names being claimed until its answer comes; an echo, on the list of
 * those waiting for lines to come back. */
struct request {
  struct request *previous, *next;
  enum request_kind kind;
  void *client;  /* the model's client (none for REQUEST_LEAVE) */
  uint64_t echo; /* REQUEST_ECHO: the line to wait for */
  size_t length;
  char bytes[];
};

struct request_list {
  struct request *first, *last;
};

struct bridge {
  struct bridge_model model;     /* the model's hooks */
  struct redis_room_model hooks; /* the link's: the bridge's, around them */
  struct redis_room *link;
  struct event_base *base;
  int doorbell;                 /* an eventfd: the queue is not empty */
  struct event *doorbell_event; /* watches it */
  struct event *clock;          /* calls redis_room_tick */
  struct event *flush;          /* calls the model's flush, made active */
  pthread_t thread;
  atomic_bool available; /* the link's last word: lines can reach the room */

  pthread_mutex_t lock; /* guards the queue and the flags below */
  struct request_list queue;
  size_t queued;
  bool stopping; /* bridge_stop: leave the room */
  bool closed;   /* the room is left: nothing more is taken */

  /* The bridge's thread alone: */
  struct request_list joining; /* names the link is claiming */
  struct request_list echoing; /* echoes, in the order of their lines */
  uint64_t last_said;          /* the number of the last line said */
  uint64_t lost_said;          /* the last line said before the room was lost */
};

static void list_append(struct request_list *list, struct request *request) {
  request->previous = list->last;
  request->next = NULL;
  if (list->last)
    list->last->next = request;
  else
    list->first = request;
  list->last = request;
}

static void list_remove(struct request_list *list, struct request *request) {
  if (request->previous)
    request->previous->next = request->next;
  else
    list->first = request->next;
  if (request->next)
    request->next->previous = request->previous;
  else
    list->last = request->previous;
}

/* ---- The client threads' side ---------------------------------------- */

static void ring(struct bridge *bridge) {
  /* Fails only if the count reached 2^64 - 1: never. */
  (void)eventfd_write(bridge->doorbell, 1);
}

/* Queues a request; one that `may_refuse` is refused while the room is
 * unreachable, the queue is full or the bridge is stopping. The doorbell
 * rings only when the queue was empty: the bridge reads it before it takes
 * the queue, so a request added meanwhile is either taken or rings. */
static bool push(struct bridge *bridge, enum request_kind kind, void *client,
                 struct chat_text text, bool may_refuse) {
  if (may_refuse && !bridge_available(bridge))
    return false;
  struct request *request = malloc(sizeof *request + text.length);
  if (!request)
    return false;
  request->kind = kind;
  request->client = client;
  request->length = text.length;
  if (text.length > 0)
    memcpy(request->bytes, text.bytes, text.length);
  pthread_mutex_lock(&bridge->lock);
  bool taken =
      !bridge->closed &&
      !(may_refuse && (bridge->stopping || bridge->queued >= MAX_QUEUED));
  bool was_empty = bridge->queue.first == NULL;
  if (taken) {
    list_append(&bridge->queue, request);
    bridge->queued++;
  }
  pthread_mutex_unlock(&bridge->lock);
  if (!taken) {
    free(request);
    return false;
  }
  if (was_empty)
    ring(bridge);
  return true;
}

bool bridge_available(struct bridge *bridge) {
  return atomic_load(&bridge->available);
}

bool bridge_join(struct bridge *bridge, void *client, struct chat_text name) {
  return push(bridge, REQUEST_JOIN, client, name, true);
}

bool bridge_say(struct bridge *bridge, void *client, struct chat_text line) {
  return push(bridge, REQUEST_SAY, client, line, true);
}

void bridge_leave(struct bridge *bridge, struct chat_text name) {
  /* Out of memory, the name stays the room's until this server stops. */
  (void)push(bridge, REQUEST_LEAVE, NULL, name, false);
}

bool bridge_echo(struct bridge *bridge, void *client) {
  return push(bridge, REQUEST_ECHO, client, (struct chat_text){NULL, 0}, false);
}

bool bridge_forget(struct bridge *bridge, void *client) {
  return push(bridge, REQUEST_FORGET, client, (struct chat_text){NULL, 0},
              false);
}

/* ---- The bridge's thread --------------------------------------------- */

/* The link's hooks: the bridge's own, and the model's, handed a join's
 * client where the link hands the join's request. */

static void on_echoed(void *model, uint64_t done);

static int attach(void *model, redisAsyncContext *context) {
  struct bridge *bridge = model;
  return redisLibeventAttach(context, bridge->base) == REDIS_OK ? 0 : -1;
}

static const char *arrived(void *model, void *join, struct chat_text name,
                           struct chat_text line) {
  const struct redis_room_model *room = &((struct bridge *)model)->model.room;
  struct request *request = join;
  return room->arrived(room->model, request ? request->client : NULL, name,
                       line);
}

static void join_answered(void *model, void *join, struct chat_text name,
                          const char *stored) {
  struct bridge *bridge = model;
  struct request *request = join;
  list_remove(&bridge->joining, request);
  bridge->model.room.join_answered(bridge->model.room.model, request->client,
                                   name, stored);
  free(request);
}

static void said(void *model, struct chat_text line) {
  const struct redis_room_model *room = &((struct bridge *)model)->model.room;
  room->said(room->model, line);
}

static void departed(void *model, struct chat_text name,
                     struct chat_text line) {
  const struct redis_room_model *room = &((struct bridge *)model)->model.room;
  room->departed(room->model, name, line);
}

/* The room is lost: the lines said so far never come back (a retired
 * server's lines are refused); nobody waits for them. */
static void lost(void *model) {
  struct bridge *bridge = model;
  bridge->model.room.lost(bridge->model.room.model);
  bridge->lost_said = bridge->last_said;
  on_echoed(bridge, bridge->lost_said);
}

static void on_available(void *model, bool available) {
  struct bridge *bridge = model;
  atomic_store(&bridge->available, available);
}

/* This server's lines are back up to a new one: the echoes waiting for
 * them are told, in order (each waits for a later line than the one
 * before). */
static void on_echoed(void *model, uint64_t done) {
  struct bridge *bridge = model;
  struct request *echo;
  if (done < bridge->lost_said)
    done = bridge->lost_said;
  while ((echo = bridge->echoing.first) && echo->echo <= done) {
    list_remove(&bridge->echoing, echo);
    bridge->model.echoed(echo->client);
    free(echo);
  }
}

/* A name that will never reach the link: the room is not there for it. */
static void refuse_join(struct bridge *bridge, struct request *join) {
  bridge->model.room.join_answered(
      bridge->model.room.model, join->client,
      (struct chat_text){join->bytes, join->length}, STEP_ROOM_UNAVAILABLE);
  free(join);
}

/* One request, handed to the link. */
static void carry_out(struct bridge *bridge, struct request *request) {
  struct chat_text text = {request->bytes, request->length};
  switch (request->kind) {
  case REQUEST_JOIN:
    if (redis_room_join(bridge->link, request, text) == STEP_JOIN_PENDING)
      list_append(&bridge->joining, request); /* until join_answered */
    else
      refuse_join(bridge, request);
    return;
  case REQUEST_SAY: {
    /* 0: Redis went away since the sender looked, or too much waits for
     * it: the line is dropped, and the sender told. */
    uint64_t number = redis_room_say(bridge->link, text);
    if (number > 0)
      bridge->last_said = number;
    else
      bridge->model.refused(request->client);
    break;
  }
  case REQUEST_ECHO:
    /* The client's lines were said before: the last line said is at least
     * its last one. */
    request->echo = bridge->last_said;
    if (request->echo > bridge->lost_said &&
        !redis_room_echoed(bridge->link, request->echo)) {
      list_append(&bridge->echoing, request); /* until on_echoed */
      return;
    }
    bridge->model.echoed(request->client);
    break;
  case REQUEST_LEAVE:
    redis_room_leave(bridge->link, text);
    break;
  case REQUEST_FORGET:
    redis_room_forget(bridge->link, request->client);
    bridge->model.forgotten(request->client);
    break;
  }
  free(request);
}

/* The doorbell rang: take the whole queue at once and carry it out in
 * order, without the lock. */
static void on_doorbell(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  struct bridge *bridge = arg;
  eventfd_t count;
  (void)eventfd_read(bridge->doorbell, &count); /* before taking the queue */
  pthread_mutex_lock(&bridge->lock);
  struct request *request = bridge->queue.first;
  bridge->queue = (struct request_list){NULL, NULL};
  bridge->queued = 0;
  bool stopping = bridge->stopping;
  pthread_mutex_unlock(&bridge->lock);
  while (request) {
    struct request *next = request->next; /* a join moves to `joining` */
    carry_out(bridge, request);
    request = next;
  }
  if (stopping)
    event_base_loopbreak(bridge->base);
}

static void on_flush(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  struct bridge *bridge = arg;
  bridge->model.flush();
}

void bridge_flush_later(struct bridge *bridge) {
  event_active(bridge->flush, 0, 0); /* once, however often it is asked */
}

static void on_clock(evutil_socket_t fd, short events, void *arg) {
  (void)fd;
  (void)events;
  struct bridge *bridge = arg;
  redis_room_tick(bridge->link);
}

/* Stopping: every name and echo still waiting is answered (the room is
 * gone for them) and every client going is forgotten; then the link leaves
 * the room, which makes this server's users depart on every other server
 * at once, and no hook runs after that. What is asked later is refused. */
static void leave_the_room(struct bridge *bridge) {
  atomic_store(&bridge->available, false);
  pthread_mutex_lock(&bridge->lock);
  bridge->closed = true;
  struct request *request = bridge->queue.first;
  bridge->queue = (struct request_list){NULL, NULL};
  pthread_mutex_unlock(&bridge->lock);
  while (request) { /* lines and leaves: the room is left anyway */
    struct request *next = request->next;
    if (request->kind == REQUEST_JOIN) {
      refuse_join(bridge, request);
    } else {
      if (request->kind == REQUEST_ECHO)
        bridge->model.echoed(request->client);
      if (request->kind == REQUEST_FORGET)
        bridge->model.forgotten(request->client);
      free(request);
    }
    request = next;
  }
  while (bridge->echoing.first) {
    struct request *echo = bridge->echoing.first;
    list_remove(&bridge->echoing, echo);
    bridge->model.echoed(echo->client);
    free(echo);
  }
  while (bridge->joining.first) {
    struct request *join = bridge->joining.first;
    list_remove(&bridge->joining, join);
    refuse_join(bridge, join);
  }
  redis_room_close(bridge->link);
  bridge->link = NULL;
}

static void *run(void *arg) {
  struct bridge *bridge = arg;
  event_base_dispatch(bridge->base);
  bridge->model.flush(); /* what the last batch left */
  leave_the_room(bridge);
  return NULL;
}

/* ---- Opening and closing --------------------------------------------- */

static void free_bridge(struct bridge *bridge) {
  if (bridge->clock)
    event_free(bridge->clock);
  if (bridge->flush)
    event_free(bridge->flush);
  if (bridge->doorbell_event)
    event_free(bridge->doorbell_event);
  if (bridge->base)
    event_base_free(bridge->base);
  if (bridge->doorbell >= 0)
    close(bridge->doorbell);
  pthread_mutex_destroy(&bridge->lock);
  free(bridge);
}

struct bridge *bridge_open(const struct chat_options *options,
                           const struct bridge_model *model, char *error,
                           size_t error_size) {
  struct bridge *bridge = calloc(1, sizeof *bridge);
  if (!bridge) {
    snprintf(error, error_size, "the bridge to Redis: out of memory");
    return NULL;
  }
  bridge->model = *model;
  bridge->hooks = (struct redis_room_model){
      .model = bridge,
      .attach = attach,
      .arrived = arrived,
      .join_answered = join_answered,
      .said = said,
      .departed = departed,
      .lost = lost,
      .available = on_available,
      .echoed = on_echoed,
  };
  bridge->doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  pthread_mutex_init(&bridge->lock, NULL);
  bridge->base = event_base_new();
  if (bridge->base && bridge->doorbell >= 0) {
    bridge->doorbell_event =
        event_new(bridge->base, bridge->doorbell, EV_READ | EV_PERSIST,
                  on_doorbell, bridge);
    bridge->flush = event_new(bridge->base, -1, 0, on_flush, bridge);
  }
  if (!bridge->doorbell_event || !bridge->flush ||
      event_add(bridge->doorbell_event, NULL) < 0) {
    snprintf(error, error_size, "the bridge to Redis: %s",
             bridge->doorbell < 0 ? strerror(errno) : "libevent failed");
    free_bridge(bridge);
    return NULL;
  }
  bridge->link = redis_room_open(options, &bridge->hooks, error, error_size);
  if (!bridge->link) {
    free_bridge(bridge);
    return NULL;
  }
  atomic_store(&bridge->available, redis_room_available(bridge->link));
  struct timeval every = timeval_from_milliseconds(
      (long long)(redis_room_tick_seconds(bridge->link) * 1000 + 0.5));
  bridge->clock = event_new(bridge->base, -1, EV_PERSIST, on_clock, bridge);
  int failed = !bridge->clock || event_add(bridge->clock, &every) < 0
                   ? -1
                   : pthread_create(&bridge->thread, NULL, run, bridge);
  if (failed != 0) {
    snprintf(error, error_size, "the bridge to Redis: %s",
             failed > 0 ? strerror(failed) : "libevent failed");
    redis_room_close(bridge->link);
    free_bridge(bridge);
    return NULL;
  }
  return bridge;
}

void bridge_stop(struct bridge *bridge) {
  atomic_store(&bridge->available, false);
  pthread_mutex_lock(&bridge->lock);
  bridge->stopping = true;
  pthread_mutex_unlock(&bridge->lock);
  ring(bridge);
}

void bridge_close(struct bridge *bridge) {
  pthread_join(bridge->thread, NULL);
  free_bridge(bridge);
}
