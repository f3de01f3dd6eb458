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
                           const rda_tensor *v, rda_tensor *o, rda_tensor *lse, bool last,
                           int64_t *pairs) {
    cpu_call *call = ctx->call;
    return rda_cpu_attend_step(ctx, call->ws, p, qr, kr, q, k, v, &call->acc, last ? o : NULL,
                               last ? lse : NULL, pairs);
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

static rda_status cpu_mark(rda_context *ctx, const void **ready) {
    (void)ctx;
    *ready = NULL;
    return RDA_STATUS_SUCCESS;
}

static int cpu_copy(rda_context *ctx, void *dst, const void *src, size_t bytes, const void *ready) {
    (void)ctx, (void)ready;
    memcpy(dst, src, bytes);
    return 0;
}

static void *cpu_alloc(rda_context *ctx, size_t bytes) {
    (void)ctx;
    return malloc(bytes ? bytes : 1);
}

static rda_status cpu_clear(rda_context *ctx, void *dst, size_t bytes) {
    (void)ctx;
    memset(dst, 0, bytes);
    return RDA_STATUS_SUCCESS;
}

/* ---- backward ---- */

typedef struct {
    rda_phase phase;   /* planned with whole jobs as tiles */
    float *dq, *delta; /* [B, n, H, D] and [B, n, H] */
    float *dkh;        /* per query head dK then dV of a key block (H != Hkv) */
    float *scratch;
    int64_t per_thread, n;
} cpu_bwd_call;

typedef struct {
    const rda_bwd_tensors *t;
    float *delta;
    int64_t n, H, D;
} delta_args;

static void delta_row(void *arg, int64_t idx, int32_t thread) {
    (void)thread;
    delta_args *a = arg;
    const int64_t b = idx / (a->n * a->H), row = (idx / a->H) % a->n, h = idx % a->H;
    const rda_tensor *o = a->t->o, *g = a->t->dout;
    const int64_t bo = b * o->strides[0] + row * o->strides[1] + h * o->strides[2];
    const int64_t bg = b * g->strides[0] + row * g->strides[1] + h * g->strides[2];
    float s = 0.0f;
    for (int64_t d = 0; d < a->D; d++)
        s += rda_load_f32(g->data, g->dtype, bg + d * g->strides[3]) * rda_load_f32(o->data, o->dtype, bo + d * o->strides[3]);
    a->delta[idx] = s;
}

static rda_status cpu_bwd_begin(rda_context *ctx, const rda_problem *p, const rda_rows *qr, int64_t nk_max,
                                size_t block, void *kv[2], const rda_bwd_tensors *t) {
    const int64_t n = qr->total, rows_hd = p->B * n * p->H, bq = n > 0 ? n : 1;
    const int32_t threads = rda_pool_threads(ctx->pool);
    const int64_t per_thread = rda_cpu_bwd_scratch_floats(p->D);
    const size_t home = block ? 0 : 2 * sizeof(float) * (size_t)(p->B * n * p->Hkv * p->D);
    const size_t dkh = p->H != p->Hkv ? 2 * sizeof(float) * (size_t)(p->B * nk_max * p->H * p->D) : 0;
    size_t need = RDA_ALIGN(sizeof(cpu_bwd_call)) + RDA_ALIGN(sizeof(float) * (size_t)(rows_hd * p->D)) +
                  RDA_ALIGN(sizeof(float) * (size_t)rows_hd) + RDA_ALIGN(dkh) +
                  RDA_ALIGN(sizeof(float) * (size_t)(per_thread * threads)) + rda_plan_phase_bytes(p, qr, bq) +
                  (block ? 2 * RDA_ALIGN(block) : RDA_ALIGN(home));
    rda_carver c;
    rda_status st = rda_context_reserve(ctx, need, &c);
    if (st) return st;
    cpu_bwd_call *call = rda_carve(&c, sizeof(cpu_bwd_call));
    call->dq = rda_carve(&c, sizeof(float) * (size_t)(rows_hd * p->D));
    call->delta = rda_carve(&c, sizeof(float) * (size_t)rows_hd);
    call->dkh = dkh ? rda_carve(&c, dkh) : NULL;
    call->per_thread = per_thread;
    call->scratch = rda_carve(&c, sizeof(float) * (size_t)(per_thread * threads));
    call->n = n;
    st = rda_plan_phase_init(&call->phase, &c, p, qr, bq);
    if (block) {
        kv[0] = rda_carve(&c, block);
        kv[1] = rda_carve(&c, block);
    } else {
        kv[0] = rda_carve(&c, home);
        kv[1] = NULL;
        if (kv[0]) memset(kv[0], 0, home);
    }
    if (st || !call->scratch || !kv[0] || (block && !kv[1]) || (dkh && !call->dkh)) {
        rda_set_msg(ctx->msg, "internal error: CPU backward workspace sizing (%s:%d)", __FILE__, __LINE__);
        return RDA_STATUS_INTERNAL;
    }
    memset(call->dq, 0, sizeof(float) * (size_t)(rows_hd * p->D));
    delta_args da = {t, call->delta, n, p->H, p->D};
    rda_pool_run(ctx->pool, rows_hd, delta_row, &da);
    ctx->call = call;
    return RDA_STATUS_SUCCESS;
}

typedef struct {
    rda_context *ctx;
    const rda_cpu_kernels *kern;
    rda_cpu_bwd_args *a;
} bwd_phase_arg;

static rda_status run_bwd_phase(void *arg, const rda_phase *ph) {
    bwd_phase_arg *pa = arg;
    pa->a->ph = ph;
    rda_pool_run(pa->ctx->pool, ph->items, pa->kern->backward_item, pa->a);
    return RDA_STATUS_SUCCESS;
}

static rda_status cpu_bwd_step(rda_context *ctx, const rda_problem *p, const rda_rows *qr, const rda_rows *kr,
                               const rda_bwd_tensors *t, const rda_tensor *k, const rda_tensor *v, float *dk,
                               float *dv, int64_t *pairs) {
    cpu_bwd_call *call = ctx->call;
    const rda_cpu_kernels *kern = rda_cpu_select(ctx->msg);
    if (!kern) return RDA_STATUS_INVALID_ARGUMENT;
    const double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    const int64_t nk = kr->total, e = p->B * nk * p->H * p->D;
    const bool per_head = p->H != p->Hkv; /* dK, dV of a K/V head sum over its query heads: per head first */
    rda_cpu_bwd_args a = {p, NULL, t->q, t->dout, t->lse, k, v, call->delta, call->dq,
                          per_head ? call->dkh : dk, per_head ? call->dkh + e : dv,
                          call->n, nk, per_head ? p->H : p->Hkv, (float)(scale * 1.4426950408889634),
                          (float)scale, (float)rda_plan_output_factor(p), call->scratch, call->per_thread};
    if (per_head) memset(call->dkh, 0, 2 * sizeof(float) * (size_t)e);
    bwd_phase_arg pa = {ctx, kern, &a};
    /* one query range at a time: no two items of a phase touch the same key rows */
    rda_status st = rda_plan_step_per_range(&call->phase, p, qr, kr, false, run_bwd_phase, &pa, pairs, ctx->msg);
    if (st || !per_head) return st;
    const int64_t g = p->H / p->Hkv, D = p->D;
    for (int64_t i = 0; i < p->B * nk; i++)
        for (int64_t h = 0; h < p->H; h++) {
            const float *sk = call->dkh + (i * p->H + h) * D, *sv = sk + e;
            float *gk = dk + (i * p->Hkv + h / g) * D, *gv = dv + (i * p->Hkv + h / g) * D;
            for (int64_t d = 0; d < D; d++) {
                gk[d] += sk[d];
                gv[d] += sv[d];
            }
        }
    return RDA_STATUS_SUCCESS;
}

/* Rows of an fp32 [B, n, H, D] buffer into a tensor of any type and strides. */
static void store_rows(rda_tensor *t, const float *x, int64_t B, int64_t n, int64_t H, int64_t D) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < n; r++)
            for (int64_t h = 0; h < H; h++) {
                const float *src = x + ((b * n + r) * H + h) * D;
                int64_t base = b * t->strides[0] + r * t->strides[1] + h * t->strides[2];
                for (int64_t d = 0; d < D; d++) rda_store_f32(t->data, t->dtype, base + d * t->strides[3], src[d]);
            }
}

static rda_status cpu_bwd_finish(rda_context *ctx, const rda_problem *p, const rda_bwd_tensors *t, const float *dk,
                                 const float *dv) {
    cpu_bwd_call *call = ctx->call;
    store_rows(t->dq, call->dq, p->B, call->n, p->H, p->D);
    store_rows(t->dk, dk, p->B, call->n, p->Hkv, p->D);
    store_rows(t->dv, dv, p->B, call->n, p->Hkv, p->D);
    return RDA_STATUS_SUCCESS;
}

static const rda_backend_ops cpu_ops = {"cpu",         cpu_begin,      cpu_pack_kv,  cpu_step,
                                        cpu_finish,    cpu_sync,       cpu_mark,     cpu_copy,
                                        cpu_alloc,     free,           cpu_clear,    cpu_bwd_begin,
                                        cpu_bwd_step,  cpu_bwd_finish};

const rda_backend_ops *rda_backend_cpu(void) { return &cpu_ops; }
