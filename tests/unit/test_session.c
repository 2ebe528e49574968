/* The session logic: every transition and every exact text of docs/PROTOCOL.md
 * sections 3 and 4.
 *
 * Welcome and prompt; invalid names (empty, blank, too many characters,
 * space, colon, control characters, TAB inside) and trimming; 32 multibyte
 * characters accepted; the JOIN step answered by session_joined, with NULL
 * (not available, prompt again) or with the room's copy (arrived line);
 * notices while naming, each followed by the prompt; NAMES, HELP and QUIT
 * in any case with spaces and tabs around; empty lines ignored; messages
 * kept exactly; control characters rejected in messages but TAB allowed;
 * the order of the bad-input checks; the longest lines fitting the scratch
 * buffer; timeout, shutdown and end of connection; nothing after QUIT. */
#include "check.h"
#include "protocol.h"
#include "session.h"

#define TEXT(literal) ((struct chat_text){literal, sizeof(literal) - 1})
#define NO_TEXT ((struct chat_text){NULL, 0})

#define WELCOME "Welcome to Lobby\r\n"
#define PROMPT "Enter user name: "
#define INVALID_NAME                                                           \
  "Invalid user name: use 1-32 characters, no spaces, colons or control "      \
  "characters\r\n"
#define INVALID_UTF8 "Line ignored: invalid UTF-8\r\n"
#define CONTROL "Line ignored: control characters are not allowed\r\n"
#define HELP                                                                   \
  "Commands: NAMES lists who is here, QUIT leaves, anything else is sent to "  \
  "everyone\r\n"

/* Names of many multibyte characters. */
#define E_ACUTE "\xC3\xA9"          /* two bytes */
#define EURO "\xE2\x82\xAC"         /* three */
#define GRINNING "\xF0\x9F\x98\x80" /* four */
#define TIMES_32(s) TIMES_4(TIMES_4(s s))
#define TIMES_4(s) s s s s

/* The longest name: 32 characters of four bytes, CHAT_NAME_MAX_BYTES. */
#define LONGEST_NAME TIMES_32(GRINNING)

/* A session context with a scratch buffer of exactly the documented size,
 * so that the address sanitizer notices a step written past it. */
static struct session_context make_context(const char *room_name,
                                           size_t max_line) {
  size_t size = session_scratch_size(max_line);
  return (struct session_context){room_name, max_line, malloc(size), size};
}

static struct frame line_frame(struct chat_text line) {
  return (struct frame){FRAME_LINE, line.bytes, line.length};
}

static struct session_step on_line(struct session *session,
                                   const struct session_context *context,
                                   struct chat_text line) {
  struct frame frame = line_frame(line);
  return session_on_frame(session, context, &frame);
}

/* What a step must be; unnamed fields are empty, NONE and false. */
struct expected_step {
  struct chat_text reply;
  enum session_room_op room;
  struct chat_text name;
  struct chat_text room_line;
  bool close;
};

static bool check_step(struct session_step step, struct expected_step expected,
                       int line) {
  bool ok = CHECK_EQ_BYTES(step.reply.bytes, step.reply.length,
                           expected.reply.bytes, expected.reply.length);
  ok &= CHECK(step.room == expected.room);
  ok &= CHECK_EQ_BYTES(step.name.bytes, step.name.length, expected.name.bytes,
                       expected.name.length);
  ok &= CHECK_EQ_BYTES(step.room_line.bytes, step.room_line.length,
                       expected.room_line.bytes, expected.room_line.length);
  ok &= CHECK(step.close == expected.close);
  if (!ok)
    fprintf(stderr, "  (the step checked at line %d)\n", line);
  return ok;
}

#define CHECK_STEP(step, ...)                                                  \
  check_step((step), (struct expected_step){__VA_ARGS__}, __LINE__)

/* A session that has registered `name`; the literal stands for the room's
 * copy of the name, which must outlive the session. */
static struct session chatting_as(const struct session_context *context,
                                  struct chat_text name) {
  struct session session;
  session_start(&session, context);
  struct session_step join = on_line(&session, context, name);
  CHECK(join.room == SESSION_ROOM_JOIN);
  session_joined(&session, context, join.name, name.bytes);
  CHECK(session.phase == SESSION_CHATTING);
  return session;
}

