/* Kernel playground for the CUDA attention kernels (the llm.c dev/cuda way).
 * Dense fp16 attention, B = 1, H = 8, one rank, launched directly with the
 * library's argument block:
 *
 *   kernel 0  attend_generic  CUDA cores, one warp per query row
 *   kernel 1  attend_mma_v1   mma.sync tensor cores, synchronous K/V loads
 *                             (dev/cuda/attend_v1.cuh; dense N=4096: 0.394 ms
 *                             through rda bench on an H100, 2026-11-26)
 *   kernel 2  attend_mma      + cp.async double-buffered K/V (the library's
 *                             portable path; 0.251 ms the same way)
 *   kernels 3-59 attend_wgmma Hopper warpgroup MMA (src/cuda/attend_wgmma.cuh),
 *                             K/V in 128-byte swizzled shared memory read by
 *                             the MMA directly, the softmax of one key tile
 *                             overlapping the P V product of the previous; the
 *                             variants differ in keys per tile (BK), warpgroups
 *                             per CTA (NW), stages (ST), CTAs per SM (MINB) and
 *                             the variant bits V (1: stages handed over by
 *                             mbarriers, no block barrier per tile; 2: lazy
 *                             rescaling; 4: next tile's copies issued after
 *                             the MMAs; 8: row sums on the tensor cores;
 *                             16: the warpgroups take turns on the tensor
 *                             cores; 32: a producer warpgroup does every
 *                             copy; 64 * E: E of 8 column groups of scores
 *                             exponentiated on the FMA pipe):
 *             3  BK=128 NW=2 ST=3          (the library's for D = 128 until v6)
 *             4  BK=128 NW=2 ST=4
 *             5  BK=64  NW=2 ST=4
 *             6  BK=128 NW=1 ST=3 MINB=2   (the library's for D = 64)
 *             7  BK=128 NW=1 ST=4 MINB=2
 *             8  BK=64  NW=1 ST=3 MINB=3
 *             9  BK=64  NW=1 ST=4 MINB=3   (the library's for short key ranges)
 *            10  BK=64  NW=1 ST=5 MINB=3
 *         11-59  NW=1..3 with the V bits: the list below (WG_VARIANTS);
 *                35-59 the producer/turns versions (v5), among them
 *            40  BK=128 NW=2 ST=5 V=49     (the library's for D = 64, long
 *                                         key spans, 128 queries an item)
 *            59  BK=96  NW=3 ST=5 V=59     (the same, 192 queries an item)
 *         60-67  D = 128 forms of the producer/turns versions (v6), among them
 *            62  BK=96  NW=2 ST=3 V=49     (the library's for D = 128)
 *           Times of every version: docs/PERFORMANCE.md.
 *
 * Each version is checked against an fp64 CPU reference on 64 sampled query
 * rows (RDA_PG_SAMPLES to change), then timed with CUDA events (median of 20 after 3 warm-ups).
 *
 *     nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Iinclude -Isrc \
 *          dev/cuda/attend.cu -o attend && ./attend [kernel] [N] [D] [causal] [segment]
 *
 * With a segment length the rows are cut into segments attending within
 * themselves (one job each): the shape of the dilated modes' short
 * segments.
 */
#include <math.h>

#include "attend_v1.cuh"
#include "cuda/attend_wgmma.cuh"
#include "playground.cuh"

