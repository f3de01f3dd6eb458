/* The ring scheduler: one loop for every variant (dense, groups, longnet;
 * one rank or P). Each rank keeps an fp32 accumulator for its own rows;
 * key/value blocks travel to the next rank while the current one is used;
 * partial results merge by the log-sum-exp rule inside the block kernel.
 * P = 1 is the same loop with no transfer. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "cpu/backend.h"
#include "ring.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t tensor_bytes(const rda_tensor *t) {
    if (!t) return 0;
    int64_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n * (int64_t)rda_dtype_size(t->dtype);
}

/* What every rank must agree on before any transfer. */
typedef struct {
    int64_t N, B, H, Hkv, D, dtype, mode, causal, layout, G;
    double scale;
    rda_pattern patterns[RDA_MAX_PATTERNS];
} ring_blob;

/* Copies k and v rows [B, n, Hkv, D] into one contiguous buffer: K then V. */
static void pack_kv(const rda_tensor *k, const rda_tensor *v, int64_t n, void *buf) {
    size_t es = rda_dtype_size(k->dtype);
    int64_t B = k->shape[0], H = k->shape[2], D = k->shape[3];
    char *dst = buf;
    const rda_tensor *ts[2] = {k, v};
    for (int t = 0; t < 2; t++) {
        const rda_tensor *x = ts[t];
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < n; r++)
                for (int64_t h = 0; h < H; h++) {
                    const char *src = (const char *)x->data +
                                      es * (size_t)(b * x->strides[0] + r * x->strides[1] +
                                                    h * x->strides[2]);
                    if (x->strides[3] == 1) {
                        memcpy(dst, src, es * (size_t)D);
                    } else {
                        for (int64_t d = 0; d < D; d++)
                            memcpy(dst + es * (size_t)d, src + es * (size_t)(d * x->strides[3]), es);
                    }
                    dst += es * (size_t)D;
                }
    }
}

