/* The benchmark (the tool's main job) and its report writers. */
#ifndef RDA_BENCH_H
#define RDA_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "rda.h"

#define BENCH_MAX_LIST 16

typedef struct {
    rda_dtype dtype;
    int dtype_set;  /* given on the command line */
    int backend;    /* -1: auto (the GPU when one exists), else an rda_backend */
    int64_t B, H, D;
    int64_t seq_lens[BENCH_MAX_LIST];
    int32_t n_seq;
    /* dilated patterns; n_pat == 0 means the seed rule per N:
     * segments [min(N/4, 1024), min(N/2, 2048)], dilations [1, 2] */
    rda_pattern patterns[RDA_MAX_PATTERNS];
    int32_t n_pat;
    rda_mode dilated_mode; /* groups (the seed's scheme) or longnet */
    int causal;
    rda_layout layout;
    int32_t ring_sizes[BENCH_MAX_LIST]; /* n_ring == 0: the seed rule {1, 2} (+4 when N >= 4096) */
    int32_t n_ring;
    int32_t reps, warmup, threads;
    int64_t sample_rows;    /* rows per (b, h) checked when sampling */
    int64_t full_ref_limit; /* full fp64 reference up to this many pair x D products */
    char variants[256];     /* comma-separated filter; "" = all */
    const char *out_md, *out_json;
    uint64_t seed;
    int quiet;
    int time_reference; /* also time the full fp64 reference (for the speed-up figure) */
    int real_gpus;      /* rings on real GPUs (NCCL) when there are enough */
    int backward;       /* also time and check the backward, and forward+backward */
} bench_options;

void bench_defaults(bench_options *o);

typedef struct {
    char variant[64];
    int64_t N;
    int32_t ring;        /* P */
    bool ring_path;      /* ran through the ring scheduler entry */
    bool real_gpus;      /* ranks on P real GPUs (NCCL), not simulated */
    bool dilated;
    rda_mode mode;
    int32_t n_pat;
    rda_pattern patterns[RDA_MAX_PATTERNS];
    rda_status status;
    char error[256];
    double ms_median, ms_min;
    double mem_mb;       /* peak per rank, max over ranks */
    double sent_mb;      /* bytes sent per rank, max over ranks */
    int32_t steps;
    int64_t pairs;
    double tflops, tokens_per_s;
    double rel_l2, max_abs, naive_max_abs;
    bool sampled;
    int64_t checked_rows;
    bool pass;
    double ref_seconds;  /* full fp64 reference time, when timed (0 otherwise) */
    /* --backward: the backward alone (from the one-rank forward's O and LSE)
     * and a forward (with LSE) followed by the backward; TFLOP/s by SPEC.md's
     * convention (2.5x and 3.5x the forward's FLOPs); the gradients' worst
     * figures against the fp64 reference; memory per rank of the backward */
    bool has_bwd;
    double ms_bwd, ms_fwdbwd, tflops_bwd, tflops_fwdbwd, bwd_mem_mb;
    double grad_rel_l2, grad_max_abs; /* worst of dq, dk, dv (rel_l2, and max_abs over its bound) */
    bool grad_pass;
} bench_row;

typedef struct {
    bench_options opt;
    char device[256];
    char generated[64];
    int32_t threads;
    bench_row *rows;
    int32_t n_rows;
} bench_report;

int bench_main(int argc, char **argv);
int report_write_markdown(const bench_report *r, const char *path);
int report_write_json(const bench_report *r, const char *path);

#endif
