/* chat-load: the benchmark's load generator, a client of docs/PROTOCOL.md.
 *
 * It opens N connections to one chat server, registers a user on each and
 * waits until every client has seen its own "User NAME arrived." line and
 * every later arrival. Then it runs workloads on the same connections:
 *
 *   connect     N clients connect and register; per-client latency from
 *               connect() to its own arrival line, and the rate.
 *   throughput  S senders, each with a window of W of its own messages in
 *               flight (one counts as done when its echo comes back);
 *               deliveries per second summed over all N receivers.
 *   latency     S senders on a fixed open-loop schedule of R messages per
 *               second in total; every message carries its scheduled send
 *               time and every receiver records now - scheduled, so a server
 *               that stalls is charged for every message it delayed (no
 *               coordinated omission).
 *
 * Every receiver checks every line it gets: each sender's messages must come
 * in sequence, once each, and the arrival lines must form one order seen by
 * all. Anything missing, duplicated, out of order or unexpected is counted
 * and fails the run.
 *
 * It is one thread around one epoll set, so that it costs far less than the
 * servers it measures, and it reports its own CPU time for every measured
 * window so anyone can check that. With --control it talks to the sweep
 * (sweep.py) on stdin/stdout: it prints "@mark NAME" at each boundary where
 * the sweep samples the server from /proc, keeps the load running, and takes
 * the boundary's counters as the midpoint of the moments before and after the
 * sweep answers "go". It prints "@result {json}" at the end. */
#include "histogram.h"
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef CHAT_VERSION
#define CHAT_VERSION "dev"
#endif

#define NS_PER_S INT64_C(1000000000)
#define LONGEST_LINE 8192            /* longer server lines are an error */
#define READ_CHUNK (256 * 1024)      /* one recv() at most */
#define READS_PER_EVENT 4            /* then let other sockets have a turn */
#define SEND_BACKLOG_LIMIT (4 << 20) /* bytes queued in a client, at most */
#define EVENTS_PER_WAIT 1024
#define SENDS_PER_TIMER 4096 /* scheduled sends per timer expiry, at most */
#define MAX_ERROR_KINDS 16

/* ------------------------------------------------------------------------ */
/* Options */

enum workload { WORKLOAD_THROUGHPUT = 1, WORKLOAD_LATENCY = 2 };

struct options {
  const char *host;
  int port;
  uint32_t clients;          /* N */
  uint32_t senders;          /* S */
  uint32_t window;           /* W, own messages in flight per sender */
  double rate;               /* R, latency messages per second in total */
  double warmup_s;           /* before each measured window */
  double duration_s;         /* each measured window */
  uint32_t min_fanouts;      /* throughput: messages a window must hold */
  double max_duration_s;     /* throughput: longest extended window */
  uint32_t message_bytes;    /* payload of a message line */
  uint32_t sources;          /* 127.0.0.x source addresses, 0 = automatic */
  uint32_t connect_parallel; /* connections being set up at once */
  double connect_timeout_s;
  double drain_timeout_s;
  double go_timeout_s;
  int rcvbuf; /* SO_RCVBUF per client, 0 = kernel default */
  unsigned workloads;
  bool control;
  bool quiet;
};

static struct options options = {
    .host = "127.0.0.1",
    .port = 0,
    .clients = 100,
    .senders = 10,
    .window = 8,
    .rate = 1000,
    .warmup_s = 1.0,
    .duration_s = 5.0,
    .min_fanouts = 20,
    .max_duration_s = 0, /* 0 = 6 x duration */
    .message_bytes = 32,
    .sources = 0,
    .connect_parallel = 128,
    .connect_timeout_s = 0, /* 0 = 30 s + 20 ms per client */
    .drain_timeout_s = 30,
    .go_timeout_s = 600,
    .rcvbuf = 1 << 20,
    .workloads = WORKLOAD_THROUGHPUT | WORKLOAD_LATENCY,
    .control = false,
    .quiet = false,
};

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: chat-load [-H HOST] -p PORT [options]\n"
      "Opens N connections to a chat server, registers a user on each, runs\n"
      "the workloads on them and checks every delivery.\n"
      "  -H, --host HOST           the server: a host name, an IPv4 or an\n"
      "                            IPv6 address (default 127.0.0.1); of\n"
      "                            several addresses, the first that accepts\n"
      "  -p, --port PORT           server port (required)\n"
      "  -n, --clients N           connections (default 100)\n"
      "  -w, --workload LIST       connect, throughput, latency or a comma\n"
      "                            list (default throughput,latency; connect\n"
      "                            always runs first)\n"
      "  -s, --senders S           clients that send (default 10)\n"
      "      --window W            throughput: own messages in flight per\n"
      "                            sender (default 8)\n"
      "  -r, --rate R              latency: messages per second in total\n"
      "                            (default 1000)\n"
      "  -d, --duration SECONDS    each measured window (default 5)\n"
      "      --warmup SECONDS      load before each window (default 1)\n"
      "      --min-fanouts M       throughput: the window goes on past the\n"
      "                            duration until M messages were sent in it\n"
      "                            and it lasted twice as long as the ones in\n"
      "                            flight at its start took to reach everyone\n"
      "                            (default 20; 0 = a fixed window)\n"
      "      --max-duration S      throughput: longest such window (default\n"
      "                            6 x duration)\n"
      "      --message-bytes B     message text length (default 32)\n"
      "      --sources K           against a 127.x server only: spread the\n"
      "                            clients over source addresses 127.0.0.1..K\n"
      "                            (default: one per 16000 clients; against\n"
      "                            any other address, the kernel's source)\n"
      "      --connect-parallel P  connections being set up at once (128)\n"
      "      --connect-timeout S   deadline to register all (30 + N/50)\n"
      "      --drain-timeout S     deadline for the last deliveries (30)\n"
      "      --rcvbuf BYTES        SO_RCVBUF per client (1 MiB, 0 = auto)\n"
      "      --control             sweep mode: @mark lines, wait for 'go'\n"
      "  -q, --quiet               no progress on standard error\n"
      "  -h, --help                this text\n"
      "  -V, --version             version\n"
      "Prints a JSON result on standard output; exit 0 when every check\n"
      "passed, 1 when the run failed, 2 on bad arguments. Against another\n"
      "host, the clients to one server address are bounded by the local\n"
      "ports (net.ipv4.ip_local_port_range); see chat-load(1).\n");
}

static _Noreturn void bad_argument(const char *what, const char *value) {
  fprintf(stderr, "chat-load: bad %s: '%s'\n", what, value ? value : "");
  fprintf(stderr, "Try 'chat-load --help'.\n");
  exit(2);
}

static uint32_t parse_count(const char *text, const char *what, uint32_t min,
                            uint32_t max) {
  char *end;
  errno = 0;
  unsigned long value = strtoul(text, &end, 10);
  if (errno || end == text || *end || value < min || value > max)
    bad_argument(what, text);
  return (uint32_t)value;
}

static double parse_seconds(const char *text, const char *what) {
  char *end;
  errno = 0;
  double value = strtod(text, &end);
  if (errno || end == text || *end || !(value >= 0) || value > 1e6)
    bad_argument(what, text);
  return value;
}

static unsigned parse_workloads(const char *text) {
  unsigned set = 0;
  char copy[256];
  if (strlen(text) >= sizeof copy)
    bad_argument("workload", text);
  strcpy(copy, text);
  for (char *save = NULL, *word = strtok_r(copy, ",", &save); word;
       word = strtok_r(NULL, ",", &save)) {
    if (strcmp(word, "connect") == 0)
      continue;
    else if (strcmp(word, "throughput") == 0)
      set |= WORKLOAD_THROUGHPUT;
    else if (strcmp(word, "latency") == 0)
      set |= WORKLOAD_LATENCY;
    else
      bad_argument("workload", word);
  }
  return set;
}

