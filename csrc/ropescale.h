/*
 * ropescale core: pure C99, no Python or NumPy headers.
 *
 * Frequencies are float64 throughout.  Rotation kernels take raw pointers,
 * byte strides and counts; the caller (the CPython glue) has already checked
 * shapes, dtypes and alignment.  No function here keeps global state, so all
 * of them may run without the GIL and from several threads at once.
 *
 * Every formula is stated in docs/math.md and cited beside its code.
 */
#ifndef ROPESCALE_H
#define ROPESCALE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Frequencies                                                         */
/* ------------------------------------------------------------------ */

/* One enumerator per line of methods.def: RS_DEFAULT, RS_LINEAR, ... */
enum rs_method {
#define RS_METHOD(id, name, fn) RS_##id,
#include "methods.def"
#undef RS_METHOD
    RS_N_METHODS
};

/* "default", "linear", ...: the name of a method code, or NULL. */
const char *rs_method_name(int method);

/* The real-valued parameters of a scaling, X(field): one list that declares
 * them in rs_scaling and lets the glue fill them by name.  NaN means absent;
 * a method refuses to run without the ones it needs (rs_scaled_inv_freq_why). */
#define RS_SCALING_REALS(X)                                                  \
    X(factor)            /* s */                                             \
    X(original_max)      /* m_l, the trained context */                      \
    X(seq_len)           /* current length (dynamic, longrope) */            \
    X(beta_fast)         /* yarn */                                          \
    X(beta_slow)         /* yarn */                                          \
    X(mscale)            /* yarn; NaN or 0: absent */                        \
    X(mscale_all_dim)    /* yarn; NaN or 0: absent */                        \
    X(attention_factor)  /* overrides every method's own */                  \
    X(low_freq_factor)   /* llama3 */                                        \
    X(high_freq_factor)  /* llama3 */                                        \
    X(short_mscale)      /* longrope: cos/sin factor up to the trained length */ \
    X(long_mscale)       /* longrope: ... beyond it */                       \
    X(alpha)             /* ntk_alpha (Hunyuan): base * alpha^(d/(d-2)) */    \
    X(mixed_b)           /* ntk_mixed (vLLM): exponent b of the pair ramp */

/* Parameters of one scaling method.  Set every field with rs_scaling_init
 * first, so that parameters not given read as absent. */
typedef struct {
    int method;               /* enum rs_method */
#define RS_DECLARE_REAL(field) double field;
    RS_SCALING_REALS(RS_DECLARE_REAL)
#undef RS_DECLARE_REAL
    int truncate;               /* yarn: round the correction range outwards */
    int64_t rotated_pairs;      /* proportional: pairs that rotate */
    const double *short_factor; /* longrope, dim/2 entries */
    const double *long_factor;  /* longrope, dim/2 entries */
} rs_scaling;

/* Every real parameter NaN (absent), truncate 1, no lists, no rotated pairs. */
void rs_scaling_init(rs_scaling *sc, int method);

/* theta_k = base^(-2k/dim), k = 0 .. dim/2-1. */
void rs_inv_freq(int64_t dim, double base, double *out);

/* lambda = factor^(dim/(dim-2)): the period-matching solution. */
double rs_ntk_lambda(int64_t dim, double factor);

/* mscale(s, mu) of YaRN: 1 if s <= 1 else 0.1 mu ln s + 1. */
double rs_yarn_mscale(double scale, double mu);

/* YaRN correction range [lo, hi] for dim, base, m_l. */
void rs_yarn_range(int64_t dim, double base, double original_max,
                   double beta_fast, double beta_slow, int truncate,
                   double *lo, double *hi);

/* Scaled frequencies for `dim` (the rotary dim; the head dim for
 * proportional): writes dim/2 finite values to out and the attention factor.
 * Returns NULL, or (out unspecified) a short static sentence saying which
 * parameter is missing or out of range for the method, or which result
 * would not be finite.  Callers validate first; this second guard trusts
 * nothing, so every field is checked before use. */
const char *rs_scaled_inv_freq_why(int64_t dim, double base, const rs_scaling *sc,
                                   double *out, double *attention_factor);

