/* Public entry points of one rank: dispatch to a reference backend, or to
 * the ring scheduler (P ranks in one process: ranks.c). */
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "backend.h"
#include "cpu/backend.h"
#include "plan.h"
#include "ring.h"

rda_status rda_attention_forward(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                                 const rda_tensor *k, const rda_tensor *v, rda_tensor *o,
                                 rda_tensor *lse) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    if (!q) {
        rda_set_msg(ctx->msg, "tensor q is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    /* fast backends: the ring loop with one rank */
    if (ctx->backend != RDA_BACKEND_REFERENCE && ctx->backend != RDA_BACKEND_REFERENCE_SAME_TYPE)
    {
        rda_ring_work w = {false, q, k, v, o, lse, {0}};
        return rda_ring_run(ctx, NULL, cfg, q->shape[1], &w, NULL);
    }
    rda_problem p;
    rda_status st;
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg))) return st;
    if ((st = rda_validate_tensors(q, k, v, o, lse, 0, false, &p, ctx->msg))) return st;
    st = rda_cpu_reference(ctx, &p, ctx->backend == RDA_BACKEND_REFERENCE_SAME_TYPE, q, k, v, NULL,
                           0, o, lse);
    if (st == RDA_STATUS_SUCCESS) ctx->msg[0] = '\0';
    return st;
}

rda_status rda_reference_rows(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                              const rda_tensor *k, const rda_tensor *v, const int64_t *rows,
                              int64_t nrows, double *out, float *lse) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    rda_problem p;
    rda_status st;
    if (!q || !rows || !out) {
        rda_set_msg(ctx->msg, "q, rows and out must not be NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg))) return st;
    if (nrows < 1) {
        rda_set_msg(ctx->msg, "nrows must be >= 1");
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    for (int64_t i = 0; i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= p.N) {
            rda_set_msg(ctx->msg, "rows[%lld] = %lld is outside [0, N)", (long long)i, (long long)rows[i]);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
    /* q/k/v are checked as for a forward, then the real outputs (nrows rows
     * each) against them */
    int64_t shape[4] = {q->shape[0], nrows, q->shape[2], q->shape[3]};
    rda_tensor o = rda_tensor_contiguous(out, RDA_DTYPE_F64, 4, shape);
    int64_t lshape[3] = {q->shape[0], q->shape[2], nrows};
    rda_tensor l = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, lshape);
    if ((st = rda_validate_inputs(q, k, v, &p, ctx->msg))) return st;
    const rda_tensor *ins[3] = {q, k, v}, *outs[2] = {&o, lse ? &l : NULL};
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            if (outs[j] && rda_tensors_overlap(outs[j], ins[i])) {
                rda_set_msg(ctx->msg, "%s overlaps %s", j ? "lse" : "out", names[i]);
                return RDA_STATUS_ALIASING;
            }
    if (lse && rda_tensors_overlap(&o, &l)) {
        rda_set_msg(ctx->msg, "lse overlaps out");
        return RDA_STATUS_ALIASING;
    }
    st = rda_cpu_reference(ctx, &p, false, q, k, v, rows, nrows, &o, lse ? &l : NULL);
    if (st == RDA_STATUS_SUCCESS) ctx->msg[0] = '\0';
    return st;
}

rda_status rda_ring_forward(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                            const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                            rda_tensor *o, rda_tensor *lse, rda_ring_stats *stats) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    if (!comm) {
        rda_set_msg(ctx->msg, "communicator is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    rda_ring_work w = {false, q, k, v, o, lse, {0}};
    return rda_ring_run(ctx, comm, cfg, N, &w, stats);
}

rda_status rda_attention_backward(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                                  const rda_tensor *k, const rda_tensor *v, const rda_tensor *o,
                                  const rda_tensor *lse, const rda_tensor *dout, rda_tensor *dq,
                                  rda_tensor *dk, rda_tensor *dv) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    if (!q) {
        rda_set_msg(ctx->msg, "tensor q is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    rda_ring_work w = {true, NULL, NULL, NULL, NULL, NULL, {q, k, v, o, lse, dout, dq, dk, dv}};
    if (ctx->backend != RDA_BACKEND_REFERENCE && ctx->backend != RDA_BACKEND_REFERENCE_SAME_TYPE)
        return rda_ring_run(ctx, NULL, cfg, q->shape[1], &w, NULL);
    rda_problem p;
    rda_status st;
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg))) return st;
    if ((st = rda_validate_backward(&w.bwd, 0, false, &p, ctx->msg))) return st;
    st = rda_cpu_reference_backward(ctx, &p, ctx->backend == RDA_BACKEND_REFERENCE_SAME_TYPE, &w.bwd);
    if (st == RDA_STATUS_SUCCESS) ctx->msg[0] = '\0';
    return st;
}

rda_status rda_ring_backward(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                             const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                             const rda_tensor *o, const rda_tensor *lse, const rda_tensor *dout,
                             rda_tensor *dq, rda_tensor *dk, rda_tensor *dv, rda_ring_stats *stats) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    if (!comm) {
        rda_set_msg(ctx->msg, "communicator is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    rda_ring_work w = {true, NULL, NULL, NULL, NULL, NULL, {q, k, v, o, lse, dout, dq, dk, dv}};
    return rda_ring_run(ctx, comm, cfg, N, &w, stats);
}

