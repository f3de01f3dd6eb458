/* Kernel playground for the CPU fast path: times the two block products and
 * the vectorised exp of src/cpu/attend.c on one core, on one tile's shapes
 * (256 queries x 128 keys x D), after a warm-up that brings the core to its
 * steady clock. Checks each product against a plain loop first.
 *
 *     cmake --build build --target rda_kernel_bench && ./build/rda_kernel_bench [D]
 */
#include "../../src/cpu/attend.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const int64_t D = argc > 1 ? atoi(argv[1]) : 64, bq = BQ, bk = BK, Dp = round_up(D, VL);
    float *K = calloc((size_t)(bk * D), 4), *Qt = calloc((size_t)(D * bq), 4);
    float *St = calloc((size_t)(bk * bq), 4), *V = calloc((size_t)(bk * Dp), 4);
    float *A = calloc((size_t)(bq * Dp), 4), *mx = calloc((size_t)bq, 4);
    for (int64_t i = 0; i < bk * D; i++) K[i] = (float)(i % 7) * 0.1f - 0.3f;
    for (int64_t i = 0; i < bk * Dp; i++) V[i] = (float)(i % 5) * 0.1f - 0.2f;
    for (int64_t i = 0; i < D * bq; i++) Qt[i] = (float)(i % 3) * 0.1f - 0.1f;
    /* check */
    gemm_kq(bk, bq, D, K, D, Qt, bq, St, bq, NULL, bk);
    double worst = 0;
    for (int64_t j = 0; j < bk; j++)
        for (int64_t a = 0; a < bq; a++) {
            double s = 0;
            for (int64_t d = 0; d < D; d++) s += (double)K[j * D + d] * Qt[d * bq + a];
            if (fabs(s - St[j * bq + a]) > worst) worst = fabs(s - St[j * bq + a]);
        }
    printf("gemm_kq max error %.2e\n", worst);
    memset(A, 0, sizeof(float) * (size_t)(bq * Dp));
    gemm_pv(bq, bk, Dp, St, bq, V, Dp, A);
    worst = 0;
    for (int64_t a = 0; a < bq; a++)
        for (int64_t x = 0; x < D; x++) {
            double s = 0;
            for (int64_t j = 0; j < bk; j++) s += (double)St[j * bq + a] * V[j * Dp + x];
            if (fabs(s - A[a * Dp + x]) > worst) worst = fabs(s - A[a * Dp + x]);
        }
    printf("gemm_pv max error %.2e\n", worst);
    int it = 4000;
    for (int i = 0; i < it; i++) gemm_kq(bk, bq, D, K, D, Qt, bq, St, bq, mx, bk); /* warm-up */
    double t = now();
    for (int i = 0; i < it; i++) gemm_kq(bk, bq, D, K, D, Qt, bq, St, bq, mx, bk);
    double dt = now() - t;
    printf("gemm_kq (S^T = K Q^T, fused max) %.1f GFLOP/s\n", 2.0 * bk * bq * D * it / dt / 1e9);
    t = now();
    for (int i = 0; i < it; i++) gemm_pv(bq, bk, Dp, St, bq, V, Dp, A);
    dt = now() - t;
    printf("gemm_pv (O += P V) %.1f GFLOP/s\n", 2.0 * bk * bq * Dp * it / dt / 1e9);
    for (int64_t i = 0; i < bk * bq; i++) St[i] = -(float)(i % 97) * 0.1f;
    t = now();
    for (int i = 0; i < it; i++)
        for (int64_t j = 0; j < bk; j++)
            for (int64_t a = 0; a < bq; a += VL) {
                vf e = vexp2(vload(St + j * bq + a) - 1.0f);
                vstore(St + j * bq + a, e);
                vstore(mx + a, vload(mx + a) + e);
            }
    dt = now() - t;
    printf("exp2 + row sums %.3f ns per score\n", dt / it / (double)(bk * bq) * 1e9);
    free(K), free(Qt), free(St), free(V), free(A), free(mx);
    return 0;
}
