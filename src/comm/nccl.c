/* NCCL engine: GPU ranks, grouped send/receive around the ring on the
 * rank's CUDA stream. Every wait polls the stream and
 * ncclCommGetAsyncError against the deadline; a failed or timed-out ring is
 * torn down with ncclCommAbort, so no rank hangs. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"

typedef struct {
    ncclComm_t comm;
    int device;
    cudaStream_t stream; /* the stream the transfers are ordered on */
    cudaEvent_t done;
    int pending, aborted, owned, own_stream;
    int dir; /* of the shift in progress */
    void *dblob; /* agree: device staging */
    size_t dblob_cap;
} nccl_rank;

static int current_device(void) {
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess) return -1;
    return d;
}

static void teardown(rda_comm *c) {
    nccl_rank *n = c->impl;
    if (!n->aborted) {
        ncclCommAbort(n->comm); /* unblocks what is in flight; the communicator is gone */
        n->aborted = 1;
    }
}

/* Polls the event until done, an NCCL async error, or the deadline. */
static rda_status poll_done(rda_comm *c, double timeout_s, const char *what, char *msg) {
    nccl_rank *n = c->impl;
    double end = rda_comm_now() + timeout_s;
    for (;;) {
        cudaError_t e = cudaEventQuery(n->done);
        if (e == cudaSuccess) return RDA_STATUS_SUCCESS;
        if (e != cudaErrorNotReady) {
            rda_set_msg(msg, "rank %d: %s: %s", c->rank, what, cudaGetErrorString(e));
            teardown(c);
            return RDA_STATUS_COMM_ERROR;
        }
        ncclResult_t ae = ncclSuccess;
        ncclCommGetAsyncError(n->comm, &ae);
        if (ae != ncclSuccess && ae != ncclInProgress) {
            rda_set_msg(msg, "rank %d: %s: NCCL error %s", c->rank, what, ncclGetErrorString(ae));
            teardown(c);
            return RDA_STATUS_COMM_ERROR;
        }
        if (rda_comm_now() > end) {
            int prev = (c->rank - n->dir + c->size) % c->size;
            rda_set_msg(msg, "rank %d: %s with rank %d did not complete within %.3g s", c->rank, what,
                        prev, timeout_s);
            teardown(c);
            return RDA_STATUS_TIMEOUT;
        }
        rda_comm_nap();
    }
}

static rda_status nccl_shift_start(rda_comm *c, const void *send, size_t send_bytes, void *recv,
                                   size_t recv_bytes, int dir, const void *ready, char *msg) {
    nccl_rank *n = c->impl;
    if (n->aborted) {
        rda_set_msg(msg, "rank %d: the ring was torn down by an earlier failure", c->rank);
        return RDA_STATUS_COMM_ERROR;
    }
    cudaSetDevice(n->device);
    int next = (c->rank + dir + c->size) % c->size, prev = (c->rank - dir + c->size) % c->size;
    n->dir = dir;
    /* after the rank's work on its own stream, with no host wait */
    if (ready && cudaStreamWaitEvent(n->stream, (cudaEvent_t)(void *)ready, 0) != cudaSuccess) {
        rda_set_msg(msg, "rank %d: ordering the transfer after the rank's work failed", c->rank);
        teardown(c);
        return RDA_STATUS_COMM_ERROR;
    }
    ncclResult_t r = ncclGroupStart();
    if (r == ncclSuccess) r = ncclSend(send, send_bytes, ncclChar, next, n->comm, n->stream);
    if (r == ncclSuccess) r = ncclRecv(recv, recv_bytes, ncclChar, prev, n->comm, n->stream);
    ncclResult_t r2 = ncclGroupEnd();
    if (r == ncclSuccess) r = r2;
    if (r != ncclSuccess) {
        rda_set_msg(msg, "rank %d: ncclSend/ncclRecv: %s", c->rank, ncclGetErrorString(r));
        teardown(c);
        return RDA_STATUS_COMM_ERROR;
    }
    cudaEventRecord(n->done, n->stream);
    n->pending = 1;
    return RDA_STATUS_SUCCESS;
}

