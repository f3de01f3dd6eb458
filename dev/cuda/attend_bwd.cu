/* Kernel playground for the CUDA backward kernels (the llm.c dev/cuda way),
 * beside dev/cuda/attend.cu for the forward. Dense fp16 attention, B = 1,
 * H = 8, one rank, optionally cut into segments of W rows that attend within
 * themselves (the dilated modes' short segments). The kernels are the
 * library's own, launched directly with its argument block and the
 * planner's key tiles (rda_plan_key_tiles, linked from the library):
 *
 *   version 1  attend_bwd         CUDA cores, fp32: one CTA per 64-query tile
 *                                 owns dQ, dK/dV by fp32 atomics (backward v1;
 *                                 dense D=64 N=16384: 213.5 ms through rda
 *                                 bench on an H200, 2026-12-01)
 *   version 2  bwd_dq_mma +       mma.sync tensor cores: dQ over query tiles,
 *              bwd_dkv_mma        dK/dV over 64-key tiles in registers, one
 *                                 atomic per element at the end (backward v2,
 *                                 the library's for fp16/bf16 at D = 64, 128)
 *   version 3  version 2 with plain adds in bwd_dkv_mma's epilogue (the
 *              deterministic mode's form: here every item owns its key rows)
 *   version 4  bwd_wgmma1         Hopper warpgroup MMA, one fused kernel over
 *                                 the 64-key tiles: S^T, dP^T, dV, dK and dQ
 *                                 (dS transposed into shared memory by
 *                                 stmatrix) per 64-query tile, dQ by fp32
 *                                 atomics; five products per tile pair instead
 *                                 of seven (sm_90a builds only)
 *                                 (the library's at D = 64 until version 9)
 *   version 5  bwd_wgmma<., 2>    two warpgroups over 128-key tiles sharing
 *                                 the Q/dO stream, dQ over the 128 keys (each
 *                                 warpgroup half the head columns): half the
 *                                 dQ atomics; the fp16 dS exponent decided at
 *                                 the barrier that publishes dS (one barrier
 *                                 fewer a tile), dV's product issued before
 *                                 it, dQ's atomics beside dK's product (the
 *                                 library's at D = 128)
 *   version 6  bwd_wgmma<., 1>    version 5's kernel with one warpgroup over
 *                                 64-key tiles (two CTAs per multiprocessor;
 *                                 D = 64 only)
 *   version 7  bwd_wgmma1<., BULK> version 4 with dQ_t stored into a shared
 *                                 fp32 stage and added to dQ by one bulk
 *                                 reduction (cp.reduce.async.bulk) per row
 *                                 instead of the threads' atomics
 *   version 8  bwd_wgmma<., 2, BULK> version 5 with version 7's dQ
 *   version 9  bwd_wgmma1<., RED4> version 4 with 16-byte dQ atomics: lanes
 *                                 2j and 2j + 1 exchange accumulator pairs
 *                                 so that each adds four columns of a row
 *                                 (the library's at D = 64 for phases of few
 *                                 key tiles)
 *   version 10 bwd_wgmma<., 2, RED4> version 5 with version 9's dQ
 *   version 11 bwd_wgmma1<., TILE> version 4 with dQ head-major in fp32, so
 *                                 that a query tile's rows are one range:
 *                                 dQ_t into a shared stage of that layout,
 *                                 one bulk reduction per tile (dq_tile_at)
 *   version 12 bwd_wgmma<., 2, TILE> version 5 with version 11's dQ
 *   version 13 bwd_wgmma_ws       warp specialisation over 128-key tiles
 *                                 (D = 64): two consumer warpgroups with
 *                                 version 4's products over 64 keys each, a
 *                                 producer warpgroup whose warps load the
 *                                 query tiles into three stages (mbarriers)
 *                                 and add the two consumers' dQ_t, summed,
 *                                 by 16-byte atomics (the library's at D = 64
 *                                 for phases of 4+ key tiles a multiprocessor)
 *   version 14 bwd_wgmma1<., RED4, 3> version 9 at three CTAs per
 *                                 multiprocessor (168 registers a thread)
 *
 * Each version runs after the same forward (attend_mma, which also writes
 * the LSE) and the Delta pre-pass; its timed span is what the library's
 * backward runs before converting the fp32 gradients: the three clears,
 * Delta, and the version's kernels. dQ is checked on sampled query rows and
 * dK, dV on sampled key rows against an fp64 CPU computation of SPEC.md's
 * gradients from the same fp16 inputs, the forward's O and LSE
 * (RDA_PG_SAMPLES rows, default 32), rel_l2 at most 2e-3 each (SPEC.md's
 * fp16 bound); then timed with CUDA events (median of 15 after 3 warm-ups).
 *
 *     cmake --build build-gpu --target rda_bwd_playground
 *     build-gpu/rda_bwd_playground [version] [N] [D] [causal] [segment]
 *
 * Times of every version: docs/PERFORMANCE.md.
 */
