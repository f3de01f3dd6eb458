/* The CPU backend: the naive reference and the blocked fast path. */
#ifndef RDA_CPU_BACKEND_H
#define RDA_CPU_BACKEND_H

#include "../plan.h"

/* Naive algorithm of SPEC.md on full tensors of one rank (N rows), for
 * every query row (rows NULL) or only the positions rows[0..nrows), whose
 * results go to row j of o/lse.
 * same_type = false: fp64 arithmetic. same_type = true: the naive algorithm
 * in the tensors' own type (scores and probabilities rounded to it, fp32
 * sums), the baseline of SPEC.md's max_abs rule for fp16/bf16. */
rda_status rda_cpu_reference(rda_context *ctx, const rda_problem *p, bool same_type,
                             const rda_tensor *q, const rda_tensor *k, const rda_tensor *v,
                             const int64_t *rows, int64_t nrows, rda_tensor *o, rda_tensor *lse);

/* Running state of a rank's output rows: unnormalised accumulator
 * acc[B, n, H, D] (fp32), running max m (log2 domain, scaled scores) and
 * running sum l, both [B, n, H]. */
typedef struct rda_acc {
    int64_t B, n, H, D;
    float *acc, *m, *l;
} rda_acc;

/* Scratch of the fast path for one forward call, made once by
 * rda_cpu_workspace_create and reused by every step. */
typedef struct rda_cpu_ws rda_cpu_ws;

rda_status rda_cpu_workspace_create(rda_context *ctx, const rda_problem *p, const rda_rows *qr,
                                    rda_cpu_ws **ws);
void rda_cpu_workspace_destroy(rda_context *ctx, rda_cpu_ws *ws);

/* One ring step on the CPU: every job of every pattern between the rank's
 * query rows qr (local tensor q) and the key block kr (local tensors k, v)
 * folded into acc. Adds the pairs computed to *pairs. */
rda_status rda_cpu_attend_step(rda_context *ctx, rda_cpu_ws *ws, const rda_problem *p,
                               const rda_rows *qr, const rda_rows *kr, const rda_tensor *q,
                               const rda_tensor *k, const rda_tensor *v, rda_acc *acc,
                               int64_t *pairs);

/* O = acc / l * factor, LSE = natural-log LSE; rows with no key give 0 and -inf. */
void rda_cpu_finalize(rda_context *ctx, const rda_problem *p, const rda_acc *acc, rda_tensor *o,
                      rda_tensor *lse);

#endif
