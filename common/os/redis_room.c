/* The room shared through Redis, over hiredis (redis_room.h). The rules it
 * follows are common/cluster.h's; common/CLUSTER.md tells the whole story. */
#include "os/redis_room.h"

#include "cluster.h"
#include "os/clock.h"
#include "os/log.h"
#include "protocol.h"
#include "redis_url.h"
#include "step.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define STRINGIFY(x) #x
#define TEXT_OF(x) STRINGIFY(x)
#define READ_BATCH TEXT_OF(CLUSTER_READ_BATCH)

/* How long opening may wait for Redis, each step (docs/PROTOCOL.md: exit
 * within 5 s when Redis cannot be reached), and closing (within the 2 s a
 * stopping server has, beside saying goodbye to its clients). */
#define OPEN_TIMEOUT_MILLISECONDS 1500
#define CLOSE_TIMEOUT_MILLISECONDS 400

struct redis_room {
  struct redis_room_model model;
  struct redis_url url;
  char url_text[128]; /* the URL for messages, its password hidden */
  char prefix[CHAT_ROOM_NAME_MAX_BYTES + 32]; /* "c10k-chat:ROOM:" */
  char stream_key[CHAT_ROOM_NAME_MAX_BYTES + 40];
  char sha[CLUSTER_SCRIPTS][41]; /* the scripts, by their SHA1 */
  struct cluster_timing timing;
  struct cluster_health health;
  struct session_context context; /* formats arrivals and departures */

  redisAsyncContext *command; /* claims, lines, leaves, heartbeats */
  redisAsyncContext *reader;  /* XREAD BLOCK on the stream */
  unsigned connected;         /* how many of the two are connected */
  bool entered;               /* this server is in the room (it has an id) */
  bool reading;               /* an XREAD is waiting on `reader` */
  bool read_due;              /* read_after_turn: XREAD at the turn's end */
  bool closing;               /* redis_room_close: no hook any more */
  char server_id[48];         /* this server's id in the room */
  char nonce[17];             /* random, this process's part of its ids */
  char last_id[48];           /* the last stream line handled */
  size_t in_flight;           /* commands Redis has not answered */
  struct cluster_echo echo;   /* this server's lines on their way */

  struct cluster_joins joins;
  /* Names released while Redis was away, to release once it is back. */
  struct chat_text *pending_leaves;
  size_t pending_count, pending_capacity;
};

static double now_seconds(void) {
  return (double)now_milliseconds() / 1000.0;
}

static long long milliseconds(double seconds) {
  return (long long)(seconds * 1000.0 + 0.5);
}

/* A script's error, as Redis words it ("ERR RETIRED" from Redis 7,
 * "RETIRED" before). */
static bool is_error(const redisReply *reply, const char *text) {
  return reply && reply->type == REDIS_REPLY_ERROR &&
         strstr(reply->str, text) != NULL;
}

static bool is_ours(const struct redis_room *room, struct chat_text server) {
  return server.length == strlen(room->server_id) &&
         memcmp(server.bytes, room->server_id, server.length) == 0;
}

/* A reply, or its absence, to a command sent on `context`: true when it
 * belongs to the connection in use (not one dropped meanwhile), whose count
 * of commands in flight it lowers. */
static bool current(struct redis_room *room, const redisAsyncContext *context) {
  if (room->closing || context != room->command)
    return false;
  if (room->in_flight > 0)
    room->in_flight--;
  return true;
}

/* The lines this server said have come back up to a new one (or never
 * will): replies that waited for them may go. */
static void advance_echo(struct redis_room *room, uint64_t before) {
  if (room->echo.done != before && room->model.echoed && !room->closing)
    room->model.echoed(room->model.model, room->echo.done);
}

static void set_available(struct redis_room *room, bool available) {
  if (room->model.available)
    room->model.available(room->model.model, available);
}