static void test_welcome(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session;
  CHECK_STEP(session_start(&session, &context), .reply = TEXT(WELCOME PROMPT));
  CHECK(session.phase == SESSION_NAMING);
  CHECK(!session_is_registered(&session));
  free(context.scratch);
}

static void test_invalid_names(void) {
  const struct chat_text invalid[] = {
      TEXT(""),
      TEXT("   "),
      TEXT(" \t \t"),
      TEXT("abcdefghijklmnopqrstuvwxyz0123456"), /* 33 characters */
      TEXT("ada lovelace"),
      TEXT("ada:"),
      TEXT(":"),
      TEXT("ada\x1b[31m"),
      TEXT("ada\x7F"),
      TEXT("a\tb"), /* TAB inside is a control character */
      TEXT("a\0b"),
      TEXT("\r"),
      /* The C1 controls and the bidirectional overrides and isolates. */
      TEXT("ada\xC2\x9B"
           "2K"),        /* U+009B, CSI */
      TEXT("\xC2\x80"),  /* U+0080 */
      TEXT("a\xC2\x85"), /* U+0085, NEL */
      TEXT("a\xC2\x9F"), /* U+009F */
      TEXT("\xE2\x80\xAE"
           "ada"), /* U+202E, RLO */
      TEXT("a\xE2\x80\xAA"
           "b"), /* U+202A, LRE */
      TEXT("a\xE2\x81\xA6"
           "b"),             /* U+2066, LRI */
      TEXT("a\xE2\x81\xA9"), /* U+2069, PDI */
      /* 33 two-byte characters: 66 bytes, but one character too many. */
      TEXT(TIMES_32(E_ACUTE) E_ACUTE),
  };
  struct session_context context = make_context("Lobby", 200);
  struct session session;
  session_start(&session, &context);
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    if (!CHECK_STEP(on_line(&session, &context, invalid[i]),
                    .reply = TEXT(INVALID_NAME PROMPT))) {
      fprintf(stderr, "  name ");
      check_print_bytes(stderr, invalid[i].bytes, invalid[i].length);
      fputc('\n', stderr);
    }
    CHECK(session.phase == SESSION_NAMING);
  }
  free(context.scratch);
}

static void test_valid_names(void) {
  struct valid_name {
    struct chat_text line;
    struct chat_text name;
  };
  const struct valid_name valid[] = {
      {TEXT("ada"), TEXT("ada")},
      {TEXT("  ada\t "), TEXT("ada")},         /* trimmed */
      {TEXT("\t\xC3\xA9 "), TEXT("\xC3\xA9")}, /* one multibyte character */
      {TEXT("Ada-Lovelace_1815"), TEXT("Ada-Lovelace_1815")},
      /* Just outside the control ranges: U+00A0, U+202F, U+2065, U+206A. */
      {TEXT("a\xC2\xA0"
            "b"),
       TEXT("a\xC2\xA0"
            "b")},
      {TEXT("\xE2\x80\xAF\xE2\x81\xA5\xE2\x81\xAA"),
       TEXT("\xE2\x80\xAF\xE2\x81\xA5\xE2\x81\xAA")},
      {TEXT("abcdefghijklmnopqrstuvwxyz012345"), /* 32 characters */
       TEXT("abcdefghijklmnopqrstuvwxyz012345")},
      /* 32 characters of two, three and four bytes. */
      {TEXT(TIMES_32(E_ACUTE)), TEXT(TIMES_32(E_ACUTE))},
      {TEXT(TIMES_32(EURO)), TEXT(TIMES_32(EURO))},
      {TEXT(" " TIMES_32(GRINNING) "\t"), TEXT(TIMES_32(GRINNING))},
  };
  struct session_context context = make_context("Lobby", 200);
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    struct session session;
    session_start(&session, &context);
    if (!CHECK_STEP(on_line(&session, &context, valid[i].line),
                    .room = SESSION_ROOM_JOIN, .name = valid[i].name))
      fprintf(stderr, "  valid name %zu\n", i);
    /* Asking is not joining: the room answers first. */
    CHECK(session.phase == SESSION_NAMING);
    CHECK(!session_is_registered(&session));
  }
  free(context.scratch);
}

