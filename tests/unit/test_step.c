/* The step executor (common/step.h), driven through a model double: a real
 * room, an output buffer per client, and a trace of every hook called. It
 * checks what each kind of step does, in what order (reply, then the
 * room's part under the lock, then the close), that the hooks marked
 * "under the lock" only run while the room is held, that a join and the
 * broadcast of its arrival share one hold of the room, that `registered`
 * comes after the lock is let go, that a departing user does not hear its
 * own departure, and that a one-thread model may leave lock and unlock
 * out. */
#include "check.h"
#include "protocol.h"
#include "room.h"
#include "session.h"
#include "step.h"

#define TEXT(literal) ((struct chat_text){literal, sizeof(literal) - 1})
#define CLIENTS 3

struct client {
  struct byte_buffer output;
  struct session session;
  int member;
  bool closed;
};

static struct room *room;
static struct client clients[CLIENTS];
static struct byte_buffer trace; /* one letter per hook call */
static bool locked;
static int holds;     /* lock() calls */
static int misplaced; /* hooks called outside the lock that need it */

static void note(char letter) {
  buffer_append(&trace, &letter, 1);
}

static void need_lock(void) {
  if (!locked)
    misplaced++;
}

static void send_bytes(void *client, const char *bytes, size_t length) {
  note('s');
  buffer_append(&((struct client *)client)->output, bytes, length);
}

static void lock(void *client) {
  (void)client;
  note('(');
  CHECK(!locked);
  locked = true;
  holds++;
}

static void unlock(void *client) {
  (void)client;
  note(')');
  CHECK(locked);
  locked = false;
}

static const char *join(void *client, struct chat_text name) {
  note('j');
  need_lock();
  struct client *c = client;
  const char *stored = NULL;
  int member = room_join(room, name, (uintptr_t)c, &stored);
  if (member >= 0)
    c->member = member;
  return member >= 0 ? stored : NULL;
}

static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  (void)context;
  buffer_append(&((struct client *)owner)->output, line.bytes, line.length);
}

static bool say(void *client, struct chat_text line) {
  (void)client;
  note('b');
  need_lock();
  room_broadcast(room, line, deliver, NULL);
  return true;
}

static void leave(void *client, struct chat_text departure) {
  note('l');
  need_lock();
  struct client *c = client;
  room_leave(room, c->member);
  c->member = -1;
  say(client, departure);
}

static const struct room *members(void *client) {
  (void)client;
  note('m');
  need_lock();
  return room;
}

static void registered(void *client) {
  (void)client;
  note('r');
  CHECK(!locked);
}

static void close_client(void *client) {
  note('c');
  CHECK(!locked);
  ((struct client *)client)->closed = true;
}

static const struct step_model locking_model = {
    .send = send_bytes,
    .lock = lock,
    .unlock = unlock,
    .join = join,
    .leave = leave,
    .say = say,
    .members = members,
    .registered = registered,
    .close = close_client,
};

/* A one-thread model: no lock, nothing to do once a name is accepted. */
static const struct step_model plain_model = {
    .send = send_bytes,
    .join = join,
    .leave = leave,
    .say = say,
    .members = members,
    .close = close_client,
};

static const struct step_model *model = &locking_model;
static char scratch[8192];
static const struct session_context context = {
    .room_name = "Room",
    .max_line = 100,
    .scratch = scratch,
    .scratch_size = sizeof scratch,
};

static void reset(void) {
  free(room);
  room = room_init(calloc(1, room_size(CLIENTS)), CLIENTS);
  for (int i = 0; i < CLIENTS; i++) {
    buffer_free(&clients[i].output);
    clients[i] = (struct client){.member = -1};
  }
  buffer_clear(&trace);
  locked = false;
  holds = misplaced = 0;
}

static void carry_out(int i, struct session_step step) {
  step_carry_out(model, &clients[i], &clients[i].session, &context, step);
}

/* A complete line from client i. */
static void line(int i, const char *text) {
  struct frame frame = {FRAME_LINE, text, strlen(text)};
  carry_out(i, session_on_frame(&clients[i].session, &context, &frame));
}

static void start(int i) {
  carry_out(i, session_start(&clients[i].session, &context));
}

static void forget_output(void) {
  for (int i = 0; i < CLIENTS; i++)
    buffer_clear(&clients[i].output);
  buffer_clear(&trace);
  holds = 0;
}

static void welcome_is_a_reply_alone(void) {
  reset();
  start(0);
  CHECK_EQ_TEXT(clients[0].output, "Welcome to Room\r\nEnter user name: ");
  CHECK_EQ_TEXT(trace, "s");
  CHECK(holds == 0);
}

static void accepted_name_joins_and_announces_in_one_hold(void) {
  reset();
  start(0);
  start(1);
  line(0, "ada");
  forget_output();
  line(1, "  bob\t");
  /* Lock, join, broadcast the arrival, unlock, then the log's hook. */
  CHECK_EQ_TEXT(trace, "(jb)r");
  CHECK(holds == 1 && misplaced == 0);
  CHECK_EQ_TEXT(clients[0].output, "User bob arrived.\r\n");
  CHECK_EQ_TEXT(clients[1].output, "User bob arrived.\r\n");
  CHECK(session_is_registered(&clients[1].session));
  CHECK(room_count(room) == 2);
}

