/* Builds without MPI: the MPI engine answers that it is not there. */
#include "comm.h"

rda_status rda_comm_create_mpi(const void *mpi_comm, rda_comm **out) {
    (void)mpi_comm;
    if (out) *out = NULL;
    return RDA_STATUS_UNSUPPORTED;
}
