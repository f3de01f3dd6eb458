#ifndef RDA_RUNCMD_H
#define RDA_RUNCMD_H
#include <stdint.h>

int run_main(int argc, char **argv);
/* "1,2,3" -> out; the count, or -1 on a malformed list (an empty item, a
 * trailing comma, a value out of int64 range) or more than max values. */
int parse_i64_list(const char *s, int64_t *out, int32_t max);
/* The whole string s as an integer in [lo, hi]: 0, else -1 (nothing written). */
int parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* The whole string s as a finite number: 0, else -1. */
int parse_num(const char *s, double *out);
int ring_main(int argc, char **argv); /* tools/ringcmd.c: real ranks under mpirun */
#endif
