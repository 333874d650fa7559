/*
 * IEEE binary16 conversions, round to nearest even, subnormals, inf and NaN
 * kept.  The portable versions work on bits; on x86-64 the array versions
 * switch at run time to the F16C instructions when the CPU has them (the
 * default build must run on any x86-64, so they are never assumed), on
 * arm64 to NEON's conversions.  At the
 * end, the bfloat16 conversions (their inline forms are in bf16.h).
 */
#include "ropescale.h"
#include "rs_internal.h"
#include "bf16.h"

#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float rs_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf or NaN: keep the payload */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Index of the highest set bit of m > 0 (portable; float32 subnormals only). */
static int top_bit(uint32_t m)
{
    int b = 0;
    while (m >>= 1)
        b++;
    return b;
}

/* Round a finite magnitude with `shift` bits to drop, nearest even. */
static uint32_t round_shift(uint64_t m, int shift)
{
    uint64_t half, rest, q;
    if (shift <= 0)
        return (uint32_t)(m << (-shift));
    if (shift >= 64)
        return 0;
    q = m >> shift;
    rest = m & ((((uint64_t)1) << shift) - 1);
    half = ((uint64_t)1) << (shift - 1);
    if (rest > half || (rest == half && (q & 1u)))
        q++;
    return (uint32_t)q;
}

/* Common path: value = mant * 2^e2 (mant has its leading bit at `top`),
 * sign bit given; returns binary16 bits with correct rounding. */
static uint16_t pack_half(uint16_t sign, uint64_t mant, int e2, int top)
{
    /* unbiased exponent of the leading bit */
    int e = e2 + top;
    if (e > 15)
        return (uint16_t)(sign | 0x7c00u);
    if (e >= -14) {
        /* normal: keep 11 significant bits; rounding may carry into the
         * exponent, which the addition below handles (and gives inf). */
        uint32_t q = round_shift(mant, top - 10); /* 1.xxxxxxxxxx (11 bits) */
        uint32_t bits = ((uint32_t)(e + 15) << 10) + (q - 0x400u);
        if (bits >= 0x7c00u)
            return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | bits);
    }
    /* subnormal: units of 2^-24 */
    {
        int shift = -24 - e2; /* value / 2^-24 = mant * 2^(e2+24) */
        uint32_t q = round_shift(mant, shift);
        return (uint16_t)(sign | q); /* q == 0x400 rolls into the smallest normal */
    }
}

uint16_t rs_float_to_half(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t exp = (u >> 23) & 0xffu;
    uint32_t man = u & 0x7fffffu;
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0u));
    if (exp == 0) {
        if (man == 0)
            return sign;
        return pack_half(sign, man, -149, top_bit(man));
    }
    return pack_half(sign, man | 0x800000u, (int)exp - 150, 23);
}

uint16_t rs_double_to_half(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    uint16_t sign = (uint16_t)((u >> 48) & 0x8000u);
    uint32_t exp = (uint32_t)((u >> 52) & 0x7ffu);
    uint64_t man = u & 0xfffffffffffffull;
    if (exp == 0x7ff)
        return (uint16_t)(sign | 0x7c00u |
                          (man ? (0x200u | (uint32_t)(man >> 42)) : 0u));
    if (exp == 0)
        return sign; /* float64 subnormals are far below half's range */
    return pack_half(sign, man | 0x10000000000000ull, (int)exp - 1075, 52);
}

static void h2f_portable(int64_t n, const uint16_t *src, float *dst)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = rs_half_to_float(src[i]);
}

static void f2h_portable(int64_t n, const float *src, uint16_t *dst)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = rs_float_to_half(src[i]);
}

#if RS_HAVE_X86_DISPATCH
#include <immintrin.h>

__attribute__((target("avx,f16c"))) static void h2f_f16c(int64_t n,
                                                         const uint16_t *src,
                                                         float *dst)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++)
        dst[i] = rs_half_to_float(src[i]);
}

__attribute__((target("avx,f16c"))) static void f2h_f16c(int64_t n,
                                                         const float *src,
                                                         uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 f = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        dst[i] = rs_float_to_half(src[i]);
}

#endif

#if RS_HAVE_NEON
#include <arm_neon.h>

/* FCVTL/FCVTN: the hardware conversions (round to nearest even, the FPCR's
 * default), four at a time. */
