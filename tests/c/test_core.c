/*
 * Tests of the pure-C core (csrc/) without Python, meant to run under
 * AddressSanitizer and UndefinedBehaviorSanitizer (tools/sanitize.sh builds
 * it with -fsanitize=address,undefined -Wall -Wextra -Werror).
 *
 * Expected values are independent of the code under test: constants worked
 * out by hand or in 50-digit arithmetic (mpmath, exact rational product of
 * the two doubles) and pasted here, a bit-level IEEE binary16 decoder written
 * with ldexp, and rotations recomputed in double with the formula of
 * docs/math.md.
 *
 * Build by hand:
 *   cc -std=c99 -ffp-contract=off -Icsrc tests/c/test_core.c csrc/[a-z]*.c -lm -pthread
 */
#include "ropescale.h"
#include "rs_internal.h" /* the float16 array conversions */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

static int close_rel(double got, double want, double rel)
{
    if (got == want)
        return 1;
    return fabs(got - want) <= rel * fabs(want);
}

static int close_abs(double got, double want, double tol)
{
    return fabs(got - want) <= tol;
}

/* ------------------------------------------------------------------ */
/* Frequencies                                                          */
/* ------------------------------------------------------------------ */

static void test_frequencies(void)
{
    double th[64];
    /* 10000^(-2k/8) = 10^(-k) */
    const double want8[4] = {1.0, 0.1, 0.01, 0.001};
    rs_inv_freq(8, 10000.0, th);
    for (int k = 0; k < 4; k++)
        CHECK(close_rel(th[k], want8[k], 4e-16), "inv_freq(8)[%d] = %.17g, want %.17g",
              k, th[k], want8[k]);

    /* 4^(-2k/4) = 2^(-k) exactly */
    rs_inv_freq(4, 4.0, th);
    CHECK(th[0] == 1.0 && th[1] == 0.5, "inv_freq(4, 4) = %.17g %.17g", th[0], th[1]);

    /* 10000^(-2/128), 50 digits rounded to double */
    rs_inv_freq(128, 10000.0, th);
    CHECK(close_rel(th[1], 0.8659643233600653, 3e-16), "inv_freq(128)[1] = %.17g", th[1]);
    CHECK(close_rel(th[63], pow(10000.0, -126.0 / 128.0), 3e-16), "inv_freq(128)[63]");

    /* lambda = 8^(128/126) */
    CHECK(close_rel(rs_ntk_lambda(128, 8.0), 8.268462264056222, 1e-15),
          "ntk_lambda(128, 8) = %.17g", rs_ntk_lambda(128, 8.0));
    /* factor 1 leaves the base alone */
    CHECK(rs_ntk_lambda(64, 1.0) == 1.0, "ntk_lambda(64, 1) = %.17g", rs_ntk_lambda(64, 1.0));

    /* mscale(4, 1) = 0.1 ln 4 + 1; s <= 1 gives 1 */
    CHECK(close_rel(rs_yarn_mscale(4.0, 1.0), 1.138629436111989, 1e-15), "yarn_mscale(4, 1)");
    CHECK(rs_yarn_mscale(1.0, 1.0) == 1.0 && rs_yarn_mscale(0.5, 3.0) == 1.0, "yarn_mscale(s <= 1)");

    /* c(32) = 128 ln(4096/(64 pi)) / (2 ln 1e4) = 20.94 -> floor 20;
     * c(1)  = 128 ln(4096/(2 pi)) / (2 ln 1e4) = 45.0 (45.03) -> ceil 46. */
    {
        double lo, hi;
        rs_yarn_range(128, 10000.0, 4096.0, 32.0, 1.0, 1, &lo, &hi);
        CHECK(lo == 20.0 && hi == 46.0, "yarn_range truncate = (%g, %g), want (20, 46)", lo, hi);
        rs_yarn_range(128, 10000.0, 4096.0, 32.0, 1.0, 0, &lo, &hi);
        CHECK(lo > 20.9 && lo < 21.0 && hi > 45.0 && hi < 45.1,
              "yarn_range no truncate = (%.17g, %.17g)", lo, hi);
    }

    /* linear: theta / s; the attention factor stays 1 */
    {
        rs_scaling sc;
        double out[4], attn = -1.0;
        memset(&sc, 0, sizeof(sc));
        sc.method = RS_LINEAR;
        sc.factor = 4.0;
        sc.original_max = NAN;
        sc.seq_len = NAN;
        sc.mscale = sc.mscale_all_dim = sc.attention_factor = NAN;
        sc.low_freq_factor = sc.high_freq_factor = NAN;
        CHECK(rs_scaled_inv_freq(8, 10000.0, &sc, out, &attn) == 0, "linear status");
        for (int k = 0; k < 4; k++)
            CHECK(close_rel(out[k], want8[k] / 4.0, 4e-16), "linear[%d] = %.17g", k, out[k]);
        CHECK(attn == 1.0, "linear attention factor %g", attn);

        /* Invalid parameters are refused, not computed. */
        sc.factor = 0.5;
        CHECK(rs_scaled_inv_freq(8, 10000.0, &sc, out, &attn) == -1, "factor < 1 accepted");
        sc.factor = 2.0;
        CHECK(rs_scaled_inv_freq(7, 10000.0, &sc, out, &attn) == -1, "odd dim accepted");
        CHECK(rs_scaled_inv_freq(8, 1.0, &sc, out, &attn) == -1, "base 1 accepted");
        CHECK(rs_scaled_inv_freq(8, INFINITY, &sc, out, &attn) == -1, "base inf accepted");
        sc.method = 99;
        CHECK(rs_scaled_inv_freq(8, 10000.0, &sc, out, &attn) == -1, "unknown method accepted");
        /* longrope without a factor list */
        sc.method = RS_LONGROPE;
        sc.short_factor = sc.long_factor = NULL;
        CHECK(rs_scaled_inv_freq(8, 10000.0, &sc, out, &attn) == -1, "longrope without lists");
    }
}

/* ------------------------------------------------------------------ */
/* Exact angles                                                         */
/* ------------------------------------------------------------------ */

