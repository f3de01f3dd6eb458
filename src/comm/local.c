/* In-process engine: P virtual ranks, one thread each, handing buffers over
 * through mailboxes under one mutex. A message is copied by its receiver
 * straight from the sender's buffer; the sender's wait ends once that copy
 * is done, so the sender may then reuse its buffer. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"

typedef struct {
    const void *ptr;
    size_t bytes;
    const void *ready; /* the sender's marker: the copy is ordered after it */
    int full;
} mailbox;

typedef struct {
    int32_t P;
    int32_t refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mailbox *box;            /* box[2p], box[2p + 1]: message for rank p along the ring, against it */
    const void **blobs;      /* agree: each rank's blob */
    int32_t arrived;         /* agree: barrier count */
    uint64_t *seen_gen;      /* agree: barrier generation each rank last reached */
    uint64_t barrier_gen;
    int32_t failed_rank;     /* -1 while every rank is fine */
} local_group;

typedef struct {
    local_group *g;
    void *recv;
    size_t recv_bytes;
    int pending;
    int dir; /* of the shift in progress */
} local_rank;

static void deadline_after(double s, struct timespec *ts) {
    clock_gettime(CLOCK_REALTIME, ts);
    time_t whole = (time_t)s;
    long ns = (long)((s - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static rda_status peer_failed(local_group *g, rda_comm *c, char *msg) {
    rda_set_msg(msg, "rank %d: rank %d of the ring failed", c->rank, g->failed_rank);
    return RDA_STATUS_COMM_ERROR;
}

/* The mailbox of messages for rank p travelling in direction dir. */
static mailbox *box_of(local_group *g, int32_t p, int dir) { return &g->box[2 * p + (dir < 0)]; }

static rda_status local_shift_start(rda_comm *c, const void *send, size_t send_bytes, void *recv,
                                    size_t recv_bytes, int dir, const void *ready, char *msg) {
    local_rank *lr = c->impl;
    local_group *g = lr->g;
    int32_t dst = (c->rank + dir + c->size) % c->size;
    rda_status st = RDA_STATUS_SUCCESS;
    pthread_mutex_lock(&g->mu);
    if (g->failed_rank >= 0) {
        st = peer_failed(g, c, msg);
    } else if (box_of(g, dst, dir)->full || lr->pending) {
        rda_set_msg(msg, "rank %d: shift started twice", c->rank);
        st = RDA_STATUS_INTERNAL;
    } else {
        box_of(g, dst, dir)->ptr = send;
        box_of(g, dst, dir)->bytes = send_bytes;
        box_of(g, dst, dir)->ready = ready; /* valid until our wait ends, which is after the copy */
        box_of(g, dst, dir)->full = 1;
        lr->recv = recv;
        lr->recv_bytes = recv_bytes;
        lr->pending = 1;
        lr->dir = dir;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

static rda_status local_shift_wait(rda_comm *c, double timeout_s, char *msg) {
    local_rank *lr = c->impl;
    local_group *g = lr->g;
    int32_t me = c->rank, dst = (me + lr->dir + c->size) % c->size, src = (me - lr->dir + c->size) % c->size;
    struct timespec ts;
    deadline_after(timeout_s, &ts);
    rda_status st = RDA_STATUS_SUCCESS;
    if (!lr->pending) return RDA_STATUS_SUCCESS;
    mailbox *in = box_of(g, me, lr->dir), *out = box_of(g, dst, lr->dir);
    pthread_mutex_lock(&g->mu);
    /* receive */
    while (!in->full && g->failed_rank < 0) {
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT && !in->full) {
            rda_set_msg(msg, "rank %d: no data from rank %d within %.3g s", me, src, timeout_s);
            st = RDA_STATUS_TIMEOUT;
            goto done;
        }
    }
    if (!in->full) {
        st = peer_failed(g, c, msg);
        goto done;
    }
    if (in->bytes != lr->recv_bytes) {
        rda_set_msg(msg, "rank %d: rank %d sent %zu bytes, %zu expected", me, src, in->bytes,
                    lr->recv_bytes);
        st = RDA_STATUS_COMM_ERROR;
        goto done;
    }
    {
        const void *from = in->ptr, *ready = in->ready;
        pthread_mutex_unlock(&g->mu); /* the sender leaves its buffer alone until we release it */
        int failed = 0;
        if (c->copy)
            failed = c->copy(c->copy_ctx, lr->recv, from, lr->recv_bytes, ready);
        else
            memcpy(lr->recv, from, lr->recv_bytes);
        pthread_mutex_lock(&g->mu);
        if (failed) {
            rda_set_msg(msg, "rank %d: copying %zu bytes from rank %d failed", me, lr->recv_bytes, src);
            st = RDA_STATUS_COMM_ERROR;
            goto done;
        }
    }
    in->full = 0;
    pthread_cond_broadcast(&g->cv);
    /* wait until our own message was taken */
    while (out->full && g->failed_rank < 0) {
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT && out->full) {
            rda_set_msg(msg, "rank %d: rank %d did not take its data within %.3g s", me, dst,
                        timeout_s);
            st = RDA_STATUS_TIMEOUT;
            goto done;
        }
    }
    if (out->full) st = peer_failed(g, c, msg);
done:
    lr->pending = 0;
    pthread_mutex_unlock(&g->mu);
    return st;
}

/* Waits until all P ranks arrived (generation barrier). Needs g->mu held. */
static rda_status barrier_locked(rda_comm *c, local_group *g, struct timespec *ts, double timeout_s,
                                 char *msg) {
    uint64_t gen = g->barrier_gen;
    g->seen_gen[c->rank] = gen + 1;
    if (++g->arrived == g->P) {
        g->arrived = 0;
        g->barrier_gen++;
        pthread_cond_broadcast(&g->cv);
        return RDA_STATUS_SUCCESS;
    }
    while (g->barrier_gen == gen && g->failed_rank < 0) {
        if (pthread_cond_timedwait(&g->cv, &g->mu, ts) == ETIMEDOUT && g->barrier_gen == gen) {
            int32_t missing = 0;
            while (missing < g->P && g->seen_gen[missing] == gen + 1) missing++;
            rda_set_msg(msg, "rank %d: rank %d did not reach the configuration check within %.3g s",
                        c->rank, missing, timeout_s);
            return RDA_STATUS_TIMEOUT;
        }
    }
    if (g->barrier_gen == gen) return peer_failed(g, c, msg);
    return RDA_STATUS_SUCCESS;
}

static rda_status local_agree(rda_comm *c, const void *blob, size_t bytes, double timeout_s,
                              char *msg) {
    local_rank *lr = c->impl;
    local_group *g = lr->g;
    struct timespec ts;
    deadline_after(timeout_s, &ts);
    pthread_mutex_lock(&g->mu);
    g->blobs[c->rank] = blob;
    rda_status st = barrier_locked(c, g, &ts, timeout_s, msg);
    if (st == RDA_STATUS_SUCCESS) {
        for (int32_t r = 0; r < g->P && st == RDA_STATUS_SUCCESS; r++)
            if (memcmp(g->blobs[r], g->blobs[0], bytes) != 0) {
                rda_set_msg(msg, "rank %d: rank %d was called with a configuration unlike rank 0's",
                            c->rank, r);
                st = RDA_STATUS_CONFIG_MISMATCH;
            }
        /* keep every blob alive until all ranks compared */
        rda_status st2 = barrier_locked(c, g, &ts, timeout_s, msg);
        if (st == RDA_STATUS_SUCCESS) st = st2;
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

static void local_abort(rda_comm *c) {
    local_group *g = ((local_rank *)c->impl)->g;
    pthread_mutex_lock(&g->mu);
    if (g->failed_rank < 0) g->failed_rank = c->rank;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void group_free(local_group *g) {
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->box);
    free(g->blobs);
    free(g->seen_gen);
    free(g);
}

static void local_destroy(rda_comm *c) {
    local_rank *lr = c->impl;
    local_group *g = lr->g;
    pthread_mutex_lock(&g->mu);
    int32_t left = --g->refs;
    pthread_mutex_unlock(&g->mu);
    if (left == 0) group_free(g);
    free(lr);
    free(c);
}

static const rda_comm_ops local_ops = {"local", local_shift_start, local_shift_wait, local_agree,
                                       local_abort, local_destroy};

rda_status rda_comm_create_local(int32_t P, rda_comm **comms) {
    if (!comms) return RDA_STATUS_NULL_POINTER;
    if (P < 1 || P > 65536) return RDA_STATUS_INVALID_ARGUMENT;
    for (int32_t p = 0; p < P; p++) comms[p] = NULL;
    local_group *g = calloc(1, sizeof(*g));
    if (!g) return RDA_STATUS_OUT_OF_MEMORY;
    g->P = P;
    g->failed_rank = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->box = calloc(2 * (size_t)P, sizeof(mailbox));
    g->blobs = calloc((size_t)P, sizeof(void *));
    g->seen_gen = calloc((size_t)P, sizeof(uint64_t));
    if (!g->box || !g->blobs || !g->seen_gen) {
        group_free(g);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    for (int32_t p = 0; p < P; p++) {
        rda_comm *c = calloc(1, sizeof(*c));
        local_rank *lr = calloc(1, sizeof(*lr));
        if (!c || !lr) {
            free(c);
            free(lr);
            for (int32_t q = 0; q < p; q++) rda_comm_destroy(comms[q]);
            if (p == 0) group_free(g);
            for (int32_t q = 0; q < P; q++) comms[q] = NULL;
            return RDA_STATUS_OUT_OF_MEMORY;
        }
        lr->g = g;
        c->ops = &local_ops;
        c->rank = p;
        c->size = P;
        c->impl = lr;
        g->refs++;
        comms[p] = c;
    }
    return RDA_STATUS_SUCCESS;
}

void rda_comm_destroy(rda_comm *c) {
    if (c) c->ops->destroy(c);
}

int32_t rda_comm_rank(const rda_comm *c) { return c ? c->rank : -1; }
int32_t rda_comm_size(const rda_comm *c) { return c ? c->size : -1; }
