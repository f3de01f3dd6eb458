/* The callback communicator (rda_comm_create_callbacks): real-rank rings,
 * one thread per rank with only its own rows, whose transfers go through a
 * transport written here (buffered mailboxes, nothing shared with the
 * library's in-process engine): forward (O and LSE) and backward (dQ, dK,
 * dV of the rank's rows) gathered from every rank against one rank on the
 * full tensors, every mode, causal and not, both layouts, N divisible by P
 * and not; the configuration check; a silent peer (timeout within the
 * deadline); a transport that fails (communication error on every rank). */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/* ---- the transport: per rank a mailbox of messages from each sender ---- */
#define MAXP 8
typedef struct msg {
    struct msg *next;
    int32_t from;
    size_t bytes;
    unsigned char data[];
} msg;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    msg *box[MAXP]; /* FIFO per receiving rank */
    int fail_rank;  /* this rank's start fails (-1: none) */
} transport;

typedef struct {
    transport *t;
    int32_t rank;
    void *recv;
    size_t recv_bytes;
    int32_t from;
    int starts;
} endpoint;

static int ep_start(void *user, const void *send, size_t send_bytes, int32_t to, void *recv, size_t recv_bytes,
                    int32_t from) {
    endpoint *e = user;
    transport *t = e->t;
    if (t->fail_rank == e->rank && ++e->starts > 1) return 7; /* fails from its second transfer on */
    msg *m = malloc(sizeof(msg) + send_bytes);
    if (!m) return 1;
    m->next = NULL;
    m->from = e->rank;
    m->bytes = send_bytes;
    memcpy(m->data, send, send_bytes);
    pthread_mutex_lock(&t->mu);
    msg **p = &t->box[to];
    while (*p) p = &(*p)->next;
    *p = m;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    e->recv = recv;
    e->recv_bytes = recv_bytes;
    e->from = from;
    return 0;
}

static int ep_wait(void *user, double timeout_s) {
    endpoint *e = user;
    transport *t = e->t;
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    double s = (double)end.tv_sec + 1e-9 * (double)end.tv_nsec + timeout_s;
    end.tv_sec = (time_t)s;
    end.tv_nsec = (long)((s - (double)end.tv_sec) * 1e9);
    pthread_mutex_lock(&t->mu);
    for (;;) {
        for (msg **p = &t->box[e->rank]; *p; p = &(*p)->next)
            if ((*p)->from == e->from) {
                msg *m = *p;
                *p = m->next;
                pthread_mutex_unlock(&t->mu);
                int bad = m->bytes != e->recv_bytes;
                if (!bad) memcpy(e->recv, m->data, m->bytes);
                free(m);
                return bad ? 2 : 0;
            }
        if (pthread_cond_timedwait(&t->cv, &t->mu, &end)) {
            pthread_mutex_unlock(&t->mu);
            return 1;
        }
    }
}

static int released;
static void ep_release(void *user) {
    (void)user;
    __atomic_add_fetch(&released, 1, __ATOMIC_SEQ_CST);
}

/* ---- one rank ---- */
typedef struct {
    rda_comm *comm;
    rda_config cfg;
    int64_t B, N, H, Hkv, D;
    const float *q, *k, *v, *dout; /* full tensors (the rank copies its rows) */
    float *o, *lse, *dq, *dk, *dv; /* full outputs: the rank writes its rows */
    int participate, backward;
    rda_status st, st_bwd;
    double seconds;
    char msg[512];
} rank_arg;

/* rows of x [B, N, H, D] (row length hd) at the ranges into y [B, n, H, D], or back */
static void copy_rows(float *dst, const float *src, int64_t B, int64_t N, int64_t n, int64_t hd, const int64_t *starts,
                      const int64_t *counts, int32_t nr, int to_full) {
    for (int64_t b = 0; b < B; b++) {
        int64_t local = 0;
        for (int32_t c = 0; c < nr; c++) {
            const float *s = to_full ? src + (b * n + local) * hd : src + (b * N + starts[c]) * hd;
            float *d = to_full ? dst + (b * N + starts[c]) * hd : dst + (b * n + local) * hd;
            memcpy(d, s, sizeof(float) * (size_t)(counts[c] * hd));
            local += counts[c];
        }
    }
}

