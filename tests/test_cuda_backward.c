/* The CUDA backward (SPEC.md, "Backward pass") against the fp64 CPU
 * reference: every mode x causal x dtype x D in {64, 128, 40, 256} over odd
 * sizes (1, 97, 1000, 4097, 65536), H not divisible by G, grouped K/V heads,
 * tails, segments longer than N; SPEC.md's gradient rule (full reference
 * with the naive same-type baseline where it is affordable, else the fp64
 * reference at sampled query and key rows); guard bytes around every device
 * gradient, which starts as NaN so that every element must be written; NaN
 * never. Rings of P = 2..8 virtual ranks on one GPU, contiguous and
 * zig-zag, N divisible by P and not, up to N = 65536, against the same
 * reference. A captured CUDA graph of the backward replays on new inputs;
 * repeated calls take no device memory.
 * Exits 77 (skipped) when there is no GPU. RDA_TEST_QUICK=1: a small subset
 * (for compute-sanitizer). */
#include <cuda_runtime_api.h>
#include <math.h>

#include "harness.h"
#include "cuda_harness.h"

static rda_context *gpu, *ref, *naive;

typedef struct {
    int64_t B, N, H, Hkv, D;
} size5;

static const char *mode_name(rda_mode m) {
    return m == RDA_MODE_DENSE ? "dense" : m == RDA_MODE_GROUPS ? "groups" : "longnet";
}

