/* The backward pass (SPEC.md, "Backward pass") on the CPU:
 * - the fast path against the fp64 reference over the forward's sweep
 *   (modes, causal, fp32/fp16/bf16, odd N and D, H not divisible by G,
 *   grouped K/V heads, tails, segments longer than N, overlapping longnet
 *   patterns), with SPEC.md's gradient rule (the naive same-type backward
 *   as the max_abs baseline); guard bytes around every gradient, NaN never;
 * - finite differences of sum(dO * O) in fp64 (the reference forward)
 *   against the reference gradient, every mode, causal or not, GQA;
 * - rows with no allowed key: dq = 0; keys no query reaches: dk = dv = 0;
 * - rings of P = 1..8 virtual ranks equal one rank, contiguous and zig-zag,
 *   N divisible by P and not.
 * RDA_CPU_ISA picks the level (the test command runs every level).
 * RDA_TEST_LIGHT=1 (sanitizer builds): the same code paths at smaller sizes.
 * RDA_TEST_PART=rings: the rings alone (the test command's ThreadSanitizer run). */
#include <math.h>

#include "harness.h"

typedef struct {
    int64_t B, N, H, Hkv, D;
} size5;

typedef struct {
    const char *name;
    int32_t G;
    rda_pattern pt[4];
} pattern_set;

static rda_context *ctx_fast, *ctx_ref, *ctx_naive;

static const char *mode_name(rda_mode m) {
    return m == RDA_MODE_DENSE ? "dense" : m == RDA_MODE_GROUPS ? "groups" : "longnet";
}

static rda_config make_cfg(rda_mode mode, const pattern_set *ps, int causal) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = mode;
    cfg.causal = causal;
    cfg.num_patterns = ps->G;
    for (int i = 0; i < ps->G; i++) cfg.patterns[i] = ps->pt[i];
    return cfg;
}

