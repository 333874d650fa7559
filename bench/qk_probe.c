/*
 * Where a decode step's q+k rotation spends its time, without Python:
 * rs_rotate_qk against two rs_rotate_positions calls, the cached form with
 * a ready table (no angle work), the angle work alone (rs_cos_sin of the
 * step's positions) and memcpy of q and k into their outputs (the floor),
 * on the calling thread and split over the pool's threads as a call is.
 *
 *   cc -O3 -std=c99 -ffp-contract=off -fno-trapping-math -Icsrc bench/qk_probe.c csrc/[a-z]*.c -lm -pthread \
 *      -o /tmp/qk_probe
 *   /tmp/qk_probe [k_heads=32] [threads=2] [simd cap: 0 all, 2 AVX2, 1 portable] [split: 0 measured, 1 all, 2 one]
 *
 * q (64, 1, 32, 128) float32, k (64, 1, k_heads, 128), positions (64, 1, 1)
 * int64 drawn from [100, 8000), out-of-place into preallocated outputs.
 * The contenders' calls are shuffled one by one; prints each one's median
 * in microseconds and its ratios to the floor and to two calls, as a
 * Markdown table (bench/report.py runs it).  Context for the kernels, not
 * product code.
 */
#define _POSIX_C_SOURCE 199309L
#include "ropescale.h"
#include "rs_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define B 64
#define H 32
#define D 128
#define R 64
#define STEPS 3000

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e6 * (double)t.tv_sec + 1e-3 * (double)t.tv_nsec;
}

static float *q, *k, *oq, *ok, *tc, *ts;
static int64_t pos[B];
static double theta[R];
static rs_layout Lq, Lk, Lc;
static rs_options opt;
static int kh;

/* x (B, 1, h, D) contiguous into out of the same shape, positions (B, 1, 1) */
static void layout(rs_layout *L, int h)
{
    memset(L, 0, sizeof(*L));
    L->ndim = 3;
    L->shape[0] = B;
    L->shape[1] = 1;
    L->shape[2] = h;
    for (int op = RS_OP_X; op <= RS_OP_OUT; op++) {
        L->stride[op][0] = (int64_t)h * D * 4;
        L->stride[op][1] = (int64_t)h * D * 4;
        L->stride[op][2] = D * 4;
        L->fstride[op] = 4;
    }
    L->stride[RS_OP_POS][0] = 8;
    L->stride[RS_OP_POS][1] = 8;
    L->n_features = D;
    L->n_pairs = R;
}

static void c_floor(void)
{
    memcpy(oq, q, (size_t)B * H * D * 4);
    memcpy(ok, k, (size_t)B * kh * D * 4);
}

static void c_qk(void)
{
    rs_rotate_qk(&Lq, &Lk, &opt, 0, (const char *)q, (char *)oq, (const char *)k, (char *)ok,
                 (const char *)pos, 0, 0, NULL, theta, 1.0);
}

static void c_two(void)
{
    rs_rotate_positions(&Lq, &opt, (const char *)q, (char *)oq, (const char *)pos, theta, 1.0);
    rs_rotate_positions(&Lk, &opt, (const char *)k, (char *)ok, (const char *)pos, theta, 1.0);
}

static void c_one(void)
{
    rs_rotate_positions(&Lq, &opt, (const char *)q, (char *)oq, (const char *)pos, theta, 1.0);
}

/* the floor on the pool's threads: q's and k's rows in as many pieces as the kernel's tasks,
 * each piece copying its tokens of q and of k (as a task rotates them) */
typedef struct {
    int64_t t0, t1;
} piece;

static void copy_piece(void *arg)
{
    const piece *p = (const piece *)arg;
    memcpy(oq + p->t0 * H * D, q + p->t0 * H * D, (size_t)(p->t1 - p->t0) * H * D * 4);
    memcpy(ok + p->t0 * kh * D, k + p->t0 * kh * D, (size_t)(p->t1 - p->t0) * kh * D * 4);
}

static void c_floor_threads(void)
{
    piece ps[RS_MAX_TASKS];
    int n = opt.n_threads * RS_TASKS_PER_THREAD;
    for (int i = 0; i < n; i++)
        rs_split_range(B, n, i, &ps[i].t0, &ps[i].t1);
    rs_parallel(copy_piece, ps, sizeof(piece), n, opt.n_threads, NULL, NULL);
}

