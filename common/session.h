/* The session logic: a pure function of a session's state and one input.
 *
 * It never touches a socket, a lock or a clock. Given one frame (a complete
 * line, the notice that a line was too long, or a telnet reply), it says what
 * to do, as a session_step: bytes for the sender, a line for the whole room,
 * a name to register or release, and whether to close. Each server model only
 * carries the step out, moving bytes and sharing the room in its own way. */
#ifndef CHAT_SESSION_H
#define CHAT_SESSION_H

#include "line_framer.h"

#include <stdbool.h>
#include <stddef.h>

struct chat_text {
  const char *bytes;
  size_t length;
};

enum session_phase {
  SESSION_NAMING,   /* waiting for an acceptable user name */
  SESSION_CHATTING, /* registered */
  SESSION_CLOSED,   /* said goodbye; nothing more is read */
};

struct session {
  const char *name; /* while chatting: the room's copy of the user's name */
  unsigned char name_length;
  unsigned char phase;
};

/* What the room must do for a step. */
enum session_room_op {
  SESSION_ROOM_NONE,
  SESSION_ROOM_JOIN,  /* register `name`, then call session_joined() */
  SESSION_ROOM_SAY,   /* send `room_line` to every registered user */
  SESSION_ROOM_LEAVE, /* release the user's name, then send `room_line` to
                         every remaining user */
  SESSION_ROOM_NAMES, /* send the sender the list of users (room_names) */
};

/* What to do, in this order: reply to the sender, act on the room, close. */
struct session_step {
  struct chat_text reply;
  enum session_room_op room;
  struct chat_text name;      /* SESSION_ROOM_JOIN: the name asked for */
  struct chat_text room_line; /* SAY and LEAVE: formatted once, for all */
  bool close;                 /* close once the reply has been sent */
};

/* What every session of one server shares, read-only, and a scratch buffer
 * in which steps are formatted (one per thread of control; a step's texts
 * point into it and last until the next call with the same scratch). */
struct session_context {
  const char *room_name;
  size_t max_line;
  char *scratch;
  size_t scratch_size; /* at least session_scratch_size(max_line) */
};

size_t session_scratch_size(size_t max_line);

/* A context for a room and a line limit, with a scratch of its own (malloc:
 * NULL when out of memory; free it with free()), or, without, none yet:
 * each thread of chat-threaded brings its own. */
struct session_context session_context_make(const char *room_name,
                                            size_t max_line, bool scratch);

/* A new connection: the welcome and the prompt. */
struct session_step session_start(struct session *session,
                                  const struct session_context *context);

/* One frame from the line framer. */
struct session_step session_on_frame(struct session *session,
                                     const struct session_context *context,
                                     const struct frame *frame);

/* The answer to SESSION_ROOM_JOIN: stored_name is the room's copy of the
 * name, or NULL when the name was taken. */
struct session_step session_joined(struct session *session,
                                   const struct session_context *context,
                                   struct chat_text requested,
                                   const char *stored_name);

/* The room could not be reached for a step that needed it (a name, a
 * message, NAMES): the line is dropped, the sender told, and a name line
 * gets the prompt again. */
struct session_step
session_room_unavailable(struct session *session,
                         const struct session_context *context);

/* The room shared through Redis was lost to this server (docs/PROTOCOL.md
 * section 7): the user is told and closed; the room has retired its name
 * already, so there is no departure to announce. */
struct session_step session_room_lost(struct session *session);

/* The room's lines about a user, formatted into the context's scratch: for
 * a room shared through Redis, which carries the event, not the line. */
struct chat_text session_arrival_line(const struct session_context *context,
                                      struct chat_text name);
struct chat_text session_departure_line(const struct session_context *context,
                                        struct chat_text name);

/* No name was accepted within the login timeout. */
struct session_step session_timed_out(struct session *session);

/* The server is shutting down. */
struct session_step session_shutdown(struct session *session);

/* The connection ended, for whatever reason: a registered user departs. */
struct session_step session_end(struct session *session,
                                const struct session_context *context);

/* True when the session holds a name in the room. */
bool session_is_registered(const struct session *session);

#endif
