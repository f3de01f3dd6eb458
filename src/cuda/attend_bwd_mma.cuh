/* Tensor-core backward kernels (fp16/bf16, D = 64 or 128, contiguous head
 * dim), on mma.sync m16n8k16 with fp32 accumulation; the same work items,
 * job tables, Delta pre-pass and fp32 accumulators as attend_bwd
 * (attend_bwd.cuh), which stays the kernel of every other shape.
 *
 * dQ and dK/dV are made by two kernels, so that neither needs atomics in
 * its loop (SPEC.md's gradients, the "second pass" scheme):
 *
 * bwd_dq_mma<T, D>   one CTA (4 warps) per query tile of the planner (64
 *                    queries, 16 per warp): S = Q K^T and dP = dO V^T per
 *                    64-key tile (K and V double buffered by cp.async),
 *                    P = 2^(S qscale - LSE log2 e), dS = scale P (factor dP
 *                    - Delta), dQ += dS K in registers; at the end the tile
 *                    adds its dQ to the rank's fp32 dQ (the phase's items
 *                    own their query rows: no atomics).
 * bwd_dkv_mma<T, D>  one CTA per key tile (rda_plan_key_tiles: 64 keys of
 *                    one job, 16 per warp) over the job's queries (64 at a
 *                    time, double buffered; causal: from the first query
 *                    that sees the tile): S^T = K Q^T, dP^T = V dO^T, the
 *                    same P and dS, dV += P^T dO and dK += dS^T Q in
 *                    registers; at the end the tile adds dK and factor * dV
 *                    to the key block's fp32 accumulators with one atomic
 *                    per element (query heads of one K/V head, GQA, and
 *                    patterns sharing keys meet there).
 *
 * Deterministic mode (config.deterministic): the step is planned one query
 * range at a time and bwd_dkv_mma runs once per residue of the query head
 * modulo H / Hkv (rda_plan_key_tiles' head filter), so that no two items of
 * a launch add to one dK/dV row, and they add without atomics: dQ, dK, dV
 * are then bit-identical from run to run.
 *
 * P and dS go from the accumulator registers straight into the next
 * product's A operand (the m16n8 accumulator layout of two n-tiles is the
 * m16k16 A layout), as in attend_mma. Rows are addressed by the job's
 * stride: nothing is gathered or scattered. The recomputation of S and dP
 * in both kernels costs 7 matrix products per tile pair instead of 5. */
#pragma once

#include <type_traits>

#include "kernels.cuh"

/* Shared memory of both: two single tiles and two double-buffered tiles of
 * 64 rows (mma_lds padding), and 4 x 64 floats of row terms. */
template <int D> __host__ __device__ constexpr size_t bwd_mma_smem_bytes() {
    return 6 * 64 * (size_t)mma_lds<D>() * 2 + 4 * 64 * sizeof(float);
}

/* v into two consecutive floats of global memory, atomically per element
 * (one 8-byte reduction on sm_90). */
__device__ __forceinline__ void atomic_add2(float *p, float x, float y) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(p), make_float2(x, y));
#else
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
#endif
}

/* v into four consecutive floats of global memory (16-byte aligned),
 * atomically per element: one 16-byte reduction on sm_90. */
__device__ __forceinline__ void atomic_add4(float *p, float4 v) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4 *>(p), v);
#else
    atomic_add2(p, v.x, v.y);
    atomic_add2(p + 2, v.z, v.w);
#endif
}

/* 2^k for an integer k in [-126, 127], exactly. */
__device__ __forceinline__ float pow2i(int k) { return __int_as_float((127 + k) << 23); }

/* fp16 keeps 11 significant bits only from 2^-14 on: P and dS, which at
 * long flat rows sit near 1 / N, lose them as subnormals. So in fp16 both
 * enter the tensor cores scaled by powers of two, undone exactly in fp32:
 * P by 2^BWD_P_SHIFT (P <= 1, so at most 2^14 of fp16's 65504), dS by a
 * per-row exponent that follows the row's largest |dS| so far (the
 * accumulator row is rescaled when it drops, as the online softmax does
 * with its maximum): the largest value sent is below 2^14. bf16 has fp32's
 * exponent range and goes unscaled. */
#define BWD_P_SHIFT 14
#define BWD_DS_SHIFT0 40 /* the first exponent (rows of tiny dS) */

/* The per-row exponents sh[2] of x[8][4] (rows e >> 1 of the m16n8
 * fragments): lowered where max |x| of the row needs it, with the row of
 * acc[D/8][4] rescaled; then x times 2^sh. */
