/* The address of --redis (docs/PROTOCOL.md section 7), parsed without I/O:
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]   (port 6379, db 0)
 *   unix:PATH
 * HOST may be a name, an IPv4 address or an IPv6 address in brackets.
 * USER and PASSWORD may hold %XX escapes. */
#ifndef CHAT_REDIS_URL_H
#define CHAT_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_URL_DEFAULT_PORT 6379

struct redis_url {
  bool is_unix;       /* unix:PATH */
  char path[108];     /* is_unix: the socket's path (sun_path's size) */
  char host[256];     /* otherwise: the host, brackets removed */
  unsigned port;      /* 1 to 65535 */
  char user[128];     /* empty: none (AUTH PASSWORD alone) */
  char password[256]; /* empty: no AUTH */
  unsigned db;        /* SELECT db when not 0 */
};

/* Parses text into *url. Returns true, or false with *error set to a short
 * reason ("no host", "bad port", ...) for a message that names the URL. */
bool redis_url_parse(const char *text, struct redis_url *url,
                     const char **error);

#endif
