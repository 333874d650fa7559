/*
 * Frequencies theta and scaled theta' for every method, in float64.
 * Formulas: docs/math.md; the key names and defaults follow HF
 * transformers' modeling_rope_utils (facts only; the code is ours).
 */
#include "ropescale.h"

#include <math.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

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

static int has(double v) { return !isnan(v); }

static void scale_all(double *theta, int64_t n, double factor)
{
    for (int64_t k = 0; k < n; k++)
        theta[k] /= factor;
}

static void yarn(int64_t dim, double base, const rs_scaling *sc, double *out,
                 double *attn)
{
    int64_t half = dim / 2;
    double lo, hi;
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
    if (has(sc->attention_factor)) {
        *attn = sc->attention_factor;
    } else if (has(sc->mscale) && has(sc->mscale_all_dim) && sc->mscale != 0.0 &&
               sc->mscale_all_dim != 0.0) {
        *attn = rs_yarn_mscale(sc->factor, sc->mscale) /
                rs_yarn_mscale(sc->factor, sc->mscale_all_dim);
    } else {
        *attn = rs_yarn_mscale(sc->factor, 1.0);
    }
}

static void llama3(int64_t dim, const rs_scaling *sc, double *out)
{
    int64_t half = dim / 2;
    double ml = sc->original_max;
    double low_wavelen = ml / sc->low_freq_factor;   /* longer: interpolate */
    double high_wavelen = ml / sc->high_freq_factor; /* shorter: keep */
    for (int64_t k = 0; k < half; k++) {
        double theta = out[k];
        double wavelen = 2.0 * M_PI / theta;
        if (wavelen > low_wavelen) {
            out[k] = theta / sc->factor;
        } else if (wavelen < high_wavelen) {
            out[k] = theta;
        } else {
            double u = (ml / wavelen - sc->low_freq_factor) /
                       (sc->high_freq_factor - sc->low_freq_factor);
            out[k] = (1.0 - u) * theta / sc->factor + u * theta;
        }
    }
}

int rs_scaled_inv_freq(int64_t dim, double base, const rs_scaling *sc,
                       double *out, double *attention_factor)
{
    int64_t half = dim / 2;
    double attn = 1.0;

    if (dim < 2 || dim % 2 != 0 || !(base > 1.0) || !isfinite(base))
        return -1;
    if (sc->method != RS_DEFAULT && sc->method != RS_PROPORTIONAL &&
        sc->method != RS_LONGROPE && !(sc->factor >= 1.0 && isfinite(sc->factor)))
        return -1;

    switch (sc->method) {
    case RS_DEFAULT:
        rs_inv_freq(dim, base, out);
        break;
    case RS_LINEAR:
        rs_inv_freq(dim, base, out);
        scale_all(out, half, sc->factor);
        break;
    case RS_NTK:
        if (dim < 4)
            return -1;
        rs_inv_freq(dim, base * rs_ntk_lambda(dim, sc->factor), out);
        break;
    case RS_DYNAMIC: {
        /* base * (s L/m_l - (s-1))^(d/(d-2)) for L > m_l; L <= m_l is the
         * original rope (the bracket is then exactly 1). */
        double ml = sc->original_max;
        double len = (has(sc->seq_len) && sc->seq_len > ml) ? sc->seq_len : ml;
        double bracket = sc->factor * len / ml - (sc->factor - 1.0);
        if (dim < 4)
            return -1;
        rs_inv_freq(dim, base * pow(bracket, (double)dim / (double)(dim - 2)), out);
        break;
    }
    case RS_YARN:
        rs_inv_freq(dim, base, out);
        yarn(dim, base, sc, out, &attn);
        break;
    case RS_LLAMA3:
        if (!(sc->low_freq_factor < sc->high_freq_factor))
            return -1;
        rs_inv_freq(dim, base, out);
        llama3(dim, sc, out);
        break;
    case RS_LONGROPE: {
        int use_long = has(sc->seq_len) && sc->seq_len > sc->original_max;
        const double *f = use_long ? sc->long_factor : sc->short_factor;
        if (f == NULL)
            return -1;
        rs_inv_freq(dim, base, out);
        for (int64_t k = 0; k < half; k++)
            out[k] /= f[k];
        if (has(sc->attention_factor))
            attn = sc->attention_factor;
        else if (!(sc->factor > 1.0))
            attn = 1.0;
        else
            attn = sqrt(1.0 + log(sc->factor) / log(sc->original_max));
        break;
    }
    case RS_PROPORTIONAL: {
        if (sc->rotated_pairs < 0 || sc->rotated_pairs > half)
            return -1;
        /* Exponent over the full head dim; pairs past rotated_pairs stay still. */
        rs_inv_freq(dim, base, out);
        for (int64_t k = sc->rotated_pairs; k < half; k++)
            out[k] = 0.0;
        if (has(sc->factor) && sc->factor != 1.0)
            scale_all(out, sc->rotated_pairs < half ? sc->rotated_pairs : half,
                      sc->factor);
        break;
    }
    default:
        return -1;
    }
    if (sc->method != RS_YARN && sc->method != RS_LONGROPE &&
        has(sc->attention_factor))
        attn = sc->attention_factor;
    *attention_factor = attn;
    return 0;
}
