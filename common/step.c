#include "step.h"

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

/* Under the lock: what a step asks of the room. A join and the broadcast of
 * its arrival happen in one hold of the room, so that nobody hears of a
 * member before its arrival, and the arrival reaches everyone before any
 * of the newcomer's lines (docs/PROTOCOL.md section 5). Returns whether a name
 * was accepted. */
static bool act_on_room(const struct step_model *model, void *client,
                        struct session *session,
                        const struct session_context *context,
                        struct session_step step) {
  switch (step.room) {
  case SESSION_ROOM_NONE:
    break;
  case SESSION_ROOM_JOIN: {
    const char *stored = model->join(client, step.name);
    struct session_step joined =
        session_joined(session, context, step.name, stored);
    send_text(model, client, joined.reply);
    if (joined.room == SESSION_ROOM_SAY)
      model->say(client, joined.room_line);
    return stored != NULL;
  }
  case SESSION_ROOM_SAY:
    model->say(client, step.room_line);
    break;
  case SESSION_ROOM_NAMES: {
    struct names_writer writer = {model, client};
    room_names(model->members(client), write_name, &writer);
    break;
  }
  case SESSION_ROOM_LEAVE:
    model->leave(client);
    model->say(client, step.room_line);
    break;
  }
  return false;
}

void step_carry_out(const struct step_model *model, void *client,
                    struct session *session,
                    const struct session_context *context,
                    struct session_step step) {
  send_text(model, client, step.reply);
  if (step.room != SESSION_ROOM_NONE) {
    if (model->lock)
      model->lock(client);
    bool registered = act_on_room(model, client, session, context, step);
    if (model->unlock)
      model->unlock(client);
    if (registered && model->registered)
      model->registered(client);
  }
  if (step.close)
    model->close(client);
}