static double max_abs_of(const double *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* work of the full fp64 reference (pairs x D), over which rows are sampled */
#define FULL_REF_LIMIT 3e9

/* One case: inputs and dO on the host, the GPU forward (O, LSE), then the
 * GPU backward on one rank (P = 1) or a ring of P virtual ranks; the
 * gradients against the fp64 reference from the same O and LSE. */
static void bwd_case(size5 s, rda_config cfg, rda_dtype dt, int P, uint64_t seed, const char *tag) {
    const int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    const size_t es = rda_dtype_size(dt);
    char what[256];
    snprintf(what, sizeof what, "%sB%lld N%lld H%lld/%lld D%lld %s causal=%d %s P=%d%s", tag, (long long)s.B,
             (long long)s.N, (long long)s.H, (long long)s.Hkv, (long long)s.D, mode_name(cfg.mode), cfg.causal,
             rda_dtype_name(dt), P, P > 1 ? (cfg.layout ? " zig-zag" : " contiguous") : "");
    void *h[4], *o = malloc(nq * es), *got[3];
    float *lse = malloc(nl * 4);
    const int64_t cnt[4] = {nq, nk, nk, nq};
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    dbuf din[4];
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    rda_tensor t[4];
    for (int i = 0; i < 4; i++) {
        h[i] = malloc(cnt[i] * es);
        rda_fill_uniform(h[i], dt, cnt[i], &rng, -1, 1);
        din[i] = dalloc_fill(cnt[i] * es, 0);
        dput(din[i].data, h[i], cnt[i] * es);
        t[i] = rda_tensor_contiguous(din[i].data, dt, 4, i == 1 || i == 2 ? sk : sq);
    }
    dbuf dout = dalloc_fill(nq * es, 0), dlse = dalloc_fill(nl * 4, 0);
    rda_tensor to = rda_tensor_contiguous(dout.data, dt, 4, sq), tl = rda_tensor_contiguous(dlse.data, RDA_DTYPE_F32, 3, sl);
    rda_status st = rda_attention_forward(gpu, &cfg, &t[0], &t[1], &t[2], &to, &tl);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: forward %s", what, rda_context_last_error(gpu));
    dbuf dg[3] = {dalloc_fill(nq * es, 0xFF), dalloc_fill(nk * es, 0xFF), dalloc_fill(nk * es, 0xFF)};
    rda_tensor tdq = rda_tensor_contiguous(dg[0].data, dt, 4, sq), tdk = rda_tensor_contiguous(dg[1].data, dt, 4, sk),
               tdv = rda_tensor_contiguous(dg[2].data, dt, 4, sk);
    if (!st)
        st = P > 1 ? rda_ring_backward_simulated(gpu, &cfg, P, &t[0], &t[1], &t[2], &to, &tl, &t[3], &tdq, &tdk, &tdv, NULL)
                   : rda_attention_backward(gpu, &cfg, &t[0], &t[1], &t[2], &to, &tl, &t[3], &tdq, &tdk, &tdv);
    if (!st) st = rda_context_synchronize(gpu);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: backward %s (%s)", what, rda_status_to_string(st), rda_context_last_error(gpu));
    cudaMemcpy(o, dout.data, nq * es, cudaMemcpyDeviceToHost);
    cudaMemcpy(lse, dlse.data, nl * 4, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 3; i++) {
        got[i] = malloc(cnt[i] * es);
        cudaMemcpy(got[i], dg[i].data, cnt[i] * es, cudaMemcpyDeviceToHost);
    }
    rda_tensor hq = rda_tensor_contiguous(h[0], dt, 4, sq), hk = rda_tensor_contiguous(h[1], dt, 4, sk),
               hv = rda_tensor_contiguous(h[2], dt, 4, sk), hg = rda_tensor_contiguous(h[3], dt, 4, sq),
               ho = rda_tensor_contiguous(o, dt, 4, sq), hl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl);
    if (!st) { /* the forward's LSE (which the gradients take as given) at sampled rows against fp64 */
        enum { ML = 64 };
        int64_t lrows[ML], ml = s.N < ML ? s.N : ML;
        for (int64_t j = 0; j < ml; j++) lrows[j] = s.N <= ML ? j : j * s.N / ML + (j * 7919) % (s.N / ML);
        lrows[ml - 1] = s.N - 1;
        double *o64 = malloc(s.B * ml * s.H * s.D * 8);
        float *l64 = malloc(s.B * s.H * ml * 4);
        rda_status sl5 = rda_reference_rows(ref, &cfg, &hq, &hk, &hv, lrows, ml, o64, l64);
        int64_t off = 0;
        double worst = 0;
        for (int64_t b = 0; b < s.B && !sl5; b++)
            for (int64_t hh = 0; hh < s.H; hh++)
                for (int64_t j = 0; j < ml; j++) {
                    const float want = l64[(b * s.H + hh) * ml + j], g = lse[(b * s.H + hh) * s.N + lrows[j]];
                    const double d = isinf(want) ? (g == want ? 0 : INFINITY) : fabs((double)g - want) / (1 + fabs(want));
                    off += !(d <= (dt == RDA_DTYPE_F32 ? 1e-4 : 2e-3));
                    worst = d > worst || d != d ? d : worst;
                }
        CHECK(!sl5 && off == 0, "%s: forward LSE at %lld sampled rows: %lld off (worst relative %.3g)", what,
              (long long)(ml * s.H * s.B), (long long)off, worst);
        free(o64), free(l64);
    }
    static const char *names[3] = {"dq", "dk", "dv"};
    const double work = (double)s.B * (double)s.H * (double)s.N * (double)s.N * (double)s.D;
    if (st) {
        /* reported above */
    } else if (work <= FULL_REF_LIMIT) {
        double *x64[5], *r64[3];
        const void *src[5] = {h[0], h[1], h[2], o, h[3]};
        const int64_t c5[5] = {nq, nk, nk, nq, nq};
        for (int i = 0; i < 5; i++) {
            x64[i] = malloc(c5[i] * 8);
            rda_to_f64(src[i], dt, c5[i], x64[i]);
        }
        for (int i = 0; i < 3; i++) r64[i] = malloc(cnt[i] * 8);
        rda_tensor rq = rda_tensor_contiguous(x64[0], RDA_DTYPE_F64, 4, sq), rk = rda_tensor_contiguous(x64[1], RDA_DTYPE_F64, 4, sk),
                   rv = rda_tensor_contiguous(x64[2], RDA_DTYPE_F64, 4, sk), ro = rda_tensor_contiguous(x64[3], RDA_DTYPE_F64, 4, sq),
                   rg = rda_tensor_contiguous(x64[4], RDA_DTYPE_F64, 4, sq),
                   rdq = rda_tensor_contiguous(r64[0], RDA_DTYPE_F64, 4, sq),
                   rdk = rda_tensor_contiguous(r64[1], RDA_DTYPE_F64, 4, sk),
                   rdv = rda_tensor_contiguous(r64[2], RDA_DTYPE_F64, 4, sk);
        rda_status sr = rda_attention_backward(ref, &cfg, &rq, &rk, &rv, &ro, &hl, &rg, &rdq, &rdk, &rdv);
        CHECK(sr == RDA_STATUS_SUCCESS, "%s: reference backward %s", what, rda_context_last_error(ref));
        void *n3[3];
        rda_tensor nt[3];
        for (int i = 0; i < 3; i++) {
            n3[i] = malloc(cnt[i] * es);
            nt[i] = rda_tensor_contiguous(n3[i], dt, 4, i ? sk : sq);
        }
        rda_status sn = rda_attention_backward(naive, &cfg, &hq, &hk, &hv, &ho, &hl, &hg, &nt[0], &nt[1], &nt[2]);
        CHECK(sn == RDA_STATUS_SUCCESS, "%s: naive backward %s", what, rda_context_last_error(naive));
        for (int i = 0; i < 3 && !sr && !sn; i++) {
            rda_error e = rda_compare(got[i], dt, r64[i], cnt[i]), en = rda_compare(n3[i], dt, r64[i], cnt[i]);
            const double mref = max_abs_of(r64[i], cnt[i]);
            /* a gradient that vanishes exactly (one key per row: dS = 0) is
             * rounding noise everywhere: there the bound is absolute */
            const bool vanishes = mref < 1e-5;
            CHECK(vanishes ? e.nonfinite == 0 && e.max_abs <= 1e-5 : rda_grad_passes(dt, e, en.max_abs, mref),
                  "%s: %s rel_l2 %.3g max_abs %.3g (naive %.3g, max|ref| %.3g) nonfinite %lld", what, names[i],
                  e.rel_l2, e.max_abs, en.max_abs, mref, (long long)e.nonfinite);
        }
        for (int i = 0; i < 5; i++) free(x64[i]);
        for (int i = 0; i < 3; i++) free(r64[i]), free(n3[i]);
    } else {
        /* sampled rows (B = 1): dQ at these query rows, dK and dV at these
         * key rows, spread over the sequence (every ring rank's rows) */
        enum { M = 160 };
        int64_t rows[M], m = s.N < M ? s.N : M;
        for (int64_t j = 0; j < m; j++)
            rows[j] = s.N <= M ? j : (int64_t)((double)j * (double)s.N / M) + (j * 7919) % (s.N / M);
        rows[m - 1] = s.N - 1;
        double *r64[3];
        for (int i = 0; i < 3; i++) r64[i] = malloc(s.B * m * (i ? s.Hkv : s.H) * s.D * 8);
        rda_status sr = rda_reference_backward_rows(ref, &cfg, &hq, &hk, &hv, &ho, &hl, &hg, rows, m, r64[0], r64[1], r64[2]);
        CHECK(sr == RDA_STATUS_SUCCESS, "%s: sampled reference %s", what, rda_context_last_error(ref));
        for (int i = 0; i < 3 && !sr; i++) {
            const int64_t re = (i ? s.Hkv : s.H) * s.D;
            rda_error e = rda_compare_rows(got[i], dt, r64[i], rows, m, re);
            const double mref = max_abs_of(r64[i], m * re);
            CHECK(rda_grad_passes(dt, e, 0.0, mref),
                  "%s: %s at %lld sampled rows rel_l2 %.3g max_abs %.3g (max|ref| %.3g) nonfinite %lld", what,
                  names[i], (long long)m, e.rel_l2, e.max_abs, mref, (long long)e.nonfinite);
        }
        for (int i = 0; i < 3; i++) free(r64[i]);
    }
    /* every element written and finite (all of them, also where unsampled) */
    int64_t bad = 0, nbad[3] = {0, 0, 0}, first[3] = {-1, -1, -1};
    for (int i = 0; i < 3 && !st; i++) {
        double *x = malloc(cnt[i] * 8);
        rda_to_f64(got[i], dt, cnt[i], x);
        for (int64_t j = 0; j < cnt[i]; j++)
            if (!isfinite(x[j])) nbad[i]++, first[i] = first[i] < 0 ? j : first[i];
        bad += nbad[i];
        free(x);
    }
    /* (where: the count per gradient and the first element's row and head) */
    const int64_t hd[3] = {s.H * s.D, s.Hkv * s.D, s.Hkv * s.D};
    int64_t frow[3], fhead[3]; /* (-1: none) */
    for (int i = 0; i < 3; i++) frow[i] = first[i] < 0 ? -1 : first[i] / hd[i], fhead[i] = first[i] < 0 ? -1 : first[i] % hd[i] / s.D;
    CHECK(bad == 0,
          "%s: %lld gradient elements not finite (or never written): dq %lld (first row %lld head %lld), "
          "dk %lld (row %lld head %lld), dv %lld (row %lld head %lld)",
          what, (long long)bad, (long long)nbad[0], (long long)frow[0], (long long)fhead[0], (long long)nbad[1],
          (long long)frow[1], (long long)fhead[1], (long long)nbad[2], (long long)frow[2], (long long)fhead[2]);
    CHECK(dguards(&dg[0]) && dguards(&dg[1]) && dguards(&dg[2]), "%s: guard bytes", what);
    for (int i = 0; i < 4; i++) free(h[i]), cudaFree(din[i].raw);
    for (int i = 0; i < 3; i++) free(got[i]), cudaFree(dg[i].raw);
    cudaFree(dout.raw), cudaFree(dlse.raw);
    free(o), free(lse);
}

