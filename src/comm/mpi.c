/* MPI engine: one process per rank. Transfers are non-blocking (Isend /
 * Irecv) and polled against the deadline, so a peer that stops or dies
 * makes the wait end with RDA_STATUS_TIMEOUT naming it instead of hanging.
 * The configuration check goes through rank 0, point to point, polled the
 * same way, so that a rank that never arrives is named.
 * The engine works on a duplicate of the caller's communicator with
 * MPI_ERRORS_RETURN, so MPI failures come back as statuses. */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"

#define RDA_MPI_TAG 0x7264 /* "rd" */

typedef struct {
    MPI_Comm comm;
    MPI_Request req[2]; /* receive, send */
    int pending;
    int dir; /* of the shift in progress */
    void *gather; /* agree: everybody's blob */
} mpi_rank;

static rda_status mpi_fail(rda_comm *c, int err, const char *what, char *msg) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, s, &len);
    rda_set_msg(msg, "rank %d: %s failed: %s", c->rank, what, s);
    return RDA_STATUS_COMM_ERROR;
}

static rda_status mpi_shift_start(rda_comm *c, const void *send, size_t send_bytes, void *recv,
                                  size_t recv_bytes, int dir, const void *ready, char *msg) {
    mpi_rank *m = c->impl;
    rda_status st;
    /* MPI reads and writes the buffers from the host: the rank's device
     * work (a CUDA context with a CUDA-aware MPI) must be done first */
    if (ready && c->sync && (st = c->sync(c->copy_ctx))) return st;
    if (send_bytes > INT_MAX || recv_bytes > INT_MAX) {
        rda_set_msg(msg, "rank %d: a key/value block of more than %d bytes (use more ranks)", c->rank,
                    INT_MAX);
        return RDA_STATUS_UNSUPPORTED;
    }
    int dst = (c->rank + dir + c->size) % c->size, src = (c->rank - dir + c->size) % c->size, err;
    m->dir = dir;
    if ((err = MPI_Irecv(recv, (int)recv_bytes, MPI_BYTE, src, RDA_MPI_TAG, m->comm, &m->req[0])))
        return mpi_fail(c, err, "MPI_Irecv", msg);
    if ((err = MPI_Isend(send, (int)send_bytes, MPI_BYTE, dst, RDA_MPI_TAG, m->comm, &m->req[1])))
        return mpi_fail(c, err, "MPI_Isend", msg);
    m->pending = 1;
    return RDA_STATUS_SUCCESS;
}

static rda_status mpi_shift_wait(rda_comm *c, double timeout_s, char *msg) {
    mpi_rank *m = c->impl;
    if (!m->pending) return RDA_STATUS_SUCCESS;
    double end = rda_comm_now() + timeout_s;
    int done[2] = {0, 0}, err;
    for (;;) {
        for (int i = 0; i < 2; i++)
            if (!done[i] && (err = MPI_Test(&m->req[i], &done[i], MPI_STATUS_IGNORE))) {
                m->pending = 0;
                return mpi_fail(c, err, "MPI_Test", msg);
            }
        if (done[0] && done[1]) break;
        if (rda_comm_now() > end) {
            int src = (c->rank - m->dir + c->size) % c->size, dst = (c->rank + m->dir + c->size) % c->size;
            if (!done[0])
                rda_set_msg(msg, "rank %d: no data from rank %d within %.3g s", c->rank, src, timeout_s);
            else
                rda_set_msg(msg, "rank %d: rank %d did not take its data within %.3g s", c->rank, dst,
                            timeout_s);
            return RDA_STATUS_TIMEOUT; /* the communicator is unusable from here on */
        }
        rda_comm_nap();
    }
    m->pending = 0;
    return RDA_STATUS_SUCCESS;
}

/* Polls one request until it completes or the deadline passes. */
static rda_status wait_one(rda_comm *c, MPI_Request *req, double end, int *done, char *msg) {
    int err;
    *done = 0;
    while (!*done) {
        if ((err = MPI_Test(req, done, MPI_STATUS_IGNORE))) return mpi_fail(c, err, "MPI_Test", msg);
        if (*done || rda_comm_now() > end) break;
        rda_comm_nap();
    }
    return RDA_STATUS_SUCCESS;
}

/* Rank 0 collects every rank's blob (point to point, so that it can name a
 * rank that never arrives), compares, and sends each rank the verdict: 0,
 * r + 1 for a mismatch at rank r, or -(r + 1) when rank r did not answer. */
