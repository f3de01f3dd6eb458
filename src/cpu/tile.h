/* What the CPU fast path's driver (attend.c) and its per-ISA kernels
 * (kernels.h, compiled once per instruction-set level) share: tile sizes,
 * the per-call scratch, the arguments of one phase, and the kernel table
 * the driver picks at run time (isa.c). */
#ifndef RDA_CPU_TILE_H
#define RDA_CPU_TILE_H

#include "../plan.h"
#include "backend.h"

#ifndef BQ
#define BQ 256 /* query rows per tile (measured: docs/PERFORMANCE.md) */
#endif
#ifndef BK
#define BK 128 /* key rows per tile */
#endif
/* Scratch is sized for the widest vector (16 floats) and the tallest key
 * register tile (8 rows), so its size does not depend on the level chosen. */
#define RDA_CPU_VL_MAX 16
#define RDA_CPU_RK_MAX 8
/* Levels without a broadcast from memory (RDA_SPREAD: SSE2, 4 lanes) spread
 * operands into whole vectors first: a key register tile (at most RK_MAX
 * rows of D) or a 64-key x 4-query probability tile. */
#define RDA_CPU_SPREAD_FLOATS(Dp) (((Dp) * RDA_CPU_RK_MAX > 256 ? (Dp) * RDA_CPU_RK_MAX : 256) * 4)

static inline int64_t rda_round_up(int64_t x, int64_t m) {
    return (x + m - 1) / m * m;
}

struct rda_cpu_ws {
    int64_t per_thread; /* floats of scratch per thread */
    float *scratch;
    rda_phase phase; /* the step's tables (shared planning) */
};

/* One phase of one ring step. */
typedef struct rda_cpu_phase_args {
    rda_cpu_ws *ws;
    const rda_problem *p;
    const rda_tensor *q, *k, *v;
    rda_acc *acc;
    const rda_phase *ph;
    float qscale;        /* softmax scale * log2(e) */
    rda_tensor *o, *lse; /* for final classes */
    float factor;
} rda_cpu_phase_args;

/* The backward's tiles: BQB queries against BKB keys (key tiles padded to
 * a multiple of every level's register tiles: 24 = lcm(8, 6, 4)). */
#define BQB 64
#define BKB 64
#define RDA_CPU_BK_PAD 24
#define BKBP (BKB + RDA_CPU_BK_PAD)

/* One phase of one backward ring step. Work items are (batch, head, job):
 * the phase is planned with whole jobs as tiles, so an item owns its rows
 * of dq and, within its head, its keys' rows of dk and dv. */
typedef struct rda_cpu_bwd_args {
    const rda_problem *p;
    const rda_phase *ph;
    const rda_tensor *q, *dout, *lse; /* the rank's rows */
    const rda_tensor *k, *v;          /* the key block */
    const float *delta;               /* [B, n, H]: sum over d of dout * o */
    float *dq;                        /* [B, n, H, D] fp32, accumulated */
    float *dk, *dv;                   /* [B, nk, hk, D] fp32, accumulated: hk = H (per query head) or Hkv */
    int64_t n, nk, hk;
    float qscale, scale, factor;      /* scale * log2(e), scale, 1/G in groups mode */
    float *scratch;
    int64_t per_thread;
} rda_cpu_bwd_args;

/* Floats of per-thread scratch of a backward item (the widest level's). */
int64_t rda_cpu_bwd_scratch_floats(int64_t D);

/* O[b, row, h, :] = a / l * factor (0 where l == 0) and, if lse is given,
 * LSE[b, h, row] = natural log of the denominator (-inf where l == 0); m is
 * the running max in the log2 domain. NaN in a or m reaches O and LSE. */
void rda_cpu_write_row(rda_tensor *o, rda_tensor *lse, int64_t b, int64_t row, int64_t h, int64_t D,
                       const float *a, float m, float l, float factor);

/* The kernels of one instruction-set level. */
typedef struct rda_cpu_kernels {
    const char *name; /* the RDA_CPU_ISA value that selects it */
    int vl;           /* floats per vector */
    int kq_rows;      /* key rows per register tile of S^T = K Q^T */
    int pv_rows;      /* query rows per register tile of O += P V */
    int pv_vecs;      /* vectors of head dim per register tile of O += P V */
    /* One work item of a phase (batch, head, query tile); arg is a
     * rda_cpu_phase_args. */
    void (*attend_tile)(void *arg, int64_t item, int32_t thread);
    /* The block products, for the kernel playground (dev/cpu):
     * St[j, a] = sum_d K[j, d] Qt[d, a] (m % kq_rows == 0, n % (2 vl) == 0),
     * and with mx also mx[a] = max(mx[a], St[j, a]) over rows j < valid;
     * A[a, :] += sum_j Pt[j, a] V[j, :] (m % pv_rows == 0, Dp % vl == 0);
     * work: RDA_CPU_SPREAD_FLOATS(Dp) floats of scratch. */
    void (*gemm_kq)(int64_t m, int64_t n, int64_t D, const float *K, int64_t ldk, const float *Qt,
                    int64_t ldq, float *St, int64_t lds, float *mx, int64_t valid, float *work);
    void (*gemm_pv)(int64_t m, int64_t k, int64_t Dp, const float *Pt, int64_t ldp, const float *V,
                    int64_t ldv, float *A, float *work);
    /* St[i] = 2^(St[i] - 1) for i < n (n % vl == 0), for the playground */
    void (*exp2_shift)(float *St, int64_t n);
    /* One work item of a backward phase; arg is a rda_cpu_bwd_args. */
    void (*backward_item)(void *arg, int64_t item, int32_t thread);
} rda_cpu_kernels;

/* Every level this build has, best first (the last one runs on any CPU of
 * the architecture), and the one in use: the best the CPU supports, or the
 * level the environment variable RDA_CPU_ISA names (a lower one). Returns
 * NULL with a message when RDA_CPU_ISA names no level of this build or one
 * this CPU lacks. */
int rda_cpu_levels(const rda_cpu_kernels *const **levels);
const rda_cpu_kernels *rda_cpu_select(char *msg);
/* Whether this CPU can run level k. */
bool rda_cpu_level_supported(const rda_cpu_kernels *k);

#endif