static void parse_options(int argc, char **argv) {
  enum {
    OPT_WINDOW = 256,
    OPT_WARMUP,
    OPT_MESSAGE_BYTES,
    OPT_SOURCES,
    OPT_CONNECT_PARALLEL,
    OPT_CONNECT_TIMEOUT,
    OPT_DRAIN_TIMEOUT,
    OPT_RCVBUF,
    OPT_CONTROL,
    OPT_MIN_FANOUTS,
    OPT_MAX_DURATION,
  };
  static const struct option longs[] = {
      {"host", required_argument, NULL, 'H'},
      {"port", required_argument, NULL, 'p'},
      {"clients", required_argument, NULL, 'n'},
      {"workload", required_argument, NULL, 'w'},
      {"senders", required_argument, NULL, 's'},
      {"window", required_argument, NULL, OPT_WINDOW},
      {"rate", required_argument, NULL, 'r'},
      {"duration", required_argument, NULL, 'd'},
      {"warmup", required_argument, NULL, OPT_WARMUP},
      {"message-bytes", required_argument, NULL, OPT_MESSAGE_BYTES},
      {"sources", required_argument, NULL, OPT_SOURCES},
      {"connect-parallel", required_argument, NULL, OPT_CONNECT_PARALLEL},
      {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
      {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
      {"rcvbuf", required_argument, NULL, OPT_RCVBUF},
      {"control", no_argument, NULL, OPT_CONTROL},
      {"min-fanouts", required_argument, NULL, OPT_MIN_FANOUTS},
      {"max-duration", required_argument, NULL, OPT_MAX_DURATION},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  bool have_port = false;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":H:p:n:w:s:r:d:qhV", longs, NULL)) !=
         -1) {
    switch (c) {
    case 'H':
      options.host = optarg;
      break;
    case 'p':
      options.port = (int)parse_count(optarg, "port", 1, 65535);
      have_port = true;
      break;
    case 'n':
      options.clients = parse_count(optarg, "client count", 1, 1000000);
      break;
    case 'w':
      options.workloads = parse_workloads(optarg);
      break;
    case 's':
      options.senders = parse_count(optarg, "sender count", 1, 100000);
      break;
    case OPT_WINDOW:
      options.window = parse_count(optarg, "window", 1, 100000);
      break;
    case 'r':
      options.rate = parse_seconds(optarg, "rate");
      if (options.rate < 0.1)
        bad_argument("rate", optarg);
      break;
    case 'd':
      options.duration_s = parse_seconds(optarg, "duration");
      if (options.duration_s < 0.01)
        bad_argument("duration", optarg);
      break;
    case OPT_WARMUP:
      options.warmup_s = parse_seconds(optarg, "warmup");
      break;
    case OPT_MESSAGE_BYTES:
      options.message_bytes = parse_count(optarg, "message size", 24, 4000);
      break;
    case OPT_SOURCES:
      options.sources = parse_count(optarg, "source count", 1, 250);
      break;
    case OPT_CONNECT_PARALLEL:
      options.connect_parallel =
          parse_count(optarg, "connect parallelism", 1, 100000);
      break;
    case OPT_CONNECT_TIMEOUT:
      options.connect_timeout_s = parse_seconds(optarg, "connect timeout");
      break;
    case OPT_DRAIN_TIMEOUT:
      options.drain_timeout_s = parse_seconds(optarg, "drain timeout");
      break;
    case OPT_RCVBUF:
      options.rcvbuf = (int)parse_count(optarg, "rcvbuf", 0, 1 << 30);
      break;
    case OPT_CONTROL:
      options.control = true;
      break;
    case OPT_MIN_FANOUTS:
      options.min_fanouts = parse_count(optarg, "minimum fan-outs", 0, 1000000);
      break;
    case OPT_MAX_DURATION:
      options.max_duration_s = parse_seconds(optarg, "maximum duration");
      break;
    case 'q':
      options.quiet = true;
      break;
    case 'h':
      usage(stdout);
      exit(0);
    case 'V':
      printf("chat-load %s\n", CHAT_VERSION);
      exit(0);
    case ':':
      bad_argument("option (missing value)", argv[optind - 1]);
    default:
      bad_argument("option", argv[optind - 1]);
    }
  }
  if (optind < argc)
    bad_argument("argument", argv[optind]);
  if (!have_port)
    bad_argument("port (-p is required)", "");
  if (options.senders > options.clients)
    options.senders = options.clients;
  if (options.connect_timeout_s == 0)
    options.connect_timeout_s = 30 + options.clients / 50.0;
}

/* ------------------------------------------------------------------------ */
/* Clocks */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static int64_t seconds_to_ns(double seconds) {
  return (int64_t)(seconds * 1e9);
}

static double ns_to_seconds(int64_t ns) {
  return (double)ns / 1e9;
}

