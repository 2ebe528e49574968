/* line_framer: bytes in, frames out (docs/PROTOCOL.md section 2).
 *
 * A table of inputs, each with the frames it must give: line ends (LF,
 * CR LF, CR NUL, CR CR LF, a bare CR followed by data), telnet commands
 * inside a line and between CR and LF, telnet replies, lines of exactly
 * max_line and max_line + 1 bytes, a very long line reported once and
 * discarded, several lines per chunk, bytes without a line end (never a
 * line), and a handler that stops the framer. Every input is fed whole,
 * split in two at every byte boundary, one byte per chunk, and in random
 * chunks from a fixed seed: all must give the same frames. Along the way the
 * framer must never hold more than max_line bytes, and must hold no buffer
 * once nothing is pending: after a completed line, after a line too long,
 * after a stop. */
#include "check.h"
#include "line_framer.h"

#define IAC "\xFF"
#define DONT "\xFE"
#define DO "\xFD"
#define WONT "\xFC"
#define WILL "\xFB"
#define SB "\xFA"
#define SE "\xF0"
#define NOP "\xF1"

/* A literal as the (bytes, length) arguments of line_framer_push. */
#define INPUT(literal) literal, sizeof(literal) - 1

#define LINE(literal)                                                          \
  { FRAME_LINE, literal, sizeof(literal) - 1 }
#define TOO_LONG                                                               \
  { FRAME_TOO_LONG, NULL, 0 }
#define REPLY(literal)                                                         \
  { FRAME_TELNET_REPLY, literal, 3 }

#define MAX_FRAMES 8

struct framer_case {
  const char *name;
  size_t max_line;
  /* The handler returns false on this frame (counting from 1); 0: never. */
  size_t stop_after;
  /* Nothing is pending at the end of the input (it ends with a line end,
   * or inside a line being discarded): the framer must hold no buffer. */
  bool holds_nothing_at_end;
  const char *input;
  size_t input_length;
  /* Ends at the first zeroed entry (LINE("") is not zeroed: its bytes are
   * not NULL). */
  struct frame frames[MAX_FRAMES];
};

/* What is left at the end of the input. */
#define IDLE true     /* nothing: no buffer may be held */
#define PENDING false /* an unfinished line */

/* CASE(name, max_line, stop_after, IDLE or PENDING, input, frames...) */
#define CASE(name, max_line, stop_after, end, input, ...)                      \
  {                                                                            \
    name, max_line, stop_after, end, input, sizeof(input) - 1, {               \
      __VA_ARGS__                                                              \
    }                                                                          \
  }