/* Sends EVALSHA for a script with the prefix and `count` more arguments. */
static int run_script(struct redis_room *room, redisCallbackFn *callback,
                      void *data, enum cluster_script script, int count,
                      const char *const *arguments, const size_t *lengths) {
  const char *argv[8];
  size_t argl[8];
  argv[0] = "EVALSHA";
  argv[1] = room->sha[script];
  argv[2] = "0";
  argv[3] = room->prefix;
  for (int i = 0; i < 4; i++)
    argl[i] = strlen(argv[i]);
  for (int i = 0; i < count; i++) {
    argv[4 + i] = arguments[i];
    argl[4 + i] = lengths ? lengths[i] : strlen(arguments[i]);
  }
  if (!room->command ||
      redisAsyncCommandArgv(room->command, callback, data, 4 + count, argv,
                            argl) != REDIS_OK)
    return -1;
  room->in_flight++;
  return 0;
}

/* Leaving the room: the lease passed while Redis was away, or Redis said
 * this server was retired, or came back empty. */

static void drop_connections(struct redis_room *room);
static void enter_again(struct redis_room *room);
static void forget_pending_leaves(struct redis_room *room);

static void close_users(struct redis_room *room) {
  log_line("redis: %s: this server's users were retired from the room; "
           "closing them",
           room->url_text);
  /* Joins in flight: their names, if claimed, were retired too. */
  for (uint32_t i = 0; i < room->joins.capacity; i++) {
    struct cluster_join *join = &room->joins.slots[i];
    if (join->next_free != -2)
      continue;
    void *client = join->client;
    struct chat_text name = {join->name, join->name_length};
    if (client)
      room->model.join_answered(room->model.model, client, name,
                                STEP_ROOM_UNAVAILABLE);
  }
  cluster_joins_free(&room->joins);
  forget_pending_leaves(room); /* retired with the rest */
  uint64_t echoed = room->echo.done;
  cluster_echo_lost(&room->echo); /* said under an id that is gone */
  advance_echo(room, echoed);
  room->entered = false;
  strcpy(room->last_id, "0-0");
  set_available(room, false);
  room->model.lost(room->model.model);
}

/* Redis answered RETIRED or TRIMMED to a connected server: its users are
 * gone from the room; close them and enter anew on this connection. */
static void retired(struct redis_room *room) {
  if (!room->entered)
    return;
  cluster_health_resumed(&room->health, false, now_seconds());
  close_users(room);
  enter_again(room);
}

/* The stream: every server reads every line once and fans it out. */

static void read_stream(struct redis_room *room);

static struct chat_text text_of(const redisReply *reply) {
  return (struct chat_text){reply->str, reply->len};
}

static void handle_event(struct redis_room *room, struct cluster_event event) {
  void *model = room->model.model;
  switch (event.kind) {
  case CLUSTER_ARRIVED: {
    bool ours = is_ours(room, event.server);
    struct cluster_join *join =
        ours ? cluster_joins_find(&room->joins, event.token) : NULL;
    void *client = join ? join->client : NULL;
    const char *stored =
        room->model.arrived(model, client, event.name,
                            session_arrival_line(&room->context, event.name));
    if (client) {
      room->model.join_answered(model, client, event.name,
                                stored ? stored : STEP_ROOM_UNAVAILABLE);
    }
    if (join)
      cluster_joins_remove(&room->joins, event.token);
    /* Ours, but nobody waits for it any more (the client left, or was told
     * the room was unavailable while Redis was away): release it. */
    if (ours && (!client || !stored))
      redis_room_leave(room, event.name);
    break;
  }
  case CLUSTER_SAID: {
    room->model.said(model, event.line);
    if (event.number > 0 && is_ours(room, event.server))
      cluster_echo_back(&room->echo, event.number);
    break;
  }
  case CLUSTER_DEPARTED:
    room->model.departed(model, event.name,
                         session_departure_line(&room->context, event.name));
    break;
  case CLUSTER_UNKNOWN:
    break;
  }
}

