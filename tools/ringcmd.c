/* `rda ring`: one ring forward (and with --backward the backward after it)
 * over real ranks, one process each, started by mpirun. Every rank passes
 * the library only its own rows; with --check, rank 0 gathers O (and dQ, dK,
 * dV) and compares them with a one-rank call on the full inputs. A rank that fails prints its status and message and exits
 * non-zero, which ends the job.
 *
 *     mpirun -np 4 rda ring --seq-len 4096 --mode longnet --segments 512,1024 \
 *            --dilations 1,2 --causal --layout zigzag --check */
#include "runcmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rda.h"
#include "testdata.h"

#ifdef RDA_HAVE_MPI
#include <mpi.h>
#include <unistd.h>

#include "device.h"
#ifdef RDA_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

static void usage(void) {
    printf("usage: mpirun -np P rda ring [options]\n"
           "  --seq-len N --batch B --heads H --head-dim D   (default 4096, 1, 8, 64)\n"
           "  --mode dense|groups|longnet --segments w,.. --dilations r,..\n"
           "  --causal --layout contiguous|zigzag --dtype fp32|fp16|bf16\n"
           "  --timeout S      deadline of every ring wait (default 60)\n"
           "  --reps R         forwards to run (default 1)\n"
           "  --check          rank 0 compares the gathered O with one rank's result\n"
           "  --backward       also the backward (random dO): dQ, dK, dV of each rank's rows\n"
           "  --pid-dir DIR    each rank writes DIR/rank<r>.pid; rank 0 writes DIR/ready\n"
           "                   after the first forward (for fault tests)\n"
           "  --skew-config R  rank R flips causal (a configuration mismatch)\n"
           "  --threads T      CPU threads per rank (default 1)\n"
           "  --backend cuda   one GPU per rank (rank %% GPUs), NCCL between them\n");
}

/* Every rank's rows of a [B, n_local, H, D] buffer gathered to rank 0 and
 * put in place in a full [B, N, H, D] one (returned on rank 0, else NULL). */
static char *gather_rows(const char *local, int64_t B, int64_t nl, int64_t N, int P, rda_layout layout,
                         int64_t row_bytes, int rank) {
    int *counts = NULL, *displs = NULL;
    char *all = NULL, *full = NULL;
    int mine = (int)(B * nl * row_bytes);
    if (rank == 0) {
        counts = malloc(sizeof(int) * (size_t)P), displs = malloc(sizeof(int) * (size_t)P);
        all = malloc((size_t)(B * N * row_bytes));
        full = malloc((size_t)(B * N * row_bytes));
    }
    MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0)
        for (int r = 0, o = 0; r < P; o += counts[r], r++) displs[r] = o;
    MPI_Gatherv(local, mine, MPI_BYTE, all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        for (int r = 0; r < P; r++) { /* scatter each rank's rows into place */
            int64_t s2[2], c2[2], rn = 0;
            int32_t k2;
            rda_ring_partition(N, P, layout, r, s2, c2, &k2);
            for (int32_t c = 0; c < k2; c++) rn += c2[c];
            for (int64_t b = 0; b < B; b++)
                for (int32_t c = 0, off = 0; c < k2; off += (int32_t)c2[c], c++)
                    memcpy(full + (b * N + s2[c]) * row_bytes, all + displs[r] + (b * rn + off) * row_bytes,
                           (size_t)(c2[c] * row_bytes));
        }
        free(all), free(counts), free(displs);
    }
    return full;
}