static void taken_name_asks_again(void) {
  reset();
  start(0);
  start(1);
  line(0, "ada");
  forget_output();
  line(1, "ada");
  CHECK_EQ_TEXT(trace, "(js)");
  CHECK_EQ_TEXT(clients[1].output,
                "Username ada not available\r\nEnter user name: ");
  CHECK(clients[0].output.length == 0);
  CHECK(!session_is_registered(&clients[1].session));
  CHECK(!clients[1].closed);
}

static void invalid_name_needs_no_room(void) {
  reset();
  start(0);
  forget_output();
  line(0, "a b");
  CHECK_EQ_TEXT(trace, "s");
  CHECK(holds == 0);
  CHECK_EQ_TEXT(clients[0].output, CHAT_INVALID_NAME CHAT_PROMPT);
}

static void message_reaches_everyone_registered(void) {
  reset();
  for (int i = 0; i < CLIENTS; i++)
    start(i);
  line(0, "ada");
  line(1, "bob");
  forget_output(); /* client 2 never picked a name */
  line(1, " hi  all ");
  CHECK_EQ_TEXT(trace, "(b)");
  CHECK(misplaced == 0);
  CHECK_EQ_TEXT(clients[0].output, "bob:  hi  all \r\n");
  CHECK_EQ_TEXT(clients[1].output, "bob:  hi  all \r\n");
  CHECK(clients[2].output.length == 0);
}

static void names_lists_the_room_to_the_sender(void) {
  reset();
  start(0);
  start(1);
  line(0, "ada");
  line(1, "bob");
  forget_output();
  line(1, "names");
  CHECK(misplaced == 0 && holds == 1);
  CHECK_EQ_TEXT(clients[1].output, "Users here:\r\n ada\r\n bob\r\n");
  CHECK(clients[0].output.length == 0);
  /* The members hook comes under the lock, before any byte of the list. */
  CHECK(trace.length > 3 && memcmp(trace.bytes, "(m", 2) == 0 &&
        trace.bytes[trace.length - 1] == ')');
}

static void quit_replies_then_closes(void) {
  reset();
  start(0);
  line(0, "ada");
  forget_output();
  line(0, "QUIT");
  CHECK_EQ_TEXT(trace, "sc");
  CHECK_EQ_TEXT(clients[0].output, "Bye.\r\n");
  CHECK(clients[0].closed);
}

static void timeout_and_shutdown_reply_then_close(void) {
  reset();
  start(0);
  start(1);
  forget_output();
  carry_out(0, session_timed_out(&clients[0].session));
  CHECK_EQ_TEXT(clients[0].output, CHAT_LOGIN_TIMEOUT);
  CHECK(clients[0].closed);
  carry_out(1, session_shutdown(&clients[1].session));
  CHECK_EQ_TEXT(clients[1].output, CHAT_SHUTDOWN);
  CHECK(clients[1].closed);
  CHECK_EQ_TEXT(trace, "scsc");
}

static void departure_reaches_the_others_only(void) {
  reset();
  for (int i = 0; i < CLIENTS; i++)
    start(i);
  line(0, "ada");
  line(1, "bob");
  line(2, "cy");
  forget_output();
  carry_out(1, session_end(&clients[1].session, &context));
  CHECK_EQ_TEXT(trace, "(lb)");
  CHECK(misplaced == 0);
  CHECK_EQ_TEXT(clients[0].output, "User bob departed.\r\n");
  CHECK(clients[1].output.length == 0);
  CHECK_EQ_TEXT(clients[2].output, "User bob departed.\r\n");
  CHECK(room_count(room) == 2 && clients[1].member == -1);
  /* Its name is free again. */
  start(1);
  line(1, "bob");
  CHECK(session_is_registered(&clients[1].session));
}

static void unregistered_end_is_silent(void) {
  reset();
  start(0);
  start(1);
  line(0, "ada");
  forget_output();
  carry_out(1, session_end(&clients[1].session, &context));
  CHECK(trace.length == 0);
  CHECK(clients[0].output.length == 0);
}

static void one_thread_model_needs_no_lock(void) {
  model = &plain_model;
  reset();
  start(0);
  start(1);
  line(0, "ada");
  line(1, "bob");
  line(0, "hello");
  line(1, "NAMES");
  CHECK_EQ_TEXT(clients[0].output,
                "Welcome to Room\r\nEnter user name: User ada arrived.\r\n"
                "User bob arrived.\r\nada: hello\r\n");
  CHECK_EQ_TEXT(clients[1].output,
                "Welcome to Room\r\nEnter user name: User bob arrived.\r\n"
                "ada: hello\r\nUsers here:\r\n ada\r\n bob\r\n");
  CHECK(holds == 0);
  model = &locking_model;
}

