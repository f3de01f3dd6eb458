/*
 * rda.h - ring attention with dilated patterns (the one public header).
 *
 * Usage (one rank, dilated attention in LongNet mode, fp32 on the CPU):
 *
 *     rda_context *ctx = NULL;
 *     rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;   // CPU backend, all cores
 *     if (rda_context_create(&cp, &ctx) != RDA_STATUS_SUCCESS) { ... }
 *
 *     rda_config cfg = RDA_CONFIG_INIT;                  // dense, non-causal
 *     cfg.mode = RDA_MODE_LONGNET;
 *     cfg.num_patterns = 2;
 *     cfg.patterns[0] = (rda_pattern){2048, 1};          // segment, dilation
 *     cfg.patterns[1] = (rda_pattern){4096, 2};
 *
 *     int64_t shape[4] = {B, N, H, D};
 *     rda_tensor q = rda_tensor_contiguous(q_ptr, RDA_DTYPE_F32, 4, shape);
 *     ... k, v, o likewise ...
 *     rda_status st = rda_attention_forward(ctx, &cfg, &q, &k, &v, &o, NULL);
 *     if (st != RDA_STATUS_SUCCESS)
 *         fprintf(stderr, "%s: %s\n", rda_status_to_string(st), rda_context_last_error(ctx));
 *     rda_context_destroy(ctx);
 *
 * Layout and conventions
 * - Q, K, V, O have shape [B, N, H, D] (batch, sequence, heads, head dim) and
 *   one element type for all four. Strides are in elements, any non-negative
 *   values; a zero stride is allowed only on a dimension of size 1. The
 *   contiguous row-major layout is the fast path.
 * - The optional LSE output has shape [B, H, N], fp32: the natural log of the
 *   softmax denominator of each output row (-inf where a row attends to
 *   nothing). In `groups` mode it is the LSE of the row's one pattern; in
 *   `longnet` and dense modes it is the combined L of SPEC.md.
 * - Accumulation is fp32 on every fast path, fp64 on the reference backend.
 * - Ownership: the caller owns every tensor; an rda_tensor is a view that
 *   never owns or frees memory. Handles (context, communicator) are owned by
 *   the caller between create and destroy.
 * - Aliasing: O and LSE must not overlap Q, K, V or each other; Q, K and V
 *   may alias each other (self-attention on one buffer is fine).
 * - Errors: every call returns an rda_status. A rejected call writes nothing
 *   to its outputs; the context's last error message says why. The library
 *   never aborts or exits on bad input.
 * - Threads: a context may be used by one thread at a time. Distinct contexts
 *   are independent.
 *
 * The exact mathematics (patterns, the two ways of combining them, the ring
 * layout, tolerances) is in docs/SPEC.md, which this header follows.
 */
#ifndef RDA_H
#define RDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(RDA_BUILD_SHARED)
#define RDA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define RDA_API __attribute__((visibility("default")))
#else
#define RDA_API
#endif

#define RDA_VERSION_MAJOR 0
#define RDA_VERSION_MINOR 2
#define RDA_VERSION_PATCH 0
#define RDA_VERSION (RDA_VERSION_MAJOR * 10000 + RDA_VERSION_MINOR * 100 + RDA_VERSION_PATCH)

/* Version of the library actually linked: RDA_VERSION at its build time. */
RDA_API int rda_version(void);
RDA_API const char *rda_version_string(void);

/* ------------------------------------------------------------------ status */