template <int D>
__device__ __forceinline__ void scale_rows(float x[8][4], float (*acc)[4], int sh[2]) {
    float mx[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], fabsf(x[nt][e]));
    float mul[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        /* mx < 2^ex; 2^(14 - ex) brings it under 2^14 (inf and NaN: left alone) */
        const int ex = ((__float_as_int(mx[i]) >> 23) & 0xff) - 126;
        const int want = max(-100, 14 - ex);
        if (mx[i] > 0.f && mx[i] <= 3.0e38f && want < sh[i]) {
            const float f = pow2i(max(-126, want - sh[i]));
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++) {
                acc[nt][2 * i] *= f;
                acc[nt][2 * i + 1] *= f;
            }
            sh[i] = want;
        }
        mul[i] = pow2i(sh[i]);
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) x[nt][e] *= mul[e >> 1];
}

/* The A fragments (m16k16, 16 rows of the warp) of rows row0.. of a tile
 * in shared memory, columns kk * 16 .. */
template <int LDS, typename T>
__device__ __forceinline__ void ldsm_a(uint32_t r[4], const T *tile, int row0, int kk, int lane) {
    ldsm_x4(r, tile + (row0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + kk * 16 + (lane >> 4) * 8);
}

/* The A fragments of the warp's 16 rows of two shared tiles, kept in
 * registers for the whole loop (HOLD; nothing otherwise). */
template <typename T, int D, bool HOLD>
__device__ __forceinline__ void hold_rows(uint32_t (*fa)[4], const T *ta, uint32_t (*fb)[4], const T *tb, int warp,
                                          int lane) {
#pragma unroll
    for (int kk = 0; kk < (HOLD ? D / 16 : 0); kk++) {
        ldsm_a<mma_lds<D>()>(fa[kk], ta, warp * 16, kk, lane);
        ldsm_a<mma_lds<D>()>(fb[kk], tb, warp * 16, kk, lane);
    }
}

/* acc[8][4] += A (16 rows x D, fragments from `a` or shared rows arow0 of
 * atile) times B^T, B = 64 rows of btile (x D): a 16 x 64 score block. */
template <typename T, int D, bool HOLD>
__device__ __forceinline__ void scores16x64(float acc[8][4], const uint32_t (*a)[4], const T *atile, int arow0,
                                            const T *btile, int lane) {
    constexpr int LDS = mma_lds<D>();
#pragma unroll
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t af[4];
        if (HOLD) {
#pragma unroll
            for (int e = 0; e < 4; e++) af[e] = a[kk][e];
        } else {
            ldsm_a<LDS>(af, atile, arow0, kk, lane);
        }
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t bf[4];
            ldsm_x4(bf, btile + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
            mma16816<T>(acc[2 * np], af, bf[0], bf[1]);
            mma16816<T>(acc[2 * np + 1], af, bf[2], bf[3]);
        }
    }
}

/* acc[D/8][4] += X (16 x 64, accumulator registers x[8][4]) times the 64 x D
 * tile btile (rows of the inner dimension), through ldmatrix.trans. */
