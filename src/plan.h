/* Planning shared by every backend: which rows a rank owns, which pattern and
 * offset each head uses, which (query, key) progressions can hold an allowed
 * pair, and exact pair counts. Pure functions of the problem; no memory. */
#ifndef RDA_PLAN_H
#define RDA_PLAN_H

#include "internal.h"

/* Rows of one rank: up to two ranges of sequence positions, stored one
 * after the other in the rank's local tensors. */
typedef struct rda_rows {
    int32_t n;
    int64_t start[2];
    int64_t count[2];
    int64_t local[2]; /* local row index of start[i] */
    int64_t total;
} rda_rows;

rda_status rda_plan_rows(int64_t N, int32_t P, rda_layout layout, int32_t rank, rda_rows *rows,
                         char *msg);

/* The offset of pattern i used by head h, or -1 when head h does not use
 * pattern i (groups mode). */
int64_t rda_plan_offset(const rda_problem *p, int64_t h, int32_t i);

/* Factor applied to the merged output: 1/G in groups mode, else 1. */
double rda_plan_output_factor(const rda_problem *p);

/* A block job: query positions q_first + j*stride (j < q_count) against up
 * to two key progressions k_first[c] + j*stride (j < k_count[c]), all inside
 * one segment of one pattern with one offset. *_local give the local row
 * index of each progression's first row in the query rows / key block. */
typedef struct rda_job {
    int64_t stride;
    int64_t q_first, q_count, q_local;
    int32_t nk;
    int64_t k_first[2], k_count[2], k_local[2];
} rda_job;

/* Enumerates the jobs of pattern i with offset o between query rows qr and
 * key rows kr, pruning pairs that hold no allowed key. Writes at most cap
 * jobs when jobs != NULL; returns the number of jobs either way. kr == NULL:
 * the query progressions alone (no keys, none pruned). */
int64_t rda_plan_jobs(const rda_problem *p, int32_t i, int64_t o, const rda_rows *qr,
                      const rda_rows *kr, rda_job *jobs, int64_t cap);

/* Allowed (query, key) pairs of one job. */
int64_t rda_job_pairs(const rda_job *job, bool causal);

/* Ring steps needed: 1 + the largest s such that some rank needs the key
 * block of rank (p - s) mod P. */
int32_t rda_plan_ring_steps(const rda_problem *p, int32_t P);

/* Allowed pairs of the whole problem for one batch element, summed over
 * heads and patterns (independent of the job enumeration). */
int64_t rda_plan_total_pairs(const rda_problem *p);

/* ---- steps: the work of one ring step, as phases of parallel tiles ---- */

/* Heads that share one pattern and offset, hence one job list. */
typedef struct rda_class {
    int64_t first_head, nheads; /* into rda_phase.heads */
    int64_t first_tile, ntiles; /* into rda_phase.tiles */
    int64_t first_item;         /* work items of the earlier classes of the phase */
    int64_t final;              /* nothing later touches these rows: write O directly */
} rda_class;

/* A tile: up to bq consecutive queries of one job, from query index first. */
typedef struct rda_tile {
    int64_t job, first;
} rda_tile;

/* Classes whose rows are disjoint, so that all their work items (batch,
 * head, tile) can run at once; rda_item_place maps an item to its place. */
typedef struct rda_phase {
    int64_t bq;
    rda_job *jobs;
    int64_t njobs, jobs_cap;
    rda_tile *tiles;
    int64_t ntiles, tiles_cap;
    int64_t *heads;
    int64_t nheads, heads_cap;
    rda_class *classes;
    int64_t nclasses, classes_cap;
    int64_t items; /* work items in the phase */
    /* set by a backend that runs no finishing pass after a single-step
     * call: the last step also lists the rows no pattern of their head
     * selects (groups mode), as zero-output jobs (no keys) */
    bool zero_uncovered;
    int64_t zero_bq; /* rows per tile of those jobs (0: bq) */
} rda_phase;

