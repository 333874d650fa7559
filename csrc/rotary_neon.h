/*
 * NEON instances of rotary.c's loops (arm64), included once by rotary.c
 * after its loop skeleton: the rotation is RS_PAIR_LOOP's own statements on
 * float32x4_t / float64x2_t, whose operators round like the scalar ones,
 * and -ffp-contract=off keeps GCC and clang from fusing them into FMLA, so
 * every path gives the baseline's bits.  Chosen at run time by
 * rs_cpu_has_neon() (tests cap it to compare against the portable code).
 *
 *   rot_rows_f32_neon, rot_rows_f64_neon  contiguous rows, both pairings
 *                                         (interleaved through LD2/ST2)
 *   half_f16_neon                         contiguous half-split float16 rows
 *                                         through the hardware conversion
 *   half_bf16_neon                        contiguous half-split bfloat16 rows
 *
 * Strided rows take the portable strided kernel.
 */
#ifndef RS_ROTARY_NEON_H
#define RS_ROTARY_NEON_H

#if RS_HAVE_NEON
#include <arm_neon.h>

#define RS_LD_NQ32(V, p, i) vld1q_f32((p) + (i))
#define RS_ST_NQ32(V, p, i, v) vst1q_f32((p) + (i), (v))
#define RS_LD_NQ64(V, p, i) vld1q_f64((p) + (i))
#define RS_ST_NQ64(V, p, i, v) vst1q_f64((p) + (i), (v))

/* x and o may be the same row (in place): each step reads both runs of its
 * pairs before it writes either, as RS_PAIR_LOOP always does. */
#define RS_DEFINE_NEON(T, SUF, V, V2, W, LDV, STV, LD2, ST2)                   \
    static void half_neon_##SUF(int64_t n, int64_t R, const T *x, T *o,        \
                                const T *c, const T *s)                        \
    {                                                                          \
        const T *xb = x + R;                                                   \
        T *ob = o + R;                                                         \
        int64_t k = 0;                                                         \
        RS_PAIR_LOOP(k, n, W, 1, 0, V, x, xb, o, ob, c, s, LDV, STV, LDV)      \
        RS_PAIR_LOOP(k, n, 1, 1, 0, T, x, xb, o, ob, c, s, RS_LD, RS_ST, RS_LD) \
    }                                                                          \
    /* interleaved: LD2 splits W pairs into their a and b lanes */             \
    static void inter_neon_##SUF(int64_t n, const T *x, T *o, const T *c,      \
                                 const T *s)                                   \
    {                                                                          \
        int64_t k = 0;                                                         \
        for (; k + (W) <= n; k += (W)) {                                       \
            V2 v_ = LD2(x + 2 * k), r_;                                        \
            const V a_ = v_.val[0], b_ = v_.val[1];                            \
            const V c_ = LDV(V, c, k), s_ = LDV(V, s, k);                      \
            r_.val[0] = a_ * c_ - b_ * s_;                                     \
            r_.val[1] = b_ * c_ + a_ * s_;                                     \
            ST2(o + 2 * k, r_);                                                \
        }                                                                      \
        RS_PAIR_LOOP(k, n, 1, 2, 1, T, x, x, o, o, c, s, RS_LD, RS_ST, RS_LD)  \
    }                                                                          \
    static void rot_rows_##SUF##_neon(const rs_batch *B, const char *x,        \
                                      char *o, const T *c, const T *s)         \
    {                                                                          \
        if (B->fx != (int64_t)sizeof(T) || B->fo != (int64_t)sizeof(T)) {      \
            strided_##SUF(B, x, o, c, s);                                      \
            return;                                                            \
        }                                                                      \
        for (int64_t r = 0; r < B->nb; r++) {                                  \
            const T *xr = (const T *)(const void *)(x + r * B->bsx);           \
            T *orow = (T *)(void *)(o + r * B->bso);                           \
            RS_PREFETCH_ROW(xr, B->row_bytes);                                 \
            if (B->interleaved)                                                \
                inter_neon_##SUF(B->n, xr, orow, c, s);                        \
            else                                                               \
                half_neon_##SUF(B->n, B->R, xr, orow, c, s);                   \
            RS_COPY_TAIL(B, xr, orow, (int64_t)sizeof(T));                     \
        }                                                                      \
    }

RS_DEFINE_NEON(float, f32, float32x4_t, float32x4x2_t, 4, RS_LD_NQ32, RS_ST_NQ32, vld2q_f32, vst2q_f32)
RS_DEFINE_NEON(double, f64, float64x2_t, float64x2x2_t, 2, RS_LD_NQ64, RS_ST_NQ64, vld2q_f64, vst2q_f64)

/* float16: four elements widened by FCVTL and narrowed by FCVTN (round to
 * nearest even, subnormals kept: the FPCR's defaults, which Python never
 * changes), the same conversions half.c does in software. */
#define RS_LD_NH4(V, p, i) vcvt_f32_f16(vld1_f16((const float16_t *)(const void *)((p) + (i))))
#define RS_ST_NH4(V, p, i, v) vst1_f16((float16_t *)(void *)((p) + (i)), vcvt_f16_f32(v))
#define RS_LD_NHALF(V, p, i) rs_half_to_float((p)[i])
#define RS_ST_NHALF(V, p, i, v) ((p)[i] = rs_float_to_half(v))

static void half_f16_neon(int64_t n, int64_t R, const uint16_t *x, uint16_t *o, const float *c,
                          const float *s)
{
    const uint16_t *xb = x + R;
    uint16_t *ob = o + R;
    int64_t k = 0;
    RS_PAIR_LOOP(k, n, 4, 1, 0, float32x4_t, x, xb, o, ob, c, s, RS_LD_NH4, RS_ST_NH4, RS_LD_NQ32)
    RS_PAIR_LOOP(k, n, 1, 1, 0, float, x, xb, o, ob, c, s, RS_LD_NHALF, RS_ST_NHALF, RS_LD)
}
#endif

#endif
