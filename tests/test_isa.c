/* The CPU fast path at one instruction-set level: `test_isa LEVEL` sets
 * RDA_CPU_ISA=LEVEL before the library's first call (the choice is made once
 * per process; ctest runs it once per level of the build, and once with an
 * unknown name). A level the CPU has must be the one in use and agree with
 * the fp64 reference (SPEC.md tolerances) on shapes that reach every kernel
 * form (fp32 read in place and converted tiles, ragged key tails, causal
 * masks, head dims that leave a partial register tile); a level it lacks,
 * or an unknown name, must be refused with a message and nothing written.
 * `test_isa` alone checks that the default is the best level the CPU has
 * (or the one RDA_CPU_ISA names). Under an emulator with a smaller CPU
 * (qemu-x86_64 -cpu ...) the same runs check the levels a machine lacks. */
#include <math.h>

#include "harness.h"
#include "tile.h"

static void run_case(rda_context *fast, rda_context *ref, int64_t N, int64_t H, int64_t Hkv,
                     int64_t D, rda_mode mode, int causal, rda_dtype dt, uint64_t seed) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = mode;
    cfg.causal = causal;
    if (mode != RDA_MODE_DENSE) {
        cfg.num_patterns = 3;
        cfg.patterns[0] = (rda_pattern){96, 1};
        cfg.patterns[1] = (rda_pattern){300, 3};
        cfg.patterns[2] = (rda_pattern){2048, 8};
    }
    int64_t nq = N * H * D, nk = N * Hkv * D, sq[4] = {1, N, H, D}, sk[4] = {1, N, Hkv, D};
    size_t es = rda_dtype_size(dt);
    void *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es);
    double *q64 = malloc(nq * 8), *k64 = malloc(nk * 8), *v64 = malloc(nk * 8),
           *o64 = malloc(nq * 8);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    rda_fill_uniform(q, dt, nq, &rng, -2, 2);
    rda_fill_uniform(k, dt, nk, &rng, -2, 2);
    rda_fill_uniform(v, dt, nk, &rng, -1, 1);
    rda_to_f64(q, dt, nq, q64);
    rda_to_f64(k, dt, nk, k64);
    rda_to_f64(v, dt, nk, v64);
    guarded o = guarded_alloc(nq * es, 0x5A);
    rda_tensor tq = rda_tensor_contiguous(q, dt, 4, sq), tk = rda_tensor_contiguous(k, dt, 4, sk),
               tv = rda_tensor_contiguous(v, dt, 4, sk),
               to = rda_tensor_contiguous(o.data, dt, 4, sq);
    rda_tensor rq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, sq),
               rk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, sk),
               rv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, sk),
               ro = rda_tensor_contiguous(o64, RDA_DTYPE_F64, 4, sq);
    rda_status st = rda_attention_forward(fast, &cfg, &tq, &tk, &tv, &to, NULL);
    rda_status sr = rda_attention_forward(ref, &cfg, &rq, &rk, &rv, &ro, NULL);
    double naive = 0;
    if (dt != RDA_DTYPE_F32 && !st) {
        rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
        cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
        rda_context *cn;
        void *on = malloc(nq * es);
        rda_tensor tn = rda_tensor_contiguous(on, dt, 4, sq);
        rda_context_create(&cp, &cn);
        rda_attention_forward(cn, &cfg, &tq, &tk, &tv, &tn, NULL);
        naive = rda_compare(on, dt, o64, nq).max_abs;
        rda_context_destroy(cn);
        free(on);
    }
    rda_error e = rda_compare(o.data, dt, o64, nq);
    CHECK(!st && !sr && rda_passes(dt, e, naive) && guards_intact(&o),
          "%s N%lld H%lld/%lld D%lld mode %d causal %d %s: status %s/%s rel_l2 %.3g max_abs %.3g",
          rda_cpu_isa(), (long long)N, (long long)H, (long long)Hkv, (long long)D, (int)mode,
          causal, rda_dtype_name(dt), rda_status_to_string(st), rda_status_to_string(sr), e.rel_l2,
          e.max_abs);
    free(q), free(k), free(v), free(q64), free(k64), free(v64), free(o64);
    guarded_free(&o);
}

