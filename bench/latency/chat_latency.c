/* chat-latency: the talk's "Why async?" table, measured on this machine.
 *
 * The talk (shared/talk/) shows how long things take in a computer, and the
 * same figures scaled so that one CPU cycle lasts one second: then a memory
 * access is minutes and a disk or network wait is days to years. This
 * program measures those figures here, and then the costs that decide
 * between the four chat servers: a process switch, a thread switch, a
 * coroutine switch (coroutine/coro.c, linked as it is), fork,
 * pthread_create, one wake-up of an event loop, and one turn of
 * coroutine/loop.c with nothing ready.
 *
 * Method, for every row: the operation is repeated many times; a row is the
 * median of many samples (a sample is one operation, or for operations too
 * short to time one by one the mean of a batch). Medians resist the noise
 * of a shared machine; the CSV also gives the minimum. Rows that only
 * compute are timed in this thread's CPU time, the others in wall time. Each
 * measurement is bounded in count and in time, so the whole run takes well
 * under a minute.
 *
 * Output: the table on standard output, and latency.md, latency.csv and
 * latency_sweep.csv (the staircase of cache latencies) in the --out
 * directory. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#ifdef CHAT_LATENCY_CORO /* the coroutine rows: coroutine/coro.c, loop.c */
#include "coro.h"
#include "loop.h"
#endif

#define KIB 1024.0
#define MIB (1024.0 * 1024.0)
#define MAX_SAMPLES 20000
#define BLOCK 4096

/* ---- Options, results ------------------------------------------------ */

static struct {
  const char *out_dir;
  const char *tmp_dir;
  double scale; /* time budgets are multiplied by this: --quick makes it 0.2 */
  bool quiet;
  bool cycle_only; /* --cycle-only: the cycle row alone */
} options = {.out_dir = ".", .scale = 1.0};

struct row {
  const char *group; /* "talk": the talk's table; "model": the models' costs */
  const char *id;
  const char *event;
  const char *talk_latency; /* the talk's own figures, or NULL */
  const char *talk_scaled;
  const char *talk_event; /* the talk's name for it, when it differs */
  bool measured;
  double median_ns, min_ns;
  long samples;
  char method[400];
};

enum {
  ROW_CYCLE,
  ROW_L1,
  ROW_L2,
  ROW_L3,
  ROW_MEMORY,
  ROW_DISK_READ,
  ROW_DISK_SYNC,
  ROW_ROTATIONAL,
  ROW_LOOPBACK,
  ROW_INTERNET,
  ROW_PROCESS_SWITCH,
  ROW_THREAD_SWITCH,
  ROW_CORO_SWITCH,
  ROW_FORK,
  ROW_PTHREAD,
  ROW_EPOLL,
  ROW_LIBEVENT,
  ROW_LOOP_TURN,
  ROW_COUNT
};

/* A row: its group, id and name, then the talk's figures and its name for
 * the event (NULL where the talk has none). */
#define ROW(g, i, e, latency, scaled, name)                                    \
  {                                                                            \
    .group = g, .id = i, .event = e, .talk_latency = latency,                  \
    .talk_scaled = scaled, .talk_event = name                                  \
  }

static struct row rows[ROW_COUNT] = {
    [ROW_CYCLE] = ROW("talk", "cycle", "One CPU cycle", "0.4 ns", "1 s", NULL),
    [ROW_L1] = ROW("talk", "l1", "L1 cache access", "0.9 ns", "2 s", NULL),
    [ROW_L2] = ROW("talk", "l2", "L2 cache access", "2.8 ns", "7 s", NULL),
    [ROW_L3] = ROW("talk", "l3", "L3 cache access", "28 ns", "1 min", NULL),
    [ROW_MEMORY] =
        ROW("talk", "memory", "Main memory access", "~100 ns", "4 min", NULL),
    [ROW_DISK_READ] = ROW("talk", "disk_read", "SSD random read, 4 KiB",
                          "~25 us", "17 hrs", "NVMe SSD I/O"),
    [ROW_DISK_SYNC] = ROW("talk", "disk_sync", "SSD write 4 KiB + fdatasync",
                          "50-150 us", "1.5-4 days", "SSD I/O"),
    [ROW_ROTATIONAL] = ROW("talk", "rotational", "Rotational disk I/O",
                           "1-10 ms", "1-9 months", NULL),
    [ROW_LOOPBACK] =
        ROW("talk", "loopback", "Loopback TCP round trip", NULL, NULL, NULL),
    [ROW_INTERNET] =
        ROW("talk", "internet", "Internet call", "65 ms", "5 years", NULL),
    [ROW_PROCESS_SWITCH] = ROW("model", "process_switch",
                               "Process context switch", NULL, NULL, NULL),
    [ROW_THREAD_SWITCH] =
        ROW("model", "thread_switch", "Thread switch", NULL, NULL, NULL),
    [ROW_CORO_SWITCH] =
        ROW("model", "coroutine_switch", "Coroutine switch", NULL, NULL, NULL),
    [ROW_FORK] = ROW("model", "fork", "fork + exit + wait", NULL, NULL, NULL),
    [ROW_PTHREAD] =
        ROW("model", "pthread", "pthread_create + join", NULL, NULL, NULL),
    [ROW_EPOLL] = ROW("model", "epoll", "epoll wake-up", NULL, NULL, NULL),
    [ROW_LIBEVENT] =
        ROW("model", "libevent", "libevent wake-up", NULL, NULL, NULL),
    [ROW_LOOP_TURN] =
        ROW("model", "loop_turn", "Loop turn, nothing ready", NULL, NULL, NULL),
};

static void progress(const char *what) {
  if (!options.quiet) {
    fprintf(stderr, "chat-latency: %s\n", what);
  }
}

