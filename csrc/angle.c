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

#include "angle_consts.h"

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

size_t rs_angle_cache_doubles(int64_t n)
{
    return (size_t)(n > 0 ? n : 1) * 2 * (RS_LO_ROWS + 1);
}

void rs_angle_cache_init(rs_angle_cache *a, double *mem, const double *theta,
                         int64_t n, double scale)
{
    size_t m = (size_t)(n > 0 ? n : 1);
    a->theta = theta;
    a->n = n;
    a->scale = scale;
    a->lo_c = mem;
    a->lo_s = a->lo_c + RS_LO_ROWS * m;
    a->hi_c = a->lo_s + RS_LO_ROWS * m;
    a->hi_s = a->hi_c + m;
    a->hi_ok = 0;
    a->hi_q = 0.0;
    memset(a->lo_ok, 0, sizeof(a->lo_ok));
    a->share = NULL;
    a->share_c = a->share_s = NULL;
}

/* A row of exact cos/sin, vectorized per instruction set (AVX-512: eight
 * angles per vector; the selects become masked moves, the arithmetic is
 * the same sequence, so the bits are the other paths'). */
#define RS_EXACT_ROW_BODY                                                      \
    for (int64_t k = 0; k < n; k++)                                            \
        RS_SINCOS_BODY(t, theta[k], c[k], s[k]);
RS_MULTIVERSION(exact_row_c,
                (const double *restrict theta, int64_t n, double t, double *restrict c,
                 double *restrict s),
                (theta, n, t, c, s), RS_EXACT_ROW_BODY)

/* The same for fused M-RoPE: the pairs of run j (k in [runs[j],
 * runs[j+1])) at their stream's t[j], in one call. */
#define RS_EXACT_ROW_RUNS_BODY                                                 \
    for (int64_t j = 0; j < nr; j++) {                                         \
        const double tj = t[j];                                                \
        for (int64_t k = runs[j]; k < runs[j + 1]; k++)                        \
            RS_SINCOS_BODY(tj, theta[k], c[k], s[k]);                          \
    }
RS_MULTIVERSION(exact_row_runs_c,
                (const double *restrict theta, const int64_t *restrict runs, int64_t nr,
                 const double *restrict t, double *restrict c, double *restrict s),
                (theta, runs, nr, t, c, s), RS_EXACT_ROW_RUNS_BODY)

/* arm64: exact_row_neon, exact_row_runs_neon */
#include "angle_neon.h"

static void exact_row(const double *restrict theta, int64_t n, double t, double *restrict c,
                      double *restrict s)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon()) {
        exact_row_neon(theta, n, t, c, s);
        return;
    }
#endif
    exact_row_c(theta, n, t, c, s);
}

static void exact_row_runs(const double *restrict theta, const int64_t *restrict runs, int64_t nr,
                           const double *restrict t, double *restrict c, double *restrict s)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon()) {
        exact_row_runs_neon(theta, runs, nr, t, c, s);
        return;
    }
#endif
    exact_row_runs_c(theta, runs, nr, t, c, s);
}

/* c = scale * cos(x + y), s = scale * sin(x + y) from the exact rows of x
 * (hc, hs) and y (lc, ls): error ~2 ulp of float64.  hc == NULL: the rows
 * of y alone, scaled.  Vectorized per instruction set like exact_row. */
#define RS_COMBINE_BODY                                                        \
    do {                                                                       \
        if (hc == NULL) {                                                      \
            for (int64_t k = 0; k < n; k++) {                                  \
                c[k] = scale * lc[k];                                          \
                s[k] = scale * ls[k];                                          \
            }                                                                  \
            return;                                                            \
        }                                                                      \
        for (int64_t k = 0; k < n; k++) {                                      \
            c[k] = scale * (hc[k] * lc[k] - hs[k] * ls[k]);                    \
            s[k] = scale * (hs[k] * lc[k] + hc[k] * ls[k]);                    \
        }                                                                      \
    } while (0)

RS_MULTIVERSION(combine,
                (int64_t n, double scale, const double *restrict hc, const double *restrict hs,
                 const double *restrict lc, const double *restrict ls, double *restrict c,
                 double *restrict s),
                (n, scale, hc, hs, lc, ls, c, s), RS_COMBINE_BODY)

/* combine() for chunked M-RoPE sections: run j's pairs take their y from
 * the exact row r[j] of the rows lo (n pairs each), read in place. */
