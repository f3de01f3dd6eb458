/* attend_wgmma<T, D, BK, NW, ST, MINB, V>: the Hopper kernel (sm_90a).
 *
 * The same recurrence and work items as attend_mma, on the warpgroup MMA
 * (wgmma.mma_async): NW warpgroups of 4 warps, each owning 64 query rows
 * (a work item is 64 * NW queries), keys BK at a time. Q sits in registers
 * (the A operand of S = Q K^T), K and V stream through ST stages of shared
 * memory in the 128-byte swizzled layout wgmma reads directly (K as a K-major
 * B operand, V as an N-major one), P goes from the score registers straight
 * into the A operand of O += P V. No ldmatrix for K or V, no bank conflicts.
 *
 * Shared memory, from a 1024-byte aligned base: ST stages of [K tile, V
 * tile] (3 or more; 2 or more with a producer warpgroup), each tile D/64
 * column blocks of BK rows x 128 bytes (16-byte chunk c of row r at chunk
 * c ^ (r % 8)), then the Q tile (padded rows, read once by ldmatrix), then
 * the stages' full and empty mbarriers (V & 1). The softmax of one tile runs
 * while the tensor cores do the P V product of the previous one
 * (FlashAttention-3's intra-warpgroup overlap). V selects the variants
 * (below): the library's D = 64 kernels for long key spans add a producer
 * warpgroup and consumer warpgroups that take turns on the tensor cores. */
#pragma once

#include "kernels.cuh"
#include "wgmma.cuh"

/* threads of a CTA: NW consumer warpgroups, plus the producer's with V & 32 */
template <int NW, int V> __host__ __device__ constexpr int wg_threads() { return NW * 128 + (V & 32 ? 128 : 0); }

template <int D, int BK, int NW, int ST, int V> __host__ __device__ constexpr size_t wg_smem_bytes() {
    return 1024 + (size_t)ST * 2 * BK * D * 2 + (size_t)64 * NW * (D + 8) * 2 + (V & 1 ? 2 * ST * 8 : 0);
}

/* Shared-memory matrix descriptor, 128-byte swizzle. */
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) |
           (1ull << 62);
}

