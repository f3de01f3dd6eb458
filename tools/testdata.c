#include "testdata.h"

#include "convert.h" /* the library's fp16/bf16 rounding, header-only */

#include <math.h>
#include <string.h>
#include <time.h>

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rda_rng_seed(rda_rng *r, uint64_t seed) {
    r->s = splitmix(&seed) | 1u;
}

double rda_rng_uniform(rda_rng *r, double lo, double hi) {
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return lo + (hi - lo) * (double)(r->s >> 11) * (1.0 / 9007199254740992.0);
}

static void store(void *dst, rda_dtype dt, int64_t i, double x) {
    switch (dt) {
    case RDA_DTYPE_F64: ((double *)dst)[i] = x; break;
    case RDA_DTYPE_F32: ((float *)dst)[i] = (float)x; break;
    case RDA_DTYPE_F16: ((uint16_t *)dst)[i] = rda_f32_to_f16((float)x); break;
    case RDA_DTYPE_BF16: ((uint16_t *)dst)[i] = rda_f32_to_bf16((float)x); break;
    }
}

static double load(const void *src, rda_dtype dt, int64_t i) {
    switch (dt) {
    case RDA_DTYPE_F64: return ((const double *)src)[i];
    case RDA_DTYPE_F32: return ((const float *)src)[i];
    case RDA_DTYPE_F16: return rda_f16_to_f32(((const uint16_t *)src)[i]);
    case RDA_DTYPE_BF16: return rda_bf16_to_f32(((const uint16_t *)src)[i]);
    }
    return 0;
}

void rda_fill_uniform(void *dst, rda_dtype dt, int64_t n, rda_rng *rng, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) store(dst, dt, i, rda_rng_uniform(rng, lo, hi));
}

void rda_to_f64(const void *src, rda_dtype dt, int64_t n, double *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = load(src, dt, i);
}

void rda_convert(const void *src, rda_dtype from, void *dst, rda_dtype to, int64_t n) {
    for (int64_t i = 0; i < n; i++) store(dst, to, i, load(src, from, i));
}

static rda_error finish(double num, double den, double mx, int64_t bad) {
    rda_error e;
    e.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    e.max_abs = mx;
    e.nonfinite = bad;
    return e;
}

rda_error rda_compare(const void *x, rda_dtype dt, const double *ref, int64_t n) {
    double num = 0, den = 0, mx = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = load(x, dt, i), d = a - ref[i];
        if (!isfinite(a)) {
            bad++;
            continue;
        }
        num += d * d;
        den += ref[i] * ref[i];
        if (fabs(d) > mx) mx = fabs(d);
    }
    return finish(num, den, mx, bad);
}

rda_error rda_compare_rows(const void *x, rda_dtype dt, const double *ref, const int64_t *rows,
                           int64_t m, int64_t row_elems) {
    double num = 0, den = 0, mx = 0;
    int64_t bad = 0;
    for (int64_t j = 0; j < m; j++)
        for (int64_t t = 0; t < row_elems; t++) {
            int64_t i = rows[j] * row_elems + t;
            double a = load(x, dt, i), d = a - ref[j * row_elems + t];
            if (!isfinite(a)) {
                bad++;
                continue;
            }
            num += d * d;
            den += ref[j * row_elems + t] * ref[j * row_elems + t];
            if (fabs(d) > mx) mx = fabs(d);
        }
    return finish(num, den, mx, bad);
}

double rda_tolerance(rda_dtype dt) {
    switch (dt) {
    case RDA_DTYPE_F16: return 1e-3;
    case RDA_DTYPE_BF16: return 8e-3;
    default: return 1e-5;
    }
}

bool rda_passes(rda_dtype dt, rda_error e, double naive_max_abs) {
    if (e.nonfinite || !(e.rel_l2 <= rda_tolerance(dt))) return false;
    if (dt == RDA_DTYPE_F16 || dt == RDA_DTYPE_BF16)
        return e.max_abs <= 2.0 * naive_max_abs + rda_tolerance(dt);
    return true;
}

bool rda_grad_passes(rda_dtype dt, rda_error e, double naive_max_abs, double ref_max_abs) {
    const double c = dt == RDA_DTYPE_F16 ? 1e-3 : dt == RDA_DTYPE_BF16 ? 8e-3 : 1e-5;
    const double rel = dt == RDA_DTYPE_F16 ? 2e-3 : dt == RDA_DTYPE_BF16 ? 1.6e-2 : 2e-5;
    if (e.nonfinite || !(e.rel_l2 <= rel)) return false;
    return e.max_abs <= 2.0 * naive_max_abs + c * ref_max_abs;
}

double rda_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
