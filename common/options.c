/* Parsing the shared command line with getopt_long. */
#include "options.h"

#include "protocol.h"
#include "redis_url.h"
#include "utf8.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* A constant's value as a string literal, for the texts that name it. */
#define STRINGIFY(x) #x
#define TEXT_OF(x) STRINGIFY(x)

enum {
  OPTION_MAX_CLIENTS = 256,
  OPTION_MAX_LINE,
  OPTION_MAX_BACKLOG,
  OPTION_LOGIN_TIMEOUT,
  OPTION_REUSE_PORT,
  OPTION_REDIS,
  OPTION_LEASE,
};

/* The longest --lease, in seconds: an hour is already far longer than any
 * server needs to come back from a hiccup, and a bound keeps the lease's
 * arithmetic (seconds to milliseconds, deadlines) far from overflow. */
#define LEASE_MAX_SECONDS 3600

static const struct option long_options[] = {
    {"name", required_argument, NULL, 'n'},
    {"port", required_argument, NULL, 'p'},
    {"host", required_argument, NULL, 'H'},
    {"max-clients", required_argument, NULL, OPTION_MAX_CLIENTS},
    {"max-line", required_argument, NULL, OPTION_MAX_LINE},
    {"max-backlog", required_argument, NULL, OPTION_MAX_BACKLOG},
    {"login-timeout", required_argument, NULL, OPTION_LOGIN_TIMEOUT},
    {"reuse-port", no_argument, NULL, OPTION_REUSE_PORT},
    {"redis", required_argument, NULL, OPTION_REDIS},
    {"lease", required_argument, NULL, OPTION_LEASE},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* The leading ':' makes getopt_long report a missing value as ':'. */
#define SHORT_OPTIONS ":n:p:H:qhV"

/* After getopt_long returned '?': was it for a letter it does not know?
 * (optopt is 0 for an unknown long option, and the option's value for a long
 * option given a value it does not take.) */
static bool is_unknown_letter(int letter) {
  return letter > 0 && letter < 256 &&
         (letter == ':' || !strchr(SHORT_OPTIONS, letter));
}

const char *options_program_name(const char *argv0) {
  const char *slash = strrchr(argv0, '/');
  return slash ? slash + 1 : argv0;
}

/* The usage, one line of source per line printed (clang-format is kept off
 * it, so the source shows --help's columns), the defaults taken from
 * options.h. README.md's option list (docs.readme-options) and the man
 * pages (man/gen_man.py) are made from this text, and docs/PROTOCOL.md
 * section 1 shows it: a change here is a change there. */
static void print_usage(const char *program, FILE *out) {
  fprintf(out, "Usage: %s [NAME [PORT]] [options]\n", program);
  /* clang-format off */
  fputs(
    "A telnet chat room (see docs/PROTOCOL.md).\n"
    "\n"
    "  NAME, -n, --name NAME     room name              (default " OPTIONS_DEFAULT_ROOM_NAME ")\n"
    "  PORT, -p, --port PORT     TCP port, 0 = any free (default " TEXT_OF(OPTIONS_DEFAULT_PORT) ")\n"
    "  -H, --host ADDR           address to bind       (default: all, IPv4 and IPv6)\n"
    "  --max-clients N           connections at once   (default " TEXT_OF(OPTIONS_DEFAULT_MAX_CLIENTS) ")\n"
    "  --max-line BYTES          longest input line    (default " TEXT_OF(OPTIONS_DEFAULT_MAX_LINE) ")\n"
    "  --max-backlog BYTES       output queued for one client before it is dropped (default " TEXT_OF(OPTIONS_DEFAULT_MAX_BACKLOG) ")\n"
    "  --login-timeout SECONDS   time to pick a name   (default " TEXT_OF(OPTIONS_DEFAULT_LOGIN_TIMEOUT) ", 0 = none)\n"
    "  --reuse-port              bind with SO_REUSEPORT: several servers share one port\n"
    "  --redis URL               share the room through Redis (section 7); default: none\n"
    "  --lease SECONDS           with --redis: how long a silent server keeps its users (default " TEXT_OF(OPTIONS_DEFAULT_LEASE) ")\n"
    "  -q, --quiet               no log on standard error\n"
    "  -h, --help                usage, exit 0\n"
    "  -V, --version             version, exit 0\n",
    out);
  /* clang-format on */
}

/* A whole decimal number in [low, high]. */
static bool parse_number(const char *text, unsigned long long low,
                         unsigned long long high, unsigned long long *value) {
  if (*text < '0' || *text > '9')
    return false;
  char *end;
  errno = 0;
  unsigned long long parsed = strtoull(text, &end, 10);
  if (errno || *end != '\0' || parsed < low || parsed > high)
    return false;
  *value = parsed;
  return true;
}

/* A number of seconds above 0 and at most high, in decimal with or without
 * a fraction: "5", "0.5", "2.25". No sign, exponent, hex, "inf" or "nan",
 * which strtod alone would take. strtod reads the fraction after a '.',
 * since the servers never leave the C locale. */
static bool parse_seconds(const char *text, double high, double *value) {
  const char *c = text;
  if (*c < '0' || *c > '9')
    return false;
  while (*c >= '0' && *c <= '9')
    c++;
  if (*c == '.') {
    c++;
    if (*c < '0' || *c > '9')
      return false;
    while (*c >= '0' && *c <= '9')
      c++;
  }
  if (*c != '\0')
    return false;
  double parsed = strtod(text, NULL);
  if (!(parsed > 0 && parsed <= high))
    return false;
  *value = parsed;
  return true;
}

static bool valid_room_name(const char *name) {
  size_t length = strlen(name);
  return length > 0 && length <= CHAT_ROOM_NAME_MAX_BYTES &&
         utf8_validate(name, length, NULL) &&
         !utf8_has_control(name, length, false);
}

static int bad_argument(const char *program, FILE *err, const char *what,
                        const char *value, const char *expected) {
  fprintf(err, "%s: invalid %s '%s': %s\n", program, what, value, expected);
  fprintf(err, "Try '%s --help' for more information.\n", program);
  return 2;
}

/* Sets one option from its text; returns OPTIONS_RUN or the exit status. */
static int set_option(struct chat_options *options, const char *program,
                      int option, const char *value, FILE *err) {
  unsigned long long number;
  switch (option) {
  case 'n':
    if (!valid_room_name(value))
      return bad_argument(
          program, err, "room name", value,
          "use 1-" TEXT_OF(CHAT_ROOM_NAME_MAX_BYTES) " bytes of UTF-8, no "
                                                     "control characters");
    options->room_name = value;
    return OPTIONS_RUN;
  case 'p':
    if (!parse_number(value, 0, 65535, &number))
      return bad_argument(program, err, "port", value,
                          "use a number from 0 to 65535");
    options->port = (unsigned)number;
    return OPTIONS_RUN;
  case 'H':
    if (*value == '\0')
      return bad_argument(program, err, "host", value, "give an address");
    options->host = value;
    return OPTIONS_RUN;
  case OPTION_MAX_CLIENTS:
    if (!parse_number(value, 1, 1 << 20, &number))
      return bad_argument(program, err, "--max-clients", value,
                          "use a number from 1 to 1048576");
    options->max_clients = (size_t)number;
    return OPTIONS_RUN;
  case OPTION_MAX_LINE:
    if (!parse_number(value, 1, 1 << 24, &number))
      return bad_argument(program, err, "--max-line", value,
                          "use a number of bytes from 1 to 16777216");
    options->max_line = (size_t)number;
    return OPTIONS_RUN;
  case OPTION_MAX_BACKLOG:
    if (!parse_number(value, 1, 1ULL << 32, &number))
      return bad_argument(program, err, "--max-backlog", value,
                          "use a number of bytes from 1 to 4294967296");
    options->max_backlog = (size_t)number;
    return OPTIONS_RUN;
  case OPTION_LOGIN_TIMEOUT:
    if (!parse_number(value, 0, 86400, &number))
      return bad_argument(program, err, "--login-timeout", value,
                          "use a number of seconds from 0 to 86400");
    options->login_timeout = (unsigned)number;
    return OPTIONS_RUN;
  case OPTION_REDIS: {
    /* Only parsed here, so that a mistyped URL is a bad argument (exit 2)
     * with the reason; reaching that Redis is section 7's (exit 1). */
    struct redis_url url;
    const char *reason;
    if (!redis_url_parse(value, &url, &reason))
      return bad_argument(program, err, "--redis", value, reason);
    options->redis_url = value;
    return OPTIONS_RUN;
  }
  case OPTION_LEASE: {
    double seconds;
    if (!parse_seconds(value, LEASE_MAX_SECONDS, &seconds))
      return bad_argument(
          program, err, "--lease", value,
          "use a number of seconds above 0 and at most " TEXT_OF(
              LEASE_MAX_SECONDS) ", such as 5 or 0.5");
    options->lease = seconds;
    return OPTIONS_RUN;
  }
  default:
    return 2;
  }
}

int options_parse(struct chat_options *options, int argc, char *argv[],
                  FILE *out, FILE *err) {
  const char *program = options_program_name(argc > 0 ? argv[0] : "chat");
  *options = (struct chat_options){
      .room_name = OPTIONS_DEFAULT_ROOM_NAME,
      .port = OPTIONS_DEFAULT_PORT,
      .max_clients = OPTIONS_DEFAULT_MAX_CLIENTS,
      .max_line = OPTIONS_DEFAULT_MAX_LINE,
      .max_backlog = OPTIONS_DEFAULT_MAX_BACKLOG,
      .login_timeout = OPTIONS_DEFAULT_LOGIN_TIMEOUT,
      .lease = OPTIONS_DEFAULT_LEASE,
  };
  opterr = 0; /* we say what is wrong ourselves */
  /* 0, not 1: glibc then forgets the previous scan (a half-read cluster
   * such as the "q" of "-hq"), so options_parse can be called again. */
  optind = 0;
  int option;
  /* "+" would stop at the first positional; we allow options after them. */
  while ((option = getopt_long(argc, argv, SHORT_OPTIONS, long_options,
                               NULL)) != -1) {
    switch (option) {
    case 'q':
      options->quiet = true;
      break;
    case OPTION_REUSE_PORT:
      options->reuse_port = true;
      break;
    case 'h':
      print_usage(program, out);
      return 0;
    case 'V':
      fprintf(out, "%s %s\n", program, CHAT_VERSION);
      return 0;
    case ':':
      fprintf(err, "%s: option '%s' needs a value\n", program,
              argv[optind - 1]);
      fprintf(err, "Try '%s --help' for more information.\n", program);
      return 2;
    case '?':
      /* An unknown letter may sit inside a cluster ("-xq"), where
       * argv[optind - 1] is the argument before it: name the letter. A
       * long option (unknown, or given a value it does not take) has been
       * stepped over, so argv[optind - 1] is that option. */
      if (is_unknown_letter(optopt))
        fprintf(err, "%s: unknown option '-%c'\n", program, optopt);
      else
        fprintf(err, "%s: unknown option '%s'\n", program, argv[optind - 1]);
      fprintf(err, "Try '%s --help' for more information.\n", program);
      return 2;
    default: {
      int status = set_option(options, program, option, optarg, err);
      if (status != OPTIONS_RUN)
        return status;
    }
    }
  }
  /* Positionals, permuted to the end by getopt_long: NAME, then PORT. */
  int positionals = argc - optind;
  if (positionals > 2) {
    fprintf(err, "%s: unexpected argument '%s'\n", program, argv[optind + 2]);
    fprintf(err, "Try '%s --help' for more information.\n", program);
    return 2;
  }
  if (positionals >= 1) {
    int status = set_option(options, program, 'n', argv[optind], err);
    if (status != OPTIONS_RUN)
      return status;
  }
  if (positionals == 2) {
    int status = set_option(options, program, 'p', argv[optind + 1], err);
    if (status != OPTIONS_RUN)
      return status;
  }
  /* Checked once every option is read, whatever their order: a backlog that
   * cannot hold two of the longest lines would drop every reader of one
   * legal line as slow. */
  if (options->max_backlog / 2 < options->max_line) {
    fprintf(err,
            "%s: --max-backlog %zu is below twice --max-line %zu: a client "
            "must be able to hold two of the longest lines\n",
            program, options->max_backlog, options->max_line);
    fprintf(err, "Try '%s --help' for more information.\n", program);
    return 2;
  }
  return OPTIONS_RUN;
}

void options_print_startup(const struct chat_options *options, unsigned port,
                           FILE *out) {
  fprintf(out, "%s running on port %u\n", options->room_name, port);
  fflush(out);
}
