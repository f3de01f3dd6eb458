/* bwd_wgmma<T, D, NWG>: the Hopper backward (sm_90a), one fused kernel on
 * the warpgroup MMA (wgmma.mma_async) for fp16/bf16 at D = 64 and 128.
 *
 * The work items are key tiles of one job (rda_plan_key_tiles with bk = 64
 * NWG; causal: from the first query that sees the tile), NWG warpgroups per
 * CTA, warpgroup w owning keys 64 w .. 64 w + 63. The library runs NWG = 2 at
 * D = 128 and bwd_wgmma1 (below) at D = 64, where this kernel measured slower
 * with either NWG (backward v5 in docs/PERFORMANCE.md). Each tile's K and V
 * stay in shared memory (and, at D = 64, in registers as A fragments) while
 * the job's queries stream by 64 at a time, Q, dO, LSE and Delta double
 * buffered by cp.async and shared by the warpgroups. Per query tile, all in the 128-byte
 * swizzled layout wgmma reads (attend_wgmma.cuh), each warpgroup for its 64
 * keys:
 *
 *   S^T  = K Q^T, dP^T = V dO^T            (A: K, V; B: Q, dO K-major)
 *   P^T  = 2^(S^T qscale - LSE log2 e), dS^T = scale P^T (factor dP^T - Delta)
 *   dV  += P^T dO, dK += dS^T Q            (A: P^T, dS^T from the accumulator
 *                                           registers; B: dO, Q N-major)
 *
 * and then, over all the tile's keys, warpgroup w the head columns w D/NWG ..:
 *
 *   dQ_t = dS K                            (A: dS, stored transposed into
 *                                           shared memory by stmatrix; B: K
 *                                           N-major)
 *
 * dQ_t is added to the rank's fp32 dQ by atomics (the "atomics in fp32"
 * scheme; the library runs 16-byte ones, bwd_dq_form below), once per
 * tile: at D = 128 once per 128 keys, half the atomic traffic of 64-key
 * tiles (the atomics took a third of the time of backward v4), while dK's
 * product runs. dK and dV are
 * added at the end as in bwd_dkv_mma (atomics: GQA's query heads and
 * patterns sharing keys meet there). The deterministic mode keeps
 * attend_bwd_mma's pair.
 *
 * fp16: P enters the tensor cores times 2^BWD_P_SHIFT, and dS times 2^sh
 * with one exponent for the whole tile (it must be the same along the keys
 * for dQ and along the queries for dK), following the largest |dS| seen so
 * far; dK's accumulator is rescaled when it drops. The exponent is decided
 * at the barrier that publishes dS anyway: dS is packed with the current
 * one, and only a tile whose maximum asks for a smaller one is packed and
 * stored again. Both are undone exactly in fp32. */
#pragma once

#include <type_traits>

#include "attend_bwd_mma.cuh"
#include "attend_wgmma.cuh"

/* How the fused kernels add each query tile's dQ_t into the rank's fp32 dQ
 * (their DQ parameter; the library runs BWD_DQ_RED2, the others are
 * playground versions, backward v6 in docs/PERFORMANCE.md): */
enum bwd_dq_form {
    BWD_DQ_RED2 = 0, /* one 8-byte atomic per accumulator pair (dq_atomics) */
    BWD_DQ_RED4 = 1, /* pairs exchanged by neighbouring lanes, one 16-byte atomic per 4 columns */
    BWD_DQ_BULK = 2, /* a shared fp32 stage, one bulk reduction per row (dq_stage_store) */
    BWD_DQ_TILE = 3, /* dQ head-major, a query tile's rows one range: one bulk reduction a tile (dq_tile_at) */
};

/* A dQ stage of the BULK form (dq_stage_store below): 64 rows of D floats,
 * padded; of the TILE form: 64 rows of D floats in dQ's own layout. */
template <int D> __host__ __device__ constexpr uint32_t dq_stage_row() { return D * 4 + 32; }
template <int D, int DQ> __host__ __device__ constexpr size_t dq_stage_bytes() {
    return DQ == BWD_DQ_BULK ? 64 * (size_t)dq_stage_row<D>() : DQ == BWD_DQ_TILE ? 64 * (size_t)D * 4 : 0;
}

/* The TILE form's dQ: fp32, head-major ([B, H, N, D]), and in row R the
 * 16-byte chunk of columns 4c .. 4c + 3 at chunk c ^ k(R), k(R) = 2 ((R +
 * 2 (R / 8)) % 4): the offset of (R, col) in its head's plane. A query tile of
 * consecutive rows is one range of it, whatever row it starts at, and k puts
 * the 16-byte stores of a quarter warp (rows q, q + 1, q + 8, q + 9, two
 * chunks each) on distinct banks of the stage that copies it. */
__host__ __device__ constexpr int64_t dq_tile_at(int64_t R, int col, int D) {
    return R * D + ((((col >> 2) ^ (int)(((R + 2 * (R >> 3)) & 3) << 1)) << 2) | (col & 3));
}

/* Shared memory of bwd_wgmma: K and V (NWG 64-row swizzled tiles each), two
 * stages of [Q, dO] (64 rows x D), the dS tile (64 queries x 64 NWG keys),
 * two stages of [LSE, Delta] (64 floats each), eight floats of the warps'
 * maxima, from a 1024-byte aligned base. */
template <int D, int NWG> __host__ __device__ constexpr size_t bwd_wg_base_bytes() {
    return (2 * NWG + 4) * (size_t)64 * D * 2 + 64 * 64 * NWG * 2 + 4 * 64 * sizeof(float) + 8 * sizeof(float);
}
/* (BWD_DQ_BULK, BWD_DQ_TILE: and the two dQ stages, 128-byte aligned, after them) */
template <int D, int NWG, int DQ = BWD_DQ_RED2> __host__ __device__ constexpr size_t bwd_wg_smem_bytes() {
    return 1024 + (dq_stage_bytes<D, DQ>() ? ((bwd_wg_base_bytes<D, NWG>() + 127) & ~(size_t)127) +
                                                 2 * dq_stage_bytes<D, DQ>()
                                           : bwd_wg_base_bytes<D, NWG>());
}

/* Byte offset of 16-byte chunk ch of row `row` in a swizzled 64-row tile:
 * column blocks of 64 elements, 128 bytes a row, chunk c at c ^ (row % 8). */
__device__ __forceinline__ uint32_t sw_off(int row, int ch) {
    return (uint32_t)((ch >> 3) * (64 * 128) + row * 128 + (((ch & 7) ^ (row & 7)) << 4));
}

/* 64 rows (row0 + i) * r + local of a [.., D] tensor (row stride rs) into a
 * swizzled tile, zeros from row `rows` on (cp.async by NTH threads; the
 * caller commits). */
template <typename T, int D, int NTH = 128>
__device__ __forceinline__ void load_sw_rows(unsigned char *dst, const T *base, int64_t rs, int64_t local,
                                             int64_t row0, int64_t r, int rows, int tid) {
    constexpr int CH = D / 8;
#pragma unroll
    for (int i = tid; i < 64 * CH; i += NTH) { /* (NTH threads, tid 0 .. NTH - 1) */
        const int row = i / CH, ch = i % CH;
        const int64_t at = local + (row0 + (row < rows ? row : 0)) * r;
        cp_async16(dst + sw_off(row, ch), base + at * rs + ch * 8, row < rows);
    }
}

