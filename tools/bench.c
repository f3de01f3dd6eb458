/* `rda bench`: the seed benchmark report, reproduced on this machine. Every
 * row runs through the library's public API; every figure is measured here
 * (median of repeated runs after warm-up) and checked against the fp64
 * reference on the same inputs. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "device.h"
#include "runcmd.h"
#include "testdata.h"

void bench_defaults(bench_options *o) {
    memset(o, 0, sizeof(*o));
    o->dtype = RDA_DTYPE_F32;
    o->backend = -1;
    o->B = 1;
    o->H = 8;
    o->D = 64;
    o->seq_lens[0] = 1024;
    o->seq_lens[1] = 2048;
    o->seq_lens[2] = 4096;
    o->n_seq = 3;
    o->dilated_mode = RDA_MODE_GROUPS;
    o->layout = RDA_LAYOUT_CONTIGUOUS;
    o->reps = 5;
    o->warmup = 1;
    o->real_gpus = 1;
    o->sample_rows = 1024;
    o->full_ref_limit = 200000000000LL; /* 2e11 multiply-adds: about a minute here */
    o->out_md = "reports/rda-report.md";
    o->out_json = "reports/rda-report.json";
    o->seed = 2025;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: rda bench [options]\n"
            "Reproduces the seed benchmark report (dense rings, groups-dilated single rank and\n"
            "rings) on this machine and writes it as Markdown and JSON.\n\n"
            "  --backend auto|cpu|cuda    where to run (default auto: the GPU when one exists)\n"
            "  --dtype fp32|fp16|bf16     element type (default fp16 on a GPU, fp32 on the CPU)\n"
            "  --batch B --heads H --head-dim D   (default 1, 8, 64)\n"
            "  --seq-lens N1,N2,...       sequence lengths (default 1024,2048,4096)\n"
            "  --segments w1,w2,...       dilated segment lengths (default: seed rule\n"
            "                             [min(N/4,1024), min(N/2,2048)])\n"
            "  --dilations r1,r2,...      dilation rates (default 1,2)\n"
            "  --mode groups|longnet      how dilated patterns combine (default groups)\n"
            "  --causal                   causal masking\n"
            "  --layout contiguous|zigzag ring layout (default contiguous)\n"
            "  --ring-sizes P1,P2,...     ring sizes (default: 1,2 and 4 when N >= 4096)\n"
            "  --variants NAME,...        only rows whose variant starts with one of these\n"
            "  --reps R --warmup W        timed runs and warm-up runs (default 5, 1)\n"
            "  --threads T                CPU threads (default: all cores)\n"
            "  --sample-rows S            rows per (batch, head) checked when the full fp64\n"
            "                             reference is too long (default 1024)\n"
            "  --full-ref-limit X         full reference up to X pair*D products (default 2e11)\n"
            "  --time-reference           also time the full fp64 reference (speed-up column)\n"
            "  --backward                 also time the backward (from the one-rank forward's O and\n"
            "                             LSE and a random dO) and forward+backward; check dQ, dK,\n"
            "                             dV against the fp64 reference (needs the full one)\n"
            "  --real-gpus                rings of P > 1 on P GPUs of this machine through NCCL\n"
            "                             when it has P GPUs (the default; else simulated ranks)\n"
            "  --simulated-rings          rings of P > 1 as P simulated ranks on one GPU\n"
            "  --seed S                   input seed (default 2025)\n"
            "  --out-md PATH --out-json PATH  report files (default reports/rda-report.{md,json})\n"
            "  --quiet                    no progress on stderr\n");
}

/* a list of at least one value */
static int parse_list(const char *s, int64_t *out, int32_t *n, int32_t max) {
    *n = parse_i64_list(s, out, max);
    return *n > 0 ? 0 : -1;
}

static int parse_dtype(const char *s, rda_dtype *dt) {
    if (!strcmp(s, "fp32") || !strcmp(s, "f32")) *dt = RDA_DTYPE_F32;
    else if (!strcmp(s, "fp16") || !strcmp(s, "f16")) *dt = RDA_DTYPE_F16;
    else if (!strcmp(s, "bf16")) *dt = RDA_DTYPE_BF16;
    else return -1;
    return 0;
}