static rda_config config(rda_mode mode, int causal, int G, const rda_pattern *pt) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = mode;
    cfg.causal = causal;
    cfg.num_patterns = mode == RDA_MODE_DENSE ? 0 : G;
    for (int i = 0; i < G && mode != RDA_MODE_DENSE; i++) cfg.patterns[i] = pt[i];
    return cfg;
}

/* A captured graph of the backward (caller's stream) replays on new inputs
 * as an eager call computes them; repeated calls take no device memory. */
static void graph_case(uint64_t seed) {
    const int64_t N = 4096, H = 8, D = 64, n = N * H * D, nl = H * N;
    const rda_dtype dt = RDA_DTYPE_F16;
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CUDA;
    cp.stream = s;
    cp.stream_mode = RDA_STREAM_CALLER;
    rda_context *c = NULL;
    CHECK(rda_context_create(&cp, &c) == RDA_STATUS_SUCCESS, "graph: context on the caller's stream");
    if (!c) return;
    const rda_pattern pt[3] = {{2048, 1}, {4096, 2}, {8192, 4}};
    for (int mode = 0; mode < 3; mode++) {
        rda_config cfg = config((rda_mode)mode, mode == 1, 3, pt);
        rda_rng rng;
        rda_rng_seed(&rng, seed + mode);
        void *hx = malloc(n * 2);
        dbuf x[4], o = dalloc_fill(n * 2, 0), l = dalloc_fill(nl * 4, 0), g1[3], g2[3];
        int64_t sh[4] = {1, N, H, D}, sl[3] = {1, H, N};
        rda_tensor t[4], g1t[3], g2t[3];
        for (int i = 0; i < 4; i++) {
            x[i] = dalloc_fill(n * 2, 0);
            t[i] = rda_tensor_contiguous(x[i].data, dt, 4, sh);
        }
        for (int i = 0; i < 3; i++) {
            g1[i] = dalloc_fill(n * 2, 0xFF);
            g2[i] = dalloc_fill(n * 2, 0xFF);
            g1t[i] = rda_tensor_contiguous(g1[i].data, dt, 4, sh);
            g2t[i] = rda_tensor_contiguous(g2[i].data, dt, 4, sh);
        }
        rda_tensor to = rda_tensor_contiguous(o.data, dt, 4, sh), tl = rda_tensor_contiguous(l.data, RDA_DTYPE_F32, 3, sl);
        for (int i = 0; i < 4; i++) {
            rda_fill_uniform(hx, dt, n, &rng, -1, 1);
            dput(x[i].data, hx, n * 2);
        }
        rda_status st = rda_attention_forward(c, &cfg, &t[0], &t[1], &t[2], &to, &tl);
        if (!st) st = rda_attention_backward(c, &cfg, &t[0], &t[1], &t[2], &to, &tl, &t[3], &g1t[0], &g1t[1], &g1t[2]);
        cudaStreamSynchronize(s);
        size_t free0 = 0, free1 = 0, total = 0;
        cudaMemGetInfo(&free0, &total);
        for (int r = 0; r < 3 && !st; r++)
            st = rda_attention_backward(c, &cfg, &t[0], &t[1], &t[2], &to, &tl, &t[3], &g1t[0], &g1t[1], &g1t[2]);
        cudaStreamSynchronize(s);
        cudaMemGetInfo(&free1, &total);
        CHECK(!st && free1 == free0, "graph %s: repeated calls %s, device memory %lld bytes taken", mode_name(cfg.mode),
              rda_status_to_string(st), (long long)free0 - (long long)free1);
        cudaGraph_t graph = NULL;
        cudaGraphExec_t exec = NULL;
        cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
        rda_status sc = rda_attention_backward(c, &cfg, &t[0], &t[1], &t[2], &to, &tl, &t[3], &g2t[0], &g2t[1], &g2t[2]);
        cudaError_t ce = cudaStreamEndCapture(s, &graph);
        if (ce == cudaSuccess) {
            const graph_nodes gn = graph_node_counts(graph);
            printf("  graph %s%s N=%lld, 3 patterns: one backward call launches %zu kernels, %zu memsets, %zu copies "
                   "(%zu other nodes)\n", mode_name(cfg.mode), cfg.causal ? " causal" : "", (long long)N, gn.kernels,
                   gn.memsets, gn.copies, gn.other);
            ce = cudaGraphInstantiate(&exec, graph, 0);
        }
        CHECK(sc == RDA_STATUS_SUCCESS && ce == cudaSuccess, "graph %s: capture %s (%s), %s", mode_name(cfg.mode),
              rda_status_to_string(sc), rda_context_last_error(c), cudaGetErrorString(ce));
        if (sc == RDA_STATUS_SUCCESS && ce == cudaSuccess) {
            /* new dO, then the replay against an eager call on the same inputs */
            rda_fill_uniform(hx, dt, n, &rng, -1, 1);
            dput(x[3].data, hx, n * 2);
            for (int i = 0; i < 3; i++) dset(g2[i].data, 0xFF, n * 2);
            cudaGraphLaunch(exec, s);
            st = rda_attention_backward(c, &cfg, &t[0], &t[1], &t[2], &to, &tl, &t[3], &g1t[0], &g1t[1], &g1t[2]);
            cudaStreamSynchronize(s);
            void *a = malloc(n * 2), *b = malloc(n * 2);
            double *b64 = malloc(n * 8);
            for (int i = 0; i < 3 && !st; i++) {
                cudaMemcpy(a, g2[i].data, n * 2, cudaMemcpyDeviceToHost);
                cudaMemcpy(b, g1[i].data, n * 2, cudaMemcpyDeviceToHost);
                rda_to_f64(b, dt, n, b64);
                rda_error e = rda_compare(a, dt, b64, n);
                /* atomics add dK and dV in any order: equal to rounding */
                CHECK(e.nonfinite == 0 && e.rel_l2 <= 1e-3, "graph %s: replay against eager, grad %d rel_l2 %.3g nonfinite %lld",
                      mode_name(cfg.mode), i, e.rel_l2, (long long)e.nonfinite);
            }
            free(a), free(b), free(b64);
        }
        if (exec) cudaGraphExecDestroy(exec);
        if (graph) cudaGraphDestroy(graph);
        for (int i = 0; i < 4; i++) cudaFree(x[i].raw);
        for (int i = 0; i < 3; i++) cudaFree(g1[i].raw), cudaFree(g2[i].raw);
        cudaFree(o.raw), cudaFree(l.raw);
        free(hx);
    }
    rda_context_destroy(c);
    cudaStreamDestroy(s);
}

