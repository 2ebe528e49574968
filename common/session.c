/* The session logic of docs/PROTOCOL.md sections 3 and 4. */
#include "session.h"

#include "protocol.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOO_LONG_NOTICE "Line ignored: longer than %zu bytes" CHAT_EOL

#define TEXT(literal) ((struct chat_text){literal, sizeof literal - 1})

size_t session_scratch_size(size_t max_line) {
  /* The longest thing formatted is a chat line (name, ": ", text, CR LF),
   * or the welcome, which holds the room's name. */
  return max_line + CHAT_LINE_OVERHEAD + CHAT_ROOM_NAME_MAX_BYTES;
}

struct session_context session_context_make(const char *room_name,
                                            size_t max_line, bool scratch) {
  size_t scratch_size = session_scratch_size(max_line);
  return (struct session_context){
      .room_name = room_name,
      .max_line = max_line,
      .scratch = scratch ? malloc(scratch_size) : NULL,
      .scratch_size = scratch_size,
  };
}

static struct session_step reply(struct chat_text text) {
  return (struct session_step){.reply = text};
}

/* Formats into the scratch buffer; texts never exceed its size. */
static struct chat_text format(const struct session_context *context,
                               const char *pattern, ...)
    __attribute__((format(printf, 2, 3)));

static struct chat_text format(const struct session_context *context,
                               const char *pattern, ...) {
  va_list arguments;
  va_start(arguments, pattern);
  int length =
      vsnprintf(context->scratch, context->scratch_size, pattern, arguments);
  va_end(arguments);
  if (length < 0)
    length = 0;
  if ((size_t)length >= context->scratch_size)
    length = (int)context->scratch_size - 1;
  return (struct chat_text){context->scratch, (size_t)length};
}

/* A notice while naming is followed by the prompt again. The text must not
 * be in the scratch buffer, which the prompt is formatted into. */
static struct session_step notice(const struct session *session,
                                  const struct session_context *context,
                                  struct chat_text text) {
  if (session->phase != SESSION_NAMING)
    return reply(text);
  return reply(
      format(context, "%.*s" CHAT_PROMPT, (int)text.length, text.bytes));
}

static struct chat_text trim(const char *line, size_t length) {
  while (length > 0 && (line[0] == ' ' || line[0] == '\t')) {
    line++;
    length--;
  }
  while (length > 0 && (line[length - 1] == ' ' || line[length - 1] == '\t'))
    length--;
  return (struct chat_text){line, length};
}

static bool is_command(struct chat_text text, const char *command) {
  size_t length = strlen(command);
  if (text.length != length)
    return false;
  for (size_t i = 0; i < length; i++) {
    char c = text.bytes[i];
    if (c >= 'a' && c <= 'z')
      c = (char)(c - 'a' + 'A');
    if (c != command[i])
      return false;
  }
  return true;
}

/* A valid name: 1 to 32 code points, no space, colon or control character
 * (TAB included, and the C1 and bidirectional controls). The line is
 * already known to be valid UTF-8. */
static bool is_valid_name(struct chat_text name) {
  size_t characters;
  if (!utf8_validate(name.bytes, name.length, &characters))
    return false;
  if (characters < 1 || characters > CHAT_NAME_MAX_CHARACTERS)
    return false;
  if (memchr(name.bytes, ' ', name.length) ||
      memchr(name.bytes, ':', name.length))
    return false;
  return !utf8_has_control(name.bytes, name.length, false);
}

struct session_step session_start(struct session *session,
                                  const struct session_context *context) {
  *session = (struct session){.phase = SESSION_NAMING};
  return reply(format(context, "Welcome to %s" CHAT_EOL CHAT_PROMPT,
                      context->room_name));
}

static struct session_step on_name(struct session *session,
                                   const struct session_context *context,
                                   const char *line, size_t length) {
  struct chat_text name = trim(line, length);
  if (!is_valid_name(name))
    return notice(session, context, TEXT(CHAT_INVALID_NAME));
  return (struct session_step){.room = SESSION_ROOM_JOIN, .name = name};
}