/* wgmma variants: <BK, NW, ST, MINB> */
#ifndef WG_VARIANTS
#define WG_VARIANTS(X) X(3, 128, 2, 3, 1, 0) X(4, 128, 2, 4, 1, 0) X(5, 64, 2, 4, 1, 0) X(6, 128, 1, 3, 2, 0) \
    X(7, 128, 1, 4, 2, 0) X(8, 64, 1, 3, 3, 0) X(9, 64, 1, 4, 3, 0) X(10, 64, 1, 5, 3, 0) X(11, 128, 3, 4, 1, 1)    \
    X(12, 64, 3, 4, 1, 1) X(13, 128, 2, 4, 1, 1) X(14, 128, 1, 4, 2, 1) X(15, 64, 1, 4, 3, 1) X(16, 64, 3, 5, 1, 1) \
    X(17, 128, 3, 4, 1, 0) X(18, 128, 3, 4, 1, 7) X(19, 64, 1, 4, 3, 7) X(20, 128, 1, 4, 2, 7) X(21, 128, 2, 4, 1, 7) \
    X(22, 128, 3, 5, 1, 7) X(23, 64, 3, 5, 1, 7) X(24, 128, 1, 3, 2, 2) X(25, 128, 1, 3, 2, 1) X(26, 128, 1, 3, 2, 5) \
    X(27, 64, 1, 4, 3, 2) X(28, 128, 2, 4, 1, 5) X(29, 128, 3, 4, 1, 5) X(30, 128, 1, 4, 2, 2) X(31, 128, 1, 4, 2, 5) \
    X(32, 128, 1, 3, 2, 8) X(33, 64, 1, 4, 3, 8) X(34, 128, 2, 4, 1, 13) X(35, 128, 2, 4, 1, 17)    \
    X(36, 128, 2, 4, 1, 33) X(37, 128, 2, 4, 1, 49) X(38, 128, 2, 3, 1, 49) X(39, 128, 1, 4, 2, 33)    \
    X(40, 128, 2, 5, 1, 49) X(41, 128, 2, 2, 1, 49) X(42, 64, 2, 6, 1, 49) X(43, 128, 3, 4, 1, 49)    \
    X(44, 128, 3, 4, 1, 33) X(45, 64, 3, 6, 1, 49) X(46, 96, 3, 4, 1, 49) X(47, 96, 3, 5, 1, 49) X(48, 96, 2, 5, 1, 49) X(49, 128, 2, 5, 1, 113)    \
    X(50, 128, 2, 5, 1, 177) X(51, 128, 2, 5, 1, 241) X(52, 96, 3, 5, 1, 113) X(53, 96, 3, 5, 1, 177) X(54, 128, 2, 5, 1, 51)    \
    X(55, 128, 2, 5, 1, 57) X(56, 96, 3, 5, 1, 51) X(57, 96, 3, 5, 1, 57) X(58, 128, 2, 5, 1, 59) X(59, 96, 3, 5, 1, 59)    \
    X(60, 64, 2, 5, 1, 49) X(61, 64, 2, 5, 1, 59) X(62, 96, 2, 3, 1, 49) X(63, 96, 2, 3, 1, 59) X(64, 64, 2, 4, 1, 49)    \
    X(66, 64, 2, 5, 1, 51) X(67, 64, 2, 5, 1, 17)
#endif

static int query_rows(int kernel) {
#define WG_NW(k, bk, nw, st, mb, p) if (kernel == k) return 64 * nw;
    WG_VARIANTS(WG_NW)
    return 64;
}

template <int D> static void setup() {
#define WG_SETUP(k, bk, nw, st, mb, p)                                                                \
    if (wg_smem_bytes<D, bk, nw, st, p>() <= 232448)                                                              \
        CK(cudaFuncSetAttribute(attend_wgmma<__half, D, bk, nw, st, mb, p>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                (int)wg_smem_bytes<D, bk, nw, st, p>()));
    WG_VARIANTS(WG_SETUP)
}

template <int D> static void launch(int kernel, int64_t items, const attend_args &a, cudaStream_t s) {
    if (kernel == 0) attend_generic<__half><<<(unsigned)items, 128, 0, s>>>(a);
    if (kernel == 1) attend_mma_v1<__half, D><<<(unsigned)items, 128, mma_smem_bytes<D>(), s>>>(a);
    if (kernel == 2) attend_mma<__half, D><<<(unsigned)items, 128, mma_smem_bytes<D>(), s>>>(a);
#define WG_LAUNCH(k, bk, nw, st, mb, p) \
    if (kernel == k) attend_wgmma<__half, D, bk, nw, st, mb, p><<<(unsigned)items, wg_threads<nw, p>(), wg_smem_bytes<D, bk, nw, st, p>(), s>>>(a);
    WG_VARIANTS(WG_LAUNCH)
}