static double max_abs_of(const double *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* One case: forward on the fast path (O, LSE in the type), then the
 * backward on the fast path, the fp64 reference and the naive same-type
 * one, all from the same O, LSE and dO. */
static void run_case(size5 s, rda_mode mode, const pattern_set *ps, int causal, rda_dtype dt, uint64_t seed) {
    rda_config cfg = make_cfg(mode, ps, causal);
    const int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    const size_t es = rda_dtype_size(dt);
    void *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es), *o = malloc(nq * es), *g = malloc(nq * es);
    float *lse = malloc(nl * 4);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    rda_fill_uniform(q, dt, nq, &rng, -1, 1);
    rda_fill_uniform(k, dt, nk, &rng, -1, 1);
    rda_fill_uniform(v, dt, nk, &rng, -1, 1);
    rda_fill_uniform(g, dt, nq, &rng, -1, 1);
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    rda_tensor tq = rda_tensor_contiguous(q, dt, 4, sq), tk = rda_tensor_contiguous(k, dt, 4, sk),
               tv = rda_tensor_contiguous(v, dt, 4, sk), to = rda_tensor_contiguous(o, dt, 4, sq),
               tg = rda_tensor_contiguous(g, dt, 4, sq), tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl);
    char what[256];
    snprintf(what, sizeof what, "B%lld N%lld H%lld/%lld D%lld %s %s causal=%d %s", (long long)s.B, (long long)s.N,
             (long long)s.H, (long long)s.Hkv, (long long)s.D, mode_name(mode), mode == RDA_MODE_DENSE ? "" : ps->name,
             causal, rda_dtype_name(dt));
    rda_status st = rda_attention_forward(ctx_fast, &cfg, &tq, &tk, &tv, &to, &tl);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: forward %s", what, rda_context_last_error(ctx_fast));

    /* fast backward into guarded buffers (filled with NaN: every element must be written) */
    guarded gq = guarded_alloc(nq * es, 0xFF), gk = guarded_alloc(nk * es, 0xFF), gv = guarded_alloc(nk * es, 0xFF);
    rda_tensor dq = rda_tensor_contiguous(gq.data, dt, 4, sq), dk = rda_tensor_contiguous(gk.data, dt, 4, sk),
               dv = rda_tensor_contiguous(gv.data, dt, 4, sk);
    st = rda_attention_backward(ctx_fast, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &dq, &dk, &dv);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: backward %s (%s)", what, rda_status_to_string(st),
          rda_context_last_error(ctx_fast));

    /* the fp64 reference on the same rounded values */
    double *x64[5], *r64[3];
    const void *src[5] = {q, k, v, o, g};
    const int64_t cnt[5] = {nq, nk, nk, nq, nq};
    for (int i = 0; i < 5; i++) {
        x64[i] = malloc(cnt[i] * 8);
        rda_to_f64(src[i], dt, cnt[i], x64[i]);
    }
    for (int i = 0; i < 3; i++) r64[i] = malloc((i ? nk : nq) * 8);
    rda_tensor rq = rda_tensor_contiguous(x64[0], RDA_DTYPE_F64, 4, sq), rk = rda_tensor_contiguous(x64[1], RDA_DTYPE_F64, 4, sk),
               rv = rda_tensor_contiguous(x64[2], RDA_DTYPE_F64, 4, sk), ro = rda_tensor_contiguous(x64[3], RDA_DTYPE_F64, 4, sq),
               rg = rda_tensor_contiguous(x64[4], RDA_DTYPE_F64, 4, sq), rdq = rda_tensor_contiguous(r64[0], RDA_DTYPE_F64, 4, sq),
               rdk = rda_tensor_contiguous(r64[1], RDA_DTYPE_F64, 4, sk), rdv = rda_tensor_contiguous(r64[2], RDA_DTYPE_F64, 4, sk);
    rda_status sr = rda_attention_backward(ctx_ref, &cfg, &rq, &rk, &rv, &ro, &tl, &rg, &rdq, &rdk, &rdv);
    CHECK(sr == RDA_STATUS_SUCCESS, "%s: reference backward %s", what, rda_context_last_error(ctx_ref));
    /* the naive same-type backward */
    void *n3[3];
    rda_tensor nt[3];
    for (int i = 0; i < 3; i++) {
        n3[i] = malloc((i ? nk : nq) * es);
        nt[i] = rda_tensor_contiguous(n3[i], dt, 4, i ? sk : sq);
    }
    rda_status sn = rda_attention_backward(ctx_naive, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &nt[0], &nt[1], &nt[2]);
    CHECK(sn == RDA_STATUS_SUCCESS, "%s: naive backward %s", what, rda_context_last_error(ctx_naive));
    if (!st && !sr && !sn) {
        const void *got[3] = {gq.data, gk.data, gv.data};
        static const char *names[3] = {"dq", "dk", "dv"};
        for (int i = 0; i < 3; i++) {
            const int64_t n = i ? nk : nq;
            rda_error e = rda_compare(got[i], dt, r64[i], n), en = rda_compare(n3[i], dt, r64[i], n);
            double mref = max_abs_of(r64[i], n);
            /* a gradient that vanishes exactly (one key per row: P = 1, so
             * dS = dP - Delta = 0) is rounding noise in every implementation,
             * the reference included (it reads O and LSE as rounded): there
             * the bound is absolute */
            const bool vanishes = mref < 1e-5;
            CHECK(vanishes ? e.nonfinite == 0 && e.max_abs <= 1e-5 : rda_grad_passes(dt, e, en.max_abs, mref),
                  "%s: %s rel_l2 %.3g max_abs %.3g (naive %.3g, max|ref| %.3g) nonfinite %lld", what, names[i],
                  e.rel_l2, e.max_abs, en.max_abs, mref, (long long)e.nonfinite);
        }
    }
    CHECK(guards_intact(&gq) && guards_intact(&gk) && guards_intact(&gv), "%s: guard bytes", what);
    free(q), free(k), free(v), free(o), free(g), free(lse);
    for (int i = 0; i < 5; i++) free(x64[i]);
    for (int i = 0; i < 3; i++) free(r64[i]), free(n3[i]);
    guarded_free(&gq), guarded_free(&gk), guarded_free(&gv);
}

