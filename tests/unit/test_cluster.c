/* The cluster's rules (common/cluster.h), without Redis: the lease's clock
 * as a state machine driven by a fake clock, the stream's lines decoded,
 * the joins in flight and their tokens. The scripts themselves run against
 * a real Redis in tests/cluster/. */
#include "check.h"
#include "cluster.h"

#define TEXT(literal) ((struct chat_text){literal, sizeof(literal) - 1})

static void timing_retires_within_the_lease(void) {
  for (double lease = 0.5; lease <= 60; lease *= 2) {
    struct cluster_timing t = cluster_timing_for(lease);
    /* Silent from its last beat: retired by another server's beat after
     * its deadline, at most a beat later; all within the lease. */
    CHECK(t.deadline + t.beat < lease);
    /* A live server may miss a beat and not be retired. */
    CHECK(t.deadline >= 2 * t.beat);
    CHECK(t.tick > 0 && t.tick <= t.beat);
    CHECK(t.backoff_max < lease && t.connect_timeout < lease);
  }
}

static void health_beats_on_time(void) {
  struct cluster_timing t = cluster_timing_for(5);
  struct cluster_health h;
  cluster_health_start(&h, 100);
  CHECK(cluster_health_tick(&h, &t, 100.5) == 0);
  CHECK(cluster_health_tick(&h, &t, 101) == CLUSTER_DO_BEAT);
  cluster_health_beat_sent(&h, 101);
  /* No second beat while one is in flight (Redis may be stalled). */
  CHECK(cluster_health_tick(&h, &t, 103) == 0);
  cluster_health_beat_answered(&h);
  CHECK(h.last_word == 101);
  CHECK(cluster_health_tick(&h, &t, 103) == CLUSTER_DO_BEAT);
}

static void health_gives_up_after_a_silent_lease(void) {
  struct cluster_timing t = cluster_timing_for(5);
  struct cluster_health h;
  cluster_health_start(&h, 100);
  cluster_health_beat_sent(&h, 101);
  /* Unanswered: connected, but cut off. Nothing until the lease passes. */
  CHECK(cluster_health_tick(&h, &t, 104.9) == 0); /* last word: 100 */
  unsigned actions = cluster_health_tick(&h, &t, 105.1);
  CHECK(actions == (CLUSTER_DO_CLOSE_USERS | CLUSTER_DO_DISCONNECT));
  CHECK(h.state == CLUSTER_LOST);
  /* Then it tries to connect again, and enters anew. */
  CHECK(cluster_health_tick(&h, &t, 106.2) & CLUSTER_DO_CONNECT);
  cluster_health_connecting(&h, 106.2);
  CHECK(cluster_health_tick(&h, &t, 106.3) == 0);
  cluster_health_entered(&h, 106.3);
  CHECK(h.state == CLUSTER_UP);
}

static void health_reconnects_with_backoff(void) {
  struct cluster_timing t = cluster_timing_for(5);
  struct cluster_health h;
  cluster_health_start(&h, 100);
  CHECK(cluster_health_disconnected(&h, &t, 100.1) == 0);
  CHECK(h.state == CLUSTER_DOWN);
  /* The first attempt at once, then waits that double up to a ceiling. */
  CHECK(cluster_health_tick(&h, &t, 100.1) == CLUSTER_DO_CONNECT);
  double now = 100.1, previous_wait = 0;
  for (int attempt = 0; attempt < 8; attempt++) {
    cluster_health_connecting(&h, now);
    cluster_health_disconnected(&h, &t, now); /* refused */
    double wait = h.next_attempt - now;
    CHECK(wait >= previous_wait && wait <= t.backoff_max);
    previous_wait = wait;
    CHECK(cluster_health_tick(&h, &t, h.next_attempt - 0.001) == 0 ||
          h.state == CLUSTER_LOST);
    now = h.next_attempt;
  }
  /* A connect that hangs (a cut network) is abandoned after its timeout. */
  struct cluster_health g;
  cluster_health_start(&g, 100);
  cluster_health_disconnected(&g, &t, 100);
  cluster_health_connecting(&g, 100);
  CHECK(cluster_health_tick(&g, &t, 100 + t.connect_timeout + 0.01) ==
        CLUSTER_DO_DISCONNECT);
}

