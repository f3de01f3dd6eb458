/* What a captured CUDA graph holds, by kind (the GPU tests and
 * bench/gpu_call_cost.c count what one library call launches with it). */
#ifndef RDA_TEST_GRAPH_NODES_H
#define RDA_TEST_GRAPH_NODES_H

#include <stdlib.h>

#include <cuda_runtime_api.h>

/* For one captured library call: the kernels, memsets and copies it launches. */
typedef struct {
    size_t kernels, memsets, copies, other;
} graph_nodes;

static inline graph_nodes graph_node_counts(cudaGraph_t g) {
    graph_nodes c = {0, 0, 0, 0};
    size_t n = 0;
    if (!g || cudaGraphGetNodes(g, NULL, &n) != cudaSuccess || n == 0) return c;
    cudaGraphNode_t *nodes = (cudaGraphNode_t *)malloc(n * sizeof *nodes);
    if (nodes && cudaGraphGetNodes(g, nodes, &n) == cudaSuccess)
        for (size_t i = 0; i < n; i++) {
            enum cudaGraphNodeType t = cudaGraphNodeTypeEmpty;
            cudaGraphNodeGetType(nodes[i], &t);
            if (t == cudaGraphNodeTypeKernel) c.kernels++;
            else if (t == cudaGraphNodeTypeMemset) c.memsets++;
            else if (t == cudaGraphNodeTypeMemcpy) c.copies++;
            else c.other++;
        }
    free(nodes);
    return c;
}

#endif
