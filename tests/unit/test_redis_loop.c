/* hiredis on the hand-written loop (coroutine/redis_loop.h), against a real
 * redis-server that the test starts on a free loopback port.
 *
 * On the loop: an asynchronous connect, SET and GET (a 1 MiB value too,
 * which takes many reads), a pipeline of 1000 INCRs whose replies come back
 * in order, a BLPOP answered when another connection pushes, a clean
 * disconnect; a connect to a port nobody listens on, refused through the
 * connect callback; redisAsyncFree() from inside a reply callback, while
 * commands are still being written, and outside any callback; attach
 * refusing a second adapter and a descriptor the loop cannot watch. After
 * each, the context's descriptor is no longer watched. (Run it under
 * AddressSanitizer too: a freed context touched by the adapter is caught.)
 *
 * The server is killed at the end, on failure too: by an atexit handler on
 * any exit, and by the kernel (its parent-death signal) on any other death.
 * Without redis-server on PATH the test is skipped (exit 77). Every wait has
 * a deadline. */
#include "check.h"
#include "loop.h"
#include "os/clock.h"
#include "redis_loop.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SKIPPED 77             /* ctest's SKIP_RETURN_CODE */
#define STARTUP_LIMIT_MS 10000 /* for redis-server to answer PING */
#define STEP_LIMIT_MS 4000     /* for each exchange; 10 waits < ctest's 60 s */
#define TURN_LIMIT_MS 100

/* ---- The server ------------------------------------------------------- */

static pid_t server_pid = -1;
static int server_port;

/* atexit: every ordinary exit, failed checks included. */
static void stop_server(void) {
  if (server_pid > 0) {
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0); /* SIGKILL cannot be held off */
    server_pid = -1;
  }
}

static bool on_path(const char *name) {
  const char *path = getenv("PATH");
  if (!path)
    path = "/usr/bin:/bin";
  for (const char *entry = path;;) {
    const char *end = strchrnul(entry, ':');
    char candidate[4096];
    int length = end > entry ? (int)(end - entry) : 1;
    int written = snprintf(candidate, sizeof candidate, "%.*s/%s", length,
                           end > entry ? entry : ".", name);
    if (written > 0 && (size_t)written < sizeof candidate &&
        access(candidate, X_OK) == 0)
      return true;
    if (*end == '\0')
      return false;
    entry = end + 1;
  }
}

/* A socket bound to a loopback port of the kernel's choosing, not
 * listening: while it stays open nobody else takes the port, and a connect
 * to it is refused. -1 on failure. */
static int bind_loopback(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t size = sizeof address;
  if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) < 0 ||
      getsockname(fd, (struct sockaddr *)&address, &size) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *port = ntohs(address.sin_port);
  return fd;
}

/* Until it answers PING, it exits, or the deadline passes. */
static bool server_answers(long long deadline) {
  const struct timespec pause = {0, 10 * 1000 * 1000};
  while (now_milliseconds() < deadline) {
    if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
      server_pid = -1; /* it failed: the port was taken meanwhile? */
      return false;
    }
    redisContext *probe = redisConnectWithTimeout(
        "127.0.0.1", server_port, (struct timeval){0, 200 * 1000});
    redisReply *reply =
        probe && !probe->err ? redisCommand(probe, "PING") : NULL;
    bool answered = reply && reply->type == REDIS_REPLY_STATUS &&
                    strcmp(reply->str, "PONG") == 0;
    if (reply)
      freeReplyObject(reply);
    if (probe)
      redisFree(probe);
    if (answered)
      return true;
    nanosleep(&pause, NULL); /* between attempts; the deadline bounds them */
  }
  return false;
}

/* Starts redis-server on a free port, without persistence. The port is
 * free when chosen but not held (redis-server must bind it), so a start
 * that lost it to someone else is tried again, three times at most. */
