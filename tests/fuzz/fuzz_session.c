/* A libFuzzer target for the whole input path of one connection: bytes
 * through a line_framer, frames through a session, steps carried out on a
 * small room that two other users are already in by common/step.c, the
 * executor every server model uses, over a model double that checks what
 * it is asked.
 *
 * The input: a header, then the bytes the client sends.
 *   byte 0     max_line - 1 (so 1 to 256)
 *   byte 1     how the connection ends, once the bytes are sent: closed by
 *              the client, server shutdown, or login timeout (if naming)
 *   bytes 2-5  the sizes of successive chunks, in a cycle (0: all the rest)
 *
 * Invariants, each checked with abort() so that libFuzzer keeps the input:
 * - every room line is one line: it ends with CR LF, holds no other control
 *   character (TAB aside, which a message may hold; the C1 controls and the
 *   bidirectional overrides and isolates included), is valid UTF-8, and starts
 *   with the sender's name; every reply too (without TAB), except that a
 *   notice while naming ends with the prompt, and that a telnet refusal is
 *   IAC WONT x or IAC DONT x;
 * - no reply contains 0xFF unless the input contained IAC;
 * - the framer never holds more than max_line bytes, and hands out no line
 *   longer than that;
 * - a session in CLOSED gets no more frames, and no step if it did;
 * - the client arrives at most once, departs exactly once if it arrived,
 *   and the room is left as it was;
 * - the same bytes give the same transcript in chunks and in one piece. */
