/* The CUDA backend on the caller's streams and inside CUDA graphs:
 * - a context on the legacy default stream (handle 0), on the per-thread
 *   default stream and on a caller's stream: a result read on that stream
 *   right after the call, with no rda_context_synchronize, is complete and
 *   equals the result of a context with a stream of its own (the output is
 *   filled with NaN first and the work is long enough that a missing order
 *   shows);
 * - rda_context_set_stream: work issued before a switch is complete when
 *   the new stream is;
 * - graph capture (global mode, which refuses any host synchronisation)
 *   of one-rank forwards of every mode, causal or not, with tables small
 *   enough to travel in the launch and too large to; replays on new inputs
 *   equal eager calls bit for bit, also after calls of another shape
 *   between them (which make the workspace grow);
 * - repeated calls with one shape allocate no device memory;
 * - the stream settings that are refused.
 * Exits 77 (skipped) when there is no GPU. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "harness.h"
#include "cuda_harness.h"

#define CUDA_OK(call) CHECK((call) == cudaSuccess, "%s: %s", #call, cudaGetErrorString(cudaGetLastError()))

typedef struct {
    int64_t N, H, D;
    rda_dtype dt;
    void *q, *k, *v, *o; /* device */
    float *lse;
    size_t bytes;
    rda_tensor t[5];
} problem;

static void problem_init(problem *p, int64_t N, int64_t H, int64_t D, rda_dtype dt) {
    p->N = N, p->H = H, p->D = D, p->dt = dt;
    p->bytes = rda_dtype_size(dt) * (size_t)(N * H * D);
    void **bufs[4] = {&p->q, &p->k, &p->v, &p->o};
    for (int i = 0; i < 4; i++)
        if (cudaMalloc(bufs[i], p->bytes) != cudaSuccess) {
            fprintf(stderr, "cudaMalloc failed\n");
            exit(2);
        }
    if (cudaMalloc((void **)&p->lse, sizeof(float) * (size_t)(N * H)) != cudaSuccess) exit(2);
    int64_t sh[4] = {1, N, H, D}, lsh[3] = {1, H, N};
    for (int i = 0; i < 4; i++) p->t[i] = rda_tensor_contiguous(*bufs[i], dt, 4, sh);
    p->t[4] = rda_tensor_contiguous(p->lse, RDA_DTYPE_F32, 3, lsh);
}

static void problem_free(problem *p) {
    cudaFree(p->q), cudaFree(p->k), cudaFree(p->v), cudaFree(p->o), cudaFree(p->lse);
}

/* New random Q, K, V (uploaded synchronously), O and LSE set to NaN. */
static void problem_fill(problem *p, uint64_t seed) {
    void *h = malloc(p->bytes);
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    void *dst[3] = {p->q, p->k, p->v};
    for (int i = 0; i < 3; i++) {
        rda_fill_uniform(h, p->dt, p->N * p->H * p->D, &rng, -1, 1);
        dput(dst[i], h, p->bytes);
    }
    dset(p->o, 0xFF, p->bytes);
    dset(p->lse, 0xFF, sizeof(float) * (size_t)(p->N * p->H));
    cudaDeviceSynchronize();
    free(h);
}

static rda_status forward(rda_context *ctx, const rda_config *cfg, problem *p) {
    return rda_attention_forward(ctx, cfg, &p->t[0], &p->t[1], &p->t[2], &p->t[3], &p->t[4]);
}

/* O and LSE copied to the host on stream s (then waited for). */
static void fetch(const problem *p, cudaStream_t s, void *o, float *lse) {
    cudaMemcpyAsync(o, p->o, p->bytes, cudaMemcpyDeviceToHost, s);
    cudaMemcpyAsync(lse, p->lse, sizeof(float) * (size_t)(p->N * p->H), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
}

static rda_config config(int mode, int causal) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = (rda_mode)mode;
    cfg.causal = causal;
    cfg.num_patterns = 3;
    cfg.patterns[0] = (rda_pattern){1024, 1};
    cfg.patterns[1] = (rda_pattern){4096, 4};
    cfg.patterns[2] = (rda_pattern){16384, 16};
    return cfg;
}

static int same_bytes(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

static int64_t nan_count(const uint16_t *o, size_t n) {
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) c += (o[i] & 0x7C00) == 0x7C00 && (o[i] & 0x3FF);
    return c;
}

