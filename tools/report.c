/* The benchmark report: Markdown in the seed report's layout (plus a
 * summary table) and JSON with every figure. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const char *mode_name(rda_mode m) {
    return m == RDA_MODE_GROUPS ? "groups" : m == RDA_MODE_LONGNET ? "longnet" : "dense";
}

/* 1234567 -> "1,234,567" */
static const char *commas(int64_t x, char *buf, size_t n) {
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", (long long)x);
    size_t len = strlen(raw), o = 0;
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        buf[o++] = raw[i];
        if ((len - i - 1) % 3 == 0 && i + 1 < len) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
}

static void pattern_lists(const bench_row *r, char *segs, char *dils, size_t n) {
    size_t a = 0, b = 0;
    a += (size_t)snprintf(segs, n, "[");
    b += (size_t)snprintf(dils, n, "[");
    for (int32_t i = 0; i < r->n_pat; i++) {
        a += (size_t)snprintf(segs + a, n - a, "%s%lld", i ? ", " : "", (long long)r->patterns[i].segment);
        b += (size_t)snprintf(dils + b, n - b, "%s%lld", i ? ", " : "", (long long)r->patterns[i].dilation);
    }
    snprintf(segs + a, n - a, "]");
    snprintf(dils + b, n - b, "]");
}