static void fail(const char *what) {
  fprintf(stderr, "chat-latency: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* ---- Clock and statistics ---------------------------------------------- */

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* The CPU time of this thread: for the rows that only compute (a cycle, a
 * cache access), time spent waiting for a CPU on a busy machine is not part
 * of the answer. */
static double cpu_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

struct samples {
  double values[MAX_SAMPLES];
  size_t count;
  long operations; /* operations behind the samples */
};

static struct samples samples;

static void samples_reset(void) {
  samples.count = 0;
  samples.operations = 0;
}

static void sample_add(double ns, long operations) {
  if (samples.count < MAX_SAMPLES) {
    samples.values[samples.count++] = ns;
    samples.operations += operations;
  }
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Stores the median and minimum of the samples in a row. */
static void samples_to_row(struct row *row) {
  if (samples.count == 0) {
    return;
  }
  qsort(samples.values, samples.count, sizeof samples.values[0],
        compare_doubles);
  size_t n = samples.count;
  row->median_ns =
      n % 2 ? samples.values[n / 2]
            : (samples.values[n / 2 - 1] + samples.values[n / 2]) / 2;
  row->min_ns = samples.values[0];
  row->samples = samples.operations;
  row->measured = true;
}

/* A measurement runs until it has `count` samples or its time is up. */
struct budget {
  double deadline;
  long left;
};

static struct budget budget(double seconds, long count) {
  if (count > MAX_SAMPLES) {
    count = MAX_SAMPLES;
  }
  long scaled = (long)((double)count * options.scale);
  return (struct budget){now_ns() + seconds * options.scale * 1e9,
                         scaled > 5 ? scaled : 5};
}

static bool budget_left(struct budget *b) {
  return b->left-- > 0 && now_ns() < b->deadline;
}

/* ---- Small helpers ---------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rng_next(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Du;
}

static size_t rng_below(size_t n) {
  return (size_t)(rng_next() % n);
}

static volatile uintptr_t sink; /* keeps results alive */

static void write_all(int fd, const void *bytes, size_t length) {
  const char *p = bytes;
  while (length > 0) {
    ssize_t n = write(fd, p, length);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      fail("write");
    }
    p += n;
    length -= (size_t)n;
  }
}

static void read_byte(int fd) {
  char c;
  ssize_t n;
  do {
    n = read(fd, &c, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    fail("read");
  }
}

static void write_byte(int fd) {
  write_all(fd, "x", 1);
}

/* Reads a whole small file (from /proc or /sys) into buffer; "" on error. */
static const char *read_text(const char *path, char *buffer, size_t size) {
  buffer[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f) {
    size_t n = fread(buffer, 1, size - 1, f);
    buffer[n] = '\0';
    fclose(f);
  }
  buffer[strcspn(buffer, "\n")] = '\0';
  return buffer;
}

/* The value of "key : value" in /proc/cpuinfo's first processor. */
static void cpuinfo_field(const char *key, char *value, size_t size) {
  value[0] = '\0';
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) {
    return;
  }
  char line[4096]; /* the flags line is long */
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (colon && strncmp(line, key, strlen(key)) == 0) {
      snprintf(value, size, "%s", colon + 2);
      value[strcspn(value, "\n")] = '\0';
      break;
    }
  }
  fclose(f);
}

static void format_size(double bytes, char *text, size_t size) {
  if (bytes >= MIB) {
    snprintf(text, size, "%g MiB", bytes / MIB);
  } else {
    snprintf(text, size, "%g KiB", bytes / KIB);
  }
}

/* ---- The machine ---------------------------------------------------- */

static struct {
  double l1, l2, l3; /* data cache sizes in bytes */
  const char *cache_source;
  char cpu[160];
  char mhz[32];
  char kernel[200];
  char thp[64];
  char load[64];
  int cpus;
} machine;

/* Cache sizes from sysfs, or from the C library (CPUID) where sysfs has
 * none (some virtual machines), or common defaults. */
static void find_caches(void) {
  machine.cache_source = "sysfs";
  for (int index = 0; index < 8; index++) {
    char path[128], text[64], level[16], size[32];
    snprintf(path, sizeof path,
             "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
    if (!*read_text(path, text, sizeof text)) {
      break;
    }
    if (strcmp(text, "Instruction") == 0) {
      continue;
    }
    snprintf(path, sizeof path,
             "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
    read_text(path, level, sizeof level);
    snprintf(path, sizeof path,
             "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
    read_text(path, size, sizeof size);
    char *unit;
    double bytes = strtod(size, &unit);
    bytes *= *unit == 'M' ? MIB : *unit == 'K' ? KIB : 1;
    if (strcmp(level, "1") == 0) {
      machine.l1 = bytes;
    } else if (strcmp(level, "2") == 0) {
      machine.l2 = bytes;
    } else if (strcmp(level, "3") == 0) {
      machine.l3 = bytes;
    }
  }
#ifdef _SC_LEVEL1_DCACHE_SIZE
  if (machine.l1 <= 0 || machine.l2 <= 0) {
    machine.cache_source = "sysconf (CPUID; no cache in sysfs)";
    machine.l1 = (double)sysconf(_SC_LEVEL1_DCACHE_SIZE);
    machine.l2 = (double)sysconf(_SC_LEVEL2_CACHE_SIZE);
    machine.l3 = (double)sysconf(_SC_LEVEL3_CACHE_SIZE);
  }
#endif
  if (machine.l1 <= 0 || machine.l2 <= machine.l1) {
    machine.cache_source = "defaults (sizes unknown here)";
    machine.l1 = 32 * KIB;
    machine.l2 = 256 * KIB;
    machine.l3 = 8 * MIB;
  }
  if (machine.l3 <= machine.l2) {
    machine.l3 = 0; /* no L3 */
  }
}

static void describe_machine(void) {
  find_caches();
  cpuinfo_field("model name", machine.cpu, sizeof machine.cpu);
  cpuinfo_field("cpu MHz", machine.mhz, sizeof machine.mhz);
  machine.cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
  struct utsname u;
  if (uname(&u) == 0) {
    snprintf(machine.kernel, sizeof machine.kernel, "%s %s %s", u.sysname,
             u.release, u.machine);
  }
  read_text("/sys/kernel/mm/transparent_hugepage/enabled", machine.thp,
            sizeof machine.thp);
  read_text("/proc/loadavg", machine.load, sizeof machine.load);
}

/* ---- One CPU cycle ---------------------------------------------------- */

/* The cycle is timed over a chain of dependent 64-bit multiplies: each
 * needs the one before, and an integer multiply's latency is 3 cycles on
 * every x86-64 core of the last fifteen years (Intel since Core 2, AMD since
 * K10 and every Zen). No core folds or eliminates a multiply, unlike a chain
 * of adds of a constant, which Intel cores since Golden Cove (Sapphire
 * Rapids) execute several per cycle at rename: such a chain showed a
 * "17.6 GHz" clock on a 2.3 GHz Xeon. The empty asm keeps the compiler from
 * merging the multiplies, and the factor lives in a register the compiler
 * cannot see into, so that it cannot turn a multiply into shifts and adds.
 * Elsewhere (no known multiply latency) the chain is of register adds, one
 * cycle each, which no core eliminates either. */
#if defined(__x86_64__) || defined(__i386__)
#define CHAIN_LATENCY 3
#define CHAIN_STEP(x, m) x *= m;
#define CHAIN_TEXT "dependent 64-bit integer multiplies (3 cycles each)"
#else
#define CHAIN_LATENCY 1
#define CHAIN_STEP(x, m) x += m;
#define CHAIN_TEXT "dependent register adds (1 cycle each)"
#endif
#define STEP1(x, m)                                                            \
  CHAIN_STEP(x, m)                                                             \
  __asm__ volatile("" : "+r"(x));
#define STEP5(x, m) STEP1(x, m) STEP1(x, m) STEP1(x, m) STEP1(x, m) STEP1(x, m)
#define STEP10(x, m) STEP5(x, m) STEP5(x, m)
#define STEPS_PER_ROUND 100

static uint64_t dependent_chain(long rounds) {
  uint64_t x = 1, m = 0x9E3779B97F4A7C15u; /* odd: x never becomes 0 */
  __asm__ volatile("" : "+r"(m));
  for (long i = 0; i < rounds; i++) {
    STEP10(x, m) STEP10(x, m) STEP10(x, m) STEP10(x, m) STEP10(x, m);
    STEP10(x, m) STEP10(x, m) STEP10(x, m) STEP10(x, m) STEP10(x, m);
  }
  return x;
}

/* The time-stamp counter's rate in GHz, against the monotonic clock, where
 * the CPU says it ticks at a constant rate (constant_tsc: the nominal
 * clock, whatever the core's speed); 0 elsewhere. */
static double tsc_ghz(void) {
#if defined(__x86_64__) || defined(__i386__)
  char flags[4096];
  cpuinfo_field("flags", flags, sizeof flags);
  if (!strstr(flags, " constant_tsc")) {
    return 0;
  }
  double rates[5];
  for (int i = 0; i < 5; i++) {
    uint32_t lo0, hi0, lo1, hi1;
    double t0 = now_ns();
    __asm__ volatile("rdtsc" : "=a"(lo0), "=d"(hi0));
    double t1;
    do { /* 10 ms: the clocks' read costs are far below 0.1 % of it */
      t1 = now_ns();
    } while (t1 - t0 < 1e7);
    __asm__ volatile("rdtsc" : "=a"(lo1), "=d"(hi1));
    uint64_t ticks =
        (((uint64_t)hi1 << 32) | lo1) - (((uint64_t)hi0 << 32) | lo0);
    rates[i] = (double)ticks / (t1 - t0);
  }
  qsort(rates, 5, sizeof rates[0], compare_doubles);
  return rates[2];
#else
  return 0;
#endif
}

/* A cpufreq figure of cpu0 in GHz (its files are in kHz), or 0. */
static double cpufreq_ghz(const char *name) {
  char path[128], text[64];
  snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cpufreq/%s", name);
  return atof(read_text(path, text, sizeof text)) / 1e6;
}

/* A figure (in ns) from the environment, for the tests of the check; or 0. */
static double injected_ns(const char *name) {
  const char *text = getenv(name);
  double ns = text ? atof(text) : 0;
  if (ns > 0) {
    fprintf(stderr, "chat-latency: %s=%s: %s\n", name, text,
            strcmp(name, "CHAT_LATENCY_CHAIN_NS") == 0
                ? "pretending the chain measured this"
                : "reporting this cycle, unchecked (a deliberately broken "
                  "figure, for the test)");
  }
  return ns;
}

/* Set when the chain's clock is not believable: the table says so. */
static char cycle_warning[160];

static void measure_cycle(void) {
  progress("one CPU cycle");
  samples_reset();
  /* About 3 million cycles a sample (1 ms at 3 GHz): short enough that
   * most samples run without being preempted on a busy machine. */
  const long rounds = 10000;
  const double cycles = (double)rounds * STEPS_PER_ROUND * CHAIN_LATENCY;
  sink = dependent_chain(rounds); /* warm up: let the clock speed settle */
  struct budget b = budget(0.6, 1000);
  while (budget_left(&b)) {
    double t0 = cpu_now_ns();
    sink = dependent_chain(rounds);
    sample_add((cpu_now_ns() - t0) / cycles, rounds * STEPS_PER_ROUND);
  }
  struct row *row = &rows[ROW_CYCLE];
  samples_to_row(row);
  double injected = injected_ns("CHAT_LATENCY_CHAIN_NS");
  if (injected > 0) {
    row->median_ns = row->min_ns = injected;
  }

  /* Check the chain's clock against the nominal one: the time-stamp
   * counter's rate where it is constant, else /proc/cpuinfo's "cpu MHz".
   * Turbo runs a core up to about twice its nominal clock (or up to
   * cpufreq's maximum, where the kernel gives one), power saving down to
   * about half (or cpufreq's minimum); outside that, the chain was not
   * timed right (a core that folds it, a virtual machine's clock) and the
   * nominal clock is the better figure. */
  double chain = 1 / row->median_ns;
  double tsc = tsc_ghz();
  double cpuinfo = atof(machine.mhz) / 1000;
  double nominal = tsc > 0 ? tsc : cpuinfo;
  double high = cpufreq_ghz("cpuinfo_max_freq") * 1.1;
  double low = cpufreq_ghz("cpuinfo_min_freq") * 0.9;
  if (high <= 0 || high < nominal) {
    high = 2 * nominal;
  }
  if (low <= 0 || low > nominal) {
    low = nominal / 2;
  }
  char clocks[160];
  snprintf(clocks, sizeof clocks,
           "time-stamp counter %.2f GHz; /proc/cpuinfo %s MHz", tsc,
           *machine.mhz ? machine.mhz : "?");
  if (tsc <= 0) {
    snprintf(clocks, sizeof clocks,
             "no constant time-stamp counter; "
             "/proc/cpuinfo %s MHz",
             *machine.mhz ? machine.mhz : "?");
  }
  if (nominal <= 0) {
    snprintf(row->method, sizeof row->method,
             "a chain of " CHAIN_TEXT ", 10^6 per sample, thread CPU time: "
             "%.2f GHz (%s: nothing to check it against)",
             chain, clocks);
  } else if (chain >= low && chain <= high) {
    snprintf(row->method, sizeof row->method,
             "a chain of " CHAIN_TEXT ", 10^6 per sample, thread CPU time: "
             "%.2f GHz, %.2f x the nominal clock (%s; believable from %.2f "
             "to %.2f GHz)",
             chain, chain / nominal, clocks, low, high);
  } else {
    snprintf(cycle_warning, sizeof cycle_warning,
             "the nominal clock: the measured %.2f GHz is %.2f x it, more "
             "than turbo explains",
             chain, chain / nominal);
    snprintf(
        row->method, sizeof row->method,
        "1 / the nominal clock, %.3f GHz (%s), because the chain of " CHAIN_TEXT
        " gave %.2f GHz, outside the believable %.2f to "
        "%.2f GHz",
        nominal, clocks, chain, low, high);
    row->median_ns = row->min_ns = 1 / nominal;
  }
  double broken = injected_ns("CHAT_LATENCY_CYCLE_NS");
  if (broken > 0) {
    row->median_ns = row->min_ns = broken;
    snprintf(row->method, sizeof row->method,
             "CHAT_LATENCY_CYCLE_NS=%g: a figure given, not measured", broken);
  }
}

/* ---- Caches and memory: a dependent pointer chase --------------------- */

struct chase_buffer {
  void *mapping;
  size_t mapping_size;
  char *lines; /* 64-byte lines, each starts with a pointer to the next */
  size_t count;
  bool huge;
};

#define LINE 64
#define HUGE_PAGE (2 * 1024 * 1024)

/* Anonymous memory on 2 MiB boundaries with transparent huge pages asked
 * for: then the chase measures the caches, not the TLB. */
static bool chase_alloc(struct chase_buffer *buffer, size_t bytes) {
  buffer->mapping_size = bytes + HUGE_PAGE;
  buffer->mapping = mmap(NULL, buffer->mapping_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buffer->mapping == MAP_FAILED) {
    return false;
  }
  uintptr_t start = ((uintptr_t)buffer->mapping + HUGE_PAGE - 1) &
                    ~(uintptr_t)(HUGE_PAGE - 1);
  buffer->lines = (char *)start;
  buffer->count = bytes / LINE;
#ifdef MADV_HUGEPAGE
  madvise(buffer->lines, bytes, MADV_HUGEPAGE);
#endif
  memset(buffer->lines, 0, bytes);
  return true;
}

/* Did the kernel give huge pages? AnonHugePages of this process grew. */
static long anon_huge_kib(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  if (!f) {
    return 0;
  }
  char line[256];
  long kib = 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) {
      break;
    }
  }
  fclose(f);
  return kib;
}

/* Links every line into one random cycle (Sattolo's algorithm), so that
 * each load depends on the one before and no prefetcher can guess it. */
static bool chase_link(struct chase_buffer *buffer) {
  uint32_t *order = malloc(buffer->count * sizeof *order);
  if (!order) {
    return false;
  }
  for (size_t i = 0; i < buffer->count; i++) {
    order[i] = (uint32_t)i;
  }
  for (size_t i = buffer->count - 1; i > 0; i--) {
    size_t j = rng_below(i); /* j < i: one single cycle */
    uint32_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (size_t i = 0; i < buffer->count; i++) {
    size_t next = (i + 1) % buffer->count;
    *(void **)(buffer->lines + (size_t)order[i] * LINE) =
        buffer->lines + (size_t)order[next] * LINE;
  }
  free(order);
  return true;
}

static void *chase(void *start, long steps) {
  void **p = start;
  for (long i = 0; i < steps; i += 8) {
    p = *p;
    p = *p;
    p = *p;
    p = *p;
    p = *p;
    p = *p;
    p = *p;
    p = *p;
  }
  return p;
}

/* One point of the staircase: the latency of a load at one working-set
 * size. */
struct sweep_point {
  double bytes;
  double median_ns, min_ns;
  long operations;
  bool huge; /* the kernel gave 2 MiB pages */
};

#define SWEEP_MAX 40
static struct sweep_point sweep[SWEEP_MAX];
static int sweep_count;

static bool measure_chase(struct sweep_point *point) {
  struct chase_buffer buffer;
  long huge_before = anon_huge_kib();
  if (!chase_alloc(&buffer, (size_t)point->bytes)) {
    return false;
  }
  point->huge = anon_huge_kib() > huge_before;
  if (!chase_link(&buffer)) {
    munmap(buffer.mapping, buffer.mapping_size);
    return false;
  }
  samples_reset();
  /* Warm the caches with up to one lap of the cycle, then size a sample
   * to take about 2 ms. */
  long lap = (long)buffer.count < 2000000 ? (long)buffer.count : 2000000;
  void *p = chase(buffer.lines, lap);
  double t0 = cpu_now_ns();
  p = chase(p, 100000);
  double step_ns = (cpu_now_ns() - t0) / 100000;
  long steps = (long)(2e6 / step_ns);
  steps = steps < 4000 ? 4000 : steps - steps % 8;
  struct budget b = budget(0.25, 100);
  while (budget_left(&b)) {
    t0 = cpu_now_ns();
    p = chase(p, steps);
    sample_add((cpu_now_ns() - t0) / (double)steps, steps);
  }
  sink = (uintptr_t)p;
  struct row result = {0};
  samples_to_row(&result);
  point->median_ns = result.median_ns;
  point->min_ns = result.min_ns;
  point->operations = result.samples;
  munmap(buffer.mapping, buffer.mapping_size);
  return true;
}

static void sweep_add(double bytes) {
  bytes = (double)((size_t)bytes / LINE * LINE);
  for (int i = 0; i < sweep_count; i++) {
    if (sweep[i].bytes == bytes) {
      return;
    }
  }
  if (sweep_count < SWEEP_MAX) {
    sweep[sweep_count++].bytes = bytes;
  }
}

static int compare_points(const void *a, const void *b) {
  double x = ((const struct sweep_point *)a)->bytes;
  double y = ((const struct sweep_point *)b)->bytes;
  return (x > y) - (x < y);
}

static const struct sweep_point *sweep_find(double bytes) {
  bytes = (double)((size_t)bytes / LINE * LINE);
  for (int i = 0; i < sweep_count; i++) {
    if (sweep[i].bytes == bytes && sweep[i].operations > 0) {
      return &sweep[i];
    }
  }
  return NULL;
}

static void chase_to_row(int row_index, double bytes, const char *why) {
  struct row *row = &rows[row_index];
  const struct sweep_point *point = sweep_find(bytes);
  if (!point) {
    snprintf(row->method, sizeof row->method, "not measured: no memory");
    return;
  }
  char size_text[32];
  format_size(bytes, size_text, sizeof size_text);
  row->median_ns = point->median_ns;
  row->min_ns = point->min_ns;
  row->samples = point->operations;
  row->measured = true;
  snprintf(row->method, sizeof row->method,
           "dependent loads over a random cyclic permutation of %.0f 64-byte "
           "lines (%s, %s; %s pages), thread CPU time",
           bytes / LINE, size_text, why, point->huge ? "2 MiB huge" : "4 KiB");
}

static double memory_available(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  double kib = 0;
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f)) {
      if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) {
        break;
      }
    }
    fclose(f);
  }
  return kib * KIB;
}

