/* A table-free UTF-8 validator, written for reading rather than speed: the
 * lead byte says how many continuation bytes follow and what range the first
 * of them may take, which is where overlongs, surrogates and values above
 * U+10FFFF are excluded (Unicode 15, table 3-7). */
#include "utf8.h"

bool is_control_byte(unsigned char byte) {
  return byte < 0x20 || byte == 0x7F;
}

bool is_control_character(unsigned long code_point) {
  return code_point < 0x20 || (code_point >= 0x7F && code_point <= 0x9F) ||
         (code_point >= 0x202A && code_point <= 0x202E) ||
         (code_point >= 0x2066 && code_point <= 0x2069);
}

bool utf8_has_control(const char *bytes, size_t length, bool tab_allowed) {
  const unsigned char *s = (const unsigned char *)bytes;
  size_t i = 0;
  while (i < length) {
    unsigned long code_point = s[i];
    size_t followers = 0;
    if (s[i] >= 0xF0) {
      code_point = s[i] & 0x07u;
      followers = 3;
    } else if (s[i] >= 0xE0) {
      code_point = s[i] & 0x0Fu;
      followers = 2;
    } else if (s[i] >= 0xC0) {
      code_point = s[i] & 0x1Fu;
      followers = 1;
    }
    /* Validated text holds every follower; stop short of the end anyway. */
    for (size_t k = 1; k <= followers && i + k < length; k++)
      code_point = code_point << 6 | (s[i + k] & 0x3Fu);
    if (is_control_character(code_point) &&
        !(tab_allowed && code_point == '\t'))
      return true;
    i += followers + 1;
  }
  return false;
}

bool utf8_validate(const char *bytes, size_t length, size_t *characters) {
  const unsigned char *s = (const unsigned char *)bytes;
  size_t count = 0;
  size_t i = 0;
  while (i < length) {
    unsigned char lead = s[i];
    size_t followers;
    unsigned char low = 0x80; /* range of the first continuation byte */
    unsigned char high = 0xBF;
    if (lead < 0x80) {
      followers = 0;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      followers = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      followers = 2;
      if (lead == 0xE0)
        low = 0xA0; /* overlong */
      if (lead == 0xED)
        high = 0x9F; /* surrogates U+D800..U+DFFF */
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      followers = 3;
      if (lead == 0xF0)
        low = 0x90; /* overlong */
      if (lead == 0xF4)
        high = 0x8F; /* above U+10FFFF */
    } else {
      return false; /* 80..C1 (continuation or overlong lead), F5..FF */
    }
    if (followers > length - i - 1)
      return false; /* truncated */
    for (size_t k = 1; k <= followers; k++) {
      unsigned char next = s[i + k];
      if (next < low || next > high)
        return false;
      low = 0x80;
      high = 0xBF;
    }
    i += followers + 1;
    count++;
  }
  if (characters)
    *characters = count;
  return true;
}
