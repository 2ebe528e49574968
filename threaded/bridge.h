/* chat-threaded's bridge to Redis (--redis, docs/PROTOCOL.md section 7):
 * one thread that owns the room's link to Redis (common/os/redis_room.h).
 *
 * The link runs on one event loop and calls its hooks there; a thread per
 * connection has no loop to lend it. So the bridge is a thread of its own
 * with a libevent event_base: hiredis's two connections (attached with
 * hiredis's libevent adapter), the link's clock (a timer calling
 * redis_room_tick) and a doorbell, an eventfd. A client's thread never
 * speaks to Redis: it hands the bridge a request (a name to claim, a line
 * to say, a name to release) on a queue behind a mutex, rings the doorbell
 * if the queue was empty, and goes on without waiting. The bridge hands
 * each request to the link, in the order they came, and Redis's answers
 * (the room's lines, a name's answer, the link's health) to the model's
 * hooks, on its own thread.
 *
 *   client threads --request--> queue --eventfd--> bridge --> Redis
 *   client sockets <--outbox--- room  <--hooks---- bridge <-- Redis's stream
 *
 * One thread and two Redis connections per server, whatever its number of
 * clients. */
#ifndef CHAT_THREADED_BRIDGE_H
#define CHAT_THREADED_BRIDGE_H

#include "options.h"
#include "os/redis_room.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>

struct bridge;

/* What the model supplies. Every hook runs on the bridge's thread, except
 * the `arrived` of the users already in the room, which runs in
 * bridge_open(), before the thread starts. */
struct bridge_model {
  /* The link's hooks (os/redis_room.h), but `attach` (the bridge's) and
   * `available` (the bridge keeps it, for bridge_available). Every name the
   * bridge took (bridge_join returned true) gets exactly one
   * `join_answered`: Redis's, or STEP_ROOM_UNAVAILABLE when it could not be
   * asked or the bridge stopped first. */
  struct redis_room_model room;
  /* A line `client` said could not reach the room after all (Redis went
   * away since bridge_say looked, or too much waits for it): tell it. */
  void (*refused)(void *client);
  /* The answer to bridge_echo(client): its lines are back. */
  void (*echoed)(void *client);
  /* The answer to bridge_forget(client): no hook names `client` again. */
  void (*forgotten)(void *client);
  /* After bridge_flush_later(), once the work in progress is done. */
  void (*flush)(void);
};

/* Enters the room at options->redis_url, waiting for Redis a few seconds at
 * most, then starts the bridge's thread (with the caller's signal mask).
 * Returns NULL with a message naming the URL in `error`. */
struct bridge *bridge_open(const struct chat_options *options,
                           const struct bridge_model *model, char *error,
                           size_t error_size);

/* From any thread: whether the room can be reached now (the link's last
 * word on it). When not, a line or a name is refused at once, without
 * asking the bridge. */
bool bridge_available(struct bridge *bridge);

/* From any thread, never waiting for Redis; each copies what it is given,
 * and the bridge carries them out in the order they came. A name for
 * `client` to claim: false when it is refused at once (Redis away, the
 * queue full, the bridge stopping); otherwise the answer comes through
 * `join_answered`. A line `client` says to the room: false when refused
 * at once; later, `refused` may still tell it. A registered name to
 * release: never refused (Redis away, the link releases it once it is
 * back). */
bool bridge_join(struct bridge *bridge, void *client, struct chat_text name);
bool bridge_say(struct bridge *bridge, void *client, struct chat_text line);
void bridge_leave(struct bridge *bridge, struct chat_text name);
/* `client`'s own lines must reach it before anything said to it alone
 * (os/redis_room.h, redis_room_echoed): once every line said before this
 * request is back from Redis (or refused, or lost with the connection),
 * `echoed(client)` comes. Returns false when the bridge has stopped (no
 * line comes back any more), or memory ran out: then nothing comes. */
bool bridge_echo(struct bridge *bridge, void *client);
/* `client` is going: once every request before this one is carried out,
 * `forgotten(client)` comes, after which no hook names it. Returns false
 * when the bridge has stopped already: then no hook names it again either;
 * or when memory ran out: then only a line of its still in the queue (a
 * few microseconds' worth) could still be `refused`. */
bool bridge_forget(struct bridge *bridge, void *client);

/* From the bridge's thread (in a hook): `flush` is to run once the callback
 * in progress has returned. The link hands the room's lines over in
 * batches (a read from Redis), one hook a line: what the lines of a batch
 * have in common (a socket to write to) is done once for the batch, not
 * once a line. Also done before the bridge's thread ends. */
void bridge_flush_later(struct bridge *bridge);

/* The server stops: the bridge leaves the room at once (this server's users
 * depart on every other server), answers the names still waiting, and its
 * thread ends. Returns without waiting. */
void bridge_stop(struct bridge *bridge);
/* After bridge_stop: waits for the bridge's thread (a bounded wait: the
 * link's goodbye to Redis is), then frees everything. */
void bridge_close(struct bridge *bridge);

#endif