__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(smem_u32(smem)), "l"(gmem),
                 "r"(valid ? 4 : 0));
}

/* Four 8 x 8 matrices of 16-bit pairs (the m16n8 fragment layout) stored
 * transposed: lanes 8m .. 8m + 7 give the row addresses of matrix m. */
__device__ __forceinline__ void stsm_x4_t(uint32_t addr, const uint32_t r[4]) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(r[0]),
                 "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
}

/* Descriptors of a swizzled 64-row tile at s: K-major, 16 columns from kk * 16
 * (scores: A = K or V, B = Q or dO; dQ's A = dS); N-major, 16 rows from
 * kk * 16 (dV's and dK's B = dO and Q, dQ's B = K). */
__device__ __forceinline__ uint64_t sw_kmajor(uint32_t s, int kk) {
    return wg_desc(s + (kk >> 2) * (64 * 128) + (kk & 3) * 32, 16, 1024);
}
__device__ __forceinline__ uint64_t sw_nmajor(uint32_t s, int kk) { return wg_desc(s + kk * 2048, 64 * 128, 1024); }

/* dQ_t through shared memory (the kernels' BULK form): each thread stores its
 * accumulator pairs into a 64-row fp32 stage, rows D * 4 + 32 bytes apart
 * (the padding puts the four rows of a half-warp's 8-byte stores on distinct
 * banks), and one warp hands every row to the copy engine as one
 * cp.reduce.async.bulk .add.f32 of D * 4 bytes into the rank's fp32 dQ: the
 * same fp32 additions at L2 as the atomics, issued as 64 instructions a tile
 * instead of D / 4 per thread. Two stages: a stage is refilled two query
 * tiles later, after its reduction has read it (wait_group.read 1). */
__device__ __forceinline__ void bulk_reduce_add_f32(float *dst, uint32_t src, uint32_t bytes) {
#ifdef RDA_WGMMA
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;" ::"l"(dst), "r"(src),
                 "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void bulk_commit() {
#ifdef RDA_WGMMA
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
#endif
}
/* the calling thread's bulk groups but the newest N have read their source
 * (READ) or are complete */
template <int N, bool READ> __device__ __forceinline__ void bulk_wait() {
#ifdef RDA_WGMMA
    if (READ) asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory");
    else asm volatile("cp.async.bulk.wait_group %0;" ::"n"(N) : "memory");
#endif
}

/* Thread (kr, lane)'s pairs of a m64 nNC dQ accumulator, times un, into the
 * stage at head column c0 (rows from bqq on are not stored). */
template <int D, int NC>
__device__ __forceinline__ void dq_stage_store(unsigned char *stg, const float *dq, const int kr[2], int bqq, int c0,
                                               int lane, float un) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (kr[i] >= bqq) continue;
        float *row = reinterpret_cast<float *>(stg + kr[i] * dq_stage_row<D>()) + c0 + (lane & 3) * 2;
#pragma unroll
        for (int nt = 0; nt < NC / 8; nt++)
            *reinterpret_cast<float2 *>(row + nt * 8) =
                make_float2(dq[nt * 4 + 2 * i] * un, dq[nt * 4 + 2 * i + 1] * un);
    }
}

/* The stage's rows 0 .. bqq - 1 (query tile qi of the item) added to dQ by
 * one warp, one bulk reduction per row, as one bulk group. */
template <int D>
__device__ __forceinline__ void dq_stage_reduce(const attend_args &a, const item_pos &ip, const rda_job &job,
                                                int64_t qi, int64_t r, int bqq, uint32_t stg_s, int lane) {
    for (int q = lane; q < bqq; q += 32) {
        const int64_t row = job.q_local + (qi + q) * r;
        bulk_reduce_add_f32(a.dq + ((ip.b * a.n + row) * a.H + ip.h) * D, stg_s + q * dq_stage_row<D>(), D * 4);
    }
    bulk_commit();
}

/* The four columns of one row that lane `lane` holds after lanes 2j and
 * 2j + 1 exchange pairs of an accumulator's 8-column block c (the even lane
 * row kr[0]'s, the odd one row kr[1]'s, from column (lane % 4) 2 - 2 odd),
 * times un. The whole warp calls it (a shuffle). */
__device__ __forceinline__ float4 dq_quad(const float *c, int odd, float un) {
    /* the pair the other lane takes: the even lane's row kr[1], the odd lane's row kr[0] */
    const float gx = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
    const float gy = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
    return odd ? make_float4(gx * un, gy * un, c[2] * un, c[3] * un)
               : make_float4(c[0] * un, c[1] * un, gx * un, gy * un);
}

/* Thread (kr, lane)'s pairs of a m64 nNC dQ accumulator, times un, added to
 * dQ at dst[i] (row kr[i] from the thread's first column (lane % 4) 2; rows
 * from bqq on are left out) by atomics: one 8-byte atomic per pair, or
 * (RED4) one 16-byte atomic per four columns after lanes 2j and 2j + 1 have
 * exchanged pairs, the even lane adding row kr[0]'s four, the odd one row
 * kr[1]'s. The whole warp calls it (the exchange is a shuffle). */
template <int NC, bool RED4>
__device__ __forceinline__ void dq_atomics(float *const dst[2], const float *dq, const int kr[2], int bqq, int lane,
                                           float un) {
    if (!RED4) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            if (kr[i] >= bqq) continue;
#pragma unroll
            for (int nt = 0; nt < NC / 8; nt++)
                atomic_add2(dst[i] + nt * 8, dq[nt * 4 + 2 * i] * un, dq[nt * 4 + 2 * i + 1] * un);
        }
    } else {
        const int odd = lane & 1;
        float *const to = odd ? dst[1] - 2 : dst[0]; /* (selects, not an index: the array stays in registers) */
        const bool valid = (odd ? kr[1] : kr[0]) < bqq;
#pragma unroll
        for (int nt = 0; nt < NC / 8; nt++) {
            const float4 v = dq_quad(dq + nt * 4, odd, un);
            if (valid) atomic_add4(to + nt * 8, v);
        }
    }
}

/* The TILE form: thread (kr, lane)'s pairs of a m64 nNC dQ accumulator (head
 * columns from c0), times un, exchanged as in dq_atomics so that each lane
 * holds 16-byte chunks of one row, into the stage at dq_tile_at's places (r
 * = 1: the tile's rows R0 + q are consecutive), or else added to dQ's head
 * plane at them by 16-byte atomics. */
template <int D, int NC>
__device__ __forceinline__ void dq_tile_put(unsigned char *stg, float *plane, int64_t R0, int64_t r, const float *dq,
                                            const int kr[2], int bqq, int c0, int lane, float un) {
    const int odd = lane & 1, q = odd ? kr[1] : kr[0];
    const int64_t R = R0 + (int64_t)q * r;
    const bool valid = q < bqq;
#pragma unroll
    for (int nt = 0; nt < NC / 8; nt++) {
        const float4 v = dq_quad(dq + nt * 4, odd, un);
        const int col = c0 + nt * 8 + (lane & 3) * 2 - 2 * odd;
        if (!valid) continue;
        if (r == 1)
            *reinterpret_cast<float4 *>(stg + (dq_tile_at(R, col, D) - R0 * D) * 4) = v;
        else
            atomic_add4(plane + dq_tile_at(R, col, D), v);
    }
}