static rda_status nccl_shift_wait(rda_comm *c, double timeout_s, char *msg) {
    nccl_rank *n = c->impl;
    if (!n->pending) return RDA_STATUS_SUCCESS;
    n->pending = 0;
    return poll_done(c, timeout_s, "the key/value transfer", msg);
}

static rda_status nccl_agree(rda_comm *c, const void *blob, size_t bytes, double timeout_s,
                             char *msg) {
    nccl_rank *n = c->impl;
    cudaSetDevice(n->device);
    size_t need = bytes * (size_t)(c->size + 1);
    if (need > n->dblob_cap) {
        cudaFree(n->dblob);
        n->dblob = NULL;
        n->dblob_cap = 0;
        if (cudaMalloc(&n->dblob, need) != cudaSuccess) {
            rda_set_msg(msg, "rank %d: out of device memory for the configuration check", c->rank);
            return RDA_STATUS_OUT_OF_MEMORY;
        }
        n->dblob_cap = need;
    }
    char *host = malloc(bytes * (size_t)c->size);
    if (!host) return RDA_STATUS_OUT_OF_MEMORY;
    char *dsend = n->dblob, *drecv = (char *)n->dblob + bytes;
    cudaMemcpyAsync(dsend, blob, bytes, cudaMemcpyHostToDevice, n->stream);
    ncclResult_t r = ncclAllGather(dsend, drecv, bytes, ncclChar, n->comm, n->stream);
    if (r != ncclSuccess) {
        free(host);
        rda_set_msg(msg, "rank %d: ncclAllGather: %s", c->rank, ncclGetErrorString(r));
        teardown(c);
        return RDA_STATUS_COMM_ERROR;
    }
    cudaEventRecord(n->done, n->stream);
    rda_status st = poll_done(c, timeout_s, "the configuration check", msg);
    if (st == RDA_STATUS_SUCCESS && cudaMemcpy(host, drecv, bytes * (size_t)c->size, cudaMemcpyDeviceToHost))
        st = RDA_STATUS_COMM_ERROR;
    for (int k = 0; st == RDA_STATUS_SUCCESS && k < c->size; k++)
        if (memcmp(host + bytes * (size_t)k, blob, bytes) != 0) {
            rda_set_msg(msg, "rank %d: rank %d was called with a configuration unlike this rank's", c->rank, k);
            st = RDA_STATUS_CONFIG_MISMATCH;
        }
    free(host);
    return st;
}

static void nccl_abort(rda_comm *c) { teardown(c); }

static void nccl_destroy(rda_comm *c) {
    nccl_rank *n = c->impl;
    int prev = current_device();
    cudaSetDevice(n->device);
    if (n->owned) {
        if (n->aborted)
            ; /* ncclCommAbort already freed it */
        else
            ncclCommDestroy(n->comm);
    }
    cudaEventDestroy(n->done);
    cudaFree(n->dblob);
    if (n->own_stream) cudaStreamDestroy(n->stream);
    free(n);
    free(c);
    if (prev >= 0) cudaSetDevice(prev);
}

static const rda_comm_ops nccl_ops = {"nccl", nccl_shift_start, nccl_shift_wait, nccl_agree,
                                      nccl_abort, nccl_destroy};

/* stream NULL: a non-blocking stream of the engine's own (never the legacy
 * default stream, which would order the transfers against unrelated work) */
