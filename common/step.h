/* The one executor of the session's steps.
 *
 * session.h says what to do; this carries it out, the same way in every
 * model: the reply to the sender first, then the room's part (the name
 * registered and the arrival announced in one hold of the room, a line said
 * to everyone, the list of names, a departure), then the close. What differs
 * between the models (how bytes reach a client, how the room is shared and
 * locked) is a small interface each model supplies, the way Redis's ae.c
 * fixes the loop and ae_epoll.c supplies the backend. It does no I/O itself:
 * a unit test drives it with a model double. */
#ifndef CHAT_STEP_H
#define CHAT_STEP_H

#include "room.h"
#include "session.h"

#include <stddef.h>

/* What a model supplies. `client` is the model's own record of the
 * connection the step is for, handed back to every hook. The hooks marked
 * "under the lock" run between lock() and unlock(). */
struct step_model {
  /* Queues bytes for this client alone: a reply, a piece of the NAMES
   * list. Never waits for the client to read them. */
  void (*send)(void *client, const char *bytes, size_t length);

  /* Optional (NULL for a model with one thread of control): take and let
   * go of the room, around the room's part of one step. unlock() is also
   * where a model may finish what it could not do under the lock (writing
   * to the sockets a broadcast left it). */
  void (*lock)(void *client);
  void (*unlock)(void *client);

  /* Under the lock: registers `name` for this client its way; returns the
   * room's copy of the name, or NULL when the name is taken. A room shared
   * through Redis answers later: it returns STEP_JOIN_PENDING (the model
   * copies the name, reads nothing more from this client, and calls
   * step_join_answered() when the answer comes), or STEP_ROOM_UNAVAILABLE. */
  const char *(*join)(void *client, struct chat_text name);
  /* Under the lock: releases this client's name and tells the room's users
   * `departure`, the client's departure line. */
  void (*leave)(void *client, struct chat_text departure);
  /* Under the lock: a room line (formatted once) to every registered user;
   * a slow recipient may be dropped, never waited for. Returns false when
   * the room cannot be reached (a room shared through Redis, while Redis is
   * away): the line is dropped and the sender told. */
  bool (*say)(void *client, struct chat_text line);
  /* Under the lock: the room whose names NAMES lists, in registration
   * order, or NULL when it cannot be reached now. The model may first
   * bring the client up to date with the room (chat-forking copies the
   * room's lines it has not sent yet), so that the list comes after every
   * line that came before it. */
  const struct room *(*members)(void *client);

  /* Optional: after unlock(), when the name was accepted (the log line,
   * which must not be written under the lock). */
  void (*registered)(void *client);
  /* The session is over for this client (it said QUIT, timed out, or the
   * server is shutting down): it reads no more, hears no more of the room,
   * and is closed once its last lines are written. */
  void (*close)(void *client);
};

/* What join() returns, besides a name or NULL, for a room that answers
 * later (a room shared through Redis, docs/PROTOCOL.md section 7). */
extern const char STEP_JOIN_PENDING[];
extern const char STEP_ROOM_UNAVAILABLE[];

/* Carries out one step for `client`, whose session and context produced
 * it: in this order, the reply, the room's part, the close. A step whose
 * texts are in the context's scratch stays valid throughout: the only step
 * formatted meanwhile (session_joined's) is carried out before any other
 * use of the scratch. */
void step_carry_out(const struct step_model *model, void *client,
                    struct session *session,
                    const struct session_context *context,
                    struct session_step step);

/* The step for one frame, as session_on_frame() makes it, unless it must
 * wait. With `sender_lines_out` (the sender has lines still on their way
 * through Redis, redis_room_echoed), a step that says something to its
 * sender alone (a reply, the names, a goodbye) must not overtake them: a
 * room of one server gives a sender its own lines first by itself. Then
 * this returns false and leaves the session as it was; the model keeps the
 * frame, and calls this again once the lines are back. Lines for the room
 * never wait. */
bool step_for_frame(struct session *session,
                    const struct session_context *context,
                    const struct frame *frame, bool sender_lines_out,
                    struct session_step *step);

/* The answer to a join that was STEP_JOIN_PENDING: `stored` is the room's
 * copy of the name, NULL when it was taken, or STEP_ROOM_UNAVAILABLE;
 * `name` is the name asked for. An accepted name's arrival was announced
 * by the room itself, in the same step that accepted it (a Redis script:
 * nobody hears of a member before its arrival); this carries out the rest,
 * the sender's reply and `registered`. Called with the room not held. */
void step_join_answered(const struct step_model *model, void *client,
                        struct session *session,
                        const struct session_context *context,
                        struct chat_text name, const char *stored);

#endif
