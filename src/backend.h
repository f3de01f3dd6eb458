/* The backend interface the ring scheduler drives. A backend keeps one
 * rank's running state for the duration of a call (in its context), runs the
 * block jobs of each ring step, and writes the final rows. The CPU backend
 * works on host memory; the CUDA backend on device memory. */
#ifndef RDA_BACKEND_H
#define RDA_BACKEND_H

#include "plan.h"

typedef struct rda_backend_ops {
    const char *name;
    /* Prepares a forward of the rows qr: running state (m = -inf, l = 0) and,
     * when block > 0, two key/value buffers of block bytes (kv[0], kv[1]).
     * Records in ctx->ws_used what the call holds. */
    rda_status (*begin)(rda_context *ctx, const rda_problem *p, const rda_rows *qr, size_t block,
                        void *kv[2]);
    /* Copies the rank's n rows of k then v, contiguous, into buf. */
    rda_status (*pack_kv)(rda_context *ctx, const rda_tensor *k, const rda_tensor *v, int64_t n,
                          void *buf);
    /* Folds every job between qr and the key block kr into the state. On the
     * last step o (and lse) are given: rows then complete are written. */
    rda_status (*step)(rda_context *ctx, const rda_problem *p, const rda_rows *qr,
                       const rda_rows *kr, const rda_tensor *q, const rda_tensor *k,
                       const rda_tensor *v, rda_tensor *o, rda_tensor *lse, int64_t *pairs);
    /* Writes every row not yet written. */
    rda_status (*finish)(rda_context *ctx, const rda_problem *p, rda_tensor *o, rda_tensor *lse);
    /* Returns once the work issued so far is done (a buffer may then be sent). */
    rda_status (*sync)(rda_context *ctx);
    /* Copies bytes between buffers of this backend (the in-process engine's
     * receive, a rank's rows to and from its own buffers), ordered after the
     * work issued on ctx and complete when it returns; 0 on success. */
    int (*copy)(rda_context *ctx, void *dst, const void *src, size_t bytes);
    /* Memory for a rank's own copy of its rows (on ctx's device), and its release. */
    void *(*alloc)(rda_context *ctx, size_t bytes);
    void (*release)(void *p);
} rda_backend_ops;

/* The backend of ctx for problem p with the rank's tensors t = {q, k, v, o,
 * lse} (lse may be NULL), or RDA_STATUS_UNSUPPORTED / INVALID_ARGUMENT with
 * a message. */
rda_status rda_backend_for(rda_context *ctx, const rda_problem *p, const rda_tensor *const t[5],
                           const rda_backend_ops **out);

const rda_backend_ops *rda_backend_cpu(void);
#ifdef RDA_HAVE_CUDA
const rda_backend_ops *rda_backend_cuda(void);
/* Whether the CUDA backend can run p with these tensors (device memory...). */
rda_status rda_cuda_supports(rda_context *ctx, const rda_problem *p, const rda_tensor *const t[5]);
#endif

#endif
