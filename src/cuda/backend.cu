/* The CUDA backend: device workspace, per-step job tables, kernel dispatch.
 * Work is ordered on the context's stream; nothing here synchronises the
 * host with the device except `sync` and `copy` (the ring, around a
 * transfer), workspace growth and a new entry of the table cache, so that a
 * one-rank call with a shape run before can be captured in a CUDA graph. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attend_bwd.cuh"
#include "attend_bwd_mma.cuh"
#include "attend_bwd_wgmma.cuh"
#include "attend_wgmma.cuh"

extern "C" {
#include "../backend.h"
}

/* How the fused backward adds dQ (attend_bwd_wgmma.cuh's bwd_dq_form):
 * 16-byte atomics, 10% faster than 8-byte ones at D = 64 and 1% at D = 128
 * (backward v6 in docs/PERFORMANCE.md) */
static constexpr int BWD_DQ = BWD_DQ_RED4;

/* Job tables too large to travel inside a launch, kept on the device for
 * the next call with the same tables (the same shape): immutable once
 * made, with a pinned host copy (the upload's source, and what a lookup
 * compares against). An entry a captured graph refers to is never evicted. */
typedef struct {
    uint64_t hash;
    size_t bytes;
    void *host, *dev;
    uint64_t used; /* the context's call counter at its last use */
    bool kept;     /* referred to by a captured graph: freed only with the context */
} table_entry;

#define TABLE_CACHE_ENTRIES 256
#define TABLE_CACHE_BYTES ((size_t)64 << 20) /* of entries that may be evicted */

typedef struct {
    int device;
    cudaStream_t stream;
    cudaStream_t owned;   /* the stream the context created (0: none) */
    cudaEvent_t switched; /* orders a new stream after the old one (rda_context_set_stream) */
    cudaEvent_t ready;    /* the ring's marks: a transfer waits for it instead of the host */
    bool capturing;       /* the call in progress is being captured into a graph */
    bool captured;        /* a graph may refer to the workspace: keep old blocks when it grows */
    void **retired;       /* those old blocks, freed with the context */
    int nretired;
    table_entry tables[TABLE_CACHE_ENTRIES];
    int ntables;
    uint64_t calls;
    bool wgmma;    /* a Hopper device and this binary carries the sm_90a kernels */
    void *dws;     /* device workspace: state, key/value blocks, tables */
    size_t dws_cap;
    /* how many entries of l (at the start of dws) are known to be zero: the
     * last call's rows (its finishing pass, or its one-pass kernel, left them
     * zeroed); a call with more rows must clear them first */
    int64_t clean_l;
    bool one_pass;    /* this call: every row written by one final work item, no finishing pass */
    int sms;          /* multiprocessors, and CTAs of each Hopper D = 64 kernel one holds */
    int occ_wg64, occ_wg64s, occ_wg64p2, occ_wg64p3;
    int wg64_rows;    /* this call's D = 64 Hopper kernels: 64 (WG64, WG64S), 128 (WG64P2) or 192 (WG64P3) */
    int force_rows;   /* RDA_CUDA_TILE_ROWS: that choice made for every call (0: by the key spans, -1: a bad value) */
    bool bwd_fused;   /* the Hopper backward by bwd_wgmma (the default; RDA_CUDA_BWD_FUSED=0: the two-kernel form) */
    int occ_bwd64;    /* CTAs of bwd_wgmma1 one multiprocessor holds */
    int force_qparts; /* RDA_CUDA_BWD_QPARTS: CTAs per key tile of the D = 64 fused backward, for every phase (0: chosen) */
    int force_ws;     /* RDA_CUDA_BWD_WS: bwd_wgmma_ws for every D = 64 fused phase (1), never (0), chosen (-1) */
    bool out_state;   /* rows' running state in the output, no fp32 accumulator (kernels.cuh); RDA_CUDA_OUT_STATE=0: the accumulator */
    /* the call in progress */
    float *acc, *m, *l;
    int64_t n;     /* rows of the rank */
    rda_phase phase;          /* host tables (built by the shared planner) */
    const rda_tensor *q, *k, *v;
    float qscale;
    float *dq, *delta; /* the backward in progress: the rank's fp32 dQ and Delta */
    rda_tile *ktiles;  /* the backward's key tiles (rda_plan_key_tiles), host */
    int64_t ktiles_cap;
    rda_class *kclasses;
    int64_t kclasses_cap;
    int64_t *kheads; /* the deterministic backward's heads of one residue */
    int64_t kheads_cap;
} cuda_ctx;

#define CUDA_TRY(call)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            rda_set_msg(ctx->msg, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
                        __LINE__);                                                            \
            return RDA_STATUS_DEVICE_ERROR;                                                   \
        }                                                                                     \
    } while (0)

/* After a launch: the launch error, if any. */
#define CUDA_LAUNCHED() CUDA_TRY(cudaGetLastError())

/* rows per work item of a zero-output job (rows no pattern selects) */
#define RDA_ZERO_BQ 1024
#define RDA_ALIGN16(x) (((x) + 15) & ~(size_t)15)

static cuda_ctx *cctx(rda_context *ctx) { return static_cast<cuda_ctx *>(ctx->cuda); }

extern "C" int rda_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no device" error */
        return 0;
    }
    return n;
}

/* The Hopper kernels, per head dim: <T, D, BK, NW, ST, MINB> (the winners
 * of dev/cuda/attend.cu, docs/PERFORMANCE.md). */
#define WG64(T) attend_wgmma<T, 64, 128, 1, 3, 2, 0>
#define WG64_SMEM wg_smem_bytes<64, 128, 1, 3, 0>()
#define WG64_NW 1
/* for short key spans (segments of up to WG64S_MAX_KEYS keys): smaller key
 * tiles, three CTAs per SM (same 64 queries per work item), row sums on the
 * tensor cores (variant 33); 7% faster per item at 1024-key segments, taken
 * where its waves are shorter (below) */
#define WG64S(T) attend_wgmma<T, 64, 64, 1, 4, 3, 8>
#define WG64S_SMEM wg_smem_bytes<64, 64, 1, 4, 8>()
#define WG64S_MAX_KEYS 2048
/* for long key spans: a producer warpgroup copying K and V, two or three
 * consumer warpgroups taking turns on the tensor cores, 128 or 192 queries
 * per work item, one CTA per SM (variants 40 and 59: the three-warpgroup
 * one with 96-key tiles, lazy rescaling and the row sums on the tensor
 * cores); the one whose waves take less time runs (wg64_long_rows) */
#define WG64P2(T) attend_wgmma<T, 64, 128, 2, 5, 1, 49>
#define WG64P2_SMEM wg_smem_bytes<64, 128, 2, 5, 49>()
#define WG64P2_THREADS wg_threads<2, 49>()
#define WG64P3(T) attend_wgmma<T, 64, 96, 3, 5, 1, 59>
#define WG64P3_SMEM wg_smem_bytes<64, 96, 3, 5, 59>()
#define WG64P3_THREADS wg_threads<3, 59>()
/* throughput of each on long rows (TFLOP/s, H200, dense N = 32768,
 * docs/PERFORMANCE.md): only their ratio matters */
#define WG64P2_RATE 343.9
#define WG64P3_RATE 396.3
/* D = 128: a producer warpgroup and two consumer warpgroups taking turns,
 * 96-key tiles in three stages (playground variant 62: 5-7% faster than
 * the two warpgroups copying their own 128-key tiles) */
#define WG128(T) attend_wgmma<T, 128, 96, 2, 3, 1, 49>
#define WG128_SMEM wg_smem_bytes<128, 96, 2, 3, 49>()
#define WG128_THREADS wg_threads<2, 49>()
#define WG128_NW 2

/* Lets a Hopper kernel (its fp16 and bf16 forms) use smem bytes of dynamic
 * shared memory; *occ: CTAs of it (of `threads` threads) an SM holds. */