/* dQ_t's head columns c0 .. c0 + NC - 1 of query tile qi (thread (kr,
 * lane)'s pairs of the m64 nNC accumulator), times un, on their way to dQ by
 * form DQ: into the stage stg (BULK; TILE with r = 1) or into dQ by atomics.
 * The whole warp calls it. */
template <int D, int NC, int DQ>
__device__ __forceinline__ void dq_put(const attend_args &a, const item_pos &ip, const rda_job &job, int64_t qi,
                                       int64_t r, unsigned char *stg, const float *dq, const int kr[2], int bqq,
                                       int c0, int lane, float un) {
    if (DQ == BWD_DQ_TILE) {
        dq_tile_put<D, NC>(stg, a.dq + (ip.b * a.H + ip.h) * a.n * D, job.q_local + qi * r, r, dq, kr, bqq, c0, lane,
                           un);
    } else if (DQ == BWD_DQ_BULK) {
        dq_stage_store<D, NC>(stg, dq, kr, bqq, c0, lane, un);
    } else { /* (kr: the accumulator's rows, here queries) */
        float *dst[2];
#pragma unroll
        for (int i = 0; i < 2; i++)
            dst[i] = a.dq + ((ip.b * a.n + job.q_local + (qi + kr[i]) * r) * a.H + ip.h) * D + c0 + (lane & 3) * 2;
        dq_atomics<NC, DQ == BWD_DQ_RED4>(dst, dq, kr, bqq, lane, un);
    }
}

/* After the barrier that ends query tile qi: its stage (at shared address
 * stg_s) handed to the copy engine, BULK one reduction per row by warp 0,
 * TILE (r = 1) one for the tile by thread 0 (nothing for the other forms). */
template <int D, int DQ>
__device__ __forceinline__ void dq_flush(const attend_args &a, const item_pos &ip, const rda_job &job, int64_t qi,
                                         int64_t r, int bqq, uint32_t stg_s, int warp, int lane) {
    if (DQ == BWD_DQ_BULK && warp == 0) dq_stage_reduce<D>(a, ip, job, qi, r, bqq, stg_s, lane);
    if (DQ == BWD_DQ_TILE && r == 1 && warp == 0 && lane == 0) { /* the tile's rows: one range of dQ */
        bulk_reduce_add_f32(a.dq + ((ip.b * a.H + ip.h) * a.n + job.q_local + qi) * D, stg_s, (uint32_t)bqq * D * 4);
        bulk_commit();
    }
}


/* A warpgroup's K and V tiles (swizzled, in shared memory) as register A
 * fragments of the scores' products: 16 rows (keys) of warp w4 of the
 * warpgroup, N k16 column blocks. */
template <int N>
__device__ __forceinline__ void bwd_kv_frags(uint32_t (&ka)[N][4], uint32_t (&va)[N][4], const unsigned char *Ks,
                                             const unsigned char *Vs, int w4, int lane) {
#pragma unroll
    for (int kk = 0; kk < N; kk++) {
        const int row = w4 * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), ch = kk * 2 + (lane >> 4);
        ldsm_x4(ka[kk], Ks + sw_off(row, ch));
        ldsm_x4(va[kk], Vs + sw_off(row, ch));
    }
}

/* P^T and dS^T of one warpgroup's 64 keys x 64 queries, in place of S^T
 * (s) and dP^T (dp), from the query tile's LSE (Ls) and Delta (Ds) in
 * shared memory: keys kr[] of the thread (bk of the tile's), queries from qi
 * (bqq of them), causal masking by k0 + k <= qi + q + dqc; P times
 * 2^BWD_P_SHIFT in fp16 (SCALED). Returns the thread's largest |dS|. */
template <bool SCALED>
__device__ __forceinline__ float bwd_p_ds(float (&s)[32], float (&dp)[32], const float *Ls, const float *Ds,
                                          const attend_args &a, const int kr[2], int bk, int bqq, int64_t k0,
                                          int64_t qi, int64_t dqc, int lane) {
    const float L2E = 1.4426950408889634f;
    const bool mask = bk < 64 || bqq < 64 || (a.causal && k0 + 63 > qi + dqc);
    float mx = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        const int qc = nt * 8 + (lane & 3) * 2;
        const float2 L = *reinterpret_cast<const float2 *>(Ls + qc), Dd = *reinterpret_cast<const float2 *>(Ds + qc);
        const float nl[2] = {-L.x * L2E, -L.y * L2E}, dd[2] = {Dd.x, Dd.y};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            bool ok = true;
            if (mask) {
                const int q = qc + (e & 1), k = kr[e >> 1];
                ok = k < bk && q < bqq && (!a.causal || k0 + k <= qi + q + dqc);
            }
            const float p = ok ? ex2(fmaf(s[nt * 4 + e], a.qscale, nl[e & 1])) : 0.f;
            s[nt * 4 + e] = SCALED ? p * pow2i(BWD_P_SHIFT) : p;
            const float ds = a.scale * p * fmaf(dp[nt * 4 + e], a.factor, -dd[e & 1]); /* dS^T */
            dp[nt * 4 + e] = ds;
            mx = fmaxf(mx, fabsf(ds));
        }
    }
    return mx;
}

/* The fp16 dS exponent after a tile whose warps' largest |dS| are w[0..3]:
 * the largest that keeps them under 2^14, if smaller than sh (dK's
 * accumulator, times 2^sh, rescaled to it); the same for every thread that
 * reads the same w. Then the tile's dS^T (ds) times 2^sh. */
template <int D>
__device__ __forceinline__ void bwd_ds_exponent(const float *w, int &sh, float (&dk)[D / 2], float (&ds)[32]) {
    const float mx = fmaxf(fmaxf(w[0], w[1]), fmaxf(w[2], w[3]));
    const int ex = ((__float_as_int(mx) >> 23) & 0xff) - 126, want = max(-100, 14 - ex);
    if (mx > 0.f && mx <= 3.0e38f && want < sh) {
        const float f = pow2i(max(-126, want - sh));
#pragma unroll
        for (int i = 0; i < D / 2; i++) dk[i] *= f;
        sh = want;
    }
    const float mul = pow2i(sh);
#pragma unroll
    for (int i = 0; i < 32; i++) ds[i] *= mul;
}

/* P^T and dS^T of one warpgroup's 64 keys x 64 queries (s, dp after
 * bwd_p_ds) packed into A fragments (the m64 accumulator's two n-tiles are
 * one k16 A tile), and dS^T also transposed into shared memory at ds_s by
 * stmatrix, as the K-major A operand of dQ_t = dS K: matrix m of x4 kk is
 * query block 2 kk + (m >> 1), key half m & 1; its row j (a query) holds 8
 * keys, chunk w4 * 2 + (m & 1) (w4: the warp within the warpgroup). */
template <typename T>
__device__ __forceinline__ void bwd_frag_pds(const float (&s)[32], const float (&dp)[32], uint32_t (&pa)[4][4],
                                             uint32_t (&da)[4][4], uint32_t ds_s, int w4, int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            pa[kk][j] = pack2<T>(s[8 * kk + 2 * j], s[8 * kk + 2 * j + 1]);
            da[kk][j] = pack2<T>(dp[8 * kk + 2 * j], dp[8 * kk + 2 * j + 1]);
        }
    const int m = lane >> 3, j = lane & 7;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const int q = (2 * kk + (m >> 1)) * 8 + j, ch = w4 * 2 + (m & 1);
        stsm_x4_t(ds_s + q * 128 + ((ch ^ (q & 7)) << 4), da[kk]);
    }
}