template <typename T, int D>
__device__ __forceinline__ void times_tile(float (*acc)[4], const float x[8][4], const T *btile, int lane) {
    constexpr int LDS = mma_lds<D>();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const uint32_t xa[4] = {pack2<T>(x[2 * kk][0], x[2 * kk][1]), pack2<T>(x[2 * kk][2], x[2 * kk][3]),
                                pack2<T>(x[2 * kk + 1][0], x[2 * kk + 1][1]),
                                pack2<T>(x[2 * kk + 1][2], x[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t bf[4];
            ldsm_x4_t(bf, btile + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + dp * 16 + (lane >> 4) * 8);
            mma16816<T>(acc[2 * dp], xa, bf[0], bf[1]);
            mma16816<T>(acc[2 * dp + 1], xa, bf[2], bf[3]);
        }
    }
}

/* An item's rows of its batch and heads: Q and dO of its query head, K and
 * V of its K/V head (row 0 of each; rows by the tensors' row strides). */
template <typename T> struct head_rows {
    const T *q, *g, *k, *v;
};
template <typename T> __device__ __forceinline__ head_rows<T> head_rows_of(const attend_args &a, const item_pos &ip) {
    return {static_cast<const T *>(a.q) + ip.b * a.qs[0] + ip.h * a.qs[2],
            static_cast<const T *>(a.dout) + ip.b * a.gs[0] + ip.h * a.gs[2],
            static_cast<const T *>(a.k) + ip.b * a.ks[0] + ip.kh * a.ks[2],
            static_cast<const T *>(a.v) + ip.b * a.vs[0] + ip.kh * a.vs[2]};
}

template <typename T, int D>
__global__ void __launch_bounds__(128) bwd_dq_mma(const __grid_constant__ attend_args a) {
    constexpr int LDS = mma_lds<D>();
    constexpr bool HOLD = D <= 64; /* Q and dO fragments stay in registers */
    constexpr bool SCALED = std::is_same<T, __half>::value;
    extern __shared__ __align__(16) unsigned char smem[];
    T *Qs = reinterpret_cast<T *>(smem), *Gs = Qs + 64 * LDS, *Kbuf = Gs + 64 * LDS, *Vbuf = Kbuf + 2 * 64 * LDS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    if (job.nk == 0) return; /* rows no key reaches: dQ stays 0 */
    const int64_t qi0 = ip.first, r = job.stride;
    const int bq = (int)min((int64_t)64, job.q_count - qi0);
    const head_rows<T> hr = head_rows_of<T>(a, ip);
    load_rows_async<T, D>(Qs, hr.q, a.qs[1], job.q_local, qi0, r, bq, tid);
    load_rows_async<T, D>(Gs, hr.g, a.gs[1], job.q_local, qi0, r, bq, tid);
    cp_async_commit();

    /* the thread's two rows: LSE (log2 units) and Delta */
    const int rl[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8};
    float L2[2], Dr[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        L2[i] = INFINITY;
        Dr[i] = 0.f;
        if (rl[i] < bq) {
            const int64_t row = job.q_local + (qi0 + rl[i]) * r;
            L2[i] = a.lse[ip.b * a.ls[0] + ip.h * a.ls[1] + row * a.ls[2]] * 1.4426950408889634f;
            Dr[i] = a.delta[(ip.b * a.n + row) * a.H + ip.h];
        }
    }
    float dq[D / 8][4];
#pragma unroll
    for (int nt = 0; nt < D / 8; nt++) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
    int sh[2] = {BWD_DS_SHIFT0, BWD_DS_SHIFT0}; /* dS's exponent per row (fp16) */

    const item_keys ks = keys_of<64>(a, job, qi0, bq);
    auto load_tile = [&](int64_t t, int buf) {
        const key_tile kt = tile_of<64>(ks, t);
        load_rows_async<T, D>(Kbuf + buf * 64 * LDS, hr.k, a.ks[1], kt.kl, kt.k0, r, kt.bk, tid);
        load_rows_async<T, D>(Vbuf + buf * 64 * LDS, hr.v, a.vs[1], kt.kl, kt.k0, r, kt.bk, tid);
        cp_async_commit();
    };
    if (ks.ntiles > 0) load_tile(0, 0);
    uint32_t qa[HOLD ? D / 16 : 1][4], ga[HOLD ? D / 16 : 1][4];
    for (int64_t t = 0; t < ks.ntiles; t++) {
        const key_tile kt = tile_of<64>(ks, t);
        const int64_t k0 = kt.k0, dqc = kt.dq;
        const int bk = kt.bk;
        next_tile_ready(t, ks.ntiles, load_tile);
        if (HOLD && t == 0) hold_rows<T, D, HOLD>(qa, Qs, ga, Gs, warp, lane);
        const T *Ks = Kbuf + (t & 1) * 64 * LDS, *Vs = Vbuf + (t & 1) * 64 * LDS;
        float s[8][4], dp[8][4];
        scores16x64<T, D, HOLD>(s, qa, Qs, warp * 16, Ks, lane);
        scores16x64<T, D, HOLD>(dp, ga, Gs, warp * 16, Vs, lane);
        const bool mask = bk < 64 || (a.causal && k0 + 63 > qi0 + dqc);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                bool ok = true;
                if (mask) {
                    const int64_t key = k0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                    ok = key < k0 + bk && (!a.causal || key <= qi0 + rl[e >> 1] + dqc);
                }
                const float p = ok ? ex2(fmaf(s[nt][e], a.qscale, -L2[e >> 1])) : 0.f;
                s[nt][e] = a.scale * p * fmaf(dp[nt][e], a.factor, -Dr[e >> 1]); /* dS */
            }
        if (SCALED) scale_rows<D>(s, dq, sh);
        times_tile<T, D>(dq, s, Ks, lane); /* dQ += dS K */
        __syncthreads(); /* every warp is done with buffer t & 1 before it is refilled */
    }
    if (ks.ntiles == 0) cp_async_wait<0>();
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (rl[i] >= bq) continue;
        const int64_t row = job.q_local + (qi0 + rl[i]) * r;
        float *dst = a.dq + ((ip.b * a.n + row) * a.H + ip.h) * D + (lane & 3) * 2;
        const float un = SCALED ? pow2i(-sh[i]) : 1.f; /* (exact: -sh[i] stays within [-40, 100]) */
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
            float2 x = *reinterpret_cast<float2 *>(dst + nt * 8);
            x.x += dq[nt][2 * i] * un;
            x.y += dq[nt][2 * i + 1] * un;
            *reinterpret_cast<float2 *>(dst + nt * 8) = x;
        }
    }
}

