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
 * jobs when jobs != NULL; returns the number of jobs either way. */
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

#endif
