/* The fast path's per-tile kernels, written once and compiled once per
 * instruction-set level (kern_*.c), each translation unit with its own
 * compiler target flags, so that one library runs on any CPU of its
 * architecture and uses the widest vectors the CPU has (isa.c picks).
 *
 * Before including this file a level defines:
 *   RDA_ISA       suffix of its symbols (avx512, avx2, ...)
 *   VL            floats per vector (16 on AVX-512, 8 on AVX2, 4 on SSE2/NEON)
 *   KQ_RK         key rows per register tile of S^T = K Q^T (2 query vectors
 *                 wide: 2 * KQ_RK accumulators)
 *   PV_RP, PV_NV  query rows x head-dim vectors per register tile of O += P V
 * chosen so that accumulators, operands and the broadcast fit the level's
 * vector registers (32 on AVX-512 and NEON, 16 on AVX2 and SSE2): no level
 * spills in its inner loops (docs/DESIGN.md says how that is checked).
 *
 * Scores are kept transposed (key rows x query columns) so that the online
 * softmax runs along vectors of queries, with no horizontal reductions. */
#include <math.h>
#include <string.h>

#include "../internal.h"
#include "convert.h"
#include "tile.h"

#if VL > RDA_CPU_VL_MAX || KQ_RK > RDA_CPU_RK_MAX || BQ % (2 * VL) || (2 * VL) % PV_RP
#error "tile sizes of this level do not fit the shared scratch layout"
#endif

#define RDA_CAT2(a, b) a##_##b
#define RDA_CAT(a, b) RDA_CAT2(a, b)
#define RDA_SYM(name) RDA_CAT(name, RDA_ISA)

typedef float vf __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));
#define KB 64 /* value rows per L1 block of O += P V (measured: docs/PERFORMANCE.md) */

/* unaligned vector access that may alias the floats it covers */
typedef float vf_u __attribute__((vector_size(VL * 4), aligned(4), may_alias));
static inline vf vload(const float *p) {
    return *(const vf_u *)p;
}
static inline void vstore(float *p, vf v) {
    *(vf_u *)p = v;
}

/* x in every lane (x - 0 is exactly x, even for -0, so no add is emitted) */
static inline vf vbroadcast(float x) {
    return x - (vf){0};
}

/* mask ? a : b, mask lanes all ones or all zeros (a vector comparison) */
static inline vf vsel(vi mask, vf a, vf b) {
    return (vf)(((vi)a & mask) | ((vi)b & ~mask));
}
static inline vf vmax(vf a, vf b) {
    return vsel(a > b, a, b);
}

/* 2^x lane-wise for x <= 0, relative error ~2e-7; x <= -127 (and -inf)
 * give exactly 0, NaN gives NaN. x = n + f with n = trunc(x - 1/2), so
 * f in (-1/2, 1/2] (x <= 0), a degree-6 polynomial for 2^f (Cephes' exp2f
 * coefficients), and 2^n built in the exponent field. Clamping at -127
 * makes that field 0, so the underflow needs no mask: with the truncating
 * conversions this leaves 9 constants, which keeps the 16-register levels
 * free of spills. */
static inline vf vexp2(vf x) {
    const vf lo = (vf){0} - 127.0f;
    vf t = vsel(x < lo, lo, x);
    vi n = __builtin_convertvector(t - 0.5f, vi);
    vf f = t - __builtin_convertvector(n, vf);
    vf px = (vf){0} + 1.535336188319500e-4f;
    px = px * f + 1.339887440266574e-3f;
    px = px * f + 9.618437357674640e-3f;
    px = px * f + 5.550332471162809e-2f;
    px = px * f + 2.402264791363012e-1f;
    px = px * f + 6.931472028550421e-1f;
    px = px * f + 1.0f;
    return px * (vf)((n + 127) << 23);
}

