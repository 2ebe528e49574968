/* The log never waits (common/os/log.c, docs/PROTOCOL.md section 1).
 *
 * Each case runs a child process whose standard error is something nobody
 * reads: a pipe (written by the child and by four processes it forks after
 * log_open, as chat-forking's children do), a datagram socket, a terminal.
 * The child logs far more than that can hold, and must be done within a
 * deadline (a log that waits would hang it). Then the parent reads what
 * arrived, lets the child log one more line, and finds it preceded by
 * `N log lines dropped`. For the pipe and the socket, which take a line
 * whole or not at all, every line is accounted for: the lines read plus N
 * make the lines logged. The child also checks that descriptor 2's own
 * flags (shared with whoever started it) were left alone. Then a regular
 * file, which takes everything (and shows the departure causes' words), and
 * --quiet, which takes nothing. */
#include "check.h"
#include "os/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINES_PER_PROCESS 3000
#define WORKERS 4
#define DEADLINE_MILLISECONDS 10000
#define MAX_OUTPUT (4 << 20)

enum child_status { CHILD_OK = 0, CHILD_FLAGS_CHANGED = 3, CHILD_FAILED = 4 };

static long long now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1000LL + now.tv_nsec / 1000000;
}

/* Waits until fd is readable, or the deadline passes: true if readable. */
static bool wait_readable(int fd, long long deadline) {
  for (int tries = 0; tries < 1000; tries++) {
    long long left = deadline - now_ms();
    if (left <= 0)
      return false;
    struct pollfd watched = {.fd = fd, .events = POLLIN};
    int ready = poll(&watched, 1, (int)left);
    if (ready > 0)
      return true;
    if (ready < 0 && errno != EINTR)
      return false;
  }
  return false;
}

/* Reads what waits in fd (non-blocking), appending to buffer. */
static void read_waiting(int fd, struct byte_buffer *buffer) {
  char chunk[65536];
  for (int reads = 0; reads < MAX_OUTPUT / 1024; reads++) {
    ssize_t got = read(fd, chunk, sizeof chunk);
    if (got <= 0)
      return;
    buffer_append(buffer, chunk, (size_t)got);
  }
}

static void log_lines(const char *who, int count) {
  for (int i = 0; i < count; i++)
    log_line("%s line %d, long enough to fill a pipe soon", who, i);
}

/* The child: stderr is already the thing nobody reads. Logs, from itself
 * and (with workers) from processes forked after log_open; says "done" on
 * `done`, waits for a byte on `go`, logs "final" and exits. */
static _Noreturn void child(int done, int go, bool workers) {
  int flags_before = fcntl(STDERR_FILENO, F_GETFL);
  log_open(false);
  log_lines("child", LINES_PER_PROCESS);
  if (workers) {
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
      pids[w] = fork();
      if (pids[w] == 0) {
        char who[16];
        snprintf(who, sizeof who, "worker%d", w);
        log_lines(who, LINES_PER_PROCESS);
        _exit(0);
      }
    }
    for (int w = 0; w < WORKERS; w++) {
      int status;
      if (pids[w] < 0 || waitpid(pids[w], &status, 0) != pids[w] ||
          !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        _exit(CHILD_FAILED);
    }
  }
  if (write(done, "d", 1) != 1)
    _exit(CHILD_FAILED);
  char byte;
  if (read(go, &byte, 1) != 1)
    _exit(CHILD_FAILED);
  log_line("final");
  _exit(fcntl(STDERR_FILENO, F_GETFL) == flags_before ? CHILD_OK
                                                      : CHILD_FLAGS_CHANGED);
}

struct run {
  struct byte_buffer before; /* what arrived while the child logged */
  struct byte_buffer after;  /* what arrived after "go" */
  bool done_in_time;
  int status;
};

/* Runs child() with `sink` (the child's end) as its stderr; the parent
 * reads `source`. */
