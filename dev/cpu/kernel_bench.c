/* Kernel playground for the CPU fast path: times the two block products and
 * the vectorised 2^x of every instruction-set level this build has
 * (src/cpu/kern_*.c) that the CPU can run, on one core, on one tile's shapes
 * (256 queries x 128 keys x D), after a warm-up that brings the core to its
 * steady clock. Checks each product against a plain loop first.
 *
 *     cmake --build build --target rda_kernel_bench && ./build/rda_kernel_bench [D]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/tile.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int bench(const rda_cpu_kernels *kn, int64_t D) {
    const int64_t bq = BQ, bk = BK, Dp = rda_round_up(D, kn->vl);
    const int64_t bkp = rda_round_up(bk, kn->kq_rows);
    float *K = calloc((size_t)(bkp * D), 4), *Qt = calloc((size_t)(D * bq), 4);
    float *St = calloc((size_t)(bkp * bq), 4), *V = calloc((size_t)(bk * Dp), 4);
    float *A = calloc((size_t)(bq * Dp), 4), *mx = calloc((size_t)bq, 4);
    float *W = calloc((size_t)RDA_CPU_SPREAD_FLOATS(rda_round_up(D, RDA_CPU_VL_MAX)), 4);
    for (int64_t i = 0; i < bk * D; i++)
        K[i] = (float)(i % 7) * 0.1f - 0.3f;
    for (int64_t i = 0; i < bk * Dp; i++)
        V[i] = (float)(i % 5) * 0.1f - 0.2f;
    for (int64_t i = 0; i < D * bq; i++)
        Qt[i] = (float)(i % 3) * 0.1f - 0.1f;
    kn->gemm_kq(bkp, bq, D, K, D, Qt, bq, St, bq, NULL, bk, W);
    double wkq = 0, wpv = 0;
    for (int64_t j = 0; j < bk; j++)
        for (int64_t a = 0; a < bq; a++) {
            double s = 0;
            for (int64_t d = 0; d < D; d++)
                s += (double)K[j * D + d] * Qt[d * bq + a];
            if (fabs(s - St[j * bq + a]) > wkq) wkq = fabs(s - St[j * bq + a]);
        }
    memset(A, 0, sizeof(float) * (size_t)(bq * Dp));
    kn->gemm_pv(bq, bk, Dp, St, bq, V, Dp, A, W);
    for (int64_t a = 0; a < bq; a++)
        for (int64_t x = 0; x < D; x++) {
            double s = 0;
            for (int64_t j = 0; j < bk; j++)
                s += (double)St[j * bq + a] * V[j * Dp + x];
            if (fabs(s - A[a * Dp + x]) > wpv) wpv = fabs(s - A[a * Dp + x]);
        }
    int it = 4000;
    for (int i = 0; i < it; i++)
        kn->gemm_kq(bkp, bq, D, K, D, Qt, bq, St, bq, mx, bk, W); /* warm-up */
    double t = now();
    for (int i = 0; i < it; i++)
        kn->gemm_kq(bkp, bq, D, K, D, Qt, bq, St, bq, mx, bk, W);
    double kq = 2.0 * bk * bq * D * it / (now() - t) / 1e9;
    t = now();
    for (int i = 0; i < it; i++)
        kn->gemm_pv(bq, bk, Dp, St, bq, V, Dp, A, W);
    double pv = 2.0 * bk * bq * D * it / (now() - t) / 1e9;
    /* 2^(x - 1) against the C library over x in [-127, 1], then the edges */
    double wex = 0;
    for (int64_t i = 0; i < bk * bq; i++)
        St[i] = 1.0f - 128.0f * (float)i / (float)(bk * bq);
    St[0] = -INFINITY, St[1] = NAN, St[2] = -200.0f;
    float *X = malloc(sizeof(float) * (size_t)(bk * bq));
    memcpy(X, St, sizeof(float) * (size_t)(bk * bq));
    kn->exp2_shift(St, bk * bq);
    for (int64_t i = 3; i < bk * bq; i++) {
        double want = exp2((double)X[i] - 1.0);
        if (want > 1e-37 && fabs(St[i] - want) / want > wex) wex = fabs(St[i] - want) / want;
    }
    int edges = St[0] == 0.0f && isnan(St[1]) && St[2] == 0.0f;
    free(X);
    for (int64_t i = 0; i < bk * bq; i++)
        St[i] = -(float)(i % 97) * 0.1f;
    t = now();
    for (int i = 0; i < it; i++)
        kn->exp2_shift(St, bk * bq);
    double ex = (now() - t) / it / (double)(bk * bq) * 1e9;
    printf("| %s | %d | %dx%d | %dx%d | %.1e | %.1e | %.1e%s | %.1f | %.1f | %.3f |\n", kn->name,
           kn->vl, kn->kq_rows, 2 * kn->vl, kn->pv_rows, kn->pv_vecs * kn->vl, wkq, wpv, wex,
           edges ? "" : " (edges wrong)", kq, pv, ex);
    int bad = wkq > 1e-3 || wpv > 1e-3 || wex > 1e-6 || !edges;
    free(K), free(Qt), free(St), free(V), free(A), free(mx), free(W);
    return bad;
}

int main(int argc, char **argv) {
    const int64_t D = argc > 1 ? atoi(argv[1]) : 64;
    const rda_cpu_kernels *const *levels;
    int n = rda_cpu_levels(&levels), bad = 0;
    printf("D = %lld, one core; the fast path uses %s here\n\n", (long long)D, rda_cpu_isa());
    printf(
        "| level | lanes | K Q^T tile | P V tile | K Q^T max err | P V max err | 2^x max rel err "
        "| K Q^T GFLOP/s | P V GFLOP/s | 2^x ns/score |\n"
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        if (!rda_cpu_level_supported(levels[i])) {
            printf("| %s | (this CPU lacks it) |\n", levels[i]->name);
            continue;
        }
        bad |= bench(levels[i], D);
    }
    return bad;
}
