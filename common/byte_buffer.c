#include "byte_buffer.h"

#include <stdlib.h>
#include <string.h>

/* Most of what a client is sent at once is a line or two. */
#define FIRST_CAPACITY 128

char *byte_buffer_reserve(struct byte_buffer *buffer, size_t more) {
  if (more > buffer->capacity - buffer->length) {
    size_t capacity = buffer->capacity ? buffer->capacity : FIRST_CAPACITY;
    while (capacity - buffer->length < more) {
      if (capacity > (size_t)-1 / 2)
        return NULL;
      capacity *= 2;
    }
    char *grown = realloc(buffer->bytes, capacity);
    if (!grown)
      return NULL;
    buffer->bytes = grown;
    buffer->capacity = capacity;
  }
  return buffer->bytes + buffer->length;
}

bool byte_buffer_append(struct byte_buffer *buffer, const char *bytes,
                        size_t length) {
  if (length == 0)
    return true;
  char *tail = byte_buffer_reserve(buffer, length);
  if (!tail)
    return false;
  memcpy(tail, bytes, length);
  buffer->length += length;
  return true;
}

void byte_buffer_consume(struct byte_buffer *buffer, size_t count) {
  if (count == 0)
    return;
  if (count >= buffer->length) {
    buffer->length = 0;
    return;
  }
  memmove(buffer->bytes, buffer->bytes + count, buffer->length - count);
  buffer->length -= count;
}

void byte_buffer_release(struct byte_buffer *buffer) {
  free(buffer->bytes);
  *buffer = (struct byte_buffer){0};
}
