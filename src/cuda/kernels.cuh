/* CUDA kernels of the attention backend. C-style CUDA: templates only for
 * the element type and the head dimension.
 *
 * attend_mma<T, D>   fp16/bf16, D = 64 or 128, contiguous head dim:
 *                    FlashAttention-2's recurrence on mma.sync m16n8k16
 *                    tensor cores; one CTA (4 warps) per work item, a tile
 *                    of 64 queries, 64 keys at a time through shared memory.
 * attend_generic<T>  any type (fp32 on CUDA cores), D <= 256, any strides:
 *                    one warp per query row.
 * attend_wgmma       (attend_wgmma.cuh) Hopper: warpgroup MMA, used instead
 *                    of attend_mma on sm_90.
 * Both read query/key rows through the job's progression (dilation is a
 * stride), keep the online softmax in registers, and either fold into the
 * rank's running state (acc, m, l in global memory) or, for rows that are
 * then complete, write O (and LSE) directly. */
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

extern "C" {
#include "../plan.h"
}

#define RDA_CUDA_BQ 64 /* queries per work item of attend_mma (attend_wgmma: 64 per warpgroup) */
/* bytes of tables a launch carries itself (the whole argument block stays
 * under the 4 KB every driver takes) */
#define RDA_TAB_INLINE 3584

/* Everything a launch needs, passed by value. Shapes: q/o [B, n, H, D],
 * k/v [B, nk, Hkv, D] (strides in elements), acc [B, n, H, D] fp32,
 * m/l [B, n, H], lse [B, H, n] (strides). */
