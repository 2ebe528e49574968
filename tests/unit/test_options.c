/* The command line of docs/PROTOCOL.md section 1.
 *
 * Defaults; NAME and PORT as positionals; long options (spaced and with
 * '='), short options (spaced, attached, clustered); options after and
 * between positionals; the limits of every number, accepted at the edge and
 * refused one past it; every kind of bad argument giving status 2 and, on
 * standard error, one line naming it and a hint; --help and --version
 * giving 0 and their text on standard output; parsing twice in one process;
 * the options of one room across servers (--reuse-port, --redis, --lease);
 * and the startup line. Standard output and error are memory streams. */
#include "check.h"
#include "options.h"

#define ARGV(...) ((char *[]){__VA_ARGS__, NULL})

struct parsed {
  int status;
  struct chat_options options;
  struct byte_buffer out;
  struct byte_buffer err;
};

/* Runs options_parse on a NULL-terminated argv. */
static struct parsed parse(char **argv) {
  int argc = 0;
  while (argv[argc])
    argc++;
  struct parsed parsed = {0};
  char *out_text, *err_text;
  size_t out_length, err_length;
  FILE *out = open_memstream(&out_text, &out_length);
  FILE *err = open_memstream(&err_text, &err_length);
  parsed.status = options_parse(&parsed.options, argc, argv, out, err);
  fclose(out);
  fclose(err);
  buffer_append(&parsed.out, out_text, out_length);
  buffer_append(&parsed.err, err_text, err_length);
  free(out_text);
  free(err_text);
  return parsed;
}

static void parsed_free(struct parsed *parsed) {
  buffer_free(&parsed->out);
  buffer_free(&parsed->err);
}

/* Whether text (not NUL-terminated) contains the string. */
static bool contains(const struct byte_buffer *text, const char *string) {
  size_t length = strlen(string);
  for (size_t i = 0; i + length <= text->length; i++) {
    if (memcmp(text->bytes + i, string, length) == 0)
      return true;
  }
  return false;
}

static size_t count_lines(const struct byte_buffer *text) {
  size_t lines = 0;
  for (size_t i = 0; i < text->length; i++)
    lines += text->bytes[i] == '\n';
  return lines;
}

/* A run that should go ahead: status OPTIONS_RUN and nothing printed. */
static bool check_runs(const struct parsed *parsed, int line) {
  bool ok = CHECK(parsed->status == OPTIONS_RUN);
  ok &= CHECK(parsed->out.length == 0 && parsed->err.length == 0);
  if (!ok) {
    fprintf(stderr, "  (parsed at line %d) err: ", line);
    check_print_bytes(stderr, parsed->err.bytes, parsed->err.length);
    fputc('\n', stderr);
  }
  return ok;
}

static void test_defaults(void) {
  struct parsed p = parse(ARGV("chat"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "ChatServer") == 0);
  CHECK(p.options.host == NULL);
  CHECK(p.options.port == 1234);
  CHECK(p.options.max_clients == 16384);
  CHECK(p.options.max_line == 4096);
  CHECK(p.options.max_backlog == 1048576);
  CHECK(p.options.login_timeout == 60);
  CHECK(!p.options.reuse_port);
  CHECK(p.options.redis_url == NULL);
  CHECK(p.options.lease == 5);
  CHECK(!p.options.quiet);
  parsed_free(&p);
}

