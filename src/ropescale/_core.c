/*
 * ropescale._core: the only file that knows CPython and NumPy.
 *
 * The Python layer (the modules in src/ropescale) validates arguments and prepares
 * arrays (dtype, byte order, alignment, broadcasting, overlap).  This glue
 * re-checks what the C core relies on, cheaply, and trusts nothing: a wrong
 * call raises, it never reaches a kernel.  Kernels run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#include <numpy/arrayobject.h>

#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32
#include <windows.h>
#endif

#include "ropescale.h"
#include "rs_internal.h" /* rs_test_fail_alloc */

/* ------------------------------------------------------------------ */
/* Frequencies                                                          */
/* ------------------------------------------------------------------ */

static int check_dim(long long dim)
{
    if (dim < 2 || dim % 2 != 0 || dim > ((long long)1 << 24)) {
        PyErr_Format(PyExc_ValueError,
                     "dim must be a positive even integer <= 2**24, got %lld", dim);
        return -1;
    }
    return 0;
}

static PyObject *py_inv_freq(PyObject *self, PyObject *args)
{
    long long dim;
    double base;
    PyArrayObject *out;
    npy_intp n;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ld:inv_freq", &dim, &base))
        return NULL;
    if (check_dim(dim) < 0)
        return NULL;
    if (!(base > 1.0) || !isfinite(base)) {
        PyErr_Format(PyExc_ValueError, "base must be finite and > 1, got %R",
                     PyTuple_GET_ITEM(args, 1));
        return NULL;
    }
    n = (npy_intp)(dim / 2);
    out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (out == NULL)
        return NULL;
    rs_inv_freq((int64_t)dim, base, (double *)PyArray_DATA(out));
    return (PyObject *)out;
}

static PyObject *py_ntk_lambda(PyObject *self, PyObject *args)
{
    long long dim;
    double factor;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ld:ntk_lambda", &dim, &factor))
        return NULL;
    if (check_dim(dim) < 0)
        return NULL;
    if (dim < 4) {
        PyErr_Format(PyExc_ValueError, "dim must be >= 4 for base scaling, got %lld", dim);
        return NULL;
    }
    if (!(isfinite(factor) && factor >= 1.0)) {
        PyErr_Format(PyExc_ValueError, "factor must be finite and >= 1, got %R",
                     PyTuple_GET_ITEM(args, 1));
        return NULL;
    }
    return PyFloat_FromDouble(rs_ntk_lambda((int64_t)dim, factor));
}

static PyObject *py_yarn_range(PyObject *self, PyObject *args)
{
    long long dim;
    double base, original_max, beta_fast, beta_slow, lo, hi;
    int truncate;
    (void)self;
    if (!PyArg_ParseTuple(args, "Lddddp:yarn_range", &dim, &base, &original_max,
                          &beta_fast, &beta_slow, &truncate))
        return NULL;
    if (check_dim(dim) < 0)
        return NULL;
    if (!(isfinite(base) && base > 1.0) || !(isfinite(original_max) && original_max >= 1.0) ||
        !(isfinite(beta_fast) && isfinite(beta_slow) && beta_slow > 0.0 && beta_fast >= beta_slow)) {
        PyErr_Format(PyExc_ValueError,
                     "yarn_range needs base > 1, original_max >= 1 and beta_fast >= beta_slow > 0, "
                     "all finite; got base=%R, original_max=%R, beta_fast=%R, beta_slow=%R",
                     PyTuple_GET_ITEM(args, 1), PyTuple_GET_ITEM(args, 2),
                     PyTuple_GET_ITEM(args, 3), PyTuple_GET_ITEM(args, 4));
        return NULL;
    }
    rs_yarn_range((int64_t)dim, base, original_max, beta_fast, beta_slow,
                  truncate, &lo, &hi);
    return Py_BuildValue("dd", lo, hi);
}

/* A float64 1-D contiguous array of exactly n finite entries, or NULL with an
 * error set. */
static const double *factor_list(PyObject *obj, npy_intp n, const char *name,
                                 PyArrayObject **keep)
{
    PyArrayObject *a;
    a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_FLOAT64, 1, 1,
                                         NPY_ARRAY_IN_ARRAY);
    if (a == NULL)
        return NULL;
    if (PyArray_DIM(a, 0) != n) {
        PyErr_Format(PyExc_ValueError, "%s must have %zd entries, got %zd", name,
                     (Py_ssize_t)n, (Py_ssize_t)PyArray_DIM(a, 0));
        Py_DECREF(a);
        return NULL;
    }
    *keep = a;
    return (const double *)PyArray_DATA(a);
}

/* The keyword parameters of scaled_inv_freq cross into one rs_scaling: the
 * real ones by the field list RS_SCALING_REALS, the others by name below. */
static const struct {
    const char *name;
    size_t offset;
} real_fields[] = {
#define RS_REAL_FIELD(field) {#field, offsetof(rs_scaling, field)},
    RS_SCALING_REALS(RS_REAL_FIELD)
#undef RS_REAL_FIELD
};

#define N_REAL_FIELDS (sizeof(real_fields) / sizeof(real_fields[0]))

/* Store one keyword parameter into sc; `keep` holds the two factor arrays. */
static int scaling_field(rs_scaling *sc, PyObject *key, PyObject *value, npy_intp n,
                         PyArrayObject *keep[2])
{
    const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "scaled_inv_freq() keywords must be strings");
        return -1;
    }
    for (size_t i = 0; i < N_REAL_FIELDS; i++) {
        if (strcmp(name, real_fields[i].name) == 0) {
            double v;
            if (PyBool_Check(value) || !PyNumber_Check(value)) {
                PyErr_Format(PyExc_TypeError, "%s must be a real number, got %R", name, value);
                return -1;
            }
            v = PyFloat_AsDouble(value);
            if (v == -1.0 && PyErr_Occurred())
                return -1;
            *(double *)((char *)sc + real_fields[i].offset) = v;
            return 0;
        }
    }
    if (strcmp(name, "truncate") == 0) {
        if (!PyBool_Check(value)) {
            PyErr_Format(PyExc_TypeError, "truncate must be True or False, got %R", value);
            return -1;
        }
        sc->truncate = value == Py_True;
        return 0;
    }
    if (strcmp(name, "rotated_pairs") == 0) {
        long long r;
        if (PyBool_Check(value) || !PyLong_Check(value)) {
            PyErr_Format(PyExc_TypeError, "rotated_pairs must be an int, got %R", value);
            return -1;
        }
        r = PyLong_AsLongLong(value);
        if (r == -1 && PyErr_Occurred())
            return -1;
        if (r < 0 || r > (long long)n) {
            PyErr_Format(PyExc_ValueError, "rotated_pairs must be in [0, dim/2 = %zd], got %lld",
                         (Py_ssize_t)n, r);
            return -1;
        }
        sc->rotated_pairs = (int64_t)r;
        return 0;
    }
    if (strcmp(name, "short_factor") == 0 || strcmp(name, "long_factor") == 0) {
        int is_long = name[0] == 'l';
        const double *f;
        Py_CLEAR(keep[is_long]);
        f = factor_list(value, n, name, &keep[is_long]);
        if (f == NULL)
            return -1;
        if (is_long)
            sc->long_factor = f;
        else
            sc->short_factor = f;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "scaled_inv_freq() got an unexpected keyword argument '%s'",
                 name);
    return -1;
}

