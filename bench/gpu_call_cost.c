/* What one small call costs on the GPU, through the C API: for each
 * configuration (fp16, B = 1, H = 8, D = 64) and for the forward, the
 * backward and the two in a row (a training step's attention):
 *
 *   launches  kernels / memsets / copies of the call captured in a CUDA graph
 *   host      host time of the call alone (it only enqueues: the stream is
 *             synchronised before and after, outside the timed span)
 *   alone     CUDA-event time of the call on an idle stream (what one call
 *             takes from its first launch's start to its last's end)
 *   queued    CUDA-event time per call of 200 calls in a row (the stream kept
 *             full, as in a training loop whose host runs ahead)
 *   graph     CUDA-event time of one replay of the captured graph
 *
 * Medians of 200 after 20 warm-ups; inputs uniform in [-1, 1) (made on the
 * host, copied once), on a stream this program creates and passes to the
 * context (RDA_STREAM_CALLER).
 *
 *     cmake --build build-gpu --target rda_call_cost && build-gpu/rda_call_cost [N [NAME]]
 *
 * NAME: only the configurations whose names start with it ("dense", "seed",
 * "longnet").
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "graph_nodes.h" /* (tests/) */
#include "rda.h"

#define REPS 200
#define WARM 20

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    return t[n / 2];
}

/* fp32 -> fp16 bits (round to nearest even; the inputs are in [-1, 1)) */
static uint16_t half_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const int e = (int)((x >> 23) & 0xff) - 127 + 15;
    uint32_t m = x & 0x7fffffu;
    if (e <= 0) { /* subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        m |= 0x800000u;
        const int sh = 14 - e;
        uint32_t h = m >> sh;
        const uint32_t rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (m >> 13);
    const uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

#define CK(x)                                                                                        \
    do {                                                                                             \
        cudaError_t e_ = (x);                                                                        \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            return 1;                                                                                \
        }                                                                                            \
    } while (0)

typedef struct {
    rda_context *ctx;
    const rda_config *cfg;
    rda_tensor q, k, v, o, lse, g, dq, dk, dv;
} call_args;

/* which: 0 forward, 1 backward, 2 both */
static rda_status run_call(call_args *c, int which) {
    rda_status st = RDA_STATUS_SUCCESS;
    if (which != 1) st = rda_attention_forward(c->ctx, c->cfg, &c->q, &c->k, &c->v, &c->o, &c->lse);
    if (!st && which != 0)
        st = rda_attention_backward(c->ctx, c->cfg, &c->q, &c->k, &c->v, &c->o, &c->lse, &c->g, &c->dq, &c->dk,
                                    &c->dv);
    return st;
}

/* What event_us times: one library call (`which` of run_call) or one graph replay. */
struct enqueue {
    call_args *c;
    int which;
    cudaGraphExec_t graph;
    cudaStream_t s;
};
static cudaError_t enqueue(const struct enqueue *q) {
    if (q->graph) return cudaGraphLaunch(q->graph, q->s);
    run_call(q->c, q->which);
    return cudaSuccess;
}

/* Median over `rounds` rounds of the CUDA-event time of `calls` enqueues in
 * a row, per enqueue, in us (-1 on a CUDA error, reported). */
static double event_us(const struct enqueue *q, cudaEvent_t e0, cudaEvent_t e1, int rounds, int calls) {
    static double t[REPS];
    cudaError_t e = cudaSuccess;
    for (int j = 0; j < rounds && j < REPS && e == cudaSuccess; j++) {
        float ms = 0.f;
        e = cudaEventRecord(e0, q->s);
        for (int i = 0; i < calls && e == cudaSuccess; i++) e = enqueue(q);
        if (e == cudaSuccess) e = cudaEventRecord(e1, q->s);
        if (e == cudaSuccess) e = cudaEventSynchronize(e1);
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
        t[j] = ms * 1e3 / calls;
    }
    if (e != cudaSuccess) {
        fprintf(stderr, "timing: %s\n", cudaGetErrorString(e));
        return -1.0;
    }
    return median(t, rounds < REPS ? rounds : REPS);
}

static int measure(call_args *c, int which, cudaStream_t s, const char *label) {
    static double t[REPS];
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < WARM; i++)
        if (run_call(c, which)) {
            fprintf(stderr, "%s: %s\n", label, rda_context_last_error(c->ctx));
            return 1;
        }
    CK(cudaStreamSynchronize(s));
    /* host time of the call alone */
    for (int i = 0; i < REPS; i++) {
        const double t0 = now_us();
        run_call(c, which);
        t[i] = now_us() - t0;
        CK(cudaStreamSynchronize(s));
    }
    const double host = median(t, REPS);
    /* one call on an idle stream; calls in a row */
    struct enqueue call = {c, which, NULL, s};
    const double alone = event_us(&call, e0, e1, REPS, 1), queued = event_us(&call, e0, e1, 9, REPS);
    if (alone < 0 || queued < 0) return 1;
    /* the call captured, counted and replayed */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    const rda_status st = run_call(c, which);
    CK(cudaStreamEndCapture(s, &g));
    if (st) {
        fprintf(stderr, "%s: capture: %s\n", label, rda_context_last_error(c->ctx));
        return 1;
    }
    const graph_nodes gn = graph_node_counts(g);
    CK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < WARM; i++) CK(cudaGraphLaunch(ge, s));
    struct enqueue replay = {NULL, 0, ge, s};
    const double graph = event_us(&replay, e0, e1, REPS, 1);
    if (graph < 0) return 1;
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    printf("| %s | %zu / %zu / %zu | %.1f | %.1f | %.1f | %.1f |\n", label, gn.kernels, gn.memsets, gn.copies, host, alone,
           queued, graph);
    return 0;
}

