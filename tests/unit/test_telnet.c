/* telnet_filter_byte: each command path of docs/PROTOCOL.md section 2.
 *
 * DO is refused with WONT and WILL with DONT; WONT and DONT get no answer;
 * IAC SB ... IAC SE is swallowed whole, IAC IAC inside it included; IAC IAC
 * is the data byte 255; IAC with any other byte drops both; a client that
 * sends no IAC never gets one back. Each input is fed one byte per call to a
 * fresh (zeroed) filter, the way the framer uses it, and both the data that
 * comes out and the replies are compared with what the spec says. */
#include "check.h"
#include "telnet.h"

#define IAC "\xFF"
#define DONT "\xFE"
#define DO "\xFD"
#define WONT "\xFC"
#define WILL "\xFB"
#define SB "\xFA"
#define SE "\xF0"
#define NOP "\xF1"
#define IP "\xF4"
#define TIMING_MARK "\x06"

struct filtered {
  struct byte_buffer data;
  struct byte_buffer replies;
  size_t skipped;
};

static void filter_all(const char *input, size_t length, struct filtered *out) {
  struct telnet_filter filter = {0};
  buffer_clear(&out->data);
  buffer_clear(&out->replies);
  out->skipped = 0;
  for (size_t i = 0; i < length; i++) {
    unsigned char reply[3] = {0};
    unsigned char byte = (unsigned char)input[i];
    switch (telnet_filter_byte(&filter, byte, reply)) {
    case TELNET_DATA:
      /* A data byte is the input byte itself: IAC IAC yields 255, which the
       * second IAC already is. */
      buffer_append(&out->data, &byte, 1);
      break;
    case TELNET_REPLY:
      buffer_append(&out->replies, reply, 3);
      break;
    case TELNET_SKIP:
      out->skipped++;
      break;
    }
  }
}

struct telnet_case {
  const char *input;
  size_t input_length;
  const char *data;
  size_t data_length;
  const char *replies;
  size_t replies_length;
};

#define CASE(input, data, replies)                                             \
  {                                                                            \
    input, sizeof(input) - 1, data, sizeof(data) - 1, replies,                 \
        sizeof(replies) - 1                                                    \
  }

static const struct telnet_case cases[] = {
    CASE("hello", "hello", ""),
    CASE("", "", ""),
    /* Requests are refused, RFC 1143: DO -> WONT, WILL -> DONT. */
    CASE(IAC DO "\x01", "", IAC WONT "\x01"),
    CASE(IAC WILL "\x03", "", IAC DONT "\x03"),
    CASE(IAC DO "\x00", "", IAC WONT "\x00"),
    /* The option byte is any byte, 255 included: it is not a new IAC. */
    CASE(IAC DO IAC "a", "a", IAC WONT IAC),
    CASE(IAC WILL IAC IAC IAC, IAC, IAC DONT IAC),
    /* Refusals of ours are not answered. */
    CASE(IAC WONT "\x01", "", ""),
    CASE(IAC DONT "\x01", "", ""),
    CASE("x" IAC WONT "\x18y" IAC DONT "\x18z", "xyz", ""),
    /* PuTTY at connect: several requests in a row, each answered. */
    CASE(IAC WILL "\x1F" IAC WILL "\x20" IAC DO "\x01" IAC DO "\x03x", "x",
         IAC DONT "\x1F" IAC DONT "\x20" IAC WONT "\x01" IAC WONT "\x03"),
    /* Ctrl-C in BSD telnet: IAC IP, then IAC DO TIMING-MARK. */
    CASE("ab" IAC IP IAC DO TIMING_MARK "cd", "abcd", IAC WONT TIMING_MARK),
    /* IAC IAC is the data byte 255. */
    CASE(IAC IAC, IAC, ""),
    CASE("a" IAC IAC "b", "a" IAC "b", ""),
    CASE(IAC IAC IAC IAC, IAC IAC, ""),
    CASE(IAC IAC IAC DO "\x05", IAC, IAC WONT "\x05"),
    /* Two-byte commands are dropped. */
    CASE("a" IAC NOP "b", "ab", ""),
    CASE(IAC SE "x", "x", ""), /* SE without SB */
    /* IAC followed by a byte that is no command: both dropped. */
    CASE("a" IAC "bc", "ac", ""),
    CASE(IAC "\r\n", "\n", ""),
    CASE(IAC "\x00z", "z", ""),
    /* Subnegotiation: everything up to IAC SE is swallowed. */
    CASE("a" IAC SB "\x18\x01" IAC SE "b", "ab", ""),
    CASE(IAC SB "\x1F\x00\x50\x00\x18" IAC SE "ok", "ok", ""),
    /* IAC IAC inside SB is a data byte of the subnegotiation, not an end. */
    CASE(IAC SB "\x18" IAC IAC SE "still inside" IAC SE "out", "out", ""),
    /* Requests and line ends inside SB are part of it: no reply. */
    CASE(IAC SB IAC DO "\x01\r\n" IAC SE "x", "x", ""),
    /* A malformed IAC inside SB: keep discarding until IAC SE. */
    CASE(IAC SB "\x18" IAC "zmore" IAC SE "y", "y", ""),
    /* Unfinished sequences at the end: nothing comes out yet. */
    CASE("a" IAC, "a", ""),
    CASE("a" IAC DO, "a", ""),
    CASE("a" IAC SB "\x18", "a", ""),
};