/* Values are only ever appended. */
typedef enum rda_status {
    RDA_STATUS_SUCCESS = 0,
    RDA_STATUS_NULL_POINTER = 1,     /* a required pointer was NULL */
    RDA_STATUS_INVALID_ARGUMENT = 2, /* a value out of range (size <= 0, bad enum, ...) */
    RDA_STATUS_SHAPE_MISMATCH = 3,   /* tensors whose shapes do not fit together */
    RDA_STATUS_DTYPE_MISMATCH = 4,   /* tensors of different element types, or LSE not fp32 */
    RDA_STATUS_INVALID_PATTERN = 5,  /* empty or invalid pattern list */
    RDA_STATUS_OVERFLOW = 6,         /* sizes whose product overflows */
    RDA_STATUS_ALIASING = 7,         /* an output overlaps an input or another output */
    RDA_STATUS_UNSUPPORTED = 8,      /* valid, but not supported by this backend/build */
    RDA_STATUS_OUT_OF_MEMORY = 9,
    RDA_STATUS_COMM_ERROR = 10,      /* a peer failed or the transport reported an error */
    RDA_STATUS_TIMEOUT = 11,         /* a peer did not answer before the deadline */
    RDA_STATUS_CONFIG_MISMATCH = 12, /* ranks of one ring were given different configurations */
    RDA_STATUS_INTERNAL = 13,        /* a bug: please report it with the message */
    RDA_STATUS_IO_ERROR = 14,        /* file input/output (tools only) */
    RDA_STATUS_DEVICE_ERROR = 15     /* the GPU runtime reported an error */
} rda_status;

RDA_API const char *rda_status_to_string(rda_status status);

/* ------------------------------------------------------------------ tensors */

typedef enum rda_dtype {
    RDA_DTYPE_F32 = 0,
    RDA_DTYPE_F16 = 1,
    RDA_DTYPE_BF16 = 2,
    RDA_DTYPE_F64 = 3 /* reference backend only */
} rda_dtype;

RDA_API size_t rda_dtype_size(rda_dtype dtype);
RDA_API const char *rda_dtype_name(rda_dtype dtype);

#define RDA_MAX_DIMS 4

/* A view of caller memory; never owns it. Q/K/V/O: ndim 4, [B, N, H, D].
 * LSE: ndim 3, [B, H, N]. strides[i] in elements. */
typedef struct rda_tensor {
    void *data;
    rda_dtype dtype;
    int32_t ndim;
    int64_t shape[RDA_MAX_DIMS];
    int64_t strides[RDA_MAX_DIMS];
} rda_tensor;

/* A contiguous row-major view (strides computed from the shape). */
RDA_API rda_tensor rda_tensor_contiguous(void *data, rda_dtype dtype, int32_t ndim,
                                         const int64_t *shape);

/* ------------------------------------------------------------------ config */

typedef enum rda_mode {
    RDA_MODE_DENSE = 0,   /* ordinary attention; patterns are ignored */
    RDA_MODE_GROUPS = 1,  /* head groups, one pattern each, output / G */
    RDA_MODE_LONGNET = 2  /* every head every pattern, LSE-weighted merge */
} rda_mode;

typedef enum rda_layout {
    RDA_LAYOUT_CONTIGUOUS = 0, /* rank p owns one contiguous chunk */
    RDA_LAYOUT_ZIGZAG = 1      /* 2P chunks, rank p owns p and 2P-1-p (causal balance) */
} rda_layout;

/* A dilated pattern: segment length w >= 1, dilation r with 1 <= r <= w. */
typedef struct rda_pattern {
    int64_t segment;
    int64_t dilation;
} rda_pattern;

#define RDA_MAX_PATTERNS 16
#define RDA_MAX_HEAD_DIM 1024

#define RDA_CONFIG_VERSION 1

/* What to compute. Set up with RDA_CONFIG_INIT, then change fields: fields
 * are only ever appended, and struct_size tells the library which ones a
 * caller compiled against. */