typedef void (*wg_kernel)(const attend_args);
static cudaError_t wg_prepare(wg_kernel kh, wg_kernel kb, int threads, size_t smem, int *occ) {
    cudaError_t e = cudaFuncSetAttribute(kh, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kb, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(occ, kh, threads, smem);
    return e;
}

/* The dynamic shared memory of a backward tensor-core kernel K<T, D>, for
 * fp16 and bf16 at D = 64 and 128 (BYTES<D>() each). */
#define RDA_BWD_SMEM(K, BYTES)                                                                              \
    do {                                                                                                    \
        CUDA_TRY(cudaFuncSetAttribute(K<__half, 64>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)BYTES<64>())); \
        CUDA_TRY(cudaFuncSetAttribute(K<__nv_bfloat16, 64>, cudaFuncAttributeMaxDynamicSharedMemorySize,            \
                                      (int)BYTES<64>()));                                                          \
        CUDA_TRY(cudaFuncSetAttribute(K<__half, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,                  \
                                      (int)BYTES<128>()));                                                         \
        CUDA_TRY(cudaFuncSetAttribute(K<__nv_bfloat16, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,           \
                                      (int)BYTES<128>()));                                                         \
    } while (0)

/* Sets *ok when this binary's code for the device has the warpgroup MMA. */
__global__ void wgmma_probe(int *ok) {
#ifdef RDA_WGMMA
    *ok = 1;
#endif
}

static rda_status detect_wgmma(rda_context *ctx, cuda_ctx *c) {
    int major = 0, *d_ok = NULL, ok = 0;
    CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device));
    c->wgmma = false;
    if (major != 9) return RDA_STATUS_SUCCESS;
    CUDA_TRY(cudaMalloc(&d_ok, sizeof(int)));
    cudaError_t e = cudaMemsetAsync(d_ok, 0, sizeof(int), c->stream);
    if (e == cudaSuccess) {
        wgmma_probe<<<1, 1, 0, c->stream>>>(d_ok);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&ok, d_ok, sizeof(int), cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    cudaFree(d_ok);
    CUDA_TRY(e);
    c->wgmma = ok == 1;
    CUDA_TRY(cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, c->device));
    if (c->wgmma) {
        int occ128 = 0;
        CUDA_TRY(wg_prepare(WG64(__half), WG64(__nv_bfloat16), 128 * WG64_NW, WG64_SMEM, &c->occ_wg64));
        CUDA_TRY(wg_prepare(WG64S(__half), WG64S(__nv_bfloat16), 128, WG64S_SMEM, &c->occ_wg64s));
        CUDA_TRY(wg_prepare(WG64P2(__half), WG64P2(__nv_bfloat16), WG64P2_THREADS, WG64P2_SMEM, &c->occ_wg64p2));
        CUDA_TRY(wg_prepare(WG64P3(__half), WG64P3(__nv_bfloat16), WG64P3_THREADS, WG64P3_SMEM, &c->occ_wg64p3));
        CUDA_TRY(wg_prepare(WG128(__half), WG128(__nv_bfloat16), WG128_THREADS, WG128_SMEM, &occ128));
        /* the fused backward: bwd_wgmma_ws or bwd_wgmma1 at D = 64, bwd_wgmma (two warpgroups) at D = 128 */
        const int wg64 = (int)bwd_wg1_smem_bytes<64, BWD_DQ>(), wg128 = (int)bwd_wg_smem_bytes<128, 2, BWD_DQ>();
        const int ws64 = (int)bwd_ws_smem_bytes<64>();
        const cudaFuncAttribute smem_max = cudaFuncAttributeMaxDynamicSharedMemorySize;
        CUDA_TRY(cudaFuncSetAttribute(bwd_wgmma_ws<__half, 64>, smem_max, ws64));
        CUDA_TRY(cudaFuncSetAttribute(bwd_wgmma_ws<__nv_bfloat16, 64>, smem_max, ws64));
        CUDA_TRY(cudaFuncSetAttribute(bwd_wgmma1<__half, 64, BWD_DQ>, smem_max, wg64));
        CUDA_TRY(cudaFuncSetAttribute(bwd_wgmma1<__nv_bfloat16, 64, BWD_DQ>, smem_max, wg64));
        CUDA_TRY(cudaFuncSetAttribute(bwd_wgmma<__half, 128, 2, BWD_DQ>, smem_max, wg128));
        CUDA_TRY(cudaFuncSetAttribute(bwd_wgmma<__nv_bfloat16, 128, 2, BWD_DQ>, smem_max, wg128));
        CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&c->occ_bwd64, bwd_wgmma1<__half, 64, BWD_DQ>, 128, wg64));
    }
    return RDA_STATUS_SUCCESS;
}

extern "C" int rda_cuda_get_device(void) {
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return d;
}

extern "C" void rda_cuda_set_device(int device) {
    if (device >= 0) cudaSetDevice(device);
}

static rda_status context_init(rda_context *ctx, int32_t device, void *stream, rda_stream_mode mode);

extern "C" rda_status rda_cuda_context_init(rda_context *ctx, int32_t device, void *stream, rda_stream_mode mode) {
    int prev = rda_cuda_get_device();
    rda_status st = context_init(ctx, device, stream, mode);
    rda_cuda_set_device(prev);
    return st;
}