static void test_longest_name(void) {
  CHECK(sizeof(LONGEST_NAME) - 1 == CHAT_NAME_MAX_BYTES);
  struct session_context context = make_context("Lobby", 200);
  struct session session;
  session_start(&session, &context);
  CHECK_STEP(on_line(&session, &context, TEXT(LONGEST_NAME)),
             .room = SESSION_ROOM_JOIN, .name = TEXT(LONGEST_NAME));
  /* One more character is too many. */
  CHECK_STEP(on_line(&session, &context, TEXT(LONGEST_NAME "a")),
             .reply = TEXT(INVALID_NAME PROMPT));
  free(context.scratch);
}

static void test_join(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session;
  session_start(&session, &context);
  struct session_step join = on_line(&session, &context, TEXT(" ada "));
  CHECK_STEP(join, .room = SESSION_ROOM_JOIN, .name = TEXT("ada"));

  /* The name is taken: say so, prompt again, keep naming. */
  CHECK_STEP(session_joined(&session, &context, join.name, NULL),
             .reply = TEXT("Username ada not available\r\n" PROMPT));
  CHECK(session.phase == SESSION_NAMING);
  CHECK(!session_is_registered(&session));

  /* Another name, and this time the room stores it. */
  static const char stored[] = "grace";
  join = on_line(&session, &context, TEXT("grace"));
  CHECK_STEP(join, .room = SESSION_ROOM_JOIN, .name = TEXT("grace"));
  CHECK_STEP(session_joined(&session, &context, join.name, stored),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("User grace arrived.\r\n"));
  CHECK(session.phase == SESSION_CHATTING);
  CHECK(session_is_registered(&session));
  CHECK(session.name == stored); /* the room's copy, not the line */
  CHECK(session.name_length == 5);
  free(context.scratch);
}

/* The bad-input notices while naming are followed by the prompt; a telnet
 * reply is not a notice and gets none. */
static void test_notices_while_naming(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session;
  session_start(&session, &context);
  CHECK_STEP(on_line(&session, &context, TEXT("ad\xC0\x80")),
             .reply = TEXT(INVALID_UTF8 PROMPT));
  struct frame too_long = {FRAME_TOO_LONG, NULL, 0};
  CHECK_STEP(session_on_frame(&session, &context, &too_long),
             .reply = TEXT("Line ignored: longer than 64 bytes\r\n" PROMPT));
  struct frame telnet = {FRAME_TELNET_REPLY, "\xFF\xFC\x01", 3};
  CHECK_STEP(session_on_frame(&session, &context, &telnet),
             .reply = TEXT("\xFF\xFC\x01"));
  CHECK(session.phase == SESSION_NAMING);
  /* Invalid UTF-8 is reported as such, before the name rules. */
  CHECK_STEP(on_line(&session, &context, TEXT("a b\xFF")),
             .reply = TEXT(INVALID_UTF8 PROMPT));
  free(context.scratch);
}

static void test_commands(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session = chatting_as(&context, TEXT("ada"));
  const struct chat_text names[] = {TEXT("NAMES"), TEXT("names"), TEXT("NaMeS"),
                                    TEXT("  names\t"), TEXT("\tNAMES  ")};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    CHECK_STEP(on_line(&session, &context, names[i]),
               .room = SESSION_ROOM_NAMES);
  const struct chat_text help[] = {TEXT("HELP"), TEXT("help"),
                                   TEXT(" hElP \t")};
  for (size_t i = 0; i < sizeof help / sizeof help[0]; i++)
    CHECK_STEP(on_line(&session, &context, help[i]), .reply = TEXT(HELP));
  /* Near misses are messages. */
  CHECK_STEP(on_line(&session, &context, TEXT("NAMES please")),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("ada: NAMES please\r\n"));
  CHECK_STEP(on_line(&session, &context, TEXT("N AMES")),
             .room = SESSION_ROOM_SAY, .room_line = TEXT("ada: N AMES\r\n"));
  CHECK_STEP(on_line(&session, &context, TEXT("/quit")),
             .room = SESSION_ROOM_SAY, .room_line = TEXT("ada: /quit\r\n"));
  CHECK_STEP(on_line(&session, &context, TEXT("QUITE")),
             .room = SESSION_ROOM_SAY, .room_line = TEXT("ada: QUITE\r\n"));
  /* A command followed by a control character is no command. */
  CHECK_STEP(on_line(&session, &context, TEXT("QUIT\x1b")),
             .reply = TEXT(CONTROL));
  CHECK(session.phase == SESSION_CHATTING);

  const struct chat_text quit[] = {TEXT("QUIT"), TEXT("quit"),
                                   TEXT(" \tQuit \t")};
  for (size_t i = 0; i < sizeof quit / sizeof quit[0]; i++) {
    struct session quitter = chatting_as(&context, TEXT("ada"));
    CHECK_STEP(on_line(&quitter, &context, quit[i]), .reply = TEXT("Bye.\r\n"),
               .close = true);
    CHECK(quitter.phase == SESSION_CLOSED);
  }
  free(context.scratch);
}