typedef struct rda_config {
    uint32_t struct_size;  /* sizeof(rda_config) as the caller compiled it */
    uint32_t version;      /* RDA_CONFIG_VERSION */
    rda_mode mode;
    int32_t causal;        /* 0: every key allowed; 1: key position <= query position */
    double scale;          /* softmax scale; 0 means 1/sqrt(D) */
    int32_t num_patterns;  /* G, 1..RDA_MAX_PATTERNS (ignored in dense mode) */
    rda_pattern patterns[RDA_MAX_PATTERNS];
    rda_layout layout;     /* ring layout; ignored on one rank */
    int32_t allow_tf32;    /* reserved for GPU backends: 0 keeps fp32 exact */
    double timeout_seconds;/* deadline of every ring wait; 0 means 60 s */
    /* 1: the backward's dQ, dK, dV are bit-identical from run to run (on
     * the CUDA backend: the tensor-core kernels, fp16/bf16 at D = 64 or
     * 128 with a contiguous head dim, with no atomics; other shapes are
     * refused with RDA_STATUS_UNSUPPORTED). The CPU backends always are. */
    int32_t deterministic;
} rda_config;

#define RDA_CONFIG_INIT                                                                   \
    {                                                                                     \
        (uint32_t) sizeof(rda_config), RDA_CONFIG_VERSION, RDA_MODE_DENSE, 0, 0.0, 0, {{0, 0}}, \
            RDA_LAYOUT_CONTIGUOUS, 0, 0.0, 0                                              \
    }

/* ------------------------------------------------------------------ context */

typedef enum rda_backend {
    RDA_BACKEND_CPU = 0,       /* blocked online-softmax fast path, fp32 accumulation */
    RDA_BACKEND_REFERENCE = 1, /* naive fp64 algorithm of SPEC.md (slow; the oracle) */
    /* The naive algorithm in the tensors' own type: scores and probabilities
     * rounded to it, fp32 sums. The baseline of SPEC.md's max_abs rule. */
    RDA_BACKEND_REFERENCE_SAME_TYPE = 2,
    /* NVIDIA GPU (fused kernels, tensor cores for fp16/bf16). Tensors are
     * device pointers; calls are ordered on the context's stream and return
     * before the GPU is done: see "CUDA streams" below. */
    RDA_BACKEND_CUDA = 3
} rda_backend;

/* How a CUDA context reads rda_context_params.stream. */
typedef enum rda_stream_mode {
    /* `stream` if it is not NULL, else a non-blocking stream the context
     * creates and owns (version 0.1's only behaviour; callers compiled
     * against 0.1 get it). That stream does not wait for the legacy
     * default stream: a cudaMemset, or a cudaMemcpy from pageable host
     * memory, can still be running when it returns, so synchronise (or
     * order by an event) before a call reads what they wrote */
    RDA_STREAM_AUTO = 0,
    /* exactly `stream`, NULL included, as cuBLAS and cuDNN read a stream:
     * NULL (0) is the legacy default stream (PyTorch's default stream),
     * cudaStreamPerThread the per-thread default stream, anything else a
     * stream the caller created and keeps alive while the context uses it */
    RDA_STREAM_CALLER = 1,
    /* a non-blocking stream of the context's own; `stream` must be NULL */
    RDA_STREAM_PRIVATE = 2
} rda_stream_mode;

/* Fields are only ever appended; struct_size says which ones a caller has
 * (a caller compiled against an older header gets the defaults of
 * RDA_CONTEXT_PARAMS_INIT for the rest). */
typedef struct rda_context_params {
    uint32_t struct_size;
    rda_backend backend;
    int32_t num_threads; /* 0: all online cores */
    int32_t device;      /* CUDA device ordinal (CUDA backend) */
    void *stream;        /* cudaStream_t to work on, read as stream_mode says */
    rda_stream_mode stream_mode; /* (since 0.2) */
} rda_context_params;

#define RDA_CONTEXT_PARAMS_INIT \
    {(uint32_t) sizeof(rda_context_params), RDA_BACKEND_CPU, 0, 0, NULL, RDA_STREAM_AUTO}

/* 1 if this build has the CUDA backend and a CUDA device is present. */
RDA_API int rda_cuda_available(void);

