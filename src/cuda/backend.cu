/* The CUDA backend: device workspace, per-step job tables, kernel dispatch.
 * Work is ordered on the context's stream; nothing here synchronises the
 * device except `sync` (the ring, before a buffer is sent) and workspace
 * growth. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attend_wgmma.cuh"

extern "C" {
#include "../backend.h"
}

typedef struct {
    int device;
    cudaStream_t stream;
    bool own_stream;
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
    /* the call in progress */
    float *acc, *m, *l;
    int64_t n;     /* rows of the rank */
    rda_phase phase;          /* host tables (built by the shared planner) */
    rda_job *d_jobs;          /* their device copies */
    rda_tile *d_tiles;
    int64_t *d_heads;
    rda_class *d_classes;
    const rda_tensor *q, *k, *v;
    float qscale;
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
/* throughput of each on long rows (TFLOP/s, H100, dense N = 65536 and
 * 16384, docs/PERFORMANCE.md): only their ratio matters */
#define WG64P2_RATE 417.0
#define WG64P3_RATE 465.0
#define WG128(T) attend_wgmma<T, 128, 128, 2, 3, 1, 0>
#define WG128_SMEM wg_smem_bytes<128, 128, 2, 3, 0>()
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
        CUDA_TRY(wg_prepare(WG128(__half), WG128(__nv_bfloat16), 128 * WG128_NW, WG128_SMEM, &occ128));
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

static rda_status context_init(rda_context *ctx, int32_t device, void *stream);

extern "C" rda_status rda_cuda_context_init(rda_context *ctx, int32_t device, void *stream) {
    int prev = rda_cuda_get_device();
    rda_status st = context_init(ctx, device, stream);
    rda_cuda_set_device(prev);
    return st;
}

static rda_status context_init(rda_context *ctx, int32_t device, void *stream) {
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
    if (stream) {
        c->stream = static_cast<cudaStream_t>(stream);
    } else {
        CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
        c->own_stream = true;
    }
    CUDA_TRY(cudaFuncSetAttribute(attend_mma<__half, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)mma_smem_bytes<128>()));
    CUDA_TRY(cudaFuncSetAttribute(attend_mma<__nv_bfloat16, 128>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mma_smem_bytes<128>()));
    /* the D = 64 Hopper kernel family, for tests and measurements */
    if (const char *f = getenv("RDA_CUDA_TILE_ROWS")) {
        c->force_rows = atoi(f);
        if (c->force_rows != 64 && c->force_rows != 128 && c->force_rows != 192) c->force_rows = -1; /* refused by calls */
    }
    return detect_wgmma(ctx, c);
}

extern "C" void rda_cuda_context_destroy(rda_context *ctx) {
    cuda_ctx *c = cctx(ctx);
    if (!c) return;
    int prev = rda_cuda_get_device();
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    cudaFree(c->dws);
    if (c->own_stream) cudaStreamDestroy(c->stream);
    free(c);
    ctx->cuda = NULL;
    rda_cuda_set_device(prev);
}

extern "C" rda_status rda_cuda_synchronize(rda_context *ctx) {
    CUDA_TRY(cudaStreamSynchronize(cctx(ctx)->stream));
    return RDA_STATUS_SUCCESS;
}

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

