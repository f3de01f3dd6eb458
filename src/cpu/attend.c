/* The CPU fast path: blocked online-softmax attention (FlashAttention's
 * recurrence) over strided row progressions. Dilated rows are read in place
 * through their stride; a query tile and one key/value tile at a time are
 * converted to fp32 into per-thread scratch, never a whole tensor, and no
 * score matrix larger than one tile ever exists. Work items are (batch,
 * head, query tile) of one pattern and offset, so no two threads touch the
 * same output row at once. */
#include <math.h>
#include <string.h>

#include "../internal.h"
#include "backend.h"
#include "convert.h"

typedef float vf __attribute__((vector_size(64)));
#ifdef __FLT16_MAX__
__extension__ typedef _Float16 rda_half;
#endif
#define VL 16  /* floats per vector */
#ifndef BQ
#define BQ 256 /* query rows per tile (measured: docs/PERFORMANCE.md) */
#endif
#ifndef BK
#define BK 128 /* key rows per tile */
#endif

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct rda_cpu_ws {
    int64_t per_thread; /* floats of scratch per thread */
    float *scratch;
    rda_phase phase;    /* the step's tables (shared planning) */
};

/* Floats of per-thread scratch. */
static int64_t per_thread_floats(const rda_problem *p) {
    int64_t Dp = round_up(p->D, VL);
    /* the score buffer also holds the untransposed Q tile: BQ x max(BK, Dp) */
    return BQ * Dp + 2 * BK * Dp + BQ * (BK > Dp ? BK : Dp) + BQ * Dp + 4 * BQ + 64;
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

/* Rows row0 + j*stride (j < count) of head h, batch b, as fp32 times
 * scale, into dst[j*ld + d]; columns D..ld are zeroed. */
static void pack_rows(float *dst, int64_t ld, const rda_tensor *t, int64_t b, int64_t row0,
                      int64_t stride, int64_t count, int64_t h, int64_t D, float scale) {
    const int64_t s1 = t->strides[1] * stride, s3 = t->strides[3];
    int64_t base = b * t->strides[0] + row0 * t->strides[1] + h * t->strides[2];
    for (int64_t j = 0; j < count; j++, base += s1) {
        float *o = dst + j * ld;
        switch (t->dtype) {
        case RDA_DTYPE_F32: {
            const float *src = (const float *)t->data + base;
            if (s3 == 1)
                for (int64_t d = 0; d < D; d++) o[d] = scale * src[d];
            else
                for (int64_t d = 0; d < D; d++) o[d] = scale * src[d * s3];
            break;
        }
        case RDA_DTYPE_F16: {
#ifdef __FLT16_MAX__ /* hardware conversion where the compiler has _Float16 */
            const rda_half *src = (const rda_half *)t->data + base;
            for (int64_t d = 0; d < D; d++) o[d] = scale * (float)src[d * s3];
#else
            const uint16_t *src = (const uint16_t *)t->data + base;
            for (int64_t d = 0; d < D; d++) o[d] = scale * rda_f16_to_f32(src[d * s3]);
#endif
            break;
        }
        case RDA_DTYPE_BF16: {
            const uint16_t *src = (const uint16_t *)t->data + base;
            for (int64_t d = 0; d < D; d++) o[d] = scale * rda_bf16_to_f32(src[d * s3]);
            break;
        }
        case RDA_DTYPE_F64: {
            const double *src = (const double *)t->data + base;
            for (int64_t d = 0; d < D; d++) o[d] = scale * (float)src[d * s3];
            break;
        }
        }
        for (int64_t d = D; d < ld; d++) o[d] = 0.0f;
    }
}

/* Register-tiled block products on 16-float vectors (GCC/Clang vector
 * extensions: AVX-512 where the build targets it, narrower otherwise).
 * Scores are kept transposed (key rows x query columns) so that the
 * online softmax runs along vectors of queries, with no horizontal
 * reductions. Operands are packed and zero-padded by the caller. */
#define RK 8 /* key rows per register tile of S^T = K Q^T */
#define RP 4 /* query rows per register tile of O += P V */
#define KB 32 /* value rows per L1 block of O += P V */

static inline vf vload(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* x in every lane (x - 0 is exactly x, even for -0, so no add is emitted) */
static inline vf vbroadcast(float x) { return x - (vf){0}; }

typedef int32_t vi __attribute__((vector_size(64)));

/* mask ? a : b, mask lanes all ones or all zeros (a vector comparison) */
static inline vf vsel(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }

/* 2^x lane-wise for x <= 0 (-inf and x < -126 give 0), relative error ~2e-7:
 * round-to-nearest by the 1.5 * 2^23 trick, then a degree-6 polynomial on
 * [-0.5, 0.5] (Cephes' exp2f coefficients). */
static inline vf vexp2(vf x) {
    const vf lo = (vf){0} - 126.0f, magic = (vf){0} + 12582912.0f;
    vi under = x < lo;
    vf t = vsel(under, lo, x);
    vf rn = t + magic;
    vi n = (vi)rn - (vi)magic;
    vf f = t - (rn - magic);
    vf px = (vf){0} + 1.535336188319500e-4f;
    px = px * f + 1.339887440266574e-3f;
    px = px * f + 9.618437357674640e-3f;
    px = px * f + 5.550332471162809e-2f;
    px = px * f + 2.402264791363012e-1f;
    px = px * f + 6.931472028550421e-1f;
    px = px * f + 1.0f;
    vf scale = (vf)((n + 127) << 23);
    return vsel(under, (vf){0}, px * scale);
}

/* St[j, a] = sum_d K[j, d] * Qt[d, a]: K [m x D] (ld ldk), Qt [D x n] (ld ldq),
 * St ld lds; m % RK == 0, n % (2 VL) == 0. With mx != NULL also
 * mx[a] = max(mx[a], St[j, a]) over the first `valid` rows j, while the
 * scores are still in registers (saves a pass over St). */
static void gemm_kq(int64_t m, int64_t n, int64_t D, const float *K, int64_t ldk, const float *Qt,
                    int64_t ldq, float *St, int64_t lds, float *mx, int64_t valid) {
    for (int64_t i = 0; i < m; i += RK)
        for (int64_t j = 0; j < n; j += 2 * VL) {
            vf c0[RK], c1[RK];
            for (int r = 0; r < RK; r++) c0[r] = c1[r] = (vf){0};
            for (int64_t d = 0; d < D; d++) {
                vf q0 = vload(Qt + d * ldq + j), q1 = vload(Qt + d * ldq + j + VL);
                for (int r = 0; r < RK; r++) {
                    vf k = vbroadcast(K[(i + r) * ldk + d]);
                    c0[r] += k * q0;
                    c1[r] += k * q1;
                }
            }
            for (int r = 0; r < RK; r++) {
                vstore(St + (i + r) * lds + j, c0[r]);
                vstore(St + (i + r) * lds + j + VL, c1[r]);
            }
            if (mx) {
                vf m0 = vload(mx + j), m1 = vload(mx + j + VL);
                for (int r = 0; r < RK && i + r < valid; r++) {
                    m0 = vmax(m0, c0[r]);
                    m1 = vmax(m1, c1[r]);
                }
                vstore(mx + j, m0);
                vstore(mx + j + VL, m1);
            }
        }
}

/* One register tile of gemm_pv: RP rows x NV vectors of A (NV constant
 * after inlining, so the accumulators stay in registers). */
static inline __attribute__((always_inline)) void pv_tile(const int NV, int64_t k, int64_t Dp,
                                                          const float *Pt, int64_t ldp,
                                                          const float *V, int64_t ldv, float *A) {
    vf c[RP][4];
    for (int r = 0; r < RP; r++)
        for (int u = 0; u < NV; u++) c[r][u] = vload(A + r * Dp + u * VL);
    for (int64_t j = 0; j < k; j++) {
        vf v[4];
        for (int u = 0; u < NV; u++) v[u] = vload(V + j * ldv + u * VL);
        for (int r = 0; r < RP; r++) {
            vf p = vbroadcast(Pt[j * ldp + r]);
            for (int u = 0; u < NV; u++) c[r][u] += p * v[u];
        }
    }
    for (int r = 0; r < RP; r++)
        for (int u = 0; u < NV; u++) vstore(A + r * Dp + u * VL, c[r][u]);
}

/* A[a, :] += sum_j Pt[j, a] * V[j, :]: A [m x Dp], Pt [k x m] (ld ldp),
 * V [k x Dp] (ld ldv); m % RP == 0, Dp % VL == 0. */
static void gemm_pv(int64_t m, int64_t k, int64_t Dp, const float *Pt, int64_t ldp, const float *V,
                    int64_t ldv, float *A) {
    /* blocks of KB value rows stay in L1 while every query row uses them */
    for (int64_t j0 = 0; j0 < k; j0 += KB) {
        int64_t kk = k - j0 < KB ? k - j0 : KB;
        const float *Pj = Pt + j0 * ldp, *Vj = V + j0 * ldv;
        for (int64_t i = 0; i < m; i += RP) {
            int64_t x = 0;
            for (; x + 4 * VL <= Dp; x += 4 * VL)
                pv_tile(4, kk, Dp, Pj + i, ldp, Vj + x, ldv, A + i * Dp + x);
            for (; x < Dp; x += VL) pv_tile(1, kk, Dp, Pj + i, ldp, Vj + x, ldv, A + i * Dp + x);
        }
    }
}

typedef struct {
    rda_cpu_ws *ws;
    const rda_problem *p;
    const rda_tensor *q, *k, *v;
    rda_acc *acc;
    const rda_phase *ph;
    float qscale; /* softmax scale * log2(e) */
    rda_tensor *o, *lse; /* for final classes */
    float factor;
} class_args;

/* O[b, row, h, :] = a / l * factor (0 where l == 0) and, if lse is given,
 * LSE[b, h, row] = natural log of the denominator (-inf where l == 0). */
static void write_row(rda_tensor *o, rda_tensor *lse, int64_t b, int64_t row, int64_t h, int64_t D,
                      const float *a, float m, float l, float factor) {
    float inv = l > 0.0f ? factor / l : 0.0f;
    int64_t base = b * o->strides[0] + row * o->strides[1] + h * o->strides[2], s3 = o->strides[3];
    if (o->dtype == RDA_DTYPE_F32 && s3 == 1) {
        float *dst = (float *)o->data + base;
        if (l > 0.0f)
            for (int64_t d = 0; d < D; d++) dst[d] = a[d] * inv;
        else /* a row that attended to nothing; its accumulator was never written */
            for (int64_t d = 0; d < D; d++) dst[d] = 0.0f;
    } else {
        for (int64_t d = 0; d < D; d++)
            rda_store_f32(o->data, o->dtype, base + d * s3, l > 0.0f ? a[d] * inv : 0.0f);
    }
    if (lse)
        ((float *)lse->data)[b * lse->strides[0] + h * lse->strides[1] + row * lse->strides[2]] =
            l > 0.0f ? (m + log2f(l)) * 0.6931471805599453f : -INFINITY;
}

/* One work item: batch b, head h, one query tile of one job. */
static void attend_tile(void *arg, int64_t item, int32_t thread) {
    class_args *c = arg;
    const rda_problem *p = c->p;
    rda_cpu_ws *ws = c->ws;
    const int64_t D = p->D, H = p->H, Dp = round_up(D, VL);
    const rda_phase *ph = c->ph;
    int64_t bh, tile;
    const rda_class *cl = &ph->classes[rda_item_place(ph->classes, ph->nclasses, item, &tile, &bh)];
    int64_t b = bh / cl->nheads, h = ph->heads[cl->first_head + bh % cl->nheads];
    int64_t kh = h / (p->H / p->Hkv);
    const rda_job *job = &ph->jobs[ph->tiles[tile].job];
    int64_t qi0 = ph->tiles[tile].first; /* index of the tile's first query in the job */
    int64_t bq = job->q_count - qi0 < BQ ? job->q_count - qi0 : BQ;
    int64_t bqp = round_up(bq, 2 * VL);
    const int64_t r = job->stride;
    const bool direct = p->dtype == RDA_DTYPE_F32 && c->k->strides[3] == 1 &&
                        c->v->strides[3] == 1 && D % VL == 0;

    float *Qt = ws->scratch + thread * ws->per_thread; /* [D x BQ], transposed */
    float *K = Qt + BQ * Dp;                            /* [BK x D] */
    float *V = K + BK * Dp;                             /* [BK x Dp] */
    float *St = V + BK * Dp;                            /* [BK x BQ], transposed scores */
    float *A = St + BQ * (BK > Dp ? BK : Dp);           /* [BQ x Dp] */
    float *M = A + BQ * Dp, *L = M + BQ, *alpha = L + BQ, *mx = alpha + BQ;

    /* Q tile, scaled, transposed through the score buffer */
    pack_rows(St, D, c->q, b, job->q_local + qi0 * r, r, bq, h, D, c->qscale);
    for (int64_t x = 0; x < D; x++) {
        for (int64_t a = 0; a < bq; a++) Qt[x * BQ + a] = St[a * D + x];
        for (int64_t a = bq; a < bqp; a++) Qt[x * BQ + a] = 0.0f;
    }
    /* the running state of these rows */
    rda_acc *acc = c->acc;
    for (int64_t a = 0; a < bqp; a++) {
        if (a < bq) {
            int64_t row = (b * acc->n + job->q_local + (qi0 + a) * r) * H + h;
            M[a] = acc->m[row];
            L[a] = acc->l[row];
            /* the accumulator is not cleared up front: a row nothing reached
             * yet (l == 0) starts from zeros */
            if (L[a] > 0.0f)
                memcpy(A + a * Dp, acc->acc + row * D, sizeof(float) * (size_t)D);
            else
                memset(A + a * Dp, 0, sizeof(float) * (size_t)D);
            memset(A + a * Dp + D, 0, sizeof(float) * (size_t)(Dp - D));
        } else {
            memset(A + a * Dp, 0, sizeof(float) * (size_t)Dp);
            M[a] = -INFINITY;
            L[a] = 0.0f;
        }
    }
    for (int32_t kc = 0; kc < job->nk; kc++) {
        int64_t kcount = job->k_count[kc];
        /* key j is allowed for query i iff j <= i + d (causal) */
        int64_t d = (job->q_first - job->k_first[kc]) / r;
        if (p->causal) {
            int64_t lim = qi0 + bq - 1 + d + 1;
            if (lim < kcount) kcount = lim;
        }
        for (int64_t k0 = 0; k0 < kcount; k0 += BK) {
            int64_t bk = kcount - k0 < BK ? kcount - k0 : BK, row0 = job->k_local[kc] + k0 * r;
            bool masked = p->causal && k0 + bk - 1 > qi0 + d;
            /* the row max is taken inside the product unless a mask comes after it */
            memcpy(mx, M, sizeof(float) * (size_t)bqp);
            float *fused_max = masked ? NULL : mx;
            const float *Vp = V;
            int64_t ldv = Dp;
            if (direct) {
                /* fp32 rows read in place through their stride; only a
                 * ragged tail of fewer than RK key rows is copied */
                const float *Kp = (const float *)c->k->data + b * c->k->strides[0] +
                                  row0 * c->k->strides[1] + kh * c->k->strides[2];
                int64_t ldk = r * c->k->strides[1], main = bk / RK * RK;
                gemm_kq(main, bqp, D, Kp, ldk, Qt, BQ, St, BQ, fused_max, main);
                if (main < bk) {
                    pack_rows(K, D, c->k, b, row0 + main * r, r, bk - main, kh, D, 1.0f);
                    memset(K + (bk - main) * D, 0, sizeof(float) * (size_t)((RK - bk + main) * D));
                    gemm_kq(RK, bqp, D, K, D, Qt, BQ, St + main * BQ, BQ, fused_max, bk - main);
                }
                /* V is packed even here: its rows, a power-of-two stride apart,
                 * would fall into a few L1 sets */
                pack_rows(V, Dp, c->v, b, row0, r, bk, kh, D, 1.0f);
            } else {
                int64_t bkp = round_up(bk, RK);
                pack_rows(K, D, c->k, b, row0, r, bk, kh, D, 1.0f);
                memset(K + bk * D, 0, sizeof(float) * (size_t)((bkp - bk) * D));
                pack_rows(V, Dp, c->v, b, row0, r, bk, kh, D, 1.0f);
                gemm_kq(bkp, bqp, D, K, D, Qt, BQ, St, BQ, fused_max, bk);
            }
            if (masked) {
                /* key row j allowed for query columns a >= k0 + j - qi0 - d */
                for (int64_t j = 0; j < bk; j++) {
                    int64_t amin = k0 + j - qi0 - d;
                    if (amin > bqp) amin = bqp;
                    for (int64_t a = 0; a < amin; a++) St[j * BQ + a] = -INFINITY;
                }
            }
            /* online softmax along vectors of queries; key rows outermost so
             * that the max and sum chains of different query vectors overlap */
            if (masked)
                for (int64_t j = 0; j < bk; j++)
                    for (int64_t a = 0; a < bqp; a += VL)
                        vstore(mx + a, vmax(vload(mx + a), vload(St + j * BQ + a)));
            for (int64_t a = 0; a < bqp; a += VL) {
                vf m_new = vload(mx + a);
                /* a query with nothing allowed yet keeps m = -inf; exponentiate against 0 */
                vf m_use = vsel(m_new == (vf){0} - INFINITY, (vf){0}, m_new);
                vf al = vexp2(vload(M + a) - m_use);
                vstore(alpha + a, al);
                vstore(L + a, vload(L + a) * al);
                vstore(M + a, m_new);
                vstore(mx + a, m_use);
            }
            for (int64_t j = 0; j < bk; j++)
                for (int64_t a = 0; a < bqp; a += VL) {
                    vf e = vexp2(vload(St + j * BQ + a) - vload(mx + a));
                    vstore(St + j * BQ + a, e);
                    vstore(L + a, vload(L + a) + e);
                }
            for (int64_t a = 0; a < bqp; a++)
                if (alpha[a] != 1.0f)
                    for (int64_t x = 0; x < Dp; x++) A[a * Dp + x] *= alpha[a];
            gemm_pv(bqp, bk, Dp, St, BQ, Vp, ldv, A);
        }
    }
    for (int64_t a = 0; a < bq; a++) {
        int64_t lrow = job->q_local + (qi0 + a) * r, row = (b * acc->n + lrow) * H + h;
        if (cl->final) { /* the rows are complete: normalise into O, mark done */
            write_row(c->o, c->lse, b, lrow, h, D, A + a * Dp, M[a], L[a], c->factor);
            acc->l[row] = -1.0f;
            continue;
        }
        memcpy(acc->acc + row * D, A + a * Dp, sizeof(float) * (size_t)D);
        acc->m[row] = M[a];
        acc->l[row] = L[a];
    }
}

typedef struct {
    rda_context *ctx;
    class_args *c;
} phase_arg;

static rda_status run_phase(void *arg, const rda_phase *ph) {
    phase_arg *pa = arg;
    pa->c->ph = ph;
    rda_pool_run(pa->ctx->pool, ph->items, attend_tile, pa->c);
    return RDA_STATUS_SUCCESS;
}

rda_status rda_cpu_attend_step(rda_context *ctx, rda_cpu_ws *ws, const rda_problem *p,
                               const rda_rows *qr, const rda_rows *kr, const rda_tensor *q,
                               const rda_tensor *k, const rda_tensor *v, rda_acc *acc,
                               rda_tensor *out, rda_tensor *lse, int64_t *pairs) {
    double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    class_args c = {ws,  p, q, k, v, acc, NULL, (float)(scale * 1.4426950408889634),
                    out, lse, (float)rda_plan_output_factor(p)};
    phase_arg pa = {ctx, &c};
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
    write_row(f->o, f->lse, idx / (n * H), (idx / H) % n, idx % H, acc->D, acc->acc + idx * acc->D,
              acc->m[idx], l, f->factor);
}

void rda_cpu_finalize(rda_context *ctx, const rda_problem *p, const rda_acc *acc, rda_tensor *o,
                      rda_tensor *lse) {
    fin_args f = {p, acc, o, lse, (float)rda_plan_output_factor(p)};
    rda_pool_run(ctx->pool, acc->B * acc->n * acc->H, finalize_rows, &f);
}
