/*
 * cos/sin of t*theta with the angle formed and reduced exactly.
 *
 * A float32 peer computes fl32(t*theta) and loses t*theta*2^-24 radians
 * (0.06 rad at t = 10^6).  Here the product t*theta is kept as an unevaluated
 * sum p + e of two doubles (Dekker's exact product), and the reduction
 * modulo 2 pi subtracts n*2pi with 2 pi split in three pieces so that each
 * n*piece is exact for |n| < 2^32 (Cody & Waite).  The reduced angle is then
 * accurate to about 1e-15 rad for |t*theta| <= RS_MAX_ANGLE.
 *
 * This file must be compiled without floating-point contraction
 * (-ffp-contract=off): a fused multiply-add would break Dekker's product.
 */
#include "ropescale.h"
#include "rs_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* pi/2 = P1 + P2 + P3 (+ ~2^-91): P1 and P2 carry at most 19 significant bits,
 * so n*P1 and n*P2 are exact for |n| < 2^34 (|t*theta| <= RS_MAX_ANGLE). */
static const double HALF_PI_1 = 0x1.921f800000000p+0;
static const double HALF_PI_2 = 0x1.aa22000000000p-19;
static const double HALF_PI_3 = 0x1.68c234c4c6629p-39;
static const double TWO_OVER_PI = 0x1.45f306dc9c883p-1;
/* Adding and subtracting 1.5*2^52 rounds |v| < 2^51 to the nearest integer,
 * in any vector width (SSE2 has no rounding instruction). */
static const double ROUNDER = 0x1.8p52;

/* 1/n!, correctly rounded (Taylor coefficients; on |r| <= pi/4 the series
 * truncated after r^17 (sin) and r^16 (cos) is within 5e-17). */
#define S3 (-0x1.5555555555555p-3)
#define S5 0x1.1111111111111p-7
#define S7 (-0x1.a01a01a01a01ap-13)
#define S9 0x1.71de3a556c734p-19
#define S11 (-0x1.ae64567f544e4p-26)
#define S13 0x1.6124613a86d09p-33
#define S15 (-0x1.ae7f3e733b81fp-41)
#define S17 0x1.952c77030ad4ap-49
#define C2 (-0x1.0000000000000p-1)
#define C4 0x1.5555555555555p-5
#define C6 (-0x1.6c16c16c16c17p-10)
#define C8 0x1.a01a01a01a01ap-16
#define C10 (-0x1.27e4fb7789f5cp-22)
#define C12 0x1.1eed8eff8d898p-29
#define C14 (-0x1.93974a8c07c9dp-37)
#define C16 0x1.ae7f3e733b81fp-45

/* Veltkamp split: a = hi + lo with hi holding the top 26 bits. */
#define RS_SPLIT(a, hi, lo)                                                    \
    do {                                                                       \
        double t_ = 134217729.0 * (a); /* 2^27 + 1 */                          \
        hi = t_ - (t_ - (a));                                                  \
        lo = (a) - hi;                                                         \
    } while (0)

/* cos and sin of the exact t*theta, branch-free so that loops over theta
 * vectorize.  Steps: Dekker's product t*theta = p + e; n = nearest integer to
 * p/(pi/2); r = p - n*pi/2 + e by Cody-Waite with a 3-piece pi/2; Taylor
 * polynomials on |r| <= pi/4; the quadrant n mod 4 swaps and negates. */