static PyObject *py_scaled_inv_freq(PyObject *self, PyObject *args, PyObject *kw)
{
    long long dim;
    double base, attn = 1.0;
    int method;
    rs_scaling sc;
    PyArrayObject *keep[2] = {NULL, NULL}, *out = NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    const char *why;
    npy_intp n;
    (void)self;

    if (!PyArg_ParseTuple(args, "Ldi:scaled_inv_freq", &dim, &base, &method))
        return NULL;
    if (check_dim(dim) < 0)
        return NULL;
    if (rs_method_name(method) == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "method must be a code in 0 .. %d (see _core.METHOD_NAMES), got %d",
                     RS_N_METHODS - 1, method);
        return NULL;
    }
    n = (npy_intp)(dim / 2);
    rs_scaling_init(&sc, method);
    while (kw != NULL && PyDict_Next(kw, &pos, &key, &value)) {
        if (scaling_field(&sc, key, value, n, keep) < 0)
            goto fail;
    }
    out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (out == NULL)
        goto fail;
    why = rs_scaled_inv_freq_why((int64_t)dim, base, &sc, (double *)PyArray_DATA(out), &attn);
    if (why != NULL) {
        PyErr_Format(PyExc_ValueError, "rope_type '%s': %s (dim=%lld, base=%R, parameters %R)",
                     rs_method_name(method), why, dim, PyTuple_GET_ITEM(args, 1),
                     kw != NULL ? kw : Py_None);
        goto fail;
    }
    Py_XDECREF(keep[0]);
    Py_XDECREF(keep[1]);
    return Py_BuildValue("Nd", (PyObject *)out, attn);
fail:
    Py_XDECREF(keep[0]);
    Py_XDECREF(keep[1]);
    Py_XDECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Rotation                                                             */
/* ------------------------------------------------------------------ */

/* The kernel dtype of an operand.  bfloat16 has no NumPy type without
 * ml_dtypes, so the Python layer passes its bits as uint16 and says so with
 * the `bf16` argument of rotate, rotate_positions and cos_sin: then x and
 * out (cos and sin for cos_sin) must be uint16; without it uint16 is
 * refused like any other non-float dtype. */
static int dtype_code(PyArrayObject *a, const char *name, int bf16)
{
    if (bf16) {
        if (PyArray_TYPE(a) == NPY_UINT16)
            return RS_BF16;
        PyErr_Format(PyExc_TypeError,
                     "%s must be uint16 (bfloat16 bits) when bf16 is set, got %R", name,
                     (PyObject *)PyArray_DESCR(a));
        return -1;
    }
    switch (PyArray_TYPE(a)) {
    case NPY_FLOAT16:
        return RS_F16;
    case NPY_FLOAT32:
        return RS_F32;
    case NPY_FLOAT64:
        return RS_F64;
    default:
        PyErr_Format(PyExc_TypeError,
                     "%s must be float16, float32 or float64, got %R", name,
                     (PyObject *)PyArray_DESCR(a));
        return -1;
    }
}

/* What every operand handed to a kernel must be: an ndarray, native byte
 * order, aligned; writeable if it is written. */
static int check_operand(PyObject *obj, const char *name, int writeable)
{
    PyArrayObject *a;
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray, got %s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    a = (PyArrayObject *)obj;
    if (!PyArray_ISNBO(PyArray_DESCR(a)->byteorder) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be aligned and in native byte order", name);
        return -1;
    }
    if (writeable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s is read-only", name);
        return -1;
    }
    return 0;
}

/* Fill the row axes and feature strides of x and out; checks shapes agree. */
static int layout_x_out(rs_layout *L, PyArrayObject *x, PyArrayObject *out)
{
    int nd = PyArray_NDIM(x);
    if (nd < 1 || nd - 1 > RS_MAXDIM) {
        PyErr_Format(PyExc_ValueError, "x must have 1 to %d dimensions, got %d",
                     RS_MAXDIM + 1, nd);
        return -1;
    }
    if (PyArray_NDIM(out) != nd ||
        !PyArray_CompareLists(PyArray_DIMS(x), PyArray_DIMS(out), nd)) {
        PyErr_SetString(PyExc_ValueError, "out must have the shape of x");
        return -1;
    }
    memset(L, 0, sizeof(*L));
    L->ndim = nd - 1;
    for (int i = 0; i < nd - 1; i++) {
        L->shape[i] = PyArray_DIM(x, i);
        L->stride[RS_OP_X][i] = PyArray_STRIDE(x, i);
        L->stride[RS_OP_OUT][i] = PyArray_STRIDE(out, i);
    }
    L->n_features = PyArray_DIM(x, nd - 1);
    L->fstride[RS_OP_X] = PyArray_STRIDE(x, nd - 1);
    L->fstride[RS_OP_OUT] = PyArray_STRIDE(out, nd - 1);
    return 0;
}

/* Byte strides of `a`'s first `n_lead` axes broadcast (NumPy rules, right
 * aligned) onto the n row axes of L; 0 where `a` repeats.  Refuses shapes
 * that would broadcast x up rather than a down. */
static int broadcast_rows(rs_layout *L, PyArrayObject *a, int n_lead,
                          const char *name, int op)
{
    int n = L->ndim;
    if (n_lead > n)
        goto fail;
    for (int i = 0; i < n; i++) {
        int j = i - (n - n_lead);
        if (j < 0 || PyArray_DIM(a, j) == 1) {
            L->stride[op][i] = 0;
        } else if (PyArray_DIM(a, j) == L->shape[i]) {
            L->stride[op][i] = PyArray_STRIDE(a, j);
        } else {
            goto fail;
        }
    }
    return 0;
fail:
    {
        PyObject *shape = PyObject_GetAttrString((PyObject *)a, "shape");
        if (shape != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s of shape %R does not broadcast to x's leading shape", name, shape);
            Py_DECREF(shape);
        }
    }
    return -1;
}

static int same_view(PyArrayObject *a, PyArrayObject *b)
{
    int nd = PyArray_NDIM(a);
    if (PyArray_DATA(a) != PyArray_DATA(b) || PyArray_NDIM(b) != nd)
        return 0;
    for (int i = 0; i < nd; i++)
        if (PyArray_DIM(a, i) > 1 && PyArray_STRIDE(a, i) != PyArray_STRIDE(b, i))
            return 0;
    return 1;
}

/* The bytes [*lo, *hi) an array touches (NumPy's may_share_memory bounds);
 * 0 for an empty array. */
static int extent(PyArrayObject *a, const char **lo, const char **hi)
{
    const char *l = PyArray_BYTES(a), *h = l;
    if (PyArray_SIZE(a) == 0)
        return 0;
    for (int i = 0; i < PyArray_NDIM(a); i++) {
        npy_intp span = PyArray_STRIDE(a, i) * (PyArray_DIM(a, i) - 1);
        if (span < 0)
            l += span;
        else
            h += span;
    }
    *lo = l;
    *hi = h + PyArray_ITEMSIZE(a);
    return 1;
}

/* An input that shares memory with an output would be read after the kernel
 * wrote there (e.g. inv_freq read lazily by the fused form): the Python
 * layer copies such inputs first, this is the second guard. */
static int refuse_overlap(PyArrayObject *in, const char *in_name, PyArrayObject *out,
                          const char *out_name)
{
    const char *l1, *h1, *l2, *h2;
    if (!extent(in, &l1, &h1) || !extent(out, &l2, &h2) || h1 <= l2 || h2 <= l1)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s shares memory with %s; pass a copy (np.copy(%s))",
                 in_name, out_name, in_name);
    return -1;
}

/* May two elements of `a` be the same memory (e.g. an as_strided view)?
 * Sufficient test: sorted by stride, each axis steps past everything the
 * smaller axes span. */
static int may_self_overlap(PyArrayObject *a)
{
    npy_intp st[NPY_MAXDIMS], n[NPY_MAXDIMS], span;
    int m = 0;
    if (PyArray_SIZE(a) <= 1 || PyArray_IS_C_CONTIGUOUS(a) || PyArray_IS_F_CONTIGUOUS(a))
        return 0;
    for (int i = 0; i < PyArray_NDIM(a); i++) {
        if (PyArray_DIM(a, i) <= 1)
            continue;
        npy_intp v = PyArray_STRIDE(a, i) < 0 ? -PyArray_STRIDE(a, i) : PyArray_STRIDE(a, i);
        int j = m++;
        for (; j > 0 && st[j - 1] > v; j--) {
            st[j] = st[j - 1];
            n[j] = n[j - 1];
        }
        st[j] = v;
        n[j] = PyArray_DIM(a, i);
    }
    span = PyArray_ITEMSIZE(a);
    for (int i = 0; i < m; i++) {
        if (st[i] < span)
            return 1;
        span += st[i] * (n[i] - 1);
    }
    return 0;
}

