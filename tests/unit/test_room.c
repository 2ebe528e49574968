/* The room: who is here, in the order they arrived.
 *
 * Joining and leaving at the front, middle and end, registration order, the
 * reuse of released slots, names taken (byte for byte) and freed again,
 * names too long or empty, a full room, the exact bytes of the NAMES
 * listing, broadcast order, a broadcast whose callback removes the member it
 * was handed, room_size, and then long random runs of joins and leaves of
 * many names (so that names sharing a hash bucket come and go in every
 * order) checked step by step against a plain array that models the room. Every
 * room lives in a block of exactly room_size bytes, so that the address
 * sanitizer sees any write past it. */
#include "check.h"
#include "protocol.h"
#include "room.h"

#define TEXT(literal) ((struct chat_text){literal, sizeof(literal) - 1})

static struct room *new_room(size_t capacity) {
  return room_init(calloc(1, room_size(capacity)), capacity);
}

static int join(struct room *room, struct chat_text name, uintptr_t owner) {
  const char *stored = NULL;
  int member = room_join(room, name, owner, &stored);
  if (member >= 0) {
    /* The room keeps its own copy of the name. */
    CHECK(stored != NULL && stored != name.bytes);
    CHECK_EQ_BYTES(stored, name.length, name.bytes, name.length);
  }
  return member;
}

static void write_to_buffer(void *context, const char *bytes, size_t length) {
  buffer_append(context, bytes, length);
}

/* The NAMES answer, as the sender would receive it. */
static void names_of(const struct room *room, struct byte_buffer *out) {
  buffer_clear(out);
  room_names(room, write_to_buffer, out);
}

/* The members' names in registration order, as "a b c", from the
 * iteration functions. */
static void order_of(const struct room *room, struct byte_buffer *out) {
  buffer_clear(out);
  for (int member = room_first(room); member >= 0;
       member = room_next(room, member)) {
    struct chat_text name = room_member_name(room, member);
    if (out->length > 0)
      buffer_append_string(out, " ");
    buffer_append(out, name.bytes, name.length);
  }
}

static void test_room_size(void) {
  CHECK(room_size(0) > 0);
  size_t previous = room_size(0);
  for (size_t capacity = 1; capacity <= 5000; capacity++) {
    size_t size = room_size(capacity);
    /* Each member holds at least a copy of its name. */
    if (!CHECK(size >= previous + CHAT_NAME_MAX_BYTES)) {
      fprintf(stderr, "  room_size(%zu) = %zu\n", capacity, size);
      break;
    }
    previous = size;
  }
  /* The largest --max-clients stays well below a gigabyte. */
  CHECK(room_size(1 << 20) < ((size_t)1 << 30));
}

static void test_join_leave_order(void) {
  struct byte_buffer order = {0};
  struct room *room = new_room(8);
  CHECK(room_count(room) == 0);
  CHECK(room_first(room) == -1);

  int ada = join(room, TEXT("ada"), 1);
  int bob = join(room, TEXT("bob"), 2);
  int eve = join(room, TEXT("eve"), 3);
  CHECK(ada >= 0 && bob >= 0 && eve >= 0);
  CHECK(ada != bob && bob != eve && ada != eve);
  CHECK(room_count(room) == 3);
  order_of(room, &order);
  CHECK_EQ_TEXT(order, "ada bob eve");
  CHECK(room_owner(room, ada) == 1);
  CHECK(room_owner(room, bob) == 2);
  CHECK(room_owner(room, eve) == 3);

  /* Leaving from the middle, then joining: the newcomer comes last, in the
   * slot that was freed. */
  room_leave(room, bob);
  order_of(room, &order);
  CHECK_EQ_TEXT(order, "ada eve");
  int dan = join(room, TEXT("dan"), 4);
  CHECK(dan == bob);
  order_of(room, &order);
  CHECK_EQ_TEXT(order, "ada eve dan");
  CHECK(room_owner(room, dan) == 4);

  /* The first and the last leave. */
  room_leave(room, ada);
  order_of(room, &order);
  CHECK_EQ_TEXT(order, "eve dan");
  room_leave(room, dan);
  order_of(room, &order);
  CHECK_EQ_TEXT(order, "eve");
  CHECK(room_count(room) == 1);
  room_leave(room, eve);
  CHECK(room_count(room) == 0);
  CHECK(room_first(room) == -1);

  /* Empty again, and usable again. */
  int zoe = join(room, TEXT("zoe"), 5);
  CHECK(zoe >= 0);
  order_of(room, &order);
  CHECK_EQ_TEXT(order, "zoe");
  free(room);
  buffer_free(&order);
}

