/* The address of --redis (common/redis_url.h, docs/PROTOCOL.md section 7).
 *
 * unix:PATH; redis:// with each part given or left to its default (port
 * 6379, db 0, no AUTH); user and password with %XX escapes and with the
 * characters users type unescaped; IPv4, names and IPv6 in brackets; the
 * edges of the port, the database and every buffer, accepted at the edge
 * and refused one past it; and every kind of bad URL refused with a reason,
 * leaving the caller's struct as it was. */
#include "check.h"
#include "redis_url.h"

/* Parses a URL that must be accepted. */
static struct redis_url accepted(const char *text, int line) {
  struct redis_url url;
  const char *error = "(none)";
  if (!CHECK(redis_url_parse(text, &url, &error)))
    fprintf(stderr, "  (line %d) '%s' refused: %s\n", line, text, error);
  return url;
}

/* A URL that must be refused, for a reason that contains `reason`. */
static void check_refused(const char *text, const char *reason) {
  struct redis_url url = {.port = 4242, .host = "untouched"};
  const char *error = NULL;
  bool ok = CHECK(!redis_url_parse(text, &url, &error));
  ok &= CHECK(error != NULL && strstr(error, reason) != NULL);
  /* Refused: *url is as it was. */
  ok &= CHECK(url.port == 4242 && strcmp(url.host, "untouched") == 0);
  if (!ok) {
    fprintf(stderr, "  URL ");
    check_print_bytes(stderr, text, strlen(text));
    fprintf(stderr, " should be refused for \"%s\"; said \"%s\"\n", reason,
            error ? error : "(nothing)");
  }
}

static void test_unix(void) {
  struct redis_url url = accepted("unix:/run/redis/redis.sock", __LINE__);
  CHECK(url.is_unix);
  CHECK(strcmp(url.path, "/run/redis/redis.sock") == 0);
  CHECK(url.db == 0 && url.user[0] == '\0' && url.password[0] == '\0');

  /* A relative path, and the scheme in any case (RFC 3986, 3.1). */
  url = accepted("UNIX:redis.sock", __LINE__);
  CHECK(url.is_unix && strcmp(url.path, "redis.sock") == 0);

  /* The longest path sun_path holds, 107 bytes and its NUL, and one more. */
  char text[200] = "unix:/";
  memset(text + 6, 'p', 106);
  text[112] = '\0';
  url = accepted(text, __LINE__);
  CHECK(strlen(url.path) == 107);
  text[112] = 'p';
  text[113] = '\0';
  check_refused(text, "socket path too long");

  check_refused("unix:", "no socket path");
}

static void test_defaults(void) {
  struct redis_url url = accepted("redis://localhost", __LINE__);
  CHECK(!url.is_unix);
  CHECK(strcmp(url.host, "localhost") == 0);
  CHECK(url.port == REDIS_URL_DEFAULT_PORT && url.port == 6379);
  CHECK(url.db == 0);
  CHECK(url.user[0] == '\0' && url.password[0] == '\0');

  /* "/" alone is database 0. */
  url = accepted("redis://127.0.0.1/", __LINE__);
  CHECK(strcmp(url.host, "127.0.0.1") == 0 && url.port == 6379 && url.db == 0);
}

static void test_every_part(void) {
  struct redis_url url =
      accepted("redis://ada:s3cret@cache.example.com:6380/2", __LINE__);
  CHECK(!url.is_unix);
  CHECK(strcmp(url.user, "ada") == 0);
  CHECK(strcmp(url.password, "s3cret") == 0);
  CHECK(strcmp(url.host, "cache.example.com") == 0);
  CHECK(url.port == 6380);
  CHECK(url.db == 2);

  /* A password alone: AUTH PASSWORD, with no user. */
  url = accepted("redis://:only@redis:7000", __LINE__);
  CHECK(url.user[0] == '\0' && strcmp(url.password, "only") == 0);
  CHECK(strcmp(url.host, "redis") == 0 && url.port == 7000 && url.db == 0);

  /* Names as Docker Compose gives them. */
  url = accepted("redis://chat_redis-1/0", __LINE__);
  CHECK(strcmp(url.host, "chat_redis-1") == 0);

  url = accepted("Redis://h:1/7", __LINE__);
  CHECK(strcmp(url.host, "h") == 0 && url.port == 1 && url.db == 7);
}

static void test_escapes(void) {
  /* %XX in either case, in the user and the password. */
  struct redis_url url =
      accepted("redis://us%65r%3a1:p%40ss%2Fw%3Ard%25@h", __LINE__);
  CHECK(strcmp(url.user, "user:1") == 0);
  CHECK(strcmp(url.password, "p@ss/w:rd%") == 0);

  /* Typed without escapes: the last '@' ends the user information and the
   * first ':' the user, so '@', ':' and '/' in a password still work. */
  url = accepted("redis://bob:a@b:c/d@host:6390/3", __LINE__);
  CHECK(strcmp(url.user, "bob") == 0);
  CHECK(strcmp(url.password, "a@b:c/d") == 0);
  CHECK(strcmp(url.host, "host") == 0 && url.port == 6390 && url.db == 3);

  /* UTF-8, escaped or not. */
  url = accepted("redis://:caf%C3%A9\xC3\xA9@h", __LINE__);
  CHECK(strcmp(url.password, "caf\xC3\xA9\xC3\xA9") == 0);

  check_refused("redis://:pass%@h", "bad %-escape");
  check_refused("redis://:pass%4@h", "bad %-escape");
  check_refused("redis://:pass%G0@h", "bad %-escape");
  check_refused("redis://us%zzer:pass@h", "bad %-escape");
  check_refused("redis://:a%00b@h", "%00");
}

