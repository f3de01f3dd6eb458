/* The ring scheduler: one loop for every variant (dense, groups, longnet;
 * one rank or P; forward and backward). Each rank keeps fp32 state for its
 * own rows; key/value blocks travel to the next rank; partial results merge
 * by the log-sum-exp rule inside the block kernel. In the backward the
 * blocks carry their dK/dV accumulators, which the ranks they visit add to,
 * and which travel on until they are back with their owner. P = 1 is the
 * same loop with no transfer. */
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
    int64_t N, B, H, Hkv, D, dtype, mode, causal, layout, G, backward, deterministic;
    double scale;
    rda_pattern patterns[RDA_MAX_PATTERNS];
} ring_blob;

/* The views of a block of n key rows in buf. */
static void block_views(const rda_problem *p, void *buf, int64_t n, bool backward, rda_tensor *k, rda_tensor *v,
                        float **dk, float **dv) {
    size_t v_off, dk_off, dv_off, bytes;
    rda_ring_block_layout(p, n, backward, &v_off, &dk_off, &dv_off, &bytes);
    int64_t shape[4] = {p->B, n, p->Hkv, p->D};
    *k = rda_tensor_contiguous(buf, p->dtype, 4, shape);
    *v = rda_tensor_contiguous((char *)buf + v_off, p->dtype, 4, shape);
    *dk = backward ? (float *)((char *)buf + dk_off) : NULL;
    *dv = backward ? (float *)((char *)buf + dv_off) : NULL;
}

static size_t block_bytes(const rda_problem *p, int64_t n, bool backward) {
    size_t v_off, dk_off, dv_off, bytes;
    rda_ring_block_layout(p, n, backward, &v_off, &dk_off, &dv_off, &bytes);
    return bytes;
}

/* The bytes of a block of n rows that travel: all of it, or (acc_only) its
 * dK/dV accumulators, which start *off bytes into it. */
static size_t travelling(const rda_problem *p, int64_t n, bool backward, bool acc_only, size_t *off) {
    size_t v_off, dk_off, dv_off, bytes;
    rda_ring_block_layout(p, n, backward, &v_off, &dk_off, &dv_off, &bytes);
    *off = acc_only ? dk_off : 0;
    return bytes - *off;
}

