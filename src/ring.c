/* The ring scheduler: one loop for every variant (dense, groups, longnet;
 * one rank or P). Each rank keeps an fp32 accumulator for its own rows;
 * key/value blocks travel to the next rank while the current one is used;
 * partial results merge by the log-sum-exp rule inside the block kernel.
 * P = 1 is the same loop with no transfer. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "backend.h"
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
    void *buf[2] = {NULL, NULL};
    int64_t bytes_sent = 0, pairs = 0;
    int32_t steps = 0;
    const rda_backend_ops *be = NULL;

    if ((st = rda_problem_from_config(cfg, N, &p, msg))) goto fail;
    if ((st = rda_plan_rows(N, P, p.layout, rank, &qr, msg))) goto fail;
    if ((st = rda_validate_tensors(q, k, v, o, lse, qr.total, true, &p, msg))) goto fail;
    const rda_tensor *const ts[5] = {q, k, v, o, lse};
    if ((st = rda_backend_for(ctx, &p, ts, &be))) goto fail;
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
        memcpy(blob.patterns, p.given, sizeof(blob.patterns));
        if ((st = comm->ops->agree(comm, &blob, sizeof(blob), p.timeout_seconds, msg))) goto fail;
        comm->copy = be->copy;
        comm->copy_ctx = ctx;
    }

    /* the rank's state, O(its rows), and two key/value blocks if they travel */
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
    if ((st = be->begin(ctx, &p, &qr, block, buf))) goto fail;
    if (steps > 1 && (st = be->pack_kv(ctx, k, v, qr.total, buf[0]))) goto fail;

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
            /* buf[cur] complete, and the last step's reads of buf[cur ^ 1] done */
            if ((st = be->sync(ctx))) goto fail;
            if ((st = comm->ops->shift_start(comm, buf[cur], send, buf[cur ^ 1], recv, msg)))
                goto fail;
            bytes_sent += (int64_t)send;
        }
        if ((st = be->step(ctx, &p, &qr, &kr, q, &kt, &vt, more ? NULL : o, more ? NULL : lse,
                           &pairs)))
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
    if ((st = be->finish(ctx, &p, o, lse))) goto fail;
    /* a rank's time includes its device work */
    if (stats && (st = be->sync(ctx))) goto fail;
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
