/*
 * Frequencies theta and scaled theta' for every method, in float64.
 * Formulas: docs/math.md; the key names and defaults follow HF transformers'
 * modeling_rope_utils (facts only; the code is ours).
 *
 * One function per method, listed in methods.def.  Each checks the
 * parameters it reads (the Python layer validated them already; this is the
 * second guard) and returns NULL or a sentence saying what is wrong.
 */
#include "ropescale.h"

#include <math.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

typedef const char *(*rs_freq_fn)(int64_t dim, double base, const rs_scaling *sc,
                                  double *out, double *attn);

void rs_inv_freq(int64_t dim, double base, double *out)
{
    int64_t half = dim / 2;
    for (int64_t k = 0; k < half; k++) {
        /* 2k/dim is exact-ish (one rounding); pow is faithfully rounded. */
        out[k] = pow(base, -(double)(2 * k) / (double)dim);
    }
}

double rs_ntk_lambda(int64_t dim, double factor)
{
    /* Period matching for the lowest-frequency pair k = d/2 - 1:
     *   2 pi (lambda b)^((d-2)/d) = s 2 pi b^((d-2)/d)
     *   => lambda = s^(d/(d-2)).                                    */
    return pow(factor, (double)dim / (double)(dim - 2));
}

double rs_yarn_mscale(double scale, double mu)
{
    if (scale <= 1.0)
        return 1.0;
    return 0.1 * mu * log(scale) + 1.0;
}

/* Pair index (as a real number) at which a pair makes `rotations` full
 * turns within the trained context m_l: c(r) = d ln(m_l/(2 pi r)) / (2 ln b). */
static double yarn_correction_dim(double rotations, int64_t dim, double base,
                                  double original_max)
{
    return (double)dim * log(original_max / (rotations * 2.0 * M_PI)) /
           (2.0 * log(base));
}

void rs_yarn_range(int64_t dim, double base, double original_max,
                   double beta_fast, double beta_slow, int truncate,
                   double *lo, double *hi)
{
    double l = yarn_correction_dim(beta_fast, dim, base, original_max);
    double h = yarn_correction_dim(beta_slow, dim, base, original_max);
    if (truncate) {
        l = floor(l);
        h = ceil(h);
    }
    if (l < 0.0)
        l = 0.0;
    if (h > (double)(dim - 1))
        h = (double)(dim - 1);
    *lo = l;
    *hi = h;
}

/* ------------------------------------------------------------------ */
/* Parameter checks shared by the methods                              */
/* ------------------------------------------------------------------ */

static int has(double v) { return !isnan(v); }

static int finite_at_least(double v, double lo) { return isfinite(v) && v >= lo; }

static const char *need_factor(const rs_scaling *sc)
{
    return finite_at_least(sc->factor, 1.0) ? NULL : "factor must be finite and >= 1";
}

static const char *need_original(const rs_scaling *sc)
{
    return finite_at_least(sc->original_max, 1.0)
               ? NULL
               : "original_max must be finite and >= 1";
}

/* A base scaled by `mult` that stays a usable base. */
static const char *scaled_base(double base, double mult, double *out)
{
    double b = base * mult;
    if (!(isfinite(b) && b > 1.0))
        return "the scaled base overflows float64";
    *out = b;
    return NULL;
}

static void scale_all(double *theta, int64_t n, double factor)
{
    for (int64_t k = 0; k < n; k++)
        theta[k] /= factor;
}

/* ------------------------------------------------------------------ */
/* One function per line of methods.def                                */
/* ------------------------------------------------------------------ */

static const char *rs_freq_default(int64_t dim, double base, const rs_scaling *sc,
                                   double *out, double *attn)
{
    (void)sc;
    (void)attn;
    rs_inv_freq(dim, base, out);
    return NULL;
}