struct attend_args {
    const void *q, *k, *v;
    int64_t qs[4], ks[4], vs[4];
    float *acc, *m, *l;
    int64_t n;
    void *o;
    int64_t os[4];
    float *lse;
    int64_t ls[3];
    const rda_job *jobs;
    const rda_tile *tiles;
    const int64_t *heads;
    const rda_class *classes;
    int64_t nclasses;
    int64_t B, H, Hkv, D;
    int64_t bq; /* queries per work item (the planner's tile) */
    int causal;
    int32_t plain_add; /* backward: this launch's items share no dK/dV row, so they add without atomics */
    int32_t qparts;    /* fused backward: CTAs per key tile, each a part of its queries (0 or 1: one) */
    float qscale; /* softmax scale * log2(e) */
    float factor; /* 1/G in groups mode */
    /* l of a row once its O is written: -1 when a finishing pass follows
     * (it skips such rows and resets l), 0 when none does (every row of the
     * call is written by exactly one final work item) */
    float done_l;
    int64_t zero_bq; /* rows per tile of a zero-output job (one without keys) */
    /* backward (attend_bwd.cuh): dO [B, n, H, D] (strides gs); the rank's
     * fp32 dQ [B, n, H, D] and Delta [B, n, H]; the key block's fp32 dK and
     * dV accumulators [B, nk, Hkv, D]; the softmax scale */
    const void *dout;
    int64_t gs[4];
    float *dq, *delta, *dk, *dv;
    int64_t nk;
    float scale;
    /* Small tables travel inside the launch itself (no copy before it):
     * jobs at tab[0], the others at their offsets. */
    int32_t tab_inline;
    int32_t off_tiles, off_heads, off_classes;
    alignas(16) unsigned char tab[RDA_TAB_INLINE];
};
static_assert(sizeof(attend_args) <= 4096, "a launch's arguments stay within 4 KB");

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* 2^x for x <= 0 on the FMA and integer pipes instead of the special
 * function unit (16 results per SM per clock). For attend_wgmma's variant
 * bits 64-192, which offload part of the softmax's exponentials; measured
 * slower on an H100 at every fraction (docs/PERFORMANCE.md, v5), so no
 * library kernel uses it. x = j + f with j = round(x) (the
 * 1.5 * 2^23 shift puts j in the low mantissa bits of t), 2^f on [-1/2, 1/2]
 * by a cubic (relative error 7.5e-5, below fp16's rounding of P), j added to
 * the exponent. x is clamped at -126, so 2^x stays a normal number (at most
 * 2^-125.5 where it should be 0: nothing next to P's own rounding). */
__device__ __forceinline__ float ex2_poly(float x) {
    x = fmaxf(x, -126.f);
    const float t = x + 12582912.f, f = x - (t - 12582912.f);
    float p = fmaf(0.0551695256f, f, 0.242610939f);
    p = fmaf(p, f, 0.693261379f);
    p = fmaf(p, f, 0.999928096f);
    return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

/* (host and device: dev/cuda/bwd_check.cu runs the backward's tile code on the host) */
template <typename T> __host__ __device__ __forceinline__ float to_f32(T x);
template <> __host__ __device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <> __host__ __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __host__ __device__ __forceinline__ T from_f32(float x);
template <> __host__ __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

/* The work item of this CTA: class, job, first query of its tile, batch
 * and head. (Kernels taking `a` by address need it __grid_constant__.) */
struct item_pos {
    const rda_class *cl;
    const rda_job *job;
    int64_t first, b, h, kh;
};

__host__ __device__ __forceinline__ item_pos decode_item(const attend_args &a, int64_t item) {
    const bool in = a.tab_inline;
    const rda_class *classes = in ? reinterpret_cast<const rda_class *>(a.tab + a.off_classes) : a.classes;
    const rda_tile *tiles = in ? reinterpret_cast<const rda_tile *>(a.tab + a.off_tiles) : a.tiles;
    const int64_t *heads = in ? reinterpret_cast<const int64_t *>(a.tab + a.off_heads) : a.heads;
    const rda_job *jobs = in ? reinterpret_cast<const rda_job *>(a.tab) : a.jobs;
    item_pos p;
    int64_t t, bh;
    p.cl = &classes[rda_item_place(classes, a.nclasses, item, &t, &bh)];
    const rda_tile tile = tiles[t];
    p.job = &jobs[tile.job];
    p.first = tile.first;
    p.b = bh / p.cl->nheads;
    p.h = heads[p.cl->first_head + bh % p.cl->nheads];
    p.kh = p.h / (a.H / a.Hkv);
    return p;
}

/* A zero-output item (its job has no keys: rows no pattern of the head
 * selects, in a call without a finishing pass): O = 0, LSE = -inf for rows
 * [first, first + zero_bq) of the job; l stays 0. */
template <typename T> __device__ void zero_rows(const attend_args &a, const item_pos &ip) {
    /* (32-bit index arithmetic: a 64-bit division would be a subroutine
     * call, and any call in a kernel keeps the compiler from using the
     * uniform datapath in its main loop) */
    const rda_job &job = *ip.job;
    const int rows = (int)min(a.zero_bq, job.q_count - ip.first), D = (int)a.D;
    T *ob = static_cast<T *>(a.o) + ip.b * a.os[0] + ip.h * a.os[2];
    constexpr int V = 16 / sizeof(T); /* elements per 16-byte store */
    if (a.os[3] == 1 && D % V == 0 && a.os[1] % V == 0 && (reinterpret_cast<uintptr_t>(ob) & 15) == 0) {
        const int per = D / V;
        for (int i = threadIdx.x; i < rows * per; i += blockDim.x) {
            const int j = i / per;
            *reinterpret_cast<uint4 *>(ob + (job.q_local + (ip.first + j) * job.stride) * a.os[1] + (i - j * per) * V) =
                make_uint4(0, 0, 0, 0);
        }
    } else {
        for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
            const int j = i / D;
            ob[(job.q_local + (ip.first + j) * job.stride) * a.os[1] + (i - j * D) * a.os[3]] = from_f32<T>(0.f);
        }
    }
    if (a.lse)
        for (int j = threadIdx.x; j < rows; j += blockDim.x)
            a.lse[ip.b * a.ls[0] + ip.h * a.ls[1] + (job.q_local + (ip.first + j) * job.stride) * a.ls[2]] = -INFINITY;
}

/* ------------------------------------------------------------------ tensor cores */

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

template <typename T> __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

template <> __device__ __forceinline__ void mma16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T> __device__ __forceinline__ uint32_t pack2(float x, float y);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float x, float y) {
    __half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t *>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float x, float y) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* Shared memory of attend_mma: a Q tile and two K and V tiles (double
 * buffered) of 64 rows, rows padded by 16 bytes so that ldmatrix reads hit 8
 * different bank groups. */
template <int D> __host__ __device__ constexpr int mma_lds() { return D + 8; }
template <int D> __host__ __device__ constexpr size_t mma_smem_bytes() { return 5 * 64 * (size_t)mma_lds<D>() * 2; }

/* 16 bytes global -> shared without a register round trip; zero-filled
 * when !valid (nothing is read then). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(smem)), "l"(gmem),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

/* The keys of a work item: its job's one or two key progressions as one
 * sequence of tiles of BK keys (causal: none after the tile's last query).
 * Scalars, not arrays: a run-time index would put them in local memory. */
struct item_keys {
    int64_t kc0, kc1;    /* keys of each progression */
    int64_t dq0, dq1;    /* key j of a progression allowed for query i iff j <= i + dq */
    int64_t kl0, kl1;    /* local row of each progression's first key */
    int64_t nt0, ntiles; /* tiles of the first progression; of both */
};

template <int BK>
__device__ __forceinline__ item_keys keys_of(const attend_args &a, const rda_job &job, int64_t qi0, int bq) {
    item_keys k = {};
    const int64_t r = job.stride;
    if (job.nk > 0) {
        k.dq0 = (job.q_first - job.k_first[0]) / r;
        k.kc0 = a.causal ? min(job.k_count[0], qi0 + bq + k.dq0) : job.k_count[0];
        k.kl0 = job.k_local[0];
    }
    if (job.nk > 1) {
        k.dq1 = (job.q_first - job.k_first[1]) / r;
        k.kc1 = a.causal ? min(job.k_count[1], qi0 + bq + k.dq1) : job.k_count[1];
        k.kl1 = job.k_local[1];
    }
    k.nt0 = k.kc0 > 0 ? (k.kc0 + BK - 1) / BK : 0;
    k.ntiles = k.nt0 + (k.kc1 > 0 ? (k.kc1 + BK - 1) / BK : 0);
    return k;
}

/* Tile t of a work item's key sequence (item_keys): its first key in its
 * progression, that progression's local row, the causal offset dq and the
 * keys it holds (at most BK). */
struct key_tile {
    int64_t k0, kl, dq;
    int bk;
};

template <int BK> __device__ __forceinline__ key_tile tile_of(const item_keys &k, int64_t t) {
    const bool second = t >= k.nt0;
    key_tile kt;
    kt.k0 = (t - (second ? k.nt0 : 0)) * BK;
    kt.kl = second ? k.kl1 : k.kl0;
    kt.dq = second ? k.dq1 : k.dq0;
    kt.bk = (int)min((int64_t)BK, (second ? k.kc1 : k.kc0) - kt.k0);
    return kt;
}

/* 64 rows (row0 + i) * r + local of a [.., D] tensor with row stride rs
 * into a padded shared tile, zeros from row `rows` on; asynchronous
 * (cp.async; the caller commits and waits). */
template <typename T, int D>
__device__ __forceinline__ void load_rows_async(T *dst, const T *base, int64_t rs, int64_t local, int64_t row0,
                                                int64_t r, int rows, int tid) {
    constexpr int LDS = mma_lds<D>(), CH = D / 8;
    for (int i = tid; i < 64 * CH; i += 128) {
        const int row = i / CH, ch = i % CH;
        const int64_t at = local + (row0 + (row < rows ? row : 0)) * r;
        cp_async16(dst + row * LDS + ch * 8, base + at * rs + ch * 8, row < rows);
    }
}

/* The double-buffered loop's turn at tile t of n: tile t + 1 starts
 * streaming into the other buffer (load(t + 1, buffer)), then tile t is
 * waited for and is in shared memory for every thread. */
template <typename F> __device__ __forceinline__ void next_tile_ready(int64_t t, int64_t n, F &&load) {
    if (t + 1 < n) {
        load(t + 1, (int)((t + 1) & 1));
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

/* The sum l of query qi of the job after the job: unchanged, or NaN where
 * it is 0 although the query has an allowed key among the job's keys (it
 * saw only scores of -inf, an overflow: NaN, as softmax in fp32 gives,
 * SPEC.md "Edge values"). A row with no allowed key keeps l = 0. */
__device__ __forceinline__ float empty_or_nan(const attend_args &a, const rda_job &job, int64_t qi, float l) {
    if (l != 0.f) return l;
    for (int c = 0; c < job.nk; c++)
        if (job.k_count[c] > 0 && (!a.causal || qi + (job.q_first - job.k_first[c]) / job.stride >= 0)) return NAN;
    return l;
}

/* The running state of a row between the work items of a call (patterns,
 * ring steps): its unnormalised fp32 accumulator in a.acc [B, n, H, D], or,
 * where a.acc is NULL (the default; RDA_CUDA_OUT_STATE=0 keeps a.acc), the output row itself,
 * normalised and times the output factor (o / l * factor, in the output's
 * type), so that no O(N) fp32 matrix is kept; m and l stay fp32 either way.
 * Read only where l > 0 or NaN. Two elements d, d + 1 (a contiguous head
 * dim: the tensor-core kernels) or one (any strides). */
template <typename T> __device__ __forceinline__ T *out_row(const attend_args &a, const item_pos &ip, int64_t row) {
    return static_cast<T *>(a.o) + ip.b * a.os[0] + row * a.os[1] + ip.h * a.os[2];
}
template <typename T>
__device__ __forceinline__ float2 state_load2(const attend_args &a, const item_pos &ip, int64_t row, int64_t ai, int d,
                                              float l) {
    if (a.acc) return *reinterpret_cast<const float2 *>(a.acc + ai * a.D + d);
    const float s = l / a.factor;
    const T *o = out_row<T>(a, ip, row) + d;
    return make_float2(to_f32<T>(o[0]) * s, to_f32<T>(o[1]) * s);
}
template <typename T>
__device__ __forceinline__ void state_store2(const attend_args &a, const item_pos &ip, int64_t row, int64_t ai, int d,
                                             float x, float y, float l) {
    if (a.acc) {
        *reinterpret_cast<float2 *>(a.acc + ai * a.D + d) = make_float2(x, y);
        return;
    }
    const float s = l != 0.f ? a.factor / l : 0.f;
    *reinterpret_cast<uint32_t *>(out_row<T>(a, ip, row) + d) = pack2<T>(x * s, y * s);
}
template <typename T>
__device__ __forceinline__ float state_load1(const attend_args &a, const item_pos &ip, int64_t row, int64_t ai,
                                             int64_t d, float l) {
    if (a.acc) return a.acc[ai * a.D + d];
    return to_f32<T>(out_row<T>(a, ip, row)[d * a.os[3]]) * (l / a.factor);
}
template <typename T>
__device__ __forceinline__ void state_store1(const attend_args &a, const item_pos &ip, int64_t row, int64_t ai,
                                             int64_t d, float x, float l) {
    if (a.acc) {
        a.acc[ai * a.D + d] = x;
        return;
    }
    out_row<T>(a, ip, row)[d * a.os[3]] = from_f32<T>(x * (l != 0.f ? a.factor / l : 0.f));
}

/* The end of a work item for the thread's two rows rl[i] of the tile, held
 * as m16n8 accumulator fragments o[nt * 4 + 2 * i + e] (nt < D / 8): rows
 * then complete are normalised into O (and LSE), the others go back to the
 * running state. */
template <typename T, int D>
__device__ __forceinline__ void store_rows(const attend_args &a, const item_pos &ip, int64_t qi0, int bq,
                                           const int rl[2], const float *o, const float mrow[2],
                                           const float lrow_in[2], int lane) {
    const rda_job &job = *ip.job;
    float lrow[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (rl[i] >= bq) continue;
        lrow[i] = empty_or_nan(a, job, qi0 + rl[i], lrow_in[i]);
        int64_t row = job.q_local + (qi0 + rl[i]) * job.stride, ai = (ip.b * a.n + row) * a.H + ip.h;
        if (ip.cl->final) {
            /* l == 0: no allowed key; a NaN l (non-finite inputs) makes the row NaN */
            float inv = lrow[i] != 0.f ? a.factor / lrow[i] : 0.f;
            T *orow = static_cast<T *>(a.o) + ip.b * a.os[0] + row * a.os[1] + ip.h * a.os[2];
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++)
                *reinterpret_cast<uint32_t *>(orow + nt * 8 + (lane & 3) * 2) =
                    pack2<T>(o[nt * 4 + 2 * i] * inv, o[nt * 4 + 2 * i + 1] * inv);
            if ((lane & 3) == 0) {
                if (a.lse)
                    a.lse[ip.b * a.ls[0] + ip.h * a.ls[1] + row * a.ls[2]] =
                        lrow[i] != 0.f ? (mrow[i] + log2f(lrow[i])) * 0.6931471805599453f : -INFINITY;
                a.l[ai] = a.done_l;
            }
        } else {
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++)
                state_store2<T>(a, ip, row, ai, nt * 8 + (lane & 3) * 2, o[nt * 4 + 2 * i], o[nt * 4 + 2 * i + 1],
                                lrow[i]);
            if ((lane & 3) == 0) {
                a.m[ai] = mrow[i];
                a.l[ai] = lrow[i];
            }
        }
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(128) attend_mma(const __grid_constant__ attend_args a) {
    constexpr int LDS = mma_lds<D>(), CH = D / 8; /* 16-byte chunks per row */
    extern __shared__ __align__(16) unsigned char smem[];
    T *Qs = reinterpret_cast<T *>(smem), *Kbuf = Qs + 64 * LDS, *Vbuf = Kbuf + 2 * 64 * LDS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    if (job.nk == 0) return zero_rows<T>(a, ip);
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
        const int64_t row = job.q_local + (qi0 + rl[i]) * r, ai = (ip.b * a.n + row) * a.H + ip.h;
        float L = a.l[ai];
        if (!(L <= 0.f)) { /* earlier steps reached this row (NaN too: it must reach O) */
            lrow[i] = L;
            mrow[i] = a.m[ai];
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++) {
                float2 x = state_load2<T>(a, ip, row, ai, nt * 8 + (lane & 3) * 2, L);
                o[nt][2 * i] = x.x;
                o[nt][2 * i + 1] = x.y;
            }
        }
    }

    const T *kb = static_cast<const T *>(a.k) + ip.b * a.ks[0] + ip.kh * a.ks[2];
    const T *vb = static_cast<const T *>(a.v) + ip.b * a.vs[0] + ip.kh * a.vs[2];
    /* the key tiles in one sequence, so that the next tile streams in
     * (cp.async, double buffered) while this one is used */
    const item_keys ks = keys_of<64>(a, job, qi0, bq);
    auto load_tile = [&](int64_t t, int buf) { /* (K and V rows share their addressing) */
        const key_tile kt = tile_of<64>(ks, t);
        T *Kd = Kbuf + buf * 64 * LDS, *Vd = Vbuf + buf * 64 * LDS;
        for (int i = tid; i < 64 * CH; i += 128) {
            int row = i / CH, ch = i % CH;
            int64_t kr = kt.kl + (kt.k0 + (row < kt.bk ? row : 0)) * r;
            cp_async16(Kd + row * LDS + ch * 8, kb + kr * a.ks[1] + ch * 8, row < kt.bk);
            cp_async16(Vd + row * LDS + ch * 8, vb + kr * a.vs[1] + ch * 8, row < kt.bk);
        }
        cp_async_commit();
    };
    if (ks.ntiles > 0) load_tile(0, 0);
    for (int64_t t = 0; t < ks.ntiles; t++) {
        const key_tile kt = tile_of<64>(ks, t);
        const int64_t k0 = kt.k0, dq = kt.dq;
        const int bk = kt.bk;
        next_tile_ready(t, ks.ntiles, load_tile);
        const T *Ks = Kbuf + (t & 1) * 64 * LDS, *Vs = Vbuf + (t & 1) * 64 * LDS;
        {
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
        __syncthreads(); /* every warp is done with buffer t & 1 before it is refilled */
    }
    store_rows<T, D>(a, ip, qi0, bq, rl, &o[0][0], mrow, lrow, lane);
}

/* ------------------------------------------------------------------ CUDA cores */

#define GENERIC_MAX_D 256

template <typename T>
__global__ void __launch_bounds__(128) attend_generic(const __grid_constant__ attend_args a) {
    constexpr int E = GENERIC_MAX_D / 32; /* elements per lane */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const item_pos ip = decode_item(a, blockIdx.x);
    const rda_job &job = *ip.job;
    if (job.nk == 0) return zero_rows<T>(a, ip);
    const int64_t qi0 = ip.first, r = job.stride, D = a.D;
    const int bq = (int)min(a.bq, job.q_count - qi0);
    const T *qb = static_cast<const T *>(a.q) + ip.b * a.qs[0] + ip.h * a.qs[2];
    const T *kb = static_cast<const T *>(a.k) + ip.b * a.ks[0] + ip.kh * a.ks[2];
    const T *vb = static_cast<const T *>(a.v) + ip.b * a.vs[0] + ip.kh * a.vs[2];
    for (int rq = warp; rq < bq; rq += 4) {
        int64_t row = job.q_local + (qi0 + rq) * r, ai = (ip.b * a.n + row) * a.H + ip.h;
        float qv[E], acc[E], m = -INFINITY, l = 0.f;
#pragma unroll
        for (int e = 0; e < E; e++) {
            int64_t d = lane + 32 * e;
            qv[e] = d < D ? to_f32<T>(qb[row * a.qs[1] + d * a.qs[3]]) * a.qscale : 0.f;
            acc[e] = 0.f;
        }
        if (!(a.l[ai] <= 0.f)) {
            m = a.m[ai];
            l = a.l[ai];
#pragma unroll
            for (int e = 0; e < E; e++)
                if (lane + 32 * e < D) acc[e] = state_load1<T>(a, ip, row, ai, lane + 32 * e, l);
        }
        for (int c = 0; c < job.nk; c++) {
            int64_t kcount = job.k_count[c], dq = (job.q_first - job.k_first[c]) / r;
            if (a.causal) kcount = min(kcount, qi0 + rq + dq + 1);
            for (int64_t j = 0; j < kcount; j++) {
                int64_t kr = job.k_local[c] + j * r;
                float dot = 0.f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    int64_t d = lane + 32 * e;
                    if (d < D) dot += qv[e] * to_f32<T>(kb[kr * a.ks[1] + d * a.ks[3]]);
                }
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
                float m_new = fmaxf(m, dot), alpha = ex2(m - m_new), p = ex2(dot - m_new);
                l = l * alpha + p;
                m = m_new;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    int64_t d = lane + 32 * e;
                    if (d < D) acc[e] = acc[e] * alpha + p * to_f32<T>(vb[kr * a.vs[1] + d * a.vs[3]]);
                }
            }
        }
        l = empty_or_nan(a, job, qi0 + rq, l);
        if (ip.cl->final) {
            float inv = l != 0.f ? a.factor / l : 0.f;
            T *orow = static_cast<T *>(a.o) + ip.b * a.os[0] + row * a.os[1] + ip.h * a.os[2];
#pragma unroll
            for (int e = 0; e < E; e++)
                if (lane + 32 * e < D) orow[(lane + 32 * e) * a.os[3]] = from_f32<T>(acc[e] * inv);
            if (lane == 0) {
                if (a.lse)
                    a.lse[ip.b * a.ls[0] + ip.h * a.ls[1] + row * a.ls[2]] =
                        l != 0.f ? (m + log2f(l)) * 0.6931471805599453f : -INFINITY;
                a.l[ai] = a.done_l;
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; e++)
                if (lane + 32 * e < D) state_store1<T>(a, ip, row, ai, lane + 32 * e, acc[e], l);
            if (lane == 0) {
                a.m[ai] = m;
                a.l[ai] = l;
            }
        }
    }
}