/* The staircase: every power of two from 16 KiB to the main-memory set,
 * plus the sizes the table's rows use. Then the rows:
 * - L1: half of L1d; L2: half of L2;
 * - L3: 4 x L2 (so at most a quarter of the loads can hit L2), at most half
 *   of L3. A virtual machine may report the L3 of a whole package, or
 *   share it with its neighbours: the staircase shows what one core gets;
 * - main memory: 4 x L3, at least 256 MiB, at most 1 GiB and a quarter of
 *   the free memory. */
static void measure_memory_hierarchy(void) {
  char l1[32], l2[32], l3[32], why[128];
  format_size(machine.l1, l1, sizeof l1);
  format_size(machine.l2, l2, sizeof l2);
  format_size(machine.l3, l3, sizeof l3);

  double l3_set = 4 * machine.l2;
  if (machine.l3 > 0 && l3_set > machine.l3 / 2) {
    l3_set = machine.l3 / 2;
  }
  double memory = 4 * machine.l3 > 256 * MIB ? 4 * machine.l3 : 256 * MIB;
  double most = options.scale < 1 ? 64 * MIB : 1024 * MIB; /* --quick */
  if (memory > most) {
    memory = most;
  }
  double available = memory_available();
  while (available > 0 && memory > 64 * MIB && memory > available / 4) {
    memory /= 2;
  }
  sweep_add(machine.l1 / 2);
  sweep_add(machine.l2 / 2);
  if (machine.l3 > 0) {
    sweep_add(l3_set);
  }
  sweep_add(memory);
  for (double bytes = 16 * KIB; bytes < memory && bytes <= 256 * MIB;
       bytes *= 2) {
    sweep_add(bytes);
  }
  qsort(sweep, (size_t)sweep_count, sizeof sweep[0], compare_points);
  char what[96], size_text[32];
  format_size(memory, size_text, sizeof size_text);
  snprintf(what, sizeof what,
           "cache and memory: %d working sets from 16 KiB to %s", sweep_count,
           size_text);
  progress(what);
  for (int i = 0; i < sweep_count; i++) {
    if (!measure_chase(&sweep[i])) {
      sweep[i].operations = 0;
    }
  }

  snprintf(why, sizeof why, "half of L1d = %s", l1);
  chase_to_row(ROW_L1, machine.l1 / 2, why);
  snprintf(why, sizeof why, "half of L2 = %s", l2);
  chase_to_row(ROW_L2, machine.l2 / 2, why);
  if (machine.l3 > 0) {
    snprintf(why, sizeof why, "%s; L3 = %s",
             l3_set < 4 * machine.l2 ? "half of L3" : "4 x L2", l3);
    chase_to_row(ROW_L3, l3_set, why);
  } else {
    snprintf(rows[ROW_L3].method, sizeof rows[ROW_L3].method,
             "not measured: this CPU reports no L3");
  }
  snprintf(why, sizeof why, "%s L3 = %s",
           memory >= 4 * machine.l3 ? "4 x" : "beyond", l3);
  chase_to_row(ROW_MEMORY, memory, why);
}

