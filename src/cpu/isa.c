/* Which kernels the CPU fast path runs: every level this build compiled
 * (kern_*.c), best first, and the best one this CPU can run, unless the
 * environment variable RDA_CPU_ISA asks for a lower one (for tests and
 * measurements). Decided once per process. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tile.h"

#if defined(__x86_64__) || defined(_M_X64)
#define RDA_CPU_X86 1
#include <cpuid.h>
extern const rda_cpu_kernels rda_cpu_kernels_avx512, rda_cpu_kernels_avx2, rda_cpu_kernels_sse2;
static const rda_cpu_kernels *const levels[] = {&rda_cpu_kernels_avx512, &rda_cpu_kernels_avx2,
                                                &rda_cpu_kernels_sse2};
#elif defined(__aarch64__)
extern const rda_cpu_kernels rda_cpu_kernels_neon;
static const rda_cpu_kernels *const levels[] = {&rda_cpu_kernels_neon};
#else
extern const rda_cpu_kernels rda_cpu_kernels_generic;
static const rda_cpu_kernels *const levels[] = {&rda_cpu_kernels_generic};
#endif
#define NLEVELS ((int)(sizeof(levels) / sizeof(levels[0])))

int rda_cpu_levels(const rda_cpu_kernels *const **out) {
    *out = levels;
    return NLEVELS;
}

bool rda_cpu_level_supported(const rda_cpu_kernels *k) {
#ifdef RDA_CPU_X86
    /* the features each level's translation unit is compiled with; the
     * compiler's run-time check also requires the OS to save the vector
     * registers (XCR0) */
    __builtin_cpu_init();
    /* F16C from CPUID leaf 1 (ECX bit 29): clang 14's run-time check does not
     * know it by name */
    unsigned eax, ebx, ecx = 0, edx;
    bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1u);
    if (k == &rda_cpu_kernels_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (k == &rda_cpu_kernels_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#endif
    (void)k;
    return true; /* the architecture's baseline */
}

static const rda_cpu_kernels *chosen;
static char chosen_msg[RDA_MSG_LEN];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void) {
    int best = 0;
    while (best + 1 < NLEVELS && !rda_cpu_level_supported(levels[best]))
        best++;
    const char *want = getenv("RDA_CPU_ISA");
    if (!want || !*want) {
        chosen = levels[best];
        return;
    }
    char names[128] = "";
    for (int i = 0; i < NLEVELS; i++) {
        if (strcmp(want, levels[i]->name) == 0) {
            if (i < best) {
                rda_set_msg(chosen_msg,
                            "RDA_CPU_ISA=%s: this CPU lacks it (the best level it has is %s)", want,
                            levels[best]->name);
                return;
            }
            chosen = levels[i];
            return;
        }
        if (i) strcat(names, ", ");
        strcat(names, levels[i]->name);
    }
    rda_set_msg(chosen_msg, "RDA_CPU_ISA=\"%.64s\" names no level of this build (%s)", want, names);
}

const rda_cpu_kernels *rda_cpu_select(char *msg) {
    pthread_once(&once, choose);
    if (!chosen && msg) memcpy(msg, chosen_msg, RDA_MSG_LEN);
    return chosen;
}

const char *rda_cpu_isa(void) {
    const rda_cpu_kernels *k = rda_cpu_select(NULL);
    return k ? k->name : NULL;
}

int32_t rda_cpu_isa_levels(const char **names, int32_t *supported, int32_t cap) {
    for (int32_t i = 0; i < NLEVELS && i < cap; i++) {
        if (names) names[i] = levels[i]->name;
        if (supported) supported[i] = rda_cpu_level_supported(levels[i]);
    }
    return NLEVELS;
}