/* The instruction-set level of the CPU fast path in this process: "avx512",
 * "avx2" or "sse2" on x86-64, "neon" on AArch64, "generic" elsewhere. The
 * library carries the kernels of every level of its architecture and uses
 * the best one the CPU has; the environment variable RDA_CPU_ISA, read once
 * per process, forces a lower one (for tests and measurements). NULL when
 * RDA_CPU_ISA names no level of this build or one the CPU lacks; the fast
 * path's calls then fail with RDA_STATUS_INVALID_ARGUMENT and say why. */
RDA_API const char *rda_cpu_isa(void);
/* The levels this build carries, best first (the last runs on any CPU of the
 * architecture): writes up to cap of their names to names and, for each,
 * whether this CPU can run it (1 or 0) to supported (either may be NULL).
 * Returns how many there are. */
RDA_API int32_t rda_cpu_isa_levels(const char **names, int32_t *supported, int32_t cap);

typedef struct rda_context rda_context;

RDA_API rda_status rda_context_create(const rda_context_params *params, rda_context **out);
RDA_API void rda_context_destroy(rda_context *ctx);
/* The message of the last failed call on ctx ("" after a success). */
RDA_API const char *rda_context_last_error(const rda_context *ctx);
RDA_API int32_t rda_context_num_threads(const rda_context *ctx);
/* Waits until the work issued on ctx is done (a no-op on the CPU backends). */
RDA_API rda_status rda_context_synchronize(rda_context *ctx);

/* CUDA streams. Every call on a CUDA context is ordered on its stream: it
 * starts after the work issued there before it and returns before it is
 * done (the caller's next kernel on the same stream sees its results). A
 * one-rank forward with a shape the context has run before synchronises
 * nothing and allocates nothing, so it can be captured in a CUDA graph
 * (cudaStreamBeginCapture, any capture mode): run each shape once before
 * capturing it. A captured graph uses the context's workspace, which stays
 * valid until the context is destroyed (a later call that needs more
 * memory keeps the old block for the graph); replays must be ordered with
 * the context's other calls, as the calls themselves are (same stream, or
 * events). Ring calls synchronise between their steps; do not capture them.
 *
 * rda_context_set_stream makes later calls work on `stream`, read as
 * RDA_STREAM_CALLER reads it (NULL: the legacy default stream). Work
 * already issued on the previous stream is waited for on the device (an
 * event, no host wait), so a switch never races; except where either
 * stream is being captured into a graph, whose own ordering (before the
 * capture begins) is then the capturing code's, as torch.cuda.graph orders
 * its capture stream after the current one. A stream the context created
 * itself is kept until the context is destroyed.
 * RDA_STATUS_UNSUPPORTED on the CPU backends. */
RDA_API rda_status rda_context_set_stream(rda_context *ctx, void *stream);
/* The cudaStream_t ctx works on (NULL on the CPU backends, and for the
 * legacy default stream). */
RDA_API void *rda_context_get_stream(const rda_context *ctx);

/* Bytes of library memory (the context's workspace) the last forward call
 * on ctx held; caller tensors are not included. The workspace is kept and
 * reused by later calls, so steady-state calls do not allocate. */
RDA_API int64_t rda_context_workspace_bytes(const rda_context *ctx);

/* ------------------------------------------------------------------ planning */

/* Exact number of (query, allowed key) pairs of a full problem, summed over
 * B, H and patterns; FLOPs are 4 * D * pairs. */
RDA_API rda_status rda_count_pairs(const rda_config *cfg, int64_t B, int64_t N, int64_t H,
                                   int64_t *pairs);

/* Rows owned by `rank` of a P-rank ring of length N: up to two ranges
 * [starts[i], starts[i] + counts[i]) in sequence positions, concatenated in
 * this order in the rank's local tensors. Returns the number of ranges. */
RDA_API rda_status rda_ring_partition(int64_t N, int32_t P, rda_layout layout, int32_t rank,
                                      int64_t starts[2], int64_t counts[2], int32_t *num_ranges);

