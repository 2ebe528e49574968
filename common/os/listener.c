#include "listener.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The kernel caps the accept queue at net.core.somaxconn anyway. */
#define LISTEN_BACKLOG 65535

static int bind_and_listen(const struct sockaddr *address, socklen_t length,
                           int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int on = 1, off = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (family == AF_INET6) /* take IPv4 too, whatever bindv6only says */
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  if (bind(fd, address, length) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
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

static int open_any(unsigned port) {
  struct sockaddr_in6 any6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)port),
                              .sin6_addr = IN6ADDR_ANY_INIT};
  int fd = bind_and_listen((struct sockaddr *)&any6, sizeof any6, AF_INET6);
  if (fd >= 0 || (errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL))
    return fd;
  struct sockaddr_in any4 = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr = {htonl(INADDR_ANY)}};
  return bind_and_listen((struct sockaddr *)&any4, sizeof any4, AF_INET);
}

static int open_host(const char *host, unsigned port, char *error,
                     size_t error_size) {
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
    fd = bind_and_listen(a->ai_addr, a->ai_addrlen, a->ai_family);
  freeaddrinfo(found);
  return fd;
}

int listener_open(const char *host, unsigned port, unsigned *bound_port,
                  char *error, size_t error_size) {
  error[0] = '\0';
  int fd = host ? open_host(host, port, error, error_size) : open_any(port);
  if (fd < 0) {
    if (error[0] == '\0')
      snprintf(error, error_size, "cannot listen on %s port %u: %s%s",
               host ? host : "all addresses", port, strerror(errno),
               errno == EADDRINUSE ? " (is another server running?)" : "");
    return -1;
  }
  *bound_port = local_port(fd);
  return fd;
}

void listener_send_at_once(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}
