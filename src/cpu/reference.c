/* The oracle: SPEC.md's algorithm written as plainly as possible, one query
 * row at a time, with its own reading of the head groups (it shares no
 * planning code with the fast path on purpose). */
#include <math.h>
#include <string.h>

#include "../internal.h"
#include "backend.h"
#include "convert.h"

typedef struct {
    const rda_problem *p;
    bool same_type;
    const rda_tensor *q, *k, *v;
    rda_tensor *o, *lse;
    double *scratch; /* per thread: the scores of one pattern block + (G + 1) * D sums */
    int64_t per_thread;
    const int64_t *rows; /* query positions to compute (NULL: all N) */
    int64_t nrows;
} ref_args;

static int64_t off4(const rda_tensor *t, int64_t b, int64_t n, int64_t h, int64_t d) {
    return b * t->strides[0] + n * t->strides[1] + h * t->strides[2] + d * t->strides[3];
}

/* Rounds x to the tensors' own type (identity for fp32 sums of fp64 mode). */
static double round_to(rda_dtype dt, double x) {
    switch (dt) {
    case RDA_DTYPE_F16: return rda_f16_to_f32(rda_f32_to_f16((float)x));
    case RDA_DTYPE_BF16: return rda_bf16_to_f32(rda_f32_to_bf16((float)x));
    case RDA_DTYPE_F32: return (float)x;
    case RDA_DTYPE_F64: return x;
    }
    return x;
}

/* Group of head h and its pattern offset, per SPEC.md; -1 if none. */
static int64_t ref_offset(const rda_problem *p, int64_t h, int32_t i) {
    if (p->mode == RDA_MODE_LONGNET) return h % p->given[i].dilation;
    if (p->mode == RDA_MODE_DENSE) return 0;
    int64_t g = 0, first = 0;
    for (; g < p->G; g++) {
        int64_t size = p->H / p->G + (g < p->H % p->G ? 1 : 0);
        if (h < first + size) break;
        first += size;
    }
    return g == i ? i % p->given[i].dilation : -1;
}