static const char *rs_freq_linear(int64_t dim, double base, const rs_scaling *sc,
                                  double *out, double *attn)
{
    const char *why = need_factor(sc);
    (void)attn;
    if (why)
        return why;
    rs_inv_freq(dim, base, out);
    scale_all(out, dim / 2, sc->factor);
    return NULL;
}

static const char *rs_freq_ntk(int64_t dim, double base, const rs_scaling *sc,
                               double *out, double *attn)
{
    double b;
    const char *why = need_factor(sc);
    (void)attn;
    if (why)
        return why;
    if (dim < 4)
        return "dim must be >= 4 (the exponent d/(d-2))";
    if ((why = scaled_base(base, rs_ntk_lambda(dim, sc->factor), &b)) != NULL)
        return why;
    rs_inv_freq(dim, b, out);
    return NULL;
}

static const char *rs_freq_dynamic(int64_t dim, double base, const rs_scaling *sc,
                                   double *out, double *attn)
{
    const char *why;
    double ml = sc->original_max, b = base;
    (void)attn;
    if ((why = need_factor(sc)) != NULL || (why = need_original(sc)) != NULL)
        return why;
    if (dim < 4)
        return "dim must be >= 4 (the exponent d/(d-2))";
    if (has(sc->seq_len) && !finite_at_least(sc->seq_len, 0.0))
        return "seq_len must be finite and >= 0";
    /* base (s L/m_l - (s-1))^(d/(d-2)) for L > m_l, in HF's order of
     * operations; L <= m_l is the original rope (the bracket is exactly 1,
     * even where rounding would not give 1 for a huge s). */
    if (has(sc->seq_len) && sc->seq_len > ml) {
        double bracket = sc->factor * sc->seq_len / ml - (sc->factor - 1.0);
        if (!(bracket >= 1.0 && isfinite(bracket)))
            return "factor is too large: s L/m_l - (s-1) is not representable";
        if ((why = scaled_base(base, pow(bracket, (double)dim / (double)(dim - 2)),
                               &b)) != NULL)
            return why;
    }
    rs_inv_freq(dim, b, out);
    return NULL;
}

static const char *rs_freq_yarn(int64_t dim, double base, const rs_scaling *sc,
                                double *out, double *attn)
{
    int64_t half = dim / 2;
    double lo, hi;
    const char *why;
    if ((why = need_factor(sc)) != NULL || (why = need_original(sc)) != NULL)
        return why;
    if (!(isfinite(sc->beta_fast) && isfinite(sc->beta_slow) && sc->beta_slow > 0.0 &&
          sc->beta_fast >= sc->beta_slow))
        return "beta_fast and beta_slow must be finite with beta_fast >= beta_slow > 0";
    if ((has(sc->mscale) && !finite_at_least(sc->mscale, 0.0)) ||
        (has(sc->mscale_all_dim) && !finite_at_least(sc->mscale_all_dim, 0.0)))
        return "mscale and mscale_all_dim must be finite and >= 0";
    rs_inv_freq(dim, base, out);
    rs_yarn_range(dim, base, sc->original_max, sc->beta_fast, sc->beta_slow,
                  sc->truncate, &lo, &hi);
    if (lo == hi)
        hi += 0.001; /* avoid a zero-width ramp, as the peers do */
    for (int64_t k = 0; k < half; k++) {
        double ramp = ((double)k - lo) / (hi - lo);
        ramp = ramp < 0.0 ? 0.0 : (ramp > 1.0 ? 1.0 : ramp);
        double theta = out[k];
        out[k] = theta / sc->factor * ramp + theta * (1.0 - ramp);
    }
    if (has(sc->mscale) && has(sc->mscale_all_dim) && sc->mscale != 0.0 &&
        sc->mscale_all_dim != 0.0)
        *attn = rs_yarn_mscale(sc->factor, sc->mscale) /
                rs_yarn_mscale(sc->factor, sc->mscale_all_dim);
    else
        *attn = rs_yarn_mscale(sc->factor, 1.0);
    return NULL;
}