/* XREAD's answer: [[stream, [[id, [field, value, ...]], ...]]]. */
static void on_stream(redisAsyncContext *context, void *r, void *data) {
  (void)data;
  struct redis_room *room = context->data;
  redisReply *reply = r;
  if (!reply || room->closing || context != room->reader)
    return;
  room->reading = false;
  uint64_t echoed = room->echo.done;
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
      reply->element[0]->type == REDIS_REPLY_ARRAY &&
      reply->element[0]->elements == 2) {
    redisReply *entries = reply->element[0]->element[1];
    for (size_t i = 0; i < entries->elements && room->entered; i++) {
      redisReply *entry = entries->element[i];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
        continue;
      redisReply *fields = entry->element[1];
      struct chat_text pairs[16];
      size_t count = 0;
      for (size_t f = 0; f < fields->elements && count < 16; f++)
        pairs[count++] = text_of(fields->element[f]);
      snprintf(room->last_id, sizeof room->last_id, "%s",
               entry->element[0]->str);
      handle_event(room, cluster_decode(pairs, count));
    }
  } else if (reply->type == REDIS_REPLY_ERROR) {
    log_line("redis: %s: XREAD: %s", room->url_text, reply->str);
  }
  advance_echo(room, echoed);
  if (room->entered && !room->model.read_after_turn)
    read_stream(room);
  else
    room->read_due = room->entered;
}

void redis_room_turn_done(struct redis_room *room) {
  if (room && room->read_due) {
    room->read_due = false;
    read_stream(room);
  }
}

static void read_stream(struct redis_room *room) {
  if (!room->reader || room->reading)
    return;
  const char *argv[] = {"XREAD",          "BLOCK",      "0",
                        "COUNT",          READ_BATCH,   "STREAMS",
                        room->stream_key, room->last_id};
  if (redisAsyncCommandArgv(room->reader, on_stream, NULL, 8, argv, NULL) ==
      REDIS_OK)
    room->reading = true;
}

/* Entering, resuming, the heartbeat. */

/* ENTER's answer: {id, last stream id, names in registration order}. */
static bool take_entry(struct redis_room *room, const redisReply *reply) {
  if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING ||
      reply->element[2]->type != REDIS_REPLY_ARRAY)
    return false;
  snprintf(room->server_id, sizeof room->server_id, "%s",
           reply->element[0]->str);
  snprintf(room->last_id, sizeof room->last_id, "%s", reply->element[1]->str);
  const redisReply *names = reply->element[2];
  for (size_t i = 0; i < names->elements; i++) {
    room->model.arrived(room->model.model, NULL, text_of(names->element[i]),
                        (struct chat_text){NULL, 0});
  }
  room->entered = true;
  cluster_health_entered(&room->health, now_seconds());
  return true;
}

static void on_entered(redisAsyncContext *context, void *r, void *data) {
  (void)data;
  struct redis_room *room = context->data;
  if (!current(room, context) || !r)
    return;
  if (!take_entry(room, r)) {
    log_line("redis: %s: entering the room failed: %s", room->url_text,
             ((redisReply *)r)->type == REDIS_REPLY_ERROR
                 ? ((redisReply *)r)->str
                 : "unexpected answer");
    drop_connections(room);
    return;
  }
  log_line("redis: %s: entered the room as server %s", room->url_text,
           room->server_id);
  set_available(room, true);
  read_stream(room);
}

static void enter_again(struct redis_room *room) {
  char deadline[32];
  snprintf(deadline, sizeof deadline, "%lld",
           milliseconds(room->timing.deadline));
  const char *arguments[] = {deadline, room->nonce};
  run_script(room, on_entered, NULL, CLUSTER_ENTER, 2, arguments, NULL);
}

static void send_pending_leaves(struct redis_room *room);