__device__ __forceinline__ void fence_proxy_async() {
#ifdef RDA_WGMMA
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/* Shared-memory barriers (mbarrier), by shared address. */
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
/* arrives once the thread's cp.async copies issued so far have landed */
__device__ __forceinline__ void mbar_arrive_copies(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile("{\n\t.reg .pred p;\n"
                 "RDA_MBAR_WAIT:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n\t"
                 "@!p bra RDA_MBAR_WAIT;\n}" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}

/* The K/V copies of a work item: NL threads (thread ltid) bring tile t of
 * its keys into stage t % ST. Each thread copies one 16-byte column chunk of
 * every RPP-th row of a tile (RPP is a multiple of 8, so the chunk's swizzled
 * place is the same in every row it copies): one pointer step per row. MB:
 * the copies arrive on the stage's full barrier, after the stage's empty
 * barrier says tile t - ST is read; otherwise each tile is a copy group. */
template <typename T, int D, int BK, int ST, int NL, bool MB> struct wg_loads {
    static constexpr int CH = D / 8, RPP = NL / CH, PASSES = (BK + RPP - 1) / RPP;
    static constexpr uint32_t TILE = BK * D * 2; /* bytes of one K or V tile */
    static_assert(RPP % 8 == 0, "rows per pass");
    const T *kb, *vb;
    item_keys ks;
    int64_t r, ks1, vs1;
    unsigned char *dst; /* the thread's chunk in stage 0's K tile */
    uint32_t full0, empty0;
    int crow;
    __device__ __forceinline__ wg_loads(const attend_args &a, const item_pos &ip, const item_keys &keys, int ltid,
                                        unsigned char *smem, uint32_t full, uint32_t empty)
        : kb(static_cast<const T *>(a.k) + ip.b * a.ks[0] + ip.kh * a.ks[2] + (ltid % CH) * 8),
          vb(static_cast<const T *>(a.v) + ip.b * a.vs[0] + ip.kh * a.vs[2] + (ltid % CH) * 8), ks(keys),
          r(ip.job->stride), ks1(a.ks[1]), vs1(a.vs[1]), full0(full), empty0(empty), crow(ltid / CH) {
        const int lch = ltid % CH;
        dst = smem + (lch >> 3) * (BK * 128) + crow * 128 + (((lch & 7) ^ (crow & 7)) << 4);
    }
    __device__ __forceinline__ void operator()(int64_t t) const {
        if (MB && t >= ST) mbar_wait(empty0 + (t % ST) * 8, ((t / ST) - 1) & 1); /* tile t - ST read by all */
        const bool second = t >= ks.nt0;
        const int64_t k0 = (t - (second ? ks.nt0 : 0)) * BK, kr = (second ? ks.kl1 : ks.kl0) + (k0 + crow) * r;
        const int bk = (int)min((int64_t)BK, (second ? ks.kc1 : ks.kc0) - k0);
        unsigned char *Kd = dst + (t % ST) * 2 * TILE, *Vd = Kd + TILE;
        const T *kp = kb + kr * ks1, *vp = vb + kr * vs1;
        const int64_t kstep = RPP * r * ks1, vstep = RPP * r * vs1;
#pragma unroll
        for (int j = 0; j < PASSES; j++) {
            const bool ok = crow + j * RPP < bk; /* (rows past the tile's keys: zeros, nothing read) */
            if ((j + 1) * RPP <= BK || crow + j * RPP < BK) {
                cp_async16(Kd + j * RPP * 128, ok ? kp : kb, ok);
                cp_async16(Vd + j * RPP * 128, ok ? vp : vb, ok);
            }
            kp += kstep;
            vp += vstep;
        }
        if (MB) mbar_arrive_copies(full0 + (t % ST) * 8);
        else cp_async_commit();
    }
};

template <typename T, int D, int BK, int NW, int ST, int MINB, int V>
__global__ void __launch_bounds__(wg_threads<NW, V>(), MINB) attend_wgmma(const __grid_constant__ attend_args a) {
#ifdef RDA_WGMMA
    constexpr int BQ = 64 * NW, NC = NW * 128, NT = wg_threads<NW, V>(), LDS = D + 8, CH = D / 8;
    /* V: variant bits. 1: stages handed over by mbarriers instead of a block
     * barrier per tile (warpgroups drift apart); 2: lazy rescaling (below);
     * 4 (with 1): the next tile's copies issued after the MMAs, not before;
     * 8: the row sums of P by the tensor cores (P times a block of ones, in
     * the Q tile's place once Q is in registers) instead of a sum per score;
     * 16 (NW >= 2, with 1): the warpgroups take turns on the tensor cores
     * (named barriers, FlashAttention-3's ping-pong), so one's softmax runs
     * while the others' MMAs do; 32 (with 1): a producer warpgroup issues
     * every K/V copy, the NW consumer warpgroups only compute (registers
     * moved to them by setmaxnreg); 64 * E (E = 1 .. 3): E of every 8 column
     * groups of scores exponentiated by ex2_poly (FMA pipe) instead of
     * MUFU.EX2 */
    constexpr bool MB = V & 1, LAZY = V & 2, LATE = (V & 5) == 5, ONES = V & 8, PP = V & 16, WS = V & 32;
    constexpr int EMU = (V >> 6) & 3;
    static_assert(!PP || (NW >= 2 && MB), "turns: two warpgroups or more, mbarrier stages");
    static_assert(!WS || (MB && !LATE), "producer warpgroup: mbarrier stages");
    /* registers per thread of the producer and of the consumers (multiples
     * of 8): what the launch bounds give every thread, moved from the
     * producer to the consumers (the sum may not exceed the CTA's share, or
     * setmaxnreg.inc waits forever) */
    constexpr int RL = 65536 / MINB / NT / 8 * 8 > 255 ? 255 : 65536 / MINB / NT / 8 * 8, PREG = 32,
                  CREG = (NT * RL - 128 * PREG) / NC / 8 * 8 > 240 ? 240 : (NT * RL - 128 * PREG) / NC / 8 * 8;
    static_assert(!WS || 128 * PREG + NC * CREG <= NT * RL, "register split");
    constexpr uint32_t TILE = BK * D * 2; /* bytes of one K or V tile */
    extern __shared__ unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023) & ~1023u;
    unsigned char *smem = smem_raw + (base - raw);
    T *Qs = reinterpret_cast<T *>(smem + ST * 2 * TILE);
    /* MB: stage s is full once every copying thread's copies into it landed
     * (all threads, or the producer's), empty once every computing thread is
     * done reading it */
    const uint32_t full0 = base + ST * 2 * TILE + BQ * LDS * 2, empty0 = full0 + ST * 8;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    if (job.nk == 0) return zero_rows<T>(a, ip);
    if (MB && tid == 0)
        for (int i = 0; i < ST; i++) {
            mbar_init(full0 + i * 8, WS ? 128 : NT); /* the copying threads */
            mbar_init(empty0 + i * 8, NC);           /* the computing ones */
        }
    if (MB && tid == 0) asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    const int64_t qi0 = ip.first, r = job.stride;
    const int bq = (int)min((int64_t)BQ, job.q_count - qi0);
    constexpr int PD = ST - 2; /* prefetch distance (without the producer) */
    static_assert(WS || PD >= 1, "at least 3 stages (2 with the producer warpgroup)");
    if (WS) {
        /* the split comes first, so that nothing computed before it lives
         * on in the producer's few registers */
        __syncthreads(); /* the barriers are initialised before any copy arrives on them */
        if (tid >= NC) { /* the producer: every tile, as stages free up */
            asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(PREG));
            const wg_loads<T, D, BK, ST, 128, MB> load_tile(a, ip, keys_of<BK>(a, job, qi0, bq), tid - NC, smem, full0,
                                                             empty0);
            for (int64_t t = 0; t < load_tile.ks.ntiles; t++) load_tile(t);
            return;
        }
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(CREG));
    }
    const wg_loads<T, D, BK, ST, NT, MB> load_tile(a, ip, keys_of<BK>(a, job, qi0, bq), tid, smem, full0, empty0);
    const item_keys &ks = load_tile.ks;
    /* Start-up, every latency at once: the Q tile (its own copy group) and
     * the first key/value tiles stream in together; the state earlier steps
     * left is merged at the end. */
    const T *qb = static_cast<const T *>(a.q) + ip.b * a.qs[0] + ip.h * a.qs[2];
    for (int i = tid; i < BQ * CH; i += NC) { /* (by the consumers) */
        const int row = i / CH, ch = i % CH;
        cp_async16(Qs + row * LDS + ch * 8,
                   row < bq ? qb + (job.q_local + (qi0 + row) * r) * a.qs[1] + ch * 8 : qb, row < bq);
    }
    cp_async_commit();
    if (MB && !WS) __syncthreads(); /* the barriers are initialised before any copy arrives on them */
