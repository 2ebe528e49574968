/* utf8_validate, is_control_byte and the control characters.
 *
 * First the classes of Markus Kuhn's UTF-8-test.txt, each case by hand:
 * boundaries of every sequence length, overlong forms, surrogates, values
 * above U+10FFFF, lone continuation and start bytes, truncated sequences at
 * the end and in the middle, impossible bytes, and character counts. Then
 * every sequence of one to three bytes, and four-byte sequences built from
 * the edge values of each byte, against a reference decoder written from the
 * definition (decode, then refuse what is too long, a surrogate or too big),
 * which shares nothing with the validator's range table. */
#include "check.h"
#include "utf8.h"

struct utf8_case {
  const char *bytes;
  size_t length;
  bool valid;
  size_t characters; /* when valid */
};

/* sizeof - 1, so that literals may hold NUL bytes. */
#define VALID(literal, characters)                                             \
  { literal, sizeof(literal) - 1, true, characters }
#define INVALID(literal)                                                       \
  { literal, sizeof(literal) - 1, false, 0 }

static const struct utf8_case cases[] = {
    VALID("", 0),
    VALID("a", 1),
    VALID("hello", 5),
    VALID("\0", 1),   /* NUL is valid UTF-8 (the session rejects it) */
    VALID("\x7F", 1), /* U+007F, the last one-byte character */

    /* Kuhn 1: a Greek word, 5 characters in 11 bytes. */
    VALID("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", 5),

    /* Kuhn 2.1 and 2.2: the first and last character of each length. */
    VALID("\xC2\x80", 1),                /* U+0080 */
    VALID("\xDF\xBF", 1),                /* U+07FF */
    VALID("\xE0\xA0\x80", 1),            /* U+0800 */
    VALID("\xEF\xBF\xBF", 1),            /* U+FFFF */
    VALID("\xF0\x90\x80\x80", 1),        /* U+10000 */
    VALID("\xF4\x8F\xBF\xBF", 1),        /* U+10FFFF */
    INVALID("\xF7\xBF\xBF\xBF"),         /* U+1FFFFF: four bytes, but too big */
    INVALID("\xF8\x88\x80\x80\x80"),     /* five-byte forms are gone */
    INVALID("\xFB\xBF\xBF\xBF\xBF"),     /* */
    INVALID("\xFC\x84\x80\x80\x80\x80"), /* and six-byte ones */
    INVALID("\xFD\xBF\xBF\xBF\xBF\xBF"), /* */

    /* Kuhn 2.3: other boundaries. */
    VALID("\xED\x9F\xBF", 1), /* U+D7FF, just below the surrogates */
    VALID("\xEE\x80\x80", 1), /* U+E000, just above them */
    VALID("\xEF\xBF\xBD", 1), /* U+FFFD */

    /* Kuhn 5.3: noncharacters are valid UTF-8. */
    VALID("\xEF\xBF\xBE", 1), /* U+FFFE */
    VALID("\xEF\xB7\x90", 1), /* U+FDD0 */

    /* Kuhn 3.1: unexpected continuation bytes (every one is checked alone in
     * test_lone_bytes). */
    INVALID("\x80"),
    INVALID("\xBF"),
    INVALID("\x80\xBF"),
    INVALID("\x80\xBF\x80"),
    INVALID("a\x80"),
    INVALID("\xC3\xA9\x80"), /* one continuation too many */

    /* Kuhn 3.2: start bytes followed by a space instead of a continuation. */
    INVALID("\xC2 "),
    INVALID("\xE0 "),
    INVALID("\xF0 "),

    /* Kuhn 3.3: the last continuation byte missing, at the end. */
    INVALID("\xC2"),
    INVALID("\xDF"),
    INVALID("\xE0\xA0"),
    INVALID("\xEF\xBF"),
    INVALID("\xF0\x90\x80"),
    INVALID("\xF4\x8F\xBF"),
    INVALID("ab\xE2\x82"), /* a euro sign cut short */
    INVALID("\xE2"),

    /* Truncated in the middle: the next character starts too early. */
    INVALID("\xC3z"),
    INVALID("a\xE2\x82z"),
    INVALID("\xF0\x9F\x98x"),
    INVALID("\xE2\x82\xE2\x82\xAC"),
    INVALID("\xF0\x9F\xE2\x82\xAC"),

    /* Kuhn 3.4: all the truncated sequences of 3.3 in a row. */
    INVALID("\xC2\xE0\xA0\xF0\x90\x80\xDF\xEF\xBF\xF4\x8F\xBF"),

    /* Kuhn 3.5: bytes that never appear. */
    INVALID("\xFE"),
    INVALID("\xFF"),
    INVALID("\xFE\xFE\xFF\xFF"),

    /* Kuhn 4.1: "/" written overlong. */
    INVALID("\xC0\xAF"),
    INVALID("\xE0\x80\xAF"),
    INVALID("\xF0\x80\x80\xAF"),
    INVALID("\xF8\x80\x80\x80\xAF"),
    INVALID("\xFC\x80\x80\x80\x80\xAF"),

    /* Kuhn 4.2: the largest overlong of each length. */
    INVALID("\xC1\xBF"),
    INVALID("\xE0\x9F\xBF"),
    INVALID("\xF0\x8F\xBF\xBF"),
    INVALID("\xF8\x87\xBF\xBF\xBF"),
    INVALID("\xFC\x83\xBF\xBF\xBF\xBF"),

    /* Kuhn 4.3: NUL written overlong. */
    INVALID("\xC0\x80"),
    INVALID("\xE0\x80\x80"),
    INVALID("\xF0\x80\x80\x80"),
    INVALID("\xF8\x80\x80\x80\x80"),
    INVALID("\xFC\x80\x80\x80\x80\x80"),

    /* Kuhn 5.1: single UTF-16 surrogates. */
    INVALID("\xED\xA0\x80"), /* U+D800 */
    INVALID("\xED\xAD\xBF"), /* U+DB7F */
    INVALID("\xED\xAE\x80"), /* U+DB80 */
    INVALID("\xED\xAF\xBF"), /* U+DBFF */
    INVALID("\xED\xB0\x80"), /* U+DC00 */
    INVALID("\xED\xBE\x80"), /* U+DF80 */
    INVALID("\xED\xBF\xBF"), /* U+DFFF */

    /* Kuhn 5.2: surrogate pairs (CESU-8), not UTF-8. */
    INVALID("\xED\xA0\x80\xED\xB0\x80"),
    INVALID("\xED\xAF\xBF\xED\xBF\xBF"),

    /* Above U+10FFFF. */
    INVALID("\xF4\x90\x80\x80"), /* U+110000 */
    INVALID("\xF4\xBF\xBF\xBF"),
    INVALID("\xF5\x80\x80\x80"),

    /* A bad character after good ones is still found. */
    INVALID("hello \xC0\x80 world"),
    INVALID("\xE2\x82\xAC\xED\xA0\x80"),

    /* Character counts of mixed text. */
    /* a, e with acute, euro sign, G clef */
    VALID("a\xC3\xA9\xE2\x82\xAC\xF0\x9D\x84\x9E", 4),
    VALID("\xF0\x9F\x98\x80\xF0\x9F\x98\x80\xF0\x9F\x98\x80", 3),
    VALID("caf\xC3\xA9 \xE2\x82\xAC!", 7),
};