int main(int argc, char **argv) {
    const int64_t N = argc > 1 ? atoll(argv[1]) : 4096, B = 1, H = 8, D = 64;
    if (!rda_cuda_available()) {
        printf("no CUDA device (or no CUDA backend in this build)\n");
        return 77;
    }
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CUDA;
    cp.stream = s;
    cp.stream_mode = RDA_STREAM_CALLER;
    rda_context *ctx;
    if (rda_context_create(&cp, &ctx)) {
        fprintf(stderr, "context: failed\n");
        return 1;
    }
    const size_t elems = (size_t)(B * N * H * D);
    uint16_t *host = malloc(elems * 2);
    void *buf[9];
    srand(1);
    for (int i = 0; i < 9; i++) {
        CK(cudaMalloc(&buf[i], i == 4 ? (size_t)(B * H * N) * 4 : elems * 2));
        if (i == 4) continue;
        for (size_t j = 0; j < elems; j++) host[j] = half_bits((float)rand() / ((float)RAND_MAX + 1.f) * 2.f - 1.f);
        CK(cudaMemcpy(buf[i], host, elems * 2, cudaMemcpyHostToDevice));
    }
    free(host);
    const int64_t shape[4] = {B, N, H, D}, lshape[3] = {B, H, N};
    call_args c;
    c.ctx = ctx;
    rda_tensor *ts[9] = {&c.q, &c.k, &c.v, &c.o, &c.lse, &c.g, &c.dq, &c.dk, &c.dv};
    for (int i = 0; i < 9; i++)
        *ts[i] = i == 4 ? rda_tensor_contiguous(buf[i], RDA_DTYPE_F32, 3, lshape)
                        : rda_tensor_contiguous(buf[i], RDA_DTYPE_F16, 4, shape);
    struct {
        const char *name;
        rda_mode mode;
        int causal, np;
        rda_pattern pat[4];
    } cfgs[] = {
        {"dense", RDA_MODE_DENSE, 0, 0, {{0, 0}}},
        {"dense causal", RDA_MODE_DENSE, 1, 0, {{0, 0}}},
        {"seed groups [1024, 2048] / [1, 2]", RDA_MODE_GROUPS, 0, 2, {{1024, 1}, {2048, 2}}},
        {"longnet [1024, 2048, 4096] / [1, 2, 4]", RDA_MODE_LONGNET, 0, 3, {{1024, 1}, {2048, 2}, {4096, 4}}},
    };
    printf("fp16, B=1, H=%lld, N=%lld, D=%lld; us per call, medians of %d\n\n", (long long)H, (long long)N,
           (long long)D, REPS);
    printf("| configuration, call | launches (kernels / memsets / copies) | host | alone | queued | graph |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        if (argc > 2 && strncmp(cfgs[i].name, argv[2], strlen(argv[2])) != 0) continue;
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.mode = cfgs[i].mode;
        cfg.causal = cfgs[i].causal;
        cfg.num_patterns = cfgs[i].np;
        memcpy(cfg.patterns, cfgs[i].pat, sizeof cfgs[i].pat);
        c.cfg = &cfg;
        static const char *what[3] = {"forward", "backward", "forward + backward"};
        for (int w = 0; w < 3; w++) {
            char label[160];
            snprintf(label, sizeof label, "%s, %s", cfgs[i].name, what[w]);
            if (measure(&c, w, s, label)) return 1;
        }
    }
    rda_context_destroy(ctx);
    for (int i = 0; i < 9; i++) cudaFree(buf[i]);
    cudaStreamDestroy(s);
    return 0;
}