#pragma unroll
    for (int t = 0; t < (WS ? 0 : PD); t++) {
        if (t < ks.ntiles) load_tile(t);
        else if (!MB) cp_async_commit(); /* (an empty group keeps the count) */
    }
    const int row0 = wg * 64 + (warp & 3) * 16; /* the warp's 16 rows */
    const int rl[2] = {row0 + (lane >> 2), row0 + (lane >> 2) + 8};
    if (MB) cp_async_wait<0>(); /* the Q group (the tiles arrive on barriers) */
    else cp_async_wait<PD>();
    auto consumers_sync = [&]() { /* every computing thread (named barrier 8; 1 .. NW are the turns) */
        if (WS) asm volatile("bar.sync 8, %0;" ::"n"(NC) : "memory");
        else __syncthreads();
    };
    consumers_sync();
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm_x4(qa[kk], Qs + (row0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + kk * 16 + (lane >> 4) * 8);
    float o[D / 2], osum[4] = {0.f, 0.f, 0.f, 0.f}; /* osum: ONES' row sums (2 per row) */
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.f;
    const uint32_t ones = smem_u32(Qs);
    if (ONES) {
        consumers_sync(); /* every warp holds its Q fragments */
        const uint32_t one = pack2<T>(1.f, 1.f);
        for (int i = tid; i < 64; i += NC) reinterpret_cast<uint4 *>(Qs)[i] = make_uint4(one, one, one, one);
        fence_proxy_async(); /* generic writes -> the MMA's reads */
        consumers_sync();
    }

    /* Iteration t: wait for tile t, prefetch tile t + ST - 2 (into the stage
     * tile t - 2 used: every warpgroup waited for that P V before the barrier),
     * issue S_t = Q K_t^T and then O += P_{t-1} V_{t-1}, wait for S_t only,
     * run the softmax of S_t while P V runs on the tensor cores, then wait
     * for it, rescale O and pack P_t. The first and last iterations are
     * peeled so that no MMA sits behind a branch (which would make the
     * compiler serialise the pipeline). */
    uint32_t pa[BK / 16][4];
    float s[BK / 2];
    const float masked = a.qscale >= 0.f ? -INFINITY : INFINITY; /* a raw score that scales to -inf */
    uint32_t vprev = 0; /* V stage of P_{t-1} */
    auto begin_tile = [&](int64_t t) -> uint32_t {
        if (MB) {
            mbar_wait(full0 + (t % ST) * 8, (t / ST) & 1);
            fence_proxy_async(); /* the copies (generic proxy) -> the MMA's reads (async proxy) */
        } else {
            if (t + PD - 1 < ks.ntiles) cp_async_wait<PD - 1>(); /* groups in flight: tiles t .. t + PD - 1 */
            else cp_async_wait<0>();
            fence_proxy_async(); /* cp.async writes -> the MMA's reads */
            __syncthreads();
        }
        if (!LATE && !WS && t + PD < ks.ntiles) load_tile(t + PD);
        return base + (uint32_t)(t % ST) * 2 * TILE;
    };
    /* MB: this thread is done with tile t (its K read by S_t, its V by P_t V_t) */
    auto end_tile = [&](int64_t t) {
        if (MB) mbar_arrive(empty0 + (t % ST) * 8);
    };
    auto issue_s = [&](uint32_t kst) {
        wgmma_rs_first<T, BK, 0>(s, qa[0], wg_desc(kst, 16, 1024));
#pragma unroll
        for (int kk = 1; kk < D / 16; kk++)
            wgmma_rs<T, BK, 0>(s, qa[kk], wg_desc(kst + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024), 1);
        wgmma_commit();
    };
    auto issue_pv = [&](uint32_t vst) {
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            wgmma_rs<T, D, 1>(o, pa[kk], wg_desc(vst + kk * 2048, BK * 128, 1024), 1);
            if (ONES) wgmma_rs<T, 8, 0>(osum, pa[kk], wg_desc(ones, 16, 1024), 1);
        }
        wgmma_commit();
    };
    /* softmax of S_t in place (s becomes P_t in fp32), the O rescale into
     * al; returns whether any row of the warp rescales. LAZY keeps a row's
     * running maximum until a score exceeds it by more than 2^8 (so P <= 256,
     * exact in fp16, bf16 and fp32 alike), which leaves most tiles of a long
     * key range without a rescale. */
    auto softmax = [&](int64_t t, float al[2]) -> bool {
#pragma unroll
        for (int i = 0; i < BK / 2; i++) wgmma_reg_fence(s[i]);
        const bool second = t >= ks.nt0;
        const int64_t k0 = (t - (second ? ks.nt0 : 0)) * BK, dq = second ? ks.dq1 : ks.dq0;
        const int bk = (int)min((int64_t)BK, (second ? ks.kc1 : ks.kc0) - k0);
        /* masking (tails, the causal diagonal): keys of the tile from lim on
         * are out for a row; one uniform branch, so the common path is
         * straight-line code */
        if (bk < BK || (a.causal && k0 + BK - 1 > qi0 + row0 + dq)) {
            int lim[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int64_t c = a.causal ? qi0 + rl[i] + dq - k0 + 1 : (int64_t)BK;
                lim[i] = (int)max((int64_t)0, min(c, (int64_t)bk));
            }
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (nt * 8 + (lane & 3) * 2 + (e & 1) >= lim[e >> 1]) s[nt * 4 + e] = masked;
        }
        /* row extremes of the raw scores (4 partial chains per row) */
        float mp[2][4];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) mp[i][j] = masked;
        if (a.qscale >= 0.f) {
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) mp[e >> 1][(nt & 1) * 2 + (e & 1)] = fmaxf(mp[e >> 1][(nt & 1) * 2 + (e & 1)], s[nt * 4 + e]);
        } else {
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) mp[e >> 1][(nt & 1) * 2 + (e & 1)] = fminf(mp[e >> 1][(nt & 1) * 2 + (e & 1)], s[nt * 4 + e]);
        }
        float mu[2], nmu[2], lp[2][4] = {};
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float x = a.qscale >= 0.f ? fmaxf(fmaxf(mp[i][0], mp[i][1]), fmaxf(mp[i][2], mp[i][3]))
                                      : fminf(fminf(mp[i][0], mp[i][1]), fminf(mp[i][2], mp[i][3]));
            x = a.qscale >= 0.f ? fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1)) : fminf(x, __shfl_xor_sync(0xffffffffu, x, 1));
            x = a.qscale >= 0.f ? fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2)) : fminf(x, __shfl_xor_sync(0xffffffffu, x, 2));
            float mx = fmaxf(mrow[i], x * a.qscale); /* (masked * qscale = -inf) */
            if (LAZY && !(mx > mrow[i] + 8.f)) mx = mrow[i];
            mu[i] = mx == -INFINITY ? 0.f : mx;      /* nothing allowed yet */
            nmu[i] = -mu[i];
            al[i] = ex2(mrow[i] - mu[i]);
            mrow[i] = mx;
        }
        /* p = 2^(s * qscale - m): one FFMA and one MUFU per score */
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float x = fmaf(s[nt * 4 + e], a.qscale, nmu[e >> 1]);
                s[nt * 4 + e] = nt % 8 < EMU ? ex2_poly(x) : ex2(x);
                if (!ONES) lp[e >> 1][(nt & 1) * 2 + (e & 1)] += s[nt * 4 + e];
            }