#include <math.h>

#include "cuda/attend_bwd.cuh"
#include "cuda/attend_bwd_mma.cuh"
#include "cuda/attend_bwd_wgmma.cuh"
#include "playground.cuh"

template <typename X> static X *upload(const std::vector<X> &h) {
    X *d;
    CK(cudaMalloc(&d, sizeof(X) * std::max<size_t>(h.size(), 1)));
    if (!h.empty()) CK(cudaMemcpy(d, h.data(), sizeof(X) * h.size(), cudaMemcpyHostToDevice));
    return d;
}

template <int D> static void setup() {
    CK(cudaFuncSetAttribute(attend_mma<__half, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)mma_smem_bytes<D>()));
    CK(cudaFuncSetAttribute(bwd_dq_mma<__half, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_mma_smem_bytes<D>()));
    CK(cudaFuncSetAttribute(bwd_dkv_mma<__half, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_mma_smem_bytes<D>()));
    CK(cudaFuncSetAttribute(attend_bwd<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_smem_bytes(D, 64)));
    CK(cudaFuncSetAttribute(bwd_wgmma1<__half, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg1_smem_bytes<D>()));
    CK(cudaFuncSetAttribute(bwd_wgmma<__half, D, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg_smem_bytes<D, 2>()));
    if constexpr (D == 64)
        CK(cudaFuncSetAttribute(bwd_wgmma<__half, D, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)bwd_wg_smem_bytes<D, 1>()));
    CK(cudaFuncSetAttribute(bwd_wgmma1<__half, D, BWD_DQ_BULK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg1_smem_bytes<D, BWD_DQ_BULK>()));
    CK(cudaFuncSetAttribute(bwd_wgmma<__half, D, 2, BWD_DQ_BULK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg_smem_bytes<D, 2, BWD_DQ_BULK>()));
    CK(cudaFuncSetAttribute(bwd_wgmma1<__half, D, BWD_DQ_RED4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg1_smem_bytes<D>()));
    CK(cudaFuncSetAttribute(bwd_wgmma<__half, D, 2, BWD_DQ_RED4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg_smem_bytes<D, 2>()));
    CK(cudaFuncSetAttribute(bwd_wgmma1<__half, D, BWD_DQ_TILE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg1_smem_bytes<D, BWD_DQ_TILE>()));
    CK(cudaFuncSetAttribute(bwd_wgmma<__half, D, 2, BWD_DQ_TILE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg_smem_bytes<D, 2, BWD_DQ_TILE>()));
    CK(cudaFuncSetAttribute(bwd_wgmma1<__half, D, BWD_DQ_RED4, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            (int)bwd_wg1_smem_bytes<D>()));
    if constexpr (D == 64)
        CK(cudaFuncSetAttribute(bwd_wgmma_ws<__half, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)bwd_ws_smem_bytes<D>()));
}

