/* The CUDA backend against the fp64 CPU reference: every mode x causal x
 * dtype x D over odd sizes, H not divisible by G, tails and segments longer
 * than N; guard bytes around device outputs; NaN never; rings of virtual
 * ranks on one GPU equal one rank; host pointers are refused.
 * Exits 77 (skipped) when there is no GPU. RDA_TEST_QUICK=1: a small subset
 * (for compute-sanitizer). RDA_TEST_PART=rings: the ring cases alone (after
 * a change to the ring loop or the engines). */
#include <cuda_runtime_api.h>
#include <math.h>

#include "harness.h"
#include "cuda_harness.h"

static rda_context *gpu, *ref, *naive;

/* device buffer with GUARD bytes of 0xA5 on both sides (payload 0xA5 too) */
static dbuf dalloc(size_t bytes) { return dalloc_fill(bytes, 0xA5); }

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
    dput(dq.data, q, n * es);
    dput(dk.data, k, n * es);
    dput(dv.data, v, n * es);
    dset(dout.data, 0xFF, n * es); /* NaN everywhere: every element must be written */
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

/* A ring of P virtual ranks on one GPU at a size where its kernels run
 * several waves and its tables do not fit in a launch: the whole output
 * against one rank's on the same GPU (rel_l2 within the type's bound of
 * SPEC.md), and both against the fp64 reference on 64 sampled rows (spread
 * over every rank's rows). */
