/* Planning: ring partitions, exact pair counts against brute force, the sum
 * of every rank's jobs against the whole, the ring-step pruning, and the
 * key tiles of each phase (the backward's dK/dV items) against its query
 * tiles. */
#include "harness.h"
#include "plan.h"

/* Brute force, straight from SPEC.md: is key k allowed for query q of head h
 * under pattern i? */
static int64_t brute_pairs(const rda_problem *p) {
    int64_t total = 0;
    for (int64_t h = 0; h < p->H; h++)
        for (int32_t i = 0; i < p->G; i++) {
            int64_t o = rda_plan_offset(p, h, i);
            if (o < 0) continue;
            int64_t w = p->patterns[i].segment, r = p->patterns[i].dilation;
            for (int64_t q = 0; q < p->N; q++)
                for (int64_t k = 0; k < p->N; k++) {
                    if (q / w != k / w) continue;
                    int64_t a = (q / w) * w;
                    if (q - a < o || (q - a - o) % r || k - a < o || (k - a - o) % r) continue;
                    if (p->causal && k > q) continue;
                    total++;
                }
        }
    return total;
}

static rda_problem make(rda_mode mode, int causal, int64_t N, int64_t H, int32_t G,
                        const rda_pattern *pt) {
    rda_config cfg = RDA_CONFIG_INIT;
    cfg.mode = mode;
    cfg.causal = causal;
    cfg.num_patterns = G;
    for (int32_t i = 0; i < G; i++) cfg.patterns[i] = pt[i];
    rda_problem p;
    rda_status st = rda_problem_from_config(&cfg, N, &p, NULL);
    if (st) {
        fprintf(stderr, "bad test config\n");
        exit(2);
    }
    p.B = 1;
    p.H = p.Hkv = H;
    p.D = 4;
    return p;
}

/* The key tiles of a phase, counted pair by pair the way the dK/dV kernel
 * visits them (each tile's keys against its job's queries from the first
 * that sees the tile), against the pairs of the phase's jobs over its
 * classes' heads; every tile holds an allowed pair; items add up. */
typedef struct {
    const rda_problem *p;
    int64_t bk, key_pairs, job_pairs, empty_tiles, bad_items, phases;
    int64_t hmod;      /* > 1: the key tiles per residue of the head mod hmod */
    int64_t conflicts; /* (batch, K/V head, key row) met twice in one residue's items */
} key_tile_check;

static rda_status check_key_tiles(void *arg, const rda_phase *ph) {
    key_tile_check *kc = arg;
    const rda_problem *p = kc->p;
    rda_tile tiles[4096];
    rda_class classes[256];
    int64_t heads[1024];
    rda_phase kph;
    kc->phases++;
    if (ph->nclasses > 256 || ph->nheads > 1024) return RDA_STATUS_INTERNAL;
    for (int64_t ci = 0; ci < ph->nclasses; ci++) {
        const rda_class *cl = &ph->classes[ci];
        for (int64_t j = ph->tiles[cl->first_tile].job; cl->ntiles && j <= ph->tiles[cl->first_tile + cl->ntiles - 1].job; j++)
            kc->job_pairs += rda_job_pairs(&ph->jobs[j], p->causal) * cl->nheads * p->B;
    }
    for (int64_t rem = 0; rem < kc->hmod; rem++) {
    int64_t nt = rda_plan_key_tiles(ph, p, kc->bk, kc->hmod, rem, tiles, 4096, classes, kc->hmod > 1 ? heads : NULL,
                                    &kph);
    if (nt > 4096) return RDA_STATUS_INTERNAL;
    unsigned char seen[2 * 8 * 64] = {0}; /* [b][K/V head][key row] (B <= 2, Hkv <= 8, rows < 64) */
    int64_t items = 0;
    for (int64_t ci = 0; ci < kph.nclasses; ci++) {
        const rda_class *cl = &kph.classes[ci];
        if (cl->first_item != items) kc->bad_items++;
        items += cl->ntiles * cl->nheads * p->B;
        for (int64_t t = cl->first_tile; t < cl->first_tile + cl->ntiles; t++) {
            const rda_job *job = &kph.jobs[kph.tiles[t].job];
            int c = job->nk > 1 && kph.tiles[t].first >= job->k_count[0];
            int64_t k0 = kph.tiles[t].first - (c ? job->k_count[0] : 0), d = (job->q_first - job->k_first[c]) / job->stride;
            int64_t pairs = 0;
            for (int64_t k = k0; k < k0 + kc->bk && k < job->k_count[c]; k++) {
                for (int64_t i = p->causal && k - d > 0 ? k - d : 0; i < job->q_count; i++) pairs += !p->causal || k <= i + d;
                for (int64_t b = 0; b < p->B && kc->hmod > 1; b++)
                    for (int64_t hi = 0; hi < cl->nheads; hi++) {
                        const int64_t kh = kph.heads[cl->first_head + hi] / (p->H / p->Hkv);
                        unsigned char *x = &seen[(b * 8 + kh) * 64 + job->k_local[c] + k * job->stride];
                        kc->conflicts += *x;
                        *x = 1;
                    }
            }
            kc->key_pairs += pairs * cl->nheads * p->B;
            kc->empty_tiles += pairs == 0;
        }
    }
    if (items != kph.items) kc->bad_items++;
    }
    return RDA_STATUS_SUCCESS;
}

