/* The CUDA backend against the fp64 CPU reference: every mode x causal x
 * dtype x D over odd sizes, H not divisible by G, tails and segments longer
 * than N; guard bytes around device outputs; NaN never; rings of virtual
 * ranks on one GPU equal one rank; host pointers are refused.
 * Exits 77 (skipped) when there is no GPU. RDA_TEST_QUICK=1: a small subset
 * (for compute-sanitizer). */
#include <cuda_runtime_api.h>
#include <math.h>

#include "harness.h"

static rda_context *gpu, *ref, *naive;

/* device buffer with GUARD bytes of 0xA5 on both sides */
typedef struct {
    unsigned char *raw;
    void *data;
    size_t bytes;
} dbuf;

static dbuf dalloc(size_t bytes) {
    dbuf d;
    d.bytes = bytes;
    if (cudaMalloc((void **)&d.raw, bytes + 2 * GUARD) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(2);
    }
    cudaMemset(d.raw, 0xA5, bytes + 2 * GUARD);
    d.data = d.raw + GUARD;
    return d;
}

static int dguards(const dbuf *d) {
    unsigned char g[2 * GUARD];
    cudaMemcpy(g, d->raw, GUARD, cudaMemcpyDeviceToHost);
    cudaMemcpy(g + GUARD, d->raw + GUARD + d->bytes, GUARD, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 2 * GUARD; i++)
        if (g[i] != 0xA5) return 0;
    return 1;
}

typedef struct {
    int64_t B, N, H, D;
} shape4;

static void run_case(shape4 s, const rda_config *cfg, rda_dtype dt, int P, uint64_t seed, const char *what) {
    int64_t n = s.B * s.N * s.H * s.D, nl = s.B * s.H * s.N;
    size_t es = rda_dtype_size(dt);
    void *q = malloc(n * es), *k = malloc(n * es), *v = malloc(n * es), *o = malloc(n * es);
    float *lse = malloc(nl * 4), *lref = malloc(nl * 4);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    rda_fill_uniform(q, dt, n, &rng, -1, 1);
    rda_fill_uniform(k, dt, n, &rng, -1, 1);
    rda_fill_uniform(v, dt, n, &rng, -1, 1);
    dbuf dq = dalloc(n * es), dk = dalloc(n * es), dv = dalloc(n * es), dout = dalloc(n * es), dl = dalloc(nl * 4);
    cudaMemcpy(dq.data, q, n * es, cudaMemcpyHostToDevice);
    cudaMemcpy(dk.data, k, n * es, cudaMemcpyHostToDevice);
    cudaMemcpy(dv.data, v, n * es, cudaMemcpyHostToDevice);
    cudaMemset(dout.data, 0xFF, n * es); /* NaN everywhere: every element must be written */
    int64_t sh[4] = {s.B, s.N, s.H, s.D}, lsh[3] = {s.B, s.H, s.N};
    rda_tensor tq = rda_tensor_contiguous(dq.data, dt, 4, sh), tk = rda_tensor_contiguous(dk.data, dt, 4, sh),
               tv = rda_tensor_contiguous(dv.data, dt, 4, sh), to = rda_tensor_contiguous(dout.data, dt, 4, sh),
               tl = rda_tensor_contiguous(dl.data, RDA_DTYPE_F32, 3, lsh);
    rda_status st = P > 1 ? rda_ring_forward_simulated(gpu, cfg, P, &tq, &tk, &tv, &to, &tl, NULL)
                          : rda_attention_forward(gpu, cfg, &tq, &tk, &tv, &to, &tl);
    if (st == RDA_STATUS_SUCCESS) st = rda_context_synchronize(gpu);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: %s (%s)", what, rda_status_to_string(st), rda_context_last_error(gpu));
    cudaMemcpy(o, dout.data, n * es, cudaMemcpyDeviceToHost);
    cudaMemcpy(lse, dl.data, nl * 4, cudaMemcpyDeviceToHost);
    /* fp64 reference on the same rounded inputs */
    double *q64 = malloc(n * 8), *k64 = malloc(n * 8), *v64 = malloc(n * 8), *o64 = malloc(n * 8);
    rda_to_f64(q, dt, n, q64);
    rda_to_f64(k, dt, n, k64);
    rda_to_f64(v, dt, n, v64);
    rda_tensor rq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, sh), rk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, sh),
               rv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, sh), ro = rda_tensor_contiguous(o64, RDA_DTYPE_F64, 4, sh),
               rl = rda_tensor_contiguous(lref, RDA_DTYPE_F32, 3, lsh);
    rda_attention_forward(ref, cfg, &rq, &rk, &rv, &ro, &rl);
    double nmax = 0;
    if (dt != RDA_DTYPE_F32) {
        void *on = malloc(n * es);
        rda_tensor hq = rda_tensor_contiguous(q, dt, 4, sh), hk = rda_tensor_contiguous(k, dt, 4, sh),
                   hv = rda_tensor_contiguous(v, dt, 4, sh), hn = rda_tensor_contiguous(on, dt, 4, sh);
        rda_attention_forward(naive, cfg, &hq, &hk, &hv, &hn, NULL);
        nmax = rda_compare(on, dt, o64, n).max_abs;
        free(on);
    }
    rda_error e = rda_compare(o, dt, o64, n);
    CHECK(rda_passes(dt, e, nmax), "%s: rel_l2 %.3g max_abs %.3g (naive %.3g) nonfinite %lld", what, e.rel_l2,
          e.max_abs, nmax, (long long)e.nonfinite);
    int lse_ok = 1;
    for (int64_t i = 0; i < nl; i++) {
        if (isinf(lref[i]) || isinf(lse[i])) lse_ok &= lref[i] == lse[i];
        else lse_ok &= fabsf(lse[i] - lref[i]) <= (dt == RDA_DTYPE_F32 ? 1e-4f : 2e-3f) * (1 + fabsf(lref[i]));
    }
    CHECK(lse_ok, "%s: lse", what);
    CHECK(dguards(&dout) && dguards(&dl), "%s: guard bytes", what);
    cudaFree(dq.raw), cudaFree(dk.raw), cudaFree(dv.raw), cudaFree(dout.raw), cudaFree(dl.raw);
    free(q), free(k), free(v), free(o), free(lse), free(lref), free(q64), free(k64), free(v64), free(o64);
}