static void test_ipv6(void) {
  struct redis_url url = accepted("redis://[::1]", __LINE__);
  CHECK(strcmp(url.host, "::1") == 0 && url.port == 6379);

  url = accepted("redis://:pw@[2001:db8::7]:6381/4", __LINE__);
  CHECK(strcmp(url.host, "2001:db8::7") == 0);
  CHECK(url.port == 6381 && url.db == 4);
  CHECK(strcmp(url.password, "pw") == 0);

  url = accepted("redis://[::ffff:192.0.2.1]/", __LINE__);
  CHECK(strcmp(url.host, "::ffff:192.0.2.1") == 0);

  check_refused("redis://::1", "in brackets");
  check_refused("redis://2001:db8::7:6379", "in brackets");
  check_refused("redis://[::1", "closing ']'");
  check_refused("redis://[]", "bad IPv6 address");
  check_refused("redis://[localhost]", "bad IPv6 address");
  check_refused("redis://[1:2:3:4:5:6:7:8:9]", "bad IPv6 address");
  check_refused("redis://[::1]6379", "after ']'");
}

static void test_port_and_database(void) {
  CHECK(accepted("redis://h:1", __LINE__).port == 1);
  CHECK(accepted("redis://h:65535", __LINE__).port == 65535);
  CHECK(accepted("redis://h:06379", __LINE__).port == 6379);
  CHECK(accepted("redis://h/2147483647", __LINE__).db == 2147483647);

  static const char *const bad_ports[] = {
      "redis://h:0",      "redis://h:65536", "redis://h:",
      "redis://h:-1",     "redis://h:+1",    "redis://h:0x10",
      "redis://h: 1",     "redis://h:port",  "redis://h:99999999999999999999",
      "redis://[::1]:0",  "redis://[::1]:",  "redis://h:6379x",
      "redis://h:6379?x", "redis://h:1.5",
  };
  for (size_t i = 0; i < sizeof bad_ports / sizeof bad_ports[0]; i++)
    check_refused(bad_ports[i], "bad port");

  static const char *const bad_databases[] = {
      "redis://h/-1",  "redis://h/x",          "redis://h/2147483648",
      "redis://h/0/1", "redis://h/1?timeout=", "redis://h/ 1",
      "redis://h//",   "redis://h/1#x",
  };
  for (size_t i = 0; i < sizeof bad_databases / sizeof bad_databases[0]; i++)
    check_refused(bad_databases[i], "bad database");
}

/* Each buffer of struct redis_url, filled to the last byte before its NUL,
 * then one byte too many. */
static void test_lengths(void) {
  char text[1024];
  char part[800]; /* the longest: 255 escapes of 3 bytes */

  memset(part, 'h', 255);
  part[255] = '\0';
  snprintf(text, sizeof text, "redis://%s", part);
  CHECK(strlen(accepted(text, __LINE__).host) == 255);
  snprintf(text, sizeof text, "redis://%sh:1", part);
  check_refused(text, "host too long");

  memset(part, 'u', 127);
  part[127] = '\0';
  snprintf(text, sizeof text, "redis://%s:pw@h", part);
  CHECK(strlen(accepted(text, __LINE__).user) == 127);
  snprintf(text, sizeof text, "redis://%su:pw@h", part);
  check_refused(text, "user too long");

  /* Escapes count once decoded: 255 bytes written as 765. */
  size_t at = 0;
  for (int i = 0; i < 255; i++)
    at += (size_t)snprintf(part + at, sizeof part - at, "%%41");
  snprintf(text, sizeof text, "redis://:%s@h", part);
  struct redis_url url = accepted(text, __LINE__);
  CHECK(strlen(url.password) == 255 && url.password[254] == 'A');
  snprintf(text, sizeof text, "redis://:%sA@h", part);
  check_refused(text, "password too long");
}

static void test_refused(void) {
  check_refused("", "redis://HOST");
  check_refused("localhost:6379", "redis://HOST");
  check_refused("http://h", "redis://HOST");
  check_refused("redis:h", "redis://HOST");
  check_refused("redis:/h", "redis://HOST");
  check_refused("rediss://h", "TLS");
  check_refused("redis://", "no host");
  check_refused("redis://:6379", "no host");
  check_refused("redis:///0", "no host");
  check_refused("redis://:pw@", "no host");
  check_refused("redis://:pw@:6379", "no host");
  check_refused("redis://h st", "bad character in host");
  check_refused("redis://h?db=1", "bad character in host");
  check_refused("redis://ex\xC3\xA4mple", "bad character in host");
  /* The user information needs its ':' and a password. */
  check_refused("redis://secret@h", "no ':'");
  check_refused("redis://ada:@h", "empty password");
  check_refused("redis://:@h", "empty password");
  check_refused("redis://h\n", "control character");
  check_refused("unix:/tmp/a\tb", "control character");
  check_refused("redis://:p\x7Fw@h", "control character");
}

/* The reason may be left out. */
static void test_no_error_pointer(void) {
  struct redis_url url;
  CHECK(!redis_url_parse("redis://h:0", &url, NULL));
  CHECK(redis_url_parse("redis://h", &url, NULL));
}

int main(void) {
  test_unix();
  test_defaults();
  test_every_part();
  test_escapes();
  test_ipv6();
  test_port_and_database();
  test_lengths();
  test_refused();
  test_no_error_pointer();
  return check_report();
}
