/* Public entry points: dispatch to a backend, or to the ring scheduler. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "backend.h"
#include "cpu/backend.h"
#include "plan.h"
#include "ring.h"

rda_status rda_attention_forward(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                                 const rda_tensor *k, const rda_tensor *v, rda_tensor *o,
                                 rda_tensor *lse) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    if (!q) {
        rda_set_msg(ctx->msg, "tensor q is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    /* fast backends: the ring loop with one rank */
    if (ctx->backend != RDA_BACKEND_REFERENCE && ctx->backend != RDA_BACKEND_REFERENCE_SAME_TYPE)
        return rda_ring_run(ctx, NULL, cfg, q->shape[1], q, k, v, o, lse, NULL);
    rda_problem p;
    rda_status st;
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg))) return st;
    if ((st = rda_validate_tensors(q, k, v, o, lse, 0, false, &p, ctx->msg))) return st;
    st = rda_cpu_reference(ctx, &p, ctx->backend == RDA_BACKEND_REFERENCE_SAME_TYPE, q, k, v, NULL,
                           0, o, lse);
    if (st == RDA_STATUS_SUCCESS) ctx->msg[0] = '\0';
    return st;
}

rda_status rda_reference_rows(rda_context *ctx, const rda_config *cfg, const rda_tensor *q,
                              const rda_tensor *k, const rda_tensor *v, const int64_t *rows,
                              int64_t nrows, double *out, float *lse) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    rda_problem p;
    rda_status st;
    if (!q || !rows || !out) {
        rda_set_msg(ctx->msg, "q, rows and out must not be NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, ctx->msg))) return st;
    if (nrows < 1) {
        rda_set_msg(ctx->msg, "nrows must be >= 1");
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    for (int64_t i = 0; i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= p.N) {
            rda_set_msg(ctx->msg, "rows[%lld] = %lld is outside [0, N)", (long long)i, (long long)rows[i]);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
    /* q/k/v are checked as for a forward, then the real outputs (nrows rows
     * each) against them */
    int64_t shape[4] = {q->shape[0], nrows, q->shape[2], q->shape[3]};
    rda_tensor o = rda_tensor_contiguous(out, RDA_DTYPE_F64, 4, shape);
    int64_t lshape[3] = {q->shape[0], q->shape[2], nrows};
    rda_tensor l = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, lshape);
    if ((st = rda_validate_inputs(q, k, v, &p, ctx->msg))) return st;
    const rda_tensor *ins[3] = {q, k, v}, *outs[2] = {&o, lse ? &l : NULL};
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            if (outs[j] && rda_tensors_overlap(outs[j], ins[i])) {
                rda_set_msg(ctx->msg, "%s overlaps %s", j ? "lse" : "out", names[i]);
                return RDA_STATUS_ALIASING;
            }
    if (lse && rda_tensors_overlap(&o, &l)) {
        rda_set_msg(ctx->msg, "lse overlaps out");
        return RDA_STATUS_ALIASING;
    }
    st = rda_cpu_reference(ctx, &p, false, q, k, v, rows, nrows, &o, lse ? &l : NULL);
    if (st == RDA_STATUS_SUCCESS) ctx->msg[0] = '\0';
    return st;
}

rda_status rda_ring_forward(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                            const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                            rda_tensor *o, rda_tensor *lse, rda_ring_stats *stats) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    if (!comm) {
        rda_set_msg(ctx->msg, "communicator is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    return rda_ring_run(ctx, comm, cfg, N, q, k, v, o, lse, stats);
}

/* ------------------------------------------------------------------ virtual ranks */

/* Ranks that copy their rows first start the ring together, so that one
 * rank's ring time does not hold another's copying. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t ready, expected;
    bool open; /* set when not every rank thread could be started */
} start_gate;

static void gate_arrive(start_gate *g) {
    pthread_mutex_lock(&g->mu);
    g->ready++;
    if (g->ready >= g->expected) pthread_cond_broadcast(&g->cv);
    while (g->ready < g->expected && !g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(start_gate *g) {
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct {
    rda_context *ctx;
    rda_comm *comm;
    start_gate *gate;
    const rda_config *cfg;
    int64_t N;
    const rda_tensor *q, *k, *v;
    rda_tensor *o, *lse;
    rda_rows rows;
    rda_ring_stats stats;
    rda_status st;
    const rda_backend_ops *be;
    bool own_rows; /* copy the rows into the rank's own buffers (another GPU) */
} sim_rank;

/* A view of rows [start, start + count) of a [B, N, H, D] tensor. */
static rda_tensor rows_view(const rda_tensor *t, int64_t start, int64_t count) {
    rda_tensor r = *t;
    r.data = (char *)t->data + (size_t)(start * t->strides[1]) * rda_dtype_size(t->dtype);
    r.shape[1] = count;
    return r;
}

static rda_tensor lse_view(const rda_tensor *t, int64_t start, int64_t count) {
    rda_tensor r = *t;
    r.data = (float *)t->data + start * t->strides[2];
    r.shape[2] = count;
    return r;
}

/* Copies rows of the rank between the full tensor and a local contiguous
 * one (zig-zag ranks own two chunks, which no single view describes), in
 * the largest contiguous runs the strides allow, through the backend's copy
 * (host or device memory). Returns 0 on success. */
static int copy_rows(rda_context *ctx, const rda_backend_ops *be, const rda_tensor *full, rda_tensor *local,
                     const rda_rows *rows, bool to_local) {
    size_t es = rda_dtype_size(full->dtype);
    int64_t H = full->shape[2], D = full->shape[3];
    bool whole_rows = full->strides[3] == 1 && full->strides[2] == D; /* H*D contiguous */
    int64_t run = whole_rows ? H * D : 1;
    /* rows back to back in both (local is contiguous): one copy per range */
    bool ranges = whole_rows && full->strides[1] == H * D && local->strides[1] == H * D;
    for (int32_t i = 0; i < rows->n; i++)
        for (int64_t b = 0; b < full->shape[0]; b++)
            for (int64_t r = 0; r < rows->count[i]; r += ranges ? rows->count[i] : 1)
                for (int64_t e = 0; e < H * D; e += run) {
                    int64_t h = e / D, d = e % D;
                    char *f = (char *)full->data +
                              es * (size_t)(b * full->strides[0] + (rows->start[i] + r) * full->strides[1] +
                                            h * full->strides[2] + d * full->strides[3]);
                    char *l = (char *)local->data +
                              es * (size_t)(b * local->strides[0] + (rows->local[i] + r) * local->strides[1] +
                                            h * local->strides[2] + d * local->strides[3]);
                    size_t n = ranges ? (size_t)(rows->count[i] * H * D) : (size_t)run;
                    if (be->copy(ctx, to_local ? l : f, to_local ? f : l, es * n)) return -1;
                }
    return 0;
}

static int copy_lse_rows(rda_context *ctx, const rda_backend_ops *be, const rda_tensor *full, rda_tensor *local,
                         const rda_rows *rows) {
    int64_t run = full->strides[2] == 1 ? 0 : 1; /* 0: a range at once */
    for (int32_t i = 0; i < rows->n; i++)
        for (int64_t b = 0; b < full->shape[0]; b++)
            for (int64_t h = 0; h < full->shape[1]; h++)
                for (int64_t r = 0; r < rows->count[i]; r += run ? run : rows->count[i]) {
                    int64_t n = run ? run : rows->count[i];
                    float *f = (float *)full->data + b * full->strides[0] + h * full->strides[1] +
                               (rows->start[i] + r) * full->strides[2];
                    float *l = (float *)local->data + b * local->strides[0] + h * local->strides[1] +
                               (rows->local[i] + r) * local->strides[2];
                    if (be->copy(ctx, f, l, sizeof(float) * (size_t)n)) return -1;
                }
    return 0;
}

static void *sim_rank_main(void *arg) {
    sim_rank *s = arg;
    rda_context *ctx = s->ctx;
    if (s->rows.n == 1 && !s->own_rows) {
        rda_tensor q = rows_view(s->q, s->rows.start[0], s->rows.count[0]);
        rda_tensor k = rows_view(s->k, s->rows.start[0], s->rows.count[0]);
        rda_tensor v = rows_view(s->v, s->rows.start[0], s->rows.count[0]);
        rda_tensor o = rows_view(s->o, s->rows.start[0], s->rows.count[0]);
        rda_tensor l = s->lse ? lse_view(s->lse, s->rows.start[0], s->rows.count[0]) : o;
        s->st = rda_ring_run(ctx, s->comm, s->cfg, s->N, &q, &k, &v, &o, s->lse ? &l : NULL,
                             &s->stats);
        return NULL;
    }
    /* zig-zag, or ranks on other GPUs: the rank's rows live in buffers of its own */
    const rda_tensor *full[4] = {s->q, s->k, s->v, s->o};
    rda_tensor loc[5];
    void *mem[5] = {NULL, NULL, NULL, NULL, NULL};
    s->st = RDA_STATUS_SUCCESS;
    for (int i = 0; i < 5; i++) {
        if (i == 4 && !s->lse) break;
        const rda_tensor *t = i < 4 ? full[i] : s->lse;
        int64_t shape[4] = {t->shape[0], s->rows.total, t->shape[2], t->shape[3]};
        if (i == 4) {
            shape[1] = t->shape[1];
            shape[2] = s->rows.total;
        }
        size_t bytes = rda_dtype_size(t->dtype) * (size_t)(shape[0] * shape[1] * shape[2] *
                                                           (i == 4 ? 1 : shape[3]));
        mem[i] = s->be->alloc(ctx, bytes);
        if (!mem[i]) {
            rda_set_msg(ctx->msg, "out of memory for the rank's rows");
            s->st = RDA_STATUS_OUT_OF_MEMORY;
            s->comm->ops->abort(s->comm);
            gate_arrive(s->gate);
            goto done;
        }
        loc[i] = rda_tensor_contiguous(mem[i], t->dtype, i == 4 ? 3 : 4, shape);
        if (i < 3 && copy_rows(ctx, s->be, t, &loc[i], &s->rows, true)) {
            rda_set_msg(ctx->msg, "copying the rank's rows failed");
            s->st = RDA_STATUS_DEVICE_ERROR;
            s->comm->ops->abort(s->comm);
            gate_arrive(s->gate);
            goto done;
        }
    }
    gate_arrive(s->gate);
    s->st = rda_ring_run(ctx, s->comm, s->cfg, s->N, &loc[0], &loc[1], &loc[2], &loc[3],
                         s->lse ? &loc[4] : NULL, &s->stats);
    if (s->st == RDA_STATUS_SUCCESS) s->st = rda_context_synchronize(ctx);
    if (s->st == RDA_STATUS_SUCCESS &&
        (copy_rows(ctx, s->be, s->o, &loc[3], &s->rows, false) ||
         (s->lse && copy_lse_rows(ctx, s->be, s->lse, &loc[4], &s->rows)))) {
        rda_set_msg(ctx->msg, "copying the rank's results back failed");
        s->st = RDA_STATUS_DEVICE_ERROR;
    }
done:
    for (int i = 0; i < 5; i++)
        if (mem[i]) s->be->release(mem[i]);
    return NULL;
}

/* The contexts of P simulated ranks, each with its share of ctx's threads;
 * kept in ctx so that their workspaces are reused by the next call. */
static rda_status sim_contexts(rda_context *ctx, int32_t P) {
    if (ctx->num_ranks == P) return RDA_STATUS_SUCCESS;
    for (int32_t r = 0; r < ctx->num_ranks; r++) rda_context_destroy(ctx->ranks[r]);
    free(ctx->ranks);
    ctx->num_ranks = 0;
    ctx->ranks = calloc((size_t)P, sizeof(rda_context *));
    if (!ctx->ranks) goto oom;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = ctx->backend;
    cp.device = ctx->device;
    cp.num_threads = ctx->num_threads / P > 0 ? ctx->num_threads / P : 1;
    for (int32_t r = 0; r < P; r++) {
        if (rda_context_create(&cp, &ctx->ranks[r])) {
            for (int32_t x = 0; x < r; x++) rda_context_destroy(ctx->ranks[x]);
            free(ctx->ranks);
            ctx->ranks = NULL;
            goto oom;
        }
    }
    ctx->num_ranks = P;
    return RDA_STATUS_SUCCESS;
oom:
    rda_set_msg(ctx->msg, "cannot create the contexts of %d virtual ranks", P);
    return RDA_STATUS_OUT_OF_MEMORY;
}

/* Drops ctx's GPU ring: communicators, then the per-GPU contexts. */
void rda_gpu_ring_release(rda_context *ctx) {
    for (int32_t r = 0; r < ctx->gpu_P; r++) {
        if (ctx->gpu_comms) rda_comm_destroy(ctx->gpu_comms[r]);
        if (ctx->gpu_ctx) rda_context_destroy(ctx->gpu_ctx[r]);
    }
    free(ctx->gpu_comms);
    free(ctx->gpu_ctx);
    free(ctx->gpu_devices);
    ctx->gpu_comms = NULL;
    ctx->gpu_ctx = NULL;
    ctx->gpu_devices = NULL;
    ctx->gpu_P = 0;
}

/* ctx's GPU ring over devices[0..P): kept from an earlier call with the same
 * devices, or set up (NCCL communicators, one context per GPU). */
static rda_status gpu_ring(rda_context *ctx, int32_t P, const int32_t *devices) {
    if (ctx->gpu_P == P && !memcmp(ctx->gpu_devices, devices, sizeof(int32_t) * (size_t)P))
        return RDA_STATUS_SUCCESS;
    rda_gpu_ring_release(ctx);
    rda_status st;
    ctx->gpu_comms = calloc((size_t)P, sizeof(rda_comm *));
    ctx->gpu_ctx = calloc((size_t)P, sizeof(rda_context *));
    ctx->gpu_devices = malloc(sizeof(int32_t) * (size_t)P);
    if (!ctx->gpu_comms || !ctx->gpu_ctx || !ctx->gpu_devices) {
        rda_gpu_ring_release(ctx);
        rda_set_msg(ctx->msg, "out of memory for %d ranks", P);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    if ((st = rda_comm_create_nccl_local(P, devices, NULL, ctx->gpu_comms))) {
        rda_gpu_ring_release(ctx);
        rda_set_msg(ctx->msg, "cannot set up NCCL over %d GPUs (%s)", P, rda_status_to_string(st));
        return st;
    }
    memcpy(ctx->gpu_devices, devices, sizeof(int32_t) * (size_t)P);
    ctx->gpu_P = P;
    for (int32_t r = 0; r < P; r++) {
        rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
        cp.backend = RDA_BACKEND_CUDA;
        cp.device = devices[r];
        if ((st = rda_context_create(&cp, &ctx->gpu_ctx[r]))) {
            rda_gpu_ring_release(ctx);
            rda_set_msg(ctx->msg, "cannot create a context on GPU %d", devices[r]);
            return st;
        }
    }
    return RDA_STATUS_SUCCESS;
}

/* P ranks, one thread each: virtual ranks of ctx (devices NULL, in-process
 * engine), or one GPU each (devices[r], NCCL; the communicators and
 * contexts are kept in ctx for the next call with the same devices). */
static rda_status ring_threads(rda_context *ctx, const rda_config *cfg, int32_t P,
                               const int32_t *devices, const rda_tensor *q, const rda_tensor *k,
                               const rda_tensor *v, rda_tensor *o, rda_tensor *lse,
                               rda_ring_stats *stats) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    char *msg = ctx->msg;
    rda_problem p;
    rda_rows rows;
    rda_status st;
    if (!q) {
        rda_set_msg(msg, "tensor q is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    /* everything is checked here first, so a rejected call writes nothing */
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, msg))) return st;
    if ((st = rda_validate_tensors(q, k, v, o, lse, 0, false, &p, msg))) return st;
    if ((st = rda_plan_rows(p.N, P, p.layout, 0, &rows, msg))) return st;
    const rda_backend_ops *be;
    const rda_tensor *const ts[5] = {q, k, v, o, lse};
    if ((st = rda_backend_for(ctx, &p, ts, &be))) return st;
    if (P == 1 && !devices) return rda_ring_run(ctx, NULL, cfg, p.N, q, k, v, o, lse, stats);
    if (devices && ctx->backend != RDA_BACKEND_CUDA) {
        rda_set_msg(msg, "rings over several GPUs need the CUDA backend");
        return RDA_STATUS_UNSUPPORTED;
    }
    /* the ranks work on streams of their own: what the caller issued on
     * ctx's stream (its inputs) first; each rank waits for its own work
     * before the call returns */
    if ((st = rda_context_synchronize(ctx))) return st;

    rda_comm **local = devices ? NULL : calloc((size_t)P, sizeof(*local));
    sim_rank *ranks = calloc((size_t)P, sizeof(*ranks));
    pthread_t *tids = calloc((size_t)P, sizeof(*tids));
    bool *started = calloc((size_t)P, sizeof(*started));
    rda_comm **comms = local;
    rda_context **gctx = NULL;
    if ((!devices && !local) || !ranks || !tids || !started) {
        rda_set_msg(msg, "out of memory for %d ranks", P);
        st = RDA_STATUS_OUT_OF_MEMORY;
        goto done;
    }
    if (devices) {
        if ((st = gpu_ring(ctx, P, devices))) goto done;
        comms = ctx->gpu_comms;
        gctx = ctx->gpu_ctx;
    } else {
        if (rda_comm_create_local(P, comms)) {
            rda_set_msg(msg, "out of memory for %d virtual ranks", P);
            st = RDA_STATUS_OUT_OF_MEMORY;
            goto done;
        }
        if ((st = sim_contexts(ctx, P))) goto done;
    }
    start_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, false};
    for (int32_t r = 0; r < P; r++) {
        ranks[r].gate = &gate;
        ranks[r].ctx = devices ? gctx[r] : ctx->ranks[r];
        ranks[r].own_rows = devices != NULL;
        ranks[r].comm = comms[r];
        ranks[r].cfg = cfg;
        ranks[r].N = p.N;
        ranks[r].q = q;
        ranks[r].k = k;
        ranks[r].v = v;
        ranks[r].o = o;
        ranks[r].lse = lse;
        ranks[r].be = be;
        rda_plan_rows(p.N, P, p.layout, r, &ranks[r].rows, NULL);
        if (ranks[r].own_rows || ranks[r].rows.n != 1) gate.expected++; /* ranks that copy rows first */
    }
    for (int32_t r = 0; r < P; r++) {
        if (pthread_create(&tids[r], NULL, sim_rank_main, &ranks[r]) != 0) {
            comms[r]->ops->abort(comms[r]);
            rda_set_msg(msg, "cannot start the thread of virtual rank %d", r);
            st = RDA_STATUS_OUT_OF_MEMORY;
            gate_open(&gate);
            break;
        }
        started[r] = true;
    }
    for (int32_t r = 0; r < P; r++)
        if (started[r]) pthread_join(tids[r], NULL);
    if (st == RDA_STATUS_SUCCESS) {
        /* report the first failure that is not just another rank's echo */
        for (int32_t r = 0; r < P && !st; r++)
            if (ranks[r].st && ranks[r].st != RDA_STATUS_COMM_ERROR) {
                st = ranks[r].st;
                rda_set_msg(msg, "virtual rank %d: %s", r, rda_context_last_error(ranks[r].ctx));
            }
        for (int32_t r = 0; r < P && !st; r++)
            if (ranks[r].st) {
                st = ranks[r].st;
                rda_set_msg(msg, "virtual rank %d: %s", r, rda_context_last_error(ranks[r].ctx));
            }
    }
    if (stats)
        for (int32_t r = 0; r < P; r++) stats[r] = ranks[r].stats;
    if (st == RDA_STATUS_SUCCESS) msg[0] = '\0';
done:
    if (local)
        for (int32_t r = 0; r < P; r++) rda_comm_destroy(local[r]);
    free(local);
    /* a failed ring may have torn its communicators down: set up anew next time */
    if (devices && st) rda_gpu_ring_release(ctx);
    free(ranks);
    free(tids);
    free(started);
    return st;
}

rda_status rda_ring_forward_simulated(rda_context *ctx, const rda_config *cfg, int32_t P,
                                      const rda_tensor *q, const rda_tensor *k,
                                      const rda_tensor *v, rda_tensor *o, rda_tensor *lse,
                                      rda_ring_stats *stats) {
    return ring_threads(ctx, cfg, P, NULL, q, k, v, o, lse, stats);
}

rda_status rda_ring_forward_gpus(rda_context *ctx, const rda_config *cfg, int32_t P,
                                 const int32_t *devices, const rda_tensor *q, const rda_tensor *k,
                                 const rda_tensor *v, rda_tensor *o, rda_tensor *lse,
                                 rda_ring_stats *stats) {
    if (!devices) {
        if (ctx) rda_set_msg(ctx->msg, "devices is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    return ring_threads(ctx, cfg, P, devices, q, k, v, o, lse, stats);
}
