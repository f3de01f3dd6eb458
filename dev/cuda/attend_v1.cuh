/* Kernel 1 of the tensor-core attention (dev/cuda/attend.cu): the first
 * version, kept for comparison. Synchronous K/V tile loads (global -> registers
 * -> shared) before each tile; otherwise as the library's kernel. */
#pragma once
#include "../../src/cuda/kernels.cuh"

template <typename T, int D>
__global__ void __launch_bounds__(128) attend_mma_v1(const __grid_constant__ attend_args a) {
    constexpr int LDS = mma_lds<D>(), CH = D / 8; /* 16-byte chunks per row */
    extern __shared__ __align__(16) unsigned char smem[];
    T *Qs = reinterpret_cast<T *>(smem), *Ks = Qs + 64 * LDS, *Vs = Ks + 64 * LDS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    const int64_t qi0 = ip.first, r = job.stride;
    const int bq = (int)min((int64_t)64, job.q_count - qi0);

    const T *qb = static_cast<const T *>(a.q) + ip.b * a.qs[0] + ip.h * a.qs[2];
    for (int i = tid; i < 64 * CH; i += 128) {
        int row = i / CH, ch = i % CH;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (row < bq) x = *reinterpret_cast<const uint4 *>(qb + (job.q_local + (qi0 + row) * r) * a.qs[1] + ch * 8);
        *reinterpret_cast<uint4 *>(Qs + row * LDS + ch * 8) = x;
    }
    __syncthreads();
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm_x4(qa[kk], Qs + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + kk * 16 + (lane >> 4) * 8);

    /* running state of the thread's two rows */
    const int rl[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8};
    float o[D / 8][4];
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < D / 8; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (rl[i] >= bq) continue;
        int64_t ai = (ip.b * a.n + job.q_local + (qi0 + rl[i]) * r) * a.H + ip.h;
        float L = a.l[ai];
        if (L > 0.f) { /* earlier steps reached this row */
            lrow[i] = L;
            mrow[i] = a.m[ai];
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++) {
                float2 x = *reinterpret_cast<const float2 *>(a.acc + ai * D + nt * 8 + (lane & 3) * 2);
                o[nt][2 * i] = x.x;
                o[nt][2 * i + 1] = x.y;
            }
        }
    }

    const T *kb = static_cast<const T *>(a.k) + ip.b * a.ks[0] + ip.kh * a.ks[2];
    const T *vb = static_cast<const T *>(a.v) + ip.b * a.vs[0] + ip.kh * a.vs[2];
    for (int c = 0; c < job.nk; c++) {
        int64_t kcount = job.k_count[c];
        const int64_t dq = (job.q_first - job.k_first[c]) / r; /* key j allowed iff j <= i + dq */
        if (a.causal) kcount = min(kcount, qi0 + bq + dq);
        for (int64_t k0 = 0; k0 < kcount; k0 += 64) {
            const int bk = (int)min((int64_t)64, kcount - k0);
            __syncthreads(); /* every warp is done with the previous tile */
            for (int i = tid; i < 64 * CH; i += 128) {
                int row = i / CH, ch = i % CH;
                uint4 x = make_uint4(0, 0, 0, 0), y = x;
                if (row < bk) {
                    int64_t kr = job.k_local[c] + (k0 + row) * r;
                    x = *reinterpret_cast<const uint4 *>(kb + kr * a.ks[1] + ch * 8);
                    y = *reinterpret_cast<const uint4 *>(vb + kr * a.vs[1] + ch * 8);
                }
                *reinterpret_cast<uint4 *>(Ks + row * LDS + ch * 8) = x;
                *reinterpret_cast<uint4 *>(Vs + row * LDS + ch * 8) = y;
            }
            __syncthreads();
            /* S = Q K^T: 16 queries x 64 keys per warp */
            float s[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
                for (int np = 0; np < 4; np++) {
                    uint32_t bf[4];
                    ldsm_x4(bf, Ks + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
                    mma16816<T>(s[2 * np], qa[kk], bf[0], bf[1]);
                    mma16816<T>(s[2 * np + 1], qa[kk], bf[2], bf[3]);
                }
            const bool mask = bk < 64 || (a.causal && k0 + 63 > qi0 + dq);
            float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = s[nt][e] * a.qscale;
                    if (mask) {
                        int64_t key = k0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                        if (key >= k0 + bk || (a.causal && key > qi0 + rl[e >> 1] + dq)) x = -INFINITY;
                    }
                    s[nt][e] = x;
                    mx[e >> 1] = fmaxf(mx[e >> 1], x);
                }
            float mu[2], al[2], ls[2] = {0.f, 0.f};
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                mu[i] = mx[i] == -INFINITY ? 0.f : mx[i]; /* nothing allowed yet */
                al[i] = ex2(mrow[i] - mu[i]);
                mrow[i] = mx[i];
            }
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[nt][e] = ex2(s[nt][e] - mu[e >> 1]);
                    ls[e >> 1] += s[nt][e];
                }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                ls[i] += __shfl_xor_sync(0xffffffffu, ls[i], 1);
                ls[i] += __shfl_xor_sync(0xffffffffu, ls[i], 2);
                lrow[i] = lrow[i] * al[i] + ls[i];
            }
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++) {
                o[nt][0] *= al[0];
                o[nt][1] *= al[0];
                o[nt][2] *= al[1];
                o[nt][3] *= al[1];
            }
            /* O += P V: P from the score registers, V through ldmatrix.trans */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                  pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t vf[4];
                    ldsm_x4_t(vf, Vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + dp * 16 + (lane >> 4) * 8);
                    mma16816<T>(o[2 * dp], pa, vf[0], vf[1]);
                    mma16816<T>(o[2 * dp + 1], pa, vf[2], vf[3]);
                }
            }
        }
    }
    store_rows<T, D>(a, ip, qi0, bq, rl, &o[0][0], mrow, lrow, lane);
}