static int threads_arg(int n)
{
    return n < 1 ? 1 : n;
}

/* Shared by both rotation entry points once the layout is filled: the
 * pair count fits, out can be written, and the options, in-place detection
 * included. */
static int finish_options(const rs_layout *L, rs_options *opt, PyArrayObject *x,
                          PyArrayObject *out, int dt, int interleaved, int inverse,
                          int n_threads, int pos_int, const char *pairs_name)
{
    if (L->n_pairs > L->n_features / 2 || L->n_features % 2 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "x's last axis (%zd) must be even and hold 2 * %s (%zd) features",
                     (Py_ssize_t)L->n_features, pairs_name, (Py_ssize_t)L->n_pairs);
        return -1;
    }
    opt->dtype = dt;
    opt->interleaved = interleaved;
    opt->inverse = inverse;
    opt->in_place = same_view(x, out);
    if (may_self_overlap(out)) {
        /* in place, rows would be rotated twice; otherwise the value that
         * survives in a shared element would depend on the thread order */
        PyErr_SetString(PyExc_ValueError,
                        opt->in_place ? "in place on an array whose elements share memory (an as_strided view?) "
                                        "would rotate some rows twice; pass a copy of x"
                                      : "out has elements that share memory (an as_strided view?); pass an "
                                        "array whose elements are distinct");
        return -1;
    }
    if (!opt->in_place && refuse_overlap(x, "x", out, "out") < 0)
        return -1;
    opt->n_threads = threads_arg(n_threads);
    opt->pos_int = pos_int;
    opt->interrupt = NULL;
    return 0;
}

/* Ctrl-C during a long kernel call: the kernel asks (on the calling thread,
 * between chunks of rows) whether to stop; at most every POLL_SECONDS this
 * takes the GIL back and lets Python run its signal handlers.  A handler
 * that raises (KeyboardInterrupt) stops the call. */
#define POLL_SECONDS 0.05

typedef struct {
    rs_interrupt intr;
    PyThreadState *save;
    double next;
} glue_poll;

static double monotonic_seconds(void)
{
#ifdef _WIN32
    return (double)GetTickCount64() * 1e-3;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

static int poll_signals(void *ctx)
{
    glue_poll *g = (glue_poll *)ctx;
    double now = monotonic_seconds();
    int stop;
    if (now < g->next)
        return 0;
    PyEval_RestoreThread(g->save);
    stop = PyErr_CheckSignals() < 0;
    g->save = PyEval_SaveThread();
    g->next = monotonic_seconds() + POLL_SECONDS;
    return stop;
}

/* Release the GIL for a kernel call; `end_kernel` takes it back. */
static const rs_interrupt *begin_kernel(glue_poll *g)
{
    g->intr.poll = poll_signals;
    g->intr.ctx = g;
    g->next = monotonic_seconds() + POLL_SECONDS;
    g->save = PyEval_SaveThread();
    return &g->intr;
}

static void end_kernel(glue_poll *g)
{
    PyEval_RestoreThread(g->save);
}

static int kernel_status(int rc)
{
    switch (rc) {
    case RS_OK:
        return 0;
    case RS_NO_MEMORY:
        PyErr_SetString(PyExc_MemoryError,
                        "not enough memory for the kernel's working buffers (the output is untouched)");
        return -1;
    case RS_INTERRUPTED:
        if (!PyErr_Occurred())
            PyErr_SetNone(PyExc_KeyboardInterrupt);
        return -1;
    default:
        PyErr_SetString(PyExc_ValueError, "inconsistent layout passed to the kernel");
        return -1;
    }
}

/* tables._refuse_full's test, for the fast path (refuse_full=True): the
 * last row of a half-width sin of realistic width, stored along the pairs,
 * reads as cat(h, h) with h not constant.  Done here because at a decode
 * step every line of Python runs from a cold cache: the Python form cost
 * 2-4 us of a 35 us copy floor (Intel Xeon family 6 model 167). */
static int looks_full(PyArrayObject *s)
{
    const int nd = PyArray_NDIM(s);
    const npy_intp w = PyArray_DIM(s, nd - 1), fs = PyArray_STRIDE(s, nd - 1);
    const size_t item = (size_t)PyArray_ITEMSIZE(s);
    const char *row = PyArray_BYTES(s);
    int varies = 0;
    if (w < 4 || w % 2 || w > (1 << 16) || PyArray_SIZE(s) == 0 || fs == 0)
        return 0;
    for (int d = 0; d < nd - 1; d++)
        row += (PyArray_DIM(s, d) - 1) * PyArray_STRIDE(s, d);
    for (npy_intp j = 0; j < w / 2; j++) {
        if (memcmp(row + j * fs, row + (j + w / 2) * fs, item) != 0)
            return 0;
        varies |= memcmp(row + j * fs, row, item) != 0;
    }
    return varies;
}

static PyObject *py_rotate(PyObject *self, PyObject *args)
{
    PyObject *xo, *co, *so, *oo;
    PyArrayObject *x, *c, *s, *out;
    int interleaved, inverse, n_threads, rc, dt, ct, bf16 = 0, refuse_full = 0;
    rs_layout L;
    rs_options opt;
    glue_poll poll;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOOOppi|pp:rotate", &xo, &co, &so, &oo,
                          &interleaved, &inverse, &n_threads, &bf16, &refuse_full))
        return NULL;
    if (check_operand(xo, "x", 0) < 0 || check_operand(co, "cos", 0) < 0 ||
        check_operand(so, "sin", 0) < 0 || check_operand(oo, "out", 1) < 0)
        return NULL;
    x = (PyArrayObject *)xo;
    c = (PyArrayObject *)co;
    s = (PyArrayObject *)so;
    out = (PyArrayObject *)oo;
    if ((dt = dtype_code(x, "x", bf16)) < 0 || dtype_code(out, "out", bf16) < 0 ||
        (ct = dtype_code(c, "cos", 0)) < 0 || dtype_code(s, "sin", 0) < 0)
        return NULL;
    if (PyArray_TYPE(out) != PyArray_TYPE(x)) {
        PyErr_SetString(PyExc_TypeError, "out must have the dtype of x");
        return NULL;
    }
    if (PyArray_TYPE(c) != PyArray_TYPE(s) ||
        ct != (dt == RS_F64 ? RS_F64 : RS_F32)) {
        PyErr_SetString(PyExc_TypeError,
                        "cos and sin must be float64 for float64 x, float32 otherwise");
        return NULL;
    }
    if (layout_x_out(&L, x, out) < 0)
        return NULL;
    if (PyArray_NDIM(c) < 1 || PyArray_NDIM(c) != PyArray_NDIM(s) ||
        !PyArray_CompareLists(PyArray_DIMS(c), PyArray_DIMS(s), PyArray_NDIM(c))) {
        PyErr_SetString(PyExc_ValueError, "cos and sin must have the same shape (..., R)");
        return NULL;
    }
    if (broadcast_rows(&L, c, PyArray_NDIM(c) - 1, "cos", RS_OP_COS) < 0 ||
        broadcast_rows(&L, s, PyArray_NDIM(s) - 1, "sin", RS_OP_SIN) < 0)
        return NULL;
    if (refuse_full && looks_full(s)) {
        PyErr_SetString(PyExc_ValueError, "sin looks like a full-width table (its rows are cat(s, s))");
        return NULL;
    }
    L.n_pairs = PyArray_DIM(c, PyArray_NDIM(c) - 1);
    L.fstride[RS_OP_COS] = PyArray_STRIDE(c, PyArray_NDIM(c) - 1);
    L.fstride[RS_OP_SIN] = PyArray_STRIDE(s, PyArray_NDIM(s) - 1);
    if (finish_options(&L, &opt, x, out, dt, interleaved, inverse, n_threads, 0,
                       "cos.shape[-1]") < 0 ||
        refuse_overlap(c, "cos", out, "out") < 0 || refuse_overlap(s, "sin", out, "out") < 0)
        return NULL;
    opt.interrupt = begin_kernel(&poll);
    rc = rs_rotate(&L, &opt, PyArray_BYTES(x), PyArray_BYTES(out),
                   PyArray_BYTES(c), PyArray_BYTES(s));
    end_kernel(&poll);
    if (kernel_status(rc) < 0)
        return NULL;
    Py_INCREF(out);
    return (PyObject *)out;
}