static rda_context *cuda_context(rda_stream_mode mode, void *stream) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CUDA;
    cp.stream = stream;
    cp.stream_mode = mode;
    rda_context *c = NULL;
    rda_status st = rda_context_create(&cp, &c);
    CHECK(st == RDA_STATUS_SUCCESS, "CUDA context, stream mode %d: %s", (int)mode, rda_status_to_string(st));
    return c;
}

/* The library on the stream s the caller reads on, against a context with
 * a stream of its own (synchronised). */
static void stream_case(const char *name, rda_stream_mode mode, cudaStream_t s, uint64_t seed) {
    problem p;
    problem_init(&p, 32768, 8, 64, RDA_DTYPE_F16);
    problem_fill(&p, seed);
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.causal = 0;
    rda_context *own = cuda_context(RDA_STREAM_PRIVATE, NULL), *on = cuda_context(mode, s);
    void *want = malloc(p.bytes), *got = malloc(p.bytes);
    float *lw = malloc(sizeof(float) * p.N * p.H), *lg = malloc(sizeof(float) * p.N * p.H);
    CHECK(forward(own, &cfg, &p) == RDA_STATUS_SUCCESS && rda_context_synchronize(own) == RDA_STATUS_SUCCESS,
          "%s: reference call", name);
    fetch(&p, 0, want, lw);
    CHECK(nan_count(want, p.bytes / 2) == 0, "%s: reference result has NaN", name);
    for (int rep = 0; rep < 3; rep++) {
        dset(p.o, 0xFF, p.bytes);
        dset(p.lse, 0xFF, sizeof(float) * (size_t)(p.N * p.H));
        cudaDeviceSynchronize();
        CHECK(rda_context_get_stream(on) == (void *)s, "%s: get_stream", name);
        rda_status st = forward(on, &cfg, &p);
        fetch(&p, s, got, lg); /* on the same stream, no synchronisation of the context first */
        CHECK(st == RDA_STATUS_SUCCESS && same_bytes(want, got, p.bytes) &&
                  same_bytes(lw, lg, sizeof(float) * (size_t)(p.N * p.H)),
              "%s, call %d: %s; the result read on the stream %s (%lld NaN)", name, rep, rda_status_to_string(st),
              same_bytes(want, got, p.bytes) ? "equals" : "differs", (long long)nan_count(got, p.bytes / 2));
    }
    rda_context_destroy(own);
    rda_context_destroy(on);
    free(want), free(got), free(lw), free(lg);
    problem_free(&p);
}

/* Two calls on stream a, a switch to stream b, a third call on b: after
 * waiting for b alone, all three outputs are complete. */
static void switch_case(uint64_t seed) {
    cudaStream_t a, b;
    cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
    problem p[3];
    rda_config cfg = RDA_CONFIG_INIT;
    rda_context *own = cuda_context(RDA_STREAM_PRIVATE, NULL), *ctx = cuda_context(RDA_STREAM_CALLER, a);
    void *want[3], *got = NULL;
    for (int i = 0; i < 3; i++) {
        problem_init(&p[i], 32768, 8, 64, RDA_DTYPE_F16);
        problem_fill(&p[i], seed + i);
        want[i] = malloc(p[i].bytes);
        float *l = malloc(sizeof(float) * 32768 * 8);
        forward(own, &cfg, &p[i]);
        rda_context_synchronize(own);
        fetch(&p[i], 0, want[i], l);
        free(l);
        dset(p[i].o, 0xFF, p[i].bytes);
    }
    cudaDeviceSynchronize();
    rda_status st = forward(ctx, &cfg, &p[0]);
    if (!st) st = forward(ctx, &cfg, &p[1]);
    if (!st) st = rda_context_set_stream(ctx, b);
    CHECK(rda_context_get_stream(ctx) == (void *)b, "set_stream: get_stream");
    if (!st) st = forward(ctx, &cfg, &p[2]);
    cudaStreamSynchronize(b);
    got = malloc(p[0].bytes);
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        cudaMemcpy(got, p[i].o, p[i].bytes, cudaMemcpyDeviceToHost);
        ok &= same_bytes(got, want[i], p[i].bytes);
    }
    CHECK(st == RDA_STATUS_SUCCESS && ok, "set_stream: %s, outputs complete after waiting for the new stream: %d",
          rda_status_to_string(st), ok);
    /* back to the legacy default stream, then a call there */
    CHECK(rda_context_set_stream(ctx, NULL) == RDA_STATUS_SUCCESS && rda_context_get_stream(ctx) == NULL,
          "set_stream(NULL)");
    dset(p[0].o, 0xFF, p[0].bytes);
    cudaDeviceSynchronize();
    st = forward(ctx, &cfg, &p[0]);
    cudaMemcpy(got, p[0].o, p[0].bytes, cudaMemcpyDeviceToHost); /* legacy stream: ordered after the call */
    CHECK(st == RDA_STATUS_SUCCESS && same_bytes(got, want[0], p[0].bytes), "a call on the legacy default stream after a switch");
    rda_context_destroy(ctx);
    rda_context_destroy(own);
    for (int i = 0; i < 3; i++) problem_free(&p[i]), free(want[i]);
    free(got);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
}