/* The same, as a status: 0, or -1 where rs_scaled_inv_freq_why has a reason. */
int rs_scaled_inv_freq(int64_t dim, double base, const rs_scaling *sc,
                       double *out, double *attention_factor);

/* ------------------------------------------------------------------ */
/* Angles: cos/sin of t * theta, formed and reduced in float64          */
/* ------------------------------------------------------------------ */

/* Largest |t * theta| for which the reduction modulo 2 pi is exact. */
#define RS_MAX_ANGLE 17179869184.0 /* 2^34 */

/* cos and sin of the exact product t * theta (t, theta doubles),
 * reduced modulo 2 pi in extended precision. */
void rs_sincos_exact(double t, double theta, double *c, double *s);

/* ------------------------------------------------------------------ */
/* Rotation                                                            */
/* ------------------------------------------------------------------ */

/* RS_BF16: bfloat16, held as uint16 bit patterns; computes in float32
 * (like RS_F16) and rounds once, to nearest even. */
enum rs_dtype { RS_F16 = 0, RS_F32 = 1, RS_F64 = 2, RS_BF16 = 3 };

#define RS_MAXDIM 64

/* The operands of a rotation; the fused form has positions instead of
 * cos and sin (their strides are then 0).  RS_OP_KX and RS_OP_KOUT are the
 * second input and output of a joint q/k rotation (rs_rotate_qk). */
enum rs_operand { RS_OP_X = 0, RS_OP_OUT, RS_OP_COS, RS_OP_SIN, RS_OP_POS, RS_OP_KX, RS_OP_KOUT,
                  RS_N_OPERANDS };

/* Leading ("row") axes shared by every operand, with one byte stride per
 * operand and axis (0 where the operand repeats along it); the last axis
 * (features) is described by n_features / n_pairs and the feature byte
 * strides of x, out, cos and sin. */
typedef struct {
    int ndim;
    int64_t shape[RS_MAXDIM];
    int64_t stride[RS_N_OPERANDS][RS_MAXDIM];
    int64_t n_features;                  /* D */
    int64_t n_pairs;                     /* R, 2R <= D */
    int64_t fstride[RS_N_OPERANDS];      /* feature axis (RS_OP_POS: unused) */
} rs_layout;

/* A long call asks `poll(ctx)` now and then (on the calling thread, between
 * chunks of rows); a nonzero answer stops every thread at its next chunk
 * and the call returns RS_INTERRUPTED, with an in-place output partly
 * rotated.  The glue uses it to let Ctrl-C through. */
typedef struct {
    int (*poll)(void *ctx);
    void *ctx;
} rs_interrupt;

typedef struct {
    int dtype;        /* enum rs_dtype of x and out */
    int interleaved;  /* pairs (2k, 2k+1) instead of (k, k+R) */
    int inverse;      /* rotate by -angle */
    int in_place;     /* out == x, same strides */
    int n_threads;    /* upper bound on worker threads (1: none) */
    int pos_int;      /* fused form: positions are int64, not float64 */
    const rs_interrupt *interrupt; /* NULL: never interrupted */
} rs_options;

/* Return codes of the kernels. */
#define RS_OK 0
#define RS_NO_MEMORY (-1)      /* nothing was written */
#define RS_BAD_LAYOUT (-2)     /* nothing was written */
#define RS_INTERRUPTED (-3)

/* Working memory: every buffer a call needs is allocated before any output
 * is written, and is bounded independently of R (pairs are handled in
 * blocks of at most RS_PAIR_BLOCK): at most about 80 KiB per thread, of
 * which the rows a call uses are touched. */
#define RS_PAIR_BLOCK 256

/* cos/sin are float32 for F16, BF16 and F32 x, float64 for F64 x. */
int rs_rotate(const rs_layout *lay, const rs_options *opt, const char *x,
              char *out, const char *cos, const char *sin);