int report_write_markdown(const bench_report *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const bench_options *o = &r->opt;
    char buf[64], segs[256], dils[256];
    fprintf(f, "# Ring Attention with Dilated Patterns Benchmark\n");
    fprintf(f, "Generated: %s\n\n", r->generated);
    fprintf(f, "## Configuration\n");
    fprintf(f, "- Device: %s\n", r->device);
    fprintf(f, "- Data type: %s\n", rda_dtype_name(o->dtype));
    fprintf(f, "- Batch size: %lld\n", (long long)o->B);
    fprintf(f, "- Heads: %lld\n", (long long)o->H);
    fprintf(f, "- Head dim: %lld\n", (long long)o->D);
    fprintf(f, "- Sequence lengths: [");
    for (int32_t i = 0; i < o->n_seq; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)o->seq_lens[i]);
    fprintf(f, "]\n");
    fprintf(f, "- Dilated mode: %s; causal: %s; ring layout: %s\n", mode_name(o->dilated_mode),
            o->causal ? "yes" : "no", o->layout == RDA_LAYOUT_ZIGZAG ? "zig-zag" : "contiguous");
    int real = 0;
    for (int32_t i = 0; i < r->n_rows; i++) real |= r->rows[i].real_gpus;
    fprintf(f, "- Ranks: %s\n",
            real ? "rings of P > 1 on P real GPUs of this machine (NCCL between them); a ring larger than "
                   "the GPU count, and P = 1, through the ring scheduler in one process"
                 : "simulated (P virtual ranks in one process, one thread each, through the ring "
                   "scheduler and the in-process communicator)");
    fprintf(f, "- Timing: median of %d runs after %d warm-up runs; a ring's time is its slowest rank's\n",
            o->reps, o->warmup);
    fprintf(f, "- Check: against the naive fp64 reference on the same inputs (full, or %lld sampled "
               "query rows per (batch, head) where marked); SPEC.md tolerances\n\n",
            (long long)o->sample_rows);

    fprintf(f, "## Summary\n\n");
    fprintf(f, "| Variant | N | Ring | Time (ms) | TFLOP/s | Tokens/s | Memory/rank (MB) | "
               "Sent/rank (MB) | rel_l2 | max_abs | Correctness |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int32_t i = 0; i < r->n_rows; i++) {
        const bench_row *x = &r->rows[i];
        if (x->status) {
            fprintf(f, "| %s | %lld | %d | failed | | | | | | | 0.000 |\n", x->variant, (long long)x->N, x->ring);
            continue;
        }
        fprintf(f, "| %s | %lld | %d | %.3f | %.4f | %.0f | %.1f | %.2f | %.2e | %.2e | %.3f%s |\n",
                x->variant, (long long)x->N, x->ring, x->ms_median, x->tflops, x->tokens_per_s,
                x->mem_mb, x->sent_mb, x->rel_l2, x->max_abs, x->pass ? 1.0 : 0.0,
                x->sampled ? " (sampled)" : "");
    }
    int bwd = 0;
    for (int32_t i = 0; i < r->n_rows; i++) bwd |= r->rows[i].has_bwd;
    if (bwd) {
        fprintf(f, "\n## Backward\n\n"
                   "The backward reads the one-rank forward's O and LSE and a random dO; forward+backward is a "
                   "forward (with LSE) followed by the backward. TFLOP/s: 2.5x and 3.5x the forward's FLOPs "
                   "(SPEC.md). Gradients against the fp64 reference backward on the same inputs (worst of dQ, dK, "
                   "dV).\n\n");
        fprintf(f, "| Variant | N | Ring | Backward (ms) | TFLOP/s | Forward+backward (ms) | TFLOP/s | "
                   "Memory/rank (MB) | grad rel_l2 | grad max_abs | Correctness |\n");
        fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int32_t i = 0; i < r->n_rows; i++) {
            const bench_row *x = &r->rows[i];
            if (!x->has_bwd) {
                fprintf(f, "| %s | %lld | %d | failed | | | | | | | 0.000 |\n", x->variant, (long long)x->N, x->ring);
                continue;
            }
            fprintf(f, "| %s | %lld | %d | %.3f | %.4f | %.3f | %.4f | %.1f | %.2e | %.2e | %.3f%s |\n", x->variant,
                    (long long)x->N, x->ring, x->ms_bwd, x->tflops_bwd, x->ms_fwdbwd, x->tflops_fwdbwd, x->bwd_mem_mb,
                    x->grad_rel_l2, x->grad_max_abs, x->grad_pass ? 1.0 : 0.0,
                    x->sampled ? " (sampled: dQ at the query rows, dK and dV at the same key rows)" : "");
        }
    }
    fprintf(f, "\n## Results\n\n");
    for (int32_t i = 0; i < r->n_rows; i++) {
        const bench_row *x = &r->rows[i];
        fprintf(f, "### %s%s\n", x->variant, x->status ? " (FAILED)" : "");
        fprintf(f, "- Sequence length: %s\n", commas(x->N, buf, sizeof buf));
        if (x->status) {
            fprintf(f, "- Error: %s\n", x->error);
            fprintf(f, "- Correctness: 0.000\n- Ring size: %d\n\n", x->ring);
            continue;
        }
        fprintf(f, "- Time: %.3fms (min %.3fms)\n", x->ms_median, x->ms_min);
        fprintf(f, "- Memory: %.1fMB per rank\n", x->mem_mb);
        fprintf(f, "- Throughput: %.0f tokens/sec\n", x->tokens_per_s);
        fprintf(f, "- Compute: %.4f TFLOP/s (%s exact pairs, 4*D FLOPs each)\n", x->tflops,
                commas(x->pairs, buf, sizeof buf));
        fprintf(f, "- Correctness: %.3f (rel_l2 %.3e, max_abs %.3e%s)\n", x->pass ? 1.0 : 0.0,
                x->rel_l2, x->max_abs, x->sampled ? ", sampled rows" : "");
        if (x->ref_seconds > 0)
            fprintf(f, "- fp64 reference: %.1f ms (%.1fx slower)\n", 1e3 * x->ref_seconds,
                    1e3 * x->ref_seconds / x->ms_median);
        if (x->has_bwd)
            fprintf(f, "- Backward: %.3fms (%.4f TFLOP/s); forward+backward %.3fms (%.4f TFLOP/s); %.1fMB per rank; "
                       "gradients %.3f (rel_l2 %.3e, max_abs %.3e)\n",
                    x->ms_bwd, x->tflops_bwd, x->ms_fwdbwd, x->tflops_fwdbwd, x->bwd_mem_mb, x->grad_pass ? 1.0 : 0.0,
                    x->grad_rel_l2, x->grad_max_abs);
        fprintf(f, "- Ring size: %d%s\n", x->ring,
                !x->ring_path ? " (single-rank entry point)"
                              : x->real_gpus ? " (real GPUs, NCCL)" : x->ring > 1 ? " (simulated ranks)" : "");
        fprintf(f, "- Ring steps: %d; bytes sent per rank: %.0f\n", x->steps, x->sent_mb * 1048576.0);
        if (x->dilated) {
            pattern_lists(x, segs, dils, sizeof segs);
            fprintf(f, "- Mode: %s\n", mode_name(x->mode));
            fprintf(f, "- Segment lengths: %s\n", segs);
            fprintf(f, "- Dilation rates: %s\n", dils);
        }
        fprintf(f, "\n");
    }
    return fclose(f) ? -1 : 0;
}

