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
#define BQ 64  /* query rows per tile */
#define BK 256 /* key rows per tile */

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct rda_cpu_ws {
    int32_t threads;
    int64_t per_thread; /* floats of scratch per thread */
    float *scratch;
    rda_job *jobs;
    int64_t jobs_cap;
    int32_t *tile_job; /* per tile of the current class: its job */
    int64_t *tile_first;
    int64_t tiles_cap;
    int64_t *class_heads; /* heads of the current class */
};

rda_status rda_cpu_workspace_create(rda_context *ctx, const rda_problem *p, const rda_rows *qr,
                                    rda_cpu_ws **out) {
    *out = NULL;
    rda_cpu_ws *ws = rda_heap_calloc(&ctx->heap, sizeof(*ws));
    if (!ws) goto oom;
    ws->threads = rda_pool_threads(ctx->pool);
    int64_t D = p->D;
    int64_t Dp = round_up(D, VL);
    /* the score buffer also holds the untransposed Q tile: BQ x max(BK, Dp) */
    ws->per_thread = BQ * Dp + 2 * BK * Dp + BQ * (BK > Dp ? BK : Dp) + BQ * Dp + 4 * BQ + 64;
    int64_t wmin = p->N;
    for (int32_t i = 0; i < p->G; i++)
        if (p->patterns[i].segment < wmin) wmin = p->patterns[i].segment;
    ws->jobs_cap = 0;
    for (int32_t a = 0; a < qr->n; a++) ws->jobs_cap += qr->count[a] / wmin + 2;
    ws->tiles_cap = qr->total / BQ + ws->jobs_cap + 1;
    ws->scratch = rda_heap_alloc(&ctx->heap, sizeof(float) * (size_t)(ws->per_thread * ws->threads));
    ws->jobs = rda_heap_alloc(&ctx->heap, sizeof(rda_job) * (size_t)ws->jobs_cap);
    ws->tile_job = rda_heap_alloc(&ctx->heap, sizeof(int32_t) * (size_t)ws->tiles_cap);
    ws->tile_first = rda_heap_alloc(&ctx->heap, sizeof(int64_t) * (size_t)ws->tiles_cap);
    ws->class_heads = rda_heap_alloc(&ctx->heap, sizeof(int64_t) * (size_t)p->H);
    if (!ws->scratch || !ws->jobs || !ws->tile_job || !ws->tile_first || !ws->class_heads)
        goto oom;
    *out = ws;
    return RDA_STATUS_SUCCESS;
oom:
    rda_cpu_workspace_destroy(ctx, ws);
    rda_set_msg(ctx->msg, "out of memory for the CPU workspace");
    return RDA_STATUS_OUT_OF_MEMORY;
}