static rda_status context_init(rda_context *ctx, int32_t device, void *stream, rda_stream_mode mode) {
    int n = rda_cuda_device_count();
    if (device < 0 || device >= n) {
        rda_set_msg(ctx->msg, "CUDA device %d does not exist (%d found)", device, n);
        return RDA_STATUS_UNSUPPORTED;
    }
    cuda_ctx *c = static_cast<cuda_ctx *>(calloc(1, sizeof(cuda_ctx)));
    if (!c) return RDA_STATUS_OUT_OF_MEMORY;
    ctx->cuda = c;
    c->device = device;
    CUDA_TRY(cudaSetDevice(device));
    if (mode == RDA_STREAM_CALLER || (mode == RDA_STREAM_AUTO && stream)) {
        c->stream = static_cast<cudaStream_t>(stream);
    } else {
        CUDA_TRY(cudaStreamCreateWithFlags(&c->owned, cudaStreamNonBlocking));
        c->stream = c->owned;
    }
    CUDA_TRY(cudaEventCreateWithFlags(&c->switched, cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
    CUDA_TRY(cudaFuncSetAttribute(attend_mma<__half, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)mma_smem_bytes<128>()));
    {
        /* the most any head dim takes: the largest one of each tile size */
        const int bwd_max = (int)max(bwd_smem_bytes(GENERIC_MAX_D, bwd_tile_rows(GENERIC_MAX_D)),
                                     bwd_smem_bytes(128, bwd_tile_rows(128)));
        CUDA_TRY(cudaFuncSetAttribute(attend_bwd<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_max));
        CUDA_TRY(cudaFuncSetAttribute(attend_bwd<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_max));
        CUDA_TRY(cudaFuncSetAttribute(attend_bwd<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_max));
        RDA_BWD_SMEM(bwd_dq_mma, bwd_mma_smem_bytes);
        RDA_BWD_SMEM(bwd_dkv_mma, bwd_mma_smem_bytes);
    }
    CUDA_TRY(cudaFuncSetAttribute(attend_mma<__nv_bfloat16, 128>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mma_smem_bytes<128>()));
    /* the D = 64 Hopper kernel family, for tests and measurements */
    if (const char *f = getenv("RDA_CUDA_TILE_ROWS")) {
        c->force_rows = atoi(f);
        if (c->force_rows != 64 && c->force_rows != 128 && c->force_rows != 192) c->force_rows = -1; /* refused by calls */
    }
    /* the fused Hopper backward (attend_bwd_wgmma.cuh) unless the
     * two-kernel form is asked for, for tests and measurements */
    c->bwd_fused = true;
    if (const char *f = getenv("RDA_CUDA_BWD_FUSED")) c->bwd_fused = atoi(f) != 0;
    /* the D = 64 fused backward's CTAs per key tile, the same for every phase
     * (1 .. 16), and its kernel (bwd_wgmma_ws always or never), for tests */
    c->force_qparts = 0;
    if (const char *f = getenv("RDA_CUDA_BWD_QPARTS")) c->force_qparts = max(1, min(16, atoi(f)));
    c->force_ws = -1;
    if (const char *f = getenv("RDA_CUDA_BWD_WS")) c->force_ws = atoi(f) != 0;
    /* the forward's row state kept in the output (no O(N) fp32 accumulator
     * between patterns and ring steps) unless the accumulator is asked for
     * (RDA_CUDA_OUT_STATE=0), for tests and measurements */
    c->out_state = true;
    if (const char *f = getenv("RDA_CUDA_OUT_STATE")) c->out_state = atoi(f) != 0;
    return detect_wgmma(ctx, c);
}

extern "C" void rda_cuda_context_destroy(rda_context *ctx) {
    cuda_ctx *c = cctx(ctx);
    if (!c) return;
    int prev = rda_cuda_get_device();
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    cudaFree(c->dws);
    free(c->ktiles);
    free(c->kclasses);
    free(c->kheads);
    for (int i = 0; i < c->nretired; i++) cudaFree(c->retired[i]);
    free(c->retired);
    for (int i = 0; i < c->ntables; i++) {
        cudaFree(c->tables[i].dev);
        cudaFreeHost(c->tables[i].host);
    }
    if (c->switched) cudaEventDestroy(c->switched);
    if (c->ready) cudaEventDestroy(c->ready);
    if (c->owned) cudaStreamDestroy(c->owned);
    free(c);
    ctx->cuda = NULL;
    rda_cuda_set_device(prev);
}

extern "C" rda_status rda_cuda_synchronize(rda_context *ctx) {
    CUDA_TRY(cudaStreamSynchronize(cctx(ctx)->stream));
    return RDA_STATUS_SUCCESS;
}

extern "C" rda_status rda_cuda_set_stream(rda_context *ctx, void *stream) {
    cuda_ctx *c = cctx(ctx);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (s == c->stream) return RDA_STATUS_SUCCESS;
    int prev = rda_cuda_get_device();
    cudaError_t e = cudaSetDevice(c->device);
    /* the new stream starts after what the old one holds (the workspace is
     * shared); not while either is being captured, where an event across
     * the capture's edge would invalidate it: there the capturing
     * application orders its capture stream (as torch.cuda.graph does) */
    cudaStreamCaptureStatus cs_old = cudaStreamCaptureStatusNone, cs_new = cudaStreamCaptureStatusNone;
    if (e == cudaSuccess) e = cudaStreamIsCapturing(c->stream, &cs_old);
    if (e == cudaSuccess) e = cudaStreamIsCapturing(s, &cs_new);
    const bool order = cs_old == cudaStreamCaptureStatusNone && cs_new == cudaStreamCaptureStatusNone;
    if (e == cudaSuccess && order) e = cudaEventRecord(c->switched, c->stream);
    if (e == cudaSuccess && order) e = cudaStreamWaitEvent(s, c->switched, 0);
    rda_cuda_set_device(prev);
    if (e != cudaSuccess) {
        rda_set_msg(ctx->msg, "switching streams: %s", cudaGetErrorString(e));
        return RDA_STATUS_DEVICE_ERROR;
    }
    c->stream = s;
    ctx->msg[0] = '\0';
    return RDA_STATUS_SUCCESS;
}

extern "C" void *rda_cuda_get_stream(const rda_context *ctx) {
    return static_cast<void *>(static_cast<const cuda_ctx *>(ctx->cuda)->stream);
}

/* The capture status of the context's stream for the call in progress. */
static rda_status check_capture(rda_context *ctx, cuda_ctx *c) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CUDA_TRY(cudaStreamIsCapturing(c->stream, &cs));
    if (cs == cudaStreamCaptureStatusInvalidated) {
        rda_set_msg(ctx->msg, "the stream's graph capture has been invalidated by an earlier operation");
        return RDA_STATUS_DEVICE_ERROR;
    }
    c->capturing = cs == cudaStreamCaptureStatusActive;
    if (c->capturing) c->captured = true;
    return RDA_STATUS_SUCCESS;
}

#define NOT_IN_CAPTURE(what)                                                                             \
    do {                                                                                                 \
        if (c->capturing) {                                                                              \
            rda_set_msg(ctx->msg,                                                                        \
                        "%s during graph capture: run the call once with this shape before capturing it", \
                        what);                                                                           \
            return RDA_STATUS_UNSUPPORTED;                                                               \
        }                                                                                                \
    } while (0)

static bool on_device(const void *p) {
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged;
}

