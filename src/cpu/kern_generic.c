/* The fast path's kernels for any other architecture: 4-float vectors of
 * the compiler's vector extension (lowered to whatever the target has). */
#define RDA_ISA generic
#define RDA_ISA_NAME "generic"
#define VL 4
#define KQ_RK 4
#define PV_RP 4
#define PV_NV 2
#include "kernels.h"