/* sum(dO * O) of the fp64 reference forward */
static double loss_of(const rda_config *cfg, size5 s, double *q, double *k, double *v, const double *g) {
    const int64_t nq = s.B * s.N * s.H * s.D;
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D};
    double *o = malloc(nq * 8);
    rda_tensor tq = rda_tensor_contiguous(q, RDA_DTYPE_F64, 4, sq), tk = rda_tensor_contiguous(k, RDA_DTYPE_F64, 4, sk),
               tv = rda_tensor_contiguous(v, RDA_DTYPE_F64, 4, sk), to = rda_tensor_contiguous(o, RDA_DTYPE_F64, 4, sq);
    rda_attention_forward(ctx_ref, cfg, &tq, &tk, &tv, &to, NULL);
    double l = 0;
    for (int64_t i = 0; i < nq; i++) l += g[i] * o[i];
    free(o);
    return l;
}

/* Central differences of sum(dO * O) against the fp64 reference gradient,
 * every element of Q, K and V. */
static void finite_differences(rda_mode mode, const pattern_set *ps, int causal, size5 s, uint64_t seed) {
    rda_config cfg = make_cfg(mode, ps, causal);
    const int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    double *x[3], *g = malloc(nq * 8), *o = malloc(nq * 8), *grad[3];
    float *lse = malloc(nl * 4);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    for (int i = 0; i < 3; i++) {
        x[i] = malloc((i ? nk : nq) * 8);
        grad[i] = malloc((i ? nk : nq) * 8);
        rda_fill_uniform(x[i], RDA_DTYPE_F64, i ? nk : nq, &rng, -1, 1);
    }
    rda_fill_uniform(g, RDA_DTYPE_F64, nq, &rng, -1, 1);
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    rda_tensor tq = rda_tensor_contiguous(x[0], RDA_DTYPE_F64, 4, sq), tk = rda_tensor_contiguous(x[1], RDA_DTYPE_F64, 4, sk),
               tv = rda_tensor_contiguous(x[2], RDA_DTYPE_F64, 4, sk), to = rda_tensor_contiguous(o, RDA_DTYPE_F64, 4, sq),
               tg = rda_tensor_contiguous(g, RDA_DTYPE_F64, 4, sq), tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl),
               tdq = rda_tensor_contiguous(grad[0], RDA_DTYPE_F64, 4, sq),
               tdk = rda_tensor_contiguous(grad[1], RDA_DTYPE_F64, 4, sk),
               tdv = rda_tensor_contiguous(grad[2], RDA_DTYPE_F64, 4, sk);
    rda_status st = rda_attention_forward(ctx_ref, &cfg, &tq, &tk, &tv, &to, &tl);
    if (!st) st = rda_attention_backward(ctx_ref, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &tdq, &tdk, &tdv);
    double worst = 0, scale = 0;
    const double h = 1e-5;
    for (int i = 0; i < 3 && !st; i++) {
        const int64_t n = i ? nk : nq;
        scale = fmax(scale, max_abs_of(grad[i], n));
        for (int64_t e = 0; e < n; e++) {
            const double keep = x[i][e];
            x[i][e] = keep + h;
            double lp = loss_of(&cfg, s, x[0], x[1], x[2], g);
            x[i][e] = keep - h;
            double lm = loss_of(&cfg, s, x[0], x[1], x[2], g);
            x[i][e] = keep;
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - grad[i][e]));
        }
    }
    /* (the reference backward reads the forward's LSE in fp32: relative 1e-7) */
    CHECK(!st && worst <= 2e-6 * (1 + scale), "finite differences %s %s causal=%d H%lld/%lld: worst %.3g (max|grad| %.3g) %s",
          mode_name(mode), ps->name, causal, (long long)s.H, (long long)s.Hkv, worst, scale, rda_status_to_string(st));
    for (int i = 0; i < 3; i++) free(x[i]), free(grad[i]);
    free(g), free(o), free(lse);
}

