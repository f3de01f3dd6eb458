/* Checker of the CUDA backward's tile code against the fp64 reference, on
 * the host: the same attend_bwd_item (src/cuda/attend_bwd.cuh) that each CTA
 * of attend_bwd runs, here as one thread per work item over the shared
 * planner's phases, then its fp32 dQ, dK, dV against the reference's. It
 * needs no GPU, so index and masking changes to the kernel can be checked
 * before a GPU run; the GPU itself is checked by tests/test_cuda_backward.c.
 *
 *     nvcc -std=c++17 -O2 -Iinclude -Isrc -Itools dev/cuda/bwd_check.cu \
 *          tools/testdata.c build/librda.a -lpthread -lm -o build/bwd_check
 *     build/bwd_check            (prints one line per case, exits 1 on a failure) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {
#include "internal.h"
#include "plan.h"
#include "testdata.h"
}
#include "cuda/attend_bwd.cuh"

static rda_context *cpu, *ref;
static int failures, cases;

struct run_arg {
    attend_args *a;
    std::vector<float> *sm;
    rda_dtype dt;
};

static rda_status run_phase(void *arg, const rda_phase *ph) {
    run_arg *ra = static_cast<run_arg *>(arg);
    attend_args &a = *ra->a;
    a.tab_inline = 0;
    a.jobs = ph->jobs;
    a.tiles = ph->tiles;
    a.heads = ph->heads;
    a.classes = ph->classes;
    a.nclasses = ph->nclasses;
    a.bq = ph->bq;
    for (int64_t item = 0; item < ph->items; item++) {
        float *sm = ra->sm->data();
        if (ra->dt == RDA_DTYPE_F16) attend_bwd_item<__half>(a, item, 0, 1, sm);
        else if (ra->dt == RDA_DTYPE_BF16) attend_bwd_item<__nv_bfloat16>(a, item, 0, 1, sm);
        else attend_bwd_item<float>(a, item, 0, 1, sm);
    }
    return RDA_STATUS_SUCCESS;
}

static void check(int64_t B, int64_t N, int64_t H, int64_t Hkv, int64_t D, rda_config cfg, rda_dtype dt,
                  uint64_t seed) {
    char msg[RDA_MSG_LEN] = "";
    const int64_t nq = B * N * H * D, nk = B * N * Hkv * D, nl = B * H * N;
    const size_t es = rda_dtype_size(dt);
    std::vector<unsigned char> x[4];
    const int64_t cnt[4] = {nq, nk, nk, nq};
    rda_rng rng;
    rda_rng_seed(&rng, seed);
    for (int i = 0; i < 4; i++) {
        x[i].resize(cnt[i] * es);
        rda_fill_uniform(x[i].data(), dt, cnt[i], &rng, -1, 1);
    }
    std::vector<unsigned char> o(nq * es);
    std::vector<float> lse(nl);
    int64_t sq[4] = {B, N, H, D}, sk[4] = {B, N, Hkv, D}, sl[3] = {B, H, N};
    rda_tensor tq = rda_tensor_contiguous(x[0].data(), dt, 4, sq), tk = rda_tensor_contiguous(x[1].data(), dt, 4, sk),
               tv = rda_tensor_contiguous(x[2].data(), dt, 4, sk), tg = rda_tensor_contiguous(x[3].data(), dt, 4, sq),
               to = rda_tensor_contiguous(o.data(), dt, 4, sq), tl = rda_tensor_contiguous(lse.data(), RDA_DTYPE_F32, 3, sl);
    if (rda_attention_forward(cpu, &cfg, &tq, &tk, &tv, &to, &tl)) {
        printf("forward failed: %s\n", rda_context_last_error(cpu));
        failures++;
        return;
    }
    /* the kernel's inputs, as the CUDA backend prepares them */
    rda_problem p;
    rda_rows qr;
    if (rda_problem_from_config(&cfg, N, &p, msg) || rda_plan_rows(N, 1, p.layout, 0, &qr, msg)) {
        printf("config: %s\n", msg);
        failures++;
        return;
    }
    p.B = B, p.H = H, p.Hkv = Hkv, p.D = D, p.dtype = dt;
    std::vector<double> o64(nq), g64(nq);
    rda_to_f64(o.data(), dt, nq, o64.data());
    rda_to_f64(x[3].data(), dt, nq, g64.data());
    std::vector<float> delta(nl), dq(nq, 0.f), dk(nk, 0.f), dv(nk, 0.f);
    for (int64_t i = 0; i < nl; i++) { /* [B, n, H] rows of [B, n, H, D] */
        double s = 0;
        for (int64_t d = 0; d < D; d++) s += (float)o64[i * D + d] * (float)g64[i * D + d];
        delta[i] = (float)s;
    }
    const int64_t bq = bwd_tile_rows(D);
    std::vector<unsigned char> tables(rda_plan_phase_bytes(&p, &qr, bq));
    rda_carver hc = {reinterpret_cast<char *>(tables.data()), tables.size()};
    rda_phase ph;
    if (rda_plan_phase_init(&ph, &hc, &p, &qr, bq)) {
        printf("phase tables\n");
        failures++;
        return;
    }
    ph.zero_uncovered = false;
    attend_args a;
    memset(&a, 0, sizeof(a));
    a.q = x[0].data(), a.k = x[1].data(), a.v = x[2].data(), a.dout = x[3].data();
    for (int i = 0; i < 4; i++) a.qs[i] = tq.strides[i], a.ks[i] = tk.strides[i], a.vs[i] = tv.strides[i], a.gs[i] = tg.strides[i];
    a.lse = lse.data();
    for (int i = 0; i < 3; i++) a.ls[i] = tl.strides[i];
    a.n = N, a.nk = N, a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.causal = p.causal;
    const double scale = p.scale != 0.0 ? p.scale : 1.0 / sqrt((double)D);
    a.scale = (float)scale;
    a.qscale = (float)(scale * 1.4426950408889634);
    a.factor = (float)rda_plan_output_factor(&p);
    a.dq = dq.data(), a.delta = delta.data(), a.dk = dk.data(), a.dv = dv.data();
    std::vector<float> sm(bwd_smem_bytes(D, bq) / sizeof(float));
    run_arg ra = {&a, &sm, dt};
    int64_t pairs = 0;
    if (rda_plan_step(&ph, &p, &qr, &qr, false, run_phase, &ra, &pairs, msg)) {
        printf("plan: %s\n", msg);
        failures++;
        return;
    }
    /* the fp64 reference from the same rounded inputs, O and LSE */
    std::vector<double> x64[3], r64[3];
    for (int i = 0; i < 3; i++) {
        x64[i].resize(cnt[i]);
        rda_to_f64(x[i].data(), dt, cnt[i], x64[i].data());
        r64[i].resize(cnt[i]);
    }
    rda_tensor rq = rda_tensor_contiguous(x64[0].data(), RDA_DTYPE_F64, 4, sq),
               rk = rda_tensor_contiguous(x64[1].data(), RDA_DTYPE_F64, 4, sk),
               rv = rda_tensor_contiguous(x64[2].data(), RDA_DTYPE_F64, 4, sk),
               ro = rda_tensor_contiguous(o64.data(), RDA_DTYPE_F64, 4, sq),
               rg = rda_tensor_contiguous(g64.data(), RDA_DTYPE_F64, 4, sq),
               rdq = rda_tensor_contiguous(r64[0].data(), RDA_DTYPE_F64, 4, sq),
               rdk = rda_tensor_contiguous(r64[1].data(), RDA_DTYPE_F64, 4, sk),
               rdv = rda_tensor_contiguous(r64[2].data(), RDA_DTYPE_F64, 4, sk);
    if (rda_attention_backward(ref, &cfg, &rq, &rk, &rv, &ro, &tl, &rg, &rdq, &rdk, &rdv)) {
        printf("reference: %s\n", rda_context_last_error(ref));
        failures++;
        return;
    }
    const float *got[3] = {dq.data(), dk.data(), dv.data()};
    double worst = 0;
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        rda_error e = rda_compare(got[i], RDA_DTYPE_F32, r64[i].data(), cnt[i]);
        double m = 0;
        for (int64_t j = 0; j < cnt[i]; j++) m = fmax(m, fabs(r64[i][j]));
        /* fp32 sums of the rounded inputs: rounding of fp32 only */
        ok &= e.nonfinite == 0 && (m < 1e-5 ? e.max_abs <= 1e-5 : e.rel_l2 <= 2e-5);
        worst = fmax(worst, e.rel_l2);
    }
    cases++;
    failures += !ok;
    printf("%s B%lld N%lld H%lld/%lld D%lld mode %d causal %d %s: worst rel_l2 %.3g, pairs %lld\n", ok ? "ok  " : "FAIL",
           (long long)B, (long long)N, (long long)H, (long long)Hkv, (long long)D, (int)cfg.mode, cfg.causal,
           rda_dtype_name(dt), worst, (long long)pairs);
}

