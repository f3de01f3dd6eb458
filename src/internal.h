/* Internal declarations shared by the library's parts. Not installed. */
#ifndef RDA_INTERNAL_H
#define RDA_INTERNAL_H

#include "rda.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "threadpool.h"

#define RDA_MSG_LEN 512

/* Records the first failure into a message buffer and jumps to cleanup.
 * Used as: RDA_CHECK(msg, cond, STATUS, "fmt", ...). */
void rda_set_msg(char *msg, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* An invariant that only a bug can break: becomes RDA_STATUS_INTERNAL with
 * file and line, never an abort. Needs `st`, `msg` and a `done` label. */
#define RDA_ASSERT(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            rda_set_msg(msg, "internal error: %s (%s:%d)", #cond, __FILE__, __LINE__);   \
            st = RDA_STATUS_INTERNAL;                                                    \
            goto done;                                                                   \
        }                                                                                \
    } while (0)

/* Heap accounting shared by a context and everything it allocates. */
typedef struct rda_heap {
    _Atomic int64_t current;
    _Atomic int64_t peak;
} rda_heap;

void *rda_heap_alloc(rda_heap *heap, size_t bytes); /* 64-byte aligned, NULL on failure */
void *rda_heap_calloc(rda_heap *heap, size_t bytes);
void rda_heap_free(rda_heap *heap, void *ptr);

struct rda_context {
    rda_backend backend;
    int32_t num_threads;
    rda_pool *pool;
    rda_heap heap;
    char msg[RDA_MSG_LEN];
};

/* A validated problem: the config normalised and the tensor geometry. */
typedef struct rda_problem {
    rda_mode mode;
    bool causal;
    double scale;
    int32_t G;                          /* patterns in use (1 for dense) */
    rda_pattern patterns[RDA_MAX_PATTERNS];
    rda_layout layout;
    double timeout_seconds;
    int64_t B, N, H, Hkv, D;            /* N: full sequence length */
    rda_dtype dtype;
} rda_problem;

/* Validates the config (not the tensors) and fills the pattern fields of p. */
rda_status rda_problem_from_config(const rda_config *cfg, int64_t N, rda_problem *p, char *msg);

/* Validates q/k/v/o/lse for a problem with n_local rows on this rank and
 * fills B, H, Hkv, D, dtype of p. */
rda_status rda_validate_tensors(const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                                const rda_tensor *o, const rda_tensor *lse, int64_t n_local,
                                bool n_local_known, rda_problem *p, char *msg);

/* Element access helpers for the element types. */
float rda_load_f32(const void *base, rda_dtype dt, int64_t idx);
double rda_load_f64(const void *base, rda_dtype dt, int64_t idx);
void rda_store_f32(void *base, rda_dtype dt, int64_t idx, float x);
void rda_store_f64(void *base, rda_dtype dt, int64_t idx, double x);

#endif /* RDA_INTERNAL_H */