static rda_status wrap(ncclComm_t comm, int device, void *stream, int owned, rda_comm **out) {
    rda_comm *c = calloc(1, sizeof(*c));
    nccl_rank *n = calloc(1, sizeof(*n));
    if (!c || !n) {
        free(c);
        free(n);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    n->comm = comm;
    n->device = device;
    n->stream = stream;
    n->owned = owned;
    cudaSetDevice(device);
    if (!stream) {
        if (cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking) != cudaSuccess) {
            free(c);
            free(n);
            return RDA_STATUS_DEVICE_ERROR;
        }
        n->own_stream = 1;
    }
    if (cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming) != cudaSuccess) {
        if (n->own_stream) cudaStreamDestroy(n->stream);
        free(c);
        free(n);
        return RDA_STATUS_DEVICE_ERROR;
    }
    ncclCommUserRank(comm, &c->rank);
    ncclCommCount(comm, &c->size);
    c->ops = &nccl_ops;
    c->impl = n;
    *out = c;
    return RDA_STATUS_SUCCESS;
}

rda_status rda_comm_create_nccl(const void *nccl_comm, int32_t device, void *stream, rda_comm **out) {
    if (!nccl_comm || !out) return RDA_STATUS_NULL_POINTER;
    *out = NULL;
    int prev = current_device();
    rda_status st = wrap(*(const ncclComm_t *)nccl_comm, device, stream, 0, out);
    if (prev >= 0) cudaSetDevice(prev);
    return st;
}

rda_status rda_comm_create_nccl_local(int32_t P, const int32_t *devices, void *const *streams,
                                      rda_comm **comms) {
    if (!devices || !comms) return RDA_STATUS_NULL_POINTER;
    if (P < 1) return RDA_STATUS_INVALID_ARGUMENT;
    ncclComm_t *nc = calloc((size_t)P, sizeof(ncclComm_t));
    if (!nc) return RDA_STATUS_OUT_OF_MEMORY;
    int prev = current_device();
    rda_status st = RDA_STATUS_SUCCESS;
    if (ncclCommInitAll(nc, P, devices) != ncclSuccess) {
        st = RDA_STATUS_COMM_ERROR;
        goto out;
    }
    for (int32_t p = 0; p < P; p++) {
        st = wrap(nc[p], devices[p], streams ? streams[p] : NULL, 1, &comms[p]);
        if (st) {
            for (int32_t q = 0; q < p; q++) rda_comm_destroy(comms[q]);
            for (int32_t q = p; q < P; q++) ncclCommDestroy(nc[q]);
            goto out;
        }
    }
out:
    free(nc);
    if (prev >= 0) cudaSetDevice(prev);
    return st;
}

rda_status rda_nccl_unique_id(void *id, size_t bytes) {
    if (!id) return RDA_STATUS_NULL_POINTER;
    if (bytes < sizeof(ncclUniqueId)) return RDA_STATUS_INVALID_ARGUMENT;
    ncclUniqueId u;
    if (ncclGetUniqueId(&u) != ncclSuccess) return RDA_STATUS_COMM_ERROR;
    memset(id, 0, bytes);
    memcpy(id, &u, sizeof(u));
    return RDA_STATUS_SUCCESS;
}

rda_status rda_comm_create_nccl_id(const void *id, size_t bytes, int32_t nranks, int32_t rank, int32_t device,
                                   void *stream, rda_comm **out) {
    if (!id || !out) return RDA_STATUS_NULL_POINTER;
    *out = NULL;
    if (bytes < sizeof(ncclUniqueId) || nranks < 1 || rank < 0 || rank >= nranks || device < 0)
        return RDA_STATUS_INVALID_ARGUMENT;
    ncclUniqueId u;
    memcpy(&u, id, sizeof(u));
    int prev = current_device();
    rda_status st = RDA_STATUS_SUCCESS;
    ncclComm_t nc = NULL;
    if (cudaSetDevice(device) != cudaSuccess) {
        st = RDA_STATUS_DEVICE_ERROR;
    } else if (ncclCommInitRank(&nc, nranks, u, rank) != ncclSuccess) {
        st = RDA_STATUS_COMM_ERROR;
    } else if ((st = wrap(nc, device, stream, 1, out))) {
        ncclCommDestroy(nc);
    }
    if (prev >= 0) cudaSetDevice(prev);
    return st;
}