/* This process's CPU time so far, in seconds. */
static void own_cpu(double *user_s, double *system_s) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  *user_s = (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6;
  *system_s = (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

/* How long this (single-threaded) process was ready to run but waited for
 * a CPU, in seconds: the second field of schedstat. On a machine shared with
 * other work this is the time the load was late through no fault of the
 * server; the report shows it. 0 when the kernel does not keep it. */
static double own_wait(void) {
  FILE *f = fopen("/proc/thread-self/schedstat", "r");
  unsigned long long on_cpu = 0, waiting = 0;
  if (f) {
    if (fscanf(f, "%llu %llu", &on_cpu, &waiting) != 2)
      waiting = 0;
    fclose(f);
  }
  return (double)waiting / 1e9;
}

/* ------------------------------------------------------------------------ */
/* Errors: grouped by kind, with the first example of each kept verbatim */

struct error_kind {
  char kind[96];
  char first[160];
  uint64_t count;
};

static struct error_kind errors[MAX_ERROR_KINDS];
static unsigned error_kinds;
static uint64_t errors_total;

static void record_error(const char *kind, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void record_error(const char *kind, const char *format, ...) {
  errors_total++;
  for (unsigned i = 0; i < error_kinds; i++) {
    if (strcmp(errors[i].kind, kind) == 0) {
      errors[i].count++;
      return;
    }
  }
  if (error_kinds == MAX_ERROR_KINDS)
    return;
  struct error_kind *e = &errors[error_kinds++];
  snprintf(e->kind, sizeof e->kind, "%s", kind);
  va_list args;
  va_start(args, format);
  vsnprintf(e->first, sizeof e->first, format, args);
  va_end(args);
  e->count = 1;
  if (!options.quiet)
    fprintf(stderr, "chat-load: %s: %s\n", kind, e->first);
}

/* ------------------------------------------------------------------------ */
/* The state of the run */

enum client_state {
  CLIENT_WAITING,     /* not connected yet */
  CLIENT_CONNECTING,  /* connect() in progress */
  CLIENT_REGISTERING, /* name sent, own arrival not seen yet */
  CLIENT_READY,       /* registered */
  CLIENT_CLOSED,
};

struct buffer {
  char *data;
  uint32_t length;
  uint32_t capacity;
};

struct client {
  int fd;
  uint8_t state;         /* enum client_state */
  bool write_armed;      /* EPOLLOUT is in the interest set */
  bool flush_queued;     /* in run.flush_queue */
  int32_t sender;        /* its slot in senders[], or -1 */
  uint32_t arrivals;     /* arrival lines seen, its own included */
  uint64_t arrival_hash; /* of the arrivals after its own, in order */
  int64_t connect_ns;    /* when connect() was called */
  struct buffer partial; /* a line not complete yet */
  struct buffer pending; /* bytes to send, not yet taken by the kernel */
};

struct sender {
  uint32_t client;
  uint32_t sent;   /* messages sent; the last one's sequence number */
  uint32_t echoed; /* own messages seen coming back */
};

/* What the sweep compares across a window: taken at each mark. */
struct snapshot {
  int64_t ns;
  uint64_t deliveries;
  uint64_t messages_sent;
  double cpu_user_s;
  double cpu_system_s;
  double wait_s;
};

enum phase { PHASE_CONNECT, PHASE_THROUGHPUT, PHASE_LATENCY, PHASE_DONE };
static const char *const phase_names[] = {"connect", "throughput", "latency",
                                          "done"};

static struct run {
  enum phase phase;
  bool aborted;  /* a fatal error: skip what is left */
  bool stopping; /* the server may close connections now */
  int epoll_fd;
  int timer_fd;
  bool go; /* the sweep said "go" */
  bool control_closed;

  struct client *clients;
  struct sender *senders;
  uint32_t *last_seq; /* [receiver * S + sender]: last sequence number seen */
  uint32_t *flush_queue; /* clients with bytes to send this iteration */
  uint32_t flush_queue_length;
  struct sockaddr_storage server; /* resolved from --host */
  socklen_t server_length;
  char server_text[INET6_ADDRSTRLEN];
  uint32_t next_to_connect;
  uint32_t in_progress; /* connecting or registering */
  uint32_t registered;

  /* Counters for the whole run. */
  uint64_t arrival_lines;
  uint64_t deliveries; /* message lines received, by all clients */
  uint64_t messages_sent;
  uint64_t bytes_received;
  uint64_t sum_last_seq; /* sum of last_seq[]: in-order deliveries */

  /* The checks. */
  uint64_t missing;
  uint64_t duplicated;
  uint64_t out_of_order;
  uint64_t unexpected_lines;
  uint64_t disconnected;
  uint64_t arrival_errors;
  uint64_t undelivered; /* not arrived by the drain deadline */

  /* The connect phase. */
  struct histogram connect_us;
  int64_t connect_started_ns;
  int64_t connect_finished_ns;

  /* The sending of the current workload. */
  bool sending;
  bool open_loop; /* latency: scheduled sends, not a window */
  int64_t schedule_start_ns;
  int64_t schedule_interval_ns;
  uint64_t next_scheduled; /* index of the next message on the schedule */
  int64_t window_start_ns; /* latency is recorded for messages scheduled */
  int64_t window_end_ns;   /* in [start, end) */
  struct histogram latency_us;
  struct histogram send_lag_us;

  int64_t next_progress_ns;
} run;

/* ------------------------------------------------------------------------ */
/* Output to one client */

static void buffer_append(struct buffer *b, const char *data, size_t length) {
  if (b->length + length > b->capacity) {
    size_t capacity = b->capacity ? b->capacity : 256;
    while (capacity < b->length + length)
      capacity *= 2;
    char *grown = realloc(b->data, capacity);
    if (!grown) {
      fprintf(stderr, "chat-load: out of memory\n");
      exit(1);
    }
    b->data = grown;
    b->capacity = (uint32_t)capacity;
  }
  memcpy(b->data + b->length, data, length);
  b->length += (uint32_t)length;
}

static void buffer_free(struct buffer *b) {
  free(b->data);
  *b = (struct buffer){0};
}

static void client_close(uint32_t index) {
  struct client *c = &run.clients[index];
  if (c->state == CLIENT_CLOSED)
    return;
  if (c->state == CLIENT_CONNECTING || c->state == CLIENT_REGISTERING)
    run.in_progress--;
  close(c->fd);
  c->fd = -1;
  c->state = CLIENT_CLOSED;
  buffer_free(&c->partial);
  buffer_free(&c->pending);
}

/* A connection that ended when it should not have. */
static void client_lost(uint32_t index, const char *why) {
  if (!run.stopping) {
    run.disconnected++;
    run.aborted = true;
    record_error("connection lost", "u%" PRIu32 " during %s: %s", index,
                 phase_names[run.phase], why);
  }
  client_close(index);
}

static void set_interest(uint32_t index, uint32_t events) {
  struct epoll_event event = {.events = events, .data.u64 = index};
  if (epoll_ctl(run.epoll_fd, EPOLL_CTL_MOD, run.clients[index].fd, &event))
    client_lost(index, strerror(errno));
}

/* Queues bytes for a client. They go out together at the end of the loop
 * iteration (flush_queued), so that several messages a client sends in one
 * iteration cost one send() and not one each: the load generator must stay
 * cheaper than the servers it measures. */
static void client_send(uint32_t index, const char *data, size_t length) {
  struct client *c = &run.clients[index];
  if (c->state == CLIENT_CLOSED)
    return;
  if (c->pending.length + length > SEND_BACKLOG_LIMIT) {
    run.aborted = true;
    record_error("send backlog",
                 "u%" PRIu32 " has over %d bytes the server did not read",
                 index, SEND_BACKLOG_LIMIT);
    return;
  }
  buffer_append(&c->pending, data, length);
  if (!c->flush_queued) {
    c->flush_queued = true;
    run.flush_queue[run.flush_queue_length++] = index;
  }
}

/* Sends what the kernel takes now; waits for EPOLLOUT for the rest. */
static void client_flush(uint32_t index) {
  struct client *c = &run.clients[index];
  while (c->pending.length > 0) {
    ssize_t sent = send(c->fd, c->pending.data, c->pending.length,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      client_lost(index, strerror(errno));
      return;
    }
    memmove(c->pending.data, c->pending.data + sent,
            c->pending.length - (size_t)sent);
    c->pending.length -= (uint32_t)sent;
  }
  bool want_write = c->pending.length > 0;
  if (want_write != c->write_armed) {
    c->write_armed = want_write;
    set_interest(index, want_write ? EPOLLIN | EPOLLOUT : EPOLLIN);
  }
}

static void flush_queued(void) {
  for (uint32_t i = 0; i < run.flush_queue_length; i++) {
    uint32_t index = run.flush_queue[i];
    run.clients[index].flush_queued = false;
    if (run.clients[index].state != CLIENT_CLOSED)
      client_flush(index);
  }
  run.flush_queue_length = 0;
}

/* One message line: "m SEQ SCHEDULED_NS ....", padded to message_bytes. */
static void send_message(uint32_t slot, int64_t scheduled_ns) {
  struct sender *s = &run.senders[slot];
  char line[4096 + 3];
  s->sent++;
  int length = snprintf(line, sizeof line - 2, "m %" PRIu32 " %" PRId64 " ",
                        s->sent, scheduled_ns);
  while ((uint32_t)length < options.message_bytes)
    line[length++] = '.';
  line[length++] = '\r';
  line[length++] = '\n';
  run.messages_sent++;
  client_send(s->client, line, (size_t)length);
}

/* ------------------------------------------------------------------------ */
/* Lines from the server */

static const uint64_t ARRIVAL_HASH_FACTOR = UINT64_C(0x100000001b3);

static bool starts_with(const char *line, size_t length, const char *prefix,
                        size_t prefix_length) {
  return length >= prefix_length && memcmp(line, prefix, prefix_length) == 0;
}

/* Reads "uNUMBER" at *p; returns the number, or UINT32_MAX. */
static uint32_t parse_user(const char **p, const char *end) {
  const char *q = *p;
  if (q >= end || *q != 'u')
    return UINT32_MAX;
  q++;
  uint64_t value = 0;
  const char *digits = q;
  while (q < end && *q >= '0' && *q <= '9' && q - digits < 10)
    value = value * 10 + (uint64_t)(*q++ - '0');
  if (q == digits || value >= run.next_to_connect)
    return UINT32_MAX;
  *p = q;
  return (uint32_t)value;
}

static uint64_t parse_number(const char **p, const char *end) {
  uint64_t value = 0;
  const char *q = *p;
  while (q < end && *q >= '0' && *q <= '9')
    value = value * 10 + (uint64_t)(*q++ - '0');
  *p = q;
  return value;
}

static void unexpected_line(uint32_t index, const char *line, size_t length) {
  run.unexpected_lines++;
  record_error("unexpected line", "u%" PRIu32 " in %s got '%.*s'", index,
               phase_names[run.phase], (int)(length > 100 ? 100 : length),
               line);
}

/* "User uK arrived." or "User uK departed." */
static void handle_room_event(uint32_t index, const char *line, size_t length,
                              int64_t received_ns) {
  struct client *c = &run.clients[index];
  const char *p = line + 5, *end = line + length;
  uint32_t who = parse_user(&p, end);
  if (who == UINT32_MAX) {
    unexpected_line(index, line, length);
    return;
  }
  if (end - p == 9 && memcmp(p, " arrived.", 9) == 0) {
    if (c->state == CLIENT_REGISTERING) {
      if (who != index) {
        unexpected_line(index, line, length);
        return;
      }
      c->state = CLIENT_READY;
      c->arrivals = 1;
      run.in_progress--;
      run.registered++;
      histogram_record(&run.connect_us,
                       (uint64_t)(received_ns - c->connect_ns) / 1000);
    } else {
      if (run.phase != PHASE_CONNECT || who == index) {
        unexpected_line(index, line, length);
        return;
      }
      c->arrivals++;
      c->arrival_hash = c->arrival_hash * ARRIVAL_HASH_FACTOR + who + 1;
    }
    run.arrival_lines++;
  } else if (end - p == 10 && memcmp(p, " departed.", 10) == 0) {
    run.aborted = true;
    record_error("departure",
                 "u%" PRIu32 " saw 'User u%" PRIu32
                 " departed.': the server dropped a client",
                 index, who);
  } else {
    unexpected_line(index, line, length);
  }
}

/* "uK: m SEQ SCHEDULED_NS ...." from sender uK. */
static void handle_message(uint32_t index, const char *line, size_t length,
                           int64_t received_ns) {
  const char *p = line, *end = line + length;
  uint32_t from = parse_user(&p, end);
  if (from == UINT32_MAX || end - p < 4 || memcmp(p, ": m ", 4) != 0 ||
      run.clients[from].sender < 0) {
    unexpected_line(index, line, length);
    return;
  }
  p += 4;
  uint64_t seq = parse_number(&p, end);
  p++;
  int64_t scheduled_ns = (int64_t)parse_number(&p, end);
  uint32_t slot = (uint32_t)run.clients[from].sender;
  struct sender *s = &run.senders[slot];
  run.deliveries++;

  uint32_t *last = &run.last_seq[(uint64_t)index * options.senders + slot];
  if (seq == (uint64_t)*last + 1) {
    /* the normal case */
  } else if (seq > (uint64_t)*last + 1 && seq <= s->sent) {
    run.missing += seq - *last - 1;
    record_error("missing",
                 "u%" PRIu32 " got message %" PRIu64 " of u%" PRIu32
                 " after %" PRIu32,
                 index, seq, from, *last);
  } else if (seq == *last) {
    run.duplicated++;
    record_error("duplicated",
                 "u%" PRIu32 " got message %" PRIu64 " of u%" PRIu32 " twice",
                 index, seq, from);
    return;
  } else {
    run.out_of_order++;
    record_error("out of order",
                 "u%" PRIu32 " got message %" PRIu64 " of u%" PRIu32
                 " after %" PRIu32,
                 index, seq, from, *last);
    return;
  }
  run.sum_last_seq += seq - *last;
  *last = (uint32_t)seq;

  if (run.open_loop && scheduled_ns >= run.window_start_ns &&
      scheduled_ns < run.window_end_ns)
    histogram_record(&run.latency_us,
                     (uint64_t)(received_ns - scheduled_ns) / 1000);
  if (from == index) {
    s->echoed++;
    if (run.sending && !run.open_loop && s->sent - s->echoed < options.window)
      send_message(slot, now_ns());
  }
}

static void handle_line(uint32_t index, const char *line, size_t length,
                        int64_t received_ns) {
  struct client *c = &run.clients[index];
  static const char prompt[] = CHAT_PROMPT;
  if (length > 0 && line[length - 1] == '\r')
    length--;
  if (c->state == CLIENT_REGISTERING) {
    /* The prompt has no line end: it starts the next line. */
    if (starts_with(line, length, prompt, sizeof prompt - 1)) {
      line += sizeof prompt - 1;
      length -= sizeof prompt - 1;
    }
    if (starts_with(line, length, "Welcome to ", 11))
      return;
    if (!starts_with(line, length, "User ", 5)) {
      run.aborted = true;
      record_error("registration", "u%" PRIu32 " got '%.*s'", index,
                   (int)(length > 100 ? 100 : length), line);
      return;
    }
  }
  if (length > 0 && line[0] == 'u') {
    handle_message(index, line, length, received_ns);
  } else if (starts_with(line, length, "User ", 5)) {
    handle_room_event(index, line, length, received_ns);
  } else if (length + 2 == sizeof CHAT_SHUTDOWN - 1 &&
             memcmp(line, CHAT_SHUTDOWN, length) == 0) {
    if (!run.stopping) {
      run.aborted = true;
      record_error("server shut down", "during %s", phase_names[run.phase]);
    }
  } else {
    unexpected_line(index, line, length);
  }
}

/* Splits what arrived into lines; keeps an unfinished one for later. */
static void client_read(uint32_t index) {
  static char chunk[LONGEST_LINE + READ_CHUNK];
  struct client *c = &run.clients[index];
  for (int reads = 0; reads < READS_PER_EVENT; reads++) {
    size_t carried = c->partial.length;
    if (carried)
      memcpy(chunk, c->partial.data, carried);
    ssize_t got = recv(c->fd, chunk + carried, READ_CHUNK, MSG_DONTWAIT);
    if (got == 0) {
      client_lost(index, "connection closed by the server");
      return;
    }
    if (got < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        client_lost(index, strerror(errno));
      return;
    }
    int64_t received_ns = now_ns();
    run.bytes_received += (uint64_t)got;
    const char *start = chunk, *end = chunk + carried + got;
    for (;;) {
      const char *newline = memchr(start, '\n', (size_t)(end - start));
      if (!newline)
        break;
      handle_line(index, start, (size_t)(newline - start), received_ns);
      if (c->state == CLIENT_CLOSED)
        return;
      start = newline + 1;
    }
    size_t left = (size_t)(end - start);
    if (left > LONGEST_LINE) {
      run.aborted = true;
      record_error("protocol", "u%" PRIu32 " got a line over %d bytes", index,
                   LONGEST_LINE);
      client_close(index);
      return;
    }
    c->partial.length = 0;
    if (left)
      buffer_append(&c->partial, start, left);
    else if (c->partial.capacity > 1024)
      buffer_free(&c->partial); /* idle clients hold no buffer */
    if ((size_t)got < READ_CHUNK)
      return; /* the socket is very likely empty now */
  }
}

/* ------------------------------------------------------------------------ */
/* Connecting */

static void start_connect(uint32_t index) {
  struct client *c = &run.clients[index];
  c->connect_ns = now_ns();
  c->fd = socket(run.server.ss_family,
                 SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    run.aborted = true;
    record_error("socket", "u%" PRIu32 ": %s", index, strerror(errno));
    c->state = CLIENT_CLOSED;
    return;
  }
  run.in_progress++;
  c->state = CLIENT_CONNECTING;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (options.rcvbuf > 0)
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &options.rcvbuf,
               sizeof options.rcvbuf);
  if (options.sources > 1) {
    /* Spread clients over 127.0.0.1..K; the port is chosen at connect(),
     * per destination, so ports are not used up by bind() alone. */
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in source = {.sin_family = AF_INET};
    source.sin_addr.s_addr = htonl(0x7f000001u + index % options.sources);
    if (bind(c->fd, (struct sockaddr *)&source, sizeof source)) {
      run.aborted = true;
      record_error("bind", "u%" PRIu32 " to 127.0.0.%u: %s", index,
                   1 + index % options.sources, strerror(errno));
      client_close(index);
      return;
    }
  }
  struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.u64 = index};
  c->write_armed = true;
  if (epoll_ctl(run.epoll_fd, EPOLL_CTL_ADD, c->fd, &event)) {
    run.aborted = true;
    record_error("epoll", "u%" PRIu32 ": %s", index, strerror(errno));
    client_close(index);
    return;
  }
  if (connect(c->fd, (struct sockaddr *)&run.server, run.server_length) &&
      errno != EINPROGRESS) {
    run.aborted = true;
    record_error("connect", "u%" PRIu32 ": %s", index, strerror(errno));
    client_close(index);
  }
}

/* EPOLLOUT on a connecting socket: connected, or failed. */
static void finish_connect(uint32_t index) {
  struct client *c = &run.clients[index];
  int error = 0;
  socklen_t size = sizeof error;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
  if (error) {
    run.aborted = true;
    record_error("connect", "u%" PRIu32 ": %s", index, strerror(error));
    client_close(index);
    return;
  }
  c->state = CLIENT_REGISTERING;
  c->write_armed = false;
  set_interest(index, EPOLLIN);
  char name[32];
  int length = snprintf(name, sizeof name, "u%" PRIu32 "\r\n", index);
  client_send(index, name, (size_t)length);
}

static void start_more_connects(void) {
  while (run.phase == PHASE_CONNECT && !run.aborted &&
         run.next_to_connect < options.clients &&
         run.in_progress < options.connect_parallel)
    start_connect(run.next_to_connect++);
}

/* ------------------------------------------------------------------------ */
/* The open-loop schedule (latency workload) */

/* Message k is due at start + k * interval, in whole nanoseconds, which is
 * also the period of the timer: it fires on the schedule by itself, with no
 * system call per message to re-arm it. */
static int64_t scheduled_time(uint64_t k) {
  return run.schedule_start_ns + (int64_t)k * run.schedule_interval_ns;
}

static void start_timer(int64_t first_ns, int64_t interval_ns) {
  struct itimerspec when = {.it_value = {.tv_sec = first_ns / NS_PER_S,
                                         .tv_nsec = first_ns % NS_PER_S},
                            .it_interval = {.tv_sec = interval_ns / NS_PER_S,
                                            .tv_nsec = interval_ns % NS_PER_S}};
  timerfd_settime(run.timer_fd, TFD_TIMER_ABSTIME, &when, NULL);
}

static void stop_timer(void) {
  struct itimerspec never = {{0, 0}, {0, 0}};
  timerfd_settime(run.timer_fd, 0, &never, NULL);
}

/* Sends every message whose time has come. Reading the timer's counter
 * also re-arms it (a periodic timerfd moves on only when read). */
static void send_scheduled(void) {
  uint64_t expirations;
  if (read(run.timer_fd, &expirations, sizeof expirations) < 0 &&
      errno != EAGAIN)
    return;
  if (!run.sending || !run.open_loop)
    return;
  int64_t now = now_ns();
  for (int sends = 0; sends < SENDS_PER_TIMER; sends++) {
    int64_t at = scheduled_time(run.next_scheduled);
    if (at > now)
      break;
    uint32_t slot = (uint32_t)(run.next_scheduled % options.senders);
    run.next_scheduled++;
    histogram_record(&run.send_lag_us, (uint64_t)(now - at) / 1000);
    send_message(slot, at);
  }
}

/* ------------------------------------------------------------------------ */
/* The control channel to the sweep, and progress */

#define CONTROL_ID (UINT64_MAX - 1)
#define TIMER_ID (UINT64_MAX - 2)

static void read_control(void) {
  char text[256];
  ssize_t got = read(STDIN_FILENO, text, sizeof text - 1);
  if (got <= 0) {
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    run.control_closed = true; /* the sweep is gone or done with us */
    epoll_ctl(run.epoll_fd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
    return;
  }
  text[got] = '\0';
  if (strstr(text, "go"))
    run.go = true;
  if (strstr(text, "quit"))
    run.control_closed = true;
}

static void report_progress(void) {
  char text[200];
  switch (run.phase) {
  case PHASE_CONNECT:
    snprintf(text, sizeof text,
             "connect %" PRIu32 "/%" PRIu32 " registered, %" PRIu64
             " arrival lines",
             run.registered, options.clients, run.arrival_lines);
    break;
  default:
    snprintf(text, sizeof text, "%s %" PRIu64 " sent, %" PRIu64 " delivered",
             phase_names[run.phase], run.messages_sent, run.deliveries);
  }
  if (options.control) {
    printf("@progress %s\n", text);
    fflush(stdout);
  } else if (!options.quiet) {
    fprintf(stderr, "chat-load: %s\n", text);
  }
}

/* ------------------------------------------------------------------------ */
/* The event loop */

/* Serves every socket until done() is true (returns true), the deadline
 * passes (false) or the run is aborted (false). */
static bool serve_until(bool (*done)(void), int64_t deadline_ns) {
  static struct epoll_event events[EVENTS_PER_WAIT];
  for (;;) {
    start_more_connects();
    flush_queued();
    if (done && done())
      return true;
    if (run.aborted)
      return false;
    int64_t now = now_ns();
    if (now >= deadline_ns)
      return false;
    if (now >= run.next_progress_ns) {
      report_progress();
      run.next_progress_ns = now + NS_PER_S;
    }
    int64_t wait_ns = deadline_ns - now;
    if (run.next_progress_ns - now < wait_ns)
      wait_ns = run.next_progress_ns - now;
    int timeout_ms = (int)((wait_ns + 999999) / 1000000);
    int ready = epoll_wait(run.epoll_fd, events, EVENTS_PER_WAIT, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR)
        continue;
      run.aborted = true;
      record_error("epoll_wait", "%s", strerror(errno));
      return false;
    }
    for (int i = 0; i < ready; i++) {
      uint64_t id = events[i].data.u64;
      if (id == CONTROL_ID) {
        read_control();
        continue;
      }
      if (id == TIMER_ID) {
        send_scheduled();
        continue;
      }
      uint32_t index = (uint32_t)id;
      struct client *c = &run.clients[index];
      if (c->state == CLIENT_CLOSED)
        continue;
      if (c->state == CLIENT_CONNECTING) {
        if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
          finish_connect(index);
        continue;
      }
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        client_read(index);
      if (c->state != CLIENT_CLOSED && (events[i].events & EPOLLOUT))
        client_flush(index);
    }
    flush_queued();
  }
}

static void serve_for(double seconds) {
  serve_until(NULL, now_ns() + seconds_to_ns(seconds));
}

static bool go_received(void) {
  return run.go || run.control_closed;
}

static struct snapshot take_snapshot(void) {
  struct snapshot s = {.ns = now_ns(),
                       .deliveries = run.deliveries,
                       .messages_sent = run.messages_sent};
  own_cpu(&s.cpu_user_s, &s.cpu_system_s);
  s.wait_s = own_wait();
  return s;
}

/* A boundary the sweep samples the server at. The load goes on while the
 * sweep reads /proc; the boundary is the midpoint of before and after. */
static struct snapshot mark(const char *name) {
  struct snapshot before = take_snapshot();
  if (!options.control || run.aborted)
    return before; /* a failed run needs no more samples */
  printf("@mark %s\n", name);
  fflush(stdout);
  run.go = false;
  if (!serve_until(go_received,
                   now_ns() + seconds_to_ns(options.go_timeout_s)) &&
      !run.aborted) {
    run.aborted = true;
    record_error("control", "no 'go' from the sweep after mark %s", name);
  }
  struct snapshot after = take_snapshot();
  return (struct snapshot){
      .ns = (before.ns + after.ns) / 2,
      .deliveries = (before.deliveries + after.deliveries) / 2,
      .messages_sent = (before.messages_sent + after.messages_sent) / 2,
      .cpu_user_s = (before.cpu_user_s + after.cpu_user_s) / 2,
      .cpu_system_s = (before.cpu_system_s + after.cpu_system_s) / 2,
      .wait_s = (before.wait_s + after.wait_s) / 2,
  };
}

/* ------------------------------------------------------------------------ */
/* The connect phase */

static bool all_arrivals_seen(void) {
  uint64_t n = options.clients;
  return run.registered == options.clients &&
         run.arrival_lines >= n * (n + 1) / 2;
}

/* Every client saw its own arrival and each later one. If all saw one
 * order, the client that registered k-th saw N - k + 1 arrivals, so the
 * counts are a permutation of 1..N, and each client's hash of what followed
 * its own arrival matches the one computed from that order. */
static void check_arrival_order(void) {
  uint32_t n = options.clients;
  uint32_t *by_position = malloc(sizeof *by_position * n);
  if (!by_position)
    return;
  memset(by_position, 0xff, sizeof *by_position * n);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t a = run.clients[i].arrivals;
    if (a < 1 || a > n || by_position[n - a] != UINT32_MAX) {
      run.arrival_errors++;
      record_error("arrival lines",
                   "u%" PRIu32 " saw %" PRIu32
                   " arrivals: lines missing or duplicated",
                   i, a);
      free(by_position);
      return;
    }
    by_position[n - a] = i;
  }
  uint64_t expected = 0, power = 1;
  for (uint32_t p = n; p-- > 0;) {
    if (run.clients[by_position[p]].arrival_hash != expected) {
      run.arrival_errors++;
      record_error("arrival order",
                   "u%" PRIu32
                   " saw the arrivals in another order than the others",
                   by_position[p]);
    }
    expected += power * ((uint64_t)by_position[p] + 1);
    power *= ARRIVAL_HASH_FACTOR;
  }
  free(by_position);
}

