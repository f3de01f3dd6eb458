/* Dense causal attention of a few rows through the installed library,
 * against a direct computation; prints "ok" and exits 0 when they agree. */
#include <math.h>
#include <stdio.h>

#include <rda.h>

int main(void) {
    enum { N = 5, D = 4 };
    float q[N * D], k[N * D], v[N * D], o[N * D];
    for (int i = 0; i < N * D; i++) {
        q[i] = (float)sin(0.3 * i);
        k[i] = (float)cos(0.7 * i);
        v[i] = (float)(i % 7) - 3.0f;
    }
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    rda_context *ctx = NULL;
    if (rda_context_create(&cp, &ctx) != RDA_STATUS_SUCCESS) return 1;
    int64_t shape[4] = {1, N, 1, D};
    rda_tensor tq = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, shape), tk = rda_tensor_contiguous(k, RDA_DTYPE_F32, 4, shape),
               tv = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, shape), to = rda_tensor_contiguous(o, RDA_DTYPE_F32, 4, shape);
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.causal = 1;
    rda_status st = rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, NULL);
    if (st != RDA_STATUS_SUCCESS) {
        fprintf(stderr, "%s: %s\n", rda_status_to_string(st), rda_context_last_error(ctx));
        return 1;
    }
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double s[N], m = -INFINITY, l = 0;
        for (int j = 0; j <= i; j++) {
            s[j] = 0;
            for (int d = 0; d < D; d++) s[j] += (double)q[i * D + d] * k[j * D + d] / sqrt((double)D);
            if (s[j] > m) m = s[j];
        }
        for (int j = 0; j <= i; j++) l += exp(s[j] - m);
        for (int d = 0; d < D; d++) {
            double x = 0;
            for (int j = 0; j <= i; j++) x += exp(s[j] - m) / l * v[j * D + d];
            worst = fmax(worst, fabs(x - o[i * D + d]));
        }
    }
    rda_context_destroy(ctx);
    printf("%s (version %s, max error %.2g)\n", worst < 1e-5 ? "ok" : "WRONG", rda_version_string(), worst);
    return worst < 1e-5 ? 0 : 1;
}
