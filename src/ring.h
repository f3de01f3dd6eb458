#ifndef RDA_RING_H
#define RDA_RING_H

#include "internal.h"

/* One rank's forward (comm NULL: a single rank). Validates everything
 * before writing to o/lse. */
rda_status rda_ring_run(rda_context *ctx, rda_comm *comm, const rda_config *cfg, int64_t N,
                        const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                        rda_tensor *o, rda_tensor *lse, rda_ring_stats *stats);

#endif
