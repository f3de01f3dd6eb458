#ifndef RDA_RUNCMD_H
#define RDA_RUNCMD_H
#include <stdint.h>

int run_main(int argc, char **argv);
/* "1,2,3" -> out; the count, or -1 on a malformed list or more than max values. */
int parse_i64_list(const char *s, int64_t *out, int32_t max);
int ring_main(int argc, char **argv); /* tools/ringcmd.c: real ranks under mpirun */
#endif