static void *rank_main(void *a_) {
    rank_arg *a = a_;
    if (!a->participate) return NULL;
    int64_t starts[2], counts[2];
    int32_t nr;
    const int32_t rank = rda_comm_rank(a->comm), P = rda_comm_size(a->comm);
    rda_ring_partition(a->N, P, a->cfg.layout, rank, starts, counts, &nr);
    const int64_t n = counts[0] + (nr > 1 ? counts[1] : 0), hq = a->H * a->D, hk = a->Hkv * a->D;
    float *x[9], *lse = malloc(sizeof(float) * (size_t)(a->B * a->H * n + 1));
    const int64_t len[9] = {hq, hk, hk, hq, hq, hq, hk, hk, 0}; /* q k v o dout dq dk dv */
    for (int i = 0; i < 8; i++) x[i] = calloc((size_t)(a->B * n * len[i] + 1), sizeof(float));
    copy_rows(x[0], a->q, a->B, a->N, n, hq, starts, counts, nr, 0);
    copy_rows(x[1], a->k, a->B, a->N, n, hk, starts, counts, nr, 0);
    copy_rows(x[2], a->v, a->B, a->N, n, hk, starts, counts, nr, 0);
    copy_rows(x[4], a->dout, a->B, a->N, n, hq, starts, counts, nr, 0);
    int64_t sq[4] = {a->B, n, a->H, a->D}, sk[4] = {a->B, n, a->Hkv, a->D}, sl[3] = {a->B, a->H, n};
    rda_tensor t[8];
    for (int i = 0; i < 8; i++) t[i] = rda_tensor_contiguous(x[i], RDA_DTYPE_F32, 4, len[i] == hq ? sq : sk);
    rda_tensor tl = rda_tensor_contiguous(lse, RDA_DTYPE_F32, 3, sl);
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = 1;
    rda_context *c = NULL;
    rda_context_create(&cp, &c);
    const double t0 = rda_now();
    a->st = rda_ring_forward(c, a->comm, &a->cfg, a->N, &t[0], &t[1], &t[2], &t[3], &tl, NULL);
    a->st_bwd = RDA_STATUS_SUCCESS;
    if (!a->st && a->backward)
        a->st_bwd = rda_ring_backward(c, a->comm, &a->cfg, a->N, &t[0], &t[1], &t[2], &t[3], &tl, &t[4], &t[5],
                                      &t[6], &t[7], NULL);
    a->seconds = rda_now() - t0;
    snprintf(a->msg, sizeof a->msg, "%s", rda_context_last_error(c));
    rda_context_destroy(c);
    if (!a->st) {
        copy_rows(a->o, x[3], a->B, a->N, n, hq, starts, counts, nr, 1);
        for (int64_t bh = 0; bh < a->B * a->H; bh++) /* lse [B, H, n] rows into [B, H, N] */
            for (int32_t q = 0, local = 0; q < nr; local += (int32_t)counts[q], q++)
                memcpy(a->lse + bh * a->N + starts[q], lse + bh * n + local, sizeof(float) * (size_t)counts[q]);
    }
    if (!a->st && !a->st_bwd && a->backward) {
        copy_rows(a->dq, x[5], a->B, a->N, n, hq, starts, counts, nr, 1);
        copy_rows(a->dk, x[6], a->B, a->N, n, hk, starts, counts, nr, 1);
        copy_rows(a->dv, x[7], a->B, a->N, n, hk, starts, counts, nr, 1);
    }
    for (int i = 0; i < 8; i++) free(x[i]);
    free(lse);
    return NULL;
}

/* P ranks over one transport (fail_rank: that rank's transfers fail) */
static void run_ranks(int32_t P, rank_arg *args, int fail_rank) {
    transport t;
    memset(&t, 0, sizeof t);
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    t.fail_rank = fail_rank;
    endpoint ep[MAXP];
    pthread_t th[MAXP];
    for (int32_t r = 0; r < P; r++) {
        ep[r] = (endpoint){&t, r, NULL, 0, 0, 0};
        rda_comm_callbacks cb = {ep_start, ep_wait, NULL, ep_release, &ep[r]};
        rda_status st = rda_comm_create_callbacks(&cb, r, P, &args[r].comm);
        CHECK(st == RDA_STATUS_SUCCESS, "create rank %d of %d: %s", r, P, rda_status_to_string(st));
    }
    for (int32_t r = 0; r < P; r++) pthread_create(&th[r], NULL, rank_main, &args[r]);
    for (int32_t r = 0; r < P; r++) pthread_join(th[r], NULL);
    for (int32_t r = 0; r < P; r++) rda_comm_destroy(args[r].comm);
    for (int32_t r = 0; r < MAXP; r++)
        while (t.box[r]) {
            msg *m = t.box[r];
            t.box[r] = m->next;
            free(m);
        }
    pthread_mutex_destroy(&t.mu);
    pthread_cond_destroy(&t.cv);
}