static void ring_large(int64_t N, int P, int mode, int lay, int causal, rda_dtype dt, int64_t D, uint64_t seed,
                       const char *tag) {
    const int64_t H = 4, n = N * H * D, nl = H * N;
    size_t es = rda_dtype_size(dt);
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = (rda_mode)mode;
    cfg.causal = causal;
    cfg.layout = lay ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
    cfg.num_patterns = 3;
    cfg.patterns[0] = (rda_pattern){2048, 1};
    cfg.patterns[1] = (rda_pattern){8192, 4};
    cfg.patterns[2] = (rda_pattern){32768, 16};
    void *h[3], *o1 = malloc(n * es), *oP = malloc(n * es);
    float *l1 = malloc(nl * 4), *lP = malloc(nl * 4);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    dbuf d[3], d1 = dalloc(n * es), dP = dalloc(n * es), dl1 = dalloc(nl * 4), dlP = dalloc(nl * 4);
    int64_t sh[4] = {1, N, H, D}, lsh[3] = {1, H, N};
    rda_tensor t[3];
    for (int i = 0; i < 3; i++) {
        h[i] = malloc(n * es);
        rda_fill_uniform(h[i], dt, n, &rng, -1, 1);
        d[i] = dalloc(n * es);
        dput(d[i].data, h[i], n * es);
        t[i] = rda_tensor_contiguous(d[i].data, dt, 4, sh);
    }
    dset(d1.data, 0xFF, n * es);
    dset(dP.data, 0xFF, n * es);
    rda_tensor to1 = rda_tensor_contiguous(d1.data, dt, 4, sh), toP = rda_tensor_contiguous(dP.data, dt, 4, sh),
               tl1 = rda_tensor_contiguous(dl1.data, RDA_DTYPE_F32, 3, lsh),
               tlP = rda_tensor_contiguous(dlP.data, RDA_DTYPE_F32, 3, lsh);
    char what[192];
    snprintf(what, sizeof what, "%sring N=%lld P=%d mode %d %s causal %d %s D=%lld", tag, (long long)N, P, mode,
             lay ? "zig-zag" : "contiguous", causal, rda_dtype_name(dt), (long long)D);
    rda_status s1 = rda_attention_forward(gpu, &cfg, &t[0], &t[1], &t[2], &to1, &tl1);
    if (!s1) s1 = rda_context_synchronize(gpu);
    rda_status sP = rda_ring_forward_simulated(gpu, &cfg, P, &t[0], &t[1], &t[2], &toP, &tlP, NULL);
    if (!sP) sP = rda_context_synchronize(gpu);
    CHECK(!s1 && !sP, "%s: %s / %s (%s)", what, rda_status_to_string(s1), rda_status_to_string(sP),
          rda_context_last_error(gpu));
    cudaMemcpy(o1, d1.data, n * es, cudaMemcpyDeviceToHost);
    cudaMemcpy(oP, dP.data, n * es, cudaMemcpyDeviceToHost);
    cudaMemcpy(l1, dl1.data, nl * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(lP, dlP.data, nl * 4, cudaMemcpyDeviceToHost);
    /* ring against one rank, every element */
    double *o164 = malloc(n * 8);
    rda_to_f64(o1, dt, n, o164);
    rda_error e = rda_compare(oP, dt, o164, n);
    /* LSE: the bound run_case uses against the fp64 reference (the half
     * types' kernels sum probabilities rounded to the type) */
    const float ltol = dt == RDA_DTYPE_F32 ? 1e-4f : 2e-3f;
    int lse_ok = 1;
    for (int64_t i = 0; i < nl; i++) {
        if (isinf(l1[i]) || isinf(lP[i])) lse_ok &= l1[i] == lP[i];
        else lse_ok &= fabsf(lP[i] - l1[i]) <= ltol * (1 + fabsf(l1[i]));
    }
    CHECK(e.nonfinite == 0 && e.rel_l2 <= rda_tolerance(dt) && lse_ok,
          "%s: against one rank rel_l2 %.3g max_abs %.3g nonfinite %lld, lse %s", what, e.rel_l2, e.max_abs,
          (long long)e.nonfinite, lse_ok ? "equal" : "differs");
    /* both against the fp64 reference on sampled rows */
    enum { M = 64 };
    int64_t rows[M];
    for (int j = 0; j < M; j++) rows[j] = (int64_t)((double)j * (double)N / M) + (j * 7919) % (N / M > 0 ? N / M : 1);
    rows[M - 1] = N - 1;
    int64_t m = N < M ? N : M;
    if (N < M)
        for (int j = 0; j < m; j++) rows[j] = j;
    double *q64 = malloc(n * 8), *k64 = malloc(n * 8), *v64 = malloc(n * 8), *ref64 = malloc(m * H * D * 8);
    rda_to_f64(h[0], dt, n, q64);
    rda_to_f64(h[1], dt, n, k64);
    rda_to_f64(h[2], dt, n, v64);
    rda_tensor rq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, sh), rk = rda_tensor_contiguous(k64, RDA_DTYPE_F64, 4, sh),
               rv = rda_tensor_contiguous(v64, RDA_DTYPE_F64, 4, sh);
    float lref[4 * M];
    rda_status sr = rda_reference_rows(ref, &cfg, &rq, &rk, &rv, rows, m, ref64, lref);
    CHECK(!sr, "%s: sampled reference %s", what, rda_status_to_string(sr));
    rda_error e1 = rda_compare_rows(o1, dt, ref64, rows, m, H * D), eP = rda_compare_rows(oP, dt, ref64, rows, m, H * D);
    CHECK(!sr && e1.nonfinite == 0 && eP.nonfinite == 0 && e1.rel_l2 <= rda_tolerance(dt) &&
              eP.rel_l2 <= rda_tolerance(dt),
          "%s: sampled rows against fp64: one rank rel_l2 %.3g (%lld nonfinite), ring %.3g (%lld)", what,
          e1.rel_l2, (long long)e1.nonfinite, eP.rel_l2, (long long)eP.nonfinite);
    int lref_ok = 1;
    for (int64_t hh = 0; hh < H && !sr; hh++)
        for (int64_t j = 0; j < m; j++) {
            float want = lref[hh * m + j], a = l1[hh * N + rows[j]], b = lP[hh * N + rows[j]];
            if (isinf(want)) lref_ok &= a == want && b == want;
            else lref_ok &= fabsf(a - want) <= ltol * (1 + fabsf(want)) && fabsf(b - want) <= ltol * (1 + fabsf(want));
        }
    CHECK(lref_ok, "%s: sampled LSE against fp64", what);
    CHECK(dguards(&d1) && dguards(&dP) && dguards(&dl1) && dguards(&dlP), "%s: guard bytes", what);
    for (int i = 0; i < 3; i++) cudaFree(d[i].raw), free(h[i]);
    cudaFree(d1.raw), cudaFree(dP.raw), cudaFree(dl1.raw), cudaFree(dlP.raw);
    free(o1), free(oP), free(l1), free(lP), free(o164), free(q64), free(k64), free(v64), free(ref64);
}

