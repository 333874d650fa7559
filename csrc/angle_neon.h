/*
 * NEON form of angle.c's exact row (arm64), included once by angle.c, with
 * RS_SINCOS_BODY's constants (angle_consts.h): the same operations in the
 * same order on two lanes of float64x2_t (the selects are BSL), each
 * rounding as the scalar one does, and no contraction (-ffp-contract=off;
 * angle.c's pragma for clang), so the bits are those of the portable row.
 * Chosen at run time by rs_cpu_has_neon().
 */
#ifndef RS_ANGLE_NEON_H
#define RS_ANGLE_NEON_H

#if RS_HAVE_NEON
#include <arm_neon.h>

#include "angle_consts.h"

#define RS_NSPLAT(x) vdupq_n_f64(x)

static void exact_row_neon(const double *restrict theta, int64_t n, double t, double *restrict c,
                           double *restrict s)
{
    const float64x2_t tv = RS_NSPLAT(t), split = RS_NSPLAT(134217729.0);
    const float64x2_t rounder = RS_NSPLAT(ROUNDER), zero = RS_NSPLAT(0.0);
    const float64x2_t one = RS_NSPLAT(1.0), two = RS_NSPLAT(2.0), three = RS_NSPLAT(3.0);
    const float64x2_t four = RS_NSPLAT(4.0);
    const float64x2_t tt = split * tv, ah = tt - (tt - tv), al = tv - ah;
    int64_t k = 0;
    for (; k + 2 <= n; k += 2) {
        const float64x2_t th = vld1q_f64(theta + k);
        const float64x2_t p = tv * th, ts = split * th;
        const float64x2_t bh = ts - (ts - th), bl = th - bh;
        const float64x2_t e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
        const float64x2_t nq = (p * RS_NSPLAT(TWO_OVER_PI) + rounder) - rounder;
        float64x2_t r = ((p - nq * RS_NSPLAT(HALF_PI_1)) - nq * RS_NSPLAT(HALF_PI_2)) - nq * RS_NSPLAT(HALF_PI_3);
        r = r + e;
        const float64x2_t z = r * r;
        const float64x2_t sp = r + r * z * (RS_NSPLAT(S3) + z * (RS_NSPLAT(S5) + z * (RS_NSPLAT(S7) +
                               z * (RS_NSPLAT(S9) + z * (RS_NSPLAT(S11) + z * (RS_NSPLAT(S13) +
                               z * (RS_NSPLAT(S15) + z * RS_NSPLAT(S17))))))));
        const float64x2_t cp = one + z * (RS_NSPLAT(C2) + z * (RS_NSPLAT(C4) + z * (RS_NSPLAT(C6) +
                               z * (RS_NSPLAT(C8) + z * (RS_NSPLAT(C10) + z * (RS_NSPLAT(C12) +
                               z * (RS_NSPLAT(C14) + z * RS_NSPLAT(C16))))))));
        float64x2_t q = nq - four * ((nq * RS_NSPLAT(0.25) + rounder) - rounder);
        q = vbslq_f64(vcltq_f64(q, zero), q + four, q);
        const uint64x2_t odd = vorrq_u64(vceqq_f64(q, one), vceqq_f64(q, three));
        const uint64x2_t negc = vorrq_u64(vceqq_f64(q, one), vceqq_f64(q, two));
        const float64x2_t cc = vbslq_f64(odd, sp, cp), ss = vbslq_f64(odd, cp, sp);
        vst1q_f64(c + k, vbslq_f64(negc, vnegq_f64(cc), cc));
        vst1q_f64(s + k, vbslq_f64(vcgeq_f64(q, two), vnegq_f64(ss), ss));
    }
    for (; k < n; k++)
        rs_sincos_exact(t, theta[k], c + k, s + k);
}

static void exact_row_runs_neon(const double *restrict theta, const int64_t *restrict runs, int64_t nr,
                                const double *restrict t, double *restrict c, double *restrict s)
{
    for (int64_t j = 0; j < nr; j++)
        exact_row_neon(theta + runs[j], runs[j + 1] - runs[j], t[j], c + runs[j], s + runs[j]);
}
#endif

#endif