/* the rotation of q and k with the step's table ready: no angle work */
static void c_cached(void)
{
    rs_layout L = Lc;
    rs_rotate(&L, &opt, (const char *)q, (char *)oq, (const char *)tc, (const char *)ts);
    L.shape[2] = kh;
    for (int op = RS_OP_X; op <= RS_OP_OUT; op++)
        L.stride[op][0] = L.stride[op][1] = (int64_t)kh * D * 4;
    rs_rotate(&L, &opt, (const char *)k, (char *)ok, (const char *)tc, (const char *)ts);
}

/* the angle work of the step alone */
static void c_angles(void)
{
    rs_cos_sin(B, (const char *)pos, 8, 1, theta, R, 1.0, RS_F32, (char *)tc, (char *)ts, opt.n_threads, NULL);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static void (*fns[])(void) = {c_floor, c_qk, c_two, c_one, c_cached, c_angles, c_floor_threads};
    static const char *names[] = {"memcpy of q and k (the floor)", "rs_rotate_qk (one pass)",
                                  "two rs_rotate_positions (q, then k)", "one rs_rotate_positions (q alone)",
                                  "rs_rotate of q and k with the step's table ready (no angle work)",
                                  "rs_cos_sin of the step's 64 positions (the angle work alone)",
                                  "memcpy of q and k split over the pool's threads"};
    enum { N = sizeof(fns) / sizeof(fns[0]) };
    static double t[N][STEPS];
    double med[N];
    kh = argc > 1 ? atoi(argv[1]) : 32;
    opt.n_threads = argc > 2 ? atoi(argv[2]) : 2;
    rs_test_simd_cap(argc > 3 ? atoi(argv[3]) : 0);
    rs_test_split(argc > 4 ? atoi(argv[4]) : 0);
    opt.dtype = RS_F32;
    opt.pos_int = 1;
    q = malloc((size_t)B * H * D * 4);
    oq = malloc((size_t)B * H * D * 4);
    k = malloc((size_t)B * kh * D * 4);
    ok = malloc((size_t)B * kh * D * 4);
    tc = malloc((size_t)B * R * 4);
    ts = malloc((size_t)B * R * 4);
    if (!q || !oq || !k || !ok || !tc || !ts)
        return 1;
    srand(1);
    for (int64_t i = 0; i < (int64_t)B * H * D; i++)
        q[i] = oq[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int64_t i = 0; i < (int64_t)B * kh * D; i++)
        k[i] = ok[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < B; i++)
        pos[i] = 100 + rand() % 7900;
    rs_inv_freq(D, 10000.0, theta);
    layout(&Lq, H);
    layout(&Lk, kh);
    layout(&Lc, H);
    Lc.stride[RS_OP_POS][0] = Lc.stride[RS_OP_POS][1] = 0;
    Lc.stride[RS_OP_COS][0] = Lc.stride[RS_OP_COS][1] = R * 4;
    Lc.stride[RS_OP_SIN][0] = Lc.stride[RS_OP_SIN][1] = R * 4;
    Lc.fstride[RS_OP_COS] = Lc.fstride[RS_OP_SIN] = 4;
    c_angles();
    for (int w = 0; w < 50; w++)
        for (int j = 0; j < N; j++)
            fns[j]();
    for (int s = 0; s < STEPS; s++) {
        int order[N];
        for (int j = 0; j < N; j++)
            order[j] = j;
        for (int j = N - 1; j > 0; j--) {
            int r = rand() % (j + 1), x = order[j];
            order[j] = order[r];
            order[r] = x;
        }
        for (int j = 0; j < N; j++) {
            double t0 = now_us();
            fns[order[j]]();
            t[order[j]][s] = now_us() - t0;
        }
    }
    for (int j = 0; j < N; j++) {
        qsort(t[j], STEPS, sizeof(double), cmp);
        med[j] = t[j][STEPS / 2];
    }
    printf("q (%d, 1, %d, %d) + k (%d, 1, %d, %d) float32, %d thread%s, split %s, SIMD cap %s, %d shuffled calls "
           "each:\n\n",
           B, H, D, B, kh, D, opt.n_threads, opt.n_threads == 1 ? "" : "s",
           argc > 4 && atoi(argv[4]) == 1 ? "forced to all" : argc > 4 && atoi(argv[4]) == 2 ? "forced to one"
                                                                                             : "measured",
           argc > 3 ? argv[3] : "0 (none)", STEPS);
    printf("| contender | median us | x memcpy floor | x two calls |\n|---|---:|---:|---:|\n");
    for (int j = 0; j < N; j++)
        printf("| %s | %.1f | %.2f | %.2f |\n", names[j], med[j], med[j] / med[0], med[j] / med[2]);
    return 0;
}