/* ------------------------------------------------------------------ forward */

/* O = attention(Q, K, V) as cfg says, on one rank. lse may be NULL. */
RDA_API rda_status rda_attention_forward(rda_context *ctx, const rda_config *cfg,
                                         const rda_tensor *q, const rda_tensor *k,
                                         const rda_tensor *v, rda_tensor *o, rda_tensor *lse);

/* The fp64 reference at chosen query rows only: for checking sequences too
 * long for the full reference. rows: nrows positions in [0, N), used for
 * every (b, h). out: [B, nrows, H, D] fp64, contiguous; lse: [B, H, nrows]
 * fp32 or NULL. Any backend's context may run it. */
RDA_API rda_status rda_reference_rows(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                                      const rda_tensor *k, const rda_tensor *v,
                                      const int64_t *rows, int64_t nrows, double *out,
                                      float *lse);

/* The fp64 reference backward at chosen rows only (sequences too long for
 * the full one): for each position rows[j] (in [0, N), for every batch and
 * head), dq[b, j] = dL/dQ at that query row and dk[b, j], dv[b, j] = dL/dK,
 * dL/dV at that key row. Tensors as for rda_attention_backward; dq
 * [B, nrows, H, D], dk and dv [B, nrows, Hkv, D], fp64, contiguous. Any
 * backend's context may run it. */
RDA_API rda_status rda_reference_backward_rows(rda_context *ctx, const rda_config *cfg,
                                               const rda_tensor *q, const rda_tensor *k,
                                               const rda_tensor *v, const rda_tensor *o,
                                               const rda_tensor *lse, const rda_tensor *dout,
                                               const int64_t *rows, int64_t nrows, double *dq,
                                               double *dk, double *dv);

/* ------------------------------------------------------------------ backward */

/* The gradients of a forward (SPEC.md, "Backward pass"): given dout = dL/dO
 * for a loss L, dq, dk and dv receive dL/dQ, dL/dK and dL/dV of the forward
 * that cfg describes, exactly (in `longnet` mode each pattern block is an
 * ordinary attention backward with the combined LSE and the final O;
 * nothing is detached).
 * - Inputs: q, k, v as the forward got them; o and lse as the forward wrote
 *   them, which the caller saves for the backward (lse is required here,
 *   [B, H, N] fp32: pass an lse tensor to the forward); dout [B, N, H, D].
 * - Outputs: dq [B, N, H, D]; dk and dv [B, N, Hkv, D] (with fewer K/V heads
 *   than Q heads, each sums over its query heads). Every element is written:
 *   a query row with no allowed key gets dq = 0, a key no query reaches
 *   dk = dv = 0.
 * - One element type for q, k, v, o, dout, dq, dk, dv; strides as for the
 *   forward. dq, dk and dv must not overlap any input or each other
 *   (RDA_STATUS_ALIASING); the inputs may alias each other.
 * - Accumulation is fp32 on the fast paths, fp64 on the reference backend.
 *   A CUDA context takes device tensors and orders the work on its stream;
 *   its dK and dV are sums by fp32 atomics, so they are not bit-identical
 *   from run to run. */
RDA_API rda_status rda_attention_backward(rda_context *ctx, const rda_config *cfg,
                                          const rda_tensor *q, const rda_tensor *k,
                                          const rda_tensor *v, const rda_tensor *o,
                                          const rda_tensor *lse, const rda_tensor *dout,
                                          rda_tensor *dq, rda_tensor *dk, rda_tensor *dv);

/* ------------------------------------------------------------------ ring */

/* A communicator: one rank of a ring. Opaque; the engines behind it only
 * move bytes (send to the next rank, receive from the previous one). After
 * a failed ring call its ranks are told to stop waiting; destroy it then. */
typedef struct rda_comm rda_comm;

/* P linked communicators for P virtual ranks of one process, one per thread
 * that will call rda_ring_forward. comms must hold P pointers. */
