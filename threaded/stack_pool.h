/* The stacks of chat-threaded's client threads: mapped by the server, each
 * with a guard page below it, and kept for the next thread when one is
 * joined.
 *
 * Stacks are never unmapped: with stacks of its own, glibc would give their
 * unused pages back (madvise) as each thread ends and unmap those beyond a
 * 40 MiB cache as each is joined, each time a TLB shootdown across the
 * cores (README.md measures what that costs). Only the main thread takes
 * and gives back stacks: the pool has no lock. */
#ifndef CHAT_STACK_POOL_H
#define CHAT_STACK_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct stack_pool {
  size_t stack_size; /* bytes of each stack, its guard page not counted */
  void **free;       /* the stacks of joined threads, to reuse */
  size_t free_count;
};

/* Room for `capacity` stacks given back: at most that many threads ever
 * run at once, so giving back never fails. Returns false when out of
 * memory. */
bool stack_pool_init(struct stack_pool *pool, size_t stack_size,
                     size_t capacity);
/* A stack for a new thread: one a joined thread left, or a new mapping.
 * NULL when out of memory. */
void *stack_pool_take(struct stack_pool *pool);
/* The stack of a joined thread (or of one that never started). */
void stack_pool_give_back(struct stack_pool *pool, void *stack);
/* Frees the pool's list; the stacks themselves go with the process. */
void stack_pool_release(struct stack_pool *pool);

#endif
