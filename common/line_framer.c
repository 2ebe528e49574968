/* A line framer that copies only what it must.
 *
 * Within one chunk, the data bytes of the current line usually sit next to
 * each other: they are tracked as a span of the chunk and handed out in
 * place. Bytes are copied to the heap only when a line straddles two reads,
 * or when a telnet command or a CR that turned out to be data splits it. */
#include "line_framer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct span {
  size_t start;
  size_t length;
};

struct push {
  struct line_framer *framer;
  const char *data;
  struct span span; /* data bytes of the current line not yet in partial */
  frame_handler handler;
  void *context;
};

void line_framer_init(struct line_framer *framer, size_t max_line) {
  memset(framer, 0, sizeof *framer);
  framer->max_line = (uint32_t)max_line;
}

void line_framer_release(struct line_framer *framer) {
  free(framer->partial);
  framer->partial = NULL;
  framer->length = 0;
  framer->capacity = 0;
}

static bool store(struct line_framer *framer, const char *bytes,
                  size_t length) {
  if (length == 0)
    return true;
  size_t needed = framer->length + length;
  if (needed > (size_t)framer->max_line + 1)
    return false; /* cannot happen: lines are cut at max_line + 1 bytes */
  if (needed > framer->capacity) {
    size_t capacity = framer->capacity ? framer->capacity : 64;
    while (capacity < needed)
      capacity *= 2;
    if (capacity > (size_t)framer->max_line + 1)
      capacity = (size_t)framer->max_line + 1;
    char *grown = realloc(framer->partial, capacity);
    if (!grown)
      return false;
    framer->partial = grown;
    framer->capacity = (uint32_t)capacity;
  }
  memcpy(framer->partial + framer->length, bytes, length);
  framer->length = (uint32_t)needed;
  return true;
}

static bool flush_span(struct push *push) {
  bool stored =
      store(push->framer, push->data + push->span.start, push->span.length);
  push->span.length = 0;
  return stored;
}

static void forget_line(struct push *push) {
  line_framer_release(push->framer);
  push->span.length = 0;
}

/* The line grew by one byte: is it now too long? */
static bool too_long(const struct push *push) {
  return push->framer->length + push->span.length > push->framer->max_line;
}

static enum framer_status emit(struct push *push, enum frame_kind kind,
                               const char *bytes, size_t length) {
  struct frame frame = {kind, bytes, length};
  return push->handler(push->context, &frame) ? FRAMER_DONE : FRAMER_STOPPED;
}

static enum framer_status start_discarding(struct push *push) {
  forget_line(push);
  push->framer->discarding = true;
  return emit(push, FRAME_TOO_LONG, NULL, 0);
}

/* Adds the data byte at data[at] to the current line. */
static enum framer_status add_byte(struct push *push, size_t at) {
  if (push->framer->discarding)
    return FRAMER_DONE;
  if (push->span.length > 0 &&
      push->span.start + push->span.length != at) { /* a gap: save the span */
    if (!flush_span(push))
      return FRAMER_NO_MEMORY;
  }
  if (push->span.length == 0)
    push->span.start = at;
  push->span.length++;
  return too_long(push) ? start_discarding(push) : FRAMER_DONE;
}

/* A CR from an earlier chunk turned out to be data. */
static enum framer_status add_carried_cr(struct push *push) {
  if (push->framer->discarding)
    return FRAMER_DONE;
  if (!flush_span(push) || !store(push->framer, "\r", 1))
    return FRAMER_NO_MEMORY;
  return too_long(push) ? start_discarding(push) : FRAMER_DONE;
}

static enum framer_status end_line(struct push *push) {
  struct line_framer *framer = push->framer;
  if (framer->discarding) {
    framer->discarding = false;
    return FRAMER_DONE;
  }
  enum framer_status status;
  if (framer->length == 0) { /* the whole line is in this chunk: no copy */
    status = emit(push, FRAME_LINE, push->data + push->span.start,
                  push->span.length);
  } else {
    if (!flush_span(push))
      return FRAMER_NO_MEMORY;
    status = emit(push, FRAME_LINE, framer->partial, framer->length);
  }
  forget_line(push);
  return status;
}

enum framer_status line_framer_push(struct line_framer *framer,
                                    const char *data, size_t length,
                                    frame_handler handler, void *context) {
  struct push push = {framer, data, {0, 0}, handler, context};
  /* Where the pending CR is, if it came in this chunk; SIZE_MAX if not. */
  size_t cr_at = SIZE_MAX;
  enum framer_status status = FRAMER_DONE;
  size_t i;

  for (i = 0; i < length && status == FRAMER_DONE; i++) {
    unsigned char reply[3];
    switch (
        telnet_filter_byte(&framer->telnet, (unsigned char)data[i], reply)) {
    case TELNET_SKIP:
      continue;
    case TELNET_REPLY:
      status = emit(&push, FRAME_TELNET_REPLY, (const char *)reply, 3);
      continue;
    case TELNET_DATA:
      break;
    }
    /* A data byte; IAC IAC yields 255, which data[i] already is. */
    char byte = data[i];
    if (framer->after_cr) {
      framer->after_cr = false;
      if (byte == '\n' || byte == '\0') { /* CR LF or CR NUL */
        status = end_line(&push);
        cr_at = SIZE_MAX;
        continue;
      }
      /* The CR was data after all. */
      status =
          cr_at == SIZE_MAX ? add_carried_cr(&push) : add_byte(&push, cr_at);
      cr_at = SIZE_MAX;
      if (status != FRAMER_DONE)
        break;
    }
    if (byte == '\r') {
      framer->after_cr = true;
      cr_at = i;
    } else if (byte == '\n') {
      status = end_line(&push);
    } else {
      status = add_byte(&push, i);
    }
  }
  if (status == FRAMER_DONE && !flush_span(&push))
    return FRAMER_NO_MEMORY;
  if (status == FRAMER_STOPPED) {
    /* Stopped mid-chunk (at a line end, or at a telnet reply inside a
     * line): the line begun so far is kept, so that pushing the rest of
     * the chunk later goes on exactly where it stopped. */
    if (!flush_span(&push))
      return FRAMER_NO_MEMORY;
    framer->consumed = (uint32_t)i;
  }
  return status;
}