/* One context, calls of growing size and of the one-pass and finishing-pass
 * kinds in turn: a call must not take the row state left by a smaller one
 * for cleared (the state of the larger call's extra rows is whatever the
 * workspace held). Each call against the fp64 reference (run_case). */
static void growing_calls(uint64_t *seed) {
    const int64_t Ns[] = {7, 1000, 3000};
    for (int i = 0; i < 3; i++)
        for (int mode = 1; mode <= 2; mode++) { /* groups (one pass), then longnet (finishing pass) */
            rda_config cfg = RDA_CONFIG_INIT;
            cfg.mode = (rda_mode)mode;
            cfg.num_patterns = 3;
            cfg.patterns[0] = (rda_pattern){2048, 1};
            cfg.patterns[1] = (rda_pattern){8192, 4};
            cfg.patterns[2] = (rda_pattern){32768, 16};
            shape4 s = {1, Ns[i], 4, 64};
            char what[96];
            snprintf(what, sizeof what, "growing calls N=%lld mode %d", (long long)Ns[i], mode);
            run_case(s, &cfg, RDA_DTYPE_BF16, 1, (*seed)++, what);
        }
}

/* Non-finite values (SPEC.md, "Edge values"), one rank and a ring of 2,
 * every mode, causal and not: what 0: a NaN in one element of Q (row 9,
 * head 1), fp16; 1: an Inf in one of K (row 9, head 2), fp16; 2: a scale of
 * 1e300 (every score +-inf: the tensor-core kernels), fp16; 3: fp32 inputs
 * times 1e20 (products overflow fp32: the CUDA-core kernel). The rows
 * reached are NaN in O and LSE, whole; the others are finite; never 0 with
 * LSE = -inf where a key was allowed (which rows have an allowed key: the
 * fp64 reference on the finite inputs, LSE > -inf). */