/* A warpgroup's dK and dV (64 keys from k0, bk of them; thread rows kr[])
 * added to the rank's fp32 dK and dV by atomics, unscaled (fp16: dK by
 * 2^-sh, dV by 2^-BWD_P_SHIFT) and times the factor. */
template <int D, bool SCALED>
__device__ __forceinline__ void bwd_dkv_out(const attend_args &a, const item_pos &ip, int64_t kl, int64_t k0,
                                            int64_t r, const int kr[2], int bk, const float (&dk)[D / 2],
                                            const float (&dv)[D / 2], int sh, int lane) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (kr[i] >= bk) continue;
        const int64_t at = ((ip.b * a.nk + kl + (k0 + kr[i]) * r) * a.Hkv + ip.kh) * D + (lane & 3) * 2;
        const float uk = SCALED ? pow2i(-sh) : 1.f, uv = SCALED ? a.factor * pow2i(-BWD_P_SHIFT) : a.factor;
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
            atomic_add2(a.dk + at + nt * 8, dk[nt * 4 + 2 * i] * uk, dk[nt * 4 + 2 * i + 1] * uk);
            atomic_add2(a.dv + at + nt * 8, dv[nt * 4 + 2 * i] * uv, dv[nt * 4 + 2 * i + 1] * uv);
        }
    }
}

/* S^T = K Q^T and dP^T = V dO^T of one warpgroup, 64 keys x 64 queries each
 * (m64 n64 accumulators), K and V as register A fragments (KREG) or from
 * shared memory, Q and dO from shared memory; waited for. */
template <typename T, int D, bool KREG>
__device__ __forceinline__ void bwd_st_dpt(float (&s)[32], float (&dp)[32], const uint32_t (*ka)[4],
                                           const uint32_t (*va)[4], uint32_t ks_s, uint32_t vs_s, uint32_t qs_s,
                                           uint32_t gs_s) {
    wgmma_fence();
    if (KREG) {
        wgmma_rs_first<T, 64, 0>(s, ka[0], sw_kmajor(qs_s, 0));
#pragma unroll
        for (int kk = 1; kk < D / 16; kk++) wgmma_rs<T, 64, 0>(s, ka[kk], sw_kmajor(qs_s, kk), 1);
        wgmma_rs_first<T, 64, 0>(dp, va[0], sw_kmajor(gs_s, 0));
#pragma unroll
        for (int kk = 1; kk < D / 16; kk++) wgmma_rs<T, 64, 0>(dp, va[kk], sw_kmajor(gs_s, kk), 1);
    } else {
        wgmma_ss_first<T, 64, 0, 0>(s, sw_kmajor(ks_s, 0), sw_kmajor(qs_s, 0));
#pragma unroll
        for (int kk = 1; kk < D / 16; kk++) wgmma_ss<T, 64, 0, 0>(s, sw_kmajor(ks_s, kk), sw_kmajor(qs_s, kk), 1);
        wgmma_ss_first<T, 64, 0, 0>(dp, sw_kmajor(vs_s, 0), sw_kmajor(gs_s, 0));
#pragma unroll
        for (int kk = 1; kk < D / 16; kk++) wgmma_ss<T, 64, 0, 0>(dp, sw_kmajor(vs_s, kk), sw_kmajor(gs_s, kk), 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 32; i++) {
        wgmma_reg_fence(s[i]);
        wgmma_reg_fence(dp[i]);
    }
}

template <typename T, int D, int NWG, int DQ = BWD_DQ_RED2>
__global__ void __launch_bounds__(128 * NWG, 3 - NWG) bwd_wgmma(const __grid_constant__ attend_args a) {
#ifdef RDA_WGMMA
    constexpr bool STAGED = dq_stage_bytes<D, DQ>() != 0; /* (BULK, TILE: dQ through a shared stage) */
    constexpr int BK = 64 * NWG; /* keys per tile */
    constexpr uint32_t TILE = 64 * D * 2;
    constexpr bool SCALED = std::is_same<T, __half>::value;
    constexpr bool KREG = D <= 64; /* K and V also as register A fragments */
    constexpr int NQ = D / NWG;    /* dQ's head columns per warpgroup */
    static_assert(NQ <= 64, "dQ: one m64 n<=64 product per warpgroup");
    extern __shared__ unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023) & ~1023u;
    unsigned char *smem = smem_raw + (base - raw);
    const int tid = threadIdx.x, wg = tid >> 7, wt = tid & 127, warp = tid >> 5, ww = warp & 3, lane = tid & 31;
    /* the warpgroup's K and V tiles, the stages of [Q, dO], dS */
    unsigned char *Ks = smem + wg * TILE, *Vs = smem + (NWG + wg) * TILE, *Q0 = smem + 2 * NWG * TILE;
    const uint32_t ks_s = base + wg * TILE, vs_s = base + (NWG + wg) * TILE, kall_s = base,
                   q0_s = base + 2 * NWG * TILE, ds_s = base + (2 * NWG + 4) * TILE;
    float *LDl = reinterpret_cast<float *>(smem + (2 * NWG + 4) * TILE + 64 * BK * 2), *red = LDl + 4 * 64;
    constexpr uint32_t STG = (uint32_t)((bwd_wg_base_bytes<D, NWG>() + 127) & ~(size_t)127); /* (the dQ stages) */
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    const key_item it = key_item_of(ip, BK);
    const int64_t r = it.r, kl = it.kl, dqc = it.dqc;
    const int bkw = max(0, min(64, it.bk - 64 * wg)); /* the warpgroup's keys */
    const int64_t k0 = it.k0 + (bkw > 0 ? 64 * wg : 0);
    const head_rows<T> hr = head_rows_of<T>(a, ip);
    load_sw_rows<T, D>(Ks, hr.k, a.ks[1], kl, k0, r, bkw, wt);
    load_sw_rows<T, D>(Vs, hr.v, a.vs[1], kl, k0, r, bkw, wt);
    cp_async_commit();

    const query_span qsp = query_span_of(a, job, it);
    const int64_t i0 = qsp.i0, nq = qsp.nq, ntq = qsp.ntq;
    const float *lse_b = a.lse + ip.b * a.ls[0] + ip.h * a.ls[1];
    const float *del_b = a.delta + ip.b * a.n * a.H + ip.h;
    /* query tile t into stage buf: Q and LSE (x = 0), dO and Delta (x = 1),
     * by warpgroup x % NWG */
    auto load_qtile = [&](int64_t t, int buf) {
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        auto part = [&](int x) {
            unsigned char *dst = Q0 + buf * 2 * TILE + x * TILE;
            if (x == 0) load_sw_rows<T, D>(dst, hr.q, a.qs[1], job.q_local, qi, r, bqq, wt);
            else load_sw_rows<T, D>(dst, hr.g, a.gs[1], job.q_local, qi, r, bqq, wt);
            if (wt < 64) {
                const int64_t row = job.q_local + (qi + (wt < bqq ? wt : 0)) * r;
                const float *src = x == 0 ? lse_b + row * a.ls[2] : del_b + row * a.H;
                cp_async4(LDl + buf * 128 + x * 64 + wt, src, wt < bqq);
            }
        };
        if (NWG == 2) {
            part(wg);
        } else {
            part(0);
            part(1);
        }
        cp_async_commit();
    };
    const int kr[2] = {ww * 16 + (lane >> 2), ww * 16 + (lane >> 2) + 8}; /* the thread's two rows */
    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) dk[i] = dv[i] = 0.f;
    int sh = BWD_DS_SHIFT0; /* dS's exponent (fp16) */
    uint32_t ka[KREG ? D / 16 : 1][4], va[KREG ? D / 16 : 1][4];
    if (ntq > 0) load_qtile(0, 0);
    for (int64_t t = 0; t < ntq; t++) {
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        /* tile t + 1 into the other stage (free: the last iteration ended at a
         * barrier after its products), then tile t is ready for everyone */
        if (t + 1 < ntq) {
            load_qtile(t + 1, (int)((t + 1) & 1));
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if (STAGED && warp == 0) bulk_wait<1, true>(); /* tile t - 2's dQ stage has been read */
        fence_proxy_async(); /* the copies (generic proxy) -> the MMA's reads */
        __syncthreads();
        if (KREG && t == 0) bwd_kv_frags(ka, va, Ks, Vs, ww, lane);
        const uint32_t qs_s = q0_s + (uint32_t)(t & 1) * 2 * TILE, gs_s = qs_s + TILE;
        const float *Ls = LDl + (t & 1) * 128, *Ds = Ls + 64;
        float s[32], dp[32]; /* S^T and dP^T: the warpgroup's 64 keys x 64 queries */
        bwd_st_dpt<T, D, KREG>(s, dp, ka, va, ks_s, vs_s, qs_s, gs_s);
        float mx = bwd_p_ds<SCALED>(s, dp, Ls, Ds, a, kr, bkw, bqq, k0, qi, dqc, lane);
        /* P^T into A fragments (the m64 accumulator's two n-tiles are one
         * k16 A tile), and dV's product on its way */
        uint32_t pa[4][4], da[4][4];
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
#pragma unroll
            for (int j = 0; j < 4; j++) pa[kk][j] = pack2<T>(s[8 * kk + 2 * j], s[8 * kk + 2 * j + 1]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dv, pa[kk], sw_nmajor(gs_s, kk), 1);
        wgmma_commit();
        /* dS^T into A fragments times 2^sh, and transposed into shared
         * memory as the K-major A operand of dQ = dS K: matrix m of x4 kk is
         * query block 2 kk + (m >> 1), key half m & 1; its row j (query)
         * holds 8 keys, chunk warp * 2 + (m & 1) of the tile's */
        auto pack_ds = [&](float mul) {
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    da[kk][j] = pack2<T>(dp[8 * kk + 2 * j] * mul, dp[8 * kk + 2 * j + 1] * mul);
            const int m = lane >> 3, j = lane & 7, ch = warp * 2 + (m & 1);
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const int q = (2 * kk + (m >> 1)) * 8 + j;
                stsm_x4_t(ds_s + (ch >> 3) * (64 * 128) + q * 128 + (((ch & 7) ^ (q & 7)) << 4), da[kk]);
            }
            fence_proxy_async(); /* stmatrix (generic) -> the MMA's reads */
        };
        if (SCALED) {
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            if (lane == 0) red[warp] = mx;
        }
        pack_ds(SCALED ? pow2i(sh) : 1.f);
        __syncthreads();
        if (SCALED) { /* one exponent for the tile: its largest |dS| under 2^14 */
            mx = red[0];
#pragma unroll
            for (int w = 1; w < 4 * NWG; w++) mx = fmaxf(mx, red[w]);
            const int ex = ((__float_as_int(mx) >> 23) & 0xff) - 126, want = max(-100, 14 - ex);
            if (mx > 0.f && mx <= 3.0e38f && want < sh) { /* (the same for every thread) */
                const float f = pow2i(max(-126, want - sh));
                wgmma_wait<0>(); /* (rare: dV's product drains first) */
#pragma unroll
                for (int i = 0; i < D / 2; i++) {
                    wgmma_reg_fence(dk[i]);
                    dk[i] *= f;
                }
                sh = want;
                pack_ds(pow2i(sh));
                __syncthreads();
            }
        }
        /* dQ_t for the warpgroup's head columns over the tile's keys (A: dS,
         * key block kk; B: keys 16 kk .. of K, in warpgroup kk / 4's tile),
         * then dK's product; dQ's atomics run while dK's product does */
        float dq[NQ / 2];
        wgmma_fence();
        {
            const uint32_t kb = kall_s + (uint32_t)(wg * NQ * 2 / 128) * (64 * 128) + (uint32_t)(wg * NQ * 2 % 128);
            wgmma_ss_first<T, NQ, 0, 1>(dq, sw_kmajor(ds_s, 0), sw_nmajor(kb, 0));
#pragma unroll
            for (int kk = 1; kk < BK / 16; kk++)
                wgmma_ss<T, NQ, 0, 1>(dq, sw_kmajor(ds_s, kk), sw_nmajor(kb + (kk >> 2) * TILE, kk & 3), 1);
        }
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dk, da[kk], sw_nmajor(qs_s, kk), 1);
        wgmma_commit();
        wgmma_wait<1>(); /* dV's and dQ's products */
