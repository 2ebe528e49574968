/* The command line of docs/PROTOCOL.md section 1, the same for every model. */
#ifndef CHAT_OPTIONS_H
#define CHAT_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct chat_options {
  const char *room_name;  /* default "ChatServer" */
  const char *host;       /* NULL: every address, IPv6 and IPv4 */
  unsigned port;          /* 0: any free port */
  size_t max_clients;     /* connections at once */
  size_t max_line;        /* longest input line, in bytes */
  size_t max_backlog;     /* output queued for one client before dropping it */
  unsigned login_timeout; /* seconds to pick a name; 0: no limit */
  bool reuse_port;        /* SO_REUSEPORT: several servers share the port */
  const char *redis_url;  /* NULL: the room is this process's own */
  double lease;           /* with redis_url: seconds a silent server keeps
                             its users (docs/PROTOCOL.md section 7) */
  bool quiet;             /* no log on standard error */
};

/* The defaults, which --help names too. */
#define OPTIONS_DEFAULT_ROOM_NAME "ChatServer"
#define OPTIONS_DEFAULT_PORT 1234
#define OPTIONS_DEFAULT_MAX_CLIENTS 16384
#define OPTIONS_DEFAULT_MAX_LINE 4096
#define OPTIONS_DEFAULT_MAX_BACKLOG 1048576
#define OPTIONS_DEFAULT_LOGIN_TIMEOUT 60
#define OPTIONS_DEFAULT_LEASE 5

/* options_parse returns this when the server should run. */
#define OPTIONS_RUN (-1)

/* Parses the command line. Returns OPTIONS_RUN, or else the exit status,
 * having printed what there was to print: 0 after --help (usage on `out`)
 * or --version, 2 after a bad argument (one line naming it and a hint on
 * `err`). */
int options_parse(struct chat_options *options, int argc, char *argv[],
                  FILE *out, FILE *err);

/* The program's base name, for messages: "chat-evented" from
 * "build/bin/chat-evented". */
const char *options_program_name(const char *argv0);

/* "NAME running on port PORT", the line scripts and tests wait for. */
void options_print_startup(const struct chat_options *options, unsigned port,
                           FILE *out);

#endif