/* groups mode with one pattern of dilation 2 and a head group of offset 1:
 * rows not selected get dq = 0 exactly, keys no query reaches dk = dv = 0 */
static void unreached_rows(void) {
    const int64_t N = 64, H = 2, D = 8, n = N * H * D, nl = H * N;
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = RDA_MODE_GROUPS;
    cfg.num_patterns = 2;
    cfg.patterns[0] = (rda_pattern){16, 2};
    cfg.patterns[1] = (rda_pattern){32, 4};
    float *q = malloc(4 * n), *k = malloc(4 * n), *v = malloc(4 * n), *o = malloc(4 * n), *g = malloc(4 * n),
          *l = malloc(4 * nl), *dq = malloc(4 * n), *dk = malloc(4 * n), *dv = malloc(4 * n);
    rda_rng rng;
    rda_rng_seed(&rng, 77);
    rda_fill_uniform(q, RDA_DTYPE_F32, n, &rng, -1, 1);
    rda_fill_uniform(k, RDA_DTYPE_F32, n, &rng, -1, 1);
    rda_fill_uniform(v, RDA_DTYPE_F32, n, &rng, -1, 1);
    rda_fill_uniform(g, RDA_DTYPE_F32, n, &rng, -1, 1);
    memset(dq, 0xFF, 4 * n), memset(dk, 0xFF, 4 * n), memset(dv, 0xFF, 4 * n);
    int64_t sh[4] = {1, N, H, D}, sl[3] = {1, H, N};
    rda_tensor t[9];
    float *bufs[9] = {q, k, v, o, l, g, dq, dk, dv};
    for (int i = 0; i < 9; i++) t[i] = i == 4 ? rda_tensor_contiguous(l, RDA_DTYPE_F32, 3, sl) : rda_tensor_contiguous(bufs[i], RDA_DTYPE_F32, 4, sh);
    rda_status st = rda_attention_forward(ctx_fast, &cfg, &t[0], &t[1], &t[2], &t[3], &t[4]);
    if (!st) st = rda_attention_backward(ctx_fast, &cfg, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8]);
    /* head 0: pattern (16, 2), offset 0: odd rows unselected; head 1: (32, 4), offset 1 */
    int zero_ok = 1, some = 0;
    for (int64_t pos = 0; pos < N; pos++)
        for (int64_t h = 0; h < H; h++) {
            bool sel = h == 0 ? pos % 2 == 0 : pos % 4 == 1;
            for (int64_t d = 0; d < D; d++) {
                const int64_t i = (pos * H + h) * D + d;
                if (!sel) zero_ok &= dq[i] == 0.0f && dk[i] == 0.0f && dv[i] == 0.0f;
                else some += dq[i] != 0.0f;
                zero_ok &= isfinite(dq[i]) && isfinite(dk[i]) && isfinite(dv[i]);
            }
        }
    CHECK(!st && zero_ok && some > 0, "rows with no allowed key: %s, zeros %d, nonzero selected %d", rda_status_to_string(st),
          zero_ok, some);
    for (int i = 0; i < 9; i++) free(bufs[i]);
}

/* The reference at sampled rows equals the full reference at those rows
 * (each row's dq; dk and dv of the key at that position). */
