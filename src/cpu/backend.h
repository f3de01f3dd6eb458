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

/* The naive backward of SPEC.md on full tensors of one rank (fp64, or the
 * tensors' own type as above): dq, dk, dv of t written whole. */
rda_status rda_cpu_reference_backward(rda_context *ctx, const rda_problem *p, bool same_type,
                                      const rda_bwd_tensors *t);

/* The same at positions rows[0..nrows): dq of those query rows, dk and dv
 * of those key rows, fp64 [B, nrows, H or Hkv, D]. */
rda_status rda_cpu_reference_backward_rows(rda_context *ctx, const rda_problem *p, const rda_bwd_tensors *t,
                                           const int64_t *rows, int64_t nrows, double *dq, double *dk, double *dv);

/* Running state of a rank's output rows: unnormalised accumulator
 * acc[B, n, H, D] (fp32), running max m (log2 domain, scaled scores) and
 * running sum l, both [B, n, H]. Start: m = -inf, l = 0; acc is only read
 * where l > 0, so it needs no clearing. */
typedef struct rda_acc {
    int64_t B, n, H, D;
    float *acc, *m, *l;
} rda_acc;

/* Scratch of the fast path for one forward call, carved from the context's
 * workspace once per call and used by every step. */
typedef struct rda_cpu_ws rda_cpu_ws;

size_t rda_cpu_workspace_size(const rda_problem *p, const rda_rows *qr, int32_t threads);
rda_cpu_ws *rda_cpu_workspace_init(rda_carver *c, const rda_problem *p, const rda_rows *qr,
                                   int32_t threads);

/* One ring step on the CPU: every job of every pattern between the rank's
 * query rows qr (local tensor q) and the key block kr (local tensors k, v)
 * folded into acc. Adds the pairs computed to *pairs. On the last step pass
 * o (and lse): rows that no later work touches are then written there
 * directly and marked done in acc (l = -1), which rda_cpu_finalize skips. */
rda_status rda_cpu_attend_step(rda_context *ctx, rda_cpu_ws *ws, const rda_problem *p,
                               const rda_rows *qr, const rda_rows *kr, const rda_tensor *q,
                               const rda_tensor *k, const rda_tensor *v, rda_acc *acc,
                               rda_tensor *o, rda_tensor *lse, int64_t *pairs);

/* O = acc / l * factor, LSE = natural-log LSE for every row not yet done;
 * rows with no key give 0 and -inf. */
void rda_cpu_finalize(rda_context *ctx, const rda_problem *p, const rda_acc *acc, rda_tensor *o,
                      rda_tensor *lse);

#endif
