/*
 * Rotary application.  The rotation of a pair is written once, in the loop
 * skeleton RS_PAIR_LOOP, and instantiated per pairing (half-split or
 * interleaved), element type (float32, float64; float16 through F16C
 * vectors; bfloat16, converted in the loads and stores) and instruction set
 * (baseline, AVX2, AVX-512 chosen at run time).  Contiguous interleaved
 * 16-bit rows are rotated in registers (RS_DEFINE_INTER16: the same products
 * and sums, pairs shuffled within a vector); other float16 and bfloat16
 * rows are widened to float32, rotated by the float32 code and narrowed.
 * One call may rotate q and k at the same positions (rs_rotate_qk): each
 * position's row then serves both arrays' heads.
 *
 * Rows are the leading axes of x, walked by layout.c.  The cos/sin of a row
 * (cached form) or of its position (fused form, made by tables.c) become a
 * contiguous row of the compute type once, and serve as long as the next
 * row points at the same data, so a table broadcast over heads or a
 * position shared by a token's heads costs one row of work per token, not
 * one per head (ggml does the same per token).
 */
#include "ropescale.h"
#include "rs_internal.h"
#include "bf16.h"

#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* The rotation                                                         */
/* ------------------------------------------------------------------ */

/* Pair k of a row is element k*STEP of run A and element k*STEP + OFF of
 * run B: half-split rows (x[k], x[k+R]) are A = x, B = x + R, STEP 1, OFF 0;
 * interleaved rows (x[2k], x[2k+1]) are A = B = x, STEP 2, OFF 1.  The
 * skeleton visits pairs k..n-1 in groups of W (1 for scalar code, 8 for the
 * F16C vectors).  LD(V, p, i) reads element i of run p as the compute type
 * V, ST(V, p, i, v) writes it, LT(V, t, k) reads W cos/sin entries.  Both
 * elements of a pair are read before either is written, so the output runs
 * may be the input runs (in place). */
#define RS_PAIR_LOOP(k, n, W, STEP, OFF, V, xa, xb, oa, ob, c, s, LD, ST, LT)  \
    for (; (k) + (W) <= (n); (k) += (W)) {                                     \
        const V a_ = LD(V, xa, (k) * (STEP));                                  \
        const V b_ = LD(V, xb, (k) * (STEP) + (OFF));                          \
        const V c_ = LT(V, c, k), s_ = LT(V, s, k);                            \
        ST(V, oa, (k) * (STEP), a_ * c_ - b_ * s_);                            \
        ST(V, ob, (k) * (STEP) + (OFF), b_ * c_ + a_ * s_);                    \
    }

/* Contiguous runs of V. */
#define RS_LD(V, p, i) ((p)[i])
#define RS_ST(V, p, i, v) ((p)[i] = (v))
/* Runs with byte strides fx (reads) and fo (writes), p a char pointer. */
#define RS_LD_STRIDED(V, p, i) (*(const V *)(const void *)((p) + (i) * fx))
#define RS_ST_STRIDED(V, p, i, v) (*(V *)(void *)((p) + (i) * fo) = (v))

/* Software prefetch of the row RS_PREFETCH_AHEAD bytes further on, ahead
 * of the hardware prefetcher, which follows a row's two runs less well than
 * one stream: in place on a 128 MiB cache, 1.10x np.multiply(x, 1, out=x)
 * without it and 0.89x with it (AVX2 or AVX-512, 4 to 16 KiB ahead).
 * A prefetch never faults, so running past the end of x is harmless. */
#define RS_PREFETCH_AHEAD 4096
#if defined(__GNUC__) || defined(__clang__)
#define RS_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define RS_PREFETCH(p) ((void)(p))
#endif
#define RS_PREFETCH_ROW(p, bytes)                                              \
    do {                                                                       \
        const char *p_ = (const char *)(p) + RS_PREFETCH_AHEAD;                \
        for (int64_t o_ = 0; o_ < (bytes); o_ += 64)                           \
            RS_PREFETCH(p_ + o_);                                              \
    } while (0)

/* What a batch of rows shares: one cos/sin row, the pairing, the strides. */
typedef struct {
    int64_t nb, bsx, bso;  /* rows in the batch and their byte strides */
    int64_t n;             /* pairs of the block being rotated */
    int64_t R;             /* pairs of a row (offset of run B, half-split) */
    int64_t fx, fo;        /* feature byte strides */
    int interleaved, in_place;
    int64_t row_bytes;     /* of x's row, all of it (RS_PREFETCH_ROW) */
    int64_t tail;          /* bytes of features 2R..D-1 copied after each
                            * row (contiguous rows, out of place); 0: none */
} rs_batch;

/* The features past the rotated ones, copied right after their row's
 * rotation while the row is in cache (a second pass over a batch's rows
 * made partial rotary 1.25x slower). */
#define RS_COPY_TAIL(B, xr, orow, item)                                        \
    do {                                                                       \
        if ((B)->tail)                                                         \
            memcpy((char *)(orow) + 2 * (B)->R * (item),                       \
                   (const char *)(xr) + 2 * (B)->R * (item), (size_t)(B)->tail); \
    } while (0)

/* Per element type and instruction set: the contiguous kernels of both
 * pairings, out of place (x, o restrict: vectorized without run-time alias
 * checks) and in place (the two runs named separately: within a row they
 * never share an element), the strided kernel, and the batch driver. */
#define RS_DEFINE_KERNELS(T, SUF, ATTR)                                        \
    ATTR static void half_oop_##SUF(int64_t n, int64_t R, const T *restrict x, \
                                    T *restrict o, const T *restrict c,        \
                                    const T *restrict s)                       \
    {                                                                          \
        const T *xb = x + R;                                                   \
        T *ob = o + R;                                                         \
        int64_t k = 0;                                                         \
        RS_PAIR_LOOP(k, n, 1, 1, 0, T, x, xb, o, ob, c, s, RS_LD, RS_ST, RS_LD) \
    }                                                                          \
    ATTR static void half_ip_##SUF(int64_t n, int64_t R, T *x,                 \
                                   const T *restrict c, const T *restrict s)   \
    {                                                                          \
        T *restrict xa = x;                                                    \
        T *restrict xb = x + R;                                                \
        int64_t k = 0;                                                         \
        RS_PAIR_LOOP(k, n, 1, 1, 0, T, xa, xb, xa, xb, c, s, RS_LD, RS_ST, RS_LD) \
    }                                                                          \
    ATTR static void inter_oop_##SUF(int64_t n, const T *restrict x,           \
                                     T *restrict o, const T *restrict c,       \
                                     const T *restrict s)                      \
    {                                                                          \
        int64_t k = 0;                                                         \
        RS_PAIR_LOOP(k, n, 1, 2, 1, T, x, x, o, o, c, s, RS_LD, RS_ST, RS_LD)  \
    }                                                                          \
    ATTR static void inter_ip_##SUF(int64_t n, T *restrict x,                  \
                                    const T *restrict c, const T *restrict s)  \
    {                                                                          \
        int64_t k = 0;                                                         \
        RS_PAIR_LOOP(k, n, 1, 2, 1, T, x, x, x, x, c, s, RS_LD, RS_ST, RS_LD)  \
    }                                                                          \
    ATTR static void strided_##SUF(const rs_batch *B, const char *x, char *o,  \
                                   const T *c, const T *s)                     \
    {                                                                          \
        const int64_t fx = B->fx, fo = B->fo, step = B->interleaved ? 2 : 1;   \
        const int64_t off = B->interleaved ? 1 : 0;                            \
        const int64_t xbo = B->interleaved ? 0 : B->R * fx;                    \
        const int64_t obo = B->interleaved ? 0 : B->R * fo;                    \
        for (int64_t r = 0; r < B->nb; r++) {                                  \
            const char *xr = x + r * B->bsx;                                   \
            char *orow = o + r * B->bso;                                       \
            int64_t k = 0;                                                     \
            RS_PAIR_LOOP(k, B->n, 1, step, off, T, xr, xr + xbo, orow,         \
                         orow + obo, c, s, RS_LD_STRIDED, RS_ST_STRIDED, RS_LD) \
        }                                                                      \
    }                                                                          \
    ATTR static void rot_rows_##SUF(const rs_batch *B, const char *x, char *o, \
                                    const T *c, const T *s)                    \
    {                                                                          \
        const int64_t sz = (int64_t)sizeof(T), n = B->n, R = B->R;             \
        if (B->fx != sz || B->fo != sz) {                                      \
            strided_##SUF(B, x, o, c, s);                                      \
            return;                                                            \
        }                                                                      \
        for (int64_t r = 0; r < B->nb; r++) {                                  \
            const T *xr = (const T *)(const void *)(x + r * B->bsx);           \
            T *orow = (T *)(void *)(o + r * B->bso);                           \
            RS_PREFETCH_ROW(xr, B->row_bytes);                                 \
            if (B->in_place && B->interleaved)                                 \
                inter_ip_##SUF(n, orow, c, s);                                 \
            else if (B->in_place)                                              \
                half_ip_##SUF(n, R, orow, c, s);                               \
            else if (B->interleaved)                                           \
                inter_oop_##SUF(n, xr, orow, c, s);                            \
            else                                                               \
                half_oop_##SUF(n, R, xr, orow, c, s);                          \
            RS_COPY_TAIL(B, xr, orow, sz);                                     \
        }                                                                      \
    }