#pragma unroll
        for (int i = 0; i < NQ / 2; i++) wgmma_reg_fence(dq[i]);
        const float un = SCALED ? pow2i(-sh) : 1.f;
        const uint32_t stg = STG + (uint32_t)(t & 1) * (uint32_t)dq_stage_bytes<D, DQ>(); /* (BULK, TILE) */
        dq_put<D, NQ, DQ>(a, ip, job, qi, r, smem + stg, dq, kr, bqq, wg * NQ, lane, un);
        if (STAGED) fence_proxy_async(); /* the stage's stores (generic proxy) -> the bulk reduction's reads */
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < D / 2; i++) {
            wgmma_reg_fence(dk[i]);
            wgmma_reg_fence(dv[i]);
        }
        __syncthreads(); /* every product of this stage and of dS is done before they are refilled */
        dq_flush<D, DQ>(a, ip, job, qi, r, bqq, base + stg, warp, lane);
    }
    if (ntq == 0) {
        cp_async_wait<0>();
        return;
    }
    bwd_dkv_out<D, SCALED>(a, ip, kl, k0, r, kr, bkw, dk, dv, sh, lane);
    if (STAGED && warp == 0) bulk_wait<0, false>(); /* the dQ reductions are complete before the CTA ends */
#endif
}

/* bwd_wgmma1<T, D>: the library's Hopper backward at D = 64 (backward v4):
 * one warpgroup per CTA over a 64-key tile, two CTAs per multiprocessor, the
 * same products per query tile as bwd_wgmma with NWG = 1, but dV, dK and dQ
 * issued together after dS is published, the fp16 dS exponent from a
 * block-wide maximum behind its own barrier, and dQ's atomics after all
 * three products. Measured against bwd_wgmma<T, 64, 1> and <T, 64, 2> it is
 * the faster (6.00 vs 7.14 and 6.97 ms at N = 16384); why is not
 * established: putting back those three differences did not recover it
 * (backward v5 in docs/PERFORMANCE.md). A phase of few key tiles runs each
 * as a.qparts CTAs, one part of its query tiles each (query_span_part; the
 * host's bwd_query_parts chooses). bwd_wgmma does not split its tiles: at
 * 255 registers the split's arithmetic made it spill more. */
