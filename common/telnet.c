#include "telnet.h"

enum {
  STATE_DATA = 0, /* zero, so a zeroed filter is a fresh one */
  STATE_IAC,      /* after IAC */
  STATE_OPTION,   /* after IAC WILL/WONT/DO/DONT: the option byte comes */
  STATE_SUB,      /* inside IAC SB ... IAC SE */
  STATE_SUB_IAC,  /* after IAC inside a subnegotiation */
};

enum telnet_result telnet_filter_byte(struct telnet_filter *filter,
                                      unsigned char byte,
                                      unsigned char reply[3]) {
  switch (filter->state) {
  case STATE_DATA:
    if (byte != TELNET_IAC)
      return TELNET_DATA;
    filter->state = STATE_IAC;
    return TELNET_SKIP;

  case STATE_IAC:
    if (byte == TELNET_IAC) { /* an escaped data byte 255 */
      filter->state = STATE_DATA;
      return TELNET_DATA;
    }
    if (byte >= TELNET_WILL) { /* WILL, WONT, DO, DONT: an option follows */
      filter->command = byte;
      filter->state = STATE_OPTION;
    } else if (byte == TELNET_SB) {
      filter->state = STATE_SUB;
    } else { /* any other command, or any other byte: both dropped */
      filter->state = STATE_DATA;
    }
    return TELNET_SKIP;

  case STATE_OPTION:
    filter->state = STATE_DATA;
    if (filter->command == TELNET_DO || filter->command == TELNET_WILL) {
      reply[0] = TELNET_IAC;
      reply[1] = filter->command == TELNET_DO ? TELNET_WONT : TELNET_DONT;
      reply[2] = byte;
      return TELNET_REPLY;
    }
    return TELNET_SKIP; /* WONT and DONT need no answer */

  case STATE_SUB:
    if (byte == TELNET_IAC)
      filter->state = STATE_SUB_IAC;
    return TELNET_SKIP;

  default: /* STATE_SUB_IAC */
    /* IAC SE ends the subnegotiation; IAC IAC is a data byte inside it; and
     * anything else is malformed, so we keep discarding until IAC SE. */
    filter->state = byte == TELNET_SE ? STATE_DATA : STATE_SUB;
    return TELNET_SKIP;
  }
}
