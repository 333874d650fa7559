/*
 * Does the in-place rotation loop gain from a software prefetch of the rows ahead?
 *
 *   cc -O3 -std=c11 bench/rotate_prefetch_probe.c -o /tmp/probe && /tmp/probe 0 && /tmp/probe 8
 *
 * A stand-alone copy of the contiguous half-split float32 rotation of
 * csrc/rotary.c (same loop, AVX2, no FMA) over a (32768 * 8, 128) cache, in
 * place, timed against x *= 1 over the same bytes (the floor of
 * bench/bench_rerotate.py).  The argument is how many 512-byte rows ahead to
 * prefetch (0: none).  Prints the minimum of 15 rounds of each and the ratio.
 * Context for the row kernels, not product code.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AVX2 __attribute__((target("avx2")))
#else
#define AVX2
#endif

AVX2 static void rotate_row(int64_t R, float *x, const float *restrict c, const float *restrict s)
{
    float *restrict xa = x;
    float *restrict xb = x + R;
    for (int64_t k = 0; k < R; k++) {
        float a = xa[k], b = xb[k];
        xa[k] = a * c[k] - b * s[k];
        xb[k] = b * c[k] + a * s[k];
    }
}

AVX2 static void scale(int64_t n, float *restrict x, float one)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * one;
}

static volatile float ONE = 1.0f; /* keeps the floor's multiply from being folded away */

int main(int argc, char **argv)
{
    const int64_t rows = 32768 * 8, D = 128, R = 64, n = rows * D;
    int64_t ahead = argc > 1 ? atoi(argv[1]) : 0;
    float c[64], s[64], one = ONE;
    double best_floor = 1e9, best_rot = 1e9;
    float *x = (float *)malloc((size_t)n * sizeof(float));
    if (x == NULL)
        return 1;
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(i % 1000) * 1e-3f;
    for (int k = 0; k < 64; k++) {
        c[k] = 0.8f;
        s[k] = 0.6f;
    }
    for (int rep = 0; rep < 15; rep++) {
        double t0 = now(), t1, t2;
        scale(n, x, one);
        t1 = now();
        for (int64_t r = 0; r < rows; r++) {
#if defined(__GNUC__)
            if (ahead && r + ahead < rows) {
                const char *p = (const char *)(x + (r + ahead) * D);
                for (int l = 0; l < 512; l += 64)
                    __builtin_prefetch(p + l, 1, 3);
            }
#endif
            rotate_row(R, x + r * D, c, s);
        }
        t2 = now();
        best_floor = t1 - t0 < best_floor ? t1 - t0 : best_floor;
        best_rot = t2 - t1 < best_rot ? t2 - t1 : best_rot;
    }
    printf("prefetch %lld rows ahead: floor %.2f ms, rotation %.2f ms, ratio %.2f\n", (long long)ahead,
           1e3 * best_floor, 1e3 * best_rot, best_rot / best_floor);
    free(x);
    return 0;
}