int main(void) {
    /* partitions cover [0, N) once, chunk sizes differ by at most one */
    for (int64_t N = 1; N <= 40; N++)
        for (int32_t P = 1; P <= 9 && P <= N; P++)
            for (int lay = 0; lay < 2; lay++) {
                if (lay == RDA_LAYOUT_ZIGZAG && N < 2 * P) continue;
                int cover[64] = {0};
                int64_t mn = N, mx = 0;
                for (int32_t r = 0; r < P; r++) {
                    rda_rows rows;
                    CHECK(rda_plan_rows(N, P, (rda_layout)lay, r, &rows, NULL) == 0, "rows N%lld P%d", (long long)N, P);
                    for (int32_t c = 0; c < rows.n; c++) {
                        for (int64_t x = rows.start[c]; x < rows.start[c] + rows.count[c]; x++) cover[x]++;
                        if (rows.count[c] < mn) mn = rows.count[c];
                        if (rows.count[c] > mx) mx = rows.count[c];
                    }
                }
                int ok = 1;
                for (int64_t x = 0; x < N; x++) ok &= cover[x] == 1;
                CHECK(ok, "partition N=%lld P=%d layout=%d covers every row once", (long long)N, P, lay);
                CHECK(mx - mn <= 1, "partition N=%lld P=%d layout=%d balanced", (long long)N, P, lay);
            }
    rda_rows rows;
    CHECK(rda_plan_rows(5, 6, RDA_LAYOUT_CONTIGUOUS, 0, &rows, NULL) == RDA_STATUS_INVALID_ARGUMENT, "P > N");
    CHECK(rda_plan_rows(5, 0, RDA_LAYOUT_CONTIGUOUS, 0, &rows, NULL) == RDA_STATUS_INVALID_ARGUMENT, "P < 1");
    CHECK(rda_plan_rows(7, 4, RDA_LAYOUT_ZIGZAG, 0, &rows, NULL) == RDA_STATUS_INVALID_ARGUMENT, "zigzag N < 2P");
    int64_t st2[2], ct2[2];
    int32_t nr;
    CHECK(rda_ring_partition(10, 2, RDA_LAYOUT_ZIGZAG, 1, st2, ct2, &nr) == 0 && nr == 2 &&
              st2[0] == 3 && ct2[0] == 3 && st2[1] == 6 && ct2[1] == 2,
          "zigzag rank 1 of 2 over N=10 (chunks 3,3,2,2) owns chunks 1 and 2: [3,6) and [6,8)");

    /* exact counts against brute force, and every ring's jobs add up to them */
    const rda_pattern sets[][4] = {
        {{7, 1}, {10, 2}, {0, 0}, {0, 0}},
        {{4, 1}, {8, 2}, {16, 4}, {32, 8}},
        {{64, 3}, {5, 5}, {0, 0}, {0, 0}},
        {{3, 1}, {0, 0}, {0, 0}, {0, 0}},
    };
    const int32_t G[] = {2, 4, 2, 1};
    for (int s = 0; s < 4; s++)
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++)
                for (int64_t N = 1; N <= 45; N += 11)
                    for (int64_t H = 1; H <= 5; H += 2) {
                        rda_problem p = make((rda_mode)mode, causal, N, H, G[s], sets[s]);
                        int64_t total = rda_plan_total_pairs(&p), brute = brute_pairs(&p);
                        CHECK(total == brute, "set %d mode %d causal %d N %lld H %lld: %lld pairs, brute force %lld",
                              s, mode, causal, (long long)N, (long long)H, (long long)total, (long long)brute);
                        for (int32_t P = 1; P <= 5 && P <= N; P++)
                            for (int lay = 0; lay < 2; lay++) {
                                if (lay == RDA_LAYOUT_ZIGZAG && N < 2 * P) continue;
                                p.layout = (rda_layout)lay;
                                int64_t sum = 0;
                                int32_t steps = rda_plan_ring_steps(&p, P);
                                for (int32_t r = 0; r < P; r++)
                                    for (int32_t step = 0; step < P; step++) {
                                        rda_rows qr, kr;
                                        rda_plan_rows(N, P, p.layout, r, &qr, NULL);
                                        rda_plan_rows(N, P, p.layout, (r - step + P) % P, &kr, NULL);
                                        for (int64_t h = 0; h < H; h++)
                                            for (int32_t i = 0; i < p.G; i++) {
                                                rda_job jobs[64];
                                                int64_t nj = rda_plan_jobs(&p, i, rda_plan_offset(&p, h, i), &qr, &kr, jobs, 64);
                                                if (nj > 0 && step >= steps) sum = -1000000; /* pruned a needed step */
                                                for (int64_t j = 0; j < nj && j < 64; j++) sum += rda_job_pairs(&jobs[j], p.causal);
                                            }
                                    }
                                CHECK(sum == total, "ring P=%d layout %d: jobs give %lld pairs, total %lld (set %d mode %d causal %d N %lld)",
                                      P, lay, (long long)sum, (long long)total, s, mode, causal, (long long)N);
                            }
                    }

    /* key tiles: tile sizes 1, 3 and 64, every ring step of every rank */
    for (int s = 0; s < 4; s++)
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++)
                for (int64_t N = 1; N <= 45; N += 22)
                    for (int32_t P = 1; P <= 3 && P <= N; P++)
                        for (int lay = 0; lay < 2; lay++) {
                            if (lay == RDA_LAYOUT_ZIGZAG && N < 2 * P) continue;
                            /* H = 6 over 3 K/V heads: hmod = 2 */
                            rda_problem p = make((rda_mode)mode, causal, N, 6, G[s], sets[s]);
                            p.layout = (rda_layout)lay;
                            p.B = 2;
                            p.Hkv = 3;
                            for (int bi = 0; bi < 4; bi++) {
                                const int64_t bk = bi == 0 ? 1 : bi == 1 ? 3 : 64;
                                /* the last: per head residue, planned one query range at a time (the
                                 * deterministic backward's dK/dV launches) */
                                const int det = bi == 3;
                                key_tile_check kc = {&p, det ? 3 : bk, 0, 0, 0, 0, 0, det ? 2 : 1, 0};
                                rda_status st = RDA_STATUS_SUCCESS;
                                for (int32_t r = 0; r < P && !st; r++)
                                    for (int32_t step = 0; step < P && !st; step++) {
                                        rda_rows qr, kr;
                                        rda_plan_rows(N, P, p.layout, r, &qr, NULL);
                                        rda_plan_rows(N, P, p.layout, (r - step + P) % P, &kr, NULL);
                                        rda_carver hc;
                                        size_t bytes = rda_plan_phase_bytes(&p, &qr, 4);
                                        void *mem = malloc(bytes);
                                        hc.p = mem, hc.left = bytes;
                                        rda_phase ph;
                                        int64_t pairs = 0;
                                        st = rda_plan_phase_init(&ph, &hc, &p, &qr, 4);
                                        if (!st)
                                            st = (det ? rda_plan_step_per_range : rda_plan_step)(
                                                &ph, &p, &qr, &kr, false, check_key_tiles, &kc, &pairs, NULL);
                                        free(mem);
                                    }
                                CHECK(!st && kc.key_pairs == kc.job_pairs && kc.empty_tiles == 0 && kc.bad_items == 0 &&
                                          kc.conflicts == 0,
                                      "key tiles of %d%s: %lld pairs, the jobs %lld; %lld tiles without a pair; %lld item "
                                      "counts off; %lld K/V rows met twice in one launch (set %d mode %d causal %d N %lld "
                                      "P %d layout %d, %lld phases)",
                                      (int)kc.bk, det ? " per head residue" : "", (long long)kc.key_pairs,
                                      (long long)kc.job_pairs, (long long)kc.empty_tiles, (long long)kc.bad_items,
                                      (long long)kc.conflicts, s, mode, causal, (long long)N, P, lay, (long long)kc.phases);
                            }
                        }

    /* ring steps: segments inside one rank need no transfer; dense needs all */
    rda_pattern seg[2] = {{1024, 1}, {2048, 2}};
    rda_problem p = make(RDA_MODE_GROUPS, 0, 4096, 8, 2, seg);
    CHECK(rda_plan_ring_steps(&p, 2) == 1, "segments within a rank: one step");
    CHECK(rda_plan_ring_steps(&p, 4) == 4, "a segment over two ranks: all steps (ring order)");
    p.causal = true;
    CHECK(rda_plan_ring_steps(&p, 4) == 2, "causal, segment over two ranks: two steps");
    rda_problem d = make(RDA_MODE_DENSE, 0, 100, 2, 0, seg);
    CHECK(rda_plan_ring_steps(&d, 8) == 8, "dense: every step");

    /* seed configuration FLOPs: dense N=4096 H=8 D=64 */
    rda_config cfg = RDA_CONFIG_INIT;
    int64_t pairs = 0;
    CHECK(rda_count_pairs(&cfg, 1, 4096, 8, &pairs) == 0 && pairs == 8LL * 4096 * 4096, "dense pairs");
    cfg.causal = 1;
    CHECK(rda_count_pairs(&cfg, 2, 10, 3, &pairs) == 0 && pairs == 2LL * 3 * 55, "causal pairs");
    return harness_done("plan");
}