static void health_back_within_the_lease_resumes(void) {
  struct cluster_timing t = cluster_timing_for(5);
  struct cluster_health h;
  cluster_health_start(&h, 100);
  cluster_health_disconnected(&h, &t, 101);
  cluster_health_connecting(&h, 102);
  CHECK(cluster_health_resumed(&h, true, 102.5) == CLUSTER_DO_BEAT);
  CHECK(h.state == CLUSTER_UP);
  /* Back, but the room is gone or retired us: the users are closed. */
  cluster_health_disconnected(&h, &t, 103);
  CHECK(cluster_health_resumed(&h, false, 103.5) == CLUSTER_DO_CLOSE_USERS);
  CHECK(h.state == CLUSTER_LOST);
}

static void health_down_past_the_lease_closes_users_once(void) {
  struct cluster_timing t = cluster_timing_for(2);
  struct cluster_health h;
  cluster_health_start(&h, 100);
  cluster_health_disconnected(&h, &t, 100.5);
  unsigned closed = 0;
  for (double now = 100.5; now < 110; now += t.tick) {
    unsigned actions = cluster_health_tick(&h, &t, now);
    if (actions & CLUSTER_DO_CLOSE_USERS) {
      closed++;
      CHECK(now > 102);
    }
    if (actions & CLUSTER_DO_CONNECT) {
      cluster_health_connecting(&h, now);
      cluster_health_disconnected(&h, &t, now);
    }
  }
  CHECK(closed == 1);
  CHECK(h.state == CLUSTER_LOST);
}

static void decode_reads_the_three_lines(void) {
  struct chat_text arrival[] = {TEXT("k"),   TEXT("a"),         TEXT("n"),
                                TEXT("ada"), TEXT("s"),         TEXT("17"),
                                TEXT("c"),   TEXT("4294967299")};
  struct cluster_event event = cluster_decode(arrival, 8);
  CHECK(event.kind == CLUSTER_ARRIVED);
  CHECK_EQ_TEXT(event.name, "ada");
  CHECK_EQ_TEXT(event.server, "17");
  CHECK(event.token == 4294967299ull);
  struct chat_text message[] = {TEXT("k"), TEXT("m"), TEXT("l"),
                                TEXT("ada: hi\r\n")};
  event = cluster_decode(message, 4);
  CHECK(event.kind == CLUSTER_SAID);
  CHECK_EQ_TEXT(event.line, "ada: hi\r\n");
  struct chat_text departure[] = {TEXT("n"), TEXT("bob"), TEXT("k"), TEXT("d")};
  event = cluster_decode(departure, 4);
  CHECK(event.kind == CLUSTER_DEPARTED);
  CHECK_EQ_TEXT(event.name, "bob");
  /* Anything else is skipped, not guessed at. */
  struct chat_text odd[] = {TEXT("k"), TEXT("x"), TEXT("n"), TEXT("z")};
  CHECK(cluster_decode(odd, 4).kind == CLUSTER_UNKNOWN);
  CHECK(cluster_decode(message, 3).kind == CLUSTER_UNKNOWN); /* no value */
  struct chat_text empty[] = {TEXT("k"), TEXT("m"), TEXT("l"), TEXT("")};
  CHECK(cluster_decode(empty, 4).kind == CLUSTER_UNKNOWN);
}