/* One forward of (mode, causal) at length N captured in a graph after one
 * eager call; replays on new inputs equal eager calls bit for bit. Between
 * capture and replay, calls of a longer sequence on the same context (its
 * workspace grows, its tables change). */
static void graph_case(int mode, int causal, int64_t N, uint64_t *seed) {
    char what[96];
    snprintf(what, sizeof what, "graph: mode %d causal %d N=%lld", mode, causal, (long long)N);
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    rda_context *ctx = cuda_context(RDA_STREAM_CALLER, s), *own = cuda_context(RDA_STREAM_PRIVATE, NULL);
    rda_config cfg = config(mode, causal);
    problem p, big;
    problem_init(&p, N, 8, 64, RDA_DTYPE_F16);
    problem_init(&big, 2 * N + 1000, 8, 64, RDA_DTYPE_F16);
    problem_fill(&p, (*seed)++);
    problem_fill(&big, (*seed)++);
    size_t nl = sizeof(float) * (size_t)(N * 8);
    void *want = malloc(p.bytes), *got = malloc(p.bytes);
    float *lw = malloc(nl), *lg = malloc(nl);

    /* the first call with the shape, then the capture */
    rda_status st = forward(ctx, &cfg, &p);
    cudaStreamSynchronize(s);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: warm-up %s: %s", what, rda_status_to_string(st), rda_context_last_error(ctx));
    size_t free0 = 0, free1 = 0, total = 0;
    cudaMemGetInfo(&free0, &total);
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    st = forward(ctx, &cfg, &p);
    cudaError_t ce = cudaStreamEndCapture(s, &g);
    CHECK(st == RDA_STATUS_SUCCESS && ce == cudaSuccess, "%s: capture %s (%s), %s", what, rda_status_to_string(st),
          rda_context_last_error(ctx), cudaGetErrorString(ce));
    cudaGetLastError();
    const graph_nodes gn = graph_node_counts(g);
    const size_t nodes = gn.kernels + gn.memsets + gn.copies + gn.other;
    printf("  %s: one call launches %zu kernels, %zu memsets, %zu copies (%zu other nodes)\n", what, gn.kernels,
           gn.memsets, gn.copies, gn.other);
    CHECK(g && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess, "%s: instantiate", what);
    cudaMemGetInfo(&free1, &total);
    /* (instantiation may take device memory of its own: compare calls only) */

    for (int rep = 0; rep < 3 && ge; rep++) {
        /* calls of another shape in between: the workspace grows, the tables change */
        if (rep == 1) {
            CHECK(forward(ctx, &cfg, &big) == RDA_STATUS_SUCCESS, "%s: a longer call between replays", what);
            cudaStreamSynchronize(s);
        }
        problem_fill(&p, (*seed)++);
        CHECK(forward(own, &cfg, &p) == RDA_STATUS_SUCCESS, "%s: eager call", what);
        rda_context_synchronize(own);
        fetch(&p, 0, want, lw);
        dset(p.o, 0xFF, p.bytes);
        dset(p.lse, 0xFF, nl);
        cudaDeviceSynchronize();
        ce = cudaGraphLaunch(ge, s);
        fetch(&p, s, got, lg);
        CHECK(ce == cudaSuccess && same_bytes(want, got, p.bytes) && same_bytes(lw, lg, nl) &&
                  nan_count(got, p.bytes / 2) == 0,
              "%s (%zu nodes), replay %d: %s, O %s, LSE %s", what, nodes, rep, cudaGetErrorString(ce),
              same_bytes(want, got, p.bytes) ? "equal" : "differs", same_bytes(lw, lg, nl) ? "equal" : "differs");
    }
    /* steady state: more calls with the same shape take no device memory */
    for (int i = 0; i < 3; i++) forward(ctx, &cfg, &p);
    cudaStreamSynchronize(s);
    size_t free2 = 0;
    cudaMemGetInfo(&free2, &total);
    int64_t before = rda_context_workspace_bytes(ctx);
    for (int i = 0; i < 3; i++) forward(ctx, &cfg, &p);
    cudaStreamSynchronize(s);
    size_t free3 = 0;
    cudaMemGetInfo(&free3, &total);
    CHECK(free3 == free2 && rda_context_workspace_bytes(ctx) == before,
          "%s: repeated calls took device memory (%lld bytes)", what, (long long)free2 - (long long)free3);
    (void)free0, (void)free1;
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    rda_context_destroy(ctx);
    rda_context_destroy(own);
    problem_free(&p);
    problem_free(&big);
    cudaStreamDestroy(s);
    free(want), free(got), free(lw), free(lg);
}

