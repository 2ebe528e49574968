#include "coro.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(CORO_UCONTEXT) && !defined(__x86_64__) && !defined(__aarch64__)
#define CORO_UCONTEXT 1
#endif
#ifdef CORO_UCONTEXT
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#endif
#ifdef CORO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* Below the live frames of a suspended coroutine, bytes that still count
 * as live when its stack is released: the switch's own saved registers
 * and return address, with room to spare. */
#define LIVE_MARGIN 256
/* The byte a measured stack is painted with. */
#define PAINT 0xA5

struct coro {
#ifdef CORO_UCONTEXT
  ucontext_t context, caller_context;
#else
  void *sp;        /* saved stack pointer, while suspended */
  void *caller_sp; /* the resumer's, while running */
#endif
  coro_function *function;
  void *arg;
  struct coro *caller; /* the coroutine that resumed it; NULL: the thread */
  char *mapping;       /* the guard page, then the stack */
  size_t mapped;
  char *stack; /* its lowest byte; it grows down from stack + size */
  size_t size;
  char *live; /* while suspended: no live frame lies below this */
  bool finished;
#ifdef CORO_ASAN
  const void *caller_bottom; /* the resumer's stack, for the way back */
  size_t caller_size;
#endif
};

static struct coro *current;
static size_t deepest;

#ifndef CORO_UCONTEXT
/* coro_switch_*.S */
void coro_switch(void **save_sp, void *load_sp);
void coro_trampoline(void);
#endif
void coro_entry(struct coro *coro);

/* ---- Telling AddressSanitizer ------------------------------------------ */

/* ASan keeps one stack per thread in mind. Before each switch it is told
 * which stack comes next (start); after, on the new stack, that the switch
 * is done (finish), and it says which stack we came from, which is where a
 * coroutine returns when it yields. `fake` keeps this side's fake stack
 * (for use-after-return checks) while the side is away: it lives in the
 * switching function's frame, which stays put meanwhile. */
static void switch_starts(void **fake, const void *bottom, size_t size) {
#ifdef CORO_ASAN
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake;
  (void)bottom;
  (void)size;
#endif
}

static void switch_finished(void *fake, struct coro *arrived_in) {
#ifdef CORO_ASAN
  const void *bottom = NULL;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(fake, &bottom, &size);
  if (arrived_in) {
    arrived_in->caller_bottom = bottom;
    arrived_in->caller_size = size;
  }
#else
  (void)fake;
  (void)arrived_in;
#endif
}

static const void *caller_bottom(const struct coro *coro) {
#ifdef CORO_ASAN
  return coro->caller_bottom;
#else
  (void)coro;
  return NULL;
#endif
}

static size_t caller_size(const struct coro *coro) {
#ifdef CORO_ASAN
  return coro->caller_size;
#else
  (void)coro;
  return 0;
#endif
}

/* ---- The switch ------------------------------------------------------- */

static void switch_in(struct coro *coro) {
#ifdef CORO_UCONTEXT
  swapcontext(&coro->caller_context, &coro->context);
#else
  coro_switch(&coro->caller_sp, coro->sp);
#endif
}

static void switch_out(struct coro *coro) {
#ifdef CORO_UCONTEXT
  swapcontext(&coro->context, &coro->caller_context);
#else
  coro_switch(&coro->sp, coro->caller_sp);
#endif
}

/* The first thing a coroutine runs, on its own stack; it never returns:
 * when the function does, it switches back for good. */
void coro_entry(struct coro *coro) {
  switch_finished(NULL, coro);
  coro->function(coro->arg);
  coro->finished = true;
  /* No fake stack to keep: this side ends here. */
  switch_starts(NULL, caller_bottom(coro), caller_size(coro));
  switch_out(coro);
  abort(); /* resumed after it finished: a bug */
}

#ifdef CORO_UCONTEXT
static void entry_from_ucontext(void) {
  coro_entry(current);
}
#endif

/* Lays out a new stack as if its coroutine had called the switch from the
 * trampoline: its first switch-in "returns" there. */