extern "C" rda_status rda_cuda_supports(rda_context *ctx, const rda_problem *p,
                                        const rda_tensor *const t[5]) {
    if (p->dtype == RDA_DTYPE_F64) {
        rda_set_msg(ctx->msg, "fp64 tensors are only accepted by the reference backend");
        return RDA_STATUS_UNSUPPORTED;
    }
    if (p->D > GENERIC_MAX_D) {
        rda_set_msg(ctx->msg, "the CUDA backend supports head dims up to %d (got %lld); use the CPU backend",
                    GENERIC_MAX_D, (long long)p->D);
        return RDA_STATUS_UNSUPPORTED;
    }
    static const char *names[5] = {"q", "k", "v", "o", "lse"};
    for (int i = 0; i < 5; i++)
        if (t[i] && !on_device(t[i]->data)) {
            rda_set_msg(ctx->msg, "tensor %s is not in device memory (the CUDA backend takes device pointers)",
                        names[i]);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
    return RDA_STATUS_SUCCESS;
}

/* Grows the device workspace to at least `bytes` (synchronises when it
 * grows). A block a captured graph may use is kept, not freed. */
static rda_status reserve_device(rda_context *ctx, size_t bytes) {
    cuda_ctx *c = cctx(ctx);
    if (bytes <= c->dws_cap) return RDA_STATUS_SUCCESS;
    NOT_IN_CAPTURE("growing the device workspace");
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    if (c->captured && c->dws) {
        void **r = static_cast<void **>(realloc(c->retired, sizeof(void *) * (size_t)(c->nretired + 1)));
        if (!r) return RDA_STATUS_OUT_OF_MEMORY;
        c->retired = r;
        c->retired[c->nretired++] = c->dws;
        c->captured = false; /* until a capture uses the new block */
    } else {
        CUDA_TRY(cudaFree(c->dws));
    }
    c->dws = NULL;
    c->dws_cap = 0;
    CUDA_TRY(cudaMalloc(&c->dws, bytes));
    c->dws_cap = bytes;
    c->clean_l = 0;
    return RDA_STATUS_SUCCESS;
}

/* The tables of a phase as one block: jobs, tiles, heads and classes, each
 * from a 16-byte boundary (only the entries in use: the host arena's spare
 * capacity holds whatever an earlier phase left there). */
typedef struct {
    const void *part[4];
    size_t bytes[4], off[4], total;
} table_parts;

static table_parts phase_parts(const rda_phase *ph) {
    table_parts t;
    t.part[0] = ph->jobs, t.bytes[0] = sizeof(rda_job) * (size_t)ph->njobs;
    t.part[1] = ph->tiles, t.bytes[1] = sizeof(rda_tile) * (size_t)ph->ntiles;
    t.part[2] = ph->heads, t.bytes[2] = sizeof(int64_t) * (size_t)ph->nheads;
    t.part[3] = ph->classes, t.bytes[3] = sizeof(rda_class) * (size_t)ph->nclasses;
    t.total = 0;
    for (int i = 0; i < 4; i++) {
        t.off[i] = t.total;
        t.total += RDA_ALIGN16(t.bytes[i]);
    }
    return t;
}

static uint64_t table_hash(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    h ^= n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 1099511628211ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Frees the least recently used entries that no graph refers to until
 * `room` more bytes fit under TABLE_CACHE_BYTES and an entry is free. */
static rda_status table_evict(rda_context *ctx, cuda_ctx *c, size_t room) {
    for (;;) {
        size_t held = 0;
        int lru = -1;
        for (int i = 0; i < c->ntables; i++) {
            if (c->tables[i].kept) continue;
            held += c->tables[i].bytes;
            if (lru < 0 || c->tables[i].used < c->tables[lru].used) lru = i;
        }
        if (lru < 0 || (held + room <= TABLE_CACHE_BYTES && c->ntables < TABLE_CACHE_ENTRIES)) break;
        CUDA_TRY(cudaStreamSynchronize(c->stream)); /* no kernel still reads it */
        CUDA_TRY(cudaFree(c->tables[lru].dev));
        CUDA_TRY(cudaFreeHost(c->tables[lru].host));
        c->tables[lru] = c->tables[--c->ntables];
    }
    if (c->ntables == TABLE_CACHE_ENTRIES) {
        rda_set_msg(ctx->msg, "%d job tables are held for captured graphs; no room for another", TABLE_CACHE_ENTRIES);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    return RDA_STATUS_SUCCESS;
}

/* The device copy of the tables tp: an entry of the cache with the same
 * bytes, or a new one (allocated, filled and uploaded behind the work
 * already on the stream; not while capturing). */
static rda_status table_upload(rda_context *ctx, const table_parts *tp, const void **dev) {
    cuda_ctx *c = cctx(ctx);
    const size_t bytes = tp->total;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 4; i++) h = table_hash(h, tp->part[i], tp->bytes[i]);
    c->calls++;
    for (int i = 0; i < c->ntables; i++) {
        table_entry *t = &c->tables[i];
        bool same = t->hash == h && t->bytes == bytes;
        for (int j = 0; j < 4 && same; j++)
            same = !memcmp(static_cast<const char *>(t->host) + tp->off[j], tp->part[j], tp->bytes[j]);
        if (same) {
            t->used = c->calls;
            t->kept |= c->capturing;
            *dev = t->dev;
            ctx->ws_used += bytes;
            return RDA_STATUS_SUCCESS;
        }
    }
    NOT_IN_CAPTURE("uploading new job tables");
    rda_status st = table_evict(ctx, c, bytes);
    if (st) return st;
    table_entry t = {h, bytes, NULL, NULL, c->calls, false};
    if (cudaMallocHost(&t.host, bytes) != cudaSuccess || cudaMalloc(&t.dev, bytes) != cudaSuccess) {
        cudaGetLastError();
        if (t.host) cudaFreeHost(t.host);
        rda_set_msg(ctx->msg, "out of memory for %zu bytes of job tables", bytes);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    memset(t.host, 0, bytes);
    for (int j = 0; j < 4; j++) memcpy(static_cast<char *>(t.host) + tp->off[j], tp->part[j], tp->bytes[j]);
    cudaError_t e = cudaMemcpyAsync(t.dev, t.host, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) {
        cudaFree(t.dev);
        cudaFreeHost(t.host);
        CUDA_TRY(e);
    }
    c->tables[c->ntables++] = t;
    *dev = t.dev;
    ctx->ws_used += bytes;
    return RDA_STATUS_SUCCESS;
}

/* Tensor-core kernels take 16-byte rows: fp16/bf16, D of 64 or 128. */
static bool mma_shape(const rda_problem *p) {
    return (p->dtype == RDA_DTYPE_F16 || p->dtype == RDA_DTYPE_BF16) && (p->D == 64 || p->D == 128);
}

/* The longest key span of one job: the key block (dense) or the keys of
 * a segment under its dilation. */
static int64_t key_span(const rda_problem *p, const rda_rows *qr) {
    if (p->mode == RDA_MODE_DENSE) return qr->total;
    int64_t m = 0;
    for (int32_t i = 0; i < p->G; i++) {
        const int64_t w = min(p->patterns[i].segment, p->N), r = p->patterns[i].dilation;
        m = max(m, (w + r - 1) / r);
    }
    return m;
}

/* Long key spans at D = 64: 128 or 192 queries per work item, whichever
 * takes less time in whole waves (B * H * rows / tile items, each taking
 * time in proportion to its queries over the kernel's rate). Measured on an
 * H200 (dense, N = 8192 .. 32768, docs/PERFORMANCE.md): right on every
 * non-causal row; under causal masking at N = 8192 and 16384 it picks 192
 * where 128 is 2% faster. */
static int64_t wg64_long_rows(const cuda_ctx *c, const rda_problem *p, const rda_rows *qr) {
    if (c->occ_wg64p2 < 1 || c->occ_wg64p3 < 1) return c->occ_wg64p2 >= 1 ? 128 : 192;
    const int64_t n2 = p->B * p->H * ((qr->total + 127) / 128), n3 = p->B * p->H * ((qr->total + 191) / 192);
    const int64_t s2 = (int64_t)c->sms * c->occ_wg64p2, s3 = (int64_t)c->sms * c->occ_wg64p3;
    const double t2 = (double)((n2 + s2 - 1) / s2) * 128.0 / WG64P2_RATE,
                 t3 = (double)((n3 + s3 - 1) / s3) * 192.0 / WG64P3_RATE;
    return t3 < t2 ? 192 : 128;
}

/* Queries per work item: the tile of the kernels that will run. Key spans
 * of exactly WG64S_MAX_KEYS without causal masking (LongNet-like segments
 * of 2048 selected rows) take 192 queries an item where the wave model
 * picks them (8% faster than 64 at N = 524288 on an H200; 128 there, and
 * 192 under causal masking, were slower than 64). */
static int64_t tile_rows(cuda_ctx *c, const rda_problem *p, const rda_rows *qr) {
    c->wg64_rows = 64;
    if (!c->wgmma || !mma_shape(p)) return RDA_CUDA_BQ;
    if (p->D != 64) return 64 * WG128_NW;
    const int64_t keys = key_span(p, qr);
    if (c->force_rows) c->wg64_rows = c->force_rows;
    else if (keys > WG64S_MAX_KEYS) c->wg64_rows = (int)wg64_long_rows(c, p, qr);
    else if (keys == WG64S_MAX_KEYS && !p->causal && wg64_long_rows(c, p, qr) == 192) c->wg64_rows = 192;
    return c->wg64_rows;
}

static rda_status cuda_begin(rda_context *ctx, const rda_problem *p, const rda_rows *qr, size_t block,
                             void *kv[2]) {
    cuda_ctx *c = cctx(ctx);
    rda_status st;
    CUDA_TRY(cudaSetDevice(c->device));
    if ((st = check_capture(ctx, c))) return st;
    int64_t rows_hd = p->B * qr->total * p->H;
    /* the step tables: built on the host, copied to identically carved device memory */
    if (c->force_rows < 0) {
        rda_set_msg(ctx->msg, "RDA_CUDA_TILE_ROWS must be 64, 128 or 192 (got \"%s\")", getenv("RDA_CUDA_TILE_ROWS"));
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    const int64_t bq = tile_rows(c, p, qr);
    size_t tables = rda_plan_phase_bytes(p, qr, bq);
    rda_carver hc;
    if ((st = rda_context_reserve(ctx, tables, &hc))) return st;
    if ((st = rda_plan_phase_init(&c->phase, &hc, p, qr, bq))) return st;
    /* one step (no key/value blocks travel) of dense or groups work: each
     * row belongs to one job of its head, or to none (then a zero-output
     * job), so the kernel writes every output and no finishing pass runs */
    c->one_pass = block == 0 && (p->mode == RDA_MODE_DENSE || p->mode == RDA_MODE_GROUPS);
    c->phase.zero_uncovered = c->one_pass;
    c->phase.zero_bq = RDA_ZERO_BQ;
    /* the fp32 accumulator, unless the rows' state is kept in the output */
    const bool acc = !c->out_state;
    size_t need = (acc ? RDA_ALIGN(sizeof(float) * (size_t)(rows_hd * p->D)) : 0) +
                  2 * RDA_ALIGN(sizeof(float) * (size_t)rows_hd) + (block ? 2 * RDA_ALIGN(block) : 0);
    if ((st = reserve_device(ctx, need))) return st;
    rda_carver dc = {static_cast<char *>(c->dws), need};
    /* l first, so that it stays where the last call left it zeroed */
    c->l = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)rows_hd));
    c->m = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)rows_hd));
    c->acc = acc ? static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)(rows_hd * p->D))) : NULL;
    if (block) {
        kv[0] = rda_carve(&dc, block);
        kv[1] = rda_carve(&dc, block);
    }
    c->n = qr->total;
    ctx->ws_used = tables + need; /* (plus the device tables the steps use) */
    /* l = 0 marks a row no step reached yet (m and acc are read only where
     * l > 0); the finishing pass leaves l zeroed for the next call. A graph
     * clears it itself: other calls may run between its replays. */
    if (c->clean_l < rows_hd || c->capturing) {
        fill_state<<<(unsigned)((rows_hd + 255) / 256 < 4096 ? (rows_hd + 255) / 256 : 4096), 256, 0, c->stream>>>(
            c->m, c->l, rows_hd);
        CUDA_LAUNCHED();
    }
    c->clean_l = 0; /* until this call's finishing pass is queued */
    return RDA_STATUS_SUCCESS;
}

