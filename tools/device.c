#include "device.h"

#include <stdio.h>

#include "rda.h"

#ifdef RDA_HAVE_CUDA
#include <cuda_runtime_api.h>

int dev_available(void) { return rda_cuda_available(); }

int dev_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

void dev_name(char *buf, size_t n) {
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess)
        snprintf(buf, n, "%s", p.name);
    else
        snprintf(buf, n, "unknown CUDA device");
}

void *dev_alloc(size_t bytes) {
    void *p = NULL;
    return cudaMalloc(&p, bytes ? bytes : 1) == cudaSuccess ? p : NULL;
}

void dev_free(void *p) {
    if (p) cudaFree(p);
}

int dev_upload(void *dst, const void *src, size_t bytes) {
    /* (from pageable memory the copy can still be in flight on return, and
     * the context's non-blocking stream does not wait for it) */
    return cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess
               ? 0
               : -1;
}

int dev_download(void *dst, const void *src, size_t bytes) {
    return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -1;
}

int dev_memset(void *dst, int byte, size_t bytes) {
    return cudaMemset(dst, byte, bytes) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess ? 0 : -1;
}
#else
int dev_available(void) { return 0; }
int dev_count(void) { return 0; }
void dev_name(char *buf, size_t n) { snprintf(buf, n, "none"); }
void *dev_alloc(size_t bytes) {
    (void)bytes;
    return NULL;
}
void dev_free(void *p) { (void)p; }
int dev_upload(void *dst, const void *src, size_t bytes) {
    (void)dst, (void)src, (void)bytes;
    return -1;
}
int dev_download(void *dst, const void *src, size_t bytes) {
    (void)dst, (void)src, (void)bytes;
    return -1;
}
int dev_memset(void *dst, int byte, size_t bytes) {
    (void)dst, (void)byte, (void)bytes;
    return -1;
}
int dev_fill_uniform(void *dst, int dtype_size, int is_bf16, int64_t n, uint64_t seed, double lo, double hi) {
    (void)dst, (void)dtype_size, (void)is_bf16, (void)n, (void)seed, (void)lo, (void)hi;
    return -1;
}
#endif
