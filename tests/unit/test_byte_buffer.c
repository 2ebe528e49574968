/* The growable output buffer: appends keep every byte in order across
 * growth, consuming moves the rest to the front, release frees it all. */
#include "byte_buffer.h"
#include "check.h"

static void empty_buffer_holds_nothing(void) {
  struct byte_buffer buffer = {0};
  CHECK(byte_buffer_append(&buffer, "", 0));
  CHECK(buffer.bytes == NULL && buffer.length == 0 && buffer.capacity == 0);
  byte_buffer_consume(&buffer, 5);
  CHECK(buffer.length == 0);
  byte_buffer_release(&buffer);
}

static void appends_survive_growth(void) {
  struct byte_buffer buffer = {0};
  char expected[10000];
  for (size_t i = 0; i < sizeof expected; i++) {
    char byte = (char)('a' + i % 26);
    expected[i] = byte;
    CHECK(byte_buffer_append(&buffer, &byte, 1));
  }
  CHECK(buffer.capacity >= buffer.length);
  CHECK_EQ_BYTES(buffer.bytes, buffer.length, expected, sizeof expected);
  byte_buffer_release(&buffer);
  CHECK(buffer.bytes == NULL && buffer.length == 0 && buffer.capacity == 0);
}

static void one_big_append(void) {
  struct byte_buffer buffer = {0};
  static char big[100000];
  memset(big, 'x', sizeof big);
  CHECK(byte_buffer_append(&buffer, "ab", 2));
  CHECK(byte_buffer_append(&buffer, big, sizeof big));
  CHECK(buffer.length == sizeof big + 2);
  CHECK(buffer.bytes[0] == 'a' && buffer.bytes[1] == 'b' &&
        buffer.bytes[buffer.length - 1] == 'x');
  byte_buffer_release(&buffer);
}

static void consume_keeps_the_rest_in_front(void) {
  struct byte_buffer buffer = {0};
  CHECK(byte_buffer_append(&buffer, "hello world", 11));
  byte_buffer_consume(&buffer, 6);
  CHECK_EQ_BYTES(buffer.bytes, buffer.length, "world", 5);
  CHECK(byte_buffer_append(&buffer, "!", 1));
  CHECK_EQ_BYTES(buffer.bytes, buffer.length, "world!", 6);
  byte_buffer_consume(&buffer, 6);
  CHECK(buffer.length == 0);
  byte_buffer_release(&buffer);
}

static void reserve_then_fill(void) {
  struct byte_buffer buffer = {0};
  char *tail = byte_buffer_reserve(&buffer, 3);
  CHECK(tail != NULL && buffer.length == 0 && buffer.capacity >= 3);
  memcpy(tail, "abc", 3);
  buffer.length += 3;
  CHECK(byte_buffer_reserve(&buffer, (size_t)-1) == NULL); /* cannot grow */
  CHECK_EQ_BYTES(buffer.bytes, buffer.length, "abc", 3);   /* unchanged */
  byte_buffer_release(&buffer);
}

int main(void) {
  empty_buffer_holds_nothing();
  appends_survive_growth();
  one_big_append();
  consume_keeps_the_rest_in_front();
  reserve_then_fill();
  return check_report();
}