static PyArrayObject *theta_array(PyObject *obj)
{
    PyArrayObject *t;
    if (check_operand(obj, "inv_freq", 0) < 0)
        return NULL;
    t = (PyArrayObject *)obj;
    if (PyArray_TYPE(t) != NPY_FLOAT64 || PyArray_NDIM(t) != 1 ||
        !PyArray_IS_C_CONTIGUOUS(t)) {
        PyErr_SetString(PyExc_TypeError,
                        "inv_freq must be a contiguous 1-D float64 array");
        return NULL;
    }
    return t;
}

/* positions: int64 or float64 of any shape; 1 if integer.  The values are
 * checked by check_position_values once the frequencies are known. */
static int check_positions(PyObject *obj)
{
    int type;
    if (check_operand(obj, "positions", 0) < 0)
        return -1;
    type = PyArray_TYPE((PyArrayObject *)obj);
    if (type != NPY_FLOAT64 && type != NPY_INT64) {
        PyErr_SetString(PyExc_TypeError, "positions must be int64 or float64 here");
        return -1;
    }
    return type == NPY_INT64;
}

/* Largest |theta|; also refuses non-finite frequencies. */
static int theta_max(PyArrayObject *t, double *out)
{
    const double *th = (const double *)PyArray_DATA(t);
    npy_intp n = PyArray_DIM(t, 0);
    double m = 0.0;
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "inv_freq must not be empty");
        return -1;
    }
    for (npy_intp k = 0; k < n; k++) {
        /* Beyond 1e300 the exact product's splitting would overflow. */
        if (!(fabs(th[k]) <= 1e300)) {
            char buf[40];
            snprintf(buf, sizeof(buf), "%.17g", th[k]);
            PyErr_Format(PyExc_ValueError,
                         "inv_freq must be finite (and |inv_freq| <= 1e300), got %s at index %zd",
                         buf, (Py_ssize_t)k);
            return -1;
        }
        m = fabs(th[k]) > m ? fabs(th[k]) : m;
    }
    *out = m;
    return 0;
}

/* The largest |position| of n at d (byte stride st) into *big; *bad set on NaN or inf. */
static void position_extremes(const char *d, npy_intp st, npy_intp n, int is_int, double *big, int *bad)
{
    double m = *big;
    for (npy_intp i = 0; i < n; i++, d += st) {
        double v;
        if (is_int) {
            int64_t iv = *(const int64_t *)(const void *)d;
            v = iv < 0 ? -(double)iv : (double)iv; /* INT64_MIN: 2^63, too big */
        } else {
            v = fabs(*(const double *)(const void *)d);
            if (!isfinite(v))
                *bad = 1;
        }
        m = v > m ? v : m;
    }
    *big = m;
}

/* Every position finite, |p| <= 2^52 and |p * theta| <= RS_MAX_ANGLE. */
static int check_position_values(PyArrayObject *p, int is_int, double tmax)
{
    NpyIter *it;
    NpyIter_IterNextFunc *next;
    char **data;
    npy_intp *stride, *count;
    double big = 0.0;
    int bad = 0;
    if (PyArray_SIZE(p) == 0)
        return 0;
    if (PyArray_IS_C_CONTIGUOUS(p)) {
        /* the common case (a decode step's offsets) without an iterator,
         * which costs more than the check itself at that size */
        position_extremes(PyArray_BYTES(p), 8, PyArray_SIZE(p), is_int, &big, &bad);
    } else {
        it = NpyIter_New(p, NPY_ITER_READONLY | NPY_ITER_EXTERNAL_LOOP | NPY_ITER_ZEROSIZE_OK,
                         NPY_KEEPORDER, NPY_NO_CASTING, NULL);
        if (it == NULL)
            return -1;
        next = NpyIter_GetIterNext(it, NULL);
        if (next == NULL) {
            NpyIter_Deallocate(it);
            return -1;
        }
        data = NpyIter_GetDataPtrArray(it);
        stride = NpyIter_GetInnerStrideArray(it);
        count = NpyIter_GetInnerLoopSizePtr(it);
        do {
            position_extremes(data[0], stride[0], *count, is_int, &big, &bad);
        } while (next(it));
        NpyIter_Deallocate(it);
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "positions must be finite, got NaN or inf");
        return -1;
    }
    if (big > 4503599627370496.0) {
        char buf[40];
        snprintf(buf, sizeof(buf), "%.17g", big);
        PyErr_Format(PyExc_ValueError, "positions must satisfy |position| <= 2**52, got %s", buf);
        return -1;
    }
    if (big * tmax > RS_MAX_ANGLE) {
        char b1[40], b2[40];
        snprintf(b1, sizeof(b1), "%.17g", big);
        snprintf(b2, sizeof(b2), "%.17g", tmax);
        PyErr_Format(PyExc_ValueError,
                     "positions * inv_freq must stay within 2**34 radians for exact angles; "
                     "got max |position| %s with max inv_freq %s", b1, b2);
        return -1;
    }
    return 0;
}

/* What both angle-forming entry points need: positions (int64 or float64),
 * a finite inv_freq, and every |position * theta| within the exact range.
 * Returns 1 for integer positions, 0 for float, -1 with an error set. */
static int angle_inputs(PyObject *po, PyObject *to, PyArrayObject **t)
{
    int pos_int;
    double tmax;
    if ((pos_int = check_positions(po)) < 0)
        return -1;
    if ((*t = theta_array(to)) == NULL || theta_max(*t, &tmax) < 0)
        return -1;
    if (check_position_values((PyArrayObject *)po, pos_int, tmax) < 0)
        return -1;
    return pos_int;
}

/* pair_stream: a contiguous int64 array of R stream numbers in [0, k). */
static int check_pair_stream(PyArrayObject *ps, npy_intp R, npy_intp k)
{
    const int64_t *st;
    if (PyArray_TYPE(ps) != NPY_INT64 || PyArray_NDIM(ps) != 1 || PyArray_DIM(ps, 0) != R ||
        !PyArray_IS_C_CONTIGUOUS(ps)) {
        PyErr_SetString(PyExc_ValueError, "pair_stream must be a contiguous int64 array of len(inv_freq)");
        return -1;
    }
    st = (const int64_t *)PyArray_DATA(ps);
    for (npy_intp q = 0; q < R; q++)
        if (st[q] < 0 || st[q] >= (int64_t)k) {
            PyErr_Format(PyExc_ValueError, "pair_stream[%zd] = %lld is not a stream of positions (0..%zd)",
                         q, (long long)st[q], k - 1);
            return -1;
        }
    return 0;
}

/* M-RoPE streams: positions (k, ...) with 1 <= k <= RS_MAX_STREAMS, at
 * most RS_PAIR_BLOCK pairs (`who` names the call in that message) and
 * pair_stream naming one of the k streams for each pair.  Returns k, or -1
 * with an error set. */
static npy_intp check_streams(PyArrayObject *p, PyArrayObject *ps, npy_intp R, const char *who)
{
    npy_intp k;
    if (PyArray_NDIM(p) < 1 || PyArray_DIM(p, 0) < 1 || PyArray_DIM(p, 0) > RS_MAX_STREAMS) {
        PyErr_Format(PyExc_ValueError, "positions must have 1 to %d streams on its first axis", RS_MAX_STREAMS);
        return -1;
    }
    k = PyArray_DIM(p, 0);
    if (R > RS_PAIR_BLOCK) {
        PyErr_Format(PyExc_ValueError, "%s takes at most %d pairs, got %zd", who, RS_PAIR_BLOCK, R);
        return -1;
    }
    if (check_pair_stream(ps, R, k) < 0)
        return -1;
    return k;
}