static rda_status mpi_agree(rda_comm *c, const void *blob, size_t bytes, double timeout_s,
                            char *msg) {
    mpi_rank *m = c->impl;
    double end = rda_comm_now() + timeout_s;
    int verdict = 0, done, err;
    rda_status st;
    if (bytes > INT_MAX) return RDA_STATUS_INTERNAL;
    if (c->rank == 0) {
        free(m->gather);
        m->gather = malloc(bytes * (size_t)c->size + 1);
        MPI_Request *reqs = calloc((size_t)c->size, sizeof(MPI_Request));
        if (!m->gather || !reqs) {
            free(reqs);
            rda_set_msg(msg, "rank 0: out of memory for the configuration check");
            return RDA_STATUS_OUT_OF_MEMORY;
        }
        for (int r = 1; r < c->size; r++)
            if ((err = MPI_Irecv((char *)m->gather + bytes * (size_t)r, (int)bytes, MPI_BYTE, r,
                                 RDA_MPI_TAG + 1, m->comm, &reqs[r]))) {
                free(reqs);
                return mpi_fail(c, err, "MPI_Irecv", msg);
            }
        for (int r = 1; r < c->size && verdict == 0; r++) {
            if ((st = wait_one(c, &reqs[r], end, &done, msg))) {
                free(reqs);
                return st;
            }
            if (!done) verdict = -(r + 1);
            else if (memcmp((char *)m->gather + bytes * (size_t)r, blob, bytes) != 0) verdict = r + 1;
        }
        free(reqs); /* requests left pending belong to ranks that are gone */
        for (int r = 1; r < c->size; r++) {
            MPI_Request q;
            if (MPI_Isend(&verdict, 1, MPI_INT, r, RDA_MPI_TAG + 2, m->comm, &q) == MPI_SUCCESS)
                MPI_Request_free(&q);
        }
    } else {
        MPI_Request q[2];
        if ((err = MPI_Isend(blob, (int)bytes, MPI_BYTE, 0, RDA_MPI_TAG + 1, m->comm, &q[0])))
            return mpi_fail(c, err, "MPI_Isend", msg);
        MPI_Request_free(&q[0]);
        if ((err = MPI_Irecv(&verdict, 1, MPI_INT, 0, RDA_MPI_TAG + 2, m->comm, &q[1])))
            return mpi_fail(c, err, "MPI_Irecv", msg);
        if ((st = wait_one(c, &q[1], end, &done, msg))) return st;
        if (!done) {
            rda_set_msg(msg, "rank %d: rank 0 did not answer the configuration check within %.3g s",
                        c->rank, timeout_s);
            return RDA_STATUS_TIMEOUT;
        }
    }
    if (verdict < 0) {
        rda_set_msg(msg, "rank %d: rank %d did not reach the configuration check within %.3g s", c->rank,
                    -verdict - 1, timeout_s);
        return RDA_STATUS_TIMEOUT;
    }
    if (verdict > 0) {
        rda_set_msg(msg, "rank %d: rank %d was called with a configuration unlike rank 0's", c->rank,
                    verdict - 1);
        return RDA_STATUS_CONFIG_MISMATCH;
    }
    return RDA_STATUS_SUCCESS;
}

static void mpi_abort(rda_comm *c) {
    /* Nothing can be said safely to peers that may be gone: they find out by
     * their own deadlines. The requests in flight are left as they are. */
    (void)c;
}

static void mpi_destroy(rda_comm *c) {
    mpi_rank *m = c->impl;
    if (!m->pending) MPI_Comm_free(&m->comm); /* a timed-out ring keeps it: freeing could block */
    free(m->gather);
    free(m);
    free(c);
}

static const rda_comm_ops mpi_ops = {"mpi", mpi_shift_start, mpi_shift_wait, mpi_agree, mpi_abort,
                                     mpi_destroy};

rda_status rda_comm_create_mpi(const void *mpi_comm, rda_comm **out) {
    if (!mpi_comm || !out) return RDA_STATUS_NULL_POINTER;
    *out = NULL;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) return RDA_STATUS_INVALID_ARGUMENT;
    rda_comm *c = calloc(1, sizeof(*c));
    mpi_rank *m = calloc(1, sizeof(*m));
    if (!c || !m) {
        free(c);
        free(m);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    if (MPI_Comm_dup(*(const MPI_Comm *)mpi_comm, &m->comm) != MPI_SUCCESS) {
        free(c);
        free(m);
        return RDA_STATUS_COMM_ERROR;
    }
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &c->rank);
    MPI_Comm_size(m->comm, &c->size);
    c->ops = &mpi_ops;
    c->impl = m;
    *out = c;
    return RDA_STATUS_SUCCESS;
}