template <int D> __host__ __device__ constexpr size_t bwd_wg1_base_bytes() {
    return 6 * (size_t)64 * D * 2 + 64 * 64 * 2 + 4 * 64 * sizeof(float) + 4 * sizeof(float);
}
template <int D, int DQ = BWD_DQ_RED2> __host__ __device__ constexpr size_t bwd_wg1_smem_bytes() {
    return 1024 + (dq_stage_bytes<D, DQ>() ? ((bwd_wg1_base_bytes<D>() + 127) & ~(size_t)127) +
                                                 2 * dq_stage_bytes<D, DQ>()
                        : bwd_wg1_base_bytes<D>());
}

template <typename T, int D, int DQ = BWD_DQ_RED2, int MINB = 2>
__global__ void __launch_bounds__(128, MINB) bwd_wgmma1(const __grid_constant__ attend_args a) {
#ifdef RDA_WGMMA
    constexpr bool STAGED = dq_stage_bytes<D, DQ>() != 0; /* (BULK, TILE: dQ through a shared stage) */
    constexpr uint32_t TILE = 64 * D * 2;
    constexpr bool SCALED = std::is_same<T, __half>::value;
    constexpr bool KREG = D <= 64; /* K and V also as register A fragments */
    extern __shared__ unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023) & ~1023u;
    unsigned char *smem = smem_raw + (base - raw);
    unsigned char *Ks = smem, *Vs = smem + TILE, *Q0 = smem + 2 * TILE;
    const uint32_t ks_s = base, vs_s = base + TILE, q0_s = base + 2 * TILE, ds_s = base + 6 * TILE;
    float *LDl = reinterpret_cast<float *>(smem + 6 * TILE + 64 * 64 * 2), *red = LDl + 4 * 64;
    constexpr uint32_t STG = (uint32_t)((bwd_wg1_base_bytes<D>() + 127) & ~(size_t)127); /* (the dQ stages) */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int64_t parts = a.qparts > 1 ? a.qparts : 1; /* (CTAs per key tile) */
    const item_pos ip = decode_item(a, blockIdx.x / parts);
    const rda_job &job = *ip.job;
    const key_item it = key_item_of(ip, 64);
    const int64_t r = it.r, k0 = it.k0, kl = it.kl, dqc = it.dqc;
    const int bk = it.bk;
    const head_rows<T> hr = head_rows_of<T>(a, ip);
    load_sw_rows<T, D>(Ks, hr.k, a.ks[1], kl, k0, r, bk, tid);
    load_sw_rows<T, D>(Vs, hr.v, a.vs[1], kl, k0, r, bk, tid);
    cp_async_commit();

    const query_span qsp = query_span_part(a, job, it, blockIdx.x % parts, parts);
    const int64_t i0 = qsp.i0, nq = qsp.nq, ntq = qsp.ntq;
    const float *lse_b = a.lse + ip.b * a.ls[0] + ip.h * a.ls[1];
    const float *del_b = a.delta + ip.b * a.n * a.H + ip.h;
    auto load_qtile = [&](int64_t t, int buf) {
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        unsigned char *Qd = Q0 + buf * 2 * TILE;
        load_sw_rows<T, D>(Qd, hr.q, a.qs[1], job.q_local, qi, r, bqq, tid);
        load_sw_rows<T, D>(Qd + TILE, hr.g, a.gs[1], job.q_local, qi, r, bqq, tid);
        if (tid < 64) {
            const int64_t row = job.q_local + (qi + (tid < bqq ? tid : 0)) * r;
            cp_async4(LDl + buf * 128 + tid, lse_b + row * a.ls[2], tid < bqq);
            cp_async4(LDl + buf * 128 + 64 + tid, del_b + row * a.H, tid < bqq);
        }
        cp_async_commit();
    };
    const int kr[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8}; /* the thread's two keys */
    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) dk[i] = dv[i] = 0.f;
    int sh = BWD_DS_SHIFT0; /* dS's exponent (fp16) */
    uint32_t ka[KREG ? D / 16 : 1][4], va[KREG ? D / 16 : 1][4];
    if (ntq > 0) load_qtile(0, 0);
    for (int64_t t = 0; t < ntq; t++) {
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        /* tile t + 1 into the other stage (free: the last iteration ended at a
         * barrier after its products), then tile t is ready for everyone */
        if (t + 1 < ntq) {
            load_qtile(t + 1, (int)((t + 1) & 1));
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if (STAGED && warp == 0) bulk_wait<1, true>(); /* tile t - 2's dQ stage has been read */
        fence_proxy_async(); /* the copies (generic proxy) -> the MMA's reads */
        __syncthreads();
        if (KREG && t == 0) bwd_kv_frags(ka, va, Ks, Vs, warp, lane);
        const uint32_t qs_s = q0_s + (uint32_t)(t & 1) * 2 * TILE, gs_s = qs_s + TILE;
        const float *Ls = LDl + (t & 1) * 128, *Ds = Ls + 64;
        float s[32], dp[32]; /* S^T and dP^T: 64 keys x 64 queries */
        bwd_st_dpt<T, D, KREG>(s, dp, ka, va, ks_s, vs_s, qs_s, gs_s);
        float mx = bwd_p_ds<SCALED>(s, dp, Ls, Ds, a, kr, bk, bqq, k0, qi, dqc, lane);
        if (SCALED) { /* one exponent for the tile: its largest |dS| under 2^14 */
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            if (lane == 0) red[warp] = mx;
            __syncthreads();
            bwd_ds_exponent<D>(red, sh, dk, dp);
        }
        uint32_t pa[4][4], da[4][4]; /* P^T and dS^T as A fragments; dS^T into shared memory */
        bwd_frag_pds<T>(s, dp, pa, da, ds_s, warp, lane);
        fence_proxy_async(); /* stmatrix (generic) -> the MMA's reads */
        __syncthreads();
        float dq[32]; /* dQ_t, 64 queries x 64 head columns at a time */
        auto issue_dq = [&](int half) { /* dQ_t's head columns 64 half .. = dS times K's column block */
            const uint32_t kb = ks_s + half * 64 * 128;
            wgmma_ss_first<T, 64, 0, 1>(dq, sw_kmajor(ds_s, 0), sw_nmajor(kb, 0));
#pragma unroll
            for (int kk = 1; kk < 4; kk++) wgmma_ss<T, 64, 0, 1>(dq, sw_kmajor(ds_s, kk), sw_nmajor(kb, kk), 1);
        };
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dv, pa[kk], sw_nmajor(gs_s, kk), 1);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dk, da[kk], sw_nmajor(qs_s, kk), 1);
        issue_dq(0);
        wgmma_commit();
        const float un = SCALED ? pow2i(-sh) : 1.f;
        const uint32_t stg = STG + (uint32_t)(t & 1) * (uint32_t)dq_stage_bytes<D, DQ>(); /* (BULK, TILE) */