static void on_resumed(redisAsyncContext *context, void *r, void *data) {
  (void)data;
  struct redis_room *room = context->data;
  redisReply *reply = r;
  if (!current(room, context) || !reply)
    return;
  double now = now_seconds();
  if (reply->type == REDIS_REPLY_ERROR) {
    log_line("redis: %s: back, but this server's place in the room is gone "
             "(%s)",
             room->url_text, reply->str);
    retired(room);
    return;
  }
  log_line("redis: %s: back; catching up from line %s", room->url_text,
           room->last_id);
  cluster_health_resumed(&room->health, true, now);
  set_available(room, true);
  send_pending_leaves(room);
  read_stream(room);
  redis_room_tick(room); /* the beat that resuming asks for */
}

static void on_beat(redisAsyncContext *context, void *r, void *data) {
  (void)data;
  struct redis_room *room = context->data;
  redisReply *reply = r;
  if (!current(room, context) || !reply)
    return;
  if (is_error(reply, "RETIRED")) {
    retired(room);
    return;
  }
  cluster_health_beat_answered(&room->health);
}

static void beat(struct redis_room *room, double now) {
  if (!room->entered)
    return;
  char deadline[32], lease[32], every[32];
  snprintf(deadline, sizeof deadline, "%lld",
           milliseconds(room->timing.deadline));
  snprintf(lease, sizeof lease, "%lld", milliseconds(room->timing.lease));
  snprintf(every, sizeof every, "%lld", milliseconds(room->timing.beat));
  const char *arguments[] = {room->server_id, deadline, lease, every};
  if (run_script(room, on_beat, NULL, CLUSTER_BEAT, 4, arguments, NULL) == 0)
    cluster_health_beat_sent(&room->health, now);
}

/* Connections: two at a time, dropped together. */

static void on_disconnect(const redisAsyncContext *context, int status);

static void on_connect(const redisAsyncContext *context, int status) {
  struct redis_room *room = context->data;
  if (room->closing)
    return;
  if (status != REDIS_OK) {
    /* hiredis frees the context after this; forget it first. */
    if (context == room->command)
      room->command = NULL;
    if (context == room->reader)
      room->reader = NULL;
    drop_connections(room);
    cluster_health_disconnected(&room->health, &room->timing, now_seconds());
    return;
  }
  room->connected++;
}

/* Queues what every new connection says first: who it is, which
 * database. hiredis sends it once connected. */
static void introduce(struct redis_room *room, redisAsyncContext *context) {
  if (room->url.password[0]) {
    if (room->url.user[0])
      redisAsyncCommand(context, NULL, NULL, "AUTH %s %s", room->url.user,
                        room->url.password);
    else
      redisAsyncCommand(context, NULL, NULL, "AUTH %s", room->url.password);
  }
  if (room->url.db != 0)
    redisAsyncCommand(context, NULL, NULL, "SELECT %u", room->url.db);
}

static redisAsyncContext *connect_one(struct redis_room *room) {
  redisAsyncContext *context =
      room->url.is_unix
          ? redisAsyncConnectUnix(room->url.path)
          : redisAsyncConnect(room->url.host, (int)room->url.port);
  if (!context)
    return NULL;
  if (context->err) {
    redisAsyncFree(context);
    return NULL;
  }
  context->data = room;
  if (room->model.attach(room->model.model, context) != 0) {
    redisAsyncFree(context);
    return NULL;
  }
  redisAsyncSetConnectCallback(context, on_connect);
  redisAsyncSetDisconnectCallback(context, on_disconnect);
  introduce(room, context);
  return context;
}

static void load_scripts(struct redis_room *room) {
  for (int i = 0; i < CLUSTER_SCRIPTS; i++)
    redisAsyncCommand(room->command, NULL, NULL, "SCRIPT LOAD %s",
                      cluster_script_source(i));
}

/* Connects both again; the command connection then resumes this server's
 * place in the room, or enters it anew. */