static void ref_row(void *arg, int64_t idx, int32_t thread) {
    ref_args *a = arg;
    const rda_problem *p = a->p;
    int64_t N = p->N, D = p->D, H = p->H;
    int64_t nr = a->nrows, b = idx / (H * nr), h = (idx / nr) % H, orow = idx % nr;
    int64_t qpos = a->rows ? a->rows[orow] : orow;
    int64_t kh = h / (p->H / p->Hkv);
    double *s = a->scratch + thread * a->per_thread, *outs = s + (a->per_thread - (p->G + 1) * D),
           *fin = outs + p->G * D;
    double lses[RDA_MAX_PATTERNS];
    bool used[RDA_MAX_PATTERNS];
    double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)D);
    rda_dtype dt = p->dtype;
    for (int32_t i = 0; i < p->G; i++) {
        used[i] = false;
        int64_t o = ref_offset(p, h, i);
        if (o < 0) continue;
        /* the pattern as given (any value up to INT64_MAX): the segment
         * [a0, e) of qpos, its selected positions a0 + o + j*r */
        int64_t w = p->given[i].segment, r = p->given[i].dilation;
        int64_t a0 = (qpos / w) * w, e = w < N - a0 ? a0 + w : N;
        if (qpos - a0 < o || (qpos - a0 - o) % r != 0) continue; /* query not selected */
        int64_t nk = 0;
        double mx = -INFINITY;
        for (int64_t kp = a0 + o; kp < e; kp = r < e - kp ? kp + r : e) {
            if (p->causal && kp > qpos) break;
            double dot = 0.0;
            for (int64_t d = 0; d < D; d++)
                dot += rda_load_f64(a->q->data, dt, off4(a->q, b, qpos, h, d)) *
                       rda_load_f64(a->k->data, dt, off4(a->k, b, kp, kh, d));
            dot *= scale;
            if (a->same_type) dot = round_to(dt, (float)dot);
            s[nk++] = dot;
            if (dot > mx) mx = dot;
        }
        if (nk == 0) continue;
        double sum = 0.0;
        double *out = outs + i * D;
        memset(out, 0, sizeof(double) * (size_t)D);
        int64_t j = 0;
        for (int64_t kp = a0 + o; j < nk; kp = r < e - kp ? kp + r : e, j++) {
            double pr = exp(s[j] - mx);
            if (a->same_type) pr = (float)pr;
            sum += pr;
            if (a->same_type) pr = round_to(dt, pr);
            for (int64_t d = 0; d < D; d++) {
                double x = pr * rda_load_f64(a->v->data, dt, off4(a->v, b, kp, kh, d));
                out[d] = a->same_type ? (double)((float)out[d] + (float)x) : out[d] + x;
            }
        }
        for (int64_t d = 0; d < D; d++) out[d] /= sum;
        lses[i] = mx + log(sum);
        used[i] = true;
    }
    /* combine the patterns */
    double L = -INFINITY;
    memset(fin, 0, sizeof(double) * (size_t)D);
    if (p->mode == RDA_MODE_GROUPS) {
        for (int32_t i = 0; i < p->G; i++) {
            if (!used[i]) continue;
            L = lses[i];
            for (int64_t d = 0; d < D; d++) fin[d] = outs[i * D + d] / (double)p->G;
        }
    } else {
        double mx = -INFINITY, sum = 0.0;
        bool nan = false;
        for (int32_t i = 0; i < p->G; i++) {
            if (used[i] && lses[i] > mx) mx = lses[i];
            nan |= used[i] && isnan(lses[i]);
        }
        if (nan) { /* a non-finite input or score reached the row */
            L = NAN;
            for (int64_t d = 0; d < D; d++) fin[d] = NAN;
        } else if (mx > -INFINITY) {
            for (int32_t i = 0; i < p->G; i++)
                if (used[i]) sum += exp(lses[i] - mx);
            L = mx + log(sum);
            for (int32_t i = 0; i < p->G; i++) {
                if (!used[i]) continue;
                double wgt = exp(lses[i] - L);
                for (int64_t d = 0; d < D; d++) fin[d] += wgt * outs[i * D + d];
            }
        }
    }
    for (int64_t d = 0; d < D; d++)
        rda_store_f64(a->o->data, a->o->dtype, off4(a->o, b, orow, h, d), fin[d]);
    if (a->lse) {
        int64_t li = b * a->lse->strides[0] + h * a->lse->strides[1] + orow * a->lse->strides[2];
        ((float *)a->lse->data)[li] = (float)L;
    }
}

rda_status rda_cpu_reference(rda_context *ctx, const rda_problem *p, bool same_type,
                             const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                             const int64_t *rows, int64_t nrows, rda_tensor *o, rda_tensor *lse) {
    /* scores: the most keys of one pattern block (a segment's selected rows) */
    int64_t keys = p->N;
    if (p->mode != RDA_MODE_DENSE) {
        keys = 1;
        for (int32_t i = 0; i < p->G; i++) {
            int64_t w = p->patterns[i].segment, r = p->patterns[i].dilation; /* as planned: <= N */
            if ((w + r - 1) / r > keys) keys = (w + r - 1) / r;
        }
    }
    ref_args a = {p,    same_type, q, k, v, o, lse, NULL, keys + (p->G + 1) * p->D,
                  rows, rows ? nrows : p->N};
    int32_t threads = rda_pool_threads(ctx->pool);
    rda_carver c;
    rda_status st = rda_context_reserve(ctx, sizeof(double) * (size_t)(a.per_thread * threads), &c);
    if (st) return st;
    a.scratch = rda_carve(&c, sizeof(double) * (size_t)(a.per_thread * threads));
    rda_pool_run(ctx->pool, p->B * p->H * a.nrows, ref_row, &a);
    return RDA_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ backward */

/* SPEC.md's "Backward pass" as plainly as possible: one work item per
 * (batch, K/V head) walks, for each of its query heads and patterns, every
 * pattern block (a segment's selected rows), and in it every (query,
 * allowed key) pair, so that dK and dV of the head (summed over its query
 * heads) are one item's own. A block's rows are read once into fp64
 * buffers; the arithmetic per pair is the formula itself. */
typedef struct {
    const rda_problem *p;
    bool same_type;
    const rda_bwd_tensors *t;
    double *scratch; /* per thread: dQ of one head, dK, dV of one K/V head [N x D]; a block's rows */
    int64_t per_thread, keys;
} ref_bwd_args;

/* rows pos[0..n) of head h of x into dst[j * D + d], as fp64 */
static void ref_rows(const rda_tensor *x, rda_dtype dt, int64_t b, int64_t h, const int64_t *pos, int64_t n,
                     int64_t D, double *dst) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t d = 0; d < D; d++) dst[j * D + d] = rda_load_f64(x->data, dt, off4(x, b, pos[j], h, d));
}

