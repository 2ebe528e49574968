/* The rules of a room shared through Redis (cluster.h): the scripts, the
 * lease's clock, the stream's lines and the joins in flight. */
#include "cluster.h"

#include <stdlib.h>
#include <string.h>

#define STRINGIFY(x) #x
#define TEXT_OF(x) STRINGIFY(x)

/* What every script begins with: the key prefix, Redis's clock (one clock
 * for every server, whatever their machines' clocks say), appending a line
 * to the stream, and retiring a server: its users depart, in the order they
 * arrived, each exactly once, since the script runs alone and removes the
 * server's record with its names. */
#define PRELUDE                                                                \
  "local p = ARGV[1]\n"                                                        \
  "local function now_ms()\n"                                                  \
  "  local t = redis.call('TIME')\n"                                           \
  "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"       \
  "end\n"                                                                      \
  "local function append(...)\n"                                               \
  "  return redis.call('XADD', p .. 'stream', 'MAXLEN', '~', "                 \
  "'" TEXT_OF(                                                                 \
      CLUSTER_STREAM_MAXLEN) "', '*', ...)\n"                                  \
                             "end\n"                                           \
                             "local function alive(id)\n"                      \
                             "  return redis.call('ZSCORE', p .. 'servers', "  \
                             "id)\n"                                           \
                             "end\n"                                           \
                             "local function retire(id)\n"                     \
                             "  local names = redis.call('SMEMBERS', p .. "    \
                             "'server:' .. id)\n"                              \
                             "  local rank = {}\n"                             \
                             "  for _, name in ipairs(names) do\n"             \
                             "    rank[name] = tonumber(redis.call('ZSCORE', " \
                             "p .. 'order', name) or 0)\n"                     \
                             "  end\n"                                         \
                             "  table.sort(names, function(a, b) return "      \
                             "rank[a] < rank[b] end)\n"                        \
                             "  for _, name in ipairs(names) do\n"             \
                             "    redis.call('HDEL', p .. 'names', name)\n"    \
                             "    redis.call('ZREM', p .. 'order', name)\n"    \
                             "    append('k', 'd', 'n', name)\n"               \
                             "  end\n"                                         \
                             "  redis.call('DEL', p .. 'server:' .. id)\n"     \
                             "  redis.call('ZREM', p .. 'servers', id)\n"      \
                             "  return #names\n"                               \
                             "end\n"

/* A server silent for longer than its lease is retired by its own next
 * word, too: whatever it held, the others may have taken over already. */
#define OUTLIVED_ITS_LEASE                                                     \
  "local function outlived(id, mine, deadline, lease)\n"                       \
  "  return now_ms() > tonumber(mine) - deadline + lease\n"                    \
  "end\n"

