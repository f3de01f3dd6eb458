#ifndef RDA_RUNCMD_H
#define RDA_RUNCMD_H
int run_main(int argc, char **argv);
#endif