struct bufs {
    float *dq, *dk, *dv, *delta;
    size_t n, rows;
};

/* The backward of one version: clears, Delta, kernels. */
template <int D>
static void backward(int version, const attend_args &a, const attend_args &ka, int64_t items, int64_t kitems,
                     const bufs &b, cudaStream_t s) { /* (versions 5, 8, 10, 12, 13: ka, kitems over 128-key tiles) */
    CK(cudaMemsetAsync(b.dq, 0, b.n * 4, s));
    CK(cudaMemsetAsync(b.dk, 0, b.n * 4, s));
    CK(cudaMemsetAsync(b.dv, 0, b.n * 4, s));
    const int64_t H = a.H, N = a.n;
    bwd_delta<__half><<<(unsigned)std::min<int64_t>(((int64_t)b.rows + 7) / 8, 65535), 256, 0, s>>>(
        static_cast<const __half *>(a.o), N * H * D, H * D, D, 1, static_cast<const __half *>(a.dout), N * H * D,
        H * D, D, 1, b.delta, a.B, N, H, D);
    if (version == 1) {
        attend_bwd<__half><<<(unsigned)items, BWD_THREADS, bwd_smem_bytes(D, 64), s>>>(a);
    } else if (version == 4) {
        bwd_wgmma1<__half, D><<<(unsigned)kitems, 128, bwd_wg1_smem_bytes<D>(), s>>>(ka);
    } else if (version == 5) {
        bwd_wgmma<__half, D, 2><<<(unsigned)kitems, 256, bwd_wg_smem_bytes<D, 2>(), s>>>(ka);
    } else if (version == 6) {
        if constexpr (D == 64) bwd_wgmma<__half, D, 1><<<(unsigned)kitems, 128, bwd_wg_smem_bytes<D, 1>(), s>>>(ka);
    } else if (version == 7) {
        bwd_wgmma1<__half, D, BWD_DQ_BULK><<<(unsigned)kitems, 128, bwd_wg1_smem_bytes<D, BWD_DQ_BULK>(), s>>>(ka);
    } else if (version == 8) {
        bwd_wgmma<__half, D, 2, BWD_DQ_BULK><<<(unsigned)kitems, 256, bwd_wg_smem_bytes<D, 2, BWD_DQ_BULK>(), s>>>(ka);
    } else if (version == 9) {
        bwd_wgmma1<__half, D, BWD_DQ_RED4><<<(unsigned)kitems, 128, bwd_wg1_smem_bytes<D>(), s>>>(ka);
    } else if (version == 10) {
        bwd_wgmma<__half, D, 2, BWD_DQ_RED4><<<(unsigned)kitems, 256, bwd_wg_smem_bytes<D, 2>(), s>>>(ka);
    } else if (version == 11) {
        bwd_wgmma1<__half, D, BWD_DQ_TILE><<<(unsigned)kitems, 128, bwd_wg1_smem_bytes<D, BWD_DQ_TILE>(), s>>>(ka);
    } else if (version == 12) {
        bwd_wgmma<__half, D, 2, BWD_DQ_TILE><<<(unsigned)kitems, 256, bwd_wg_smem_bytes<D, 2, BWD_DQ_TILE>(), s>>>(ka);
    } else if (version == 13) {
        if constexpr (D == 64) bwd_wgmma_ws<__half, D><<<(unsigned)kitems, 384, bwd_ws_smem_bytes<D>(), s>>>(ka);
    } else if (version == 14) {
        bwd_wgmma1<__half, D, BWD_DQ_RED4, 3><<<(unsigned)kitems, 128, bwd_wg1_smem_bytes<D>(), s>>>(ka);
    } else {
        bwd_dq_mma<__half, D><<<(unsigned)items, 128, bwd_mma_smem_bytes<D>(), s>>>(a);
        bwd_dkv_mma<__half, D><<<(unsigned)kitems, 128, bwd_mma_smem_bytes<D>(), s>>>(ka);
    }
}