static void test_sincos_exact(void)
{
    /* cos/sin of the exact product t*theta, from 50-digit arithmetic. */
    static const struct {
        double t, theta, c, s;
    } cases[] = {
        {1.0, 1.0, 0.5403023058681398, 0.8414709848078965},
        {8589934592.0, 1.0, 0.5731368006982142, 0.8194597047356359},
        {1e6, 0.1, -0.9993608074384109, 0.035748797966468945},
        {123456789.0, 0.8659643233600653, -0.7140394021219363, -0.7001055150599428},
        {-3000000.5, 0.7071067811865476, -0.4549493219044571, 0.8905173297014913},
        {17179869183.0, 1.0, 0.605075711676281, 0.7961679365180703},
        {4503599627370496.0, 9.5367431640625e-07, -0.886886915197821, -0.4619865795138349},
    };
    double c, s;
    rs_sincos_exact(0.0, 0.3, &c, &s);
    CHECK(c == 1.0 && s == 0.0, "sincos_exact(0) = (%.17g, %.17g)", c, s);
    rs_sincos_exact(-0.0, 0.3, &c, &s);
    CHECK(c == 1.0 && s == 0.0, "sincos_exact(-0) = (%.17g, %.17g)", c, s);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rs_sincos_exact(cases[i].t, cases[i].theta, &c, &s);
        CHECK(close_abs(c, cases[i].c, 4e-15) && close_abs(s, cases[i].s, 4e-15),
              "sincos_exact(%.17g, %.17g) = (%.17g, %.17g), want (%.17g, %.17g)",
              cases[i].t, cases[i].theta, c, s, cases[i].c, cases[i].s);
        /* negating t negates sin only */
        {
            double c2, s2;
            rs_sincos_exact(-cases[i].t, cases[i].theta, &c2, &s2);
            CHECK(close_abs(c2, cases[i].c, 4e-15) && close_abs(s2, -cases[i].s, 4e-15),
                  "sincos_exact(-t) at case %zu", i);
        }
    }
}

static void test_angle_cache(void)
{
    double theta[8], c[8], s[8], ec, es;
    double *mem = malloc(sizeof(double) * rs_angle_cache_doubles(8));
    rs_angle_cache cache_, *cache = &cache_;
    rs_inv_freq(16, 10000.0, theta);
    CHECK(mem != NULL, "angle cache allocation");
    if (mem == NULL)
        return;
    rs_angle_cache_init(cache, mem, theta, 8, 0.75);
    /* Integer positions take the cached q*B + r path (both q = 0 and q != 0,
     * negative too); fractional ones the direct path.  Both must match the
     * exact product to float64 rounding. */
    {
        const double ts[] = {0.0, 1.0, 255.0, 256.0, 257.0, 1000.0, 1000.0, 70000.0,
                             -1.0, -256.0, -70001.0, 0.5, -2.25, 12345.678, 1e9, 4503599627370495.0};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
            double t = ts[i];
            if (fabs(t) * theta[0] > RS_MAX_ANGLE)
                continue;
            rs_angle_row(cache, t, c, s);
            for (int k = 0; k < 8; k++) {
                rs_sincos_exact(t, theta[k], &ec, &es);
                CHECK(close_abs(c[k], 0.75 * ec, 2e-15) && close_abs(s[k], 0.75 * es, 2e-15),
                      "angle_row(t=%.17g)[%d] = (%.17g, %.17g), exact (%.17g, %.17g)", t, k,
                      c[k], s[k], 0.75 * ec, 0.75 * es);
            }
        }
    }
    /* position 1000 against 50-digit values for theta_0 = 1 */
    rs_angle_row(cache, 1000.0, c, s);
    CHECK(close_abs(c[0], 0.75 * 0.5623790762907029, 2e-15) &&
              close_abs(s[0], 0.75 * 0.8268795405320025, 2e-15),
          "angle_row(1000)[0] = (%.17g, %.17g)", c[0], s[0]);
    /* The bits of a position do not depend on what the cache held before:
     * a fresh cache and one that saw other positions agree. */
    {
        const double ts[] = {501.0, 17.0, 4096.0 + 3.0, -70001.0, 123456789.0};
        double c2[8], s2[8];
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
            rs_angle_row(cache, ts[i] - 1.0, c, s); /* a neighbour first */
            rs_angle_row(cache, ts[i], c, s);
            rs_angle_cache_init(cache, mem, theta, 8, 0.75);
            rs_angle_row(cache, ts[i], c2, s2);
            CHECK(memcmp(c, c2, sizeof(c)) == 0 && memcmp(s, s2, sizeof(s)) == 0,
                  "angle_row(%.17g) depends on the positions before it", ts[i]);
        }
    }
    free(mem);
}

/* ------------------------------------------------------------------ */
/* float16                                                              */
/* ------------------------------------------------------------------ */