static const char *const sources[CLUSTER_SCRIPTS] = {
    /* ENTER: a new server; the room's last line and its names, read in the
     * same instant, are where it starts. */
    [CLUSTER_ENTER] = PRELUDE
    "local now = now_ms()\n"
    "local id = redis.call('INCR', p .. 'next-server') .. '.' .. ARGV[3]\n"
    "redis.call('ZADD', p .. 'servers', now + tonumber(ARGV[2]), id)\n"
    "redis.call('SET', p .. 'last-beat', now)\n"
    "local last = redis.call('XREVRANGE', p .. 'stream', '+', '-', "
    "'COUNT', 1)\n"
    "local last_id = '0-0'\n"
    "if #last > 0 then last_id = last[1][1] end\n"
    "return {id, last_id, redis.call('ZRANGE', p .. 'order', 0, -1)}\n",

    /* BEAT: this server is alive until now + deadline; every server whose
     * deadline has passed is retired. When nobody at all was heard for two
     * beats, Redis itself (or every server) stood still: everyone gets a
     * deadline's time to speak again before anyone is retired. */
    [CLUSTER_BEAT] = PRELUDE OUTLIVED_ITS_LEASE
    "local id = ARGV[2]\n"
    "local deadline, lease = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local beat = tonumber(ARGV[5])\n"
    "local mine = alive(id)\n"
    "if not mine then return redis.error_reply('RETIRED') end\n"
    "if outlived(id, mine, deadline, lease) then\n"
    "  retire(id)\n"
    "  return redis.error_reply('RETIRED')\n"
    "end\n"
    "local now = now_ms()\n"
    "local heard = tonumber(redis.call('GET', p .. 'last-beat') or 0)\n"
    "if now - heard > 2 * beat then\n"
    "  redis.call('SET', p .. 'grace', now + deadline)\n"
    "end\n"
    "redis.call('SET', p .. 'last-beat', now)\n"
    "redis.call('ZADD', p .. 'servers', now + deadline, id)\n"
    "local retired = 0\n"
    "if now >= tonumber(redis.call('GET', p .. 'grace') or 0) then\n"
    "  local dead = redis.call('ZRANGEBYSCORE', p .. 'servers', '-inf', "
    "'(' .. now)\n"
    "  for _, other in ipairs(dead) do\n"
    "    retire(other)\n"
    "    retired = retired + 1\n"
    "  end\n"
    "end\n"
    "return retired\n",

    /* CLAIM: the name, its place in NAMES's order and its arrival, at once:
     * nobody can hear of the member before its arrival. */
    [CLUSTER_CLAIM] = PRELUDE
    "local id, name = ARGV[2], ARGV[3]\n"
    "if not alive(id) then return redis.error_reply('RETIRED') end\n"
    "if redis.call('HSETNX', p .. 'names', name, id) == 0 then "
    "return 0 end\n"
    "redis.call('SADD', p .. 'server:' .. id, name)\n"
    "redis.call('ZADD', p .. 'order', redis.call('INCR', p .. 'seq'), "
    "name)\n"
    "return append('k', 'a', 'n', name, 's', id, 'c', ARGV[4])\n",

    /* LEAVE: only the server that holds the name releases it; when it was
     * retired meanwhile, the departure was announced then. */
    [CLUSTER_LEAVE] = PRELUDE
    "local id, name = ARGV[2], ARGV[3]\n"
    "if redis.call('HGET', p .. 'names', name) ~= id then return 0 end\n"
    "redis.call('HDEL', p .. 'names', name)\n"
    "redis.call('SREM', p .. 'server:' .. id, name)\n"
    "redis.call('ZREM', p .. 'order', name)\n"
    "append('k', 'd', 'n', name)\n"
    "return 1\n",

    /* SAY: a retired server's users are gone; their lines with them. */
    [CLUSTER_SAY] = PRELUDE
    "if not alive(ARGV[2]) then return redis.error_reply('RETIRED') end\n"
    "return append('k', 'm', 'l', ARGV[3], 's', ARGV[2], 'q', ARGV[4])\n",

    /* RESUME: back after losing Redis. Intact when this server is still in
     * the room and the last line it saw is still in the stream (so is
     * every line after it: the stream is trimmed from its oldest end). */
    [CLUSTER_RESUME] = PRELUDE OUTLIVED_ITS_LEASE
    "local id, last = ARGV[2], ARGV[3]\n"
    "local mine = alive(id)\n"
    "if not mine then return redis.error_reply('RETIRED') end\n"
    "if outlived(id, mine, tonumber(ARGV[4]), tonumber(ARGV[5])) then\n"
    "  retire(id)\n"
    "  return redis.error_reply('RETIRED')\n"
    "end\n"
    "if last ~= '0-0' and #redis.call('XRANGE', p .. 'stream', last, "
    "last) == 0 then\n"
    "  retire(id)\n"
    "  return redis.error_reply('TRIMMED')\n"
    "end\n"
    "return 'OK'\n",

    /* EXIT: the server stops; its users depart at once. */
    [CLUSTER_EXIT] = PRELUDE "if not alive(ARGV[2]) then return 0 end\n"
                             "return retire(ARGV[2])\n",
};

size_t cluster_room_capacity(const struct chat_options *options) {
  if (!options->redis_url)
    return options->max_clients;
  size_t capacity = 4 * options->max_clients;
  return capacity > 65536 ? capacity : 65536;
}

const char *cluster_script_source(enum cluster_script script) {
  return sources[script];
}

struct cluster_timing cluster_timing_for(double lease) {
  double beat = lease / 5;
  double tick = beat / 4;
  if (tick > 0.1)
    tick = 0.1;
  if (tick < 0.005)
    tick = 0.005;
  return (struct cluster_timing){
      .lease = lease,
      .beat = beat,
      .deadline = 3 * beat,
      .tick = tick,
      .connect_timeout = lease < 2 ? lease / 2 : 1,
      .backoff_min = 0.05,
      .backoff_max = lease < 2 ? lease / 4 : 0.5,
  };
}