static int parse_args(int argc, char **argv, bench_options *o) {
    int64_t segs[RDA_MAX_PATTERNS], dils[RDA_MAX_PATTERNS];
    int32_t nseg = 0, ndil = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                  \
    do {                                                              \
        if (!v) {                                                     \
            fprintf(stderr, "rda bench: %s needs a value\n", a);      \
            return -1;                                                \
        }                                                             \
        i++;                                                          \
    } while (0)
#define BAD_VALUE()                                                      \
    do {                                                                 \
        fprintf(stderr, "rda bench: bad value '%s' for %s\n", v, a);     \
        return -1;                                                       \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--dtype")) {
            NEED_VALUE();
            if (parse_dtype(v, &o->dtype)) BAD_VALUE();
            o->dtype_set = 1;
        } else if (!strcmp(a, "--backend")) {
            NEED_VALUE();
            if (!strcmp(v, "auto")) o->backend = -1;
            else if (!strcmp(v, "cpu")) o->backend = RDA_BACKEND_CPU;
            else if (!strcmp(v, "cuda")) o->backend = RDA_BACKEND_CUDA;
            else BAD_VALUE();
        } else if (!strcmp(a, "--batch") || !strcmp(a, "--heads") || !strcmp(a, "--head-dim") ||
                   !strcmp(a, "--reps") || !strcmp(a, "--warmup") || !strcmp(a, "--threads") ||
                   !strcmp(a, "--sample-rows") || !strcmp(a, "--seed")) {
            NEED_VALUE();
            /* whole numbers in range: reps, warm-up and threads fit the
             * library's int32 fields (threads at most 4096), sampled rows >= 1 */
            int64_t x, lo = !strcmp(a, "--warmup") || !strcmp(a, "--threads") || !strcmp(a, "--seed") ? 0 : 1,
                       hi = !strcmp(a, "--threads") ? 4096 : !strcmp(a, "--reps") || !strcmp(a, "--warmup") ? INT32_MAX
                                                                                                          : INT64_MAX;
            if (parse_int(v, lo, hi, &x)) {
                fprintf(stderr, "rda bench: %s must be a whole number in %lld..%lld, got '%s'\n", a, (long long)lo,
                        (long long)hi, v);
                return -1;
            }
            if (!strcmp(a, "--batch")) o->B = x;
            else if (!strcmp(a, "--heads")) o->H = x;
            else if (!strcmp(a, "--head-dim")) o->D = x;
            else if (!strcmp(a, "--reps")) o->reps = (int32_t)x;
            else if (!strcmp(a, "--warmup")) o->warmup = (int32_t)x;
            else if (!strcmp(a, "--threads")) o->threads = (int32_t)x;
            else if (!strcmp(a, "--sample-rows")) o->sample_rows = x;
            else o->seed = (uint64_t)x;
        } else if (!strcmp(a, "--full-ref-limit")) {
            NEED_VALUE();
            double x;
            if (parse_num(v, &x) || x < 0 || x > 9e18) BAD_VALUE();
            o->full_ref_limit = (int64_t)x;
        } else if (!strcmp(a, "--seq-lens")) {
            NEED_VALUE();
            if (parse_list(v, o->seq_lens, &o->n_seq, BENCH_MAX_LIST)) BAD_VALUE();
        } else if (!strcmp(a, "--segments")) {
            NEED_VALUE();
            if (parse_list(v, segs, &nseg, RDA_MAX_PATTERNS)) BAD_VALUE();
        } else if (!strcmp(a, "--dilations")) {
            NEED_VALUE();
            if (parse_list(v, dils, &ndil, RDA_MAX_PATTERNS)) BAD_VALUE();
        } else if (!strcmp(a, "--ring-sizes")) {
            NEED_VALUE();
            int64_t r[BENCH_MAX_LIST];
            if (parse_list(v, r, &o->n_ring, BENCH_MAX_LIST)) BAD_VALUE();
            for (int32_t k = 0; k < o->n_ring; k++) {
                if (r[k] < 1 || r[k] > 4096) BAD_VALUE();
                o->ring_sizes[k] = (int32_t)r[k];
            }
        } else if (!strcmp(a, "--mode")) {
            NEED_VALUE();
            if (!strcmp(v, "groups")) o->dilated_mode = RDA_MODE_GROUPS;
            else if (!strcmp(v, "longnet")) o->dilated_mode = RDA_MODE_LONGNET;
            else BAD_VALUE();
        } else if (!strcmp(a, "--layout")) {
            NEED_VALUE();
            if (!strcmp(v, "contiguous")) o->layout = RDA_LAYOUT_CONTIGUOUS;
            else if (!strcmp(v, "zigzag")) o->layout = RDA_LAYOUT_ZIGZAG;
            else BAD_VALUE();
        } else if (!strcmp(a, "--variants")) {
            NEED_VALUE();
            snprintf(o->variants, sizeof o->variants, "%s", v);
        } else if (!strcmp(a, "--out-md")) {
            NEED_VALUE();
            o->out_md = v;
        } else if (!strcmp(a, "--out-json")) {
            NEED_VALUE();
            o->out_json = v;
        } else if (!strcmp(a, "--causal")) {
            o->causal = 1;
        } else if (!strcmp(a, "--real-gpus")) {
            o->real_gpus = 1;
        } else if (!strcmp(a, "--simulated-rings")) {
            o->real_gpus = 0;
        } else if (!strcmp(a, "--backward")) {
            o->backward = 1;
        } else if (!strcmp(a, "--time-reference")) {
            o->time_reference = 1;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else {
            fprintf(stderr, "rda bench: unknown option '%s' (see rda bench --help)\n", a);
            return -1;
        }
    }
    if (nseg || ndil) {
        if (nseg != ndil) {
            fprintf(stderr, "rda bench: --segments and --dilations need the same number of values\n");
            return -1;
        }
        o->n_pat = nseg;
        for (int32_t k = 0; k < nseg; k++) o->patterns[k] = (rda_pattern){segs[k], dils[k]};
    }
    if (o->B < 1 || o->H < 1 || o->D < 1 || o->reps < 1) {
        fprintf(stderr, "rda bench: batch, heads, head-dim and reps must be >= 1\n");
        return -1;
    }
    /* every --variants name must start some row's name */
    static const char *known[] = {"StandardRingAttention", "RingAttention_ring", "ImprovedDilatedAttention",
                                  "RingDilatedV2_single", "RingDilatedV2_ring"};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", o->variants);
    for (char *save = NULL, *t = o->variants[0] ? strtok_r(buf, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
        bool hit = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            hit |= strncmp(known[k], t, strlen(t)) == 0 || strncmp(t, known[k], strlen(known[k])) == 0;
        if (!hit) {
            fprintf(stderr, "rda bench: --variants: no row is called '%s' (rows: StandardRingAttention, "
                            "RingAttention_ringP, ImprovedDilatedAttention, RingDilatedV2_single, RingDilatedV2_ringP)\n", t);
            return -1;
        }
    }
    return 0;
}

static bool wanted(const bench_options *o, const char *name) {
    if (!o->variants[0]) return true;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", o->variants);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (!strncmp(name, tok, strlen(tok))) return true;
    return false;
}

static void device_name(char *out, size_t n, int32_t threads) {
    char model[200] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ') c++;
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        fclose(f);
    }
    snprintf(out, n, "cpu (%s, %d threads)", model, threads);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The reference of one configuration at one N, computed once and shared by
 * every row that computes the same function. */
typedef struct {
    bool ready, sampled;
    double *out;          /* full: [B, N, H, D]; sampled: [B, m, H, D] */
    int64_t *rows;        /* sampled positions (sorted) */
    int64_t m;
    int64_t *flat_rows;   /* b * N + rows[j], b-major: rows of O to compare */
    double naive_max_abs; /* same-type naive implementation (fp16/bf16, full only) */
    double seconds;       /* time of the full reference when timed */
    /* the backward's inputs (one-rank forward's O and LSE, a random dO, on
     * the host and, for GPU rows, the device) and its fp64 reference */
    bool bwd_ready;
    void *o1, *dout, *d_o1, *d_dout;
    float *lse1, *d_lse1;
    double *grad[3];      /* dq, dk, dv: full, or [B, m, H or Hkv, D] at the sampled rows */
    bool bwd_sampled;
    double naive_grad[3]; /* max_abs of the naive same-type backward */
    double grad_max[3];   /* max |reference| */
} reference;

typedef struct {
    const bench_options *o;
    rda_context *ctx, *ref_ctx;
    int64_t N;
    void *q, *k, *v, *o_buf;
    rda_tensor tq, tk, tv, to; /* host tensors */
    bool dev;                  /* rows run on the GPU: */
    void *dq, *dk, *dv, *d_o;  /* device copies */
    rda_tensor rq, rk, rv, ro; /* the tensors the rows run on */
    int32_t ngpus;             /* GPUs of this machine */
    int32_t devices[BENCH_MAX_LIST * 8];
    double *q64, *k64, *v64; /* for the fp64 reference */
    char error[256];          /* why a reference could not be made */
    /* inputs made on the GPU (every row's reference sampled): the host holds
     * K and V (read back whole: the sampled rows reach keys anywhere) and
     * only the sampled rows of Q and O, in zero-filled buffers of full size
     * whose other pages are never touched */
    bool dev_inputs;
} bench_state;

static void rda_set_error(bench_state *s, const char *msg) { snprintf(s->error, sizeof s->error, "%s", msg); }

static rda_status compute_reference(bench_state *s, const rda_config *cfg, reference *ref) {
    const bench_options *o = s->o;
    int64_t pairs;
    rda_status st = rda_count_pairs(cfg, o->B, s->N, o->H, &pairs);
    if (st) return st;
    int64_t shape[4] = {o->B, s->N, o->H, o->D};
    rda_tensor q64 = rda_tensor_contiguous(s->q64, RDA_DTYPE_F64, 4, shape),
               k64 = rda_tensor_contiguous(s->k64, RDA_DTYPE_F64, 4, shape),
               v64 = rda_tensor_contiguous(s->v64, RDA_DTYPE_F64, 4, shape);
    int64_t n = o->B * s->N * o->H * o->D;
    ref->sampled = (double)pairs * (double)o->D > (double)o->full_ref_limit &&
                   o->sample_rows < s->N;
    if (!ref->sampled) {
        ref->out = malloc(sizeof(double) * (size_t)n);
        if (!ref->out) return RDA_STATUS_OUT_OF_MEMORY;
        rda_tensor r = rda_tensor_contiguous(ref->out, RDA_DTYPE_F64, 4, shape);
        double t0 = rda_now();
        st = rda_attention_forward(s->ref_ctx, cfg, &q64, &k64, &v64, &r, NULL);
        ref->seconds = rda_now() - t0;
        if (st) return st;
        ref->m = s->N;
        if (o->dtype != RDA_DTYPE_F32) {
            rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
            cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
            cp.num_threads = o->threads;
            rda_context *c;
            void *naive = malloc((size_t)n * rda_dtype_size(o->dtype));
            if (!naive) return RDA_STATUS_OUT_OF_MEMORY;
            rda_tensor tn = rda_tensor_contiguous(naive, o->dtype, 4, shape);
            if ((st = rda_context_create(&cp, &c))) {
                free(naive);
                return st;
            }
            st = rda_attention_forward(c, cfg, &s->tq, &s->tk, &s->tv, &tn, NULL);
            rda_context_destroy(c);
            if (!st) ref->naive_max_abs = rda_compare(naive, o->dtype, ref->out, n).max_abs;
            free(naive);
            if (st) return st;
        }
    } else {
        /* SPEC.md: at least 1024 random query rows per (b, h) slice */
        int64_t m = o->sample_rows;
        ref->rows = malloc(sizeof(int64_t) * (size_t)m);
        ref->out = malloc(sizeof(double) * (size_t)(o->B * m * o->H * o->D));
        ref->flat_rows = malloc(sizeof(int64_t) * (size_t)(o->B * m));
        if (!ref->rows || !ref->out || !ref->flat_rows) return RDA_STATUS_OUT_OF_MEMORY;
        rda_rng rng;
        rda_rng_seed(&rng, o->seed ^ (uint64_t)s->N);
        /* distinct positions: partial Fisher-Yates over [0, N) by rejection */
        int64_t got = 0;
        while (got < m) {
            int64_t x = (int64_t)rda_rng_uniform(&rng, 0, (double)s->N);
            if (x >= s->N) continue;
            bool dup = false;
            for (int64_t j = 0; j < got && !dup; j++) dup = ref->rows[j] == x;
            if (!dup) ref->rows[got++] = x;
        }
        qsort(ref->rows, (size_t)m, sizeof(int64_t), cmp_i64);
        ref->m = m;
        for (int64_t b = 0; b < o->B; b++)
            for (int64_t j = 0; j < m; j++) ref->flat_rows[b * m + j] = b * s->N + ref->rows[j];
        if (s->dev_inputs) { /* the sampled rows of Q from the GPU; K, V as they are */
            size_t es = rda_dtype_size(o->dtype), row = es * (size_t)(o->H * o->D);
            for (int64_t j = 0; j < o->B * m; j++) {
                size_t off = row * (size_t)ref->flat_rows[j];
                if (dev_download((char *)s->q + off, (const char *)s->dq + off, row)) return RDA_STATUS_DEVICE_ERROR;
            }
            st = rda_reference_rows(s->ref_ctx, cfg, &s->tq, &s->tk, &s->tv, ref->rows, m, ref->out, NULL);
        } else {
            st = rda_reference_rows(s->ref_ctx, cfg, &q64, &k64, &v64, ref->rows, m, ref->out, NULL);
        }
        if (st) return st;
    }
    ref->ready = true;
    return RDA_STATUS_SUCCESS;
}

static void free_reference(reference *r) {
    free(r->out);
    free(r->rows);
    free(r->flat_rows);
    free(r->o1), free(r->dout), free(r->lse1);
    dev_free(r->d_o1), dev_free(r->d_dout), dev_free(r->d_lse1);
    for (int i = 0; i < 3; i++) free(r->grad[i]);
    memset(r, 0, sizeof(*r));
}

/* The backward's inputs and its fp64 reference for one configuration: the
 * one-rank forward's O and LSE, a random dO, then the reference backward
 * (and the naive same-type one) on them; every row's backward reads the
 * same O, LSE and dO. */
static rda_status compute_bwd_reference(bench_state *s, const rda_config *cfg, reference *ref) {
    const bench_options *o = s->o;
    const int64_t n = o->B * s->N * o->H * o->D, nl = o->B * o->H * s->N;
    const size_t es = rda_dtype_size(o->dtype);
    int64_t pairs;
    rda_status st = rda_count_pairs(cfg, o->B, s->N, o->H, &pairs);
    if (st) return st;
    if (s->dev_inputs) {
        rda_set_error(s, "the backward's check needs Q, O and dO on the host, which inputs made on the GPU do not keep");
        return RDA_STATUS_UNSUPPORTED;
    }
    /* long sequences: the forward's sampled rows, as query rows (dq) and as key rows (dk, dv) */
    ref->bwd_sampled = (double)pairs * (double)o->D > (double)o->full_ref_limit && ref->sampled;
    ref->o1 = malloc((size_t)n * es), ref->dout = malloc((size_t)n * es);
    ref->lse1 = malloc(sizeof(float) * (size_t)nl);
    /* fp64 copies and the naive backward only for the full reference */
    const bool full = !ref->bwd_sampled;
    const int64_t gn = full ? n : o->B * ref->m * o->H * o->D;
    for (int i = 0; i < 3; i++) ref->grad[i] = malloc(sizeof(double) * (size_t)gn);
    double *o64 = full ? malloc(sizeof(double) * (size_t)n) : NULL, *g64 = full ? malloc(sizeof(double) * (size_t)n) : NULL;
    void *naive[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3 && full; i++) naive[i] = malloc((size_t)n * es);
    if (!ref->o1 || !ref->dout || !ref->lse1 || !ref->grad[0] || !ref->grad[1] || !ref->grad[2] ||
        (full && (!o64 || !g64 || !naive[0] || !naive[1] || !naive[2]))) {
        st = RDA_STATUS_OUT_OF_MEMORY;
        goto done;
    }
    int64_t shape[4] = {o->B, s->N, o->H, o->D}, lshape[3] = {o->B, o->H, s->N};
    rda_rng rng;
    rda_rng_seed(&rng, o->seed * 7 + (uint64_t)s->N);
    rda_fill_uniform(ref->dout, o->dtype, n, &rng, -1, 1);
    rda_tensor to = rda_tensor_contiguous(ref->o1, o->dtype, 4, shape), tl = rda_tensor_contiguous(ref->lse1, RDA_DTYPE_F32, 3, lshape),
               tg = rda_tensor_contiguous(ref->dout, o->dtype, 4, shape);
    if (s->dev) { /* the one-rank forward on the GPU, read back */
        size_t bytes = (size_t)n * es;
        ref->d_o1 = dev_alloc(bytes), ref->d_dout = dev_alloc(bytes), ref->d_lse1 = dev_alloc(sizeof(float) * (size_t)nl);
        if (!ref->d_o1 || !ref->d_dout || !ref->d_lse1 || dev_upload(ref->d_dout, ref->dout, bytes)) {
            st = RDA_STATUS_DEVICE_ERROR;
            goto done;
        }
        rda_tensor dto = rda_tensor_contiguous(ref->d_o1, o->dtype, 4, shape),
                   dtl = rda_tensor_contiguous(ref->d_lse1, RDA_DTYPE_F32, 3, lshape);
        if ((st = rda_attention_forward(s->ctx, cfg, &s->rq, &s->rk, &s->rv, &dto, &dtl)) ||
            (st = rda_context_synchronize(s->ctx)))
            goto done;
        if (dev_download(ref->o1, ref->d_o1, bytes) || dev_download(ref->lse1, ref->d_lse1, sizeof(float) * (size_t)nl)) {
            st = RDA_STATUS_DEVICE_ERROR;
            goto done;
        }
    } else if ((st = rda_attention_forward(s->ctx, cfg, &s->tq, &s->tk, &s->tv, &to, &tl))) {
        goto done;
    }
    rda_tensor q64 = rda_tensor_contiguous(s->q64, RDA_DTYPE_F64, 4, shape), k64 = rda_tensor_contiguous(s->k64, RDA_DTYPE_F64, 4, shape),
               v64 = rda_tensor_contiguous(s->v64, RDA_DTYPE_F64, 4, shape), to64 = rda_tensor_contiguous(o64, RDA_DTYPE_F64, 4, shape),
               tg64 = rda_tensor_contiguous(g64, RDA_DTYPE_F64, 4, shape), r[3], nt[3];
    for (int i = 0; i < 3; i++) {
        r[i] = rda_tensor_contiguous(ref->grad[i], RDA_DTYPE_F64, 4, shape);
        nt[i] = rda_tensor_contiguous(naive[i], o->dtype, 4, shape);
    }
    if (ref->bwd_sampled) {
        st = rda_reference_backward_rows(s->ref_ctx, cfg, &s->tq, &s->tk, &s->tv, &to, &tl, &tg, ref->rows, ref->m,
                                         ref->grad[0], ref->grad[1], ref->grad[2]);
        if (st) goto done;
        const int64_t e = o->B * ref->m * o->H * o->D;
        for (int i = 0; i < 3; i++) {
            ref->naive_grad[i] = 0; /* no naive backward at sampled rows: the bound is the absolute term alone */
            ref->grad_max[i] = 0;
            for (int64_t j = 0; j < e; j++)
                if (fabs(ref->grad[i][j]) > ref->grad_max[i]) ref->grad_max[i] = fabs(ref->grad[i][j]);
        }
        ref->bwd_ready = true;
        goto done;
    }
    rda_to_f64(ref->o1, o->dtype, n, o64);
    rda_to_f64(ref->dout, o->dtype, n, g64);
    if ((st = rda_attention_backward(s->ref_ctx, cfg, &q64, &k64, &v64, &to64, &tl, &tg64, &r[0], &r[1], &r[2])))
        goto done;
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_REFERENCE_SAME_TYPE;
    cp.num_threads = o->threads;
    rda_context *c;
    if ((st = rda_context_create(&cp, &c))) goto done;
    st = rda_attention_backward(c, cfg, &s->tq, &s->tk, &s->tv, &to, &tl, &tg, &nt[0], &nt[1], &nt[2]);
    rda_context_destroy(c);
    if (st) goto done;
    for (int i = 0; i < 3; i++) {
        ref->naive_grad[i] = rda_compare(naive[i], o->dtype, ref->grad[i], n).max_abs;
        ref->grad_max[i] = 0;
        for (int64_t j = 0; j < n; j++)
            if (fabs(ref->grad[i][j]) > ref->grad_max[i]) ref->grad_max[i] = fabs(ref->grad[i][j]);
    }
    ref->bwd_ready = true;
done:
    free(o64), free(g64);
    for (int i = 0; i < 3; i++) free(naive[i]);
    return st;
}

/* The backward of one row, timed, then a forward (with LSE) and the
 * backward after it, timed; the gradients checked. */
static void run_backward(bench_state *s, bench_row *row, const rda_config *cfg, reference *ref) {
    const bench_options *o = s->o;
    const int32_t P = row->ring;
    const int64_t n = o->B * s->N * o->H * o->D, nl = o->B * o->H * s->N;
    const size_t es = rda_dtype_size(o->dtype), bytes = (size_t)n * es;
    int64_t shape[4] = {o->B, s->N, o->H, o->D}, lshape[3] = {o->B, o->H, s->N};
    void *g[3] = {NULL, NULL, NULL}, *o2 = NULL;
    float *l2 = NULL;
    double *times = calloc((size_t)o->reps, sizeof(double)), *times2 = calloc((size_t)o->reps, sizeof(double));
    rda_ring_stats *stats = calloc((size_t)P, sizeof(*stats));
    rda_status st = RDA_STATUS_SUCCESS;
    if (!ref->bwd_ready && (st = compute_bwd_reference(s, cfg, ref))) {
        row->status = st;
        if (!row->error[0])
            snprintf(row->error, sizeof row->error, "backward reference: %s: %.200s", rda_status_to_string(st),
                     st == RDA_STATUS_UNSUPPORTED ? s->error : rda_context_last_error(s->ref_ctx));
        goto done;
    }
    for (int i = 0; i < 3; i++) g[i] = s->dev ? dev_alloc(bytes) : malloc(bytes);
    o2 = s->dev ? dev_alloc(bytes) : malloc(bytes);
    l2 = s->dev ? dev_alloc(sizeof(float) * (size_t)nl) : malloc(sizeof(float) * (size_t)nl);
    if (!g[0] || !g[1] || !g[2] || !o2 || !l2 || !times || !times2 || !stats) {
        row->status = RDA_STATUS_OUT_OF_MEMORY;
        snprintf(row->error, sizeof row->error, "out of memory for the backward");
        goto done;
    }
    rda_tensor to = rda_tensor_contiguous(s->dev ? ref->d_o1 : ref->o1, o->dtype, 4, shape),
               tl = rda_tensor_contiguous(s->dev ? ref->d_lse1 : ref->lse1, RDA_DTYPE_F32, 3, lshape),
               tg = rda_tensor_contiguous(s->dev ? ref->d_dout : ref->dout, o->dtype, 4, shape),
               to2 = rda_tensor_contiguous(o2, o->dtype, 4, shape), tl2 = rda_tensor_contiguous(l2, RDA_DTYPE_F32, 3, lshape),
               tdg[3];
    for (int i = 0; i < 3; i++) tdg[i] = rda_tensor_contiguous(g[i], o->dtype, 4, shape);
    for (int pass = 0; pass < 2 && !st; pass++) { /* 0: the backward alone; 1: forward, then backward */
        const rda_tensor *bo = pass ? &to2 : &to, *bl = pass ? &tl2 : &tl;
        for (int32_t it = 0; it < o->warmup + o->reps && !st; it++) {
            double t0 = rda_now();
            if (pass) {
                if (row->ring_path)
                    st = rda_ring_forward_simulated(s->ctx, cfg, P, &s->rq, &s->rk, &s->rv, &to2, &tl2, NULL);
                else
                    st = rda_attention_forward(s->ctx, cfg, &s->rq, &s->rk, &s->rv, &to2, &tl2);
            }
            if (!st) {
                if (row->ring_path)
                    st = rda_ring_backward_simulated(s->ctx, cfg, P, &s->rq, &s->rk, &s->rv, bo, bl, &tg, &tdg[0], &tdg[1],
                                                     &tdg[2], stats);
                else
                    st = rda_attention_backward(s->ctx, cfg, &s->rq, &s->rk, &s->rv, bo, bl, &tg, &tdg[0], &tdg[1], &tdg[2]);
            }
            if (!st) st = rda_context_synchronize(s->ctx);
            double t = rda_now() - t0;
            if (it >= o->warmup) (pass ? times2 : times)[it - o->warmup] = t;
            if (!st && !pass && it == 0) { /* memory of the backward alone */
                double mem = 0;
                if (row->ring_path)
                    for (int32_t r = 0; r < P; r++) mem = fmax(mem, (double)stats[r].peak_bytes);
                else
                    mem = (double)rda_context_workspace_bytes(s->ctx) + 9.0 * (double)bytes;
                row->bwd_mem_mb = mem / 1048576.0;
            }
        }
        if (!st && !pass) { /* the gradients of the backward alone (from the reference's inputs) */
            void *host = s->dev ? malloc(bytes) : NULL;
            row->grad_pass = true;
            row->grad_rel_l2 = row->grad_max_abs = 0;
            for (int i = 0; i < 3; i++) {
                const void *x = g[i];
                if (s->dev) {
                    if (!host || dev_download(host, g[i], bytes)) {
                        st = RDA_STATUS_DEVICE_ERROR;
                        break;
                    }
                    x = host;
                }
                rda_error e = ref->bwd_sampled
                                  ? rda_compare_rows(x, o->dtype, ref->grad[i], ref->flat_rows, o->B * ref->m, o->H * o->D)
                                  : rda_compare(x, o->dtype, ref->grad[i], n);
                row->grad_pass &= rda_grad_passes(o->dtype, e, ref->naive_grad[i], ref->grad_max[i]);
                row->grad_rel_l2 = fmax(row->grad_rel_l2, e.rel_l2);
                row->grad_max_abs = fmax(row->grad_max_abs, e.max_abs);
            }
            free(host);
        }
    }
    if (st) {
        row->status = st;
        snprintf(row->error, sizeof row->error, "backward: %s: %.200s", rda_status_to_string(st), rda_context_last_error(s->ctx));
        goto done;
    }
    qsort(times, (size_t)o->reps, sizeof(double), cmp_double);
    qsort(times2, (size_t)o->reps, sizeof(double), cmp_double);
    row->ms_bwd = 1e3 * (o->reps % 2 ? times[o->reps / 2] : 0.5 * (times[o->reps / 2 - 1] + times[o->reps / 2]));
    row->ms_fwdbwd = 1e3 * (o->reps % 2 ? times2[o->reps / 2] : 0.5 * (times2[o->reps / 2 - 1] + times2[o->reps / 2]));
    row->tflops_bwd = 2.5 * 4.0 * (double)o->D * (double)row->pairs / (row->ms_bwd * 1e-3) / 1e12;
    row->tflops_fwdbwd = 3.5 * 4.0 * (double)o->D * (double)row->pairs / (row->ms_fwdbwd * 1e-3) / 1e12;
    row->has_bwd = true;
    row->pass = row->pass && row->grad_pass;
done:
    for (int i = 0; i < 3; i++) s->dev ? dev_free(g[i]) : free(g[i]);
    s->dev ? dev_free(o2) : free(o2);
    s->dev ? dev_free(l2) : free(l2);
    free(times), free(times2), free(stats);
}

static int64_t tensor_bytes4(const bench_options *o, int64_t N) {
    return o->B * N * o->H * o->D * (int64_t)rda_dtype_size(o->dtype);
}

/* Runs one row: warm-up, timed repetitions, then the check. */
static void run_row(bench_state *s, bench_row *row, const rda_config *cfg, reference *ref) {
    const bench_options *o = s->o;
    int32_t P = row->ring;
    rda_ring_stats *stats = calloc((size_t)P, sizeof(*stats));
    double *times = calloc((size_t)(o->reps), sizeof(double));
    if (!stats || !times) {
        row->status = RDA_STATUS_OUT_OF_MEMORY;
        snprintf(row->error, sizeof row->error, "out of memory");
        goto done;
    }
    rda_count_pairs(cfg, o->B, s->N, o->H, &row->pairs);
    size_t obytes = (size_t)tensor_bytes4(o, s->N);
    if (s->dev && dev_memset(s->d_o, 0xFF, obytes)) { /* NaN in every element: one the kernels miss fails the check */
        row->status = RDA_STATUS_DEVICE_ERROR;
        snprintf(row->error, sizeof row->error, "cannot fill the output on the GPU");
        goto done;
    }
    for (int32_t it = 0; it < o->warmup + o->reps; it++) {
        if (!s->dev) memset(s->o_buf, 0, obytes); /* a result never leaks between runs */
        double t0 = rda_now();
        rda_status st;
        if (row->real_gpus)
            st = rda_ring_forward_gpus(s->ctx, cfg, P, s->devices, &s->rq, &s->rk, &s->rv, &s->ro,
                                       NULL, stats);
        else if (row->ring_path)
            st = rda_ring_forward_simulated(s->ctx, cfg, P, &s->rq, &s->rk, &s->rv, &s->ro, NULL,
                                            stats);
        else
            st = rda_attention_forward(s->ctx, cfg, &s->rq, &s->rk, &s->rv, &s->ro, NULL);
        if (st == RDA_STATUS_SUCCESS) st = rda_context_synchronize(s->ctx);
        double t = rda_now() - t0;
        if (st) {
            row->status = st;
            snprintf(row->error, sizeof row->error, "%s: %s", rda_status_to_string(st),
                     rda_context_last_error(s->ctx));
            goto done;
        }
        if (row->ring_path) { /* the slowest rank's own wall time */
            t = 0;
            double mem = 0, sent = 0;
            int64_t pairs = 0;
            for (int32_t r = 0; r < P; r++) {
                if (stats[r].seconds > t) t = stats[r].seconds;
                if ((double)stats[r].peak_bytes > mem) mem = (double)stats[r].peak_bytes;
                if ((double)stats[r].bytes_sent > sent) sent = (double)stats[r].bytes_sent;
                pairs += stats[r].pairs;
            }
            row->mem_mb = mem / 1048576.0;
            row->sent_mb = sent / 1048576.0;
            row->steps = stats[0].steps;
            if (pairs != row->pairs) {
                row->status = RDA_STATUS_INTERNAL;
                snprintf(row->error, sizeof row->error,
                         "ranks computed %lld pairs, the plan counts %lld", (long long)pairs,
                         (long long)row->pairs);
                goto done;
            }
        } else {
            row->mem_mb = (double)(rda_context_workspace_bytes(s->ctx) + 4 * tensor_bytes4(o, s->N)) / 1048576.0;
            row->steps = 1;
        }
        if (it >= o->warmup) times[it - o->warmup] = t;
    }
    qsort(times, (size_t)o->reps, sizeof(double), cmp_double);
    row->ms_min = 1e3 * times[0];
    row->ms_median = 1e3 * (o->reps % 2 ? times[o->reps / 2]
                                         : 0.5 * (times[o->reps / 2 - 1] + times[o->reps / 2]));
    row->tflops = 4.0 * (double)o->D * (double)row->pairs / (row->ms_median * 1e-3) / 1e12;
    row->tokens_per_s = (double)(o->B * s->N) / (row->ms_median * 1e-3);
    /* check */
    if (!ref->ready) {
        rda_status st = compute_reference(s, cfg, ref);
        if (st) {
            row->status = st;
            snprintf(row->error, sizeof row->error, "reference: %s: %s", rda_status_to_string(st),
                     rda_context_last_error(s->ref_ctx));
            goto done;
        }
    }
    if (s->dev) { /* the output back from the GPU: whole, or its sampled rows */
        int bad = 0;
        if (s->dev_inputs) {
            size_t rb = rda_dtype_size(o->dtype) * (size_t)(o->H * o->D);
            for (int64_t j = 0; j < o->B * ref->m && !bad; j++)
                bad = dev_download((char *)s->o_buf + rb * (size_t)ref->flat_rows[j],
                                   (const char *)s->d_o + rb * (size_t)ref->flat_rows[j], rb);
        } else {
            bad = dev_download(s->o_buf, s->d_o, obytes);
        }
        if (bad) {
            row->status = RDA_STATUS_DEVICE_ERROR;
            snprintf(row->error, sizeof row->error, "cannot read the output back from the GPU");
            goto done;
        }
    }
    rda_error e;
    if (ref->sampled)
        e = rda_compare_rows(s->o_buf, o->dtype, ref->out, ref->flat_rows, o->B * ref->m, o->H * o->D);
    else
        e = rda_compare(s->o_buf, o->dtype, ref->out, o->B * s->N * o->H * o->D);
    row->rel_l2 = e.rel_l2;
    row->max_abs = e.max_abs;
    row->naive_max_abs = ref->naive_max_abs;
    row->sampled = ref->sampled;
    row->checked_rows = ref->m;
    row->pass = rda_passes(o->dtype, e, ref->naive_max_abs);
    row->ref_seconds = o->time_reference && !ref->sampled ? ref->seconds : 0;
    row->status = RDA_STATUS_SUCCESS;
    if (o->backward) run_backward(s, row, cfg, ref);
done:
    free(stats);
    free(times);
}

static int mkdir_for(const char *path) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0755);
            *p = '/';
        }
    if (mkdir(dir, 0755) && errno != EEXIST) return -1;
    return 0;
}

