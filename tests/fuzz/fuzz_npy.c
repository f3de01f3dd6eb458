/* libFuzzer target: the .npy reader on arbitrary bytes. It must return a
 * status (never crash, over-read or allocate what the bytes do not hold),
 * and what it accepts must hold exactly the data its header declares. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size == 0) return 0;
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return 0;
    rda_npy a;
    char err[256];
    rda_status st = rda_npy_read_stream(f, "input", &a, err, sizeof err);
    fclose(f);
    if (st == RDA_STATUS_SUCCESS) {
        int64_t n = rda_npy_count(&a);
        size_t es = rda_dtype_size(a.dtype);
        if ((size_t)n * es > size) abort(); /* more data than the input holds */
        volatile unsigned char sink = 0;    /* touch it: ASan checks the whole buffer */
        for (size_t i = 0; i < (size_t)n * es; i++) sink ^= ((unsigned char *)a.data)[i];
        (void)sink;
    } else if (a.data) {
        abort(); /* a refused file leaves nothing allocated */
    }
    rda_npy_free(&a);
    return 0;
}
