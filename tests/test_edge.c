/* Edge cases: rows with no allowed key give 0 and -inf (never NaN); huge
 * scores stay finite; longnet with one (N, 1) pattern is dense; strided
 * views (a packed QKV buffer) equal contiguous tensors; a caller's scale. */
#include <math.h>

#include "harness.h"

static rda_context *ctx, *ref;

static int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

int main(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    rda_context_create(&cp, &ctx);
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ref);
    const int64_t B = 1, N = 40, H = 4, D = 16, n = B * N * H * D;
    int64_t shape[4] = {B, N, H, D}, lshape[3] = {B, H, N};
    float *q = malloc(4 * n), *k = malloc(4 * n), *v = malloc(4 * n);
    rda_rng rng;
    rda_rng_seed(&rng, 9);
    rda_fill_uniform(q, RDA_DTYPE_F32, n, &rng, -1, 1);
    rda_fill_uniform(k, RDA_DTYPE_F32, n, &rng, -1, 1);
    rda_fill_uniform(v, RDA_DTYPE_F32, n, &rng, -1, 1);
    rda_tensor tq = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, shape), tk = rda_tensor_contiguous(k, RDA_DTYPE_F32, 4, shape),
               tv = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, shape);

    /* unselected rows: groups mode, one pattern of dilation 4 (offset 0):
     * rows 1, 2, 3 of each segment attend to nothing */
    {
        guarded o = guarded_alloc(4 * n, 0xFF), l = guarded_alloc(4 * B * H * N, 0xFF); /* 0xFF.. is NaN */
        rda_tensor to = rda_tensor_contiguous(o.data, RDA_DTYPE_F32, 4, shape), tl = rda_tensor_contiguous(l.data, RDA_DTYPE_F32, 3, lshape);
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.mode = RDA_MODE_GROUPS;
        cfg.num_patterns = 1;
        cfg.patterns[0] = (rda_pattern){8, 4};
        CHECK(rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, &tl) == 0, "dilated forward");
        float *O = o.data, *L = l.data;
        int zeros = 1, inf = 1;
        for (int64_t pos = 0; pos < N; pos++)
            if (pos % 4 != 0)
                for (int64_t h = 0; h < H; h++) {
                    for (int64_t d = 0; d < D; d++) zeros &= O[(pos * H + h) * D + d] == 0.0f && !signbit(O[(pos * H + h) * D + d]);
                    inf &= isinf(L[h * N + pos]) && L[h * N + pos] < 0;
                }
        CHECK(zeros, "rows no pattern selects are exactly +0");
        CHECK(inf, "their LSE is -inf");
        CHECK(all_finite(O, n), "no NaN anywhere in O");
        CHECK(guards_intact(&o) && guards_intact(&l), "guard bytes");
        guarded_free(&o), guarded_free(&l);
    }
    /* causal with a dilated tail: first selected row sees only itself; a
     * segment offset past the tail selects nothing */
    {
        guarded o = guarded_alloc(4 * n, 0xFF);
        rda_tensor to = rda_tensor_contiguous(o.data, RDA_DTYPE_F32, 4, shape);
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.mode = RDA_MODE_LONGNET;
        cfg.causal = 1;
        cfg.num_patterns = 2;
        cfg.patterns[0] = (rda_pattern){35, 5}; /* tail segment [35, 40) */
        cfg.patterns[1] = (rda_pattern){64, 8};
        CHECK(rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, NULL) == 0, "causal dilated forward");
        CHECK(all_finite(o.data, n), "causal dilated: no NaN");
        float *O = o.data;
        int ok = 1; /* row 0, head 0: only key 0 is allowed, by both patterns: O = V[0] */
        for (int64_t d = 0; d < D; d++) ok &= fabsf(O[d] - v[d]) < 1e-6f;
        CHECK(ok, "row 0 head 0 equals V[0]");
        CHECK(guards_intact(&o), "guard bytes");
        guarded_free(&o);
    }
    /* huge scores: |s| ~ 1e4 */
    {
        float *qb = malloc(4 * n), *kb = malloc(4 * n);
        for (int64_t i = 0; i < n; i++) {
            qb[i] = (float)(rda_rng_uniform(&rng, 0, 1) < 0.5 ? -100.0 : 100.0);
            kb[i] = (float)(rda_rng_uniform(&rng, 0, 1) < 0.5 ? -100.0 : 100.0);
        }
        rda_tensor bq = rda_tensor_contiguous(qb, RDA_DTYPE_F32, 4, shape), bk = rda_tensor_contiguous(kb, RDA_DTYPE_F32, 4, shape);
        float *o = malloc(4 * n);
        double *o64 = malloc(8 * n);
        rda_tensor to = rda_tensor_contiguous(o, RDA_DTYPE_F32, 4, shape);
        for (int causal = 0; causal < 2; causal++) {
            rda_config cfg = RDA_CONFIG_INIT;
            cfg.causal = causal;
            CHECK(rda_attention_forward(ctx, &cfg, &bq, &bk, &tv, &to, NULL) == 0, "large forward");
            CHECK(all_finite(o, n), "scores around 1e4 stay finite (causal %d)", causal);
            float *o32 = malloc(4 * n);
            rda_tensor r32 = rda_tensor_contiguous(o32, RDA_DTYPE_F32, 4, shape);
            rda_attention_forward(ref, &cfg, &bq, &bk, &tv, &r32, NULL);
            rda_to_f64(o32, RDA_DTYPE_F32, n, o64);
            rda_error e = rda_compare(o, RDA_DTYPE_F32, o64, n);
            /* scores of 1e4 carry ~1e-3 of fp32 rounding in the exponent */
            CHECK(e.rel_l2 < 1e-2, "large scores close to the reference (rel_l2 %.3g)", e.rel_l2);
            free(o32);
        }
        free(qb), free(kb), free(o), free(o64);
    }
    /* longnet with one pattern (N, 1) is dense; so is groups with G = 1 */
    {
        float *a = malloc(4 * n), *b = malloc(4 * n);
        rda_tensor ta = rda_tensor_contiguous(a, RDA_DTYPE_F32, 4, shape), tb = rda_tensor_contiguous(b, RDA_DTYPE_F32, 4, shape);
        for (int causal = 0; causal < 2; causal++) {
            rda_config dense = RDA_CONFIG_INIT, ln = RDA_CONFIG_INIT;
            dense.causal = ln.causal = causal;
            ln.mode = RDA_MODE_LONGNET;
            ln.num_patterns = 1;
            ln.patterns[0] = (rda_pattern){N, 1};
            rda_attention_forward(ctx, &dense, &tq, &tk, &tv, &ta, NULL);
            rda_attention_forward(ctx, &ln, &tq, &tk, &tv, &tb, NULL);
            double *d = malloc(8 * n);
            rda_to_f64(a, RDA_DTYPE_F32, n, d);
            CHECK(rda_compare(b, RDA_DTYPE_F32, d, n).rel_l2 <= 1e-6, "longnet (N,1) == dense (causal %d)", causal);
            ln.mode = RDA_MODE_GROUPS;
            rda_attention_forward(ctx, &ln, &tq, &tk, &tv, &tb, NULL);
            CHECK(rda_compare(b, RDA_DTYPE_F32, d, n).rel_l2 <= 1e-6, "groups G=1 (N,1) == dense (causal %d)", causal);
            free(d);
        }
        free(a), free(b);
    }
    /* strided views: Q, K, V inside one packed [B, N, 3, H, D] buffer */
    {
        float *qkv = malloc(4 * 3 * n);
        for (int64_t pos = 0; pos < N; pos++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t d = 0; d < D; d++) {
                    qkv[((pos * 3 + 0) * H + h) * D + d] = q[(pos * H + h) * D + d];
                    qkv[((pos * 3 + 1) * H + h) * D + d] = k[(pos * H + h) * D + d];
                    qkv[((pos * 3 + 2) * H + h) * D + d] = v[(pos * H + h) * D + d];
                }
        rda_tensor sq = tq, sk = tk, sv = tv;
        sq.data = qkv, sk.data = qkv + H * D, sv.data = qkv + 2 * H * D;
        sq.strides[0] = sk.strides[0] = sv.strides[0] = 3 * N * H * D;
        sq.strides[1] = sk.strides[1] = sv.strides[1] = 3 * H * D;
        float *a = malloc(4 * n), *b = malloc(4 * n);
        rda_tensor ta = rda_tensor_contiguous(a, RDA_DTYPE_F32, 4, shape), tb = rda_tensor_contiguous(b, RDA_DTYPE_F32, 4, shape);
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.mode = RDA_MODE_LONGNET;
        cfg.num_patterns = 2;
        cfg.patterns[0] = (rda_pattern){8, 1};
        cfg.patterns[1] = (rda_pattern){16, 2};
        cfg.scale = 0.37; /* a caller's scale */
        CHECK(rda_attention_forward(ctx, &cfg, &sq, &sk, &sv, &ta, NULL) == 0, "strided forward: %s", rda_context_last_error(ctx));
        rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &tb, NULL);
        CHECK(memcmp(a, b, 4 * n) == 0, "strided views give the contiguous result bit for bit");
        double *r = malloc(8 * n);
        float *o32 = malloc(4 * n);
        rda_tensor t32 = rda_tensor_contiguous(o32, RDA_DTYPE_F32, 4, shape);
        rda_attention_forward(ref, &cfg, &sq, &sk, &sv, &t32, NULL);
        rda_to_f64(o32, RDA_DTYPE_F32, n, r);
        CHECK(rda_compare(a, RDA_DTYPE_F32, r, n).rel_l2 <= 1e-5, "strided, scale 0.37: matches the reference");
        /* a strided output: O written into a [B, N, 2, H, D] buffer's first half */
        float *o2 = calloc((size_t)(2 * n), 4);
        rda_tensor so = tb;
        so.data = o2;
        so.strides[0] = 2 * N * H * D;
        so.strides[1] = 2 * H * D;
        rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &so, NULL);
        int ok = 1;
        for (int64_t pos = 0; pos < N; pos++)
            for (int64_t i = 0; i < H * D; i++) ok &= o2[pos * 2 * H * D + i] == b[pos * H * D + i] && o2[pos * 2 * H * D + H * D + i] == 0.0f;
        CHECK(ok, "strided output: written where the view says, nowhere else");
        free(qkv), free(a), free(b), free(r), free(o32), free(o2);
    }
    {
        /* the sampled reference writes nrows rows: an output buffer that ends
         * right where q begins is not an alias (a q-shaped view of it would
         * be), and its rows equal the full reference's */
        const int64_t rows[3] = {0, 17, N - 1}, m = 3;
        double *buf = malloc(8 * (size_t)(B * m * H * D + n));
        double *out = buf, *q64 = buf + B * m * H * D, *full = malloc(8 * (size_t)n);
        double *k64 = malloc(8 * (size_t)n), *v64 = malloc(8 * (size_t)n);
        for (int64_t i = 0; i < n; i++) q64[i] = q[i], k64[i] = k[i], v64[i] = v[i];
        rda_tensor tq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, shape),
                   tk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, shape),
                   tv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, shape),
                   tf = rda_tensor_contiguous(full, RDA_DTYPE_F64, 4, shape);
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.causal = true;
        rda_status st = rda_reference_rows(ctx, &cfg, &tq, &tk, &tv, rows, m, out, NULL);
        CHECK(st == RDA_STATUS_SUCCESS, "reference rows next to q: %s (%s)", rda_status_to_string(st),
              rda_context_last_error(ctx));
        rda_attention_forward(ref, &cfg, &tq, &tk, &tv, &tf, NULL);
        double worst = 0;
        for (int64_t j = 0; j < m; j++)
            for (int64_t x = 0; x < H * D; x++) {
                double d = fabs(out[j * H * D + x] - full[rows[j] * H * D + x]);
                if (d > worst) worst = d;
            }
        CHECK(st || worst == 0, "reference rows differ from the full reference by %.3g", worst);
        /* and one that does overlap q is refused */
        st = rda_reference_rows(ctx, &cfg, &tq, &tk, &tv, rows, m, q64 + 8, NULL);
        CHECK(st == RDA_STATUS_ALIASING, "reference rows into q: %s", rda_status_to_string(st));
        free(buf), free(full), free(k64), free(v64);
    }
    {
        /* pattern values far beyond N (SPEC.md, "Edge values"): segments and
         * dilations up to INT64_MAX, on the fast path and through rings, against
         * the reference (which walks the patterns as given), with no signed
         * overflow (the sanitizer build runs this) and a workspace that N, not
         * the pattern, sizes; a segment longer than N equals a segment of N */
        const int64_t big[4] = {INT64_MAX, 4611686018427387904LL, 100000000, 1LL << 40};
        for (int bi = 0; bi < 4; bi++)
            for (int mode = 1; mode <= 2; mode++)
                for (int causal = 0; causal < 2; causal++) {
                    rda_config cfg = RDA_CONFIG_INIT;
                    cfg.mode = (rda_mode)mode;
                    cfg.causal = causal;
                    cfg.num_patterns = 3;
                    cfg.patterns[0] = (rda_pattern){big[bi], big[bi]};
                    cfg.patterns[1] = (rda_pattern){big[bi], 3};
                    cfg.patterns[2] = (rda_pattern){7, 2};
                    float *o1 = malloc(4 * n), *o2 = malloc(4 * n), *o3 = malloc(4 * n);
                    double *r64 = malloc(8 * n), *q64 = malloc(8 * n), *k64 = malloc(8 * n), *v64 = malloc(8 * n);
                    for (int64_t i = 0; i < n; i++) q64[i] = q[i], k64[i] = k[i], v64[i] = v[i];
                    rda_tensor tq = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, shape),
                               tk = rda_tensor_contiguous(k, RDA_DTYPE_F32, 4, shape),
                               tv = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, shape),
                               t1 = rda_tensor_contiguous(o1, RDA_DTYPE_F32, 4, shape),
                               t2 = rda_tensor_contiguous(o2, RDA_DTYPE_F32, 4, shape),
                               t3 = rda_tensor_contiguous(o3, RDA_DTYPE_F32, 4, shape),
                               rq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, shape),
                               rk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, shape),
                               rv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, shape),
                               ro = rda_tensor_contiguous(r64, RDA_DTYPE_F64, 4, shape);
                    rda_status s1 = rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &t1, NULL);
                    int64_t ws = rda_context_workspace_bytes(ctx);
                    rda_status s2 = rda_ring_forward_simulated(ctx, &cfg, 3, &tq, &tk, &tv, &t2, NULL, NULL);
                    rda_status sr = rda_attention_forward(ref, &cfg, &rq, &rk, &rv, &ro, NULL);
                    /* the same with the segments cut to N (offsets h mod r unchanged: r > H here) */
                    rda_config cut = cfg;
                    cut.patterns[0] = (rda_pattern){N, N};
                    cut.patterns[1] = (rda_pattern){N, 3};
                    rda_status s3 = rda_attention_forward(ctx, &cut, &tq, &tk, &tv, &t3, NULL);
                    rda_error e1 = rda_compare(o1, RDA_DTYPE_F32, r64, n), e2 = rda_compare(o2, RDA_DTYPE_F32, r64, n);
                    CHECK(!s1 && !s2 && !sr && !s3 && rda_passes(RDA_DTYPE_F32, e1, 0) && rda_passes(RDA_DTYPE_F32, e2, 0),
                          "patterns of %lld, mode %d causal %d: status %s/%s/%s/%s, rel_l2 %.3g (ring %.3g) (%s)",
                          (long long)big[bi], mode, causal, rda_status_to_string(s1), rda_status_to_string(s2),
                          rda_status_to_string(sr), rda_status_to_string(s3), e1.rel_l2, e2.rel_l2,
                          rda_context_last_error(ctx));
                    CHECK(!memcmp(o1, o3, 4 * (size_t)n), "patterns of %lld, mode %d causal %d: differs from the "
                          "same patterns cut to N", (long long)big[bi], mode, causal);
                    CHECK(ws > 0 && ws < (1 << 24), "patterns of %lld: workspace %lld bytes for N = %lld",
                          (long long)big[bi], (long long)ws, (long long)N);
                    int64_t pairs = 0, pairs_cut = 0;
                    CHECK(rda_count_pairs(&cfg, 1, N, H, &pairs) == 0 && rda_count_pairs(&cut, 1, N, H, &pairs_cut) == 0 &&
                              pairs == pairs_cut && pairs > 0,
                          "patterns of %lld: %lld pairs, %lld cut to N", (long long)big[bi], (long long)pairs,
                          (long long)pairs_cut);
                    free(o1), free(o2), free(o3), free(r64), free(q64), free(k64), free(v64);
                }
    }
    {
        /* non-finite values (SPEC.md, "Edge values"): NaN or Inf in an input,
         * or scores that overflow, give NaN in the rows they reach, never 0
         * with LSE = -inf; other rows stay finite. Fast path and reference,
         * every mode, causal and not. */
        float *q2 = malloc(4 * n), *k2 = malloc(4 * n), *o2 = malloc(4 * n), *l2 = malloc(4 * (size_t)(B * H * N));
        double *q64 = malloc(8 * n), *k64 = malloc(8 * n), *v64 = malloc(8 * n), *o64 = malloc(8 * n);
        float *l64 = malloc(4 * (size_t)(B * H * N));
        for (int what = 0; what < 4; what++)
            for (int mode = 0; mode < 3; mode++)
                for (int causal = 0; causal < 2; causal++) {
                    memcpy(q2, q, 4 * n);
                    memcpy(k2, k, 4 * n);
                    rda_config cfg = RDA_CONFIG_INIT;
                    cfg.mode = (rda_mode)mode;
                    cfg.causal = causal;
                    cfg.num_patterns = 2;
                    cfg.patterns[0] = (rda_pattern){8, 1};
                    cfg.patterns[1] = (rda_pattern){16, 2};
                    const int64_t bad = 9; /* the row (what 0) or key (what 1) made non-finite */
                    if (what == 0) q2[bad * H * D + 1 * D + 3] = NAN;          /* Q row 9, head 1 */
                    if (what == 1) k2[bad * H * D + 2 * D + 5] = INFINITY;     /* K row 9, head 2 */
                    if (what == 2) cfg.scale = 1e300;                            /* every score */
                    if (what == 3)
                        for (int64_t i = 0; i < n; i++) q2[i] *= 1e20f, k2[i] *= 1e20f; /* products overflow fp32 */
                    for (int64_t i = 0; i < n; i++) q64[i] = q2[i], k64[i] = k2[i], v64[i] = v[i];
                    rda_tensor tq = rda_tensor_contiguous(q2, RDA_DTYPE_F32, 4, shape),
                               tk = rda_tensor_contiguous(k2, RDA_DTYPE_F32, 4, shape),
                               tv = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, shape),
                               to = rda_tensor_contiguous(o2, RDA_DTYPE_F32, 4, shape),
                               tl = rda_tensor_contiguous(l2, RDA_DTYPE_F32, 3, lshape),
                               rq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, shape),
                               rk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, shape),
                               rv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, shape),
                               ro = rda_tensor_contiguous(o64, RDA_DTYPE_F64, 4, shape),
                               rl = rda_tensor_contiguous(l64, RDA_DTYPE_F32, 3, lshape);
                    rda_status st = rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, &tl);
                    rda_status sr = what < 2 ? rda_attention_forward(ref, &cfg, &rq, &rk, &rv, &ro, &rl) : 0;
                    /* rows reached: what 0: row 9 of head 1 (where selected); what 1:
                     * rows of head 2 that attend to key 9; what 2, 3: every
                     * selected row. A row is NaN in O and LSE, or else finite,
                     * and the reference agrees on which */
                    int ok = !st && !sr, nan_rows = 0, zero_nan = 0, agree = 1;
                    for (int64_t h = 0; h < H; h++)
                        for (int64_t pos = 0; pos < N; pos++) {
                            float lv = l2[h * N + pos];
                            int any = 0, all = 1;
                            for (int64_t d = 0; d < D; d++) {
                                int x = isnan(o2[(pos * H + h) * D + d]);
                                any |= x, all &= x;
                            }
                            if (any != all || any != (int)isnan(lv)) ok = 0; /* whole rows, O and LSE together */
                            nan_rows += any;
                            if (what >= 2 && !any && isinf(lv) && mode != 1) zero_nan++; /* a silent 0 */
                            if (what < 2) agree &= (int)isnan(l64[h * N + pos]) == (int)isnan(lv);
                        }
                    CHECK(ok && agree && zero_nan == 0 && nan_rows > 0 &&
                              (what >= 2 || nan_rows < H * N),
                          "non-finite case %d mode %d causal %d: status %s/%s, %d NaN rows, rows whole %d, "
                          "reference agrees %d, silent zeros %d",
                          what, mode, causal, rda_status_to_string(st), rda_status_to_string(sr), nan_rows, ok, agree,
                          zero_nan);
                }
        free(q2), free(k2), free(o2), free(l2), free(q64), free(k64), free(v64), free(o64), free(l64);
    }
    free(q), free(k), free(v);
    rda_context_destroy(ctx);
    rda_context_destroy(ref);
    return harness_done("edge");
}