static void reconnect(struct redis_room *room) {
  room->command = connect_one(room);
  room->reader = room->command ? connect_one(room) : NULL;
  if (!room->reader) {
    drop_connections(room);
    cluster_health_disconnected(&room->health, &room->timing, now_seconds());
    return;
  }
  cluster_health_connecting(&room->health, now_seconds());
  load_scripts(room);
  if (room->entered) {
    char deadline[32], lease[32];
    snprintf(deadline, sizeof deadline, "%lld",
             milliseconds(room->timing.deadline));
    snprintf(lease, sizeof lease, "%lld", milliseconds(room->timing.lease));
    const char *arguments[] = {room->server_id, room->last_id, deadline, lease};
    run_script(room, on_resumed, NULL, CLUSTER_RESUME, 4, arguments, NULL);
  } else {
    enter_again(room);
  }
}

static void drop_connections(struct redis_room *room) {
  redisAsyncContext *command = room->command, *reader = room->reader;
  room->command = room->reader = NULL;
  room->connected = 0;
  room->reading = false;
  room->read_due = false;
  room->in_flight = 0;
  uint64_t echoed = room->echo.done;
  cluster_echo_lost(&room->echo); /* lines out may never come back */
  advance_echo(room, echoed);
  /* Their callbacks run now with no reply, and find nothing to do. */
  if (command)
    redisAsyncFree(command);
  if (reader)
    redisAsyncFree(reader);
}

static void on_disconnect(const redisAsyncContext *context, int status) {
  (void)status;
  struct redis_room *room = context->data;
  if (room->closing || (context != room->command && context != room->reader))
    return; /* dropped on purpose */
  if (context == room->command)
    room->command = NULL;
  else
    room->reader = NULL;
  bool was_up = room->health.state == CLUSTER_UP;
  const char *cause = context->errstr ? context->errstr : "closed";
  drop_connections(room);
  if (was_up) {
    log_line("redis: %s: lost (%s); reconnecting", room->url_text,
             context->err ? cause : "connection closed");
    set_available(room, false);
  }
  unsigned actions =
      cluster_health_disconnected(&room->health, &room->timing, now_seconds());
  if (actions & CLUSTER_DO_CLOSE_USERS)
    close_users(room);
}

void redis_room_tick(struct redis_room *room) {
  double now = now_seconds();
  unsigned actions = cluster_health_tick(&room->health, &room->timing, now);
  if (actions & CLUSTER_DO_DISCONNECT) {
    if (room->health.state == CLUSTER_LOST && room->connected == 2)
      log_line("redis: %s: no answer for the lease (%.1f s); reconnecting",
               room->url_text, room->timing.lease);
    drop_connections(room);
  }
  if (actions & CLUSTER_DO_CLOSE_USERS && room->entered)
    close_users(room);
  if (actions & CLUSTER_DO_CONNECT)
    reconnect(room);
  if (actions & CLUSTER_DO_BEAT)
    beat(room, now);
}

double redis_room_tick_seconds(const struct redis_room *room) {
  return room->timing.tick;
}

/* What the step executor asks. */

bool redis_room_available(const struct redis_room *room) {
  return room->entered && room->command && room->health.state == CLUSTER_UP;
}

static bool can_send(const struct redis_room *room) {
  return redis_room_available(room) && room->in_flight < CLUSTER_MAX_IN_FLIGHT;
}

static void on_claimed(redisAsyncContext *context, void *r, void *data) {
  struct redis_room *room = context->data;
  redisReply *reply = r;
  uint64_t token = (uint64_t)(uintptr_t)data;
  current(room, context);
  if (room->closing)
    return;
  struct cluster_join *join = cluster_joins_find(&room->joins, token);
  if (reply && reply->type == REDIS_REPLY_STRING)
    return; /* claimed: its arrival on the stream completes it */
  if (is_error(reply, "RETIRED")) {
    retired(room);
    return;
  }
  if (!join)
    return;
  /* Taken (0), or no answer: Redis went away (if the claim got there, its
   * arrival will find no join and be released). */
  void *client = join->client;
  struct chat_text name = {join->name, join->name_length};
  bool taken = reply && reply->type == REDIS_REPLY_INTEGER;
  if (client)
    room->model.join_answered(room->model.model, client, name,
                              taken ? NULL : STEP_ROOM_UNAVAILABLE);
  cluster_joins_remove(&room->joins, token);
}