static rda_status cuda_pack_kv(rda_context *ctx, const rda_tensor *k, const rda_tensor *v, int64_t n,
                               void *buf) {
    cuda_ctx *c = cctx(ctx);
    size_t es = rda_dtype_size(k->dtype);
    char *dst = static_cast<char *>(buf);
    const rda_tensor *ts[2] = {k, v};
    for (int t = 0; t < 2; t++) {
        const rda_tensor *x = ts[t];
        int64_t total = x->shape[0] * n * x->shape[2] * x->shape[3];
        unsigned grid = (unsigned)((total + 255) / 256 < 65535 ? (total + 255) / 256 : 65535);
        if (es == 4)
            pack_rows_kernel<uint32_t><<<grid, 256, 0, c->stream>>>(
                reinterpret_cast<uint32_t *>(dst), static_cast<const uint32_t *>(x->data), x->shape[0], n,
                x->shape[2], x->shape[3], x->strides[0], x->strides[1], x->strides[2], x->strides[3]);
        else
            pack_rows_kernel<uint16_t><<<grid, 256, 0, c->stream>>>(
                reinterpret_cast<uint16_t *>(dst), static_cast<const uint16_t *>(x->data), x->shape[0], n,
                x->shape[2], x->shape[3], x->strides[0], x->strides[1], x->strides[2], x->strides[3]);
        CUDA_LAUNCHED();
        dst += es * (size_t)total;
    }
    return RDA_STATUS_SUCCESS;
}

static void fill_args(attend_args *a, cuda_ctx *c, const rda_problem *p, const rda_tensor *q,
                      const rda_tensor *k, const rda_tensor *v, rda_tensor *o, rda_tensor *lse) {
    memset(a, 0, offsetof(attend_args, tab)); /* (the table bytes are written when used) */
    a->q = q->data;
    a->k = k->data;
    a->v = v->data;
    for (int i = 0; i < 4; i++) {
        a->qs[i] = q->strides[i];
        a->ks[i] = k->strides[i];
        a->vs[i] = v->strides[i];
        a->os[i] = o ? o->strides[i] : 0;
    }
    a->acc = c->acc;
    a->m = c->m;
    a->l = c->l;
    a->n = c->n;
    a->o = o ? o->data : NULL;
    a->lse = lse ? static_cast<float *>(lse->data) : NULL;
    for (int i = 0; i < 3; i++) a->ls[i] = lse ? lse->strides[i] : 0;
    a->B = p->B;
    a->H = p->H;
    a->Hkv = p->Hkv;
    a->D = p->D;
    a->causal = p->causal;
    a->qscale = c->qscale;
    a->factor = (float)rda_plan_output_factor(p);
    a->done_l = c->one_pass ? 0.f : -1.f;
}

/* The tensor-core kernels also need a contiguous head dim and 16-byte
 * aligned bases and row strides. */
static bool mma_ok(const rda_problem *p, const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                   const rda_tensor *o) {
    if (!mma_shape(p)) return false;
    const rda_tensor *ts[4] = {q, k, v, o};
    for (int i = 0; i < 4; i++) {
        if (!ts[i]) continue;
        if (ts[i]->strides[3] != 1 || ((uintptr_t)ts[i]->data & 15)) return false;
        for (int d = 0; d < 3; d++)
            if (ts[i]->strides[d] % 8) return false;
    }
    return true;
}

/* Short key spans at D = 64 (no job of the phase with more than
 * WG64S_MAX_KEYS keys): the 64-key-tile kernel (three CTAs an SM)
 * against the 128-key one (two), by the time of their whole waves: a wave
 * of three 64-key items takes WG64S_WAVE times a wave of two 128-key ones
 * (1.5 times the items at 7% less time each, docs/PERFORMANCE.md). */
#define WG64S_WAVE 1.40
static bool wg64s_faster(const cuda_ctx *c, const rda_phase *ph, int64_t B) {
    int64_t keys = 0, items = 0; /* the longest key span of a job; the items that have keys */
    for (int64_t j = 0; j < ph->njobs; j++)
        keys = max(keys, ph->jobs[j].k_count[0] + (ph->jobs[j].nk > 1 ? ph->jobs[j].k_count[1] : 0));
    if (keys > WG64S_MAX_KEYS) return false;
    for (int64_t i = 0; i < ph->nclasses; i++) {
        const rda_class *cl = &ph->classes[i];
        if (cl->ntiles > 0 && ph->jobs[ph->tiles[cl->first_tile].job].nk > 0) items += cl->ntiles * B * cl->nheads;
    }
    if (c->occ_wg64 < 1 || c->occ_wg64s < 1) return c->occ_wg64s >= 1;
    int64_t slots = (int64_t)c->sms * c->occ_wg64, slots_s = (int64_t)c->sms * c->occ_wg64s;
    double waves = (double)((items + slots - 1) / slots), waves_s = (double)((items + slots_s - 1) / slots_s);
    return waves_s * WG64S_WAVE < waves;
}

typedef struct {
    rda_context *ctx;
    const rda_problem *p;
    const rda_tensor *q, *k, *v;
    rda_tensor *o, *lse;
} step_arg;

/* The tables of phase ph into a launch's arguments: small ones inside the
 * argument block itself; larger ones uploaded behind the previous launch on
 * the same stream, in one copy, and kept in the context's cache. */
static rda_status phase_tables(rda_context *ctx, const rda_phase *ph, attend_args &a) {
    const size_t bj = RDA_ALIGN16(sizeof(rda_job) * (size_t)ph->njobs),
                 bt = RDA_ALIGN16(sizeof(rda_tile) * (size_t)ph->ntiles),
                 bh = RDA_ALIGN16(sizeof(int64_t) * (size_t)ph->nheads), bc = sizeof(rda_class) * (size_t)ph->nclasses;
    if (bj + bt + bh + bc <= sizeof(a.tab)) { /* small: inside the launch itself */
        a.tab_inline = 1;
        a.off_tiles = (int32_t)bj;
        a.off_heads = (int32_t)(bj + bt);
        a.off_classes = (int32_t)(bj + bt + bh);
        memcpy(a.tab, ph->jobs, sizeof(rda_job) * (size_t)ph->njobs);
        memcpy(a.tab + a.off_tiles, ph->tiles, sizeof(rda_tile) * (size_t)ph->ntiles);
        memcpy(a.tab + a.off_heads, ph->heads, sizeof(int64_t) * (size_t)ph->nheads);
        memcpy(a.tab + a.off_classes, ph->classes, bc);
    } else { /* on the device, kept for the next call with the same tables */
        const table_parts tp = phase_parts(ph);
        const void *dv = NULL;
        rda_status st = table_upload(ctx, &tp, &dv);
        if (st) return st;
        const char *d0 = static_cast<const char *>(dv);
        a.jobs = reinterpret_cast<const rda_job *>(d0 + tp.off[0]);
        a.tiles = reinterpret_cast<const rda_tile *>(d0 + tp.off[1]);
        a.heads = reinterpret_cast<const int64_t *>(d0 + tp.off[2]);
        a.classes = reinterpret_cast<const rda_class *>(d0 + tp.off[3]);
    }
    a.nclasses = ph->nclasses;
    a.zero_bq = ph->zero_bq > 0 ? ph->zero_bq : ph->bq; /* rows per zero-output tile, as planned */
    a.bq = ph->bq;
    if (ph->items > 0x7fffffff) {
        rda_set_msg(ctx->msg, "too many work items in one step (%lld)", (long long)ph->items);
        return RDA_STATUS_UNSUPPORTED;
    }
    return RDA_STATUS_SUCCESS;
}

