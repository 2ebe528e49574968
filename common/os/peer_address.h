/* A connection's peer, as the log names it: kept in every connection, so
 * small, and formatted only when a line is logged. */
#ifndef CHAT_PEER_ADDRESS_H
#define CHAT_PEER_ADDRESS_H

#include <stdint.h>
#include <sys/socket.h>

/* A peer's address, small enough to keep in every connection. */
struct peer_address {
  uint8_t family; /* AF_INET or AF_INET6 */
  uint16_t port;
  uint8_t bytes[16];
};

/* "127.0.0.1:5000" or "[::1]:5000"; IPv4-mapped IPv6 is shown as IPv4. */
#define PEER_TEXT_SIZE 56
struct peer_address peer_address_from(const struct sockaddr *address);
void peer_address_format(const struct peer_address *peer,
                         char text[PEER_TEXT_SIZE]);

#endif
