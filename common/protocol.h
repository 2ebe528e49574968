/* The fixed texts and limits of the chat protocol (docs/PROTOCOL.md).
 * Every byte a server sends that is not a user's own text comes from here. */
#ifndef CHAT_PROTOCOL_H
#define CHAT_PROTOCOL_H

#define CHAT_EOL "\r\n"

#define CHAT_PROMPT "Enter user name: "
#define CHAT_INVALID_NAME                                                      \
  "Invalid user name: use 1-32 characters, no spaces, colons or control "      \
  "characters" CHAT_EOL
#define CHAT_INVALID_UTF8 "Line ignored: invalid UTF-8" CHAT_EOL
#define CHAT_CONTROL_CHARACTERS                                                \
  "Line ignored: control characters are not allowed" CHAT_EOL
#define CHAT_HELP                                                              \
  "Commands: NAMES lists who is here, QUIT leaves, anything else is sent to "  \
  "everyone" CHAT_EOL
#define CHAT_NAMES_HEADER "Users here:" CHAT_EOL
#define CHAT_BYE "Bye." CHAT_EOL
#define CHAT_SERVER_FULL "Server full, try again later" CHAT_EOL
#define CHAT_LOGIN_TIMEOUT "Timed out waiting for a user name" CHAT_EOL
#define CHAT_SHUTDOWN "Server shutting down" CHAT_EOL
/* A room shared through Redis (section 7): Redis cannot be reached now; or
 * this server lost its place in the room and closes its users. */
#define CHAT_ROOM_UNAVAILABLE "Room unavailable, try again later" CHAT_EOL
#define CHAT_ROOM_LOST "Room connection lost, please reconnect" CHAT_EOL

/* A user name: 1 to 32 code points, so at most 32 * 4 bytes of UTF-8. */
#define CHAT_NAME_MAX_CHARACTERS 32
#define CHAT_NAME_MAX_BYTES (CHAT_NAME_MAX_CHARACTERS * 4)

/* A room name (--name): 1 to 256 bytes of UTF-8. The welcome line holds it. */
#define CHAT_ROOM_NAME_MAX_BYTES 256

/* The longest line the server formats around a user's text, beyond the text
 * itself: "NAME: " before it and CR LF after it, or a notice with a number. */
#define CHAT_LINE_OVERHEAD (CHAT_NAME_MAX_BYTES + 64)

#endif