static void test_names_taken(void) {
  struct room *room = new_room(8);
  CHECK(join(room, TEXT("ada"), 1) >= 0);
  CHECK(join(room, TEXT("ada"), 2) == -1);
  CHECK(room_count(room) == 1);
  /* Byte for byte: other case, prefixes and extensions are other names. */
  CHECK(join(room, TEXT("Ada"), 3) >= 0);
  CHECK(join(room, TEXT("ad"), 4) >= 0);
  int ada2 = join(room, TEXT("ada2"), 5);
  CHECK(ada2 >= 0);
  CHECK(join(room, TEXT("ada2"), 6) == -1);
  /* A name is free again once its holder has left. */
  room_leave(room, ada2);
  CHECK(join(room, TEXT("ada2"), 7) >= 0);
  CHECK(room_count(room) == 4);
  free(room);
}

/* Names that differ only in their last byte are different names: a full
 * room of sixteen ("x0" to "xf"), in the smallest hash table. */
static void test_names_differing_at_the_end(void) {
  static const char digits[] = "0123456789abcdef";
  struct room *room = new_room(16);
  for (int i = 0; i < 16; i++) {
    char name[2] = {'x', digits[i]};
    CHECK(join(room, (struct chat_text){name, 2}, (uintptr_t)i) >= 0);
  }
  CHECK(room_count(room) == 16);
  for (int i = 0; i < 16; i++) {
    char name[2] = {'x', digits[i]};
    CHECK(join(room, (struct chat_text){name, 2}, 0) == -1);
  }
  free(room);
}

static void test_name_lengths(void) {
  struct room *room = new_room(4);
  char longest[CHAT_NAME_MAX_BYTES + 1];
  memset(longest, 'n', sizeof longest);
  CHECK(join(room, (struct chat_text){longest, 0}, 1) == -1);
  CHECK(join(room, (struct chat_text){longest, CHAT_NAME_MAX_BYTES + 1}, 1) ==
        -1);
  int member = join(room, (struct chat_text){longest, CHAT_NAME_MAX_BYTES}, 1);
  CHECK(member >= 0);
  struct chat_text name = room_member_name(room, member);
  CHECK_EQ_BYTES(name.bytes, name.length, longest, CHAT_NAME_MAX_BYTES);
  CHECK(room_count(room) == 1);
  free(room);
}

static void test_full(void) {
  struct room *room = new_room(3);
  int first = join(room, TEXT("a"), 1);
  CHECK(join(room, TEXT("b"), 2) >= 0);
  CHECK(join(room, TEXT("c"), 3) >= 0);
  CHECK(join(room, TEXT("d"), 4) == -1);
  CHECK(room_count(room) == 3);
  room_leave(room, first);
  CHECK(join(room, TEXT("d"), 4) >= 0);
  CHECK(join(room, TEXT("e"), 5) == -1);

  /* A room for nobody refuses everyone. */
  struct room *empty = new_room(0);
  CHECK(join(empty, TEXT("a"), 1) == -1);
  CHECK(room_count(empty) == 0);
  free(empty);
  free(room);
}

