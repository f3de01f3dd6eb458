/* Backward kernels of the CUDA backend (SPEC.md, "Backward pass"), over the
 * same phases, work items and job tables as the forward (decode_item,
 * item_keys' rules), so the planner, the ring loop and the table cache are
 * shared:
 *
 * bwd_delta<T>   the light pre-pass: Delta = rowsum(dO * O) of the rank's
 *                rows, fp32 [B, n, H], one warp per row.
 * attend_bwd<T>  any type, D <= 256, any strides, fp32 on CUDA cores (the
 *                kernel of the shapes attend_bwd_mma.cuh's tensor-core pair
 *                does not take: fp32, D other than 64 and 128, strided
 *                heads). One
 *                CTA per work item: a tile of bq queries of one job (the
 *                planner's tile, bwd_tile_rows), with Q, dO (times the
 *                output factor), their dQ, LSE and Delta in shared memory,
 *                against the job's keys BWD_BK at a time. Per key tile:
 *                S = Q K^T and dP = dO V^T, P = 2^(S qscale - LSE log2 e),
 *                dS = scale P (dP - Delta) (masked pairs give 0); dV += P^T dO
 *                and dK += dS^T Q are added to the key block's fp32
 *                accumulators with atomics (GQA: every query head of a K/V
 *                head adds into that head's rows, inside the kernel); dQ
 *                += dS K stays in shared memory: within a phase no other
 *                item has these query rows, so the item adds its dQ to the
 *                rank's fp32 state without atomics at its end.
 * store_rows_f32<T>  an fp32 [B, n, H, D] buffer into a tensor of type T
 *                with any strides (dQ, dK, dV at the end of the call).
 *
 * The scheme for dQ and dK/dV: the query tile owns dQ (no atomics); dK, dV
 * take fp32 atomics, one per key element per query tile, so their sums are
 * not bit-identical across runs. The dilated rows are addressed by the
 * job's stride: nothing is gathered and nothing is scattered afterwards. */
#pragma once

#include "kernels.cuh"

#define BWD_BK 32       /* keys per step of attend_bwd */
#define BWD_THREADS 256 /* threads of attend_bwd */

/* Queries per work item of attend_bwd for head dim D (its shared memory
 * holds three [bq, D + 1] fp32 tiles). */
static inline int64_t bwd_tile_rows(int64_t D) { return D <= 128 ? 64 : 32; }

/* Shared memory of attend_bwd: Q, dO, dQ [bq, D + 1]; K, V [BWD_BK, D + 1];
 * P, dS [bq, BWD_BK + 1]; LSE and Delta [bq]. */
static inline size_t bwd_smem_bytes(int64_t D, int64_t bq) {
    return sizeof(float) * (size_t)(3 * bq * (D + 1) + 2 * BWD_BK * (D + 1) + 2 * bq * (BWD_BK + 1) + 2 * bq);
}

template <typename T>
__global__ void bwd_delta(const T *o, int64_t o0, int64_t o1, int64_t o2, int64_t o3, const T *g, int64_t g0,
                          int64_t g1, int64_t g2, int64_t g3, float *delta, int64_t B, int64_t n, int64_t H,
                          int64_t D) {
    const int64_t rows = B * n * H, warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    const int lane = threadIdx.x & 31;
    for (int64_t w = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); w < rows; w += warps) {
        const int64_t h = w % H, row = (w / H) % n, b = w / (H * n);
        const T *orow = o + b * o0 + row * o1 + h * o2, *grow = g + b * g0 + row * g1 + h * g2;
        float s = 0.f;
        for (int64_t d = lane; d < D; d += 32) s += to_f32<T>(orow[d * o3]) * to_f32<T>(grow[d * g3]);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) delta[w] = s;
    }
}

#ifdef __CUDA_ARCH__
#define BWD_SYNC() __syncthreads()
#else
#define BWD_SYNC() ((void)0) /* the host's check runs a CTA as one thread */
#endif

__host__ __device__ __forceinline__ void bwd_add(float *p, float v) {
#ifdef __CUDA_ARCH__
    atomicAdd(p, v);
#else
    *p += v;
#endif
}

__host__ __device__ __forceinline__ float bwd_ex2(float x) {
#ifdef __CUDA_ARCH__
    return ex2(x);
#else
    return exp2f(x);
#endif
}

/* One work item of attend_bwd by threads tid of nt, with shared memory sm
 * (bwd_smem_bytes); on the host (one thread) the same code is the
 * kernel's checker (dev/cuda/bwd_check.cu). */