/* A room shared through Redis, as the executor sees it: a name is answered
 * later, and the room may be out of reach. */
static const char *remote_answer; /* what join() returns */
static bool remote_up = true;

static const char *remote_join(void *client, struct chat_text name) {
  (void)client;
  (void)name;
  note('j');
  return remote_answer;
}

static bool remote_say(void *client, struct chat_text line) {
  note('b');
  return remote_up && say(client, line);
}

static const struct room *remote_members(void *client) {
  (void)client;
  note('m');
  return remote_up ? room : NULL;
}

static const struct step_model remote_model = {
    .send = send_bytes,
    .join = remote_join,
    .leave = leave,
    .say = remote_say,
    .members = remote_members,
    .registered = registered,
    .close = close_client,
};

/* The room's copy of a name, as the model's arrival hook stores it. */
static const char *arrive(int i, const char *name) {
  const char *stored = NULL;
  clients[i].member = room_join(room, (struct chat_text){name, strlen(name)},
                                (uintptr_t)&clients[i], &stored);
  return stored;
}

static void answer(int i, const char *name, const char *stored) {
  step_join_answered(model, &clients[i], &clients[i].session, &context,
                     (struct chat_text){name, strlen(name)}, stored);
}

static void pending_name_waits_for_the_answer(void) {
  model = &remote_model;
  remote_answer = STEP_JOIN_PENDING;
  reset();
  start(0);
  forget_output();
  line(0, "ada");
  CHECK_EQ_TEXT(trace, "j"); /* no lock: this model has none */
  CHECK(clients[0].output.length == 0);
  CHECK(!session_is_registered(&clients[0].session));
  /* Accepted: the arrival was the room's to announce; only `registered`. */
  buffer_clear(&trace);
  answer(0, "ada", arrive(0, "ada"));
  CHECK_EQ_TEXT(trace, "r");
  CHECK(clients[0].output.length == 0);
  CHECK(session_is_registered(&clients[0].session));
  CHECK(clients[0].session.name == room_member_name(room, 0).bytes);
  /* Taken, or the room out of reach meanwhile: the prompt again. */
  start(1);
  start(2);
  forget_output();
  answer(1, "ada", NULL);
  CHECK_EQ_TEXT(clients[1].output,
                "Username ada not available\r\nEnter user name: ");
  answer(2, "bob", STEP_ROOM_UNAVAILABLE);
  CHECK_EQ_TEXT(clients[2].output, CHAT_ROOM_UNAVAILABLE CHAT_PROMPT);
  CHECK(!session_is_registered(&clients[1].session) &&
        !session_is_registered(&clients[2].session));
  CHECK_EQ_TEXT(trace, "ss");
  model = &locking_model;
}

static void unreachable_room_answers_every_line_that_needs_it(void) {
  model = &remote_model;
  remote_answer = STEP_JOIN_PENDING;
  remote_up = true;
  reset();
  start(0);
  line(0, "ada");
  answer(0, "ada", arrive(0, "ada"));
  start(1);
  remote_up = false;
  remote_answer = STEP_ROOM_UNAVAILABLE;
  forget_output();
  line(1, "bob");
  CHECK_EQ_TEXT(clients[1].output, CHAT_ROOM_UNAVAILABLE CHAT_PROMPT);
  line(0, "hello");
  line(0, "NAMES");
  line(0, "HELP");
  CHECK_EQ_TEXT(clients[0].output,
                CHAT_ROOM_UNAVAILABLE CHAT_ROOM_UNAVAILABLE CHAT_HELP);
  line(0, "QUIT");
  CHECK(clients[0].closed);
  remote_up = true;
  model = &locking_model;
}

static void lost_room_closes_without_a_departure(void) {
  reset();
  start(0);
  start(1);
  line(0, "ada");
  line(1, "bob");
  forget_output();
  carry_out(0, session_room_lost(&clients[0].session));
  CHECK_EQ_TEXT(clients[0].output, CHAT_ROOM_LOST);
  CHECK(clients[0].closed);
  CHECK(!session_is_registered(&clients[0].session));
  /* The room retired the name: the end of the connection says nothing. */
  carry_out(0, session_end(&clients[0].session, &context));
  CHECK_EQ_TEXT(trace, "sc");
  CHECK(clients[1].output.length == 0);
}

int main(void) {
  welcome_is_a_reply_alone();
  accepted_name_joins_and_announces_in_one_hold();
  taken_name_asks_again();
  invalid_name_needs_no_room();
  message_reaches_everyone_registered();
  names_lists_the_room_to_the_sender();
  quit_replies_then_closes();
  timeout_and_shutdown_reply_then_close();
  departure_reaches_the_others_only();
  unregistered_end_is_silent();
  one_thread_model_needs_no_lock();
  pending_name_waits_for_the_answer();
  unreachable_room_answers_every_line_that_needs_it();
  lost_room_closes_without_a_departure();
  reset();
  free(room);
  for (int i = 0; i < CLIENTS; i++)
    buffer_free(&clients[i].output);
  buffer_free(&trace);
  return check_report();
}
