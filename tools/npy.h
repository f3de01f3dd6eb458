/* .npy files (NumPy format 1.0-3.0): little-endian f2/f4/f8 arrays in C
 * order, up to 4 dimensions. */
#ifndef RDA_NPY_H
#define RDA_NPY_H

#include <stdint.h>
#include <stdio.h>

#include "rda.h"

typedef struct {
    rda_dtype dtype;
    int32_t ndim;
    int64_t shape[RDA_MAX_DIMS];
    void *data; /* malloc'ed; free with rda_npy_free */
} rda_npy;

/* Reads path; on failure returns a status and writes a message to err. */
rda_status rda_npy_read(const char *path, rda_npy *out, char *err, size_t err_len);
/* The same from an open, seekable stream (path names it in messages). */
rda_status rda_npy_read_stream(FILE *f, const char *path, rda_npy *out, char *err, size_t err_len);
/* Writes path through a temporary file beside it, renamed on success: a
 * failure leaves no file behind and an earlier file of that name as it was. */
rda_status rda_npy_write(const char *path, rda_dtype dtype, int32_t ndim, const int64_t *shape,
                         const void *data, char *err, size_t err_len);
/* The same up to the rename: writes a temporary file in path's folder and
 * its name to tmp (the caller renames it into place or removes it). */
rda_status rda_npy_write_temp(const char *path, rda_dtype dtype, int32_t ndim, const int64_t *shape,
                              const void *data, char *tmp, size_t tmp_len, char *err, size_t err_len);
/* Whether two paths name the same file: the same device and inode when both
 * exist, else the same canonical path. */
int rda_same_file(const char *a, const char *b);
void rda_npy_free(rda_npy *a);
int64_t rda_npy_count(const rda_npy *a);

#endif