/* config.deterministic: three backward calls (one rank, or a ring of P
 * virtual ranks) give bit-identical dQ, dK, dV, equal within rounding to
 * the default's (atomics); a shape off the tensor-core kernels is refused
 * with nothing written. */
static void deterministic_case(rda_config cfg, size5 s, rda_dtype dt, int P, uint64_t seed) {
    const int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    const size_t es = rda_dtype_size(dt);
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    const int64_t cnt[4] = {nq, nk, nk, nq};
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    dbuf in[4], out = dalloc_fill(nq * es, 0), lse = dalloc_fill(nl * 4, 0), g[4][3];
    rda_tensor t[4];
    void *h = malloc(nq * es);
    for (int i = 0; i < 4; i++) {
        rda_fill_uniform(h, dt, cnt[i], &rng, -1, 1);
        in[i] = dalloc_fill(cnt[i] * es, 0);
        dput(in[i].data, h, cnt[i] * es);
        t[i] = rda_tensor_contiguous(in[i].data, dt, 4, i == 1 || i == 2 ? sk : sq);
    }
    rda_tensor to = rda_tensor_contiguous(out.data, dt, 4, sq), tl = rda_tensor_contiguous(lse.data, RDA_DTYPE_F32, 3, sl);
    rda_status st = rda_attention_forward(gpu, &cfg, &t[0], &t[1], &t[2], &to, &tl);
    char what[160];
    snprintf(what, sizeof what, "deterministic %s causal=%d %s D%lld H%lld/%lld N%lld P=%d%s", mode_name(cfg.mode),
             cfg.causal, rda_dtype_name(dt), (long long)s.D, (long long)s.H, (long long)s.Hkv, (long long)s.N, P,
             cfg.layout ? " zig-zag" : "");
    for (int run = 0; run < 4; run++) { /* runs 0-2 deterministic, 3 the default */
        for (int i = 0; i < 3; i++) g[run][i] = dalloc_fill((i ? nk : nq) * es, 0xFF);
        rda_tensor d[3];
        for (int i = 0; i < 3; i++) d[i] = rda_tensor_contiguous(g[run][i].data, dt, 4, i ? sk : sq);
        cfg.deterministic = run < 3;
        if (!st)
            st = P > 1 ? rda_ring_backward_simulated(gpu, &cfg, P, &t[0], &t[1], &t[2], &to, &tl, &t[3], &d[0], &d[1], &d[2], NULL)
                       : rda_attention_backward(gpu, &cfg, &t[0], &t[1], &t[2], &to, &tl, &t[3], &d[0], &d[1], &d[2]);
    }
    if (!st) st = rda_context_synchronize(gpu);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: %s (%s)", what, rda_status_to_string(st), rda_context_last_error(gpu));
    void *a = malloc(nq * es), *b = malloc(nq * es);
    double *b64 = malloc(nq * 8);
    for (int i = 0; i < 3 && !st; i++) {
        const size_t bytes = (i ? nk : nq) * es;
        cudaMemcpy(a, g[0][i].data, bytes, cudaMemcpyDeviceToHost);
        for (int run = 1; run < 3; run++) {
            cudaMemcpy(b, g[run][i].data, bytes, cudaMemcpyDeviceToHost);
            CHECK(!memcmp(a, b, bytes), "%s: gradient %d of run %d bit-identical to run 0", what, i, run);
        }
        cudaMemcpy(b, g[3][i].data, bytes, cudaMemcpyDeviceToHost);
        rda_to_f64(b, dt, i ? nk : nq, b64);
        rda_error e = rda_compare(a, dt, b64, i ? nk : nq);
        CHECK(e.nonfinite == 0 && e.rel_l2 <= (dt == RDA_DTYPE_F16 ? 1e-3 : 8e-3), "%s: gradient %d against the "
              "default's: rel_l2 %.3g nonfinite %lld", what, i, e.rel_l2, (long long)e.nonfinite);
        CHECK(dguards(&g[0][i]), "%s: guard bytes of gradient %d", what, i);
    }
    free(a), free(b), free(b64), free(h);
    for (int i = 0; i < 4; i++) cudaFree(in[i].raw);
    for (int run = 0; run < 4; run++)
        for (int i = 0; i < 3; i++) cudaFree(g[run][i].raw);
    cudaFree(out.raw), cudaFree(lse.raw);
}