static struct session_step on_chat(struct session *session,
                                   const struct session_context *context,
                                   const char *line, size_t length) {
  struct chat_text command = trim(line, length);
  if (command.length == 0)
    return reply((struct chat_text){NULL, 0});
  if (is_command(command, "NAMES"))
    return (struct session_step){.room = SESSION_ROOM_NAMES};
  if (is_command(command, "HELP"))
    return reply(TEXT(CHAT_HELP));
  if (is_command(command, "QUIT")) {
    session->phase = SESSION_CLOSED;
    return (struct session_step){.reply = TEXT(CHAT_BYE), .close = true};
  }
  if (utf8_has_control(line, length, true))
    return reply(TEXT(CHAT_CONTROL_CHARACTERS));
  struct chat_text said =
      format(context, "%.*s: %.*s" CHAT_EOL, (int)session->name_length,
             session->name, (int)length, line);
  return (struct session_step){.room = SESSION_ROOM_SAY, .room_line = said};
}

struct session_step session_on_frame(struct session *session,
                                     const struct session_context *context,
                                     const struct frame *frame) {
  if (session->phase == SESSION_CLOSED)
    return reply((struct chat_text){NULL, 0});
  switch (frame->kind) {
  case FRAME_TELNET_REPLY:
    return reply((struct chat_text){frame->bytes, frame->length});
  case FRAME_TOO_LONG:
    /* Formatted in one call, prompt included: passing the formatted text to
     * notice() would have vsnprintf copy the scratch onto itself, which C
     * leaves undefined. */
    return reply(format(context,
                        session->phase == SESSION_NAMING
                            ? TOO_LONG_NOTICE CHAT_PROMPT
                            : TOO_LONG_NOTICE,
                        context->max_line));
  case FRAME_LINE:
    break;
  }
  if (!utf8_validate(frame->bytes, frame->length, NULL))
    return notice(session, context, TEXT(CHAT_INVALID_UTF8));
  if (session->phase == SESSION_NAMING)
    return on_name(session, context, frame->bytes, frame->length);
  return on_chat(session, context, frame->bytes, frame->length);
}

struct session_step session_joined(struct session *session,
                                   const struct session_context *context,
                                   struct chat_text requested,
                                   const char *stored_name) {
  if (!stored_name) {
    return reply(format(context,
                        "Username %.*s not available" CHAT_EOL CHAT_PROMPT,
                        (int)requested.length, requested.bytes));
  }
  session->name = stored_name;
  session->name_length = (unsigned char)requested.length;
  session->phase = SESSION_CHATTING;
  return (struct session_step){.room = SESSION_ROOM_SAY,
                               .room_line =
                                   session_arrival_line(context, requested)};
}

struct chat_text session_arrival_line(const struct session_context *context,
                                      struct chat_text name) {
  return format(context, "User %.*s arrived." CHAT_EOL, (int)name.length,
                name.bytes);
}

struct chat_text session_departure_line(const struct session_context *context,
                                        struct chat_text name) {
  return format(context, "User %.*s departed." CHAT_EOL, (int)name.length,
                name.bytes);
}

struct session_step
session_room_unavailable(struct session *session,
                         const struct session_context *context) {
  return notice(session, context, TEXT(CHAT_ROOM_UNAVAILABLE));
}

struct session_step session_room_lost(struct session *session) {
  session->phase = SESSION_CLOSED;
  session->name = NULL;
  session->name_length = 0;
  return (struct session_step){.reply = TEXT(CHAT_ROOM_LOST), .close = true};
}

struct session_step session_timed_out(struct session *session) {
  session->phase = SESSION_CLOSED;
  return (struct session_step){.reply = TEXT(CHAT_LOGIN_TIMEOUT),
                               .close = true};
}

struct session_step session_shutdown(struct session *session) {
  session->phase = SESSION_CLOSED;
  return (struct session_step){.reply = TEXT(CHAT_SHUTDOWN), .close = true};
}

struct session_step session_end(struct session *session,
                                const struct session_context *context) {
  session->phase = SESSION_CLOSED;
  if (!session->name)
    return reply((struct chat_text){NULL, 0});
  struct chat_text departed = session_departure_line(
      context, (struct chat_text){session->name, session->name_length});
  session->name = NULL;
  session->name_length = 0;
  return (struct session_step){.room = SESSION_ROOM_LEAVE,
                               .room_line = departed};
}

bool session_is_registered(const struct session *session) {
  return session->name != NULL;
}
