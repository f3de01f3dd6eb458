/* The fast path's kernels on AVX2 with FMA and F16C: 8-float vectors, 16
 * registers. S^T = K Q^T: 6 key rows x 2 vectors (12 accumulators, 2 query
 * vectors, 1 broadcast: 15 registers); O += P V: 4 query rows x 3 vectors
 * (12 accumulators, 3 value vectors, 1 broadcast: 16).
 * Built with -mavx2 -mfma -mf16c (CMakeLists.txt). */
#define RDA_ISA avx2
#define RDA_ISA_NAME "avx2"
#define VL 8
#define KQ_RK 6
#define PV_RP 4
#define PV_NV 2
#include "kernels.h"