const char *redis_room_join(struct redis_room *room, void *client,
                            struct chat_text name) {
  if (!can_send(room))
    return STEP_ROOM_UNAVAILABLE;
  uint64_t token = cluster_joins_add(&room->joins, client, name);
  if (token == 0)
    return STEP_ROOM_UNAVAILABLE;
  char token_text[24];
  snprintf(token_text, sizeof token_text, "%llu", (unsigned long long)token);
  const char *arguments[] = {room->server_id, name.bytes, token_text};
  size_t lengths[] = {strlen(room->server_id), name.length, strlen(token_text)};
  if (run_script(room, on_claimed, (void *)(uintptr_t)token, CLUSTER_CLAIM, 3,
                 arguments, lengths) != 0) {
    cluster_joins_remove(&room->joins, token);
    return STEP_ROOM_UNAVAILABLE;
  }
  return STEP_JOIN_PENDING;
}

/* A line's answer. RETIRED: this server's users are gone. Any other error
 * (Redis out of memory, the scripts flushed) means the line did not land
 * and this connection cannot be trusted: start over as if it had broken,
 * which loads the scripts again, resumes within the lease, and counts the
 * lines out as done, so that no sender waits for an echo that will not
 * come. */
static void on_said(redisAsyncContext *context, void *r, void *data) {
  (void)data;
  struct redis_room *room = context->data;
  redisReply *reply = r;
  if (!current(room, context) || !reply || reply->type != REDIS_REPLY_ERROR)
    return;
  if (is_error(reply, "RETIRED")) {
    retired(room);
    return;
  }
  log_line("redis: %s: a line was refused (%s); reconnecting", room->url_text,
           reply->str);
  drop_connections(room);
  unsigned actions =
      cluster_health_disconnected(&room->health, &room->timing, now_seconds());
  if (actions & CLUSTER_DO_CLOSE_USERS)
    close_users(room);
}

uint64_t redis_room_say(struct redis_room *room, struct chat_text line) {
  uint64_t number = cluster_echo_said(&room->echo);
  char number_text[24];
  snprintf(number_text, sizeof number_text, "%llu", (unsigned long long)number);
  const char *arguments[] = {room->server_id, line.bytes, number_text};
  size_t lengths[] = {strlen(room->server_id), line.length,
                      strlen(number_text)};
  if (can_send(room) && run_script(room, on_said, NULL, CLUSTER_SAY, 3,
                                   arguments, lengths) == 0) {
    cluster_echo_sent(&room->echo, number);
    return number;
  }
  uint64_t echoed = room->echo.done;
  cluster_echo_refused(&room->echo, number);
  advance_echo(room, echoed);
  return 0;
}

bool redis_room_echoed(const struct redis_room *room, uint64_t number) {
  return cluster_echo_done(&room->echo, number);
}

static void on_left(redisAsyncContext *context, void *r, void *data) {
  (void)r;
  (void)data;
  current(context->data, context);
}

static void send_leave(struct redis_room *room, struct chat_text name) {
  const char *arguments[] = {room->server_id, name.bytes};
  size_t lengths[] = {strlen(room->server_id), name.length};
  run_script(room, on_left, NULL, CLUSTER_LEAVE, 2, arguments, lengths);
}

void redis_room_leave(struct redis_room *room, struct chat_text name) {
  if (!room->entered)
    return; /* retired: the room announced the departure then */
  if (redis_room_available(room)) {
    send_leave(room, name);
    return;
  }
  /* Redis is away: release the name once it is back. */
  if (room->pending_count == room->pending_capacity) {
    size_t capacity = room->pending_capacity ? 2 * room->pending_capacity : 64;
    struct chat_text *grown =
        realloc(room->pending_leaves, capacity * sizeof *grown);
    if (!grown)
      return; /* the lease retires it, if Redis stays away */
    room->pending_leaves = grown;
    room->pending_capacity = capacity;
  }
  char *copy = malloc(name.length);
  if (!copy)
    return;
  memcpy(copy, name.bytes, name.length);
  room->pending_leaves[room->pending_count++] =
      (struct chat_text){copy, name.length};
}

