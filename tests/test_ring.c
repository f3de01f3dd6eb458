/* Rings of P = 1..8 virtual ranks (contiguous and zig-zag, N divisible by P
 * and not, every mode, causal and not) against one rank; the per-rank
 * memory bound; configuration agreement; deadlines. */
#include <math.h>
#include <pthread.h>
#include <time.h>

#include "harness.h"

static rda_context *ctx;

typedef struct {
    int64_t B, N, H, Hkv, D;
} size5;

static void fill(void *p, rda_dtype dt, int64_t n, uint64_t seed) {
    rda_rng r;
    rda_rng_seed(&r, seed);
    rda_fill_uniform(p, dt, n, &r, -1, 1);
}

static void ring_case(size5 s, const rda_config *cfg, int32_t P, rda_dtype dt, const char *what) {
    int64_t nq = s.B * s.N * s.H * s.D, nk = s.B * s.N * s.Hkv * s.D, nl = s.B * s.H * s.N;
    size_t es = rda_dtype_size(dt);
    void *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es), *o1 = malloc(nq * es);
    float *l1 = malloc(nl * 4);
    fill(q, dt, nq, 11), fill(k, dt, nk, 12), fill(v, dt, nk, 13);
    int64_t sq[4] = {s.B, s.N, s.H, s.D}, sk[4] = {s.B, s.N, s.Hkv, s.D}, sl[3] = {s.B, s.H, s.N};
    rda_tensor tq = rda_tensor_contiguous(q, dt, 4, sq), tk = rda_tensor_contiguous(k, dt, 4, sk),
               tv = rda_tensor_contiguous(v, dt, 4, sk), t1 = rda_tensor_contiguous(o1, dt, 4, sq),
               tl1 = rda_tensor_contiguous(l1, RDA_DTYPE_F32, 3, sl);
    rda_status st = rda_attention_forward(ctx, cfg, &tq, &tk, &tv, &t1, &tl1);
    CHECK(st == 0, "%s: one rank: %s", what, rda_context_last_error(ctx));
    guarded o = guarded_alloc(nq * es, 0), l = guarded_alloc(nl * 4, 0);
    rda_tensor to = rda_tensor_contiguous(o.data, dt, 4, sq), tl = rda_tensor_contiguous(l.data, RDA_DTYPE_F32, 3, sl);
    rda_ring_stats stats[8];
    st = rda_ring_forward_simulated(ctx, cfg, P, &tq, &tk, &tv, &to, &tl, stats);
    CHECK(st == 0, "%s P=%d: %s (%s)", what, P, rda_status_to_string(st), rda_context_last_error(ctx));
    if (st == 0) {
        double *ref = malloc(nq * 8);
        rda_to_f64(o1, dt, nq, ref);
        rda_error e = rda_compare(o.data, dt, ref, nq);
        CHECK(e.nonfinite == 0 && e.rel_l2 <= rda_tolerance(dt), "%s P=%d: ring vs one rank rel_l2 %.3g", what, P, e.rel_l2);
        int lse_ok = 1;
        for (int64_t i = 0; i < nl; i++) {
            float a = ((float *)l.data)[i], b = l1[i];
            if (isinf(a) || isinf(b)) lse_ok &= a == b;
            else lse_ok &= fabsf(a - b) <= 1e-5f * (1 + fabsf(b));
        }
        CHECK(lse_ok, "%s P=%d: ring LSE equals one rank's", what, P);
        int64_t pairs = 0, total = 0;
        for (int32_t r = 0; r < P; r++) pairs += stats[r].pairs;
        rda_count_pairs(cfg, s.B, s.N, s.H, &total);
        CHECK(pairs == total, "%s P=%d: ranks computed %lld pairs, plan counts %lld", what, P, (long long)pairs, (long long)total);
        free(ref);
    }
    CHECK(guards_intact(&o) && guards_intact(&l), "%s P=%d: guard bytes", what, P);
    guarded_free(&o), guarded_free(&l);
    free(q), free(k), free(v), free(o1), free(l1);
}

