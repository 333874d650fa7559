/*
 * cos/sin rows and tables from positions, beside angle.c which makes the
 * exact angles.  One function turns a position into a row of the target
 * type; the table builder (rs_cos_sin) and the fused rotation both call it,
 * so a cached table and the fused form give a position the same bits.
 */
#include "ropescale.h"
#include "rs_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

size_t rs_row_maker_doubles(int64_t n)
{
    return rs_angle_cache_doubles(n) + 2 * (size_t)(n > 0 ? n : 1);
}

void rs_row_maker_init(rs_row_maker *m, double *mem, const double *theta,
                       int64_t n, double scale)
{
    rs_angle_cache_init(&m->cache, mem, theta, n, scale);
    m->cd = mem + rs_angle_cache_doubles(n);
    m->sd = m->cd + (n > 0 ? n : 1);
}

/* float64 rows to float32, one rounding each, vectorized per instruction
 * set (a conversion is exact IEEE rounding whatever the width). */
#define RS_NARROW_BODY                                                         \
    for (int64_t k = 0; k < n; k++) {                                          \
        cf[k] = (float)cd[k];                                                  \
        sf[k] = (float)sd[k];                                                  \
    }
RS_MULTIVERSION(narrow_rows,
                (int64_t n, const double *restrict cd, const double *restrict sd,
                 float *restrict cf, float *restrict sf),
                (n, cd, sd, cf, sf), RS_NARROW_BODY)

/* float64 rows rounded once to dtype (not RS_F64). */
static void narrow_to(int dtype, int64_t n, const double *restrict cd, const double *restrict sd,
                      void *c, void *s)
{
    if (dtype == RS_F32) {
        narrow_rows(n, cd, sd, (float *)c, (float *)s);
    } else if (dtype == RS_BF16) {
        uint16_t *ch = (uint16_t *)c, *sh = (uint16_t *)s;
        for (int64_t k = 0; k < n; k++) {
            ch[k] = rs_double_to_bf16(cd[k]);
            sh[k] = rs_double_to_bf16(sd[k]);
        }
    } else {
        uint16_t *ch = (uint16_t *)c, *sh = (uint16_t *)s;
        /* straight from float64: no double rounding through float32 */
        for (int64_t k = 0; k < n; k++) {
            ch[k] = rs_double_to_half(cd[k]);
            sh[k] = rs_double_to_half(sd[k]);
        }
    }
}

void rs_make_row(rs_row_maker *m, double t, int dtype, void *c, void *s)
{
    if (dtype == RS_F64) {
        rs_angle_row(&m->cache, t, (double *)c, (double *)s);
        return;
    }
    rs_angle_row(&m->cache, t, m->cd, m->sd);
    narrow_to(dtype, m->cache.n, m->cd, m->sd, c, s);
}

size_t rs_streams_maker_doubles(int64_t n)
{
    return rs_angle_cache_doubles(n) + 2 * (size_t)(n > 0 ? n : 1);
}

void rs_streams_maker_init(rs_streams_maker *m, double *mem, const double *theta_sorted,
                           const int64_t *runs, int64_t n_streams, double scale)
{
    const int64_t n = runs[n_streams];
    rs_stream_angles_init(&m->angles, mem, theta_sorted, runs, n_streams, scale);
    m->cd = mem + rs_angle_cache_doubles(n);
    m->sd = m->cd + (n > 0 ? n : 1);
}

void rs_make_row_streams(rs_streams_maker *m, const double *t, int dtype, void *c, void *s)
{
    if (dtype == RS_F64) {
        rs_stream_angle_row(&m->angles, t, (double *)c, (double *)s);
        return;
    }
    rs_stream_angle_row(&m->angles, t, m->cd, m->sd);
    narrow_to(dtype, m->angles.a.n, m->cd, m->sd, c, s);
}