static void test_cases(void) {
  struct filtered out = {0};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct telnet_case *c = &cases[i];
    filter_all(c->input, c->input_length, &out);
    bool ok = CHECK_EQ_BYTES(out.data.bytes, out.data.length, c->data,
                             c->data_length);
    ok &= CHECK_EQ_BYTES(out.replies.bytes, out.replies.length, c->replies,
                         c->replies_length);
    /* Every input byte is data, dropped, or dropped with a reply. */
    ok &= CHECK(out.data.length + out.skipped + out.replies.length / 3 ==
                c->input_length);
    if (!ok) {
      fprintf(stderr, "  case %zu, input ", i);
      check_print_bytes(stderr, c->input, c->input_length);
      fputc('\n', stderr);
    }
  }
  buffer_free(&out.data);
  buffer_free(&out.replies);
}

/* IAC, then any byte that is not IAC, WILL, WONT, DO, DONT or SB: both bytes
 * are dropped and the filter is back to data. */
static void test_every_two_byte_command(void) {
  struct filtered out = {0};
  for (unsigned command = 0; command <= 0xFF; command++) {
    if (command == TELNET_SB || command >= TELNET_WILL)
      continue; /* WILL, WONT, DO, DONT and IAC itself */
    char input[4] = {(char)TELNET_IAC, (char)command, 'o', 'k'};
    filter_all(input, sizeof input, &out);
    if (!CHECK_EQ_TEXT(out.data, "ok"))
      fprintf(stderr, "  after IAC 0x%02X\n", command);
    CHECK(out.replies.length == 0);
  }
  buffer_free(&out.data);
  buffer_free(&out.replies);
}

/* Every option of DO and WILL is refused with the same option; WONT and
 * DONT never get an answer. */
static void test_every_option(void) {
  for (unsigned option = 0; option <= 0xFF; option++) {
    for (unsigned command = TELNET_WILL; command <= TELNET_DONT; command++) {
      struct telnet_filter filter = {0};
      unsigned char reply[3] = {0};
      CHECK(telnet_filter_byte(&filter, TELNET_IAC, reply) == TELNET_SKIP);
      CHECK(telnet_filter_byte(&filter, (unsigned char)command, reply) ==
            TELNET_SKIP);
      enum telnet_result result =
          telnet_filter_byte(&filter, (unsigned char)option, reply);
      if (command == TELNET_DO || command == TELNET_WILL) {
        unsigned char expected[3] = {
            TELNET_IAC, command == TELNET_DO ? TELNET_WONT : TELNET_DONT,
            (unsigned char)option};
        CHECK(result == TELNET_REPLY);
        CHECK_EQ_BYTES(reply, 3, expected, 3);
      } else {
        CHECK(result == TELNET_SKIP);
      }
      /* And the filter is back to data. */
      CHECK(telnet_filter_byte(&filter, 'x', reply) == TELNET_DATA);
    }
  }
}

/* A client that sends no IAC never receives one: no byte but IAC starts a
 * command, in any order. */
static void test_no_iac_no_reply(void) {
  struct telnet_filter filter = {0};
  unsigned char reply[3];
  for (int round = 0; round < 2; round++) {
    for (unsigned byte = 0; byte < TELNET_IAC; byte++) {
      if (!CHECK(telnet_filter_byte(&filter, (unsigned char)byte, reply) ==
                 TELNET_DATA))
        fprintf(stderr, "  byte 0x%02X\n", byte);
    }
  }
}

int main(void) {
  test_cases();
  test_every_two_byte_command();
  test_every_option();
  test_no_iac_no_reply();
  return check_report();
}