static void test_cases(void) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct utf8_case *c = &cases[i];
    size_t characters = (size_t)-1;
    bool valid = utf8_validate(c->bytes, c->length, &characters);
    if (!CHECK(valid == c->valid)) {
      fprintf(stderr, "  case %zu: ", i);
      check_print_bytes(stderr, c->bytes, c->length);
      fprintf(stderr, " should be %s\n", c->valid ? "valid" : "invalid");
      continue;
    }
    if (c->valid && !CHECK(characters == c->characters))
      fprintf(stderr, "  case %zu: %zu characters, expected %zu\n", i,
              characters, c->characters);
    /* The count is optional. */
    CHECK(utf8_validate(c->bytes, c->length, NULL) == c->valid);
  }
}

/* Every byte alone, and every byte that cannot start a character followed
 * by a space (Kuhn 3.1, 3.2, 3.5). */
static void test_lone_bytes(void) {
  for (unsigned byte = 0; byte <= 0xFF; byte++) {
    char alone[1] = {(char)byte};
    char then_space[2] = {(char)byte, ' '};
    bool ascii = byte < 0x80;
    CHECK(utf8_validate(alone, 1, NULL) == ascii);
    CHECK(utf8_validate(then_space, 2, NULL) == ascii);
  }
}

/* 32 characters of each length: the longest user name, in bytes. */
static void test_long_counts(void) {
  static const char *const characters[] = {"a", "\xC3\xA9", "\xE2\x82\xAC",
                                           "\xF0\x9F\x98\x80"};
  for (size_t k = 0; k < 4; k++) {
    char text[32 * 4];
    size_t length = 0;
    for (int i = 0; i < 32; i++) {
      memcpy(text + length, characters[k], k + 1);
      length += k + 1;
    }
    size_t count = 0;
    CHECK(utf8_validate(text, length, &count));
    CHECK(count == 32);
    /* Cutting the last character short makes it invalid (for k > 0). */
    CHECK(utf8_validate(text, length - 1, NULL) == (k == 0));
  }
}