static void ref_bwd_head(void *arg, int64_t idx, int32_t thread) {
    ref_bwd_args *a = arg;
    const rda_problem *p = a->p;
    const rda_bwd_tensors *t = a->t;
    const int64_t N = p->N, D = p->D, H = p->H, Hkv = p->Hkv, g = H / Hkv, W = a->keys;
    const int64_t b = idx / Hkv, kh = idx % Hkv;
    const rda_dtype dt = p->dtype;
    const bool st = a->same_type;
    double *dq = a->scratch + thread * a->per_thread, *dk = dq + N * D, *dv = dk + N * D;
    double *Qb = dv + N * D, *Kb = Qb + W * D, *Vb = Kb + W * D, *Gb = Vb + W * D, *Ob = Gb + W * D;
    double *Lb = Ob + W * D, *delta = Lb + W, *posd = delta + W;
    int64_t *pos = (int64_t *)posd; /* (as many int64 as doubles) */
    memset(dk, 0, sizeof(double) * (size_t)(2 * N * D));
    const double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)D);
    const double fac = p->mode == RDA_MODE_GROUPS ? 1.0 / (double)p->G : 1.0;
#define ACC(x, y) ((x) = st ? (double)((float)(x) + (float)(y)) : (x) + (y))
    for (int64_t h = kh * g; h < (kh + 1) * g; h++) {
        memset(dq, 0, sizeof(double) * (size_t)(N * D));
        for (int32_t i = 0; i < p->G; i++) {
            int64_t o = ref_offset(p, h, i);
            if (o < 0) continue;
            int64_t w = p->given[i].segment, r = p->given[i].dilation;
            for (int64_t a0 = 0; a0 < N; a0 = w < N - a0 ? a0 + w : N) {
                int64_t e = w < N - a0 ? a0 + w : N, n = 0;
                if (o >= e - a0) continue;
                for (int64_t x = a0 + o; x < e; x = r < e - x ? x + r : e) pos[n++] = x;
                ref_rows(t->q, dt, b, h, pos, n, D, Qb);
                ref_rows(t->k, dt, b, kh, pos, n, D, Kb);
                ref_rows(t->v, dt, b, kh, pos, n, D, Vb);
                ref_rows(t->dout, dt, b, h, pos, n, D, Gb);
                ref_rows(t->o, dt, b, h, pos, n, D, Ob);
                for (int64_t j = 0; j < n; j++) {
                    Lb[j] = ((const float *)t->lse->data)[b * t->lse->strides[0] + h * t->lse->strides[1] +
                                                         pos[j] * t->lse->strides[2]];
                    delta[j] = 0.0;
                    for (int64_t d = 0; d < D; d++) ACC(delta[j], Gb[j * D + d] * Ob[j * D + d]);
                }
                for (int64_t qi = 0; qi < n; qi++) {
                    const double *qv = Qb + qi * D, *gv = Gb + qi * D;
                    double *dqr = dq + pos[qi] * D;
                    for (int64_t j = 0; j < n && !(p->causal && pos[j] > pos[qi]); j++) {
                        double dot = 0.0;
                        for (int64_t d = 0; d < D; d++) dot += qv[d] * Kb[j * D + d];
                        dot *= scale;
                        if (st) dot = round_to(dt, (float)dot);
                        double pr = exp(dot - Lb[qi]);
                        if (st) pr = round_to(dt, pr);
                        double dp = 0.0;
                        for (int64_t d = 0; d < D; d++) ACC(dp, fac * gv[d] * Vb[j * D + d]);
                        double ds = pr * (dp - delta[qi]);
                        if (st) ds = round_to(dt, ds);
                        double *dvr = dv + pos[j] * D, *dkr = dk + pos[j] * D;
                        for (int64_t d = 0; d < D; d++) {
                            ACC(dvr[d], pr * fac * gv[d]);
                            ACC(dkr[d], scale * ds * qv[d]);
                            ACC(dqr[d], scale * ds * Kb[j * D + d]);
                        }
                    }
                }
            }
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t d = 0; d < D; d++) rda_store_f64(t->dq->data, dt, off4(t->dq, b, n, h, d), dq[n * D + d]);
    }