#define RS_NO_ATTR
RS_DEFINE_KERNELS(float, f32, RS_NO_ATTR)
RS_DEFINE_KERNELS(double, f64, RS_NO_ATTR)

/* The same bodies compiled for AVX2 (256-bit vectors), chosen at run time.
 * Without FMA: the arithmetic, and so every result bit, is the baseline's. */
#if RS_HAVE_X86_DISPATCH
#define RS_AVX2 __attribute__((target("avx2")))
RS_DEFINE_KERNELS(float, f32_avx2, RS_AVX2)
RS_DEFINE_KERNELS(double, f64_avx2, RS_AVX2)
#endif

typedef void (*rs_rows_f32)(const rs_batch *, const char *, char *,
                            const float *, const float *);
typedef void (*rs_rows_f64)(const rs_batch *, const char *, char *,
                            const double *, const double *);

/* AVX-512 (chosen at run time): contiguous half-split rows with 512-bit
 * vectors placed on the output's 64-byte lines.  NumPy puts large arrays 16
 * bytes past a line, and a 32- or 64-byte access there splits across two
 * lines: 2.1x the copy floor on a cache-resident decode batch, against 1.3x
 * when the first and last vectors of a row are masked so that every store
 * covers one line.  Masked-off lanes are neither read nor written (they
 * cannot fault), so a head vector may start before the row.  The same
 * operators, without FMA: the bits are those of the other paths. */
#if RS_HAVE_X86_DISPATCH
#define RS_AVX512 __attribute__((target("avx2,avx512f")))
#define RS_LD_Z16(V, p, i) _mm512_maskz_loadu_ps(m_, (p) + (i))
#define RS_ST_Z16(V, p, i, v) _mm512_mask_storeu_ps((p) + (i), m_, (v))
#define RS_LD_V16(V, p, i) _mm512_loadu_ps((p) + (i))
#define RS_ST_V16(V, p, i, v) _mm512_storeu_ps((p) + (i), (v))
#define RS_LD_Z8D(V, p, i) _mm512_maskz_loadu_pd(m_, (p) + (i))
#define RS_ST_Z8D(V, p, i, v) _mm512_mask_storeu_pd((p) + (i), m_, (v))
#define RS_LD_V8D(V, p, i) _mm512_loadu_pd((p) + (i))
#define RS_ST_V8D(V, p, i, v) _mm512_storeu_pd((p) + (i), (v))

/* Lanes 0..W-1 of the vector at pair k that hold pairs of [0, n). */
static inline uint32_t rs_lanes(int64_t k, int64_t n, int W)
{
    const uint32_t all = (1u << W) - 1u;
    uint32_t lo = k < 0 ? (all << -k) & all : all;
    uint32_t hi = n - k >= W ? all : (1u << (n - k)) - 1u;
    return lo & hi;
}

/* Rows that follow one another with nothing between them (a token's heads,
 * R a multiple of W, no partial-rotary tail): the batch is one run, and
 * every store covers one line of o, however o sits in its lines.  With o
 * m elements past a line (0 < m < W) a row's vectors start at -m, so all
 * but two of them hold elements of one half: the pairs (k, k + R) of those
 * are rotated as usual.  The other two are the vector at R - m, P (lanes
 * below m: the end of half A; the rest: the start of half B), and the one
 * at -m, whose lanes below m are the previous row's last elements and the
 * rest the start of half A.  Partnered lane by lane, P's lanes pair with
 * Q: the lanes at or above m of the row's vector at -m and the lanes below
 * m of the vector at 2R - m (the row's last elements).  So one step makes
 * both: P's rotation is stored whole; Q's lanes at or above m complete the
 * vector at -m, whose lanes below m the previous row left (carried in a
 * register), and its lanes below m wait for the next row.  Each element is
 * still a*c - b*s or b*c + a*s with the same two products: the bits are
 * those of the other paths.  R must be at least W (a positive multiple of
 * it): with R = 0 the P and Q steps would write around an empty row (the
 * float16 path once passed such a row, and a heap block was overwritten).  A decode step (64, 1, 32, 128) float32 with o
 * 16 bytes past a line: 1.32x memcpy with a row at a time, 1.10x so. */
#if defined(__GNUC__) || defined(__clang__)
#define RS_NOINLINE __attribute__((noinline))
#else
#define RS_NOINLINE
#endif
#define RS_DEFINE_FLAT512(T, SUF, V, MASK, W, LDV, STV, MLD, MST, MADD, BLEND) \
    RS_AVX512 RS_NOINLINE static void flat512_##SUF(int64_t ntok, int64_t nb, int64_t R,    \
                                                    int64_t cstep, int64_t sstep,         \
                                                    const T *x, T *o, const T *c,          \
                                                    const T *s)                            \
    {                                                                          \
        const int64_t D = 2 * R, m = (int64_t)(((uintptr_t)(void *)o % 64) / sizeof(T)); \
        const MASK lo = (MASK)((1u << m) - 1u), hi = (MASK)~lo;                \
        const V zero = (V){0};                                                 \
        V carry = zero;                                                        \
        for (int64_t tk = 0; tk < ntok; tk++, c += cstep, s += sstep) {       \
            V cm = zero, sm = zero;                                            \
            if (m) { /* cos/sin of Q's and P's lanes: pairs R-m.. below m, 0.. above */ \
                cm = MLD(MLD(zero, hi, c - m), lo, c + R - m);                 \
                sm = MLD(MLD(zero, hi, s - m), lo, s + R - m);                 \
            }                                                                  \
            for (int64_t r = tk * nb; r < (tk + 1) * nb; r++) {                \
                const T *xr = x + r * D;                                       \
                T *orow = o + r * D;                                           \
                RS_PREFETCH_ROW(xr, D * (int64_t)sizeof(T));                   \
                for (int64_t k = m ? (W) - m : 0; k + (W) <= R; k += (W)) {    \
                    const V a_ = LDV(V, xr, k), b_ = LDV(V, xr + R, k);        \
                    const V c_ = LDV(V, c, k), s_ = LDV(V, s, k);              \
                    STV(V, orow, k, a_ * c_ - b_ * s_);                        \
                    STV(V, orow + R, k, b_ * c_ + a_ * s_);                    \
                }                                                              \
                if (m) {                                                       \
                    const V p_ = LDV(V, xr, R - m);                            \
                    const V q_ = MLD(MLD(zero, hi, xr - m), lo, xr + D - m);   \
                    const V pc = p_ * cm, qs = q_ * sm, qc = q_ * cm, ps = p_ * sm; \
                    const V vq = MADD(qc - ps, lo, qc, ps);                    \
                    STV(V, orow, R - m, MADD(pc - qs, hi, pc, qs));            \
                    if (r == 0)                                                \
                        MST(orow - m, hi, vq);                                 \
                    else                                                       \
                        STV(V, orow, -m, BLEND(hi, carry, vq));                \
                    carry = vq;                                                \
                }                                                              \
            }                                                                  \
        }                                                                      \
        if (m)                                                                 \
            MST(o + ntok * nb * D - m, lo, carry);                             \
    }

/* One row (x and o may be the same row: in place).  The head vector starts
 * h pairs before the row so that o + k is on a line boundary afterwards;
 * the masked head and tail go through step512 on pointers already offset
 * (with k in the address arithmetic, GCC moved the addresses through
 * vector registers and the two masked steps cost 15% of a decode call). */
#define RS_DEFINE_HALF512(T, SUF, V, MASK, W, LDZ, STZ, LDV, STV)              \
    RS_AVX512 static inline void step512_##SUF(MASK m_, const T *x,            \
                                               const T *xb, T *o, T *ob,       \
                                               const T *c, const T *s)         \
    {                                                                          \
        int64_t k = 0;                                                         \
        RS_PAIR_LOOP(k, W, W, 1, 0, V, x, xb, o, ob, c, s, LDZ, STZ, LDZ)      \
    }                                                                          \
    RS_AVX512 static void half512_##SUF(int64_t n, int64_t R, const T *x,      \
                                        T *o, const T *c, const T *s)          \
    {                                                                          \
        const T *xb = x + R;                                                   \
        T *ob = o + R;                                                         \
        const uintptr_t at = (uintptr_t)(void *)o;                             \
        int64_t k = at % sizeof(T) ? 0 : -(int64_t)((at % 64) / sizeof(T));   \
        if (k < 0 || n < (W)) {                                                \
            step512_##SUF((MASK)rs_lanes(k, n, W), x + k, xb + k, o + k,       \
                          ob + k, c + k, s + k);                               \
            k += (W);                                                          \
        }                                                                      \
        RS_PAIR_LOOP(k, n, W, 1, 0, V, x, xb, o, ob, c, s, LDV, STV, LDV)      \
        if (k < n)                                                             \
            step512_##SUF((MASK)rs_lanes(k, n, W), x + k, xb + k, o + k,       \
                          ob + k, c + k, s + k);                               \
    }                                                                          \
    RS_AVX512 static void rot_rows_##SUF(const rs_batch *B, const char *x,     \
                                         char *o, const T *c, const T *s)      \
    {                                                                          \
        if (B->fx != (int64_t)sizeof(T) || B->fo != (int64_t)sizeof(T) ||      \
            B->interleaved) {                                                  \
            rot_rows_##SUF##_fallback(B, x, o, c, s);                          \
            return;                                                            \
        }                                                                      \
        if (B->n == B->R && B->R >= (W) && B->R % (W) == 0 && !B->tail &&      \
            B->row_bytes == 2 * B->R * (int64_t)sizeof(T) &&                   \
            B->bsx == B->row_bytes && B->bso == B->row_bytes &&                \
            (uintptr_t)(void *)o % sizeof(T) == 0) {                           \
            flat512_##SUF(1, B->nb, B->R, 0, 0, (const T *)(const void *)x,     \
                          (T *)(void *)o, c, s);                               \
            return;                                                            \
        }                                                                      \
        for (int64_t r = 0; r < B->nb; r++) {                                  \
            const char *xr = x + r * B->bsx;                                   \
            RS_PREFETCH_ROW(xr, B->row_bytes);           \
            half512_##SUF(B->n, B->R, (const T *)(const void *)xr,             \
                          (T *)(void *)(o + r * B->bso), c, s);                \
            RS_COPY_TAIL(B, xr, o + r * B->bso, (int64_t)sizeof(T));           \
        }                                                                      \
    }

