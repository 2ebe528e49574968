/* The heap policy every model shares: keep freed memory through a burst,
 * give it back once the process has been quiet for a second.
 *
 * A broadcast allocates output for every recipient and frees it a moment
 * later. glibc would return the top of the heap to the kernel after each
 * burst, and the next burst would fault it in again, a page at a time: on a
 * virtual machine that churn cost more than the chat itself (measured: a
 * third of chat-evented's deliveries per second). So freed memory stays, up
 * to a bound, while the process is busy; once it has been quiet for
 * HEAP_QUIET_MILLISECONDS, it goes back, so that an idle server is small
 * again after a storm.
 *
 * Each model calls heap_note_busy() when it has done work that allocates and
 * frees, and heap_wait() where it waits, which shortens the wait so that the
 * memory goes back on time. Both from one thread (the one that waits):
 * chat-evented's loop, chat-threaded's main thread, each chat-forking child
 * (where giving memory back also costs copies of the allocator's pages it
 * shares with the parent: forking/README.md, "Freed heap"). */
#ifndef CHAT_HEAP_H
#define CHAT_HEAP_H

#define HEAP_QUIET_MILLISECONDS 1000

/* At start (startup_listen() calls it): freed memory is kept. */
void heap_keep_freed_memory(void);

/* The process has just been busy (it queued output, a connection came or
 * went): what it freed stays for the next burst, for now. */
void heap_note_busy(void);

/* Call before waiting for up to `wait` milliseconds (-1: for ever). Gives
 * freed memory back if the process has been quiet for
 * HEAP_QUIET_MILLISECONDS since it was last busy, and returns the wait to
 * use instead: no longer than until the memory is due to go back (-1 when
 * nothing is waiting to go back and `wait` was -1). */
int heap_wait(int wait);

#endif
