#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static bool log_quiet;

void log_set_quiet(bool quiet) {
  log_quiet = quiet;
}

struct peer_address peer_address_from(const struct sockaddr *address) {
  struct peer_address peer = {0};
  if (address->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
    peer.family = AF_INET6;
    peer.port = ntohs(in6->sin6_port);
    memcpy(peer.bytes, &in6->sin6_addr, 16);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      peer.family = AF_INET;
      memcpy(peer.bytes, &in6->sin6_addr.s6_addr[12], 4);
    }
  } else if (address->sa_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)address;
    peer.family = AF_INET;
    peer.port = ntohs(in4->sin_port);
    memcpy(peer.bytes, &in4->sin_addr, 4);
  }
  return peer;
}

void peer_address_format(const struct peer_address *peer,
                         char text[PEER_TEXT_SIZE]) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (peer->family == AF_INET || peer->family == AF_INET6)
    inet_ntop(peer->family, peer->bytes, host, sizeof host);
  snprintf(text, PEER_TEXT_SIZE, peer->family == AF_INET6 ? "[%s]:%u" : "%s:%u",
           host, (unsigned)peer->port);
}

void log_line(const char *format, ...) {
  if (log_quiet)
    return;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm utc;
  gmtime_r(&now.tv_sec, &utc);
  char line[512];
  size_t length = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &utc);
  length += (size_t)snprintf(line + length, sizeof line - length, ".%03ldZ ",
                             now.tv_nsec / 1000000);
  va_list arguments;
  va_start(arguments, format);
  int added =
      vsnprintf(line + length, sizeof line - length - 1, format, arguments);
  va_end(arguments);
  if (added > 0)
    length += (size_t)added < sizeof line - length - 1
                  ? (size_t)added
                  : sizeof line - length - 2;
  line[length++] = '\n';
  /* One write per line, so lines from threads or processes never mix. */
  fwrite(line, 1, length, stderr);
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
    return "error";
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
