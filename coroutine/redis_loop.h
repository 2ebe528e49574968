/* hiredis's asynchronous API on the hand-written loop (loop.h): the adapter
 * hiredis ships for ae, libevent and libev (in <hiredis/adapters/>),
 * written for this loop. Used as those are:
 *
 *   redisAsyncContext *redis = redisAsyncConnect("127.0.0.1", 6379);
 *   if (!redis || redis->err || redis_loop_attach(redis, loop) != 0)
 *     ... (free it with redisAsyncFree; redis->errstr says why)
 *   redisAsyncSetConnectCallback(redis, on_connect);
 *   redisAsyncCommand(redis, on_reply, data, "GET %s", key);
 *
 * and the loop's turns do the rest: the callbacks run from loop_turn().
 * redis_loop.c explains how a level-triggered loop drives hiredis. */
#ifndef CHAT_REDIS_LOOP_H
#define CHAT_REDIS_LOOP_H

#include "loop.h"

#include <hiredis/async.h>

/* Lets `loop` drive `context`: from now on the loop calls hiredis when the
 * context's socket is ready, and hiredis tells the loop what to watch.
 * Returns 0, or -1 when the context already has an adapter, memory fails,
 * or the loop cannot watch the socket (errno set: a descriptor beyond the
 * loop's size, or none because the connect failed at once, context->err).
 *
 * hiredis detaches the adapter itself when it frees the context (on an
 * error, after a disconnect, or on redisAsyncFree), from inside a callback
 * or not; free every context attached to a loop before destroying it. */
int redis_loop_attach(redisAsyncContext *context, struct loop *loop);

#endif
