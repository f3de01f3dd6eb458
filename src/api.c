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

/* The sampled positions of the reference entry points: nrows >= 1, each in [0, N). */
static rda_status check_rows(rda_context *ctx, const rda_problem *p, const int64_t *rows, int64_t nrows) {
    if (nrows < 1) {
        rda_set_msg(ctx->msg, "nrows must be >= 1");
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    for (int64_t i = 0; i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= p->N) {
            rda_set_msg(ctx->msg, "rows[%lld] = %lld is outside [0, N)", (long long)i, (long long)rows[i]);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
    return RDA_STATUS_SUCCESS;
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
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg)) || (st = check_rows(ctx, &p, rows, nrows)))
        return st;
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


rda_status rda_reference_backward_rows(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                                       const rda_tensor *k, const rda_tensor *v, const rda_tensor *o,
                                       const rda_tensor *lse, const rda_tensor *dout, const int64_t *rows,
                                       int64_t nrows, double *dq, double *dk, double *dv) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    rda_problem p;
    rda_status st;
    if (!q || !rows || !dq || !dk || !dv) {
        rda_set_msg(ctx->msg, "q, rows, dq, dk and dv must not be NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg)) || (st = check_rows(ctx, &p, rows, nrows)))
        return st;
    /* the inputs as for a backward (its outputs: views of the fp64 results) */
    int64_t sq[4] = {q->shape[0], nrows, q->shape[2], q->shape[3]}, sk[4] = {q->shape[0], nrows, k ? k->shape[2] : 1, q->shape[3]};
    rda_tensor tq = rda_tensor_contiguous(dq, RDA_DTYPE_F64, 4, sq), tk = rda_tensor_contiguous(dk, RDA_DTYPE_F64, 4, sk),
               tv = rda_tensor_contiguous(dv, RDA_DTYPE_F64, 4, sk);
    rda_bwd_tensors t = {q, k, v, o, lse, dout, &tq, &tk, &tv};
    if (!o || !lse || !dout) {
        rda_set_msg(ctx->msg, "o, lse and dout must not be NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    if ((st = rda_validate_inputs(q, k, v, &p, ctx->msg))) return st;
    if (o->ndim != 4 || dout->ndim != 4 || lse->ndim != 3 || lse->dtype != RDA_DTYPE_F32 || o->dtype != q->dtype ||
        dout->dtype != q->dtype) {
        rda_set_msg(ctx->msg, "o and dout must be [B, N, H, D] of q's dtype and lse [B, H, N] fp32");
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    for (int i = 0; i < 4; i++)
        if (o->shape[i] != q->shape[i] || dout->shape[i] != q->shape[i]) {
            rda_set_msg(ctx->msg, "o and dout must have q's shape");
            return RDA_STATUS_SHAPE_MISMATCH;
        }
    if (lse->shape[0] != q->shape[0] || lse->shape[1] != q->shape[2] || lse->shape[2] != q->shape[1]) {
        rda_set_msg(ctx->msg, "lse must have shape [B, H, N]");
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    const rda_tensor *ins[6] = {q, k, v, o, lse, dout}, *outs[3] = {&tq, &tk, &tv};
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 6; i++)
            if (rda_tensors_overlap(outs[j], ins[i])) {
                rda_set_msg(ctx->msg, "an output overlaps an input");
                return RDA_STATUS_ALIASING;
            }
    st = rda_cpu_reference_backward_rows(ctx, &p, &t, rows, nrows, dq, dk, dv);
    if (st == RDA_STATUS_SUCCESS) ctx->msg[0] = '\0';
    return st;
}
