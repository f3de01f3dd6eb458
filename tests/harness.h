/* Minimal test harness: CHECK records a failure and goes on; every test
 * program ends with a "N passed, N failed" line and exits non-zero on any
 * failure. Guard bytes around outputs catch stray writes. */
#ifndef RDA_HARNESS_H
#define RDA_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rda.h"
#include "testdata.h"

static int h_pass, h_fail;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            h_pass++;                                                     \
        } else {                                                          \
            h_fail++;                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
        }                                                                 \
    } while (0)

/* Progress after each part of a long test program (times from
 * harness_begin), flushed, so that a run cut short still says how far it
 * got and how long each part took. */
static double h_start;
static inline void harness_begin(void) { h_start = rda_now(); }
static inline void harness_part(const char *part) {
    printf("  %s: %d passed, %d failed so far (%.0f s)\n", part, h_pass, h_fail, rda_now() - h_start);
    fflush(stdout);
}

static inline int harness_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, h_pass, h_fail);
    return h_fail ? 1 : 0;
}

/* A buffer with GUARD bytes of 0xA5 on each side. */
#define GUARD 64
typedef struct {
    unsigned char *raw;
    void *data;
    size_t bytes;
} guarded;

static inline guarded guarded_alloc(size_t bytes, unsigned char fill) {
    guarded g;
    g.bytes = bytes;
    g.raw = malloc(bytes + 2 * GUARD);
    if (!g.raw) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(g.raw, 0xA5, GUARD);
    memset(g.raw + GUARD, fill, bytes);
    memset(g.raw + GUARD + bytes, 0xA5, GUARD);
    g.data = g.raw + GUARD;
    return g;
}

static inline int guards_intact(const guarded *g) {
    for (size_t i = 0; i < GUARD; i++)
        if (g->raw[i] != 0xA5 || g->raw[GUARD + g->bytes + i] != 0xA5) return 0;
    return 1;
}

/* 1 if the payload is still all `fill` (nothing was written). */
static inline int untouched(const guarded *g, unsigned char fill) {
    for (size_t i = 0; i < g->bytes; i++)
        if (((unsigned char *)g->data)[i] != fill) return 0;
    return 1;
}

static inline void guarded_free(guarded *g) { free(g->raw); }

#endif