/* One case of the sweep: a tail (N % w != 0), a segment longer than N for
 * small N, H = 3 (not divisible by G = 2). */
static void sweep_case(const char *tag, int64_t N, int64_t D, rda_dtype dt, int mode, int causal, uint64_t seed) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = (rda_mode)mode;
    cfg.causal = causal;
    cfg.num_patterns = 2;
    cfg.patterns[0] = (rda_pattern){256, 1};
    cfg.patterns[1] = (rda_pattern){1024, 4};
    shape4 s = {N <= 97 ? 2 : 1, N, 3, D};
    char what[160];
    snprintf(what, sizeof what, "%sN=%lld D=%lld %s mode %d causal %d", tag, (long long)N, (long long)D,
             rda_dtype_name(dt), mode, causal);
    run_case(s, &cfg, dt, 1, seed, what);
}

/* Rings of 2 and 4 virtual ranks on one GPU equal one rank: every mode,
 * contiguous and zig-zag (causal and not); bf16_zigzag: the uncausal
 * zig-zag rings in bf16 (else all fp16); one: only P = 2, dense, contiguous. */
static void ring_cases(const char *tag, int64_t N, bool bf16_zigzag, bool one, uint64_t *seed) {
    for (int P = 2; P <= 4; P += 2)
        for (int mode = 0; mode < 3; mode++)
            for (int lay = 0; lay < 3; lay++) {
                if (one && (P > 2 || mode || lay)) continue;
                rda_config cfg = RDA_CONFIG_INIT;
                cfg.mode = (rda_mode)mode;
                cfg.num_patterns = 2;
                cfg.patterns[0] = (rda_pattern){512, 1};
                cfg.patterns[1] = (rda_pattern){1024, 2};
                cfg.layout = lay ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
                cfg.causal = lay == 2;
                shape4 s = {1, N, 4, 64};
                char what[96];
                snprintf(what, sizeof what, "%sring P=%d mode %d %s causal %d", tag, P, mode,
                         lay ? "zig-zag" : "contiguous", cfg.causal);
                run_case(s, &cfg, bf16_zigzag && lay == 1 ? RDA_DTYPE_BF16 : RDA_DTYPE_F16, P, (*seed)++, what);
            }
}