static void test_positionals(void) {
  struct parsed p = parse(ARGV("chat", "Lobby"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 1234);
  parsed_free(&p);

  p = parse(ARGV("chat", "Lobby", "0"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 0);
  parsed_free(&p);

  /* A room name may hold spaces and any UTF-8. */
  p = parse(ARGV("chat", "Salle caf\xC3\xA9", "65535"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Salle caf\xC3\xA9") == 0);
  CHECK(p.options.port == 65535);
  parsed_free(&p);
}

static void test_long_options(void) {
  struct parsed p =
      parse(ARGV("chat", "--name", "Lobby", "--port", "4321", "--host", "::1",
                 "--max-clients", "10", "--max-line", "100", "--max-backlog",
                 "2000", "--login-timeout", "0", "--quiet"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 4321);
  CHECK(p.options.host && strcmp(p.options.host, "::1") == 0);
  CHECK(p.options.max_clients == 10);
  CHECK(p.options.max_line == 100);
  CHECK(p.options.max_backlog == 2000);
  CHECK(p.options.login_timeout == 0);
  CHECK(p.options.quiet);
  parsed_free(&p);

  p = parse(ARGV("chat", "--name=Lobby", "--port=4321", "--max-line=1",
                 "--host=127.0.0.1"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 4321);
  CHECK(p.options.max_line == 1);
  CHECK(p.options.host && strcmp(p.options.host, "127.0.0.1") == 0);
  parsed_free(&p);
}

static void test_short_options(void) {
  struct parsed p =
      parse(ARGV("chat", "-n", "Lobby", "-p", "4321", "-H", "localhost", "-q"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 4321);
  CHECK(p.options.host && strcmp(p.options.host, "localhost") == 0);
  CHECK(p.options.quiet);
  parsed_free(&p);

  /* Attached values, and a cluster ending in an option with a value. */
  p = parse(ARGV("chat", "-p4321", "-nLobby", "-qH::1"));
  check_runs(&p, __LINE__);
  CHECK(p.options.port == 4321);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.quiet);
  CHECK(p.options.host && strcmp(p.options.host, "::1") == 0);
  parsed_free(&p);
}

static void test_options_after_positionals(void) {
  struct parsed p =
      parse(ARGV("chat", "Lobby", "4321", "--quiet", "--max-line", "10"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 4321);
  CHECK(p.options.quiet);
  CHECK(p.options.max_line == 10);
  parsed_free(&p);

  p = parse(
      ARGV("chat", "-q", "Lobby", "--max-line", "10", "4321", "-H", "::"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 4321);
  CHECK(p.options.max_line == 10);
  CHECK(p.options.host && strcmp(p.options.host, "::") == 0);
  parsed_free(&p);
}

/* The largest and smallest value of every number is accepted. */
static void test_limits_accepted(void) {
  struct parsed p = parse(ARGV("chat", "--max-clients", "1", "--max-line",
                               "16777216", "--max-backlog", "4294967296",
                               "--login-timeout", "86400", "-p", "65535"));
  check_runs(&p, __LINE__);
  CHECK(p.options.max_clients == 1);
  CHECK(p.options.max_line == 16777216);
  CHECK(p.options.max_backlog == 4294967296ULL);
  CHECK(p.options.login_timeout == 86400);
  CHECK(p.options.port == 65535);
  parsed_free(&p);

  /* The smallest backlog holds two of the shortest lines. */
  p = parse(ARGV("chat", "--max-clients", "1048576", "--max-backlog", "2",
                 "--max-line", "1", "-p", "0"));
  check_runs(&p, __LINE__);
  CHECK(p.options.max_clients == 1048576);
  CHECK(p.options.max_backlog == 2);
  CHECK(p.options.max_line == 1);
  CHECK(p.options.port == 0);
  parsed_free(&p);

  char name[257];
  memset(name, 'r', 256);
  name[256] = '\0';
  p = parse(ARGV("chat", name));
  check_runs(&p, __LINE__);
  CHECK(strlen(p.options.room_name) == 256);
  parsed_free(&p);
}

struct bad_case {
  char *argv[6];
  const char *named; /* what the message on standard error must name */
};

static void check_refused(char **argv, const char *named) {
  struct parsed p = parse(argv);
  bool ok = CHECK(p.status == 2);
  ok &= CHECK(p.out.length == 0);
  /* One line naming the problem, then a hint. */
  ok &= CHECK(count_lines(&p.err) == 2);
  ok &= CHECK(contains(&p.err, named));
  ok &= CHECK(contains(&p.err, "--help"));
  if (!ok) {
    fprintf(stderr, "  arguments:");
    for (int i = 1; argv[i]; i++) {
      fputc(' ', stderr);
      check_print_bytes(stderr, argv[i], strlen(argv[i]));
    }
    fprintf(stderr, "\n  should name \"%s\"; err: ", named);
    check_print_bytes(stderr, p.err.bytes, p.err.length);
    fputc('\n', stderr);
  }
  parsed_free(&p);
}

static void test_bad_arguments(void) {
  struct bad_case cases[] = {
      /* Ports. */
      {{"chat", "--port", "65536"}, "port '65536'"},
      {{"chat", "-p", "abc"}, "port 'abc'"},
      {{"chat", "-p", "-1"}, "port '-1'"},
      {{"chat", "-p", "+5"}, "port '+5'"},
      {{"chat", "-p", " 5"}, "port ' 5'"},
      {{"chat", "-p", "12x"}, "port '12x'"},
      {{"chat", "-p", "0x10"}, "port '0x10'"},
      {{"chat", "--port="}, "port ''"},
      {{"chat", "-p", "99999999999999999999999"},
       "port '99999999999999999999999'"},
      {{"chat", "Lobby", "http"}, "port 'http'"},
      /* Other numbers, one past each end. */
      {{"chat", "--max-clients", "0"}, "--max-clients '0'"},
      {{"chat", "--max-clients", "1048577"}, "--max-clients '1048577'"},
      {{"chat", "--max-line", "0"}, "--max-line '0'"},
      {{"chat", "--max-line", "16777217"}, "--max-line '16777217'"},
      {{"chat", "--max-backlog", "0"}, "--max-backlog '0'"},
      {{"chat", "--max-backlog", "4294967297"}, "--max-backlog '4294967297'"},
      {{"chat", "--login-timeout", "86401"}, "--login-timeout '86401'"},
      {{"chat", "--login-timeout", "-5"}, "--login-timeout '-5'"},
      {{"chat", "--max-line", "1e3"}, "--max-line '1e3'"},
      /* Names and hosts. */
      {{"chat", "--name", ""}, "room name ''"},
      {{"chat", "a\x01z"}, "room name 'a\x01z'"},
      {{"chat", "-n", "tab\there"}, "room name 'tab\there'"},
      {{"chat", "\xC0\x80"}, "room name '\xC0\x80'"},
      /* C1 and bidirectional controls are control characters too. */
      {{"chat", "a\xC2\x9B"
                "2Jz"},
       "room name 'a\xC2\x9B"
       "2Jz'"},
      {{"chat", "-n", "\xC2\x85"}, "room name '\xC2\x85'"},
      {{"chat", "-n",
        "moc.\xE2\x80\xAE"
        "exe"},
       "room name 'moc.\xE2\x80\xAE"
       "exe'"},
      {{"chat", "-n", "x\xE2\x81\xA6y"}, "room name 'x\xE2\x81\xA6y'"},
      {{"chat", "-H", ""}, "host ''"},
      /* Arguments that are not there, or should not be. */
      {{"chat", "Lobby", "1234", "extra"}, "'extra'"},
      {{"chat", "--bogus"}, "'--bogus'"},
      {{"chat", "--quiet=yes"}, "'--quiet=yes'"},
      {{"chat", "-x"}, "'-x'"},
      {{"chat", "-qx"}, "'-x'"},
      {{"chat", "--quiet", "-xq"}, "'-x'"},
      {{"chat", "--port"}, "'--port'"},
      {{"chat", "--max-line"}, "'--max-line'"},
      {{"chat", "-q", "-p"}, "'-p'"},
      /* The cluster's options (docs/PROTOCOL.md section 7). */
      {{"chat", "--redis", "localhost:6379"}, "--redis 'localhost:6379'"},
      {{"chat", "--redis", "redis://h:0"}, "--redis 'redis://h:0'"},
      {{"chat", "--redis="}, "--redis ''"},
      {{"chat", "--redis"}, "'--redis'"},
      {{"chat", "--lease", "0"}, "--lease '0'"},
      {{"chat", "--lease", "0.0"}, "--lease '0.0'"},
      {{"chat", "--lease", "-1"}, "--lease '-1'"},
      {{"chat", "--lease", "3601"}, "--lease '3601'"},
      {{"chat", "--lease", "3600.5"}, "--lease '3600.5'"},
      {{"chat", "--lease", "1e3"}, "--lease '1e3'"},
      {{"chat", "--lease", "inf"}, "--lease 'inf'"},
      {{"chat", "--lease", "nan"}, "--lease 'nan'"},
      {{"chat", "--lease", "0x10"}, "--lease '0x10'"},
      {{"chat", "--lease", ".5"}, "--lease '.5'"},
      {{"chat", "--lease", "5."}, "--lease '5.'"},
      {{"chat", "--lease", "+5"}, "--lease '+5'"},
      {{"chat", "--lease", " 5"}, "--lease ' 5'"},
      {{"chat", "--lease", "5s"}, "--lease '5s'"},
      {{"chat", "--lease", "0,5"}, "--lease '0,5'"},
      {{"chat", "--lease="}, "--lease ''"},
      {{"chat", "--lease"}, "'--lease'"},
      {{"chat", "--reuse-port=yes"}, "'--reuse-port=yes'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_refused(cases[i].argv, cases[i].named);

  char name[258];
  memset(name, 'r', 257);
  name[257] = '\0';
  check_refused(ARGV("chat", name), "room name");
}

/* --reuse-port, --redis and --lease: given, spelled every way, together
 * with the others; and a bad --redis URL refused with the reason. */
static void test_cluster_options(void) {
  struct parsed p = parse(ARGV("chat", "Lobby", "--reuse-port", "--redis",
                               "redis://:pw@[::1]:6380/2", "--lease", "0.5"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.reuse_port);
  CHECK(p.options.redis_url &&
        strcmp(p.options.redis_url, "redis://:pw@[::1]:6380/2") == 0);
  CHECK(p.options.lease == 0.5);
  parsed_free(&p);

  p = parse(ARGV("chat", "--redis=unix:/run/redis.sock", "--lease=2.5", "-q",
                 "Lobby", "0"));
  check_runs(&p, __LINE__);
  CHECK(p.options.redis_url &&
        strcmp(p.options.redis_url, "unix:/run/redis.sock") == 0);
  CHECK(p.options.lease == 2.5);
  CHECK(!p.options.reuse_port);
  CHECK(p.options.port == 0 && p.options.quiet);
  parsed_free(&p);

  /* Each alone; the lease's edges; --lease without --redis is accepted. */
  p = parse(ARGV("chat", "--reuse-port"));
  check_runs(&p, __LINE__);
  CHECK(p.options.reuse_port && p.options.redis_url == NULL);
  CHECK(p.options.lease == 5);
  parsed_free(&p);
  static const struct {
    char *text;
    double value;
  } leases[] = {{"3600", 3600},   {"3600.000", 3600}, {"1", 1},
                {"0.001", 0.001}, {"007", 7},         {"12.25", 12.25}};
  for (size_t i = 0; i < sizeof leases / sizeof leases[0]; i++) {
    p = parse(ARGV("chat", "--lease", leases[i].text));
    check_runs(&p, __LINE__);
    CHECK(p.options.lease == leases[i].value);
    parsed_free(&p);
  }

  /* A bad URL: its reason, from redis_url_parse, follows its name. */
  p = parse(ARGV("chat", "--redis", "redis://cache:99999"));
  CHECK(p.status == 2);
  CHECK(contains(&p.err, "--redis 'redis://cache:99999': bad port"));
  parsed_free(&p);
  p = parse(ARGV("chat", "--redis", "rediss://cache"));
  CHECK(contains(&p.err, "TLS"));
  parsed_free(&p);

  /* A repeated option: the last one counts, as for the others. */
  p = parse(ARGV("chat", "--redis", "redis://a", "--redis", "redis://b",
                 "--lease", "9", "--lease", "3"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.redis_url, "redis://b") == 0);
  CHECK(p.options.lease == 3);
  parsed_free(&p);
}

static void test_help(void) {
  static const char *const mentioned[] = {
      "--name",     "--port",        "--host",          "--max-clients",
      "--max-line", "--max-backlog", "--login-timeout", "--reuse-port",
      "--redis",    "--lease",       "--quiet",         "--help",
      "--version"};
  /* The three lines of docs/PROTOCOL.md section 1, word for word and in
   * order, after --login-timeout and before --quiet. */
  static const char cluster_lines[] =
      "  --login-timeout SECONDS   time to pick a name   (default 60, 0 = "
      "none)\n"
      "  --reuse-port              bind with SO_REUSEPORT: several servers "
      "share one port\n"
      "  --redis URL               share the room through Redis (section 7); "
      "default: none\n"
      "  --lease SECONDS           with --redis: how long a silent server "
      "keeps its users (default 5)\n"
      "  -q, --quiet               no log on standard error\n";
  char *spellings[] = {"--help", "-h"};
  for (size_t s = 0; s < 2; s++) {
    struct parsed p = parse(
        ARGV("/usr/local/bin/chat-evented", spellings[s], "--port", "bad"));
    CHECK(p.status == 0);
    CHECK(p.err.length == 0);
    /* The program's own name, without its directory. */
    static const char usage[] = "Usage: chat-evented [NAME [PORT]] [options]\n";
    CHECK(p.out.length > sizeof usage - 1);
    CHECK_EQ_BYTES(p.out.bytes, sizeof usage - 1, usage, sizeof usage - 1);
    for (size_t i = 0; i < sizeof mentioned / sizeof mentioned[0]; i++) {
      if (!CHECK(contains(&p.out, mentioned[i])))
        fprintf(stderr, "  usage does not mention %s\n", mentioned[i]);
    }
    if (!CHECK(contains(&p.out, cluster_lines)))
      fprintf(stderr, "  usage's cluster lines differ from section 1's\n");
    parsed_free(&p);
  }
}

static void test_version(void) {
  char *spellings[] = {"--version", "-V"};
  for (size_t s = 0; s < 2; s++) {
    struct parsed p = parse(ARGV("chat-threaded", spellings[s]));
    CHECK(p.status == 0);
    CHECK(p.err.length == 0);
    CHECK_EQ_TEXT(p.out, "chat-threaded " CHAT_VERSION "\n");
    parsed_free(&p);
  }
}

/* options_parse can be called again, also after a parse that stopped in
 * the middle of a cluster of short options. */
static void test_parse_twice(void) {
  struct parsed p = parse(ARGV("chat", "-hq"));
  CHECK(p.status == 0);
  parsed_free(&p);
  p = parse(ARGV("chat", "Other"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Other") == 0);
  CHECK(!p.options.quiet); /* not the "q" left over from "-hq" */
  parsed_free(&p);

  /* Nothing of a parse stays for the next: the defaults come back. */
  p = parse(
      ARGV("chat", "--reuse-port", "--redis", "redis://h", "--lease", "1"));
  check_runs(&p, __LINE__);
  parsed_free(&p);
  p = parse(ARGV("chat"));
  CHECK(!p.options.reuse_port && p.options.redis_url == NULL);
  CHECK(p.options.lease == 5);
  parsed_free(&p);

  p = parse(ARGV("chat", "-xq", "Lobby"));
  CHECK(p.status == 2);
  parsed_free(&p);
  p = parse(ARGV("chat", "Lobby", "-p", "7"));
  check_runs(&p, __LINE__);
  CHECK(strcmp(p.options.room_name, "Lobby") == 0);
  CHECK(p.options.port == 7);
  CHECK(!p.options.quiet);
  parsed_free(&p);
}

/* --max-backlog below twice --max-line is refused (docs/PROTOCOL.md section 1),
 * in whatever order the two come, defaults included, with one line naming both;
 * exactly twice is accepted. */
static void test_backlog_holds_two_lines(void) {
  char *refused[][6] = {
      {"chat", "--max-line", "2000000"}, /* the default backlog, 1 MiB */
      {"chat", "--max-backlog", "8191"}, /* the default line, 4096 */
      {"chat", "--max-line", "100", "--max-backlog", "199"},
      {"chat", "--max-backlog", "199", "--max-line", "100"},
      {"chat", "--max-backlog=1", "--max-line=1"},
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    check_refused(refused[i], "--max-backlog");
    check_refused(refused[i], "--max-line");
  }
  struct parsed p = parse(ARGV("chat", "--max-line", "2000000"));
  CHECK(contains(&p.err, "1048576") && contains(&p.err, "2000000"));
  parsed_free(&p);

  p = parse(ARGV("chat", "--max-backlog", "200", "--max-line", "100"));
  check_runs(&p, __LINE__);
  CHECK(p.options.max_backlog == 200 && p.options.max_line == 100);
  parsed_free(&p);
  p = parse(ARGV("chat", "--max-backlog", "8192"));
  check_runs(&p, __LINE__);
  parsed_free(&p);
  p = parse(ARGV("chat", "--max-line", "524288"));
  check_runs(&p, __LINE__);
  parsed_free(&p);
  p = parse(ARGV("chat", "--max-line", "524289"));
  CHECK(p.status == 2);
  parsed_free(&p);
  /* A bad value is named first, before the two are compared. */
  check_refused(ARGV("chat", "--max-line", "2000000", "--max-backlog", "x"),
                "--max-backlog 'x'");
}

static void test_startup_line(void) {
  struct parsed p = parse(ARGV("chat", "Lobby"));
  char *text;
  size_t length;
  FILE *out = open_memstream(&text, &length);
  options_print_startup(&p.options, 5555, out);
  /* Flushed already: scripts wait for this line. */
  struct byte_buffer flushed = {text, length, length};
  CHECK_EQ_TEXT(flushed, "Lobby running on port 5555\n");
  fclose(out);
  free(text);
  parsed_free(&p);
}

int main(void) {
  test_defaults();
  test_positionals();
  test_long_options();
  test_short_options();
  test_options_after_positionals();
  test_limits_accepted();
  test_bad_arguments();
  test_backlog_holds_two_lines();
  test_cluster_options();
  test_help();
  test_version();
  test_parse_twice();
  test_startup_line();
  return check_report();
}