RS_DEFINE_FLAT512(float, f32_avx512, __m512, __mmask16, 16, RS_LD_V16, RS_ST_V16, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps,
                  _mm512_mask_add_ps, _mm512_mask_blend_ps)
RS_DEFINE_FLAT512(double, f64_avx512, __m512d, __mmask8, 8, RS_LD_V8D, RS_ST_V8D, _mm512_mask_loadu_pd, _mm512_mask_storeu_pd,
                  _mm512_mask_add_pd, _mm512_mask_blend_pd)
#define rot_rows_f32_avx512_fallback rot_rows_f32_avx2
#define rot_rows_f64_avx512_fallback rot_rows_f64_avx2
RS_DEFINE_HALF512(float, f32_avx512, __m512, __mmask16, 16, RS_LD_Z16, RS_ST_Z16, RS_LD_V16, RS_ST_V16)
RS_DEFINE_HALF512(double, f64_avx512, __m512d, __mmask8, 8, RS_LD_Z8D, RS_ST_Z8D, RS_LD_V8D, RS_ST_V8D)
#endif

/* arm64 (NEON): rot_rows_f32_neon, rot_rows_f64_neon, half_f16_neon */
#include "rotary_neon.h"

static rs_rows_f32 pick_f32(void)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon())
        return rot_rows_f32_neon;
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx512())
        return rot_rows_f32_avx512;
    if (rs_cpu_has_avx2())
        return rot_rows_f32_avx2;
#endif
    return rot_rows_f32;
}

static rs_rows_f64 pick_f64(void)
{
#if RS_HAVE_NEON
    if (rs_cpu_has_neon())
        return rot_rows_f64_neon;
#endif
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx512())
        return rot_rows_f64_avx512;
    if (rs_cpu_has_avx2())
        return rot_rows_f64_avx2;
#endif
    return rot_rows_f64;
}

/* Runs of tokens in one call (see RS_DEFINE_FLAT512): ntok tokens of nb
 * contiguous rows each, the tokens' cos/sin rows cstep and sstep elements
 * apart.  NULL where the CPU has no AVX-512 (the row kernels serve). */
typedef void (*rs_flat_f32)(int64_t, int64_t, int64_t, int64_t, int64_t, const float *, float *,
                            const float *, const float *);
typedef void (*rs_flat_f64)(int64_t, int64_t, int64_t, int64_t, int64_t, const double *, double *,
                            const double *, const double *);

static rs_flat_f32 pick_flat_f32(void)
{
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx512())
        return flat512_f32_avx512;
#endif
    return NULL;
}

static rs_flat_f64 pick_flat_f64(void)
{
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx512())
        return flat512_f64_avx512;
#endif
    return NULL;
}

/* ------------------------------------------------------------------ */
/* float16                                                              */
/* ------------------------------------------------------------------ */

#if RS_HAVE_X86_DISPATCH
#include <immintrin.h>

/* Eight float16 elements widened to a float32 vector, and back (F16C). */
#define RS_LD_PH(V, p, i)                                                      \
    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((p) + (i))))
#define RS_ST_PH(V, p, i, v)                                                   \
    _mm_storeu_si128((__m128i *)(void *)((p) + (i)),                           \
                     _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))
#define RS_LT_PS(V, t, k) _mm256_loadu_ps((t) + (k))
/* One float16 element, portable conversions (the vector loop's tail). */
#define RS_LD_HALF(V, p, i) rs_half_to_float((p)[i])
#define RS_ST_HALF(V, p, i, v) ((p)[i] = rs_float_to_half(v))

/* Contiguous half-split float16 rows in one pass: the float32 vector
 * operators are those of the scalar code, so the results are its bits. */
__attribute__((target("avx2,f16c"))) static void
half_f16c(int64_t n, int64_t R, const uint16_t *x, uint16_t *o, const float *c,
          const float *s)
{
    const uint16_t *xb = x + R;
    uint16_t *ob = o + R;
    int64_t k = 0;
    RS_PAIR_LOOP(k, n, 8, 1, 0, __m256, x, xb, o, ob, c, s, RS_LD_PH, RS_ST_PH, RS_LT_PS)
    RS_PAIR_LOOP(k, n, 1, 1, 0, float, x, xb, o, ob, c, s, RS_LD_HALF, RS_ST_HALF, RS_LD)
}
#endif

static void widen_run(const char *p, int64_t stride, int64_t m, float *dst)
{
    if (stride == 2) {
        rs_half_to_float_n(m, (const uint16_t *)(const void *)p, dst);
        return;
    }
    for (int64_t j = 0; j < m; j++) {
        uint16_t h;
        memcpy(&h, p + j * stride, 2);
        dst[j] = rs_half_to_float(h);
    }
}

static void narrow_run(const float *src, int64_t m, char *p, int64_t stride)
{
    if (stride == 2) {
        rs_float_to_half_n(m, src, (uint16_t *)(void *)p);
        return;
    }
    for (int64_t j = 0; j < m; j++) {
        uint16_t h = rs_float_to_half(src[j]);
        memcpy(p + j * stride, &h, 2);
    }
}

/* Rows of a 16-bit type by way of float32: the runs of a block widened
 * (buf, 2n floats), rotated in place by the float32 code, narrowed back.
 * float16 and bfloat16 differ only in their widen/narrow functions. */
typedef void (*rs_widen_fn)(const char *p, int64_t stride, int64_t m, float *dst);
typedef void (*rs_narrow_fn)(const float *src, int64_t m, char *p, int64_t stride);

static void rot_rows_via_f32(rs_rows_f32 rows32, const rs_batch *B, const char *x, char *o,
                             const float *c, const float *s, float *buf,
                             rs_widen_fn widen, rs_narrow_fn narrow)
{
    const int64_t n = B->n, fx = B->fx, fo = B->fo;
    const int contiguous = fx == 2 && fo == 2;
    const int64_t step = B->interleaved ? 2 : 1;
    rs_batch one = *B;
    one.nb = 1;
    one.fx = one.fo = 4;
    one.in_place = 1;
    one.R = n;
    one.tail = 0;
    one.interleaved = B->interleaved && contiguous;
    for (int64_t r = 0; r < B->nb; r++) {
        const char *xr = x + r * B->bsx;
        char *orow = o + r * B->bso;
        if (B->interleaved && contiguous) {
            /* one run of 2n elements, rotated as interleaved pairs */
            widen(xr, 2, 2 * n, buf);
            rows32(&one, (const char *)buf, (char *)buf, c, s);
            narrow(buf, 2 * n, orow, 2);
            RS_COPY_TAIL(B, xr, orow, 2);
            continue;
        }
        /* runs A and B to buf[0:n] and buf[n:2n], rotated as half-split */
        widen(xr, step * fx, n, buf);
        widen(xr + (B->interleaved ? fx : B->R * fx), step * fx, n, buf + n);
        rows32(&one, (const char *)buf, (char *)buf, c, s);
        narrow(buf, n, orow, step * fo);
        narrow(buf + n, n, orow + (B->interleaved ? fo : B->R * fo), step * fo);
        RS_COPY_TAIL(B, xr, orow, 2);
    }
}

#if RS_HAVE_X86_DISPATCH
static int rows_inter16(const rs_batch *B, const char *x, char *o, const float *c, const float *s, int bf16);
#endif

/* float16 rows: the runs of a block widened to float32 (buf, 2n floats),
 * rotated by the float32 code in place, narrowed; contiguous rows go
 * through half_f16c or rows_inter16 where the CPU has F16C. */
