#include "os/peer_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

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
