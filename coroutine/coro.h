/* Stackful coroutines, by hand: create, resume, yield.
 *
 * A coroutine is a function running on a stack of its own. resume() runs it
 * until it calls yield() (or returns); the next resume() continues it just
 * after that yield(), with every local variable as it was. That is all a
 * generator is in the talk; a stack of its own is what lets a function
 * many calls deep yield, so that the session can call co_read() from
 * anywhere and still read top-down.
 *
 * Each stack comes from mmap with a PROT_NONE guard page below it: it
 * costs only the pages it touches, and a call deeper than the stack hits
 * the guard page and dies of SIGSEGV at once, never writing over someone
 * else's memory.
 *
 * The switch saves the callee-saved registers and the stack pointer of one
 * side and loads the other's (coro_switch_x86_64.S, coro_switch_aarch64.S);
 * other machines use ucontext (make_context, swapcontext), which is slower:
 * it saves the signal mask with a system call each time. Build with
 * -DCORO_UCONTEXT to use it anywhere. AddressSanitizer is told about every
 * switch. One thread only: nothing here locks. */
#ifndef CHAT_CORO_H
#define CHAT_CORO_H

#include <stdbool.h>
#include <stddef.h>

struct coro;
typedef void coro_function(void *arg);

/* A suspended coroutine that will run function(arg) when first resumed, on
 * a stack of stack_size bytes (rounded up to whole pages) with a guard page
 * below it. NULL when out of memory (errno says why). */
struct coro *coro_create(coro_function *function, void *arg, size_t stack_size);

/* Runs the coroutine until it yields or its function returns. Not from
 * inside the same coroutine; from another coroutine it nests (the callee
 * yields back to it). */
void coro_resume(struct coro *coro);

/* From inside a coroutine: back to whoever resumed it. */
void coro_yield(void);

/* The coroutine running now, or NULL on the thread's own stack. */
struct coro *coro_current(void);

/* True once its function has returned. */
bool coro_finished(const struct coro *coro);

/* Frees a coroutine that is finished, or never ran, or is suspended (its
 * stack is discarded as it is: whatever its frames pointed to is not
 * freed). Not the one running. */
void coro_destroy(struct coro *coro);

/* Gives back to the kernel the pages of a suspended coroutine's stack below
 * its live frames: a coroutine that once went deep keeps those pages
 * otherwise. It costs one madvise and, when it goes deep again, a page
 * fault per page. */
void coro_release_unused_stack(struct coro *coro);

/* The deepest any coroutine's stack went, in bytes, as measured by a build
 * with -DCORO_MEASURE_STACK (each stack painted when created and read when
 * destroyed or on call); 0 in other builds. */
size_t coro_deepest_stack_use(void);

#endif
