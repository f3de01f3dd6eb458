/* The fast path's kernels on the x86-64 baseline (SSE2, every x86-64 CPU):
 * 4-float vectors, 16 registers, no fused multiply-add (a multiply and an
 * add, one temporary). S^T = K Q^T: 6 key rows x 2 vectors (12
 * accumulators); O += P V: 4 query rows x 2 vectors (8 accumulators).
 * Built with -mno-avx -msse2 over whatever -march the build uses
 * (CMakeLists.txt), so it runs on any x86-64 CPU. */
#define RDA_ISA sse2
#define RDA_ISA_NAME "sse2"
#define VL 4
#define KQ_RK 6
#define PV_RP 4
#define PV_NV 2
#define RDA_SPREAD /* no broadcast from memory: operands spread into vectors first */
#include "kernels.h"
