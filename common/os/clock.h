/* The clock every model measures its deadlines with. */
#ifndef CHAT_CLOCK_H
#define CHAT_CLOCK_H

/* Milliseconds on the monotonic clock: for deadlines, never for dates. */
long long now_milliseconds(void);

#endif