#pragma unroll
        for (int half = 0; half < D / 64; half++) {
            if (half > 0) { /* (its registers were read by the atomics of the last half) */
                wgmma_fence();
                issue_dq(half);
                wgmma_commit();
            }
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < 32; i++) wgmma_reg_fence(dq[i]);
            dq_put<D, 64, DQ>(a, ip, job, qi, r, smem + stg, dq, kr, bqq, half * 64, lane, un);
        }
        if (STAGED) fence_proxy_async(); /* the stage's stores (generic proxy) -> the bulk reduction's reads */
#pragma unroll
        for (int i = 0; i < D / 2; i++) {
            wgmma_reg_fence(dk[i]);
            wgmma_reg_fence(dv[i]);
        }
        __syncthreads(); /* every product of this stage and of dS is done before they are refilled */
        dq_flush<D, DQ>(a, ip, job, qi, r, bqq, base + stg, warp, lane);
    }
    if (ntq == 0) {
        cp_async_wait<0>();
        return;
    }
    bwd_dkv_out<D, SCALED>(a, ip, kl, k0, r, kr, bk, dk, dv, sh, lane);
    if (STAGED && warp == 0) bulk_wait<0, false>(); /* the dQ reductions are complete before the CTA ends */
#endif
}

/* bwd_wgmma_ws<T, D>: the backward with warp specialisation (sm_90a, D = 64;
 * backward v13 in docs/PERFORMANCE.md). A CTA takes a 128-key tile (the
 * planner's bk = 128) with three warpgroups:
 *
 *   consumers 0 and 1  keys 64 w .. 64 w + 63 each, bwd_wgmma1's products
 *                      per query tile (S^T, dP^T, P^T, dS^T, dV, dK, and
 *                      dQ_t over its own 64 keys), each with its own fp16
 *                      dS exponent; they meet only in the stages below;
 *   producer warps 0-1 Q, dO, LSE and Delta of each query tile into one of
 *                      BWD_WS_ST stages (cp.async, full/empty mbarriers);
 *   producer warps 2-3 the dQ writers: per query tile, the two consumers'
 *                      dQ_t (fp32, from two shared stages each) summed and
 *                      added to the rank's fp32 dQ by 16-byte atomics.
 *
 * So dQ's atomics are half of bwd_wgmma1's per key (summed over 128 keys)
 * and leave the warps that run the tensor cores; the consumers drift apart
 * as far as the stages allow, so one's exponentials overlap the other's
 * products, as bwd_wgmma1's two CTAs per multiprocessor do. A consumer
 * whose keys no query of a tile sees (causal), or that has no keys, skips
 * the tile's work; the writers skip its stage by the same test (ws_sees),
 * each side counting the tiles it handed over. Registers move from the
 * producer to the consumers by setmaxnreg. A phase of few key tiles runs
 * each as a.qparts CTAs (query_span_part), as bwd_wgmma1. */
#define BWD_WS_ST 3
template <int D> __host__ __device__ constexpr uint32_t bwd_ws_stage_off() { /* the dQ stages */
    return (uint32_t)(6 + 2 * BWD_WS_ST) * 64 * D * 2 + BWD_WS_ST * 128 * 4 + 8 * 4;
}
template <int D> __host__ __device__ constexpr size_t bwd_ws_smem_bytes() {
    return 1024 + bwd_ws_stage_off<D>() + 4 * 64 * (size_t)dq_stage_row<D>() + (2 * BWD_WS_ST + 8) * 8;
}

/* Does consumer w's part of key tile `it` meet query tile qi (some query
 * of it sees some of its keys)? */
__device__ __forceinline__ bool ws_sees(const attend_args &a, const key_item &it, int w, int64_t qi) {
    return it.bk > 64 * w && !(a.causal && it.k0 + 64 * w > qi + 63 + it.dqc);
}