int main(int argc, char **argv) {
    const int version = argc > 1 ? atoi(argv[1]) : 2;
    const int64_t N = argc > 2 ? atoll(argv[2]) : 4096, D = argc > 3 ? atoll(argv[3]) : 64;
    const int causal = argc > 4 ? atoi(argv[4]) : 0;
    int64_t W = argc > 5 ? atoll(argv[5]) : 0; /* segment length (0: one segment, dense) */
    const int64_t B = 1, H = 8, n = B * N * H * D;
    if ((D != 64 && D != 128) || version < 1 || version > 14 || N < 1 || ((version == 6 || version == 13) && D != 64)) {
        fprintf(stderr, "usage: %s [version 1-14 (6, 13: D = 64)] [N >= 1] [D 64|128] [causal] [segment]\n", argv[0]);
        return 2;
    }
    int major = 0;
    CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    if (version >= 4 && major != 9) {
        fprintf(stderr, "versions 4 to 14 (warpgroup MMA) run on Hopper (sm_90a builds) only\n");
        return 2;
    }
    if (D == 64) setup<64>(); else setup<128>();
    std::vector<__half> hq(n), hk(n), hv(n), hg(n), ho(n);
    pg_fill({&hq, &hk, &hv, &hg});
    /* one job per segment (dense: one job), query tiles of 64, one class */
    std::vector<rda_job> jobs;
    std::vector<rda_tile> tiles;
    W = pg_segment_jobs(N, W, 64, jobs, tiles);
    const int64_t njobs = (int64_t)jobs.size();
    std::vector<int64_t> heads(H);
    for (int64_t h = 0; h < H; h++) heads[h] = h;
    std::vector<rda_class> cls = {{0, H, 0, (int64_t)tiles.size(), 0, 1}};
    rda_phase ph = {};
    ph.bq = 64;
    ph.jobs = jobs.data(), ph.njobs = ph.jobs_cap = njobs;
    ph.tiles = tiles.data(), ph.ntiles = ph.tiles_cap = (int64_t)tiles.size();
    ph.heads = heads.data(), ph.nheads = ph.heads_cap = H;
    ph.classes = cls.data(), ph.nclasses = ph.classes_cap = 1;
    ph.items = (int64_t)tiles.size() * B * H;
    /* the key tiles of the same phase, by the library's planner (64 keys;
     * versions 5, 8, 10, 12 and 13: 128) */
    const int64_t kbk = version == 5 || version == 8 || version == 10 || version == 12 || version == 13 ? 128 : 64;
    rda_problem p = {};
    p.causal = causal != 0;
    p.B = B, p.N = N, p.H = H, p.Hkv = H, p.D = D;
    std::vector<rda_class> kcls(1);
    rda_phase kph;
    std::vector<rda_tile> ktiles(rda_plan_key_tiles(&ph, &p, kbk, 1, 0, NULL, 0, kcls.data(), NULL, &kph));
    rda_plan_key_tiles(&ph, &p, kbk, 1, 0, ktiles.data(), (int64_t)ktiles.size(), kcls.data(), NULL, &kph);
    kcls.resize(kph.nclasses);

    __half *dq16 = upload(hq), *dk16 = upload(hk), *dv16 = upload(hv), *dg16 = upload(hg), *do16;
    float *acc, *m, *l, *lse;
    bufs b = {NULL, NULL, NULL, NULL, (size_t)n, (size_t)(B * N * H)};
    CK(cudaMalloc(&do16, n * 2));
    CK(cudaMalloc(&acc, n * 4));
    CK(cudaMalloc(&m, b.rows * 4));
    CK(cudaMalloc(&l, b.rows * 4));
    CK(cudaMalloc(&lse, b.rows * 4));
    CK(cudaMalloc(&b.dq, n * 4));
    CK(cudaMalloc(&b.dk, n * 4));
    CK(cudaMalloc(&b.dv, n * 4));
    CK(cudaMalloc(&b.delta, b.rows * 4));
    CK(cudaMemset(l, 0, b.rows * 4)); /* l = 0: no earlier state */
    attend_args a = {};
    a.q = dq16, a.k = dk16, a.v = dv16, a.o = do16;
    const int64_t st[4] = {N * H * D, H * D, D, 1};
    for (int i = 0; i < 4; i++) a.qs[i] = a.ks[i] = a.vs[i] = a.os[i] = a.gs[i] = st[i];
    a.lse = lse, a.ls[0] = H * N, a.ls[1] = N, a.ls[2] = 1;
    a.acc = acc, a.m = m, a.l = l, a.n = N;
    a.jobs = upload(jobs), a.tiles = upload(tiles), a.heads = upload(heads), a.classes = upload(cls);
    a.nclasses = 1, a.B = B, a.H = H, a.Hkv = H, a.D = D, a.causal = causal, a.bq = 64, a.zero_bq = 64;
    const double scale = 1.0 / sqrt((double)D);
    a.qscale = (float)(scale * 1.4426950408889634), a.factor = 1.0f, a.scale = (float)scale;
    a.dout = dg16, a.dq = b.dq, a.delta = b.delta, a.dk = b.dk, a.dv = b.dv, a.nk = N;
    attend_args ka = a;
    ka.tiles = upload(ktiles), ka.classes = upload(kcls), ka.nclasses = kph.nclasses, ka.bq = kbk;
    ka.plain_add = version == 3;
    const int64_t items = ph.items, kitems = kph.items;
    cudaStream_t s;
    CK(cudaStreamCreate(&s));

    /* the forward: O and LSE */
    if (D == 64) attend_mma<__half, 64><<<(unsigned)items, 128, mma_smem_bytes<64>(), s>>>(a);
    else attend_mma<__half, 128><<<(unsigned)items, 128, mma_smem_bytes<128>(), s>>>(a);
    CK(cudaGetLastError());
    std::vector<float> hlse(b.rows);
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(ho.data(), do16, n * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hlse.data(), lse, b.rows * 4, cudaMemcpyDeviceToHost));

    /* check: the version once */
    if (D == 64) backward<64>(version, a, ka, items, kitems, b, s); else backward<128>(version, a, ka, items, kitems, b, s);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(s));
    std::vector<float> gq(n), gk(n), gv(n);
    CK(cudaMemcpy(gq.data(), b.dq, n * 4, cudaMemcpyDeviceToHost));
    if (version == 11 || version == 12) { /* dQ head-major, in dq_tile_at's layout: back to [B, N, H, D] */
        const std::vector<float> t = gq;
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < N; i++)
                for (int d = 0; d < (int)D; d++) gq[(i * H + h) * D + d] = t[h * N * D + dq_tile_at(i, d, (int)D)];
    }
    CK(cudaMemcpy(gk.data(), b.dk, n * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gv.data(), b.dv, n * 4, cudaMemcpyDeviceToHost));
    auto at = [H, D](const std::vector<__half> &x, int64_t row, int64_t h, int64_t d) {
        return (double)__half2float(x[(row * H + h) * D + d]);
    };
    /* SPEC.md's gradients of sum(dO * O) in fp64: row i attends to keys
     * [seg start, seg end) (causal: up to i); P from the forward's LSE, Delta
     * = rowsum(dO * O) from its O */
    auto seg0 = [W](int64_t i) { return i / W * W; };
    auto keys_end = [&](int64_t i) { return causal ? i + 1 : std::min(N, seg0(i) + W); };
    auto queries_first = [&](int64_t j) { return causal ? j : seg0(j); };
    auto score = [&](int64_t i, int64_t j, int64_t h) {
        double x = 0;
        for (int64_t d = 0; d < D; d++) x += at(hq, i, h, d) * at(hk, j, h, d);
        return x * scale;
    };
    auto dot_gv = [&](int64_t i, int64_t j, int64_t h) {
        double x = 0;
        for (int64_t d = 0; d < D; d++) x += at(hg, i, h, d) * at(hv, j, h, d);
        return x;
    };
    std::vector<double> delta(b.rows);
    for (int64_t i = 0; i < N; i++)
        for (int64_t h = 0; h < H; h++) {
            double x = 0;
            for (int64_t d = 0; d < D; d++) x += at(hg, i, h, d) * at(ho, i, h, d);
            delta[i * H + h] = x;
        }
    const int samples = getenv("RDA_PG_SAMPLES") ? atoi(getenv("RDA_PG_SAMPLES")) : 32;
    std::vector<double> eq(2), ek(2), ev(2);
    std::vector<double> ref(D), refk(D), refv(D);
    bool finite = true;
    for (int sample = 0; sample < samples; sample++) {
        const int64_t r = (sample * 7919 + 13) % N;
        for (int64_t h = 0; h < H; h++) {
            /* dQ of query row r */
            std::fill(ref.begin(), ref.end(), 0.0);
            const double L = hlse[h * N + r];
            for (int64_t j = seg0(r); j < keys_end(r); j++) {
                const double P = exp(score(r, j, h) - L), dS = P * (dot_gv(r, j, h) - delta[r * H + h]);
                for (int64_t d = 0; d < D; d++) ref[d] += scale * dS * at(hk, j, h, d);
            }
            for (int64_t d = 0; d < D; d++) {
                const double g = gq[(r * H + h) * D + d];
                finite &= std::isfinite(g);
                eq[0] += (g - ref[d]) * (g - ref[d]), eq[1] += ref[d] * ref[d];
            }
            /* dK, dV of key row r: the queries that see it */
            std::fill(refk.begin(), refk.end(), 0.0);
            std::fill(refv.begin(), refv.end(), 0.0);
            const int64_t qend = std::min(N, seg0(r) + W);
            for (int64_t i = queries_first(r); i < qend; i++) {
                const double P = exp(score(i, r, h) - hlse[h * N + i]);
                const double dS = P * (dot_gv(i, r, h) - delta[i * H + h]);
                for (int64_t d = 0; d < D; d++) {
                    refv[d] += P * at(hg, i, h, d);
                    refk[d] += scale * dS * at(hq, i, h, d);
                }
            }
            for (int64_t d = 0; d < D; d++) {
                const double x = gk[(r * H + h) * D + d], y = gv[(r * H + h) * D + d];
                finite &= std::isfinite(x) && std::isfinite(y);
                ek[0] += (x - refk[d]) * (x - refk[d]), ek[1] += refk[d] * refk[d];
                ev[0] += (y - refv[d]) * (y - refv[d]), ev[1] += refv[d] * refv[d];
            }
        }
    }
    const double rq = sqrt(eq[0] / eq[1]), rk = sqrt(ek[0] / ek[1]), rv = sqrt(ev[0] / ev[1]);
    const bool pass = finite && rq <= 2e-3 && rk <= 2e-3 && rv <= 2e-3;

    /* time */
    const double t = pg_median_ms([&] {
        if (D == 64) backward<64>(version, a, ka, items, kitems, b, s); else backward<128>(version, a, ka, items, kitems, b, s);
    }, s, 3, 15);
    const double flops = 2.5 * 4.0 * D * pg_pairs(jobs, causal) * H * B; /* SPEC.md: the backward counts 2.5x the forward */
    printf("backward version %d N=%lld D=%lld causal=%d W=%lld: rel_l2 dQ %.2e dK %.2e dV %.2e (%s), %.3f ms, "
           "%.1f TFLOP/s\n",
           version, (long long)N, (long long)D, causal, (long long)W, rq, rk, rv, pass ? "pass" : "FAIL", t,
           flops / (t * 1e-3) / 1e12);
    return pass ? 0 : 1;
}
