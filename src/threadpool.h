/* A small persistent thread pool: parallel-for over [0, n) with dynamic
 * scheduling. Workers sleep between calls; no allocation per call. */
#ifndef RDA_THREADPOOL_H
#define RDA_THREADPOOL_H

#include <stdint.h>

typedef struct rda_pool rda_pool;

/* fn(arg, index, thread) for every index in [0, n); thread in [0, threads). */
typedef void (*rda_pool_fn)(void *arg, int64_t index, int32_t thread);

/* NULL when threads cannot be started. threads >= 1; 1 runs on the caller. */
rda_pool *rda_pool_create(int32_t threads);
void rda_pool_destroy(rda_pool *pool);
int32_t rda_pool_threads(const rda_pool *pool);
/* Runs fn over [0, n) and returns when every index is done. The caller's
 * thread takes part as thread 0. */
void rda_pool_run(rda_pool *pool, int64_t n, rda_pool_fn fn, void *arg);

#endif