#define RS_COMBINE_RUNS_BODY                                                   \
    for (int64_t j = 0; j < nr; j++) {                                         \
        const double *restrict lc = loc + (size_t)r[j] * (size_t)n;            \
        const double *restrict ls = los + (size_t)r[j] * (size_t)n;            \
        if (hc == NULL) {                                                      \
            for (int64_t k = runs[j]; k < runs[j + 1]; k++) {                  \
                c[k] = scale * lc[k];                                          \
                s[k] = scale * ls[k];                                          \
            }                                                                  \
        } else {                                                               \
            for (int64_t k = runs[j]; k < runs[j + 1]; k++) {                  \
                c[k] = scale * (hc[k] * lc[k] - hs[k] * ls[k]);                \
                s[k] = scale * (hs[k] * lc[k] + hc[k] * ls[k]);                \
            }                                                                  \
        }                                                                      \
    }
RS_MULTIVERSION(combine_runs,
                (int64_t n, double scale, const double *restrict hc, const double *restrict hs,
                 const double *restrict loc, const double *restrict los, const int64_t *restrict runs,
                 int64_t nr, const int *restrict r, double *restrict c, double *restrict s),
                (n, scale, hc, hs, loc, los, runs, nr, r, c, s), RS_COMBINE_RUNS_BODY)

/* An integer position t (|t| < 2^52) as q*RS_LO_ROWS + r with 0 <= r <
 * RS_LO_ROWS, in integer arithmetic (floor() is a libm call without
 * SSE4.1, and a decode row takes one split per stream); 0 for any other t. */
#if (RS_LO_ROWS & (RS_LO_ROWS - 1)) != 0
#error "RS_LO_ROWS must be a power of two"
#endif
static int split_position(double t, double *q, int *r)
{
    int64_t ti;
    if (!(fabs(t) < 0x1p52))
        return 0;
    ti = (int64_t)t;
    if ((double)ti != t)
        return 0;
    *r = (int)(ti & (RS_LO_ROWS - 1));
    *q = (double)((ti - *r) / RS_LO_ROWS); /* exact: floor(t / RS_LO_ROWS) */
    return 1;
}

void rs_angle_cache_share(rs_angle_cache *a, rs_lo_share *share, double *mem)
{
#if defined(__GNUC__) || defined(__clang__)
    a->share = share;
    a->share_c = mem;
    a->share_s = mem + (size_t)RS_LO_ROWS * (size_t)(a->n > 0 ? a->n : 1);
#else
    /* no atomics here to publish a shared row with: every task makes its own */
    (void)a;
    (void)share;
    (void)mem;
#endif
}