/* Independent decoder: the IEEE binary16 definition with ldexp. */
static double half_value(uint16_t h)
{
    int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0x1f)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, -24);
    else
        v = ldexp((double)(m | 0x400), e - 25);
    return sign ? -v : v;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_half(void)
{
    static float arr_f[65536], scalar_f[65536];
    static uint16_t arr_h[65536], src_h[65536];
    int bad_decode = 0, bad_trip = 0, bad_nan = 0, bad_mid = 0, bad_d = 0;

    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = rs_half_to_float(h);
        double want = half_value(h);
        uint16_t back = rs_float_to_half(f);
        src_h[i] = h;
        scalar_f[i] = f;
        if (isnan(want)) {
            /* NaN stays NaN with its sign; the payload is kept in the
             * top mantissa bits (the quiet bit may be set on the way back). */
            if (!isnan(f) || ((back & 0x7c00u) != 0x7c00u) || !(back & 0x3ffu) ||
                ((back ^ h) & 0x8000u) || ((back | 0x200u) != (h | 0x200u)))
                bad_nan++;
            continue;
        }
        if ((double)f != want || (signbit(f) != 0) != ((h & 0x8000u) != 0))
            bad_decode++;
        if (back != h)
            bad_trip++;
        /* float64 -> half must agree on exactly representable values */
        if (rs_double_to_half((double)f) != h)
            bad_d++;
        /* Midpoint to the next half up in magnitude rounds to the even one. */
        if ((h & 0x7fffu) < 0x7bffu) {
            uint16_t up = (uint16_t)(h + 1);
            double mid = (want + half_value(up)) / 2.0; /* exact in float32 */
            uint16_t even = (h & 1u) ? up : h;
            if (rs_float_to_half((float)mid) != even || rs_double_to_half(mid) != even)
                bad_mid++;
            /* just past the midpoint (in magnitude) rounds away, just short of
             * it rounds back */
            if (rs_double_to_half(mid + mid * 1e-12) != up ||
                rs_double_to_half(mid - mid * 1e-12) != h)
                bad_mid++;
        }
    }
    CHECK(bad_decode == 0, "half_to_float disagrees with the binary16 definition on %d values", bad_decode);
    CHECK(bad_trip == 0, "half -> float -> half changed %d finite/inf values", bad_trip);
    CHECK(bad_nan == 0, "%d NaN halves lost their NaN-ness, sign or payload", bad_nan);
    CHECK(bad_d == 0, "double_to_half disagrees on %d exactly representable values", bad_d);
    CHECK(bad_mid == 0, "%d round-to-nearest-even failures at midpoints", bad_mid);

    /* Edges of the range. */
    CHECK(rs_float_to_half(65504.0f) == 0x7bffu, "max half");
    CHECK(rs_float_to_half(65519.99f) == 0x7bffu, "below the overflow midpoint");
    CHECK(rs_float_to_half(65520.0f) == 0x7c00u, "overflow midpoint -> inf");
    CHECK(rs_double_to_half(1e300) == 0x7c00u && rs_double_to_half(-1e300) == 0xfc00u, "huge -> inf");
    CHECK(rs_float_to_half(0x1p-24f) == 0x0001u, "smallest subnormal");
    CHECK(rs_float_to_half(0x1p-25f) == 0x0000u, "half the smallest subnormal ties to 0");
    CHECK(rs_float_to_half(0x1.8p-25f) == 0x0001u, "0.75 of the smallest subnormal");
    CHECK(rs_float_to_half(-0x1p-30f) == 0x8000u, "tiny negative -> -0");
    CHECK(rs_double_to_half(0x1p-1060) == 0x0000u, "float64 subnormal -> 0");
    CHECK(rs_float_to_half(0x1.ffcp-15f) == 0x0400u, "largest subnormal rounding up to the smallest normal");
    CHECK(rs_float_to_half(1e-45f) == 0x0000u, "float32 subnormal -> 0");

    /* Array conversions (F16C or portable) agree with the scalar ones bit
     * for bit; odd lengths reach the scalar tails. */
    for (int64_t n = 0; n <= 17; n++) {
        memset(arr_f, 0, sizeof(float) * 32);
        rs_half_to_float_n(n, src_h + 0x3c00 - 3, arr_f);
        for (int64_t i = 0; i < n; i++)
            CHECK(fbits(arr_f[i]) == fbits(scalar_f[0x3c00 - 3 + i]), "half_to_float_n n=%lld i=%lld",
                  (long long)n, (long long)i);
    }
    rs_half_to_float_n(65536, src_h, arr_f);
    {
        int bad = 0;
        for (int i = 0; i < 65536; i++)
            if (fbits(arr_f[i]) != fbits(scalar_f[i]) && !(isnan(arr_f[i]) && isnan(scalar_f[i])))
                bad++;
        CHECK(bad == 0, "half_to_float_n (%s) differs from the scalar on %d values", rs_simd_name(), bad);
    }
    {
        int bad = 0;
        /* floats that are not halves: every midpoint-ish value of a sweep */
        static float probe[65536];
        static uint16_t want[65536];
        for (int i = 0; i < 65536; i++) {
            float f = scalar_f[i];
            if (!isfinite(f))
                f = (float)i;
            probe[i] = f * 1.00048828125f; /* 1 + 2^-11: lands between halves */
            want[i] = rs_float_to_half(probe[i]);
        }
        rs_float_to_half_n(65536, probe, arr_h);
        for (int i = 0; i < 65536; i++)
            if (arr_h[i] != want[i])
                bad++;
        CHECK(bad == 0, "float_to_half_n (%s) differs from the scalar on %d values", rs_simd_name(), bad);
    }
}

/* bfloat16: widening is the 16-bit shift for all 65536 patterns; the
 * narrowing rounds to nearest even with NaN kept a quiet NaN (sign and top
 * payload bits), and the array forms (AVX2 or portable, both run here)
 * agree with the scalar ones bit for bit, signaling NaNs included. */
static float bits_to_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t bf16_expected(uint32_t u)
{
    uint32_t keep = u >> 16, rest = u & 0xffffu;
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(keep | 0x40u);
    if (rest > 0x8000u || (rest == 0x8000u && (keep & 1u)))
        keep++;
    return (uint16_t)keep;
}

static void test_bf16(void)
{
    static uint16_t src[65536], got_h[65536], want_h[65536];
    static float got_f[65536], probe[65536];
    int bad_load = 0, bad_round = 0, bad_arr_f = 0, bad_arr_h = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        src[b] = (uint16_t)b;
        if (fbits(rs_bf16_to_float((uint16_t)b)) != b << 16)
            bad_load++;
        /* a float32 per pattern with every kind of dropped half: below,
         * at and above the midpoint, and signaling NaNs (quiet bit 0) */
        probe[b] = bits_to_f((b << 16) | ((b * 0x9e37u) & 0xffffu) | (b % 3 == 0 ? 0x8000u : 0u));
        if ((b & 7u) == 1u)
            probe[b] = bits_to_f((b << 16) | 0x8000u); /* exact ties */
        want_h[b] = bf16_expected(fbits(probe[b]));
        if (rs_float_to_bf16(probe[b]) != want_h[b])
            bad_round++;
    }
    CHECK(bad_load == 0, "bf16_to_float is not the 16-bit shift on %d patterns", bad_load);
    CHECK(bad_round == 0, "float_to_bf16 misrounds %d values", bad_round);
    for (int forced = 1; forced >= 0; forced--) {
        rs_test_simd_cap(forced ? RS_SIMD_BASELINE : 0);
        bad_arr_f = bad_arr_h = 0;
        rs_bf16_to_float_n(65536 - 3, src + 3, got_f);
        rs_float_to_bf16_n(65536 - 5, probe + 5, got_h);
        for (int i = 0; i < 65536 - 5; i++) {
            bad_arr_f += fbits(got_f[i]) != (uint32_t)src[i + 3] << 16;
            bad_arr_h += got_h[i] != want_h[i + 5];
        }
        CHECK(bad_arr_f == 0 && bad_arr_h == 0, "bf16 array conversions (%s) differ on %d / %d values",
              forced ? "baseline" : "native", bad_arr_f, bad_arr_h);
    }
    CHECK(rs_double_to_bf16(1.0 + 0x1p-8 + 0x1p-30) == 0x3f81u, "float64 rounded once, not through float32");
    CHECK(rs_double_to_bf16(1.0 + 0x1p-8) == 0x3f80u, "tie to even");
    CHECK(rs_double_to_bf16(-1e300) == 0xff80u && rs_double_to_bf16(3.4e38) == 0x7f80u, "overflow to inf");
    CHECK(rs_double_to_bf16(3.389e38) == 0x7f7fu && rs_double_to_bf16(3.38e38) == 0x7f7eu, "largest finite values");
    CHECK((rs_double_to_bf16(NAN) & 0x7fffu) > 0x7f80u, "NaN stays NaN");
}

/* ------------------------------------------------------------------ */
/* Rotation                                                             */
/* ------------------------------------------------------------------ */

#define ROWS 3
#define D 6
#define R 2 /* 2R = 4 < D: features 4, 5 pass through */

