/* P ranks in one process, one thread each: the virtual ranks of
 * rda_ring_*_simulated (in-process engine, one context per rank kept in the
 * caller's context) and the GPUs of rda_ring_forward_gpus (NCCL, one
 * context and communicator per GPU, kept likewise). Each rank runs the ring
 * scheduler on its own rows: views into the full tensors where its rows are
 * one range in memory the rank can reach, else copies of its own, in and
 * out. Forward and backward share all of it; a call names its tensors by
 * slot. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "backend.h"
#include "plan.h"
#include "ring.h"

/* The tensors of a call, by slot. */
enum { T_Q, T_K, T_V, T_O, T_LSE, T_DOUT, T_DQ, T_DK, T_DV, T_COUNT };

typedef struct {
    bool backward;
    const rda_tensor *t[T_COUNT]; /* full tensors (NULL: not in this call) */
} full_call;

static bool slot_is_input(const full_call *f, int i) {
    return f->backward ? i <= T_DOUT : i <= T_V;
}

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
    const full_call *call;
    rda_rows rows;
    rda_ring_stats stats;
    rda_status st;
    const rda_backend_ops *be;
    bool own_rows; /* copy the rows into the rank's own buffers (another GPU) */
} sim_rank;

/* A view of rows [start, start + count) of a [B, N, H, D] tensor, or of
 * positions [start, start + count) of an LSE [B, H, N]. */
static rda_tensor rows_view(const rda_tensor *t, int64_t start, int64_t count, bool lse) {
    rda_tensor r = *t;
    const int dim = lse ? 2 : 1;
    r.data = (char *)t->data + (size_t)(start * t->strides[dim]) * rda_dtype_size(t->dtype);
    r.shape[dim] = count;
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
                    if (be->copy(ctx, to_local ? l : f, to_local ? f : l, es * n, NULL)) return -1;
                }
    return 0;
}

static int copy_lse_rows(rda_context *ctx, const rda_backend_ops *be, const rda_tensor *full, rda_tensor *local,
                         const rda_rows *rows, bool to_local) {
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
                    if (be->copy(ctx, to_local ? l : f, to_local ? f : l, sizeof(float) * (size_t)n, NULL)) return -1;
                }
    return 0;
}

/* The rank's ring work over the tensors x (by slot). */
static rda_ring_work work_of(const full_call *f, rda_tensor *x, const bool *has) {
    rda_ring_work w;
    memset(&w, 0, sizeof(w));
    w.backward = f->backward;
    if (f->backward) {
        w.bwd = (rda_bwd_tensors){&x[T_Q], &x[T_K], &x[T_V], &x[T_O], &x[T_LSE], &x[T_DOUT],
                                  &x[T_DQ], &x[T_DK], &x[T_DV]};
    } else {
        w.q = &x[T_Q], w.k = &x[T_K], w.v = &x[T_V], w.o = &x[T_O];
        w.lse = has[T_LSE] ? &x[T_LSE] : NULL;
    }
    return w;
}