RDA_API rda_status rda_comm_create_local(int32_t P, rda_comm **comms);
/* A communicator over MPI, one process per rank: mpi_comm points to an
 * MPI_Comm (a variable holding MPI_COMM_WORLD, say) of an initialised MPI; the library
 * works on a duplicate of it. Transfers are non-blocking and polled against
 * the config's deadline. RDA_STATUS_UNSUPPORTED in builds without MPI. */
RDA_API rda_status rda_comm_create_mpi(const void *mpi_comm, rda_comm **out);
/* A communicator over NCCL for a GPU rank (CUDA backend): nccl_comm points
 * to the caller's ncclComm_t (the caller keeps and destroys it), device is
 * the rank's GPU, stream the cudaStream_t transfers are ordered on (NULL:
 * a non-blocking stream the communicator creates and owns). Grouped send/receive; waits poll the stream and
 * ncclCommGetAsyncError against the deadline, and a failed or timed-out ring
 * is torn down with ncclCommAbort. RDA_STATUS_UNSUPPORTED without NCCL. */
RDA_API rda_status rda_comm_create_nccl(const void *nccl_comm, int32_t device, void *stream,
                                        rda_comm **out);
/* P communicators for P GPUs driven by one process (ncclCommInitAll), one
 * per thread that will call rda_ring_forward; streams may be NULL (each
 * communicator then has a non-blocking stream of its own). Neither call
 * changes the calling thread's current CUDA device. */
RDA_API rda_status rda_comm_create_nccl_local(int32_t P, const int32_t *devices,
                                              void *const *streams, rda_comm **comms);
/* A communicator over NCCL made from an NCCL unique id, one process (or
 * thread) per rank, as a framework builds one over its own process group:
 * rank 0 calls rda_nccl_unique_id, the id's bytes reach every rank by the
 * framework's broadcast, and each rank calls rda_comm_create_nccl_id with
 * the ring's size, its rank, its GPU and stream (as rda_comm_create_nccl).
 * The communicator owns the NCCL communicator it makes (ncclCommInitRank)
 * and destroys it with itself. id holds RDA_NCCL_ID_BYTES bytes.
 * RDA_STATUS_UNSUPPORTED without NCCL. */
#define RDA_NCCL_ID_BYTES 128
RDA_API rda_status rda_nccl_unique_id(void *id, size_t bytes);
RDA_API rda_status rda_comm_create_nccl_id(const void *id, size_t bytes, int32_t nranks, int32_t rank,
                                           int32_t device, void *stream, rda_comm **out);

/* A communicator whose transfers the caller implements: a framework's own
 * point-to-point layer (the Python package uses torch.distributed for CPU
 * tensors). The ring calls them from the thread that called it, one
 * transfer in flight at a time:
 *   start  starts sending send_bytes at send to rank `to` and receiving
 *          recv_bytes into recv from rank `from` (a count may be 0: nothing
 *          that way). The buffers are the context's: host memory on the
 *          CPU backends (device memory on CUDA, after a host wait for the
 *          rank's work). Returns 0, or nonzero when it failed.
 *   wait   waits for the started transfer at most timeout_s seconds:
 *          returns 0 when it is done, 1 when it is not done by then, any
 *          other value when it failed.
 *   abort  (may be NULL) this rank's ring failed; tell the peers if the
 *          transport can.
 *   release (may be NULL) called once, by rda_comm_destroy.
 * The configuration check before a ring (all ranks pass the same
 * configuration) runs over start and wait. */
typedef struct rda_comm_callbacks {
    int (*start)(void *user, const void *send, size_t send_bytes, int32_t to, void *recv, size_t recv_bytes,
                 int32_t from);
    int (*wait)(void *user, double timeout_s);
    void (*abort)(void *user);
    void (*release)(void *user);
    void *user;
} rda_comm_callbacks;
RDA_API rda_status rda_comm_create_callbacks(const rda_comm_callbacks *callbacks, int32_t rank, int32_t size,
                                             rda_comm **out);