template <typename T, int D>
__global__ void __launch_bounds__(384, 1) bwd_wgmma_ws(const __grid_constant__ attend_args a) {
#ifdef RDA_WGMMA
    static_assert(D == 64, "bwd_wgmma_ws: D = 64 (K and V as register fragments)");
    constexpr int ST = BWD_WS_ST;
    constexpr uint32_t TILE = 64 * D * 2, DQS = 64 * dq_stage_row<D>();
    constexpr bool SCALED = std::is_same<T, __half>::value;
    /* registers: 65536 / 384 = 168 each, the producer's 128 threads down to
     * PREG, the consumers' 256 up to CREG (128 PREG + 256 CREG <= 384 168);
     * the writers' loop spills under 64 */
    constexpr int PREG = 64, CREG = 216;
    static_assert(128 * PREG + 256 * CREG <= 384 * 168, "register split");
    extern __shared__ unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023) & ~1023u;
    unsigned char *smem = smem_raw + (base - raw);
    /* K (2 tiles), V (2), ST stages of [Q, dO], dS (2, one per consumer),
     * ST stages of [LSE, Delta], the consumers' warp maxima, four dQ stages
     * (two per consumer), the mbarriers */
    const uint32_t q0_s = base + 4 * TILE, ds0_s = base + (4 + 2 * ST) * TILE;
    float *LDl = reinterpret_cast<float *>(smem + (6 + 2 * ST) * TILE), *red = LDl + ST * 128;
    unsigned char *stg0 = smem + bwd_ws_stage_off<D>();
    const uint32_t bar0 = base + bwd_ws_stage_off<D>() + 4 * DQS;
    auto full = [&](int st) { return bar0 + st * 8; };
    auto empty = [&](int st) { return bar0 + (ST + st) * 8; };
    auto dqfull = [&](int b, int w) { return bar0 + (2 * ST + 2 * b + w) * 8; };
    auto dqempty = [&](int b, int w) { return bar0 + (2 * ST + 4 + 2 * b + w) * 8; };
    const int tid = threadIdx.x, lane = tid & 31;
    const int64_t parts = a.qparts > 1 ? a.qparts : 1; /* (CTAs per key tile) */
    const item_pos ip = decode_item(a, blockIdx.x / parts);
    const rda_job &job = *ip.job;
    const key_item it = key_item_of(ip, 128);
    const int64_t r = it.r, kl = it.kl, dqc = it.dqc;
    const query_span qsp = query_span_part(a, job, it, blockIdx.x % parts, parts);
    const int64_t i0 = qsp.i0, nq = qsp.nq, ntq = qsp.ntq;
    if (ntq == 0) return; /* (the whole CTA: nothing to add) */
    if (tid == 0) {
        for (int st = 0; st < ST; st++) {
            mbar_init(full(st), 64);   /* the loaders' copies */
            mbar_init(empty(st), 256); /* every consumer thread */
        }
        for (int b = 0; b < 2; b++)
            for (int w = 0; w < 2; w++) {
                mbar_init(dqfull(b, w), 128); /* consumer w's threads */
                mbar_init(dqempty(b, w), 64); /* the writers */
            }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    const head_rows<T> hr = head_rows_of<T>(a, ip);
    if (tid >= 256) { /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(PREG));
        const int pt = tid - 256;
        if (pt < 64) { /* loaders */
            const float *lse_b = a.lse + ip.b * a.ls[0] + ip.h * a.ls[1];
            const float *del_b = a.delta + ip.b * a.n * a.H + ip.h;
            for (int64_t t = 0; t < ntq; t++) {
                const int st = (int)(t % ST);
                if (t >= ST) mbar_wait(empty(st), (uint32_t)((t / ST - 1) & 1));
                const int64_t qi = i0 + t * 64;
                const int bqq = (int)min((int64_t)64, nq - qi);
                unsigned char *Qd = smem + 4 * TILE + st * 2 * TILE;
                load_sw_rows<T, D, 64>(Qd, hr.q, a.qs[1], job.q_local, qi, r, bqq, pt);
                load_sw_rows<T, D, 64>(Qd + TILE, hr.g, a.gs[1], job.q_local, qi, r, bqq, pt);
                const int64_t row = job.q_local + (qi + (pt < bqq ? pt : 0)) * r;
                cp_async4(LDl + st * 128 + pt, lse_b + row * a.ls[2], pt < bqq);
                cp_async4(LDl + st * 128 + 64 + pt, del_b + row * a.H, pt < bqq);
                mbar_arrive_copies(full(st));
            }
        } else { /* dQ writers: thread wq adds 16-byte chunk wq % 16 of rows wq / 16 + 4 j */
            const int wq = pt - 64, ch = wq & 15;
            int u[2] = {0, 0}; /* the tiles each consumer has handed over */
            for (int64_t t = 0; t < ntq; t++) {
                const int64_t qi = i0 + t * 64;
                const int bqq = (int)min((int64_t)64, nq - qi);
                const bool s0 = ws_sees(a, it, 0, qi), s1 = ws_sees(a, it, 1, qi);
                if (!s0 && !s1) continue;
                if (s0) mbar_wait(dqfull(u[0] & 1, 0), (uint32_t)((u[0] >> 1) & 1));
                if (s1) mbar_wait(dqfull(u[1] & 1, 1), (uint32_t)((u[1] >> 1) & 1));
                const unsigned char *x0 = stg0 + (2 * (u[0] & 1)) * DQS, *x1 = stg0 + (2 * (u[1] & 1) + 1) * DQS;
                float *dst = a.dq + ((ip.b * a.n + job.q_local + qi * r) * a.H + ip.h) * D + ch * 4;
#pragma unroll 4
                for (int q = wq >> 4; q < bqq; q += 4) {
                    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                    if (s0) v = *reinterpret_cast<const float4 *>(x0 + q * dq_stage_row<D>() + ch * 16);
                    if (s1) {
                        const float4 w = *reinterpret_cast<const float4 *>(x1 + q * dq_stage_row<D>() + ch * 16);
                        v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
                    }
                    atomic_add4(dst + (int64_t)q * r * a.H * D, v);
                }
                if (s0) mbar_arrive(dqempty(u[0]++ & 1, 0));
                if (s1) mbar_arrive(dqempty(u[1]++ & 1, 1));
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(CREG));
    /* a consumer: keys 64 wg .. of the tile */
    const int wg = tid >> 7, wt = tid & 127, warp = tid >> 5, ww = warp & 3;
    const int bkw = max(0, min(64, it.bk - 64 * wg));
    const int64_t k0 = it.k0 + 64 * wg;
    auto wg_sync = [&]() { asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory"); };
    unsigned char *Ks = smem + wg * TILE, *Vs = smem + (2 + wg) * TILE;
    const uint32_t ks_s = base + wg * TILE, ds_s = ds0_s + wg * TILE;
    uint32_t ka[D / 16][4], va[D / 16][4];
    if (bkw > 0) {
        load_sw_rows<T, D>(Ks, hr.k, a.ks[1], kl, k0, r, bkw, wt);
        load_sw_rows<T, D>(Vs, hr.v, a.vs[1], kl, k0, r, bkw, wt);
        cp_async_commit();
        cp_async_wait<0>();
        fence_proxy_async(); /* the copies (generic proxy) -> the MMA's reads */
        wg_sync();
        bwd_kv_frags(ka, va, Ks, Vs, ww, lane);
    }
    const int kr[2] = {ww * 16 + (lane >> 2), ww * 16 + (lane >> 2) + 8}; /* the thread's two keys (and queries of dQ_t) */
    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) dk[i] = dv[i] = 0.f;
    int sh = BWD_DS_SHIFT0; /* dS's exponent (fp16) */
    int u = 0;              /* tiles handed to the writers */
    for (int64_t t = 0; t < ntq; t++) {
        const int st = (int)(t % ST);
        const int64_t qi = i0 + t * 64;
        const int bqq = (int)min((int64_t)64, nq - qi);
        mbar_wait(full(st), (uint32_t)((t / ST) & 1));
        if (!ws_sees(a, it, wg, qi)) { /* (uniform over the warpgroup) */
            mbar_arrive(empty(st));
            continue;
        }
        fence_proxy_async(); /* the copies (generic proxy) -> the MMA's reads */
        const uint32_t qs_s = q0_s + (uint32_t)st * 2 * TILE, gs_s = qs_s + TILE;
        const float *Ls = LDl + st * 128, *Ds = Ls + 64;
        float s[32], dp[32]; /* S^T and dP^T: 64 keys x 64 queries */
        bwd_st_dpt<T, D, true>(s, dp, ka, va, 0, 0, qs_s, gs_s);
        float mx = bwd_p_ds<SCALED>(s, dp, Ls, Ds, a, kr, bkw, bqq, k0, qi, dqc, lane);
        if (SCALED) { /* one exponent for the warpgroup's tile: its largest |dS| under 2^14 */
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            if (lane == 0) red[warp] = mx;
        }
        wg_sync();
        if (SCALED) bwd_ds_exponent<D>(red + 4 * wg, sh, dk, dp);
        uint32_t pa[4][4], da[4][4]; /* P^T and dS^T as A fragments; dS^T into shared memory */
        bwd_frag_pds<T>(s, dp, pa, da, ds_s, ww, lane);
        fence_proxy_async(); /* stmatrix (generic) -> the MMA's reads */
        wg_sync();
        float dq[32]; /* dQ_t over the warpgroup's keys: 64 queries x 64 head columns */
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dv, pa[kk], sw_nmajor(gs_s, kk), 1);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dk, da[kk], sw_nmajor(qs_s, kk), 1);
        wgmma_ss_first<T, 64, 0, 1>(dq, sw_kmajor(ds_s, 0), sw_nmajor(ks_s, 0));
#pragma unroll
        for (int kk = 1; kk < 4; kk++) wgmma_ss<T, 64, 0, 1>(dq, sw_kmajor(ds_s, kk), sw_nmajor(ks_s, kk), 1);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 32; i++) wgmma_reg_fence(dq[i]);
#pragma unroll
        for (int i = 0; i < D / 2; i++) {
            wgmma_reg_fence(dk[i]);
            wgmma_reg_fence(dv[i]);
        }
        mbar_arrive(empty(st)); /* the stage's Q, dO, LSE and Delta are read */
        const int b = u & 1;
        if (u >= 2) mbar_wait(dqempty(b, wg), (uint32_t)(((u >> 1) - 1) & 1)); /* its tile u - 2 added */
        dq_stage_store<D, 64>(stg0 + (2 * b + wg) * DQS, dq, kr, bqq, 0, lane, SCALED ? pow2i(-sh) : 1.f);
        mbar_arrive(dqfull(b, wg));
        u++;
    }
    if (bkw > 0) bwd_dkv_out<D, SCALED>(a, ip, kl, k0, r, kr, bkw, dk, dv, sh, lane);
#endif
}
