#include "startup.h"

#include "heap.h"
#include "listener.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

rlim_t startup_prepare_process(void) {
  signal(SIGPIPE, SIG_IGN);
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

int startup_listen(struct chat_options *options, int argc, char *argv[],
                   unsigned *port, int *exit_status) {
  int status = options_parse(options, argc, argv, stdout, stderr);
  if (status != OPTIONS_RUN) {
    *exit_status = status;
    return -1;
  }
  log_set_quiet(options->quiet);
  startup_prepare_process();
  char error[256];
  int fd =
      listener_open(options->host, options->port, port, error, sizeof error);
  if (fd < 0) {
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    fprintf(stderr, "%s: %s\n",
            slash ? slash + 1 : (argc > 0 ? argv[0] : "chat"), error);
    *exit_status = 1;
  }
  return fd;
}