static void test_empty_lines(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session = chatting_as(&context, TEXT("ada"));
  CHECK_STEP(on_line(&session, &context, TEXT("")), .reply = NO_TEXT);
  CHECK_STEP(on_line(&session, &context, TEXT("   ")), .reply = NO_TEXT);
  CHECK_STEP(on_line(&session, &context, TEXT(" \t\t ")), .reply = NO_TEXT);
  CHECK(session.phase == SESSION_CHATTING);
  free(context.scratch);
}

static void test_messages(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session = chatting_as(&context, TEXT("ada"));
  CHECK_STEP(on_line(&session, &context, TEXT("hello")),
             .room = SESSION_ROOM_SAY, .room_line = TEXT("ada: hello\r\n"));
  /* The line exactly as received: spaces and tabs kept. */
  CHECK_STEP(on_line(&session, &context, TEXT("  spaced  out  ")),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("ada:   spaced  out  \r\n"));
  CHECK_STEP(on_line(&session, &context, TEXT("\tcol1\tcol2\t")),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("ada: \tcol1\tcol2\t\r\n"));
  CHECK_STEP(on_line(&session, &context, TEXT("caf\xC3\xA9 \xE2\x82\xAC")),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("ada: caf\xC3\xA9 \xE2\x82\xAC\r\n"));
  /* Colons and what looks like a server notice are just text after the
   * sender's name. */
  CHECK_STEP(on_line(&session, &context, TEXT("User bob departed.")),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("ada: User bob departed.\r\n"));
  CHECK_STEP(on_line(&session, &context, TEXT("bob: hi")),
             .room = SESSION_ROOM_SAY, .room_line = TEXT("ada: bob: hi\r\n"));
  free(context.scratch);
}