#ifdef __FLT16_MAX__
__extension__ typedef _Float16 rda_half;
#endif

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
                for (int64_t d = 0; d < D; d++)
                    o[d] = scale * src[d];
            else
                for (int64_t d = 0; d < D; d++)
                    o[d] = scale * src[d * s3];
            break;
        }
        case RDA_DTYPE_F16: {
#ifdef __FLT16_MAX__ /* hardware conversion where the compiler has _Float16 */
            const rda_half *src = (const rda_half *)t->data + base;
            for (int64_t d = 0; d < D; d++)
                o[d] = scale * (float)src[d * s3];
#else
            const uint16_t *src = (const uint16_t *)t->data + base;
            for (int64_t d = 0; d < D; d++)
                o[d] = scale * rda_f16_to_f32(src[d * s3]);
#endif
            break;
        }
        case RDA_DTYPE_BF16: {
            const uint16_t *src = (const uint16_t *)t->data + base;
            for (int64_t d = 0; d < D; d++)
                o[d] = scale * rda_bf16_to_f32(src[d * s3]);
            break;
        }
        case RDA_DTYPE_F64: {
            const double *src = (const double *)t->data + base;
            for (int64_t d = 0; d < D; d++)
                o[d] = scale * (float)src[d * s3];
            break;
        }
        }
        for (int64_t d = D; d < ld; d++)
            o[d] = 0.0f;
    }
}

/* St[j, a] = sum_d K[j, d] * Qt[d, a]: K [m x D] (ld ldk), Qt [D x n] (ld ldq),
 * St ld lds; m % KQ_RK == 0, n % (2 VL) == 0. With mx != NULL also
 * mx[a] = max(mx[a], St[j, a]) over the first `valid` rows j, while the
 * scores are still in registers (saves a pass over St). */
void RDA_SYM(rda_cpu_gemm_kq)(int64_t m, int64_t n, int64_t D, const float *K, int64_t ldk,
                              const float *Qt, int64_t ldq, float *St, int64_t lds, float *mx,
                              int64_t valid, float *work) {
    (void)work;
    for (int64_t i = 0; i < m; i += KQ_RK) {
#ifdef RDA_SPREAD
        /* no broadcast from memory on this level: each key value of the
         * register tile is spread into a whole vector once, then read as a
         * vector operand by every query block (work: KQ_RK * D vectors) */
        for (int64_t d = 0; d < D; d++)
            for (int r = 0; r < KQ_RK; r++) vstore(work + (d * KQ_RK + r) * VL, vbroadcast(K[(i + r) * ldk + d]));
#endif
        for (int64_t j = 0; j < n; j += 2 * VL) {
            vf c0[KQ_RK], c1[KQ_RK];
            for (int r = 0; r < KQ_RK; r++)
                c0[r] = c1[r] = (vf){0};
            for (int64_t d = 0; d < D; d++) {
                vf q0 = vload(Qt + d * ldq + j), q1 = vload(Qt + d * ldq + j + VL);
                for (int r = 0; r < KQ_RK; r++) {
#ifdef RDA_SPREAD
                    vf k = vload(work + (d * KQ_RK + r) * VL);
#else
                    vf k = vbroadcast(K[(i + r) * ldk + d]);
#endif
                    c0[r] += k * q0;
                    c1[r] += k * q1;
                }
            }
            for (int r = 0; r < KQ_RK; r++) {
                vstore(St + (i + r) * lds + j, c0[r]);
                vstore(St + (i + r) * lds + j + VL, c1[r]);
            }
            if (mx) {
                vf m0 = vload(mx + j), m1 = vload(mx + j + VL);
                for (int r = 0; r < KQ_RK && i + r < valid; r++) {
                    m0 = vmax(m0, c0[r]);
                    m1 = vmax(m1, c1[r]);
                }
                vstore(mx + j, m0);
                vstore(mx + j + VL, m1);
            }
        }
    }
}

/* One register tile of gemm_pv: PV_RP rows x NV vectors of A (NV constant
 * after inlining, so the accumulators stay in registers). */
