/* .npy reading and writing, and the command-line tool end to end: `rda run`
 * on .npy files gives the library's result, `rda bench` writes its report,
 * bad input makes the tool fail without writing outputs. */
#include <math.h>
#include <unistd.h>

#include "harness.h"
#include "npy.h"

static char dir[256];

static void path(char *out, const char *name) { snprintf(out, 512, "%s/%s", dir, name); }

static char md_buf[512], js_buf[512];
static const char *md_tmp_path(const char *d) {
    snprintf(md_buf, sizeof md_buf, "%s/bad.md", d);
    return md_buf;
}
static const char *js_tmp_path(const char *d) {
    snprintf(js_buf, sizeof js_buf, "%s/bad.json", d);
    return js_buf;
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "/tmp/rda_test_npy_%d", (int)getpid());
    char cmd[8192], p[512], err[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    CHECK(system(cmd) == 0, "temp dir");

    /* round trips */
    const rda_dtype dts[] = {RDA_DTYPE_F32, RDA_DTYPE_F16, RDA_DTYPE_F64};
    for (int t = 0; t < 3; t++)
        for (int32_t nd = 1; nd <= 4; nd++) {
            int64_t shape[4] = {3, 1, 5, 2}, n = 1;
            for (int32_t i = 0; i < nd; i++) n *= shape[i];
            size_t es = rda_dtype_size(dts[t]);
            char *data = malloc(n * es);
            for (int64_t i = 0; i < (int64_t)(n * es); i++) data[i] = (char)(i * 7 + 1);
            path(p, "rt.npy");
            CHECK(rda_npy_write(p, dts[t], nd, shape, data, err, sizeof err) == 0, "write: %s", err);
            rda_npy a;
            CHECK(rda_npy_read(p, &a, err, sizeof err) == 0, "read: %s", err);
            CHECK(a.dtype == dts[t] && a.ndim == nd && memcmp(a.shape, shape, 8 * nd) == 0 &&
                      memcmp(a.data, data, n * es) == 0,
                  "round trip %s ndim %d", rda_dtype_name(dts[t]), nd);
            rda_npy_free(&a);
            free(data);
        }
    /* malformed files */
    rda_npy a;
    path(p, "bad.npy");
    FILE *f = fopen(p, "wb");
    fputs("not numpy at all", f);
    fclose(f);
    CHECK(rda_npy_read(p, &a, err, sizeof err) == RDA_STATUS_IO_ERROR && a.data == NULL, "not a .npy file");
    { /* a valid little-endian file, then its descr flipped to big-endian */
        int64_t s2[1] = {2};
        float two[2] = {1, 2};
        rda_npy_write(p, RDA_DTYPE_F32, 1, s2, two, err, sizeof err);
        f = fopen(p, "r+b");
        char head[128];
        size_t got = fread(head, 1, sizeof head, f);
        char *lt = memchr(head, '<', got);
        if (lt) {
            fseek(f, (long)(lt - head), SEEK_SET);
            fputc('>', f);
        }
        fclose(f);
    }
    CHECK(rda_npy_read(p, &a, err, sizeof err) == RDA_STATUS_UNSUPPORTED, "big-endian refused: %s", err);
    int64_t s1[1] = {1000};
    float *big = calloc(1000, 4);
    rda_npy_write(p, RDA_DTYPE_F32, 1, s1, big, err, sizeof err);
    CHECK(truncate(p, 500) == 0, "truncate");
    CHECK(rda_npy_read(p, &a, err, sizeof err) == RDA_STATUS_IO_ERROR, "truncated file refused");
    free(big);
    CHECK(rda_npy_read("/nonexistent/x.npy", &a, err, sizeof err) == RDA_STATUS_IO_ERROR, "missing file");

    if (argc < 2) {
        printf("npy: the command-line tool was not built; its checks were skipped\n");
        return harness_done("npy");
    }
    const char *rda = argv[1];
    /* rda run vs the library */
    int64_t B = 1, N = 33, H = 4, Hkv = 2, D = 16, sq[4] = {B, N, H, D}, sk[4] = {B, N, Hkv, D}, sl[3] = {B, H, N};
    int64_t nq = B * N * H * D, nk = B * N * Hkv * D;
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk), *o = malloc(4 * nq), *l = malloc(4 * B * H * N);
    rda_rng r;
    rda_rng_seed(&r, 4);
    rda_fill_uniform(q, RDA_DTYPE_F32, nq, &r, -1, 1);
    rda_fill_uniform(k, RDA_DTYPE_F32, nk, &r, -1, 1);
    rda_fill_uniform(v, RDA_DTYPE_F32, nk, &r, -1, 1);
    char pq[512], pk[512], pv[512], po[512], pl[512];
    path(pq, "q.npy"), path(pk, "k.npy"), path(pv, "v.npy"), path(po, "o.npy"), path(pl, "lse.npy");
    rda_npy_write(pq, RDA_DTYPE_F32, 4, sq, q, err, sizeof err);
    rda_npy_write(pk, RDA_DTYPE_F32, 4, sk, k, err, sizeof err);
    rda_npy_write(pv, RDA_DTYPE_F32, 4, sk, v, err, sizeof err);
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = RDA_MODE_LONGNET;
    cfg.causal = 1;
    cfg.num_patterns = 2;
    cfg.patterns[0] = (rda_pattern){8, 1};
    cfg.patterns[1] = (rda_pattern){16, 2};
    rda_context *ctx;
    rda_context_create(NULL, &ctx);
    rda_tensor tq = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, sq), tk = rda_tensor_contiguous(k, RDA_DTYPE_F32, 4, sk),
               tv = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, sk), to = rda_tensor_contiguous(o, RDA_DTYPE_F32, 4, sq),
               tl = rda_tensor_contiguous(l, RDA_DTYPE_F32, 3, sl);
    CHECK(rda_attention_forward(ctx, &cfg, &tq, &tk, &tv, &to, &tl) == 0, "library forward");
    for (int ring = 0; ring < 2; ring++) {
        remove(po), remove(pl);
        snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s --lse %s --mode longnet --segments 8,16 "
                 "--dilations 1,2 --causal %s > /dev/null", rda, pq, pk, pv, po, pl, ring ? "--ring 3 --layout zigzag" : "");
        CHECK(system(cmd) == 0, "rda run exits 0: %s", cmd);
        rda_npy ro, rl;
        CHECK(rda_npy_read(po, &ro, err, sizeof err) == 0 && rda_npy_read(pl, &rl, err, sizeof err) == 0, "outputs written");
        if (ro.data && rl.data) {
            double *ref = malloc(8 * nq);
            rda_to_f64(o, RDA_DTYPE_F32, nq, ref);
            CHECK(rda_compare(ro.data, RDA_DTYPE_F32, ref, nq).rel_l2 <= 1e-6, "rda run%s O equals the library's", ring ? " --ring 3" : "");
            int same = 1;
            for (int64_t i = 0; i < B * H * N; i++) same &= ((float *)rl.data)[i] == l[i] || fabsf(((float *)rl.data)[i] - l[i]) < 1e-5f;
            CHECK(same, "rda run LSE equals the library's");
            free(ref);
        }
        rda_npy_free(&ro), rda_npy_free(&rl);
    }
    /* the backward through the tool (GQA: K, V have 2 heads of Q's 4), one
     * rank and a zig-zag ring of 3, against the library's */
    {
        float *g = malloc(4 * nq), *gd[3];
        for (int i = 0; i < 3; i++) gd[i] = malloc(4 * (i ? nk : nq));
        rda_fill_uniform(g, RDA_DTYPE_F32, nq, &r, -1, 1);
        char pg[512], pdq[512], pdk[512], pdv[512];
        path(pg, "do.npy"), path(pdq, "dq.npy"), path(pdk, "dk.npy"), path(pdv, "dv.npy");
        rda_npy_write(pg, RDA_DTYPE_F32, 4, sq, g, err, sizeof err);
        rda_tensor tg = rda_tensor_contiguous(g, RDA_DTYPE_F32, 4, sq), td[3];
        for (int i = 0; i < 3; i++) td[i] = rda_tensor_contiguous(gd[i], RDA_DTYPE_F32, 4, i ? sk : sq);
        CHECK(rda_attention_backward(ctx, &cfg, &tq, &tk, &tv, &to, &tl, &tg, &td[0], &td[1], &td[2]) == 0,
              "library backward");
        const char *pgs[3] = {pdq, pdk, pdv};
        for (int ring = 0; ring < 2; ring++) {
            for (int i = 0; i < 3; i++) remove(pgs[i]);
            snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s --dout %s --dq %s --dk %s --dv %s "
                     "--mode longnet --segments 8,16 --dilations 1,2 --causal %s > /dev/null", rda, pq, pk, pv, po,
                     pg, pdq, pdk, pdv, ring ? "--ring 3 --layout zigzag" : "");
            CHECK(system(cmd) == 0, "rda run (backward) exits 0: %s", cmd);
            for (int i = 0; i < 3; i++) {
                rda_npy x;
                memset(&x, 0, sizeof x);
                int rd = rda_npy_read(pgs[i], &x, err, sizeof err);
                const int64_t n = i ? nk : nq;
                CHECK(rd == 0 && rda_npy_count(&x) == n, "gradient %d written", i);
                if (!rd && rda_npy_count(&x) == n) {
                    double *ref = malloc(8 * n);
                    rda_to_f64(gd[i], RDA_DTYPE_F32, n, ref);
                    rda_error e = rda_compare(x.data, RDA_DTYPE_F32, ref, n);
                    CHECK(e.nonfinite == 0 && e.rel_l2 <= 1e-5, "rda run%s gradient %d equals the library's (%.3g)",
                          ring ? " --ring 3" : "", i, e.rel_l2);
                    free(ref);
                }
                rda_npy_free(&x);
            }
        }
        /* partial backward options, or a gradient that names an input: refused, nothing written */
        for (int i = 0; i < 3; i++) remove(pgs[i]);
        snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s --dout %s --dq %s 2> /dev/null", rda, pq, pk, pv,
                 po, pg, pdq);
        CHECK(system(cmd) != 0 && access(pdq, F_OK) != 0, "partial backward options refused");
        snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s --dout %s --dq %s --dk %s --dv %s 2> /dev/null",
                 rda, pq, pk, pv, po, pg, pdq, pg, pdv);
        CHECK(system(cmd) != 0 && access(pdq, F_OK) != 0 && access(pdv, F_OK) != 0, "--dk naming --dout refused");
        free(g);
        for (int i = 0; i < 3; i++) free(gd[i]);
    }
    /* bad input: non-zero exit, no output file */
    remove(po);
    snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s --mode groups --segments 8 --dilations 9 2> /dev/null",
             rda, pq, pk, pv, po);
    CHECK(system(cmd) != 0, "rda run with dilation > segment fails");
    CHECK(access(po, F_OK) != 0, "and writes no output");
    snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s 2> /dev/null", rda, pq, pq, pv, po);
    CHECK(system(cmd) != 0 && access(po, F_OK) != 0, "mismatched k/v shapes fail, no output");
    /* an output that is an input, or both outputs one file: refused, the
     * inputs untouched (a hard link counts as the same file) */
    {
        char before[64], after[64], hl[512];
        FILE *g = fopen(pq, "rb");
        size_t got = g ? fread(before, 1, sizeof before, g) : 0;
        if (g) fclose(g);
        path(hl, "q-link.npy");
        CHECK(link(pq, hl) == 0, "hard link");
        const char *outs[3][2] = {{pq, NULL}, {hl, NULL}, {po, po}};
        for (int c = 0; c < 3; c++) {
            remove(po);
            snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s %s %s 2> /dev/null", rda, pq, pk, pv,
                     outs[c][0], outs[c][1] ? "--lse" : "", outs[c][1] ? outs[c][1] : "");
            CHECK(system(cmd) != 0, "refused: %s", cmd);
            g = fopen(pq, "rb");
            size_t got2 = g ? fread(after, 1, sizeof after, g) : 0;
            if (g) fclose(g);
            CHECK(got2 == got && !memcmp(before, after, got), "q.npy untouched: %s", cmd);
            CHECK(c < 2 || access(po, F_OK) != 0, "no output left: %s", cmd);
        }
        remove(hl);
        /* a failure after O was written (the LSE folder does not exist):
         * neither output is left, no temporary file either */
        remove(po);
        snprintf(cmd, sizeof cmd, "%s run --q %s --k %s --v %s --out %s --lse %s/no/such/dir/l.npy 2> /dev/null", rda,
                 pq, pk, pv, po, dir);
        CHECK(system(cmd) != 0 && access(po, F_OK) != 0, "a failed --lse leaves no O");
        snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp- > /dev/null", dir);
        CHECK(system(cmd) != 0, "no temporary files left in %s", dir);
    }
    /* a header claiming far more data than the file holds: refused before
     * any allocation (a (1, 2^30, 2^16, 2^16) f4 array) */
    {
        char hp[512];
        path(hp, "huge.npy");
        FILE *g = fopen(hp, "wb");
        const char *hd = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1073741824, 65536, 65536), }";
        unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
        size_t hlen = strlen(hd) + 1;
        pre[8] = (unsigned char)(hlen & 0xff), pre[9] = (unsigned char)(hlen >> 8);
        fwrite(pre, 1, 10, g), fwrite(hd, 1, strlen(hd), g), fputc('\n', g), fputc(0, g);
        fclose(g);
        CHECK(rda_npy_read(hp, &a, err, sizeof err) != 0 && a.data == NULL, "huge header refused: %s", err);
        CHECK(strstr(err, "overflow") || strstr(err, "bytes"), "with a message: %s", err);
    }
    /* numbers are parsed whole and in range */
    {
        const char *badopts[] = {"run --ring 2abc", "run --threads abc", "run --threads 10000", "run --scale 0",
                                 "run --segments 8, --dilations 1,", "bench --reps 4294967297",
                                 "bench --ring-sizes 4294967298", "bench --sample-rows 0", "bench --variants Nope",
                                 "bench --threads 10000", "bench --segments 8,,16 --dilations 1,2,2"};
        for (size_t c = 0; c < sizeof badopts / sizeof *badopts; c++) {
            remove(po);
            if (!strncmp(badopts[c], "run", 3))
                snprintf(cmd, sizeof cmd, "%s %s --q %s --k %s --v %s --out %s 2> /dev/null > /dev/null", rda,
                         badopts[c], pq, pk, pv, po);
            else
                snprintf(cmd, sizeof cmd, "%s %s --seq-lens 64 --quiet --out-md %s --out-json %s 2> /dev/null > /dev/null",
                         rda, badopts[c], md_tmp_path(dir), js_tmp_path(dir));
            CHECK(system(cmd) != 0, "refused: rda %s", badopts[c]);
            CHECK(access(po, F_OK) != 0, "no output: rda %s", badopts[c]);
        }
    }
    /* a small benchmark writes both reports and names the Markdown last */
    char md[512], js[512], outp[512];
    path(md, "r.md"), path(js, "r.json"), path(outp, "stdout.txt");
    snprintf(cmd, sizeof cmd, "%s bench --seq-lens 64,100 --heads 3 --head-dim 8 --reps 1 --warmup 0 --quiet "
             "--dtype bf16 --causal --layout zigzag --out-md %s --out-json %s > %s", rda, md, js, outp);
    CHECK(system(cmd) == 0, "small benchmark passes: %s", cmd);
    f = fopen(outp, "r");
    char line[1024] = "", last[1024] = "";
    while (f && fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line);
    if (f) fclose(f);
    CHECK(strstr(last, "Report written to") && strstr(last, md), "last line names the report: %s", last);
    CHECK(access(md, F_OK) == 0 && access(js, F_OK) == 0, "report files exist");
    snprintf(cmd, sizeof cmd, "%s bench --seq-lens 0 --quiet 2> /dev/null", rda);
    CHECK(system(cmd) != 0, "bench with N = 0 fails");
    snprintf(cmd, sizeof cmd, "%s bench --frobnicate 2> /dev/null", rda);
    CHECK(system(cmd) != 0, "unknown option fails");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "temp dir removed");
    rda_context_destroy(ctx);
    free(q), free(k), free(v), free(o), free(l);
    return harness_done("npy");
}
