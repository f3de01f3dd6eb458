/* Device buffers for the GPU tests: GUARD bytes of 0xA5 on both sides of
 * the payload, which starts as `fill`, and the check that the guards are
 * intact (and graph_nodes.h). Include after harness.h.
 *
 * The tests fill and upload on the legacy default stream, which a context's
 * own non-blocking stream does not wait for (rda.h, "CUDA streams"); a
 * cudaMemset there, or a cudaMemcpy from pageable memory, can still be in
 * flight when cudaMemset/cudaMemcpy return. So every fill and upload here
 * (dalloc_fill, dset, dput) waits for the device before it returns: a
 * call's inputs and the NaN its outputs start as are in place before the
 * call is issued. */
#ifndef RDA_TEST_CUDA_HARNESS_H
#define RDA_TEST_CUDA_HARNESS_H

#include <cuda_runtime_api.h>

#include "graph_nodes.h"

typedef struct {
    unsigned char *raw;
    void *data;
    size_t bytes;
} dbuf;

static inline dbuf dalloc_fill(size_t bytes, int fill) {
    dbuf d;
    d.bytes = bytes;
    if (cudaMalloc((void **)&d.raw, bytes + 2 * GUARD) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(2);
    }
    cudaMemset(d.raw, 0xA5, bytes + 2 * GUARD);
    if (fill != 0xA5) cudaMemset(d.raw + GUARD, fill, bytes);
    cudaDeviceSynchronize();
    d.data = d.raw + GUARD;
    return d;
}

/* cudaMemset, complete on return */
static inline void dset(void *dst, int byte, size_t bytes) {
    cudaMemset(dst, byte, bytes);
    cudaDeviceSynchronize();
}

/* host-to-device cudaMemcpy, complete on return */
static inline void dput(void *dst, const void *src, size_t bytes) {
    cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
    cudaDeviceSynchronize();
}

static inline int dguards(const dbuf *d) {
    unsigned char g[2 * GUARD];
    cudaMemcpy(g, d->raw, GUARD, cudaMemcpyDeviceToHost);
    cudaMemcpy(g + GUARD, d->raw + GUARD + d->bytes, GUARD, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 2 * GUARD; i++)
        if (g[i] != 0xA5) return 0;
    return 1;
}

#endif
