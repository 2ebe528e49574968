/* How a line reaches standard error without ever blocking.
 *
 * Standard error is often a pipe (to a log shipper, to `less`) or a
 * terminal; a pipe nobody reads fills at 64 KiB, a terminal stops on
 * Ctrl-S, and a blocking write then freezes whoever logs: the event loop,
 * the accepting thread, a child before its welcome. So no line is ever
 * written in a way that can wait:
 *
 * - A pipe, a FIFO or a terminal is opened again through /proc/self/fd/2,
 *   with O_NONBLOCK. That gives the server an open file description of its
 *   own: setting O_NONBLOCK on descriptor 2 itself (or on a dup of it,
 *   which shares the flags) would change the description the shell and
 *   every other process on that pipe or terminal share, and make their
 *   writes fail with EAGAIN. A line that does not fit now fails at once.
 *   Writes of at most PIPE_BUF bytes to a pipe are atomic, all or nothing:
 *   with one write per line (a line is at most LOG_LINE_MAX bytes, far
 *   below PIPE_BUF), lines from the threads or processes of one server
 *   never mix, and a line is never cut.
 * - A socket (systemd's journal) is written with send(MSG_DONTWAIT), which
 *   is per call.
 * - Anything else (a regular file, which never makes a writer wait for a
 *   reader; or a pipe that cannot be opened again) is written after a poll
 *   with no timeout says it can take data. For a pipe that is a fallback
 *   with a small race (another writer may fill it between the poll and the
 *   write), taken only when /proc is missing.
 *
 * Simpler ways that are wrong: send(MSG_DONTWAIT) fails on pipes and
 * terminals (ENOTSOCK); a writer thread with a buffer would need a thread
 * in each of chat-forking's 10,000 processes; poll-then-write alone has the
 * race above, between the threads and processes of one server.
 *
 * A line that cannot be written at once is dropped and counted. The count
 * lives in a page shared by every process of the server (mapped before
 * chat-forking forks), and the next line that gets through carries it, in
 * the same write: `N log lines dropped`. */
#include "os/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The longest line, its end included; longer ones are cut. */
#define LOG_LINE_MAX 512
/* Tries at a write that a signal interrupted before it wrote anything. */
#define LOG_WRITE_TRIES 4

enum log_sink {
  SINK_OWN,    /* our own non-blocking description of a pipe or terminal */
  SINK_SOCKET, /* descriptor 2 is a socket: send(MSG_DONTWAIT) */
  SINK_POLLED, /* descriptor 2, written when poll says it can take data */
};

static struct {
  bool quiet;
  enum log_sink sink;
  int fd;
  atomic_ulong *dropped; /* lines not written, since the last one that was */
} log_state = {.sink = SINK_POLLED, .fd = STDERR_FILENO};

static atomic_ulong dropped_here; /* if the shared page cannot be mapped */

