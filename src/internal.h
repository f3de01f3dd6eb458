/* Internal declarations shared by the library's parts. Not installed. */
#ifndef RDA_INTERNAL_H
#define RDA_INTERNAL_H

#include "rda.h"

#include <stdarg.h>
#include <stdbool.h>

#include "threadpool.h"

#define RDA_MSG_LEN 512

/* Records the first failure into a message buffer and jumps to cleanup.
 * Used as: RDA_CHECK(msg, cond, STATUS, "fmt", ...). */
void rda_set_msg(char *msg, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* An invariant that only a bug can break: becomes RDA_STATUS_INTERNAL with
 * the statement, file and line, never an abort. Needs `st` and `msg`. */
#define RDA_ASSERT(cond, label)                                                          \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            rda_set_msg(msg, "internal error: %s (%s:%d)", #cond, __FILE__, __LINE__);   \
            st = RDA_STATUS_INTERNAL;                                                    \
            goto label;                                                                  \
        }                                                                                \
    } while (0)

/* Workspace: one buffer per context, grown when a call needs more and
 * reused by later calls, so the hot path does not allocate. A call asks for
 * its total once (rda_context_reserve) and carves its parts from it. */
#define RDA_ALIGN(b) (((size_t)(b) + 63) & ~(size_t)63)

typedef struct {
    char *p;
    size_t left;
} rda_carver;

static inline void *rda_carve(rda_carver *c, size_t bytes) {
    bytes = RDA_ALIGN(bytes);
    if (bytes > c->left) return NULL;
    void *r = c->p;
    c->p += bytes;
    c->left -= bytes;
    return r;
}

/* Makes the context's workspace hold at least `bytes` and points *c at it.
 * Records `bytes` as what the current call holds. */
rda_status rda_context_reserve(rda_context *ctx, size_t bytes, rda_carver *c);

struct rda_context {
    rda_backend backend;
    int32_t num_threads;
    int32_t device;
    rda_pool *pool;
    void *ws_raw, *ws;      /* workspace (ws: 64-byte aligned inside ws_raw) */
    size_t ws_cap, ws_used; /* capacity; bytes the last call held */
    void *call;             /* the backend's state for the call in progress */
    void *cuda;             /* CUDA backend: device, stream, device workspace */
    rda_context **ranks;    /* contexts of simulated ranks, kept between calls */
    int32_t num_ranks;
    /* rings over several GPUs (rda_ring_forward_gpus): one context and one
     * NCCL communicator per GPU, kept between calls with the same devices
     * (dropped after a failed call: its communicators may be torn down) */
    rda_context **gpu_ctx;
    struct rda_comm **gpu_comms;
    int32_t *gpu_devices;
    int32_t gpu_P;
    char msg[RDA_MSG_LEN];
};

void rda_gpu_ring_release(rda_context *ctx);

/* A validated problem: the config normalised and the tensor geometry. */
typedef struct rda_problem {
    rda_mode mode;
    bool causal;
    double scale;
    int32_t G;                          /* patterns in use (1 for dense) */
    /* as planned: segment min(w, N), dilation min(r, that) (SPEC.md, "Edge
     * values": the same selection, and nothing can overflow) */
    rda_pattern patterns[RDA_MAX_PATTERNS];
    /* as given; offsets are taken modulo the given dilation */
    rda_pattern given[RDA_MAX_PATTERNS];
    rda_layout layout;
    double timeout_seconds;
    bool deterministic;                 /* the backward without atomics (config.deterministic) */
    int64_t B, N, H, Hkv, D;            /* N: full sequence length */
    rda_dtype dtype;
} rda_problem;

#ifdef RDA_HAVE_CUDA
/* CUDA backend lifetime (src/cuda/backend.cu). */
rda_status rda_cuda_context_init(rda_context *ctx, int32_t device, void *stream, rda_stream_mode mode);
void rda_cuda_context_destroy(rda_context *ctx);
rda_status rda_cuda_synchronize(rda_context *ctx);
rda_status rda_cuda_set_stream(rda_context *ctx, void *stream);
void *rda_cuda_get_stream(const rda_context *ctx);
int rda_cuda_device_count(void);
/* The calling thread's current CUDA device (-1 without CUDA), and back. The
 * library leaves the caller's current device as it found it. */
int rda_cuda_get_device(void);
void rda_cuda_set_device(int device);
#endif

/* Validates the config (not the tensors) and fills the pattern fields of p. */
rda_status rda_problem_from_config(const rda_config *cfg, int64_t N, rda_problem *p, char *msg);

/* Validates q/k/v/o/lse for a problem with n_local rows on this rank and
 * fills B, H, Hkv, D, dtype of p. */
rda_status rda_validate_tensors(const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                                const rda_tensor *o, const rda_tensor *lse, int64_t n_local,
                                bool n_local_known, rda_problem *p, char *msg);
/* The same for q/k/v alone (the caller checks its outputs against them). */
rda_status rda_validate_inputs(const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                               rda_problem *p, char *msg);

/* The tensors of a backward call on one rank (its rows). */
typedef struct rda_bwd_tensors {
    const rda_tensor *q, *k, *v, *o, *lse, *dout; /* inputs (lse required) */
    rda_tensor *dq, *dk, *dv;                     /* outputs */
} rda_bwd_tensors;

/* Validates a backward's tensors as rda_validate_tensors does a forward's
 * (o and lse as inputs; dout like q; dq like q, dk and dv like k; outputs
 * overlapping nothing) and fills p likewise. */
rda_status rda_validate_backward(const rda_bwd_tensors *t, int64_t n_local, bool n_local_known,
                                 rda_problem *p, char *msg);

/* Whether the memory two tensor views can reach overlaps (by address range). */
bool rda_tensors_overlap(const rda_tensor *a, const rda_tensor *b);

/* Element access helpers for the element types. */
float rda_load_f32(const void *base, rda_dtype dt, int64_t idx);
double rda_load_f64(const void *base, rda_dtype dt, int64_t idx);
void rda_store_f32(void *base, rda_dtype dt, int64_t idx, float x);
void rda_store_f64(void *base, rda_dtype dt, int64_t idx, double x);

#endif /* RDA_INTERNAL_H */
