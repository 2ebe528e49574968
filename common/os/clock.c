#include "os/clock.h"

long long now_milliseconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

struct timespec timespec_from_milliseconds(long long ms) {
  return (struct timespec){.tv_sec = ms / 1000,
                           .tv_nsec = (ms % 1000) * 1000000};
}

struct timeval timeval_from_milliseconds(long long ms) {
  return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}
