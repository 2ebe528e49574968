#include "stack_pool.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

bool stack_pool_init(struct stack_pool *pool, size_t stack_size,
                     size_t capacity) {
  *pool = (struct stack_pool){.stack_size = stack_size};
  pool->free = calloc(capacity, sizeof(void *));
  return pool->free != NULL;
}

void *stack_pool_take(struct stack_pool *pool) {
  if (pool->free_count > 0)
    return pool->free[--pool->free_count];
  size_t guard = (size_t)sysconf(_SC_PAGESIZE);
  char *memory = mmap(NULL, guard + pool->stack_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (memory == MAP_FAILED)
    return NULL;
  if (mprotect(memory, guard, PROT_NONE) < 0) { /* no stack without guard */
    munmap(memory, guard + pool->stack_size);
    return NULL;
  }
  return memory + guard;
}

void stack_pool_give_back(struct stack_pool *pool, void *stack) {
  pool->free[pool->free_count++] = stack;
}

void stack_pool_release(struct stack_pool *pool) {
  free(pool->free);
  pool->free = NULL;
  pool->free_count = 0;
}