/* Decodes exactly one character from the definition of UTF-8: returns true
 * when the bytes are one well-formed character and nothing more. */
static bool reference_is_one_character(const unsigned char *s, size_t length) {
  size_t expected_length;
  uint32_t code_point;
  if (s[0] < 0x80) {
    expected_length = 1;
    code_point = s[0];
  } else if ((s[0] & 0xE0) == 0xC0) {
    expected_length = 2;
    code_point = s[0] & 0x1F;
  } else if ((s[0] & 0xF0) == 0xE0) {
    expected_length = 3;
    code_point = s[0] & 0x0F;
  } else if ((s[0] & 0xF8) == 0xF0) {
    expected_length = 4;
    code_point = s[0] & 0x07;
  } else {
    return false;
  }
  if (length != expected_length)
    return false;
  for (size_t i = 1; i < length; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return false;
    code_point = (code_point << 6) | (s[i] & 0x3F);
  }
  static const uint32_t smallest[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < smallest[length])
    return false; /* overlong */
  if (code_point >= 0xD800 && code_point <= 0xDFFF)
    return false; /* surrogate */
  return code_point <= 0x10FFFF;
}

/* Whether bytes are valid UTF-8 does not depend on how they are split into
 * characters, so a sequence that is not one character may still be valid as
 * several (for instance two ASCII bytes). The reference accepts exactly the
 * sequences that are a concatenation of well-formed characters. */
static bool reference_is_valid(const unsigned char *s, size_t length) {
  if (length == 0)
    return true;
  for (size_t first = 1; first <= length && first <= 4; first++) {
    if (reference_is_one_character(s, first) &&
        reference_is_valid(s + first, length - first))
      return true;
  }
  return false;
}

static void check_against_reference(const unsigned char *s, size_t length,
                                    unsigned long *mismatches) {
  bool expected = reference_is_valid(s, length);
  if (utf8_validate((const char *)s, length, NULL) == expected)
    return;
  if (++*mismatches <= 10) { /* a few examples are enough */
    fprintf(stderr, "  reference says %s for ", expected ? "valid" : "invalid");
    check_print_bytes(stderr, s, length);
    fputc('\n', stderr);
  }
}

static void test_against_reference(void) {
  unsigned long mismatches = 0;
  unsigned char s[4];
  for (unsigned a = 0; a <= 0xFF; a++) {
    s[0] = (unsigned char)a;
    check_against_reference(s, 1, &mismatches);
    for (unsigned b = 0; b <= 0xFF; b++) {
      s[1] = (unsigned char)b;
      check_against_reference(s, 2, &mismatches);
      for (unsigned c = 0; c <= 0xFF; c++) {
        s[2] = (unsigned char)c;
        check_against_reference(s, 3, &mismatches);
      }
    }
  }
  /* Four bytes: every lead from F0 to FF, and for the others the values at
   * the edge of every range the validator distinguishes. */
  static const unsigned char edges[] = {0x00, 0x41, 0x7F, 0x80, 0x8F,
                                        0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                        0xC2, 0xE0, 0xF0, 0xF4, 0xFF};
  size_t edge_count = sizeof edges;
  for (unsigned a = 0xF0; a <= 0xFF; a++) {
    s[0] = (unsigned char)a;
    for (size_t b = 0; b < edge_count; b++) {
      for (size_t c = 0; c < edge_count; c++) {
        for (size_t d = 0; d < edge_count; d++) {
          s[1] = edges[b];
          s[2] = edges[c];
          s[3] = edges[d];
          check_against_reference(s, 4, &mismatches);
        }
      }
    }
  }
  CHECK(mismatches == 0);
}

static void test_control_bytes(void) {
  for (unsigned byte = 0; byte <= 0xFF; byte++) {
    bool expected = byte < 0x20 || byte == 0x7F;
    if (!CHECK(is_control_byte((unsigned char)byte) == expected))
      fprintf(stderr, "  byte 0x%02X\n", byte);
  }
}

/* The control characters of docs/PROTOCOL.md section 4, written out as the
 * contract lists them. */
