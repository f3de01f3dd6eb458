/* Which backend runs a forward, and whether it can. */
#include "backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/backend.h"
#include "cpu/tile.h"

rda_status rda_backend_for(rda_context *ctx, const rda_problem *p, const rda_tensor *const t[5],
                           const rda_backend_ops **out) {
    (void)t;
    switch (ctx->backend) {
    case RDA_BACKEND_CPU:
        if (p->dtype == RDA_DTYPE_F64) {
            rda_set_msg(ctx->msg, "fp64 tensors are only accepted by the reference backend");
            return RDA_STATUS_UNSUPPORTED;
        }
        if (!rda_cpu_select(ctx->msg)) return RDA_STATUS_INVALID_ARGUMENT; /* RDA_CPU_ISA */
        *out = rda_backend_cpu();
        return RDA_STATUS_SUCCESS;
#ifdef RDA_HAVE_CUDA
    case RDA_BACKEND_CUDA:
        *out = rda_backend_cuda();
        return rda_cuda_supports(ctx, p, t);
#endif
    default:
        rda_set_msg(ctx->msg, "the %s backend does not run this entry point",
                    ctx->backend == RDA_BACKEND_REFERENCE ? "reference" : "selected");
        return RDA_STATUS_UNSUPPORTED;
    }
}

/* ------------------------------------------------------------------ CPU */

typedef struct {
    rda_cpu_ws *ws;
    rda_acc acc;
} cpu_call;

static rda_status cpu_begin(rda_context *ctx, const rda_problem *p, const rda_rows *qr,
                            size_t block, void *kv[2]) {
    int64_t rows_hd = p->B * qr->total * p->H;
    int32_t threads = rda_pool_threads(ctx->pool);
    size_t need = RDA_ALIGN(sizeof(cpu_call)) + RDA_ALIGN(sizeof(float) * (size_t)(rows_hd * p->D)) +
                  2 * RDA_ALIGN(sizeof(float) * (size_t)rows_hd) +
                  rda_cpu_workspace_size(p, qr, threads) + (block ? 2 * RDA_ALIGN(block) : 0);
    rda_carver c;
    rda_status st = rda_context_reserve(ctx, need, &c);
    if (st) return st;
    cpu_call *call = rda_carve(&c, sizeof(cpu_call));
    call->acc = (rda_acc){p->B, qr->total, p->H, p->D, NULL, NULL, NULL};
    call->acc.acc = rda_carve(&c, sizeof(float) * (size_t)(rows_hd * p->D));
    call->acc.m = rda_carve(&c, sizeof(float) * (size_t)rows_hd);
    call->acc.l = rda_carve(&c, sizeof(float) * (size_t)rows_hd);
    call->ws = rda_cpu_workspace_init(&c, p, qr, threads);
    if (block) {
        kv[0] = rda_carve(&c, block);
        kv[1] = rda_carve(&c, block);
    }
    if (!call->ws || (block && !kv[1])) {
        rda_set_msg(ctx->msg, "internal error: CPU workspace sizing (%s:%d)", __FILE__, __LINE__);
        return RDA_STATUS_INTERNAL;
    }
    /* the accumulator itself needs no clearing: it is read only where l > 0 */
    for (int64_t i = 0; i < rows_hd; i++) {
        call->acc.m[i] = -INFINITY;
        call->acc.l[i] = 0.0f;
    }
    ctx->call = call;
    return RDA_STATUS_SUCCESS;
}

static rda_status cpu_pack_kv(rda_context *ctx, const rda_tensor *k, const rda_tensor *v,
                              int64_t n, void *buf) {
    (void)ctx;
    size_t es = rda_dtype_size(k->dtype);
    int64_t B = k->shape[0], H = k->shape[2], D = k->shape[3];
    char *dst = buf;
    const rda_tensor *ts[2] = {k, v};
    for (int t = 0; t < 2; t++) {
        const rda_tensor *x = ts[t];
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < n; r++)
                for (int64_t h = 0; h < H; h++) {
                    const char *src = (const char *)x->data +
                                      es * (size_t)(b * x->strides[0] + r * x->strides[1] +
                                                    h * x->strides[2]);
                    if (x->strides[3] == 1) {
                        memcpy(dst, src, es * (size_t)D);
                    } else {
                        for (int64_t d = 0; d < D; d++)
                            memcpy(dst + es * (size_t)d, src + es * (size_t)(d * x->strides[3]), es);
                    }
                    dst += es * (size_t)D;
                }
    }
    return RDA_STATUS_SUCCESS;
}

static rda_status cpu_step(rda_context *ctx, const rda_problem *p, const rda_rows *qr,
                           const rda_rows *kr, const rda_tensor *q, const rda_tensor *k,
                           const rda_tensor *v, rda_tensor *o, rda_tensor *lse, int64_t *pairs) {
    cpu_call *call = ctx->call;
    return rda_cpu_attend_step(ctx, call->ws, p, qr, kr, q, k, v, &call->acc, o, lse, pairs);
}

static rda_status cpu_finish(rda_context *ctx, const rda_problem *p, rda_tensor *o,
                             rda_tensor *lse) {
    cpu_call *call = ctx->call;
    rda_cpu_finalize(ctx, p, &call->acc, o, lse);
    return RDA_STATUS_SUCCESS;
}

static rda_status cpu_sync(rda_context *ctx) {
    (void)ctx; /* CPU work is done when its call returns */
    return RDA_STATUS_SUCCESS;
}

static int cpu_copy(rda_context *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    memcpy(dst, src, bytes);
    return 0;
}

static void *cpu_alloc(rda_context *ctx, size_t bytes) {
    (void)ctx;
    return malloc(bytes ? bytes : 1);
}

static const rda_backend_ops cpu_ops = {"cpu",    cpu_begin, cpu_pack_kv, cpu_step, cpu_finish,
                                        cpu_sync, cpu_copy,  cpu_alloc,   free};

const rda_backend_ops *rda_backend_cpu(void) { return &cpu_ops; }
