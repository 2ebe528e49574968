/* The whole test framework of the unit tests: a few macros that count passed
 * and failed checks, print each failure with its file and line (and, for
 * bytes, both sides and where they first differ), and a report at the end.
 * Plus the helpers more than one test needs: appending to a byte buffer and a
 * seeded random number generator, so that every run tests the same inputs.
 *
 * Usage: CHECK(condition); CHECK_EQ_BYTES(a, a_length, b, b_length);
 * CHECK_EQ_TEXT(text, "expected") for anything with .bytes and .length;
 * and `return check_report();` at the end of main. */
#ifndef CHECK_H
#define CHECK_H

#include "byte_buffer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check_counts {
  unsigned long passed;
  unsigned long failed;
};

static inline struct check_counts *check_counts(void) {
  static struct check_counts counts;
  return &counts;
}

static inline bool check_true(bool ok, const char *expression, const char *file,
                              int line) {
  if (ok) {
    check_counts()->passed++;
    return true;
  }
  check_counts()->failed++;
  fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expression);
  return false;
}

/* Prints bytes as a C string literal would show them: printable ASCII as
 * is, everything else as \xHH (and \r, \n, \t by name). */
static inline void check_print_bytes(FILE *out, const void *bytes,
                                     size_t length) {
  const unsigned char *s = bytes;
  fputc('"', out);
  for (size_t i = 0; i < length; i++) {
    if (s[i] == '\r')
      fputs("\\r", out);
    else if (s[i] == '\n')
      fputs("\\n", out);
    else if (s[i] == '\t')
      fputs("\\t", out);
    else if (s[i] == '"' || s[i] == '\\')
      fprintf(out, "\\%c", s[i]);
    else if (s[i] >= 0x20 && s[i] < 0x7F)
      fputc(s[i], out);
    else
      fprintf(out, "\\x%02X", s[i]);
  }
  fputc('"', out);
}

static inline bool check_bytes(const void *actual, size_t actual_length,
                               const void *expected, size_t expected_length,
                               const char *expression, const char *file,
                               int line) {
  if (actual_length == expected_length &&
      (expected_length == 0 ||
       (actual && memcmp(actual, expected, expected_length) == 0))) {
    check_counts()->passed++;
    return true;
  }
  check_counts()->failed++;
  size_t first_difference = 0;
  const unsigned char *a = actual, *e = expected;
  while (a && first_difference < actual_length &&
         first_difference < expected_length &&
         a[first_difference] == e[first_difference])
    first_difference++;
  fprintf(stderr, "%s:%d: CHECK_EQ_BYTES failed: %s\n  actual   (%zu): ", file,
          line, expression, actual_length);
  if (actual)
    check_print_bytes(stderr, actual, actual_length);
  else
    fputs("NULL", stderr);
  fprintf(stderr, "\n  expected (%zu): ", expected_length);
  check_print_bytes(stderr, expected, expected_length);
  fprintf(stderr, "\n  first difference at byte %zu\n", first_difference);
  return false;
}

#define CHECK(condition) check_true((condition), #condition, __FILE__, __LINE__)

#define CHECK_EQ_BYTES(actual, actual_length, expected, expected_length)       \
  check_bytes((actual), (actual_length), (expected), (expected_length),        \
              #actual " == " #expected, __FILE__, __LINE__)

/* Any value with .bytes and .length (struct chat_text, struct frame, struct
 * byte_buffer) against a string literal, which may hold NUL bytes. */
#define CHECK_EQ_TEXT(text, literal)                                           \
  CHECK_EQ_BYTES((text).bytes, (text).length, (literal), sizeof(literal) - 1)

/* Prints "N passed, N failed"; the exit status of the test program. */
static inline int check_report(void) {
  printf("%lu passed, %lu failed\n", check_counts()->passed,
         check_counts()->failed);
  return check_counts()->failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* A growable byte buffer (common/byte_buffer.h), for collecting what a
 * callback was given; a test has no use for running out of memory. */
static inline void buffer_append(struct byte_buffer *buffer, const void *bytes,
                                 size_t length) {
  if (!byte_buffer_append(buffer, bytes, length)) {
    perror("realloc");
    exit(EXIT_FAILURE);
  }
}

static inline void buffer_append_string(struct byte_buffer *buffer,
                                        const char *string) {
  buffer_append(buffer, string, strlen(string));
}

static inline void buffer_clear(struct byte_buffer *buffer) {
  buffer->length = 0;
}

static inline void buffer_free(struct byte_buffer *buffer) {
  free(buffer->bytes);
  *buffer = (struct byte_buffer){0};
}

/* xorshift64*: small, and the same sequence on every machine. */
struct test_random {
  uint64_t state; /* never 0 */
};

static inline uint64_t random_next(struct test_random *random) {
  uint64_t x = random->state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  random->state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* A number in [0, bound). */
static inline size_t random_below(struct test_random *random, size_t bound) {
  return (size_t)(random_next(random) % bound);
}

#endif
