/* The fast path's kernels on AArch64 Advanced SIMD (NEON, every AArch64
 * CPU): 4-float vectors, 32 registers, fused multiply-add. S^T = K Q^T:
 * 8 key rows x 2 vectors (16 accumulators); O += P V: 4 query rows x 4
 * vectors (16 accumulators). */
#define RDA_ISA neon
#define RDA_ISA_NAME "neon"
#define VL 4
#define KQ_RK 8
#define PV_RP 4
#define PV_NV 4
#include "kernels.h"