/* ---- Storage -------------------------------------------------------- */

static const char *filesystem_name(long type) {
  switch ((unsigned long)type) {
  case 0xEF53:
    return "ext4";
  case 0x58465342:
    return "xfs";
  case 0x9123683E:
    return "btrfs";
  case 0x01021994:
    return "tmpfs (memory, not a disk)";
  case 0x794C7630:
    return "overlayfs";
  case 0x2FC12FC1:
    return "zfs";
  case 0xF2F52010:
    return "f2fs";
  default:
    return "unknown";
  }
}

static char storage_note[256];

static void *aligned_block(size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, BLOCK, size) != 0) {
    errno = ENOMEM;
    fail("posix_memalign");
  }
  memset(p, 0x5A, size);
  return p;
}

static void measure_storage(void) {
  const char *dir = options.tmp_dir;
  if (!dir) {
    dir = getenv("TMPDIR");
  }
  if (!dir || !*dir) {
    dir = "/var/tmp"; /* /tmp is memory on many systems */
  }
  struct statfs fs;
  const char *fs_name =
      statfs(dir, &fs) == 0 ? filesystem_name(fs.f_type) : "unknown";
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/chat-latency-XXXXXX", dir);
  int fd = mkstemp(path);
  if (fd < 0) {
    snprintf(rows[ROW_DISK_SYNC].method, sizeof rows[0].method,
             "not measured: cannot create a file in %s", dir);
    snprintf(rows[ROW_DISK_READ].method, sizeof rows[0].method,
             "not measured: cannot create a file in %s", dir);
    return;
  }
  int direct = open(path, O_RDONLY | O_DIRECT);
  unlink(path); /* gone when closed, whatever happens */
  snprintf(storage_note, sizeof storage_note, "a temporary file in %s (%s)",
           dir, fs_name);

  /* Write + fdatasync, over blocks already allocated and synced, so that
   * each sync writes one data block (and the device flushes its cache). */
  progress("SSD write 4 KiB + fdatasync");
  const size_t sync_area = 256 * BLOCK;
  char *block = aligned_block(4 * MIB);
  for (size_t done = 0; done < sync_area; done += BLOCK) {
    write_all(fd, block, BLOCK);
  }
  fsync(fd);
  samples_reset();
  struct budget b = budget(4, 400);
  for (long i = 0; budget_left(&b); i++) {
    block[0] = (char)i;
    double t0 = now_ns();
    if (pwrite(fd, block, BLOCK, (off_t)((size_t)i % 256 * BLOCK)) != BLOCK ||
        fdatasync(fd) != 0) {
      fail("pwrite/fdatasync");
    }
    sample_add(now_ns() - t0, 1);
  }
  samples_to_row(&rows[ROW_DISK_SYNC]);
  snprintf(rows[ROW_DISK_SYNC].method, sizeof rows[0].method,
           "pwrite of 4 KiB over an allocated block, then fdatasync; in %s",
           storage_note);

  /* Random 4 KiB reads of a 64 MiB file (16 MiB with --quick), bypassing
   * the page cache. */
  progress("SSD random read 4 KiB");
  const size_t file_size = (size_t)(options.scale < 1 ? 16 * MIB : 64 * MIB);
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
    fail("ftruncate");
  }
  for (size_t done = 0; done < file_size; done += (size_t)(4 * MIB)) {
    block[done / BLOCK % 4096] ^= 1;
    write_all(fd, block, (size_t)(4 * MIB));
  }
  fsync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  const char *how = "O_DIRECT";
  int reader = direct;
  if (direct >= 0 && pread(direct, block, BLOCK, 0) != BLOCK) {
    close(direct);
    direct = reader = -1;
  }
  if (reader < 0) {
    how = "no O_DIRECT here: page cache dropped with posix_fadvise";
    reader = fd;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  samples_reset();
  b = budget(3, 3000);
  size_t blocks = file_size / BLOCK;
  while (budget_left(&b)) {
    off_t offset = (off_t)(rng_below(blocks) * BLOCK);
    double t0 = now_ns();
    if (pread(reader, block, BLOCK, offset) != BLOCK) {
      fail("pread");
    }
    sample_add(now_ns() - t0, 1);
  }
  samples_to_row(&rows[ROW_DISK_READ]);
  snprintf(rows[ROW_DISK_READ].method, sizeof rows[0].method,
           "pread of a random 4 KiB block of a %zu MiB file (%s); in %s",
           file_size >> 20, how, storage_note);
  snprintf(rows[ROW_ROTATIONAL].method, sizeof rows[0].method,
           "not measured: the talk's figure only");
  free(block);
  if (direct >= 0) {
    close(direct);
  }
  close(fd);
}

