/* exit-floor: how long this machine's kernel takes to end N processes,
 * whatever the server does. docs/PROTOCOL.md asks chat-forking to exit within 2
 * s of SIGTERM, every child gone, also with 10,000 children; this measures the
 * part no server can shorten.
 *
 * Usage: exit-floor [N]   (default 10,000)
 *
 * It forks N children that do nothing but wait (smaller than any chat
 * child), sends them all SIGTERM at once, and times two things: until the
 * last one has exited (a pipe whose write end every child holds reaches
 * end-of-file when the last one's descriptors are closed), and then until
 * all are reaped. Prints one line of JSON. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

int main(int argc, char *argv[]) {
  long wanted = argc > 1 ? strtol(argv[1], NULL, 10) : 10000;
  if (wanted < 1 || wanted > 1000000) {
    fprintf(stderr, "usage: exit-floor [N], 1 <= N <= 1000000\n");
    return 2;
  }
  int last_exit[2];
  if (pipe(last_exit) < 0) {
    perror("exit-floor: pipe");
    return 1;
  }
  /* SIGTERM goes to the children only: they are in a group of their own. */
  pid_t group = 0;
  double forking_started = now_seconds();
  long forked = 0;
  for (; forked < wanted; forked++) {
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "exit-floor: fork %ld: %s\n", forked + 1,
              strerror(errno));
      break;
    }
    if (pid == 0) {
      close(last_exit[0]);
      setpgid(0, group);
      for (;;)
        pause();
    }
    if (group == 0)
      group = pid;
    setpgid(pid, group); /* also here: whichever runs first */
  }
  double forking_seconds = now_seconds() - forking_started;
  close(last_exit[1]);
  if (forked == 0)
    return 1;

  double killing_started = now_seconds();
  kill(-group, SIGTERM);
  char byte;
  while (read(last_exit[0], &byte, 1) < 0 && errno == EINTR) {
  }
  double exited_seconds = now_seconds() - killing_started;
  long reaped = 0;
  while (waitpid(-1, NULL, 0) > 0)
    reaped++;
  double reaped_seconds = now_seconds() - killing_started;
  printf("{\"processes\": %ld, \"fork_s\": %.3f, \"all_exited_s\": %.3f, "
         "\"all_reaped_s\": %.3f, \"exit_cpu_us_each_on_%ld_cpus\": %.0f}\n",
         reaped, forking_seconds, exited_seconds, reaped_seconds,
         sysconf(_SC_NPROCESSORS_ONLN),
         exited_seconds * 1e6 * (double)sysconf(_SC_NPROCESSORS_ONLN) /
             (double)reaped);
  return reaped == forked ? 0 : 1;
}
