/*
 * Rotary application: one kernel body per pairing, instantiated for float32
 * and float64; float16 rows are widened to float32, rotated and narrowed.
 *
 * Rows are the leading axes of x (everything but the features).  cos/sin
 * (cached form) or the position (fused form) of a row are turned into a
 * contiguous row of the compute type once, and reused as long as the next
 * row points at the same data, so a table broadcast over heads or a
 * position shared by a token's heads costs one row of work per token, not
 * one per head (ggml does the same per token).
 */
#include "ropescale.h"
#include "rs_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Row kernels                                                          */
/* ------------------------------------------------------------------ */

/* What a batch of rows shares: geometry, pairing and the row strides. */
typedef struct {
    int64_t nb, bsx, bso;  /* rows in the batch and their byte strides */
    int64_t R, D;          /* pairs, features */
    int64_t fx, fo;        /* feature byte strides */
    int interleaved, in_place;
} rs_batch;

/* Contiguous kernels: the restrict-qualified forms let the compiler
 * vectorize without run-time alias checks.  The in-place forms name the two
 * halves separately; within one row they never overlap. */
#define RS_DEFINE_KERNELS(T, SUF, ATTR)                                        \
    ATTR static void half_oop_##SUF(int64_t R, const T *restrict x,                 \
                               T *restrict o, const T *restrict c,             \
                               const T *restrict s)                            \
    {                                                                          \
        for (int64_t k = 0; k < R; k++) {                                      \
            T a = x[k], b = x[k + R];                                          \
            o[k] = a * c[k] - b * s[k];                                        \
            o[k + R] = b * c[k] + a * s[k];                                    \
        }                                                                      \
    }                                                                          \
    ATTR static void half_ip_##SUF(int64_t R, T *x, const T *restrict c,            \
                              const T *restrict s)                             \
    {                                                                          \
        T *restrict xa = x;                                                    \
        T *restrict xb = x + R;                                                \
        for (int64_t k = 0; k < R; k++) {                                      \
            T a = xa[k], b = xb[k];                                            \
            xa[k] = a * c[k] - b * s[k];                                       \
            xb[k] = b * c[k] + a * s[k];                                       \
        }                                                                      \
    }                                                                          \
    ATTR static void inter_oop_##SUF(int64_t R, const T *restrict x,                \
                                T *restrict o, const T *restrict c,            \
                                const T *restrict s)                           \
    {                                                                          \
        for (int64_t k = 0; k < R; k++) {                                      \
            T a = x[2 * k], b = x[2 * k + 1];                                  \
            o[2 * k] = a * c[k] - b * s[k];                                    \
            o[2 * k + 1] = b * c[k] + a * s[k];                                \
        }                                                                      \
    }                                                                          \
    ATTR static void inter_ip_##SUF(int64_t R, T *restrict x, const T *restrict c,  \
                               const T *restrict s)                            \
    {                                                                          \
        for (int64_t k = 0; k < R; k++) {                                      \
            T a = x[2 * k], b = x[2 * k + 1];                                  \
            x[2 * k] = a * c[k] - b * s[k];                                    \
            x[2 * k + 1] = b * c[k] + a * s[k];                                \
        }                                                                      \
    }                                                                          \
    /* Any strides, in place or not: both inputs of a pair are read before   \
     * either output is written. */                                          \
    ATTR static void strided_##SUF(int64_t R, int interleaved, const char *x,       \
                              int64_t fx, char *o, int64_t fo, const T *c,     \
                              const T *s)                                      \
    {                                                                          \
        int64_t step = interleaved ? 2 : 1;                                    \
        int64_t other = interleaved ? 1 : R;                                   \
        for (int64_t k = 0; k < R; k++) {                                      \
            int64_t ia = k * step, ib = ia + other;                            \
            T a = *(const T *)(const void *)(x + ia * fx);                     \
            T b = *(const T *)(const void *)(x + ib * fx);                     \
            *(T *)(void *)(o + ia * fo) = a * c[k] - b * s[k];                 \
            *(T *)(void *)(o + ib * fo) = b * c[k] + a * s[k];                 \
        }                                                                      \
    }                                                                          \
    /* nb rows that share one cos/sin row, row strides bsx/bso: the kernel is \
     * chosen once for all of them (a token's heads, typically). */          \
    ATTR static void rot_rows_##SUF(const rs_batch *B, const char *x,          \
                                    char *o, const T *c, const T *s)           \
    {                                                                          \
        const int64_t sz = (int64_t)sizeof(T), R = B->R, D = B->D;             \
        const int64_t nb = B->nb, bsx = B->bsx, bso = B->bso;                  \
        const size_t tail = (size_t)((D - 2 * R) * sz);                        \
        if (B->fx == sz && B->fo == sz) {                                      \
            if (B->in_place) {                                                 \
                if (B->interleaved)                                            \
                    for (int64_t r = 0; r < nb; r++)                           \
                        inter_ip_##SUF(R, (T *)(void *)(o + r * bso), c, s);   \
                else                                                           \
                    for (int64_t r = 0; r < nb; r++)                           \
                        half_ip_##SUF(R, (T *)(void *)(o + r * bso), c, s);    \
                return;                                                        \
            }                                                                  \
            for (int64_t r = 0; r < nb; r++) {                                 \
                const T *xr = (const T *)(const void *)(x + r * bsx);          \
                T *orow = (T *)(void *)(o + r * bso);                          \
                if (B->interleaved)                                            \
                    inter_oop_##SUF(R, xr, orow, c, s);                        \
                else                                                           \
                    half_oop_##SUF(R, xr, orow, c, s);                         \
                if (tail)                                                      \
                    memcpy(orow + 2 * R, xr + 2 * R, tail);                    \
            }                                                                  \
            return;                                                            \
        }                                                                      \
        for (int64_t r = 0; r < nb; r++) {                                     \
            const char *xr = x + r * bsx;                                      \
            char *orow = o + r * bso;                                          \
            strided_##SUF(R, B->interleaved, xr, B->fx, orow, B->fo, c, s);    \
            if (!B->in_place)                                                  \
                for (int64_t j = 2 * R; j < D; j++)                            \
                    memcpy(orow + j * B->fo, xr + j * B->fx, sizeof(T));       \
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

static rs_rows_f32 pick_f32(void)
{
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx2())
        return rot_rows_f32_avx2;
#endif
    return rot_rows_f32;
}

static rs_rows_f64 pick_f64(void)
{
#if RS_HAVE_X86_DISPATCH
    if (rs_cpu_has_avx2())
        return rot_rows_f64_avx2;
#endif
    return rot_rows_f64;
}

#if RS_HAVE_X86_DISPATCH
#include <immintrin.h>

/* float16, half-split, contiguous: widen 8 pairs, rotate in float32 and
 * narrow in one pass (F16C).  The float operations are those of the
 * portable path, so the results are the same bits. */
__attribute__((target("avx2,f16c"))) static void
half_f16_f16c(int64_t R, const uint16_t *x, uint16_t *o, const float *c,
              const float *s)
{
    int64_t k = 0;
    for (; k + 8 <= R; k += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(x + k)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(x + k + R)));
        __m256 cc = _mm256_loadu_ps(c + k), ss = _mm256_loadu_ps(s + k);
        __m256 oa = _mm256_sub_ps(_mm256_mul_ps(a, cc), _mm256_mul_ps(b, ss));
        __m256 ob = _mm256_add_ps(_mm256_mul_ps(b, cc), _mm256_mul_ps(a, ss));
        _mm_storeu_si128((__m128i *)(void *)(o + k),
                         _mm256_cvtps_ph(oa, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(void *)(o + k + R),
                         _mm256_cvtps_ph(ob, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; k < R; k++) {
        float a = rs_half_to_float(x[k]), b = rs_half_to_float(x[k + R]);
        float oa = a * c[k] - b * s[k], ob = b * c[k] + a * s[k];
        o[k] = rs_float_to_half(oa);
        o[k + R] = rs_float_to_half(ob);
    }
}

#endif

/* float16: widen the rotated part of each row, rotate in float32, narrow
 * (one fused pass for contiguous half-split rows where F16C exists). */
static void rot_rows_f16(rs_rows_f32 rows32, const rs_batch *B, const char *x,
                         char *o, const float *c, const float *s, float *buf)
{
    const int64_t R = B->R, D = B->D, n = 2 * R, fx = B->fx, fo = B->fo;
    rs_batch one = *B;
    one.nb = 1;
    one.D = n;
    one.fx = one.fo = 4;
    one.in_place = 1;
    for (int64_t r = 0; r < B->nb; r++) {
        const char *xr = x + r * B->bsx;
        char *orow = o + r * B->bso;
#if RS_HAVE_X86_DISPATCH
        if (fx == 2 && fo == 2 && !B->interleaved && (rs_cpu_has_avx2() && rs_cpu_has_f16c())) {
            half_f16_f16c(R, (const uint16_t *)(const void *)xr,
                          (uint16_t *)(void *)orow, c, s);
            goto tail;
        }
#endif
        if (fx == 2) {
            rs_half_to_float_n(n, (const uint16_t *)(const void *)xr, buf);
        } else {
            for (int64_t j = 0; j < n; j++) {
                uint16_t h;
                memcpy(&h, xr + j * fx, 2);
                buf[j] = rs_half_to_float(h);
            }
        }
        rows32(&one, (const char *)buf, (char *)buf, c, s);
        if (fo == 2) {
            rs_float_to_half_n(n, buf, (uint16_t *)(void *)orow);
        } else {
            for (int64_t j = 0; j < n; j++) {
                uint16_t h = rs_float_to_half(buf[j]);
                memcpy(orow + j * fo, &h, 2);
            }
        }
#if RS_HAVE_X86_DISPATCH
    tail:
#endif
        if (!B->in_place) {
            if (fx == 2 && fo == 2)
                memcpy(orow + n * 2, xr + n * 2, (size_t)((D - n) * 2));
            else
                for (int64_t j = n; j < D; j++)
                    memcpy(orow + j * fo, xr + j * fx, 2);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Row iteration                                                        */
/* ------------------------------------------------------------------ */

static double read_position(const char *p, int is_int)
{
    if (is_int)
        return (double)*(const int64_t *)(const void *)p;
    return *(const double *)(const void *)p;
}

/* Fused form: move the axes along which the position repeats (stride 0)
 * innermost, keeping the order otherwise, so that rows sharing a position
 * follow each other and its cos/sin are made once for all of them. */
static void repeated_positions_last(rs_layout *L)
{
    rs_layout t = *L;
    int j = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < t.ndim; i++) {
            int repeats = t.sc[i] == 0;
            if (repeats != pass)
                continue;
            L->shape[j] = t.shape[i];
            L->sx[j] = t.sx[i];
            L->so[j] = t.so[i];
            L->sc[j] = t.sc[i];
            L->ss[j] = t.ss[i];
            j++;
        }
    }
}

/* Drop unit axes and merge neighbours that every operand steps through as
 * one, so that e.g. (B, S, H) contiguous rows become a single axis. */
static void coalesce(rs_layout *L)
{
    int j = 0;
    for (int i = 0; i < L->ndim; i++) {
        if (L->shape[i] == 1)
            continue;
        L->shape[j] = L->shape[i];
        L->sx[j] = L->sx[i];
        L->so[j] = L->so[i];
        L->sc[j] = L->sc[i];
        L->ss[j] = L->ss[i];
        j++;
    }
    L->ndim = j;
    if (j <= 1)
        return;
    j = 0;
    for (int i = 1; i < L->ndim; i++) {
        int64_t n = L->shape[i];
        if (L->sx[j] == L->sx[i] * n && L->so[j] == L->so[i] * n &&
            L->sc[j] == L->sc[i] * n && L->ss[j] == L->ss[i] * n) {
            L->shape[j] *= n;
            L->sx[j] = L->sx[i];
            L->so[j] = L->so[i];
            L->sc[j] = L->sc[i];
            L->ss[j] = L->ss[i];
        } else {
            j++;
            L->shape[j] = L->shape[i];
            L->sx[j] = L->sx[i];
            L->so[j] = L->so[i];
            L->sc[j] = L->sc[i];
            L->ss[j] = L->ss[i];
        }
    }
    L->ndim = j + 1;
}

typedef struct {
    int64_t idx[RS_MAXDIM];
    int64_t ox, oo, oc, os;
} rs_iter;

static void iter_seek(const rs_layout *L, rs_iter *it, int64_t row)
{
    it->ox = it->oo = it->oc = it->os = 0;
    for (int d = L->ndim - 1; d >= 0; d--) {
        int64_t i = row % L->shape[d];
        row /= L->shape[d];
        it->idx[d] = i;
        it->ox += i * L->sx[d];
        it->oo += i * L->so[d];
        it->oc += i * L->sc[d];
        it->os += i * L->ss[d];
    }
}

static void iter_next(const rs_layout *L, rs_iter *it)
{
    for (int d = L->ndim - 1; d >= 0; d--) {
        it->idx[d]++;
        it->ox += L->sx[d];
        it->oo += L->so[d];
        it->oc += L->sc[d];
        it->os += L->ss[d];
        if (it->idx[d] < L->shape[d])
            return;
        it->ox -= L->sx[d] * L->shape[d];
        it->oo -= L->so[d] * L->shape[d];
        it->oc -= L->sc[d] * L->shape[d];
        it->os -= L->ss[d] * L->shape[d];
        it->idx[d] = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Tasks                                                                */
/* ------------------------------------------------------------------ */

typedef struct {
    const rs_layout *L;
    const rs_options *opt;
    const char *x;
    char *out;
    const char *cos;      /* or positions */
    const char *sin;
    const double *theta;  /* fused form only */
    double scale;
    int64_t row0, row1;
    rs_rows_f32 rows32;
    rs_rows_f64 rows64;
    rs_batch batch;
    int status;
} rs_task;

/* Contiguous compute-type rows of cos and sin (sin negated for the inverse). */
typedef struct {
    void *mem;
    float *cf, *sf;   /* float32 rows */
    double *cd, *sd;  /* float64 rows */
    float *hbuf;      /* float16 widening buffer, 2R floats */
} rs_rowbuf;

static int rowbuf_init(rs_rowbuf *b, int64_t R)
{
    size_t n = R > 0 ? (size_t)R : 1;
    if (n > ((size_t)-1) / (2 * sizeof(float) + 2 * sizeof(double) + 2 * sizeof(float)))
        return -1;
    /* 2 float rows, 2 double rows, 2R floats */
    b->mem = malloc(n * (2 * sizeof(float) + 2 * sizeof(double) + 2 * sizeof(float)));
    if (b->mem == NULL)
        return -1;
    b->cd = (double *)b->mem;
    b->sd = b->cd + n;
    b->cf = (float *)(void *)(b->sd + n);
    b->sf = b->cf + n;
    b->hbuf = b->sf + n;
    return 0;
}

/* Rotate one batch of rows (see rs_batch) with cos/sin rows c, s of the
 * compute type (float32 for float16/float32 x, float64 for float64 x). */
static void rotate_batch(const rs_task *t, const void *c, const void *s,
                         float *hbuf, const char *xr, char *orow)
{
    switch (t->opt->dtype) {
    case RS_F64:
        t->rows64(&t->batch, xr, orow, (const double *)c, (const double *)s);
        break;
    case RS_F32:
        t->rows32(&t->batch, xr, orow, (const float *)c, (const float *)s);
        break;
    default:
        rot_rows_f16(t->rows32, &t->batch, xr, orow, (const float *)c,
                     (const float *)s, hbuf);
        break;
    }
}

/* Cached form: copy a strided table row into the buffer, negating sin for
 * the inverse.  Contiguous rows of the forward rotation are used in place. */
#define RS_GATHER(T, CB, SB)                                                   \
    do {                                                                       \
        T *restrict cb_ = (CB);                                                \
        T *restrict sb_ = (SB);                                                \
        const T sg_ = (T)sg;                                                   \
        for (int64_t k = 0; k < R; k++) {                                      \
            cb_[k] = *(const T *)(const void *)(c + k * fc);                   \
            sb_[k] = sg_ * *(const T *)(const void *)(s + k * fs);             \
        }                                                                      \
    } while (0)

static void table_task(void *arg)
{
    rs_task *t = (rs_task *)arg;
    const rs_layout *L = t->L;
    const int64_t R = L->n_pairs, fc = L->fc, fs = L->fs;
    const int64_t item = t->opt->dtype == RS_F64 ? 8 : 4;
    const double sg = t->opt->inverse ? -1.0 : 1.0;
    const int direct = fc == item && fs == item && !t->opt->inverse;
    rs_rowbuf b;
    rs_iter it;
    const char *last_c = NULL, *last_s = NULL;
    const void *cp = NULL, *sp = NULL;

    t->status = 0;
    if (t->row0 >= t->row1)
        return;
    if (rowbuf_init(&b, R) != 0) {
        t->status = -1;
        return;
    }
    iter_seek(L, &it, t->row0);
    for (int64_t r = t->row0; r < t->row1; r++) {
        const char *c = t->cos + it.oc, *s = t->sin + it.os;
        if (c != last_c || s != last_s) {
            if (direct) {
                cp = c;
                sp = s;
            } else if (item == 8) {
                RS_GATHER(double, b.cd, b.sd);
                cp = b.cd;
                sp = b.sd;
            } else {
                RS_GATHER(float, b.cf, b.sf);
                cp = b.cf;
                sp = b.sf;
            }
            last_c = c;
            last_s = s;
        }
        rotate_batch(t, cp, sp, b.hbuf, t->x + it.ox, t->out + it.oo);
        iter_next(L, &it);
    }
    free(b.mem);
}

static void fused_task(void *arg)
{
    rs_task *t = (rs_task *)arg;
    const rs_layout *L = t->L;
    const int64_t R = L->n_pairs;
    const double sg = t->opt->inverse ? -1.0 : 1.0;
    rs_rowbuf b;
    rs_iter it;
    rs_angle_cache *cache;
    double last = 0.0;
    int have_last = 0;

    t->status = 0;
    if (t->row0 >= t->row1)
        return;
    if (rowbuf_init(&b, R) != 0) {
        t->status = -1;
        return;
    }
    cache = rs_angle_cache_new(t->theta, R, t->scale);
    if (cache == NULL) {
        free(b.mem);
        t->status = -1;
        return;
    }
    iter_seek(L, &it, t->row0);
    for (int64_t r = t->row0; r < t->row1; r++) {
        double pos = read_position(t->cos + it.oc, t->opt->pos_int);
        if (!have_last || pos != last) {
            rs_angle_row(cache, pos, b.cd, b.sd);
            if (sg < 0)
                for (int64_t k = 0; k < R; k++)
                    b.sd[k] = -b.sd[k];
            if (t->opt->dtype != RS_F64)
                for (int64_t k = 0; k < R; k++) {
                    b.cf[k] = (float)b.cd[k];
                    b.sf[k] = (float)b.sd[k];
                }
            last = pos;
            have_last = 1;
        }
        if (t->opt->dtype == RS_F64)
            rotate_batch(t, b.cd, b.sd, b.hbuf, t->x + it.ox, t->out + it.oo);
        else
            rotate_batch(t, b.cf, b.sf, b.hbuf, t->x + it.ox, t->out + it.oo);
        iter_next(L, &it);
    }
    rs_angle_cache_free(cache);
    free(b.mem);
}

/* Threads only pay on large arrays: below this many bytes of x, one. */
#define RS_PARALLEL_BYTES (4 << 20)
#define RS_MAX_TASKS 64

static int64_t total_rows(const rs_layout *L)
{
    int64_t n = 1;
    for (int i = 0; i < L->ndim; i++)
        n *= L->shape[i];
    return n;
}

static int run(const rs_layout *lay, const rs_options *opt, const char *x,
               char *out, const char *c, const char *s, const double *theta,
               double scale, rs_task_fn fn, int fused)
{
    rs_layout L = *lay;
    rs_task tasks[RS_MAX_TASKS];
    rs_batch batch;
    int64_t rows, item, bytes;
    int n, status = 0;

    if (L.ndim < 0 || L.ndim > RS_MAXDIM || L.n_pairs < 0 ||
        L.n_pairs > L.n_features / 2)
        return -2;
    for (int i = 0; i < L.ndim; i++)
        if (L.shape[i] < 0)
            return -2;
    if (fused)
        repeated_positions_last(&L);
    coalesce(&L);
    rows = total_rows(&L);
    if (rows == 0 || L.n_features == 0)
        return 0;
    item = opt->dtype == RS_F64 ? 8 : (opt->dtype == RS_F32 ? 4 : 2);
    /* rows * D * item cannot overflow: x exists in memory with this size. */
    bytes = rows * L.n_features * item;
    n = opt->n_threads < 1 ? 1 : opt->n_threads;
    if (n > RS_MAX_TASKS)
        n = RS_MAX_TASKS;
    if (bytes < RS_PARALLEL_BYTES || rows < n)
        n = 1;
    /* Rows along the innermost axis that share cos/sin (or the position) go
     * to the kernel together, unless that would leave too few to split. */
    batch.nb = 1;
    batch.bsx = batch.bso = 0;
    if (L.ndim >= 1 && L.sc[L.ndim - 1] == 0 && L.ss[L.ndim - 1] == 0 &&
        rows / L.shape[L.ndim - 1] >= n) {
        batch.nb = L.shape[L.ndim - 1];
        batch.bsx = L.sx[L.ndim - 1];
        batch.bso = L.so[L.ndim - 1];
        rows /= batch.nb;
        L.ndim--;
    }
    batch.R = L.n_pairs;
    batch.D = L.n_features;
    batch.fx = L.fx;
    batch.fo = L.fo;
    batch.interleaved = opt->interleaved;
    batch.in_place = opt->in_place;
    for (int i = 0; i < n; i++) {
        rs_task *t = &tasks[i];
        t->L = &L;
        t->opt = opt;
        t->x = x;
        t->out = out;
        t->cos = c;
        t->sin = s;
        t->theta = theta;
        t->scale = scale;
        rs_split_range(rows, n, i, &t->row0, &t->row1);
        t->rows32 = pick_f32();
        t->rows64 = pick_f64();
        t->batch = batch;
        t->status = 0;
    }
    rs_parallel(fn, tasks, sizeof(rs_task), n);
    for (int i = 0; i < n; i++)
        if (tasks[i].status != 0)
            status = tasks[i].status;
    return status;
}

int rs_rotate(const rs_layout *lay, const rs_options *opt, const char *x,
              char *out, const char *cos, const char *sin)
{
    return run(lay, opt, x, out, cos, sin, NULL, 1.0, table_task, 0);
}

int rs_rotate_positions(const rs_layout *lay, const rs_options *opt,
                        const char *x, char *out, const char *positions,
                        const double *theta, double scale)
{
    return run(lay, opt, x, out, positions, NULL, theta, scale, fused_task, 1);
}

/* ------------------------------------------------------------------ */
/* cos/sin tables                                                       */
/* ------------------------------------------------------------------ */

typedef struct {
    int64_t i0, i1;
    const char *positions;
    int64_t pos_stride;
    int pos_int;
    const double *theta;
    int64_t n_pairs;
    double scale;
    int out_dtype;
    char *cos, *sin;
    int status;
} rs_table_task;

static void cos_sin_task(void *arg)
{
    rs_table_task *t = (rs_table_task *)arg;
    const int64_t R = t->n_pairs;
    const int64_t item = t->out_dtype == RS_F64 ? 8 : (t->out_dtype == RS_F32 ? 4 : 2);
    double *cd = NULL, *sd = NULL;
    rs_angle_cache *cache;

    t->status = 0;
    if (t->i0 >= t->i1 || R == 0)
        return;
    cache = rs_angle_cache_new(t->theta, R, t->scale);
    if (t->out_dtype != RS_F64) {
        cd = (double *)malloc(sizeof(double) * 2 * (size_t)R);
        sd = cd ? cd + R : NULL;
    }
    if (cache == NULL || (t->out_dtype != RS_F64 && cd == NULL)) {
        rs_angle_cache_free(cache);
        free(cd);
        t->status = -1;
        return;
    }
    for (int64_t i = t->i0; i < t->i1; i++) {
        double pos = read_position(t->positions + i * t->pos_stride, t->pos_int);
        char *co = t->cos + i * R * item, *so = t->sin + i * R * item;
        if (t->out_dtype == RS_F64) {
            rs_angle_row(cache, pos, (double *)(void *)co, (double *)(void *)so);
            continue;
        }
        rs_angle_row(cache, pos, cd, sd);
        if (t->out_dtype == RS_F32) {
            float *restrict cf = (float *)(void *)co;
            float *restrict sf = (float *)(void *)so;
            for (int64_t k = 0; k < R; k++) {
                cf[k] = (float)cd[k];
                sf[k] = (float)sd[k];
            }
        } else {
            uint16_t *ch = (uint16_t *)(void *)co, *sh = (uint16_t *)(void *)so;
            /* straight from float64: no double rounding through float32 */
            for (int64_t k = 0; k < R; k++) {
                ch[k] = rs_double_to_half(cd[k]);
                sh[k] = rs_double_to_half(sd[k]);
            }
        }
    }
    rs_angle_cache_free(cache);
    free(cd);
}

int rs_cos_sin(int64_t n, const char *positions, int64_t pos_stride, int pos_int,
               const double *theta, int64_t n_pairs, double scale,
               int out_dtype, char *cos, char *sin, int n_threads)
{
    rs_table_task tasks[RS_MAX_TASKS];
    int nt = n_threads < 1 ? 1 : (n_threads > RS_MAX_TASKS ? RS_MAX_TASKS : n_threads);
    int status = 0;
    if (n < 0 || n_pairs < 0)
        return -2;
    /* The work is the angle rows, not memory: split when there are many. */
    if (n * n_pairs < (1 << 16) || n < nt)
        nt = 1;
    for (int i = 0; i < nt; i++) {
        rs_table_task *t = &tasks[i];
        rs_split_range(n, nt, i, &t->i0, &t->i1);
        t->positions = positions;
        t->pos_stride = pos_stride;
        t->pos_int = pos_int;
        t->theta = theta;
        t->n_pairs = n_pairs;
        t->scale = scale;
        t->out_dtype = out_dtype;
        t->cos = cos;
        t->sin = sin;
        t->status = 0;
    }
    rs_parallel(cos_sin_task, tasks, sizeof(rs_table_task), nt);
    for (int i = 0; i < nt; i++)
        if (tasks[i].status != 0)
            status = tasks[i].status;
    return status;
}