static const struct framer_case cases[] = {
    CASE("LF", 16, 0, IDLE, "one\ntwo\n", LINE("one"), LINE("two")),
    CASE("CR LF", 16, 0, IDLE, "one\r\ntwo\r\n", LINE("one"), LINE("two")),
    CASE("CR NUL", 16, 0, IDLE, "one\r\0two\r\0", LINE("one"), LINE("two")),
    CASE("empty lines", 16, 0, IDLE, "\n\r\n\r\0", LINE(""), LINE(""),
         LINE("")),
    CASE("CR CR LF: the first CR is data", 16, 0, IDLE, "ab\r\r\n",
         LINE("ab\r")),
    CASE("bare CR followed by data", 16, 0, IDLE, "a\rb\n", LINE("a\rb")),
    CASE("CR first", 16, 0, IDLE, "\rx\n", LINE("\rx")),
    CASE("NUL not after CR is data", 16, 0, IDLE, "a\0b\n", LINE("a\0b")),
    CASE("LF CR", 16, 0, IDLE, "a\n\rb\n", LINE("a"), LINE("\rb")),
    CASE("CR CR NUL", 16, 0, IDLE, "\r\r\0", LINE("\r")),
    CASE("IAC command inside a line", 16, 0, IDLE, "he" IAC NOP "llo\n",
         LINE("hello")),
    CASE("IAC IAC is the data byte 255", 16, 0, IDLE, "a" IAC IAC "b\n",
         LINE("a" IAC "b")),
    CASE("IAC command between CR and LF", 16, 0, IDLE, "ab\r" IAC NOP "\n",
         LINE("ab")),
    CASE("IAC command between CR and NUL", 16, 0, IDLE, "ab\r" IAC NOP "\0",
         LINE("ab")),
    CASE("reply between CR and LF", 16, 0, IDLE, "ab\r" IAC DO "\x01\n",
         REPLY(IAC WONT "\x01"), LINE("ab")),
    CASE("reply inside a line", 16, 0, IDLE, "he" IAC DO "\x18llo\n",
         REPLY(IAC WONT "\x18"), LINE("hello")),
    CASE("IAC IAC after CR makes the CR data", 16, 0, IDLE, "a\r" IAC IAC "\n",
         LINE("a\r" IAC)),
    CASE("line end inside SB is not a line end", 16, 0, IDLE,
         "a" IAC SB "\x18x\ny" IAC SE "b\n", LINE("ab")),
    CASE("telnet only", 16, 0, IDLE, IAC WILL "\x1F" IAC DO "\x03",
         REPLY(IAC DONT "\x1F"), REPLY(IAC WONT "\x03")),
    CASE("several lines per chunk", 16, 0, IDLE, "one\ntwo\r\nthree\r\0four\n",
         LINE("one"), LINE("two"), LINE("three"), LINE("four")),
    CASE("bytes without a line end are no line", 16, 0, PENDING,
         "complete\npartial", LINE("complete")),
    CASE("no line end at all", 16, 0, PENDING, "abc", {0}),
    CASE("a pending CR is no line end", 16, 0, PENDING, "abc\r", {0}),
    CASE("an unfinished command holds no line", 16, 0, IDLE, "ab\n" IAC DO,
         LINE("ab")),

    /* Lengths, mostly with max_line 8. */
    CASE("exactly max_line", 8, 0, IDLE, "12345678\n", LINE("12345678")),
    CASE("exactly max_line, CR LF", 8, 0, IDLE, "12345678\r\n",
         LINE("12345678")),
    CASE("max_line + 1", 8, 0, IDLE, "123456789\nok\n", TOO_LONG, LINE("ok")),
    CASE("a very long line is reported once", 8, 0, IDLE,
         "123456789abcdefghijklmnopqrstuvwxyz\r\nok\n", TOO_LONG, LINE("ok")),
    CASE("a CR that turns out data counts", 8, 0, IDLE, "12345678\rx\n",
         TOO_LONG),
    CASE("a CR that turns out data, then CR LF", 8, 0, IDLE, "12345678\r\r\n",
         TOO_LONG),
    CASE("a CR inside fits", 8, 0, IDLE, "123456\rx\n", LINE("123456\rx")),
    CASE("telnet commands do not count", 8, 0, IDLE,
         "1234" IAC DO "\x01" IAC NOP "5678\n", REPLY(IAC WONT "\x01"),
         LINE("12345678")),
    CASE("IAC IAC counts as one byte", 8, 0, IDLE, "1234567" IAC IAC "\n",
         LINE("1234567" IAC)),
    CASE("IAC IAC past max_line", 8, 0, IDLE, "12345678" IAC IAC "\n",
         TOO_LONG),
    CASE("two long lines, each reported", 8, 0, IDLE,
         "aaaaaaaaa\nbbbbbbbbbbbb\r\0cc\n", TOO_LONG, TOO_LONG, LINE("cc")),
    CASE("a long line ended by CR NUL", 8, 0, IDLE, "123456789\r\0", TOO_LONG),
    CASE("a reply while discarding", 8, 0, IDLE,
         "123456789" IAC DO "\x01zz\nok\n", TOO_LONG, REPLY(IAC WONT "\x01"),
         LINE("ok")),
    CASE("a long line without its end", 8, 0, IDLE, "123456789abc", TOO_LONG),
    CASE("max_line 1", 1, 0, IDLE, "a\nbc\n\n", LINE("a"), TOO_LONG, LINE("")),

    /* The handler stops the framer: nothing after that frame. */
    CASE("stop after the first line", 16, 1, IDLE, "one\ntwo\nthree\n",
         LINE("one")),
    CASE("stop after the second line", 16, 2, IDLE, "one\ntwo\nthree\n",
         LINE("one"), LINE("two")),
    CASE("stop on a reply", 16, 1, IDLE, IAC DO "\x01one\n",
         REPLY(IAC WONT "\x01")),
    CASE("stop on a long line", 4, 1, IDLE, "abcdef\nok\n", TOO_LONG),
    CASE("stop with a line pending", 16, 1, IDLE, "one\ntw", LINE("one")),
    CASE("stop on a reply inside a line", 16, 1, PENDING,
         "ab" IAC DO "\x01xy\n", REPLY(IAC WONT "\x01")),
};