int main(void) {
    harness_begin();
    if (!rda_cuda_available()) {
        printf("test_cuda_backward: no CUDA device, skipped\n");
        return 77;
    }
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CUDA;
    CHECK(rda_context_create(&cp, &gpu) == RDA_STATUS_SUCCESS, "CUDA context");
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ref);
    cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
    rda_context_create(&cp, &naive);
    const int quick = getenv("RDA_TEST_QUICK") != NULL;
    uint64_t seed = 500;
    /* pattern sets: geometric with H = 6 not divisible by G = 4; segments
     * longer than N; overlapping (longnet rows reached twice) */
    const rda_pattern geo[4] = {{64, 1}, {128, 2}, {256, 4}, {512, 8}}, longer[2] = {{2048, 1}, {100000, 4}},
                      overl[2] = {{256, 1}, {256, 2}};
    const int64_t Ns[] = {1, 97, 1000, 4097};
    const int64_t Ds[] = {64, 128, 40};
    const rda_dtype dts[] = {RDA_DTYPE_F16, RDA_DTYPE_BF16, RDA_DTYPE_F32};
    for (int ni = 0; ni < 4; ni++)
        for (int di = 0; di < 3; di++)
            for (int ti = 0; ti < 3; ti++)
                for (int mode = 0; mode < 3; mode++)
                    for (int causal = 0; causal < 2; causal++) {
                        const int64_t N = Ns[ni], D = Ds[di];
                        if (quick && (N > 97 || causal || di == 1)) continue;
                        if (N == 4097 && (D == 40 || ti == 2)) continue; /* the slow paths: smaller sizes */
                        /* GQA (6 query heads over 2 K/V heads) on the odd sizes */
                        size5 s = {N <= 97 ? 2 : 1, N, 6, ni % 2 ? 2 : 6, D};
                        const rda_pattern *pt = ni == 1 ? longer : mode == 2 && ni == 2 ? overl : geo;
                        rda_config cfg = config((rda_mode)mode, causal, pt == geo ? 4 : 2, pt);
                        bwd_case(s, cfg, dts[ti], 1, seed++, "");
                    }
    harness_part("one rank, N <= 4097");
    /* D = 256 (the largest head dim, smaller tiles) */
    for (int mode = 0; mode < 3 && !quick; mode++)
        bwd_case((size5){1, 700, 2, 1, 256}, config((rda_mode)mode, mode != 1, 4, geo), RDA_DTYPE_BF16, 1, seed++,
                 "");
    harness_part("D = 256");
    /* rings: P = 2..8, both layouts, N divisible by P and not */
    const int64_t rN[] = {1000, 4099};
    for (int P = 2; P <= 8; P++)
        for (int lay = 0; lay < 2; lay++)
            for (int mode = 0; mode < 3; mode++) {
                if (quick && (P > 3 || mode == 1)) continue;
                rda_config cfg = config((rda_mode)mode, lay, 4, geo);
                cfg.layout = lay ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
                bwd_case((size5){1, quick ? 200 : rN[(P + mode) % 2], 4, 2, 64}, cfg,
                         (P + lay) % 2 ? RDA_DTYPE_BF16 : RDA_DTYPE_F16, P, seed++, "ring ");
            }
    harness_part("rings");
    /* deterministic mode: GQA, zig-zag rings, every mode; a refused shape */
    for (int mode = 0; mode < 3; mode++)
        for (int causal = 0; causal < 2; causal++) {
            rda_config cfg = config((rda_mode)mode, causal, 4, geo);
            cfg.layout = causal ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
            const int64_t N = quick ? 300 : 4097;
            deterministic_case(cfg, (size5){1, N, 6, 2, mode == 1 ? 128 : 64}, causal ? RDA_DTYPE_BF16 : RDA_DTYPE_F16,
                               1, seed++);
            if (!quick || mode == 0)
                deterministic_case(cfg, (size5){1, quick ? 300 : 4099, 4, 2, 64}, RDA_DTYPE_F16, 3, seed++);
        }
    {
        const int64_t N = 100, n = N * 2 * 40;
        dbuf x = dalloc_fill(n * 4 * 4, 0), l = dalloc_fill(2 * N * 4, 0), dq = dalloc_fill(n * 4, 0xFF),
             dk = dalloc_fill(n * 4, 0xFF), dv = dalloc_fill(n * 4, 0xFF);
        int64_t sh[4] = {1, N, 2, 40}, sl[3] = {1, 2, N};
        rda_tensor t[4], tl = rda_tensor_contiguous(l.data, RDA_DTYPE_F32, 3, sl),
                         tq = rda_tensor_contiguous(dq.data, RDA_DTYPE_F32, 4, sh),
                         tk = rda_tensor_contiguous(dk.data, RDA_DTYPE_F32, 4, sh),
                         tv = rda_tensor_contiguous(dv.data, RDA_DTYPE_F32, 4, sh);
        for (int i = 0; i < 4; i++) t[i] = rda_tensor_contiguous((float *)x.data + i * n, RDA_DTYPE_F32, 4, sh);
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.deterministic = 1;
        rda_status st = rda_attention_forward(gpu, &cfg, &t[0], &t[1], &t[2], &t[3], &tl);
        rda_status sb = rda_attention_backward(gpu, &cfg, &t[0], &t[1], &t[2], &t[3], &tl, &t[0], &tq, &tk, &tv);
        rda_context_synchronize(gpu);
        unsigned char *hq = malloc(n * 4);
        cudaMemcpy(hq, dq.data, n * 4, cudaMemcpyDeviceToHost);
        int untouched = 1;
        for (int64_t i = 0; i < n * 4; i++) untouched &= hq[i] == 0xFF;
        CHECK(st == RDA_STATUS_SUCCESS && sb == RDA_STATUS_UNSUPPORTED && untouched &&
                  strstr(rda_context_last_error(gpu), "deterministic"),
              "deterministic fp32 D=40 on the GPU: %s (%s), gradients untouched %d", rda_status_to_string(sb),
              rda_context_last_error(gpu), untouched);
        free(hq);
        cudaFree(x.raw), cudaFree(l.raw), cudaFree(dq.raw), cudaFree(dk.raw), cudaFree(dv.raw);
    }
    harness_part("deterministic");
    /* long sequences: several waves per SM, tables too big for a launch,
     * sampled reference rows */
    if (!quick) {
        const rda_pattern ln[4] = {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}};
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++) {
                rda_config cfg = config((rda_mode)mode, causal, 4, ln);
                bwd_case((size5){1, 65536, 8, 8, mode == 0 ? 64 : 128}, cfg, RDA_DTYPE_F16, 1, seed++, "long ");
            }
        for (int P = 2; P <= 8; P += 3)
            for (int mode = 0; mode < 3; mode += 2) {
                rda_config cfg = config((rda_mode)mode, 1, 4, ln);
                cfg.layout = P == 5 ? RDA_LAYOUT_CONTIGUOUS : RDA_LAYOUT_ZIGZAG;
                bwd_case((size5){1, 65536, 4, 2, 64}, cfg, RDA_DTYPE_BF16, P, seed++, "long ring ");
            }
        harness_part("N = 65536, one rank and rings");
        graph_case(seed++);
    }
    rda_context_destroy(gpu);
    rda_context_destroy(ref);
    rda_context_destroy(naive);
    return harness_done("cuda backward");
}
