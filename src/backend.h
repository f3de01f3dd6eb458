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
    /* Folds every job between qr and the key block kr into the state. o is
     * the output on every step (a backend may keep the rows' running state
     * in it); on the last step (last) rows then complete are written, with
     * lse. */
    rda_status (*step)(rda_context *ctx, const rda_problem *p, const rda_rows *qr,
                       const rda_rows *kr, const rda_tensor *q, const rda_tensor *k,
                       const rda_tensor *v, rda_tensor *o, rda_tensor *lse, bool last,
                       int64_t *pairs);
    /* Writes every row not yet written. */
    rda_status (*finish)(rda_context *ctx, const rda_problem *p, rda_tensor *o, rda_tensor *lse);
    /* Returns once the work issued so far is done (a rank's time, engines
     * that read device buffers from the host). */
    rda_status (*sync)(rda_context *ctx);
    /* A marker of the work issued on ctx so far, for a transfer to be
     * ordered after without a host wait. CUDA: an event recorded on the
     * context's stream (*ready is its cudaEvent_t, valid until the next mark
     * on ctx). CPU: NULL, as its work is done when its calls return. */
    rda_status (*mark)(rda_context *ctx, const void **ready);
    /* Copies bytes between buffers of this backend (the in-process engine's
     * receive, a rank's rows to and from its own buffers), ordered after the
     * work issued on ctx and after ready (a mark of any context of this
     * backend, or NULL), and complete when it returns; 0 on success. */
    int (*copy)(rda_context *ctx, void *dst, const void *src, size_t bytes, const void *ready);
    /* Memory for a rank's own copy of its rows (on ctx's device), and its release. */
    void *(*alloc)(rda_context *ctx, size_t bytes);
    void (*release)(void *p);
    /* Sets bytes at dst to zero, ordered after the work issued on ctx. */
    rda_status (*clear)(rda_context *ctx, void *dst, size_t bytes);

    /* ---- backward (NULL: this backend has none; the call is refused) ----
     * A travelling block of the backward holds K and V (the tensors' type)
     * and then their gradient accumulators dK and dV (fp32, [B, n, Hkv, D]
     * each); see rda_ring_block_layout. */
    /* Prepares a backward of the rows qr of t: dQ state cleared, Delta =
     * sum(dout * o) of the rows. block > 0: two travelling blocks of block
     * bytes (kv[0], kv[1]); block == 0 (nothing travels): kv[0] gets dK, dV
     * accumulators of the rank's own keys. nk_max: the most rows of any key
     * block. Records in ctx->ws_used what the call holds. */
    rda_status (*bwd_begin)(rda_context *ctx, const rda_problem *p, const rda_rows *qr, int64_t nk_max,
                            size_t block, void *kv[2], const rda_bwd_tensors *t);
    /* Adds every job between qr and the key block kr (tensors k, v) to the
     * rank's dQ and to the block's accumulators dk, dv ([B, kr->total, Hkv, D]). */
    rda_status (*bwd_step)(rda_context *ctx, const rda_problem *p, const rda_rows *qr, const rda_rows *kr,
                           const rda_bwd_tensors *t, const rda_tensor *k, const rda_tensor *v, float *dk,
                           float *dv, int64_t *pairs);
    /* Writes dq of the rank's rows, and dk, dv from the rank's own
     * accumulators (home again). */
    rda_status (*bwd_finish)(rda_context *ctx, const rda_problem *p, const rda_bwd_tensors *t, const float *dk,
                             const float *dv);
} rda_backend_ops;

/* Where the parts of a travelling block of n key rows lie: K at 0, V at
 * *v_off, then (backward) dK at *dk_off and dV at *dv_off; *bytes in all
 * (forward: K and V only). */
static inline void rda_ring_block_layout(const rda_problem *p, int64_t n, bool backward, size_t *v_off,
                                         size_t *dk_off, size_t *dv_off, size_t *bytes) {
    const size_t e = (size_t)(p->B * n * p->Hkv * p->D), es = rda_dtype_size(p->dtype);
    *v_off = es * e;
    *dk_off = (2 * es * e + 15) & ~(size_t)15;
    *dv_off = *dk_off + sizeof(float) * e;
    *bytes = backward ? *dv_off + sizeof(float) * e : 2 * es * e;
}

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