/* ---- Loopback TCP round trip ------------------------------------------ */

/* A child process echoes every byte back until the connection closes. */
static void measure_loopback(void) {
  progress("loopback TCP round trip");
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  if (listener < 0 ||
      bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, (struct sockaddr *)&address, &length) != 0) {
    fail("loopback listener");
  }
  pid_t child = fork();
  if (child < 0) {
    fail("fork");
  }
  if (child == 0) {
    int fd = accept(listener, NULL, NULL);
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    char c;
    while (read(fd, &c, 1) == 1 && write(fd, &c, 1) == 1) {
    }
    _exit(0);
  }
  close(listener);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address)) {
    fail("loopback connect");
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  for (int i = 0; i < 200; i++) { /* warm up */
    write_byte(fd);
    read_byte(fd);
  }
  samples_reset();
  struct budget b = budget(2, MAX_SAMPLES);
  while (budget_left(&b)) {
    double t0 = now_ns();
    write_byte(fd);
    read_byte(fd);
    sample_add(now_ns() - t0, 1);
  }
  close(fd);
  waitpid(child, NULL, 0);
  samples_to_row(&rows[ROW_LOOPBACK]);
  snprintf(rows[ROW_LOOPBACK].method, sizeof rows[0].method,
           "1 byte to an echoing process over 127.0.0.1 and back, "
           "TCP_NODELAY; the talk's nearest row is an Internet call");
  snprintf(rows[ROW_INTERNET].method, sizeof rows[0].method,
           "not measured: the talk's figure only (this run stays on "
           "loopback)");
}

/* ---- Switches: pipe ping-pong --------------------------------------- */

/* Two tasks pinned to one CPU pass a byte back and forth through two pipes:
 * each pass is one switch, plus one pipe write and one read. */
static int cpu_for_switches = -1;
static cpu_set_t saved_affinity;

static void pin_to_one_cpu(void) {
  sched_getaffinity(0, sizeof saved_affinity, &saved_affinity);
  cpu_for_switches = sched_getcpu();
  if (cpu_for_switches < 0 || !CPU_ISSET(cpu_for_switches, &saved_affinity)) {
    cpu_for_switches = -1; /* unpinned: the method says so */
    return;
  }
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu_for_switches, &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) {
    cpu_for_switches = -1; /* unpinned: the method says so */
  }
}

static void unpin(void) {
  sched_setaffinity(0, sizeof saved_affinity, &saved_affinity);
}

struct ping_pong {
  int to_partner[2], from_partner[2];
};

static void partner_loop(struct ping_pong *pp) {
  char c;
  while (read(pp->to_partner[0], &c, 1) == 1 &&
         write(pp->from_partner[1], &c, 1) == 1) {
  }
}

static void *partner_thread(void *arg) {
  partner_loop(arg);
  return NULL;
}

static void ping_pong_samples(struct ping_pong *pp) {
  const long batch = 50;
  for (int i = 0; i < 200; i++) { /* warm up */
    write_byte(pp->to_partner[1]);
    read_byte(pp->from_partner[0]);
  }
  samples_reset();
  struct budget b = budget(1, 4000);
  while (budget_left(&b)) {
    double t0 = now_ns();
    for (long i = 0; i < batch; i++) {
      write_byte(pp->to_partner[1]);
      read_byte(pp->from_partner[0]);
    }
    sample_add((now_ns() - t0) / (2.0 * batch), 2 * batch);
  }
}

/* The same pipe write and read with no switch: what the ping-pong pays
 * besides the switch itself. */
static double pipe_alone_ns(void) {
  int p[2];
  if (pipe(p) != 0) {
    fail("pipe");
  }
  const long n = 20000;
  double best = 1e30;
  for (int trial = 0; trial < 5; trial++) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
      write_byte(p[1]);
      read_byte(p[0]);
    }
    double each = (now_ns() - t0) / n;
    best = each < best ? each : best;
  }
  close(p[0]);
  close(p[1]);
  return best;
}

