/* One room across servers, through Redis (docs/PROTOCOL.md section 7): the
 * rules, with no I/O. common/CLUSTER.md tells the design and its failure
 * cases; common/os/redis_room.h carries these rules over hiredis.
 *
 * The room lives in Redis under keys that start with "c10k-chat:ROOM:":
 *
 *   stream        the room's lines, in the one order everyone sees: an
 *                 arrival (k=a, n=NAME, s=SERVER, c=TOKEN), a message (k=m,
 *                 l=LINE formatted with its CR LF, s=SERVER, q=its number
 *                 among that server's lines) or a departure (k=d, n=NAME);
 *                 trimmed to about CLUSTER_STREAM_MAXLEN entries
 *   names         hash: a registered name -> the server that holds it
 *   order         sorted set: name -> registration number (NAMES's order)
 *   seq           the last registration number
 *   servers       sorted set: a live server -> its deadline (Redis time, ms)
 *   server:ID     set: the names server ID holds, to retire them at once
 *   next-server   the last server ID handed out
 *   last-beat     when any server last beat (ms); grace: no retiring
 *                 before this (ms), after Redis itself was stalled
 *
 * Everything that two servers could race on runs as one Lua script, which
 * Redis runs alone: claiming a name and announcing its arrival, releasing
 * it and announcing the departure, a heartbeat that retires the dead, a
 * line said, a server's entry and its exit. */
#ifndef CHAT_CLUSTER_H
#define CHAT_CLUSTER_H

#include "options.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_KEY_PREFIX "c10k-chat:"
/* About how many lines the stream keeps (XADD MAXLEN ~): far more than a
 * server that is away for a lease can miss at any rate this room carries;
 * a server that finds the last line it saw trimmed away starts over. */
#define CLUSTER_STREAM_MAXLEN 100000
/* Lines a server reads from the stream at once (XREAD COUNT): a server
 * hands a batch to its users in one go, so a batch times the users of a
 * server must stay well inside a heartbeat (100 lines to 10,000 users:
 * about a million copies, a tenth of a second). */
#define CLUSTER_READ_BATCH 100
/* Commands a server may have waiting for Redis before a new line is told
 * "Room unavailable": while Redis is stalled, what waits stays bounded. */
#define CLUSTER_MAX_IN_FLIGHT 65536

/* The members a server's room holds: --max-clients; with --redis, the
 * room of every server, not only this one's. Slots are touched only as
 * users arrive, so the headroom costs address space, not memory. */
size_t cluster_room_capacity(const struct chat_options *options);

/* The scripts, in the order of enum cluster_script; each takes the key
 * prefix as ARGV[1]. */
enum cluster_script {
  CLUSTER_ENTER,  /* deadline_ms, nonce -> {server id, last stream id,
                     names...}; the id is a count and the server's random
                     nonce, so that a Redis restarted empty, which counts
                     from 1 again, never hands out an id still in use */
  CLUSTER_BEAT,   /* id, deadline_ms, lease_ms, beat_ms -> retired count */
  CLUSTER_CLAIM,  /* id, name, token -> arrival's stream id, or 0: taken */
  CLUSTER_LEAVE,  /* id, name -> 1, or 0 when the name was not its own */
  CLUSTER_SAY,    /* id, line, number -> the line's stream id */
  CLUSTER_RESUME, /* id, last stream id seen -> OK */
  CLUSTER_EXIT,   /* id -> the count of its users who departed */
  CLUSTER_SCRIPTS
};
/* A script's Lua source. Errors it may answer: "RETIRED" (this server was
 * retired: its users are gone from the room) and "TRIMMED" (the lines it
 * missed are gone from the stream). */
const char *cluster_script_source(enum cluster_script script);

/* The times of the lease, in seconds, from --lease. A server beats every
 * `beat`; Redis holds its deadline `deadline` after its last beat; every
 * beat of any server retires the servers whose deadline has passed. So a
 * server that stops speaking is retired within deadline + beat, less than
 * the lease, and a live one can miss a beat without being retired. */
struct cluster_timing {
  double lease;
  double beat;     /* lease / 5 */
  double deadline; /* 3 * beat */
  double tick;     /* how often the link looks at the clock */
  double connect_timeout;
  double backoff_min, backoff_max;
};
struct cluster_timing cluster_timing_for(double lease);

/* The health of the link to Redis, as a function of what happened when. */
enum cluster_state {
  CLUSTER_UP,   /* connected; lines go to Redis */
  CLUSTER_DOWN, /* reconnecting, within the lease: users wait, lines are
                   refused with "Room unavailable" */
  CLUSTER_LOST, /* the lease passed: users were closed; a new entry to the
                   room once Redis is back */
};

struct cluster_health {
  enum cluster_state state;
  double last_word;       /* when the last beat Redis answered was sent */
  double last_sent;       /* when the last beat was sent */
  double beat_sent;       /* when the beat in flight was sent; 0: none */
  double next_attempt;    /* DOWN or LOST: when to try to connect again */
  double backoff;         /* the wait after the next failed attempt */
  double attempt_started; /* 0: no connection attempt in flight */
};