/* Grows the device workspace to at least `bytes` (synchronises when it grows). */
static rda_status reserve_device(rda_context *ctx, size_t bytes) {
    cuda_ctx *c = cctx(ctx);
    if (bytes <= c->dws_cap) return RDA_STATUS_SUCCESS;
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    CUDA_TRY(cudaFree(c->dws));
    c->dws = NULL;
    c->dws_cap = 0;
    CUDA_TRY(cudaMalloc(&c->dws, bytes));
    c->dws_cap = bytes;
    c->clean_l = 0;
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
 * time in proportion to its queries over the kernel's rate). At N = 16384
 * and H = 8 it picks 1024 items of 128 (8 waves on 132 SMs) over 688 of
 * 192 (6 waves of 1.5 times the queries at 1.12 times the rate), a 1%
 * margin; measured, 192 is 3.6% faster there, the model's one miss among
 * N = 4096 .. 65536 (docs/PERFORMANCE.md, v5). */
static int64_t wg64_long_rows(const cuda_ctx *c, const rda_problem *p, const rda_rows *qr) {
    if (c->occ_wg64p2 < 1 || c->occ_wg64p3 < 1) return c->occ_wg64p2 >= 1 ? 128 : 192;
    const int64_t n2 = p->B * p->H * ((qr->total + 127) / 128), n3 = p->B * p->H * ((qr->total + 191) / 192);
    const int64_t s2 = (int64_t)c->sms * c->occ_wg64p2, s3 = (int64_t)c->sms * c->occ_wg64p3;
    const double t2 = (double)((n2 + s2 - 1) / s2) * 128.0 / WG64P2_RATE,
                 t3 = (double)((n3 + s3 - 1) / s3) * 192.0 / WG64P3_RATE;
    return t3 < t2 ? 192 : 128;
}

/* Queries per work item: the tile of the kernels that will run. */
static int64_t tile_rows(cuda_ctx *c, const rda_problem *p, const rda_rows *qr) {
    c->wg64_rows = 64;
    if (!c->wgmma || !mma_shape(p)) return RDA_CUDA_BQ;
    if (p->D != 64) return 64 * WG128_NW;
    if (c->force_rows) c->wg64_rows = c->force_rows;
    else if (key_span(p, qr) > WG64S_MAX_KEYS) c->wg64_rows = (int)wg64_long_rows(c, p, qr);
    return c->wg64_rows;
}

static rda_status cuda_begin(rda_context *ctx, const rda_problem *p, const rda_rows *qr, size_t block,
                             void *kv[2]) {
    cuda_ctx *c = cctx(ctx);
    rda_status st;
    CUDA_TRY(cudaSetDevice(c->device));
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
    size_t need = RDA_ALIGN(sizeof(float) * (size_t)(rows_hd * p->D)) + 2 * RDA_ALIGN(sizeof(float) * (size_t)rows_hd) +
                  (block ? 2 * RDA_ALIGN(block) : 0) + tables;
    if ((st = reserve_device(ctx, need))) return st;
    rda_carver dc = {static_cast<char *>(c->dws), need};
    /* l first, so that it stays where the last call left it zeroed */
    c->l = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)rows_hd));
    c->m = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)rows_hd));
    c->acc = static_cast<float *>(rda_carve(&dc, sizeof(float) * (size_t)(rows_hd * p->D)));
    if (block) {
        kv[0] = rda_carve(&dc, block);
        kv[1] = rda_carve(&dc, block);
    }
    rda_phase dev; /* the same carving on the device: the same layout by construction */
    if ((st = rda_plan_phase_init(&dev, &dc, p, qr, bq))) {
        rda_set_msg(ctx->msg, "internal error: device workspace sizing (%s:%d)", __FILE__, __LINE__);
        return st;
    }
    c->d_jobs = dev.jobs;
    c->d_tiles = dev.tiles;
    c->d_heads = dev.heads;
    c->d_classes = dev.classes;
    c->n = qr->total;
    ctx->ws_used = tables + need;
    /* l = 0 marks a row no step reached yet (m and acc are read only where
     * l > 0); the finishing pass leaves l zeroed for the next call */
    if (c->clean_l < rows_hd) {
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

static rda_status run_phase(void *arg, const rda_phase *ph) {
    step_arg *sa = static_cast<step_arg *>(arg);
    rda_context *ctx = sa->ctx;
    cuda_ctx *c = cctx(ctx);
    cudaStream_t s = c->stream;
    /* the tables: small ones inside the launch's argument block; larger
     * ones uploaded behind the previous launch on the same stream, in one
     * copy (host and device tables are carved alike, so one span of the
     * host arena maps onto the device tables) */
    attend_args a;
    fill_args(&a, c, sa->p, sa->q, sa->k, sa->v, sa->o, sa->lse);
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
    } else {
        const char *h0 = reinterpret_cast<const char *>(ph->jobs);
        size_t span = (size_t)(reinterpret_cast<const char *>(ph->classes + ph->nclasses) - h0);
        CUDA_TRY(cudaMemcpyAsync(c->d_jobs, h0, span, cudaMemcpyHostToDevice, s));
        a.jobs = c->d_jobs;
        a.tiles = c->d_tiles;
        a.heads = c->d_heads;
        a.classes = c->d_classes;
    }
    a.nclasses = ph->nclasses;
    a.zero_bq = ph->zero_bq > 0 ? ph->zero_bq : ph->bq; /* rows per zero-output tile, as planned */
    a.bq = ph->bq;
    if (ph->items > 0x7fffffff) {
        rda_set_msg(ctx->msg, "too many work items in one step (%lld)", (long long)ph->items);
        return RDA_STATUS_UNSUPPORTED;
    }
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
            if (bf) WG128(__nv_bfloat16)<<<grid, 128 * WG128_NW, WG128_SMEM, s>>>(a);
            else WG128(__half)<<<grid, 128 * WG128_NW, WG128_SMEM, s>>>(a);
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
                            rda_tensor *lse, int64_t *pairs) {
    cuda_ctx *c = cctx(ctx);
    double scale = p->scale != 0.0 ? p->scale : 1.0 / sqrt((double)p->D);
    c->qscale = (float)(scale * 1.4426950408889634);
    step_arg sa = {ctx, p, q, k, v, o, lse};
    return rda_plan_step(&c->phase, p, qr, kr, o != NULL, run_phase, &sa, pairs, ctx->msg);
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

/* On the context's own stream, then waited for: a plain cudaMemcpy between
 * device buffers returns before the copy is done and runs on the legacy
 * default stream, which the context's non-blocking stream does not wait for,
 * so the next kernel could read a block still being copied. */
static int cuda_copy(rda_context *ctx, void *dst, const void *src, size_t bytes) {
    cudaStream_t s = cctx(ctx)->stream;
    if (cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s) != cudaSuccess) return -1;
    return cudaStreamSynchronize(s) == cudaSuccess ? 0 : -1;
}

static void *cuda_alloc(rda_context *ctx, size_t bytes) {
    void *p = NULL;
    cudaSetDevice(cctx(ctx)->device);
    return cudaMalloc(&p, bytes ? bytes : 1) == cudaSuccess ? p : NULL;
}

static void cuda_release(void *p) { cudaFree(p); }

static const rda_backend_ops cuda_ops = {"cuda",    cuda_begin, cuda_pack_kv, cuda_step, cuda_finish,
                                         cuda_sync, cuda_copy,  cuda_alloc,   cuda_release};

extern "C" const rda_backend_ops *rda_backend_cuda(void) { return &cuda_ops; }