static void open_ping_pong(struct ping_pong *pp) {
  if (pipe2(pp->to_partner, O_CLOEXEC) != 0 ||
      pipe2(pp->from_partner, O_CLOEXEC) != 0) {
    fail("pipe");
  }
}

static void close_fd(int *fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

static void close_ping_pong(struct ping_pong *pp) {
  close_fd(&pp->to_partner[1]); /* first: the partner reads EOF and ends */
  close_fd(&pp->to_partner[0]);
  close_fd(&pp->from_partner[0]);
  close_fd(&pp->from_partner[1]);
}

static void measure_switches(void) {
  double alone = pipe_alone_ns();
  char pinned[64];
  pin_to_one_cpu();
  if (cpu_for_switches >= 0) {
    snprintf(pinned, sizeof pinned, "both pinned to CPU %d", cpu_for_switches);
  } else {
    snprintf(pinned, sizeof pinned, "not pinned");
  }

  progress("process context switch");
  struct ping_pong pp;
  open_ping_pong(&pp);
  pid_t child = fork();
  if (child < 0) {
    fail("fork");
  }
  if (child == 0) {
    close(pp.to_partner[1]);
    partner_loop(&pp);
    _exit(0);
  }
  ping_pong_samples(&pp);
  close_ping_pong(&pp); /* EOF: the child leaves */
  waitpid(child, NULL, 0);
  samples_to_row(&rows[ROW_PROCESS_SWITCH]);
  snprintf(rows[ROW_PROCESS_SWITCH].method, sizeof rows[0].method,
           "two processes pass a byte through two pipes, %s; per switch, "
           "including one pipe write+read (alone: %.0f ns)",
           pinned, alone);

  progress("thread switch");
  open_ping_pong(&pp);
  pthread_t thread;
  if (pthread_create(&thread, NULL, partner_thread, &pp) != 0) {
    fail("pthread_create");
  }
  ping_pong_samples(&pp);
  close_fd(&pp.to_partner[1]); /* EOF: the thread returns */
  pthread_join(thread, NULL);
  close_ping_pong(&pp);
  samples_to_row(&rows[ROW_THREAD_SWITCH]);
  snprintf(rows[ROW_THREAD_SWITCH].method, sizeof rows[0].method,
           "two threads of one process, same ping-pong, %s; no address-"
           "space change; includes one pipe write+read",
           pinned);
  unpin();
}

/* ---- Creating workers ------------------------------------------------ */

static void measure_fork(void) {
  progress("fork + exit + wait");
  for (int i = 0; i < 20; i++) { /* warm up */
    pid_t pid = fork();
    if (pid == 0) {
      _exit(0);
    }
    waitpid(pid, NULL, 0);
  }
  samples_reset();
  struct budget b = budget(2, 3000);
  while (budget_left(&b)) {
    double t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
      fail("fork");
    }
    if (pid == 0) {
      _exit(0);
    }
    waitpid(pid, NULL, 0);
    sample_add(now_ns() - t0, 1);
  }
  samples_to_row(&rows[ROW_FORK]);
  char rss[64];
  long size = 0, pages = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &pages) != 2) {
      pages = 0;
    }
    fclose(f);
  }
  snprintf(rss, sizeof rss, "%.1f MiB",
           (double)pages * (double)sysconf(_SC_PAGESIZE) / MIB);
  snprintf(rows[ROW_FORK].method, sizeof rows[0].method,
           "fork, the child calls _exit(0), the parent waitpid()s; from a "
           "parent of %s resident (a bigger parent copies more page tables)",
           rss);
}

static void *do_nothing(void *arg) {
  return arg;
}

static void measure_pthread(void) {
  progress("pthread_create + join");
  samples_reset();
  struct budget b = budget(1, 5000);
  while (budget_left(&b)) {
    pthread_t thread;
    double t0 = now_ns();
    if (pthread_create(&thread, NULL, do_nothing, NULL) != 0) {
      fail("pthread_create");
    }
    pthread_join(thread, NULL);
    sample_add(now_ns() - t0, 1);
  }
  samples_to_row(&rows[ROW_PTHREAD]);
  snprintf(rows[ROW_PTHREAD].method, sizeof rows[0].method,
           "a thread that returns at once, default attributes (glibc reuses "
           "the stack of a joined thread)");
}

/* ---- Event loop wake-ups ----------------------------------------------- */

/* One thread, a socket pair: write a byte to one end, the loop wakes up for
 * the other end and reads it. No switch: this is what an event loop pays per
 * ready connection, where the other models pay a switch. */
static void measure_epoll(void) {
  progress("epoll wake-up");
  int pair[2];
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair)) {
    fail("epoll/socketpair");
  }
  struct epoll_event watch = {.events = EPOLLIN, .data.fd = pair[0]};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, pair[0], &watch) != 0) {
    fail("epoll_ctl");
  }
  const long batch = 100;
  samples_reset();
  struct budget b = budget(0.6, 4000);
  while (budget_left(&b)) {
    double t0 = now_ns();
    for (long i = 0; i < batch; i++) {
      write_byte(pair[1]);
      struct epoll_event ready;
      if (epoll_wait(ep, &ready, 1, -1) != 1) {
        fail("epoll_wait");
      }
      read_byte(ready.data.fd);
    }
    sample_add((now_ns() - t0) / batch, batch);
  }
  samples_to_row(&rows[ROW_EPOLL]);
  snprintf(rows[ROW_EPOLL].method, sizeof rows[0].method,
           "one thread: write a byte into a socket pair, epoll_wait returns "
           "the other end, read it; no switch");
  close(ep);
  close(pair[0]);
  close(pair[1]);
}

struct loop_state {
  struct event_base *base;
  int pair[2];
  long left;
};

static void on_readable(evutil_socket_t fd, short events, void *arg) {
  (void)events;
  struct loop_state *state = arg;
  read_byte((int)fd);
  if (--state->left > 0) {
    write_byte(state->pair[1]); /* the next turn of the loop wakes again */
  } else {
    event_base_loopbreak(state->base);
  }
}

static void measure_libevent(void) {
  progress("libevent wake-up");
  struct loop_state state = {.base = event_base_new()};
  if (!state.base ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, state.pair) != 0) {
    fail("event_base_new/socketpair");
  }
  struct event *readable = event_new(state.base, state.pair[0],
                                     EV_READ | EV_PERSIST, on_readable, &state);
  if (!readable || event_add(readable, NULL) != 0) {
    fail("event_new");
  }
  const long batch = 100;
  samples_reset();
  struct budget b = budget(0.6, 4000);
  while (budget_left(&b)) {
    state.left = batch;
    double t0 = now_ns();
    write_byte(state.pair[1]);
    event_base_dispatch(state.base);
    sample_add((now_ns() - t0) / batch, batch);
  }
  samples_to_row(&rows[ROW_LIBEVENT]);
  snprintf(rows[ROW_LIBEVENT].method, sizeof rows[0].method,
           "the same through libevent %s (%s): one loop turn, a callback that "
           "reads the byte and writes the next",
           event_get_version(), event_base_get_method(state.base));
  event_free(readable);
  event_base_free(state.base);
  close(state.pair[0]);
  close(state.pair[1]);
}

/* ---- Coroutines: coroutine/coro.c and loop.c ------------------------- */