static void connect_phase(void) {
  run.phase = PHASE_CONNECT;
  run.connect_started_ns = now_ns();
  int64_t deadline =
      run.connect_started_ns + seconds_to_ns(options.connect_timeout_s);
  bool done = serve_until(all_arrivals_seen, deadline);
  run.connect_finished_ns = now_ns();
  if (!done && !run.aborted) {
    uint64_t n = options.clients;
    run.aborted = true;
    record_error("deadline",
                 "connect: after %.0f s, %" PRIu32 "/%" PRIu32
                 " registered and %" PRIu64 " of %" PRIu64 " arrival lines",
                 options.connect_timeout_s, run.registered, options.clients,
                 run.arrival_lines, n * (n + 1) / 2);
  }
  if (done)
    check_arrival_order();
  if (!options.quiet && !options.control)
    fprintf(stderr, "chat-load: %" PRIu32 " clients registered in %.2f s\n",
            run.registered,
            ns_to_seconds(run.connect_finished_ns - run.connect_started_ns));
}

/* ------------------------------------------------------------------------ */
/* The workloads */

struct workload_result {
  bool ran;
  bool completed; /* drained: every message reached every receiver */
  struct snapshot start, end;
  double drain_s;
  uint64_t messages_in_window;
  bool extended;      /* throughput: went on past the duration */
  double in_flight_s; /* how long the messages in flight at the start took to
                         reach every client; -1: not within the window */
};

