/* Benchmark inputs made on the GPU: uniform values in [lo, hi) from a
 * counter-based generator (splitmix64 of seed and index), so that inputs of
 * any length take no host memory and no upload. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "device.h"
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
__global__ void fill_uniform(T *dst, int64_t n, uint64_t seed, float lo, float span) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t r = mix64(seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1));
        dst[i] = from_float<T>(lo + span * (float)(r >> 40) * (1.0f / 16777216.0f));
    }
}

extern "C" int dev_fill_uniform(void *dst, int dtype_size, int is_bf16, int64_t n, uint64_t seed, double lo,
                                double hi) {
    const float l = (float)lo, s = (float)(hi - lo);
    const unsigned grid = 132 * 16;
    if (dtype_size == 4) fill_uniform<float><<<grid, 256>>>(static_cast<float *>(dst), n, seed, l, s);
    else if (is_bf16) fill_uniform<__nv_bfloat16><<<grid, 256>>>(static_cast<__nv_bfloat16 *>(dst), n, seed, l, s);
    else fill_uniform<__half><<<grid, 256>>>(static_cast<__half *>(dst), n, seed, l, s);
    return cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess ? 0 : -1;
}
