#include "startup.h"

#include <signal.h>

rlim_t startup_prepare_process(void) {
  signal(SIGPIPE, SIG_IGN);
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