#ifdef CHAT_LATENCY_CORO
/* Two coroutines of chat-coroutine's own code (coroutine/coro.c, linked,
 * not copied) play ping-pong: `ping` resumes `pong`, which yields straight
 * back. A resume and a yield are two one-way switches, as a pipe's round
 * trip is two for the thread and process rows; nothing else is done, so the
 * row is the switch alone (registers and stack pointer, no system call).
 * Wall time, as coro-bench and the other switch rows: a sample is a batch
 * of about a millisecond, and the median drops the few a busy machine
 * preempts. (This thread's CPU time, tried on the project's VM, agreed on
 * the median but read some batches at half of it.) */
static struct coro *pong;

static void pong_body(void *arg) {
  (void)arg;
  for (;;) {
    coro_yield();
  }
}

static void ping_body(void *arg) {
  (void)arg;
  const long rounds = 50000; /* 100,000 switches: about a millisecond */
  for (int i = 0; i < 1000; i++) {
    coro_resume(pong); /* warm up */
  }
  struct budget b = budget(1, 2000);
  while (budget_left(&b)) {
    double t0 = now_ns();
    for (long i = 0; i < rounds; i++) {
      coro_resume(pong);
    }
    sample_add((now_ns() - t0) / (2.0 * rounds), 2 * rounds);
  }
}

static void measure_coroutine_switch(void) {
  progress("coroutine switch");
  samples_reset();
  struct coro *ping = coro_create(ping_body, NULL, 64 * 1024);
  pong = coro_create(pong_body, NULL, 64 * 1024);
  if (!ping || !pong) {
    fail("coro_create");
  }
  coro_resume(ping); /* takes every sample, then returns */
  coro_destroy(ping);
  coro_destroy(pong); /* suspended in its yield: discarded as it is */
  samples_to_row(&rows[ROW_CORO_SWITCH]);
  snprintf(rows[ROW_CORO_SWITCH].method, sizeof rows[0].method,
           "two coroutines of coroutine/coro.c (64 KiB stacks) play "
           "ping-pong: one resumes the other, which yields back; per one-way "
           "switch, %s",
           CHAT_LATENCY_CORO_SWITCH);
}

/* One turn of chat-coroutine's loop (coroutine/loop.c) when nothing is
 * ready: loop_turn(loop, 0), that is epoll_wait with a zero timeout, a
 * clock read and the timer check, with one idle socket watched. What the
 * loop pays per turn before any connection's work. Wall time, as the
 * switch. */
static void on_idle_socket(struct loop *loop, int fd, void *data, int ready) {
  (void)loop;
  (void)fd;
  (void)data;
  (void)ready;
  errno = EPROTO;
  fail("an idle socket fired");
}

static void measure_loop_turn(void) {
  progress("event loop turn");
  int pair[2];
  struct loop *loop = loop_create(1024);
  if (!loop || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0 ||
      !loop_watch(loop, pair[0], LOOP_READABLE, on_idle_socket, NULL)) {
    fail("loop_create/socketpair/loop_watch");
  }
  const long batch = 10000; /* about a millisecond */
  for (int i = 0; i < 1000; i++) {
    loop_turn(loop, 0); /* warm up */
  }
  samples_reset();
  struct budget b = budget(0.6, 4000);
  while (budget_left(&b)) {
    double t0 = now_ns();
    for (long i = 0; i < batch; i++) {
      if (loop_turn(loop, 0) < 0) {
        fail("loop_turn");
      }
    }
    sample_add((now_ns() - t0) / batch, batch);
  }
  samples_to_row(&rows[ROW_LOOP_TURN]);
  snprintf(rows[ROW_LOOP_TURN].method, sizeof rows[0].method,
           "loop_turn(loop, 0) of coroutine/loop.c with one idle socket "
           "watched: epoll_wait with a zero timeout, nothing ready, a clock "
           "read, the timer check");
  loop_destroy(loop);
  close(pair[0]);
  close(pair[1]);
}
#else
static void measure_coroutine_switch(void) {
  snprintf(rows[ROW_CORO_SWITCH].method, sizeof rows[0].method,
           "not measured: chat-latency was built without coroutine/");
}

static void measure_loop_turn(void) {
  snprintf(rows[ROW_LOOP_TURN].method, sizeof rows[0].method,
           "not measured: chat-latency was built without coroutine/");
}
#endif

/* ---- Output ------------------------------------------------------------ */

static void format_ns(double ns, char *text, size_t size) {
  if (ns < 10) {
    snprintf(text, size, "%.2f ns", ns);
  } else if (ns < 1000) {
    snprintf(text, size, "%.0f ns", ns);
  } else if (ns < 1e6) {
    snprintf(text, size, "%.1f us", ns / 1e3);
  } else if (ns < 1e9) {
    snprintf(text, size, "%.1f ms", ns / 1e6);
  } else {
    snprintf(text, size, "%.2f s", ns / 1e9);
  }
}

/* A duration in seconds in the largest unit that keeps it above one. */
static void format_scaled(double seconds, char *text, size_t size) {
  static const struct {
    const char *unit;
    double seconds;
  } units[] = {{"years", 365.25 * 86400},
               {"months", 30.44 * 86400},
               {"days", 86400},
               {"hrs", 3600},
               {"min", 60},
               {"s", 1}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (seconds >= units[i].seconds || i + 1 == sizeof units / sizeof *units) {
      double value = seconds / units[i].seconds;
      snprintf(text, size, value < 10 ? "%.1f %s" : "%.0f %s", value,
               units[i].unit);
      return;
    }
  }
}

static void cell_texts(const struct row *row, char *measured, char *scaled,
                       size_t size) {
  if (!row->measured) {
    snprintf(measured, size, "not measured");
    snprintf(scaled, size, "-");
    return;
  }
  format_ns(row->median_ns, measured, size);
  format_scaled(row->median_ns / rows[ROW_CYCLE].median_ns, scaled, size);
}

static void print_table(FILE *out, const char *group) {
  bool talk = strcmp(group, "talk") == 0;
  fprintf(out, talk ? "| Event | Measured here | Scaled (1 cycle = 1 s) | "
                      "Talk | Talk, scaled |\n| --- | ---: | ---: | ---: | "
                      "---: |\n"
                    : "| Cost | Measured here | Scaled (1 cycle = 1 s) |\n"
                      "| --- | ---: | ---: |\n");
  for (int i = 0; i < ROW_COUNT; i++) {
    const struct row *row = &rows[i];
    if (strcmp(row->group, group) != 0) {
      continue;
    }
    char measured[32], scaled[32];
    cell_texts(row, measured, scaled, sizeof measured);
    fprintf(out, "| %s%s%s%s", row->event,
            row->talk_event ? " (the talk: " : "",
            row->talk_event ? row->talk_event : "", row->talk_event ? ")" : "");
    if (i == ROW_CYCLE && *cycle_warning) {
      fprintf(out, " (%s)", cycle_warning);
    }
    fprintf(out, " | %s | %s |", measured, scaled);
    if (talk) {
      fprintf(out, " %s | %s |", row->talk_latency ? row->talk_latency : "-",
              row->talk_scaled ? row->talk_scaled : "-");
    }
    fputc('\n', out);
  }
}