static void sampled_rows(rda_mode mode, const pattern_set *ps, int causal, uint64_t seed) {
    const size5 s = {2, 150, 4, 2, 16};
    rda_config cfg = make_cfg(mode, ps, causal);
    const int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    double *x[5], *full[3];
    float *lse = malloc(4 * nl);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    const int64_t cnt[5] = {nq, nk, nk, nq, nq};
    for (int i = 0; i < 5; i++) {
        x[i] = malloc(8 * cnt[i]);
        rda_fill_uniform(x[i], RDA_DTYPE_F64, cnt[i], &rng, -1, 1);
    }
    for (int i = 0; i < 3; i++) full[i] = malloc(8 * (i ? nk : nq));
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    rda_tensor t[5], tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl), tf[3];
    for (int i = 0; i < 5; i++) t[i] = rda_tensor_contiguous(x[i], RDA_DTYPE_F64, 4, i == 1 || i == 2 ? sk : sq);
    for (int i = 0; i < 3; i++) tf[i] = rda_tensor_contiguous(full[i], RDA_DTYPE_F64, 4, i ? sk : sq);
    rda_status st = rda_attention_forward(ctx_ref, &cfg, &t[0], &t[1], &t[2], &t[3], &tl);
    if (!st) st = rda_attention_backward(ctx_ref, &cfg, &t[0], &t[1], &t[2], &t[3], &tl, &t[4], &tf[0], &tf[1], &tf[2]);
    const int64_t rows[5] = {0, 7, 64, 99, 149}, m = 5;
    double *rq = malloc(8 * s.B * m * s.H * s.D), *rk = malloc(8 * s.B * m * s.Hkv * s.D), *rv = malloc(8 * s.B * m * s.Hkv * s.D);
    rda_status sr = st ? st : rda_reference_backward_rows(ctx_fast, &cfg, &t[0], &t[1], &t[2], &t[3], &tl, &t[4], rows, m, rq, rk, rv);
    double worst = 0;
    for (int64_t b = 0; b < s.B && !sr; b++)
        for (int64_t j = 0; j < m; j++) {
            for (int64_t e = 0; e < s.H * s.D; e++)
                worst = fmax(worst, fabs(rq[(b * m + j) * s.H * s.D + e] - full[0][(b * s.N + rows[j]) * s.H * s.D + e]));
            for (int64_t e = 0; e < s.Hkv * s.D; e++) {
                worst = fmax(worst, fabs(rk[(b * m + j) * s.Hkv * s.D + e] - full[1][(b * s.N + rows[j]) * s.Hkv * s.D + e]));
                worst = fmax(worst, fabs(rv[(b * m + j) * s.Hkv * s.D + e] - full[2][(b * s.N + rows[j]) * s.Hkv * s.D + e]));
            }
        }
    CHECK(!sr && worst <= 1e-12, "sampled reference backward %s %s causal=%d: %s, worst %.3g", mode_name(mode), ps->name,
          causal, rda_status_to_string(sr), worst);
    for (int i = 0; i < 5; i++) free(x[i]);
    for (int i = 0; i < 3; i++) free(full[i]);
    free(lse), free(rq), free(rk), free(rv);
}

/* Rings of P virtual ranks equal one rank (fast path, fp32). Each rank gets
 * 3 threads of its own (the ring's context has 3P, more than this machine's
 * cores if need be), so that the items of a rank's phases run side by side
 * (a rank with one thread would hide races between them). */