#define RS_SINCOS_BODY(t, theta, COUT, SOUT)                                   \
    do {                                                                       \
        double p_ = (t) * (theta), ah_, al_, bh_, bl_;                         \
        RS_SPLIT(t, ah_, al_);                                                 \
        RS_SPLIT(theta, bh_, bl_);                                             \
        double e_ = ((ah_ * bh_ - p_) + ah_ * bl_ + al_ * bh_) + al_ * bl_;    \
        double n_ = (p_ * TWO_OVER_PI + ROUNDER) - ROUNDER;                    \
        double r_ = ((p_ - n_ * HALF_PI_1) - n_ * HALF_PI_2) - n_ * HALF_PI_3; \
        r_ += e_;                                                              \
        double z_ = r_ * r_;                                                   \
        double sp_ = r_ + r_ * z_ * (S3 + z_ * (S5 + z_ * (S7 + z_ * (S9 +    \
                     z_ * (S11 + z_ * (S13 + z_ * (S15 + z_ * S17)))))));      \
        double cp_ = 1.0 + z_ * (C2 + z_ * (C4 + z_ * (C6 + z_ * (C8 +        \
                     z_ * (C10 + z_ * (C12 + z_ * (C14 + z_ * C16)))))));      \
        /* quadrant q = n mod 4 in [0, 4), exact in double */                  \
        double q_ = n_ - 4.0 * ((n_ * 0.25 + ROUNDER) - ROUNDER);              \
        q_ = q_ < 0.0 ? q_ + 4.0 : q_;                                         \
        int odd_ = (q_ == 1.0) | (q_ == 3.0);                                  \
        int negc_ = (q_ == 1.0) | (q_ == 2.0);                                 \
        double cc_ = odd_ ? sp_ : cp_;                                         \
        double ss_ = odd_ ? cp_ : sp_;                                         \
        COUT = negc_ ? -cc_ : cc_;                                             \
        SOUT = (q_ >= 2.0) ? -ss_ : ss_;                                       \
    } while (0)

void rs_sincos_exact(double t, double theta, double *c, double *s)
{
    double cv, sv;
    RS_SINCOS_BODY(t, theta, cv, sv);
    *c = cv;
    *s = sv;
}

/* Rows of a cache: unit, mid, lo, hi. */
#define RS_CACHE_ROWS (2 * RS_UNITS + RS_HI_STEP + 1)

size_t rs_angle_cache_doubles(int64_t n)
{
    return (size_t)(n > 0 ? n : 1) * 2 * RS_CACHE_ROWS;
}

void rs_angle_cache_init(rs_angle_cache *a, double *mem, const double *theta,
                         int64_t n, double scale)
{
    size_t m = (size_t)(n > 0 ? n : 1);
    a->theta = theta;
    a->n = n;
    a->scale = scale;
    a->unit_c = mem;
    a->unit_s = a->unit_c + RS_UNITS * m;
    a->mid_c = a->unit_s + RS_UNITS * m;
    a->mid_s = a->mid_c + RS_UNITS * m;
    a->lo_c = a->mid_s + RS_UNITS * m;
    a->lo_s = a->lo_c + RS_HI_STEP * m;
    a->hi_c = a->lo_s + RS_HI_STEP * m;
    a->hi_s = a->hi_c + m;
    a->hi_ok = 0;
    a->hi_q = 0.0;
    memset(a->unit_ok, 0, sizeof(a->unit_ok));
    memset(a->mid_ok, 0, sizeof(a->mid_ok));
    memset(a->lo_ok, 0, sizeof(a->lo_ok));
}

static void exact_row_base(const double *restrict theta, int64_t n, double t,
                           double *restrict c, double *restrict s)
{
    for (int64_t k = 0; k < n; k++)
        RS_SINCOS_BODY(t, theta[k], c[k], s[k]);
}

#if RS_HAVE_X86_DISPATCH
__attribute__((target("avx2"))) static void
exact_row_avx2(const double *restrict theta, int64_t n, double t,
               double *restrict c, double *restrict s)
{
    for (int64_t k = 0; k < n; k++)
        RS_SINCOS_BODY(t, theta[k], c[k], s[k]);
}

#endif

static void exact_row(const double *theta, int64_t n, double t, double *c,
                      double *s)
{
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx2()) {
        exact_row_avx2(theta, n, t, c, s);
        return;
    }
