#include "os/startup.h"

#include "os/heap.h"
#include "os/listener.h"
#include "os/log.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* Raises the open-file soft limit to the hard limit (docs/PROTOCOL.md
 * section 1), ignores SIGPIPE, so that a write to a closed socket fails with
 * EPIPE instead of killing the server, and SIGUSR1 and SIGUSR2, and keeps freed
 * heap through bursts (heap.h). Returns the open-file limit now in force. */
static rlim_t prepare_process(void) {
  /* signal() fails only for a signal that cannot be caught. SIGUSR1 and
   * SIGUSR2 would end the server by default: they are nobody's business
   * but a debugger's (chat-threaded then makes SIGUSR1 its wake-up). */
  (void)signal(SIGPIPE, SIG_IGN);
  (void)signal(SIGUSR1, SIG_IGN);
  (void)signal(SIGUSR2, SIG_IGN);
  heap_keep_freed_memory();
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) < 0)
    return 0;
  if (files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &files) < 0)
      getrlimit(RLIMIT_NOFILE, &files);
  }
  return files.rlim_cur;
}

/* Descriptors a server needs besides one per client: the listener, the
 * event loop's, signals, wake-ups, the log, and what libraries open. */
#define FILES_FOR_THE_SERVER 64

/* A warning when the open-file limit, once raised to the hard limit,
 * cannot hold --max-clients connections: the server would refuse clients
 * long before --max-clients, with "accept paused" in the log. chat-forking
 * is not concerned: its parent closes each client's descriptor once the
 * child has it, and a child holds one. */
static void warn_if_files_short(const char *program,
                                const struct chat_options *options,
                                rlim_t files) {
  if (strcmp(program, "chat-forking") == 0 || files == RLIM_INFINITY)
    return;
  unsigned long long needed =
      (unsigned long long)options->max_clients + FILES_FOR_THE_SERVER;
  if ((unsigned long long)files >= needed)
    return;
  unsigned long long fit =
      (unsigned long long)files > FILES_FOR_THE_SERVER
          ? (unsigned long long)files - FILES_FOR_THE_SERVER
          : 0;
  log_line("warning: the open-file limit is %llu, too low for "
           "--max-clients %zu (plus %d for the server itself): about %llu "
           "clients can connect. Raise the hard limit (ulimit -Hn %llu as "
           "root, LimitNOFILE= in a systemd unit, nofile in "
           "/etc/security/limits.conf) or lower --max-clients",
           (unsigned long long)files, options->max_clients,
           FILES_FOR_THE_SERVER, fit, needed);
}

int startup_listen(struct chat_options *options, int argc, char *argv[],
                   unsigned *port, int *exit_status) {
  int status = options_parse(options, argc, argv, stdout, stderr);
  if (status != OPTIONS_RUN) {
    *exit_status = status;
    return -1;
  }
  log_open(options->quiet);
  rlim_t files = prepare_process();
  char error[PATH_MAX + 512];
  int fd = listener_open(options->host, options->port, options->reuse_port,
                         port, error, sizeof error);
  const char *program = options_program_name(argc > 0 ? argv[0] : "chat");
  if (fd < 0) {
    fprintf(stderr, "%s: %s\n", program, error);
    *exit_status = 1;
    return fd;
  }
  char bound[128];
  listener_describe(fd, bound, sizeof bound);
  const char *shared = options->reuse_port ? " with SO_REUSEPORT" : "";
  if (files == RLIM_INFINITY)
    log_line("listening on %s%s; open files: no limit", bound, shared);
  else
    log_line("listening on %s%s; open files: up to %llu", bound, shared,
             (unsigned long long)files);
  warn_if_files_short(program, options, files);
  return fd;
}
