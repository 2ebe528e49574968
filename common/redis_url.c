/* Parsing the address of --redis (redis_url.h): string work only, no I/O,
 * so that options_parse can refuse a bad URL as a bad argument (exit 2)
 * before the server opens anything. Reaching the Redis it names is the
 * cluster's business, and a failure there is exit 1 (docs/PROTOCOL.md
 * section 7).
 *
 *   unix:PATH
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
 *
 * A redis:// URL is read in three parts, each checked where it is found, and
 * the first that is wrong gives the reason:
 *   - the user information, up to the LAST '@': no later part can hold an
 *     '@', so the last one ends it, whatever the password holds (an '@', a
 *     ':' or a '/' typed without its %XX escape is still understood). The
 *     user runs to the first ':', the password is the rest; both may hold
 *     %XX escapes.
 *   - HOST[:PORT], up to the first '/' after it: a name, an IPv4 address,
 *     or an IPv6 address in brackets (its own ':' would otherwise be read
 *     as the port's).
 *   - /DB: a database number; "/" alone is database 0.
 * The parse fills a local struct and copies it out only when all is well,
 * so *url is untouched by a URL that is refused. */
#include "redis_url.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#define UNIX_SCHEME "unix:"
#define REDIS_SCHEME "redis://"
#define TLS_SCHEME "rediss://"

/* The longest socket path, as the message that refuses a longer one says. */
_Static_assert(sizeof((struct redis_url){0}.path) == 108,
               "redis_url_parse's message says 107 bytes");

/* Sets the reason, if the caller wants one, and returns false. */
static bool fail(const char **error, const char *reason) {
  if (error)
    *error = reason;
  return false;
}