/* The positions' broadcasting over L's rows; with streams, stream 0
 * describes every stream's (stream j is j strides on). */
static int broadcast_positions(rs_layout *L, PyObject *po, int streams)
{
    PyObject *pb;
    int rc;
    if (streams) {
        if ((pb = PySequence_GetItem(po, 0)) == NULL)
            return -1;
    } else {
        pb = po;
        Py_INCREF(pb);
    }
    if (!PyArray_Check(pb)) {
        Py_DECREF(pb);
        PyErr_SetString(PyExc_TypeError, "positions must be an array");
        return -1;
    }
    rc = broadcast_rows(L, (PyArrayObject *)pb, PyArray_NDIM((PyArrayObject *)pb), "positions", RS_OP_POS);
    Py_DECREF(pb);
    return rc;
}

/* The fused forms: plain positions (rotate_positions), or M-RoPE position
 * streams (k, ...) whose trailing axes broadcast against x's rows, pair j
 * taking stream pair_stream[j] (rotate_streams, `streams` set). */
static PyObject *rotate_fused(PyObject *args, int streams)
{
    PyObject *xo, *po, *to, *so_ = NULL, *oo;
    PyArrayObject *x, *p, *t, *ps = NULL, *out;
    double scale;
    int interleaved, inverse, n_threads, rc, dt, bf16 = 0, pos_int;
    npy_intp k = 1, R;
    rs_layout L;
    rs_options opt;
    glue_poll poll;

    if (streams ? !PyArg_ParseTuple(args, "OOOOdOppi|p:rotate_streams", &xo, &po, &to, &so_, &scale, &oo,
                                    &interleaved, &inverse, &n_threads, &bf16)
                : !PyArg_ParseTuple(args, "OOOdOppi|p:rotate_positions", &xo, &po, &to, &scale, &oo,
                                    &interleaved, &inverse, &n_threads, &bf16))
        return NULL;
    if (check_operand(xo, "x", 0) < 0 || check_operand(oo, "out", 1) < 0 ||
        (streams && check_operand(so_, "pair_stream", 0) < 0) || (pos_int = angle_inputs(po, to, &t)) < 0)
        return NULL;
    x = (PyArrayObject *)xo;
    p = (PyArrayObject *)po;
    out = (PyArrayObject *)oo;
    R = PyArray_DIM(t, 0);
    if (streams) {
        ps = (PyArrayObject *)so_;
        if ((k = check_streams(p, ps, R, "rotate_streams")) < 0)
            return NULL;
    }
    if ((dt = dtype_code(x, "x", bf16)) < 0 || dtype_code(out, "out", bf16) < 0)
        return NULL;
    if (PyArray_TYPE(out) != PyArray_TYPE(x)) {
        PyErr_SetString(PyExc_TypeError, "out must have the dtype of x");
        return NULL;
    }
    if (layout_x_out(&L, x, out) < 0)
        return NULL;
    if (broadcast_positions(&L, po, streams) < 0)
        return NULL;
    L.n_pairs = R;
    if (finish_options(&L, &opt, x, out, dt, interleaved, inverse, n_threads, pos_int,
                       "len(inv_freq)") < 0 ||
        refuse_overlap(p, "positions", out, "out") < 0 ||
        refuse_overlap(t, "inv_freq", out, "out") < 0 ||
        (streams && refuse_overlap(ps, "pair_stream", out, "out") < 0))
        return NULL;
    opt.interrupt = begin_kernel(&poll);
    if (streams)
        rc = rs_rotate_streams(&L, &opt, PyArray_BYTES(x), PyArray_BYTES(out), PyArray_BYTES(p),
                               (int64_t)PyArray_STRIDE(p, 0), (int64_t)k,
                               (const int64_t *)PyArray_DATA(ps), (const double *)PyArray_DATA(t), scale);
    else
        rc = rs_rotate_positions(&L, &opt, PyArray_BYTES(x), PyArray_BYTES(out), PyArray_BYTES(p),
                                 (const double *)PyArray_DATA(t), scale);
    end_kernel(&poll);
    if (kernel_status(rc) < 0)
        return NULL;
    Py_INCREF(out);
    return (PyObject *)out;
}

static PyObject *py_rotate_positions(PyObject *self, PyObject *args)
{
    (void)self;
    return rotate_fused(args, 0);
}

static PyObject *py_rotate_streams(PyObject *self, PyObject *args)
{
    (void)self;
    return rotate_fused(args, 1);
}

/* Do a and b share an element?  Their byte extents first (cheap, and
 * enough for separate arrays); views of one buffer whose extents meet (q
 * and k of a packed qkv) are then asked of numpy.shares_memory, exactly.  A
 * question too hard for it counts as shared.  -1: an error is set. */
static int shares_memory(PyArrayObject *a, PyArrayObject *b)
{
    const char *l1, *h1, *l2, *h2;
    PyObject *np, *res;
    int shared;
    if (!extent(a, &l1, &h1) || !extent(b, &l2, &h2) || h1 <= l2 || h2 <= l1)
        return 0;
    if ((np = PyImport_ImportModule("numpy")) == NULL)
        return -1;
    res = PyObject_CallMethod(np, "shares_memory", "OO", (PyObject *)a, (PyObject *)b);
    Py_DECREF(np);
    if (res == NULL) {
        PyErr_Clear();
        return 1;
    }
    shared = PyObject_IsTrue(res);
    Py_DECREF(res);
    return shared;
}

static int refuse_shared(PyArrayObject *in, const char *in_name, PyArrayObject *out, const char *out_name)
{
    int shared = shares_memory(in, out);
    if (shared > 0)
        PyErr_Format(PyExc_ValueError, "%s shares memory with %s; pass a copy (np.copy(%s))", in_name,
                     out_name, in_name);
    return shared != 0 ? -1 : 0;
}

/* rotate_qk(q, k, positions, inv_freq, pair_stream, scale, out_q, out_k,
 * interleaved, inverse, n_threads[, bf16]): q and k at the same positions in
 * one pass (rs_rotate_qk); pair_stream None for plain positions, else fused
 * M-RoPE with positions (streams, ...).  q and k: one dtype, one head_dim;
 * each may be rotated in place (out_q is q); no output may share memory
 * with the other output or with an input other than its own. */