static void nonfinite_cases(uint64_t *seed) {
    const int64_t N = 300, H = 4, D = 64, n = N * H * D, nl = H * N;
    for (int what = 0; what < 4; what++)
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++)
                for (int P = 1; P <= 2; P++) {
                    rda_config cfg = RDA_CONFIG_INIT;
                    cfg.mode = (rda_mode)mode;
                    cfg.causal = causal;
                    cfg.num_patterns = 2;
                    cfg.patterns[0] = (rda_pattern){64, 1};
                    cfg.patterns[1] = (rda_pattern){128, 2};
                    const rda_dtype dt = what == 3 ? RDA_DTYPE_F32 : RDA_DTYPE_F16;
                    const size_t es = rda_dtype_size(dt);
                    void *h[3], *o = malloc(es * n);
                    float *l = malloc(4 * nl), *lref = malloc(4 * nl);
                    double *x64[3], *o64 = malloc(8 * n);
                    rda_rng rng;
                    rda_rng_seed(&rng, (*seed)++);
                    dbuf d[5];
                    int64_t sh[4] = {1, N, H, D}, lsh[3] = {1, H, N};
                    rda_tensor t[5], r64[4];
                    for (int i = 0; i < 3; i++) {
                        h[i] = malloc(es * n);
                        x64[i] = malloc(8 * n);
                        rda_fill_uniform(h[i], dt, n, &rng, -1, 1);
                        rda_to_f64(h[i], dt, n, x64[i]);
                        r64[i] = rda_tensor_contiguous(x64[i], RDA_DTYPE_F64, 4, sh);
                    }
                    r64[3] = rda_tensor_contiguous(o64, RDA_DTYPE_F64, 4, sh);
                    rda_tensor rl = rda_tensor_contiguous(lref, RDA_DTYPE_F32, 3, lsh);
                    rda_status sr = rda_attention_forward(ref, &cfg, &r64[0], &r64[1], &r64[2], &r64[3], &rl);
                    if (what == 0) ((uint16_t *)h[0])[9 * H * D + 1 * D + 3] = 0x7E00; /* fp16 NaN */
                    if (what == 1) ((uint16_t *)h[1])[9 * H * D + 2 * D + 5] = 0x7C00; /* fp16 +Inf */
                    if (what == 2) cfg.scale = 1e300;
                    if (what == 3)
                        for (int i = 0; i < 2; i++)
                            for (int64_t e = 0; e < n; e++) ((float *)h[i])[e] *= 1e20f;
                    for (int i = 0; i < 5; i++) {
                        d[i] = dalloc(i < 4 ? es * n : 4 * nl);
                        if (i < 3) dput(d[i].data, h[i], es * n);
                        t[i] = i < 4 ? rda_tensor_contiguous(d[i].data, dt, 4, sh)
                                     : rda_tensor_contiguous(d[i].data, RDA_DTYPE_F32, 3, lsh);
                    }
                    rda_status st = P > 1 ? rda_ring_forward_simulated(gpu, &cfg, P, &t[0], &t[1], &t[2], &t[3], &t[4], NULL)
                                          : rda_attention_forward(gpu, &cfg, &t[0], &t[1], &t[2], &t[3], &t[4]);
                    if (!st) st = rda_context_synchronize(gpu);
                    cudaMemcpy(o, d[3].data, es * n, cudaMemcpyDeviceToHost);
                    cudaMemcpy(l, d[4].data, 4 * nl, cudaMemcpyDeviceToHost);
                    int whole = 1, nan_rows = 0, silent = 0, keyed = 0;
                    for (int64_t hh = 0; hh < H; hh++)
                        for (int64_t pos = 0; pos < N; pos++) {
                            int any = 0, all = 1;
                            for (int64_t x = 0; x < D; x++) {
                                const int64_t e = (pos * H + hh) * D + x;
                                const uint16_t b = ((const uint16_t *)o)[e];
                                int isn = dt == RDA_DTYPE_F32 ? isnan(((const float *)o)[e]) : (b & 0x7C00) == 0x7C00 && (b & 0x3FF);
                                any |= isn, all &= isn;
                            }
                            whole &= any == all && any == (int)isnan(l[hh * N + pos]);
                            nan_rows += any;
                            const int has_key = lref[hh * N + pos] > -INFINITY;
                            keyed += has_key;
                            silent += has_key && !any && isinf(l[hh * N + pos]);
                        }
                    /* what 2 and 3 reach every row with a key */
                    const int reached = what < 2 ? nan_rows > 0 && nan_rows < H * N : nan_rows == keyed;
                    CHECK(!st && !sr && whole && reached && silent == 0,
                          "non-finite case %d (%s) mode %d causal %d P=%d: %s, %d NaN rows of %d with a key, whole %d, "
                          "silent zeros %d",
                          what, rda_dtype_name(dt), mode, causal, P, rda_status_to_string(st), nan_rows, keyed, whole,
                          silent);
                    for (int i = 0; i < 5; i++) cudaFree(d[i].raw);
                    for (int i = 0; i < 3; i++) free(h[i]), free(x64[i]);
                    free(o), free(l), free(lref), free(o64);
                }
}