/* A key-tile item of rda_plan_key_tiles: bk keys (the tile size it was
 * planned with: 64 here, 64 per warpgroup in bwd_wgmma) of one job's
 * progression. */
struct key_item {
    int64_t r, k0, kl; /* stride, first key in the progression, its local row */
    int64_t dqc;       /* key k allowed for query i iff k <= i + dqc */
    int bk;            /* keys of the tile */
};
__device__ __forceinline__ key_item key_item_of(const item_pos &ip, int bk = 64) {
    const rda_job &job = *ip.job;
    const int c = job.nk > 1 && ip.first >= job.k_count[0];
    key_item it;
    it.r = job.stride;
    it.k0 = ip.first - (c ? job.k_count[0] : 0);
    it.kl = job.k_local[c];
    it.dqc = (job.q_first - job.k_first[c]) / it.r;
    it.bk = (int)min((int64_t)bk, job.k_count[c] - it.k0);
    return it;
}

/* The job's queries a key tile meets: causal, from the first that sees
 * its first key; 64 at a time. */
struct query_span {
    int64_t i0, nq, ntq; /* first query, the job's queries, query tiles */
};
__device__ __forceinline__ query_span query_span_of(const attend_args &a, const rda_job &job, const key_item &it) {
    query_span qs;
    qs.i0 = a.causal ? max((int64_t)0, it.k0 - it.dqc) : 0;
    qs.nq = job.q_count;
    qs.ntq = qs.nq > qs.i0 ? (qs.nq - qs.i0 + 63) / 64 : 0;
    return qs;
}
/* Part `part` of `parts` of that span, whole query tiles (the fused kernels
 * run a small phase's key tiles as several CTAs each: their dK and dV meet
 * in the atomics that sum over query heads anyway). A part may be empty. */
__device__ __forceinline__ query_span query_span_part(const attend_args &a, const rda_job &job, const key_item &it,
                                                      int64_t part, int64_t parts) {
    query_span qs = query_span_of(a, job, it);
    if (parts > 1) {
        const int64_t tb = qs.ntq * part / parts, te = qs.ntq * (part + 1) / parts;
        qs.i0 += 64 * tb;
        qs.ntq = te - tb;
    }
    return qs;
}

