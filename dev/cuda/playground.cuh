/* What the kernel playgrounds (attend.cu: the forward, attend_bwd.cu: the
 * backward) share: the CUDA error check, their inputs, and the jobs of one
 * rank's attention cut into segments. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <initializer_list>
#include <vector>

#include "cuda/kernels.cuh"

#define CK(x)                                                                                 \
    do {                                                                                      \
        cudaError_t e = (x);                                                                  \
        if (e != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

/* The vectors filled with fp16 values uniform in [-1, 1), element by element
 * across them (one xorshift64 stream, the same inputs for the same sizes). */
static void pg_fill(std::initializer_list<std::vector<__half> *> xs) {
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    const size_t n = (*xs.begin())->size();
    for (size_t i = 0; i < n; i++)
        for (std::vector<__half> *x : xs) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            (*x)[i] = __float2half((float)(rng >> 40) * (2.0f / 16777216.0f) - 1.0f);
        }
}

/* One job per segment of W rows attending within itself (W <= 0 or W > N:
 * one segment, dense attention; the groups/longnet shape with dilation 1),
 * and each job's query tiles of bq rows. Returns the W used. */
static int64_t pg_segment_jobs(int64_t N, int64_t W, int64_t bq, std::vector<rda_job> &jobs,
                               std::vector<rda_tile> &tiles) {
    if (W <= 0 || W > N) W = N;
    jobs.assign((size_t)((N + W - 1) / W), rda_job{});
    tiles.clear();
    for (int64_t j = 0; j < (int64_t)jobs.size(); j++) {
        rda_job &job = jobs[j];
        job.stride = 1;
        job.q_first = job.q_local = job.k_first[0] = job.k_local[0] = j * W;
        job.q_count = job.k_count[0] = std::min(W, N - j * W);
        job.nk = 1;
        for (int64_t t = 0; t < job.q_count; t += bq) tiles.push_back({j, t});
    }
    return W;
}

/* run() timed on stream s by CUDA events after `warmups` runs: the median of
 * `reps` (the upper one for an even count), in ms. */
template <typename F> static double pg_median_ms(F run, cudaStream_t s, int warmups, int reps) {
    for (int i = 0; i < warmups; i++) run();
    std::vector<float> ms;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(e0, s));
        run();
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        ms.push_back(t);
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2];
}

/* Allowed (query, key) pairs of the segment jobs. */
static double pg_pairs(const std::vector<rda_job> &jobs, bool causal) {
    double pairs = 0;
    for (const rda_job &job : jobs) {
        const double c = (double)job.q_count;
        pairs += causal ? c * (c + 1) / 2 : c * c;
    }
    return pairs;
}