/* ---- real-rank style: one thread per rank, each with only its rows ---- */
typedef struct {
    rda_comm *comm;
    rda_config cfg;
    int64_t N;
    rda_status st;
    double seconds;
    char msg[512];
    int participate;
} rank_arg;

static void *rank_main(void *a_) {
    rank_arg *a = a_;
    if (!a->participate) return NULL;
    int64_t starts[2], counts[2];
    int32_t nr;
    rda_ring_partition(a->N, rda_comm_size(a->comm), a->cfg.layout, rda_comm_rank(a->comm), starts, counts, &nr);
    int64_t n = counts[0] + (nr > 1 ? counts[1] : 0), shape[4] = {1, n, 2, 8};
    float *buf = calloc((size_t)(4 * n * 16), sizeof(float));
    fill(buf, RDA_DTYPE_F32, 3 * n * 16, 5 + (uint64_t)rda_comm_rank(a->comm));
    rda_tensor q = rda_tensor_contiguous(buf, RDA_DTYPE_F32, 4, shape),
               k = rda_tensor_contiguous(buf + n * 16, RDA_DTYPE_F32, 4, shape),
               v = rda_tensor_contiguous(buf + 2 * n * 16, RDA_DTYPE_F32, 4, shape),
               o = rda_tensor_contiguous(buf + 3 * n * 16, RDA_DTYPE_F32, 4, shape);
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = 1;
    rda_context *c;
    rda_context_create(&cp, &c);
    double t0 = rda_now();
    a->st = rda_ring_forward(c, a->comm, &a->cfg, a->N, &q, &k, &v, &o, NULL, NULL);
    a->seconds = rda_now() - t0;
    snprintf(a->msg, sizeof a->msg, "%s", rda_context_last_error(c));
    rda_context_destroy(c);
    free(buf);
    return NULL;
}

static void run_ranks(int32_t P, rank_arg *args) {
    rda_comm *comms[8];
    rda_comm_create_local(P, comms);
    pthread_t t[8];
    for (int32_t r = 0; r < P; r++) {
        args[r].comm = comms[r];
        pthread_create(&t[r], NULL, rank_main, &args[r]);
    }
    for (int32_t r = 0; r < P; r++) pthread_join(t[r], NULL);
    for (int32_t r = 0; r < P; r++) rda_comm_destroy(comms[r]);
}