/* Capturing a shape the context has not run: refused with a message,
 * nothing written, and the capture can still end. */
static void graph_refusal(void) {
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    rda_context *ctx = cuda_context(RDA_STREAM_CALLER, s);
    problem p;
    problem_init(&p, 50000, 8, 64, RDA_DTYPE_F16);
    problem_fill(&p, 7);
    rda_config cfg = config(RDA_MODE_LONGNET, 1);
    cudaGraph_t g = NULL;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    rda_status st = forward(ctx, &cfg, &p);
    cudaError_t ce = cudaStreamEndCapture(s, &g);
    CHECK(st == RDA_STATUS_UNSUPPORTED && strstr(rda_context_last_error(ctx), "capture") && ce == cudaSuccess,
          "capture of a new shape: %s (%s), end capture %s", rda_status_to_string(st), rda_context_last_error(ctx),
          cudaGetErrorString(ce));
    cudaGetLastError();
    uint16_t o[64];
    cudaMemcpy(o, p.o, sizeof o, cudaMemcpyDeviceToHost);
    CHECK(nan_count(o, 64) == 64, "capture of a new shape: nothing written");
    if (g) cudaGraphDestroy(g);
    /* the context still works */
    st = forward(ctx, &cfg, &p);
    cudaStreamSynchronize(s);
    CHECK(st == RDA_STATUS_SUCCESS, "a call after a refused capture: %s", rda_context_last_error(ctx));
    rda_context_destroy(ctx);
    problem_free(&p);
    cudaStreamDestroy(s);
}

static void refusals(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    rda_context *c = NULL;
    cp.backend = RDA_BACKEND_CUDA;
    cp.stream_mode = RDA_STREAM_PRIVATE;
    cp.stream = (void *)cudaStreamPerThread;
    CHECK(rda_context_create(&cp, &c) == RDA_STATUS_INVALID_ARGUMENT && !c, "a private stream with a stream given");
    cp.stream_mode = (rda_stream_mode)7;
    CHECK(rda_context_create(&cp, &c) == RDA_STATUS_INVALID_ARGUMENT && !c, "an unknown stream mode");
    /* a caller compiled against 0.1 (no stream_mode): its stream is used */
    cp.stream_mode = RDA_STREAM_AUTO;
    cp.struct_size = (uint32_t)offsetof(rda_context_params, stream_mode);
    cp.stream = (void *)cudaStreamPerThread;
    CHECK(rda_context_create(&cp, &c) == RDA_STATUS_SUCCESS && rda_context_get_stream(c) == (void *)cudaStreamPerThread,
          "a 0.1 caller's stream");
    rda_context_destroy(c);
    c = NULL;
    cp.stream = NULL;
    CHECK(rda_context_create(&cp, &c) == RDA_STATUS_SUCCESS && rda_context_get_stream(c) != NULL,
          "a 0.1 caller without a stream gets a private one");
    rda_context_destroy(c);
}

int main(void) {
    if (!rda_cuda_available()) {
        printf("cuda_stream: skipped (no CUDA device, or built without the CUDA backend)\n");
        return 77;
    }
    uint64_t seed = 900;
    refusals();
    stream_case("legacy default stream", RDA_STREAM_CALLER, 0, seed++);
    stream_case("per-thread default stream", RDA_STREAM_CALLER, cudaStreamPerThread, seed++);
    cudaStream_t mine;
    cudaStreamCreate(&mine); /* a blocking stream of the caller */
    stream_case("caller's stream", RDA_STREAM_CALLER, mine, seed++);
    stream_case("caller's stream (auto)", RDA_STREAM_AUTO, mine, seed++);
    cudaStreamDestroy(mine);
    switch_case(seed);
    seed += 3;
    graph_refusal();
    /* N = 2048: the tables travel in the launch; N = 40000: they do not */
    const int64_t Ns[2] = {2048, 40000};
    for (int ni = 0; ni < 2; ni++)
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++) graph_case(mode, causal, Ns[ni], &seed);
    return harness_done("cuda_stream");
}
