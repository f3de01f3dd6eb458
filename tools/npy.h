/* .npy files (NumPy format 1.0-3.0): little-endian f2/f4/f8 arrays in C
 * order, up to 4 dimensions. */
#ifndef RDA_NPY_H
#define RDA_NPY_H

#include <stdint.h>

#include "rda.h"

typedef struct {
    rda_dtype dtype;
    int32_t ndim;
    int64_t shape[RDA_MAX_DIMS];
    void *data; /* malloc'ed; free with rda_npy_free */
} rda_npy;

/* Reads path; on failure returns a status and writes a message to err. */
rda_status rda_npy_read(const char *path, rda_npy *out, char *err, size_t err_len);
rda_status rda_npy_write(const char *path, rda_dtype dtype, int32_t ndim, const int64_t *shape,
                         const void *data, char *err, size_t err_len);
void rda_npy_free(rda_npy *a);
int64_t rda_npy_count(const rda_npy *a);

#endif
