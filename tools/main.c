/* rda: the command-line tool. `rda` alone runs the seed benchmark. */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "rda.h"
#include "runcmd.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: rda [bench] [options]   reproduce the seed benchmark report (default)\n"
            "       rda run [options]       one attention call on .npy files\n"
            "       mpirun -np P rda ring [options]   one ring forward over P real ranks (MPI)\n"
            "       rda version             library version\n"
            "       rda <command> --help    options of a command\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            usage(stdout);
            printf("\n");
            return bench_main(1, (char *[]){"--help"});
        }
        return bench_main(argc - 1, argv + 1);
    }
    if (!strcmp(argv[1], "bench")) return bench_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "run")) return run_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ring")) return ring_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "version")) {
        printf("rda %s\n", rda_version_string());
        const char *names[8];
        int32_t has[8], n = rda_cpu_isa_levels(names, has, 8);
        const char *isa = rda_cpu_isa();
        printf("cpu kernels in use: %s\ncpu kernels in this build:", isa ? isa : "none (RDA_CPU_ISA refused)");
        for (int32_t i = 0; i < n && i < 8; i++) printf(" %s", names[i]);
        printf("\ncpu kernels this CPU runs:");
        for (int32_t i = 0; i < n && i < 8; i++)
            if (has[i]) printf(" %s", names[i]);
        printf("\n");
        return isa ? 0 : 1;
    }
    if (!strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "rda: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