static double rel_l2(const float *x, const float *y, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i])) { /* LSE = -inf (rows no pattern selects) on both sides only */
            if (!(x[i] == y[i])) return INFINITY;
            continue;
        }
        double d = (double)x[i] - (double)y[i];
        num += d * d;
        den += (double)y[i] * (double)y[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void ring_case(rda_config cfg, int64_t B, int64_t N, int64_t H, int64_t Hkv, int64_t D, int32_t P,
                      uint64_t seed, const char *what) {
    const int64_t nq = B * N * H * D, nk = B * N * Hkv * D, nl = B * H * N;
    float *in[4], *got[5], *want[5];
    const int64_t cnt[5] = {nq, nl, nq, nk, nk}; /* o lse dq dk dv */
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    for (int i = 0; i < 4; i++) {
        in[i] = malloc(sizeof(float) * (size_t)(i == 1 || i == 2 ? nk : nq));
        rda_fill_uniform(in[i], RDA_DTYPE_F32, i == 1 || i == 2 ? nk : nq, &rng, -1, 1);
    }
    for (int i = 0; i < 5; i++) {
        got[i] = malloc(sizeof(float) * (size_t)cnt[i]);
        want[i] = malloc(sizeof(float) * (size_t)cnt[i]);
        for (int64_t j = 0; j < cnt[i]; j++) got[i][j] = NAN;
    }
    /* one rank on the full tensors */
    int64_t sq[4] = {B, N, H, D}, sk[4] = {B, N, Hkv, D}, sl[3] = {B, H, N};
    rda_tensor q = rda_tensor_contiguous(in[0], RDA_DTYPE_F32, 4, sq), k = rda_tensor_contiguous(in[1], RDA_DTYPE_F32, 4, sk),
               v = rda_tensor_contiguous(in[2], RDA_DTYPE_F32, 4, sk), g = rda_tensor_contiguous(in[3], RDA_DTYPE_F32, 4, sq),
               o = rda_tensor_contiguous(want[0], RDA_DTYPE_F32, 4, sq), l = rda_tensor_contiguous(want[1], RDA_DTYPE_F32, 3, sl),
               dq = rda_tensor_contiguous(want[2], RDA_DTYPE_F32, 4, sq), dk = rda_tensor_contiguous(want[3], RDA_DTYPE_F32, 4, sk),
               dv = rda_tensor_contiguous(want[4], RDA_DTYPE_F32, 4, sk);
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = 1;
    rda_context *c = NULL;
    rda_context_create(&cp, &c);
    rda_status st = rda_attention_forward(c, &cfg, &q, &k, &v, &o, &l);
    if (!st) st = rda_attention_backward(c, &cfg, &q, &k, &v, &o, &l, &g, &dq, &dk, &dv);
    CHECK(st == RDA_STATUS_SUCCESS, "%s: one rank: %s", what, rda_context_last_error(c));
    rda_context_destroy(c);
    rank_arg a[MAXP];
    memset(a, 0, sizeof a);
    for (int32_t r = 0; r < P; r++)
        a[r] = (rank_arg){NULL, cfg, B, N, H, Hkv, D, in[0], in[1], in[2], in[3], got[0], got[1], got[2], got[3], got[4],
                          1, 1, 0, 0, 0, ""};
    run_ranks(P, a, -1);
    int ok = 1;
    for (int32_t r = 0; r < P; r++) {
        CHECK(a[r].st == 0 && a[r].st_bwd == 0, "%s P=%d: rank %d: %s / %s (%s)", what, P, r, rda_status_to_string(a[r].st),
              rda_status_to_string(a[r].st_bwd), a[r].msg);
        ok &= a[r].st == 0 && a[r].st_bwd == 0;
    }
    static const char *names[5] = {"o", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < 5 && ok; i++) {
        const double e = rel_l2(got[i], want[i], cnt[i]);
        CHECK(e <= 1e-5, "%s P=%d: %s rel_l2 %.3g against one rank", what, P, names[i], e);
    }
    for (int i = 0; i < 4; i++) free(in[i]);
    for (int i = 0; i < 5; i++) free(got[i]), free(want[i]);
}

int main(void) {
    const rda_pattern geo[3] = {{16, 1}, {32, 2}, {64, 4}};
    uint64_t seed = 1;
    const int64_t Ns[] = {96, 97};
    for (int ni = 0; ni < 2; ni++)
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++)
                for (int lay = 0; lay < 2; lay++)
                    for (int pi = 0; pi < 4; pi++) {
                        const int32_t P = (int32_t[]){1, 2, 3, 5}[pi];
                        rda_config cfg = RDA_CONFIG_INIT;
                        cfg.mode = (rda_mode)mode;
                        cfg.causal = causal;
                        cfg.layout = lay ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
                        cfg.num_patterns = mode == RDA_MODE_DENSE ? 0 : 3;
                        for (int i = 0; i < cfg.num_patterns; i++) cfg.patterns[i] = geo[i];
                        char what[128];
                        snprintf(what, sizeof what, "N%lld mode %d causal %d %s", (long long)Ns[ni], mode, causal,
                                 lay ? "zig-zag" : "contiguous");
                        ring_case(cfg, 2, Ns[ni], 4, 2, 8, P, seed++, what);
                    }
    CHECK(released == 2 * 3 * 2 * 2 * (1 + 2 + 3 + 5), "every communicator released its endpoint once (%d)", released);

    /* arguments */
    rda_comm *bad = (rda_comm *)1;
    rda_comm_callbacks none = {NULL, NULL, NULL, NULL, NULL};
    CHECK(rda_comm_create_callbacks(&none, 0, 1, &bad) == RDA_STATUS_NULL_POINTER && bad == NULL,
          "callbacks without start/wait refused, nothing written");
    endpoint e0 = {0};
    rda_comm_callbacks cb = {ep_start, ep_wait, NULL, NULL, &e0};
    CHECK(rda_comm_create_callbacks(&cb, 2, 2, &bad) == RDA_STATUS_INVALID_ARGUMENT, "rank >= size refused");
    CHECK(rda_comm_create_callbacks(&cb, 0, 0, &bad) == RDA_STATUS_INVALID_ARGUMENT, "size 0 refused");
    CHECK(rda_comm_create_callbacks(NULL, 0, 1, &bad) == RDA_STATUS_NULL_POINTER, "NULL callbacks refused");

    /* the configuration check: ranks called differently all fail */
    {
        rank_arg a[3];
        memset(a, 0, sizeof a);
        float buf[4 * 40 * 16] = {0}, out[4 * 40 * 16];
        for (int r = 0; r < 3; r++) {
            rda_config c = RDA_CONFIG_INIT;
            c.causal = r == 1;
            c.timeout_seconds = 10;
            a[r] = (rank_arg){NULL, c, 1, 40, 2, 2, 8, buf, buf, buf, buf, out, out, out, out, out, 1, 0, 0, 0, 0, ""};
        }
        const double t0 = rda_now();
        run_ranks(3, a, -1);
        for (int r = 0; r < 3; r++)
            CHECK(a[r].st == RDA_STATUS_CONFIG_MISMATCH, "config mismatch, rank %d: %s (%s)", r,
                  rda_status_to_string(a[r].st), a[r].msg);
        CHECK(rda_now() - t0 < 2.0, "config mismatch reported in %.2f s", rda_now() - t0);

        /* a silent peer: the others time out within the deadline, naming their peer */
        for (int r = 0; r < 3; r++) {
            a[r].cfg.causal = 0;
            a[r].cfg.timeout_seconds = 0.5;
            a[r].participate = r != 2;
        }
        run_ranks(3, a, -1);
        for (int r = 0; r < 2; r++)
            CHECK(a[r].st == RDA_STATUS_TIMEOUT && a[r].seconds < 0.5 * 3 + 2.0 && strstr(a[r].msg, "rank"),
                  "silent peer, rank %d: %s after %.2f s (%s)", r, rda_status_to_string(a[r].st), a[r].seconds, a[r].msg);

        /* a transport that fails on rank 1: every rank gets an error, none hangs */
        for (int r = 0; r < 3; r++) {
            a[r].participate = 1;
            a[r].cfg.timeout_seconds = 1.0;
        }
        run_ranks(3, a, 1);
        CHECK(a[1].st == RDA_STATUS_COMM_ERROR, "failing transport: rank 1 %s (%s)", rda_status_to_string(a[1].st), a[1].msg);
        for (int r = 0; r < 3; r += 2)
            CHECK(a[r].st == RDA_STATUS_TIMEOUT || a[r].st == RDA_STATUS_COMM_ERROR,
                  "failing transport: rank %d %s after %.2f s", r, rda_status_to_string(a[r].st), a[r].seconds);
    }
    return harness_done("comm");
}