static PyObject *py_rotate_qk(PyObject *self, PyObject *args)
{
    PyObject *qo, *ko, *po, *to, *so_, *oqo, *oko;
    PyArrayObject *q, *k, *p, *t, *ps = NULL, *oq, *ok;
    double scale;
    int interleaved, inverse, n_threads, rc, dt, bf16 = 0, pos_int, streams;
    npy_intp n_streams = 0, R;
    rs_layout Lq, Lk;
    rs_options opt, optk;
    glue_poll poll;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOOOOdOOppi|p:rotate_qk", &qo, &ko, &po, &to, &so_, &scale, &oqo, &oko,
                          &interleaved, &inverse, &n_threads, &bf16))
        return NULL;
    streams = so_ != Py_None;
    if (check_operand(qo, "q", 0) < 0 || check_operand(ko, "k", 0) < 0 || check_operand(oqo, "out_q", 1) < 0 ||
        check_operand(oko, "out_k", 1) < 0 || (streams && check_operand(so_, "pair_stream", 0) < 0) ||
        (pos_int = angle_inputs(po, to, &t)) < 0)
        return NULL;
    q = (PyArrayObject *)qo;
    k = (PyArrayObject *)ko;
    p = (PyArrayObject *)po;
    oq = (PyArrayObject *)oqo;
    ok = (PyArrayObject *)oko;
    R = PyArray_DIM(t, 0);
    if (streams) {
        ps = (PyArrayObject *)so_;
        if ((n_streams = check_streams(p, ps, R, "rotate_qk with streams")) < 0)
            return NULL;
    }
    if ((dt = dtype_code(q, "q", bf16)) < 0 || dtype_code(k, "k", bf16) < 0 ||
        dtype_code(oq, "out_q", bf16) < 0 || dtype_code(ok, "out_k", bf16) < 0)
        return NULL;
    if (PyArray_TYPE(k) != PyArray_TYPE(q) || PyArray_TYPE(oq) != PyArray_TYPE(q) ||
        PyArray_TYPE(ok) != PyArray_TYPE(q)) {
        PyErr_SetString(PyExc_TypeError, "q, k, out_q and out_k must have one dtype");
        return NULL;
    }
    if (layout_x_out(&Lq, q, oq) < 0 || layout_x_out(&Lk, k, ok) < 0)
        return NULL;
    if (broadcast_positions(&Lq, po, streams) < 0 || broadcast_positions(&Lk, po, streams) < 0)
        return NULL;
    Lq.n_pairs = Lk.n_pairs = R;
    if (PyArray_DIM(q, PyArray_NDIM(q) - 1) != PyArray_DIM(k, PyArray_NDIM(k) - 1)) {
        PyErr_SetString(PyExc_ValueError, "q and k must have the same last axis (head_dim)");
        return NULL;
    }
    if (finish_options(&Lq, &opt, q, oq, dt, interleaved, inverse, n_threads, pos_int, "len(inv_freq)") < 0 ||
        finish_options(&Lk, &optk, k, ok, dt, interleaved, inverse, n_threads, pos_int, "len(inv_freq)") < 0 ||
        refuse_shared(q, "q", ok, "out_k") < 0 || refuse_shared(k, "k", oq, "out_q") < 0 ||
        refuse_shared(oq, "out_q", ok, "out_k") < 0 || refuse_overlap(p, "positions", oq, "out_q") < 0 ||
        refuse_overlap(p, "positions", ok, "out_k") < 0 || refuse_overlap(t, "inv_freq", oq, "out_q") < 0 ||
        refuse_overlap(t, "inv_freq", ok, "out_k") < 0 ||
        (streams && (refuse_overlap(ps, "pair_stream", oq, "out_q") < 0 ||
                     refuse_overlap(ps, "pair_stream", ok, "out_k") < 0)))
        return NULL;
    opt.interrupt = begin_kernel(&poll);
    rc = rs_rotate_qk(&Lq, &Lk, &opt, optk.in_place, PyArray_BYTES(q), PyArray_BYTES(oq), PyArray_BYTES(k),
                      PyArray_BYTES(ok), PyArray_BYTES(p), streams ? (int64_t)PyArray_STRIDE(p, 0) : 0,
                      (int64_t)n_streams, streams ? (const int64_t *)PyArray_DATA(ps) : NULL,
                      (const double *)PyArray_DATA(t), scale);
    end_kernel(&poll);
    if (rc == RS_BAD_LAYOUT) {
        PyErr_SetString(PyExc_ValueError,
                        "q and k must have the same shape but for one axis along which the positions repeat "
                        "(the heads)");
        return NULL;
    }
    if (kernel_status(rc) < 0)
        return NULL;
    return Py_BuildValue("(OO)", oqo, oko);
}

/* The tables a cos/sin call writes: contiguous (n, R) arrays of one dtype
 * (`rows` names n in the message), sharing no memory with each other nor
 * with the positions and frequencies they are made from. */
static int check_tables_out(PyArrayObject *c, PyArrayObject *s, npy_intp n, npy_intp R, const char *rows,
                            PyArrayObject *p, PyArrayObject *t)
{
    if (PyArray_TYPE(s) != PyArray_TYPE(c) || PyArray_NDIM(c) != 2 ||
        PyArray_NDIM(s) != 2 || PyArray_DIM(c, 0) != n || PyArray_DIM(c, 1) != R ||
        PyArray_DIM(s, 0) != n || PyArray_DIM(s, 1) != R ||
        !PyArray_IS_C_CONTIGUOUS(c) || !PyArray_IS_C_CONTIGUOUS(s)) {
        PyErr_Format(PyExc_ValueError, "cos and sin must be contiguous (%s, len(inv_freq)) arrays of one dtype",
                     rows);
        return -1;
    }
    if (refuse_overlap(p, "positions", c, "cos") < 0 || refuse_overlap(p, "positions", s, "sin") < 0 ||
        refuse_overlap(t, "inv_freq", c, "cos") < 0 || refuse_overlap(t, "inv_freq", s, "sin") < 0 ||
        refuse_overlap(c, "cos", s, "sin") < 0)
        return -1;
    return 0;
}

static PyObject *py_cos_sin(PyObject *self, PyObject *args)
{
    PyObject *po, *to, *co, *so;
    PyArrayObject *p, *t, *c, *s;
    double scale;
    int n_threads, rc, dt, bf16 = 0;
    npy_intp n, R;
    glue_poll poll;
    const rs_interrupt *intr;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOdOOi|p:cos_sin", &po, &to, &scale, &co, &so,
                          &n_threads, &bf16))
        return NULL;
    int pos_int;
    if (check_operand(co, "cos", 1) < 0 || check_operand(so, "sin", 1) < 0 ||
        (pos_int = angle_inputs(po, to, &t)) < 0)
        return NULL;
    p = (PyArrayObject *)po;
    c = (PyArrayObject *)co;
    s = (PyArrayObject *)so;
    if (PyArray_NDIM(p) != 1) {
        PyErr_SetString(PyExc_ValueError, "positions must be 1-D here");
        return NULL;
    }
    if ((dt = dtype_code(c, "cos", bf16)) < 0)
        return NULL;
    n = PyArray_DIM(p, 0);
    R = PyArray_DIM(t, 0);
    if (check_tables_out(c, s, n, R, "len(positions)", p, t) < 0)
        return NULL;
    intr = begin_kernel(&poll);
    rc = rs_cos_sin((int64_t)n, PyArray_BYTES(p), (int64_t)PyArray_STRIDE(p, 0), pos_int,
                    (const double *)PyArray_DATA(t), (int64_t)R, scale, dt,
                    PyArray_BYTES(c), PyArray_BYTES(s), threads_arg(n_threads), intr);
    end_kernel(&poll);
    if (kernel_status(rc) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* M-RoPE tables: positions (k, n), pair_stream int64 (R,) with values in [0, k). */
static PyObject *py_cos_sin_streams(PyObject *self, PyObject *args)
{
    PyObject *po, *to, *so_, *co, *so;
    PyArrayObject *p, *t, *ps, *c, *s;
    double scale;
    int n_threads, rc, dt, pos_int;
    npy_intp n, R, k;
    glue_poll poll;
    const rs_interrupt *intr;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOOdOOi:cos_sin_streams", &po, &to, &so_, &scale, &co, &so,
                          &n_threads))
        return NULL;
    if (check_operand(co, "cos", 1) < 0 || check_operand(so, "sin", 1) < 0 ||
        check_operand(so_, "pair_stream", 0) < 0 || (pos_int = angle_inputs(po, to, &t)) < 0)
        return NULL;
    p = (PyArrayObject *)po;
    ps = (PyArrayObject *)so_;
    c = (PyArrayObject *)co;
    s = (PyArrayObject *)so;
    if (PyArray_NDIM(p) != 2) {
        PyErr_SetString(PyExc_ValueError, "positions must be 2-D (streams, positions) here");
        return NULL;
    }
    if ((dt = dtype_code(c, "cos", 0)) < 0)
        return NULL;
    k = PyArray_DIM(p, 0);
    n = PyArray_DIM(p, 1);
    R = PyArray_DIM(t, 0);
    if (check_pair_stream(ps, R, k) < 0)
        return NULL;
    if (check_tables_out(c, s, n, R, "positions.shape[1]", p, t) < 0 ||
        refuse_overlap(ps, "pair_stream", c, "cos") < 0 || refuse_overlap(ps, "pair_stream", s, "sin") < 0)
        return NULL;
    intr = begin_kernel(&poll);
    rc = rs_cos_sin_streams((int64_t)n, PyArray_BYTES(p), (int64_t)PyArray_STRIDE(p, 1),
                            (int64_t)PyArray_STRIDE(p, 0), pos_int, (const double *)PyArray_DATA(t),
                            (const int64_t *)PyArray_DATA(ps), (int64_t)k, (int64_t)R, scale, dt,
                            PyArray_BYTES(c), PyArray_BYTES(s), threads_arg(n_threads), intr);
    end_kernel(&poll);
    if (kernel_status(rc) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Tests only: make the n-th allocation of the C core from now fail. */
static PyObject *py_test_fail_alloc(PyObject *self, PyObject *args)
{
    int nth;
    (void)self;
    if (!PyArg_ParseTuple(args, "i:_test_fail_alloc", &nth))
        return NULL;
    rs_test_fail_alloc(nth);
    Py_RETURN_NONE;
}

/* Tests only: the highest instruction set the kernels may use (0: all the
 * CPU has, 1: baseline, 2: AVX2/F16C, 3: AVX-512). */
static PyObject *py_test_split(PyObject *self, PyObject *args)
{
    int mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "i:_test_split", &mode))
        return NULL;
    if (mode < 0 || mode > 2) {
        PyErr_Format(PyExc_ValueError, "mode must be 0 (measured), 1 (split) or 2 (one thread), got %d", mode);
        return NULL;
    }
    rs_test_split(mode);
    Py_RETURN_NONE;
}