static void test_bad_messages(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session = chatting_as(&context, TEXT("ada"));
  const struct chat_text control[] = {
      TEXT("\x1b[2J"),         /* ESC: clears the others' screens */
      TEXT("a\x7F"),           /* DEL */
      TEXT("fake\rada: real"), /* a bare CR rewrites the line */
      TEXT("a\0b"), TEXT("\a"), TEXT("\x01"), TEXT("a\x1F"),
      TEXT("\x1b "), /* not blank: spaces are trimmed, ESC is not */
      /* C1 CSI: erases the line and moves to its start on a terminal, so
       * that a fake notice follows. */
      TEXT("\xC2\x9B"
           "1G\xC2\x9B"
           "2KUser bob departed."),
      TEXT("a\xC2\x80"), /* U+0080 */
      TEXT("a\xC2\x85"), /* U+0085, NEL: a line end to some */
      TEXT("\xC2\x9F"),  /* U+009F */
      TEXT("\xE2\x80\xAE"
           "txt.exe"),                   /* U+202E, RLO */
      TEXT("a\xE2\x80\xAA"),             /* U+202A */
      TEXT("a\xE2\x80\xAD"),             /* U+202D */
      TEXT("\xE2\x81\xA6x\xE2\x81\xA9"), /* U+2066 ... U+2069 */
      TEXT("\tx\xE2\x81\xA8\t"),         /* U+2068, TABs around */
  };
  for (size_t i = 0; i < sizeof control / sizeof control[0]; i++) {
    if (!CHECK_STEP(on_line(&session, &context, control[i]),
                    .reply = TEXT(CONTROL)))
      fprintf(stderr, "  control line %zu\n", i);
  }
  /* Just outside the ranges, a message. */
  CHECK_STEP(on_line(&session, &context,
                     TEXT("\xC2\xA0\xE2\x80\xA9\xE2\x80\xAF\xE2\x81\xA5"
                          "\xE2\x81\xAA")),
             .room = SESSION_ROOM_SAY,
             .room_line = TEXT("ada: \xC2\xA0\xE2\x80\xA9\xE2\x80\xAF"
                               "\xE2\x81\xA5\xE2\x81\xAA\r\n"));
  /* Notices while chatting carry no prompt. */
  CHECK_STEP(on_line(&session, &context, TEXT("\xED\xA0\x80")),
             .reply = TEXT(INVALID_UTF8));
  struct frame too_long = {FRAME_TOO_LONG, NULL, 0};
  CHECK_STEP(session_on_frame(&session, &context, &too_long),
             .reply = TEXT("Line ignored: longer than 64 bytes\r\n"));
  /* The checks run in order: invalid UTF-8 before control characters. */
  CHECK_STEP(on_line(&session, &context, TEXT("\x1b\xC0\x80")),
             .reply = TEXT(INVALID_UTF8));
  struct frame telnet = {FRAME_TELNET_REPLY, "\xFF\xFE\x03", 3};
  CHECK_STEP(session_on_frame(&session, &context, &telnet),
             .reply = TEXT("\xFF\xFE\x03"));
  CHECK(session.phase == SESSION_CHATTING);
  free(context.scratch);
}

/* After QUIT nothing more happens, whatever arrives; the end of the
 * connection is then the departure. */
static void test_nothing_after_quit(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session = chatting_as(&context, TEXT("ada"));
  on_line(&session, &context, TEXT("QUIT"));
  CHECK_STEP(on_line(&session, &context, TEXT("hello")), .reply = NO_TEXT);
  CHECK_STEP(on_line(&session, &context, TEXT("NAMES")), .reply = NO_TEXT);
  CHECK_STEP(on_line(&session, &context, TEXT("\xFF")), .reply = NO_TEXT);
  struct frame too_long = {FRAME_TOO_LONG, NULL, 0};
  CHECK_STEP(session_on_frame(&session, &context, &too_long), .reply = NO_TEXT);
  struct frame telnet = {FRAME_TELNET_REPLY, "\xFF\xFC\x01", 3};
  CHECK_STEP(session_on_frame(&session, &context, &telnet), .reply = NO_TEXT);
  CHECK_STEP(session_end(&session, &context), .room = SESSION_ROOM_LEAVE,
             .room_line = TEXT("User ada departed.\r\n"));
  CHECK(!session_is_registered(&session));
  /* Departed exactly once. */
  CHECK_STEP(session_end(&session, &context), .reply = NO_TEXT);
  free(context.scratch);
}

static void test_timeout(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session session;
  session_start(&session, &context);
  on_line(&session, &context, TEXT("bad name")); /* a failed attempt */
  CHECK_STEP(session_timed_out(&session),
             .reply = TEXT("Timed out waiting for a user name\r\n"),
             .close = true);
  CHECK(session.phase == SESSION_CLOSED);
  CHECK_STEP(on_line(&session, &context, TEXT("ada")), .reply = NO_TEXT);
  /* Never registered: leaves silently. */
  CHECK_STEP(session_end(&session, &context), .reply = NO_TEXT);
  free(context.scratch);
}

static void test_shutdown(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session naming;
  session_start(&naming, &context);
  CHECK_STEP(session_shutdown(&naming),
             .reply = TEXT("Server shutting down\r\n"), .close = true);
  CHECK(naming.phase == SESSION_CLOSED);
  CHECK_STEP(session_end(&naming, &context), .reply = NO_TEXT);

  struct session chatting = chatting_as(&context, TEXT("ada"));
  CHECK_STEP(session_shutdown(&chatting),
             .reply = TEXT("Server shutting down\r\n"), .close = true);
  CHECK_STEP(on_line(&chatting, &context, TEXT("hello")), .reply = NO_TEXT);
  CHECK_STEP(session_end(&chatting, &context), .room = SESSION_ROOM_LEAVE,
             .room_line = TEXT("User ada departed.\r\n"));
  free(context.scratch);
}