int main(void) {
    if (!rda_cuda_available()) {
        printf("cuda: skipped (no CUDA device, or built without the CUDA backend)\n");
        return 77;
    }
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CUDA;
    CHECK(rda_context_create(&cp, &gpu) == RDA_STATUS_SUCCESS, "CUDA context");
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ref);
    cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
    rda_context_create(&cp, &naive);
    int quick = getenv("RDA_TEST_QUICK") != NULL;

    const int64_t Ns[] = {1, 97, 1000, 4097};
    const int64_t Ds[] = {64, 128, 40};
    const rda_dtype dts[] = {RDA_DTYPE_F16, RDA_DTYPE_BF16, RDA_DTYPE_F32};
    uint64_t seed = 100;
    for (int ni = 0; ni < 4; ni++)
        for (int di = 0; di < 3; di++)
            for (int ti = 0; ti < 3; ti++)
                for (int mode = 0; mode < 3; mode++)
                    for (int causal = 0; causal < 2; causal++) {
                        int64_t N = Ns[ni], D = Ds[di];
                        if (quick && (N > 97 || causal)) continue;
                        if (N == 4097 && (D == 40 || ti == 2)) continue; /* the slow paths: smaller sizes */
                        sweep_case("", N, D, dts[ti], mode, causal, seed++);
                    }
    /* enough work items of short key spans that the backend takes its
     * 64-key-tile kernel (chosen by whole waves: here 2 against 3) */
    for (int c = 0; c < 2 && !quick; c++) {
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.mode = RDA_MODE_GROUPS;
        cfg.causal = c;
        cfg.num_patterns = 2;
        cfg.patterns[0] = (rda_pattern){1024, 1};
        cfg.patterns[1] = (rda_pattern){2048, 2};
        shape4 s = {1, 8192, 8, 64};
        char what[96];
        snprintf(what, sizeof what, "short spans N=8192 %s causal %d", c ? "bf16" : "fp16", c);
        run_case(s, &cfg, c ? RDA_DTYPE_BF16 : RDA_DTYPE_F16, 1, seed++, what);
    }
    ring_cases("", quick ? 96 : 2000, false, false, &seed);
    /* the Hopper D = 64 kernels of 128 and 192 queries per item (a producer
     * warpgroup, consumers taking turns), which the backend picks for long
     * key spans only, forced onto every shape: odd sizes, tails, dilations,
     * causal, bf16, rings of several steps (state merged between steps);
     * in the quick subset, the small uncausal fp16 shapes and one ring */
    for (int rows = 128; rows <= 192; rows += 64) {
        char tag[16];
        snprintf(tag, sizeof tag, "%d", rows);
        setenv("RDA_CUDA_TILE_ROWS", tag, 1);
        rda_context *saved = gpu;
        cp.backend = RDA_BACKEND_CUDA;
        CHECK(rda_context_create(&cp, &gpu) == RDA_STATUS_SUCCESS, "CUDA context, %d rows per item", rows);
        strcat(tag, " rows: ");
        for (int ni = 0; ni < 4; ni++)
            for (int ti = 0; ti < 2; ti++)
                for (int mode = 0; mode < 3; mode++)
                    for (int causal = 0; causal < 2; causal++)
                        if (!quick || (Ns[ni] <= 97 && !causal && !ti))
                            sweep_case(tag, Ns[ni], 64, dts[ti], mode, causal, seed++);
        ring_cases(tag, quick ? 400 : 3000, true, quick, &seed);
        rda_context_destroy(gpu);
        gpu = saved;
        unsetenv("RDA_CUDA_TILE_ROWS");
    }
    /* a bad value of it: calls are refused with a message, nothing written */
    {
        setenv("RDA_CUDA_TILE_ROWS", "100", 1);
        rda_context *bad = NULL;
        cp.backend = RDA_BACKEND_CUDA;
        CHECK(rda_context_create(&cp, &bad) == RDA_STATUS_SUCCESS, "CUDA context with a bad RDA_CUDA_TILE_ROWS");
        unsetenv("RDA_CUDA_TILE_ROWS");
        int64_t sh[4] = {1, 64, 2, 64};
        dbuf d[4];
        for (int i = 0; i < 4; i++) d[i] = dalloc(2 * 64 * 2 * 64);
        rda_tensor t[4];
        for (int i = 0; i < 4; i++) t[i] = rda_tensor_contiguous(d[i].data, RDA_DTYPE_F16, 4, sh);
        unsigned char before[64], after[64];
        cudaMemcpy(before, d[3].data, 64, cudaMemcpyDeviceToHost);
        rda_config cfg = RDA_CONFIG_INIT;
        rda_status st = rda_attention_forward(bad, &cfg, &t[0], &t[1], &t[2], &t[3], NULL);
        cudaMemcpy(after, d[3].data, 64, cudaMemcpyDeviceToHost);
        CHECK(st == RDA_STATUS_INVALID_ARGUMENT && strstr(rda_context_last_error(bad), "RDA_CUDA_TILE_ROWS") &&
                  !memcmp(before, after, 64) && dguards(&d[3]),
              "RDA_CUDA_TILE_ROWS=100 refused: %s (%s)", rda_status_to_string(st), rda_context_last_error(bad));
        for (int i = 0; i < 4; i++) cudaFree(d[i].raw);
        rda_context_destroy(bad);
    }
    /* host memory is refused, nothing written */
    {
        int64_t sh[4] = {1, 8, 1, 64};
        float *h = calloc(4 * 8 * 64, 4);
        rda_tensor t = rda_tensor_contiguous(h, RDA_DTYPE_F32, 4, sh), t2 = t, t3 = t, t4 = t;
        t2.data = h + 512, t3.data = h + 1024, t4.data = h + 1536;
        rda_config cfg = RDA_CONFIG_INIT;
        CHECK(rda_attention_forward(gpu, &cfg, &t, &t2, &t3, &t4, NULL) == RDA_STATUS_INVALID_ARGUMENT,
              "host pointers refused: %s", rda_context_last_error(gpu));
        free(h);
    }
    rda_context_destroy(gpu);
    rda_context_destroy(ref);
    rda_context_destroy(naive);
    return harness_done("cuda");
}