static bool start_server(void) {
  for (int attempt = 0; attempt < 3; attempt++) {
    int probe = bind_loopback(&server_port);
    if (probe < 0)
      return false;
    close(probe);
    char port[16];
    snprintf(port, sizeof port, "%d", server_port);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
      return false;
    if (pid == 0) {
      /* Dies with the test, however the test dies (a signal, a sanitizer's
       * report): the kernel sends SIGKILL when the parent goes. */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent)
        _exit(127); /* the parent went before prctl */
      int null = open("/dev/null", O_WRONLY);
      if (null >= 0)
        dup2(null, STDOUT_FILENO);
      execlp("redis-server", "redis-server", "--port", port, "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel",
             "warning", (char *)NULL);
      _exit(127);
    }
    server_pid = pid;
    if (server_answers(now_milliseconds() + STARTUP_LIMIT_MS))
      return true;
    stop_server();
  }
  return false;
}

/* ---- On the loop ------------------------------------------------------ */

/* Turns the loop until *done, for at most STEP_LIMIT_MS. */
static bool run_until(struct loop *loop, const bool *done) {
  long long deadline = now_milliseconds() + STEP_LIMIT_MS;
  while (!*done) {
    long long left = deadline - now_milliseconds();
    if (left <= 0)
      return false;
    loop_turn(loop, left < TURN_LIMIT_MS ? (int)left : TURN_LIMIT_MS);
  }
  return true;
}

/* What the connect and disconnect callbacks heard: the context's data. */
struct connection {
  bool connect_heard, disconnect_heard;
  int connect_status, disconnect_status;
  char error[128]; /* errstr, when the connect failed */
};

static void on_connect(const redisAsyncContext *redis, int status) {
  struct connection *connection = redis->data;
  connection->connect_heard = true;
  connection->connect_status = status;
  if (status != REDIS_OK)
    snprintf(connection->error, sizeof connection->error, "%s",
             redis->errstr ? redis->errstr : "");
}

static void on_disconnect(const redisAsyncContext *redis, int status) {
  struct connection *connection = redis->data;
  connection->disconnect_heard = true;
  connection->disconnect_status = status;
}

/* A context connecting to `port`, attached to the loop, with both
 * callbacks reporting to `connection`. NULL (and a failed check) if not. */
static redisAsyncContext *open_context(struct loop *loop, int port,
                                       struct connection *connection) {
  *connection = (struct connection){0};
  redisAsyncContext *redis = redisAsyncConnect("127.0.0.1", port);
  if (!CHECK(redis && !redis->err)) {
    if (redis)
      redisAsyncFree(redis);
    return NULL;
  }
  redis->data = connection;
  CHECK(redis_loop_attach(redis, loop) == 0);
  CHECK(redisAsyncSetConnectCallback(redis, on_connect) == REDIS_OK);
  CHECK(redisAsyncSetDisconnectCallback(redis, on_disconnect) == REDIS_OK);
  return redis;
}

static bool is_status(const redisReply *reply, const char *text) {
  return reply && reply->type == REDIS_REPLY_STATUS &&
         strcmp(reply->str, text) == 0;
}

static bool is_string(const redisReply *reply, const char *bytes,
                      size_t length) {
  return reply && reply->type == REDIS_REPLY_STRING && reply->len == length &&
         memcmp(reply->str, bytes, length) == 0;
}

/* ---- SET and GET ------------------------------------------------------ */

enum { BIG = 1 << 20 };
static char big[BIG];

struct exchange {
  bool set, got, big_set, big_got, done;
};

static void on_set(redisAsyncContext *redis, void *reply, void *data) {
  (void)redis;
  ((struct exchange *)data)->set = is_status(reply, "OK");
}

static void on_get(redisAsyncContext *redis, void *reply, void *data) {
  (void)redis;
  ((struct exchange *)data)->got = is_string(reply, "value", 5);
}

static void on_big_set(redisAsyncContext *redis, void *reply, void *data) {
  (void)redis;
  ((struct exchange *)data)->big_set = is_status(reply, "OK");
}

/* The last reply: the callback asks for a clean disconnect. */
static void on_big_get(redisAsyncContext *redis, void *reply, void *data) {
  struct exchange *exchange = data;
  exchange->big_got = is_string(reply, big, BIG);
  exchange->done = true;
  redisAsyncDisconnect(redis);
}