static rda_status run_phase(void *arg, const rda_phase *ph) {
    step_arg *sa = static_cast<step_arg *>(arg);
    rda_context *ctx = sa->ctx;
    cuda_ctx *c = cctx(ctx);
    cudaStream_t s = c->stream;
    attend_args a;
    fill_args(&a, c, sa->p, sa->q, sa->k, sa->v, sa->o, sa->lse);
    rda_status st = phase_tables(ctx, ph, a);
    if (st) return st;
    dim3 grid((unsigned)ph->items);
    const bool mma = mma_ok(sa->p, sa->q, sa->k, sa->v, sa->o);
    if (mma && c->wgmma) {
        bool bf = sa->p->dtype == RDA_DTYPE_BF16;
        if (sa->p->D == 64 && c->wg64_rows == 128) {
            if (bf) WG64P2(__nv_bfloat16)<<<grid, WG64P2_THREADS, WG64P2_SMEM, s>>>(a);
            else WG64P2(__half)<<<grid, WG64P2_THREADS, WG64P2_SMEM, s>>>(a);
        } else if (sa->p->D == 64 && c->wg64_rows == 192) {
            if (bf) WG64P3(__nv_bfloat16)<<<grid, WG64P3_THREADS, WG64P3_SMEM, s>>>(a);
            else WG64P3(__half)<<<grid, WG64P3_THREADS, WG64P3_SMEM, s>>>(a);
        } else if (sa->p->D == 64 && wg64s_faster(c, ph, sa->p->B)) {
            if (bf) WG64S(__nv_bfloat16)<<<grid, 128, WG64S_SMEM, s>>>(a);
            else WG64S(__half)<<<grid, 128, WG64S_SMEM, s>>>(a);
        } else if (sa->p->D == 64) {
            if (bf) WG64(__nv_bfloat16)<<<grid, 128 * WG64_NW, WG64_SMEM, s>>>(a);
            else WG64(__half)<<<grid, 128 * WG64_NW, WG64_SMEM, s>>>(a);
        } else {
            if (bf) WG128(__nv_bfloat16)<<<grid, WG128_THREADS, WG128_SMEM, s>>>(a);
            else WG128(__half)<<<grid, WG128_THREADS, WG128_SMEM, s>>>(a);
        }
    } else if (mma) {
        bool bf = sa->p->dtype == RDA_DTYPE_BF16;
        if (sa->p->D == 64) {
            if (bf) attend_mma<__nv_bfloat16, 64><<<grid, 128, mma_smem_bytes<64>(), s>>>(a);
            else attend_mma<__half, 64><<<grid, 128, mma_smem_bytes<64>(), s>>>(a);
        } else {
            if (bf) attend_mma<__nv_bfloat16, 128><<<grid, 128, mma_smem_bytes<128>(), s>>>(a);
            else attend_mma<__half, 128><<<grid, 128, mma_smem_bytes<128>(), s>>>(a);
        }
    } else {
        switch (sa->p->dtype) {
        case RDA_DTYPE_F16: attend_generic<__half><<<grid, 128, 0, s>>>(a); break;
        case RDA_DTYPE_BF16: attend_generic<__nv_bfloat16><<<grid, 128, 0, s>>>(a); break;
        default: attend_generic<float><<<grid, 128, 0, s>>>(a); break;
        }
    }
    CUDA_LAUNCHED();
    return RDA_STATUS_SUCCESS;
}

static rda_status cuda_step(rda_context *ctx, const rda_problem *p, const rda_rows *qr, const rda_rows *kr,
                            const rda_tensor *q, const rda_tensor *k, const rda_tensor *v, rda_tensor *o,
                            rda_tensor *lse, bool last, int64_t *pairs) {
    cuda_ctx *c = cctx(ctx);
    double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    c->qscale = (float)(scale * 1.4426950408889634);
    /* the output on every step: with the rows' state kept in it (out_state)
     * the earlier steps read and write it too */
    step_arg sa = {ctx, p, q, k, v, last || c->out_state ? o : NULL, last ? lse : NULL};
    return rda_plan_step(&c->phase, p, qr, kr, last, run_phase, &sa, pairs, ctx->msg);
}

static rda_status cuda_finish(rda_context *ctx, const rda_problem *p, rda_tensor *o, rda_tensor *lse) {
    cuda_ctx *c = cctx(ctx);
    if (c->one_pass) { /* every row written, l left zero (the call began with it zeroed) */
        c->clean_l = p->B * c->n * p->H;
        return RDA_STATUS_SUCCESS;
    }
    attend_args a;
    fill_args(&a, c, p, o, o, o, o, lse);
    int64_t rows = p->B * c->n * p->H;
    unsigned grid = (unsigned)((rows * 32 + 255) / 256);
    switch (p->dtype) {
    case RDA_DTYPE_F16: finalize_rows<__half><<<grid, 256, 0, c->stream>>>(a); break;
    case RDA_DTYPE_BF16: finalize_rows<__nv_bfloat16><<<grid, 256, 0, c->stream>>>(a); break;
    default: finalize_rows<float><<<grid, 256, 0, c->stream>>>(a); break;
    }
    CUDA_LAUNCHED();
    c->clean_l = p->B * c->n * p->H;
    return RDA_STATUS_SUCCESS;
}

static rda_status cuda_sync(rda_context *ctx) { return rda_cuda_synchronize(ctx); }

static rda_status cuda_mark(rda_context *ctx, const void **ready) {
    cuda_ctx *c = cctx(ctx);
    int prev = rda_cuda_get_device();
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess) e = cudaEventRecord(c->ready, c->stream);
    rda_cuda_set_device(prev);
    if (e != cudaSuccess) {
        rda_set_msg(ctx->msg, "recording the ring's marker: %s", cudaGetErrorString(e));
        return RDA_STATUS_DEVICE_ERROR;
    }
    *ready = c->ready;
    return RDA_STATUS_SUCCESS;
}

/* On the context's own stream, after the sender's marker (an event of
 * another context, on any device), then waited for: a plain cudaMemcpy
 * between device buffers returns before the copy is done and runs on the
 * legacy default stream, which the context's non-blocking stream does not
 * wait for, so the next kernel could read a block still being copied. */
static int cuda_copy(rda_context *ctx, void *dst, const void *src, size_t bytes, const void *ready) {
    cudaStream_t s = cctx(ctx)->stream;
    if (ready && cudaStreamWaitEvent(s, (cudaEvent_t)const_cast<void *>(ready), 0) != cudaSuccess) return -1;
    if (cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s) != cudaSuccess) return -1;
    return cudaStreamSynchronize(s) == cudaSuccess ? 0 : -1;
}

static void *cuda_alloc(rda_context *ctx, size_t bytes) {
    void *p = NULL;
    cudaSetDevice(cctx(ctx)->device);
    return cudaMalloc(&p, bytes ? bytes : 1) == cudaSuccess ? p : NULL;
}

static void cuda_release(void *p) { cudaFree(p); }

static rda_status cuda_clear(rda_context *ctx, void *dst, size_t bytes) {
    CUDA_TRY(cudaMemsetAsync(dst, 0, bytes, cctx(ctx)->stream));
    return RDA_STATUS_SUCCESS;
}

/* ---- backward (attend_bwd.cuh) ---- */

/* A host table of the context grown to hold `need` elements of `elem`
 * bytes (kept: it only grows, to the largest call seen). */