/* The health of the link: a small state machine over the clock. */

void cluster_health_start(struct cluster_health *health, double now) {
  *health = (struct cluster_health){.state = CLUSTER_UP};
  cluster_health_entered(health, now);
}

void cluster_health_entered(struct cluster_health *health, double now) {
  health->state = CLUSTER_UP;
  health->last_word = now;
  health->last_sent = now;
  health->beat_sent = 0;
  health->attempt_started = 0;
  health->backoff = 0;
}

/* The lease passed with no word from Redis: the other servers have retired
 * this one's users, or are about to. */
static unsigned lose(struct cluster_health *health) {
  health->state = CLUSTER_LOST;
  return CLUSTER_DO_CLOSE_USERS;
}

static void schedule_attempt(struct cluster_health *health,
                             const struct cluster_timing *timing, double now) {
  health->attempt_started = 0;
  health->next_attempt = now + health->backoff;
  health->backoff =
      health->backoff == 0 ? timing->backoff_min : 2 * health->backoff;
  if (health->backoff > timing->backoff_max)
    health->backoff = timing->backoff_max;
}

unsigned cluster_health_tick(struct cluster_health *health,
                             const struct cluster_timing *timing, double now) {
  unsigned actions = 0;
  bool lease_passed = now - health->last_word > timing->lease;
  switch (health->state) {
  case CLUSTER_UP:
    if (lease_passed) {
      /* Connected, but Redis has not answered for a lease: a cut network
       * looks like this. Start over. */
      schedule_attempt(health, timing, now);
      return lose(health) | CLUSTER_DO_DISCONNECT;
    }
    if (health->beat_sent == 0 && now - health->last_sent >= timing->beat)
      actions |= CLUSTER_DO_BEAT;
    return actions;
  case CLUSTER_DOWN:
    if (lease_passed)
      actions |= lose(health);
    break;
  case CLUSTER_LOST:
    break;
  }
  if (health->attempt_started != 0 &&
      now - health->attempt_started > timing->connect_timeout) {
    actions |= CLUSTER_DO_DISCONNECT;
    schedule_attempt(health, timing, now);
  } else if (health->attempt_started == 0 && now >= health->next_attempt) {
    actions |= CLUSTER_DO_CONNECT;
  }
  return actions;
}

void cluster_health_beat_sent(struct cluster_health *health, double now) {
  health->beat_sent = now;
  health->last_sent = now;
}

void cluster_health_beat_answered(struct cluster_health *health) {
  if (health->beat_sent > health->last_word)
    health->last_word = health->beat_sent;
  health->beat_sent = 0;
}

unsigned cluster_health_disconnected(struct cluster_health *health,
                                     const struct cluster_timing *timing,
                                     double now) {
  health->beat_sent = 0;
  if (health->state == CLUSTER_UP) {
    health->state = CLUSTER_DOWN;
    health->backoff = 0;
  }
  schedule_attempt(health, timing, now);
  if (health->state == CLUSTER_DOWN && now - health->last_word > timing->lease)
    return lose(health);
  return 0;
}

void cluster_health_connecting(struct cluster_health *health, double now) {
  health->attempt_started = now;
}

unsigned cluster_health_resumed(struct cluster_health *health, bool intact,
                                double now) {
  health->attempt_started = 0;
  if (intact && health->state == CLUSTER_DOWN) {
    health->state = CLUSTER_UP;
    health->backoff = 0;
    health->last_sent = now - 1e9; /* beat at once */
    return CLUSTER_DO_BEAT;
  }
  return health->state == CLUSTER_LOST ? 0 : lose(health);
}

/* The stream's lines. */

static bool is(struct chat_text text, const char *literal) {
  size_t length = strlen(literal);
  return text.length == length && memcmp(text.bytes, literal, length) == 0;
}

static unsigned long long number(struct chat_text text) {
  unsigned long long value = 0;
  for (size_t i = 0; i < text.length; i++) {
    if (text.bytes[i] < '0' || text.bytes[i] > '9')
      return 0;
    value = value * 10 + (unsigned long long)(text.bytes[i] - '0');
  }
  return value;
}