/* The value of a hex digit, or -1 when c is not one. */
static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Copies text[0, length) into out, a buffer of size bytes, with every %XX
 * escape turned into its byte, and ends it with a NUL. Returns NULL, or the
 * reason it cannot: a '%' not followed by two hex digits, a %00 (a C string
 * cannot hold it, and neither can AUTH's argument here), or a result longer
 * than size - 1 bytes (then too_long). */
static const char *decode(const char *text, size_t length, char *out,
                          size_t size, const char *too_long) {
  size_t used = 0;
  for (size_t i = 0; i < length; i++) {
    char byte = text[i];
    if (byte == '%') {
      int high = i + 2 < length ? hex_value(text[i + 1]) : -1;
      int low = i + 2 < length ? hex_value(text[i + 2]) : -1;
      if (high < 0 || low < 0)
        return "bad %-escape: use % and two hex digits";
      byte = (char)(high * 16 + low);
      if (byte == '\0')
        return "%00 is not allowed";
      i += 2;
    }
    if (used + 1 >= size)
      return too_long;
    out[used++] = byte;
  }
  out[used] = '\0';
  return NULL;
}

/* A whole decimal number, text[0, length), of 1 or more digits and at most
 * max. No sign, no space, no 0x: "+5", " 5" and "0x10" are refused. */
static bool parse_decimal(const char *text, size_t length, unsigned long max,
                          unsigned long *value) {
  if (length == 0)
    return false;
  unsigned long parsed = 0;
  for (size_t i = 0; i < length; i++) {
    if (text[i] < '0' || text[i] > '9')
      return false;
    unsigned digit = (unsigned)(text[i] - '0');
    /* 10 * parsed + digit > max, asked without overflowing. */
    if (digit > max || parsed > (max - digit) / 10)
      return false;
    parsed = parsed * 10 + digit;
  }
  *value = parsed;
  return true;
}

/* A host name or an IPv4 address: ASCII letters and digits, '-', '.' and
 * '_' (Docker and Compose give services such names). */
static bool valid_host_name(const char *host, size_t length) {
  for (size_t i = 0; i < length; i++) {
    char c = host[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    bool digit = c >= '0' && c <= '9';
    if (!letter && !digit && c != '-' && c != '.' && c != '_')
      return false;
  }
  return true;
}

/* USER:PASSWORD, text[0, length), the part before the last '@'. */
static bool parse_user_information(const char *text, size_t length,
                                   struct redis_url *url, const char **error) {
  const char *colon = memchr(text, ':', length);
  if (!colon)
    return fail(error, "no ':' before the password: write [USER]:PASSWORD@");
  size_t user_length = (size_t)(colon - text);
  const char *reason =
      decode(text, user_length, url->user, sizeof url->user, "user too long");
  if (!reason)
    reason = decode(colon + 1, length - user_length - 1, url->password,
                    sizeof url->password, "password too long");
  if (reason)
    return fail(error, reason);
  /* An empty password would mean no AUTH at all (redis_url.h), and so a
   * USER given with it would be silently dropped: refuse the URL instead. */
  if (url->password[0] == '\0')
    return fail(error, "empty password");
  return true;
}

/* HOST[:PORT], text[0, length). */
static bool parse_host_and_port(const char *text, size_t length,
                                struct redis_url *url, const char **error) {
  const char *host = text;
  size_t host_length;
  const char *after_host; /* where ":PORT" may start */
  if (length > 0 && text[0] == '[') {
    const char *close = memchr(text, ']', length);
    if (!close)
      return fail(error, "IPv6 address without its closing ']'");
    host = text + 1;
    host_length = (size_t)(close - host);
    after_host = close + 1;
    /* inet_pton is pure: it reads the text and writes the address. */
    unsigned char address[sizeof(struct in6_addr)];
    char copy[INET6_ADDRSTRLEN];
    if (host_length == 0 || host_length >= sizeof copy)
      return fail(error, "bad IPv6 address");
    memcpy(copy, host, host_length);
    copy[host_length] = '\0';
    if (inet_pton(AF_INET6, copy, address) != 1)
      return fail(error, "bad IPv6 address");
  } else {
    const char *colon = memchr(text, ':', length);
    host_length = colon ? (size_t)(colon - text) : length;
    after_host = text + host_length;
    if (colon && memchr(colon + 1, ':', length - host_length - 1))
      return fail(error, "an IPv6 address goes in brackets: [::1]");
    if (host_length == 0)
      return fail(error, "no host");
    if (!valid_host_name(host, host_length))
      return fail(error, "bad character in host");
  }
  if (host_length >= sizeof url->host)
    return fail(error, "host too long");
  memcpy(url->host, host, host_length);
  url->host[host_length] = '\0';

  const char *end = text + length;
  if (after_host == end)
    return true; /* the default port */
  if (*after_host != ':')
    return fail(error, "':PORT' or '/DB' expected after ']'");
  unsigned long port;
  if (!parse_decimal(after_host + 1, (size_t)(end - after_host - 1), 65535,
                     &port) ||
      port == 0)
    return fail(error, "bad port: use 1 to 65535");
  url->port = (unsigned)port;
  return true;
}

/* What follows "redis://". */
static bool parse_redis(const char *text, struct redis_url *url,
                        const char **error) {
  const char *at = strrchr(text, '@');
  if (at) {
    if (!parse_user_information(text, (size_t)(at - text), url, error))
      return false;
    text = at + 1;
  }
  const char *slash = strchr(text, '/');
  size_t host_and_port = slash ? (size_t)(slash - text) : strlen(text);
  if (!parse_host_and_port(text, host_and_port, url, error))
    return false;
  if (slash && slash[1] != '\0') {
    /* SELECT takes a C int in Redis. */
    unsigned long db;
    if (!parse_decimal(slash + 1, strlen(slash + 1), INT_MAX, &db))
      return fail(error, "bad database: use a number from 0");
    url->db = (unsigned)db;
  }
  return true;
}

bool redis_url_parse(const char *text, struct redis_url *url,
                     const char **error) {
  /* A control character has no place in any part, and one echoed in the
   * message that refuses the URL could break that message's line. */
  for (const char *c = text; *c; c++) {
    if ((unsigned char)*c < 0x20 || *c == 0x7F)
      return fail(error, "control character in URL");
  }
  struct redis_url parsed = {.port = REDIS_URL_DEFAULT_PORT};
  /* A URL's scheme is case-insensitive (RFC 3986, 3.1). */
  if (strncasecmp(text, UNIX_SCHEME, strlen(UNIX_SCHEME)) == 0) {
    const char *path = text + strlen(UNIX_SCHEME);
    if (*path == '\0')
      return fail(error, "no socket path after 'unix:'");
    if (strlen(path) >= sizeof parsed.path)
      return fail(error, "socket path too long: at most 107 bytes");
    parsed.is_unix = true;
    strcpy(parsed.path, path);
  } else if (strncasecmp(text, REDIS_SCHEME, strlen(REDIS_SCHEME)) == 0) {
    if (!parse_redis(text + strlen(REDIS_SCHEME), &parsed, error))
      return false;
  } else if (strncasecmp(text, TLS_SCHEME, strlen(TLS_SCHEME)) == 0) {
    return fail(error, "TLS (rediss://) is not supported");
  } else {
    return fail(error, "use redis://HOST[:PORT][/DB] or unix:PATH");
  }
  *url = parsed;
  return true;
}