#pragma unroll
        for (int i = 0; i < 2 && !ONES; i++) {
            float ls = (lp[i][0] + lp[i][1]) + (lp[i][2] + lp[i][3]);
            ls += __shfl_xor_sync(0xffffffffu, ls, 1);
            ls += __shfl_xor_sync(0xffffffffu, ls, 2);
            lrow[i] = lrow[i] * al[i] + ls;
        }
        return !LAZY || __any_sync(0xffffffffu, al[0] != 1.f || al[1] != 1.f);
    };
    /* after P V is waited for: rescale O, P_t into the A operand */
    auto rescale_pack = [&](const float al[2], bool rescale) {
#pragma unroll
        for (int i = 0; i < D / 2; i++) wgmma_reg_fence(o[i]);
#pragma unroll
        for (int i = 0; i < 4 && ONES; i++) wgmma_reg_fence(osum[i]);
        if (rescale && ONES)
#pragma unroll
            for (int i = 0; i < 4; i++) osum[i] *= al[i >> 1];
        if (rescale)
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
            o[nt * 4 + 0] *= al[0];
            o[nt * 4 + 1] *= al[0];
            o[nt * 4 + 2] *= al[1];
            o[nt * 4 + 3] *= al[1];
        }
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            pa[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
            pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
            pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
            pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
        }
    };
    /* PP: warpgroup w issues its MMAs between a wait on barrier 1 + w and an
     * arrival on the next one's (in a ring); the last warpgroup arrives once
     * first (warpgroup 0 starts) and not after its last MMAs (the counts
     * match) */
    auto turn_wait = [&]() {
        if (PP) asm volatile("bar.sync %0, 256;" ::"r"(1 + wg) : "memory");
    };
    auto turn_pass = [&](bool last) {
        if (PP && !(last && wg == NW - 1)) asm volatile("bar.arrive %0, 256;" ::"r"(1 + (wg + 1) % NW) : "memory");
    };
    if (ks.ntiles > 0) {
        float al[2];
        if (PP && wg == NW - 1) asm volatile("bar.arrive 1, 256;" ::: "memory");
        uint32_t kst = begin_tile(0);
        turn_wait();
        wgmma_fence();
        issue_s(kst);
        turn_pass(false);
        if (LATE && PD < ks.ntiles) load_tile(PD);
        wgmma_wait<0>();
        rescale_pack(al, softmax(0, al));
        vprev = kst + TILE;
        for (int64_t t = 1; t < ks.ntiles; t++) {
            kst = begin_tile(t);
            turn_wait();
            wgmma_fence(); /* P_{t-1} and O were written since the last MMA */
            issue_s(kst);
            issue_pv(vprev);
            turn_pass(false);
            if (LATE && t + PD < ks.ntiles) load_tile(t + PD); /* while the tensor cores work */
            wgmma_wait<1>(); /* S_t done; P V may still run */
            const bool rescale = softmax(t, al);
            wgmma_wait<0>();
            end_tile(t - 1);
            rescale_pack(al, rescale);
            vprev = kst + TILE;
        }
        turn_wait();
        wgmma_fence();
        issue_pv(vprev);
        turn_pass(true);
        wgmma_wait<0>();
        end_tile(ks.ntiles - 1);
#pragma unroll
        for (int i = 0; i < D / 2; i++) wgmma_reg_fence(o[i]);
        if (ONES) {
#pragma unroll
            for (int i = 0; i < 4; i++) wgmma_reg_fence(osum[i]);
            lrow[0] = osum[0];
            lrow[1] = osum[2];
        }
    }
    /* merge what earlier steps left (none in a call without a finishing
     * pass): (o, l) at the larger m */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (a.done_l == 0.f || rl[i] >= bq) continue;
        const int64_t row = job.q_local + (qi0 + rl[i]) * r, ai = (ip.b * a.n + row) * a.H + ip.h;
        const float lst = a.l[ai];
        if (lst <= 0.f) continue; /* nothing earlier (0) or done (-1); NaN is merged */
        const float mst = a.m[ai], mx = fmaxf(mrow[i], mst), fo = ex2(mrow[i] - mx), fs = ex2(mst - mx);
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
            const float2 x = state_load2<T>(a, ip, row, ai, nt * 8 + (lane & 3) * 2, lst);
            o[nt * 4 + 2 * i] = o[nt * 4 + 2 * i] * fo + x.x * fs;
            o[nt * 4 + 2 * i + 1] = o[nt * 4 + 2 * i + 1] * fo + x.y * fs;
        }
        lrow[i] = lrow[i] * fo + lst * fs;
        mrow[i] = mx;
    }
    store_rows<T, D>(a, ip, qi0, bq, rl, o, mrow, lrow, lane);
#endif
}