static void send_pending_leaves(struct redis_room *room) {
  for (size_t i = 0; i < room->pending_count; i++) {
    send_leave(room, room->pending_leaves[i]);
    free((char *)room->pending_leaves[i].bytes);
  }
  room->pending_count = 0;
}

static void forget_pending_leaves(struct redis_room *room) {
  for (size_t i = 0; i < room->pending_count; i++)
    free((char *)room->pending_leaves[i].bytes);
  room->pending_count = 0;
}

void redis_room_forget(struct redis_room *room, void *client) {
  cluster_joins_forget(&room->joins, client);
}

/* Opening and closing, which wait: the one time the server blocks on
 * Redis is before it serves anyone and as it stops. */

static redisContext *connect_now(const struct redis_url *url,
                                 long long timeout_ms, char *error,
                                 size_t error_size) {
  struct timeval timeout = timeval_from_milliseconds(timeout_ms);
  redisContext *context =
      url->is_unix
          ? redisConnectUnixWithTimeout(url->path, timeout)
          : redisConnectWithTimeout(url->host, (int)url->port, timeout);
  if (!context || context->err) {
    snprintf(error, error_size, "%s",
             context ? context->errstr : "out of memory");
    if (context)
      redisFree(context);
    return NULL;
  }
  redisSetTimeout(context, timeout);
  return context;
}

/* Runs a command on a waiting connection: the reply, or NULL with the cause
 * in error. */
static redisReply *ask(redisContext *context, char *error, size_t error_size,
                       int argc, const char **argv, const size_t *lengths) {
  redisReply *reply = redisCommandArgv(context, argc, argv, lengths);
  if (!reply) {
    snprintf(error, error_size, "%s", context->errstr);
    return NULL;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(error, error_size, "%s", reply->str);
    freeReplyObject(reply);
    return NULL;
  }
  return reply;
}

static bool introduce_now(redisContext *context, const struct redis_url *url,
                          char *error, size_t error_size) {
  redisReply *reply = NULL;
  if (url->password[0]) {
    const char *argv[] = {"AUTH", url->user, url->password};
    reply = url->user[0] ? ask(context, error, error_size, 3, argv, NULL)
                         : ask(context, error, error_size, 2,
                               (const char *[]){"AUTH", url->password}, NULL);
    if (!reply)
      return false;
    freeReplyObject(reply);
  }
  char db[16];
  snprintf(db, sizeof db, "%u", url->db);
  reply =
      ask(context, error, error_size, 2, (const char *[]){"SELECT", db}, NULL);
  if (!reply)
    return false;
  freeReplyObject(reply);
  return true;
}

/* 16 hex digits from the kernel's random source (the clock and the process
 * id if it has none to give). */
static void make_nonce(char *nonce, size_t size) {
  uint64_t value;
  if (getrandom(&value, sizeof value, GRND_NONBLOCK) != (ssize_t)sizeof value)
    value = (uint64_t)now_milliseconds() * 2654435761u ^ (uint64_t)getpid();
  snprintf(nonce, size, "%016llx", (unsigned long long)value);
}

static void describe_url(const char *text, char *out, size_t size) {
  /* The password is not for the log: redis://user:***@host. */
  const char *at = strchr(text, '@');
  const char *scheme_end = strstr(text, "://");
  const char *colon = scheme_end ? strchr(scheme_end + 3, ':') : NULL;
  if (at && colon && colon < at)
    snprintf(out, size, "%.*s***%s", (int)(colon + 1 - text), text, at);
  else
    snprintf(out, size, "%s", text);
}