int bench_main(int argc, char **argv) {
    bench_report rep;
    memset(&rep, 0, sizeof rep);
    bench_options *o = &rep.opt;
    bench_defaults(o);
    int pr = parse_args(argc, argv, o);
    if (pr) return pr > 0 ? 0 : 2;

    bool use_gpu = o->backend == RDA_BACKEND_CUDA || (o->backend < 0 && dev_available());
    if (use_gpu && !dev_available()) {
        fprintf(stderr, "rda bench: --backend cuda, but no CUDA device (or a build without CUDA)\n");
        return 2;
    }
    if (use_gpu && !o->dtype_set) o->dtype = RDA_DTYPE_F16; /* as the seed report */
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = o->threads;
    cp.backend = use_gpu ? RDA_BACKEND_CUDA : RDA_BACKEND_CPU;
    rda_context *ctx = NULL, *ref_ctx = NULL;
    rda_status cst = rda_context_create(&cp, &ctx);
    if (cst) {
        fprintf(stderr, "rda bench: cannot create a %s context: %s\n", use_gpu ? "CUDA" : "CPU",
                rda_status_to_string(cst));
        return 1;
    }
    cp.backend = RDA_BACKEND_REFERENCE;
    cp.num_threads = o->threads;
    rda_context_create(&cp, &ref_ctx);
    rep.threads = rda_context_num_threads(ctx);
    device_name(rep.device, sizeof rep.device, rep.threads);
    if (use_gpu) {
        char gname[64];
        dev_name(gname, sizeof gname);
        snprintf(rep.device, sizeof rep.device, "cuda (%.63s); fp64 reference on the CPU", gname);
    }
    time_t now = time(NULL);
    strftime(rep.generated, sizeof rep.generated, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    int32_t cap = o->n_seq * (8 + 2 * BENCH_MAX_LIST);
    rep.rows = calloc((size_t)cap, sizeof(bench_row));
    int exit_code = 0;
    for (int32_t si = 0; si < o->n_seq; si++) {
        bench_state s;
        memset(&s, 0, sizeof s);
        s.o = o;
        s.ctx = ctx;
        s.ref_ctx = ref_ctx;
        s.N = o->seq_lens[si];
        if (s.N < 1) {
            fprintf(stderr, "rda bench: sequence length must be >= 1\n");
            return 2;
        }
        rda_config dense = RDA_CONFIG_INIT, dil = RDA_CONFIG_INIT;
        dense.causal = dil.causal = o->causal;
        dense.layout = dil.layout = o->layout;
        dil.mode = o->dilated_mode;
        if (o->n_pat) {
            dil.num_patterns = o->n_pat;
            memcpy(dil.patterns, o->patterns, sizeof(rda_pattern) * (size_t)o->n_pat);
        } else { /* the seed's rule */
            dil.num_patterns = 2;
            int64_t w0 = s.N / 4 < 1024 ? s.N / 4 : 1024, w1 = s.N / 2 < 2048 ? s.N / 2 : 2048;
            dil.patterns[0] = (rda_pattern){w0 > 0 ? w0 : 1, 1};
            dil.patterns[1] = (rda_pattern){w1 > 1 ? w1 : 2, 2};
        }
        int32_t rings[BENCH_MAX_LIST], nr = 0;
        if (o->n_ring) {
            for (int32_t k = 0; k < o->n_ring; k++) rings[nr++] = o->ring_sizes[k];
        } else {
            rings[nr++] = 1;
            rings[nr++] = 2;
            if (s.N >= 4096) rings[nr++] = 4;
        }
        reference ref_dense = {0}, ref_dil = {0};
        /* the rows, in the seed report's order */
        bench_row todo[8 + 2 * BENCH_MAX_LIST];
        int32_t nt = 0;
        memset(todo, 0, sizeof todo);
#define ADD_ROW(name_fmt, name_arg, P, ring_, dil_)                                      \
    do {                                                                                 \
        bench_row *r_ = &todo[nt];                                                       \
        snprintf(r_->variant, sizeof r_->variant, name_fmt, name_arg);                   \
        if (!wanted(o, r_->variant)) break;                                              \
        r_->N = s.N;                                                                     \
        r_->ring = (P);                                                                  \
        r_->ring_path = (ring_);                                                         \
        r_->dilated = (dil_);                                                            \
        r_->mode = (dil_) ? dil.mode : RDA_MODE_DENSE;                                   \
        if (dil_) {                                                                      \
            r_->n_pat = dil.num_patterns;                                                \
            memcpy(r_->patterns, dil.patterns, sizeof(rda_pattern) * (size_t)r_->n_pat); \
        }                                                                                \
        nt++;                                                                            \
    } while (0)
        ADD_ROW("%s", "StandardRingAttention", 1, true, false);
        for (int32_t k = 0; k < nr; k++) ADD_ROW("RingAttention_ring%d", rings[k], rings[k], true, false);
        ADD_ROW("%s", "ImprovedDilatedAttention", 1, false, true);
        ADD_ROW("%s", "RingDilatedV2_single", 1, true, true);
        for (int32_t k = 0; k < nr; k++)
            if (rings[k] > 1) ADD_ROW("RingDilatedV2_ring%d", rings[k], rings[k], true, true);
        int64_t n = o->B * s.N * o->H * o->D;
        size_t es = rda_dtype_size(o->dtype);
        /* inputs on the GPU when no row needs the whole reference (long
         * sequences): nothing of size N made or converted on the host; not
         * with --backward, whose check needs Q, O and dO on the host */
        s.dev_inputs = use_gpu && nt > 0 && !o->backward;
        for (int32_t t = 0; t < nt && s.dev_inputs; t++) {
            int64_t pairs = 0;
            rda_count_pairs(todo[t].dilated ? &dil : &dense, o->B, s.N, o->H, &pairs);
            s.dev_inputs = (double)pairs * (double)o->D > (double)o->full_ref_limit && o->sample_rows < s.N;
        }
        if (s.dev_inputs) {
            s.q = calloc((size_t)n, es), s.o_buf = calloc((size_t)n, es); /* sampled rows only */
            s.k = malloc(n * es), s.v = malloc(n * es);
        } else {
            s.q = malloc(n * es), s.k = malloc(n * es), s.v = malloc(n * es), s.o_buf = malloc(n * es);
            s.q64 = malloc(n * 8), s.k64 = malloc(n * 8), s.v64 = malloc(n * 8);
        }
        if (!s.q || !s.k || !s.v || !s.o_buf || (!s.dev_inputs && (!s.q64 || !s.k64 || !s.v64))) {
            fprintf(stderr, "rda bench: out of memory at N = %lld\n", (long long)s.N);
            return 1;
        }
        int64_t shape[4] = {o->B, s.N, o->H, o->D};
        s.tq = rda_tensor_contiguous(s.q, o->dtype, 4, shape);
        s.tk = rda_tensor_contiguous(s.k, o->dtype, 4, shape);
        s.tv = rda_tensor_contiguous(s.v, o->dtype, 4, shape);
        s.to = rda_tensor_contiguous(s.o_buf, o->dtype, 4, shape);
        s.rq = s.tq, s.rk = s.tk, s.rv = s.tv, s.ro = s.to;
        if (!s.dev_inputs) {
            rda_rng rng;
            rda_rng_seed(&rng, o->seed + (uint64_t)s.N);
            rda_fill_uniform(s.q, o->dtype, n, &rng, -1, 1);
            rda_fill_uniform(s.k, o->dtype, n, &rng, -1, 1);
            rda_fill_uniform(s.v, o->dtype, n, &rng, -1, 1);
            rda_to_f64(s.q, o->dtype, n, s.q64);
            rda_to_f64(s.k, o->dtype, n, s.k64);
            rda_to_f64(s.v, o->dtype, n, s.v64);
        }
        if (use_gpu) {
            size_t bytes = (size_t)n * es;
            s.dev = true;
            s.dq = dev_alloc(bytes), s.dk = dev_alloc(bytes), s.dv = dev_alloc(bytes), s.d_o = dev_alloc(bytes);
            int bad = !s.dq || !s.dk || !s.dv || !s.d_o;
            if (!bad && s.dev_inputs) {
                const uint64_t seed = o->seed + (uint64_t)s.N;
                const int bf = o->dtype == RDA_DTYPE_BF16;
                bad = dev_fill_uniform(s.dq, (int)es, bf, n, seed * 3 + 0, -1, 1) ||
                      dev_fill_uniform(s.dk, (int)es, bf, n, seed * 3 + 1, -1, 1) ||
                      dev_fill_uniform(s.dv, (int)es, bf, n, seed * 3 + 2, -1, 1) ||
                      dev_download(s.k, s.dk, bytes) || dev_download(s.v, s.dv, bytes);
            } else if (!bad) {
                bad = dev_upload(s.dq, s.q, bytes) || dev_upload(s.dk, s.k, bytes) || dev_upload(s.dv, s.v, bytes);
            }
            if (bad) {
                fprintf(stderr, "rda bench: out of GPU memory at N = %lld\n", (long long)s.N);
                return 1;
            }
            s.rq = rda_tensor_contiguous(s.dq, o->dtype, 4, shape);
            s.rk = rda_tensor_contiguous(s.dk, o->dtype, 4, shape);
            s.rv = rda_tensor_contiguous(s.dv, o->dtype, 4, shape);
            s.ro = rda_tensor_contiguous(s.d_o, o->dtype, 4, shape);
            s.ngpus = dev_count();
            for (int32_t g = 0; g < (int32_t)(sizeof s.devices / sizeof *s.devices); g++) s.devices[g] = g;
        }

        for (int32_t t = 0; t < nt; t++) {
            bench_row *row = &todo[t];
            /* with --real-gpus, rings of P > 1 run on P real GPUs when there are that many */
            row->real_gpus = o->real_gpus && s.dev && row->ring_path && row->ring > 1 && row->ring <= s.ngpus;
            if (!o->quiet)
                fprintf(stderr, "[N=%lld %d/%d] %-26s ", (long long)s.N, t + 1, nt, row->variant);
            if (row->ring > s.N || row->ring < 1) {
                row->status = RDA_STATUS_INVALID_ARGUMENT;
                snprintf(row->error, sizeof row->error, "ring size %d does not fit N = %lld",
                         row->ring, (long long)s.N);
            } else {
                run_row(&s, row, row->dilated ? &dil : &dense, row->dilated ? &ref_dil : &ref_dense);
            }
            if (!o->quiet) {
                if (row->status)
                    fprintf(stderr, "FAILED: %s\n", row->error);
                else
                    fprintf(stderr, "%9.2f ms  %6.3f TFLOP/s  rel_l2 %.2e  %s\n", row->ms_median,
                            row->tflops, row->rel_l2, row->pass ? "pass" : "FAIL");
            }
            if (row->status || !row->pass) exit_code = 1;
            rep.rows[rep.n_rows++] = *row;
        }
        free_reference(&ref_dense);
        free_reference(&ref_dil);
        free(s.q), free(s.k), free(s.v), free(s.o_buf), free(s.q64), free(s.k64), free(s.v64);
        dev_free(s.dq), dev_free(s.dk), dev_free(s.dv), dev_free(s.d_o);
    }
    rda_context_destroy(ctx);
    rda_context_destroy(ref_ctx);
    if (mkdir_for(o->out_md) || mkdir_for(o->out_json) || report_write_json(&rep, o->out_json) ||
        report_write_markdown(&rep, o->out_md)) {
        fprintf(stderr, "rda bench: cannot write the report (%s, %s)\n", o->out_md, o->out_json);
        free(rep.rows);
        return 1;
    }
    int passed = 0;
    for (int32_t i = 0; i < rep.n_rows; i++) passed += rep.rows[i].status == 0 && rep.rows[i].pass;
    printf("%d of %d rows ran and passed; JSON written to %s\n", passed, rep.n_rows, o->out_json);
    printf("Report written to %s\n", o->out_md);
    free(rep.rows);
    return exit_code;
}
