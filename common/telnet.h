/* Telnet commands removed from a byte stream (RFC 854), one byte at a time,
 * with the state kept between reads because a sequence may be split over
 * packets. The server proposes no option and refuses every request
 * (RFC 1143): DO x is answered WONT x, WILL x is answered DONT x. */
#ifndef CHAT_TELNET_H
#define CHAT_TELNET_H

enum {
  TELNET_SE = 240,
  TELNET_SB = 250,
  TELNET_WILL = 251,
  TELNET_WONT = 252,
  TELNET_DO = 253,
  TELNET_DONT = 254,
  TELNET_IAC = 255,
};

struct telnet_filter {
  unsigned char state;   /* where we are inside a command */
  unsigned char command; /* WILL, WONT, DO or DONT awaiting its option */
};

enum telnet_result {
  TELNET_DATA,  /* the byte is data (IAC IAC yields the data byte 255) */
  TELNET_SKIP,  /* the byte belongs to a command and is dropped */
  TELNET_REPLY, /* dropped too, and reply[0..2] must be sent to the peer */
};

enum telnet_result telnet_filter_byte(struct telnet_filter *filter,
                                      unsigned char byte,
                                      unsigned char reply[3]);

#endif