static rda_status host_grow(rda_context *ctx, void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return RDA_STATUS_SUCCESS;
    void *q = realloc(*p, elem * (size_t)need);
    if (!q) {
        rda_set_msg(ctx->msg, "out of host memory for %lld backward table entries", (long long)need);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    *p = q, *cap = need;
    return RDA_STATUS_SUCCESS;
}

static rda_status cuda_bwd_begin(rda_context *ctx, const rda_problem *p, const rda_rows *qr, int64_t nk_max,
                                 size_t block, void *kv[2], const rda_bwd_tensors *t) {
    (void)nk_max;
    cuda_ctx *c = cctx(ctx);
    rda_status st;
    CUDA_TRY(cudaSetDevice(c->device));
    if ((st = check_capture(ctx, c))) return st;
    static const char *names[4] = {"o", "dout", "dk", "dv"};
    const rda_tensor *more[4] = {t->o, t->dout, t->dk, t->dv};
    for (int i = 0; i < 4; i++)
        if (!on_device(more[i]->data)) {
            rda_set_msg(ctx->msg, "tensor %s is not in device memory (the CUDA backend takes device pointers)",
                        names[i]);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
    const int64_t n = qr->total, rows_hd = p->B * n * p->H, bq = bwd_tile_rows(p->D);
    const size_t tables = rda_plan_phase_bytes(p, qr, bq);
    rda_carver hc;
    if ((st = rda_context_reserve(ctx, tables, &hc))) return st;
    if ((st = rda_plan_phase_init(&c->phase, &hc, p, qr, bq))) return st;
    c->phase.zero_uncovered = false; /* rows no key reaches keep dQ = 0 */
    /* the key tiles' classes, and heads of one residue (rda_plan_key_tiles) */
    if ((st = host_grow(ctx, (void **)&c->kclasses, &c->kclasses_cap, c->phase.classes_cap, sizeof(rda_class))) ||
        (st = host_grow(ctx, (void **)&c->kheads, &c->kheads_cap, c->phase.heads_cap, sizeof(int64_t))))
        return st;
    const size_t home = block ? 0 : 2 * sizeof(float) * (size_t)(p->B * n * p->Hkv * p->D);
    const size_t need = RDA_ALIGN(sizeof(float) * (size_t)(rows_hd * p->D)) + RDA_ALIGN(sizeof(float) * (size_t)rows_hd) +
                        (block ? 2 * RDA_ALIGN(block) : RDA_ALIGN(home));
    if ((st = reserve_device(ctx, need))) return st;
    c->clean_l = 0; /* the forward's row state at the start of the workspace is overwritten */
    rda_carver dc = {static_cast<char *>(c->dws), need};
    c->dq = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)(rows_hd * p->D)));
    c->delta = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)rows_hd));
    if (block) {
        kv[0] = rda_carve(&dc, block);
        kv[1] = rda_carve(&dc, block);
    } else {
        kv[0] = rda_carve(&dc, home);
        kv[1] = NULL;
        if (kv[0]) CUDA_TRY(cudaMemsetAsync(kv[0], 0, home, c->stream));
    }
    if (!c->delta || !kv[0] || (block && !kv[1])) {
        rda_set_msg(ctx->msg, "internal error: CUDA backward workspace sizing (%s:%d)", __FILE__, __LINE__);
        return RDA_STATUS_INTERNAL;
    }
    c->n = n;
    ctx->ws_used = tables + need;
    CUDA_TRY(cudaMemsetAsync(c->dq, 0, sizeof(float) * (size_t)(rows_hd * p->D), c->stream));
    if (rows_hd > 0) {
        const rda_tensor *o = t->o, *g = t->dout;
        const unsigned grid = (unsigned)min((rows_hd + 7) / 8, (int64_t)65535);
#define RDA_DELTA(T)                                                                                              \
    bwd_delta<T><<<grid, 256, 0, c->stream>>>(static_cast<const T *>(o->data), o->strides[0], o->strides[1],      \
                                              o->strides[2], o->strides[3], static_cast<const T *>(g->data),      \
                                              g->strides[0], g->strides[1], g->strides[2], g->strides[3],         \
                                              c->delta, p->B, n, p->H, p->D)
        switch (p->dtype) {
        case RDA_DTYPE_F16: RDA_DELTA(__half); break;
        case RDA_DTYPE_BF16: RDA_DELTA(__nv_bfloat16); break;
        default: RDA_DELTA(float); break;
        }
#undef RDA_DELTA
        CUDA_LAUNCHED();
    }
    return RDA_STATUS_SUCCESS;
}

typedef struct {
    rda_context *ctx;
    const rda_problem *p;
    const rda_bwd_tensors *t;
    const rda_tensor *k, *v;
    float *dk, *dv;
    int64_t nk;
    float scale; /* the softmax scale (c->qscale is it times log2 e) */
} bwd_step_arg;

/* CTAs per key tile of the D = 64 fused backward for phase kph (whose jobs
 * are ph's), with `slots` CTAs on the GPU at once: a phase of few key tiles
 * runs each as parts of its query tiles when
 * that fills the multiprocessors in fewer rounds, counting a round as one
 * part's time (the tile's divided by the parts; each part's start-up, the
 * K/V tile and the first query tile, not counted, hence the 15% margin). A
 * part keeps four query tiles or more of the longest job. Seed groups at
 * N = 4096 (bwd_wgmma1): 384 key tiles of 16 query tiles on 264 slots, two
 * rounds of 16 tiles or three of 8: two parts. */
static int64_t bwd_query_parts(const cuda_ctx *c, const rda_phase *ph, const rda_phase *kph, int64_t slots) {
    if (c->force_qparts > 0) return c->force_qparts;
    if (kph->items >= slots * 2) return 1;
    int64_t qmax = 0;
    for (int64_t j = 0; j < ph->njobs; j++) qmax = max(qmax, ph->jobs[j].q_count);
    const int64_t most = (qmax + 63) / 64 / 4;
    const double one = (double)((kph->items + slots - 1) / slots);
    int64_t best = 1;
    double best_cost = one * 0.85;
    for (int64_t s = 2; s <= 4 && s <= most; s++) {
        const double cost = (double)((s * kph->items + slots - 1) / slots) / (double)s;
        if (cost < best_cost) best = s, best_cost = cost;
    }
    return best;
}

/* Phases of at least this many 128-key tiles run on bwd_wgmma_ws (one CTA
 * of 128 keys per multiprocessor) at D = 64: four rounds of the
 * multiprocessors; smaller ones on bwd_wgmma1 (two CTAs of 64 keys), whose
 * query parts then fill them better (H200, fp16: bwd_wgmma_ws 5-8% faster
 * from N = 16384 dense and on 256K rows of 1024-key segments; 23-50%
 * slower on 264 tiles of N = 4097 causal and below; docs/PERFORMANCE.md,
 * backward v13). */
static int64_t bwd_ws_min_tiles(const cuda_ctx *c) { return 4 * (int64_t)c->sms; }