RDA_API void rda_comm_destroy(rda_comm *comm);
RDA_API int32_t rda_comm_rank(const rda_comm *comm);
RDA_API int32_t rda_comm_size(const rda_comm *comm);

typedef struct rda_ring_stats {
    int64_t bytes_sent;  /* bytes this rank sent to its successor */
    int64_t peak_bytes;  /* bytes the rank held: its rows of q/k/v/o/lse + its workspace */
    int64_t pairs;       /* (query, allowed key) pairs this rank computed, summed over B, H */
    int32_t steps;       /* ring steps that ran (key/value blocks seen) */
    double seconds;      /* wall time of this rank's call */
} rda_ring_stats;

/* One rank's part of a ring forward. q/k/v/o hold only this rank's rows
 * (shape [B, n_local, H, D], rows as rda_ring_partition lists them) and lse,
 * if given, is [B, H, n_local]. N is the full sequence length. Every rank
 * must call it with the same cfg, N, B, H, D and dtype. stats may be NULL. */
RDA_API rda_status rda_ring_forward(rda_context *ctx, rda_comm *comm, const rda_config *cfg,
                                    int64_t N, const rda_tensor *q, const rda_tensor *k,
                                    const rda_tensor *v, rda_tensor *o, rda_tensor *lse,
                                    rda_ring_stats *stats);

/* One rank's part of a ring backward: every tensor holds only this rank's
 * rows (dk, dv too: each rank ends with the gradients of its own keys and
 * values; key/value blocks travel with their gradient accumulators, which
 * come back to their owner). Shapes as for rda_attention_backward with
 * n_local rows; the same agreement rules, deadlines and failure handling as
 * rda_ring_forward. stats may be NULL. */
RDA_API rda_status rda_ring_backward(rda_context *ctx, rda_comm *comm, const rda_config *cfg,
                                     int64_t N, const rda_tensor *q, const rda_tensor *k,
                                     const rda_tensor *v, const rda_tensor *o,
                                     const rda_tensor *lse, const rda_tensor *dout,
                                     rda_tensor *dq, rda_tensor *dk, rda_tensor *dv,
                                     rda_ring_stats *stats);

/* Convenience: a ring of P virtual ranks in this process over full tensors.
 * Each rank runs in its own thread with its own context (the threads of ctx
 * shared out among them) and touches only its own rows of q/k/v/o/lse.
 * stats, if given, holds P entries. */
RDA_API rda_status rda_ring_forward_simulated(rda_context *ctx, const rda_config *cfg,
                                              int32_t P, const rda_tensor *q,
                                              const rda_tensor *k, const rda_tensor *v,
                                              rda_tensor *o, rda_tensor *lse,
                                              rda_ring_stats *stats);

/* The backward twin of rda_ring_forward_simulated: full tensors, P virtual
 * ranks each touching only its own rows. stats: P entries or NULL. */
RDA_API rda_status rda_ring_backward_simulated(rda_context *ctx, const rda_config *cfg, int32_t P,
                                               const rda_tensor *q, const rda_tensor *k,
                                               const rda_tensor *v, const rda_tensor *o,
                                               const rda_tensor *lse, const rda_tensor *dout,
                                               rda_tensor *dq, rda_tensor *dk, rda_tensor *dv,
                                               rda_ring_stats *stats);

/* A real ring over P GPUs of this process (CUDA backend, NCCL between
 * them): rank r runs on devices[r] in its own thread, with its own copy of
 * its rows; q/k/v/o/lse are full tensors on ctx's GPU. stats: P entries. */
RDA_API rda_status rda_ring_forward_gpus(rda_context *ctx, const rda_config *cfg, int32_t P,
                                         const int32_t *devices, const rda_tensor *q,
                                         const rda_tensor *k, const rda_tensor *v, rda_tensor *o,
                                         rda_tensor *lse, rda_ring_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* RDA_H */
