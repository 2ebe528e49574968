/* The server log on standard error (docs/PROTOCOL.md section 1): one line per
 * connection accepted or refused, name registered, departure with its cause,
 * and at start and stop; never one per message. Every line starts with an
 * ISO 8601 UTC time.
 *
 * Logging never waits: a line standard error cannot take at once (a full
 * pipe nobody reads, a stopped terminal) is dropped and counted, and the
 * next line that gets through is preceded by `N log lines dropped` (log.c
 * says how). Every function here may be called from any thread or process
 * of the server, and costs no lock: call them under none, all the same, as
 * a line is formatted and written with a system call. */
#ifndef CHAT_LOG_H
#define CHAT_LOG_H

#include "os/peer_address.h"

#include <stdbool.h>
#include <stddef.h>

enum departure_cause {
  DEPARTURE_QUIT,      /* said QUIT */
  DEPARTURE_CLOSED,    /* closed, reset or half-closed the connection */
  DEPARTURE_SLOW,      /* dropped: its backlog passed --max-backlog */
  DEPARTURE_TIMEOUT,   /* no name within --login-timeout */
  DEPARTURE_SHUTDOWN,  /* the server stopped */
  DEPARTURE_ERROR,     /* the server ran out of memory for it */
  DEPARTURE_FAILED,    /* anything else failed: a system call, its process */
  DEPARTURE_ROOM_LOST, /* the room shared through Redis was lost */
};

/* Sets up the log: nothing is written with quiet. Called once, before any
 * thread or child process starts (startup_listen does), so that they all
 * share the count of dropped lines. */
void log_open(bool quiet);
/* log_open(quiet), by its older name (a test silences the log with it). */
void log_set_quiet(bool quiet);

/* SIGINT or SIGTERM: one line for the whole server, not one per client
 * (10,000 processes or threads writing to one log at the same instant
 * queue on the kernel's lock of it, and a killed process cannot leave the
 * queue: chat-forking's shutdown would wait on it). */
void log_shutting_down(int signal_number, size_t connections);
void log_line(const char *format, ...) __attribute__((format(printf, 1, 2)));
void log_accepted(const struct peer_address *peer);
void log_refused(const struct peer_address *peer, const char *reason);
void log_registered(const struct peer_address *peer, const char *name,
                    unsigned name_length);
/* name may be NULL for a connection that never registered. */
void log_departed(const struct peer_address *peer, const char *name,
                  unsigned name_length, enum departure_cause cause);

#endif