#undef ACC
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            rda_store_f64(t->dk->data, dt, off4(t->dk, b, n, kh, d), dk[n * D + d]);
            rda_store_f64(t->dv->data, dt, off4(t->dv, b, n, kh, d), dv[n * D + d]);
        }
}

rda_status rda_cpu_reference_backward(rda_context *ctx, const rda_problem *p, bool same_type,
                                      const rda_bwd_tensors *t) {
    /* rows of a block: the most keys of one pattern block (a segment's selected rows) */
    int64_t keys = p->N;
    if (p->mode != RDA_MODE_DENSE) {
        keys = 1;
        for (int32_t i = 0; i < p->G; i++) {
            int64_t w = p->patterns[i].segment, r = p->patterns[i].dilation;
            if ((w + r - 1) / r > keys) keys = (w + r - 1) / r;
        }
    }
    ref_bwd_args a = {p, same_type, t, NULL, 3 * p->N * p->D + 5 * keys * p->D + 3 * keys, keys};
    size_t bytes;
    if (__builtin_mul_overflow(sizeof(double) * (size_t)a.per_thread, (size_t)rda_pool_threads(ctx->pool), &bytes)) {
        rda_set_msg(ctx->msg, "reference backward scratch overflows");
        return RDA_STATUS_OVERFLOW;
    }
    rda_carver c;
    rda_status st = rda_context_reserve(ctx, bytes, &c);
    if (st) return st;
    a.scratch = rda_carve(&c, bytes);
    rda_pool_run(ctx->pool, p->B * p->Hkv, ref_bwd_head, &a);
    return RDA_STATUS_SUCCESS;
}

/* ---- the backward at sampled rows ---- */

typedef struct {
    const rda_problem *p;
    const rda_bwd_tensors *t;
    const int64_t *rows;
    int64_t nrows;
    double *dq, *dk, *dv; /* [B, nrows, H or Hkv, D] */
    double *scratch;      /* per thread: D doubles */
    int64_t D;
} ref_rows_args;

static double ref_delta(const ref_rows_args *a, int64_t b, int64_t pos, int64_t h) {
    const rda_bwd_tensors *t = a->t;
    double s = 0.0;
    for (int64_t d = 0; d < a->D; d++)
        s += rda_load_f64(t->dout->data, a->p->dtype, off4(t->dout, b, pos, h, d)) *
             rda_load_f64(t->o->data, a->p->dtype, off4(t->o, b, pos, h, d));
    return s;
}

static double ref_lse(const rda_bwd_tensors *t, int64_t b, int64_t h, int64_t pos) {
    return ((const float *)t->lse->data)[b * t->lse->strides[0] + h * t->lse->strides[1] + pos * t->lse->strides[2]];
}

static double ref_dot(const rda_problem *p, const rda_tensor *x, int64_t b, int64_t px, int64_t hx,
                      const rda_tensor *y, int64_t py, int64_t hy) {
    double s = 0.0;
    for (int64_t d = 0; d < p->D; d++)
        s += rda_load_f64(x->data, p->dtype, off4(x, b, px, hx, d)) * rda_load_f64(y->data, p->dtype, off4(y, b, py, hy, d));
    return s;
}

