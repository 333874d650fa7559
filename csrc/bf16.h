/*
 * bfloat16 (the top 16 bits of a float32) as bits, inline so the rotation
 * loops convert without a call.  Widening is exact (a 16-bit shift); the
 * narrowing rounds to nearest even and keeps NaN a NaN (sign and the top
 * payload bits, quiet bit set), as the float16 conversions of half.c do.
 * The AVX2 (NEON) forms do the same integer steps on eight (four) lanes, so every path
 * gives the same bits.  Internal to the core, like rs_internal.h.
 */
#ifndef RS_BF16_H
#define RS_BF16_H

#include <stdint.h>
#include <string.h>

#include "rs_internal.h"

static inline float rs_bf16_load(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Branch free: the NaN test selects, so a loop of these can vectorize. */
static inline uint16_t rs_bf16_round(float f)
{
    uint32_t u, r, nan;
    memcpy(&u, &f, sizeof(u));
    /* adding 0x7fff (0x8000 when the kept part is odd) carries exactly when
     * the dropped half is above the midpoint, or at it with an odd kept part;
     * the largest finite values carry into the infinity pattern, as they must */
    r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : r);
}

#if RS_HAVE_X86_DISPATCH
#include <immintrin.h>

/* Eight bfloat16 at p (unaligned) as a float32 vector. */
__attribute__((target("avx2"))) static inline __m256 rs_bf16x8_load(const uint16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* A float32 vector rounded to eight bfloat16 at p: rs_bf16_round per lane. */
__attribute__((target("avx2"))) static inline void rs_bf16x8_store(uint16_t *p, __m256 v)
{
    const __m256i u = _mm256_castps_si256(v);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(1)),
                                          _mm256_set1_epi32(0x7fff));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    /* every lane holds at most 0xffff: the saturating pack keeps it, per
     * 128-bit half, and the permute puts the two halves' results together */
    const __m256i w = _mm256_blendv_epi8(r, nan, is_nan);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0x08);
    _mm_storeu_si128((__m128i *)(void *)p, _mm256_castsi256_si128(packed));
}

/* Sixteen bfloat16 as a float32 vector and back (AVX-512F): the same
 * integer steps on sixteen lanes; the narrowing move truncates lanes that
 * hold at most 0xffff, so it keeps them. */
__attribute__((target("avx2,avx512f"))) static inline __m512 rs_bf16x16_load(const uint16_t *p)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,avx512f"))) static inline void rs_bf16x16_store(uint16_t *p, __m512 v)
{
    const __m512i u = _mm512_castps_si512(v);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i bias = _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)),
                                          _mm512_set1_epi32(0x7fff));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    const __m512i nan = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
    const __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    _mm256_storeu_si256((__m256i *)(void *)p, _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, r, nan)));
}
#endif

#if RS_HAVE_NEON
#include <arm_neon.h>

/* Four bfloat16 at p as a float32 vector (the 16-bit shift, widening). */
static inline float32x4_t rs_bf16x4_load(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

/* A float32 vector rounded to four bfloat16 at p: rs_bf16_round per lane. */
static inline void rs_bf16x4_store(uint16_t *p, float32x4_t v)
{
    const uint32x4_t u = vreinterpretq_u32_f32(v);
    const uint32x4_t hi = vshrq_n_u32(u, 16);
    const uint32x4_t bias = vaddq_u32(vandq_u32(hi, vdupq_n_u32(1)), vdupq_n_u32(0x7fff));
    const uint32x4_t r = vshrq_n_u32(vaddq_u32(u, bias), 16);
    const uint32x4_t nan = vorrq_u32(hi, vdupq_n_u32(0x40));
    const uint32x4_t is_num = vceqq_f32(v, v);
    /* every lane holds at most 0xffff: the narrowing keeps it */
    vst1_u16(p, vmovn_u32(vbslq_u32(is_num, r, nan)));
}
#endif

#endif