static void rot_rows_f16(rs_rows_f32 rows32, const rs_batch *B, const char *x,
                         char *o, const float *c, const float *s, float *buf)
{
#if RS_HAVE_X86_DISPATCH
    if (rows_inter16(B, x, o, c, s, 0))
        return;
    if (B->fx == 2 && B->fo == 2 && !B->interleaved && rs_cpu_has_avx2() && rs_cpu_has_f16c()) {
        for (int64_t r = 0; r < B->nb; r++) {
            RS_PREFETCH_ROW(x + r * B->bsx, B->row_bytes);
            half_f16c(B->n, B->R, (const uint16_t *)(const void *)(x + r * B->bsx),
                      (uint16_t *)(void *)(o + r * B->bso), c, s);
            RS_COPY_TAIL(B, x + r * B->bsx, o + r * B->bso, 2);
        }
        return;
    }
#endif
#if RS_HAVE_NEON
    if (B->fx == 2 && B->fo == 2 && !B->interleaved && rs_cpu_has_neon()) {
        for (int64_t r = 0; r < B->nb; r++) {
            RS_PREFETCH_ROW(x + r * B->bsx, B->row_bytes);
            half_f16_neon(B->n, B->R, (const uint16_t *)(const void *)(x + r * B->bsx),
                          (uint16_t *)(void *)(o + r * B->bso), c, s);
            RS_COPY_TAIL(B, x + r * B->bsx, o + r * B->bso, 2);
        }
        return;
    }
#endif
    rot_rows_via_f32(rows32, B, x, o, c, s, buf, widen_run, narrow_run);
}

/* ------------------------------------------------------------------ */
/* bfloat16                                                             */
/* ------------------------------------------------------------------ */

/* Contiguous half-split bfloat16 rows in one pass, no buffer: each element
 * loaded from its bits (exact), the pair rotated in float32, rounded once
 * in the store.  The AVX2 version runs eight pairs at a time first; the
 * float32 operators are the same in both, without FMA, so every path gives
 * the same bits. */
#define RS_LD_BF(V, p, i) rs_bf16_load((p)[i])
#define RS_ST_BF(V, p, i, v) ((p)[i] = rs_bf16_round(v))
#define RS_BF_NO_VECTOR(k, n, xa, xb, oa, ob, c, s)

#define RS_DEFINE_BF16(SUF, ATTR, VECTOR)                                      \
    ATTR static void half_bf16_##SUF(int64_t n, int64_t R, const uint16_t *x,  \
                                     uint16_t *o, const float *c,              \
                                     const float *s)                           \
    {                                                                          \
        const uint16_t *xb = x + R;                                            \
        uint16_t *ob = o + R;                                                  \
        int64_t k = 0;                                                         \
        VECTOR(k, n, x, xb, o, ob, c, s)                                       \
        RS_PAIR_LOOP(k, n, 1, 1, 0, float, x, xb, o, ob, c, s, RS_LD_BF,        \
                     RS_ST_BF, RS_LD)                                          \
    }

RS_DEFINE_BF16(base, RS_NO_ATTR, RS_BF_NO_VECTOR)

#if RS_HAVE_X86_DISPATCH
#define RS_LD_BF8(V, p, i) rs_bf16x8_load((p) + (i))
#define RS_ST_BF8(V, p, i, v) rs_bf16x8_store((p) + (i), (v))
#define RS_LT_BF8(V, t, k) _mm256_loadu_ps((t) + (k))
#define RS_BF_VECTOR8(k, n, xa, xb, oa, ob, c, s)                              \
    RS_PAIR_LOOP(k, n, 8, 1, 0, __m256, xa, xb, oa, ob, c, s, RS_LD_BF8,       \
                 RS_ST_BF8, RS_LT_BF8)
RS_DEFINE_BF16(avx2, RS_AVX2, RS_BF_VECTOR8)

/* AVX-512: sixteen pairs at a time, then the AVX2 steps */
#define RS_LD_BF16X(V, p, i) rs_bf16x16_load((p) + (i))
#define RS_ST_BF16X(V, p, i, v) rs_bf16x16_store((p) + (i), (v))
#define RS_LT_PS16(V, t, k) _mm512_loadu_ps((t) + (k))
#define RS_BF_VECTOR16(k, n, xa, xb, oa, ob, c, s)                             \
    RS_PAIR_LOOP(k, n, 16, 1, 0, __m512, xa, xb, oa, ob, c, s, RS_LD_BF16X,   \
                 RS_ST_BF16X, RS_LT_PS16)                                      \
    RS_BF_VECTOR8(k, n, xa, xb, oa, ob, c, s)
RS_DEFINE_BF16(avx512, RS_AVX512, RS_BF_VECTOR16)

/* Interleaved 16-bit rows in registers, no float32 buffer: a vector of W
 * elements holds W/2 pairs (a0 b0 a1 b1 ...); p = x * (c0 c0 c1 c1 ...)
 * and q = (b0 a0 b1 a1 ...) * (s0 s0 s1 s1 ...), then p - q in the even
 * lanes (a c - b s) and p + q in the odd ones (b c + a s): the products and
 * the sums of the scalar code, so its bits. */
#define RS_DEFINE_INTER16(SUF, ATTR, V, W, LDX, STX, DUP, SWAP, MIX, LD1, ST1)  \
    ATTR static void inter_##SUF(int64_t n, const uint16_t *x, uint16_t *o,   \
                                 const float *c, const float *s)              \
    {                                                                          \
        int64_t k = 0;                                                         \
        for (; k + (W) / 2 <= n; k += (W) / 2) {                               \
            const V v = LDX(x + 2 * k);                                        \
            const V p = v * DUP(c + k), q = SWAP(v) * DUP(s + k);              \
            STX(o + 2 * k, MIX(p - q, p + q));                                 \
        }                                                                      \
        RS_PAIR_LOOP(k, n, 1, 2, 1, float, x, x, o, o, c, s, LD1, ST1, RS_LD)  \
    }
static const int32_t rs_dup_idx[16] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};
#define RS_DUP8(t)                                                             \
    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(t)),          \
                             _mm256_loadu_si256((const __m256i *)(const void *)rs_dup_idx))
#define RS_DUP16(t)                                                            \
    _mm512_permutexvar_ps(_mm512_loadu_si512((const void *)rs_dup_idx),         \
                          _mm512_castps256_ps512(_mm256_loadu_ps(t)))
#define RS_SWAP8(v) _mm256_permute_ps((v), 0xB1)
#define RS_SWAP16(v) _mm512_permute_ps((v), 0xB1)
#define RS_MIX8(d, a) _mm256_blend_ps((d), (a), 0xAA)
#define RS_MIX16(d, a) _mm512_mask_blend_ps((__mmask16)0xAAAA, (d), (a))
#define RS_LD_PH8(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define RS_ST_PH8(p, v)                                                        \
    _mm_storeu_si128((__m128i *)(void *)(p), _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))
#define RS_LD_PH16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define RS_ST_PH16(p, v)                                                       \
    _mm256_storeu_si256((__m256i *)(void *)(p), _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))
#define RS_LD_HALF1(V, p, i) rs_half_to_float((p)[i])
#define RS_ST_HALF1(V, p, i, v) ((p)[i] = rs_float_to_half(v))
RS_DEFINE_INTER16(f16_avx2, __attribute__((target("avx2,f16c"))), __m256, 8, RS_LD_PH8, RS_ST_PH8, RS_DUP8,
                  RS_SWAP8, RS_MIX8, RS_LD_HALF1, RS_ST_HALF1)
RS_DEFINE_INTER16(f16_avx512, RS_AVX512, __m512, 16, RS_LD_PH16, RS_ST_PH16, RS_DUP16, RS_SWAP16, RS_MIX16,
                  RS_LD_HALF1, RS_ST_HALF1)
RS_DEFINE_INTER16(bf16_avx2, RS_AVX2, __m256, 8, rs_bf16x8_load, rs_bf16x8_store, RS_DUP8, RS_SWAP8, RS_MIX8,
                  RS_LD_BF, RS_ST_BF)
RS_DEFINE_INTER16(bf16_avx512, RS_AVX512, __m512, 16, rs_bf16x16_load, rs_bf16x16_store, RS_DUP16, RS_SWAP16,
                  RS_MIX16, RS_LD_BF, RS_ST_BF)

typedef void (*rs_inter16_fn)(int64_t, const uint16_t *, uint16_t *, const float *, const float *);

/* Contiguous interleaved 16-bit rows in registers where the CPU can (NULL:
 * through the float32 buffer). */
static rs_inter16_fn pick_inter16(int bf16)
{
    if (rs_cpu_has_avx512() && rs_cpu_has_f16c())
        return bf16 ? inter_bf16_avx512 : inter_f16_avx512;
    if (rs_cpu_has_avx2() && (bf16 || rs_cpu_has_f16c()))
        return bf16 ? inter_bf16_avx2 : inter_f16_avx2;
    return NULL;
}

static int rows_inter16(const rs_batch *B, const char *x, char *o, const float *c, const float *s, int bf16)
{
    rs_inter16_fn f;
    if (B->fx != 2 || B->fo != 2 || !B->interleaved || (f = pick_inter16(bf16)) == NULL)
        return 0;
    for (int64_t r = 0; r < B->nb; r++) {
        RS_PREFETCH_ROW(x + r * B->bsx, B->row_bytes);
        f(B->n, (const uint16_t *)(const void *)(x + r * B->bsx), (uint16_t *)(void *)(o + r * B->bso), c, s);
        RS_COPY_TAIL(B, x + r * B->bsx, o + r * B->bso, 2);
    }
    return 1;
}
#endif
#if RS_HAVE_NEON
#define RS_LD_BF4(V, p, i) rs_bf16x4_load((p) + (i))
#define RS_ST_BF4(V, p, i, v) rs_bf16x4_store((p) + (i), (v))
#define RS_BF_VECTOR4(k, n, xa, xb, oa, ob, c, s)                              \
    RS_PAIR_LOOP(k, n, 4, 1, 0, float32x4_t, xa, xb, oa, ob, c, s, RS_LD_BF4,  \
                 RS_ST_BF4, RS_LD_NQ32)
