/* Device memory for the tools (CUDA runtime; stubs in builds without CUDA). */
#ifndef RDA_TOOLS_DEVICE_H
#define RDA_TOOLS_DEVICE_H

#include <stddef.h>
#include <stdint.h>

int dev_available(void);                /* a CUDA device and the CUDA backend */
int dev_count(void);                    /* CUDA devices (0 without CUDA) */
void dev_name(char *buf, size_t n);     /* "NVIDIA H100 80GB HBM3" */
void *dev_alloc(size_t bytes);          /* NULL on failure */
void dev_free(void *p);
int dev_upload(void *dst, const void *src, size_t bytes);   /* 0 on success */
int dev_download(void *dst, const void *src, size_t bytes); /* 0 on success */
int dev_memset(void *dst, int byte, size_t bytes);          /* 0 on success */
/* n elements (of dtype_size bytes; 2: fp16, or bf16 when is_bf16) uniform
 * in [lo, hi), made on the GPU from seed (tools/device_fill.cu); 0 on success */
int dev_fill_uniform(void *dst, int dtype_size, int is_bf16, int64_t n, uint64_t seed, double lo, double hi);

#endif
