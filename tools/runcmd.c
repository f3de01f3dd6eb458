/* `rda run`: one attention call (and its backward) on .npy inputs, .npy
 * outputs; for checking results against any other implementation. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"
#include "runcmd.h"
#include "testdata.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: rda run --q Q.npy --k K.npy --v V.npy --out O.npy [options]\n"
            "Q: [B, N, H, D]; K, V: [B, N, Hkv, D] with H a multiple of Hkv; f2, f4 or f8.\n\n"
            "  --lse PATH                 also write the log-sum-exp, [B, H, N] fp32\n"
            "  --dout dO.npy --dq PATH --dk PATH --dv PATH\n"
            "                             then the backward: dO like the output; writes the\n"
            "                             gradients of Q, K and V (all four options together)\n"
            "  --mode dense|groups|longnet  (default dense)\n"
            "  --segments w1,... --dilations r1,...  patterns (groups / longnet)\n"
            "  --causal                   causal masking\n"
            "  --scale S                  softmax scale (default 1/sqrt(D))\n"
            "  --dtype fp32|fp16|bf16     convert the inputs first (bf16 results are written\n"
            "                             as fp32, which holds them exactly)\n"
            "  --backend cpu|reference    fast path or the naive reference (default cpu;\n"
            "                             f8 inputs need reference)\n"
            "  --ring P                   run as a ring of P simulated ranks\n"
            "  --layout contiguous|zigzag ring layout\n"
            "  --threads T\n");
}

int parse_i64_list(const char *s, int64_t *out, int32_t max) {
    int32_t n = 0;
    if (!*s) return -1;
    for (;;) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno == ERANGE || n >= max || isspace((unsigned char)*s)) return -1;
        out[n++] = v;
        s = end;
        if (!*s) return n;
        if (*s != ',') return -1;
        s++; /* a comma needs a value after it */
    }
}

int parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int parse_num(const char *s, double *out) {
    char *end;
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    double v = strtod(s, &end);
    if (*end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* Converts an array to dtype `to` in place (new buffer). */
static int convert(rda_npy *a, rda_dtype to) {
    if (a->dtype == to) return 0;
    int64_t n = rda_npy_count(a);
    void *dst = malloc((size_t)n * rda_dtype_size(to) + 1);
    if (!dst) return -1;
    rda_convert(a->data, a->dtype, dst, to, n);
    free(a->data);
    a->data = dst;
    a->dtype = to;
    return 0;
}

int run_main(int argc, char **argv) {
    const char *pq = NULL, *pk = NULL, *pv = NULL, *po = NULL, *pl = NULL, *pg = NULL, *pdq = NULL, *pdk = NULL,
               *pdv = NULL;
    rda_config cfg = RDA_CONFIG_INIT;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    int64_t segs[RDA_MAX_PATTERNS], dils[RDA_MAX_PATTERNS];
    int32_t nseg = 0, ndil = 0, P = 0;
    int have_dtype = 0;
    rda_dtype want = RDA_DTYPE_F32;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--causal")) {
            cfg.causal = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "rda run: %s needs a value (see rda run --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--q")) pq = v;
        else if (!strcmp(a, "--k")) pk = v;
        else if (!strcmp(a, "--v")) pv = v;
        else if (!strcmp(a, "--out")) po = v;
        else if (!strcmp(a, "--lse")) pl = v;
        else if (!strcmp(a, "--dout")) pg = v;
        else if (!strcmp(a, "--dq")) pdq = v;
        else if (!strcmp(a, "--dk")) pdk = v;
        else if (!strcmp(a, "--dv")) pdv = v;
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "dense")) cfg.mode = RDA_MODE_DENSE;
            else if (!strcmp(v, "groups")) cfg.mode = RDA_MODE_GROUPS;
            else if (!strcmp(v, "longnet")) cfg.mode = RDA_MODE_LONGNET;
            else goto bad;
        } else if (!strcmp(a, "--segments")) {
            if ((nseg = parse_i64_list(v, segs, RDA_MAX_PATTERNS)) < 1) goto bad;
        } else if (!strcmp(a, "--dilations")) {
            if ((ndil = parse_i64_list(v, dils, RDA_MAX_PATTERNS)) < 1) goto bad;
        } else if (!strcmp(a, "--scale")) {
            /* 0 would mean the default in the library's config: leave the
             * option out for 1/sqrt(D) */
            if (parse_num(v, &cfg.scale) || cfg.scale <= 0) goto bad;
        } else if (!strcmp(a, "--dtype")) {
            have_dtype = 1;
            if (!strcmp(v, "fp32")) want = RDA_DTYPE_F32;
            else if (!strcmp(v, "fp16")) want = RDA_DTYPE_F16;
            else if (!strcmp(v, "bf16")) want = RDA_DTYPE_BF16;
            else goto bad;
        } else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "cpu")) cp.backend = RDA_BACKEND_CPU;
            else if (!strcmp(v, "reference")) cp.backend = RDA_BACKEND_REFERENCE;
            else goto bad;
        } else if (!strcmp(a, "--ring")) {
            int64_t x;
            if (parse_int(v, 1, 4096, &x)) goto bad;
            P = (int32_t)x;
        } else if (!strcmp(a, "--layout")) {
            if (!strcmp(v, "contiguous")) cfg.layout = RDA_LAYOUT_CONTIGUOUS;
            else if (!strcmp(v, "zigzag")) cfg.layout = RDA_LAYOUT_ZIGZAG;
            else goto bad;
        } else if (!strcmp(a, "--threads")) {
            int64_t x;
            if (parse_int(v, 0, 4096, &x)) {
                fprintf(stderr, "rda run: --threads must be 0 (all cores) to 4096, got '%s'\n", v);
                return 2;
            }
            cp.num_threads = (int32_t)x;
        } else {
            fprintf(stderr, "rda run: unknown option '%s' (see rda run --help)\n", a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "rda run: bad value '%s' for %s\n", v, a);
        return 2;
    }
    if (!pq || !pk || !pv || !po) {
        fprintf(stderr, "rda run: --q, --k, --v and --out are required (see rda run --help)\n");
        return 2;
    }
    if (nseg != ndil) {
        fprintf(stderr, "rda run: --segments and --dilations need the same number of values\n");
        return 2;
    }
    cfg.num_patterns = nseg;
    for (int32_t i = 0; i < nseg; i++) cfg.patterns[i] = (rda_pattern){segs[i], dils[i]};
    const bool bwd = pg || pdq || pdk || pdv;
    if (bwd && !(pg && pdq && pdk && pdv)) {
        fprintf(stderr, "rda run: the backward needs --dout, --dq, --dk and --dv together\n");
        return 2;
    }
    /* an output must be a file of its own: never an input, never another output */
    const char *ins[4] = {pq, pk, pv, pg}, *in_names[4] = {"--q", "--k", "--v", "--dout"};
    const char *outs[5] = {po, pl, pdq, pdk, pdv}, *out_names[5] = {"--out", "--lse", "--dq", "--dk", "--dv"};
    for (int j = 0; j < 5; j++) {
        if (!outs[j]) continue;
        for (int i = 0; i < 4; i++)
            if (ins[i] && rda_same_file(outs[j], ins[i])) {
                fprintf(stderr, "rda run: %s %s is the input %s; write it elsewhere\n", out_names[j], outs[j], in_names[i]);
                return 2;
            }
        for (int i = 0; i < j; i++)
            if (outs[i] && rda_same_file(outs[j], outs[i])) {
                fprintf(stderr, "rda run: %s and %s name the same file (%s)\n", out_names[i], out_names[j], outs[j]);
                return 2;
            }
    }

    char err[512], tmp[5][4096] = {"", "", "", "", ""};
    rda_npy q, k, v, g;
    memset(&q, 0, sizeof q), memset(&k, 0, sizeof k), memset(&v, 0, sizeof v), memset(&g, 0, sizeof g);
    int rc = 1;
    void *o = NULL, *grads[3] = {NULL, NULL, NULL};
    float *lse = NULL;
    rda_context *ctx = NULL;
    if (rda_npy_read(pq, &q, err, sizeof err) || rda_npy_read(pk, &k, err, sizeof err) ||
        rda_npy_read(pv, &v, err, sizeof err) || (bwd && rda_npy_read(pg, &g, err, sizeof err))) {
        fprintf(stderr, "rda run: %s\n", err);
        goto done;
    }
    if (q.ndim != 4 || k.ndim != 4 || v.ndim != 4 || (bwd && g.ndim != 4)) {
        fprintf(stderr, "rda run: q, k, v (and dout) must be 4-dimensional [B, N, H, D]\n");
        goto done;
    }
    if (have_dtype && (convert(&q, want) || convert(&k, want) || convert(&v, want) || (bwd && convert(&g, want)))) {
        fprintf(stderr, "rda run: out of memory\n");
        goto done;
    }
    rda_tensor tq = rda_tensor_contiguous(q.data, q.dtype, 4, q.shape),
               tk = rda_tensor_contiguous(k.data, k.dtype, 4, k.shape),
               tv = rda_tensor_contiguous(v.data, v.dtype, 4, v.shape),
               tg = rda_tensor_contiguous(g.data, g.dtype, 4, g.shape);
    int64_t n = rda_npy_count(&q), nk = rda_npy_count(&k), lshape[3] = {q.shape[0], q.shape[2], q.shape[1]};
    o = calloc((size_t)n + 1, rda_dtype_size(q.dtype));
    lse = calloc((size_t)(lshape[0] * lshape[1] * lshape[2]) + 1, sizeof(float));
    for (int i = 0; i < 3 && bwd; i++) grads[i] = calloc((size_t)(i ? nk : n) + 1, rda_dtype_size(q.dtype));
    if (!o || !lse || (bwd && (!grads[0] || !grads[1] || !grads[2]))) {
        fprintf(stderr, "rda run: out of memory\n");
        goto done;
    }
    rda_tensor to = rda_tensor_contiguous(o, q.dtype, 4, q.shape),
               tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, lshape),
               tdq = rda_tensor_contiguous(grads[0], q.dtype, 4, q.shape),
               tdk = rda_tensor_contiguous(grads[1], q.dtype, 4, k.shape),
               tdv = rda_tensor_contiguous(grads[2], q.dtype, 4, k.shape);
    rda_status st = rda_context_create(&cp, &ctx);
    if (st == RDA_STATUS_SUCCESS) {
        if (P > 0)
            st = rda_ring_forward_simulated(ctx, &cfg, P, &tq, &tk, &tv, &to, &tl, NULL);
        else
            st = rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, &tl);
    }
    if (st == RDA_STATUS_SUCCESS && bwd) {
        if (P > 0)
            st = rda_ring_backward_simulated(ctx, &cfg, P, &tq, &tk, &tv, &to, &tl, &tg, &tdq, &tdk, &tdv, NULL);
        else
            st = rda_attention_backward(ctx, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &tdq, &tdk, &tdv);
    }
    if (st) {
        fprintf(stderr, "rda run: %s: %s\n", rda_status_to_string(st),
                ctx ? rda_context_last_error(ctx) : "cannot create the context");
        goto done;
    }
    /* every output goes to a temporary file beside it first; all are renamed
     * into place only when all were written: a failure leaves none */
    rda_npy files[5] = {{q.dtype, 4, {q.shape[0], q.shape[1], q.shape[2], q.shape[3]}, o},
                        {RDA_DTYPE_F32, 3, {lshape[0], lshape[1], lshape[2], 0}, lse},
                        {q.dtype, 4, {q.shape[0], q.shape[1], q.shape[2], q.shape[3]}, grads[0]},
                        {q.dtype, 4, {k.shape[0], k.shape[1], k.shape[2], k.shape[3]}, grads[1]},
                        {q.dtype, 4, {k.shape[0], k.shape[1], k.shape[2], k.shape[3]}, grads[2]}};
    void **owners[5] = {&o, NULL, &grads[0], &grads[1], &grads[2]};
    for (int j = 0; j < 5; j++) {
        if (!outs[j]) continue;
        if (files[j].dtype == RDA_DTYPE_BF16) { /* written as fp32, which holds bf16 exactly */
            if (convert(&files[j], RDA_DTYPE_F32)) goto done;
            *owners[j] = files[j].data;
        }
        if (rda_npy_write_temp(outs[j], files[j].dtype, files[j].ndim, files[j].shape, files[j].data, tmp[j],
                               sizeof tmp[j], err, sizeof err)) {
            fprintf(stderr, "rda run: %s\n", err);
            goto done;
        }
    }
    for (int j = 0; j < 5; j++) {
        if (!outs[j]) continue;
        if (rename(tmp[j], outs[j]) != 0) {
            fprintf(stderr, "rda run: %s: cannot move the output into place\n", outs[j]);
            for (int i = 0; i < j; i++)
                if (outs[i]) remove(outs[i]);
            goto done;
        }
        tmp[j][0] = '\0';
    }
    printf("wrote");
    for (int j = 0; j < 5; j++)
        if (outs[j]) printf(" %s", outs[j]);
    printf("\n");
    rc = 0;
done:
    for (int j = 0; j < 5; j++)
        if (tmp[j][0]) remove(tmp[j]);
    rda_context_destroy(ctx);
    rda_npy_free(&q), rda_npy_free(&k), rda_npy_free(&v), rda_npy_free(&g);
    free(o);
    free(lse);
    for (int i = 0; i < 3; i++) free(grads[i]);
    return rc;
}