/* ------------------------------------------------------------------ state, finish, copies */

static __global__ void fill_state(float *m, float *l, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        m[i] = -INFINITY;
        l[i] = 0.f;
    }
}

/* Rows not yet written: O = acc / l * factor (0 where l == 0), LSE; with
 * the state in the output (a.acc NULL) O is already that where l != 0. One
 * warp a row. Leaves l = 0 on every row (the next call's initial state). */
template <typename T>
__global__ void finalize_rows(const attend_args a) {
    int64_t idx = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (idx >= a.B * a.n * a.H) return;
    float l = a.l[idx];
    __syncwarp();
    if (!(l < 0.f)) { /* not done yet (NaN included) */
        int64_t b = idx / (a.n * a.H), row = (idx / a.H) % a.n, h = idx % a.H;
        float inv = l != 0.f ? a.factor / l : 0.f;
        T *orow = static_cast<T *>(a.o) + b * a.os[0] + row * a.os[1] + h * a.os[2];
        if (a.acc || l == 0.f)
            for (int64_t d = lane; d < a.D; d += 32)
                orow[d * a.os[3]] = from_f32<T>(l != 0.f ? a.acc[idx * a.D + d] * inv : 0.f);
        if (lane == 0 && a.lse)
            a.lse[b * a.ls[0] + h * a.ls[1] + row * a.ls[2]] =
                l != 0.f ? (a.m[idx] + log2f(l)) * 0.6931471805599453f : -INFINITY;
    }
    if (lane == 0) a.l[idx] = 0.f;
}

/* dst = rows [0, n) of x (strided, elements of ES bytes), contiguous [B, n, H, D]. */
template <typename U>
__global__ void pack_rows_kernel(U *dst, const U *x, int64_t B, int64_t n, int64_t H, int64_t D, int64_t s0,
                                 int64_t s1, int64_t s2, int64_t s3) {
    int64_t total = B * n * H * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = i % D, h = (i / D) % H, r = (i / (D * H)) % n, b = i / (D * H * n);
        dst[i] = x[b * s0 + r * s1 + h * s2 + d * s3];
    }
}
