#ifndef RDA_RUNCMD_H
#define RDA_RUNCMD_H
int run_main(int argc, char **argv);
int ring_main(int argc, char **argv); /* tools/ringcmd.c: real ranks under mpirun */
#endif
