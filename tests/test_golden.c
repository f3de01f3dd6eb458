/* Golden cases written by tests/golden/make_golden.py (numpy, following
 * SPEC.md, no code shared with the library): the fast path and the fp64
 * reference must both match them, outputs and log-sum-exp, and the
 * gradients of their backward (from the golden O and LSE in fp32). */
#include <math.h>

#include "harness.h"
#include "npy.h"

static void load(const char *dir, const char *name, const char *tag, rda_npy *a) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s_%s.npy", dir, name, tag);
    if (rda_npy_read(path, a, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(2);
    }
}

int main(void) {
    const char *dir = getenv("RDA_GOLDEN_DIR") ? getenv("RDA_GOLDEN_DIR") : "golden";
    char path[512];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 2;
    }
    rda_context *fast, *ref;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    rda_context_create(&cp, &fast);
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ref);
    char line[512];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        int mode, causal, G, used;
        double scale;
        long long B, N, H, D;
        if (sscanf(line, "%63s %d %d %lf %lld %lld %lld %lld %d%n", name, &mode, &causal, &scale, &B, &N,
                   &H, &D, &G, &used) != 9)
            continue;
        rda_config cfg = RDA_CONFIG_INIT;
        cfg.mode = (rda_mode)mode;
        cfg.causal = causal;
        cfg.scale = scale;
        cfg.num_patterns = G;
        char *p = line + used;
        for (int i = 0; i < G; i++) {
            long long w, r;
            int n;
            sscanf(p, "%lld %lld%n", &w, &r, &n);
            p += n;
            cfg.patterns[i] = (rda_pattern){w, r};
        }
        rda_npy q, k, v, o, lse;
        load(dir, name, "q", &q), load(dir, name, "k", &k), load(dir, name, "v", &v);
        load(dir, name, "o", &o), load(dir, name, "lse", &lse);
        int64_t n = rda_npy_count(&q), nl = rda_npy_count(&lse);
        rda_tensor tq = rda_tensor_contiguous(q.data, RDA_DTYPE_F32, 4, q.shape),
                   tk = rda_tensor_contiguous(k.data, RDA_DTYPE_F32, 4, k.shape),
                   tv = rda_tensor_contiguous(v.data, RDA_DTYPE_F32, 4, v.shape);
        for (int which = 0; which < 2; which++) {
            rda_context *c = which ? ref : fast;
            guarded out = guarded_alloc((size_t)n * 4, 0), l = guarded_alloc((size_t)nl * 4, 0);
            rda_tensor to = rda_tensor_contiguous(out.data, RDA_DTYPE_F32, 4, q.shape),
                       tl = rda_tensor_contiguous(l.data, RDA_DTYPE_F32, 3, lse.shape);
            rda_status st = rda_attention_forward(c, &cfg, &tq, &tk, &tv, &to, &tl);
            CHECK(st == 0, "%s (%s): %s", name, which ? "reference" : "fast", rda_context_last_error(c));
            rda_error e = rda_compare(out.data, RDA_DTYPE_F32, o.data, n);
            CHECK(e.nonfinite == 0 && e.rel_l2 <= 1e-5, "%s (%s): rel_l2 %.3g vs golden", name,
                  which ? "reference" : "fast", e.rel_l2);
            int ok = 1;
            for (int64_t i = 0; i < nl; i++) {
                double g = ((double *)lse.data)[i], x = ((float *)l.data)[i];
                if (isinf(g) || isinf(x)) ok &= isinf(g) && isinf(x) && g < 0 && x < 0;
                else ok &= fabs(g - x) <= 1e-5 * (1 + fabs(g));
            }
            CHECK(ok, "%s (%s): lse vs golden", name, which ? "reference" : "fast");
            CHECK(guards_intact(&out) && guards_intact(&l), "%s: guard bytes", name);
            guarded_free(&out), guarded_free(&l);
        }
        /* the backward from the golden O and LSE (rounded to fp32, as the script used them) */
        rda_npy dout, gq, gk, gv;
        load(dir, name, "do", &dout), load(dir, name, "dq", &gq), load(dir, name, "dk", &gk), load(dir, name, "dv", &gv);
        float *o32 = malloc(sizeof(float) * (size_t)n), *l32 = malloc(sizeof(float) * (size_t)nl);
        for (int64_t i = 0; i < n; i++) o32[i] = (float)((double *)o.data)[i];
        for (int64_t i = 0; i < nl; i++) l32[i] = (float)((double *)lse.data)[i];
        rda_tensor to = rda_tensor_contiguous(o32, RDA_DTYPE_F32, 4, q.shape),
                   tl = rda_tensor_contiguous(l32, RDA_DTYPE_F32, 3, lse.shape),
                   tg = rda_tensor_contiguous(dout.data, RDA_DTYPE_F32, 4, q.shape);
        const rda_npy *want[3] = {&gq, &gk, &gv};
        for (int which = 0; which < 2; which++) {
            rda_context *c = which ? ref : fast;
            guarded gr[3];
            rda_tensor tgr[3];
            for (int i = 0; i < 3; i++) {
                gr[i] = guarded_alloc((size_t)n * 4, 0xFF);
                tgr[i] = rda_tensor_contiguous(gr[i].data, RDA_DTYPE_F32, 4, q.shape);
            }
            rda_status st = rda_attention_backward(c, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &tgr[0], &tgr[1], &tgr[2]);
            CHECK(st == 0, "%s backward (%s): %s", name, which ? "reference" : "fast", rda_context_last_error(c));
            static const char *gn[3] = {"dq", "dk", "dv"};
            for (int i = 0; i < 3; i++) {
                rda_error e = rda_compare(gr[i].data, RDA_DTYPE_F32, want[i]->data, n);
                CHECK(e.nonfinite == 0 && e.rel_l2 <= 2e-5, "%s (%s): %s rel_l2 %.3g vs golden", name,
                      which ? "reference" : "fast", gn[i], e.rel_l2);
                CHECK(guards_intact(&gr[i]), "%s: %s guard bytes", name, gn[i]);
                guarded_free(&gr[i]);
            }
        }
        free(o32), free(l32);
        rda_npy_free(&dout), rda_npy_free(&gq), rda_npy_free(&gk), rda_npy_free(&gv);
        rda_npy_free(&q), rda_npy_free(&k), rda_npy_free(&v), rda_npy_free(&o), rda_npy_free(&lse);
        cases++;
    }
    fclose(f);
    CHECK(cases >= 7, "read %d golden cases", cases);
    rda_context_destroy(fast);
    rda_context_destroy(ref);
    return harness_done("golden");
}
