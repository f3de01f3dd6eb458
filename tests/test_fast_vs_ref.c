/* The CPU fast path against the fp64 reference over a sweep of modes, causal
 * flags, element types, odd sizes, head counts not divisible by G, grouped
 * K/V heads, tails and segments longer than N. Tolerances from SPEC.md. */
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

static rda_context *ctx_fast, *ctx_ref;

static void run_case(size5 s, rda_mode mode, const pattern_set *ps, int causal, rda_dtype dt,
                     uint64_t seed) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = mode;
    cfg.causal = causal;
    cfg.num_patterns = ps->G;
    for (int i = 0; i < ps->G; i++) cfg.patterns[i] = ps->pt[i];
    int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    size_t es = rda_dtype_size(dt);
    void *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    rda_fill_uniform(q, dt, nq, &rng, -1, 1);
    rda_fill_uniform(k, dt, nk, &rng, -1, 1);
    rda_fill_uniform(v, dt, nk, &rng, -1, 1);
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    guarded o = guarded_alloc(nq * es, 0x5A), lse = guarded_alloc(nl * 4, 0x5A);
    rda_tensor tq = rda_tensor_contiguous(q, dt, 4, sq), tk = rda_tensor_contiguous(k, dt, 4, sk),
               tv = rda_tensor_contiguous(v, dt, 4, sk), to = rda_tensor_contiguous(o.data, dt, 4, sq),
               tl = rda_tensor_contiguous(lse.data, RDA_DTYPE_F32, 3, sl);
    rda_status st = rda_attention_forward(ctx_fast, &cfg, &tq, &tk, &tv, &to, &tl);

    /* fp64 reference on the same rounded inputs */
    double *q64 = malloc(nq * 8), *k64 = malloc(nk * 8), *v64 = malloc(nk * 8), *o64 = malloc(nq * 8);
    float *lref = malloc(nl * 4);
    rda_to_f64(q, dt, nq, q64);
    rda_to_f64(k, dt, nk, k64);
    rda_to_f64(v, dt, nk, v64);
    rda_tensor rq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, sq),
               rk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, sk),
               rv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, sk),
               ro = rda_tensor_contiguous(o64, RDA_DTYPE_F64, 4, sq),
               rl = rda_tensor_contiguous(lref, RDA_DTYPE_F32, 3, sl);
    rda_status st_ref = rda_attention_forward(ctx_ref, &cfg, &rq, &rk, &rv, &ro, &rl);

    char what[256];
    snprintf(what, sizeof what, "B%lld N%lld H%lld/%lld D%lld %s %s causal=%d %s",
             (long long)s.B, (long long)s.N, (long long)s.H, (long long)s.Hkv, (long long)s.D,
             mode == RDA_MODE_DENSE ? "dense" : mode == RDA_MODE_GROUPS ? "groups" : "longnet",
             mode == RDA_MODE_DENSE ? "" : ps->name, causal, rda_dtype_name(dt));
    CHECK(st == RDA_STATUS_SUCCESS, "%s: fast status %s (%s)", what, rda_status_to_string(st),
          rda_context_last_error(ctx_fast));
    CHECK(st_ref == RDA_STATUS_SUCCESS, "%s: reference status %s", what, rda_status_to_string(st_ref));
    if (st == RDA_STATUS_SUCCESS && st_ref == RDA_STATUS_SUCCESS) {
        double naive = 0;
        if (dt != RDA_DTYPE_F32) {
            /* the naive algorithm in the same type: the baseline of the max_abs rule */
            void *on = malloc(nq * es);
            rda_tensor tn = rda_tensor_contiguous(on, dt, 4, sq);
            rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
            cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
            rda_context *cn;
            rda_context_create(&cp, &cn);
            rda_attention_forward(cn, &cfg, &tq, &tk, &tv, &tn, NULL);
            naive = rda_compare(on, dt, o64, nq).max_abs;
            rda_context_destroy(cn);
            free(on);
        }
        rda_error e = rda_compare(o.data, dt, o64, nq);
        CHECK(rda_passes(dt, e, naive), "%s: rel_l2 %.3g max_abs %.3g (naive %.3g) nonfinite %lld",
              what, e.rel_l2, e.max_abs, naive, (long long)e.nonfinite);
        /* LSE: same -inf pattern, finite values close (relative to magnitude) */
        int lse_ok = 1;
        double worst = 0;
        for (int64_t i = 0; i < nl; i++) {
            float a = ((float *)lse.data)[i], b = lref[i];
            if (isinf(b) || isinf(a)) {
                if (!(isinf(a) && isinf(b) && a < 0 && b < 0)) lse_ok = 0;
                continue;
            }
            double d = fabs((double)a - b) / (1.0 + fabs(b));
            if (!(d <= (dt == RDA_DTYPE_F32 ? 1e-5 : 2e-3))) lse_ok = 0;
            if (d > worst) worst = d;
        }
        CHECK(lse_ok, "%s: lse differs from the reference (worst %.3g)", what, worst);
    }
    CHECK(guards_intact(&o) && guards_intact(&lse), "%s: guard bytes overwritten", what);
    free(q), free(k), free(v), free(q64), free(k64), free(v64), free(o64), free(lref);
    guarded_free(&o);
    guarded_free(&lse);
}

int main(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    if (getenv("RDA_TEST_THREADS")) cp.num_threads = atoi(getenv("RDA_TEST_THREADS"));
    rda_context_create(&cp, &ctx_fast);
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ctx_ref);

    const size5 sizes[] = {
        {1, 1, 1, 1, 1},     {2, 3, 2, 2, 8},    {1, 97, 3, 3, 63},  {1, 127, 4, 2, 64},
        {1, 1000, 2, 2, 64}, {1, 1025, 3, 1, 32}, {1, 200, 2, 2, 128}, {2, 64, 5, 5, 16},
    };
    const pattern_set sets[] = {
        {"[8,16]/[1,2]", 2, {{8, 1}, {16, 2}}},
        {"[32,64,128]/[1,2,4]", 3, {{32, 1}, {64, 2}, {128, 4}}},
        {"geometric [16..128]/[1..8]", 4, {{16, 1}, {32, 2}, {64, 4}, {128, 8}}},
        {"longer than N [2048,4096]/[1,4]", 2, {{2048, 1}, {4096, 4}}},
        {"r = w [4,7]/[4,3]", 2, {{4, 4}, {7, 3}}},
    };
    const rda_dtype dts[] = {RDA_DTYPE_F32, RDA_DTYPE_F16, RDA_DTYPE_BF16};
    uint64_t seed = 1;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (int causal = 0; causal < 2; causal++)
            for (size_t di = 0; di < 3; di++) {
                bool big = sizes[si].N >= 1000;
                run_case(sizes[si], RDA_MODE_DENSE, &sets[0], causal, dts[di], seed++);
                for (size_t pi = 0; pi < sizeof sets / sizeof *sets; pi++) {
                    if (big && dts[di] != RDA_DTYPE_F32 && pi % 2) continue; /* keep the suite short */
                    run_case(sizes[si], RDA_MODE_GROUPS, &sets[pi], causal, dts[di], seed++);
                    run_case(sizes[si], RDA_MODE_LONGNET, &sets[pi], causal, dts[di], seed++);
                }
            }
    rda_context_destroy(ctx_fast);
    rda_context_destroy(ctx_ref);
    return harness_done("fast_vs_ref");
}