static void ring_case(int64_t N, int P, rda_mode mode, int layout, int causal, rda_dtype dt, uint64_t seed) {
    const pattern_set ps = {"[64,256]/[1,4]", 2, {{64, 1}, {256, 4}}};
    rda_config cfg = make_cfg(mode, &ps, causal);
    cfg.layout = (rda_layout)layout;
    const int64_t H = 4, Hkv = 2, D = 32, nq = N * H * D, nk = N * Hkv * D, nl = H * N;
    const size_t es = rda_dtype_size(dt);
    void *x[5];
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    const int64_t cnt[5] = {nq, nk, nk, nq, nq};
    for (int i = 0; i < 5; i++) {
        x[i] = malloc(cnt[i] * es);
        rda_fill_uniform(x[i], dt, cnt[i], &rng, -1, 1);
    }
    float *lse = malloc(4 * nl);
    int64_t sq[4] = {1, N, H, D}, sk[4] = {1, N, Hkv, D}, sl[3] = {1, H, N};
    rda_tensor tq = rda_tensor_contiguous(x[0], dt, 4, sq), tk = rda_tensor_contiguous(x[1], dt, 4, sk),
               tv = rda_tensor_contiguous(x[2], dt, 4, sk), to = rda_tensor_contiguous(x[3], dt, 4, sq),
               tg = rda_tensor_contiguous(x[4], dt, 4, sq), tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl);
    rda_status st = rda_attention_forward(ctx_fast, &cfg, &tq, &tk, &tv, &to, &tl);
    guarded one[3], ring[3];
    rda_tensor t1[3], tP[3];
    for (int i = 0; i < 3; i++) {
        one[i] = guarded_alloc((i ? nk : nq) * es, 0xFF);
        ring[i] = guarded_alloc((i ? nk : nq) * es, 0xFF);
        t1[i] = rda_tensor_contiguous(one[i].data, dt, 4, i ? sk : sq);
        tP[i] = rda_tensor_contiguous(ring[i].data, dt, 4, i ? sk : sq);
    }
    if (!st) st = rda_attention_backward(ctx_fast, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &t1[0], &t1[1], &t1[2]);
    rda_ring_stats stats[8];
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = 3 * P;
    rda_context *rctx = NULL;
    rda_status sp = rda_context_create(&cp, &rctx);
    if (!sp) sp = rda_ring_backward_simulated(rctx, &cfg, P, &tq, &tk, &tv, &to, &tl, &tg, &tP[0], &tP[1], &tP[2], stats);
    int ok = !st && !sp, guards = 1;
    double worst = 0;
    for (int i = 0; i < 3 && ok; i++) {
        const int64_t n = i ? nk : nq;
        double *r = malloc(n * 8);
        rda_to_f64(one[i].data, dt, n, r);
        rda_error e = rda_compare(ring[i].data, dt, r, n);
        worst = fmax(worst, e.rel_l2);
        ok &= e.nonfinite == 0 && e.rel_l2 <= (dt == RDA_DTYPE_F32 ? 1e-5 : 2e-3);
        free(r);
    }
    for (int i = 0; i < 3; i++) guards &= guards_intact(&one[i]) && guards_intact(&ring[i]);
    int64_t pairs = 0, want = 0;
    for (int r = 0; r < P && !sp; r++) pairs += stats[r].pairs;
    rda_count_pairs(&cfg, 1, N, H, &want);
    CHECK(ok && guards && pairs == want,
          "ring backward N=%lld P=%d %s %s causal=%d %s: %s/%s, rel_l2 against one rank %.3g, pairs %lld of %lld, guards %d (%s)",
          (long long)N, P, mode_name(mode), layout ? "zig-zag" : "contiguous", causal, rda_dtype_name(dt),
          rda_status_to_string(st), rda_status_to_string(sp), worst, (long long)pairs, (long long)want, guards,
          rctx ? rda_context_last_error(rctx) : "");
    rda_context_destroy(rctx);
    for (int i = 0; i < 5; i++) free(x[i]);
    free(lse);
    for (int i = 0; i < 3; i++) guarded_free(&one[i]), guarded_free(&ring[i]);
}

/* config.deterministic on the CPU (whose backward has no atomics and a
 * fixed summation order): accepted, and dQ, dK, dV bit-identical over
 * repeated calls on 4 threads and to the default's, GQA and a zig-zag ring
 * of 3 included. */