/* Frames as text, so that a difference prints readably; the length before
 * each line makes the log unambiguous whatever bytes the line holds. */
static void log_frame(struct byte_buffer *log, const struct frame *frame) {
  char header[32];
  switch (frame->kind) {
  case FRAME_LINE:
    snprintf(header, sizeof header, "LINE%zu(", frame->length);
    buffer_append_string(log, header);
    buffer_append(log, frame->bytes, frame->length);
    buffer_append_string(log, ")");
    break;
  case FRAME_TOO_LONG:
    buffer_append_string(log, "TOO_LONG ");
    break;
  case FRAME_TELNET_REPLY:
    snprintf(header, sizeof header, "REPLY%zu(", frame->length);
    buffer_append_string(log, header);
    buffer_append(log, frame->bytes, frame->length);
    buffer_append_string(log, ")");
    break;
  }
}

static void log_expected(struct byte_buffer *log, const struct framer_case *c) {
  buffer_clear(log);
  for (size_t i = 0; i < MAX_FRAMES; i++) {
    const struct frame *frame = &c->frames[i];
    if (frame->kind == FRAME_LINE && frame->bytes == NULL)
      break;
    log_frame(log, frame);
  }
}

/* Whether the framer keeps to its bound: never more than max_line bytes of
 * line, in a buffer of at most max_line + 1 (room for a CR that turns out to
 * be data, which then makes the line too long and frees it). */
static bool holds_at_most_max_line(const struct line_framer *framer) {
  return framer->length <= framer->max_line &&
         framer->capacity <= framer->max_line + 1 &&
         (framer->partial != NULL || framer->capacity == 0);
}

struct recorder {
  struct byte_buffer log;
  size_t frames;
  size_t stop_after;
  const struct line_framer *framer;
  bool bound_kept; /* holds_at_most_max_line at every frame */
};

static bool record_frame(void *context, const struct frame *frame) {
  struct recorder *recorder = context;
  log_frame(&recorder->log, frame);
  recorder->bound_kept &= holds_at_most_max_line(recorder->framer);
  recorder->frames++;
  return recorder->frames != recorder->stop_after;
}

/* Feeds the case in chunks of the given lengths (they add up to the input
 * length) and checks the framer's state along the way; the frames are left
 * in recorder->log. Returns false when a check failed. */
static bool feed(const struct framer_case *c, const size_t *chunk_lengths,
                 size_t chunk_count, struct recorder *recorder) {
  struct line_framer framer;
  line_framer_init(&framer, c->max_line);
  buffer_clear(&recorder->log);
  recorder->frames = 0;
  recorder->stop_after = c->stop_after;
  recorder->framer = &framer;
  recorder->bound_kept = true;

  bool ok = true;
  bool stopped = false;
  size_t offset = 0;
  for (size_t k = 0; k < chunk_count && !stopped; k++) {
    enum framer_status status = line_framer_push(
        &framer, c->input + offset, chunk_lengths[k], record_frame, recorder);
    offset += chunk_lengths[k];
    stopped = status == FRAMER_STOPPED;
    ok &= CHECK(status == FRAMER_DONE || stopped);
    ok &= CHECK(holds_at_most_max_line(&framer));
  }
  ok &= CHECK(recorder->bound_kept);
  ok &= CHECK(stopped == (c->stop_after != 0));
  if (c->holds_nothing_at_end) /* nothing pending: no buffer */
    ok &= CHECK(framer.partial == NULL && framer.length == 0);
  line_framer_release(&framer);
  ok &= CHECK(framer.partial == NULL);
  return ok;
}

