/* Status strings, version, workspaces, contexts, element access and
 * validation of everything a caller hands in. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/convert.h"
#include "internal.h"

#define STR_(x) #x
#define STR(x) STR_(x)

int rda_version(void) { return RDA_VERSION; }

const char *rda_version_string(void) {
    return STR(RDA_VERSION_MAJOR) "." STR(RDA_VERSION_MINOR) "." STR(RDA_VERSION_PATCH);
}

const char *rda_status_to_string(rda_status s) {
    switch (s) {
    case RDA_STATUS_SUCCESS: return "success";
    case RDA_STATUS_NULL_POINTER: return "null pointer";
    case RDA_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case RDA_STATUS_SHAPE_MISMATCH: return "shape mismatch";
    case RDA_STATUS_DTYPE_MISMATCH: return "dtype mismatch";
    case RDA_STATUS_INVALID_PATTERN: return "invalid pattern";
    case RDA_STATUS_OVERFLOW: return "size overflow";
    case RDA_STATUS_ALIASING: return "output aliases another tensor";
    case RDA_STATUS_UNSUPPORTED: return "unsupported";
    case RDA_STATUS_OUT_OF_MEMORY: return "out of memory";
    case RDA_STATUS_COMM_ERROR: return "communication error";
    case RDA_STATUS_TIMEOUT: return "timeout";
    case RDA_STATUS_CONFIG_MISMATCH: return "configuration differs between ranks";
    case RDA_STATUS_INTERNAL: return "internal error";
    case RDA_STATUS_IO_ERROR: return "i/o error";
    case RDA_STATUS_DEVICE_ERROR: return "device error";
    }
    return "unknown status";
}

size_t rda_dtype_size(rda_dtype dt) {
    switch (dt) {
    case RDA_DTYPE_F32: return 4;
    case RDA_DTYPE_F16: return 2;
    case RDA_DTYPE_BF16: return 2;
    case RDA_DTYPE_F64: return 8;
    }
    return 0;
}

const char *rda_dtype_name(rda_dtype dt) {
    switch (dt) {
    case RDA_DTYPE_F32: return "fp32";
    case RDA_DTYPE_F16: return "fp16";
    case RDA_DTYPE_BF16: return "bf16";
    case RDA_DTYPE_F64: return "fp64";
    }
    return "unknown";
}

void rda_set_msg(char *msg, const char *fmt, ...) {
    if (!msg) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, RDA_MSG_LEN, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ workspace */