static void *sim_rank_main(void *arg) {
    sim_rank *s = arg;
    rda_context *ctx = s->ctx;
    const full_call *f = s->call;
    rda_tensor x[T_COUNT];
    bool has[T_COUNT];
    for (int i = 0; i < T_COUNT; i++) has[i] = f->t[i] != NULL;
    if (s->rows.n == 1 && !s->own_rows) { /* views of the full tensors */
        for (int i = 0; i < T_COUNT; i++)
            if (has[i]) x[i] = rows_view(f->t[i], s->rows.start[0], s->rows.count[0], i == T_LSE);
        rda_ring_work w = work_of(f, x, has);
        s->st = rda_ring_run(ctx, s->comm, s->cfg, s->N, &w, &s->stats);
        return NULL;
    }
    /* zig-zag, or ranks on other GPUs: the rank's rows live in buffers of its own */
    void *mem[T_COUNT] = {NULL};
    s->st = RDA_STATUS_SUCCESS;
    for (int i = 0; i < T_COUNT; i++) {
        if (!has[i]) continue;
        const rda_tensor *t = f->t[i];
        int64_t shape[4] = {t->shape[0], s->rows.total, t->shape[2], t->shape[3]};
        if (i == T_LSE) {
            shape[1] = t->shape[1];
            shape[2] = s->rows.total;
        }
        size_t bytes = rda_dtype_size(t->dtype) * (size_t)(shape[0] * shape[1] * shape[2] * (i == T_LSE ? 1 : shape[3]));
        mem[i] = s->be->alloc(ctx, bytes);
        if (!mem[i]) {
            rda_set_msg(ctx->msg, "out of memory for the rank's rows");
            s->st = RDA_STATUS_OUT_OF_MEMORY;
            s->comm->ops->abort(s->comm);
            gate_arrive(s->gate);
            goto done;
        }
        x[i] = rda_tensor_contiguous(mem[i], t->dtype, i == T_LSE ? 3 : 4, shape);
        int bad = 0;
        if (slot_is_input(f, i))
            bad = i == T_LSE ? copy_lse_rows(ctx, s->be, t, &x[i], &s->rows, true)
                             : copy_rows(ctx, s->be, t, &x[i], &s->rows, true);
        if (bad) {
            rda_set_msg(ctx->msg, "copying the rank's rows failed");
            s->st = RDA_STATUS_DEVICE_ERROR;
            s->comm->ops->abort(s->comm);
            gate_arrive(s->gate);
            goto done;
        }
    }
    gate_arrive(s->gate);
    rda_ring_work w = work_of(f, x, has);
    s->st = rda_ring_run(ctx, s->comm, s->cfg, s->N, &w, &s->stats);
    if (s->st == RDA_STATUS_SUCCESS) s->st = rda_context_synchronize(ctx);
    for (int i = 0; i < T_COUNT && s->st == RDA_STATUS_SUCCESS; i++) {
        if (!has[i] || slot_is_input(f, i)) continue;
        int bad = i == T_LSE ? copy_lse_rows(ctx, s->be, f->t[i], &x[i], &s->rows, false)
                             : copy_rows(ctx, s->be, f->t[i], &x[i], &s->rows, false);
        if (bad) {
            rda_set_msg(ctx->msg, "copying the rank's results back failed");
            s->st = RDA_STATUS_DEVICE_ERROR;
        }
    }
done:
    for (int i = 0; i < T_COUNT; i++)
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
                               const int32_t *devices, const full_call *f, rda_ring_stats *stats) {
    if (!ctx) return RDA_STATUS_NULL_POINTER;
    char *msg = ctx->msg;
    rda_problem p;
    rda_rows rows;
    rda_status st;
    const rda_tensor *q = f->t[T_Q];
    if (!q) {
        rda_set_msg(msg, "tensor q is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    /* everything is checked here first, so a rejected call writes nothing */
    rda_tensor x[T_COUNT];
    bool has[T_COUNT];
    for (int i = 0; i < T_COUNT; i++) {
        has[i] = f->t[i] != NULL;
        if (has[i]) x[i] = *f->t[i];
    }
    rda_bwd_tensors bt = {f->t[T_Q], f->t[T_K], f->t[T_V], f->t[T_O], f->t[T_LSE], f->t[T_DOUT],
                          has[T_DQ] ? &x[T_DQ] : NULL, has[T_DK] ? &x[T_DK] : NULL, has[T_DV] ? &x[T_DV] : NULL};
    if ((st = rda_problem_from_config(cfg, q->shape[1], &p, msg))) return st;
    if (f->backward)
        st = rda_validate_backward(&bt, 0, false, &p, msg);
    else
        st = rda_validate_tensors(q, f->t[T_K], f->t[T_V], f->t[T_O], f->t[T_LSE], 0, false, &p, msg);
    if (st) return st;
    if ((st = rda_plan_rows(p.N, P, p.layout, 0, &rows, msg))) return st;
    const rda_backend_ops *be;
    const rda_tensor *const ts[5] = {q, f->t[T_K], f->t[T_V], f->backward ? f->t[T_DQ] : f->t[T_O], f->t[T_LSE]};
    if ((st = rda_backend_for(ctx, &p, ts, &be))) return st;
    if (f->backward && !be->bwd_begin) {
        rda_set_msg(msg, "the %s backend has no backward pass yet", be->name);
        return RDA_STATUS_UNSUPPORTED;
    }
    if (P == 1 && !devices) {
        rda_ring_work w = work_of(f, x, has);
        return rda_ring_run(ctx, NULL, cfg, p.N, &w, stats);
    }
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
        ranks[r].call = f;
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
    full_call f = {false, {q, k, v, o, lse, NULL, NULL, NULL, NULL}};
    return ring_threads(ctx, cfg, P, NULL, &f, stats);
}

rda_status rda_ring_backward_simulated(rda_context *ctx, const rda_config *cfg, int32_t P,
                                       const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                                       const rda_tensor *o, const rda_tensor *lse, const rda_tensor *dout,
                                       rda_tensor *dq, rda_tensor *dk, rda_tensor *dv, rda_ring_stats *stats) {
    full_call f = {true, {q, k, v, o, lse, dout, dq, dk, dv}};
    return ring_threads(ctx, cfg, P, NULL, &f, stats);
}

rda_status rda_ring_forward_gpus(rda_context *ctx, const rda_config *cfg, int32_t P,
                                 const int32_t *devices, const rda_tensor *q, const rda_tensor *k,
                                 const rda_tensor *v, rda_tensor *o, rda_tensor *lse,
                                 rda_ring_stats *stats) {
    if (!devices) {
        if (ctx) rda_set_msg(ctx->msg, "devices is NULL");
        return RDA_STATUS_NULL_POINTER;
    }
    full_call f = {false, {q, k, v, o, lse, NULL, NULL, NULL, NULL}};
    return ring_threads(ctx, cfg, P, devices, &f, stats);
}
