#include "os/listener.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The kernel caps the accept queue at net.core.somaxconn anyway. */
#define LISTEN_BACKLOG 65535

/* One socket, bound and listening; -1 with errno set if any step fails. */
static int bind_and_listen(const struct sockaddr *address, socklen_t length,
                           int family, bool reuse_port) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int on = 1, off = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (family == AF_INET6) /* take IPv4 too, whatever bindv6only says */
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  /* Before bind, which is where the kernel checks it: the port is shared
   * only among sockets that all set SO_REUSEPORT (and belong to one user).
   * Asked for and refused, it is an error: the server would otherwise
   * fail later, or not share the port it was told to share. */
  bool shared = !reuse_port ||
                setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) == 0;
  if (!shared || bind(fd, address, length) < 0 ||
      listen(fd, LISTEN_BACKLOG) < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

static unsigned local_port(int fd) {
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(fd, (struct sockaddr *)&address, &length) < 0)
    return 0;
  if (address.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
  return ntohs(((struct sockaddr_in *)&address)->sin_port);
}

static int open_any(unsigned port, bool reuse_port) {
  struct sockaddr_in6 any6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)port),
                              .sin6_addr = IN6ADDR_ANY_INIT};
  int fd = bind_and_listen((struct sockaddr *)&any6, sizeof any6, AF_INET6,
                           reuse_port);
  if (fd >= 0 || (errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL))
    return fd;
  struct sockaddr_in any4 = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr = {htonl(INADDR_ANY)}};
  return bind_and_listen((struct sockaddr *)&any4, sizeof any4, AF_INET,
                         reuse_port);
}

static int open_host(const char *host, unsigned port, bool reuse_port,
                     char *error, size_t error_size) {
  char service[8];
  snprintf(service, sizeof service, "%u", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *found;
  int status = getaddrinfo(host, service, &hints, &found);
  if (status != 0) {
    snprintf(error, error_size, "cannot resolve host '%s': %s", host,
             gai_strerror(status));
    errno = 0;
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *a = found; a && fd < 0; a = a->ai_next)
    fd = bind_and_listen(a->ai_addr, a->ai_addrlen, a->ai_family, reuse_port);
  freeaddrinfo(found);
  return fd;
}

int listener_open(const char *host, unsigned port, bool reuse_port,
                  unsigned *bound_port, char *error, size_t error_size) {
  error[0] = '\0';
  int fd = host ? open_host(host, port, reuse_port, error, error_size)
                : open_any(port, reuse_port);
  if (fd < 0) {
    int saved = errno;
    char hint[PATH_MAX + 200] = "";
    if (saved == EADDRINUSE && reuse_port) {
      snprintf(hint, sizeof hint,
               " (is a server there without --reuse-port, or another "
               "user's?)");
    } else if (saved == EADDRINUSE) {
      snprintf(hint, sizeof hint, " (is another server running?)");
    } else if ((saved == EACCES || saved == EPERM) && port < 1024) {
      char self[PATH_MAX];
      ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
      self[length > 0 ? length : 0] = '\0';
      snprintf(hint, sizeof hint,
               " (a port below 1024 needs root or the capability: sudo "
               "setcap cap_net_bind_service=+ep %s, or run it from the "
               "systemd unit chat@.service, which grants it)",
               length > 0 ? self : "BINARY");
    }
    if (error[0] == '\0')
      snprintf(error, error_size, "cannot listen on %s port %u: %s%s",
               host ? host : "all addresses", port, strerror(saved), hint);
    return -1;
  }
  *bound_port = local_port(fd);
  return fd;
}

void listener_describe(int fd, char *text, size_t size) {
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  char host[NI_MAXHOST], service[NI_MAXSERV];
  if (getsockname(fd, (struct sockaddr *)&address, &length) < 0 ||
      getnameinfo((struct sockaddr *)&address, length, host, sizeof host,
                  service, sizeof service,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(text, size, "an unknown address");
    return;
  }
  if (address.ss_family != AF_INET6) {
    snprintf(text, size, "%s:%s", host, service);
    return;
  }
  int v6only = 1;
  socklen_t option_length = sizeof v6only;
  getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &option_length);
  bool any = IN6_IS_ADDR_UNSPECIFIED(
      &((const struct sockaddr_in6 *)&address)->sin6_addr);
  snprintf(text, size, "[%s]:%s%s", host, service,
           any && !v6only ? " (every IPv6 and IPv4 address)" : "");
}

void listener_send_at_once(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}