/* The reference rotation in double, on a dense [ROWS][D] array. */
static void expected_rotation(const double x[ROWS][D], const double c[ROWS][R],
                              const double s[ROWS][R], int interleaved, int inverse,
                              double y[ROWS][D])
{
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < D; j++)
            y[i][j] = x[i][j];
        for (int k = 0; k < R; k++) {
            int ia = interleaved ? 2 * k : k, ib = interleaved ? 2 * k + 1 : k + R;
            double sn = inverse ? -s[i][k] : s[i][k];
            y[i][ia] = x[i][ia] * c[i][k] - x[i][ib] * sn;
            y[i][ib] = x[i][ib] * c[i][k] + x[i][ia] * sn;
        }
    }
}

static void set_value(char *p, int dtype, double v)
{
    if (dtype == RS_F64) {
        memcpy(p, &v, 8);
    } else if (dtype == RS_F32) {
        float f = (float)v;
        memcpy(p, &f, 4);
    } else {
        uint16_t h = rs_double_to_half(v);
        memcpy(p, &h, 2);
    }
}

static double get_value(const char *p, int dtype)
{
    if (dtype == RS_F64) {
        double v;
        memcpy(&v, p, 8);
        return v;
    }
    if (dtype == RS_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    {
        uint16_t h;
        memcpy(&h, p, 2);
        return half_value(h);
    }
}

static int64_t itemsize(int dtype)
{
    return dtype == RS_F64 ? 8 : (dtype == RS_F32 ? 4 : 2);
}

/* The layout most tests start from: `rows` contiguous rows of d features
 * of dtype's size, one 8-byte position per row, r pairs; options zeroed
 * but for the dtype and one thread. */
static void rows_layout(rs_layout *L, rs_options *opt, int64_t rows, int64_t d, int64_t r, int dtype)
{
    const int64_t item = itemsize(dtype);
    memset(L, 0, sizeof(*L));
    L->ndim = 1;
    L->shape[0] = rows;
    L->stride[RS_OP_X][0] = L->stride[RS_OP_OUT][0] = d * item;
    L->stride[RS_OP_POS][0] = 8;
    L->n_features = d;
    L->n_pairs = r;
    L->fstride[RS_OP_X] = L->fstride[RS_OP_OUT] = item;
    memset(opt, 0, sizeof(*opt));
    opt->dtype = dtype;
    opt->n_threads = 1;
}

/* One rotation test: x and out live inside buffers with the given element
 * strides (row, feature; negative allowed), cos/sin in their own strided
 * buffers.  Each buffer is allocated to exactly the bytes the view spans, so
 * AddressSanitizer flags any access outside it. */
static void run_rotation(int dtype, int interleaved, int inverse, int in_place,
                         int64_t rstride, int64_t fstride, const char *what)
{
    const int64_t it = itemsize(dtype);
    const int64_t tit = dtype == RS_F64 ? 8 : 4;
    const int64_t span = (ROWS - 1) * llabs(rstride) + (D - 1) * llabs(fstride) + 1;
    double x[ROWS][D], c[ROWS][R], s[ROWS][R], y[ROWS][D];
    char *xbuf = malloc((size_t)(span * it)), *obuf = malloc((size_t)(span * it));
    char *cbuf = malloc((size_t)(ROWS * R * 2 * tit)), *sbuf = malloc((size_t)(ROWS * R * 2 * tit));
    char *x0, *o0;
    rs_layout L;
    rs_options opt;
    double tol = dtype == RS_F64 ? 1e-15 : (dtype == RS_F32 ? 1e-6 : 2e-3);
    int bad = 0, rc;

    if (!xbuf || !obuf || !cbuf || !sbuf) {
        CHECK(0, "allocation");
        goto done;
    }
    memset(xbuf, 0, (size_t)(span * it));
    memset(obuf, 0, (size_t)(span * it));
    /* The element at logical (0, 0): shifted so negative strides stay inside. */
    x0 = xbuf + ((rstride < 0 ? (ROWS - 1) * -rstride : 0) + (fstride < 0 ? (D - 1) * -fstride : 0)) * it;
    o0 = (in_place ? xbuf : obuf) + (x0 - xbuf);

    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < D; j++) {
            double v = (double)(i * D + j + 1) * (j % 2 ? -0.25 : 0.5);
            set_value(x0 + (i * rstride + j * fstride) * it, dtype, v);
            x[i][j] = get_value(x0 + (i * rstride + j * fstride) * it, dtype);
        }
        for (int k = 0; k < R; k++) {
            double a = 0.3 * (i + 1) + 1.1 * k;
            double cv = cos(a), sv = sin(a);
            /* tables with a feature stride of 2 elements, rows reversed */
            set_value(cbuf + ((ROWS - 1 - i) * 2 * R + 2 * k) * tit, tit == 8 ? RS_F64 : RS_F32, cv);
            set_value(sbuf + ((ROWS - 1 - i) * 2 * R + 2 * k) * tit, tit == 8 ? RS_F64 : RS_F32, sv);
            c[i][k] = get_value(cbuf + ((ROWS - 1 - i) * 2 * R + 2 * k) * tit, tit == 8 ? RS_F64 : RS_F32);
            s[i][k] = get_value(sbuf + ((ROWS - 1 - i) * 2 * R + 2 * k) * tit, tit == 8 ? RS_F64 : RS_F32);
        }
    }
    expected_rotation((const double(*)[D])x, (const double(*)[R])c, (const double(*)[R])s,
                      interleaved, inverse, y);

    memset(&L, 0, sizeof(L));
    L.ndim = 1;
    L.shape[0] = ROWS;
    L.stride[RS_OP_X][0] = rstride * it;
    L.stride[RS_OP_OUT][0] = rstride * it;
    L.stride[RS_OP_COS][0] = -2 * R * tit;
    L.stride[RS_OP_SIN][0] = -2 * R * tit;
    L.n_features = D;
    L.n_pairs = R;
    L.fstride[RS_OP_X] = L.fstride[RS_OP_OUT] = fstride * it;
    L.fstride[RS_OP_COS] = L.fstride[RS_OP_SIN] = 2 * tit;
    memset(&opt, 0, sizeof(opt));
    opt.dtype = dtype;
    opt.interleaved = interleaved;
    opt.inverse = inverse;
    opt.in_place = in_place;
    opt.n_threads = 1;
    rc = rs_rotate(&L, &opt, x0, o0, cbuf + (ROWS - 1) * 2 * R * tit, sbuf + (ROWS - 1) * 2 * R * tit);
    CHECK(rc == 0, "%s: rs_rotate returned %d", what, rc);
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < D; j++) {
            double got = get_value(o0 + (i * rstride + j * fstride) * it, dtype);
            double mag = fabs(x[i][j]) + 1.0;
            if (!(fabs(got - y[i][j]) <= tol * mag * 8))
                bad++;
        }
    CHECK(bad == 0, "%s dtype=%d interleaved=%d inverse=%d in_place=%d: %d wrong values", what,
          dtype, interleaved, inverse, in_place, bad);
    /* Elements outside the view are untouched (out of place: x entirely). */
    if (!in_place) {
        int changed = 0;
        for (int i = 0; i < ROWS; i++)
            for (int j = 0; j < D; j++)
                if (get_value(x0 + (i * rstride + j * fstride) * it, dtype) != x[i][j])
                    changed++;
        CHECK(changed == 0, "%s: x modified out of place", what);
    }
