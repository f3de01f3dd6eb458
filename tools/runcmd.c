/* `rda run`: one attention call on .npy inputs, .npy outputs; for checking
 * results against any other implementation. */
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
    const char *pq = NULL, *pk = NULL, *pv = NULL, *po = NULL, *pl = NULL;
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
    /* an output must be a file of its own: never an input, never the other output */
    const char *ins[3] = {pq, pk, pv}, *names[3] = {"--q", "--k", "--v"};
    for (int i = 0; i < 3; i++) {
        if (rda_same_file(po, ins[i])) {
            fprintf(stderr, "rda run: --out %s is the input %s; write the output elsewhere\n", po, names[i]);
            return 2;
        }
        if (pl && rda_same_file(pl, ins[i])) {
            fprintf(stderr, "rda run: --lse %s is the input %s; write it elsewhere\n", pl, names[i]);
            return 2;
        }
    }
    if (pl && rda_same_file(pl, po)) {
        fprintf(stderr, "rda run: --lse and --out name the same file (%s)\n", po);
        return 2;
    }

    char err[512], tmp_o[4096] = "", tmp_l[4096] = "";
    rda_npy q, k, v;
    memset(&q, 0, sizeof q), memset(&k, 0, sizeof k), memset(&v, 0, sizeof v);
    int rc = 1;
    void *o = NULL;
    float *lse = NULL;
    rda_context *ctx = NULL;
    if (rda_npy_read(pq, &q, err, sizeof err) || rda_npy_read(pk, &k, err, sizeof err) ||
        rda_npy_read(pv, &v, err, sizeof err)) {
        fprintf(stderr, "rda run: %s\n", err);
        goto done;
    }
    if (q.ndim != 4 || k.ndim != 4 || v.ndim != 4) {
        fprintf(stderr, "rda run: q, k and v must be 4-dimensional [B, N, H, D]\n");
        goto done;
    }
    if (have_dtype && (convert(&q, want) || convert(&k, want) || convert(&v, want))) {
        fprintf(stderr, "rda run: out of memory\n");
        goto done;
    }
    rda_tensor tq = rda_tensor_contiguous(q.data, q.dtype, 4, q.shape),
               tk = rda_tensor_contiguous(k.data, k.dtype, 4, k.shape),
               tv = rda_tensor_contiguous(v.data, v.dtype, 4, v.shape);
    int64_t n = rda_npy_count(&q), lshape[3] = {q.shape[0], q.shape[2], q.shape[1]};
    o = calloc((size_t)n + 1, rda_dtype_size(q.dtype));
    lse = calloc((size_t)(lshape[0] * lshape[1] * lshape[2]) + 1, sizeof(float));
    if (!o || !lse) {
        fprintf(stderr, "rda run: out of memory\n");
        goto done;
    }
    rda_tensor to = rda_tensor_contiguous(o, q.dtype, 4, q.shape),
               tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, lshape);
    rda_status st = rda_context_create(&cp, &ctx);
    if (st == RDA_STATUS_SUCCESS) {
        if (P > 0)
            st = rda_ring_forward_simulated(ctx, &cfg, P, &tq, &tk, &tv, &to, &tl, NULL);
        else
            st = rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, &tl);
    }
    if (st) {
        fprintf(stderr, "rda run: %s: %s\n", rda_status_to_string(st),
                ctx ? rda_context_last_error(ctx) : "cannot create the context");
        goto done;
    }
    rda_npy out = {q.dtype, 4, {q.shape[0], q.shape[1], q.shape[2], q.shape[3]}, o};
    if (out.dtype == RDA_DTYPE_BF16 && convert(&out, RDA_DTYPE_F32)) goto done;
    o = out.data;
    /* both outputs go to temporary files beside them first, renamed into
     * place only when both were written: a failure leaves neither */
    if (rda_npy_write_temp(po, out.dtype, 4, out.shape, out.data, tmp_o, sizeof tmp_o, err, sizeof err) ||
        (pl && rda_npy_write_temp(pl, RDA_DTYPE_F32, 3, lshape, lse, tmp_l, sizeof tmp_l, err, sizeof err))) {
        fprintf(stderr, "rda run: %s\n", err);
        goto done;
    }
    if (rename(tmp_o, po) != 0) {
        fprintf(stderr, "rda run: %s: cannot move the output into place\n", po);
        goto done;
    }
    tmp_o[0] = '\0';
    if (pl && rename(tmp_l, pl) != 0) {
        fprintf(stderr, "rda run: %s: cannot move the output into place\n", pl);
        remove(po);
        goto done;
    }
    tmp_l[0] = '\0';
    printf("wrote %s%s%s\n", po, pl ? " and " : "", pl ? pl : "");
    rc = 0;
done:
    if (tmp_o[0]) remove(tmp_o);
    if (tmp_l[0]) remove(tmp_l);
    rda_context_destroy(ctx);
    rda_npy_free(&q), rda_npy_free(&k), rda_npy_free(&v);
    free(o);
    free(lse);
    return rc;
}