static void set_and_get(struct loop *loop) {
  for (size_t i = 0; i < BIG; i++)
    big[i] = (char)('a' + i % 26);
  struct connection connection;
  redisAsyncContext *redis = open_context(loop, server_port, &connection);
  if (!redis)
    return;
  int fd = redis->c.fd;
  CHECK(redis_loop_attach(redis, loop) == -1); /* it has one already */
  /* Queued before the connect completes: hiredis sends them once it has. */
  struct exchange exchange = {0};
  redisAsyncCommand(redis, on_set, &exchange, "SET key value");
  redisAsyncCommand(redis, on_get, &exchange, "GET key");
  redisAsyncCommand(redis, on_big_set, &exchange, "SET big %b", big,
                    (size_t)BIG);
  redisAsyncCommand(redis, on_big_get, &exchange, "GET big");
  CHECK(run_until(loop, &exchange.done));
  CHECK(connection.connect_heard && connection.connect_status == REDIS_OK);
  CHECK(exchange.set && exchange.got && exchange.big_set && exchange.big_got);
  CHECK(run_until(loop, &connection.disconnect_heard));
  CHECK(connection.disconnect_status == REDIS_OK);
  CHECK(loop_watched(loop, fd) == 0);
}

/* ---- A pipeline ------------------------------------------------------ */

enum { PIPELINE = 1000 };

struct pipeline {
  int heard, out_of_order;
  bool done;
};

/* The privdata of the i-th INCR (i from 1): its reply must be i, and be
 * the i-th heard. */
static struct incr {
  struct pipeline *pipeline;
  long long i;
} incrs[PIPELINE];

static void on_incr(redisAsyncContext *redis, void *reply, void *data) {
  const redisReply *count = reply;
  const struct incr *incr = data;
  struct pipeline *pipeline = incr->pipeline;
  pipeline->heard++;
  if (!count || count->type != REDIS_REPLY_INTEGER ||
      count->integer != incr->i || pipeline->heard != incr->i)
    pipeline->out_of_order++;
  if (incr->i == PIPELINE) {
    pipeline->done = true;
    redisAsyncDisconnect(redis);
  }
}

static void pipeline_in_order(struct loop *loop) {
  struct connection connection;
  redisAsyncContext *redis = open_context(loop, server_port, &connection);
  if (!redis)
    return;
  int fd = redis->c.fd;
  struct pipeline pipeline = {0};
  redisAsyncCommand(redis, NULL, NULL, "DEL counter");
  for (int i = 0; i < PIPELINE; i++) {
    incrs[i] = (struct incr){&pipeline, i + 1};
    redisAsyncCommand(redis, on_incr, &incrs[i], "INCR counter");
  }
  CHECK(run_until(loop, &pipeline.done));
  CHECK(pipeline.heard == PIPELINE && pipeline.out_of_order == 0);
  CHECK(run_until(loop, &connection.disconnect_heard));
  CHECK(connection.disconnect_status == REDIS_OK);
  CHECK(loop_watched(loop, fd) == 0);
}

/* ---- A blocking command ----------------------------------------------- */

/* The waiter sends BLPOP with a timeout of 1 s; the pusher asks the server
 * (INFO clients) until it counts the waiter as blocked, then pushes. The
 * BLPOP's reply is what was pushed, not the timeout's nil. */
struct blocking {
  int polls;
  bool popped, pushed, waiter_done, pusher_done;
};

static void on_pop(redisAsyncContext *redis, void *reply, void *data) {
  struct blocking *blocking = data;
  const redisReply *popped = reply;
  blocking->popped = popped && popped->type == REDIS_REPLY_ARRAY &&
                     popped->elements == 2 &&
                     is_string(popped->element[0], "list", 4) &&
                     is_string(popped->element[1], "pushed", 6);
  blocking->waiter_done = true;
  redisAsyncDisconnect(redis);
}

static void on_push(redisAsyncContext *redis, void *reply, void *data) {
  struct blocking *blocking = data;
  const redisReply *length = reply;
  blocking->pushed =
      length && length->type == REDIS_REPLY_INTEGER && length->integer == 1;
  blocking->pusher_done = true;
  redisAsyncDisconnect(redis);
}