/* In a child whose RDA_CPU_ISA names a level this CPU has. */
static int child_level(const char *want) {
    const char *got = rda_cpu_isa();
    CHECK(got && !strcmp(got, want), "RDA_CPU_ISA=%s: the fast path uses %s", want,
          got ? got : "(none)");
    rda_context *fast, *ref;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = 2;
    rda_context_create(&cp, &fast);
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ref);
    uint64_t seed = 11;
    for (int causal = 0; causal < 2; causal++) {
        run_case(fast, ref, 1000, 2, 1, 64, RDA_MODE_DENSE, causal, RDA_DTYPE_F32, seed++);
        run_case(fast, ref, 777, 3, 3, 40, RDA_MODE_DENSE, causal, RDA_DTYPE_F32, seed++);
        run_case(fast, ref, 515, 2, 2, 128, RDA_MODE_DENSE, causal, RDA_DTYPE_BF16, seed++);
        run_case(fast, ref, 1025, 5, 5, 64, RDA_MODE_GROUPS, causal, RDA_DTYPE_F32, seed++);
        run_case(fast, ref, 1025, 4, 2, 24, RDA_MODE_LONGNET, causal, RDA_DTYPE_F16, seed++);
        run_case(fast, ref, 999, 3, 1, 72, RDA_MODE_LONGNET, causal, RDA_DTYPE_F32, seed++);
    }
    rda_context_destroy(fast);
    rda_context_destroy(ref);
    return harness_done(want);
}

/* In a child whose RDA_CPU_ISA must be refused. */
static int child_refused(const char *want) {
    CHECK(rda_cpu_isa() == NULL, "RDA_CPU_ISA=%s accepted as %s", want, rda_cpu_isa());
    rda_context *ctx;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    rda_context_create(&cp, &ctx);
    float q[64] = {0};
    int64_t shape[4] = {1, 4, 1, 16};
    guarded o = guarded_alloc(sizeof q, 0x5A);
    rda_tensor t = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, shape),
               to = rda_tensor_contiguous(o.data, RDA_DTYPE_F32, 4, shape);
    rda_config cfg = RDA_CONFIG_INIT;
    rda_status st = rda_attention_forward(ctx, &cfg, &t, &t, &t, &to, NULL);
    const char *msg = rda_context_last_error(ctx);
    CHECK(st == RDA_STATUS_INVALID_ARGUMENT && strstr(msg, "RDA_CPU_ISA"),
          "RDA_CPU_ISA=%s: status %s, message \"%s\"", want, rda_status_to_string(st), msg);
    CHECK(untouched(&o, 0x5A) && guards_intact(&o), "RDA_CPU_ISA=%s: the output was written", want);
    printf("RDA_CPU_ISA=%s refused: %s\n", want, msg);
    guarded_free(&o);
    rda_context_destroy(ctx);
    return harness_done(want);
}

int main(int argc, char **argv) {
    const rda_cpu_kernels *const *levels;
    int n = rda_cpu_levels(&levels);
    if (argc == 2) {
        setenv("RDA_CPU_ISA", argv[1], 1);
        for (int i = 0; i < n; i++)
            if (!strcmp(argv[1], levels[i]->name))
                return rda_cpu_level_supported(levels[i]) ? child_level(argv[1])
                                                          : child_refused(argv[1]);
        return child_refused(argv[1]);
    }
    CHECK(rda_cpu_level_supported(levels[n - 1]), "the baseline level %s is not supported",
          levels[n - 1]->name);
    const char *env = getenv("RDA_CPU_ISA");
    int best = 0;
    while (!rda_cpu_level_supported(levels[best]))
        best++;
    const char *got = rda_cpu_isa(), *want = env && *env ? env : levels[best]->name;
    CHECK(got && !strcmp(got, want), "in use: %s, expected %s", got ? got : "(refused)", want);
    printf("levels in this build:");
    for (int i = 0; i < n; i++)
        printf(" %s%s", levels[i]->name,
               rda_cpu_level_supported(levels[i]) ? "" : " (not on this CPU)");
    printf("; in use: %s\n", got ? got : "(refused)");
    return harness_done("test_isa");
}