/* item: (b, j): dq of query rows[j] for every head, dk and dv of key rows[j]
 * for every K/V head, each walking the pattern blocks that hold the row */
static void ref_bwd_row(void *arg, int64_t idx, int32_t thread) {
    (void)thread;
    ref_rows_args *a = arg;
    const rda_problem *p = a->p;
    const rda_bwd_tensors *t = a->t;
    const int64_t N = p->N, D = p->D, H = p->H, Hkv = p->Hkv, g = H / Hkv;
    const int64_t b = idx / a->nrows, j = idx % a->nrows, pos = a->rows[j];
    const double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)D);
    const double fac = p->mode == RDA_MODE_GROUPS ? 1.0 / (double)p->G : 1.0;
    const rda_dtype dt = p->dtype;
    double *dq = a->dq + (b * a->nrows + j) * H * D, *dk = a->dk + (b * a->nrows + j) * Hkv * D,
           *dv = a->dv + (b * a->nrows + j) * Hkv * D;
    memset(dq, 0, sizeof(double) * (size_t)(H * D));
    memset(dk, 0, sizeof(double) * (size_t)(Hkv * D));
    memset(dv, 0, sizeof(double) * (size_t)(Hkv * D));
    for (int64_t h = 0; h < H; h++) {
        const int64_t kh = h / g;
        for (int32_t i = 0; i < p->G; i++) {
            int64_t o = ref_offset(p, h, i);
            if (o < 0) continue;
            int64_t w = p->given[i].segment, r = p->given[i].dilation;
            int64_t a0 = (pos / w) * w, e = w < N - a0 ? a0 + w : N;
            if (pos - a0 < o || (pos - a0 - o) % r != 0) continue; /* not selected: in no block of pattern i */
            /* as a query: its keys */
            const double L = ref_lse(t, b, h, pos), delta = ref_delta(a, b, pos, h);
            for (int64_t kp = a0 + o; kp < e; kp = r < e - kp ? kp + r : e) {
                if (p->causal && kp > pos) break;
                double pr = exp(scale * ref_dot(p, t->q, b, pos, h, t->k, kp, kh) - L);
                double dp = fac * ref_dot(p, t->dout, b, pos, h, t->v, kp, kh);
                double ds = pr * (dp - delta);
                for (int64_t d = 0; d < D; d++) dq[h * D + d] += scale * ds * rda_load_f64(t->k->data, dt, off4(t->k, b, kp, kh, d));
            }
            /* as a key: the queries of the block that reach it */
            for (int64_t qp = a0 + o; qp < e; qp = r < e - qp ? qp + r : e) {
                if (p->causal && qp < pos) continue;
                const double Lq = ref_lse(t, b, h, qp), dq_delta = ref_delta(a, b, qp, h);
                double pr = exp(scale * ref_dot(p, t->q, b, qp, h, t->k, pos, kh) - Lq);
                double dp = fac * ref_dot(p, t->dout, b, qp, h, t->v, pos, kh);
                double ds = pr * (dp - dq_delta);
                for (int64_t d = 0; d < D; d++) {
                    dv[kh * D + d] += pr * fac * rda_load_f64(t->dout->data, dt, off4(t->dout, b, qp, h, d));
                    dk[kh * D + d] += scale * ds * rda_load_f64(t->q->data, dt, off4(t->q, b, qp, h, d));
                }
            }
        }
    }
}

rda_status rda_cpu_reference_backward_rows(rda_context *ctx, const rda_problem *p, const rda_bwd_tensors *t,
                                           const int64_t *rows, int64_t nrows, double *dq, double *dk, double *dv) {
    ref_rows_args a = {p, t, rows, nrows, dq, dk, dv, NULL, p->D};
    rda_pool_run(ctx->pool, p->B * nrows, ref_bwd_row, &a);
    return RDA_STATUS_SUCCESS;
}