/* Point the cache at lo row r, made here or by another task (shared). */
static void lo_row(rs_angle_cache *a, int r)
{
    const size_t at = (size_t)r * (size_t)a->n;
#if defined(__GNUC__) || defined(__clang__)
    rs_lo_share *sh = a->share;
    if (sh != NULL) {
        int st = __atomic_load_n(&sh->state[r], __ATOMIC_ACQUIRE);
        if (st == 0) {
            int expect = 0;
            if (__atomic_compare_exchange_n(&sh->state[r], &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                exact_row(a->theta, a->n, (double)r, a->share_c + at, a->share_s + at);
                __atomic_store_n(&sh->state[r], 2, __ATOMIC_RELEASE);
                st = 2;
            } else {
                st = expect;
            }
        }
        if (st == 2) {
            a->lo_at_c[r] = a->share_c + at;
            a->lo_at_s[r] = a->share_s + at;
            a->lo_ok[r] = 1;
            return;
        }
    }
#endif
    exact_row(a->theta, a->n, (double)r, a->lo_c + at, a->lo_s + at);
    a->lo_at_c[r] = a->lo_c + at;
    a->lo_at_s[r] = a->lo_s + at;
    a->lo_ok[r] = 1;
}

void rs_angle_row(rs_angle_cache *a, double t, double *restrict c,
                  double *restrict s)
{
    const int64_t n = a->n;
    const double scale = a->scale;

    double q;
    int r;
    if (split_position(t, &q, &r)) {
        /* Always this path for an integer, never the direct one: a position
         * gets the same bits whatever else the call holds (cos_sin of [501]
         * once differed from cos_sin of [500, 501] by 2 ulp). */
        const double *restrict hc = a->hi_c;
        const double *restrict hs = a->hi_s;
        if (!a->lo_ok[r])
            lo_row(a, r);
        const double *restrict lc = a->lo_at_c[r];
        const double *restrict ls = a->lo_at_s[r];
        if (q == 0.0) {
            combine(n, scale, NULL, NULL, lc, ls, c, s);
            return;
        }
        if (!a->hi_ok || a->hi_q != q) {
            exact_row(a->theta, n, q * RS_LO_ROWS, a->hi_c, a->hi_s);
            a->hi_q = q;
            a->hi_ok = 1;
        }
        combine(n, scale, hc, hs, lc, ls, c, s);
        return;
    }
    exact_row(a->theta, n, t, c, s);
    for (int64_t k = 0; k < n; k++) {
        c[k] *= scale;
        s[k] *= scale;
    }
}

void rs_stream_angles_init(rs_stream_angles *m, double *mem, const double *theta_sorted,
                           const int64_t *runs, int64_t n_streams, double scale)
{
    rs_angle_cache_init(&m->a, mem, theta_sorted, runs[n_streams], scale);
    m->runs = runs;
    m->n_streams = n_streams;
    for (int j = 0; j < RS_MAX_STREAMS; j++)
        m->hq[j] = NAN;
    memset(m->lo_runs, 0, sizeof(m->lo_runs));
}

void rs_stream_angle_row(rs_stream_angles *m, const double *t, double *restrict c,
                         double *restrict s)
{
    rs_angle_cache *a = &m->a;
    const int64_t n = a->n, ns = m->n_streams, *runs = m->runs;
    const double scale = a->scale;
    double q[RS_MAX_STREAMS], tq[RS_MAX_STREAMS];
    int r[RS_MAX_STREAMS], is_int[RS_MAX_STREAMS], all_int = 1, all_q0 = 1, same_q = 1;

    /* one scalar pass (a vector copy of q written element by element
     * stalled on store forwarding, about a tenth of a decode row) */
    for (int64_t j = 0; j < ns; j++) {
        double qj = 0.0;
        int rj = 0;
        is_int[j] = split_position(t[j], &qj, &rj);
        all_int &= is_int[j];
        q[j] = qj;
        r[j] = rj;
        tq[j] = qj * RS_LO_ROWS;
        all_q0 &= qj == 0.0;
        same_q &= qj == m->hq[j];
        /* a lo row is made run by run, as streams come to need it: a task of
         * few rows (a decode step split over threads) would otherwise make
         * whole rows for one stream's sake */
        if (is_int[j] && !(m->lo_runs[rj] & (1u << j))) {
            const size_t at = (size_t)rj * (size_t)n + (size_t)runs[j];
            exact_row(a->theta + runs[j], runs[j + 1] - runs[j], (double)rj, a->lo_c + at, a->lo_s + at);
            m->lo_runs[rj] |= 1u << j;
        }
    }
    if (all_int) {
        /* A stream at q = 0 gets the exact row of t = 0, (1, +0), which the
         * addition turns into its lo row times scale exactly (lo cosines are
         * never 0; lo sines are +0 only where the hi sine's +0 product leaves
         * them +0), as rs_angle_row's shortcut does. */
        if (!all_q0 && !same_q) {
            exact_row_runs(a->theta, runs, ns, tq, a->hi_c, a->hi_s);
            for (int64_t j = 0; j < ns; j++)
                m->hq[j] = q[j];
        }
        combine_runs(n, scale, all_q0 ? NULL : a->hi_c, a->hi_s, a->lo_c, a->lo_s, runs, ns, r, c, s);
        return;
    }
    /* some stream off the integers: run by run, rs_angle_row's steps */
    for (int64_t j = 0; j < ns; j++) {
        const int64_t k0 = runs[j], nj = runs[j + 1] - k0;
        const double *lc = a->lo_c + (size_t)r[j] * (size_t)n + k0;
        const double *ls = a->lo_s + (size_t)r[j] * (size_t)n + k0;
        if (!is_int[j]) {
            exact_row(a->theta + k0, nj, t[j], c + k0, s + k0);
            for (int64_t k = k0; k < k0 + nj; k++) {
                c[k] *= scale;
                s[k] *= scale;
            }
        } else if (q[j] == 0.0) {
            combine(nj, scale, NULL, NULL, lc, ls, c + k0, s + k0);
        } else {
            if (q[j] != m->hq[j]) {
                exact_row(a->theta + k0, nj, tq[j], a->hi_c + k0, a->hi_s + k0);
                m->hq[j] = q[j];
            }
            combine(nj, scale, a->hi_c + k0, a->hi_s + k0, lc, ls, c + k0, s + k0);
        }
    }
}

double rs_read_position(const char *p, int is_int)
{
    if (is_int)
        return (double)*(const int64_t *)(const void *)p;
    return *(const double *)(const void *)p;
}
