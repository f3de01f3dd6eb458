/* Real rings on several GPUs of one process (NCCL, ncclCommInitAll): one
 * thread per GPU, each holding only its rows on its own device, against the
 * fp64 reference (every row up to N = 2049, 256 sampled rows per head beyond,
 * with every element checked finite); every mode, contiguous and zig-zag
 * (causal), N divisible by P and not, N up to 65536 (the sizes where the
 * one-GPU rings once failed). Exits 77 (skipped) with fewer than 2 GPUs or
 * without NCCL. */
#include <cuda_runtime_api.h>
#include <pthread.h>

#include "harness.h"

typedef struct {
    int dev;
    rda_comm *comm;
    const rda_config *cfg;
    int64_t N, H, D;
    const uint16_t *q, *k, *v; /* full fp16 inputs on the host */
    uint16_t *o;               /* full output on the host (this rank's rows) */
    rda_status st;
    char msg[512];
} rank_arg;

static void *rank_main(void *p) {
    rank_arg *a = p;
    cudaSetDevice(a->dev);
    int64_t s[2], c[2];
    int32_t nr;
    rda_ring_partition(a->N, rda_comm_size(a->comm), a->cfg->layout, rda_comm_rank(a->comm), s, c, &nr);
    int64_t n = c[0] + (nr > 1 ? c[1] : 0), row = a->H * a->D;
    uint16_t *dbuf;
    cudaMalloc((void **)&dbuf, sizeof(uint16_t) * (size_t)(4 * n * row));
    for (int t = 0; t < 3; t++) {
        const uint16_t *src = t == 0 ? a->q : t == 1 ? a->k : a->v;
        for (int32_t i = 0, off = 0; i < nr; off += (int32_t)c[i], i++)
            cudaMemcpy(dbuf + t * n * row + off * row, src + s[i] * row, sizeof(uint16_t) * (size_t)(c[i] * row),
                       cudaMemcpyHostToDevice);
    }
    cudaDeviceSynchronize(); /* (the uploads complete before the context's own stream reads them) */
    int64_t sh[4] = {1, n, a->H, a->D};
    rda_tensor q = rda_tensor_contiguous(dbuf, RDA_DTYPE_F16, 4, sh), k = q, v = q, o = q;
    k.data = dbuf + n * row, v.data = dbuf + 2 * n * row, o.data = dbuf + 3 * n * row;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CUDA;
    cp.device = a->dev;
    rda_context *ctx;
    a->st = rda_context_create(&cp, &ctx);
    if (a->st == RDA_STATUS_SUCCESS) {
        a->st = rda_ring_forward(ctx, a->comm, a->cfg, a->N, &q, &k, &v, &o, NULL, NULL);
        if (a->st == RDA_STATUS_SUCCESS) a->st = rda_context_synchronize(ctx);
        snprintf(a->msg, sizeof a->msg, "%s", rda_context_last_error(ctx));
        rda_context_destroy(ctx);
    }
    for (int32_t i = 0, off = 0; i < nr; off += (int32_t)c[i], i++)
        cudaMemcpy(a->o + s[i] * row, (uint16_t *)o.data + off * row, sizeof(uint16_t) * (size_t)(c[i] * row),
                   cudaMemcpyDeviceToHost);
    cudaFree(dbuf);
    return NULL;
}