done:
    free(xbuf);
    free(obuf);
    free(cbuf);
    free(sbuf);
}

static void test_rotation(void)
{
    static const struct {
        int64_t rs, fs;
        const char *what;
    } layouts[] = {
        {D, 1, "contiguous"},
        {2 * D + 1, 2, "strided"},
        {-D, 1, "rows reversed"},
        {D, -1, "features reversed"},
        {-3 * D, -3, "both reversed, strided"},
    };
    for (int dt = RS_F16; dt <= RS_F64; dt++)
        for (int il = 0; il < 2; il++)
            for (int inv = 0; inv < 2; inv++)
                for (int ip = 0; ip < 2; ip++)
                    for (size_t l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++)
                        run_rotation(dt, il, inv, ip, layouts[l].rs, layouts[l].fs, layouts[l].what);
}

/* Fused form and tables against libm at small angles (where the float64
 * product is exact enough that plain cos/sin are a valid oracle). */
static void test_fused_and_table(void)
{
    double theta[2] = {1.0, 0.01};
    double pos[4] = {0.0, 3.0, -7.0, 2.5};
    double x[4][4], out[4][4], c[4][2], s[4][2];
    rs_layout L;
    rs_options opt;
    int rc, bad = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            x[i][j] = (double)(i - j) + 0.5;
    rows_layout(&L, &opt, 4, 4, 2, RS_F64);
    rc = rs_rotate_positions(&L, &opt, (const char *)x, (char *)out, (const char *)pos, theta, 2.0);
    CHECK(rc == 0, "rs_rotate_positions returned %d", rc);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++) {
            double cv = 2.0 * cos(pos[i] * theta[k]), sv = 2.0 * sin(pos[i] * theta[k]);
            double a = x[i][k], b = x[i][k + 2];
            if (!close_abs(out[i][k], a * cv - b * sv, 1e-13) ||
                !close_abs(out[i][k + 2], b * cv + a * sv, 1e-13))
                bad++;
        }
    CHECK(bad == 0, "fused rotation: %d wrong pairs", bad);

    rc = rs_cos_sin(4, (const char *)pos, 8, 0, theta, 2, 0.5, RS_F64, (char *)c, (char *)s, 1, NULL);
    CHECK(rc == 0, "rs_cos_sin returned %d", rc);
    bad = 0;
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++)
            if (!close_abs(c[i][k], 0.5 * cos(pos[i] * theta[k]), 1e-15) ||
                !close_abs(s[i][k], 0.5 * sin(pos[i] * theta[k]), 1e-15))
                bad++;
    CHECK(bad == 0, "cos_sin table: %d wrong entries", bad);
    /* Strided positions (every other entry) and float16 tables. */
    {
        double pos2[8] = {0.0, -1, 3.0, -1, -7.0, -1, 2.5, -1};
        uint16_t ch[8], sh[8];
        rc = rs_cos_sin(4, (const char *)pos2, 16, 0, theta, 2, 1.0, RS_F16, (char *)ch, (char *)sh, 1, NULL);
        CHECK(rc == 0, "rs_cos_sin f16 returned %d", rc);
        bad = 0;
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 2; k++)
                if (ch[i * 2 + k] != rs_double_to_half(cos(pos2[2 * i] * theta[k])) ||
                    sh[i * 2 + k] != rs_double_to_half(sin(pos2[2 * i] * theta[k])))
                    bad++;
        CHECK(bad == 0, "float16 cos_sin table: %d entries not the rounded float64 value", bad);
    }

    /* int64 positions (pos_int) give the same rows as the float64 ones. */
    {
        int64_t ipos[3] = {0, -7, 1000003};
        double fpos[3] = {0.0, -7.0, 1000003.0};
        double ci[3][2], si[3][2], cf[3][2], sf[3][2], oi[3][4], of[3][4];
        rc = rs_cos_sin(3, (const char *)ipos, 8, 1, theta, 2, 1.0, RS_F64, (char *)ci, (char *)si, 1, NULL);
        CHECK(rc == 0, "rs_cos_sin int64 returned %d", rc);
        rc = rs_cos_sin(3, (const char *)fpos, 8, 0, theta, 2, 1.0, RS_F64, (char *)cf, (char *)sf, 1, NULL);
        CHECK(rc == 0 && memcmp(ci, cf, sizeof(ci)) == 0 && memcmp(si, sf, sizeof(si)) == 0,
              "int64 and float64 positions give different tables");
        L.shape[0] = 3;
        opt.pos_int = 1;
        rc = rs_rotate_positions(&L, &opt, (const char *)x, (char *)oi, (const char *)ipos, theta, 1.0);
        opt.pos_int = 0;
        rc |= rs_rotate_positions(&L, &opt, (const char *)x, (char *)of, (const char *)fpos, theta, 1.0);
        CHECK(rc == 0 && memcmp(oi, of, sizeof(oi)) == 0, "int64 and float64 positions rotate differently");
        L.shape[0] = 4;
    }

    /* Bad layouts are refused, not run. */
    L.n_pairs = 3; /* 2R > D */
    CHECK(rs_rotate_positions(&L, &opt, (const char *)x, (char *)out, (const char *)pos, theta, 1.0) == -2,
          "2R > D accepted");
    L.n_pairs = 2;
    L.shape[0] = -1;
    CHECK(rs_rotate(&L, &opt, (const char *)x, (char *)out, (const char *)c, (const char *)s) == -2,
          "negative shape accepted");
    L.shape[0] = 0; /* zero rows: nothing touched (NULL pointers are fine) */
    CHECK(rs_rotate(&L, &opt, NULL, NULL, NULL, NULL) == 0, "zero rows");
    CHECK(rs_cos_sin(0, NULL, 8, 0, theta, 2, 1.0, RS_F64, NULL, NULL, 4, NULL) == 0, "zero positions");
    CHECK(rs_cos_sin(-1, NULL, 8, 0, theta, 2, 1.0, RS_F64, NULL, NULL, 1, NULL) == -2, "negative count accepted");
}

/* Large enough (>= 4 MiB of x, >= 2^16 angles) to be split over threads:
 * the threaded result must equal the single-threaded one bit for bit. */