static bool reference_is_control(uint32_t code_point) {
  return code_point < 0x20 || code_point == 0x7F ||
         (code_point >= 0x80 && code_point <= 0x9F) ||
         (code_point >= 0x202A && code_point <= 0x202E) ||
         (code_point >= 0x2066 && code_point <= 0x2069);
}

/* Encodes a code point (not a surrogate, at most U+10FFFF); returns its
 * length. */
static size_t encode(uint32_t code_point, unsigned char out[4]) {
  if (code_point < 0x80) {
    out[0] = (unsigned char)code_point;
    return 1;
  }
  if (code_point < 0x800) {
    out[0] = (unsigned char)(0xC0 | code_point >> 6);
    out[1] = (unsigned char)(0x80 | (code_point & 0x3F));
    return 2;
  }
  if (code_point < 0x10000) {
    out[0] = (unsigned char)(0xE0 | code_point >> 12);
    out[1] = (unsigned char)(0x80 | (code_point >> 6 & 0x3F));
    out[2] = (unsigned char)(0x80 | (code_point & 0x3F));
    return 3;
  }
  out[0] = (unsigned char)(0xF0 | code_point >> 18);
  out[1] = (unsigned char)(0x80 | (code_point >> 12 & 0x3F));
  out[2] = (unsigned char)(0x80 | (code_point >> 6 & 0x3F));
  out[3] = (unsigned char)(0x80 | (code_point & 0x3F));
  return 4;
}

/* Every code point, alone and between other characters of every length,
 * with and without TAB allowed: utf8_has_control finds exactly the
 * contract's control characters, and is_control_character agrees. */
static void test_control_characters(void) {
  unsigned long mismatches = 0;
  for (uint32_t code_point = 0; code_point <= 0x10FFFF; code_point++) {
    if (code_point >= 0xD800 && code_point <= 0xDFFF)
      continue;
    bool control = reference_is_control(code_point);
    unsigned char character[4], text[16] = "a\xC3\xA9";
    size_t alone = encode(code_point, character);
    memcpy(text + 3, character, alone);
    size_t length = 3 + alone;
    memcpy(text + length, "\xE2\x82\xAC\xF0\x9F\x98\x80z", 8);
    bool ok =
        utf8_validate((const char *)text, length + 8, NULL) &&
        is_control_character(code_point) == control &&
        utf8_has_control((const char *)character, alone, false) == control &&
        utf8_has_control((const char *)character, alone, true) ==
            (control && code_point != '\t') &&
        utf8_has_control((const char *)text, length + 8, false) == control &&
        utf8_has_control((const char *)text, length + 8, true) ==
            (control && code_point != '\t');
    if (!ok && ++mismatches <= 10)
      fprintf(stderr, "  U+%04lX\n", (unsigned long)code_point);
  }
  CHECK(mismatches == 0);
  /* The edges by hand, as they come on the wire. */
  CHECK(utf8_has_control("\xC2\x80", 2, true));      /* U+0080 */
  CHECK(utf8_has_control("\xC2\x85", 2, true));      /* U+0085, NEL */
  CHECK(utf8_has_control("\xC2\x9B", 2, true));      /* U+009B, CSI */
  CHECK(utf8_has_control("\xC2\x9F", 2, true));      /* U+009F */
  CHECK(!utf8_has_control("\xC2\xA0", 2, true));     /* U+00A0, a space */
  CHECK(!utf8_has_control("\xE2\x80\xA9", 3, true)); /* U+2029 */
  CHECK(utf8_has_control("\xE2\x80\xAA", 3, true));  /* U+202A, LRE */
  CHECK(utf8_has_control("\xE2\x80\xAE", 3, true));  /* U+202E, RLO */
  CHECK(!utf8_has_control("\xE2\x80\xAF", 3, true)); /* U+202F */
  CHECK(!utf8_has_control("\xE2\x81\xA5", 3, true)); /* U+2065 */
  CHECK(utf8_has_control("\xE2\x81\xA6", 3, true));  /* U+2066, LRI */
  CHECK(utf8_has_control("\xE2\x81\xA9", 3, true));  /* U+2069, PDI */
  CHECK(!utf8_has_control("\xE2\x81\xAA", 3, true)); /* U+206A */
  CHECK(utf8_has_control("a\tb", 3, false));
  CHECK(!utf8_has_control("a\tb", 3, true));
  CHECK(!utf8_has_control("", 0, false));
}

int main(void) {
  test_cases();
  test_lone_bytes();
  test_long_counts();
  test_against_reference();
  test_control_bytes();
  test_control_characters();
  return check_report();
}