static inline __attribute__((always_inline)) void pv_tile(const int NV, int64_t k, int64_t Dp,
                                                          const float *Pt, int64_t ldp, int64_t sr,
                                                          const float *V, int64_t ldv, float *A) {
    (void)ldp, (void)sr; /* unused where the operands are spread */
    vf c[PV_RP][PV_NV];
    for (int r = 0; r < PV_RP; r++)
        for (int u = 0; u < NV; u++)
            c[r][u] = vload(A + r * Dp + u * VL);
    for (int64_t j = 0; j < k; j++) {
        vf v[PV_NV];
        for (int u = 0; u < NV; u++)
            v[u] = vload(V + j * ldv + u * VL);
        for (int r = 0; r < PV_RP; r++) {
#ifdef RDA_SPREAD
            vf p = vload(Pt + (j * PV_RP + r) * VL); /* spread by gemm_pv */
#else
            vf p = vbroadcast(Pt[j * ldp + r * sr]);
#endif
            for (int u = 0; u < NV; u++)
                c[r][u] += p * v[u];
        }
    }
    for (int r = 0; r < PV_RP; r++)
        for (int u = 0; u < NV; u++)
            vstore(A + r * Dp + u * VL, c[r][u]);
}

/* A[a, :] += sum_j Pt[j * ldp + a * sr] * V[j, :]: A [m x Dp], V [k x Dp]
 * (ld ldv); m % PV_RP == 0, Dp % VL == 0. sr = 1: Pt [k x m] as stored
 * (O += P V); ldp = 1: Pt given as its transpose [m x k] (ld sr). */
static inline __attribute__((always_inline)) void gemm_pv_strided(int64_t m, int64_t k, int64_t Dp, const float *Pt,
                                                                  int64_t ldp, int64_t sr, const float *V,
                                                                  int64_t ldv, float *A, float *work) {
    (void)work;
    /* blocks of KB value rows stay in L1 while every query row uses them */
    for (int64_t j0 = 0; j0 < k; j0 += KB) {
        int64_t kk = k - j0 < KB ? k - j0 : KB;
        const float *Pj = Pt + j0 * ldp, *Vj = V + j0 * ldv;
        for (int64_t i = 0; i < m; i += PV_RP) {
            const float *Pi = Pj + i * sr;
#ifdef RDA_SPREAD
            /* the tile's probabilities spread into whole vectors once, for
             * every head-dim block (work: KB * PV_RP vectors) */
            for (int64_t j = 0; j < kk; j++)
                for (int r = 0; r < PV_RP; r++)
                    vstore(work + (j * PV_RP + r) * VL, vbroadcast(Pi[j * ldp + r * sr]));
            Pi = work;
#endif
            int64_t x = 0;
            for (; x + PV_NV * VL <= Dp; x += PV_NV * VL)
                pv_tile(PV_NV, kk, Dp, Pi, ldp, sr, Vj + x, ldv, A + i * Dp + x);
            for (; x < Dp; x += VL)
                pv_tile(1, kk, Dp, Pi, ldp, sr, Vj + x, ldv, A + i * Dp + x);
        }
    }
}

/* A[a, :] += sum_j Pt[j, a] * V[j, :]: A [m x Dp], Pt [k x m] (ld ldp),
 * V [k x Dp] (ld ldv); m % PV_RP == 0, Dp % VL == 0. */
void RDA_SYM(rda_cpu_gemm_pv)(int64_t m, int64_t k, int64_t Dp, const float *Pt, int64_t ldp,
                              const float *V, int64_t ldv, float *A, float *work) {
    gemm_pv_strided(m, k, Dp, Pt, ldp, 1, V, ldv, A, work);
}

static void RDA_SYM(exp2_shift)(float *St, int64_t n) {
    for (int64_t i = 0; i < n; i += VL)
        vstore(St + i, vexp2(vload(St + i) - 1.0f));
}