/* Fused: positions (float64, or int64 with opt->pos_int; strides
 * lay->stride[RS_OP_POS], 0 where a position repeats) and theta[n_pairs];
 * cos/sin made per distinct position run and shared by the rows that
 * follow with the same position.  The cos/sin of a position are the bits
 * rs_cos_sin gives for it, whatever the other positions of the call. */
int rs_rotate_positions(const rs_layout *lay, const rs_options *opt,
                        const char *x, char *out, const char *positions,
                        const double *theta, double scale);

/* Fused M-RoPE: pair k takes its angle from position stream pair_stream[k]
 * (values 0..n_streams-1); stream j's positions are at positions + j *
 * stream_stride with the strides of lay->stride[RS_OP_POS].  The cos/sin of
 * a pair are the bits rs_cos_sin_streams gives it.  For n_pairs <=
 * RS_PAIR_BLOCK and n_streams <= RS_MAX_STREAMS (else RS_BAD_LAYOUT). */
#define RS_MAX_STREAMS 8
int rs_rotate_streams(const rs_layout *lay, const rs_options *opt, const char *x,
                      char *out, const char *positions, int64_t stream_stride,
                      int64_t n_streams, const int64_t *pair_stream,
                      const double *theta, double scale);

/* Fused q and k at the same positions in one pass: each position's cos/sin
 * are made once and rotate every row of q and of k at it (ggml does the
 * same per token across heads).  lq and lk describe q -> oq and k -> ok
 * (RS_OP_X, RS_OP_OUT and the positions' strides RS_OP_POS of each, both
 * broadcast from the same positions array); they must have the same number
 * of axes, features and pairs, and the same shape and position strides on
 * every axis but at most one (the heads: GQA/MQA), along which the
 * positions repeat.  opt->in_place says whether oq is q, k_in_place whether
 * ok is k.  The bits of each output are those rs_rotate_positions gives it
 * alone.  n_streams 0 (pair_stream NULL): plain positions; else fused
 * M-RoPE as rs_rotate_streams.  RS_BAD_LAYOUT (nothing written) for
 * layouts that do not pair up. */
int rs_rotate_qk(const rs_layout *lq, const rs_layout *lk, const rs_options *opt, int k_in_place,
                 const char *q, char *oq, const char *k, char *ok, const char *positions,
                 int64_t stream_stride, int64_t n_streams, const int64_t *pair_stream,
                 const double *theta, double scale);

/* Table: n positions (float64, or int64 if pos_int; byte stride pos_stride)
 * -> cos, sin contiguous (n, n_pairs) of dtype out_dtype (enum rs_dtype). */
int rs_cos_sin(int64_t n, const char *positions, int64_t pos_stride, int pos_int,
               const double *theta, int64_t n_pairs, double scale,
               int out_dtype, char *cos, char *sin, int n_threads,
               const rs_interrupt *interrupt);

/* M-RoPE table: positions hold n_streams streams (byte stride
 * stream_stride between streams, pos_stride between positions); pair k
 * takes its angle from stream pair_stream[k].  Each entry is the bits
 * rs_cos_sin gives for that pair at that stream's position. */
int rs_cos_sin_streams(int64_t n, const char *positions, int64_t pos_stride,
                       int64_t stream_stride, int pos_int, const double *theta,
                       const int64_t *pair_stream, int64_t n_streams, int64_t n_pairs,
                       double scale, int out_dtype, char *cos, char *sin, int n_threads,
                       const rs_interrupt *interrupt);

/* float16 <-> float32 conversion, correctly rounded (round to nearest even). */
float rs_half_to_float(uint16_t h);
uint16_t rs_float_to_half(float f);
uint16_t rs_double_to_half(double d);

/* bfloat16 <-> float32 (exact widening; round to nearest even, NaN kept
 * a NaN) and float64 -> bfloat16 with one correct rounding. */
float rs_bf16_to_float(uint16_t b);
uint16_t rs_float_to_bf16(float f);
uint16_t rs_double_to_bf16(double d);

/* Name of the instruction set the float16 conversions use ("f16c" or
 * "portable"), for the benchmark report. */
const char *rs_simd_name(void);

#ifdef __cplusplus
}
#endif
#endif