/* What the link should do now, as bits. */
enum {
  CLUSTER_DO_BEAT = 1,        /* send a heartbeat */
  CLUSTER_DO_DISCONNECT = 2,  /* drop the connection (silent too long, or a
                                 connect that hangs) */
  CLUSTER_DO_CONNECT = 4,     /* try to connect again */
  CLUSTER_DO_CLOSE_USERS = 8, /* the lease passed: the room has retired this
                                 server's users; close them (Room connection
                                 lost) and enter the room anew once back */
};

void cluster_health_start(struct cluster_health *health, double now);
/* The clock moved on: what to do. */
unsigned cluster_health_tick(struct cluster_health *health,
                             const struct cluster_timing *timing, double now);
/* A beat was sent, a beat was answered (the one sent at beat_sent). */
void cluster_health_beat_sent(struct cluster_health *health, double now);
void cluster_health_beat_answered(struct cluster_health *health);
/* The connection failed or closed. Returns the actions for it (the users
 * are closed at once when the lease has passed already). */
unsigned cluster_health_disconnected(struct cluster_health *health,
                                     const struct cluster_timing *timing,
                                     double now);
void cluster_health_connecting(struct cluster_health *health, double now);
/* Connected again and the room said where this server stands: resumed
 * (its users and lines intact) or not (retired, or Redis came back empty:
 * users closed, enter anew). Returns the actions. */
unsigned cluster_health_resumed(struct cluster_health *health, bool intact,
                                double now);
/* Entered the room (at start, or anew after LOST). */
void cluster_health_entered(struct cluster_health *health, double now);

/* A line of the stream, decoded. The texts point into the entry. */
enum cluster_event_kind {
  CLUSTER_ARRIVED,
  CLUSTER_SAID,
  CLUSTER_DEPARTED,
  CLUSTER_UNKNOWN, /* not ours: skipped */
};
struct cluster_event {
  enum cluster_event_kind kind;
  struct chat_text name;   /* ARRIVED, DEPARTED */
  struct chat_text line;   /* SAID: the line as users receive it */
  struct chat_text server; /* ARRIVED, SAID: the server it came from */
  uint64_t token;          /* ARRIVED: that server's join token */
  uint64_t number;         /* SAID: its number among that server's lines */
};
/* fields[0], fields[1] are the first field and its value, and so on. */
struct cluster_event cluster_decode(const struct chat_text *fields,
                                    size_t count);

/* A server's own lines, on their way through Redis and back. A sender must
 * get its own lines before anything else said to it alone (an answer, a
 * goodbye): what a room of one server does by itself. So each line said is
 * numbered, in order, and a reply to a sender waits until the sender's last
 * line is `done`: read back from the stream, or refused, or lost with the
 * connection (then it may never come back). Lines come back in the order
 * they were said, so one number says how far they have come. */
struct cluster_echo {
  uint64_t said;    /* the number of the last line said (refused included) */
  uint64_t sent;    /* the last line that went to Redis */
  uint64_t done;    /* every line up to this one is done */
  uint64_t refused; /* a line refused while lines sent before it were out */
};
/* A line is said: returns its number. Then one of the two below. */
uint64_t cluster_echo_said(struct cluster_echo *echo);
void cluster_echo_sent(struct cluster_echo *echo, uint64_t number);
void cluster_echo_refused(struct cluster_echo *echo, uint64_t number);
/* Line `number` of this server's came back from the stream. */
void cluster_echo_back(struct cluster_echo *echo, uint64_t number);
/* The connection to Redis is gone: what was out may never come back. */
void cluster_echo_lost(struct cluster_echo *echo);
/* Whether a sender whose last line is `number` may be answered. */
bool cluster_echo_done(const struct cluster_echo *echo, uint64_t number);

/* The joins a server has asked Redis for and not yet seen through: each
 * has a token that names it in the arrival line, so that the arrival,
 * whichever connection brings it first, finds its client. A token is the
 * slot and the slot's generation: a stale one finds nothing. */
struct cluster_join {
  void *client; /* NULL: the client left while its join was in flight */
  uint32_t generation;
  int32_t next_free;
  uint8_t name_length;
  char name[128];
};
struct cluster_joins {
  struct cluster_join *slots;
  uint32_t capacity;
  int32_t free_list; /* -1: none; start with CLUSTER_JOINS_EMPTY */
  uint32_t count;
};
#define CLUSTER_JOINS_EMPTY ((struct cluster_joins){.free_list = -1})
/* Returns the new join's token, or 0 when out of memory. */
uint64_t cluster_joins_add(struct cluster_joins *joins, void *client,
                           struct chat_text name);
/* The join of a token, or NULL when it was removed (or never was). */
struct cluster_join *cluster_joins_find(struct cluster_joins *joins,
                                        uint64_t token);
void cluster_joins_remove(struct cluster_joins *joins, uint64_t token);
/* The client left: its joins in flight go on with no client. */
void cluster_joins_forget(struct cluster_joins *joins, void *client);
void cluster_joins_free(struct cluster_joins *joins);

#endif
