/* libFuzzer target: configuration and tensor validation, and the forward it
 * lets through, on the CPU fast path. The bytes choose the config (mode,
 * causal, scale, layout, patterns up to INT64_MAX, struct size and version),
 * the shapes (small), the strides (any, zero included) and the ring size;
 * buffers are sized to what the views reach when that is small, else the
 * call must be refused. A call returns a status and never writes outside
 * the output view (guard bytes), never crashes, never trips a sanitizer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rda.h"

typedef struct {
    const unsigned char *p;
    size_t left;
} reader;

static uint64_t take(reader *r, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v = v << 8 | (r->left ? *r->p : 0);
        if (r->left) r->p++, r->left--;
    }
    return v;
}

static int64_t pattern_value(reader *r) {
    static const int64_t edges[] = {1, 2, 3, 7, 8, 64, 1000, INT64_MAX, INT64_MAX - 1, 4611686018427387904LL,
                                    100000000, -1, 0, INT64_MIN};
    uint64_t v = take(r, 1);
    return v < 14 ? edges[v] : (int64_t)(v % 40);
}

/* elements a view reaches (largest offset + 1), or -1 if over the limit */
static int64_t reach(const int64_t *shape, const int64_t *strides, int nd, int64_t limit) {
    int64_t m = 0;
    for (int i = 0; i < nd; i++) {
        if (shape[i] <= 0) return 0;
        if (strides[i] < 0 || strides[i] > limit || shape[i] > limit) return -1;
        m += (shape[i] - 1) * strides[i];
        if (m > limit) return -1;
    }
    return m + 1;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static rda_context *ctx;
    if (!ctx) {
        rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
        cp.num_threads = 1;
        if (rda_context_create(&cp, &ctx)) return 0;
    }
    reader r = {data, size};
    rda_config cfg = RDA_CONFIG_INIT;
    uint64_t flags = take(&r, 1);
    if (flags & 1) cfg.struct_size = (uint32_t)take(&r, 1) * 4;
    if (flags & 2) cfg.version = (uint32_t)take(&r, 1);
    cfg.mode = (rda_mode)(take(&r, 1) % 4);
    cfg.causal = (int32_t)(take(&r, 1) % 3);
    cfg.layout = (rda_layout)(take(&r, 1) % 3);
    if (flags & 4) cfg.scale = (double)(int8_t)take(&r, 1) / 8.0;
    cfg.num_patterns = (int32_t)(take(&r, 1) % (RDA_MAX_PATTERNS + 2));
    for (int i = 0; i < RDA_MAX_PATTERNS; i++) cfg.patterns[i] = (rda_pattern){pattern_value(&r), pattern_value(&r)};
    int64_t B = 1 + take(&r, 1) % 2, N = 1 + take(&r, 1) % 48, H = 1 + take(&r, 1) % 6, Hkv = 1 + take(&r, 1) % 6,
            D = 1 + take(&r, 1) % 24;
    rda_dtype dt = (rda_dtype)(take(&r, 1) % 5);
    int P = 1 + (int)(take(&r, 1) % 5);
    int64_t shape_q[4] = {B, N, H, D}, shape_k[4] = {B, N, Hkv, D}, shape_l[3] = {B, H, N};
    if (flags & 8) shape_k[1] = N + (int64_t)(take(&r, 1) % 3) - 1; /* mismatches */
    rda_tensor t[5];
    void *mem[5] = {0};
    size_t bytes[5] = {0};
    const int64_t limit = 1 << 16;
    int ok = 1, neg = 0;
    for (int i = 0; i < 5; i++) {
        int nd = i == 4 ? 3 : 4;
        const int64_t *sh = i == 4 ? shape_l : i == 1 || i == 2 ? shape_k : shape_q;
        rda_dtype tdt = i == 4 ? RDA_DTYPE_F32 : dt;
        t[i] = rda_tensor_contiguous(NULL, tdt, nd, sh);
        if (flags & 16)
            for (int d = 0; d < nd; d++)
                if (take(&r, 1) & 1) {
                    t[i].strides[d] = (int64_t)take(&r, 1) - 8; /* any, negative too */
                    neg |= t[i].strides[d] < 0 && (i < 4 || (flags & 32)); /* LSE only counts when passed */
                }
        int64_t n = reach(t[i].shape, t[i].strides, nd, limit);
        size_t es = rda_dtype_size(tdt) ? rda_dtype_size(tdt) : 4;
        if (n < 0 && (i < 4 || (flags & 32))) ok = 0; /* an LSE not passed does not matter */
        bytes[i] = (size_t)(n > 0 ? n : 1) * es;
        mem[i] = malloc(bytes[i] + 128);
        memset(mem[i], 0x3C, bytes[i] + 128); /* finite values of every type */
        t[i].data = (char *)mem[i] + 64;
    }
    if (neg) { /* a negative stride must be refused before anything is read */
        rda_status st = rda_attention_forward(ctx, &cfg, &t[0], &t[1], &t[2], &t[3], (flags & 32) ? &t[4] : NULL);
        if (st == RDA_STATUS_SUCCESS) abort();
    } else if (ok) { /* a view that reaches too far is left out: its memory is not there */
        rda_status st = P > 1 ? rda_ring_forward_simulated(ctx, &cfg, P, &t[0], &t[1], &t[2], &t[3],
                                                           (flags & 32) ? &t[4] : NULL, NULL)
                              : rda_attention_forward(ctx, &cfg, &t[0], &t[1], &t[2], &t[3], (flags & 32) ? &t[4] : NULL);
        (void)st;
        for (int i = 3; i < 5; i++)
            for (int g = 0; g < 64; g++)
                if (((unsigned char *)mem[i])[g] != 0x3C || ((unsigned char *)mem[i])[64 + bytes[i] + g] != 0x3C)
                    abort(); /* written outside the view */
        if (strlen(rda_context_last_error(ctx)) >= 512) abort();
    }
    for (int i = 0; i < 5; i++) free(mem[i]);
    return 0;
}