static struct run run_child(int sink, int source, bool workers) {
  struct run run = {0};
  int done[2], go[2];
  if (pipe(done) < 0 || pipe(go) < 0) {
    perror("pipe");
    exit(EXIT_FAILURE);
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(EXIT_FAILURE);
  }
  if (pid == 0) {
    setpgid(0, 0); /* a group of its own, to end with its workers */
    close(source);
    close(done[0]);
    close(go[1]);
    if (dup2(sink, STDERR_FILENO) < 0)
      _exit(CHILD_FAILED);
    close(sink);
    child(done[1], go[0], workers);
  }
  close(sink);
  close(done[1]);
  close(go[0]);
  fcntl(source, F_SETFL, fcntl(source, F_GETFL) | O_NONBLOCK);
  run.done_in_time = wait_readable(done[0], now_ms() + DEADLINE_MILLISECONDS);
  if (!run.done_in_time) { /* stuck in a write, its workers too */
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  } else {
    read_waiting(source, &run.before);
    if (write(go[1], "g", 1) != 1)
      perror("write");
    /* Until "final" arrives, or the deadline. */
    long long deadline = now_ms() + DEADLINE_MILLISECONDS;
    while (wait_readable(source, deadline)) {
      read_waiting(source, &run.after);
      if (run.after.length > 0 &&
          memmem(run.after.bytes, run.after.length, "final", 5))
        break;
    }
  }
  int status;
  waitpid(pid, &status, 0);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  close(done[0]);
  close(go[1]);
  close(source);
  return run;
}

static size_t count_text(const struct byte_buffer *text, const char *what) {
  size_t count = 0, length = strlen(what);
  for (size_t i = 0; i + length <= text->length; i++)
    count += memcmp(text->bytes + i, what, length) == 0;
  return count;
}

/* Every line whole: a timestamp first, a line end last. */
static bool lines_whole(const struct byte_buffer *text) {
  size_t start = 0;
  for (size_t i = 0; i < text->length; i++) {
    if (text->bytes[i] != '\n')
      continue;
    if (i - start < 25 || text->bytes[start + 4] != '-' ||
        text->bytes[start + 10] != 'T' || text->bytes[start + 23] != 'Z')
      return false;
    start = i + 1;
  }
  return start == text->length;
}

/* The sum of the counts in "N log lines dropped" (or "1 log line
 * dropped"), or -1 when there is none. */
static long dropped_count(const struct byte_buffer *text) {
  static const char marker[] = " log line";
  long total = -1;
  for (size_t i = 0; i + sizeof marker - 1 <= text->length; i++) {
    if (memcmp(text->bytes + i, marker, sizeof marker - 1) != 0)
      continue;
    size_t digits = i;
    while (digits > 0 && text->bytes[digits - 1] >= '0' &&
           text->bytes[digits - 1] <= '9')
      digits--;
    if (digits == i)
      continue;
    total = (total < 0 ? 0 : total) + strtol(text->bytes + digits, NULL, 10);
  }
  return total;
}

/* A pipe or a datagram socket: whole lines or nothing, all accounted for. */
static void check_accounted(const char *what, struct run *run,
                            size_t processes) {
  size_t logged = processes * LINES_PER_PROCESS;
  bool ok = CHECK(run->done_in_time);
  ok &= CHECK(run->status == CHILD_OK);
  ok &= CHECK(lines_whole(&run->before) && lines_whole(&run->after));
  size_t written = count_text(&run->before, " line ") +
                   count_text(&run->after, " line ") -
                   count_text(&run->before, " log line ") -
                   count_text(&run->after, " log line ");
  long dropped = dropped_count(&run->after);
  ok &= CHECK(dropped > 0);
  ok &= CHECK(dropped_count(&run->before) == -1); /* nothing drained */
  ok &= CHECK(written + (size_t)(dropped > 0 ? dropped : 0) == logged);
  ok &= CHECK(count_text(&run->after, "final") == 1);
  if (!ok)
    fprintf(stderr,
            "  %s: done in time %d, status %d, %zu bytes then %zu, %zu "
            "lines written, %ld dropped, %zu logged\n",
            what, run->done_in_time, run->status, run->before.length,
            run->after.length, written, dropped, logged);
  buffer_free(&run->before);
  buffer_free(&run->after);
}