static void test_end(void) {
  struct session_context context = make_context("Lobby", 64);
  struct session naming;
  session_start(&naming, &context);
  CHECK_STEP(session_end(&naming, &context), .reply = NO_TEXT);
  CHECK(naming.phase == SESSION_CLOSED);

  /* Ends between asking for a name and the room's answer: not registered,
   * so no departure. */
  struct session asking;
  session_start(&asking, &context);
  on_line(&asking, &context, TEXT("ada"));
  CHECK_STEP(session_end(&asking, &context), .reply = NO_TEXT);

  struct session chatting = chatting_as(&context, TEXT("ada"));
  CHECK_STEP(session_end(&chatting, &context), .room = SESSION_ROOM_LEAVE,
             .room_line = TEXT("User ada departed.\r\n"));
  CHECK(chatting.phase == SESSION_CLOSED);
  CHECK(!session_is_registered(&chatting));
  CHECK_STEP(session_end(&chatting, &context), .reply = NO_TEXT);
  free(context.scratch);
}

/* The longest texts a step formats fit the scratch buffer exactly as
 * sized: a max_line message from the longest name, for a tiny and a large
 * max_line, and the welcome of a long room name. */
static void test_longest_texts(void) {
  static const size_t max_lines[] = {1, 4096, 65536};
  for (size_t k = 0; k < sizeof max_lines / sizeof max_lines[0]; k++) {
    size_t max_line = max_lines[k];
    struct session_context context = make_context("Lobby", max_line);
    struct session session = chatting_as(&context, TEXT(LONGEST_NAME));
    char *message = malloc(max_line);
    memset(message, 'x', max_line);
    struct byte_buffer expected = {0};
    buffer_append_string(&expected, LONGEST_NAME ": ");
    buffer_append(&expected, message, max_line);
    buffer_append_string(&expected, "\r\n");
    struct session_step step =
        on_line(&session, &context, (struct chat_text){message, max_line});
    CHECK(step.room == SESSION_ROOM_SAY);
    CHECK_EQ_BYTES(step.room_line.bytes, step.room_line.length, expected.bytes,
                   expected.length);

    /* The longest name is not available. */
    struct session other;
    session_start(&other, &context);
    struct session_step join = on_line(&other, &context, TEXT(LONGEST_NAME));
    CHECK_STEP(session_joined(&other, &context, join.name, NULL),
               .reply =
                   TEXT("Username " LONGEST_NAME " not available\r\n" PROMPT));
    buffer_free(&expected);
    free(message);
    free(context.scratch);
  }

  /* A room name of 256 bytes, the most the command line accepts. */
  char room_name[257];
  memset(room_name, 'r', 256);
  room_name[256] = '\0';
  struct session_context context = make_context(room_name, 1);
  struct byte_buffer expected = {0};
  buffer_append_string(&expected, "Welcome to ");
  buffer_append_string(&expected, room_name);
  buffer_append_string(&expected, "\r\n" PROMPT);
  struct session session;
  struct session_step welcome = session_start(&session, &context);
  CHECK_EQ_BYTES(welcome.reply.bytes, welcome.reply.length, expected.bytes,
                 expected.length);
  buffer_free(&expected);
  free(context.scratch);

  /* The largest --max-line, in the too-long notice. */
  context = make_context("Lobby", 16777216);
  session_start(&session, &context);
  struct frame too_long = {FRAME_TOO_LONG, NULL, 0};
  CHECK_STEP(session_on_frame(&session, &context, &too_long),
             .reply =
                 TEXT("Line ignored: longer than 16777216 bytes\r\n" PROMPT));
  free(context.scratch);
}

int main(void) {
  test_welcome();
  test_invalid_names();
  test_valid_names();
  test_longest_name();
  test_join();
  test_notices_while_naming();
  test_commands();
  test_empty_lines();
  test_messages();
  test_bad_messages();
  test_nothing_after_quit();
  test_timeout();
  test_shutdown();
  test_end();
  test_longest_texts();
  return check_report();
}