static void check_chunking(const struct framer_case *c,
                           const size_t *chunk_lengths, size_t chunk_count,
                           const char *how, struct recorder *recorder,
                           const struct byte_buffer *expected) {
  bool ok = feed(c, chunk_lengths, chunk_count, recorder);
  ok &= CHECK_EQ_BYTES(recorder->log.bytes, recorder->log.length,
                       expected->bytes, expected->length);
  if (!ok) {
    fprintf(stderr, "  case \"%s\", fed %s:", c->name, how);
    for (size_t k = 0; k < chunk_count; k++)
      fprintf(stderr, " %zu", chunk_lengths[k]);
    fputc('\n', stderr);
  }
}

static void test_cases(void) {
  struct recorder recorder = {0};
  struct byte_buffer expected = {0};
  struct test_random random = {0x5EED5EED5EED5EEDULL};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct framer_case *c = &cases[i];
    size_t n = c->input_length;
    size_t *chunks = calloc(n + 2, sizeof *chunks);
    log_expected(&expected, c);

    chunks[0] = n;
    check_chunking(c, chunks, 1, "whole", &recorder, &expected);

    for (size_t split = 0; split <= n; split++) {
      chunks[0] = split;
      chunks[1] = n - split;
      check_chunking(c, chunks, 2, "in two", &recorder, &expected);
    }

    for (size_t k = 0; k < n; k++)
      chunks[k] = 1;
    check_chunking(c, chunks, n, "byte by byte", &recorder, &expected);

    /* Random chunks of 0 to 5 bytes (an empty read must change nothing). */
    for (int round = 0; round < 200; round++) {
      size_t count = 0;
      size_t left = n;
      while (left > 0 && count < n + 1) {
        size_t length = random_below(&random, 6);
        if (length > left)
          length = left;
        chunks[count++] = length;
        left -= length;
      }
      if (left > 0)
        chunks[count++] = left;
      check_chunking(c, chunks, count, "in random chunks", &recorder,
                     &expected);
    }
    free(chunks);
  }
  buffer_free(&recorder.log);
  buffer_free(&expected);
}

/* Byte by byte through a long line: once it is reported, the framer drops
 * its buffer and holds nothing more however much more of the line comes,
 * and it reports the line only once. */
static void test_long_line_holds_nothing(void) {
  struct recorder recorder = {0};
  struct line_framer framer;
  line_framer_init(&framer, 8);
  recorder.framer = &framer;
  recorder.bound_kept = true;
  for (int i = 0; i < 10000; i++) {
    char byte = (char)('a' + i % 26);
    line_framer_push(&framer, &byte, 1, record_frame, &recorder);
    if (i >= 8) { /* the 9th byte made it too long */
      if (!CHECK(framer.partial == NULL && framer.length == 0)) {
        fprintf(stderr, "  still holding a buffer after byte %d\n", i + 1);
        break;
      }
    }
  }
  CHECK(recorder.bound_kept);
  line_framer_push(&framer, INPUT("\r\nok\n"), record_frame, &recorder);
  CHECK_EQ_TEXT(recorder.log, "TOO_LONG LINE2(ok)");
  CHECK(framer.partial == NULL);
  line_framer_release(&framer);
  buffer_free(&recorder.log);
}

/* A line that straddles reads is kept until its end, then the buffer is
 * freed: an idle connection holds nothing. */
static void test_idle_holds_nothing(void) {
  struct recorder recorder = {0};
  struct line_framer framer;
  line_framer_init(&framer, 4096);
  recorder.framer = &framer;
  line_framer_push(&framer, INPUT("hel"), record_frame, &recorder);
  CHECK(framer.partial != NULL && framer.length == 3);
  line_framer_push(&framer, INPUT("lo\r"), record_frame, &recorder);
  CHECK(recorder.log.length == 0); /* the CR alone ends nothing */
  line_framer_push(&framer, INPUT("\n"), record_frame, &recorder);
  CHECK_EQ_TEXT(recorder.log, "LINE5(hello)");
  CHECK(framer.partial == NULL && framer.length == 0);
  line_framer_release(&framer);
  buffer_free(&recorder.log);
}