static void test_pipe_nobody_reads(void) {
  int ends[2];
  if (pipe(ends) < 0)
    exit(EXIT_FAILURE);
  struct run run = run_child(ends[1], ends[0], true);
  check_accounted("pipe", &run, 1 + WORKERS);
}

static void test_datagram_socket_nobody_reads(void) {
  int ends[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, ends) < 0)
    exit(EXIT_FAILURE);
  struct run run = run_child(ends[1], ends[0], false);
  check_accounted("datagram socket", &run, 1);
}

/* A terminal nobody reads (a stopped `less`, Ctrl-S): may take part of a
 * line, so only: done in time, the count logged, the final line there. */
static void test_terminal_nobody_reads(void) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
    fprintf(stderr, "  no pseudo-terminal here: terminal case skipped\n");
    return;
  }
  int slave = open(ptsname(master), O_WRONLY | O_NOCTTY);
  if (slave < 0) {
    perror("open ptsname");
    exit(EXIT_FAILURE);
  }
  struct run run = run_child(slave, master, false);
  bool ok = CHECK(run.done_in_time);
  ok &= CHECK(run.status == CHILD_OK);
  ok &= CHECK(dropped_count(&run.after) > 0);
  ok &= CHECK(count_text(&run.after, "final") == 1);
  if (!ok)
    fprintf(stderr, "  terminal: done in time %d, status %d, %zu bytes\n",
            run.done_in_time, run.status, run.before.length);
  buffer_free(&run.before);
  buffer_free(&run.after);
}

/* Runs child() with a regular file as stderr, then reads the file. */
static struct byte_buffer run_with_file(bool quiet) {
  char path[] = "/tmp/test_log_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    exit(EXIT_FAILURE);
  unlink(path);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, STDERR_FILENO);
    log_open(quiet);
    log_lines("file", LINES_PER_PROCESS);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons(5000),
                                  .sin_addr.s_addr = htonl(0x7F000001)};
    struct peer_address peer = peer_address_from((struct sockaddr *)&address);
    log_departed(&peer, "ada", 3, DEPARTURE_ERROR);
    log_departed(&peer, "bob", 3, DEPARTURE_SLOW);
    log_departed(&peer, NULL, 0, DEPARTURE_FAILED);
    log_line("final");
    _exit(0);
  }
  int status;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  struct byte_buffer text = {0};
  char chunk[65536];
  for (off_t offset = 0; offset < MAX_OUTPUT;) {
    ssize_t got = pread(fd, chunk, sizeof chunk, offset);
    if (got <= 0)
      break;
    buffer_append(&text, chunk, (size_t)got);
    offset += got;
  }
  close(fd);
  return text;
}

static void test_regular_file_takes_everything(void) {
  struct byte_buffer text = run_with_file(false);
  CHECK(lines_whole(&text));
  CHECK(count_text(&text, " line ") == LINES_PER_PROCESS);
  CHECK(dropped_count(&text) == -1);
  CHECK(count_text(&text, "final") == 1);
  /* A departure's cause: out of memory is not "slow", nor "error". */
  CHECK(count_text(&text, "127.0.0.1:5000 (ada) departed: out of memory\n") ==
        1);
  CHECK(count_text(&text, "127.0.0.1:5000 (bob) departed: slow\n") == 1);
  CHECK(count_text(&text, "127.0.0.1:5000 left: failed\n") == 1);
  buffer_free(&text);
}

static void test_quiet_writes_nothing(void) {
  struct byte_buffer text = run_with_file(true);
  CHECK(text.length == 0);
  buffer_free(&text);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  test_pipe_nobody_reads();
  test_datagram_socket_nobody_reads();
  test_terminal_nobody_reads();
  test_regular_file_takes_everything();
  test_quiet_writes_nothing();
  return check_report();
}
