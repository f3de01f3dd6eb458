#include "plan.h"

#include <string.h>

rda_status rda_plan_rows(int64_t N, int32_t P, rda_layout layout, int32_t rank, rda_rows *rows,
                         char *msg) {
    if (P < 1) {
        rda_set_msg(msg, "ring size P must be >= 1, got %d", P);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (N < P) {
        rda_set_msg(msg, "ring size P = %d exceeds sequence length N = %lld", P, (long long)N);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    if (rank < 0 || rank >= P) {
        rda_set_msg(msg, "rank %d is outside 0..%d", rank, P - 1);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    memset(rows, 0, sizeof(*rows));
    if (layout == RDA_LAYOUT_CONTIGUOUS || P == 1) {
        int64_t base = N / P, extra = N % P;
        rows->n = 1;
        rows->start[0] = rank * base + (rank < extra ? rank : extra);
        rows->count[0] = base + (rank < extra ? 1 : 0);
    } else if (layout == RDA_LAYOUT_ZIGZAG) {
        int64_t C = 2 * (int64_t)P;
        if (N < C) {
            rda_set_msg(msg, "zig-zag layout needs N >= 2P (N = %lld, P = %d)", (long long)N, P);
            return RDA_STATUS_INVALID_ARGUMENT;
        }
        int64_t base = N / C, extra = N % C;
        int64_t c[2] = {rank, C - 1 - rank};
        rows->n = 2;
        for (int i = 0; i < 2; i++) {
            rows->start[i] = c[i] * base + (c[i] < extra ? c[i] : extra);
            rows->count[i] = base + (c[i] < extra ? 1 : 0);
        }
    } else {
        rda_set_msg(msg, "unknown layout %d", (int)layout);
        return RDA_STATUS_INVALID_ARGUMENT;
    }
    int64_t local = 0;
    for (int i = 0; i < rows->n; i++) {
        rows->local[i] = local;
        local += rows->count[i];
    }
    rows->total = local;
    return RDA_STATUS_SUCCESS;
}

rda_status rda_ring_partition(int64_t N, int32_t P, rda_layout layout, int32_t rank,
                              int64_t starts[2], int64_t counts[2], int32_t *num_ranges) {
    if (!starts || !counts || !num_ranges) return RDA_STATUS_NULL_POINTER;
    rda_rows r;
    rda_status st = rda_plan_rows(N, P, layout, rank, &r, NULL);
    if (st) return st;
    for (int i = 0; i < 2; i++) {
        starts[i] = i < r.n ? r.start[i] : 0;
        counts[i] = i < r.n ? r.count[i] : 0;
    }
    *num_ranges = r.n;
    return RDA_STATUS_SUCCESS;
}

int64_t rda_plan_offset(const rda_problem *p, int64_t h, int32_t i) {
    switch (p->mode) {
    case RDA_MODE_DENSE: return i == 0 ? 0 : -1;
    case RDA_MODE_LONGNET: return h % p->given[i].dilation;
    case RDA_MODE_GROUPS: {
        /* group g holds H/G heads, plus one if g < H % G */
        int64_t base = p->H / p->G, extra = p->H % p->G, first = 0;
        for (int32_t g = 0; g < p->G; g++) {
            int64_t size = base + (g < extra ? 1 : 0);
            if (h < first + size) return g == i ? (int64_t)g % p->given[g].dilation : -1;
            first += size;
        }
        return -1;
    }
    }
    return -1;
}

double rda_plan_output_factor(const rda_problem *p) {
    return p->mode == RDA_MODE_GROUPS ? 1.0 / (double)p->G : 1.0;
}

/* Selected positions of [lo, hi) in a segment whose selection starts at sel
 * (segment start + offset) with stride r: first position and count. */
static int64_t progression(int64_t sel, int64_t r, int64_t lo, int64_t hi, int64_t *first) {
    if (lo < sel) lo = sel;
    if (hi <= lo) return 0;
    int64_t f = sel + ((lo - sel + r - 1) / r) * r;
    if (f >= hi) return 0;
    *first = f;
    return (hi - 1 - f) / r + 1;
}

int64_t rda_plan_jobs(const rda_problem *p, int32_t i, int64_t o, const rda_rows *qr,
                      const rda_rows *kr, rda_job *jobs, int64_t cap) {
    int64_t w = p->patterns[i].segment, r = p->patterns[i].dilation, n = 0;
    if (o < 0) return 0;
    for (int32_t a = 0; a < qr->n; a++) {
        int64_t q0 = qr->start[a], q1 = q0 + qr->count[a];
        if (q1 <= q0) continue;
        for (int64_t seg = q0 / w; seg <= (q1 - 1) / w; seg++) {
            int64_t s0 = seg * w, s1 = s0 + w < p->N ? s0 + w : p->N, sel = s0 + o;
            rda_job job;
            memset(&job, 0, sizeof(job));
            job.stride = r;
            job.q_count = progression(sel, r, q0 > s0 ? q0 : s0, q1 < s1 ? q1 : s1, &job.q_first);
            if (job.q_count == 0) continue;
            int64_t q_last = job.q_first + (job.q_count - 1) * r;
            for (int32_t b = 0; kr && b < kr->n; b++) {
                int64_t k0 = kr->start[b], k1 = k0 + kr->count[b], kf = 0;
                int64_t kc = progression(sel, r, k0 > s0 ? k0 : s0, k1 < s1 ? k1 : s1, &kf);
                if (kc == 0) continue;
                if (p->causal) {
                    if (kf > q_last) continue;                 /* every key in the future */
                    int64_t k_last = q_last < kf + (kc - 1) * r ? q_last : kf + (kc - 1) * r;
                    kc = (k_last - kf) / r + 1;                /* drop keys after the last query */
                }
                job.k_first[job.nk] = kf;
                job.k_count[job.nk] = kc;
                job.k_local[job.nk] = kf - k0 + kr->local[b];
                job.nk++;
            }
            if (kr && job.nk == 0) continue;
            job.q_local = job.q_first - q0 + qr->local[a];
            if (jobs && n < cap) memcpy(&jobs[n], &job, sizeof(job)); /* padding too: the tables are compared bytewise */
            n++;
        }
    }
    return n;
}

/* sum over t in [lo, hi] of clamp(t, 0, kc) */
static int64_t clamp_sum(int64_t lo, int64_t hi, int64_t kc) {
    int64_t s = 0, a = lo > 1 ? lo : 1, b = hi < kc ? hi : kc;
    if (b >= a) s += (a + b) * (b - a + 1) / 2;
    int64_t c = lo > kc + 1 ? lo : kc + 1;
    if (hi >= c) s += kc * (hi - c + 1);
    return s;
}

int64_t rda_job_pairs(const rda_job *job, bool causal) {
    int64_t s = 0;
    for (int32_t c = 0; c < job->nk; c++) {
        if (!causal) {
            s += job->q_count * job->k_count[c];
            continue;
        }
        /* query j sees keys i <= d + j, d = (q_first - k_first) / stride */
        int64_t d = (job->q_first - job->k_first[c]) / job->stride;
        s += clamp_sum(d + 1, d + job->q_count, job->k_count[c]);
    }
    return s;
}

int32_t rda_plan_ring_steps(const rda_problem *p, int32_t P) {
    int32_t need = 1;
    for (int32_t s = P - 1; s >= 1 && need == 1; s--) {
        for (int32_t rank = 0; rank < P && need == 1; rank++) {
            rda_rows qr, kr;
            if (rda_plan_rows(p->N, P, p->layout, rank, &qr, NULL) ||
                rda_plan_rows(p->N, P, p->layout, (rank - s + P) % P, &kr, NULL))
                return P;
            for (int64_t h = 0; h < p->H && need == 1; h++)
                for (int32_t i = 0; i < p->G && need == 1; i++)
                    if (rda_plan_jobs(p, i, rda_plan_offset(p, h, i), &qr, &kr, NULL, 0) > 0)
                        need = s + 1;
        }
    }
    return need;
}

int64_t rda_plan_total_pairs(const rda_problem *p) {
    int64_t total = 0;
    for (int64_t h = 0; h < p->H; h++) {
        for (int32_t i = 0; i < p->G; i++) {
            int64_t o = rda_plan_offset(p, h, i);
            if (o < 0) continue;
            int64_t w = p->patterns[i].segment, r = p->patterns[i].dilation;
            int64_t full = p->N / w, tail = p->N % w;
            int64_t lens[2] = {w, tail}, mult[2] = {full, tail ? 1 : 0};
            for (int k = 0; k < 2; k++) {
                if (mult[k] == 0 || lens[k] <= o) continue;
                int64_t n = (lens[k] - o - 1) / r + 1;
                total += mult[k] * (p->causal ? n * (n + 1) / 2 : n * n);
            }
        }
    }
    return total;
}

rda_status rda_count_pairs(const rda_config *cfg, int64_t B, int64_t N, int64_t H, int64_t *pairs) {
    if (!pairs) return RDA_STATUS_NULL_POINTER;
    if (B < 1 || H < 1) return RDA_STATUS_INVALID_ARGUMENT;
    rda_problem p;
    rda_status st = rda_problem_from_config(cfg, N, &p, NULL);
    if (st) return st;
    p.B = B;
    p.H = p.Hkv = H;
    int64_t per = rda_plan_total_pairs(&p);
    if (__builtin_mul_overflow(per, B, pairs)) return RDA_STATUS_OVERFLOW;
    return RDA_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ steps */

/* Table capacities of one phase: every class the step can hold at once.
 * Pattern i makes at most r_i classes in a phase (one per offset: longnet's
 * heads, or a group and the zero-output classes of its other offsets); a
 * class meets at most count/w + 2 segments of a row range, and its tiles
 * cover at most total/r + jobs rows. */
static void phase_caps(const rda_problem *p, const rda_rows *qr, int64_t bq, int64_t *jobs_cap,
                       int64_t *tiles_cap, int64_t *classes_cap) {
    *jobs_cap = *tiles_cap = *classes_cap = 0;
    for (int32_t i = 0; i < p->G; i++) {
        int64_t w = p->patterns[i].segment, r = p->patterns[i].dilation, jobs = 0;
        for (int32_t a = 0; a < qr->n; a++) jobs += qr->count[a] / w + 2;
        int64_t tiles = (qr->total / r + jobs) / bq + jobs + 1;
        *jobs_cap += r * jobs;
        *tiles_cap += r * tiles;
        *classes_cap += r;
    }
    if (*classes_cap < p->H) *classes_cap = p->H;
}

size_t rda_plan_phase_bytes(const rda_problem *p, const rda_rows *qr, int64_t bq) {
    int64_t jc, tc, cc;
    phase_caps(p, qr, bq, &jc, &tc, &cc);
    return RDA_ALIGN(sizeof(rda_job) * (size_t)jc) + RDA_ALIGN(sizeof(rda_tile) * (size_t)tc) +
           RDA_ALIGN(sizeof(int64_t) * (size_t)(p->H * cc)) + RDA_ALIGN(sizeof(rda_class) * (size_t)cc);
}

rda_status rda_plan_phase_init(rda_phase *ph, rda_carver *c, const rda_problem *p,
                               const rda_rows *qr, int64_t bq) {
    memset(ph, 0, sizeof(*ph));
    ph->bq = bq;
    phase_caps(p, qr, bq, &ph->jobs_cap, &ph->tiles_cap, &ph->classes_cap);
    ph->jobs = rda_carve(c, sizeof(rda_job) * (size_t)ph->jobs_cap);
    ph->tiles = rda_carve(c, sizeof(rda_tile) * (size_t)ph->tiles_cap);
    ph->heads_cap = p->H * ph->classes_cap;
    ph->heads = rda_carve(c, sizeof(int64_t) * (size_t)ph->heads_cap);
    ph->classes = rda_carve(c, sizeof(rda_class) * (size_t)ph->classes_cap);
    return ph->classes ? RDA_STATUS_SUCCESS : RDA_STATUS_INTERNAL;
}

static rda_status flush(rda_phase *ph, const rda_problem *p, rda_phase_run run, void *arg) {
    rda_status st = RDA_STATUS_SUCCESS;
    if (ph->nclasses) {
        const rda_class *last = &ph->classes[ph->nclasses - 1];
        ph->items = last->first_item + last->ntiles * p->B * last->nheads;
        st = run(arg, ph);
    }
    ph->njobs = ph->ntiles = ph->nheads = ph->nclasses = ph->items = 0;
    return st;
}

/* Adds the class of pattern i and offset o over the heads h >= h0 whose
 * own offset is oh; kr == NULL makes a zero-output class (rows of offset o
 * without keys, for heads that use offset oh). Runs what is gathered first
 * when the tables are full. */
static rda_status add_class(rda_phase *ph, const rda_problem *p, int32_t i, int64_t o, int64_t h0,
                            int64_t oh, const rda_rows *qr, const rda_rows *kr, bool final,
                            rda_phase_run run, void *arg, int64_t *pairs, char *msg) {
    rda_status st = RDA_STATUS_SUCCESS;
    int64_t nj = rda_plan_jobs(p, i, o, qr, kr, NULL, 0), nt = 0;
    if (nj == 0) return st;
    RDA_ASSERT(nj <= ph->jobs_cap, done);
    if ((ph->njobs + nj > ph->jobs_cap || ph->nclasses == ph->classes_cap ||
         ph->nheads + p->H > ph->heads_cap) &&
        (st = flush(ph, p, run, arg)))
        return st;
    const int64_t bq = kr || ph->zero_bq <= 0 ? ph->bq : ph->zero_bq; /* rows per tile */
    rda_job *jobs = ph->jobs + ph->njobs;
    rda_plan_jobs(p, i, o, qr, kr, jobs, nj);
    for (int64_t j = 0; j < nj; j++) nt += (jobs[j].q_count + bq - 1) / bq;
    if (ph->ntiles + nt > ph->tiles_cap) { /* full: run what is gathered */
        if ((st = flush(ph, p, run, arg))) return st;
        jobs = ph->jobs;
        rda_plan_jobs(p, i, o, qr, kr, jobs, nj);
    }
    RDA_ASSERT(ph->ntiles + nt <= ph->tiles_cap, done);
    rda_class *cl = &ph->classes[ph->nclasses];
    cl->first_head = ph->nheads;
    cl->nheads = 0;
    for (int64_t h = h0; h < p->H; h++)
        if (rda_plan_offset(p, h, i) == oh) ph->heads[ph->nheads + cl->nheads++] = h;
    ph->nheads += cl->nheads;
    cl->first_tile = ph->ntiles;
    for (int64_t j = 0; j < nj; j++) {
        *pairs += rda_job_pairs(&jobs[j], p->causal) * p->B * cl->nheads;
        for (int64_t t = 0; t < jobs[j].q_count; t += bq)
            ph->tiles[ph->ntiles++] = (rda_tile){ph->njobs + j, t};
    }
    cl->ntiles = ph->ntiles - cl->first_tile;
    cl->final = final;
    cl->first_item = ph->nclasses == 0 ? 0 : cl[-1].first_item + cl[-1].ntiles * p->B * cl[-1].nheads;
    ph->nclasses++;
    ph->njobs += nj;
done:
    return st;
}

int64_t rda_plan_key_tiles(const rda_phase *ph, const rda_problem *p, int64_t bk, int64_t hmod, int64_t hrem,
                           rda_tile *tiles, int64_t tiles_cap, rda_class *classes, int64_t *heads,
                           rda_phase *kph) {
    int64_t nt = 0, nc = 0, items = 0, nh = 0;
    for (int64_t ci = 0; ci < ph->nclasses; ci++) {
        const rda_class *cl = &ph->classes[ci];
        if (cl->ntiles == 0) continue;
        int64_t first_head = cl->first_head, nheads = cl->nheads;
        if (hmod > 1) { /* this class's heads of the residue, after the earlier classes' */
            first_head = nh;
            for (int64_t i = 0; i < cl->nheads; i++)
                if (ph->heads[cl->first_head + i] % hmod == hrem) heads[nh++] = ph->heads[cl->first_head + i];
            nheads = nh - first_head;
            if (nheads == 0) continue;
        }
        /* a class's jobs are consecutive, and so are its query tiles */
        const int64_t j0 = ph->tiles[cl->first_tile].job, j1 = ph->tiles[cl->first_tile + cl->ntiles - 1].job;
        const int64_t first = nt;
        for (int64_t j = j0; j <= j1; j++) {
            const rda_job *job = &ph->jobs[j];
            if (job->q_count == 0) continue;
            for (int32_t c = 0; c < job->nk; c++) {
                int64_t kc = job->k_count[c];
                if (p->causal) { /* key k is allowed for query i iff k <= i + d */
                    const int64_t last = job->q_count - 1 + (job->q_first - job->k_first[c]) / job->stride + 1;
                    kc = last < 0 ? 0 : (last < kc ? last : kc);
                }
                for (int64_t k0 = 0; k0 < kc; k0 += bk, nt++)
                    if (nt < tiles_cap) tiles[nt] = (rda_tile){j, (c ? job->k_count[0] : 0) + k0};
            }
        }
        if (nt == first) {
            if (hmod > 1) nh = first_head; /* (its heads are dropped with it) */
            continue;
        }
        rda_class k = *cl;
        k.first_head = first_head;
        k.nheads = nheads;
        k.first_tile = first;
        k.ntiles = nt - first;
        k.first_item = items;
        items += k.ntiles * p->B * k.nheads;
        classes[nc++] = k;
    }
    *kph = *ph;
    if (hmod > 1) {
        kph->heads = heads;
        kph->nheads = nh;
        kph->heads_cap = ph->nheads;
    }
    kph->tiles = tiles;
    kph->ntiles = nt <= tiles_cap ? nt : 0;
    kph->tiles_cap = tiles_cap;
    kph->classes = classes;
    kph->nclasses = nc;
    kph->classes_cap = ph->nclasses;
    kph->items = items;
    kph->bq = bk;
    return nt;
}

rda_status rda_plan_step(rda_phase *ph, const rda_problem *p, const rda_rows *qr,
                         const rda_rows *kr, bool last_step, rda_phase_run run, void *arg,
                         int64_t *pairs, char *msg) {
    rda_status st = RDA_STATUS_SUCCESS;
    ph->njobs = ph->ntiles = ph->nheads = ph->nclasses = ph->items = 0;
    for (int32_t i = 0; i < p->G; i++) {
        if (p->mode == RDA_MODE_LONGNET && (st = flush(ph, p, run, arg))) return st;
        /* on the last step a row is complete after its tile, except in
         * longnet, where later patterns may still add to it */
        bool final = last_step && (p->mode != RDA_MODE_LONGNET || i == p->G - 1);
        /* h0 is the first head of its class */
        for (int64_t h0 = 0; h0 < p->H; h0++) {
            int64_t o = rda_plan_offset(p, h0, i);
            bool seen = o < 0;
            for (int64_t h = 0; h < h0 && !seen; h++) seen = rda_plan_offset(p, h, i) == o;
            if (seen) continue;
            if ((st = add_class(ph, p, i, o, h0, o, qr, kr, final, run, arg, pairs, msg))) return st;
            /* the rows of the group's other offsets: zeros (groups mode, one step) */
            if (ph->zero_uncovered && final && p->mode == RDA_MODE_GROUPS)
                for (int64_t z = 0; z < p->patterns[i].dilation; z++)
                    if (z != o && (st = add_class(ph, p, i, z, h0, o, qr, NULL, true, run, arg, pairs, msg)))
                        return st;
        }
    }
    return flush(ph, p, run, arg);
}

rda_status rda_plan_step_per_range(rda_phase *ph, const rda_problem *p, const rda_rows *qr,
                                   const rda_rows *kr, bool last_step, rda_phase_run run, void *arg,
                                   int64_t *pairs, char *msg) {
    rda_status st = RDA_STATUS_SUCCESS;
    for (int32_t r = 0; r < qr->n && !st; r++) {
        rda_rows one = *qr;
        one.n = 1;
        one.start[0] = qr->start[r];
        one.count[0] = qr->count[r];
        one.local[0] = qr->local[r];
        st = rda_plan_step(ph, p, &one, kr, last_step, run, arg, pairs, msg);
    }
    return st;
}
