/* What a small call costs outside its kernel: host-side time of the CUDA
 * runtime operations one rda_attention_forward issues, each alone and in
 * the sequence, medians of 200 (after 20 warm-ups), each followed by a
 * stream synchronize unless said otherwise.
 *
 *     nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a dev/cuda/overhead.cu -o overhead && ./overhead
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <functional>
#include <vector>

static double now_us() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

__global__ void empty_kernel(float *x) {
    if (x && threadIdx.x == 0 && blockIdx.x == 0) x[0] += 1.f;
}

static void measure(const char *name, const std::function<void()> &f) {
    for (int i = 0; i < 20; i++) f();
    std::vector<double> t;
    for (int i = 0; i < 200; i++) {
        double t0 = now_us();
        f();
        t.push_back(now_us() - t0);
    }
    std::sort(t.begin(), t.end());
    printf("%-58s %7.2f us (p10 %.2f, p90 %.2f)\n", name, t[100], t[20], t[180]);
}

int main() {
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    float *d, *dtab;
    cudaMalloc(&d, 1 << 24);
    cudaMalloc(&dtab, 1 << 20);
    std::vector<char> pageable(16384, 1);
    char *pinned;
    cudaMallocHost(&pinned, 16384);
    memset(pinned, 1, 16384);
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);

    measure("stream synchronize (idle)", [&] { cudaStreamSynchronize(s); });
    measure("event record + event synchronize (idle)", [&] {
        cudaEventRecord(ev, s);
        cudaEventSynchronize(ev);
    });
    measure("empty kernel + sync", [&] {
        empty_kernel<<<1, 32, 0, s>>>(d);
        cudaStreamSynchronize(s);
    });
    measure("5 empty kernels + sync", [&] {
        for (int i = 0; i < 5; i++) empty_kernel<<<1, 32, 0, s>>>(d);
        cudaStreamSynchronize(s);
    });
    measure("empty kernel, no sync (host cost of a launch)", [&] { empty_kernel<<<1, 32, 0, s>>>(d); });
    cudaStreamSynchronize(s);
    measure("4 KiB pageable H2D memcpyAsync + sync", [&] {
        cudaMemcpyAsync(dtab, pageable.data(), 4096, cudaMemcpyHostToDevice, s);
        cudaStreamSynchronize(s);
    });
    measure("4 KiB pinned H2D memcpyAsync + sync", [&] {
        cudaMemcpyAsync(dtab, pinned, 4096, cudaMemcpyHostToDevice, s);
        cudaStreamSynchronize(s);
    });
    measure("memsetAsync 128 KiB + sync", [&] {
        cudaMemsetAsync(d, 0, 131072, s);
        cudaStreamSynchronize(s);
    });
    cudaPointerAttributes at;
    measure("5 x cudaPointerGetAttributes", [&] {
        for (int i = 0; i < 5; i++) cudaPointerGetAttributes(&at, d);
    });
    measure("cudaSetDevice", [&] { cudaSetDevice(0); });
    measure("fill kernel + pageable copy + kernel + kernel + sync", [&] {
        empty_kernel<<<64, 256, 0, s>>>(d);
        cudaMemcpyAsync(dtab, pageable.data(), 4096, cudaMemcpyHostToDevice, s);
        empty_kernel<<<512, 128, 0, s>>>(d);
        empty_kernel<<<128, 256, 0, s>>>(d);
        cudaStreamSynchronize(s);
    });
    measure("fill kernel + pinned copy + kernel + kernel + sync", [&] {
        empty_kernel<<<64, 256, 0, s>>>(d);
        cudaMemcpyAsync(dtab, pinned, 4096, cudaMemcpyHostToDevice, s);
        empty_kernel<<<512, 128, 0, s>>>(d);
        empty_kernel<<<128, 256, 0, s>>>(d);
        cudaStreamSynchronize(s);
    });
    measure("pinned copy + kernel + sync", [&] {
        cudaMemcpyAsync(dtab, pinned, 4096, cudaMemcpyHostToDevice, s);
        empty_kernel<<<512, 128, 0, s>>>(d);
        cudaStreamSynchronize(s);
    });
    /* the same four operations as a captured graph */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    empty_kernel<<<64, 256, 0, s>>>(d);
    cudaMemcpyAsync(dtab, pinned, 4096, cudaMemcpyHostToDevice, s);
    empty_kernel<<<512, 128, 0, s>>>(d);
    empty_kernel<<<128, 256, 0, s>>>(d);
    cudaStreamEndCapture(s, &g);
    cudaGraphInstantiate(&ge, g, 0);
    measure("the same four as one graph launch + sync", [&] {
        cudaGraphLaunch(ge, s);
        cudaStreamSynchronize(s);
    });
    cudaError_t e = cudaGetLastError();
    printf("errors: %s\n", cudaGetErrorString(e));
    return e == cudaSuccess ? 0 : 1;
}
