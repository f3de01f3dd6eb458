/* Every invalid input gets its documented status and a message, and the
 * outputs stay untouched (payload and guard bytes). */
#include <math.h>
#include <stdint.h>

#include "harness.h"

#define FILL 0x3C

static rda_context *ctx;
static float *q, *k, *v;
static guarded o, lse;
static const int64_t B = 1, N = 16, H = 4, D = 8;

typedef struct {
    rda_config cfg;
    rda_tensor q, k, v, o, lse;
    int use_lse;
} call;

static call base(void) {
    call c;
    rda_config cfg = RDA_CONFIG_INIT;
    c.cfg = cfg;
    int64_t s[4] = {B, N, H, D}, ls[3] = {B, H, N};
    c.q = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, s);
    c.k = rda_tensor_contiguous(k, RDA_DTYPE_F32, 4, s);
    c.v = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, s);
    c.o = rda_tensor_contiguous(o.data, RDA_DTYPE_F32, 4, s);
    c.lse = rda_tensor_contiguous(lse.data, RDA_DTYPE_F32, 3, ls);
    c.use_lse = 1;
    return c;
}

static void expect(const char *what, call c, rda_status want) {
    memset(o.data, FILL, o.bytes);
    memset(lse.data, FILL, lse.bytes);
    rda_status got = rda_attention_forward(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, c.use_lse ? &c.lse : NULL);
    CHECK(got == want, "%s: got %s, want %s (%s)", what, rda_status_to_string(got), rda_status_to_string(want),
          rda_context_last_error(ctx));
    if (want != RDA_STATUS_SUCCESS) {
        CHECK(strlen(rda_context_last_error(ctx)) > 0, "%s: has a message", what);
        CHECK(untouched(&o, FILL) && untouched(&lse, FILL), "%s: outputs untouched", what);
    }
    CHECK(guards_intact(&o) && guards_intact(&lse), "%s: guard bytes", what);
    /* the ring entry rejects it the same way, before any rank starts */
    if (want != RDA_STATUS_SUCCESS) {
        memset(o.data, FILL, o.bytes);
        rda_status g2 = rda_ring_forward_simulated(ctx, &c.cfg, 2, &c.q, &c.k, &c.v, &c.o, c.use_lse ? &c.lse : NULL, NULL);
        CHECK(g2 == want, "%s (ring of 2): got %s, want %s", what, rda_status_to_string(g2), rda_status_to_string(want));
        CHECK(untouched(&o, FILL) && untouched(&lse, FILL), "%s (ring of 2): outputs untouched", what);
    }
}

/* ---- backward: every argument ---- */
static guarded gq, gk, gv;
static float *o_in, *lse_in, *dout_in;

typedef struct {
    rda_config cfg;
    rda_tensor q, k, v, o, lse, dout, dq, dk, dv;
    int no_lse, no_o;
} bcall;

static bcall bbase(void) {
    bcall c;
    memset(&c, 0, sizeof c);
    rda_config cfg = RDA_CONFIG_INIT;
    c.cfg = cfg;
    int64_t s[4] = {B, N, H, D}, ls[3] = {B, H, N};
    c.q = rda_tensor_contiguous(q, RDA_DTYPE_F32, 4, s);
    c.k = rda_tensor_contiguous(k, RDA_DTYPE_F32, 4, s);
    c.v = rda_tensor_contiguous(v, RDA_DTYPE_F32, 4, s);
    c.o = rda_tensor_contiguous(o_in, RDA_DTYPE_F32, 4, s);
    c.lse = rda_tensor_contiguous(lse_in, RDA_DTYPE_F32, 3, ls);
    c.dout = rda_tensor_contiguous(dout_in, RDA_DTYPE_F32, 4, s);
    c.dq = rda_tensor_contiguous(gq.data, RDA_DTYPE_F32, 4, s);
    c.dk = rda_tensor_contiguous(gk.data, RDA_DTYPE_F32, 4, s);
    c.dv = rda_tensor_contiguous(gv.data, RDA_DTYPE_F32, 4, s);
    return c;
}