int ring_main(int argc, char **argv) {
    int64_t N = 4096, B = 1, H = 8, D = 64, segs[RDA_MAX_PATTERNS], dils[RDA_MAX_PATTERNS];
    int nseg = 0, ndil = 0, reps = 1, check = 0, skew = -1, threads = 1, gpu = 0, backward = 0;
    double timeout = 60;
    const char *pid_dir = NULL;
    rda_dtype dt = RDA_DTYPE_F32;
    rda_config cfg = RDA_CONFIG_INIT;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--causal")) cfg.causal = 1;
        else if (!strcmp(a, "--check")) check = 1;
        else if (!strcmp(a, "--backward")) backward = 1;
        else if (!strcmp(a, "--backend")) gpu = !strcmp(v, "cuda"), i++;
        else if (!strcmp(a, "--pid-dir")) pid_dir = v, i++;
        else if (!strcmp(a, "--segments") || !strcmp(a, "--dilations")) {
            int n = parse_i64_list(v, a[2] == 's' ? segs : dils, RDA_MAX_PATTERNS);
            if (n < 1) goto bad;
            *(a[2] == 's' ? &nseg : &ndil) = n;
            i++;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_num(v, &timeout) || timeout < 0) goto bad;
            i++;
        } else if (!strcmp(a, "--seq-len") || !strcmp(a, "--batch") || !strcmp(a, "--heads") ||
                   !strcmp(a, "--head-dim") || !strcmp(a, "--reps") || !strcmp(a, "--threads") ||
                   !strcmp(a, "--skew-config")) {
            int64_t x;
            bool small = !strcmp(a, "--reps") || !strcmp(a, "--threads") || !strcmp(a, "--skew-config");
            if (parse_int(v, !strcmp(a, "--skew-config") ? -1 : !strcmp(a, "--threads") ? 0 : 1,
                          !strcmp(a, "--threads") ? 4096 : small ? INT32_MAX : INT64_MAX, &x))
                goto bad;
            if (!strcmp(a, "--seq-len")) N = x;
            else if (!strcmp(a, "--batch")) B = x;
            else if (!strcmp(a, "--heads")) H = x;
            else if (!strcmp(a, "--head-dim")) D = x;
            else if (!strcmp(a, "--reps")) reps = (int)x;
            else if (!strcmp(a, "--threads")) threads = (int)x;
            else skew = (int)x;
            i++;
        }
        else if (!strcmp(a, "--mode")) {
            cfg.mode = !strcmp(v, "groups") ? RDA_MODE_GROUPS : !strcmp(v, "longnet") ? RDA_MODE_LONGNET : RDA_MODE_DENSE;
            i++;
        } else if (!strcmp(a, "--layout")) {
            cfg.layout = !strcmp(v, "zigzag") ? RDA_LAYOUT_ZIGZAG : RDA_LAYOUT_CONTIGUOUS;
            i++;
        } else if (!strcmp(a, "--dtype")) {
            dt = !strcmp(v, "fp16") ? RDA_DTYPE_F16 : !strcmp(v, "bf16") ? RDA_DTYPE_BF16 : RDA_DTYPE_F32;
            i++;
        } else {
            fprintf(stderr, "rda ring: unknown option '%s'\n", a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "rda ring: bad value '%s' for %s\n", v, a);
        return 2;
    }
    if (nseg != ndil || nseg < 0) {
        fprintf(stderr, "rda ring: --segments and --dilations need the same number of values\n");
        return 2;
    }
    cfg.num_patterns = nseg;
    for (int i = 0; i < nseg; i++) cfg.patterns[i] = (rda_pattern){segs[i], dils[i]};
    cfg.timeout_seconds = timeout;

    MPI_Init(NULL, NULL);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    if (pid_dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/rank%d.pid", pid_dir, rank);
        FILE *f = fopen(path, "w");
        if (f) fprintf(f, "%d\n", (int)getpid()), fclose(f);
    }
    if (rank == skew) cfg.causal = !cfg.causal;
    /* the same inputs on every rank; each hands the library only its rows */
    int64_t n = B * N * H * D;
    size_t es = rda_dtype_size(dt);
    char *q = malloc(n * es), *k = malloc(n * es), *v = malloc(n * es), *g = malloc(n * es);
    rda_rng rng;
    rda_rng_seed(&rng, 77);
    rda_fill_uniform(q, dt, n, &rng, -1, 1);
    rda_fill_uniform(k, dt, n, &rng, -1, 1);
    rda_fill_uniform(v, dt, n, &rng, -1, 1);
    rda_fill_uniform(g, dt, n, &rng, -1, 1);
    int64_t st0[2], ct[2];
    int32_t nr;
    rda_status st = rda_ring_partition(N, P, cfg.layout, rank, st0, ct, &nr);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, rda_status_to_string(st));
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int64_t nl = ct[0] + (nr > 1 ? ct[1] : 0), row_bytes = H * D * (int64_t)es;
    char *lq = malloc(B * nl * row_bytes + 1), *lk = malloc(B * nl * row_bytes + 1),
         *lv = malloc(B * nl * row_bytes + 1), *lo = malloc(B * nl * row_bytes + 1),
         *lg = malloc(B * nl * row_bytes + 1), *lgrad[3];
    for (int i = 0; i < 3; i++) lgrad[i] = malloc(B * nl * row_bytes + 1);
    float *llse = malloc(sizeof(float) * (size_t)(B * H * nl) + 1);
    for (int64_t b = 0; b < B; b++)
        for (int32_t c = 0, off = 0; c < nr; off += (int32_t)ct[c], c++) {
            size_t src = (size_t)((b * N + st0[c]) * row_bytes), dst = (size_t)((b * nl + off) * row_bytes);
            memcpy(lq + dst, q + src, (size_t)(ct[c] * row_bytes));
            memcpy(lk + dst, k + src, (size_t)(ct[c] * row_bytes));
            memcpy(lv + dst, v + src, (size_t)(ct[c] * row_bytes));
            memcpy(lg + dst, g + src, (size_t)(ct[c] * row_bytes));
        }
    int64_t ls[4] = {B, nl, H, D}, lls[3] = {B, H, nl};
    rda_tensor tq = rda_tensor_contiguous(lq, dt, 4, ls), tk = rda_tensor_contiguous(lk, dt, 4, ls),
               tv = rda_tensor_contiguous(lv, dt, 4, ls), to = rda_tensor_contiguous(lo, dt, 4, ls),
               tl = rda_tensor_contiguous(llse, RDA_DTYPE_F32, 3, lls), tg = rda_tensor_contiguous(lg, dt, 4, ls),
               tgrad[3];
    for (int i = 0; i < 3; i++) tgrad[i] = rda_tensor_contiguous(lgrad[i], dt, 4, ls);
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.num_threads = threads;
    rda_context *ctx, *gctx = NULL;
    rda_comm *comm;
    rda_context_create(&cp, &ctx);
    void *dmem = NULL;
    size_t lbytes = (size_t)(B * nl * row_bytes);
    if (gpu) {
#ifdef RDA_HAVE_NCCL
        int ndev = 0;
        cudaGetDeviceCount(&ndev);
        if (ndev < 1) {
            fprintf(stderr, "rank %d: --backend cuda, but no GPU\n", rank);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        int dev = rank % ndev;
        cudaSetDevice(dev);
        ncclUniqueId id;
        if (rank == 0) ncclGetUniqueId(&id);
        MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD); /* the NCCL id travels over MPI */
        static ncclComm_t nc;
        if (ncclCommInitRank(&nc, P, id, rank) != ncclSuccess) {
            fprintf(stderr, "rank %d: ncclCommInitRank failed\n", rank);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        cp.backend = RDA_BACKEND_CUDA;
        cp.device = dev;
        if ((st = rda_context_create(&cp, &gctx)) || (st = rda_comm_create_nccl(&nc, dev, NULL, &comm))) {
            fprintf(stderr, "rank %d: %s\n", rank, rda_status_to_string(st));
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        dmem = dev_alloc(4 * lbytes);
        dev_upload(dmem, lq, lbytes);
        dev_upload((char *)dmem + lbytes, lk, lbytes);
        dev_upload((char *)dmem + 2 * lbytes, lv, lbytes);
        tq.data = dmem, tk.data = (char *)dmem + lbytes, tv.data = (char *)dmem + 2 * lbytes;
        to.data = (char *)dmem + 3 * lbytes;
#else
        fprintf(stderr, "rda ring: --backend cuda needs a build with CUDA and NCCL\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
#endif
    } else {
        MPI_Comm world = MPI_COMM_WORLD;
        if ((st = rda_comm_create_mpi(&world, &comm))) {
            fprintf(stderr, "rank %d: %s\n", rank, rda_status_to_string(st));
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    rda_context *rctx = gctx ? gctx : ctx;
    double slowest = 0;
    for (int r = 0; r < reps; r++) {
        rda_ring_stats stats;
        double t0 = MPI_Wtime();
        st = rda_ring_forward(rctx, comm, &cfg, N, &tq, &tk, &tv, &to, backward ? &tl : NULL, &stats);
        if (!st && backward)
            st = rda_ring_backward(rctx, comm, &cfg, N, &tq, &tk, &tv, &to, &tl, &tg, &tgrad[0], &tgrad[1],
                                   &tgrad[2], &stats);
        if (st) {
            fprintf(stderr, "rda ring: rank %d: %s: %s (after %.2f s)\n", rank, rda_status_to_string(st),
                    rda_context_last_error(rctx), MPI_Wtime() - t0);
            fflush(stderr);
            sleep(1); /* let the other survivors report too */
            _exit(3); /* ends the job: mpirun stops the other ranks */
        }
        if (stats.seconds > slowest) slowest = stats.seconds;
        if (r == 0 && pid_dir && rank == 0) {
            char path[512];
            snprintf(path, sizeof path, "%s/ready", pid_dir);
            FILE *f = fopen(path, "w");
            if (f) fclose(f);
        }
    }
    if (dmem) dev_download(lo, to.data, lbytes);
    double worst = 0;
    MPI_Reduce(&slowest, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    int rc = 0;
    if (check) {
        /* gather every rank's rows of O (and dQ, dK, dV) to rank 0 in place */
        const char *locals[4] = {lo, lgrad[0], lgrad[1], lgrad[2]};
        char *full[4] = {NULL, NULL, NULL, NULL};
        for (int t = 0; t < (backward ? 4 : 1); t++) full[t] = gather_rows(locals[t], B, nl, N, P, cfg.layout, row_bytes, rank);
        if (rank == 0) {
            char *one[4];
            for (int t = 0; t < 4; t++) one[t] = malloc((size_t)(n * es));
            float *lse1 = malloc(sizeof(float) * (size_t)(B * H * N));
            int64_t fs[4] = {B, N, H, D}, fls[3] = {B, H, N};
            rda_tensor fq = rda_tensor_contiguous(q, dt, 4, fs), fk = rda_tensor_contiguous(k, dt, 4, fs),
                       fv = rda_tensor_contiguous(v, dt, 4, fs), fo = rda_tensor_contiguous(one[0], dt, 4, fs),
                       fl = rda_tensor_contiguous(lse1, RDA_DTYPE_F32, 3, fls), fg = rda_tensor_contiguous(g, dt, 4, fs),
                       f1 = rda_tensor_contiguous(one[1], dt, 4, fs), f2 = rda_tensor_contiguous(one[2], dt, 4, fs),
                       f3 = rda_tensor_contiguous(one[3], dt, 4, fs);
            rda_status s1 = rda_attention_forward(ctx, &cfg, &fq, &fk, &fv, &fo, &fl);
            if (!s1 && backward) s1 = rda_attention_backward(ctx, &cfg, &fq, &fk, &fv, &fo, &fl, &fg, &f1, &f2, &f3);
            double *ref = malloc(sizeof(double) * (size_t)n), worst_rel = 0;
            static const char *names[4] = {"O", "dQ", "dK", "dV"};
            char detail[256] = "";
            rc = s1 != RDA_STATUS_SUCCESS;
            for (int t = 0; t < (backward ? 4 : 1); t++) {
                rda_to_f64(one[t], dt, n, ref);
                rda_error e = rda_compare(full[t], dt, ref, n);
                /* a ring sums in another order: the forward's bound for O, the gradients' for the rest */
                double bound = t == 0 ? rda_tolerance(dt) : dt == RDA_DTYPE_F32 ? 2e-5 : dt == RDA_DTYPE_F16 ? 2e-3 : 1.6e-2;
                rc |= e.nonfinite || e.rel_l2 > bound;
                if (e.rel_l2 > worst_rel) worst_rel = e.rel_l2;
                size_t used = strlen(detail);
                snprintf(detail + used, sizeof detail - used, "%s%s %.2e", t ? ", " : "", names[t], e.rel_l2);
            }
            printf("rda ring: P=%d N=%lld mode=%d causal=%d layout=%s %s%s: slowest rank %.3f ms, "
                   "rel_l2 vs one rank %s: %s\n",
                   P, (long long)N, (int)cfg.mode, cfg.causal, cfg.layout ? "zigzag" : "contiguous",
                   rda_dtype_name(dt), backward ? " forward+backward" : "", 1e3 * worst, detail, rc ? "FAIL" : "ok");
            for (int t = 0; t < 4; t++) free(one[t]), free(full[t]);
            free(ref), free(lse1);
        }
    } else if (rank == 0) {
        printf("rda ring: P=%d N=%lld: slowest rank %.3f ms\n", P, (long long)N, 1e3 * worst);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    rda_comm_destroy(comm);
    rda_context_destroy(gctx);
    rda_context_destroy(ctx);
    dev_free(dmem);
    free(q), free(k), free(v), free(g), free(lq), free(lk), free(lv), free(lo), free(lg), free(llse);
    for (int i = 0; i < 3; i++) free(lgrad[i]);
    MPI_Finalize();
    return rc;
}
#else
int ring_main(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "rda ring: this build has no MPI engine (install MPI and rebuild)\n");
    return 2;
}
#endif