/* Long lines that grow the buffer several times, in chunks of many sizes,
 * come out whole and intact. */
static void test_big_lines(void) {
  enum { MAX_LINE = 16384, LENGTH = 10000 };
  char *input = malloc(LENGTH + 1);
  for (size_t i = 0; i < LENGTH; i++)
    input[i] = (char)(' ' + i % 95);
  input[LENGTH] = '\n';
  struct byte_buffer expected = {0};
  char header[32];
  snprintf(header, sizeof header, "LINE%d(", LENGTH);
  buffer_append_string(&expected, header);
  buffer_append(&expected, input, LENGTH);
  buffer_append_string(&expected, ")");

  static const size_t chunk_sizes[] = {1, 7, 64, 65, 1000, 4096, LENGTH + 1};
  for (size_t s = 0; s < sizeof chunk_sizes / sizeof chunk_sizes[0]; s++) {
    struct recorder recorder = {0};
    struct line_framer framer;
    line_framer_init(&framer, MAX_LINE);
    recorder.framer = &framer;
    recorder.bound_kept = true;
    for (size_t offset = 0; offset < LENGTH + 1; offset += chunk_sizes[s]) {
      size_t length = chunk_sizes[s];
      if (length > LENGTH + 1 - offset)
        length = LENGTH + 1 - offset;
      CHECK(line_framer_push(&framer, input + offset, length, record_frame,
                             &recorder) == FRAMER_DONE);
    }
    if (!CHECK_EQ_BYTES(recorder.log.bytes, recorder.log.length, expected.bytes,
                        expected.length))
      fprintf(stderr, "  in chunks of %zu\n", chunk_sizes[s]);
    CHECK(recorder.bound_kept);
    CHECK(framer.partial == NULL);
    line_framer_release(&framer);
    buffer_free(&recorder.log);
  }
  buffer_free(&expected);
  free(input);
}

/* A stop keeps the framer where it stopped: the line begun before a telnet
 * reply inside it, and a CR waiting for its LF. Pushing the rest of the
 * chunk from `consumed` goes on as if there had been no stop (with
 * --redis, a model stops while an answer waits for the sender's lines). */
static bool stop_once(void *context, const struct frame *frame) {
  struct byte_buffer *log = context;
  log_frame(log, frame);
  return frame->kind != FRAME_TELNET_REPLY;
}

static void resume_after_stop(void) {
  static const char input[] = "ab\r" IAC DO "\x01\nxy\n";
  size_t length = sizeof input - 1;
  struct byte_buffer log = {0}, expected = {0};
  struct line_framer framer;
  line_framer_init(&framer, 16);
  size_t offset = 0;
  for (int pushes = 0; offset < length && pushes < 10; pushes++) {
    enum framer_status status = line_framer_push(
        &framer, input + offset, length - offset, stop_once, &log);
    CHECK(status == FRAMER_DONE || status == FRAMER_STOPPED);
    offset = status == FRAMER_STOPPED ? offset + framer.consumed : length;
  }
  struct frame reply = {FRAME_TELNET_REPLY, IAC WONT "\x01", 3};
  struct frame ab = {FRAME_LINE, "ab", 2}, xy = {FRAME_LINE, "xy", 2};
  log_frame(&expected, &reply);
  log_frame(&expected, &ab);
  log_frame(&expected, &xy);
  CHECK_EQ_BYTES(log.bytes, log.length, expected.bytes, expected.length);
  line_framer_release(&framer);
  buffer_free(&log);
  buffer_free(&expected);
}

int main(void) {
  resume_after_stop();
  test_cases();
  test_long_line_holds_nothing();
  test_idle_holds_nothing();
  test_big_lines();
  return check_report();
}