int main(void) {
    int ndev = 0;
    if (!rda_cuda_available() || cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 2) {
        printf("nccl: skipped (needs 2 or more GPUs; found %d)\n", ndev);
        return 77;
    }
    int P = ndev < 4 ? ndev : 4;
    int32_t devs[4] = {0, 1, 2, 3};
    rda_comm *probe[4];
    if (rda_comm_create_nccl_local(P, devs, NULL, probe) == RDA_STATUS_UNSUPPORTED) {
        printf("nccl: skipped (built without NCCL)\n");
        return 77;
    }
    for (int r = 0; r < P; r++) rda_comm_destroy(probe[r]);
    rda_context *ref;
    rda_context_params rp = RDA_CONTEXT_PARAMS_INIT;
    rp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&rp, &ref);
    const int64_t H = 4, D = 64;
    const int64_t Ns[] = {2048, 2049, 8192, 30001, 65536};
    for (int ni = 0; ni < 5; ni++)
        for (int mode = 0; mode < 3; mode++)
            for (int lay = 0; lay < 2; lay++) {
                const int64_t N = Ns[ni];
                rda_config cfg = RDA_CONFIG_INIT;
                cfg.mode = (rda_mode)mode;
                cfg.num_patterns = 2;
                cfg.patterns[0] = (rda_pattern){256, 1};
                cfg.patterns[1] = (rda_pattern){1024, 2};
                cfg.layout = lay ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
                cfg.causal = lay;
                cfg.timeout_seconds = 30;
                int64_t n = N * H * D;
                uint16_t *q = malloc(2 * n), *k = malloc(2 * n), *v = malloc(2 * n), *o = malloc(2 * n);
                rda_rng rng;
                rda_rng_seed(&rng, (uint64_t)(N * 10 + mode * 2 + lay));
                rda_fill_uniform(q, RDA_DTYPE_F16, n, &rng, -1, 1);
                rda_fill_uniform(k, RDA_DTYPE_F16, n, &rng, -1, 1);
                rda_fill_uniform(v, RDA_DTYPE_F16, n, &rng, -1, 1);
                memset(o, 0xFF, 2 * n);
                rda_comm *comms[4];
                CHECK(rda_comm_create_nccl_local(P, devs, NULL, comms) == 0, "ncclCommInitAll");
                rank_arg a[4];
                pthread_t t[4];
                for (int r = 0; r < P; r++) {
                    a[r] = (rank_arg){devs[r], comms[r], &cfg, N, H, D, q, k, v, o, 0, ""};
                    pthread_create(&t[r], NULL, rank_main, &a[r]);
                }
                for (int r = 0; r < P; r++) pthread_join(t[r], NULL);
                for (int r = 0; r < P; r++) {
                    CHECK(a[r].st == 0, "P=%d N=%lld mode %d layout %d rank %d: %s (%s)", P, (long long)N, mode,
                          lay, r, rda_status_to_string(a[r].st), a[r].msg);
                    rda_comm_destroy(comms[r]);
                }
                double *q64 = malloc(8 * n), *k64 = malloc(8 * n), *v64 = malloc(8 * n), *o64 = malloc(8 * n);
                rda_to_f64(q, RDA_DTYPE_F16, n, q64);
                rda_to_f64(k, RDA_DTYPE_F16, n, k64);
                rda_to_f64(v, RDA_DTYPE_F16, n, v64);
                int64_t sh[4] = {1, N, H, D};
                rda_tensor tq = rda_tensor_contiguous(q64, RDA_DTYPE_F64, 4, sh), tk = tq, tv = tq, to = tq;
                tk.data = k64, tv.data = v64, to.data = o64;
                rda_error e;
                if (N <= 2049) {
                    rda_attention_forward(ref, &cfg, &tq, &tk, &tv, &to, NULL);
                    e = rda_compare(o, RDA_DTYPE_F16, o64, n);
                } else { /* sampled rows, spread over every rank's */
                    enum { M = 256 };
                    int64_t rows[M];
                    for (int j = 0; j < M; j++) rows[j] = j * (N / M) + (j * 7919) % (N / M);
                    rows[M - 1] = N - 1;
                    rda_reference_rows(ref, &cfg, &tq, &tk, &tv, rows, M, o64, NULL);
                    e = rda_compare_rows(o, RDA_DTYPE_F16, o64, rows, M, H * D);
                    rda_error all = rda_compare(o, RDA_DTYPE_F16, q64, n); /* only its count of nonfinite */
                    e.nonfinite += all.nonfinite;
                }
                CHECK(e.nonfinite == 0 && e.rel_l2 <= 1e-3, "P=%d GPUs N=%lld mode %d %s: rel_l2 %.3g", P, (long long)N,
                      mode, lay ? "zig-zag causal" : "contiguous", e.rel_l2);
                free(q), free(k), free(v), free(o), free(q64), free(k64), free(v64), free(o64);
            }
    rda_context_destroy(ref);
    return harness_done("nccl");
}