static const char *rs_freq_llama3(int64_t dim, double base, const rs_scaling *sc,
                                  double *out, double *attn)
{
    int64_t half = dim / 2;
    double ml = sc->original_max, lff = sc->low_freq_factor, hff = sc->high_freq_factor;
    const char *why;
    (void)attn;
    if ((why = need_factor(sc)) != NULL || (why = need_original(sc)) != NULL)
        return why;
    /* HF only warns when high <= low and computes anyway (Llama 4 ships
     * low == high: the blended band is then empty), so the bands are tested in
     * HF's order and only a pair exactly on the edge of an empty band, where
     * HF's blend is 0/0, is refused. */
    if (!(isfinite(lff) && isfinite(hff) && lff > 0.0 && hff > 0.0))
        return "low_freq_factor and high_freq_factor must be finite and > 0";
    rs_inv_freq(dim, base, out);
    for (int64_t k = 0; k < half; k++) {
        double theta = out[k];
        double wavelen = 2.0 * M_PI / theta;
        if (wavelen > ml / lff) {        /* longer than the trained context: interpolate */
            out[k] = theta / sc->factor;
        } else if (wavelen < ml / hff) { /* short: keep */
            out[k] = theta;
        } else if (!(lff < hff)) {
            return "a pair's wavelength lies exactly on original_max / low_freq_factor "
                   "with low_freq_factor == high_freq_factor (the blend is 0/0)";
        } else {
            double u = (ml / wavelen - lff) / (hff - lff);
            out[k] = (1.0 - u) * theta / sc->factor + u * theta;
        }
    }
    return NULL;
}

/* Phi-3.5-MoE's short_mscale / long_mscale: the cos/sin factor of the
 * branch in use when the config gives it (it then wins over attention_factor,
 * as in transformers' PhimoeRotaryEmbedding); NaN when absent. */
static double longrope_mscale(const rs_scaling *sc)
{
    int long_branch = has(sc->seq_len) && sc->seq_len > sc->original_max;
    return long_branch ? sc->long_mscale : sc->short_mscale;
}

static const char *rs_freq_longrope(int64_t dim, double base, const rs_scaling *sc,
                                    double *out, double *attn)
{
    int64_t half = dim / 2;
    const double *f;
    const char *why;
    if ((why = need_original(sc)) != NULL)
        return why;
    if (has(sc->factor) && !(isfinite(sc->factor) && sc->factor > 0.0))
        return "factor must be finite and > 0";
    if (has(sc->seq_len) && !finite_at_least(sc->seq_len, 0.0))
        return "seq_len must be finite and >= 0";
    if (sc->short_factor == NULL || sc->long_factor == NULL)
        return "short_factor and long_factor are required";
    f = (has(sc->seq_len) && sc->seq_len > sc->original_max) ? sc->long_factor
                                                               : sc->short_factor;
    rs_inv_freq(dim, base, out);
    for (int64_t k = 0; k < half; k++) {
        if (!(isfinite(f[k]) && f[k] > 0.0))
            return "short_factor and long_factor entries must be finite and > 0";
        out[k] /= f[k];
    }
    if (has(sc->factor) && sc->factor > 1.0) {
        if (!(sc->original_max > 1.0))
            return "original_max must be > 1 for the attention factor "
                   "sqrt(1 + ln(factor) / ln(original_max))";
        *attn = sqrt(1.0 + log(sc->factor) / log(sc->original_max));
    }
    if ((has(sc->short_mscale) && !(isfinite(sc->short_mscale) && sc->short_mscale > 0.0)) ||
        (has(sc->long_mscale) && !(isfinite(sc->long_mscale) && sc->long_mscale > 0.0)))
        return "short_mscale and long_mscale must be finite and > 0";
    if (has(longrope_mscale(sc)))
        *attn = longrope_mscale(sc);
    return NULL;
}