static void on_info(redisAsyncContext *redis, void *reply, void *data) {
  struct blocking *blocking = data;
  const redisReply *info = reply;
  if (info && info->type == REDIS_REPLY_STRING &&
      strstr(info->str, "blocked_clients:1\r\n")) {
    redisAsyncCommand(redis, on_push, blocking, "RPUSH list pushed");
  } else if (info && ++blocking->polls < 10000) {
    redisAsyncCommand(redis, on_info, blocking, "INFO clients");
  } else { /* never blocked: the BLPOP's nil fails the check */
    blocking->pusher_done = true;
    redisAsyncDisconnect(redis);
  }
}

static void blocking_pop(struct loop *loop) {
  struct connection waiter_connection, pusher_connection;
  redisAsyncContext *waiter =
      open_context(loop, server_port, &waiter_connection);
  redisAsyncContext *pusher =
      open_context(loop, server_port, &pusher_connection);
  if (!waiter || !pusher)
    return;
  int waiter_fd = waiter->c.fd, pusher_fd = pusher->c.fd;
  struct blocking blocking = {0};
  redisAsyncCommand(waiter, NULL, NULL, "DEL list");
  redisAsyncCommand(waiter, on_pop, &blocking, "BLPOP list 1");
  redisAsyncCommand(pusher, on_info, &blocking, "INFO clients");
  CHECK(run_until(loop, &blocking.waiter_done));
  CHECK(run_until(loop, &blocking.pusher_done));
  CHECK(blocking.popped && blocking.pushed);
  CHECK(run_until(loop, &waiter_connection.disconnect_heard));
  CHECK(run_until(loop, &pusher_connection.disconnect_heard));
  CHECK(loop_watched(loop, waiter_fd) == 0);
  CHECK(loop_watched(loop, pusher_fd) == 0);
}

/* ---- A connect refused ------------------------------------------------ */

static void count_null_reply(redisAsyncContext *redis, void *reply,
                             void *data) {
  (void)redis;
  if (!reply)
    ++*(int *)data;
}

static void connect_refused(struct loop *loop) {
  int port = 0;
  int holder = bind_loopback(&port); /* bound, not listening: refused */
  if (!CHECK(holder >= 0))
    return;
  struct connection connection = {0};
  redisAsyncContext *redis = redisAsyncConnect("127.0.0.1", port);
  if (!CHECK(redis != NULL)) {
    close(holder);
    return;
  }
  if (redis->err) {
    /* A kernel may refuse a loopback connect at once: hiredis then says so
     * at once, and the loop has nothing to do. (Linux answers later.) */
    CHECK(strstr(redis->errstr, "refused") != NULL);
    printf("note: the connect was refused at once, not through the loop\n");
    redisAsyncFree(redis);
    close(holder);
    return;
  }
  int fd = redis->c.fd;
  redis->data = &connection;
  CHECK(redis_loop_attach(redis, loop) == 0);
  redisAsyncSetConnectCallback(redis, on_connect);
  redisAsyncSetDisconnectCallback(redis, on_disconnect);
  int null_replies = 0;
  redisAsyncCommand(redis, count_null_reply, &null_replies, "PING");
  /* hiredis frees the context after the connect callback: not touched. */
  CHECK(run_until(loop, &connection.connect_heard));
  CHECK(connection.connect_status == REDIS_ERR);
  CHECK(strstr(connection.error, "refused") != NULL);
  CHECK(null_replies == 1);            /* the queued PING's callback */
  CHECK(!connection.disconnect_heard); /* it never was connected */
  CHECK(loop_watched(loop, fd) == 0);
  close(holder);
}

/* ---- Freeing a context ------------------------------------------------ */

/* A pipeline of SETs large enough to be still on its way out when the
 * FREE_AT-th reply comes back, whose callback frees the context: hiredis
 * frees it once that callback returns, from inside the adapter's read
 * callback, with write interest armed. The other callbacks hear NULL. */
enum { SETS = 4000, VALUE = 4096, FREE_AT = 100 };
static char value[VALUE];

