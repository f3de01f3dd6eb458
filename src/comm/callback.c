/* Callback engine: a communicator whose transfers the caller implements
 * (rda_comm_callbacks), such as a framework's point-to-point layer. The
 * configuration check goes over the same transfers: each rank compares its
 * blob with its predecessor's, then the verdict goes P - 1 times around the
 * ring (equal neighbours all round: equal everywhere). */
#include <stdlib.h>
#include <string.h>

#include "comm.h"

typedef struct {
    rda_comm_callbacks cb;
    int pending, dir, failed;
} cb_rank;

static rda_status cb_start(rda_comm *c, const void *send, size_t send_bytes, void *recv, size_t recv_bytes,
                           int dir, const void *ready, char *msg) {
    cb_rank *r = c->impl;
    rda_status st;
    if (r->failed) {
        rda_set_msg(msg, "rank %d: the ring's transport failed earlier", c->rank);
        return RDA_STATUS_COMM_ERROR;
    }
    /* the transport reads and writes the buffers when it likes: the rank's
     * device work must be done first */
    if (ready && c->sync && (st = c->sync(c->copy_ctx))) return st;
    const int32_t to = (c->rank + dir + c->size) % c->size, from = (c->rank - dir + c->size) % c->size;
    r->dir = dir;
    if (r->cb.start(r->cb.user, send, send_bytes, to, recv, recv_bytes, from) != 0) {
        r->failed = 1;
        rda_set_msg(msg, "rank %d: the transfer to rank %d and from rank %d failed to start", c->rank, to, from);
        return RDA_STATUS_COMM_ERROR;
    }
    r->pending = 1;
    return RDA_STATUS_SUCCESS;
}

static rda_status cb_wait(rda_comm *c, double timeout_s, char *msg) {
    cb_rank *r = c->impl;
    if (!r->pending) return RDA_STATUS_SUCCESS;
    r->pending = 0;
    const int w = r->cb.wait(r->cb.user, timeout_s);
    if (w == 0) return RDA_STATUS_SUCCESS;
    r->failed = 1;
    const int32_t from = (c->rank - r->dir + c->size) % c->size;
    if (w == 1) {
        rda_set_msg(msg, "rank %d: the transfer with rank %d did not complete within %.3g s", c->rank, from,
                    timeout_s);
        return RDA_STATUS_TIMEOUT;
    }
    rda_set_msg(msg, "rank %d: the transfer with rank %d failed", c->rank, from);
    return RDA_STATUS_COMM_ERROR;
}

static rda_status cb_agree(rda_comm *c, const void *blob, size_t bytes, double timeout_s, char *msg) {
    if (c->size == 1) return RDA_STATUS_SUCCESS;
    unsigned char *prev = malloc(bytes ? bytes : 1);
    if (!prev) return RDA_STATUS_OUT_OF_MEMORY;
    rda_status st = cb_start(c, blob, bytes, prev, bytes, 1, NULL, msg);
    if (!st) st = cb_wait(c, timeout_s, msg);
    int32_t same = st == RDA_STATUS_SUCCESS && memcmp(prev, blob, bytes) == 0;
    free(prev);
    if (st) return st;
    /* the verdict around the ring: after P - 1 shifts every rank holds the minimum */
    for (int32_t s = 0; s + 1 < c->size; s++) {
        int32_t got = 1;
        if ((st = cb_start(c, &same, sizeof(same), &got, sizeof(got), 1, NULL, msg))) return st;
        if ((st = cb_wait(c, timeout_s, msg))) return st;
        same = same && got;
    }
    if (!same) {
        rda_set_msg(msg, "rank %d: the ranks were called with different configurations, sizes or types", c->rank);
        return RDA_STATUS_CONFIG_MISMATCH;
    }
    return RDA_STATUS_SUCCESS;
}

static void cb_abort(rda_comm *c) {
    cb_rank *r = c->impl;
    r->failed = 1;
    if (r->cb.abort) r->cb.abort(r->cb.user);
}

static void cb_destroy(rda_comm *c) {
    cb_rank *r = c->impl;
    if (r->cb.release) r->cb.release(r->cb.user);
    free(r);
    free(c);
}

static const rda_comm_ops cb_ops = {"callbacks", cb_start, cb_wait, cb_agree, cb_abort, cb_destroy};

rda_status rda_comm_create_callbacks(const rda_comm_callbacks *callbacks, int32_t rank, int32_t size,
                                     rda_comm **out) {
    if (!callbacks || !out) return RDA_STATUS_NULL_POINTER;
    *out = NULL;
    if (!callbacks->start || !callbacks->wait) return RDA_STATUS_NULL_POINTER;
    if (size < 1 || rank < 0 || rank >= size) return RDA_STATUS_INVALID_ARGUMENT;
    rda_comm *c = calloc(1, sizeof(*c));
    cb_rank *r = calloc(1, sizeof(*r));
    if (!c || !r) {
        free(c);
        free(r);
        return RDA_STATUS_OUT_OF_MEMORY;
    }
    r->cb = *callbacks;
    c->ops = &cb_ops;
    c->rank = rank;
    c->size = size;
    c->impl = r;
    *out = c;
    return RDA_STATUS_SUCCESS;
}