template <typename T, int D>
__global__ void __launch_bounds__(128) bwd_dkv_mma(const __grid_constant__ attend_args a) {
    constexpr int LDS = mma_lds<D>();
    constexpr bool HOLD = D <= 64; /* K and V fragments stay in registers */
    constexpr bool SCALED = std::is_same<T, __half>::value;
    extern __shared__ __align__(16) unsigned char smem[];
    T *Ks = reinterpret_cast<T *>(smem), *Vs = Ks + 64 * LDS, *Qbuf = Vs + 64 * LDS, *Gbuf = Qbuf + 2 * 64 * LDS;
    float *Lbuf = reinterpret_cast<float *>(Gbuf + 2 * 64 * LDS), *Dbuf = Lbuf + 2 * 64;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    const key_item it = key_item_of(ip);
    const int64_t r = it.r, k0 = it.k0, kl = it.kl, dqc = it.dqc;
    const int bk = it.bk;
    const head_rows<T> hr = head_rows_of<T>(a, ip);
    load_rows_async<T, D>(Ks, hr.k, a.ks[1], kl, k0, r, bk, tid);
    load_rows_async<T, D>(Vs, hr.v, a.vs[1], kl, k0, r, bk, tid);
    cp_async_commit();

    const query_span qsp = query_span_of(a, job, it);
    const int64_t i0 = qsp.i0, nq = qsp.nq, ntq = qsp.ntq;
    auto load_qtile = [&](int64_t t, int buf) {
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        load_rows_async<T, D>(Qbuf + buf * 64 * LDS, hr.q, a.qs[1], job.q_local, qi, r, bqq, tid);
        load_rows_async<T, D>(Gbuf + buf * 64 * LDS, hr.g, a.gs[1], job.q_local, qi, r, bqq, tid);
        cp_async_commit();
        if (tid < 64) {
            float L = INFINITY, Dd = 0.f;
            if (tid < bqq) {
                const int64_t row = job.q_local + (qi + tid) * r;
                L = a.lse[ip.b * a.ls[0] + ip.h * a.ls[1] + row * a.ls[2]] * 1.4426950408889634f;
                Dd = a.delta[(ip.b * a.n + row) * a.H + ip.h];
            }
            Lbuf[buf * 64 + tid] = L;
            Dbuf[buf * 64 + tid] = Dd;
        }
    };
    const int kr[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8}; /* the thread's two keys */
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int nt = 0; nt < D / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[nt][e] = dv[nt][e] = 0.f;
    int sh[2] = {BWD_DS_SHIFT0, BWD_DS_SHIFT0}; /* dS's exponent per key row (fp16) */
    uint32_t ka[HOLD ? D / 16 : 1][4], va[HOLD ? D / 16 : 1][4];
    if (ntq > 0) load_qtile(0, 0);
    for (int64_t t = 0; t < ntq; t++) {
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        next_tile_ready(t, ntq, load_qtile);
        if (HOLD && t == 0) hold_rows<T, D, HOLD>(ka, Ks, va, Vs, warp, lane);
        const T *Qs = Qbuf + (t & 1) * 64 * LDS, *Gs = Gbuf + (t & 1) * 64 * LDS;
        const float *Ls = Lbuf + (t & 1) * 64, *Ds = Dbuf + (t & 1) * 64;
        float s[8][4], dp[8][4]; /* S^T and dP^T: 16 keys x 64 queries */
        scores16x64<T, D, HOLD>(s, ka, Ks, warp * 16, Qs, lane);
        scores16x64<T, D, HOLD>(dp, va, Vs, warp * 16, Gs, lane);
        const bool mask = bk < 64 || bqq < 64 || (a.causal && k0 + 63 > qi + dqc);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            const int qc = nt * 8 + (lane & 3) * 2;
            const float2 L = *reinterpret_cast<const float2 *>(Ls + qc), Dd = *reinterpret_cast<const float2 *>(Ds + qc);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                bool ok = true;
                if (mask) {
                    const int q = qc + (e & 1), k = kr[e >> 1];
                    ok = k < bk && q < bqq && (!a.causal || k0 + k <= qi + q + dqc);
                }
                const float p = ok ? ex2(fmaf(s[nt][e], a.qscale, -((e & 1) ? L.y : L.x))) : 0.f;
                s[nt][e] = SCALED ? p * pow2i(BWD_P_SHIFT) : p;
                dp[nt][e] = a.scale * p * fmaf(dp[nt][e], a.factor, -((e & 1) ? Dd.y : Dd.x)); /* dS^T */
            }
        }
        if (SCALED) scale_rows<D>(dp, dk, sh);
        times_tile<T, D>(dv, s, Gs, lane);  /* dV += P^T dO */
        times_tile<T, D>(dk, dp, Qs, lane); /* dK += dS^T Q */
        __syncthreads(); /* every warp is done with buffer t & 1 before it is refilled */
    }
    if (ntq == 0) {
        cp_async_wait<0>();
        return;
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (kr[i] >= bk) continue;
        const int64_t at = ((ip.b * a.nk + kl + (k0 + kr[i]) * r) * a.Hkv + ip.kh) * D + (lane & 3) * 2;
        const float uk = SCALED ? pow2i(-sh[i]) : 1.f, uv = SCALED ? a.factor * pow2i(-BWD_P_SHIFT) : a.factor;
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
            if (a.plain_add) { /* the deterministic order (rows of one launch are this item's alone) */
                float2 *pk = reinterpret_cast<float2 *>(a.dk + at + nt * 8), *pv = reinterpret_cast<float2 *>(a.dv + at + nt * 8);
                float2 xk = *pk, xv = *pv;
                xk.x += dk[nt][2 * i] * uk;
                xk.y += dk[nt][2 * i + 1] * uk;
                xv.x += dv[nt][2 * i] * uv;
                xv.y += dv[nt][2 * i + 1] * uv;
                *pk = xk;
                *pv = xv;
            } else {
                atomic_add2(a.dk + at + nt * 8, dk[nt][2 * i] * uk, dk[nt][2 * i + 1] * uk);
                atomic_add2(a.dv + at + nt * 8, dv[nt][2 * i] * uv, dv[nt][2 * i + 1] * uv);
            }
        }
    }
}