rda_status rda_context_reserve(rda_context *ctx, size_t bytes, rda_carver *c) {
    bytes = RDA_ALIGN(bytes);
    if (bytes > ctx->ws_cap) {
        free(ctx->ws_raw);
        ctx->ws_cap = 0;
        ctx->ws = ctx->ws_raw = bytes <= SIZE_MAX - 64 ? malloc(bytes + 64) : NULL;
        if (!ctx->ws_raw) {
            rda_set_msg(ctx->msg, "out of memory for a workspace of %zu bytes", bytes);
            return RDA_STATUS_OUT_OF_MEMORY;
        }
        ctx->ws = (void *)(((uintptr_t)ctx->ws_raw + 63) & ~(uintptr_t)63);
        ctx->ws_cap = bytes;
    }
    ctx->ws_used = bytes;
    c->p = ctx->ws;
    c->left = bytes;
    return RDA_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ context */

rda_status rda_context_create(const rda_context_params *params, rda_context **out) {
    if (!out) return RDA_STATUS_NULL_POINTER;
    *out = NULL;
    rda_context_params p = RDA_CONTEXT_PARAMS_INIT;
    if (params) {
        if (params->struct_size < sizeof(uint32_t) || params->struct_size > sizeof(p))
            return RDA_STATUS_INVALID_ARGUMENT;
        memcpy(&p, params, params->struct_size);
    }
    if (p.backend != RDA_BACKEND_CPU && p.backend != RDA_BACKEND_REFERENCE &&
        p.backend != RDA_BACKEND_REFERENCE_SAME_TYPE && p.backend != RDA_BACKEND_CUDA)
        return RDA_STATUS_INVALID_ARGUMENT;
#ifndef RDA_HAVE_CUDA
    if (p.backend == RDA_BACKEND_CUDA) return RDA_STATUS_UNSUPPORTED; /* built without CUDA */
#endif
    if (p.num_threads < 0 || p.num_threads > 4096) return RDA_STATUS_INVALID_ARGUMENT;
    if (p.stream_mode != RDA_STREAM_AUTO && p.stream_mode != RDA_STREAM_CALLER &&
        p.stream_mode != RDA_STREAM_PRIVATE)
        return RDA_STATUS_INVALID_ARGUMENT;
    if (p.stream_mode == RDA_STREAM_PRIVATE && p.stream) return RDA_STATUS_INVALID_ARGUMENT;
    int32_t threads = p.num_threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int32_t)(n > 4096 ? 4096 : n) : 1;
    }
    rda_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) return RDA_STATUS_OUT_OF_MEMORY;
    ctx->backend = p.backend;
    ctx->num_threads = threads;
    ctx->device = p.device;
    ctx->pool = rda_pool_create(threads);
    if (!ctx->pool) {
        free(ctx);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
#ifdef RDA_HAVE_CUDA
    if (p.backend == RDA_BACKEND_CUDA) {
        rda_status st = rda_cuda_context_init(ctx, p.device, p.stream, p.stream_mode);
        if (st) {
            rda_context_destroy(ctx);
            return st;
        }
    }
#endif
    *out = ctx;
    return RDA_STATUS_SUCCESS;
}

void rda_context_destroy(rda_context *ctx) {
    if (!ctx) return;
    for (int32_t r = 0; r < ctx->num_ranks; r++) rda_context_destroy(ctx->ranks[r]);
    free(ctx->ranks);
    rda_gpu_ring_release(ctx);
#ifdef RDA_HAVE_CUDA
    rda_cuda_context_destroy(ctx);
#endif
    rda_pool_destroy(ctx->pool);
    free(ctx->ws_raw);
    free(ctx);
}

rda_status rda_context_synchronize(rda_context *ctx) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
#ifdef RDA_HAVE_CUDA
    if (ctx->backend == RDA_BACKEND_CUDA) return rda_cuda_synchronize(ctx);
#endif
    return RDA_STATUS_SUCCESS;
}

rda_status rda_context_set_stream(rda_context *ctx, void *stream) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
#ifdef RDA_HAVE_CUDA
    if (ctx->backend == RDA_BACKEND_CUDA) return rda_cuda_set_stream(ctx, stream);
#endif
    (void)stream;
    rda_set_msg(ctx->msg, "streams belong to the CUDA backend (this context runs on the CPU)");
    return RDA_STATUS_UNSUPPORTED;
}

void *rda_context_get_stream(const rda_context *ctx) {
#ifdef RDA_HAVE_CUDA
    if (ctx && ctx->backend == RDA_BACKEND_CUDA) return rda_cuda_get_stream(ctx);
#endif
    (void)ctx;
    return NULL;
}

int rda_cuda_available(void) {
#ifdef RDA_HAVE_CUDA
    return rda_cuda_device_count() > 0;
#else
    return 0;
#endif
}

const char *rda_context_last_error(const rda_context *ctx) { return ctx ? ctx->msg : "null context"; }

int32_t rda_context_num_threads(const rda_context *ctx) { return ctx ? ctx->num_threads : 0; }

int64_t rda_context_workspace_bytes(const rda_context *ctx) { return ctx ? (int64_t)ctx->ws_used : 0; }

/* ------------------------------------------------------------------ tensors */