/* Fused M-RoPE (rs_rotate_streams): pair k rotated by stream pair_stream[k]'s
 * position, against libm; the stream layout interleaved (a scatter) and
 * chunked (rows made in place); its limits refused before any write. */
static void test_streams(void)
{
    enum { SN = 6, SR = 4, SD = 10 };
    double theta[SR] = {1.0, 0.3, 0.05, 0.001};
    double pos[3][SN]; /* stream j, row i */
    double x[SN][SD], out[SN][SD];
    int64_t layouts[2][SR] = {{0, 1, 2, 0}, {0, 0, 1, 2}};
    rs_layout L;
    rs_options opt;
    for (int i = 0; i < SN; i++) {
        pos[0][i] = i;
        pos[1][i] = 100 + 7 * i;
        pos[2][i] = -3.5 * i;
        for (int j = 0; j < SD; j++)
            x[i][j] = (double)(i + 1) * 0.25 - (double)j * 0.125;
    }
    rows_layout(&L, &opt, SN, SD, SR, RS_F64);
    for (int lay = 0; lay < 2; lay++)
        for (int threads = 1; threads <= 2; threads++) {
            int bad = 0, rc;
            opt.n_threads = threads;
            rc = rs_rotate_streams(&L, &opt, (const char *)x, (char *)out, (const char *)pos,
                                   (int64_t)sizeof(pos[0]), 3, layouts[lay], theta, 1.5);
            CHECK(rc == RS_OK, "rs_rotate_streams returned %d", rc);
            for (int i = 0; i < SN; i++) {
                for (int k = 0; k < SR; k++) {
                    double t = pos[layouts[lay][k]][i];
                    double cv = 1.5 * cos(t * theta[k]), sv = 1.5 * sin(t * theta[k]);
                    double a = x[i][k], b = x[i][k + SR];
                    if (!close_abs(out[i][k], a * cv - b * sv, 1e-12) ||
                        !close_abs(out[i][k + SR], b * cv + a * sv, 1e-12))
                        bad++;
                }
                for (int j = 2 * SR; j < SD; j++)
                    bad += out[i][j] != x[i][j];
            }
            CHECK(bad == 0, "streams layout %d, %d threads: %d wrong values", lay, threads, bad);
        }
    {
        int64_t wrong[SR] = {0, 3, 1, 2}; /* stream 3 of 3 */
        out[0][0] = 42.0;
        CHECK(rs_rotate_streams(&L, &opt, (const char *)x, (char *)out, (const char *)pos,
                                (int64_t)sizeof(pos[0]), 3, wrong, theta, 1.0) == RS_BAD_LAYOUT,
              "a pair of a stream that does not exist accepted");
        CHECK(rs_rotate_streams(&L, &opt, (const char *)x, (char *)out, (const char *)pos,
                                (int64_t)sizeof(pos[0]), RS_MAX_STREAMS + 1, layouts[0], theta, 1.0) ==
                  RS_BAD_LAYOUT,
              "more than RS_MAX_STREAMS streams accepted");
        CHECK(out[0][0] == 42.0, "a refused call wrote");
    }
}

static void test_threads(void)
{
    const int64_t rows = 8192, d = 128, r = 64;
    float *x = malloc(sizeof(float) * (size_t)(rows * d));
    float *o1 = malloc(sizeof(float) * (size_t)(rows * d));
    float *o2 = malloc(sizeof(float) * (size_t)(rows * d));
    double *pos = malloc(sizeof(double) * (size_t)rows);
    double theta[64];
    float *c1 = malloc(sizeof(float) * (size_t)(rows * r)), *s1 = malloc(sizeof(float) * (size_t)(rows * r));
    float *c2 = malloc(sizeof(float) * (size_t)(rows * r)), *s2 = malloc(sizeof(float) * (size_t)(rows * r));
    rs_layout L;
    rs_options opt;
    int rc1, rc2;
    if (!x || !o1 || !o2 || !pos || !c1 || !s1 || !c2 || !s2) {
        CHECK(0, "allocation");
        goto done;
    }
    rs_inv_freq(128, 10000.0, theta);
    for (int64_t i = 0; i < rows * d; i++)
        x[i] = (float)((i * 7919) % 1000) / 250.0f - 2.0f;
    for (int64_t i = 0; i < rows; i++)
        pos[i] = (double)(i * 3 - 5000);
    rows_layout(&L, &opt, rows, d, r, RS_F32);
    opt.interleaved = 1;
    rc1 = rs_rotate_positions(&L, &opt, (const char *)x, (char *)o1, (const char *)pos, theta, 1.0);
    opt.n_threads = 4;
    rc2 = rs_rotate_positions(&L, &opt, (const char *)x, (char *)o2, (const char *)pos, theta, 1.0);
    CHECK(rc1 == 0 && rc2 == 0, "threaded fused rotation status %d %d", rc1, rc2);
    CHECK(memcmp(o1, o2, sizeof(float) * (size_t)(rows * d)) == 0, "threaded fused rotation differs");

    rc1 = rs_cos_sin(rows, (const char *)pos, 8, 0, theta, r, 1.0, RS_F32, (char *)c1, (char *)s1, 1, NULL);
    rc2 = rs_cos_sin(rows, (const char *)pos, 8, 0, theta, r, 1.0, RS_F32, (char *)c2, (char *)s2, 3, NULL);
    CHECK(rc1 == 0 && rc2 == 0, "threaded cos_sin status %d %d", rc1, rc2);
    CHECK(memcmp(c1, c2, sizeof(float) * (size_t)(rows * r)) == 0 &&
              memcmp(s1, s2, sizeof(float) * (size_t)(rows * r)) == 0,
          "threaded cos_sin differs");

    /* cached form, in place, from the tables just made */
    L.stride[RS_OP_POS][0] = 0;
    L.stride[RS_OP_COS][0] = L.stride[RS_OP_SIN][0] = r * 4;
    L.fstride[RS_OP_COS] = L.fstride[RS_OP_SIN] = 4;
    opt.n_threads = 1;
    memcpy(o1, x, sizeof(float) * (size_t)(rows * d));
    memcpy(o2, x, sizeof(float) * (size_t)(rows * d));
    opt.in_place = 1;
    rc1 = rs_rotate(&L, &opt, (const char *)o1, (char *)o1, (const char *)c1, (const char *)s1);
    opt.n_threads = 8;
    rc2 = rs_rotate(&L, &opt, (const char *)o2, (char *)o2, (const char *)c1, (const char *)s1);
    CHECK(rc1 == 0 && rc2 == 0, "threaded rotation status %d %d", rc1, rc2);
    CHECK(memcmp(o1, o2, sizeof(float) * (size_t)(rows * d)) == 0, "threaded in-place rotation differs");
done:
    free(x);
    free(o1);
    free(o2);
    free(pos);
    free(c1);
    free(s1);
    free(c2);
    free(s2);
}