template <typename T>
__host__ __device__ __forceinline__ void attend_bwd_item(const attend_args &a, int64_t item, int tid, int nt, float *sm) {
    const item_pos ip = decode_item(a, item);
    const rda_job &job = *ip.job;
    if (job.nk == 0) return; /* rows no key reaches: dQ stays 0 */
    /* (32-bit index arithmetic inside the tile) */
    const int D = (int)a.D, LD = D + 1, BQ = (int)a.bq, LP = BWD_BK + 1;
    const int64_t qi0 = ip.first, r = job.stride;
    const int bq = (int)min(a.bq, job.q_count - qi0);
    float *Qs = sm, *Gs = Qs + BQ * LD, *dQs = Gs + BQ * LD, *Ks = dQs + BQ * LD, *Vs = Ks + BWD_BK * LD;
    float *Ps = Vs + BWD_BK * LD, *dSs = Ps + BQ * LP, *L2 = dSs + BQ * LP, *Dl = L2 + BQ;
    const T *qb = static_cast<const T *>(a.q) + ip.b * a.qs[0] + ip.h * a.qs[2];
    const T *gb = static_cast<const T *>(a.dout) + ip.b * a.gs[0] + ip.h * a.gs[2];
    const T *kb = static_cast<const T *>(a.k) + ip.b * a.ks[0] + ip.kh * a.ks[2];
    const T *vb = static_cast<const T *>(a.v) + ip.b * a.vs[0] + ip.kh * a.vs[2];

    for (int e = tid; e < BQ * D; e += nt) {
        const int i = e / D, d = e - i * D;
        float x = 0.f, y = 0.f;
        if (i < bq) {
            const int64_t row = job.q_local + (qi0 + i) * r;
            x = to_f32<T>(qb[row * a.qs[1] + d * a.qs[3]]);
            y = to_f32<T>(gb[row * a.gs[1] + d * a.gs[3]]) * a.factor;
        }
        Qs[i * LD + d] = x;
        Gs[i * LD + d] = y;
        dQs[i * LD + d] = 0.f;
    }
    for (int i = tid; i < BQ; i += nt) {
        if (i < bq) {
            const int64_t row = job.q_local + (qi0 + i) * r;
            L2[i] = a.lse[ip.b * a.ls[0] + ip.h * a.ls[1] + row * a.ls[2]] * 1.4426950408889634f;
            Dl[i] = a.delta[(ip.b * a.n + row) * a.H + ip.h];
        } else {
            L2[i] = INFINITY;
            Dl[i] = 0.f;
        }
    }
    BWD_SYNC();

    for (int c = 0; c < job.nk; c++) {
        /* key j of the progression is allowed for query i iff j <= i + dqc */
        const int64_t dqc = (job.q_first - job.k_first[c]) / r, kl = job.k_local[c];
        int64_t kcount = job.k_count[c];
        if (a.causal) kcount = min(kcount, qi0 + bq + dqc);
        for (int64_t k0 = 0; k0 < kcount; k0 += BWD_BK) {
            const int bk = (int)min((int64_t)BWD_BK, kcount - k0);
            for (int e = tid; e < BWD_BK * D; e += nt) {
                const int j = e / D, d = e - j * D;
                float x = 0.f, y = 0.f;
                if (j < bk) {
                    const int64_t row = kl + (k0 + j) * r;
                    x = to_f32<T>(kb[row * a.ks[1] + d * a.ks[3]]);
                    y = to_f32<T>(vb[row * a.vs[1] + d * a.vs[3]]);
                }
                Ks[j * LD + d] = x;
                Vs[j * LD + d] = y;
            }
            BWD_SYNC();
            /* the first allowed-key limit: key k0 + j for query qi0 + i iff j - i <= lim */
            const int64_t lim = qi0 + dqc - k0;
            for (int e = tid; e < BQ * BWD_BK; e += nt) {
                const int i = e % BQ, j = e / BQ;
                float p = 0.f, ds = 0.f;
                if (i < bq && j < bk && (!a.causal || (int64_t)(j - i) <= lim)) {
                    float s = 0.f, dp = 0.f;
                    for (int d = 0; d < D; d++) {
                        s = fmaf(Qs[i * LD + d], Ks[j * LD + d], s);
                        dp = fmaf(Gs[i * LD + d], Vs[j * LD + d], dp);
                    }
                    p = bwd_ex2(fmaf(s, a.qscale, -L2[i]));
                    ds = a.scale * p * (dp - Dl[i]);
                }
                Ps[i * LP + j] = p;
                dSs[i * LP + j] = ds;
            }
            BWD_SYNC();
            /* dV and dK of the key tile: into the block's accumulators */
            for (int e = tid; e < bk * D; e += nt) {
                const int j = e / D, d = e - j * D;
                float sv = 0.f, sk = 0.f;
                for (int i = 0; i < bq; i++) {
                    sv = fmaf(Ps[i * LP + j], Gs[i * LD + d], sv);
                    sk = fmaf(dSs[i * LP + j], Qs[i * LD + d], sk);
                }
                const int64_t at = ((ip.b * a.nk + kl + (k0 + j) * r) * a.Hkv + ip.kh) * a.D + d;
                bwd_add(a.dv + at, sv);
                bwd_add(a.dk + at, sk);
            }
            /* dQ of the tile: dS K */
            for (int e = tid; e < bq * D; e += nt) {
                const int i = e / D, d = e - i * D;
                float s = dQs[i * LD + d];
                for (int j = 0; j < bk; j++) s = fmaf(dSs[i * LP + j], Ks[j * LD + d], s);
                dQs[i * LD + d] = s;
            }
            BWD_SYNC();
        }
    }
    for (int e = tid; e < bq * D; e += nt) {
        const int i = e / D, d = e - i * D;
        const int64_t row = job.q_local + (qi0 + i) * r;
        a.dq[((ip.b * a.n + row) * a.H + ip.h) * a.D + d] += dQs[i * LD + d];
    }
}

template <typename T>
__global__ void __launch_bounds__(BWD_THREADS) attend_bwd(const __grid_constant__ attend_args a) {
    extern __shared__ float sm[];
    attend_bwd_item<T>(a, blockIdx.x, threadIdx.x, blockDim.x, sm);
}

template <typename T>
__global__ void store_rows_f32(T *dst, int64_t s0, int64_t s1, int64_t s2, int64_t s3, const float *src, int64_t B,
                               int64_t n, int64_t H, int64_t D) {
    const int64_t total = B * n * H * D, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const int64_t d = e % D, h = (e / D) % H, row = (e / (D * H)) % n, b = e / (D * H * n);
        dst[b * s0 + row * s1 + h * s2 + d * s3] = from_f32<T>(src[e]);
    }
}