static struct workload_result throughput_result, latency_result;

static bool everything_delivered(void) {
  uint64_t sent = 0;
  for (uint32_t s = 0; s < options.senders; s++)
    sent += run.senders[s].sent;
  return run.sum_last_seq >= sent * options.clients;
}

/* After sending stops, waits for the messages still on their way. */
static void drain(struct workload_result *result) {
  run.sending = false;
  int64_t started = now_ns();
  result->completed = serve_until(
      everything_delivered, started + seconds_to_ns(options.drain_timeout_s));
  result->drain_s = ns_to_seconds(now_ns() - started);
  if (!result->completed && !run.aborted) {
    uint64_t sent = 0;
    for (uint32_t s = 0; s < options.senders; s++)
      sent += run.senders[s].sent;
    /* Too slow, not lost: a server may still deliver them later. */
    uint64_t late = sent * options.clients - run.sum_last_seq;
    run.undelivered += late;
    record_error("deadline",
                 "%s: %" PRIu64 " deliveries not there yet %.0f s after "
                 "sending stopped",
                 phase_names[run.phase], late, options.drain_timeout_s);
  }
}

/* A throughput window too short for what it measures is no measurement: a
 * sender whose echo waits behind a fan-out to 10,000 may send nothing for
 * seconds. So the window lasts the duration, then goes on until it holds
 * --min-fanouts messages sent inside it and lasted at least twice as long as
 * the messages in flight at its start took to reach every client (about the
 * drain that follows it), or until --max-duration. The sweep calls a window
 * that never got there stalled, never a rate. */