static PyObject *py_set_spin(PyObject *self, PyObject *args)
{
    long long ns;
    (void)self;
    if (!PyArg_ParseTuple(args, "L:_set_spin", &ns))
        return NULL;
    return PyLong_FromLongLong((long long)rs_set_spin_ns((int64_t)ns));
}

static PyObject *py_thread_split(PyObject *self, PyObject *args)
{
    long long nbytes;
    int fused, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "Lpi:thread_split", &nbytes, &fused, &n))
        return NULL;
    return PyLong_FromLong(rs_split_peek((int64_t)nbytes, fused, n < 1 ? 1 : n));
}

static PyObject *py_test_simd_cap(PyObject *self, PyObject *args)
{
    int level;
    (void)self;
    if (!PyArg_ParseTuple(args, "i:_test_simd_cap", &level))
        return NULL;
    if (level < 0 || level > RS_SIMD_AVX512) {
        PyErr_Format(PyExc_ValueError, "_test_simd_cap: level must be 0 to %d, got %d",
                     RS_SIMD_AVX512, level);
        return NULL;
    }
    rs_test_simd_cap(level);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* DLPack import                                                        */
/* ------------------------------------------------------------------ */

/* The DLPack structures (dlpack.h, v0.8 and v1.x), declared here so that
 * the build needs no DLPack header: any CPU exporter's tensor, bfloat16
 * included (NumPy's own from_dlpack refuses it), is viewed without a copy. */
typedef struct {
    int32_t device_type, device_id;
} rs_dl_device;
typedef struct {
    uint8_t code, bits;
    uint16_t lanes;
} rs_dl_dtype;
typedef struct {
    void *data;
    rs_dl_device device;
    int32_t ndim;
    rs_dl_dtype dtype;
    int64_t *shape, *strides;
    uint64_t byte_offset;
} rs_dl_tensor;
typedef struct rs_dl_managed {
    rs_dl_tensor t;
    void *manager_ctx;
    void (*deleter)(struct rs_dl_managed *);
} rs_dl_managed;
typedef struct rs_dl_versioned {
    uint32_t major, minor;
    void *manager_ctx;
    void (*deleter)(struct rs_dl_versioned *);
    uint64_t flags;
    rs_dl_tensor t;
} rs_dl_versioned;

enum { RS_DL_CPU = 1, RS_DL_INT = 0, RS_DL_UINT = 1, RS_DL_FLOAT = 2, RS_DL_BFLOAT = 4, RS_DL_BOOL = 6 };
#define RS_DL_READ_ONLY 1u

/* The owner a view keeps as its base: releasing it hands the tensor back. */
static void dl_release_legacy(PyObject *owner)
{
    rs_dl_managed *m = (rs_dl_managed *)PyCapsule_GetPointer(owner, "ropescale.dlpack");
    if (m != NULL && m->deleter != NULL)
        m->deleter(m);
}

static void dl_release_versioned(PyObject *owner)
{
    rs_dl_versioned *m = (rs_dl_versioned *)PyCapsule_GetPointer(owner, "ropescale.dlpack_versioned");
    if (m != NULL && m->deleter != NULL)
        m->deleter(m);
}

/* Where the view of an empty tensor points (never read or written). */
static char dl_empty_byte;

/* The NumPy type of a DLPack dtype (bfloat16 as uint16 bits), or -1. */
static int dl_numpy_type(rs_dl_dtype d, int *bf16)
{
    *bf16 = 0;
    if (d.lanes != 1)
        return -1;
    switch (d.code) {
    case RS_DL_FLOAT:
        return d.bits == 16 ? NPY_FLOAT16 : d.bits == 32 ? NPY_FLOAT32 : d.bits == 64 ? NPY_FLOAT64 : -1;
    case RS_DL_BFLOAT:
        *bf16 = 1;
        return d.bits == 16 ? NPY_UINT16 : -1;
    case RS_DL_INT:
        return d.bits == 8 ? NPY_INT8 : d.bits == 16 ? NPY_INT16 : d.bits == 32 ? NPY_INT32
               : d.bits == 64 ? NPY_INT64 : -1;
    case RS_DL_UINT:
        return d.bits == 8 ? NPY_UINT8 : d.bits == 16 ? NPY_UINT16 : d.bits == 32 ? NPY_UINT32
               : d.bits == 64 ? NPY_UINT64 : -1;
    case RS_DL_BOOL:
        return d.bits == 8 ? NPY_BOOL : -1;
    default:
        return -1;
    }
}

/* from_dlpack(capsule, name) -> (array, is_bf16): a NumPy view of a DLPack
 * capsule's CPU tensor (bfloat16 as uint16 bits, is_bf16 True).  The
 * capsule is consumed (renamed "used_...") only on success; on a refusal
 * it is left as it was, so its own destructor returns the tensor. */
static PyObject *py_from_dlpack(PyObject *self, PyObject *args)
{
    PyObject *cap, *owner, *res;
    const char *name;
    const rs_dl_tensor *t;
    void *managed;
    npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
    int versioned, type, bf16, flags = NPY_ARRAY_WRITEABLE, empty = 0;
    char *data;
    (void)self;

    if (!PyArg_ParseTuple(args, "Os:from_dlpack", &cap, &name))
        return NULL;
    versioned = PyCapsule_IsValid(cap, "dltensor_versioned");
    if (!versioned && !PyCapsule_IsValid(cap, "dltensor")) {
        PyErr_Format(PyExc_TypeError, "%s: __dlpack__() did not give an unused DLPack capsule", name);
        return NULL;
    }
    managed = PyCapsule_GetPointer(cap, versioned ? "dltensor_versioned" : "dltensor");
    if (managed == NULL)
        return NULL;
    if (versioned) {
        const rs_dl_versioned *v = (const rs_dl_versioned *)managed;
        if (v->major != 1) {
            PyErr_Format(PyExc_TypeError, "%s: DLPack version %u.%u is not one ropescale reads (1.x)",
                         name, (unsigned)v->major, (unsigned)v->minor);
            return NULL;
        }
        t = &v->t;
        if (v->flags & RS_DL_READ_ONLY)
            flags = 0;
    } else {
        t = &((const rs_dl_managed *)managed)->t;
    }
    if (t->device.device_type != RS_DL_CPU) {
        PyErr_Format(PyExc_TypeError, "%s is on DLPack device type %d, not the CPU (1): move it to the CPU first",
                     name, (int)t->device.device_type);
        return NULL;
    }
    if ((type = dl_numpy_type(t->dtype, &bf16)) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s has DLPack dtype (code %u, %u bits, %u lanes), which ropescale does not read; use "
                     "float16, bfloat16, float32 or float64 (integers for positions)",
                     name, (unsigned)t->dtype.code, (unsigned)t->dtype.bits, (unsigned)t->dtype.lanes);
        return NULL;
    }
    if (t->ndim < 0 || t->ndim > NPY_MAXDIMS || (t->ndim > 0 && t->shape == NULL)) {
        PyErr_Format(PyExc_ValueError, "%s: malformed DLPack tensor (ndim %d)", name, (int)t->ndim);
        return NULL;
    }
    {
        const npy_intp item = (t->dtype.bits + 7) / 8;
        npy_intp step = item;
        for (int i = t->ndim - 1; i >= 0; i--) {
            if (t->shape[i] == 0)
                empty = 1;
            if (t->shape[i] < 0 || (t->strides != NULL && (t->strides[i] > NPY_MAX_INTP / item ||
                                                          t->strides[i] < -(NPY_MAX_INTP / item)))) {
                PyErr_Format(PyExc_ValueError, "%s: malformed DLPack tensor (axis %d)", name, i);
                return NULL;
            }
            dims[i] = (npy_intp)t->shape[i];
            strides[i] = t->strides != NULL ? (npy_intp)t->strides[i] * item : step;
            if (dims[i] > 0 && step > NPY_MAX_INTP / dims[i]) {
                PyErr_Format(PyExc_ValueError, "%s: malformed DLPack tensor (size)", name);
                return NULL;
            }
            step *= dims[i] > 0 ? dims[i] : 1;
        }
    }
    /* An empty tensor may have no memory at all (torch exports data = NULL
     * for one): its view points at a static byte and is never read.  A 0-d
     * tensor has one element, so NULL data there is malformed, as is an
     * offset that wraps the address space. */
    if (empty) {
        data = (char *)&dl_empty_byte;
    } else if (t->data == NULL || t->byte_offset > (uint64_t)(UINTPTR_MAX - (uintptr_t)t->data)) {
        PyErr_Format(PyExc_ValueError, "%s: malformed DLPack tensor (%s)", name,
                     t->data == NULL ? "no data for a non-empty tensor" : "byte_offset past the address space");
        return NULL;
    } else {
        data = (char *)t->data + t->byte_offset;
    }
    owner = PyCapsule_New(managed, versioned ? "ropescale.dlpack_versioned" : "ropescale.dlpack",
                          versioned ? dl_release_versioned : dl_release_legacy);
    if (owner == NULL)
        return NULL;
    /* from here the owner returns the tensor: the capsule must not */
    if (PyCapsule_SetName(cap, versioned ? "used_dltensor_versioned" : "used_dltensor") < 0) {
        PyCapsule_SetDestructor(owner, NULL);
        Py_DECREF(owner);
        return NULL;
    }
    res = PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(type), t->ndim, dims, strides,
                               data, flags, NULL);
    if (res == NULL) {
        Py_DECREF(owner); /* returns the tensor */
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)res, owner) < 0) { /* steals owner */
        Py_DECREF(res);
        return NULL;
    }
    return Py_BuildValue("(NO)", res, bf16 ? Py_True : Py_False);
}

