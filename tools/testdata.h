/* Inputs and error figures shared by the tests and the benchmark: seeded
 * random tensors, conversion to fp64, rel_l2 / max_abs and SPEC.md's pass
 * rule. */
#ifndef RDA_TESTDATA_H
#define RDA_TESTDATA_H

#include <stdbool.h>
#include <stdint.h>

#include "rda.h"

/* splitmix64-seeded xorshift; uniform floats in [lo, hi). */
typedef struct {
    uint64_t s;
} rda_rng;
void rda_rng_seed(rda_rng *r, uint64_t seed);
double rda_rng_uniform(rda_rng *r, double lo, double hi);

/* Fills n elements of dtype at dst with uniform values in [lo, hi),
 * rounded to the type. */
void rda_fill_uniform(void *dst, rda_dtype dt, int64_t n, rda_rng *rng, double lo, double hi);
/* dst[i] = (double) src[i] for n elements of dtype dt. */
void rda_to_f64(const void *src, rda_dtype dt, int64_t n, double *dst);
/* n elements of type `from` at src, rounded to type `to` at dst. */
void rda_convert(const void *src, rda_dtype from, void *dst, rda_dtype to, int64_t n);

typedef struct {
    double rel_l2, max_abs;
    int64_t nonfinite;
} rda_error;

/* Errors of x (dtype dt) against ref (fp64), over n elements. */
rda_error rda_compare(const void *x, rda_dtype dt, const double *ref, int64_t n);
/* Same, restricted to the elements listed in idx (count m). */
rda_error rda_compare_rows(const void *x, rda_dtype dt, const double *ref, const int64_t *rows,
                           int64_t m, int64_t row_elems);

/* SPEC.md: rel_l2 within the type's bound; for fp16/bf16 also max_abs within
 * 2 x that of the naive same-type implementation + the bound. NaN fails. */
double rda_tolerance(rda_dtype dt);
bool rda_passes(rda_dtype dt, rda_error e, double naive_max_abs);

/* SPEC.md's rule for gradients: rel_l2 within 2e-5 / 2e-3 / 1.6e-2 (fp32 /
 * fp16 / bf16) and max_abs within 2 x the naive same-type implementation's
 * plus 1e-5 / 1e-3 / 8e-3 times max|ref|. NaN fails. */
bool rda_grad_passes(rda_dtype dt, rda_error e, double naive_max_abs, double ref_max_abs);

double rda_now(void);

#endif