static struct {
  int64_t start_ns;
  uint64_t sent_at_start;
  uint64_t delivered_target; /* sum_last_seq once those reached everyone */
  int64_t in_flight_ns;      /* how long that took; -1 until it happened */
} extension;

static bool note_in_flight_delivered(void) {
  if (extension.in_flight_ns < 0 &&
      run.sum_last_seq >= extension.delivered_target)
    extension.in_flight_ns = now_ns() - extension.start_ns;
  return false;
}

static bool window_holds_enough(void) {
  note_in_flight_delivered();
  return extension.in_flight_ns >= 0 &&
         run.messages_sent - extension.sent_at_start >= options.min_fanouts &&
         now_ns() - extension.start_ns >= 2 * extension.in_flight_ns;
}

static void throughput_phase(void) {
  run.phase = PHASE_THROUGHPUT;
  throughput_result.ran = true;
  run.sending = true;
  run.open_loop = false;
  int64_t now = now_ns();
  for (uint32_t s = 0; s < options.senders; s++)
    for (uint32_t w = 0; w < options.window; w++)
      send_message(s, now);
  serve_for(options.warmup_s);
  throughput_result.start = mark("throughput-start");
  uint64_t sent = 0;
  for (uint32_t s = 0; s < options.senders; s++)
    sent += run.senders[s].sent;
  extension.start_ns = throughput_result.start.ns;
  extension.sent_at_start = throughput_result.start.messages_sent;
  extension.delivered_target = sent * options.clients;
  extension.in_flight_ns = -1;
  now = now_ns();
  serve_until(note_in_flight_delivered,
              now + seconds_to_ns(options.duration_s));
  if (options.min_fanouts > 0 && !run.aborted && !window_holds_enough()) {
    double longest = options.max_duration_s > 0 ? options.max_duration_s
                                                : 6 * options.duration_s;
    throughput_result.extended = true;
    serve_until(window_holds_enough,
                extension.start_ns + seconds_to_ns(longest));
  }
  throughput_result.in_flight_s =
      extension.in_flight_ns < 0 ? -1 : ns_to_seconds(extension.in_flight_ns);
  throughput_result.end = mark("throughput-end");
  if (!run.aborted)
    drain(&throughput_result);
}