static void json_num(FILE *f, const char *key, double v, int last) {
    if (isfinite(v))
        fprintf(f, "\"%s\": %.9g%s", key, v, last ? "" : ", ");
    else
        fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

static void json_str(FILE *f, const char *key, const char *s, int last) {
    fprintf(f, "\"%s\": \"", key);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s < 0x20) {
            fprintf(f, "\\u%04x", *s);
            continue;
        }
        fputc(*s, f);
    }
    fprintf(f, "\"%s", last ? "" : ", ");
}

int report_write_json(const bench_report *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const bench_options *o = &r->opt;
    fprintf(f, "{\n  ");
    json_str(f, "generated", r->generated, 0);
    json_str(f, "device", r->device, 0);
    json_str(f, "library_version", rda_version_string(), 0);
    fprintf(f, "\n  \"config\": {");
    json_str(f, "dtype", rda_dtype_name(o->dtype), 0);
    json_num(f, "batch", (double)o->B, 0);
    json_num(f, "heads", (double)o->H, 0);
    json_num(f, "head_dim", (double)o->D, 0);
    json_str(f, "dilated_mode", mode_name(o->dilated_mode), 0);
    fprintf(f, "\"causal\": %s, ", o->causal ? "true" : "false");
    json_str(f, "layout", o->layout == RDA_LAYOUT_ZIGZAG ? "zigzag" : "contiguous", 0);
    json_num(f, "reps", o->reps, 0);
    json_num(f, "warmup", o->warmup, 0);
    json_num(f, "threads", r->threads, 1);
    fprintf(f, "},\n  \"rows\": [\n");
    for (int32_t i = 0; i < r->n_rows; i++) {
        const bench_row *x = &r->rows[i];
        fprintf(f, "    {");
        json_str(f, "variant", x->variant, 0);
        json_num(f, "seq_len", (double)x->N, 0);
        json_num(f, "ring_size", x->ring, 0);
        json_str(f, "ranks", x->real_gpus ? "gpus" : x->ring > 1 ? "simulated" : "one", 0);
        json_str(f, "mode", mode_name(x->mode), 0);
        fprintf(f, "\"ok\": %s, ", x->status ? "false" : "true");
        if (x->status) {
            json_str(f, "error", x->error, 0);
            json_num(f, "correctness", 0.0, 1);
            fprintf(f, "}%s\n", i + 1 < r->n_rows ? "," : "");
            continue;
        }
        if (x->dilated) {
            fprintf(f, "\"segments\": [");
            for (int32_t k = 0; k < x->n_pat; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)x->patterns[k].segment);
            fprintf(f, "], \"dilations\": [");
            for (int32_t k = 0; k < x->n_pat; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)x->patterns[k].dilation);
            fprintf(f, "], ");
        }
        json_num(f, "time_ms", x->ms_median, 0);
        json_num(f, "time_ms_min", x->ms_min, 0);
        json_num(f, "memory_mb_per_rank", x->mem_mb, 0);
        json_num(f, "bytes_sent_per_rank", x->sent_mb * 1048576.0, 0);
        json_num(f, "ring_steps", x->steps, 0);
        json_num(f, "tokens_per_s", x->tokens_per_s, 0);
        json_num(f, "pairs", (double)x->pairs, 0);
        json_num(f, "tflops", x->tflops, 0);
        json_num(f, "rel_l2", x->rel_l2, 0);
        json_num(f, "max_abs", x->max_abs, 0);
        json_num(f, "naive_same_type_max_abs", x->naive_max_abs, 0);
        fprintf(f, "\"sampled\": %s, ", x->sampled ? "true" : "false");
        json_num(f, "checked_rows_per_slice", (double)x->checked_rows, 0);
        if (x->ref_seconds > 0) json_num(f, "reference_ms", 1e3 * x->ref_seconds, 0);
        if (x->has_bwd) {
            json_num(f, "backward_ms", x->ms_bwd, 0);
            json_num(f, "backward_tflops", x->tflops_bwd, 0);
            json_num(f, "fwd_bwd_ms", x->ms_fwdbwd, 0);
            json_num(f, "fwd_bwd_tflops", x->tflops_fwdbwd, 0);
            json_num(f, "backward_memory_mb_per_rank", x->bwd_mem_mb, 0);
            json_num(f, "grad_rel_l2", x->grad_rel_l2, 0);
            json_num(f, "grad_max_abs", x->grad_max_abs, 0);
            json_num(f, "grad_correctness", x->grad_pass ? 1.0 : 0.0, 0);
        }
        json_num(f, "correctness", x->pass ? 1.0 : 0.0, 1);
        fprintf(f, "}%s\n", i + 1 < r->n_rows ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) ? -1 : 0;
}
