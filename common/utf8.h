/* UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequences. */
#ifndef CHAT_UTF8_H
#define CHAT_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when the bytes are valid UTF-8; *characters (if not NULL) receives
 * the number of code points. */
bool utf8_validate(const char *bytes, size_t length, size_t *characters);

/* True when a byte is a control character: below 0x20, or 0x7F (DEL). */
bool is_control_byte(unsigned char byte);

#endif