static void joins_find_their_clients_once(void) {
  struct cluster_joins joins = CLUSTER_JOINS_EMPTY;
  int clients[200];
  uint64_t tokens[200];
  for (int i = 0; i < 200; i++) {
    tokens[i] = cluster_joins_add(&joins, &clients[i], TEXT("name"));
    CHECK(tokens[i] != 0);
  }
  CHECK(joins.count == 200);
  for (int i = 0; i < 200; i++) {
    struct cluster_join *join = cluster_joins_find(&joins, tokens[i]);
    CHECK(join && join->client == &clients[i]);
  }
  cluster_joins_remove(&joins, tokens[5]);
  CHECK(cluster_joins_find(&joins, tokens[5]) == NULL);
  /* The slot is reused, with another generation: the old token is stale. */
  uint64_t again = cluster_joins_add(&joins, &clients[5], TEXT("other"));
  CHECK(again != tokens[5] && (uint32_t)again == (uint32_t)tokens[5]);
  CHECK(cluster_joins_find(&joins, tokens[5]) == NULL);
  CHECK(cluster_joins_find(&joins, again) != NULL);
  /* A client that leaves: its join goes on with nobody to answer. */
  cluster_joins_forget(&joins, &clients[7]);
  struct cluster_join *orphan = cluster_joins_find(&joins, tokens[7]);
  CHECK(orphan && orphan->client == NULL && orphan->name_length == 4);
  CHECK(cluster_joins_find(&joins, 0) == NULL);
  CHECK(cluster_joins_find(&joins, (uint64_t)1 << 32 | 100000) == NULL);
  cluster_joins_free(&joins);
}

static void echo_counts_a_senders_lines_back(void) {
  struct cluster_echo echo = {0};
  uint64_t one = cluster_echo_said(&echo), two = cluster_echo_said(&echo);
  cluster_echo_sent(&echo, one);
  cluster_echo_sent(&echo, two);
  CHECK(!cluster_echo_done(&echo, one));
  cluster_echo_back(&echo, one);
  CHECK(cluster_echo_done(&echo, one) && !cluster_echo_done(&echo, two));
  /* Refused while line two is out: done when two is. */
  uint64_t three = cluster_echo_said(&echo);
  cluster_echo_refused(&echo, three);
  CHECK(!cluster_echo_done(&echo, three));
  cluster_echo_back(&echo, two);
  CHECK(cluster_echo_done(&echo, three));
  /* Refused with nothing out: done at once. */
  uint64_t four = cluster_echo_said(&echo);
  cluster_echo_refused(&echo, four);
  CHECK(cluster_echo_done(&echo, four));
  /* The connection lost: whatever was out may never come back. */
  uint64_t five = cluster_echo_said(&echo);
  cluster_echo_sent(&echo, five);
  CHECK(!cluster_echo_done(&echo, five));
  cluster_echo_lost(&echo);
  CHECK(cluster_echo_done(&echo, five));
  cluster_echo_back(&echo, five); /* late: changes nothing */
  CHECK(echo.done == five);
}

static void scripts_are_all_there(void) {
  for (int i = 0; i < CLUSTER_SCRIPTS; i++) {
    const char *source = cluster_script_source(i);
    CHECK(source && strstr(source, "local p = ARGV[1]"));
  }
  CHECK(strstr(cluster_script_source(CLUSTER_CLAIM), "HSETNX"));
  struct chat_options options = {.max_clients = 10};
  CHECK(cluster_room_capacity(&options) == 10); /* no --redis */
  options.redis_url = "redis://localhost";
  CHECK(cluster_room_capacity(&options) == 65536);
  options.max_clients = 100000;
  CHECK(cluster_room_capacity(&options) == 400000);
}

int main(void) {
  timing_retires_within_the_lease();
  health_beats_on_time();
  health_gives_up_after_a_silent_lease();
  health_reconnects_with_backoff();
  health_back_within_the_lease_resumes();
  health_down_past_the_lease_closes_users_once();
  decode_reads_the_three_lines();
  joins_find_their_clients_once();
  echo_counts_a_senders_lines_back();
  scripts_are_all_there();
  return check_report();
}
