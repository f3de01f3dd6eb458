/* The fast path's kernels on AVX-512 (F, BW, DQ, VL, with FMA and F16C):
 * 16-float vectors, 32 registers. S^T = K Q^T: 8 key rows x 2 vectors
 * (16 accumulators); O += P V: 4 query rows x 4 vectors (16 accumulators).
 * Built with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c
 * (CMakeLists.txt); run only where isa.c finds those features. */
#define RDA_ISA avx512
#define RDA_ISA_NAME "avx512"
#define VL 16
#define KQ_RK 8
#define PV_RP 4
#define PV_NV 4
#include "kernels.h"