static void write_markdown(FILE *out, double seconds) {
  time_t now = time(NULL);
  char date[64];
  strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
  char l1[32], l2[32], l3[32];
  format_size(machine.l1, l1, sizeof l1);
  format_size(machine.l2, l2, sizeof l2);
  format_size(machine.l3, l3, sizeof l3);
  fprintf(out, "# Latency, measured on this machine\n\n");
  fprintf(out, "The talk's \"Why async?\" table, measured by `chat-latency` "
               "(bench/latency/), with the talk's own figures beside it. "
               "*Scaled* stretches time so that one CPU cycle of this machine "
               "lasts one second. Each figure is a median; see the method "
               "column of latency.csv.\n\n");
  fprintf(out, "## Why async? I/O is slow\n\n");
  print_table(out, "talk");
  fprintf(out, "\n## What the four server models pay\n\n");
  print_table(out, "model");
  fprintf(out, "\n## Latency by working-set size\n\n"
               "A dependent load over a random cycle through N bytes: the "
               "steps are the caches.\n\n| Working set | Latency | "
               "Cycles |\n| ---: | ---: | ---: |\n");
  for (int i = 0; i < sweep_count; i++) {
    if (sweep[i].operations > 0) {
      char size_text[32], latency[32];
      format_size(sweep[i].bytes, size_text, sizeof size_text);
      format_ns(sweep[i].median_ns, latency, sizeof latency);
      fprintf(out, "| %s | %s | %.0f |\n", size_text, latency,
              sweep[i].median_ns / rows[ROW_CYCLE].median_ns);
    }
  }
  fprintf(out, "\n## Method\n\n");
  for (int i = 0; i < ROW_COUNT; i++) {
    fprintf(out, "- **%s**: %s", rows[i].event, rows[i].method);
    if (rows[i].measured) {
      fprintf(out, " (%ld operations)", rows[i].samples);
    }
    fputc('\n', out);
  }
  fprintf(out, "\n## Machine\n\n");
  fprintf(out, "- Date: %s; run time %.0f s\n", date, seconds);
  fprintf(out, "- CPU: %s, %d CPUs online, %s MHz nominal\n",
          *machine.cpu ? machine.cpu : "unknown", machine.cpus,
          *machine.mhz ? machine.mhz : "?");
  fprintf(out, "- Caches: L1d %s, L2 %s, L3 %s (from %s)\n", l1, l2,
          machine.l3 > 0 ? l3 : "none", machine.cache_source);
  fprintf(out, "- Kernel: %s; transparent huge pages: %s\n", machine.kernel,
          *machine.thp ? machine.thp : "unknown");
  fprintf(out, "- Storage: %s\n", *storage_note ? storage_note : "unknown");
  fprintf(out,
          "- Load average at start: %s (other work on the machine "
          "shows up as noise)\n",
          machine.load);
}

static void csv_field(FILE *out, const char *text) {
  fputc('"', out);
  for (const char *p = text ? text : ""; *p; p++) {
    if (*p == '"') {
      fputc('"', out);
    }
    fputc(*p, out);
  }
  fputc('"', out);
}

static void write_csv(FILE *out) {
  fprintf(out, "group,id,event,median_ns,min_ns,operations,scaled_seconds,"
               "scaled,talk_latency,talk_scaled,talk_event,method\n");
  for (int i = 0; i < ROW_COUNT; i++) {
    const struct row *row = &rows[i];
    char measured[32], scaled[32];
    cell_texts(row, measured, scaled, sizeof measured);
    fprintf(out, "%s,%s,", row->group, row->id);
    csv_field(out, row->event);
    if (row->measured) {
      fprintf(out, ",%.3f,%.3f,%ld,%.3f,", row->median_ns, row->min_ns,
              row->samples, row->median_ns / rows[ROW_CYCLE].median_ns);
      csv_field(out, scaled);
    } else {
      fprintf(out, ",,,,,");
    }
    fputc(',', out);
    csv_field(out, row->talk_latency);
    fputc(',', out);
    csv_field(out, row->talk_scaled);
    fputc(',', out);
    csv_field(out, row->talk_event);
    fputc(',', out);
    csv_field(out, row->method);
    fputc('\n', out);
  }
}

static void write_sweep_csv(FILE *out) {
  fprintf(out, "bytes,median_ns,min_ns,operations,huge_pages\n");
  for (int i = 0; i < sweep_count; i++) {
    if (sweep[i].operations > 0) {
      fprintf(out, "%.0f,%.3f,%.3f,%ld,%d\n", sweep[i].bytes,
              sweep[i].median_ns, sweep[i].min_ns, sweep[i].operations,
              sweep[i].huge);
    }
  }
}

static void write_file(const char *name, double seconds) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", options.out_dir, name);
  FILE *out = fopen(path, "w");
  if (!out) {
    fail(path);
  }
  if (strcmp(name, "latency.csv") == 0) {
    write_csv(out);
  } else if (strcmp(name, "latency_sweep.csv") == 0) {
    write_sweep_csv(out);
  } else {
    write_markdown(out, seconds);
  }
  if (fclose(out) != 0) {
    fail(path);
  }
}

/* ---- Main ------------------------------------------------------------ */

static void usage(FILE *out) {
  fprintf(out,
          "Usage: chat-latency [--out DIR] [--dir DIR] [--quick] [--quiet] "
          "[--cycle-only]\n"
          "Measures the talk's latency table on this machine (in under a "
          "minute)\nand writes latency.md, latency.csv and latency_sweep.csv "
          "in DIR.\n\n"
          "  --out DIR   where to write them (default: .)\n"
          "  --dir DIR   where to put the temporary file for the storage "
          "rows\n"
          "              (default: $TMPDIR, else /var/tmp); it is deleted\n"
          "  --quick     fewer samples, smaller sets (a smoke test, not a\n"
          "              measurement)\n"
          "  --quiet     no progress on standard error\n"
          "  --cycle-only  measure one CPU cycle alone (a second) and write\n"
          "              the files with that row only: for the test of the\n"
          "              cycle\n"
          "  -h, --help  this text\n");
}

static void parse_arguments(int argc, char *argv[]) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(arg, "--quick") == 0) {
      options.scale = 0.2;
    } else if (strcmp(arg, "--quiet") == 0) {
      options.quiet = true;
    } else if (strcmp(arg, "--cycle-only") == 0) {
      options.cycle_only = true;
    } else if ((strcmp(arg, "--out") == 0 || strcmp(arg, "--dir") == 0) &&
               i + 1 < argc) {
      *(strcmp(arg, "--out") == 0 ? &options.out_dir : &options.tmp_dir) =
          argv[++i];
    } else {
      fprintf(stderr, "chat-latency: bad argument: %s\n", arg);
      usage(stderr);
      exit(2);
    }
  }
}

int main(int argc, char *argv[]) {
  parse_arguments(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  struct stat st;
  if (stat(options.out_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (mkdir(options.out_dir, 0777) != 0) {
      fail(options.out_dir);
    }
  }
  double start = now_ns();
  describe_machine();
  /* The process costs first, while this process is small (fork copies its
   * page tables); the big memory buffers come after. The coroutine rows
   * before anything else: chat-coroutine is one thread, and once a process
   * has started a thread glibc's epoll_wait takes the cancellation-point
   * path for good (here a loop turn measured 105 ns before the first
   * pthread_create and 127 ns after it). */
  measure_cycle();
  if (!options.cycle_only) {
    measure_coroutine_switch();
    measure_loop_turn();
    measure_fork();
    measure_pthread();
    measure_switches();
    measure_epoll();
    measure_libevent();
    measure_memory_hierarchy();
    measure_storage();
    measure_loopback();
  }
  double seconds = (now_ns() - start) / 1e9;

  write_file("latency.md", seconds);
  write_file("latency.csv", seconds);
  write_file("latency_sweep.csv", seconds);
  printf("Why async? I/O is slow (one CPU cycle scaled to one second)\n\n");
  print_table(stdout, "talk");
  printf("\nWhat the four server models pay\n\n");
  print_table(stdout, "model");
  printf("\nWritten: latency.md, latency.csv and latency_sweep.csv in %s "
         "(%.0f s)\n",
         options.out_dir, seconds);
  return 0;
}