void rda_cpu_workspace_destroy(rda_context *ctx, rda_cpu_ws *ws) {
    if (!ws) return;
    rda_heap_free(&ctx->heap, ws->scratch);
    rda_heap_free(&ctx->heap, ws->jobs);
    rda_heap_free(&ctx->heap, ws->tile_job);
    rda_heap_free(&ctx->heap, ws->tile_first);
    rda_heap_free(&ctx->heap, ws->class_heads);
    rda_heap_free(&ctx->heap, ws);
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

static inline vf vload(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

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

/* St[j, a] = sum_d K[j, d] * Qt[d, a]: K [m x D] (ld D), Qt [D x n] (ld ldq),
 * St ld lds; m % RK == 0, n % (2 VL) == 0. */
static void gemm_kq(int64_t m, int64_t n, int64_t D, const float *K, const float *Qt, int64_t ldq,
                    float *St, int64_t lds) {
    for (int64_t i = 0; i < m; i += RK)
        for (int64_t j = 0; j < n; j += 2 * VL) {
            vf c0[RK], c1[RK];
            for (int r = 0; r < RK; r++) c0[r] = c1[r] = (vf){0};
            for (int64_t d = 0; d < D; d++) {
                vf q0 = vload(Qt + d * ldq + j), q1 = vload(Qt + d * ldq + j + VL);
                for (int r = 0; r < RK; r++) {
                    vf k = (vf){0} + K[(i + r) * D + d];
                    c0[r] += k * q0;
                    c1[r] += k * q1;
                }
            }
            for (int r = 0; r < RK; r++) {
                vstore(St + (i + r) * lds + j, c0[r]);
                vstore(St + (i + r) * lds + j + VL, c1[r]);
            }
        }
}

/* A[a, :] += sum_j Pt[j, a] * V[j, :]: A [m x Dp], Pt [k x m] (ld ldp),
 * V [k x Dp]; m % RP == 0, Dp % VL == 0. */
static void gemm_pv(int64_t m, int64_t k, int64_t Dp, const float *Pt, int64_t ldp, const float *V,
                    float *A) {
    for (int64_t i = 0; i < m; i += RP)
        for (int64_t x = 0; x < Dp; x += 4 * VL) {
            int nv = (int)((Dp - x) / VL < 4 ? (Dp - x) / VL : 4);
            vf c[RP][4];
            for (int r = 0; r < RP; r++)
                for (int u = 0; u < nv; u++) c[r][u] = vload(A + (i + r) * Dp + x + u * VL);
            for (int64_t j = 0; j < k; j++) {
                vf v[4];
                for (int u = 0; u < nv; u++) v[u] = vload(V + j * Dp + x + u * VL);
                for (int r = 0; r < RP; r++) {
                    vf p = (vf){0} + Pt[j * ldp + i + r];
                    for (int u = 0; u < nv; u++) c[r][u] += p * v[u];
                }
            }
            for (int r = 0; r < RP; r++)
                for (int u = 0; u < nv; u++) vstore(A + (i + r) * Dp + x + u * VL, c[r][u]);
        }
}

typedef struct {
    rda_cpu_ws *ws;
    const rda_problem *p;
    const rda_tensor *q, *k, *v;
    rda_acc *acc;
    const int64_t *heads; /* heads of this class */
    int64_t nheads;
    float qscale; /* softmax scale * log2(e) */
} class_args;

/* One work item: batch b, head h, one query tile of one job. */
static void attend_tile(void *arg, int64_t item, int32_t thread) {
    class_args *c = arg;
    const rda_problem *p = c->p;
    rda_cpu_ws *ws = c->ws;
    const int64_t D = p->D, H = p->H, Dp = round_up(D, VL);
    int64_t bh = item % (p->B * c->nheads), tile = item / (p->B * c->nheads);
    int64_t b = bh / c->nheads, h = c->heads[bh % c->nheads];
    int64_t kh = h / (p->H / p->Hkv);
    const rda_job *job = &ws->jobs[ws->tile_job[tile]];
    int64_t qi0 = ws->tile_first[tile]; /* index of the tile's first query in the job */
    int64_t bq = job->q_count - qi0 < BQ ? job->q_count - qi0 : BQ;
    int64_t bqp = round_up(bq, 2 * VL);
    const int64_t r = job->stride;

    float *Qt = ws->scratch + thread * ws->per_thread; /* [D x BQ], transposed */
    float *K = Qt + BQ * Dp;                            /* [BK x D] */
    float *V = K + BK * Dp;                             /* [BK x Dp] */
    float *St = V + BK * Dp;                            /* [BK x BQ], transposed scores */
    float *A = St + BQ * (BK > Dp ? BK : Dp);           /* [BQ x Dp] */
    float *M = A + BQ * Dp, *L = M + BQ, *alpha = L + BQ;

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
            memcpy(A + a * Dp, acc->acc + row * D, sizeof(float) * (size_t)D);
            memset(A + a * Dp + D, 0, sizeof(float) * (size_t)(Dp - D));
            M[a] = acc->m[row];
            L[a] = acc->l[row];
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
            int64_t bk = kcount - k0 < BK ? kcount - k0 : BK, bkp = round_up(bk, RK);
            pack_rows(K, D, c->k, b, job->k_local[kc] + k0 * r, r, bk, kh, D, 1.0f);
            memset(K + bk * D, 0, sizeof(float) * (size_t)((bkp - bk) * D));
            pack_rows(V, Dp, c->v, b, job->k_local[kc] + k0 * r, r, bk, kh, D, 1.0f);
            gemm_kq(bkp, bqp, D, K, Qt, BQ, St, BQ);
            if (p->causal && k0 + bk - 1 > qi0 + d) {
                /* key row j allowed for query columns a >= k0 + j - qi0 - d */
                for (int64_t j = 0; j < bk; j++) {
                    int64_t amin = k0 + j - qi0 - d;
                    if (amin > bqp) amin = bqp;
                    for (int64_t a = 0; a < amin; a++) St[j * BQ + a] = -INFINITY;
                }
            }
            /* online softmax along vectors of queries */
            for (int64_t a = 0; a < bqp; a += VL) {
                vf m_old = vload(M + a), m_new = m_old;
                for (int64_t j = 0; j < bk; j++) m_new = vmax(m_new, vload(St + j * BQ + a));
                /* a query with nothing allowed yet keeps m = -inf; exponentiate against 0 */
                vf m_use = vsel(m_new == (vf){0} - INFINITY, (vf){0}, m_new);
                vf al = vexp2(m_old - m_use), l = vload(L + a) * al;
                for (int64_t j = 0; j < bk; j++) {
                    vf e = vexp2(vload(St + j * BQ + a) - m_use);
                    vstore(St + j * BQ + a, e);
                    l += e;
                }
                vstore(M + a, m_new);
                vstore(L + a, l);
                vstore(alpha + a, al);
            }
            for (int64_t a = 0; a < bqp; a++)
                if (alpha[a] != 1.0f)
                    for (int64_t x = 0; x < Dp; x++) A[a * Dp + x] *= alpha[a];
            gemm_pv(bqp, bk, Dp, St, BQ, V, A);
        }
    }
    for (int64_t a = 0; a < bq; a++) {
        int64_t row = (b * acc->n + job->q_local + (qi0 + a) * r) * H + h;
        memcpy(acc->acc + row * D, A + a * Dp, sizeof(float) * (size_t)D);
        acc->m[row] = M[a];
        acc->l[row] = L[a];
    }
}