static void bexpect(const char *what, bcall c, rda_status want) {
    for (int ring = 0; ring < 2; ring++) {
        memset(gq.data, FILL, gq.bytes), memset(gk.data, FILL, gk.bytes), memset(gv.data, FILL, gv.bytes);
        const rda_tensor *lp = c.no_lse ? NULL : &c.lse, *op = c.no_o ? NULL : &c.o;
        rda_status got = ring ? rda_ring_backward_simulated(ctx, &c.cfg, 2, &c.q, &c.k, &c.v, op, lp, &c.dout, &c.dq,
                                                            &c.dk, &c.dv, NULL)
                              : rda_attention_backward(ctx, &c.cfg, &c.q, &c.k, &c.v, op, lp, &c.dout, &c.dq, &c.dk, &c.dv);
        CHECK(got == want, "backward%s %s: got %s, want %s (%s)", ring ? " (ring of 2)" : "", what,
              rda_status_to_string(got), rda_status_to_string(want), rda_context_last_error(ctx));
        if (want != RDA_STATUS_SUCCESS) {
            CHECK(strlen(rda_context_last_error(ctx)) > 0, "backward %s: has a message", what);
            CHECK(untouched(&gq, FILL) && untouched(&gk, FILL) && untouched(&gv, FILL), "backward %s: outputs untouched",
                  what);
        }
        CHECK(guards_intact(&gq) && guards_intact(&gk) && guards_intact(&gv), "backward %s: guard bytes", what);
    }
}