static bool prepare(struct coro *coro) {
#ifdef CORO_UCONTEXT
  if (getcontext(&coro->context) < 0)
    return false;
  coro->context.uc_stack.ss_sp = coro->stack;
  coro->context.uc_stack.ss_size = coro->size;
  coro->context.uc_link = NULL;
  makecontext(&coro->context, entry_from_ucontext, 0);
#else
  uintptr_t *top = (uintptr_t *)(coro->stack + coro->size);
#if defined(__x86_64__)
  /* Popped by coro_switch: r15, r14, r13, r12, rbx, rbp, then the return
   * address. After that `ret` the stack pointer is top - 16: 16-byte
   * aligned, as a call instruction wants it. */
  uintptr_t *frame = top - 9;
  memset(frame, 0, 9 * sizeof *frame);
  frame[3] = (uintptr_t)coro;            /* r12 */
  frame[6] = (uintptr_t)coro_trampoline; /* return address */
#else
  /* Loaded by coro_switch: x19-x28, x29, x30, d8-d15 (20 slots); `ret`
   * goes through x30, and the stack pointer ends at top. */
  uintptr_t *frame = top - 20;
  memset(frame, 0, 20 * sizeof *frame);
  frame[0] = (uintptr_t)coro;             /* x19 */
  frame[11] = (uintptr_t)coro_trampoline; /* x30 */
#endif
  coro->sp = frame;
#endif
  return true;
}

/* ---- Creating and ending ---------------------------------------------- */

struct coro *coro_create(coro_function *function, void *arg,
                         size_t stack_size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t size = (stack_size + page - 1) / page * page;
  struct coro *coro = calloc(1, sizeof *coro);
  if (!coro)
    return NULL;
  /* The guard page and the stack in one mapping; the guard page is made
   * inaccessible. Untouched pages cost nothing. */
  char *mapping =
      mmap(NULL, page + size, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mapping == MAP_FAILED) {
    free(coro);
    return NULL;
  }
  if (mprotect(mapping, page, PROT_NONE) < 0) { /* no stack without guard */
    int saved = errno;
    munmap(mapping, page + size);
    free(coro);
    errno = saved;
    return NULL;
  }
  coro->mapping = mapping;
  coro->mapped = page + size;
  coro->stack = mapping + page;
  coro->size = size;
  coro->function = function;
  coro->arg = arg;
#ifdef CORO_MEASURE_STACK
  memset(coro->stack, PAINT, size);
#endif
  if (!prepare(coro)) {
    coro_destroy(coro);
    return NULL;
  }
  return coro;
}

/* The bytes of the stack ever written, read from the paint. */
static size_t stack_used(const struct coro *coro) {
  size_t untouched = 0;
  while (untouched < coro->size &&
         (unsigned char)coro->stack[untouched] == PAINT)
    untouched++;
  return coro->size - untouched;
}

void coro_destroy(struct coro *coro) {
  if (!coro)
    return;
#ifdef CORO_MEASURE_STACK
  size_t used = stack_used(coro);
  if (used > deepest)
    deepest = used;
#else
  (void)stack_used;
#endif
#ifdef CORO_ASAN
  /* Frames discarded without returning leave their red zones poisoned in
   * the shadow; the next mapping at this address must not inherit them. */
  __asan_unpoison_memory_region(coro->stack, coro->size);
#endif
  munmap(coro->mapping, coro->mapped);
  free(coro);
}

size_t coro_deepest_stack_use(void) {
  return deepest;
}

/* ---- Resume and yield ------------------------------------------------- */

void coro_resume(struct coro *coro) {
  if (coro->finished || coro == current)
    abort();
  coro->caller = current;
  current = coro;
  void *fake = NULL;
  switch_starts(&fake, coro->stack, coro->size);
  switch_in(coro);
  switch_finished(fake, NULL);
  current = coro->caller;
}

void coro_yield(void) {
  struct coro *coro = current;
  coro->live = (char *)__builtin_frame_address(0) - LIVE_MARGIN;
  void *fake = NULL;
  switch_starts(&fake, caller_bottom(coro), caller_size(coro));
  switch_out(coro);
  switch_finished(fake, coro);
}

struct coro *coro_current(void) {
  return current;
}

bool coro_finished(const struct coro *coro) {
  return coro->finished;
}

void coro_release_unused_stack(struct coro *coro) {
#ifdef CORO_MEASURE_STACK
  (void)coro; /* the paint must stay for the measurement */
  return;
#endif
  if (coro == current || coro->finished || !coro->live)
    return;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t below = (uintptr_t)coro->live / page * page;
  if (below <= (uintptr_t)coro->stack)
    return;
  madvise(coro->stack, below - (uintptr_t)coro->stack, MADV_DONTNEED);
}
