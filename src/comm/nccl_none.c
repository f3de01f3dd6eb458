/* Builds without NCCL: the NCCL engine answers that it is not there. */
#include "comm.h"

rda_status rda_comm_create_nccl(const void *nccl_comm, int32_t device, void *stream, rda_comm **out) {
    (void)nccl_comm, (void)device, (void)stream;
    if (out) *out = NULL;
    return RDA_STATUS_UNSUPPORTED;
}

rda_status rda_comm_create_nccl_local(int32_t P, const int32_t *devices, void *const *streams,
                                      rda_comm **comms) {
    (void)P, (void)devices, (void)streams, (void)comms;
    return RDA_STATUS_UNSUPPORTED;
}

rda_status rda_nccl_unique_id(void *id, size_t bytes) {
    (void)id, (void)bytes;
    return RDA_STATUS_UNSUPPORTED;
}

rda_status rda_comm_create_nccl_id(const void *id, size_t bytes, int32_t nranks, int32_t rank, int32_t device,
                                   void *stream, rda_comm **out) {
    (void)id, (void)bytes, (void)nranks, (void)rank, (void)device, (void)stream;
    if (out) *out = NULL;
    return RDA_STATUS_UNSUPPORTED;
}