RS_DEFINE_BF16(neon, RS_NO_ATTR, RS_BF_VECTOR4)
#endif

static void bf16_widen_run(const char *p, int64_t stride, int64_t m, float *dst)
{
    if (stride == 2) {
        rs_bf16_to_float_n(m, (const uint16_t *)(const void *)p, dst);
        return;
    }
    for (int64_t j = 0; j < m; j++)
        dst[j] = rs_bf16_load(*(const uint16_t *)(const void *)(p + j * stride));
}

static void bf16_narrow_run(const float *src, int64_t m, char *p, int64_t stride)
{
    if (stride == 2) {
        rs_float_to_bf16_n(m, src, (uint16_t *)(void *)p);
        return;
    }
    for (int64_t j = 0; j < m; j++)
        *(uint16_t *)(void *)(p + j * stride) = rs_bf16_round(src[j]);
}

/* bfloat16 rows: contiguous half-split ones in one pass (half_bf16);
 * the others, as float16 rows are, widened to float32 (buf, 2n floats),
 * rotated by the float32 code and rounded back (exact widening, one
 * rounding: the same bits as the one-pass form). */
static void rot_rows_bf16(rs_rows_f32 rows32, const rs_batch *B, const char *x,
                          char *o, const float *c, const float *s, float *buf)
{
    if (B->fx == 2 && B->fo == 2 && !B->interleaved) {
        void (*half)(int64_t, int64_t, const uint16_t *, uint16_t *, const float *,
                     const float *) = half_bf16_base;
#if RS_HAVE_X86_DISPATCH
        if (rs_cpu_has_avx512())
            half = half_bf16_avx512;
        else if (rs_cpu_has_avx2())
            half = half_bf16_avx2;
#endif
#if RS_HAVE_NEON
        if (rs_cpu_has_neon())
            half = half_bf16_neon;
#endif
        for (int64_t r = 0; r < B->nb; r++) {
            RS_PREFETCH_ROW(x + r * B->bsx, B->row_bytes);
            half(B->n, B->R, (const uint16_t *)(const void *)(x + r * B->bsx),
                 (uint16_t *)(void *)(o + r * B->bso), c, s);
            RS_COPY_TAIL(B, x + r * B->bsx, o + r * B->bso, 2);
        }
        return;
    }
#if RS_HAVE_X86_DISPATCH
    if (rows_inter16(B, x, o, c, s, 1))
        return;
#endif
    rot_rows_via_f32(rows32, B, x, o, c, s, buf, bf16_widen_run, bf16_narrow_run);
}

/* Features 2R..D-1 of each row of a batch pass through unchanged. */
static void copy_tail(const rs_batch *B, int64_t D, int64_t item, const char *x, char *o)
{
    const int64_t from = 2 * B->R;
    for (int64_t r = 0; r < B->nb; r++) {
        const char *xr = x + r * B->bsx;
        char *orow = o + r * B->bso;
        if (B->fx == item && B->fo == item) {
            memcpy(orow + from * item, xr + from * item, (size_t)((D - from) * item));
            continue;
        }
        for (int64_t j = from; j < D; j++)
            memcpy(orow + j * B->fo, xr + j * B->fx, (size_t)item);
    }
}

/* ------------------------------------------------------------------ */
/* Tasks                                                                */
/* ------------------------------------------------------------------ */

/* Fused M-RoPE: pair k takes its angle from position stream pair_stream[k]
 * (stream j's positions are stream 0's plus j * stride bytes).  The pairs
 * sorted by stream (stable, rs_sort_pairs): each stream's pairs are one run
 * of frequencies for the row maker, whose row is scattered back to the
 * pairs' own places unless the sections are chunked (sorted). */
typedef struct {
    int64_t n, stride;
    int sorted;                 /* order is the identity (chunked sections) */
    const int64_t *order;       /* q -> pair */
    const int64_t *start;       /* stream j's pairs: q in [start[j], start[j+1]) */
    const double *theta_sorted; /* theta[order[q]] */
} rs_stream_map;

/* A call rotates one array, or q and k at the same positions (rs_rotate_qk):
 * part 0 is x -> out (operands RS_OP_X, RS_OP_OUT), part 1 k -> its output
 * (RS_OP_KX, RS_OP_KOUT).  Each part's batch holds its rows of one row of
 * the layout (for q and k: their heads), which share one cos/sin row. */
#define RS_MAX_PARTS 2
static const int part_x[RS_MAX_PARTS] = {RS_OP_X, RS_OP_KX};
static const int part_out[RS_MAX_PARTS] = {RS_OP_OUT, RS_OP_KOUT};

typedef struct {
    const rs_layout *L;
    const rs_options *opt;
    const char *x[RS_MAX_PARTS];
    char *out[RS_MAX_PARTS];
    int n_parts;
    const char *cos, *sin;   /* cached form */
    const char *positions;   /* fused form */
    const double *theta;
    double scale;
    const rs_stream_map *streams; /* fused M-RoPE: NULL for one stream */
    int64_t row0, row1;
    rs_rows_f32 rows32;
    rs_rows_f64 rows64;
    rs_flat_f32 flat32;
    rs_flat_f64 flat64;
    rs_batch batch[RS_MAX_PARTS];
    double *mem;             /* task_doubles() of working memory */
    rs_lo_share *lo_share;   /* fused, several tasks, one block of pairs: the call's shared lo rows */
    double *shared;          /* their memory (2 RS_LO_ROWS rows of the block) */
    int *stop;
    int first;
} rs_task;

/* Pairs per block: a row's pairs are rotated in blocks of at most
 * RS_PAIR_BLOCK, so the working memory does not grow with R. */
static int64_t block_pairs(int64_t R)
{
    return R < 1 ? 1 : (R < RS_PAIR_BLOCK ? R : RS_PAIR_BLOCK);
}

/* Working memory of one task: cos/sin rows of the compute type (2P
 * doubles, each with a line of slack before and after it: see
 * row_in_line), the float16 buffer (2P floats) and, fused, the row maker. */
#define RS_ROW_SLACK 40 /* doubles: 64 bytes to align, 128 per row */
static size_t task_doubles(int64_t R, int fused)
{
    int64_t P = block_pairs(R);
    return 3 * (size_t)P + RS_ROW_SLACK + (fused ? rs_row_maker_doubles(P) : 0);
}

/* Fused token runs: the cos/sin rows of up to RS_RUN_TOKENS tokens, made
 * one after the other before the kernel streams the run's rows (placed as
 * the task's rows are: see row_in_line). */
#define RS_RUN_TOKENS 16
static size_t run_doubles(int64_t R)
{
    return 2 * RS_RUN_TOKENS * (size_t)block_pairs(R) + 16;
}

/* The vector kernels place their accesses on out's 64-byte lines (AVX-512);
 * a cos/sin row at another place in its line would split every load of it.
 * So the task's own rows start `lane` bytes into a line, where out's first
 * row does, and a table row elsewhere is copied there when rows share it. */
static char *row_in_line(double *mem, int64_t lane, int64_t P, int which)
{
    uintptr_t at = ((uintptr_t)(void *)mem + 63) & ~(uintptr_t)63;
    at += (uintptr_t)which * (((uintptr_t)P * 8 + 64 + 63) & ~(uintptr_t)63);
    return (char *)at + lane;
}

static int same_line_place(const char *a, const char *b)
{
    return ((uintptr_t)(const void *)a - (uintptr_t)(const void *)b) % 64 == 0;
}

/* The cos/sin row of the block at (c, s), strided, as contiguous rows of
 * the compute type T, sin negated for the inverse. */
#define RS_GATHER(T, n, c, fc, s, fs, sign, cb, sb)                            \
    do {                                                                       \
        T *restrict cb_ = (T *)(cb), *restrict sb_ = (T *)(sb);                \
        if ((fc) == (int64_t)sizeof(T) && (fs) == (int64_t)sizeof(T)) {        \
            const T *restrict cc_ = (const T *)(const void *)(c);              \
            const T *restrict sc_ = (const T *)(const void *)(s);              \
            for (int64_t k = 0; k < (n); k++) {                                \
                cb_[k] = cc_[k];                                               \
                sb_[k] = (T)(sign) * sc_[k];                                   \
            }                                                                  \
            break;                                                             \
        }                                                                      \
        for (int64_t k = 0; k < (n); k++) {                                    \
            cb_[k] = *(const T *)(const void *)((c) + k * (fc));               \
            sb_[k] = (T)(sign) * *(const T *)(const void *)((s) + k * (fs));   \
        }                                                                      \
    } while (0)

static void negate_row(int dtype, int64_t n, void *s)
{
    if (dtype == RS_F64)
        for (int64_t k = 0; k < n; k++)
            ((double *)s)[k] = -((double *)s)[k];
    else
        for (int64_t k = 0; k < n; k++)
            ((float *)s)[k] = -((float *)s)[k];
}