int rs_sort_pairs(const int64_t *pair_stream, int64_t n_pairs, int64_t n_streams, const double *theta,
                  int64_t *order, double *theta_sorted, int64_t *start)
{
    int identity = 1;
    for (int64_t j = 0; j <= n_streams; j++)
        start[j] = 0;
    for (int64_t k = 0; k < n_pairs; k++)
        start[pair_stream[k] + 1]++;
    for (int64_t j = 0; j < n_streams; j++)
        start[j + 1] += start[j];
    /* start[j] serves as stream j's cursor, which ends at start[j + 1];
     * shifted back by one place afterwards */
    for (int64_t k = 0; k < n_pairs; k++) {
        const int64_t q = start[pair_stream[k]]++;
        order[q] = k;
        theta_sorted[q] = theta[k];
        identity &= q == k;
    }
    for (int64_t j = n_streams; j > 0; j--)
        start[j] = start[j - 1];
    start[0] = 0;
    return identity;
}

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
    double *mem;                 /* rs_row_maker_doubles(block) */
    const rs_interrupt *interrupt;
    int *stop;
    int first;
} rs_table_task;

static void table_task(void *arg)
{
    rs_table_task *t = (rs_table_task *)arg;
    const int64_t R = t->n_pairs;
    const int64_t item = t->out_dtype == RS_F64 ? 8 : (t->out_dtype == RS_F32 ? 4 : 2);
    const int64_t block = R < RS_PAIR_BLOCK ? R : RS_PAIR_BLOCK;
    const int64_t chunk = 1 + RS_CHUNK_BYTES / (16 * block);
    rs_row_maker m;

    for (int64_t k0 = 0; k0 < R; k0 += block) {
        const int64_t n = R - k0 < block ? R - k0 : block;
        rs_row_maker_init(&m, t->mem, t->theta + k0, n, t->scale);
        for (int64_t i = t->i0; i < t->i1; i++) {
            int64_t at = (i * R + k0) * item;
            if ((i - t->i0) % chunk == 0 && rs_should_stop(t->interrupt, t->stop, t->first))
                return;
            rs_make_row(&m, rs_read_position(t->positions + i * t->pos_stride, t->pos_int),
                        t->out_dtype, t->cos + at, t->sin + at);
        }
    }
}

int rs_cos_sin(int64_t n, const char *positions, int64_t pos_stride, int pos_int,
               const double *theta, int64_t n_pairs, double scale,
               int out_dtype, char *cos, char *sin, int n_threads,
               const rs_interrupt *interrupt)
{
    rs_table_task tasks[RS_MAX_TASKS];
    int nt = n_threads < 1 ? 1 : (n_threads > RS_MAX_TASKS ? RS_MAX_TASKS : n_threads);
    int stop = 0;
    if (n < 0 || n_pairs < 0 || out_dtype < RS_F16 || out_dtype > RS_BF16)
        return RS_BAD_LAYOUT;
    if (n == 0 || n_pairs == 0)
        return RS_OK;
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
        t->interrupt = interrupt;
        t->stop = &stop;
        t->first = i == 0;
    }
    if (rs_run_tasks(table_task, tasks, sizeof(rs_table_task), nt, nt,
                     rs_row_maker_doubles(n_pairs < RS_PAIR_BLOCK ? n_pairs : RS_PAIR_BLOCK),
                     offsetof(rs_table_task, mem), interrupt, &stop) != 0)
        return RS_NO_MEMORY;
    return stop ? RS_INTERRUPTED : RS_OK;
}

/* ------------------------------------------------------------------ */
/* M-RoPE: several position streams, one per pair                      */
/* ------------------------------------------------------------------ */

/* Pairs sorted by stream (stable), so that each stream's pairs are one run
 * of frequencies for the row maker; rows are scattered back to the pairs'
 * own columns.  A pair's bits do not depend on the other frequencies of a
 * row, so equal streams give exactly rs_cos_sin's table. */
typedef struct {
    int64_t i0, i1;
    const char *positions;
    int64_t pos_stride, stream_stride;
    int pos_int;
    const double *theta_sorted;  /* theta[order[q]] */
    const int64_t *order;        /* q -> pair */
    const int64_t *start;        /* stream j's pairs are q in [start[j], start[j+1]) */
    int64_t n_streams, n_pairs;
    double scale;
    int out_dtype;
    char *cos, *sin;
    double *mem;                 /* row maker + two rows of RS_PAIR_BLOCK doubles */
    const rs_interrupt *interrupt;
    int *stop;
    int first;
} rs_stream_task;