rda_status rda_cpu_attend_step(rda_context *ctx, rda_cpu_ws *ws, const rda_problem *p,
                               const rda_rows *qr, const rda_rows *kr, const rda_tensor *q,
                               const rda_tensor *k, const rda_tensor *v, rda_acc *acc,
                               int64_t *pairs) {
    char *msg = ctx->msg;
    rda_status st = RDA_STATUS_SUCCESS;
    double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    class_args c = {ws, p, q, k, v, acc, NULL, 0, (float)(scale * 1.4426950408889634)};
    for (int32_t i = 0; i < p->G; i++) {
        /* classes: the distinct offsets among the heads that use pattern i;
         * h0 is the first head of its class */
        for (int64_t h0 = 0; h0 < p->H; h0++) {
            int64_t o = rda_plan_offset(p, h0, i);
            bool seen = o < 0;
            for (int64_t h = 0; h < h0 && !seen; h++) seen = rda_plan_offset(p, h, i) == o;
            if (seen) continue;
            int64_t nh = 0;
            for (int64_t h = h0; h < p->H; h++)
                if (rda_plan_offset(p, h, i) == o) ws->class_heads[nh++] = h;
            int64_t nj = rda_plan_jobs(p, i, o, qr, kr, ws->jobs, ws->jobs_cap);
            RDA_ASSERT(nj <= ws->jobs_cap);
            int64_t nt = 0;
            for (int64_t j = 0; j < nj; j++) {
                *pairs += rda_job_pairs(&ws->jobs[j], p->causal) * p->B * nh;
                for (int64_t t = 0; t < ws->jobs[j].q_count; t += BQ) {
                    RDA_ASSERT(nt < ws->tiles_cap);
                    ws->tile_job[nt] = (int32_t)j;
                    ws->tile_first[nt] = t;
                    nt++;
                }
            }
            c.heads = ws->class_heads;
            c.nheads = nh;
            rda_pool_run(ctx->pool, nt * p->B * nh, attend_tile, &c);
        }
    }
done:
    return st;
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
    int64_t H = acc->H, D = acc->D, n = acc->n;
    int64_t b = idx / (n * H), row = (idx / H) % n, h = idx % H;
    const float *a = acc->acc + idx * D;
    float l = acc->l[idx];
    float inv = l > 0.0f ? f->factor / l : 0.0f;
    const rda_tensor *o = f->o;
    int64_t base = b * o->strides[0] + row * o->strides[1] + h * o->strides[2];
    for (int64_t d = 0; d < D; d++) rda_store_f32(o->data, o->dtype, base + d * o->strides[3], a[d] * inv);
    if (f->lse) {
        float L = l > 0.0f ? (acc->m[idx] + log2f(l)) * 0.6931471805599453f : -INFINITY;
        ((float *)f->lse->data)[b * f->lse->strides[0] + h * f->lse->strides[1] +
                                row * f->lse->strides[2]] = L;
    }
}

void rda_cpu_finalize(rda_context *ctx, const rda_problem *p, const rda_acc *acc, rda_tensor *o,
                      rda_tensor *lse) {
    fin_args f = {p, acc, o, lse, (float)rda_plan_output_factor(p)};
    rda_pool_run(ctx->pool, acc->B * acc->n * acc->H, finalize_rows, &f);
}