static void h2f_neon(int64_t n, const uint16_t *src, float *dst)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(dst + i, vcvt_f32_f16(vld1_f16((const float16_t *)(const void *)(src + i))));
    for (; i < n; i++)
        dst[i] = rs_half_to_float(src[i]);
}

static void f2h_neon(int64_t n, const float *src, uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_f16((float16_t *)(void *)(dst + i), vcvt_f16_f32(vld1q_f32(src + i)));
    for (; i < n; i++)
        dst[i] = rs_float_to_half(src[i]);
}

static void b2f_neon(int64_t n, const uint16_t *src, float *dst)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(dst + i, rs_bf16x4_load(src + i));
    for (; i < n; i++)
        dst[i] = rs_bf16_load(src[i]);
}

static void f2b_neon(int64_t n, const float *src, uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        rs_bf16x4_store(dst + i, vld1q_f32(src + i));
    for (; i < n; i++)
        dst[i] = rs_bf16_round(src[i]);
}
#endif

void rs_half_to_float_n(int64_t n, const uint16_t *src, float *dst)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon()) {
        h2f_neon(n, src, dst);
        return;
    }
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_f16c()) {
        h2f_f16c(n, src, dst);
        return;
    }
#endif
    h2f_portable(n, src, dst);
}

void rs_float_to_half_n(int64_t n, const float *src, uint16_t *dst)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon()) {
        f2h_neon(n, src, dst);
        return;
    }
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_f16c()) {
        f2h_f16c(n, src, dst);
        return;
    }
#endif
    f2h_portable(n, src, dst);
}

const char *rs_simd_name(void)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon())
        return "neon";
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx512())
        return "avx512";
    if (rs_cpu_has_avx2())
        return rs_cpu_has_f16c() ? "avx2+f16c" : "avx2";
    if (rs_cpu_has_f16c())
        return "f16c";
#endif
    return "portable";
}

/* ------------------------------------------------------------------ */
/* bfloat16 (bf16.h has the inline forms the kernels use)              */
/* ------------------------------------------------------------------ */

float rs_bf16_to_float(uint16_t b)
{
    return rs_bf16_load(b);
}

uint16_t rs_float_to_bf16(float f)
{
    return rs_bf16_round(f);
}

/* float64 -> float32 rounded to odd (truncated, lowest bit set when
 * inexact), then to nearest even: float32 keeps 16 bits more than
 * bfloat16, so the two steps are one correct rounding of d. */
uint16_t rs_double_to_bf16(double d)
{
    float f = (float)d;
    double back = (double)f;
    if (d == d && back != d) {
        uint32_t u = f32_bits(f);
        if ((back < 0 ? -back : back) > (d < 0 ? -d : d))
            u -= 1; /* toward zero: |f| > 0 here, so the sign bit stays */
        f = bits_f32(u | 1u);
    }
    return rs_bf16_round(f);
}

static void b2f_portable(int64_t n, const uint16_t *src, float *dst)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = rs_bf16_load(src[i]);
}

static void f2b_portable(int64_t n, const float *src, uint16_t *dst)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = rs_bf16_round(src[i]);
}

#if RS_HAVE_X86_DISPATCH
__attribute__((target("avx2"))) static void b2f_avx2(int64_t n, const uint16_t *src,
                                                     float *dst)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, rs_bf16x8_load(src + i));
    for (; i < n; i++)
        dst[i] = rs_bf16_load(src[i]);
}

__attribute__((target("avx2"))) static void f2b_avx2(int64_t n, const float *src,
                                                     uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        rs_bf16x8_store(dst + i, _mm256_loadu_ps(src + i));
    for (; i < n; i++)
        dst[i] = rs_bf16_round(src[i]);
}
#endif

void rs_bf16_to_float_n(int64_t n, const uint16_t *src, float *dst)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon()) {
        b2f_neon(n, src, dst);
        return;
    }
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx2()) {
        b2f_avx2(n, src, dst);
        return;
    }
#endif
    b2f_portable(n, src, dst);
}

void rs_float_to_bf16_n(int64_t n, const float *src, uint16_t *dst)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon()) {
        f2b_neon(n, src, dst);
        return;
    }
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx2()) {
        f2b_avx2(n, src, dst);
        return;
    }
#endif
    f2b_portable(n, src, dst);
}
