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

/* True when a code point is a control character (docs/PROTOCOL.md section 4):
 * below U+0020, U+007F, the C1 controls U+0080 to U+009F (U+009B is a
 * terminal's CSI, U+0085 a line end), or a bidirectional override or isolate,
 * U+202A to U+202E and U+2066 to U+2069, which make a line display as something
 * other than what it holds. */
bool is_control_character(unsigned long code_point);

/* True when valid UTF-8 text holds a control character; TAB is allowed
 * when tab_allowed. The text must already have passed utf8_validate. */
bool utf8_has_control(const char *bytes, size_t length, bool tab_allowed);

#endif