rda_status rda_ring_run(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                        const rda_ring_work *w, rda_ring_stats *stats) {
    char *msg = ctx->msg;
    rda_status st;
    double t0 = now_seconds();
    int32_t P = comm ? comm->size : 1, rank = comm ? comm->rank : 0;
    const bool bwd = w->backward;
    const rda_bwd_tensors *bt = &w->bwd;
    ctx->ws_used = 0;
    rda_problem p;
    rda_rows qr, kr;
    void *buf[2] = {NULL, NULL};
    int64_t bytes_sent = 0, pairs = 0;
    int32_t steps = 0;
    const rda_backend_ops *be = NULL;
    const rda_tensor *q = bwd ? bt->q : w->q, *k = bwd ? bt->k : w->k, *v = bwd ? bt->v : w->v;

    if ((st = rda_problem_from_config(cfg, N, &p, msg))) goto fail;
    if ((st = rda_plan_rows(N, P, p.layout, rank, &qr, msg))) goto fail;
    if (bwd) {
        if ((st = rda_validate_backward(bt, qr.total, true, &p, msg))) goto fail;
    } else if ((st = rda_validate_tensors(q, k, v, w->o, w->lse, qr.total, true, &p, msg))) {
        goto fail;
    }
    const rda_tensor *const ts[5] = {q, k, v, bwd ? bt->dq : w->o, bwd ? bt->lse : w->lse};
    if ((st = rda_backend_for(ctx, &p, ts, &be))) goto fail;
    if (bwd && !be->bwd_begin) {
        rda_set_msg(msg, "the %s backend has no backward pass yet", be->name);
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
        blob.backward = bwd;
        blob.deterministic = p.deterministic;
        blob.scale = p.scale;
        memcpy(blob.patterns, p.given, sizeof(blob.patterns));
        if ((st = comm->ops->agree(comm, &blob, sizeof(blob), p.timeout_seconds, msg))) goto fail;
        comm->copy = be->copy;
        comm->sync = be->sync;
        comm->copy_ctx = ctx;
    }

    /* the rank's state, O(its rows), and two key/value blocks if they travel */
    steps = rda_plan_ring_steps(&p, P);
    size_t block = 0;
    int64_t max_rows = qr.total;
    for (int32_t r = 0; r < P && steps > 1; r++) {
        rda_rows rr;
        if ((st = rda_plan_rows(N, P, p.layout, r, &rr, msg))) goto fail;
        if (rr.total > max_rows) max_rows = rr.total;
    }
    if (steps > 1) block = block_bytes(&p, max_rows, bwd);
    if (bwd) {
        if ((st = be->bwd_begin(ctx, &p, &qr, max_rows, block, buf, bt))) goto fail;
    } else if ((st = be->begin(ctx, &p, &qr, block, buf))) {
        goto fail;
    }
    rda_tensor kt = *k, vt = *v;
    float *dk = NULL, *dv = NULL;
    if (steps > 1) {
        if ((st = be->pack_kv(ctx, k, v, qr.total, buf[0]))) goto fail;
        block_views(&p, buf[0], qr.total, bwd, &kt, &vt, &dk, &dv);
        if (bwd && (st = be->clear(ctx, dk, 2 * sizeof(float) * (size_t)(p.B * qr.total * p.Hkv * p.D))))
            goto fail;
        kt = *k, vt = *v; /* the first step reads the rank's own tensors */
    } else if (bwd) {
        dk = buf[0];
        dv = dk + p.B * qr.total * p.Hkv * p.D;
    }

    /* Step s: the block of rank (rank - s) mod P. Forward: its transfer to
     * the next rank starts before the step (K and V are ready) and is waited
     * for after it. Backward: the block, with the accumulators this step
     * adds to, goes once the step is done. Then, backward only, the
     * accumulators alone travel on until they reach their owner, the
     * shorter way round: back against the ring (steps - 1 transfers) or on
     * along it (P - steps + 1). */
    const int32_t back = steps - 1, rdir = back <= P - back ? -1 : 1;
    const int32_t returns = bwd && steps > 1 ? (rdir < 0 ? back : P - back) : 0;
    kr = qr;
    int cur = 0;
    for (int32_t s = 0; s < steps + returns; s++) {
        const bool compute = s < steps, more = s + 1 < steps + returns;
        rda_rows next;
        int dir = 1;
        if (more) {
            /* whose block arrives: the rank's predecessor's, or on a return
             * the accumulators of the owner one place further in dir */
            int64_t owner = rank - s - 1;
            if (s + 1 >= steps) {
                dir = rdir;
                owner = (int64_t)rank - back - (int64_t)(s + 1 - back) * rdir;
            }
            int32_t src = (int32_t)((owner % P + P) % P);
            if ((st = rda_plan_rows(N, P, p.layout, src, &next, msg))) goto fail;
        }
        /* what travels after this step: the whole block while later steps
         * need its K and V, else its accumulators alone */
        const bool early = more && !bwd, whole = s + 1 < steps;
        size_t send = 0, recv = 0, soff = 0, roff = 0;
        if (more) {
            send = travelling(&p, kr.total, bwd, !whole, &soff);
            recv = travelling(&p, next.total, bwd, !whole, &roff);
        }
        /* Transfers are ordered after the rank's work by a marker of it (a
         * device event), not by a host wait: the block sent is complete, and
         * the last step's reads of the buffer received into are done, once
         * the work issued so far is. */
        const void *ready = NULL;
        if (early) {
            if ((st = be->mark(ctx, &ready))) goto fail;
            if ((st = comm->ops->shift_start(comm, buf[cur], send, buf[cur ^ 1], recv, 1, ready, msg))) goto fail;
            bytes_sent += (int64_t)send;
        }
        if (compute) {
            if (bwd)
                st = be->bwd_step(ctx, &p, &qr, &kr, bt, &kt, &vt, dk, dv, &pairs);
            else
                st = be->step(ctx, &p, &qr, &kr, q, &kt, &vt, w->o, w->lse, !more, &pairs);
            if (st) goto fail;
        }
        if (more && !early) { /* the accumulators are complete once the step is */
            if ((st = be->mark(ctx, &ready))) goto fail;
            if ((st = comm->ops->shift_start(comm, (char *)buf[cur] + soff, send, (char *)buf[cur ^ 1] + roff, recv,
                                             dir, ready, msg)))
                goto fail;
            bytes_sent += (int64_t)send;
        }
        if (more) {
            if ((st = comm->ops->shift_wait(comm, p.timeout_seconds, msg))) goto fail;
            cur ^= 1;
            kr = next;
            block_views(&p, buf[cur], kr.total, bwd, &kt, &vt, &dk, &dv);
        }
    }
    if (bwd) {
        if ((st = be->bwd_finish(ctx, &p, bt, dk, dv))) goto fail;
    } else if ((st = be->finish(ctx, &p, w->o, w->lse))) {
        goto fail;
    }
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
        stats->peak_bytes = (int64_t)ctx->ws_used + tensor_bytes(q) + tensor_bytes(k) + tensor_bytes(v);
        if (bwd)
            stats->peak_bytes += tensor_bytes(bt->o) + tensor_bytes(bt->lse) + tensor_bytes(bt->dout) +
                                 tensor_bytes(bt->dq) + tensor_bytes(bt->dk) + tensor_bytes(bt->dv);
        else
            stats->peak_bytes += tensor_bytes(w->o) + tensor_bytes(w->lse);
        stats->seconds = now_seconds() - t0;
        stats->pairs = pairs;
    }
    if (st == RDA_STATUS_SUCCESS) msg[0] = '\0';
    return st;
}