void log_open(bool quiet) {
  log_state.quiet = quiet;
  if (quiet)
    return;
  void *page = mmap(NULL, sizeof(atomic_ulong), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  log_state.dropped = page == MAP_FAILED ? &dropped_here : page;
  atomic_init(log_state.dropped, 0);
  struct stat status;
  if (fstat(STDERR_FILENO, &status) < 0)
    return; /* closed: every write fails, and is counted */
  if (S_ISSOCK(status.st_mode)) {
    log_state.sink = SINK_SOCKET;
    return;
  }
  if (!S_ISFIFO(status.st_mode) && !S_ISCHR(status.st_mode))
    return;
  int fd = open("/proc/self/fd/2",
                O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_APPEND);
  if (fd < 0)
    return; /* no /proc, or a pipe with no reader: written when polled */
  if (fd <= STDERR_FILENO) { /* 0 or 1 was closed: keep them free */
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    close(fd);
    if (moved < 0)
      return;
    fd = moved;
  }
  log_state.sink = SINK_OWN;
  log_state.fd = fd;
  /* A server in the background of a terminal with `stty tostop` would be
   * stopped by SIGTTOU at its first line, whatever O_NONBLOCK says: with
   * the signal ignored, the line is written (or dropped). */
  if (isatty(fd))
    signal(SIGTTOU, SIG_IGN);
}

void log_set_quiet(bool quiet) {
  log_open(quiet);
}

/* Writes the bytes now, or not at all; true when they were all written. A
 * terminal or a stream socket may take part of them: the rest is lost, and
 * the caller counts the line as dropped. */
static bool write_now(const char *bytes, size_t length) {
  for (int tries = 0; tries < LOG_WRITE_TRIES; tries++) {
    ssize_t written;
    if (log_state.sink == SINK_SOCKET) {
      written = send(log_state.fd, bytes, length, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      if (log_state.sink == SINK_POLLED) {
        struct pollfd can_write = {.fd = log_state.fd, .events = POLLOUT};
        if (poll(&can_write, 1, 0) != 1 || !(can_write.revents & POLLOUT))
          return false;
      }
      written = write(log_state.fd, bytes, length);
    }
    if (written >= 0)
      return (size_t)written == length;
    if (errno != EINTR)
      return false;
  }
  return false;
}

/* "2026-12-03T06:44:45.123Z ": the start of every line. */
static size_t format_time(char *text, size_t size) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm utc;
  gmtime_r(&now.tv_sec, &utc);
  size_t length = strftime(text, size, "%Y-%m-%dT%H:%M:%S", &utc);
  length += (size_t)snprintf(text + length, size - length, ".%03ldZ ",
                             now.tv_nsec / 1000000);
  return length;
}

void log_line(const char *format, ...) {
  if (log_state.quiet)
    return;
  /* Room for the count of dropped lines before the line itself: both go
   * out in one write, or neither does. */
  char text[2 * LOG_LINE_MAX];
  char *line = text + LOG_LINE_MAX;
  size_t length = format_time(line, LOG_LINE_MAX);
  va_list arguments;
  va_start(arguments, format);
  int added =
      vsnprintf(line + length, LOG_LINE_MAX - length, format, arguments);
  va_end(arguments);
  if (added > 0)
    length += (size_t)added < LOG_LINE_MAX - length ? (size_t)added
                                                    : LOG_LINE_MAX - length - 1;
  line[length++] = '\n';

  const char *start = line;
  unsigned long dropped =
      log_state.dropped ? atomic_exchange(log_state.dropped, 0) : 0;
  if (dropped > 0) {
    char count[LOG_LINE_MAX];
    size_t count_length = format_time(count, sizeof count);
    count_length += (size_t)snprintf(
        count + count_length, sizeof count - count_length,
        "%lu log line%s dropped: standard error could not take them at "
        "once\n",
        dropped, dropped == 1 ? "" : "s");
    start = line - count_length;
    memcpy(text + LOG_LINE_MAX - count_length, count, count_length);
  }
  if (!write_now(start, (size_t)(line + length - start)) && log_state.dropped)
    atomic_fetch_add(log_state.dropped, dropped + 1);
}

void log_accepted(const struct peer_address *peer) {
  char text[PEER_TEXT_SIZE];
  peer_address_format(peer, text);
  log_line("%s connected", text);
}

void log_refused(const struct peer_address *peer, const char *reason) {
  char text[PEER_TEXT_SIZE];
  peer_address_format(peer, text);
  log_line("%s refused: %s", text, reason);
}

void log_registered(const struct peer_address *peer, const char *name,
                    unsigned name_length) {
  char text[PEER_TEXT_SIZE];
  peer_address_format(peer, text);
  log_line("%s registered as %.*s", text, (int)name_length, name);
}

static const char *cause_text(enum departure_cause cause) {
  switch (cause) {
  case DEPARTURE_QUIT:
    return "quit";
  case DEPARTURE_CLOSED:
    return "closed";
  case DEPARTURE_SLOW:
    return "slow";
  case DEPARTURE_TIMEOUT:
    return "timeout";
  case DEPARTURE_SHUTDOWN:
    return "shutdown";
  case DEPARTURE_ERROR:
    return "out of memory";
  case DEPARTURE_FAILED:
    return "failed";
  case DEPARTURE_ROOM_LOST:
    return "room lost";
  }
  return "?";
}

void log_departed(const struct peer_address *peer, const char *name,
                  unsigned name_length, enum departure_cause cause) {
  char text[PEER_TEXT_SIZE];
  peer_address_format(peer, text);
  if (name)
    log_line("%s (%.*s) departed: %s", text, (int)name_length, name,
             cause_text(cause));
  else
    log_line("%s left: %s", text, cause_text(cause));
}

void log_shutting_down(int signal_number, size_t connections) {
  log_line("shutting down (%s): telling %zu connection%s",
           strsignal(signal_number), connections, connections == 1 ? "" : "s");
}