static void rotate_rows(const rs_task *t, const rs_batch *B, const void *c,
                        const void *s, float *hbuf, const char *xr, char *orow)
{
    switch (t->opt->dtype) {
    case RS_F64:
        t->rows64(B, xr, orow, (const double *)c, (const double *)s);
        break;
    case RS_F32:
        t->rows32(B, xr, orow, (const float *)c, (const float *)s);
        break;
    case RS_BF16:
        rot_rows_bf16(t->rows32, B, xr, orow, (const float *)c, (const float *)s, hbuf);
        break;
    default:
        rot_rows_f16(t->rows32, B, xr, orow, (const float *)c, (const float *)s, hbuf);
        break;
    }
}

/* Rotate a batch (rows sharing one cos/sin row) in pieces of at most
 * RS_CHUNK_BYTES, looking at the interrupt between them; 1: stop. */
static int rotate_batch(const rs_task *t, const rs_batch *B, const void *c, const void *s,
                        float *hbuf, const char *xr, char *orow, int64_t *since_poll)
{
    const int64_t per_row = 1 + t->L->n_features * (t->opt->dtype == RS_F64 ? 8 : 4);
    const int64_t piece = 1 + RS_CHUNK_BYTES / per_row;
    rs_batch part = *B;
    for (int64_t r0 = 0; r0 < B->nb; r0 += piece) {
        if (*since_poll >= RS_CHUNK_BYTES) {
            *since_poll = 0;
            if (rs_should_stop(t->opt->interrupt, t->stop, t->first))
                return 1;
        }
        part.nb = B->nb - r0 < piece ? B->nb - r0 : piece;
        rotate_rows(t, &part, c, s, hbuf, xr + r0 * B->bsx, orow + r0 * B->bso);
        *since_poll += part.nb * per_row;
    }
    return 0;
}

/* Working memory of several streams, after the plain row maker's: the
 * maker of every pair at its stream's position and, when the pairs are
 * scattered, two rows of RS_PAIR_BLOCK doubles it writes before. */
static size_t streams_doubles(const rs_stream_map *m)
{
    if (m->n == 1)
        return 0;
    return rs_streams_maker_doubles(m->start[m->n]) + (m->sorted ? 0 : 2 * RS_PAIR_BLOCK);
}

/* The cos/sin row of one row of x, when some stream's position changed
 * since the previous row (or always, `all_stale`): one plain row of every
 * pair when the streams agree (a text token, and plain positions: one
 * stream), else every pair at its stream's position (`all`).  Each value
 * comes from its own theta and position alone, so the bits are those of
 * the streams' own rows. */
static int streams_row(const rs_stream_map *m, rs_row_maker *whole, rs_streams_maker *all, double *last,
                        int all_stale, const char *pos, int pos_int, int cdt, int inverse, void *crow,
                        void *srow, double *scratch)
{
    const int64_t R = m->start[m->n];
    double t[RS_MAX_STREAMS];
    int stale = all_stale, same = 1;
    t[0] = rs_read_position(pos, pos_int); /* m->n >= 1 */
    stale |= t[0] != last[0];
    for (int64_t j = 1; j < m->n; j++) {
        t[j] = rs_read_position(pos + j * m->stride, pos_int);
        stale |= t[j] != last[j];
        same &= t[j] == t[0];
    }
    if (!stale)
        return 0;
    if (same) {
        rs_make_row(whole, t[0], cdt, crow, srow);
    } else if (m->sorted) {
        rs_make_row_streams(all, t, cdt, crow, srow);
    } else if (cdt == RS_F64) { /* made in stream order, scattered to the pairs' places */
        double *tc = scratch, *ts = scratch + RS_PAIR_BLOCK;
        rs_make_row_streams(all, t, cdt, tc, ts);
        for (int64_t q = 0; q < R; q++) {
            ((double *)crow)[m->order[q]] = tc[q];
            ((double *)srow)[m->order[q]] = ts[q];
        }
    } else {
        float *tc = (float *)(void *)scratch, *ts = tc + RS_PAIR_BLOCK;
        rs_make_row_streams(all, t, cdt, tc, ts);
        for (int64_t q = 0; q < R; q++) {
            ((float *)crow)[m->order[q]] = tc[q];
            ((float *)srow)[m->order[q]] = ts[q];
        }
    }
    if (inverse)
        negate_row(cdt, R, srow);
    for (int64_t j = 0; j < m->n; j++)
        last[j] = t[j];
    return 1;
}

/* Whether the task's rows go to the kernel as runs of tokens (flat32 or
 * flat64): forward cached cos/sin read in place, or fused positions (the
 * run's rows made first, RS_RUN_TOKENS at a time); each part's token (its
 * batch of heads) contiguous and whole (D = 2R, R a multiple of the
 * vector), the tokens along the innermost axis one after the other.
 * Calling the kernel once per token left ~250 cycles between calls in
 * which the stream stalled: 1.21x the copy floor where a run reads 1.07x
 * (decode step (64, 1, 32, 128) float32, Xeon model 167). */
static int token_runs(const rs_task *t, int direct)
{
    const rs_layout *L = t->L;
    const int f64 = t->opt->dtype == RS_F64;
    const int64_t R = L->n_pairs, item = f64 ? 8 : 4, row = 2 * R * item, last = L->ndim - 1;
    if ((!direct && t->positions == NULL) || (f64 ? t->flat64 == NULL : t->opt->dtype != RS_F32 || t->flat32 == NULL) ||
        R < 64 / item || R > RS_PAIR_BLOCK || R % (64 / item) != 0 || L->n_features != 2 * R ||
        t->opt->interleaved)
        return 0;
    if (t->positions == NULL && last >= 0 &&
        (L->stride[RS_OP_COS][last] % item != 0 || L->stride[RS_OP_SIN][last] % item != 0))
        return 0;
    for (int p = 0; p < t->n_parts; p++) {
        const rs_batch *B = &t->batch[p];
        const int64_t tok = B->nb * row;
        if (B->fx != item || B->fo != item || (B->nb > 1 && (B->bsx != row || B->bso != row)) ||
            (uintptr_t)(const void *)t->out[p] % (uintptr_t)item != 0 ||
            (last >= 0 && (L->stride[part_x[p]][last] != tok || L->stride[part_out[p]][last] != tok)))
            return 0;
    }
    return 1;
}