struct cluster_event cluster_decode(const struct chat_text *fields,
                                    size_t count) {
  struct cluster_event event = {.kind = CLUSTER_UNKNOWN};
  struct chat_text kind = {NULL, 0};
  for (size_t i = 0; i + 1 < count; i += 2) {
    struct chat_text field = fields[i], value = fields[i + 1];
    if (is(field, "k"))
      kind = value;
    else if (is(field, "n"))
      event.name = value;
    else if (is(field, "l"))
      event.line = value;
    else if (is(field, "s"))
      event.server = value;
    else if (is(field, "c"))
      event.token = number(value);
    else if (is(field, "q"))
      event.number = number(value);
  }
  if (is(kind, "a") && event.name.length > 0)
    event.kind = CLUSTER_ARRIVED;
  else if (is(kind, "m") && event.line.length > 0)
    event.kind = CLUSTER_SAID;
  else if (is(kind, "d") && event.name.length > 0)
    event.kind = CLUSTER_DEPARTED;
  return event;
}

/* A server's own lines on their way (cluster_echo). */

uint64_t cluster_echo_said(struct cluster_echo *echo) {
  return ++echo->said;
}

void cluster_echo_sent(struct cluster_echo *echo, uint64_t number) {
  echo->sent = number;
}

/* A refused line is done at once, unless lines said before it are still
 * out: then it is done when they are. */
void cluster_echo_refused(struct cluster_echo *echo, uint64_t number) {
  if (echo->done >= echo->sent)
    echo->done = number;
  else
    echo->refused = number;
}

void cluster_echo_back(struct cluster_echo *echo, uint64_t number) {
  if (number > echo->done)
    echo->done = number;
  if (echo->done >= echo->sent && echo->refused > echo->done)
    echo->done = echo->refused;
}

void cluster_echo_lost(struct cluster_echo *echo) {
  echo->done = echo->said;
  echo->sent = echo->said;
}

bool cluster_echo_done(const struct cluster_echo *echo, uint64_t number) {
  return echo->done >= number;
}

/* The joins in flight: a slot table with a free list, like the room's. */

uint64_t cluster_joins_add(struct cluster_joins *joins, void *client,
                           struct chat_text name) {
  if (name.length > sizeof joins->slots[0].name)
    return 0;
  if (joins->free_list < 0) {
    uint32_t capacity = joins->capacity ? 2 * joins->capacity : 64;
    struct cluster_join *slots =
        realloc(joins->slots, capacity * sizeof *slots);
    if (!slots)
      return 0;
    for (uint32_t i = joins->capacity; i < capacity; i++) {
      slots[i] = (struct cluster_join){
          .generation = 1,
          .next_free = i + 1 < capacity ? (int32_t)(i + 1) : joins->free_list,
      };
    }
    joins->free_list = (int32_t)joins->capacity;
    joins->slots = slots;
    joins->capacity = capacity;
  }
  uint32_t index = (uint32_t)joins->free_list;
  struct cluster_join *join = &joins->slots[index];
  joins->free_list = join->next_free;
  join->next_free = -2; /* in use */
  join->client = client;
  join->name_length = (uint8_t)name.length;
  memcpy(join->name, name.bytes, name.length);
  joins->count++;
  return (uint64_t)join->generation << 32 | index;
}

struct cluster_join *cluster_joins_find(struct cluster_joins *joins,
                                        uint64_t token) {
  uint32_t index = (uint32_t)token;
  if (index >= joins->capacity)
    return NULL;
  struct cluster_join *join = &joins->slots[index];
  if (join->next_free != -2 || join->generation != (uint32_t)(token >> 32))
    return NULL;
  return join;
}

void cluster_joins_remove(struct cluster_joins *joins, uint64_t token) {
  struct cluster_join *join = cluster_joins_find(joins, token);
  if (!join)
    return;
  join->generation++;
  if (join->generation == 0)
    join->generation = 1; /* a token is never 0 */
  join->client = NULL;
  join->next_free = joins->free_list;
  joins->free_list = (int32_t)(join - joins->slots);
  joins->count--;
}

void cluster_joins_forget(struct cluster_joins *joins, void *client) {
  if (joins->count == 0)
    return;
  for (uint32_t i = 0; i < joins->capacity; i++) {
    if (joins->slots[i].next_free == -2 && joins->slots[i].client == client)
      joins->slots[i].client = NULL;
  }
}

void cluster_joins_free(struct cluster_joins *joins) {
  free(joins->slots);
  *joins = (struct cluster_joins){.free_list = -1};
}