static void stream_task(void *arg)
{
    rs_stream_task *t = (rs_stream_task *)arg;
    const int64_t R = t->n_pairs;
    const int64_t item = t->out_dtype == RS_F64 ? 8 : (t->out_dtype == RS_F32 ? 4 : 2);
    const int64_t chunk = 1 + RS_CHUNK_BYTES / (16 * RS_PAIR_BLOCK);
    char *rc = (char *)(t->mem + rs_row_maker_doubles(RS_PAIR_BLOCK));
    char *rs = rc + 8 * RS_PAIR_BLOCK;
    rs_row_maker m;

    for (int64_t j = 0; j < t->n_streams; j++) {
        for (int64_t q0 = t->start[j]; q0 < t->start[j + 1]; q0 += RS_PAIR_BLOCK) {
            const int64_t n = t->start[j + 1] - q0 < RS_PAIR_BLOCK ? t->start[j + 1] - q0 : RS_PAIR_BLOCK;
            rs_row_maker_init(&m, t->mem, t->theta_sorted + q0, n, t->scale);
            for (int64_t i = t->i0; i < t->i1; i++) {
                if ((i - t->i0) % chunk == 0 && rs_should_stop(t->interrupt, t->stop, t->first))
                    return;
                double pos = rs_read_position(t->positions + j * t->stream_stride + i * t->pos_stride,
                                              t->pos_int);
                rs_make_row(&m, pos, t->out_dtype, rc, rs);
                for (int64_t q = 0; q < n; q++) {
                    int64_t at = (i * R + t->order[q0 + q]) * item;
                    memcpy(t->cos + at, rc + q * item, (size_t)item);
                    memcpy(t->sin + at, rs + q * item, (size_t)item);
                }
            }
        }
    }
}

int rs_cos_sin_streams(int64_t n, const char *positions, int64_t pos_stride,
                       int64_t stream_stride, int pos_int, const double *theta,
                       const int64_t *pair_stream, int64_t n_streams, int64_t n_pairs,
                       double scale, int out_dtype, char *cos, char *sin, int n_threads,
                       const rs_interrupt *interrupt)
{
    rs_stream_task tasks[RS_MAX_TASKS];
    int nt = n_threads < 1 ? 1 : (n_threads > RS_MAX_TASKS ? RS_MAX_TASKS : n_threads);
    int stop = 0, rc = RS_OK;
    int64_t *order, *start;
    double *theta_sorted;
    if (n < 0 || n_pairs < 0 || n_streams < 1 || out_dtype < RS_F16 || out_dtype > RS_F64)
        return RS_BAD_LAYOUT;
    for (int64_t k = 0; k < n_pairs; k++)
        if (pair_stream[k] < 0 || pair_stream[k] >= n_streams)
            return RS_BAD_LAYOUT;
    if (n == 0 || n_pairs == 0)
        return RS_OK;
    order = (int64_t *)rs_alloc(sizeof(int64_t) * (size_t)(n_pairs + n_streams + 1));
    theta_sorted = (double *)rs_alloc(sizeof(double) * (size_t)n_pairs);
    if (order == NULL || theta_sorted == NULL) {
        free(order);
        free(theta_sorted);
        return RS_NO_MEMORY;
    }
    start = order + n_pairs;
    rs_sort_pairs(pair_stream, n_pairs, n_streams, theta, order, theta_sorted, start);
    if (n * n_pairs < (1 << 16) || n < nt)
        nt = 1;
    for (int i = 0; i < nt; i++) {
        rs_stream_task *t = &tasks[i];
        rs_split_range(n, nt, i, &t->i0, &t->i1);
        t->positions = positions;
        t->pos_stride = pos_stride;
        t->stream_stride = stream_stride;
        t->pos_int = pos_int;
        t->theta_sorted = theta_sorted;
        t->order = order;
        t->start = start;
        t->n_streams = n_streams;
        t->n_pairs = n_pairs;
        t->scale = scale;
        t->out_dtype = out_dtype;
        t->cos = cos;
        t->sin = sin;
        t->interrupt = interrupt;
        t->stop = &stop;
        t->first = i == 0;
    }
    if (rs_run_tasks(stream_task, tasks, sizeof(rs_stream_task), nt, nt,
                     rs_row_maker_doubles(RS_PAIR_BLOCK) + 2 * RS_PAIR_BLOCK,
                     offsetof(rs_stream_task, mem), interrupt, &stop) != 0)
        rc = RS_NO_MEMORY;
    else if (stop)
        rc = RS_INTERRUPTED;
    free(order);
    free(theta_sorted);
    return rc;
}