/* ------------------------------------------------------------------ */
/* Working memory, interruption                                         */
/* ------------------------------------------------------------------ */

/* A row of R > RS_PAIR_BLOCK pairs is rotated block by block: every pair,
 * both pairings, against the exact angles; and the table builder too. */
static void test_pair_blocks(void)
{
    enum { BR = 2 * RS_PAIR_BLOCK + 37, BD = 2 * BR + 6, BROWS = 3 };
    double *theta = malloc(sizeof(double) * BR), *x = malloc(sizeof(double) * BROWS * BD);
    double *out = malloc(sizeof(double) * BROWS * BD), *c = malloc(sizeof(double) * BROWS * BR);
    double *s = malloc(sizeof(double) * BROWS * BR);
    double pos[BROWS] = {0.0, 1234567.0, -2.5};
    rs_layout L;
    rs_options opt;
    if (!theta || !x || !out || !c || !s) {
        CHECK(0, "allocation");
        goto done;
    }
    rs_inv_freq(2 * BR, 10000.0, theta);
    for (int i = 0; i < BROWS * BD; i++)
        x[i] = (double)((i * 37) % 101) / 50.0 - 1.0;
    for (int interleaved = 0; interleaved < 2; interleaved++) {
        int bad = 0;
        rows_layout(&L, &opt, BROWS, BD, BR, RS_F64);
        opt.interleaved = interleaved;
        CHECK(rs_rotate_positions(&L, &opt, (const char *)x, (char *)out, (const char *)pos, theta, 1.0) == 0,
              "blocked fused rotation status");
        for (int i = 0; i < BROWS; i++) {
            const double *xr = x + i * BD, *orow = out + i * BD;
            for (int k = 0; k < BR; k++) {
                double ec, es;
                int ia = interleaved ? 2 * k : k, ib = interleaved ? 2 * k + 1 : k + BR;
                rs_sincos_exact(pos[i], theta[k], &ec, &es);
                if (!close_abs(orow[ia], xr[ia] * ec - xr[ib] * es, 1e-14) ||
                    !close_abs(orow[ib], xr[ib] * ec + xr[ia] * es, 1e-14))
                    bad++;
            }
            for (int j = 2 * BR; j < BD; j++)
                bad += orow[j] != xr[j];
        }
        CHECK(bad == 0, "blocked fused rotation (interleaved=%d): %d wrong values", interleaved, bad);
    }
    CHECK(rs_cos_sin(BROWS, (const char *)pos, 8, 0, theta, BR, 1.0, RS_F64, (char *)c, (char *)s, 1, NULL) == 0,
          "blocked table status");
    {
        int bad = 0;
        for (int i = 0; i < BROWS; i++)
            for (int k = 0; k < BR; k++) {
                double ec, es;
                rs_sincos_exact(pos[i], theta[k], &ec, &es);
                bad += !close_abs(c[i * BR + k], ec, 1e-15) || !close_abs(s[i * BR + k], es, 1e-15);
            }
        CHECK(bad == 0, "blocked table: %d wrong values", bad);
    }
done:
    free(theta);
    free(x);
    free(out);
    free(c);
    free(s);
}

static int stop_now(void *ctx)
{
    int *calls = (int *)ctx;
    return ++*calls >= 1;
}

/* A failed allocation leaves an in-place x untouched; an interrupt stops the
 * call before it reaches the last rows. */
static void test_no_memory_and_interrupt(void)
{
    enum { NROWS = 1 << 14, ND = 64, NR = 32 };
    float *x = malloc(sizeof(float) * NROWS * ND), *x0 = malloc(sizeof(float) * NROWS * ND);
    double *pos = malloc(sizeof(double) * NROWS), theta[NR];
    float *c = malloc(sizeof(float) * NROWS * NR), *s = malloc(sizeof(float) * NROWS * NR);
    rs_layout L;
    rs_options opt;
    rs_interrupt intr;
    int calls = 0, rc;
    if (!x || !x0 || !pos || !c || !s) {
        CHECK(0, "allocation");
        goto done;
    }
    rs_inv_freq(ND, 10000.0, theta);
    for (int i = 0; i < NROWS * ND; i++)
        x[i] = x0[i] = 1.0f;
    for (int i = 0; i < NROWS; i++)
        pos[i] = (double)(i + 1);
    rows_layout(&L, &opt, NROWS, ND, NR, RS_F32);
    opt.in_place = 1;
    for (int threads = 1; threads <= 4; threads *= 2) {
        opt.n_threads = threads;
        rs_test_fail_alloc(1);
        rc = rs_rotate_positions(&L, &opt, (const char *)x, (char *)x, (const char *)pos, theta, 1.0);
        CHECK(rc == RS_NO_MEMORY, "failed allocation: status %d", rc);
        CHECK(memcmp(x, x0, sizeof(float) * NROWS * ND) == 0, "a failed call (%d threads) wrote to x", threads);
        rs_test_fail_alloc(1);
        rc = rs_cos_sin(NROWS, (const char *)pos, 8, 0, theta, NR, 1.0, RS_F32, (char *)c, (char *)s, threads, NULL);
        CHECK(rc == RS_NO_MEMORY, "failed table allocation: status %d", rc);
    }
    rs_test_fail_alloc(0);

    intr.poll = stop_now;
    intr.ctx = &calls;
    opt.interrupt = &intr;
    opt.n_threads = 1;
    rc = rs_rotate_positions(&L, &opt, (const char *)x, (char *)x, (const char *)pos, theta, 1.0);
    CHECK(rc == RS_INTERRUPTED && calls >= 1, "interrupted rotation: status %d after %d polls", rc, calls);
    CHECK(memcmp(x + (NROWS - 1) * ND, x0 + (NROWS - 1) * ND, sizeof(float) * ND) == 0,
          "an interrupted call went on to the last row");
    /* with threads: every one stops (when it sees the flag depends on timing) */
    calls = 0;
    opt.n_threads = 2;
    rc = rs_rotate_positions(&L, &opt, (const char *)x, (char *)x, (const char *)pos, theta, 1.0);
    CHECK(rc == RS_INTERRUPTED && calls >= 1, "interrupted threaded rotation: status %d", rc);
    calls = 0;
    rc = rs_cos_sin(NROWS, (const char *)pos, 8, 0, theta, NR, 1.0, RS_F32, (char *)c, (char *)s, 1, &intr);
    CHECK(rc == RS_INTERRUPTED && calls >= 1, "interrupted table: status %d after %d polls", rc, calls);
done:
    free(x);
    free(x0);
    free(pos);
    free(c);
    free(s);
}

