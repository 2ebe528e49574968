/* The room shared through Redis (docs/PROTOCOL.md section 7), carried over
 * hiredis's asynchronous API: the one place that speaks to Redis.
 *
 * common/cluster.h holds the rules (the scripts, the lease's clock, the
 * stream's lines); this carries them out on the model's own event loop,
 * which it reaches through a hiredis adapter the model attaches: libevent's
 * for chat-evented and for the bridges of chat-threaded and chat-forking,
 * coroutine/redis_loop.h for chat-coroutine. Everything here runs on that
 * one loop's thread: a model with other threads or processes hands its
 * requests over (chat-threaded's bridge thread, chat-forking's parent).
 *
 * Two connections per server, never one per client: one for commands (a
 * line said, a name claimed or released, the heartbeat), and one that waits
 * in XREAD BLOCK for the room's lines. A line crosses Redis once per
 * server: said once, read once by each server, which fans it out to its
 * own users through the model's hooks below. A server delivers even its
 * own users' lines only as Redis gives them back, so everyone on every
 * server sees one order. */
#ifndef CHAT_REDIS_ROOM_H
#define CHAT_REDIS_ROOM_H

#include "options.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisAsyncContext;
struct redis_room;

/* What a model supplies. Every hook runs on the link's loop. */
struct redis_room_model {
  void *model; /* handed back to every hook */

  /* Attaches a new connection to the model's loop with a hiredis adapter
   * (redisLibeventAttach, redis_loop_attach): 0, or -1. */
  int (*attach)(void *model, struct redisAsyncContext *context);

  /* A user arrived in the room: add `name` to the model's room, owned by
   * `client` (this server's client whose join it answers) or by nobody (a
   * user of another server, or a client that left meanwhile), then give
   * `line` to the room's users of this server; `line` is empty for the
   * users already in the room when this server entered it. Returns the
   * room's copy of the name (handed to join_answered), or NULL when the
   * room is full; a model that applies the change later (chat-forking's
   * parent, at the end of its turn) returns any other non-NULL value and
   * finds the name itself. */
  const char *(*arrived)(void *model, void *client, struct chat_text name,
                         struct chat_text line);
  /* The answer to redis_room_join() for `client`: the room's copy of the
   * name (its arrival given to everyone already), NULL when the name was
   * taken, or STEP_ROOM_UNAVAILABLE. The model carries it on with
   * step_join_answered() in the client's own thread of control. */
  void (*join_answered)(void *model, void *client, struct chat_text name,
                        const char *stored);
  /* A message: give `line` to the room's users of this server. */
  void (*said)(void *model, struct chat_text line);
  /* `name` departed: remove it from the model's room (it may belong to a
   * client of this server that has left already), then give `line` to the
   * room's users of this server. */
  void (*departed)(void *model, struct chat_text name, struct chat_text line);
  /* This server lost its place in the room (retired while cut off, or
   * Redis came back empty): close every client that is in the room (a
   * registered user) with session_room_lost(), and empty the model's room.
   * Clients still naming stay (their joins in flight were answered
   * STEP_ROOM_UNAVAILABLE first); new clients are welcome at once; their
   * names wait for Redis. */
  void (*lost)(void *model);
  /* Optional: whether lines can reach the room now, for a model whose
   * clients ask from other threads or processes. */
  void (*available)(void *model, bool available);
  /* Optional: this server's lines are done (back from Redis, refused, or
   * lost with the connection) up to number `done`: a sender whose last
   * line is at most `done` may be answered now (redis_room_echoed). */
  void (*echoed)(void *model, uint64_t done);
  /* For a model whose loop writes once per turn (chat-evented,
   * chat-coroutine): the next lines are asked for when the model calls
   * redis_room_turn_done() after its writes, not as soon as a batch has
   * been handed over. The lines said meanwhile come as one batch, and each
   * user gets them in one write, as a server without Redis folds a turn's
   * lines into one write per client. */
  bool read_after_turn;
};

/* Connects to options->redis_url and enters the room, waiting at most a few
 * seconds; the room's current users are handed to `arrived` (with no line).
 * Returns the link, or NULL with a message naming the URL and the cause in
 * `error` (docs/PROTOCOL.md: exit 1). `model` must outlive the link. */
struct redis_room *redis_room_open(const struct chat_options *options,
                                   const struct redis_room_model *model,
                                   char *error, size_t error_size);

/* How often, in seconds, the model calls redis_room_tick(): the link keeps
 * its heartbeat and its reconnecting on that clock. */
double redis_room_tick_seconds(const struct redis_room *room);
/* read_after_turn: the model's turn has written what it was given. */
void redis_room_turn_done(struct redis_room *room);
void redis_room_tick(struct redis_room *room);

/* The step executor's room: join() answers STEP_JOIN_PENDING (the answer
 * comes through join_answered) or STEP_ROOM_UNAVAILABLE; say() returns
 * false when the line cannot reach the room; leave() releases a name whose
 * departure comes back through the stream (or at once, for a room that has
 * retired this server's users already). */
const char *redis_room_join(struct redis_room *room, void *client,
                            struct chat_text name);
/* Says a line: returns its number among this server's lines (numbered from
 * 1 in the order of the calls, refused ones included), or 0 when it was
 * refused (Redis away, or too much waiting for it). */
uint64_t redis_room_say(struct redis_room *room, struct chat_text line);
/* Whether line `number` of this server's is done: back from the stream,
 * refused, or lost with the connection. A sender's own lines reach it
 * before anything said to it alone (docs/PROTOCOL.md section 3: a room of
 * one server does so by itself): a model answers a sender (a reply, NAMES,
 * a goodbye, the close of a half-closed connection) only once its last line
 * is done. cluster.h's cluster_echo tells how. */
bool redis_room_echoed(const struct redis_room *room, uint64_t number);
void redis_room_leave(struct redis_room *room, struct chat_text name);
/* `client` is gone: a join of its still in flight is released on arrival. */
void redis_room_forget(struct redis_room *room, void *client);
/* Whether NAMES can be answered and lines can be said now. */
bool redis_room_available(const struct redis_room *room);

/* The server stops: its users depart from the room at once (within a
 * bounded wait), and the link is freed. No hook is called any more. */
void redis_room_close(struct redis_room *room);

#endif