#include "line_framer.h"
#include "protocol.h"
#include "room.h"
#include "session.h"
#include "step.h"
#include "utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(condition)                                                     \
  do {                                                                         \
    if (!(condition)) {                                                        \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #condition);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

enum { HEADER_SIZE = 6, ROOM_CAPACITY = 4 };

/* Owners in the room: the fuzzed client and the two users already there. */
enum { OWNER_CLIENT = 1, OWNER_ADA, OWNER_BOB };

enum connection_end { END_CLOSED, END_SHUTDOWN, END_TIMEOUT };

/* A growable byte string. As a connection's transcript it holds everything
 * anyone received, in order, each piece tagged with who got it: what two
 * runs of the same input must agree on. */
struct transcript {
  char *bytes;
  size_t length;
  size_t capacity;
};

static void append(struct transcript *transcript, const void *bytes,
                   size_t length) {
  size_t needed = transcript->length + length;
  if (needed > transcript->capacity) {
    size_t capacity = transcript->capacity ? transcript->capacity : 1024;
    while (capacity < needed)
      capacity *= 2;
    transcript->bytes = realloc(transcript->bytes, capacity);
    REQUIRE(transcript->bytes != NULL);
    transcript->capacity = capacity;
  }
  if (length > 0)
    memcpy(transcript->bytes + transcript->length, bytes, length);
  transcript->length = needed;
}

static void transcript_add(struct transcript *transcript, char who,
                           const char *bytes, size_t length) {
  append(transcript, &who, 1);
  append(transcript, bytes, length);
}

struct connection {
  struct line_framer framer;
  struct session session;
  struct session_context context;
  struct room *room;
  int member;                     /* the client's index in the room, or -1 */
  char name[CHAT_NAME_MAX_BYTES]; /* the client's name, once it arrived */
  size_t name_length;
  bool input_has_iac;
  bool telnet_reply;     /* the step being carried out answers telnet */
  bool locked;           /* between lock_room() and unlock_room() */
  bool joining, leaving; /* the room line said next is the arrival, the
                            departure */
  bool collecting_names; /* sends are the NAMES list, collected in names */
  struct transcript names;
  unsigned arrivals;
  unsigned departures;
  struct transcript transcript;
};

static bool ends_with(const char *bytes, size_t length, const char *suffix) {
  size_t suffix_length = strlen(suffix);
  return length >= suffix_length &&
         memcmp(bytes + length - suffix_length, suffix, suffix_length) == 0;
}

/* Whether valid UTF-8 holds, at i, a C1 control (U+0080 to U+009F: C2 80
 * to C2 9F) or a bidirectional override or isolate (U+202A to U+202E: E2 80
 * AA to E2 80 AE; U+2066 to U+2069: E2 81 A6 to E2 81 A9). Written from the
 * encodings, apart from utf8.c, to check it. */
static bool is_wide_control_at(const unsigned char *s, size_t length,
                               size_t i) {
  if (s[i] == 0xC2)
    return i + 1 < length && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F;
  if (s[i] != 0xE2 || i + 2 >= length)
    return false;
  return (s[i + 1] == 0x80 && s[i + 2] >= 0xAA && s[i + 2] <= 0xAE) ||
         (s[i + 1] == 0x81 && s[i + 2] >= 0xA6 && s[i + 2] <= 0xA9);
}

/* Server text: valid UTF-8 in lines ending CR LF, with no control character
 * but those line ends (and TAB, which a user's message may hold); the last
 * line may be the prompt, without a line end. */
static void require_server_text(const char *bytes, size_t length,
                                bool tab_allowed, bool prompt_allowed) {
  REQUIRE(utf8_validate(bytes, length, NULL));
  for (size_t i = 0; i < length; i++) {
    unsigned char byte = (unsigned char)bytes[i];
    REQUIRE(!is_wide_control_at((const unsigned char *)bytes, length, i));
    if (byte == '\r')
      REQUIRE(i + 1 < length && bytes[i + 1] == '\n');
    else if (byte == '\n')
      REQUIRE(i > 0 && bytes[i - 1] == '\r');
    else if (byte != '\t' || !tab_allowed)
      REQUIRE(!is_control_byte(byte));
  }
  if (length == 0)
    return;
  REQUIRE(ends_with(bytes, length, CHAT_EOL) ||
          (prompt_allowed && ends_with(bytes, length, CHAT_PROMPT)));
}

/* A room line: one line (docs/PROTOCOL.md: no user can forge a server notice or
 * break a line). */
static void require_room_line(struct chat_text line) {
  REQUIRE(line.length >= 2);
  require_server_text(line.bytes, line.length, true, false);
  REQUIRE(memchr(line.bytes, '\n', line.length) ==
          line.bytes + line.length - 1);
}

/* Whether a line is exactly before, the client's name, after. */
static bool is_notice_about(struct chat_text line, const char *before,
                            const struct connection *connection,
                            const char *after) {
  size_t before_length = strlen(before), after_length = strlen(after);
  return line.length ==
             before_length + connection->name_length + after_length &&
         memcmp(line.bytes, before, before_length) == 0 &&
         memcmp(line.bytes + before_length, connection->name,
                connection->name_length) == 0 &&
         memcmp(line.bytes + before_length + connection->name_length, after,
                after_length) == 0;
}

static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  struct connection *connection = context;
  require_room_line(line);
  transcript_add(&connection->transcript, (char)('0' + owner), line.bytes,
                 line.length);
}

/* The model double: common/step.c, the executor every server model uses,
 * carries out the steps over these hooks, which check what it asks of
 * them. */

/* A reply, or a piece of the NAMES list, which is collected whole. */
static void send_to_client(void *client, const char *bytes, size_t length) {
  struct connection *connection = client;
  if (connection->collecting_names) {
    append(&connection->names, bytes, length);
    return;
  }
  if (connection->telnet_reply) {
    const unsigned char *reply = (const unsigned char *)bytes;
    REQUIRE(length == 3 && reply[0] == 0xFF &&
            (reply[1] == 0xFC || reply[1] == 0xFE));
  } else {
    require_server_text(bytes, length, false, true);
  }
  if (!connection->input_has_iac)
    REQUIRE(!memchr(bytes, 0xFF, length));
  transcript_add(&connection->transcript, 'R', bytes, length);
}

static void lock_room(void *client) {
  struct connection *connection = client;
  REQUIRE(!connection->locked);
  connection->locked = true;
}

/* The end of the room's part: a NAMES list collected meanwhile is whole. */
static void unlock_room(void *client) {
  struct connection *connection = client;
  REQUIRE(connection->locked);
  connection->locked = false;
  if (!connection->collecting_names)
    return;
  connection->collecting_names = false;
  struct transcript *names = &connection->names;
  /* The header, then one line per user. */
  size_t header_length = strlen(CHAT_NAMES_HEADER);
  REQUIRE(names->length >= header_length &&
          memcmp(names->bytes, CHAT_NAMES_HEADER, header_length) == 0);
  require_server_text(names->bytes, names->length, false, false);
  size_t lines = 0;
  for (size_t i = 0; i < names->length; i++)
    lines += names->bytes[i] == '\n';
  REQUIRE(lines == 1 + room_count(connection->room));
  transcript_add(&connection->transcript, 'N', names->bytes, names->length);
  free(names->bytes);
  *names = (struct transcript){0};
}

static const char *join_room(void *client, struct chat_text name) {
  struct connection *connection = client;
  REQUIRE(connection->locked);
  REQUIRE(connection->session.phase == SESSION_NAMING &&
          connection->member < 0);
  REQUIRE(name.length >= 1 && name.length <= CHAT_NAME_MAX_BYTES);
  const char *stored = NULL;
  connection->member = room_join(connection->room, name, OWNER_CLIENT, &stored);
  if (connection->member < 0)
    return NULL;
  memcpy(connection->name, name.bytes, name.length);
  connection->name_length = name.length;
  connection->joining = true;
  return stored;
}

static bool say_to_room(void *client, struct chat_text line) {
  struct connection *connection = client;
  REQUIRE(connection->locked);
  require_room_line(line);
  if (connection->leaving) {
    REQUIRE(is_notice_about(line, "User ", connection, " departed.\r\n"));
    connection->leaving = false;
    connection->departures++;
  } else if (connection->joining) {
    REQUIRE(session_is_registered(&connection->session));
    REQUIRE(is_notice_about(line, "User ", connection, " arrived.\r\n"));
    connection->joining = false;
    connection->arrivals++;
  } else {
    /* A message: the sender's name, ": ", the text. */
    REQUIRE(session_is_registered(&connection->session));
    REQUIRE(line.length >= connection->name_length + 4 &&
            memcmp(line.bytes, connection->name, connection->name_length) ==
                0 &&
            memcmp(line.bytes + connection->name_length, ": ", 2) == 0);
  }
  room_broadcast(connection->room, line, deliver, connection);
  return true;
}

static void leave_room(void *client, struct chat_text departure) {
  struct connection *connection = client;
  REQUIRE(connection->locked);
  REQUIRE(connection->member >= 0);
  room_leave(connection->room, connection->member);
  connection->member = -1;
  connection->leaving = true;
  say_to_room(client, departure);
}

static const struct room *room_members(void *client) {
  struct connection *connection = client;
  REQUIRE(connection->locked);
  REQUIRE(session_is_registered(&connection->session));
  REQUIRE(!connection->collecting_names);
  connection->collecting_names = true;
  return connection->room;
}

static void on_registered(void *client) {
  struct connection *connection = client;
  REQUIRE(!connection->locked && !connection->joining);
  REQUIRE(session_is_registered(&connection->session) &&
          connection->member >= 0);
}

static void close_session(void *client) {
  struct connection *connection = client;
  REQUIRE(!connection->locked);
  REQUIRE(connection->session.phase == SESSION_CLOSED);
}

static const struct step_model model_double = {
    .send = send_to_client,
    .lock = lock_room,
    .unlock = unlock_room,
    .join = join_room,
    .leave = leave_room,
    .say = say_to_room,
    .members = room_members,
    .registered = on_registered,
    .close = close_session,
};

/* Carries out a step as every server model does: with step_carry_out. */
static void carry_out(struct connection *connection, struct session_step step,
                      bool telnet_reply) {
  connection->telnet_reply = telnet_reply;
  step_carry_out(&model_double, connection, &connection->session,
                 &connection->context, step);
  connection->telnet_reply = false;
  REQUIRE(!connection->locked && !connection->joining && !connection->leaving);
  REQUIRE(session_is_registered(&connection->session) ==
          (connection->member >= 0));
}

static bool on_frame(void *context, const struct frame *frame) {
  struct connection *connection = context;
  struct line_framer *framer = &connection->framer;
  /* The framer stopped when the session closed. */
  REQUIRE(connection->session.phase != SESSION_CLOSED);
  REQUIRE(framer->length <= framer->max_line);
  if (frame->kind == FRAME_LINE)
    REQUIRE(frame->length <= framer->max_line);
  struct session_step step =
      session_on_frame(&connection->session, &connection->context, frame);
  carry_out(connection, step, frame->kind == FRAME_TELNET_REPLY);
  return !step.close;
}

/* One connection from start to end; the chunk sizes cycle through
 * chunk_sizes (0: the whole rest). Leaves its transcript in *out. */
static void run_connection(size_t max_line, enum connection_end end,
                           const uint8_t chunk_sizes[4], const uint8_t *data,
                           size_t size, struct transcript *out) {
  struct connection connection = {.member = -1};
  size_t scratch_size = session_scratch_size(max_line);
  connection.context = (struct session_context){
      "Fuzz room", max_line, malloc(scratch_size), scratch_size};
  connection.room =
      room_init(calloc(1, room_size(ROOM_CAPACITY)), ROOM_CAPACITY);
  connection.input_has_iac = memchr(data, 0xFF, size) != NULL;
  const char *stored;
  REQUIRE(room_join(connection.room, (struct chat_text){"ada", 3}, OWNER_ADA,
                    &stored) >= 0);
  REQUIRE(room_join(connection.room, (struct chat_text){"bob", 3}, OWNER_BOB,
                    &stored) >= 0);
  line_framer_init(&connection.framer, max_line);

  carry_out(&connection,
            session_start(&connection.session, &connection.context), false);

  size_t offset = 0;
  for (size_t k = 0; offset < size; k++) {
    size_t length = chunk_sizes[k % 4];
    if (length == 0 || length > size - offset)
      length = size - offset;
    enum framer_status status =
        line_framer_push(&connection.framer, (const char *)data + offset,
                         length, on_frame, &connection);
    offset += length;
    REQUIRE(status != FRAMER_NO_MEMORY);
    REQUIRE(connection.framer.length <= max_line);
    REQUIRE(connection.framer.capacity <= max_line + 1);
    if (status == FRAMER_STOPPED) {
      REQUIRE(connection.session.phase == SESSION_CLOSED);
      REQUIRE(connection.framer.partial == NULL);
      break;
    }
    REQUIRE(connection.session.phase != SESSION_CLOSED);
  }

  /* The bytes are all sent (or the session closed): the connection ends. */
  if (connection.session.phase != SESSION_CLOSED) {
    if (end == END_SHUTDOWN)
      carry_out(&connection, session_shutdown(&connection.session), false);
    else if (end == END_TIMEOUT && connection.session.phase == SESSION_NAMING)
      carry_out(&connection, session_timed_out(&connection.session), false);
  }
  bool was_registered = session_is_registered(&connection.session);
  carry_out(&connection, session_end(&connection.session, &connection.context),
            false);
  REQUIRE(connection.session.phase == SESSION_CLOSED);
  REQUIRE(!session_is_registered(&connection.session));
  REQUIRE(connection.arrivals <= 1);
  REQUIRE(connection.departures == (was_registered ? 1u : 0u));
  REQUIRE(connection.departures == connection.arrivals);
  REQUIRE(room_count(connection.room) == 2);

  /* A closed session takes no more steps, whatever comes. */
  struct frame late = {FRAME_LINE, "NAMES", 5};
  struct session_step nothing =
      session_on_frame(&connection.session, &connection.context, &late);
  REQUIRE(nothing.reply.length == 0 && nothing.room == SESSION_ROOM_NONE &&
          !nothing.close);

  line_framer_release(&connection.framer);
  free(connection.room);
  free(connection.context.scratch);
  *out = connection.transcript;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER_SIZE)
    return 0;
  size_t max_line = 1 + (size_t)data[0];
  enum connection_end end = (enum connection_end)(data[1] % 3);
  const uint8_t *chunk_sizes = data + 2;
  data += HEADER_SIZE;
  size -= HEADER_SIZE;

  struct transcript chunked, whole;
  run_connection(max_line, end, chunk_sizes, data, size, &chunked);
  static const uint8_t all_at_once[4] = {0, 0, 0, 0};
  run_connection(max_line, end, all_at_once, data, size, &whole);
  REQUIRE(chunked.length == whole.length);
  REQUIRE(chunked.length == 0 ||
          memcmp(chunked.bytes, whole.bytes, chunked.length) == 0);
  free(chunked.bytes);
  free(whole.bytes);
  return 0;
}
