#ifndef RDA_RING_H
#define RDA_RING_H

#include "internal.h"

/* What one ring call computes on one rank's rows: a forward (q, k, v into
 * o and the optional lse) or a backward (every tensor in bwd). */
typedef struct rda_ring_work {
    bool backward;
    const rda_tensor *q, *k, *v;
    rda_tensor *o, *lse;
    rda_bwd_tensors bwd;
} rda_ring_work;

/* One rank's part of a ring call (comm NULL: a single rank): the one loop
 * of every variant, forward and backward. Validates everything before
 * writing to an output. */
rda_status rda_ring_run(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                        const rda_ring_work *w, rda_ring_stats *stats);

#endif