struct freeing {
  struct loop *loop;
  int fd, replies, null_replies, watched_at_free;
  bool freed;
};

static void free_at(redisAsyncContext *redis, void *reply, void *data) {
  struct freeing *freeing = data;
  if (!reply) {
    freeing->null_replies++;
    return;
  }
  if (++freeing->replies == FREE_AT) {
    freeing->watched_at_free = loop_watched(freeing->loop, freeing->fd);
    redisAsyncFree(redis);
    freeing->freed = true;
  }
}

static void free_inside_reply_callback(struct loop *loop) {
  memset(value, 'v', sizeof value);
  struct connection connection;
  redisAsyncContext *redis = open_context(loop, server_port, &connection);
  if (!redis)
    return;
  struct freeing freeing = {.loop = loop, .fd = redis->c.fd};
  for (int i = 0; i < SETS; i++)
    redisAsyncCommand(redis, free_at, &freeing, "SET key%d %b", i, value,
                      (size_t)VALUE);
  CHECK(run_until(loop, &freeing.freed));
  CHECK(freeing.replies == FREE_AT);
  CHECK(freeing.null_replies == SETS - FREE_AT);
  CHECK(connection.disconnect_heard &&
        connection.disconnect_status == REDIS_OK);
  CHECK(freeing.watched_at_free == (LOOP_READABLE | LOOP_WRITABLE));
  CHECK(loop_watched(loop, freeing.fd) == 0);
  /* The loop goes on: nothing is left of the freed context to call. */
  for (int turn = 0; turn < 3; turn++)
    CHECK(loop_turn(loop, 0) == 0);
}

/* Freed outside any callback, before it even connected: at once, with its
 * queued command's callback hearing NULL and no disconnect callback. */
static void free_outside_callbacks(struct loop *loop) {
  struct connection connection;
  redisAsyncContext *redis = open_context(loop, server_port, &connection);
  if (!redis)
    return;
  int fd = redis->c.fd;
  int null_replies = 0;
  redisAsyncCommand(redis, count_null_reply, &null_replies, "PING");
  CHECK(loop_watched(loop, fd) == (LOOP_READABLE | LOOP_WRITABLE));
  redisAsyncFree(redis);
  CHECK(null_replies == 1);
  CHECK(!connection.connect_heard && !connection.disconnect_heard);
  CHECK(loop_watched(loop, fd) == 0);
  CHECK(loop_turn(loop, 0) == 0);
}

/* ---- Attach refusing -------------------------------------------------- */

/* A loop for descriptors 0 to 2 cannot watch the context's socket: attach
 * says so, and leaves the context without an adapter. */
static void attach_refused(void) {
  struct loop *small = loop_create(3);
  if (!CHECK(small != NULL))
    return;
  redisAsyncContext *redis = redisAsyncConnect("127.0.0.1", server_port);
  if (CHECK(redis && !redis->err && redis->c.fd >= 3)) {
    errno = 0;
    CHECK(redis_loop_attach(redis, small) == -1 && errno == ERANGE);
    CHECK(redis->ev.data == NULL && redis->ev.cleanup == NULL);
  }
  if (redis)
    redisAsyncFree(redis);
  loop_destroy(small);
}

int main(void) {
  if (!on_path("redis-server")) {
    printf("skipped: redis-server not found\n");
    return SKIPPED;
  }
  /* hiredis sends with write(): a peer gone must be an error, not a death. */
  signal(SIGPIPE, SIG_IGN);
  atexit(stop_server);
  if (!start_server()) {
    fprintf(stderr, "redis-server did not answer PING within %d ms\n",
            STARTUP_LIMIT_MS);
    return EXIT_FAILURE;
  }
  struct loop *loop = loop_create(1024);
  if (!CHECK(loop != NULL))
    return check_report();
  set_and_get(loop);
  pipeline_in_order(loop);
  blocking_pop(loop);
  connect_refused(loop);
  free_inside_reply_callback(loop);
  free_outside_callbacks(loop);
  attach_refused();
  loop_destroy(loop);
  return check_report();
}