static void backward_cases(void) {
    const int64_t n = B * N * H * D;
    gq = guarded_alloc((size_t)n * 4, FILL), gk = guarded_alloc((size_t)n * 4, FILL), gv = guarded_alloc((size_t)n * 4, FILL);
    o_in = calloc((size_t)n, 4), lse_in = calloc((size_t)(B * H * N), 4), dout_in = calloc((size_t)n, 4);
    bcall c = bbase();
    bexpect("valid", c, RDA_STATUS_SUCCESS);
    c = bbase(), c.no_lse = 1;
    bexpect("lse missing", c, RDA_STATUS_NULL_POINTER);
    c = bbase(), c.no_o = 1;
    bexpect("o missing", c, RDA_STATUS_NULL_POINTER);
    rda_tensor *ts[9];
    bcall b0 = bbase();
    static const char *names[9] = {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"};
    for (int i = 0; i < 9; i++) {
        char what[64];
        c = bbase();
        rda_tensor *all[9] = {&c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv};
        memcpy(ts, all, sizeof ts);
        ts[i]->data = NULL;
        snprintf(what, sizeof what, "%s data NULL", names[i]);
        bexpect(what, c, RDA_STATUS_NULL_POINTER);
        c = bbase();
        rda_tensor *all2[9] = {&c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv};
        all2[i]->shape[1] = i == 4 ? H + 1 : N - 1; /* lse: heads dimension */
        snprintf(what, sizeof what, "%s shape", names[i]);
        bexpect(what, c, RDA_STATUS_SHAPE_MISMATCH);
        c = bbase();
        rda_tensor *all3[9] = {&c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv};
        all3[i]->dtype = RDA_DTYPE_F16;
        snprintf(what, sizeof what, "%s dtype", names[i]);
        bexpect(what, c, RDA_STATUS_DTYPE_MISMATCH);
        c = bbase();
        rda_tensor *all4[9] = {&c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv};
        all4[i]->strides[2] = -1;
        snprintf(what, sizeof what, "%s negative stride", names[i]);
        bexpect(what, c, RDA_STATUS_INVALID_ARGUMENT);
    }
    (void)b0;
    /* outputs overlapping an input or each other */
    const char *alias_names[6] = {"dq = q", "dk = v", "dv = dout", "dq = o", "dk = dq", "dv = dk"};
    for (int a = 0; a < 6; a++) {
        c = bbase();
        if (a == 0) c.dq.data = c.q.data;
        if (a == 1) c.dk.data = c.v.data;
        if (a == 2) c.dv.data = c.dout.data;
        if (a == 3) c.dq.data = c.o.data;
        if (a == 4) c.dk.data = c.dq.data;
        if (a == 5) c.dv.data = c.dk.data;
        /* (the aliased output is the one not filled: only the others are checked) */
        memset(gq.data, FILL, gq.bytes), memset(gk.data, FILL, gk.bytes), memset(gv.data, FILL, gv.bytes);
        rda_status got = rda_attention_backward(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv);
        CHECK(got == RDA_STATUS_ALIASING && strlen(rda_context_last_error(ctx)) > 0 && untouched(&gq, FILL) &&
                  untouched(&gk, FILL) && untouched(&gv, FILL),
              "backward %s: got %s (%s)", alias_names[a], rda_status_to_string(got), rda_context_last_error(ctx));
    }
    /* a bad config, NULL context and tensors */
    c = bbase();
    c.cfg.mode = (rda_mode)9;
    bexpect("unknown mode", c, RDA_STATUS_INVALID_ARGUMENT);
    c = bbase();
    CHECK(rda_attention_backward(NULL, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv) ==
              RDA_STATUS_NULL_POINTER,
          "backward NULL context");
    CHECK(rda_attention_backward(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, NULL, &c.dq, &c.dk, &c.dv) ==
              RDA_STATUS_NULL_POINTER && untouched(&gq, FILL),
          "backward NULL dout");
    CHECK(rda_ring_backward(ctx, NULL, &c.cfg, N, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, &c.dq, &c.dk, &c.dv, NULL) ==
              RDA_STATUS_NULL_POINTER,
          "ring backward NULL communicator");
    /* the sampled reference backward */
    {
        double rq[H * D], rk[H * D], rv[H * D];
        int64_t rows[2] = {0, N - 1}, bad_rows[1] = {N};
        c = bbase();
        CHECK(rda_reference_backward_rows(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, rows, 1, rq, rk, rv) ==
                  RDA_STATUS_SUCCESS,
              "reference_backward_rows valid: %s", rda_context_last_error(ctx));
        CHECK(rda_reference_backward_rows(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, NULL, 1, rq, rk, rv) ==
                  RDA_STATUS_NULL_POINTER,
              "reference_backward_rows NULL rows");
        CHECK(rda_reference_backward_rows(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, rows, 0, rq, rk, rv) ==
                  RDA_STATUS_INVALID_ARGUMENT,
              "reference_backward_rows nrows 0");
        CHECK(rda_reference_backward_rows(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, bad_rows, 1, rq, rk, rv) ==
                  RDA_STATUS_INVALID_ARGUMENT && strstr(rda_context_last_error(ctx), "outside"),
              "reference_backward_rows row out of range");
        CHECK(rda_reference_backward_rows(ctx, &c.cfg, &c.q, &c.k, &c.v, NULL, &c.lse, &c.dout, rows, 1, rq, rk, rv) ==
                  RDA_STATUS_NULL_POINTER,
              "reference_backward_rows NULL o");
        c.lse.shape[1] = H + 1;
        CHECK(rda_reference_backward_rows(ctx, &c.cfg, &c.q, &c.k, &c.v, &c.o, &c.lse, &c.dout, rows, 2, rq, rk, rv) ==
                  RDA_STATUS_SHAPE_MISMATCH,
              "reference_backward_rows lse shape");
    }
    guarded_free(&gq), guarded_free(&gk), guarded_free(&gv);
    free(o_in), free(lse_in), free(dout_in);
}

int main(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    CHECK(rda_context_create(&cp, &ctx) == 0, "context");
    int64_t n = B * N * H * D;
    q = calloc((size_t)n, 4), k = calloc((size_t)n, 4), v = calloc((size_t)n, 4);
    o = guarded_alloc((size_t)n * 4, FILL);
    lse = guarded_alloc((size_t)(B * H * N) * 4, FILL);
    call c;

    expect("valid call", base(), RDA_STATUS_SUCCESS);
    c = base(), c.q.data = NULL, expect("NULL q data", c, RDA_STATUS_NULL_POINTER);
    c = base(), c.o.data = NULL, expect("NULL o data", c, RDA_STATUS_NULL_POINTER);
    c = base(), c.q.ndim = 3, expect("q with 3 dims", c, RDA_STATUS_SHAPE_MISMATCH);
    c = base(), c.k.shape[3] = 0, c.v.shape[3] = 0, expect("zero head dim", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.q.shape[0] = -1, expect("negative batch", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.o.shape[2] = 2, expect("o heads differ", c, RDA_STATUS_SHAPE_MISMATCH);
    c = base(), c.v.shape[1] = 8, expect("v rows differ from k", c, RDA_STATUS_SHAPE_MISMATCH);
    c = base(), c.k.shape[1] = 8, c.v.shape[1] = 8, expect("k rows differ from q", c, RDA_STATUS_SHAPE_MISMATCH);
    c = base(), c.k.shape[2] = 3, c.v.shape[2] = 3, expect("heads not a multiple of kv heads", c, RDA_STATUS_SHAPE_MISMATCH);
    c = base(), c.v.dtype = RDA_DTYPE_F16, expect("v dtype differs", c, RDA_STATUS_DTYPE_MISMATCH);
    c = base(), c.lse.dtype = RDA_DTYPE_F16, expect("lse not fp32", c, RDA_STATUS_DTYPE_MISMATCH);
    c = base(), c.lse.shape[2] = 8, expect("lse shape", c, RDA_STATUS_SHAPE_MISMATCH);
    c = base(), c.q.dtype = (rda_dtype)9, expect("unknown dtype", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.q.strides[1] = -1, expect("negative stride", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.q.strides[1] = 0, expect("zero stride on a long dimension", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.q.shape[0] = INT64_MAX / 2, c.k.shape[0] = c.v.shape[0] = c.o.shape[0] = INT64_MAX / 2, c.use_lse = 0,
    expect("element count overflows", c, RDA_STATUS_OVERFLOW);
    c = base(), c.q.strides[0] = INT64_MAX / 2, c.q.shape[0] = 3, c.k.shape[0] = c.v.shape[0] = c.o.shape[0] = 3, c.use_lse = 0,
    expect("extent overflows", c, RDA_STATUS_OVERFLOW);
    c = base(), c.o.data = q, expect("o aliases q", c, RDA_STATUS_ALIASING);
    c = base(), c.o.data = k + 5, expect("o overlaps k", c, RDA_STATUS_ALIASING);
    c = base(), c.lse.data = (char *)o.data + 16, expect("lse overlaps o", c, RDA_STATUS_ALIASING);
    c = base(), c.k.data = q, c.v.data = q, expect("q, k, v may alias each other", c, RDA_STATUS_SUCCESS);
    c = base(), c.cfg.mode = (rda_mode)7, expect("unknown mode", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.causal = 2, expect("causal not 0/1", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.scale = NAN, expect("NaN scale", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.layout = (rda_layout)5, expect("unknown layout", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.timeout_seconds = -1, expect("negative timeout", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.struct_size = 8, expect("struct_size too small", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.version = 99, expect("unknown config version", c, RDA_STATUS_INVALID_ARGUMENT);
    c = base(), c.cfg.mode = RDA_MODE_GROUPS, c.cfg.num_patterns = 0, expect("no patterns", c, RDA_STATUS_INVALID_PATTERN);
    c = base(), c.cfg.mode = RDA_MODE_LONGNET, c.cfg.num_patterns = RDA_MAX_PATTERNS + 1,
    expect("too many patterns", c, RDA_STATUS_INVALID_PATTERN);
    c = base(), c.cfg.mode = RDA_MODE_LONGNET, c.cfg.num_patterns = 1, c.cfg.patterns[0] = (rda_pattern){0, 1},
    expect("segment 0", c, RDA_STATUS_INVALID_PATTERN);
    c = base(), c.cfg.mode = RDA_MODE_LONGNET, c.cfg.num_patterns = 1, c.cfg.patterns[0] = (rda_pattern){4, 0},
    expect("dilation 0", c, RDA_STATUS_INVALID_PATTERN);
    c = base(), c.cfg.mode = RDA_MODE_GROUPS, c.cfg.num_patterns = 2, c.cfg.patterns[0] = (rda_pattern){4, 1},
    c.cfg.patterns[1] = (rda_pattern){4, 5}, expect("dilation > segment", c, RDA_STATUS_INVALID_PATTERN);
    /* D above the limit: shapes consistent, too large for the library */
    {
        float *big = calloc((size_t)(RDA_MAX_HEAD_DIM + 1) * 4 * 3, 4), *bo = calloc((size_t)(RDA_MAX_HEAD_DIM + 1), 4);
        int64_t s[4] = {1, 1, 1, RDA_MAX_HEAD_DIM + 1};
        rda_config cfg = RDA_CONFIG_INIT;
        rda_tensor a = rda_tensor_contiguous(big, RDA_DTYPE_F32, 4, s), b = a, d = a, e = rda_tensor_contiguous(bo, RDA_DTYPE_F32, 4, s);
        b.data = big + RDA_MAX_HEAD_DIM + 1, d.data = big + 2 * (RDA_MAX_HEAD_DIM + 1);
        CHECK(rda_attention_forward(ctx, &cfg, &a, &b, &d, &e, NULL) == RDA_STATUS_UNSUPPORTED, "head dim above RDA_MAX_HEAD_DIM");
        free(big), free(bo);
    }
    /* NULL handles and pointers */
    c = base();
    CHECK(rda_attention_forward(NULL, &c.cfg, &c.q, &c.k, &c.v, &c.o, NULL) == RDA_STATUS_NULL_POINTER, "NULL context");
    CHECK(rda_attention_forward(ctx, NULL, &c.q, &c.k, &c.v, &c.o, NULL) == RDA_STATUS_NULL_POINTER, "NULL config");
    CHECK(rda_attention_forward(ctx, &c.cfg, NULL, &c.k, &c.v, &c.o, NULL) == RDA_STATUS_NULL_POINTER, "NULL q");
    CHECK(rda_attention_forward(ctx, &c.cfg, &c.q, NULL, &c.v, &c.o, NULL) == RDA_STATUS_NULL_POINTER, "NULL k");
    CHECK(rda_attention_forward(ctx, &c.cfg, &c.q, &c.k, NULL, &c.o, NULL) == RDA_STATUS_NULL_POINTER, "NULL v");
    CHECK(rda_attention_forward(ctx, &c.cfg, &c.q, &c.k, &c.v, NULL, NULL) == RDA_STATUS_NULL_POINTER, "NULL o");
    CHECK(untouched(&o, FILL), "NULL arguments: outputs untouched");
    /* ring-only checks */
    memset(o.data, FILL, o.bytes);
    CHECK(rda_ring_forward_simulated(ctx, &c.cfg, 0, &c.q, &c.k, &c.v, &c.o, NULL, NULL) == RDA_STATUS_INVALID_ARGUMENT, "P = 0");
    CHECK(rda_ring_forward_simulated(ctx, &c.cfg, (int32_t)N + 1, &c.q, &c.k, &c.v, &c.o, NULL, NULL) == RDA_STATUS_INVALID_ARGUMENT, "P > N");
    c.cfg.layout = RDA_LAYOUT_ZIGZAG;
    CHECK(rda_ring_forward_simulated(ctx, &c.cfg, 9, &c.q, &c.k, &c.v, &c.o, NULL, NULL) == RDA_STATUS_INVALID_ARGUMENT, "zig-zag with N < 2P");
    CHECK(untouched(&o, FILL), "rejected rings: outputs untouched");
    CHECK(rda_ring_forward(ctx, NULL, &c.cfg, N, &c.q, &c.k, &c.v, &c.o, NULL, NULL) == RDA_STATUS_NULL_POINTER, "NULL communicator");
    {
        rda_comm *comms[2];
        rda_comm_create_local(2, comms);
        c = base();
        c.cfg.timeout_seconds = 0.2;
        CHECK(rda_ring_forward(ctx, comms[0], &c.cfg, N, &c.q, &c.k, &c.v, &c.o, NULL, NULL) == RDA_STATUS_SHAPE_MISMATCH,
              "a rank given all N rows instead of its own");
        rda_comm_destroy(comms[0]), rda_comm_destroy(comms[1]);
        CHECK(rda_comm_create_local(0, comms) == RDA_STATUS_INVALID_ARGUMENT, "local communicator of 0 ranks");
        CHECK(rda_comm_create_local(2, NULL) == RDA_STATUS_NULL_POINTER, "NULL communicator array");
    }
    /* fp64 tensors belong to the reference backend */
    {
        double *d = calloc((size_t)n * 4, 8);
        int64_t s[4] = {B, N, H, D};
        rda_tensor a = rda_tensor_contiguous(d, RDA_DTYPE_F64, 4, s), b = a, e = a, f = a;
        b.data = d + n, e.data = d + 2 * n, f.data = d + 3 * n;
        rda_config cfg = RDA_CONFIG_INIT;
        CHECK(rda_attention_forward(ctx, &cfg, &a, &b, &e, &f, NULL) == RDA_STATUS_UNSUPPORTED, "fp64 on the CPU fast path");
        free(d);
    }
    /* contexts */
    {
        rda_context *x = NULL;
        rda_context_params bad = RDA_CONTEXT_PARAMS_INIT;
        bad.backend = (rda_backend)42;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_INVALID_ARGUMENT && x == NULL, "unknown backend");
        bad = (rda_context_params)RDA_CONTEXT_PARAMS_INIT;
        bad.num_threads = -3;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_INVALID_ARGUMENT, "negative threads");
        CHECK(rda_context_create(NULL, NULL) == RDA_STATUS_NULL_POINTER, "NULL out");
        bad = (rda_context_params)RDA_CONTEXT_PARAMS_INIT;
        bad.stream_mode = (rda_stream_mode)3;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_INVALID_ARGUMENT && x == NULL, "unknown stream mode");
        bad.stream_mode = RDA_STREAM_PRIVATE;
        bad.stream = &bad;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_INVALID_ARGUMENT && x == NULL, "private stream and a stream");
        bad = (rda_context_params)RDA_CONTEXT_PARAMS_INIT;
        bad.struct_size = 2;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_INVALID_ARGUMENT && x == NULL, "struct_size too small");
        bad.struct_size = sizeof(bad) + 8;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_INVALID_ARGUMENT && x == NULL, "struct_size too large");
        /* streams belong to the CUDA backend */
        bad = (rda_context_params)RDA_CONTEXT_PARAMS_INIT;
        CHECK(rda_context_create(&bad, &x) == RDA_STATUS_SUCCESS, "CPU context");
        CHECK(rda_context_set_stream(x, NULL) == RDA_STATUS_UNSUPPORTED && strstr(rda_context_last_error(x), "CUDA"),
              "set_stream on the CPU: %s", rda_context_last_error(x));
        CHECK(rda_context_get_stream(x) == NULL && rda_context_get_stream(NULL) == NULL, "get_stream on the CPU");
        CHECK(rda_context_set_stream(NULL, NULL) == RDA_STATUS_NULL_POINTER, "set_stream NULL context");
        rda_context_destroy(x);
        x = NULL;
        rda_context_params rp = RDA_CONTEXT_PARAMS_INIT;
        rp.backend = RDA_BACKEND_REFERENCE;
        rda_context_create(&rp, &x);
        c = base();
        CHECK(rda_ring_forward_simulated(x, &c.cfg, 2, &c.q, &c.k, &c.v, &c.o, NULL, NULL) == RDA_STATUS_UNSUPPORTED, "ring on the reference backend");
        rda_context_destroy(x);
        rda_context_destroy(NULL); /* allowed, like free(NULL) */
    }
    backward_cases();
    int64_t pairs;
    rda_config cfg = RDA_CONFIG_INIT;
    CHECK(rda_count_pairs(&cfg, 0, 4, 4, &pairs) == RDA_STATUS_INVALID_ARGUMENT, "count_pairs B = 0");
    CHECK(rda_count_pairs(&cfg, 1, 4, 4, NULL) == RDA_STATUS_NULL_POINTER, "count_pairs NULL");
    CHECK(strcmp(rda_status_to_string(RDA_STATUS_TIMEOUT), "timeout") == 0, "status strings");
    CHECK(strcmp(rda_status_to_string((rda_status)999), "unknown status") == 0, "unknown status string");
    free(q), free(k), free(v);
    guarded_free(&o), guarded_free(&lse);
    rda_context_destroy(ctx);
    return harness_done("invalid");
}