rda_tensor rda_tensor_contiguous(void *data, rda_dtype dtype, int32_t ndim, const int64_t *shape) {
    rda_tensor t;
    memset(&t, 0, sizeof(t));
    t.data = data;
    t.dtype = dtype;
    t.ndim = ndim;
    if (ndim < 1 || ndim > RDA_MAX_DIMS || !shape) return t;
    int64_t s = 1;
    for (int32_t i = ndim - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
    return t;
}

float rda_load_f32(const void *base, rda_dtype dt, int64_t i) {
    switch (dt) {
    case RDA_DTYPE_F32: return ((const float *)base)[i];
    case RDA_DTYPE_F16: return rda_f16_to_f32(((const uint16_t *)base)[i]);
    case RDA_DTYPE_BF16: return rda_bf16_to_f32(((const uint16_t *)base)[i]);
    case RDA_DTYPE_F64: return (float)((const double *)base)[i];
    }
    return 0.0f;
}

double rda_load_f64(const void *base, rda_dtype dt, int64_t i) {
    if (dt == RDA_DTYPE_F64) return ((const double *)base)[i];
    return (double)rda_load_f32(base, dt, i);
}

void rda_store_f32(void *base, rda_dtype dt, int64_t i, float x) {
    switch (dt) {
    case RDA_DTYPE_F32: ((float *)base)[i] = x; break;
    case RDA_DTYPE_F16: ((uint16_t *)base)[i] = rda_f32_to_f16(x); break;
    case RDA_DTYPE_BF16: ((uint16_t *)base)[i] = rda_f32_to_bf16(x); break;
    case RDA_DTYPE_F64: ((double *)base)[i] = x; break;
    }
}

void rda_store_f64(void *base, rda_dtype dt, int64_t i, double x) {
    if (dt == RDA_DTYPE_F64)
        ((double *)base)[i] = x;
    else
        rda_store_f32(base, dt, i, (float)x);
}

/* ------------------------------------------------------------------ validation */

rda_status rda_problem_from_config(const rda_config *cfg_in, int64_t N, rda_problem *p, char *msg) {
    if (!cfg_in) {
        rda_set_msg(msg, "config is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    rda_config cfg = RDA_CONFIG_INIT;
    size_t min_size = offsetof(rda_config, layout);
    if (cfg_in->struct_size < min_size || cfg_in->struct_size > sizeof(rda_config)) {
        rda_set_msg(msg, "config.struct_size is %u; set the config up with RDA_CONFIG_INIT",
                    cfg_in->struct_size);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    memcpy(&cfg, cfg_in, cfg_in->struct_size);
    if (cfg.version < 1 || cfg.version > RDA_CONFIG_VERSION) {
        rda_set_msg(msg, "config.version %u is not supported (this library: %d)", cfg.version,
                    RDA_CONFIG_VERSION);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (cfg.mode != RDA_MODE_DENSE && cfg.mode != RDA_MODE_GROUPS && cfg.mode != RDA_MODE_LONGNET) {
        rda_set_msg(msg, "config.mode %d is not a rda_mode", (int)cfg.mode);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (cfg.causal != 0 && cfg.causal != 1) {
        rda_set_msg(msg, "config.causal must be 0 or 1, got %d", cfg.causal);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (!isfinite(cfg.scale)) {
        rda_set_msg(msg, "config.scale must be finite");
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (cfg.layout != RDA_LAYOUT_CONTIGUOUS && cfg.layout != RDA_LAYOUT_ZIGZAG) {
        rda_set_msg(msg, "config.layout %d is not a rda_layout", (int)cfg.layout);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (!isfinite(cfg.timeout_seconds) || cfg.timeout_seconds < 0) {
        rda_set_msg(msg, "config.timeout_seconds must be finite and >= 0");
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (cfg.deterministic != 0 && cfg.deterministic != 1) {
        rda_set_msg(msg, "config.deterministic must be 0 or 1, got %d", cfg.deterministic);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (N < 1) {
        rda_set_msg(msg, "sequence length N must be >= 1, got %lld", (long long)N);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    memset(p, 0, sizeof(*p));
    p->mode = cfg.mode;
    p->causal = cfg.causal != 0;
    p->scale = cfg.scale;
    p->layout = cfg.layout;
    p->timeout_seconds = cfg.timeout_seconds > 0 ? cfg.timeout_seconds : 60.0;
    p->deterministic = cfg.deterministic != 0;
    p->N = N;
    if (cfg.mode == RDA_MODE_DENSE) {
        p->G = 1;
        p->patterns[0].segment = N;
        p->patterns[0].dilation = 1;
        p->given[0] = p->patterns[0];
        return RDA_STATUS_SUCCESS;
    }
    if (cfg.num_patterns < 1 || cfg.num_patterns > RDA_MAX_PATTERNS) {
        rda_set_msg(msg, "config.num_patterns must be in 1..%d, got %d", RDA_MAX_PATTERNS,
                    cfg.num_patterns);
        return RDA_STATUS_INVALID_PATTERN;
    }
    p->G = cfg.num_patterns;
    for (int32_t i = 0; i < cfg.num_patterns; i++) {
        rda_pattern pt = cfg.patterns[i];
        if (pt.segment < 1 || pt.dilation < 1 || pt.dilation > pt.segment) {
            rda_set_msg(msg,
                        "pattern %d (segment %lld, dilation %lld): need segment >= 1 and "
                        "1 <= dilation <= segment",
                        i, (long long)pt.segment, (long long)pt.dilation);
            return RDA_STATUS_INVALID_PATTERN;
        }
        p->given[i] = pt;
        p->patterns[i].segment = pt.segment < N ? pt.segment : N;
        p->patterns[i].dilation = pt.dilation < p->patterns[i].segment ? pt.dilation : p->patterns[i].segment;
    }
    return RDA_STATUS_SUCCESS;
}

/* Largest element offset a view can reach, or -1 on overflow. */
static int64_t max_offset(const rda_tensor *t) {
    int64_t off = 0;
    for (int32_t i = 0; i < t->ndim; i++) {
        int64_t m;
        if (__builtin_mul_overflow(t->shape[i] - 1, t->strides[i], &m)) return -1;
        if (__builtin_add_overflow(off, m, &off)) return -1;
    }
    return off;
}

static rda_status check_view(const rda_tensor *t, const char *name, int32_t ndim, char *msg) {
    if (!t) {
        rda_set_msg(msg, "tensor %s is NULL", name);
        return RDA_STATUS_NULL_POINTER;
    }
    if (!t->data) {
        rda_set_msg(msg, "tensor %s has a NULL data pointer", name);
        return RDA_STATUS_NULL_POINTER;
    }
    if (rda_dtype_size(t->dtype) == 0) {
        rda_set_msg(msg, "tensor %s has an unknown dtype %d", name, (int)t->dtype);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (t->ndim != ndim) {
        rda_set_msg(msg, "tensor %s must have %d dimensions, has %d", name, ndim, t->ndim);
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    int64_t elems = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (t->shape[i] < 1) {
            rda_set_msg(msg, "tensor %s: dimension %d has size %lld (must be >= 1)", name, i,
                        (long long)t->shape[i]);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
        if (t->strides[i] < 0 || (t->strides[i] == 0 && t->shape[i] > 1)) {
            rda_set_msg(msg, "tensor %s: stride %lld of dimension %d is not allowed", name,
                        (long long)t->strides[i], i);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
        if (__builtin_mul_overflow(elems, t->shape[i], &elems)) {
            rda_set_msg(msg, "tensor %s: element count overflows", name);
            return RDA_STATUS_OVERFLOW;
        }
    }
    int64_t off = max_offset(t), bytes;
    if (off < 0 || __builtin_mul_overflow(off + 1, (int64_t)rda_dtype_size(t->dtype), &bytes)) {
        rda_set_msg(msg, "tensor %s: extent overflows", name);
        return RDA_STATUS_OVERFLOW;
    }
    return RDA_STATUS_SUCCESS;
}

bool rda_tensors_overlap(const rda_tensor *a, const rda_tensor *b) {
    uintptr_t a0 = (uintptr_t)a->data, b0 = (uintptr_t)b->data;
    uintptr_t a1 = a0 + (uintptr_t)(max_offset(a) + 1) * rda_dtype_size(a->dtype);
    uintptr_t b1 = b0 + (uintptr_t)(max_offset(b) + 1) * rda_dtype_size(b->dtype);
    return a0 < b1 && b0 < a1;
}

/* o == NULL only through rda_validate_inputs */
static rda_status validate(const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                           const rda_tensor *o, const rda_tensor *lse, int64_t n_local,
                           bool n_local_known, bool inputs_only, rda_problem *p, char *msg) {
    rda_status st;
    if ((st = check_view(q, "q", 4, msg)) || (st = check_view(k, "k", 4, msg)) ||
        (st = check_view(v, "v", 4, msg)) || (!inputs_only && (st = check_view(o, "o", 4, msg))))
        return st;
    if (lse && (st = check_view(lse, "lse", 3, msg))) return st;
    if (k->dtype != q->dtype || v->dtype != q->dtype || (o && o->dtype != q->dtype)) {
        rda_set_msg(msg, "q, k, v, o must share one dtype (got %s, %s, %s, %s)",
                    rda_dtype_name(q->dtype), rda_dtype_name(k->dtype), rda_dtype_name(v->dtype),
                    rda_dtype_name(o ? o->dtype : q->dtype));
        return RDA_STATUS_DTYPE_MISMATCH;
    }
    if (lse && lse->dtype != RDA_DTYPE_F32) {
        rda_set_msg(msg, "lse must be fp32, got %s", rda_dtype_name(lse->dtype));
        return RDA_STATUS_DTYPE_MISMATCH;
    }
    for (int i = 0; i < 4; i++) {
        if (o && o->shape[i] != q->shape[i]) {
            rda_set_msg(msg, "o shape must equal q shape (dimension %d: %lld vs %lld)", i,
                        (long long)o->shape[i], (long long)q->shape[i]);
            return RDA_STATUS_SHAPE_MISMATCH;
        }
        if (v->shape[i] != k->shape[i]) {
            rda_set_msg(msg, "v shape must equal k shape (dimension %d: %lld vs %lld)", i,
                        (long long)v->shape[i], (long long)k->shape[i]);
            return RDA_STATUS_SHAPE_MISMATCH;
        }
    }
    if (k->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] || k->shape[3] != q->shape[3]) {
        rda_set_msg(msg, "k must have q's batch, sequence and head-dim sizes");
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    if (q->shape[2] % k->shape[2] != 0) {
        rda_set_msg(msg, "q heads (%lld) must be a multiple of k/v heads (%lld)",
                    (long long)q->shape[2], (long long)k->shape[2]);
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    if (q->shape[3] > RDA_MAX_HEAD_DIM) {
        rda_set_msg(msg, "head dim %lld exceeds RDA_MAX_HEAD_DIM (%d)", (long long)q->shape[3],
                    RDA_MAX_HEAD_DIM);
        return RDA_STATUS_UNSUPPORTED;
    }
    if (n_local_known && q->shape[1] != n_local) {
        rda_set_msg(msg, "this rank owns %lld rows but q has %lld", (long long)n_local,
                    (long long)q->shape[1]);
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    if (lse && (lse->shape[0] != q->shape[0] || lse->shape[1] != q->shape[2] ||
                lse->shape[2] != q->shape[1])) {
        rda_set_msg(msg, "lse must have shape [B, H, N] = [%lld, %lld, %lld]",
                    (long long)q->shape[0], (long long)q->shape[2], (long long)q->shape[1]);
        return RDA_STATUS_SHAPE_MISMATCH;
    }
    const rda_tensor *ins[3] = {q, k, v};
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3 && o; i++) {
        if (rda_tensors_overlap(o, ins[i])) {
            rda_set_msg(msg, "o overlaps %s", names[i]);
            return RDA_STATUS_ALIASING;
        }
        if (lse && rda_tensors_overlap(lse, ins[i])) {
            rda_set_msg(msg, "lse overlaps %s", names[i]);
            return RDA_STATUS_ALIASING;
        }
    }
    if (lse && o && rda_tensors_overlap(lse, o)) {
        rda_set_msg(msg, "lse overlaps o");
        return RDA_STATUS_ALIASING;
    }
    p->B = q->shape[0];
    p->H = q->shape[2];
    p->Hkv = k->shape[2];
    p->D = q->shape[3];
    p->dtype = q->dtype;
    return RDA_STATUS_SUCCESS;
}

rda_status rda_validate_tensors(const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                                const rda_tensor *o, const rda_tensor *lse, int64_t n_local,
                                bool n_local_known, rda_problem *p, char *msg) {
    return validate(q, k, v, o, lse, n_local, n_local_known, false, p, msg);
}

rda_status rda_validate_inputs(const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                               rda_problem *p, char *msg) {
    return validate(q, k, v, NULL, NULL, 0, false, true, p, msg);
}

static rda_status like(const rda_tensor *t, const char *name, const rda_tensor *ref, const char *refname,
                       char *msg) {
    rda_status st = check_view(t, name, 4, msg);
    if (st) return st;
    if (t->dtype != ref->dtype) {
        rda_set_msg(msg, "%s must have the dtype of %s (%s, got %s)", name, refname, rda_dtype_name(ref->dtype),
                    rda_dtype_name(t->dtype));
        return RDA_STATUS_DTYPE_MISMATCH;
    }
    for (int i = 0; i < 4; i++)
        if (t->shape[i] != ref->shape[i]) {
            rda_set_msg(msg, "%s shape must equal %s shape (dimension %d: %lld vs %lld)", name, refname, i,
                        (long long)t->shape[i], (long long)ref->shape[i]);
            return RDA_STATUS_SHAPE_MISMATCH;
        }
    return RDA_STATUS_SUCCESS;
}

rda_status rda_validate_backward(const rda_bwd_tensors *t, int64_t n_local, bool n_local_known,
                                 rda_problem *p, char *msg) {
    rda_status st;
    if (!t->o) {
        rda_set_msg(msg, "tensor o is NULL (the backward needs the forward's output)");
        return RDA_STATUS_NULL_POINTER;
    }
    if (!t->lse) {
        rda_set_msg(msg, "tensor lse is NULL (the backward needs the forward's LSE: pass one to the forward and keep it)");
        return RDA_STATUS_NULL_POINTER;
    }
    if ((st = validate(t->q, t->k, t->v, t->o, t->lse, n_local, n_local_known, false, p, msg))) return st;
    if ((st = like(t->dout, "dout", t->q, "q", msg)) || (st = like(t->dq, "dq", t->q, "q", msg)) ||
        (st = like(t->dk, "dk", t->k, "k", msg)) || (st = like(t->dv, "dv", t->k, "k", msg)))
        return st;
    const rda_tensor *ins[6] = {t->q, t->k, t->v, t->o, t->lse, t->dout}, *outs[3] = {t->dq, t->dk, t->dv};
    static const char *in_names[6] = {"q", "k", "v", "o", "lse", "dout"}, *out_names[3] = {"dq", "dk", "dv"};
    for (int j = 0; j < 3; j++) {
        for (int i = 0; i < 6; i++)
            if (rda_tensors_overlap(outs[j], ins[i])) {
                rda_set_msg(msg, "%s overlaps %s", out_names[j], in_names[i]);
                return RDA_STATUS_ALIASING;
            }
        for (int i = 0; i < j; i++)
            if (rda_tensors_overlap(outs[j], outs[i])) {
                rda_set_msg(msg, "%s overlaps %s", out_names[j], out_names[i]);
                return RDA_STATUS_ALIASING;
            }
    }
    return RDA_STATUS_SUCCESS;
}