static PyObject *py_simd_name(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(rs_simd_name());
}

static PyMethodDef methods[] = {
    {"inv_freq", py_inv_freq, METH_VARARGS, "inv_freq(dim, base) -> float64 array"},
    {"ntk_lambda", py_ntk_lambda, METH_VARARGS, "ntk_lambda(dim, factor) -> float"},
    {"yarn_range", py_yarn_range, METH_VARARGS,
     "yarn_range(dim, base, original_max, beta_fast, beta_slow, truncate) -> (lo, hi)"},
    {"scaled_inv_freq", (PyCFunction)(void (*)(void))py_scaled_inv_freq,
     METH_VARARGS | METH_KEYWORDS, "scaled_inv_freq(dim, base, method, ...) -> (array, float)"},
    {"rotate", py_rotate, METH_VARARGS,
     "rotate(x, cos, sin, out, interleaved, inverse, n_threads, bf16=False, refuse_full=False) -> out"},
    {"rotate_positions", py_rotate_positions, METH_VARARGS,
     "rotate_positions(x, positions, inv_freq, scale, out, interleaved, inverse, n_threads, bf16=False) -> out"},
    {"rotate_qk", py_rotate_qk, METH_VARARGS,
     "rotate_qk(q, k, positions, inv_freq, pair_stream, scale, out_q, out_k, interleaved, inverse, n_threads"
     "[, bf16]) -> (out_q, out_k): q and k at the same positions in one pass (pair_stream None: plain)"},
    {"cos_sin", py_cos_sin, METH_VARARGS,
     "cos_sin(positions, inv_freq, scale, cos, sin, n_threads, bf16=False) -> None"},
    {"rotate_streams", py_rotate_streams, METH_VARARGS,
     "rotate_streams(x, positions, inv_freq, pair_stream, scale, out, interleaved, inverse, n_threads[, bf16]): "
     "fused M-RoPE, pair k rotated by positions[pair_stream[k]]"},
    {"cos_sin_streams", py_cos_sin_streams, METH_VARARGS,
     "cos_sin_streams(positions, inv_freq, pair_stream, scale, cos, sin, n_threads) -> None"},
    {"_test_fail_alloc", py_test_fail_alloc, METH_VARARGS,
     "_test_fail_alloc(n): the n-th allocation of the C core from now fails (tests only; 0: off)"},
    {"_test_simd_cap", py_test_simd_cap, METH_VARARGS,
     "_test_simd_cap(level): highest instruction set the kernels may use (tests only)"},
    {"_test_split", py_test_split, METH_VARARGS,
     "_test_split(mode): 0 the measured thread split, 1 split every call of at least 64 KiB, 2 never (tests only)"},
    {"_set_spin", py_set_spin, METH_VARARGS,
     "_set_spin(ns) -> previous: how long the pool's threads spin before they sleep (ns; negative: the default); "
     "ROPESCALE_SPIN_US sets it at import"},
    {"thread_split", py_thread_split, METH_VARARGS,
     "thread_split(nbytes, fused, n) -> threads a rotation of nbytes of x would run on now (measured per CPU)"},
    {"simd_name", py_simd_name, METH_NOARGS, "widest instruction set the kernels use on this CPU"},
    {"from_dlpack", py_from_dlpack, METH_VARARGS,
     "from_dlpack(capsule, name) -> (array, is_bf16): a zero-copy NumPy view of a CPU DLPack tensor "
     "(bfloat16 as uint16 bits)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_core",
                                    "ropescale's C core (internal; use the ropescale package).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m;
    import_array();
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* Method codes (DEFAULT, LINEAR, ...), their names indexed by code and the
     * keyword parameters scaled_inv_freq takes: all from the one list each. */
    if (PyModule_AddIntConstant(m, "MAX_STREAMS", RS_MAX_STREAMS) < 0 ||
        PyModule_AddIntConstant(m, "PAIR_BLOCK", RS_PAIR_BLOCK) < 0 ||
#define RS_METHOD(id, name, fn) PyModule_AddIntConstant(m, #id, RS_##id) < 0 ||
#include "methods.def"
#undef RS_METHOD
        PyModule_AddObject(m, "METHOD_NAMES", Py_BuildValue("("
#define RS_METHOD(id, name, fn) "s"
#include "methods.def"
#undef RS_METHOD
                                                             ")"
#define RS_METHOD(id, name, fn) , name
#include "methods.def"
#undef RS_METHOD
                                                             )) < 0 ||
        PyModule_AddObject(m, "SCALING_PARAMS", Py_BuildValue("("
#define RS_PARAM_FMT(field) "s"
                                                               RS_SCALING_REALS(RS_PARAM_FMT)
#undef RS_PARAM_FMT
                                                               "ssss)",
#define RS_PARAM_NAME(field) #field,
                                                               RS_SCALING_REALS(RS_PARAM_NAME)
#undef RS_PARAM_NAME
                                                               "truncate", "rotated_pairs",
                                                               "short_factor", "long_factor")) < 0 ||
        PyModule_AddObject(m, "MAX_ANGLE", PyFloat_FromDouble(RS_MAX_ANGLE)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