/* One work item: batch b, head h, one query tile of one job. */
static void RDA_SYM(attend_tile)(void *arg, int64_t item, int32_t thread) {
    rda_cpu_phase_args *c = arg;
    const rda_problem *p = c->p;
    rda_cpu_ws *ws = c->ws;
    const int64_t D = p->D, H = p->H, Dp = rda_round_up(D, VL);
    const int64_t Dmax = rda_round_up(D, RDA_CPU_VL_MAX), BKP = BK + RDA_CPU_RK_MAX;
    const rda_phase *ph = c->ph;
    int64_t bh, tile;
    const rda_class *cl = &ph->classes[rda_item_place(ph->classes, ph->nclasses, item, &tile, &bh)];
    int64_t b = bh / cl->nheads, h = ph->heads[cl->first_head + bh % cl->nheads];
    int64_t kh = h / (p->H / p->Hkv);
    const rda_job *job = &ph->jobs[ph->tiles[tile].job];
    int64_t qi0 = ph->tiles[tile].first; /* index of the tile's first query in the job */
    int64_t bq = job->q_count - qi0 < BQ ? job->q_count - qi0 : BQ;
    int64_t bqp = rda_round_up(bq, 2 * VL);
    const int64_t r = job->stride;
    const bool direct =
        p->dtype == RDA_DTYPE_F32 && c->k->strides[3] == 1 && c->v->strides[3] == 1 && D % VL == 0;

    /* the layout of rda_cpu_scratch_floats (attend.c) */
    float *Qt = ws->scratch + thread * ws->per_thread; /* [D x BQ], transposed */
    float *K = Qt + BQ * Dmax;                         /* [BKP x D] */
    float *V = K + BKP * Dmax;                         /* [BK x Dp] */
    float *St = V + BK * Dmax;                         /* [BKP x BQ], transposed scores */
    float *A = St + BQ * (BKP > Dmax ? BKP : Dmax);    /* [BQ x Dp] */
    float *M = A + BQ * Dmax, *L = M + BQ, *alpha = L + BQ, *mx = alpha + BQ;
    float *W = mx + BQ; /* spread operands (RDA_SPREAD levels) */

    /* Q tile, scaled, transposed through the score buffer */
    pack_rows(St, D, c->q, b, job->q_local + qi0 * r, r, bq, h, D, c->qscale);
    for (int64_t x = 0; x < D; x++) {
        for (int64_t a = 0; a < bq; a++)
            Qt[x * BQ + a] = St[a * D + x];
        for (int64_t a = bq; a < bqp; a++)
            Qt[x * BQ + a] = 0.0f;
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
            if (L[a] != 0.0f)
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
            if (direct) {
                /* fp32 rows read in place through their stride; only a
                 * ragged tail of fewer than KQ_RK key rows is copied */
                const float *Kp = (const float *)c->k->data + b * c->k->strides[0] +
                                  row0 * c->k->strides[1] + kh * c->k->strides[2];
                int64_t ldk = r * c->k->strides[1], main = bk / KQ_RK * KQ_RK;
                RDA_SYM(rda_cpu_gemm_kq)(main, bqp, D, Kp, ldk, Qt, BQ, St, BQ, fused_max, main, W);
                if (main < bk) {
                    pack_rows(K, D, c->k, b, row0 + main * r, r, bk - main, kh, D, 1.0f);
                    memset(K + (bk - main) * D, 0,
                           sizeof(float) * (size_t)((KQ_RK - bk + main) * D));
                    RDA_SYM(rda_cpu_gemm_kq)
                    (KQ_RK, bqp, D, K, D, Qt, BQ, St + main * BQ, BQ, fused_max, bk - main, W);
                }
            } else {
                int64_t bkp = rda_round_up(bk, KQ_RK);
                pack_rows(K, D, c->k, b, row0, r, bk, kh, D, 1.0f);
                memset(K + bk * D, 0, sizeof(float) * (size_t)((bkp - bk) * D));
                RDA_SYM(rda_cpu_gemm_kq)(bkp, bqp, D, K, D, Qt, BQ, St, BQ, fused_max, bk, W);
            }
            /* V is packed even for fp32: its rows, a power-of-two stride apart,
             * would fall into a few L1 sets */
            pack_rows(V, Dp, c->v, b, row0, r, bk, kh, D, 1.0f);
            if (masked) {
                /* key row j allowed for query columns a >= k0 + j - qi0 - d */
                for (int64_t j = 0; j < bk; j++) {
                    int64_t amin = k0 + j - qi0 - d;
                    if (amin > bqp) amin = bqp;
                    for (int64_t a = 0; a < amin; a++)
                        St[j * BQ + a] = -INFINITY;
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
                    for (int64_t x = 0; x < Dp; x++)
                        A[a * Dp + x] *= alpha[a];
            RDA_SYM(rda_cpu_gemm_pv)(bqp, bk, Dp, St, BQ, V, Dp, A, W);
        }
    }
    /* a query that had allowed keys here but whose sum stayed 0 saw only
     * scores of -inf (an overflow): NaN, as softmax in fp32 gives (SPEC.md,
     * "Edge values"); a row with no allowed key keeps l = 0 */
    for (int64_t a = 0; a < bq; a++) {
        if (L[a] != 0.0f) continue;
        int64_t allowed = 0;
        for (int32_t kc = 0; kc < job->nk; kc++) {
            int64_t cnt = job->k_count[kc];
            if (p->causal) {
                int64_t lim = qi0 + a + (job->q_first - job->k_first[kc]) / r + 1;
                cnt = lim < 0 ? 0 : lim < cnt ? lim : cnt;
            }
            allowed += cnt;
        }
        if (allowed > 0) L[a] = NAN;
    }
    for (int64_t a = 0; a < bq; a++) {
        int64_t lrow = job->q_local + (qi0 + a) * r, row = (b * acc->n + lrow) * H + h;
        if (cl->final) { /* the rows are complete: normalise into O, mark done */
            rda_cpu_write_row(c->o, c->lse, b, lrow, h, D, A + a * Dp, M[a], L[a], c->factor);
            acc->l[row] = -1.0f;
            continue;
        }
        memcpy(acc->acc + row * D, A + a * Dp, sizeof(float) * (size_t)D);
        acc->m[row] = M[a];
        acc->l[row] = L[a];
    }
}

/* The backward's block products and its row step, each its own function
 * so that the item's bookkeeping does not crowd their registers. */
static __attribute__((noinline)) void RDA_SYM(bwd_kq)(int64_t m, int64_t n, int64_t D, const float *K, int64_t ldk,
                                                     const float *Qt, int64_t ldq, float *St, int64_t lds, float *W) {
    RDA_SYM(rda_cpu_gemm_kq)(m, n, D, K, ldk, Qt, ldq, St, lds, NULL, 0, W);
}

static __attribute__((noinline)) void RDA_SYM(bwd_pv)(int64_t m, int64_t k, int64_t Dp, const float *Pt, int64_t ldp,
                                                     const float *V, int64_t ldv, float *A, float *W) {
    RDA_SYM(rda_cpu_gemm_pv)(m, k, Dp, Pt, ldp, V, ldv, A, W);
}

/* A[i, :] += sum_a X[i, a] * Y[a, :] for X [m x k] (ld ldx): the product
 * of gemm_pv with its first operand transposed in place (no copy). */
static __attribute__((noinline)) void RDA_SYM(bwd_pv_t)(int64_t m, int64_t k, int64_t Dp, const float *X, int64_t ldx,
                                                       const float *Y, int64_t ldy, float *A, float *W) {
    gemm_pv_strided(m, k, Dp, X, 1, ldx, Y, ldy, A, W);
}

/* One key row j of a tile: P = 2^(S - L) in place of S, dS = scale P (dP -
 * Delta) in place of dP, along n query columns (n % VL == 0). */
static __attribute__((noinline)) void RDA_SYM(bwd_row)(float *sj, float *dj, const float *L2, const float *Dl,
                                                      int64_t n, float scale) {
    const vf sc = vbroadcast(scale);
    for (int64_t a = 0; a < n; a += VL) {
        vf pr = vexp2(vload(sj + a) - vload(L2 + a));
        vstore(sj + a, pr);
        vstore(dj + a, sc * pr * (vload(dj + a) - vload(Dl + a)));
    }
}

/* One backward work item: batch b, head h, one whole job (SPEC.md,
 * "Backward pass"). Key tiles outermost: each key tile's dK and dV
 * accumulate in scratch over every query tile that reaches it (then are
 * added to the block's accumulators), while each query tile's dQ is read,
 * added to and written back in the rank's fp32 state. Per tile pair:
 * S^T = K Q^T and dP^T = V dO^T (gemm_kq), P = 2^(S - L) and
 * dS = scale P (dP - Delta) along vectors of queries, then dV += P^T dO,
 * dK += dS^T Q (gemm_pv reading P^T and dS^T across their rows) and
 * dQ += dS K (gemm_pv). */
static void RDA_SYM(backward_item)(void *arg, int64_t item, int32_t thread) {
    rda_cpu_bwd_args *c = arg;
    const rda_problem *p = c->p;
    const rda_phase *ph = c->ph;
    const int64_t D = p->D, H = p->H, Dp = rda_round_up(D, VL), Dmax = rda_round_up(D, RDA_CPU_VL_MAX);
    int64_t pad = KQ_RK; /* key rows: a multiple of both register tiles */
    while (pad % PV_RP) pad += KQ_RK;
    int64_t bh, tile;
    const rda_class *cl = &ph->classes[rda_item_place(ph->classes, ph->nclasses, item, &tile, &bh)];
    const int64_t b = bh / cl->nheads, h = ph->heads[cl->first_head + bh % cl->nheads];
    const int64_t kh = h / (H / p->Hkv), dh = c->hk == H ? h : kh;
    const rda_job *job = &ph->jobs[ph->tiles[tile].job];
    const int64_t r = job->stride, nq = job->q_count;

    float *K = c->scratch + thread * c->per_thread; /* [BKBP x Dp] key rows */
    float *V = K + BKBP * Dmax, *dKa = V + BKBP * Dmax, *dVa = dKa + BKBP * Dmax;
    float *Qr = dVa + BKBP * Dmax;   /* [BQB x Dp] query rows, unscaled */
    float *dOr = Qr + BQB * Dmax;    /* [BQB x Dp] dout rows (times factor) */
    float *Aq = dOr + BQB * Dmax;    /* [BQB x Dp] dQ rows */
    float *Qt = Aq + BQB * Dmax;     /* [D x BQB] queries times qscale, transposed */
    float *dOt = Qt + Dmax * BQB;    /* [D x BQB] */
    float *St = dOt + Dmax * BQB;    /* [BKBP x BQB]: S^T, then P^T */
    float *dPt = St + BKBP * BQB;    /* [BKBP x BQB]: dP^T, then dS^T */
    float *L2 = dPt + BKBP * BQB, *Dl = L2 + BQB;
    float *W = Dl + BQB;

    for (int32_t kc = 0; kc < job->nk; kc++) {
        const int64_t d = (job->q_first - job->k_first[kc]) / r; /* key j allowed for query i iff j <= i + d */
        int64_t kcount = job->k_count[kc];
        if (p->causal && nq + d < kcount) kcount = nq + d > 0 ? nq + d : 0;
        for (int64_t k0 = 0; k0 < kcount; k0 += BKB) {
            const int64_t bk = kcount - k0 < BKB ? kcount - k0 : BKB, bkp = rda_round_up(bk, pad);
            const int64_t row0 = job->k_local[kc] + k0 * r;
            pack_rows(K, Dp, c->k, b, row0, r, bk, kh, D, 1.0f);
            pack_rows(V, Dp, c->v, b, row0, r, bk, kh, D, 1.0f);
            memset(K + bk * Dp, 0, sizeof(float) * (size_t)((bkp - bk) * Dp));
            memset(V + bk * Dp, 0, sizeof(float) * (size_t)((bkp - bk) * Dp));
            memset(dKa, 0, sizeof(float) * (size_t)(bkp * Dp));
            memset(dVa, 0, sizeof(float) * (size_t)(bkp * Dp));
            /* the first query that sees key k0 */
            int64_t qs = p->causal && k0 - d > 0 ? k0 - d : 0;
            for (int64_t i0 = qs; i0 < nq; i0 += BQB) {
                const int64_t bq = nq - i0 < BQB ? nq - i0 : BQB, bqp = rda_round_up(bq, 2 * VL);
                const int64_t qrow0 = job->q_local + i0 * r;
                pack_rows(Qr, Dp, c->q, b, qrow0, r, bq, h, D, 1.0f);
                pack_rows(dOr, Dp, c->dout, b, qrow0, r, bq, h, D, c->factor);
                memset(Qr + bq * Dp, 0, sizeof(float) * (size_t)((bqp - bq) * Dp));
                memset(dOr + bq * Dp, 0, sizeof(float) * (size_t)((bqp - bq) * Dp));
                for (int64_t x = 0; x < D; x++)
                    for (int64_t a = 0; a < bqp; a++) {
                        Qt[x * BQB + a] = Qr[a * Dp + x] * c->qscale;
                        dOt[x * BQB + a] = dOr[a * Dp + x];
                    }
                for (int64_t a = 0; a < bqp; a++) {
                    if (a < bq) {
                        const int64_t row = qrow0 + a * r;
                        L2[a] = ((const float *)c->lse->data)[b * c->lse->strides[0] + h * c->lse->strides[1] +
                                                              row * c->lse->strides[2]] *
                                1.4426950408889634f;
                        Dl[a] = c->delta[(b * c->n + row) * H + h];
                    } else {
                        L2[a] = INFINITY; /* padding: P = 0 */
                        Dl[a] = 0.0f;
                    }
                }
                RDA_SYM(bwd_kq)(bkp, bqp, D, K, Dp, Qt, BQB, St, BQB, W);
                RDA_SYM(bwd_kq)(bkp, bqp, D, V, Dp, dOt, BQB, dPt, BQB, W);
                for (int64_t j = 0; j < bkp; j++) {
                    float *sj = St + j * BQB, *dj = dPt + j * BQB;
                    if (j >= bk) {
                        memset(sj, 0, sizeof(float) * (size_t)bqp);
                        memset(dj, 0, sizeof(float) * (size_t)bqp);
                        continue;
                    }
                    RDA_SYM(bwd_row)(sj, dj, L2, Dl, bqp, c->scale);
                    /* masked and padding columns give nothing (not even a NaN of dP) */
                    int64_t amin = p->causal ? k0 + j - i0 - d : 0;
                    if (amin > bqp) amin = bqp;
                    for (int64_t a = 0; a < amin; a++) sj[a] = dj[a] = 0.0f;
                    for (int64_t a = bq > amin ? bq : amin; a < bqp; a++) sj[a] = dj[a] = 0.0f;
                }
                RDA_SYM(bwd_pv_t)(bkp, bqp, Dp, St, BQB, dOr, Dp, dVa, W);
                RDA_SYM(bwd_pv_t)(bkp, bqp, Dp, dPt, BQB, Qr, Dp, dKa, W);
                /* dQ of these rows: from the state, added to, back */
                for (int64_t a = 0; a < bqp; a++) {
                    if (a < bq)
                        memcpy(Aq + a * Dp, c->dq + ((b * c->n + qrow0 + a * r) * H + h) * D, sizeof(float) * (size_t)D);
                    else
                        memset(Aq + a * Dp, 0, sizeof(float) * (size_t)D);
                    memset(Aq + a * Dp + D, 0, sizeof(float) * (size_t)(Dp - D));
                }
                RDA_SYM(bwd_pv)(bqp, bkp, Dp, dPt, BQB, K, Dp, Aq, W);
                for (int64_t a = 0; a < bq; a++)
                    memcpy(c->dq + ((b * c->n + qrow0 + a * r) * H + h) * D, Aq + a * Dp, sizeof(float) * (size_t)D);
            }
            for (int64_t j = 0; j < bk; j++) {
                float *gk = c->dk + ((b * c->nk + row0 + j * r) * c->hk + dh) * D;
                float *gv = c->dv + ((b * c->nk + row0 + j * r) * c->hk + dh) * D;
                for (int64_t x = 0; x < D; x++) {
                    gk[x] += dKa[j * Dp + x];
                    gv[x] += dVa[j * Dp + x];
                }
            }
        }
    }
}

const rda_cpu_kernels RDA_SYM(rda_cpu_kernels) = {
    RDA_ISA_NAME,
    VL,
    KQ_RK,
    PV_RP,
    PV_NV,
    RDA_SYM(attend_tile),
    RDA_SYM(rda_cpu_gemm_kq),
    RDA_SYM(rda_cpu_gemm_pv),
    RDA_SYM(exp2_shift),
    RDA_SYM(backward_item),
};