rda_status rda_ring_run(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                        const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                        rda_tensor *o, rda_tensor *lse, rda_ring_stats *stats) {
    char *msg = ctx->msg;
    rda_status st;
    double t0 = now_seconds();
    int32_t P = comm ? comm->size : 1, rank = comm ? comm->rank : 0;
    ctx->ws_used = 0;
    rda_problem p;
    rda_rows qr, kr;
    rda_cpu_ws *ws = NULL;
    rda_acc acc = {0};
    void *buf[2] = {NULL, NULL};
    rda_carver carver;
    int64_t bytes_sent = 0, pairs = 0;
    int32_t steps = 0;

    if ((st = rda_problem_from_config(cfg, N, &p, msg))) goto fail;
    if ((st = rda_plan_rows(N, P, p.layout, rank, &qr, msg))) goto fail;
    if ((st = rda_validate_tensors(q, k, v, o, lse, qr.total, true, &p, msg))) goto fail;
    if (p.dtype == RDA_DTYPE_F64) {
        rda_set_msg(msg, "fp64 tensors are only accepted by the reference backend");
        st = RDA_STATUS_UNSUPPORTED;
        goto fail;
    }
    if (ctx->backend != RDA_BACKEND_CPU) {
        rda_set_msg(msg, "the %s backend does not run rings; use the CPU backend",
                    ctx->backend == RDA_BACKEND_REFERENCE ? "reference" : "selected");
        st = RDA_STATUS_UNSUPPORTED;
        goto fail;
    }
    if (comm) {
        ring_blob blob;
        memset(&blob, 0, sizeof(blob));
        blob.N = N;
        blob.B = p.B;
        blob.H = p.H;
        blob.Hkv = p.Hkv;
        blob.D = p.D;
        blob.dtype = p.dtype;
        blob.mode = p.mode;
        blob.causal = p.causal;
        blob.layout = P > 1 ? p.layout : 0;
        blob.G = p.G;
        blob.scale = p.scale;
        memcpy(blob.patterns, p.patterns, sizeof(blob.patterns));
        if ((st = comm->ops->agree(comm, &blob, sizeof(blob), p.timeout_seconds, msg))) goto fail;
    }

    /* everything the call holds, O(rows of this rank), from one workspace */
    int64_t n = qr.total, rows_hd = p.B * n * p.H;
    int32_t threads = rda_pool_threads(ctx->pool);
    steps = rda_plan_ring_steps(&p, P);
    size_t es = rda_dtype_size(p.dtype), block = 0;
    if (steps > 1) {
        int64_t max_rows = 0;
        for (int32_t r = 0; r < P; r++) {
            rda_rows rr;
            if ((st = rda_plan_rows(N, P, p.layout, r, &rr, msg))) goto fail;
            if (rr.total > max_rows) max_rows = rr.total;
        }
        block = 2 * es * (size_t)(p.B * max_rows * p.Hkv * p.D); /* K then V */
    }
    size_t need = RDA_ALIGN(sizeof(float) * (size_t)(rows_hd * p.D)) +
                  2 * RDA_ALIGN(sizeof(float) * (size_t)rows_hd) +
                  rda_cpu_workspace_size(&p, &qr, threads) + 2 * RDA_ALIGN(block);
    if ((st = rda_context_reserve(ctx, need, &carver))) goto fail;
    acc = (rda_acc){p.B, n, p.H, p.D, NULL, NULL, NULL};
    acc.acc = rda_carve(&carver, sizeof(float) * (size_t)(rows_hd * p.D));
    acc.m = rda_carve(&carver, sizeof(float) * (size_t)rows_hd);
    acc.l = rda_carve(&carver, sizeof(float) * (size_t)rows_hd);
    ws = rda_cpu_workspace_init(&carver, &p, &qr, threads);
    if (steps > 1) {
        buf[0] = rda_carve(&carver, block);
        buf[1] = rda_carve(&carver, block);
    }
    RDA_ASSERT(acc.l && ws && (steps == 1 || buf[1]), fail);
    for (int64_t i = 0; i < rows_hd; i++) {
        acc.m[i] = -INFINITY;
        acc.l[i] = 0.0f;
    }
    if (steps > 1) pack_kv(k, v, n, buf[0]);

    kr = qr;
    rda_tensor kt = *k, vt = *v;
    for (int32_t s = 0; s < steps; s++) {
        int cur = s & 1;
        rda_rows next;
        bool more = s + 1 < steps;
        if (more) {
            int32_t src = (rank - s - 1 + 2 * P) % P;
            if ((st = rda_plan_rows(N, P, p.layout, src, &next, msg))) goto fail;
            size_t send = 2 * es * (size_t)(p.B * kr.total * p.Hkv * p.D);
            size_t recv = 2 * es * (size_t)(p.B * next.total * p.Hkv * p.D);
            if ((st = comm->ops->shift_start(comm, buf[cur], send, buf[cur ^ 1], recv, msg)))
                goto fail;
            bytes_sent += (int64_t)send;
        }
        if ((st = rda_cpu_attend_step(ctx, ws, &p, &qr, &kr, q, &kt, &vt, &acc, more ? NULL : o,
                                      more ? NULL : lse, &pairs)))
            goto fail;
        if (more) {
            if ((st = comm->ops->shift_wait(comm, p.timeout_seconds, msg))) goto fail;
            kr = next;
            int64_t shape[4] = {p.B, kr.total, p.Hkv, p.D};
            kt = rda_tensor_contiguous(buf[cur ^ 1], p.dtype, 4, shape);
            vt = rda_tensor_contiguous((char *)buf[cur ^ 1] + es * (size_t)(p.B * kr.total * p.Hkv * p.D),
                                       p.dtype, 4, shape);
        }
    }
    rda_cpu_finalize(ctx, &p, &acc, o, lse);
    goto cleanup;

fail:
    /* tell the other ranks (a configuration mismatch is already known to all) */
    if (comm && st != RDA_STATUS_CONFIG_MISMATCH) comm->ops->abort(comm);
cleanup:
    if (stats) {
        stats->bytes_sent = bytes_sent;
        stats->steps = st == RDA_STATUS_SUCCESS ? steps : 0;
        stats->peak_bytes = (int64_t)ctx->ws_used + tensor_bytes(q) + tensor_bytes(k) +
                            tensor_bytes(v) + tensor_bytes(o) + tensor_bytes(lse);
        stats->seconds = now_seconds() - t0;
        stats->pairs = pairs;
    }
    if (st == RDA_STATUS_SUCCESS) msg[0] = '\0';
    return st;
}