static void latency_phase(void) {
  run.phase = PHASE_LATENCY;
  latency_result.ran = true;
  histogram_reset(&run.latency_us);
  histogram_reset(&run.send_lag_us);
  run.open_loop = true;
  run.sending = true;
  run.next_scheduled = 0;
  run.schedule_start_ns = now_ns() + NS_PER_S / 1000;
  run.schedule_interval_ns = (int64_t)(1e9 / options.rate);
  run.window_start_ns = run.schedule_start_ns + seconds_to_ns(options.warmup_s);
  run.window_end_ns = run.window_start_ns + seconds_to_ns(options.duration_s);
  start_timer(run.schedule_start_ns, run.schedule_interval_ns);
  serve_until(NULL, run.window_start_ns);
  latency_result.start = mark("latency-start");
  serve_until(NULL, run.window_end_ns);
  latency_result.end = mark("latency-end");
  latency_result.messages_in_window = 0;
  for (uint64_t k = 0; k < run.next_scheduled; k++) {
    int64_t at = scheduled_time(k);
    if (at >= run.window_start_ns && at < run.window_end_ns)
      latency_result.messages_in_window++;
  }
  stop_timer();
  if (!run.aborted)
    drain(&latency_result);
  run.open_loop = false;
}

/* ------------------------------------------------------------------------ */
/* The result */

static bool run_failed(void) {
  return run.aborted || errors_total > 0 || run.missing || run.duplicated ||
         run.out_of_order || run.unexpected_lines || run.disconnected ||
         run.arrival_errors;
}

static void print_window(const char *name, const struct workload_result *r) {
  double seconds = ns_to_seconds(r->end.ns - r->start.ns);
  uint64_t deliveries = r->end.deliveries - r->start.deliveries;
  uint64_t messages = r->end.messages_sent - r->start.messages_sent;
  double user = r->end.cpu_user_s - r->start.cpu_user_s;
  double system = r->end.cpu_system_s - r->start.cpu_system_s;
  printf(",\"%s\":{\"completed\":%s,\"seconds\":%.6f,\"messages\":%" PRIu64
         ",\"deliveries\":%" PRIu64
         ",\"messages_per_s\":%.1f,\"deliveries_per_s\":%.1f,"
         "\"loadgen_cpu_user_s\":%.6f,\"loadgen_cpu_system_s\":%.6f,"
         "\"loadgen_cpu_share\":%.4f,\"loadgen_wait_share\":%.4f,"
         "\"drain_s\":%.3f",
         name, r->completed ? "true" : "false", seconds, messages, deliveries,
         seconds > 0 ? (double)messages / seconds : 0.0,
         seconds > 0 ? (double)deliveries / seconds : 0.0, user, system,
         seconds > 0 ? (user + system) / seconds : 0.0,
         seconds > 0 ? (r->end.wait_s - r->start.wait_s) / seconds : 0.0,
         r->drain_s);
}

static void print_result(void) {
  uint64_t n = options.clients;
  double connect_s =
      ns_to_seconds(run.connect_finished_ns - run.connect_started_ns);
  double cpu_user, cpu_system;
  own_cpu(&cpu_user, &cpu_system);
  printf("%s{\"tool\":\"chat-load\",\"version\":\"%s\",\"ok\":%s",
         options.control ? "@result " : "", CHAT_VERSION,
         run_failed() ? "false" : "true");
  printf(",\"config\":{\"host\":\"%s\",\"port\":%d,\"clients\":%" PRIu32
         ",\"senders\":%" PRIu32 ",\"window\":%" PRIu32
         ",\"rate\":%.1f,\"warmup_s\":%.3f,\"duration_s\":%.3f,"
         "\"message_bytes\":%" PRIu32 ",\"sources\":%" PRIu32
         ",\"connect_parallel\":%" PRIu32 ",\"rcvbuf\":%d}",
         options.host, options.port, options.clients, options.senders,
         options.window, options.rate, options.warmup_s, options.duration_s,
         options.message_bytes, options.sources, options.connect_parallel,
         options.rcvbuf);
  printf(",\"checks\":{\"missing\":%" PRIu64 ",\"duplicated\":%" PRIu64
         ",\"out_of_order\":%" PRIu64 ",\"unexpected_lines\":%" PRIu64
         ",\"disconnected\":%" PRIu64 ",\"arrival_errors\":%" PRIu64
         ",\"undelivered_at_deadline\":%" PRIu64 "}",
         run.missing, run.duplicated, run.out_of_order, run.unexpected_lines,
         run.disconnected, run.arrival_errors, run.undelivered);
  printf(",\"errors\":[");
  for (unsigned i = 0; i < error_kinds; i++) {
    printf("%s{\"kind\":\"%s\",\"count\":%" PRIu64 ",\"first\":\"",
           i ? "," : "", errors[i].kind, errors[i].count);
    for (const char *p = errors[i].first; *p; p++) {
      if (*p == '"' || *p == '\\')
        printf("\\%c", *p);
      else if ((unsigned char)*p < 0x20)
        printf("\\u%04x", (unsigned)(unsigned char)*p);
      else
        putchar(*p);
    }
    printf("\"}");
  }
  printf("]");
  printf(",\"connect\":{\"completed\":%s,\"registered\":%" PRIu32
         ",\"seconds\":%.6f,\"rate_per_s\":%.1f,\"arrival_lines\":%" PRIu64
         ",\"arrival_lines_expected\":%" PRIu64 ",\"latency_us\":",
         run.registered == options.clients && all_arrivals_seen() ? "true"
                                                                  : "false",
         run.registered, connect_s,
         connect_s > 0 ? run.registered / connect_s : 0.0, run.arrival_lines,
         n * (n + 1) / 2);
  histogram_print_json(&run.connect_us, stdout);
  printf("}");
  if (throughput_result.ran) {
    print_window("throughput", &throughput_result);
    printf(",\"extended\":%s,\"in_flight_s\":%.3f,\"min_fanouts\":%" PRIu32
           ",\"max_duration_s\":%.3f}",
           throughput_result.extended ? "true" : "false",
           throughput_result.in_flight_s, options.min_fanouts,
           options.max_duration_s > 0 ? options.max_duration_s
                                      : 6 * options.duration_s);
  }
  if (latency_result.ran) {
    print_window("latency", &latency_result);
    printf(",\"rate_per_s\":%.1f,\"scheduled_in_window\":%" PRIu64
           ",\"latency_us\":",
           options.rate, latency_result.messages_in_window);
    histogram_print_json(&run.latency_us, stdout);
    printf(",\"send_lag_us\":");
    histogram_print_json(&run.send_lag_us, stdout);
    printf("}");
  }
  printf(",\"totals\":{\"bytes_received\":%" PRIu64 ",\"deliveries\":%" PRIu64
         ",\"messages_sent\":%" PRIu64 ",\"loadgen_cpu_user_s\":%.6f,"
         "\"loadgen_cpu_system_s\":%.6f}}\n",
         run.bytes_received, run.deliveries, run.messages_sent, cpu_user,
         cpu_system);
  fflush(stdout);
}