#endif
    exact_row_base(theta, n, t, c, s);
}

/* cos(x+y), sin(x+y) from the rows of x and y, times scale: error ~2 ulp
 * of float64 per join.  A row of angle 0 is (1, 0) exactly, and joining
 * with it changes no bit (1*u - 0*v == u): the shortcuts below for q = 0 or
 * r1 = 0 give what the join would. */
static void join(int64_t n, double scale, const double *restrict xc, const double *restrict xs,
                 const double *restrict yc, const double *restrict ys, double *restrict c,
                 double *restrict s)
{
    for (int64_t k = 0; k < n; k++) {
        c[k] = scale * (xc[k] * yc[k] - xs[k] * ys[k]);
        s[k] = scale * (xs[k] * yc[k] + xc[k] * ys[k]);
    }
}

/* The exact row of position i * step in a lazily filled set of rows. */
static const double *exact_cached(rs_angle_cache *a, double *rows_c, double *rows_s,
                                  unsigned char *ok, int i, double step)
{
    const size_t at = (size_t)i * (size_t)a->n;
    if (!ok[i]) {
        exact_row(a->theta, a->n, (double)i * step, rows_c + at, rows_s + at);
        ok[i] = 1;
    }
    return rows_c + at;
}

/* The row of r in [0, RS_HI_STEP), kept: units joined with sixteens. */
static void lo_row(rs_angle_cache *a, int r)
{
    const size_t at = (size_t)r * (size_t)a->n;
    const int r1 = r / RS_UNITS, r0 = r % RS_UNITS;
    const size_t u = (size_t)r0 * (size_t)a->n, m = (size_t)r1 * (size_t)a->n;
    if (a->lo_ok[r])
        return;
    exact_cached(a, a->unit_c, a->unit_s, a->unit_ok, r0, 1.0);
    if (r1 == 0) {
        memcpy(a->lo_c + at, a->unit_c + u, sizeof(double) * (size_t)a->n);
        memcpy(a->lo_s + at, a->unit_s + u, sizeof(double) * (size_t)a->n);
    } else {
        exact_cached(a, a->mid_c, a->mid_s, a->mid_ok, r1, (double)RS_UNITS);
        join(a->n, 1.0, a->mid_c + m, a->mid_s + m, a->unit_c + u, a->unit_s + u,
             a->lo_c + at, a->lo_s + at);
    }
    a->lo_ok[r] = 1;
}

void rs_angle_row(rs_angle_cache *a, double t, double *restrict c,
                  double *restrict s)
{
    const int64_t n = a->n;
    const double scale = a->scale;

    if (t == floor(t) && fabs(t) < 0x1p52) {
        /* Always this path for an integer, never the direct one: a position
         * gets the same bits whatever else the call holds. */
        const double q = floor(t / RS_HI_STEP);
        const int r = (int)(t - q * RS_HI_STEP);
        const double *lc = a->lo_c + (size_t)r * (size_t)n;
        const double *ls = a->lo_s + (size_t)r * (size_t)n;
        lo_row(a, r);
        if (q == 0.0) {
            for (int64_t k = 0; k < n; k++) {
                c[k] = scale * lc[k];
                s[k] = scale * ls[k];
            }
            return;
        }
        if (!a->hi_ok || a->hi_q != q) {
            exact_row(a->theta, n, q * RS_HI_STEP, a->hi_c, a->hi_s);
            a->hi_q = q;
            a->hi_ok = 1;
        }
        join(n, scale, a->hi_c, a->hi_s, lc, ls, c, s);
        return;
    }
    exact_row(a->theta, n, t, c, s);
    for (int64_t k = 0; k < n; k++) {
        c[k] *= scale;
        s[k] *= scale;
    }
}

double rs_read_position(const char *p, int is_int)
{
    if (is_int)
        return (double)*(const int64_t *)(const void *)p;
    return *(const double *)(const void *)p;
}