static void test_names_listing(void) {
  struct byte_buffer names = {0};
  struct room *room = new_room(4);
  names_of(room, &names);
  CHECK_EQ_TEXT(names, "Users here:\r\n");
  join(room, TEXT("ada"), 1);
  int bob = join(room, TEXT("bob"), 2);
  join(room, TEXT("caf\xC3\xA9"), 3);
  names_of(room, &names);
  CHECK_EQ_TEXT(names, "Users here:\r\n ada\r\n bob\r\n caf\xC3\xA9\r\n");
  room_leave(room, bob);
  join(room, TEXT("bob"), 4);
  names_of(room, &names);
  CHECK_EQ_TEXT(names, "Users here:\r\n ada\r\n caf\xC3\xA9\r\n bob\r\n");
  free(room);
  buffer_free(&names);
}

/* Deliveries, as "owner:line" pieces; and optionally who to drop. */
struct deliveries {
  struct room *room;
  struct byte_buffer log;
  const char *line_bytes; /* the pointer every delivery must hand over */
  int members[16];        /* owner -> member index, to remove by owner */
  bool drop[16];          /* owner is removed when it is handed a line */
};

static void deliver(void *context, uintptr_t owner, struct chat_text line) {
  struct deliveries *d = context;
  char piece[16];
  snprintf(piece, sizeof piece, "%u:", (unsigned)owner);
  buffer_append_string(&d->log, piece);
  buffer_append(&d->log, line.bytes, line.length);
  CHECK(line.bytes == d->line_bytes); /* formatted once, shared by all */
  if (owner < 16 && d->drop[owner])
    room_leave(d->room, d->members[owner]); /* a slow client is dropped */
}

static void test_broadcast(void) {
  struct deliveries d = {0};
  d.room = new_room(8);
  struct chat_text line = TEXT("x\r\n");
  d.line_bytes = line.bytes;

  room_broadcast(d.room, line, deliver, &d);
  CHECK(d.log.length == 0); /* nobody here */

  for (unsigned owner = 1; owner <= 5; owner++) {
    char name[8];
    snprintf(name, sizeof name, "u%u", owner);
    d.members[owner] =
        join(d.room, (struct chat_text){name, strlen(name)}, owner);
  }
  /* Order of registration, not of slots: move 1 to the end. */
  room_leave(d.room, d.members[1]);
  d.members[1] = join(d.room, TEXT("u1"), 1);
  room_broadcast(d.room, line, deliver, &d);
  CHECK_EQ_TEXT(d.log, "2:x\r\n3:x\r\n4:x\r\n5:x\r\n1:x\r\n");

  /* Each of 2, 5 and 1 (the last) is removed while it is handed the line;
   * everyone still gets it exactly once, in order. */
  buffer_clear(&d.log);
  d.drop[2] = d.drop[5] = d.drop[1] = true;
  room_broadcast(d.room, line, deliver, &d);
  CHECK_EQ_TEXT(d.log, "2:x\r\n3:x\r\n4:x\r\n5:x\r\n1:x\r\n");
  CHECK(room_count(d.room) == 2);
  struct byte_buffer order = {0};
  order_of(d.room, &order);
  CHECK_EQ_TEXT(order, "u3 u4");

  /* Everyone is removed during one broadcast. */
  buffer_clear(&d.log);
  d.drop[3] = d.drop[4] = true;
  room_broadcast(d.room, line, deliver, &d);
  CHECK_EQ_TEXT(d.log, "3:x\r\n4:x\r\n");
  CHECK(room_count(d.room) == 0);
  CHECK(room_first(d.room) == -1);

  free(d.room);
  buffer_free(&d.log);
  buffer_free(&order);
}

/* A model of the room: the members in registration order, each as the
 * number of its name in a pool and the index the room gave it. */
struct model {
  int *pool_index;
  int *member;
  size_t count;
};

static void name_of(int pool_index, char name[16]) {
  snprintf(name, 16, "user%d", pool_index);
}