/* Every instruction-set path (AVX2/AVX-512/F16C on x86-64, NEON on arm64)
 * gives the baseline's bits: fused rotations of each dtype and pairing, in
 * place and out of place, over row lengths that leave every vector tail,
 * and the cos/sin tables themselves.  On arm64 this is the check CI runs
 * under qemu-user (the Python suite there is run by hand: too slow). */
static void rotate_fused_at_cap(int cap, int dtype, int interleaved, int in_place, int64_t r,
                                const uint16_t *x16, const float *x32, const double *x64,
                                const double *pos, const double *theta, void *out)
{
    const int64_t rows = 7, d = 2 * r + 3; /* 3 features past the rotated ones */
    const int64_t item = itemsize(dtype);
    const void *x = dtype == RS_F64 ? (const void *)x64 : dtype == RS_F32 ? (const void *)x32 : (const void *)x16;
    rs_layout L;
    rs_options opt;
    rows_layout(&L, &opt, rows, d, r, dtype);
    opt.interleaved = interleaved;
    opt.in_place = in_place;
    if (in_place)
        memcpy(out, x, (size_t)(rows * d * item));
    rs_test_simd_cap(cap);
    int rc = rs_rotate_positions(&L, &opt, in_place ? (const char *)out : (const char *)x, (char *)out,
                                 (const char *)pos, theta, 1.0);
    rs_test_simd_cap(0);
    CHECK(rc == RS_OK, "fused rotation status %d", rc);
}

static void test_paths_agree(void)
{
    enum { MAXR = 37, PROWS = 7, MAXD = 2 * MAXR + 3 };
    static uint16_t x16[PROWS * MAXD];
    static float x32[PROWS * MAXD];
    static double x64[PROWS * MAXD];
    static double base[PROWS * MAXD], wide[PROWS * MAXD]; /* room for any dtype */
    double pos[PROWS] = {0, 1, 17, 1000, 65537, 3.5, 1e6};
    double theta[MAXR];
    int bad = 0, tables_bad = 0;
    for (int i = 0; i < PROWS * MAXD; i++) {
        x64[i] = (double)((i * 7919) % 2001) / 97.0 - 10.0;
        x32[i] = (float)x64[i];
        x16[i] = (uint16_t)((i * 40503u) & 0x7bffu); /* finite halves and bfloat16s */
    }
    for (int64_t r = 1; r <= MAXR; r += 3) {
        rs_inv_freq(2 * r, 10000.0, theta);
        for (int dtype = RS_F16; dtype <= RS_BF16; dtype++)
            for (int pairing = 0; pairing < 2; pairing++)
                for (int in_place = 0; in_place < 2; in_place++) {
                    const size_t bytes = (size_t)(PROWS * (2 * r + 3)) * (dtype == RS_F64 ? 8 : dtype == RS_F32 ? 4 : 2);
                    memset(base, 0, sizeof(base));
                    memset(wide, 0, sizeof(wide));
                    rotate_fused_at_cap(RS_SIMD_BASELINE, dtype, pairing, in_place, r, x16, x32, x64, pos, theta, base);
                    rotate_fused_at_cap(0, dtype, pairing, in_place, r, x16, x32, x64, pos, theta, wide);
                    if (memcmp(base, wide, bytes) != 0) {
                        bad++;
                        fprintf(stderr, "paths differ: dtype %d interleaved %d in_place %d R %lld (%s)\n", dtype,
                                pairing, in_place, (long long)r, rs_simd_name());
                    }
                }
        for (int dtype = RS_F16; dtype <= RS_BF16; dtype++) {
            memset(base, 0, sizeof(base));
            memset(wide, 0, sizeof(wide));
            rs_test_simd_cap(RS_SIMD_BASELINE);
            int rc1 = rs_cos_sin(PROWS, (const char *)pos, 8, 0, theta, r, 1.0, dtype, (char *)base,
                                 (char *)(base + PROWS * MAXR), 1, NULL);
            rs_test_simd_cap(0);
            int rc2 = rs_cos_sin(PROWS, (const char *)pos, 8, 0, theta, r, 1.0, dtype, (char *)wide,
                                 (char *)(wide + PROWS * MAXR), 1, NULL);
            tables_bad += rc1 != RS_OK || rc2 != RS_OK || memcmp(base, wide, sizeof(base)) != 0;
        }
    }
    CHECK(bad == 0, "%d fused rotations differ between the baseline and %s", bad, rs_simd_name());
    CHECK(tables_bad == 0, "%d cos/sin tables differ between the baseline and %s", tables_bad, rs_simd_name());
#if defined(__aarch64__)
    CHECK(strcmp(rs_simd_name(), "neon") == 0, "arm64 runs %s, not NEON", rs_simd_name());
#endif
}

/* The pool's tasks really run at once on two threads (whichever backend,
 * POSIX or Win32, rs_threads.h chose): each task waits, for at most a few
 * seconds, until another task has started.  Run one after another, the
 * first would wait in vain. */
static int rendezvous_started = 0, rendezvous_met = 0;

static void rendezvous_task(void *arg)
{
    time_t t0 = time(NULL);
    (void)arg;
    __atomic_add_fetch(&rendezvous_started, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&rendezvous_started, __ATOMIC_SEQ_CST) < 2 && time(NULL) - t0 < 5)
        ;
    if (__atomic_load_n(&rendezvous_started, __ATOMIC_SEQ_CST) >= 2)
        __atomic_add_fetch(&rendezvous_met, 1, __ATOMIC_SEQ_CST);
}

static void test_tasks_run_at_once(void)
{
    char args[4][8];
    /* twice: the first call starts the pool's worker, the second reuses it;
     * tasks 0 and 1 of a call meet whichever thread takes them */
    for (int call = 0; call < 2; call++) {
        rendezvous_started = rendezvous_met = 0;
        int rc = rs_parallel(rendezvous_task, args, sizeof(args[0]), 2, 2, NULL, NULL);
        CHECK(rc == 0 && rendezvous_met == 2, "call %d: two tasks on two threads did not run at once (%d met)",
              call, rendezvous_met);
    }
}

int main(void)
{
    test_frequencies();
    test_sincos_exact();
    test_angle_cache();
    test_half();
    test_bf16();
    test_rotation();
    test_fused_and_table();
    test_streams();
    test_threads();
    test_pair_blocks();
    test_no_memory_and_interrupt();
    test_tasks_run_at_once();
    test_paths_agree();
    if (failures) {
        printf("%d passed, %d failed\n", checks - failures, failures);
        return 1;
    }
    printf("%d passed, 0 failed\n", checks);
    return 0;
}