static const char *rs_freq_proportional(int64_t dim, double base, const rs_scaling *sc,
                                        double *out, double *attn)
{
    int64_t half = dim / 2;
    (void)attn;
    if (sc->rotated_pairs < 0 || sc->rotated_pairs > half)
        return "rotated_pairs must be in [0, dim/2]";
    if (has(sc->factor) && !finite_at_least(sc->factor, 1.0))
        return "factor must be finite and >= 1";
    /* Exponent over the full head dim; pairs past rotated_pairs stay still. */
    rs_inv_freq(dim, base, out);
    for (int64_t k = sc->rotated_pairs; k < half; k++)
        out[k] = 0.0;
    if (has(sc->factor))
        scale_all(out, sc->rotated_pairs, sc->factor);
    return NULL;
}

/* Hunyuan's "dynamic" with a fixed alpha (transformers' ntk_alpha): the NTK
 * base change with alpha in place of s, independent of the sequence length. */
static const char *rs_freq_ntk_alpha(int64_t dim, double base, const rs_scaling *sc,
                                     double *out, double *attn)
{
    double b;
    const char *why;
    (void)attn;
    if (!(isfinite(sc->alpha) && sc->alpha > 0.0))
        return "alpha must be finite and > 0";
    if (dim < 4)
        return "dim must be >= 4 (the exponent d/(d-2))";
    if ((why = scaled_base(base, pow(sc->alpha, (double)dim / (double)(dim - 2)), &b)) != NULL)
        return why;
    rs_inv_freq(dim, b, out);
    return NULL;
}

/* vLLM's mixed NTK (Su, kexue.fm/archives/9706): theta_k / exp(a (k+1)^b)
 * with a = ln(s) / (d/2)^b, so the lowest pair is divided by exactly s. */
static const char *rs_freq_ntk_mixed(int64_t dim, double base, const rs_scaling *sc,
                                     double *out, double *attn)
{
    int64_t half = dim / 2;
    const char *why = need_factor(sc);
    (void)attn;
    if (why)
        return why;
    if (!(isfinite(sc->mixed_b) && sc->mixed_b > 0.0))
        return "mixed_b must be finite and > 0";
    double a = log(sc->factor) / pow((double)half, sc->mixed_b);
    rs_inv_freq(dim, base, out);
    for (int64_t k = 0; k < half; k++)
        out[k] /= exp(a * pow((double)(k + 1), sc->mixed_b));
    return NULL;
}

/* NTK-by-parts (bloc97; YaRN paper, eq. for h(theta)): the blend weight is
 * linear in r = m_l / wavelength, the number of turns within the trained
 * context, between beta_slow (interpolate) and beta_fast (keep); no
 * attention factor. */
static const char *ntk_by_parts(int64_t dim, double base, double factor, const rs_scaling *sc,
                                double *out)
{
    int64_t half = dim / 2;
    double lo = sc->beta_slow, hi = sc->beta_fast;
    if (!(isfinite(lo) && isfinite(hi) && lo > 0.0 && hi > lo))
        return "beta_fast and beta_slow must be finite with beta_fast > beta_slow > 0";
    rs_inv_freq(dim, base, out);
    for (int64_t k = 0; k < half; k++) {
        double theta = out[k];
        double r = sc->original_max * theta / (2.0 * M_PI);
        double g = (r - lo) / (hi - lo);
        g = g < 0.0 ? 0.0 : (g > 1.0 ? 1.0 : g);
        out[k] = (1.0 - g) * theta / factor + g * theta;
    }
    return NULL;
}

static const char *rs_freq_ntk_by_parts(int64_t dim, double base, const rs_scaling *sc,
                                        double *out, double *attn)
{
    const char *why;
    (void)attn;
    if ((why = need_factor(sc)) != NULL || (why = need_original(sc)) != NULL)
        return why;
    return ntk_by_parts(dim, base, sc->factor, sc, out);
}

/* Dynamic YaRN (YaRN paper, sec. 3.3; jquesnelle/yarn's dynamic class): YaRN
 * with s = max(1, L / m_l) at the current length L, HF's ramp over pair
 * indices and mscale 0.1 ln s + 1; the original rope up to m_l. */
