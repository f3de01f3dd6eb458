/* Device buffers for the GPU tests: GUARD bytes of 0xA5 on both sides of
 * the payload, which starts as `fill`, and the check that the guards are
 * intact (and graph_nodes.h). Include after harness.h. */
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
    d.data = d.raw + GUARD;
    return d;
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