int main(int argc, char **argv) {
    int kernel = argc > 1 ? atoi(argv[1]) : 2;
    int64_t N = argc > 2 ? atoll(argv[2]) : 4096, D = argc > 3 ? atoll(argv[3]) : 64;
    int causal = argc > 4 ? atoi(argv[4]) : 0;
    int64_t W = argc > 5 ? atoll(argv[5]) : 0; /* segment length (0: one segment, dense) */
    const int64_t B = 1, H = 8, n = B * N * H * D;
    if (D != 64 && D != 128) {
        fprintf(stderr, "D must be 64 or 128\n");
        return 2;
    }
    CK(cudaFuncSetAttribute(attend_mma<__half, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mma_smem_bytes<128>()));
    CK(cudaFuncSetAttribute(attend_mma_v1<__half, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mma_smem_bytes<128>()));
    if (D == 64) setup<64>(); else setup<128>();
    std::vector<__half> hq(n), hk(n), hv(n), ho(n);
    pg_fill({&hq, &hk, &hv});
    /* the phase the planner makes for dense attention on one rank: one job
     * per segment (the groups/longnet shape with dilation 1) */
    const int64_t bq = query_rows(kernel);
    std::vector<rda_job> jobs;
    std::vector<rda_tile> tiles;
    W = pg_segment_jobs(N, W, bq, jobs, tiles);
    const int64_t njobs = (int64_t)jobs.size();
    const int64_t ntiles = (int64_t)tiles.size();
    std::vector<int64_t> heads(H);
    for (int64_t h = 0; h < H; h++) heads[h] = h;
    rda_class cl = {0, H, 0, ntiles, 0, 1};
    void *dq, *dk, *dv, *dout, *dj, *dt, *dh, *dc;
    float *acc, *m, *l;
    CK(cudaMalloc(&dq, n * 2));
    CK(cudaMalloc(&dk, n * 2));
    CK(cudaMalloc(&dv, n * 2));
    CK(cudaMalloc(&dout, n * 2));
    CK(cudaMalloc(&acc, n * 4));
    CK(cudaMalloc(&m, B * N * H * 4));
    CK(cudaMalloc(&l, B * N * H * 4));
    CK(cudaMalloc(&dj, sizeof(rda_job) * njobs));
    CK(cudaMalloc(&dt, sizeof(rda_tile) * ntiles));
    CK(cudaMalloc(&dh, sizeof(int64_t) * H));
    CK(cudaMalloc(&dc, sizeof cl));
    CK(cudaMemcpy(dq, hq.data(), n * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dk, hk.data(), n * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, hv.data(), n * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dj, jobs.data(), sizeof(rda_job) * njobs, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dt, tiles.data(), sizeof(rda_tile) * ntiles, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dh, heads.data(), sizeof(int64_t) * H, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dc, &cl, sizeof cl, cudaMemcpyHostToDevice));
    CK(cudaMemset(l, 0, B * N * H * 4)); /* l = 0: no earlier state */
    attend_args a = {};
    a.q = dq, a.k = dk, a.v = dv, a.o = dout;
    int64_t st[4] = {N * H * D, H * D, D, 1};
    for (int i = 0; i < 4; i++) a.qs[i] = a.ks[i] = a.vs[i] = a.os[i] = st[i];
    a.acc = acc, a.m = m, a.l = l, a.n = N;
    a.jobs = (rda_job *)dj, a.tiles = (rda_tile *)dt, a.heads = (int64_t *)dh, a.classes = (rda_class *)dc;
    a.nclasses = 1, a.B = B, a.H = H, a.Hkv = H, a.D = D, a.causal = causal, a.bq = bq;
    a.qscale = (float)(1.0 / sqrt((double)D) * 1.4426950408889634), a.factor = 1.0f;
    int64_t items = ntiles * B * H;
    cudaStream_t s;
    CK(cudaStreamCreate(&s));
    /* check */
    CK(cudaMemset(dout, 0xFF, n * 2));
    if (D == 64) launch<64>(kernel, items, a, s); else launch<128>(kernel, items, a, s);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(ho.data(), dout, n * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    std::vector<double> sc(N);
    const int samples = getenv("RDA_PG_SAMPLES") ? atoi(getenv("RDA_PG_SAMPLES")) : 64;
    for (int sample = 0; sample < samples; sample++) {
        int64_t qp = (sample * 7919) % N;
        for (int64_t h = 0; h < H; h++) {
            double mx = -INFINITY, sum = 0;
            int64_t k0 = qp / W * W, kend = causal ? qp + 1 : std::min(N, k0 + W);
            for (int64_t kp = k0; kp < kend; kp++) {
                double dot = 0;
                for (int64_t d = 0; d < D; d++)
                    dot += (double)__half2float(hq[(qp * H + h) * D + d]) * __half2float(hk[(kp * H + h) * D + d]);
                sc[kp] = dot / sqrt((double)D);
                mx = std::max(mx, sc[kp]);
            }
            for (int64_t kp = k0; kp < kend; kp++) sum += exp(sc[kp] - mx);
            for (int64_t d = 0; d < D; d++) {
                double o = 0;
                for (int64_t kp = k0; kp < kend; kp++) o += exp(sc[kp] - mx) / sum * __half2float(hv[(kp * H + h) * D + d]);
                double x = __half2float(ho[(qp * H + h) * D + d]);
                num += (x - o) * (x - o);
                den += o * o;
            }
        }
    }
    double rel = sqrt(num / den);
    /* time */
    const double t = pg_median_ms([&] { if (D == 64) launch<64>(kernel, items, a, s); else launch<128>(kernel, items, a, s); },
                                  s, 3, 20);
    const double flops = 4.0 * D * pg_pairs(jobs, causal) * H * B;
    printf("kernel %d N=%lld D=%lld causal=%d W=%lld: rel_l2 %.2e (%s), %.3f ms, %.1f TFLOP/s\n", kernel, (long long)N,
           (long long)D, causal, (long long)W, rel, rel < 1e-3 ? "pass" : "FAIL", t, flops / (t * 1e-3) / 1e12);
    return rel < 1e-3 ? 0 : 1;
}
