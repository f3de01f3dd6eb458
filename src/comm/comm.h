/* The communication interface of the ring: it only moves bytes. Engines
 * (in-process now; MPI and NCCL behind the same table) implement it and the
 * ring scheduler never knows which one it talks to. */
#ifndef RDA_COMM_H
#define RDA_COMM_H

#include <time.h>

#include "../internal.h"

typedef struct rda_comm_ops {
    const char *name;
    /* Starts sending send_bytes from send to rank+dir and receiving
     * recv_bytes from rank-dir into recv (dir: +1 along the ring, -1 against
     * it; every rank of a shift passes the same dir). Both buffers stay
     * untouched by the caller until shift_wait returns; send is only read.
     * ready: the backend's marker (see rda_backend_ops.mark) after which send
     * holds its data and recv is free; the engine orders the transfer after
     * it on the device (an event wait) where it can, and on the host
     * (c->sync) where it cannot. NULL: both are ready now. */
    rda_status (*shift_start)(rda_comm *c, const void *send, size_t send_bytes, void *recv,
                              size_t recv_bytes, int dir, const void *ready, char *msg);
    /* Waits for the started shift; RDA_STATUS_TIMEOUT after timeout_s. */
    rda_status (*shift_wait)(rda_comm *c, double timeout_s, char *msg);
    /* Succeeds on every rank iff all ranks passed identical bytes;
     * RDA_STATUS_CONFIG_MISMATCH on every rank otherwise. */
    rda_status (*agree)(rda_comm *c, const void *blob, size_t bytes, double timeout_s, char *msg);
    /* Tells the other ranks this one failed, so that they stop waiting. */
    void (*abort)(rda_comm *c);
    void (*destroy)(rda_comm *c);
} rda_comm_ops;

/* Polling helpers of the engines that wait against a deadline. */
static inline double rda_comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void rda_comm_nap(void) {
    struct timespec ts = {0, 50000}; /* 50 us between polls */
    nanosleep(&ts, NULL);
}

struct rda_comm {
    const rda_comm_ops *ops;
    int32_t rank, size;
    void *impl;
    /* how the in-process engine copies into this rank's buffers (host memcpy,
     * or a device copy for GPU buffers, complete on return); set by the ring
     * from its backend and the rank's context */
    int (*copy)(rda_context *ctx, void *dst, const void *src, size_t bytes, const void *ready); /* 0 on success */
    /* a host wait for the work issued on copy_ctx (engines that read the
     * buffers from the host), set with copy */
    rda_status (*sync)(rda_context *ctx);
    rda_context *copy_ctx;
};

#endif