static const char *rs_freq_dynamic_yarn(int64_t dim, double base, const rs_scaling *sc,
                                        double *out, double *attn)
{
    rs_scaling y = *sc;
    const char *why;
    if ((why = need_original(sc)) != NULL)
        return why;
    if (has(sc->seq_len) && !finite_at_least(sc->seq_len, 0.0))
        return "seq_len must be finite and >= 0";
    if (!(has(sc->seq_len) && sc->seq_len > sc->original_max)) {
        rs_inv_freq(dim, base, out); /* exactly the original rope, attention factor 1 */
        return NULL;
    }
    y.factor = sc->seq_len / sc->original_max;
    y.mscale = NAN;
    y.mscale_all_dim = NAN;
    return rs_freq_yarn(dim, base, &y, out, attn);
}

/* 2-D axial RoPE of vision towers (transformers' "axial", Qwen2-VL's vision
 * rotary): the first half of the pairs follow the row position, the second
 * half the column; each half has the frequencies of a rope of dim d/2. */
static const char *rs_freq_axial(int64_t dim, double base, const rs_scaling *sc,
                                 double *out, double *attn)
{
    int64_t quarter = dim / 4;
    (void)sc;
    (void)attn;
    if (dim % 4 != 0)
        return "dim must be a multiple of 4 (two axes of d/4 pairs)";
    rs_inv_freq(dim / 2, base, out);
    for (int64_t k = 0; k < quarter; k++)
        out[quarter + k] = out[k];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */
/* ------------------------------------------------------------------ */

static const struct {
    const char *name;
    rs_freq_fn fn;
} method_table[] = {
#define RS_METHOD(id, name, fn) {name, fn},
#include "methods.def"
#undef RS_METHOD
};

const char *rs_method_name(int method)
{
    if (method < 0 || method >= RS_N_METHODS)
        return NULL;
    return method_table[method].name;
}

void rs_scaling_init(rs_scaling *sc, int method)
{
    sc->method = method;
#define RS_ABSENT(field) sc->field = NAN;
    RS_SCALING_REALS(RS_ABSENT)
#undef RS_ABSENT
    sc->truncate = 1;
    sc->rotated_pairs = 0;
    sc->short_factor = NULL;
    sc->long_factor = NULL;
}

const char *rs_scaled_inv_freq_why(int64_t dim, double base, const rs_scaling *sc,
                                   double *out, double *attention_factor)
{
    double attn = 1.0;
    const char *why;
    if (dim < 2 || dim % 2 != 0)
        return "dim must be a positive even integer";
    if (!(base > 1.0) || !isfinite(base))
        return "base must be finite and > 1";
    if (sc->method < 0 || sc->method >= RS_N_METHODS)
        return "unknown method code";
    if (has(sc->attention_factor) &&
        !(isfinite(sc->attention_factor) && sc->attention_factor > 0.0))
        return "attention_factor must be finite and > 0";
    why = method_table[sc->method].fn(dim, base, sc, out, &attn);
    if (why != NULL)
        return why;
    /* A given attention factor wins over every method's own, as in HF; only
     * LongRoPE's short/long mscale (PhiMoE) wins over it in turn. */
    if (has(sc->attention_factor) && !(sc->method == RS_LONGROPE && has(longrope_mscale(sc))))
        attn = sc->attention_factor;
    if (!(isfinite(attn) && attn > 0.0))
        return "the attention factor is not finite";
    for (int64_t k = 0; k < dim / 2; k++)
        if (!isfinite(out[k]))
            return "a scaled frequency overflows float64";
    *attention_factor = attn;
    return NULL;
}

int rs_scaled_inv_freq(int64_t dim, double base, const rs_scaling *sc,
                       double *out, double *attention_factor)
{
    return rs_scaled_inv_freq_why(dim, base, sc, out, attention_factor) == NULL ? 0 : -1;
}
