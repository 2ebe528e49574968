/* The line framer: bytes in, complete lines out (docs/PROTOCOL.md section 2).
 *
 * Lines end at LF, CR LF or CR NUL; telnet commands are removed first. A line
 * longer than max_line bytes is reported once and the rest of it, up to the
 * next line end, is discarded without being stored, so a connection never
 * holds more than max_line bytes whatever arrives. Between reads only the
 * unfinished line is kept, on the heap, and it is freed as soon as the line
 * completes: an idle connection holds no buffer at all. */
#ifndef CHAT_LINE_FRAMER_H
#define CHAT_LINE_FRAMER_H

#include "telnet.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum frame_kind {
  FRAME_LINE,         /* a complete line, without its line end */
  FRAME_TOO_LONG,     /* a line passed max_line bytes; it is being dropped */
  FRAME_TELNET_REPLY, /* bytes to send back to the peer (a refusal) */
};

struct frame {
  enum frame_kind kind;
  const char *bytes; /* valid only during the handler's call */
  size_t length;
};

/* Returns false to stop: the rest of the chunk is not looked at. */
typedef bool (*frame_handler)(void *context, const struct frame *frame);

struct line_framer {
  char *partial; /* the unfinished line, or NULL */
  uint32_t length;
  uint32_t capacity;
  uint32_t max_line; /* at most 2^24: options.c enforces it */
  struct telnet_filter telnet;
  bool after_cr;   /* the last data byte was a CR: LF or NUL would end a line */
  bool discarding; /* inside a line that was too long */
  uint32_t consumed; /* after FRAMER_STOPPED: the bytes of the chunk it took,
                        up to and including the stopping line's end; push
                        the rest to go on where it stopped */
};

enum framer_status {
  FRAMER_DONE,      /* the whole chunk was consumed */
  FRAMER_STOPPED,   /* the handler returned false */
  FRAMER_NO_MEMORY, /* the unfinished line could not be stored */
};

void line_framer_init(struct line_framer *framer, size_t max_line);

/* Feeds one chunk of received bytes (at most 4 GiB); calls the handler for
 * each frame in order. */
enum framer_status line_framer_push(struct line_framer *framer,
                                    const char *data, size_t length,
                                    frame_handler handler, void *context);

/* Frees what the framer holds (bytes without a line end are not a line). */
void line_framer_release(struct line_framer *framer);

#endif