static rda_status run_bwd_phase(void *arg, const rda_phase *ph) {
    bwd_step_arg *sa = static_cast<bwd_step_arg *>(arg);
    rda_context *ctx = sa->ctx;
    cuda_ctx *c = cctx(ctx);
    const rda_problem *p = sa->p;
    if (ph->items == 0) return RDA_STATUS_SUCCESS;
    attend_args a;
    fill_args(&a, c, p, sa->t->q, sa->k, sa->v, NULL, const_cast<rda_tensor *>(sa->t->lse)); /* (read only) */
    a.dout = sa->t->dout->data;
    for (int i = 0; i < 4; i++) a.gs[i] = sa->t->dout->strides[i];
    a.dq = c->dq;
    a.delta = c->delta;
    a.dk = sa->dk;
    a.dv = sa->dv;
    a.nk = sa->nk;
    a.scale = sa->scale;
    rda_status st = phase_tables(ctx, ph, a);
    if (st) return st;
    const dim3 grid((unsigned)ph->items);
    if (!mma_ok(p, sa->t->q, sa->k, sa->v, sa->t->dout)) {
        const size_t smem = bwd_smem_bytes(p->D, ph->bq);
        switch (p->dtype) {
        case RDA_DTYPE_F16: attend_bwd<__half><<<grid, BWD_THREADS, smem, c->stream>>>(a); break;
        case RDA_DTYPE_BF16: attend_bwd<__nv_bfloat16><<<grid, BWD_THREADS, smem, c->stream>>>(a); break;
        default: attend_bwd<float><<<grid, BWD_THREADS, smem, c->stream>>>(a); break;
        }
        CUDA_LAUNCHED();
        return RDA_STATUS_SUCCESS;
    }
    /* tensor cores. Hopper (unless RDA_CUDA_BWD_FUSED=0): one fused kernel over
     * key tiles (64 keys by one warpgroup at D = 64, 128 by two at D = 128),
     * dQ by fp32 atomics (attend_bwd_wgmma.cuh); otherwise,
     * and always in the deterministic mode, dQ over the query tiles, then
     * dK/dV over the key tiles (attend_bwd_mma.cuh) */
    const bool bf = p->dtype == RDA_DTYPE_BF16, fused = c->wgmma && c->bwd_fused && !p->deterministic;
    cudaStream_t s = c->stream;
#define RDA_BWD_LAUNCH(K, SMEM, g, args)                                                                  \
    do {                                                                                                  \
        if (p->D == 64) {                                                                                 \
            if (bf) K<__nv_bfloat16, 64><<<g, 128, SMEM<64>(), s>>>(args);                                \
            else K<__half, 64><<<g, 128, SMEM<64>(), s>>>(args);                                          \
        } else {                                                                                          \
            if (bf) K<__nv_bfloat16, 128><<<g, 128, SMEM<128>(), s>>>(args);                              \
            else K<__half, 128><<<g, 128, SMEM<128>(), s>>>(args);                                        \
        }                                                                                                 \
        CUDA_LAUNCHED();                                                                                  \
    } while (0)
    if (!fused) RDA_BWD_LAUNCH(bwd_dq_mma, bwd_mma_smem_bytes, grid, a);
    /* deterministic: one launch per residue of the query head modulo H / Hkv,
     * whose items add to disjoint rows (the step plans one query range at a
     * time), without atomics */
    const int64_t hmod = p->deterministic ? p->H / p->Hkv : 1;
    /* keys per tile: 128 for bwd_wgmma (64 per warpgroup) and bwd_wgmma_ws,
     * 64 for bwd_wgmma1 and bwd_dkv_mma */
    const bool fused64 = fused && p->D == 64;
    for (int64_t rem = 0; rem < hmod; rem++) {
        rda_phase kph;
        int64_t *heads = hmod > 1 ? c->kheads : NULL;
        auto plan = [&](int64_t bk) -> rda_status {
            const int64_t need =
                rda_plan_key_tiles(ph, p, bk, hmod, rem, c->ktiles, c->ktiles_cap, c->kclasses, heads, &kph);
            if (need > c->ktiles_cap) { /* (grows to the largest phase seen) */
                rda_status gs = host_grow(ctx, (void **)&c->ktiles, &c->ktiles_cap, need, sizeof(rda_tile));
                if (gs) return gs;
                rda_plan_key_tiles(ph, p, bk, hmod, rem, c->ktiles, c->ktiles_cap, c->kclasses, heads, &kph);
            }
            return RDA_STATUS_SUCCESS;
        };
        bool ws = fused64 && c->force_ws == 1;
        if ((st = plan(fused && (p->D == 128 || ws) ? 128 : 64))) return st;
        /* At D = 64 the choice (unless forced): a 128-key tile holds at
         * most two 64-key ones, so a phase of fewer 64-key tiles than
         * bwd_ws_min_tiles stays on bwd_wgmma1 with no second plan (the
         * small phases, where host time counts) */
        if (fused64 && c->force_ws < 0 && kph.items >= bwd_ws_min_tiles(c)) {
            if ((st = plan(128))) return st;
            ws = kph.items >= bwd_ws_min_tiles(c);
            if (!ws && (st = plan(64))) return st;
        }
        if (kph.items == 0) continue;
        attend_args ka = a; /* the same arguments over the key tiles */
        ka.plain_add = p->deterministic;
        if ((st = phase_tables(ctx, &kph, ka))) return st;
        ka.qparts = fused64 ? (int32_t)bwd_query_parts(c, ph, &kph, ws ? c->sms : (int64_t)c->sms * max(1, c->occ_bwd64))
                            : 1;
        const dim3 kgrid((unsigned)(kph.items * ka.qparts));
        if (ws) {
            constexpr size_t smem = bwd_ws_smem_bytes<64>();
            if (bf) bwd_wgmma_ws<__nv_bfloat16, 64><<<kgrid, 384, smem, s>>>(ka);
            else bwd_wgmma_ws<__half, 64><<<kgrid, 384, smem, s>>>(ka);
            CUDA_LAUNCHED();
        } else if (fused64) {
            constexpr size_t smem = bwd_wg1_smem_bytes<64, BWD_DQ>();
            if (bf) bwd_wgmma1<__nv_bfloat16, 64, BWD_DQ><<<kgrid, 128, smem, s>>>(ka);
            else bwd_wgmma1<__half, 64, BWD_DQ><<<kgrid, 128, smem, s>>>(ka);
            CUDA_LAUNCHED();
        } else if (fused) {
            constexpr size_t smem = bwd_wg_smem_bytes<128, 2, BWD_DQ>();
            if (bf) bwd_wgmma<__nv_bfloat16, 128, 2, BWD_DQ><<<kgrid, 256, smem, s>>>(ka);
            else bwd_wgmma<__half, 128, 2, BWD_DQ><<<kgrid, 256, smem, s>>>(ka);
            CUDA_LAUNCHED();
        } else {
            RDA_BWD_LAUNCH(bwd_dkv_mma, bwd_mma_smem_bytes, kgrid, ka);
        }
    }
#undef RDA_BWD_LAUNCH
    return RDA_STATUS_SUCCESS;
}

static rda_status cuda_bwd_step(rda_context *ctx, const rda_problem *p, const rda_rows *qr, const rda_rows *kr,
                                const rda_bwd_tensors *t, const rda_tensor *k, const rda_tensor *v, float *dk,
                                float *dv, int64_t *pairs) {
    cuda_ctx *c = cctx(ctx);
    const double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    c->qscale = (float)(scale * 1.4426950408889634);
    bwd_step_arg sa = {ctx, p, t, k, v, dk, dv, kr->total, (float)scale};
    if (p->deterministic && !mma_ok(p, t->q, k, v, t->dout)) {
        rda_set_msg(ctx->msg, "the deterministic backward on the GPU runs on the tensor-core kernels: fp16 or bf16, "
                              "D = 64 or 128, a contiguous head dim and 16-byte aligned rows (got %s, D = %lld)",
                    rda_dtype_name(p->dtype), (long long)p->D);
        return RDA_STATUS_UNSUPPORTED;
    }
    /* One phase's items own their query rows (dQ without atomics). Key rows
     * are shared (atomics), so both query ranges of a rank plan together;
     * deterministic: one query range at a time, so that a class's jobs lie
     * in distinct segments and no key row meets two items of one launch. */
    return (p->deterministic ? rda_plan_step_per_range : rda_plan_step)(&c->phase, p, qr, kr, false, run_bwd_phase,
                                                                         &sa, pairs, ctx->msg);
}

static rda_status store_f32(rda_context *ctx, rda_tensor *t, const float *src, int64_t B, int64_t n, int64_t H,
                            int64_t D) {
    cuda_ctx *c = cctx(ctx);
    const int64_t total = B * n * H * D;
    if (total == 0) return RDA_STATUS_SUCCESS;
    const unsigned grid = (unsigned)min((total + 255) / 256, (int64_t)65535);
    const int64_t *s = t->strides;
    switch (t->dtype) {
    case RDA_DTYPE_F16:
        store_rows_f32<__half><<<grid, 256, 0, c->stream>>>(static_cast<__half *>(t->data), s[0], s[1], s[2], s[3],
                                                             src, B, n, H, D);
        break;
    case RDA_DTYPE_BF16:
        store_rows_f32<__nv_bfloat16><<<grid, 256, 0, c->stream>>>(static_cast<__nv_bfloat16 *>(t->data), s[0],
                                                                    s[1], s[2], s[3], src, B, n, H, D);
        break;
    default:
        store_rows_f32<float><<<grid, 256, 0, c->stream>>>(static_cast<float *>(t->data), s[0], s[1], s[2], s[3],
                                                            src, B, n, H, D);
        break;
    }
    CUDA_LAUNCHED();
    return RDA_STATUS_SUCCESS;
}

static rda_status cuda_bwd_finish(rda_context *ctx, const rda_problem *p, const rda_bwd_tensors *t, const float *dk,
                                  const float *dv) {
    cuda_ctx *c = cctx(ctx);
    rda_status st;
    if ((st = store_f32(ctx, t->dq, c->dq, p->B, c->n, p->H, p->D))) return st;
    if ((st = store_f32(ctx, t->dk, dk, p->B, c->n, p->Hkv, p->D))) return st;
    return store_f32(ctx, t->dv, dv, p->B, c->n, p->Hkv, p->D);
}

static const rda_backend_ops cuda_ops = {"cuda",         cuda_begin,     cuda_pack_kv, cuda_step,
                                         cuda_finish,    cuda_sync,      cuda_mark,    cuda_copy,
                                         cuda_alloc,     cuda_release,   cuda_clear,   cuda_bwd_begin,
                                         cuda_bwd_step,  cuda_bwd_finish};

extern "C" const rda_backend_ops *rda_backend_cuda(void) { return &cuda_ops; }
