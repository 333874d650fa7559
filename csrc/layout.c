/*
 * Row geometry of a rotation: the leading axes of x and the byte strides of
 * every operand along them (see rs_layout).  The kernels see rows only
 * through these functions: ordering, merging and walking the axes.
 */
#include "ropescale.h"
#include "rs_internal.h"

static void copy_axis(rs_layout *dst, int j, const rs_layout *src, int i)
{
    dst->shape[j] = src->shape[i];
    for (int o = 0; o < RS_N_OPERANDS; o++)
        dst->stride[o][j] = src->stride[o][i];
}

/* Fused form: rows sharing a position follow each other once the axes along
 * which the position repeats are innermost (the order is otherwise kept),
 * so its cos/sin are made once for all of them. */
void rs_layout_positions_last(rs_layout *L)
{
    rs_layout t = *L;
    int j = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < t.ndim; i++)
            if ((t.stride[RS_OP_POS][i] == 0) == pass)
                copy_axis(L, j++, &t, i);
}

/* Does every operand step through axis i (n entries) as one step of axis j? */
static int mergeable(const rs_layout *L, int j, int i)
{
    for (int o = 0; o < RS_N_OPERANDS; o++)
        if (L->stride[o][j] != L->stride[o][i] * L->shape[i])
            return 0;
    return 1;
}

/* Drop unit axes and merge neighbours that every operand steps through as
 * one, so that e.g. (B, S, H) contiguous rows become a single axis. */
void rs_layout_coalesce(rs_layout *L)
{
    int j = 0;
    for (int i = 0; i < L->ndim; i++)
        if (L->shape[i] != 1)
            copy_axis(L, j++, L, i);
    L->ndim = j;
    if (j <= 1)
        return;
    j = 0;
    for (int i = 1; i < L->ndim; i++) {
        if (mergeable(L, j, i)) {
            int64_t n = L->shape[j] * L->shape[i];
            copy_axis(L, j, L, i);
            L->shape[j] = n;
        } else {
            copy_axis(L, ++j, L, i);
        }
    }
    L->ndim = j + 1;
}

int64_t rs_layout_rows(const rs_layout *L)
{
    int64_t n = 1;
    for (int i = 0; i < L->ndim; i++)
        n *= L->shape[i];
    return n;
}

void rs_iter_seek(const rs_layout *L, rs_iter *it, int64_t row)
{
    for (int o = 0; o < RS_N_OPERANDS; o++)
        it->off[o] = 0;
    for (int d = L->ndim - 1; d >= 0; d--) {
        int64_t i = row % L->shape[d];
        row /= L->shape[d];
        it->idx[d] = i;
        for (int o = 0; o < RS_N_OPERANDS; o++)
            it->off[o] += i * L->stride[o][d];
    }
}

void rs_iter_next(const rs_layout *L, rs_iter *it)
{
    for (int d = L->ndim - 1; d >= 0; d--) {
        int wrap = ++it->idx[d] == L->shape[d];
        int64_t steps = wrap ? 1 - L->shape[d] : 1;
        for (int o = 0; o < RS_N_OPERANDS; o++)
            it->off[o] += steps * L->stride[o][d];
        if (!wrap)
            return;
        it->idx[d] = 0;
    }
}
