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

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* 2 pi = P1 + P2 + P3 (+ ~2^-96): P1 and P2 carry 21 significant bits each. */
static const double TWO_PI_1 = 0x1.921fb00000000p+2;
static const double TWO_PI_2 = 0x1.5110b00000000p-20;
static const double TWO_PI_3 = 0x1.18469898cc517p-42;
static const double INV_TWO_PI = 0x1.45f306dc9c883p-3;

/* Veltkamp split: a = hi + lo with hi holding the top 26 bits. */
static void split(double a, double *hi, double *lo)
{
    double t = 134217729.0 * a; /* 2^27 + 1 */
    *hi = t - (t - a);
    *lo = a - *hi;
}

/* Dekker: a*b = p + e exactly (barring overflow). */
static void two_prod(double a, double b, double *p, double *e)
{
    double ah, al, bh, bl;
    *p = a * b;
    split(a, &ah, &al);
    split(b, &bh, &bl);
    *e = ((ah * bh - *p) + ah * bl + al * bh) + al * bl;
}

void rs_sincos_exact(double t, double theta, double *c, double *s)
{
    double p, e;
    two_prod(t, theta, &p, &e);
    double n = nearbyint(p * INV_TWO_PI);
    /* p - n*P1 is exact (Sterbenz); the later terms are small. */
    double r = ((p - n * TWO_PI_1) - n * TWO_PI_2) - n * TWO_PI_3;
    r += e;
    *c = cos(r);
    *s = sin(r);
}

/* Positions split as t = q*B + r; B is a power of two so q*B is exact. */
#define RS_LO_ROWS 256

struct rs_angle_cache {
    const double *theta;
    int64_t n;
    double scale;
    double *lo_c, *lo_s;          /* RS_LO_ROWS rows of n */
    unsigned char lo_ok[RS_LO_ROWS];
    double *hi_c, *hi_s;          /* one row of n */
    double hi_q;
    int hi_ok;
};

rs_angle_cache *rs_angle_cache_new(const double *theta, int64_t n_pairs,
                                   double scale)
{
    rs_angle_cache *a = (rs_angle_cache *)calloc(1, sizeof(*a));
    size_t n = n_pairs > 0 ? (size_t)n_pairs : 1;
    if (a == NULL)
        return NULL;
    if (n > ((size_t)-1) / (sizeof(double) * 2 * (RS_LO_ROWS + 1)))
        goto fail;
    a->theta = theta;
    a->n = n_pairs;
    a->scale = scale;
    a->lo_c = (double *)malloc(sizeof(double) * 2 * (RS_LO_ROWS + 1) * n);
    if (a->lo_c == NULL)
        goto fail;
    a->lo_s = a->lo_c + RS_LO_ROWS * n;
    a->hi_c = a->lo_s + RS_LO_ROWS * n;
    a->hi_s = a->hi_c + n;
    return a;
fail:
    free(a);
    return NULL;
}

void rs_angle_cache_free(rs_angle_cache *a)
{
    if (a != NULL) {
        free(a->lo_c);
        free(a);
    }
}

static void exact_row(const double *theta, int64_t n, double t, double *c,
                      double *s)
{
    for (int64_t k = 0; k < n; k++)
        rs_sincos_exact(t, theta[k], &c[k], &s[k]);
}

void rs_angle_row(rs_angle_cache *a, double t, double *restrict c,
                  double *restrict s)
{
    const int64_t n = a->n;
    const double scale = a->scale;

    if (t == floor(t) && fabs(t) < 0x1p52) {
        double q = floor(t / RS_LO_ROWS);
        int r = (int)(t - q * RS_LO_ROWS);
        const double *restrict lc = a->lo_c + (size_t)r * (size_t)n;
        const double *restrict ls = a->lo_s + (size_t)r * (size_t)n;
        const double *restrict hc = a->hi_c;
        const double *restrict hs = a->hi_s;
        if (!a->lo_ok[r]) {
            exact_row(a->theta, n, (double)r, a->lo_c + (size_t)r * n,
                      a->lo_s + (size_t)r * n);
            a->lo_ok[r] = 1;
        }
        if (q == 0.0) {
            for (int64_t k = 0; k < n; k++) {
                c[k] = scale * lc[k];
                s[k] = scale * ls[k];
            }
            return;
        }
        if (!a->hi_ok || a->hi_q != q) {
            exact_row(a->theta, n, q * RS_LO_ROWS, a->hi_c, a->hi_s);
            a->hi_q = q;
            a->hi_ok = 1;
        }
        /* cos(x+y), sin(x+y) from exact rows: error ~2 ulp of float64. */
        for (int64_t k = 0; k < n; k++) {
            c[k] = scale * (hc[k] * lc[k] - hs[k] * ls[k]);
            s[k] = scale * (hs[k] * lc[k] + hc[k] * ls[k]);
        }
        return;
    }
    exact_row(a->theta, n, t, c, s);
    if (scale != 1.0) {
        for (int64_t k = 0; k < n; k++) {
            c[k] *= scale;
            s[k] *= scale;
        }
    }
}