/* The NAMES answer the model expects, and the owners checked on the way. */
static void model_names(const struct model *model, const struct room *room,
                        struct byte_buffer *out) {
  buffer_clear(out);
  buffer_append_string(out, "Users here:\r\n");
  for (size_t i = 0; i < model->count; i++) {
    char name[16];
    name_of(model->pool_index[i], name);
    buffer_append_string(out, " ");
    buffer_append_string(out, name);
    buffer_append_string(out, "\r\n");
    CHECK(room_owner(room, model->member[i]) ==
          (uintptr_t)model->pool_index[i]);
  }
}

/* Random joins (of new names and of names present) and leaves (anywhere in
 * the order), each checked against the model. The hash table has about as
 * many buckets as the room has slots, so near full many names share a
 * bucket, and leaves cut those chains at the front, middle and end. */
static void run_against_model(size_t capacity, int pool, int steps) {
  struct room *room = new_room(capacity);
  struct model model = {calloc(capacity, sizeof(int)),
                        calloc(capacity, sizeof(int)), 0};
  bool *present = calloc((size_t)pool, sizeof *present);
  struct test_random random = {0xC0FFEEULL + capacity};
  struct byte_buffer expected = {0}, actual = {0};
  unsigned long mismatches = 0;

  for (int step = 0; step < steps && mismatches < 5; step++) {
    /* Mostly joins until the room is full, then as many leaves as joins. */
    bool leave = model.count > 0 &&
                 (model.count == capacity || random_below(&random, 100) < 45);
    if (leave) {
      size_t at = random_below(&random, model.count);
      room_leave(room, model.member[at]);
      present[model.pool_index[at]] = false;
      size_t after = model.count - at - 1;
      memmove(&model.pool_index[at], &model.pool_index[at + 1],
              after * sizeof(int));
      memmove(&model.member[at], &model.member[at + 1], after * sizeof(int));
      model.count--;
    } else {
      int pool_index = (int)random_below(&random, (size_t)pool);
      char name[16];
      name_of(pool_index, name);
      const char *stored;
      int member = room_join(room, (struct chat_text){name, strlen(name)},
                             (uintptr_t)pool_index, &stored);
      if (present[pool_index]) {
        mismatches += !CHECK(member == -1); /* taken */
      } else if (CHECK(member >= 0)) {
        present[pool_index] = true;
        model.pool_index[model.count] = pool_index;
        model.member[model.count] = member;
        model.count++;
      } else {
        mismatches++;
      }
    }
    mismatches += !CHECK(room_count(room) == model.count);
    /* The whole order now and then: each check walks every member. */
    if (step % 97 == 0 || step == steps - 1) {
      model_names(&model, room, &expected);
      names_of(room, &actual);
      mismatches += !CHECK_EQ_BYTES(actual.bytes, actual.length, expected.bytes,
                                    expected.length);
    }
  }
  if (!CHECK(mismatches == 0))
    fprintf(stderr, "  against the model, capacity %zu\n", capacity);
  free(present);
  free(model.pool_index);
  free(model.member);
  free(room);
  buffer_free(&expected);
  buffer_free(&actual);
}

/* The join and leave a model's step hooks use: the member's index kept in
 * the caller's record, -1 while not in the room. */
static void test_join_leave_member(void) {
  struct room *room = new_room(2);
  int ada = -1, again = -1;
  const char *stored = room_join_member(room, TEXT("ada"), 1, &ada);
  CHECK(stored != NULL && ada >= 0);
  CHECK(room_join_member(room, TEXT("ada"), 2, &again) == NULL);
  CHECK(again == -1); /* a name taken leaves the index alone */
  CHECK(room_count(room) == 1);
  room_leave_member(room, &ada);
  CHECK(ada == -1 && room_count(room) == 0);
  free(room);
}

static void test_against_model(void) {
  run_against_model(16, 48, 20000);
  run_against_model(1000, 3000, 60000);
}

int main(void) {
  test_room_size();
  test_join_leave_order();
  test_names_taken();
  test_names_differing_at_the_end();
  test_name_lengths();
  test_full();
  test_names_listing();
  test_broadcast();
  test_join_leave_member();
  test_against_model();
  return check_report();
}