#ifdef __CUDACC__
#define RDA_HOST_DEVICE __host__ __device__
#else
#define RDA_HOST_DEVICE
#endif

/* Work item `item` of a phase: returns its class (the last one whose
 * first_item <= item) and places it there. Within a class the tiles of one
 * batch and head are consecutive items, so that the CTAs running at once
 * share that head's keys and values in cache, and the last tile of the class
 * comes first (in causal work the one with the most keys). bh: batch-major
 * b * nheads + (index into the class's heads). */
static inline RDA_HOST_DEVICE int64_t rda_item_place(const rda_class *classes, int64_t nclasses, int64_t item,
                                                     int64_t *tile, int64_t *bh) {
    int64_t c = 0;
    while (c + 1 < nclasses && classes[c + 1].first_item <= item) c++;
    const int64_t i = item - classes[c].first_item;
    *bh = i / classes[c].ntiles;
    *tile = classes[c].first_tile + classes[c].ntiles - 1 - i % classes[c].ntiles;
    return c;
}

/* The key tiles of a phase, for kernels that take a tile of keys and run
 * over the queries of its job (the backward's dK/dV): every job's keys in
 * tiles of bk, as rda_tile {job, first} with first = k0 in the job's first
 * key progression and k_count[0] + k0 in its second; under causal masking
 * none whose keys all come after the job's last query. kph shares ph's
 * jobs; its classes are ph's with first_tile, ntiles and first_item over
 * the key tiles (classes left without tiles or heads are dropped), and its
 * items count them. hmod > 1 keeps only the heads h with h % hmod == hrem,
 * written into heads (room for ph->nheads; NULL when hmod == 1, which
 * shares ph's heads): with hmod = H / Hkv the items of one such phase meet
 * no K/V row of one head twice, when the phase was planned over one query
 * range (its jobs then lie in distinct segments). Writes at most tiles_cap
 * tiles into tiles and ph->nclasses classes into classes; returns the
 * number of tiles the phase needs (more than tiles_cap: nothing usable was
 * written). */
int64_t rda_plan_key_tiles(const rda_phase *ph, const rda_problem *p, int64_t bk, int64_t hmod, int64_t hrem,
                           rda_tile *tiles, int64_t tiles_cap, rda_class *classes, int64_t *heads,
                           rda_phase *kph);

/* Host memory for the phase tables of a rank with query rows qr. */
size_t rda_plan_phase_bytes(const rda_problem *p, const rda_rows *qr, int64_t bq);
rda_status rda_plan_phase_init(rda_phase *ph, rda_carver *c, const rda_problem *p,
                               const rda_rows *qr, int64_t bq);

/* Runs one phase; returns a status. */
typedef rda_status (*rda_phase_run)(void *arg, const rda_phase *ph);

/* Builds the phases of one ring step (query rows qr against key block kr)
 * and hands each to run. Every class of a phase touches rows no other class
 * of it touches; longnet gets one phase per pattern (patterns share rows).
 * last_step marks classes whose rows are then complete. Adds the pairs of
 * every job to *pairs. */
rda_status rda_plan_step(rda_phase *ph, const rda_problem *p, const rda_rows *qr,
                         const rda_rows *kr, bool last_step, rda_phase_run run, void *arg,
                         int64_t *pairs, char *msg);

/* rda_plan_step over the query ranges of qr one at a time: the jobs of a
 * class then lie in distinct segments, so no key row meets two items of a
 * phase for one head (a zig-zag rank's two ranges can share a segment,
 * hence its keys). For kernels that add to key rows without atomics. */
rda_status rda_plan_step_per_range(rda_phase *ph, const rda_problem *p, const rda_rows *qr,
                                   const rda_rows *kr, bool last_step, rda_phase_run run, void *arg,
                                   int64_t *pairs, char *msg);

#endif
