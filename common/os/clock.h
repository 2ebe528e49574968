/* The clock every model measures its deadlines with. */
#ifndef CHAT_CLOCK_H
#define CHAT_CLOCK_H

#include <sys/time.h>
#include <time.h>

/* Milliseconds on the monotonic clock: for deadlines, never for dates. */
long long now_milliseconds(void);

/* A span of milliseconds as the system calls take it. */
struct timespec timespec_from_milliseconds(long long ms);
struct timeval timeval_from_milliseconds(long long ms);

#endif
