/* The glue between the loop and the coroutines: the talk's Task and Future.
 *
 *   Task   = a coroutine that the loop resumes (struct task): it runs until
 *            it has to wait, yields, and the loop steps it again later.
 *   Future = what a task waits on: a descriptor's readiness, a deadline, or
 *            a wake-up from another task. co_read, co_write and co_sleep are
 *            `yield future` in one call each: they try the system call, and
 *            on EAGAIN register interest with the loop and yield; the loop's
 *            callback (the future's "done") resumes the task.
 *
 * So a task reads as blocking code, while one thread serves every task.
 * Only the loop resumes tasks (from its callbacks, on the thread's own
 * stack); a task never resumes another, it wakes it, and the loop resumes
 * it in its timer phase. */
#ifndef CHAT_TASK_H
#define CHAT_TASK_H

#include "loop.h"

#include <stddef.h>
#include <sys/types.h>

struct task;
typedef void task_function(void *arg);

/* How a wait ended. */
enum task_outcome {
  TASK_READY,   /* the descriptor is ready */
  TASK_TIMEOUT, /* the deadline passed */
  TASK_WOKEN,   /* task_wake() was called */
};

/* A task that will run function(arg) on a coroutine of its own, with a
 * stack of stack_size bytes, started by the loop in its timer phase. NULL
 * when out of memory or mappings. The task is freed when its function
 * returns; before that, it must close (co_close) the descriptors it
 * waited on. */
struct task *task_spawn(struct loop *loop, task_function *function, void *arg,
                        size_t stack_size);

/* The task running now, or NULL when the loop itself runs. */
struct task *task_current(void);

/* Ends the wait of a task (its co_* call returns TASK_WOKEN, or -1 with
 * errno ECANCELED), soon: the loop resumes it in its timer phase. A task
 * not waiting now finds its next wait ended at once. */
void task_wake(struct task *task);

/* Waits until fd is ready for `mask` (LOOP_READABLE or LOOP_WRITABLE), or
 * `deadline` passes (monotonic milliseconds; 0: none), or the task is
 * woken. Interest in fd stays registered after the wait (a descriptor
 * waited on again and again costs no epoll_ctl each time); the loop drops
 * it if fd fires while nobody waits. */
enum task_outcome co_wait(int fd, int mask, long long deadline);

/* recv() and send() that wait instead of failing with EAGAIN: -1 with
 * errno ETIMEDOUT once the deadline (0: none) passes, ECANCELED when woken,
 * and the call's own errors. */
ssize_t co_read(int fd, void *buffer, size_t length, long long deadline);
/* co_read() with MSG_PEEK: the bytes stay in the socket, to be read (or
 * dropped) later. A session that may have to wait in the middle of its
 * input (a name waiting for the room shared through Redis) leaves the rest
 * there instead of holding it. */
ssize_t co_peek(int fd, void *buffer, size_t length, long long deadline);
ssize_t co_write(int fd, const void *bytes, size_t length, long long deadline);

/* Sleeps until `deadline` (TASK_TIMEOUT) or a wake-up (TASK_WOKEN). */
enum task_outcome co_sleep(long long deadline);

/* Stops watching fd, and closes it. */
void co_close(int fd);

/* Gives back the stack pages a suspended task touched below its live
 * frames (coro_release_unused_stack). */
void task_release_unused_stack(struct task *task);

#endif