struct redis_room *redis_room_open(const struct chat_options *options,
                                   const struct redis_room_model *model,
                                   char *error, size_t error_size) {
  struct redis_room *room = calloc(1, sizeof *room);
  if (!room) {
    snprintf(error, error_size, "out of memory");
    return NULL;
  }
  room->model = *model;
  room->joins = CLUSTER_JOINS_EMPTY;
  room->timing = cluster_timing_for(options->lease);
  room->context =
      session_context_make(options->room_name, options->max_line, true);
  describe_url(options->redis_url, room->url_text, sizeof room->url_text);
  make_nonce(room->nonce, sizeof room->nonce);
  snprintf(room->prefix, sizeof room->prefix,
           CLUSTER_KEY_PREFIX "%s:", options->room_name);
  snprintf(room->stream_key, sizeof room->stream_key, "%sstream", room->prefix);
  const char *why = NULL;
  char cause[256] = "";
  if (!room->context.scratch) {
    snprintf(cause, sizeof cause, "out of memory");
  } else if (!redis_url_parse(options->redis_url, &room->url, &why)) {
    snprintf(cause, sizeof cause, "%s", why);
  } else {
    redisContext *redis =
        connect_now(&room->url, OPEN_TIMEOUT_MILLISECONDS, cause, sizeof cause);
    if (redis && introduce_now(redis, &room->url, cause, sizeof cause)) {
      bool loaded = true;
      for (int i = 0; i < CLUSTER_SCRIPTS && loaded; i++) {
        redisReply *sha = ask(
            redis, cause, sizeof cause, 3,
            (const char *[]){"SCRIPT", "LOAD", cluster_script_source(i)}, NULL);
        loaded = sha && sha->type == REDIS_REPLY_STRING;
        if (loaded)
          snprintf(room->sha[i], sizeof room->sha[i], "%s", sha->str);
        if (sha)
          freeReplyObject(sha);
      }
      char deadline[32];
      snprintf(deadline, sizeof deadline, "%lld",
               milliseconds(room->timing.deadline));
      redisReply *entry =
          loaded
              ? ask(redis, cause, sizeof cause, 6,
                    (const char *[]){"EVALSHA", room->sha[CLUSTER_ENTER], "0",
                                     room->prefix, deadline, room->nonce},
                    NULL)
              : NULL;
      if (entry && !take_entry(room, entry))
        snprintf(cause, sizeof cause, "unexpected answer to entering");
      if (entry)
        freeReplyObject(entry);
    }
    if (redis)
      redisFree(redis);
  }
  if (!room->entered) {
    snprintf(error, error_size, "cannot use Redis at %s: %s", room->url_text,
             cause[0] ? cause : "unknown error");
    room->closing = true;
    redis_room_close(room);
    return NULL;
  }
  cluster_health_start(&room->health, now_seconds());
  room->command = connect_one(room);
  room->reader = room->command ? connect_one(room) : NULL;
  if (!room->reader) {
    drop_connections(room);
    cluster_health_disconnected(&room->health, &room->timing, now_seconds());
  } else {
    read_stream(room);
  }
  return room;
}

void redis_room_close(struct redis_room *room) {
  if (!room)
    return;
  room->closing = true;
  if (room->entered && room->health.state == CLUSTER_UP) {
    /* The users depart at once, announced by Redis to the other servers.
     * With Redis away, the lease retires them instead. */
    char cause[256];
    redisContext *redis = connect_now(&room->url, CLOSE_TIMEOUT_MILLISECONDS,
                                      cause, sizeof cause);
    redisReply *reply =
        redis && introduce_now(redis, &room->url, cause, sizeof cause)
            ? ask(redis, cause, sizeof cause, 5,
                  (const char *[]){"EVAL", cluster_script_source(CLUSTER_EXIT),
                                   "0", room->prefix, room->server_id},
                  NULL)
            : NULL;
    if (reply)
      freeReplyObject(reply);
    else
      log_line("redis: %s: could not leave the room (%s); the lease will",
               room->url_text, cause);
    if (redis)
      redisFree(redis);
  }
  drop_connections(room);
  cluster_joins_free(&room->joins);
  forget_pending_leaves(room);
  free(room->pending_leaves);
  free(room->context.scratch);
  free(room);
}
