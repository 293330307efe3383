// The self-check's real kernels: kernels/*.cu compiled here exactly as the simulation build
// compiles them, each checked against a host loop, and the launch timings (here, with the kernels
// they time, so the launch compiles as a generated launch unit does: kernel and launch together).
//
// Host references model the device's fixed reduction tree (block_sum) where the kernels use
// it, so every comparison is exact unless it says otherwise.
#include "selfcheck.h"

#include "elementwise.cu"
#include "mixed_op.cu"
#include "norm.cu"
#include "conv.cu"

#include <time.h>

#include <algorithm>
#include <cmath>

void test_add() {
    printf("add_f32 (grid-stride, several elements per thread)\n");
    const int n = 100003;
    const auto a = random_floats(n, 1), b = random_floats(n, 2);
    Dev<float> da(n), db(n), dy(n);
    da.fill(a);
    db.fill(b);
    int rc = launch("add_f32", dim3(40), dim3(BLOCK), 0, [&] { add_f32(n, da.p, db.p, dy.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += !same_bits(dy[i], a[i] + b[i]);
    CHECK(bad == 0, "%d elements differ", bad);
}

void test_dot_and_finish() {
    printf("dot_f32 + reduce_finish_f64 (block_sum with its warp-0 shuffle stage)\n");
    const int n = 1000007, blocks = 1024, threads = BLOCK;
    const auto a = random_floats(n, 3), b = random_floats(n, 4);
    Dev<float> da(n), db(n);
    Dev<double> partials(blocks), out(1);
    da.fill(a);
    db.fill(b);
    int rc = launch("dot_f32", dim3(blocks), dim3(threads), 0, [&] { dot_f32(n, da.p, db.p, partials.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    std::vector<double> want(blocks);
    for (int blk = 0; blk < blocks; ++blk) {
        std::vector<double> acc(threads, 0.0);
        for (int t = 0; t < threads; ++t)
            for (long long i = (long long)blk * threads + t; i < n; i += (long long)threads * blocks)
                acc[t] += (double)a[i] * (double)b[i];
        want[blk] = model_block_sum(acc);
    }
    int bad = 0;
    for (int blk = 0; blk < blocks; ++blk) bad += !same_bits(partials[blk], want[blk]);
    CHECK(bad == 0, "%d partials differ from the modelled tree", bad);

    const int fin_threads = 1024;
    rc = launch("reduce_finish_f64", dim3(1), dim3(fin_threads), 0,
                [&] { reduce_finish_f64(blocks, partials.p, out.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    std::vector<double> acc(fin_threads, 0.0);
    for (int t = 0; t < fin_threads; ++t)
        for (int i = t; i < blocks; i += fin_threads) acc[t] += want[i];
    const double total = model_block_sum(acc);
    CHECK(same_bits(out[0], total), "finish %.17g, modelled %.17g", out[0], total);
    double naive = 0.0;
    for (int i = 0; i < n; ++i) naive += (double)a[i] * (double)b[i];
    CHECK(std::fabs(out[0] - naive) <= 1e-9 * std::fabs(naive) + 1e-9, "finish %.17g vs naive %.17g", out[0], naive);
}

void test_mixed_op() {
    printf("mixed_op_fwd_f32 / mixed_op_bwd_f32 / mixed_op_bwd_finish_f32\n");
    const int len = 3001, k = 5, blocks = 12, threads = BLOCK;
    const auto alpha_h = random_floats(k, 5, -1.0f, 1.0f);
    const auto dy_h = random_floats(len, 6);
    Dev<float> alpha(k), y(len), dy(len);
    alpha.fill(alpha_h);
    dy.fill(dy_h);
    std::vector<std::vector<float>> xs(k);
    std::vector<Dev<float>*> dx(k), dxv(k);
    MixedOpPtrs p;
    memset(&p, 0, sizeof p);
    for (int j = 0; j < k; ++j) {
        if (j == 2) continue;  // absent input (`none`)
        xs[j] = random_floats(len, 10 + j);
        dxv[j] = new Dev<float>(len);
        dxv[j]->fill(xs[j]);
        p.x[j] = dxv[j]->p;
        if (j != 4) {
            dx[j] = new Dev<float>(len);
            for (int i = 0; i < len; ++i) (*dx[j])[i] = 0.25f * i;  // pending gradient for acc_mask
            p.dx[j] = dx[j]->p;
        }
    }
    int rc = launch("mixed_op_fwd_f32", dim3(blocks), dim3(threads), 0,
                    [&] { mixed_op_fwd_f32(len, k, p, alpha.p, y.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    double w64[MAX_K], m = -INFINITY, s = 0.0;
    for (int j = 0; j < k; ++j) m = fmax(m, (double)alpha_h[j]);
    for (int j = 0; j < k; ++j) {
        w64[j] = exp((double)alpha_h[j] - m);
        s += w64[j];
    }
    for (int j = 0; j < k; ++j) w64[j] /= s;
    int bad = 0;
    for (int i = 0; i < len; ++i) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j)
            if (p.x[j]) acc += (float)w64[j] * xs[j][i];
        bad += !same_bits(y[i], acc);
    }
    CHECK(bad == 0, "fwd: %d elements differ", bad);

    const unsigned acc_mask = 0x2;  // dx_1 += ..., the others dx_j = ...
    Dev<double> partials(blocks * MAX_K);
    rc = launch("mixed_op_bwd_f32", dim3(blocks), dim3(threads), 0,
                [&] { mixed_op_bwd_f32(len, k, p, acc_mask, alpha.p, dy.p, partials.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    bad = 0;
    for (int j = 0; j < k; ++j) {
        if (!p.dx[j]) continue;
        for (int i = 0; i < len; ++i) {
            const float d = (float)w64[j] * dy_h[i];
            const float want = ((acc_mask >> j) & 1u) ? 0.25f * i + d : d;
            bad += !same_bits((*dx[j])[i], want);
        }
    }
    CHECK(bad == 0, "bwd dx: %d elements differ", bad);
    std::vector<double> want_partials(blocks * MAX_K);
    bad = 0;
    for (int b = 0; b < blocks; ++b)
        for (int j = 0; j < k; ++j) {
            std::vector<double> acc(threads, 0.0);
            for (int t = 0; t < threads; ++t)
                for (int i = b * threads + t; i < len; i += threads * blocks)
                    if (p.x[j]) acc[t] += (double)dy_h[i] * (double)xs[j][i];
            want_partials[b * MAX_K + j] = model_block_sum(acc);
            bad += !same_bits(partials[b * MAX_K + j], want_partials[b * MAX_K + j]);
        }
    CHECK(bad == 0, "bwd partials: %d differ", bad);

    Dev<float> dalpha(k);
    rc = launch("mixed_op_bwd_finish_f32", dim3(1), dim3(MAX_K), 0,
                [&] { mixed_op_bwd_finish_f32(blocks, k, alpha.p, partials.p, dalpha.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    double dots[MAX_K], mean = 0.0;
    for (int j = 0; j < k; ++j) {
        dots[j] = 0.0;
        for (int b = 0; b < blocks; ++b) dots[j] += want_partials[b * MAX_K + j];
    }
    for (int i = 0; i < k; ++i) mean += w64[i] * dots[i];
    bad = 0;
    for (int j = 0; j < k; ++j) bad += !same_bits(dalpha[j], (float)(w64[j] * (dots[j] - mean)));
    CHECK(bad == 0, "finish dalpha: %d differ", bad);
    for (int j = 0; j < k; ++j) {
        delete dx[j];
        delete dxv[j];
    }
}

void test_batch_norm() {
    printf("batch_norm_train_fwd_f32 (two block_sums per block, early return after them)\n");
    const int n = 4, c = 3, plane = 77, threads = BLOCK;
    const double eps = 1e-5, momentum = 0.1;
    const auto x_h = random_floats((size_t)n * c * plane, 20);
    Dev<float> x(n * c * plane), gamma(c), beta(c), rm(c), rv(c), sm(c), si(c), ab(2 * c);
    x.fill(x_h);
    const std::vector<float> g_h = {1.5f, -0.5f, 2.0f}, b_h = {0.1f, 0.2f, -0.3f}, rm_h = {0.f, 1.f, 2.f},
                             rv_h = {1.f, 2.f, 3.f};
    gamma.fill(g_h);
    beta.fill(b_h);
    rm.fill(rm_h);
    rv.fill(rv_h);
    int rc = launch("batch_norm_train_fwd_f32", dim3(c), dim3(threads), 0, [&] {
        batch_norm_train_fwd_f32(n, c, plane, eps, momentum, x.p, gamma.p, beta.p, rm.p, rv.p, sm.p, si.p, ab.p);
    });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int ch = 0; ch < c; ++ch) {
        const double count = (double)n * plane;
        auto at = [&](int t) { return (double)x_h[((size_t)(t / plane) * c + ch) * plane + t % plane]; };
        std::vector<double> s(threads, 0.0), q(threads, 0.0);
        for (int t = 0; t < threads; ++t)
            for (int u = t; u < n * plane; u += threads) s[t] += at(u);
        const double mean = model_block_sum(s) / count;
        for (int t = 0; t < threads; ++t)
            for (int u = t; u < n * plane; u += threads) q[t] += (at(u) - mean) * (at(u) - mean);
        const double var = model_block_sum(q) / count;
        const double invstd = 1.0 / sqrt(var + eps), unbias = count / (count - 1.0);
        bad += !same_bits(rm[ch], (float)((1.0 - momentum) * rm_h[ch] + momentum * mean));
        bad += !same_bits(rv[ch], (float)((1.0 - momentum) * rv_h[ch] + momentum * var * unbias));
        bad += !same_bits(sm[ch], (float)mean);
        bad += !same_bits(si[ch], (float)invstd);
        bad += !same_bits(ab[ch], (float)(invstd * g_h[ch]));
        bad += !same_bits(ab[c + ch], (float)(b_h[ch] - mean * invstd * g_h[ch]));
    }
    CHECK(bad == 0, "%d outputs differ", bad);
}

void test_dwconv() {
    printf("dwconv2d_fwd_f32 (2-D blocks, DYNAMIC_SHARED tile + halo, early return after the barrier)\n");
    Geom g = {2, 3, 21, 19, 0, 0, 3, 2, 1, 2};
    g.ho = (g.h + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    g.wo = (g.w + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    const auto x_h = random_floats((size_t)g.n * g.c * g.h * g.w, 30);
    const auto w_h = random_floats((size_t)g.c * g.k * g.k, 31);
    Dev<float> x(x_h.size()), w(w_h.size()), y((size_t)g.n * g.c * g.ho * g.wo);
    x.fill(x_h);
    w.fill(w_h);
    const int in_h = (TILE - 1) * g.stride + (g.k - 1) * g.dil + 1;
    const unsigned shm = (unsigned)((in_h * in_h + g.k * g.k) * sizeof(float));
    for (int relu = 0; relu < 2; ++relu) {
        const dim3 grid((g.wo + TILE - 1) / TILE, (g.ho + TILE - 1) / TILE, g.n * g.c);
        int rc = launch("dwconv2d_fwd_f32", grid, dim3(TILE, TILE), shm,
                        [&] { dwconv2d_fwd_f32(g, relu, x.p, w.p, y.p); });
        CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
        int bad = 0;
        for (int pl = 0; pl < g.n * g.c; ++pl)
            for (int oh = 0; oh < g.ho; ++oh)
                for (int ow = 0; ow < g.wo; ++ow) {
                    float acc = 0.0f;
                    for (int kh = 0; kh < g.k; ++kh)
                        for (int kw = 0; kw < g.k; ++kw) {
                            const int ih = oh * g.stride - g.pad + kh * g.dil, iw = ow * g.stride - g.pad + kw * g.dil;
                            float v = 0.0f;
                            if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
                                v = x_h[((size_t)pl * g.h + ih) * g.w + iw];
                                if (relu && !(v > 0.0f)) v = 0.0f;
                            }
                            acc += w_h[(pl % g.c) * g.k * g.k + kh * g.k + kw] * v;
                        }
                    bad += !same_bits(y[((size_t)pl * g.ho + oh) * g.wo + ow], acc);
                }
        CHECK(bad == 0, "relu %d: %d outputs differ", relu, bad);
    }
}

// The host model of dwconv2d_bwd_weight_f32's block (ch, tap): thread t accumulates (in float,
// in its loop order) the products of its positions t, t + 256, ...; then block_sum in double.
static float model_dw_bwd_weight(const Geom& g, int relu, const std::vector<float>& x, const std::vector<float>& dy,
                                 int ch, int tap) {
    const int kh = tap / g.k, kw = tap % g.k, per = g.ho * g.wo, threads = BLOCK;
    std::vector<double> acc(threads, 0.0);
    for (int t = 0; t < threads; ++t) {
        float a = 0.0f;
        for (int u = t; u < g.n * per; u += threads) {
            const int s = u / per, o = u % per, oh = o / g.wo, ow = o % g.wo;
            const int ih = oh * g.stride - g.pad + kh * g.dil, iw = ow * g.stride - g.pad + kw * g.dil;
            if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
            const size_t plane = (size_t)s * g.c + ch;
            float v = x[plane * g.h * g.w + ih * g.w + iw];
            if (relu && !(v > 0.0f)) v = 0.0f;
            a += dy[plane * per + o] * v;
        }
        acc[t] = (double)a;
    }
    return (float)model_block_sum(acc);
}

void test_dwconv_bwd_weight() {
    printf("dwconv2d_bwd_weight_f32 (grid (C, k*k) x 256: a short loop, then block_sum)\n");
    Geom g = {3, 4, 9, 11, 0, 0, 3, 1, 1, 2};
    g.ho = (g.h + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    g.wo = (g.w + 2 * g.pad - g.dil * (g.k - 1) - 1) / g.stride + 1;
    const auto x_h = random_floats((size_t)g.n * g.c * g.h * g.w, 32);
    const auto dy_h = random_floats((size_t)g.n * g.c * g.ho * g.wo, 33);
    Dev<float> x(x_h.size()), dy(dy_h.size()), dw((size_t)g.c * g.k * g.k);
    x.fill(x_h);
    dy.fill(dy_h);
    for (int relu = 0; relu < 2; ++relu) {
        int rc = launch("dwconv2d_bwd_weight_f32", dim3(g.c, g.k * g.k), dim3(BLOCK), 0,
                        [&] { dwconv2d_bwd_weight_f32(g, relu, x.p, dy.p, dw.p); });
        CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
        int bad = 0;
        for (int ch = 0; ch < g.c; ++ch)
            for (int tap = 0; tap < g.k * g.k; ++tap)
                bad += !same_bits(dw[ch * g.k * g.k + tap], model_dw_bwd_weight(g, relu, x_h, dy_h, ch, tap));
        CHECK(bad == 0, "relu %d: %d of %d weights differ from the modelled tree", relu, bad, g.c * g.k * g.k);
    }
}

static uint16_t ref_bf16(float f) {
    // Independent of the bit trick: pick the nearer of the two bf16 neighbours in double, ties to
    // the even one; NaN gives the device's canonical 0x7FFF.
    if (std::isnan(f)) return 0x7fff;
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t lo = (uint16_t)(u >> 16);
    if ((u & 0xffff) == 0) return lo;
    const uint16_t hi = (uint16_t)(lo + 1);  // next magnitude up (same sign); 0x7F80 is inf
    auto val = [](uint16_t b) {
        const uint32_t v = (uint32_t)b << 16;
        float r;
        memcpy(&r, &v, 4);
        return (double)r;
    };
    double vhi = val(hi);
    if ((hi & 0x7fff) == 0x7f80) vhi = std::copysign(std::ldexp(1.0, 128), (double)f);  // rounding limit
    const double dlo = std::fabs((double)f - val(lo)), dhi = std::fabs((double)f - vhi);
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1) ? hi : lo;
}

void test_bf16() {
    printf("to_bf16_f32 / from_bf16_f32: ties to even, NaN -> 0x7FFF, inf, overflow, subnormals\n");
    const uint32_t specials[] = {
        0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0xbf808000, 0x3f80ffff, 0x7fc00000, 0xffc00001,
        0x7f800001, 0xff812345, 0x7f800000, 0xff800000, 0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0x00000000,
        0x80000000, 0x00012345, 0x00018000, 0x00028000, 0x807fffff, 0x00800000, 0x4b800001, 0x3e99999a};
    std::vector<float> xs;
    for (uint32_t s : specials) {
        float f;
        memcpy(&f, &s, 4);
        xs.push_back(f);
    }
    std::mt19937 rng(40);
    for (int i = 0; i < 20000; ++i) {
        const uint32_t u = rng();
        float f;
        memcpy(&f, &u, 4);
        xs.push_back(f);
    }
    const int n = (int)xs.size();
    Dev<float> x(n), back(n);
    Dev<__nv_bfloat16> h(n);
    x.fill(xs);
    int rc = launch("to_bf16_f32", dim3(8), dim3(BLOCK), 0, [&] { to_bf16_f32(n, x.p, h.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    rc = launch("from_bf16_f32", dim3(8), dim3(BLOCK), 0, [&] { from_bf16_f32(n, h.p, back.p); });
    CHECK(rc == 0, "rc %d: %s", rc, nasrs_sim_last_error());
    int bad = 0;
    for (int i = 0; i < n; ++i) {
        uint16_t got;
        memcpy(&got, &h[i], 2);
        if (got != ref_bf16(xs[i])) {
            if (bad < 5) printf("  %08x -> %04x, want %04x\n", (unsigned)0, got, ref_bf16(xs[i]));
            ++bad;
        }
        const uint32_t wide = (uint32_t)got << 16;
        float f;
        memcpy(&f, &wide, 4);
        bad += !same_bits(back[i], f);
    }
    CHECK(bad == 0, "%d conversions differ", bad);
    uint16_t b0, b1, b2, b6, b7, b10, b12;
    memcpy(&b0, &h[0], 2);
    memcpy(&b1, &h[1], 2);
    memcpy(&b2, &h[2], 2);
    memcpy(&b6, &h[6], 2);
    memcpy(&b7, &h[7], 2);
    memcpy(&b10, &h[10], 2);
    memcpy(&b12, &h[12], 2);
    CHECK(b0 == 0x3f80 && b1 == 0x3f80 && b2 == 0x3f82, "ties: %04x %04x %04x", b0, b1, b2);
    CHECK(b6 == 0x7fff && b7 == 0x7fff, "NaN: %04x %04x", b6, b7);
    CHECK(b10 == 0x7f80 && b12 == 0x7f80, "inf / overflow: %04x %04x", b10, b12);
}

// ---- timing -----------------------------------------------------------------------------------

// The empty kernel (also the launch-limit checks', selfcheck_faults.cpp).
__global__ void noop() {}

// Thread CPU time of one launch, the best of `reps` after a warm-up launch (stacks and pages):
// steadier than wall time on a busy machine.
template <typename F>
static double time_launches(int reps, F&& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        timespec t0, t1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
        f();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
        best = std::min(best, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    return best;
}

void timings() {
    printf("timings (thread CPU time per launch: the best of 10 to 2000 launches after a warm-up one)\n");
    const int n = 1 << 20, blocks = 4096;
    const auto a = random_floats(n, 70), b = random_floats(n, 71);
    Dev<float> da(n), db(n), dy(n);
    Dev<double> partials(blocks);
    da.fill(a);
    db.fill(b);
    const int reps = 10;
    const double t_noop = time_launches(reps, [&] { launch("noop", dim3(blocks), dim3(BLOCK), 0, [] { noop(); }); });
    const double t_add =
        time_launches(reps, [&] { launch("add_f32", dim3(blocks), dim3(BLOCK), 0, [&] { add_f32(n, da.p, db.p, dy.p); }); });
    const double t_dot = time_launches(
        reps, [&] { launch("dot_f32", dim3(blocks), dim3(BLOCK), 0, [&] { dot_f32(n, da.p, db.p, partials.p); }); });
    const double t_small = time_launches(
        2000, [&] { launch("add_f32", dim3(4), dim3(BLOCK), 0, [&] { add_f32(1024, da.p, db.p, dy.p); }); });
    // Shaped like the DARTS step's dwconv2d_bwd_weight_f32 launches: grid (C, k*k) = 16 x 25 blocks of
    // 256 threads, each a 4-step loop (n * ho * wo = 1024 positions) then block_sum.
    Geom g = {4, 16, 16, 16, 16, 16, 5, 1, 2, 1};
    const auto x_h = random_floats((size_t)g.n * g.c * g.h * g.w, 72);
    const auto dy_h = random_floats((size_t)g.n * g.c * g.ho * g.wo, 73);
    Dev<float> x(x_h.size()), dyc(dy_h.size()), dw((size_t)g.c * g.k * g.k);
    x.fill(x_h);
    dyc.fill(dy_h);
    const unsigned dw_threads = (unsigned)(g.c * g.k * g.k) * BLOCK;
    const double t_dw = time_launches(4 * reps, [&] {
        launch("dwconv2d_bwd_weight_f32", dim3(g.c, g.k * g.k), dim3(BLOCK), 0,
               [&] { dwconv2d_bwd_weight_f32(g, 0, x.p, dyc.p, dw.p); });
    });
    printf("  noop      %8.2f ms/launch  %6.1f ns/thread (4096 blocks x 256 threads = 1M threads)\n", t_noop * 1e3,
           t_noop * 1e9 / n);
    printf("  add_f32   %8.2f ms/launch  %6.1f ns/thread (1M threads, 1M floats)\n", t_add * 1e3, t_add * 1e9 / n);
    printf("  dot_f32   %8.2f ms/launch  %6.1f ns/thread (1M threads; block_sum: 5 shuffles + 3 barriers a thread, "
           "warp 0 5 more)\n",
           t_dot * 1e3, t_dot * 1e9 / n);
    printf("  dw_bwd_w  %8.2f ms/launch  %6.1f ns/thread (dwconv2d_bwd_weight_f32: 16 x 25 blocks x 256, a 4-step loop "
           "+ block_sum)\n",
           t_dw * 1e3, t_dw * 1e9 / dw_threads);
    printf("  add_f32   %8.2f us/launch  (4 blocks x 256, 1024 floats)\n", t_small * 1e6);
}