int main(void) {
    rda_context_params cp = RDA_CONTEXT_PARAMS_INIT;
    cp.backend = RDA_BACKEND_CPU;
    rda_context_create(&cp, &cpu);
    cp.backend = RDA_BACKEND_REFERENCE;
    rda_context_create(&cp, &ref);
    const rda_pattern geo[4] = {{64, 1}, {128, 2}, {256, 4}, {512, 8}}, longer[2] = {{2048, 1}, {100000, 4}},
                      overl[2] = {{256, 1}, {256, 2}};
    const rda_dtype dts[3] = {RDA_DTYPE_F32, RDA_DTYPE_F16, RDA_DTYPE_BF16};
    const int64_t Ns[4] = {1, 97, 300, 1000}, Ds[4] = {64, 40, 128, 256};
    uint64_t seed = 7;
    for (int ni = 0; ni < 4; ni++)
        for (int mode = 0; mode < 3; mode++)
            for (int causal = 0; causal < 2; causal++) {
                rda_config cfg = RDA_CONFIG_INIT;
                cfg.mode = (rda_mode)mode;
                cfg.causal = causal;
                const rda_pattern *pt = ni == 1 ? longer : ni == 2 && mode == 2 ? overl : geo;
                cfg.num_patterns = mode == 0 ? 0 : pt == geo ? 4 : 2;
                for (int i = 0; i < cfg.num_patterns; i++) cfg.patterns[i] = pt[i];
                const int64_t D = Ds[(ni + mode) % 4];
                check(ni < 2 ? 2 : 1, Ns[ni], 6, ni % 2 ? 2 : 6, D, cfg, dts[(ni + causal + mode) % 3], seed++);
            }
    printf("bwd_check: %d of %d cases pass\n", cases - failures, cases);
    rda_context_destroy(cpu);
    rda_context_destroy(ref);
    return failures ? 1 : 0;
}
