/* The heap policy every model shares: keep freed memory through a burst,
 * give it back once the burst is over. */
#ifndef CHAT_HEAP_H
#define CHAT_HEAP_H

/* A broadcast allocates an output chunk per recipient and frees it a moment
 * later. glibc would return the top of the heap to the kernel after each
 * burst, and the next burst would fault it in again, a page at a time: on a
 * virtual machine that churn cost more than the chat itself (measured: a
 * third of chat-evented's deliveries per second). So freed memory stays,
 * up to a bound, until heap_return_freed_memory(). */
void heap_keep_freed_memory(void);

/* Gives freed heap back to the kernel: for when the room has gone quiet,
 * so that an idle server is small again after a storm. */
void heap_return_freed_memory(void);

#endif
