/* Bytes on their way to a client: one block that grows as needed. */
#ifndef CHAT_BYTE_BUFFER_H
#define CHAT_BYTE_BUFFER_H

#include <stdbool.h>
#include <stddef.h>

/* Zero-initialised, it is empty and holds no memory. */
struct byte_buffer {
  char *bytes;
  size_t length, capacity;
};

/* Makes room for `more` bytes after the `length` held; returns where they
 * go (the caller writes them and adds `more` to `length`), or NULL when out
 * of memory, the buffer unchanged. */
char *byte_buffer_reserve(struct byte_buffer *buffer, size_t more);

/* Adds bytes at the end; false when out of memory, the buffer unchanged. */
bool byte_buffer_append(struct byte_buffer *buffer, const char *bytes,
                        size_t length);

/* Forgets the first `count` bytes (they were sent), moving the rest to the
 * front. */
void byte_buffer_consume(struct byte_buffer *buffer, size_t count);

/* Frees the memory: an idle client holds none. */
void byte_buffer_release(struct byte_buffer *buffer);

#endif