/* The large-ring sweep: every P = 2..8 over N from 1 to 65536 (uneven
 * splits where P does not divide N), each (N, P) with one combination of
 * mode, layout, causal flag, element type and head dim, rotating so that
 * every value of each is met at the large sizes. */
static void ring_sweep(const char *tag, bool quick, uint64_t *seed) {
    const int64_t Ns[] = {2, 7, 1000, 8192, 30001, 65536};
    int i = 0;
    for (int ni = 0; ni < 6; ni++)
        for (int P = 2; P <= 8; P++) {
            int64_t N = Ns[ni];
            if (P > N) continue;
            if (quick && (N > 1000 || P > 3)) continue;
            int mode = i % 3, lay = (i / 3) % 2, causal = (i / 2) % 2 || lay;
            rda_dtype dt = (i / 5) % 2 ? RDA_DTYPE_BF16 : RDA_DTYPE_F16;
            int64_t D = (i / 7) % 3 == 2 ? 128 : 64;
            if (lay == 1 && i % 4 == 1) causal = 0; /* zig-zag without the causal mask too */
            if (N < 2 * P) lay = 0;                  /* zig-zag needs two chunks a rank */
            ring_large(N, P, mode, lay, causal, dt, D, (*seed)++, tag);
            i++;
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
    harness_begin();
    int quick = getenv("RDA_TEST_QUICK") != NULL;
    const int rings_only = getenv("RDA_TEST_PART") && !strcmp(getenv("RDA_TEST_PART"), "rings");

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
                        if (rings_only || (quick && (N > 97 || causal))) continue;
                        if (N == 4097 && (D == 40 || ti == 2)) continue; /* the slow paths: smaller sizes */
                        sweep_case("", N, D, dts[ti], mode, causal, seed++);
                    }
    harness_part("one rank, N <= 4097");
    /* enough work items of short key spans that the backend takes its
     * 64-key-tile kernel (chosen by whole waves: here 2 against 3) */
    for (int c = 0; c < 2 && !quick && !rings_only; c++) {
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
    harness_part("short spans, rings");
    if (!rings_only) growing_calls(&seed);
    nonfinite_cases(&seed);
    /* pattern values far beyond N (SPEC.md, "Edge values"), up to INT64_MAX */
    for (int bi = 0; bi < 3 && !quick; bi++)
        for (int mode = 1; mode <= 2; mode++)
            for (int causal = 0; causal < 2; causal++) {
                const int64_t big[3] = {INT64_MAX, 4611686018427387904LL, 100000000};
                rda_config cfg = RDA_CONFIG_INIT;
                cfg.mode = (rda_mode)mode;
                cfg.causal = causal;
                cfg.num_patterns = 3;
                cfg.patterns[0] = (rda_pattern){big[bi], big[bi]};
                cfg.patterns[1] = (rda_pattern){big[bi], 3};
                cfg.patterns[2] = (rda_pattern){700, 2};
                shape4 s = {1, 1000, 4, 64};
                char what[96];
                snprintf(what, sizeof what, "patterns of %lld mode %d causal %d", (long long)big[bi], mode, causal);
                run_case(s, &cfg, RDA_DTYPE_F16, 1, seed++, what);
                run_case(s, &cfg, RDA_DTYPE_F16, 3, seed++, what);
            }
    harness_part("growing calls, non-finite inputs, large patterns");
    ring_sweep("", quick, &seed);
    harness_part("ring sweep");
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
                        if (!rings_only && (!quick || (Ns[ni] <= 97 && !causal && !ti)))
                            sweep_case(tag, Ns[ni], 64, dts[ti], mode, causal, seed++);
        ring_cases(tag, quick ? 400 : 3000, true, quick, &seed);
        if (!quick) ring_sweep(tag, false, &seed);
        snprintf(tag, sizeof tag, "%d-row items", rows);
        harness_part(tag);
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