static void deterministic_case(rda_mode mode, int causal, uint64_t seed) {
    const int64_t B = 1, N = 301, H = 4, Hkv = 2, D = 32, nq = B * N * H * D, nk = B * N * Hkv * D;
    float *x = malloc(sizeof(float) * (size_t)(3 * nq + 2 * nk)), *lse = malloc(sizeof(float) * (size_t)(B * H * N));
    float *g[3][3]; /* [run][dq, dk, dv] */
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    rda_fill_uniform(x, RDA_DTYPE_F32, 3 * nq + 2 * nk, &rng, -1, 1);
    int64_t sq[4] = {B, N, H, D}, sk[4] = {B, N, Hkv, D}, sl[3] = {B, H, N};
    rda_tensor q = rda_tensor_contiguous(x, RDA_DTYPE_F32, 4, sq), k = rda_tensor_contiguous(x + nq, RDA_DTYPE_F32, 4, sk),
               v = rda_tensor_contiguous(x + nq + nk, RDA_DTYPE_F32, 4, sk),
               o = rda_tensor_contiguous(x + nq + 2 * nk, RDA_DTYPE_F32, 4, sq),
               dout = rda_tensor_contiguous(x + 2 * nq + 2 * nk, RDA_DTYPE_F32, 4, sq),
               l = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl);
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = mode;
    cfg.causal = causal;
    cfg.layout = RDA_LAYOUT_ZIGZAG;
    cfg.num_patterns = mode == RDA_MODE_DENSE ? 0 : 2;
    cfg.patterns[0] = (rda_pattern){64, 1};
    cfg.patterns[1] = (rda_pattern){128, 2};
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = 4;
    rda_context *c = NULL;
    rda_context_create(&cp, &c);
    rda_status st = rda_attention_forward(c, &cfg, &q, &k, &v, &o, &l);
    for (int run = 0; run < 3; run++) {
        for (int i = 0; i < 3; i++) g[run][i] = malloc(sizeof(float) * (size_t)(i ? nk : nq));
        rda_tensor dq = rda_tensor_contiguous(g[run][0], RDA_DTYPE_F32, 4, sq),
                   dk = rda_tensor_contiguous(g[run][1], RDA_DTYPE_F32, 4, sk),
                   dv = rda_tensor_contiguous(g[run][2], RDA_DTYPE_F32, 4, sk);
        cfg.deterministic = run > 0; /* run 0: the default */
        if (!st)
            st = run == 2 ? rda_ring_backward_simulated(c, &cfg, 3, &q, &k, &v, &o, &l, &dout, &dq, &dk, &dv, NULL)
                          : rda_attention_backward(c, &cfg, &q, &k, &v, &o, &l, &dout, &dq, &dk, &dv);
    }
    CHECK(st == RDA_STATUS_SUCCESS, "deterministic mode %d causal %d: %s", mode, causal, rda_context_last_error(c));
    for (int i = 0; i < 3 && !st; i++)
        CHECK(!memcmp(g[0][i], g[1][i], sizeof(float) * (size_t)(i ? nk : nq)),
              "deterministic mode %d causal %d: gradient %d bit-identical to the default's", mode, causal, i);
    /* a ring sums in another order: equal within rounding, not bitwise */
    for (int i = 0; i < 3 && !st; i++) {
        double num = 0, den = 0;
        for (int64_t j = 0; j < (i ? nk : nq); j++) {
            num += ((double)g[2][i][j] - g[0][i][j]) * ((double)g[2][i][j] - g[0][i][j]);
            den += (double)g[0][i][j] * g[0][i][j];
        }
        CHECK(sqrt(num / (den > 0 ? den : 1)) <= 1e-5, "deterministic ring of 3, mode %d causal %d: gradient %d", mode,
              causal, i);
    }
    rda_config bad = cfg;
    bad.deterministic = 2;
    rda_tensor dq = rda_tensor_contiguous(g[0][0], RDA_DTYPE_F32, 4, sq), dk = rda_tensor_contiguous(g[0][1], RDA_DTYPE_F32, 4, sk),
               dv = rda_tensor_contiguous(g[0][2], RDA_DTYPE_F32, 4, sk);
    CHECK(rda_attention_backward(c, &bad, &q, &k, &v, &o, &l, &dout, &dq, &dk, &dv) == RDA_STATUS_INVALID_ARGUMENT &&
              !memcmp(g[0][0], g[1][0], sizeof(float) * (size_t)nq),
          "deterministic = 2 refused, nothing written");
    rda_context_destroy(c);
    for (int run = 0; run < 3; run++)
        for (int i = 0; i < 3; i++) free(g[run][i]);
    free(x), free(lse);
}

