#include "step.h"

const char STEP_JOIN_PENDING[] = "(pending)";
const char STEP_ROOM_UNAVAILABLE[] = "(unavailable)";

struct names_writer {
  const struct step_model *model;
  void *client;
};

static void write_name(void *context, const char *bytes, size_t length) {
  struct names_writer *writer = context;
  writer->model->send(writer->client, bytes, length);
}

static void send_text(const struct step_model *model, void *client,
                      struct chat_text text) {
  if (text.length > 0)
    model->send(client, text.bytes, text.length);
}

/* What the room answers for one step, besides the room's own part. */
enum room_answer {
  ROOM_DONE,        /* nothing more to do */
  ROOM_REGISTERED,  /* a name was accepted: `registered` after the lock */
  ROOM_UNAVAILABLE, /* the room could not be reached: tell the sender */
};

/* Under the lock: what a step asks of the room. A join and the broadcast of
 * its arrival happen in one hold of the room, so that nobody hears of a
 * member before its arrival, and the arrival reaches everyone before any
 * of the newcomer's lines (docs/PROTOCOL.md section 5). */
static enum room_answer act_on_room(const struct step_model *model,
                                    void *client, struct session *session,
                                    const struct session_context *context,
                                    struct session_step step) {
  switch (step.room) {
  case SESSION_ROOM_NONE:
    break;
  case SESSION_ROOM_JOIN: {
    const char *stored = model->join(client, step.name);
    if (stored == STEP_JOIN_PENDING)
      return ROOM_DONE;
    if (stored == STEP_ROOM_UNAVAILABLE)
      return ROOM_UNAVAILABLE;
    struct session_step joined =
        session_joined(session, context, step.name, stored);
    send_text(model, client, joined.reply);
    if (joined.room == SESSION_ROOM_SAY)
      model->say(client, joined.room_line);
    return stored ? ROOM_REGISTERED : ROOM_DONE;
  }
  case SESSION_ROOM_SAY:
    if (!model->say(client, step.room_line))
      return ROOM_UNAVAILABLE;
    break;
  case SESSION_ROOM_NAMES: {
    const struct room *room = model->members(client);
    if (!room)
      return ROOM_UNAVAILABLE;
    struct names_writer writer = {model, client};
    room_names(room, write_name, &writer);
    break;
  }
  case SESSION_ROOM_LEAVE:
    model->leave(client, step.room_line);
    break;
  }
  return ROOM_DONE;
}

void step_carry_out(const struct step_model *model, void *client,
                    struct session *session,
                    const struct session_context *context,
                    struct session_step step) {
  send_text(model, client, step.reply);
  if (step.room != SESSION_ROOM_NONE) {
    if (model->lock)
      model->lock(client);
    enum room_answer answer =
        act_on_room(model, client, session, context, step);
    if (model->unlock)
      model->unlock(client);
    if (answer == ROOM_REGISTERED && model->registered)
      model->registered(client);
    if (answer == ROOM_UNAVAILABLE)
      send_text(model, client,
                session_room_unavailable(session, context).reply);
  }
  if (step.close)
    model->close(client);
}

bool step_for_frame(struct session *session,
                    const struct session_context *context,
                    const struct frame *frame, bool sender_lines_out,
                    struct session_step *step) {
  struct session next = *session;
  *step = session_on_frame(&next, context, frame);
  bool answers_sender =
      step->reply.length > 0 || step->room == SESSION_ROOM_NAMES || step->close;
  if (sender_lines_out && answers_sender)
    return false;
  *session = next;
  return true;
}

void step_join_answered(const struct step_model *model, void *client,
                        struct session *session,
                        const struct session_context *context,
                        struct chat_text name, const char *stored) {
  if (stored == STEP_ROOM_UNAVAILABLE) {
    send_text(model, client, session_room_unavailable(session, context).reply);
    return;
  }
  /* Accepted, the step's room line is the arrival, which the room has
   * announced already. */
  send_text(model, client,
            session_joined(session, context, name, stored).reply);
  if (stored && model->registered)
    model->registered(client);
}