int main(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    rda_context_create(&cp, &ctx);
    const size5 sizes[] = {{1, 64, 3, 3, 16}, {2, 97, 4, 2, 8}, {1, 1000, 2, 2, 64}};
    for (int si = 0; si < 3; si++) {
        size5 s = sizes[si];
        rda_config cfgs[3];
        for (int m = 0; m < 3; m++) {
            rda_config c = RDA_CONFIG_INIT;
            c.mode = (rda_mode)m;
            if (m == RDA_MODE_GROUPS) {
                c.num_patterns = 2;
                c.patterns[0] = (rda_pattern){s.N / 4, 1};
                c.patterns[1] = (rda_pattern){s.N / 2, 2};
            } else if (m == RDA_MODE_LONGNET) {
                c.num_patterns = 3;
                c.patterns[0] = (rda_pattern){16, 1};
                c.patterns[1] = (rda_pattern){32, 2};
                c.patterns[2] = (rda_pattern){s.N, 4};
            }
            cfgs[m] = c;
        }
        for (int m = 0; m < 3; m++)
            for (int causal = 0; causal < 2; causal++)
                for (int lay = 0; lay < 2; lay++)
                    for (int32_t P = 1; P <= 8; P++) {
                        if (lay == RDA_LAYOUT_ZIGZAG && s.N < 2 * P) continue;
                        if (si == 2 && P != 3 && P != 8) continue; /* the large size: two ring sizes */
                        rda_config c = cfgs[m];
                        c.causal = causal;
                        c.layout = (rda_layout)lay;
                        char what[128];
                        snprintf(what, sizeof what, "N%lld H%lld/%lld mode %d causal %d %s", (long long)s.N,
                                 (long long)s.H, (long long)s.Hkv, m, causal, lay ? "zigzag" : "contiguous");
                        ring_case(s, &c, P, RDA_DTYPE_F32, what);
                        if (si == 0 && (P == 2 || P == 5)) ring_case(s, &c, P, RDA_DTYPE_BF16, what);
                    }
    }

    /* per-rank memory O(N/P): peak(P) <= 2/P * peak(1) + 4 MiB */
    {
        int light = getenv("RDA_TEST_LIGHT") != NULL;
        int64_t N = light ? 8192 : 32768, H = 8, D = 64, n = N * H * D;
        float *buf = malloc(sizeof(float) * (size_t)(4 * n));
        fill(buf, RDA_DTYPE_F32, 3 * n, 3);
        int64_t shape[4] = {1, N, H, D};
        rda_tensor q = rda_tensor_contiguous(buf, RDA_DTYPE_F32, 4, shape),
                   k = rda_tensor_contiguous(buf + n, RDA_DTYPE_F32, 4, shape),
                   v = rda_tensor_contiguous(buf + 2 * n, RDA_DTYPE_F32, 4, shape),
                   o = rda_tensor_contiguous(buf + 3 * n, RDA_DTYPE_F32, 4, shape);
        rda_config c = RDA_CONFIG_INIT;
        c.causal = 1; /* dense, causal: half the work, the same memory */
        double peak1 = 0;
        for (int32_t P = 1; P <= 8; P *= 2) {
            rda_ring_stats stats[8];
            rda_status st = rda_ring_forward_simulated(ctx, &c, P, &q, &k, &v, &o, NULL, stats);
            CHECK(st == 0, "memory run P=%d: %s", P, rda_context_last_error(ctx));
            double peak = 0;
            for (int32_t r = 0; r < P; r++)
                if ((double)stats[r].peak_bytes > peak) peak = (double)stats[r].peak_bytes;
            if (P == 1) peak1 = peak;
            double bound = 2.0 / P * peak1 + 4.0 * 1048576;
            printf("dense N=%lld H=%lld D=%lld P=%d: peak per rank %.1f MiB (bound %.1f MiB)\n",
                   (long long)N, (long long)H, (long long)D, P, peak / 1048576, bound / 1048576);
            if (P > 1) CHECK(peak <= bound, "P=%d: per-rank peak %.0f > bound %.0f", P, peak, bound);
        }
        free(buf);
    }

    /* the backward's per-rank memory: peak(P) <= 2/P * peak(1) + 4 MiB, dense
     * causal (RDA_TEST_BWD_N sets N: 32768 for the figure in
     * docs/PERFORMANCE.md; the suite uses 4096, or 2048 when light) */
    {
        int light = getenv("RDA_TEST_LIGHT") != NULL;
        int64_t N = getenv("RDA_TEST_BWD_N") ? atoll(getenv("RDA_TEST_BWD_N")) : light ? 2048 : 4096;
        const int64_t H = 8, D = 64, n = N * H * D;
        float *buf = malloc(sizeof(float) * (size_t)(9 * n)), *lse = malloc(sizeof(float) * (size_t)(H * N));
        fill(buf, RDA_DTYPE_F32, 3 * n, 5);
        fill(buf + 4 * n, RDA_DTYPE_F32, n, 6); /* dO */
        int64_t shape[4] = {1, N, H, D}, lshape[3] = {1, H, N};
        rda_tensor t[9];
        for (int i = 0; i < 9; i++) t[i] = rda_tensor_contiguous(buf + i * n, RDA_DTYPE_F32, 4, shape);
        rda_tensor tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, lshape);
        rda_config c = RDA_CONFIG_INIT;
        c.causal = 1;
        rda_status st = rda_attention_forward(ctx, &c, &t[0], &t[1], &t[2], &t[3], &tl);
        double peak1 = 0;
        for (int32_t P = 1; P <= 8 && !st; P *= 2) {
            rda_ring_stats stats[8];
            st = rda_ring_backward_simulated(ctx, &c, P, &t[0], &t[1], &t[2], &t[3], &tl, &t[4], &t[5], &t[6], &t[7], stats);
            CHECK(st == 0, "backward memory run P=%d: %s", P, rda_context_last_error(ctx));
            double peak = 0;
            for (int32_t r = 0; r < P && !st; r++)
                if ((double)stats[r].peak_bytes > peak) peak = (double)stats[r].peak_bytes;
            if (P == 1) peak1 = peak;
            double bound = 2.0 / P * peak1 + 4.0 * 1048576;
            printf("backward, dense causal N=%lld H=%lld D=%lld P=%d: peak per rank %.1f MiB (bound %.1f MiB)\n",
                   (long long)N, (long long)H, (long long)D, P, peak / 1048576, bound / 1048576);
            if (P > 1) CHECK(peak <= bound, "backward P=%d: per-rank peak %.0f > bound %.0f", P, peak, bound);
        }
        free(buf), free(lse);
    }

    /* configuration agreement: ranks called differently all fail quickly */
    {
        rank_arg a[2];
        memset(a, 0, sizeof a);
        for (int r = 0; r < 2; r++) {
            rda_config c = RDA_CONFIG_INIT;
            c.causal = r; /* differs */
            c.timeout_seconds = 10;
            a[r].cfg = c;
            a[r].N = 40;
            a[r].participate = 1;
        }
        double t0 = rda_now();
        run_ranks(2, a);
        double t = rda_now() - t0;
        CHECK(a[0].st == RDA_STATUS_CONFIG_MISMATCH && a[1].st == RDA_STATUS_CONFIG_MISMATCH,
              "config mismatch: got %s / %s", rda_status_to_string(a[0].st), rda_status_to_string(a[1].st));
        CHECK(t < 2.0, "config mismatch reported in %.2f s", t);
        /* and identical configs through the same public entry work */
        a[1].cfg.causal = 0;
        a[0].cfg.layout = a[1].cfg.layout = RDA_LAYOUT_ZIGZAG;
        run_ranks(2, a);
        CHECK(a[0].st == 0 && a[1].st == 0, "two real-style ranks: %s / %s", a[0].msg, a[1].msg);
    }

    /* deadline: a peer that never calls makes the other time out, naming it */
    {
        rank_arg a[3];
        memset(a, 0, sizeof a);
        for (int r = 0; r < 3; r++) {
            rda_config c = RDA_CONFIG_INIT;
            c.timeout_seconds = 0.5;
            a[r].cfg = c;
            a[r].N = 30;
            a[r].participate = r != 2;
        }
        run_ranks(3, a);
        CHECK(a[0].st == RDA_STATUS_TIMEOUT || a[0].st == RDA_STATUS_COMM_ERROR, "rank 0 with a silent peer: %s", rda_status_to_string(a[0].st));
        CHECK(a[1].st == RDA_STATUS_TIMEOUT || a[1].st == RDA_STATUS_COMM_ERROR, "rank 1 with a silent peer: %s", rda_status_to_string(a[1].st));
        CHECK(a[0].seconds < 0.5 + 2.0 && a[1].seconds < 0.5 + 2.0, "timeouts after %.2f s / %.2f s", a[0].seconds, a[1].seconds);
        CHECK(strstr(a[0].msg, "rank 2") || strstr(a[1].msg, "rank 2"), "a message names the silent rank: '%s' / '%s'", a[0].msg, a[1].msg);
    }
    rda_context_destroy(ctx);
    return harness_done("ring");
}