int main(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    if (getenv("RDA_TEST_THREADS")) cp.num_threads = atoi(getenv("RDA_TEST_THREADS"));
    rda_context_create(&cp, &ctx_fast);
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ctx_ref);
    cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
    rda_context_create(&cp, &ctx_naive);

    const size5 sizes[] = {
        {1, 1, 1, 1, 1}, {2, 3, 2, 2, 8}, {1, 97, 3, 3, 63}, {1, 130, 4, 2, 64}, {1, 300, 3, 1, 40}, {1, 200, 2, 2, 128},
    };
    const pattern_set sets[] = {
        {"[8,16]/[1,2]", 2, {{8, 1}, {16, 2}}},
        {"[32,64,128]/[1,2,4]", 3, {{32, 1}, {64, 2}, {128, 4}}},
        {"geometric [16..128]/[1..8]", 4, {{16, 1}, {32, 2}, {64, 4}, {128, 8}}},
        {"longer than N [2048,4096]/[1,4]", 2, {{2048, 1}, {4096, 4}}},
        {"overlapping [64,64]/[1,2]", 2, {{64, 1}, {64, 2}}},
    };
    const rda_dtype dts[] = {RDA_DTYPE_F32, RDA_DTYPE_F16, RDA_DTYPE_BF16};
    const int light = getenv("RDA_TEST_LIGHT") != NULL;
    const int rings_only = getenv("RDA_TEST_PART") && !strcmp(getenv("RDA_TEST_PART"), "rings");
    uint64_t seed = 1;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes && !rings_only; si++)
        for (int causal = 0; causal < 2; causal++)
            for (size_t di = 0; di < 3; di++) {
                run_case(sizes[si], RDA_MODE_DENSE, &sets[0], causal, dts[di], seed++);
                for (size_t pi = 0; pi < sizeof sets / sizeof *sets; pi++) {
                    if (sizes[si].N >= 200 && dts[di] != RDA_DTYPE_F32 && (pi % 2 || light)) continue; /* keep the suite short */
                    run_case(sizes[si], RDA_MODE_GROUPS, &sets[pi], causal, dts[di], seed++);
                    run_case(sizes[si], RDA_MODE_LONGNET, &sets[pi], causal, dts[di], seed++);
                }
            }
    /* several key and query tiles of one job, causal tiles cut by the mask */
    if (!rings_only) {
        run_case((size5){1, light ? 400 : 1000, 2, 1, 64}, RDA_MODE_DENSE, &sets[0], 1, RDA_DTYPE_F32, seed++);
        run_case((size5){1, light ? 400 : 1000, 2, 2, 64}, RDA_MODE_LONGNET, &sets[1], 0, RDA_DTYPE_BF16, seed++);
    }

    const size5 small = {1, 12, 2, 1, 4};
    for (int causal = 0; causal < 2 && !rings_only; causal++) {
        finite_differences(RDA_MODE_DENSE, &sets[0], causal, small, seed++);
        finite_differences(RDA_MODE_GROUPS, &sets[0], causal, small, seed++);
        finite_differences(RDA_MODE_LONGNET, &sets[0], causal, small, seed++);
        finite_differences(RDA_MODE_LONGNET, &sets[4], causal, (size5){1, 10, 2, 2, 3}, seed++);
    }
    if (!rings_only) unreached_rows();
    for (int mode = 0; mode < 3 && !rings_only; mode++)
        for (int causal = 0; causal < 2; causal++) deterministic_case((rda_mode)mode, causal, seed++);
    for (int mode = 0; mode < 3 && !rings_only; mode++)
        for (int causal = 0; causal < 2; causal++) {
            sampled_rows((rda_mode)mode, &sets[1], causal, seed++);
            sampled_rows((rda_mode)mode, &sets[4], causal, seed++);
        }

    for (int P = 1; P <= 8; P++)
        for (int mode = 0; mode < 3; mode++)
            for (int lay = 0; lay < 2; lay++)
                for (int causal = 0; causal < 2; causal++) {
                    if (lay && P * 2 > 600) continue;
                    const int64_t N = ((P + mode + lay + causal) % 2 ? 600 : 601) / (light ? 2 : 1); /* divisible by P or not */
                    ring_case(N, P, (rda_mode)mode, lay, causal, (P + mode) % 3 == 0 ? RDA_DTYPE_F16 : RDA_DTYPE_F32,
                              seed++);
                }
    rda_context_destroy(ctx_fast);
    rda_context_destroy(ctx_ref);
    rda_context_destroy(ctx_naive);
    return harness_done("backward");
}