static void rotate_task(void *arg)
{
    rs_task *t = (rs_task *)arg;
    const rs_layout *L = t->L;
    const rs_options *opt = t->opt;
    const int64_t R = L->n_pairs, P = block_pairs(R), D = L->n_features;
    const int cdt = opt->dtype == RS_F64 ? RS_F64 : RS_F32;
    const int64_t citem = cdt == RS_F64 ? 8 : 4;
    const int64_t xitem = opt->dtype == RS_F64 ? 8 : (opt->dtype == RS_F32 ? 4 : 2);
    const int64_t step = opt->interleaved ? 2 : 1;
    const int64_t fc = L->fstride[RS_OP_COS], fs = L->fstride[RS_OP_SIN];
    const int fused = t->positions != NULL;
    const int direct = !fused && fc == citem && fs == citem && !opt->inverse;
    int64_t since_poll = RS_CHUNK_BYTES; /* look once at the start */
    rs_row_maker maker;
    rs_streams_maker all_maker;
    double last_spos[RS_MAX_STREAMS];
    rs_iter it;
    rs_iter_seek(L, &it, t->row0);
    const char *out0 = t->out[0] + it.off[RS_OP_OUT];
    const int64_t lane = (int64_t)((uintptr_t)(const void *)out0 % 64) / citem * citem;
    void *crow = row_in_line(t->mem, lane, P, 0), *srow = row_in_line(t->mem, lane, P, 1);
    float *hbuf = (float *)(void *)(t->mem + 2 * P + RS_ROW_SLACK);
    double *streams_mem = NULL; /* several streams: streams_doubles() after the plain maker's */
    /* a table row is read in place unless rows share it and it sits
     * elsewhere in its line than out (then one copy serves the batch) */
    const int realign = t->batch[0].nb > 1 && t->batch[0].fo == citem;
    const int runs = token_runs(t, direct);
    /* fused runs: their rows after the streams' memory, at out's place in a line */
    char *run_rows = !fused ? NULL
                            : row_in_line(t->mem + task_doubles(R, 1) + (t->streams ? streams_doubles(t->streams) : 0),
                                          lane, 0, 0);
    const char *last_rc = NULL, *last_rs = NULL;
    int64_t run_token_bytes = 0; /* a token's rows in every part */
    for (int p = 0; p < t->n_parts; p++)
        run_token_bytes += t->batch[p].nb * D * xitem;

    for (int64_t k0 = 0; k0 == 0 || k0 < R; k0 += P) {
        const int64_t n = R - k0 < P ? R - k0 : P;
        const char *last_c = NULL, *last_s = NULL;
        const void *cp = crow, *sp = srow;
        const rs_stream_map *map = t->streams;
        int64_t one_start[2] = {0, n};
        /* plain positions: one stream whose pairs are this block's run */
        const rs_stream_map one = {1, 0, 1, NULL, one_start, t->theta + k0};
        int have_pos = 0;
        for (int p = 0; p < t->n_parts; p++) {
            rs_batch *B = &t->batch[p];
            B->n = n;
            B->tail = k0 == 0 && !B->in_place && D > 2 * R && B->fx == xitem && B->fo == xitem
                          ? (D - 2 * R) * xitem
                          : 0;
        }
        if (fused && map == NULL)
            map = &one;
        if (map != NULL) {
            /* the plain row maker of this block; several streams come in one
             * block (rs_rotate_streams admits R <= RS_PAIR_BLOCK) */
            rs_row_maker_init(&maker, t->mem + 3 * P + RS_ROW_SLACK, t->theta + k0, n, t->scale);
            if (t->lo_share != NULL)
                rs_angle_cache_share(&maker.cache, t->lo_share, t->shared);
            streams_mem = t->mem + task_doubles(R, 1);
            if (map->n > 1)
                rs_streams_maker_init(&all_maker, streams_mem, map->theta_sorted, map->start, map->n, t->scale);
        }
        rs_iter_seek(L, &it, t->row0);
        for (int64_t r = t->row0; r < t->row1; r++, rs_iter_next(L, &it)) {
            if (runs) {
                /* the rest of this innermost axis, in pieces of at most RS_CHUNK_BYTES
                 * (fused: of RS_RUN_TOKENS, their rows made first) */
                const int64_t last = L->ndim - 1;
                int64_t run = last < 0 ? 1 : L->shape[last] - it.idx[last];
                if (run > t->row1 - r)
                    run = t->row1 - r;
                if (run > 1 + RS_CHUNK_BYTES / run_token_bytes)
                    run = 1 + RS_CHUNK_BYTES / run_token_bytes;
                if (map != NULL && run > RS_RUN_TOKENS)
                    run = RS_RUN_TOKENS;
                if (since_poll >= RS_CHUNK_BYTES) {
                    since_poll = 0;
                    if (rs_should_stop(opt->interrupt, t->stop, t->first))
                        return;
                }
                const char *c, *s;
                int64_t cst, sst;
                if (map == NULL) { /* the table's rows, in place */
                    c = t->cos + it.off[RS_OP_COS];
                    s = t->sin + it.off[RS_OP_SIN];
                    cst = last < 0 ? 0 : L->stride[RS_OP_COS][last] / citem;
                    sst = last < 0 ? 0 : L->stride[RS_OP_SIN][last] / citem;
                } else { /* this run's rows, R apart; a token at the previous one's position copies it */
                    const int64_t pstep = last < 0 ? 0 : L->stride[RS_OP_POS][last];
                    char *rc = run_rows, *rs = run_rows + RS_RUN_TOKENS * R * citem;
                    for (int64_t j = 0; j < run; j++, rc += R * citem, rs += R * citem) {
                        if (!streams_row(map, &maker, &all_maker, last_spos, !have_pos,
                                         t->positions + it.off[RS_OP_POS] + j * pstep, opt->pos_int, cdt,
                                         opt->inverse, rc, rs, streams_mem + rs_streams_maker_doubles(R))) {
                            if (rc != last_rc) {
                                memcpy(rc, last_rc, (size_t)(R * citem));
                                memcpy(rs, last_rs, (size_t)(R * citem));
                            }
                        }
                        have_pos = 1;
                        last_rc = rc;
                        last_rs = rs;
                    }
                    c = run_rows;
                    s = run_rows + RS_RUN_TOKENS * R * citem;
                    cst = sst = R;
                }
                for (int p = 0; p < t->n_parts; p++) {
                    const char *xr = t->x[p] + it.off[part_x[p]];
                    char *orow = t->out[p] + it.off[part_out[p]];
                    const int64_t nb = t->batch[p].nb;
                    if (cdt == RS_F64)
                        t->flat64(run, nb, R, cst, sst, (const double *)(const void *)xr, (double *)(void *)orow,
                                  (const double *)(const void *)c, (const double *)(const void *)s);
                    else
                        t->flat32(run, nb, R, cst, sst, (const float *)(const void *)xr, (float *)(void *)orow,
                                  (const float *)(const void *)c, (const float *)(const void *)s);
                }
                since_poll += run * run_token_bytes;
                r += run - 1;
                rs_iter_seek(L, &it, r);
                continue;
            }
            if (map != NULL) {
                streams_row(map, &maker, &all_maker, last_spos, !have_pos, t->positions + it.off[RS_OP_POS],
                            opt->pos_int, cdt, opt->inverse, crow, srow,
                            streams_mem + rs_streams_maker_doubles(R));
                have_pos = 1;
            } else {
                const char *c = t->cos + it.off[RS_OP_COS] + k0 * fc;
                const char *s = t->sin + it.off[RS_OP_SIN] + k0 * fs;
                if (c != last_c || s != last_s) {
                    double sign = opt->inverse ? -1.0 : 1.0;
                    if (direct && !(realign && !(same_line_place(c, out0) && same_line_place(s, out0)))) {
                        cp = c;
                        sp = s;
                    } else if (cdt == RS_F64) {
                        RS_GATHER(double, n, c, fc, s, fs, sign, crow, srow);
                        cp = crow;
                        sp = srow;
                    } else {
                        RS_GATHER(float, n, c, fc, s, fs, sign, crow, srow);
                        cp = crow;
                        sp = srow;
                    }
                    last_c = c;
                    last_s = s;
                }
            }
            /* the row serves every part while it is in cache: q's heads, then k's */
            for (int p = 0; p < t->n_parts; p++) {
                const rs_batch *B = &t->batch[p];
                const char *xr = t->x[p] + it.off[part_x[p]];
                char *orow = t->out[p] + it.off[part_out[p]];
                if (rotate_batch(t, B, cp, sp, hbuf, xr + k0 * step * B->fx, orow + k0 * step * B->fo,
                                 &since_poll))
                    return;
                if (k0 == 0 && !B->in_place && D > 2 * R && !B->tail)
                    copy_tail(B, D, xitem, xr, orow);
            }
        }
    }
}

/* The joint layout of q and k (rs_rotate_qk): every axis but the heads h,
 * with q's strides as RS_OP_X/OUT and k's as RS_OP_KX/KOUT; the heads
 * become each part's batch.  h is the one axis where the shapes differ
 * (GQA), else the innermost axis along which the positions repeat, if
 * any.  -1: the layouts do not pair up. */
static int joint_layout(rs_layout *J, const rs_layout *lq, const rs_layout *lk, rs_batch *bq, rs_batch *bk)
{
    int h = -1, j = 0;
    if (lq->ndim != lk->ndim || lq->n_features != lk->n_features || lq->n_pairs != lk->n_pairs)
        return -1;
    for (int i = 0; i < lq->ndim; i++) {
        if (lq->stride[RS_OP_POS][i] != lk->stride[RS_OP_POS][i])
            return -1;
        if (lq->shape[i] != lk->shape[i]) {
            if (h >= 0)
                return -1;
            h = i;
        }
    }
    if (h < 0)
        for (int i = 0; i < lq->ndim; i++)
            if (lq->stride[RS_OP_POS][i] == 0 && lq->shape[i] > 1)
                h = i;
    if (h >= 0 && lq->stride[RS_OP_POS][h] != 0)
        return -1;
    memset(J, 0, sizeof(*J));
    for (int i = 0; i < lq->ndim; i++) {
        if (i == h)
            continue;
        J->shape[j] = lq->shape[i];
        J->stride[RS_OP_X][j] = lq->stride[RS_OP_X][i];
        J->stride[RS_OP_OUT][j] = lq->stride[RS_OP_OUT][i];
        J->stride[RS_OP_KX][j] = lk->stride[RS_OP_X][i];
        J->stride[RS_OP_KOUT][j] = lk->stride[RS_OP_OUT][i];
        J->stride[RS_OP_POS][j] = lq->stride[RS_OP_POS][i];
        j++;
    }
    J->ndim = j;
    J->n_features = lq->n_features;
    J->n_pairs = lq->n_pairs;
    J->fstride[RS_OP_X] = lq->fstride[RS_OP_X];
    J->fstride[RS_OP_OUT] = lq->fstride[RS_OP_OUT];
    J->fstride[RS_OP_KX] = lk->fstride[RS_OP_X];
    J->fstride[RS_OP_KOUT] = lk->fstride[RS_OP_OUT];
    bq->nb = h >= 0 ? lq->shape[h] : 1;
    bq->bsx = h >= 0 ? lq->stride[RS_OP_X][h] : 0;
    bq->bso = h >= 0 ? lq->stride[RS_OP_OUT][h] : 0;
    bk->nb = h >= 0 ? lk->shape[h] : 1;
    bk->bsx = h >= 0 ? lk->stride[RS_OP_X][h] : 0;
    bk->bso = h >= 0 ? lk->stride[RS_OP_OUT][h] : 0;
    return 0;
}

static int valid_layout(const rs_layout *L)
{
    if (L->ndim < 0 || L->ndim > RS_MAXDIM || L->n_pairs < 0 || L->n_pairs > L->n_features / 2)
        return 0;
    for (int i = 0; i < L->ndim; i++)
        if (L->shape[i] < 0)
            return 0;
    return 1;
}