static void print_summary(void) {
  if (options.quiet || options.control)
    return;
  fprintf(stderr,
          "chat-load: connect: %" PRIu32 " clients, p50 %" PRIu64
          " us, p99 %" PRIu64 " us, max %" PRIu64 " us\n",
          run.registered, histogram_percentile(&run.connect_us, 0.5),
          histogram_percentile(&run.connect_us, 0.99), run.connect_us.max);
  if (throughput_result.ran) {
    const struct workload_result *r = &throughput_result;
    double seconds = ns_to_seconds(r->end.ns - r->start.ns);
    fprintf(stderr, "chat-load: throughput: %.0f deliveries/s\n",
            (double)(r->end.deliveries - r->start.deliveries) / seconds);
  }
  if (latency_result.ran)
    fprintf(stderr,
            "chat-load: latency at %.0f msg/s: p50 %" PRIu64 " us, p99 %" PRIu64
            " us, p99.9 %" PRIu64 " us, max %" PRIu64 " us\n",
            options.rate, histogram_percentile(&run.latency_us, 0.5),
            histogram_percentile(&run.latency_us, 0.99),
            histogram_percentile(&run.latency_us, 0.999), run.latency_us.max);
  fprintf(stderr,
          "chat-load: %s (missing %" PRIu64 ", duplicated %" PRIu64
          ", out of order %" PRIu64 ", unexpected %" PRIu64 ")\n",
          run_failed() ? "FAILED" : "all checks passed", run.missing,
          run.duplicated, run.out_of_order, run.unexpected_lines);
}

/* ------------------------------------------------------------------------ */
/* Setup */

/* Each client needs a descriptor: raise the soft limit, and the hard one
 * when allowed (root). */
static void raise_file_limit(void) {
  rlim_t need = (rlim_t)options.clients + 64;
  struct rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < need) {
    struct rlimit raised = {need, need};
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
      return;
    fprintf(stderr,
            "chat-load: need %llu open files for %" PRIu32
            " clients, the hard limit is %llu (raise it: ulimit -Hn)\n",
            (unsigned long long)need, options.clients,
            (unsigned long long)limit.rlim_max);
    exit(1);
  }
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

/* Is the resolved server address an IPv4 loopback one (127.0.0.0/8)? Only
 * there can clients come from 127.0.0.2, 127.0.0.3, ... */
static bool server_on_ipv4_loopback(void) {
  if (run.server.ss_family != AF_INET)
    return false;
  const struct sockaddr_in *in = (const struct sockaddr_in *)&run.server;
  return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
}

/* Can a TCP connection to this address be made within a second? */
static bool accepts_connections(const struct addrinfo *address) {
  int fd = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  struct timeval second = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &second, sizeof second);
  bool ok = connect(fd, address->ai_addr, address->ai_addrlen) == 0;
  close(fd);
  return ok;
}

/* --host (a name, an IPv4 or an IPv6 address) to the server's address; of
 * several, the first that accepts a connection (a probe that the server
 * sees as a connection that leaves at once). Then the source addresses:
 * spread over 127.0.0.x only against an IPv4 loopback server. */
static void resolve_server(void) {
  char port[8];
  snprintf(port, sizeof port, "%d", options.port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *found;
  int status = getaddrinfo(options.host, port, &hints, &found);
  if (status != 0) {
    fprintf(stderr, "chat-load: cannot resolve host '%s': %s\n", options.host,
            gai_strerror(status));
    exit(2);
  }
  const struct addrinfo *chosen = found;
  if (found->ai_next) {
    for (const struct addrinfo *a = found; a; a = a->ai_next) {
      if (accepts_connections(a)) {
        chosen = a;
        break;
      }
    }
  }
  memcpy(&run.server, chosen->ai_addr, chosen->ai_addrlen);
  run.server_length = chosen->ai_addrlen;
  getnameinfo(chosen->ai_addr, chosen->ai_addrlen, run.server_text,
              sizeof run.server_text, NULL, 0, NI_NUMERICHOST);
  freeaddrinfo(found);

  bool loopback = server_on_ipv4_loopback();
  if (options.sources == 0)
    options.sources = loopback ? 1 + options.clients / 16000 : 1;
  if (options.sources > 1 && !loopback) {
    fprintf(stderr,
            "chat-load: --sources %" PRIu32 " spreads clients over "
            "127.0.0.1..%" PRIu32 ", which only reach a 127.x server, not "
            "%s\n",
            options.sources, options.sources, run.server_text);
    exit(2);
  }
  /* One source address reaches one server address and port from each
   * local port at most once. */
  unsigned low = 0, high = 0;
  FILE *range = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (range) {
    if (fscanf(range, "%u %u", &low, &high) != 2)
      low = high = 0;
    fclose(range);
  }
  unsigned long ports = high >= low && high ? high - low + 1 : 0;
  if (ports && options.clients > ports * options.sources)
    fprintf(stderr,
            "chat-load: warning: %" PRIu32 " clients from %" PRIu32
            " source address(es) need more than the %lu local ports of "
            "net.ipv4.ip_local_port_range (%u-%u): widen it (sysctl -w "
            "net.ipv4.ip_local_port_range=\"1024 65535\"), or split the "
            "clients over several chat-load hosts\n",
            options.clients, options.sources, ports, low, high);
  if (!options.quiet && strcmp(options.host, run.server_text) != 0)
    fprintf(stderr, "chat-load: %s is %s\n", options.host, run.server_text);
}

static void setup(void) {
  signal(SIGPIPE, SIG_IGN);
  if (options.control)
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the sweep */
  raise_file_limit();

  resolve_server();

  run.clients = calloc(options.clients, sizeof *run.clients);
  run.senders = calloc(options.senders, sizeof *run.senders);
  run.last_seq =
      calloc((size_t)options.clients * options.senders, sizeof *run.last_seq);
  run.flush_queue = calloc(options.clients, sizeof *run.flush_queue);
  if (!run.clients || !run.senders || !run.last_seq || !run.flush_queue) {
    fprintf(stderr, "chat-load: out of memory\n");
    exit(1);
  }
  /* Senders spread evenly over the clients, first and last included. */
  for (uint32_t i = 0; i < options.clients; i++) {
    run.clients[i].fd = -1;
    run.clients[i].sender = -1;
  }
  for (uint32_t s = 0; s < options.senders; s++) {
    uint32_t index =
        (uint32_t)((uint64_t)s * options.clients / options.senders);
    run.senders[s].client = index;
    run.clients[index].sender = (int32_t)s;
  }

  run.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  run.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (run.epoll_fd < 0 || run.timer_fd < 0) {
    perror("chat-load: epoll/timerfd");
    exit(1);
  }
  struct epoll_event event = {.events = EPOLLIN, .data.u64 = TIMER_ID};
  epoll_ctl(run.epoll_fd, EPOLL_CTL_ADD, run.timer_fd, &event);
  if (options.control) {
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    event = (struct epoll_event){.events = EPOLLIN, .data.u64 = CONTROL_ID};
    epoll_ctl(run.epoll_fd, EPOLL_CTL_ADD, STDIN_FILENO, &event);
  }
  histogram_reset(&run.connect_us);
  run.next_progress_ns = now_ns() + NS_PER_S;
}

static bool control_closed(void) {
  return run.control_closed;
}

int main(int argc, char **argv) {
  parse_options(argc, argv);
  setup();

  connect_phase();
  if (!run.aborted)
    mark("connected");
  if (!run.aborted && (options.workloads & WORKLOAD_THROUGHPUT))
    throughput_phase();
  if (!run.aborted && (options.workloads & WORKLOAD_LATENCY))
    latency_phase();
  run.phase = PHASE_DONE;

  bool failed = run_failed();
  print_result();
  print_summary();
  /* Keep reading until the sweep has stopped the server and lets us go, so
   * that the server's last lines are never stuck on an unread socket. */
  run.stopping = true;
  run.aborted = false;
  if (options.control)
    serve_until(control_closed, now_ns() + seconds_to_ns(options.go_timeout_s));
  return failed ? 1 : 0;
}
