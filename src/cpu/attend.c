/* The CPU fast path: blocked online-softmax attention (FlashAttention's
 * recurrence) over strided row progressions. Dilated rows are read in place
 * through their stride; a query tile and one key/value tile at a time are
 * converted to fp32 into per-thread scratch, never a whole tensor, and no
 * score matrix larger than one tile ever exists. Work items are (batch,
 * head, query tile) of one pattern and offset, so no two threads touch the
 * same output row at once.
 *
 * This file is the driver, the same on every CPU: scratch, phases, the
 * finishing pass. The per-tile kernels are compiled once per instruction
 * set (kernels.h, kern_*.c) and chosen at run time (isa.c). */
#include <math.h>
#include <string.h>

#include "../internal.h"
#include "tile.h"

/* Floats of per-thread scratch: the layout attend_tile (kernels.h) carves,
 * sized for the widest level so that it does not depend on the choice. */
static int64_t per_thread_floats(const rda_problem *p) {
    int64_t Dp = rda_round_up(p->D, RDA_CPU_VL_MAX), BKP = BK + RDA_CPU_RK_MAX;
    /* Qt, K, V, the score buffer (which also holds the untransposed Q tile),
     * the accumulator, M, L, alpha, mx, then the spread operands */
    return BQ * Dp + BKP * Dp + BK * Dp + BQ * (BKP > Dp ? BKP : Dp) + BQ * Dp + 4 * BQ +
           RDA_CPU_SPREAD_FLOATS(Dp) + 64;
}

int64_t rda_cpu_bwd_scratch_floats(int64_t D) {
    const int64_t Dp = rda_round_up(D, RDA_CPU_VL_MAX);
    /* K, V, dK, dV; Q, dout, dQ rows; Q^T, dout^T; S^T, dP^T; L, Delta; spread operands */
    return 4 * BKBP * Dp + 3 * BQB * Dp + 2 * Dp * BQB + 2 * BKBP * BQB + 2 * BQB +
           RDA_CPU_SPREAD_FLOATS(Dp) + 64;
}

size_t rda_cpu_workspace_size(const rda_problem *p, const rda_rows *qr, int32_t threads) {
    return RDA_ALIGN(sizeof(rda_cpu_ws)) +
           RDA_ALIGN(sizeof(float) * (size_t)(per_thread_floats(p) * threads)) +
           rda_plan_phase_bytes(p, qr, BQ);
}

rda_cpu_ws *rda_cpu_workspace_init(rda_carver *c, const rda_problem *p, const rda_rows *qr,
                                   int32_t threads) {
    rda_cpu_ws *ws = rda_carve(c, sizeof(*ws));
    if (!ws) return NULL;
    ws->per_thread = per_thread_floats(p);
    ws->scratch = rda_carve(c, sizeof(float) * (size_t)(ws->per_thread * threads));
    if (!ws->scratch || rda_plan_phase_init(&ws->phase, c, p, qr, BQ)) return NULL;
    return ws;
}

void rda_cpu_write_row(rda_tensor *o, rda_tensor *lse, int64_t b, int64_t row, int64_t h,
                       int64_t D, const float *a, float m, float l, float factor) {
    /* l == 0: a row that attended to nothing (its accumulator was never
     * written); a NaN l (non-finite inputs or scores) makes the row NaN */
    const bool empty = l == 0.0f;
    float inv = empty ? 0.0f : factor / l;
    int64_t base = b * o->strides[0] + row * o->strides[1] + h * o->strides[2], s3 = o->strides[3];
    if (o->dtype == RDA_DTYPE_F32 && s3 == 1) {
        float *dst = (float *)o->data + base;
        if (!empty)
            for (int64_t d = 0; d < D; d++) dst[d] = a[d] * inv;
        else
            for (int64_t d = 0; d < D; d++) dst[d] = 0.0f;
    } else {
        for (int64_t d = 0; d < D; d++)
            rda_store_f32(o->data, o->dtype, base + d * s3, empty ? 0.0f : a[d] * inv);
    }
    if (lse)
        ((float *)lse->data)[b * lse->strides[0] + h * lse->strides[1] + row * lse->strides[2]] =
            empty ? -INFINITY : (m + log2f(l)) * 0.6931471805599453f;
}

typedef struct {
    rda_context *ctx;
    const rda_cpu_kernels *kern;
    rda_cpu_phase_args *c;
} phase_arg;

static rda_status run_phase(void *arg, const rda_phase *ph) {
    phase_arg *pa = arg;
    pa->c->ph = ph;
    rda_pool_run(pa->ctx->pool, ph->items, pa->kern->attend_tile, pa->c);
    return RDA_STATUS_SUCCESS;
}

rda_status rda_cpu_attend_step(rda_context *ctx, rda_cpu_ws *ws, const rda_problem *p,
                               const rda_rows *qr, const rda_rows *kr, const rda_tensor *q,
                               const rda_tensor *k, const rda_tensor *v, rda_acc *acc,
                               rda_tensor *out, rda_tensor *lse, int64_t *pairs) {
    double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    rda_cpu_phase_args c = {ws,  p,   q,   k, v, acc, NULL, (float)(scale * 1.4426950408889634),
                            out, lse, (float)rda_plan_output_factor(p)};
    const rda_cpu_kernels *kern = rda_cpu_select(ctx->msg);
    if (!kern) return RDA_STATUS_INVALID_ARGUMENT;
    phase_arg pa = {ctx, kern, &c};
    return rda_plan_step(&ws->phase, p, qr, kr, out != NULL, run_phase, &pa, pairs, ctx->msg);
}

typedef struct {
    const rda_problem *p;
    const rda_acc *acc;
    rda_tensor *o, *lse;
    float factor;
} fin_args;

static void finalize_rows(void *arg, int64_t idx, int32_t thread) {
    (void)thread;
    fin_args *f = arg;
    const rda_acc *acc = f->acc;
    int64_t H = acc->H, n = acc->n;
    float l = acc->l[idx];
    if (l < 0.0f) return; /* already written by its last tile */
    rda_cpu_write_row(f->o, f->lse, idx / (n * H), (idx / H) % n, idx % H, acc->D,
                      acc->acc + idx * acc->D, acc->m[idx], l, f->factor);
}

void rda_cpu_finalize(rda_context *ctx, const rda_problem *p, const rda_acc *acc, rda_tensor *o,
                      rda_tensor *lse) {
    fin_args f = {p, acc, o, lse, (float)rda_plan_output_factor(p)};
    rda_pool_run(ctx->pool, acc->B * acc->n * acc->H, finalize_rows, &f);
}