/* One array (klay NULL) or q and k (klay: k's layout; k_in_place). */
static int run(const rs_layout *lay, const rs_layout *klay, int k_in_place, const rs_options *opt,
               const char *const *xs, char *const *outs, const char *c, const char *s,
               const char *positions, const double *theta, double scale, const rs_stream_map *streams)
{
    rs_layout L;
    rs_task tasks[RS_MAX_TASKS];
    rs_batch batch[RS_MAX_PARTS];
    rs_lo_share lo_share;
    size_t shared = 0;
    const int n_parts = klay != NULL ? 2 : 1;
    int64_t rows, item, bytes, per_row = 0, t0 = 0;
    int n, n_tasks, stop = 0, last, probe = 0, rc;

    if (!valid_layout(lay) || (klay != NULL && (!valid_layout(klay) || positions == NULL)) ||
        opt->dtype < RS_F16 || opt->dtype > RS_BF16)
        return RS_BAD_LAYOUT;
    memset(batch, 0, sizeof(batch));
    batch[0].nb = 1;
    if (klay != NULL) {
        if (joint_layout(&L, lay, klay, &batch[0], &batch[1]) != 0)
            return RS_BAD_LAYOUT;
    } else {
        L = *lay;
    }
    if (positions != NULL)
        rs_layout_positions_last(&L);
    rs_layout_coalesce(&L);
    rows = rs_layout_rows(&L);
    item = opt->dtype == RS_F64 ? 8 : (opt->dtype == RS_F32 ? 4 : 2);
    for (int p = 0; p < n_parts; p++)
        per_row += batch[p].nb;
    if (rows == 0 || per_row == 0 || L.n_features == 0)
        return RS_OK;
    /* rows * D * item cannot overflow: x exists in memory with this size. */
    bytes = rows * per_row * L.n_features * item;
    n = opt->n_threads < 1 ? 1 : opt->n_threads;
    if (n > RS_MAX_TASKS)
        n = RS_MAX_TASKS;
    n = rows < n ? 1 : rs_split_pick(bytes, positions != NULL, n, &probe);
    /* One array: rows along the innermost axis that share cos/sin (or the
     * position) go to the kernel together, unless that would leave too few
     * to split. */
    last = L.ndim - 1;
    if (klay == NULL && L.ndim >= 1 && L.stride[RS_OP_COS][last] == 0 && L.stride[RS_OP_SIN][last] == 0 &&
        L.stride[RS_OP_POS][last] == 0 && rows / L.shape[last] >= n) {
        batch[0].nb = L.shape[last];
        batch[0].bsx = L.stride[RS_OP_X][last];
        batch[0].bso = L.stride[RS_OP_OUT][last];
        rows /= batch[0].nb;
        L.ndim--;
    }
    for (int p = 0; p < n_parts; p++) {
        rs_batch *B = &batch[p];
        B->R = L.n_pairs;
        B->n = 0;
        B->fx = L.fstride[part_x[p]];
        B->fo = L.fstride[part_out[p]];
        B->interleaved = opt->interleaved;
        B->in_place = p == 0 ? opt->in_place : k_in_place;
        /* contiguous rows: prefetch the whole row (a partial-rotary tail too) */
        B->row_bytes = B->fx == item ? L.n_features * item : 0;
    }
    /* RS_TASKS_PER_THREAD pieces per thread: a worker that wakes late (tens
     * of microseconds after a long idle) then holds the caller up by one
     * small piece at most, instead of half the call.  Shares of at most
     * RS_ONE_TASK_BYTES take one piece per thread: the workers spin a while
     * after a call, so back-to-back small calls find them awake, and the
     * claims of small pieces cost more than a late worker (a decode step of
     * 1 MiB on two threads: 0.32x the one-thread copy in 2 pieces, 0.46x in
     * 8; at 4 MiB, 8 pieces were 5% faster; Xeon model 167). */
    {
        const int per_thread = bytes / n <= RS_ONE_TASK_BYTES ? 1 : RS_TASKS_PER_THREAD;
        n_tasks = n == 1 ? 1 : (int)(rows < (int64_t)n * per_thread ? rows : n * per_thread);
    }
    if (n_tasks > RS_MAX_TASKS)
        n_tasks = RS_MAX_TASKS;
    /* fused rows in several tasks: the lo rows are made once for all of them */
    memset(&lo_share, 0, sizeof(lo_share));
    if (positions != NULL && n_tasks > 1 && L.n_pairs <= RS_PAIR_BLOCK)
        shared = 2 * (size_t)RS_LO_ROWS * (size_t)block_pairs(L.n_pairs);
    for (int i = 0; i < n_tasks; i++) {
        rs_task *t = &tasks[i];
        t->L = &L;
        t->opt = opt;
        t->n_parts = n_parts;
        for (int p = 0; p < n_parts; p++) {
            t->x[p] = xs[p];
            t->out[p] = outs[p];
            t->batch[p] = batch[p];
        }
        t->cos = c;
        t->sin = s;
        t->positions = positions;
        t->theta = theta;
        t->scale = scale;
        t->streams = streams;
        rs_split_range(rows, n_tasks, i, &t->row0, &t->row1);
        t->rows32 = pick_f32();
        t->rows64 = pick_f64();
        t->flat32 = pick_flat_f32();
        t->flat64 = pick_flat_f64();
        t->stop = &stop;
        t->first = i == 0;
        t->lo_share = shared > 0 ? &lo_share : NULL;
        t->shared = NULL;
    }
    /* Everything the call needs, before any thread writes: a call either
     * completes or leaves its output untouched. */
    if (probe)
        t0 = rs_now_ns();
    rc = rs_run_tasks_shared(rotate_task, tasks, sizeof(rs_task), n_tasks, n,
                             task_doubles(L.n_pairs, positions != NULL) +
                                 (streams != NULL ? streams_doubles(streams) : 0) +
                                 (positions != NULL ? run_doubles(L.n_pairs) : 0),
                             offsetof(rs_task, mem), shared, offsetof(rs_task, shared), opt->interrupt, &stop);
    if (rc != 0)
        return RS_NO_MEMORY;
    if (probe && !stop)
        rs_split_note(bytes, positions != NULL, n, rs_now_ns() - t0);
    return stop ? RS_INTERRUPTED : RS_OK;
}

int rs_rotate(const rs_layout *lay, const rs_options *opt, const char *x,
              char *out, const char *cos, const char *sin)
{
    return run(lay, NULL, 0, opt, &x, &out, cos, sin, NULL, NULL, 1.0, NULL);
}

int rs_rotate_positions(const rs_layout *lay, const rs_options *opt,
                        const char *x, char *out, const char *positions,
                        const double *theta, double scale)
{
    if (positions == NULL || theta == NULL)
        return RS_BAD_LAYOUT;
    return run(lay, NULL, 0, opt, &x, &out, NULL, NULL, positions, theta, scale, NULL);
}

/* The stream map of fused M-RoPE in the caller's arrays (R <= RS_PAIR_BLOCK
 * pairs); -1 for a bad pair_stream. */
static int stream_map(rs_stream_map *map, int64_t R, int64_t stream_stride, int64_t n_streams,
                      const int64_t *pair_stream, const double *theta, int64_t *start, int64_t *order,
                      double *theta_sorted)
{
    if (pair_stream == NULL || n_streams < 1 || n_streams > RS_MAX_STREAMS || R < 0 || R > RS_PAIR_BLOCK)
        return -1;
    for (int64_t k = 0; k < R; k++)
        if (pair_stream[k] < 0 || pair_stream[k] >= n_streams)
            return -1;
    map->n = n_streams;
    map->stride = stream_stride;
    map->sorted = rs_sort_pairs(pair_stream, R, n_streams, theta, order, theta_sorted, start);
    map->order = order;
    map->start = start;
    map->theta_sorted = theta_sorted;
    return 0;
}

int rs_rotate_streams(const rs_layout *lay, const rs_options *opt, const char *x,
                      char *out, const char *positions, int64_t stream_stride,
                      int64_t n_streams, const int64_t *pair_stream,
                      const double *theta, double scale)
{
    int64_t start[RS_MAX_STREAMS + 1], order[RS_PAIR_BLOCK];
    double theta_sorted[RS_PAIR_BLOCK];
    rs_stream_map map;
    if (positions == NULL || theta == NULL ||
        stream_map(&map, lay->n_pairs, stream_stride, n_streams, pair_stream, theta, start, order,
                   theta_sorted) != 0)
        return RS_BAD_LAYOUT;
    return run(lay, NULL, 0, opt, &x, &out, NULL, NULL, positions, theta, scale, &map);
}

int rs_rotate_qk(const rs_layout *lq, const rs_layout *lk, const rs_options *opt, int k_in_place,
                 const char *q, char *oq, const char *k, char *ok, const char *positions,
                 int64_t stream_stride, int64_t n_streams, const int64_t *pair_stream,
                 const double *theta, double scale)
{
    const char *xs[RS_MAX_PARTS] = {q, k};
    char *outs[RS_MAX_PARTS] = {oq, ok};
    int64_t start[RS_MAX_STREAMS + 1], order[RS_PAIR_BLOCK];
    double theta_sorted[RS_PAIR_BLOCK];
    rs_stream_map map;
    if (positions == NULL || theta == NULL || lk == NULL)
        return RS_BAD_LAYOUT;
    if (n_streams == 0 && pair_stream == NULL)
        return run(lq, lk, k_in_place, opt, xs, outs, NULL, NULL, positions, theta, scale, NULL);
    if (stream_map(&map, lq->n_pairs, stream_stride, n_streams, pair_stream, theta, start, order,
                   theta_sorted) != 0)
        return RS_BAD_LAYOUT;
    return run(lq, lk, k_in_place, opt, xs, outs, NULL, NULL, positions, theta, scale, &map);
}
