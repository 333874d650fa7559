/* Internal helpers shared by the core's files; not part of the public header. */
#ifndef RS_INTERNAL_H
#define RS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ropescale.h"

/* MSVC's C compiler spells C99's restrict as __restrict. */
#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

/* Run-time dispatch to x86 extensions needs GCC/clang's target attribute
 * and __builtin_cpu_supports. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_X86_DISPATCH 1
#else
#define RS_HAVE_X86_DISPATCH 0
#endif

/* NEON (Advanced SIMD) kernels on arm64, with GCC/clang's arm_neon.h
 * (MSVC on arm64 gets the portable code). */
#if (defined(__aarch64__) || defined(_M_ARM64)) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_NEON 1
#else
#define RS_HAVE_NEON 0
#endif

/* Run-time CPU features (x86-64 only; 0 elsewhere), probed once. */
int rs_cpu_has_avx2(void);
int rs_cpu_has_f16c(void); /* with AVX, which its 256-bit forms need */
int rs_cpu_has_avx512(void); /* AVX-512F (and AVX2) */
/* Tests only: cap the instruction sets the probes admit, so that every path
 * a CPU can take is run and compared.  rs_test_simd_cap(RS_SIMD_AVX2) hides
 * AVX-512, RS_SIMD_BASELINE hides every extension, 0 lifts the cap.  Set
 * it between calls, never during one. */
#define RS_SIMD_BASELINE 1
#define RS_SIMD_AVX2 2
#define RS_SIMD_AVX512 3
/* arm64: NEON is the first vector level, as AVX2 is on x86-64.  Every
 * AArch64 CPU has it (the ABI assumes it), so the probe answers 1 unless
 * the tests capped it: the portable code, auto-vectorized or not by the
 * compiler, is then the path compared against. */
#define RS_SIMD_NEON 2
int rs_cpu_has_neon(void);
void rs_test_simd_cap(int level);

/* One loop compiled for the baseline, AVX2 and AVX-512 and picked at run
 * time: RS_MULTIVERSION(name, (params), (args), BODY) defines name_base,
 * name_avx2, name_avx512 and `static void name(params)`, which calls the
 * widest the CPU has.  BODY names a macro holding the statements (without
 * FMA the operators round alike, so every version gives the same bits). */
#if RS_HAVE_X86_DISPATCH
#define RS_MULTIVERSION(name, PARAMS, ARGS, BODY)                              \
    static void name##_base PARAMS { BODY; }                                   \
    __attribute__((target("avx2"))) static void name##_avx2 PARAMS { BODY; }    \
    __attribute__((target("avx2,avx512f"))) static void name##_avx512 PARAMS   \
    {                                                                          \
        BODY;                                                                  \
    }                                                                          \
    static void name PARAMS                                                    \
    {                                                                          \
        if (rs_cpu_has_avx512())                                               \
            name##_avx512 ARGS;                                                \
        else if (rs_cpu_has_avx2())                                            \
            name##_avx2 ARGS;                                                  \
        else                                                                   \
            name##_base ARGS;                                                  \
    }
#else
#define RS_MULTIVERSION(name, PARAMS, ARGS, BODY) static void name PARAMS { BODY; }
#endif

/* Split [0, n) into `parts` near-equal ranges; range i is [*lo, *hi). */
void rs_split_range(int64_t n, int parts, int i, int64_t *lo, int64_t *hi);

void rs_half_to_float_n(int64_t n, const uint16_t *src, float *dst);
void rs_float_to_half_n(int64_t n, const float *src, uint16_t *dst);
/* bfloat16 arrays, AVX2 where the CPU has it (bit-identical to bf16.h's
 * scalar forms). */
void rs_bf16_to_float_n(int64_t n, const uint16_t *src, float *dst);
void rs_float_to_bf16_n(int64_t n, const float *src, uint16_t *dst);

/* Run fn(arg_i) for i < n_tasks on up to n_threads threads: the calling
 * thread and the pool's workers (threads.c) claim the tasks one at a time,
 * the caller runs whatever no worker has taken, and returns when all have
 * run.  More tasks than threads keep a late worker's share small.  While
 * the caller waits for workers it polls `intr` (may be NULL) every 5 ms,
 * raising *stop, as its own tasks do between chunks.  Returns
 * 0, or -1 if a thread could not start (the caller then runs more of the
 * tasks: the work is still done). */
typedef void (*rs_task_fn)(void *arg);
int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks, int n_threads,
                const rs_interrupt *intr, int *stop);

/* rs_parallel with working memory: allocates n * doubles_per_task doubles
 * before any task starts (so a call either runs or writes nothing), stores
 * task i's slice in the `double *` at byte offset mem_field of its struct,
 * runs, frees.  Returns 0, or -1 (nothing run) if the allocation failed. */
int rs_run_tasks(rs_task_fn fn, void *tasks, size_t task_size, int n, int n_threads,
                 size_t doubles_per_task, size_t mem_field, const rs_interrupt *intr, int *stop);
/* The same with `shared_doubles` more in the one allocation, for all the
 * tasks: its address is stored in the `double *` at byte offset
 * shared_field of every task (shared_doubles 0: not stored). */
int rs_run_tasks_shared(rs_task_fn fn, void *tasks, size_t task_size, int n, int n_threads,
                        size_t doubles_per_task, size_t mem_field, size_t shared_doubles, size_t shared_field,
                        const rs_interrupt *intr, int *stop);


/* ------------------------------------------------------------------ */
/* Memory (threads.c)                                                   */
/* ------------------------------------------------------------------ */

/* malloc, with a fault-injection hook for the tests: after
 * rs_test_fail_alloc(n), the n-th allocation from now fails (n <= 0: off).
 * Kernels allocate only on the calling thread, before any thread writes,
 * so the hook needs no locking. */
void *rs_alloc(size_t bytes);
void rs_test_fail_alloc(int nth);

/* Between two chunks of a task's work: a task running on the calling
 * thread polls the interrupt (workers never do: `asks` is kept for the
 * callers' sake and ignored) and raises *stop on a yes; every task then
 * sees *stop and ends. */
int rs_should_stop(const rs_interrupt *intr, int *stop, int asks);

/* Bytes of work (x, or angles) between two looks at the interrupt. */
#define RS_CHUNK_BYTES (1 << 20)

/* How many of n threads a rotation runs on, measured on the running CPU rather than fixed on one
 * (threads.c; `bytes` of x, or of q and k): below RS_SPLIT_MIN_BYTES one, from RS_SPLIT_ALL_BYTES all n;
 * in between, per size class (a power of two) and form (`fused`: angles made
 * in the call), the calls of a class alternate one thread and n now and
 * then, timed, and the others take whichever was faster.  *probe is set
 * to 1 when the call is to be timed and reported with rs_split_note. */
#define RS_SPLIT_MIN_BYTES (64 << 10)
#define RS_SPLIT_ALL_BYTES (16 << 20)
int rs_split_pick(int64_t bytes, int fused, int n, int *probe);
void rs_split_note(int64_t bytes, int fused, int threads_used, int64_t ns);
int64_t rs_now_ns(void);
/* Tests and benchmarks only: 0 measured (default), 1 every call from
 * RS_SPLIT_MIN_BYTES on split, 2 none split; and what a call of `bytes`
 * would get now, without counting it. */
void rs_test_split(int mode);
int rs_split_peek(int64_t bytes, int fused, int n);
/* How long the pool's threads spin before they sleep (ns; 0: sleep at
 * once; negative: the default, 200 us); returns the previous value. */
int64_t rs_set_spin_ns(int64_t ns);
#define RS_MAX_TASKS 64
#define RS_TASKS_PER_THREAD 4
#define RS_ONE_TASK_BYTES (1 << 20) /* a thread's share up to this: one task (rotary.c run()) */

/* A flag that one thread raises and the others read (interruption). */
#if defined(__GNUC__) || defined(__clang__)
#define RS_FLAG_GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define RS_FLAG_SET(p) __atomic_store_n((p), 1, __ATOMIC_RELAXED)
#else
#define RS_FLAG_GET(p) (*(volatile int *)(p))
#define RS_FLAG_SET(p) (*(volatile int *)(p) = 1)
#endif

/* ------------------------------------------------------------------ */
/* Row geometry (layout.c)                                              */
/* ------------------------------------------------------------------ */

/* Move the axes along which the positions repeat (stride 0) innermost. */
void rs_layout_positions_last(rs_layout *L);
/* Drop unit axes; merge neighbours every operand steps through as one. */
void rs_layout_coalesce(rs_layout *L);
int64_t rs_layout_rows(const rs_layout *L);

/* A position in the row iteration: the byte offset of each operand. */
typedef struct {
    int64_t idx[RS_MAXDIM];
    int64_t off[RS_N_OPERANDS];
} rs_iter;

void rs_iter_seek(const rs_layout *L, rs_iter *it, int64_t row);
void rs_iter_next(const rs_layout *L, rs_iter *it);

/* ------------------------------------------------------------------ */
/* Angle rows (angle.c, tables.c)                                       */
/* ------------------------------------------------------------------ */

/* Integer positions split as t = q*RS_LO_ROWS + r. */
#define RS_LO_ROWS 16

/* Rows of cos/sin for one block of n pairs.  An integer position t is
 * always made the same way: the exact row for r joined by the
 * angle-addition formula with the exact row for q*RS_LO_ROWS (the first
 * kept per r, the second while q repeats); other positions from an exact
 * row.  So the bits for a position never depend on which positions came
 * before it; a run of positions costs one exact row per RS_LO_ROWS of them,
 * scattered positions (decode) one each plus at most RS_LO_ROWS per call.
 * (RS_LO_ROWS trades the two: 16 keeps both within ~10% of a cache that
 * gave up determinism.) */
/* Exact lo rows shared by the caches of one call's tasks (rs_angle_cache_share):
 * the first task to need row r makes it here (state 0 -> 1 -> 2), the
 * others read it once made; a task that finds it being made makes its own
 * copy, with the same bits, rather than wait.  A decode step split into
 * tasks of a few tokens each otherwise made most of the RS_LO_ROWS rows once
 * per task. */
typedef struct {
    int state[RS_LO_ROWS];        /* 0 not made, 1 being made, 2 made */
} rs_lo_share;

typedef struct {
    const double *theta;
    int64_t n;
    double scale;
    double *lo_c, *lo_s;          /* RS_LO_ROWS rows of n */
    double *hi_c, *hi_s;          /* one row of n */
    double hi_q;
    int hi_ok;
    unsigned char lo_ok[RS_LO_ROWS];
    const double *lo_at_c[RS_LO_ROWS], *lo_at_s[RS_LO_ROWS]; /* lo row r once lo_ok[r]: own or shared */
    rs_lo_share *share;           /* NULL: none */
    double *share_c, *share_s;    /* its RS_LO_ROWS rows of n */
} rs_angle_cache;

/* Doubles of memory an angle cache of n pairs needs. */
size_t rs_angle_cache_doubles(int64_t n);
/* Point the cache at `mem` (rs_angle_cache_doubles(n) doubles) and forget
 * what it held. */
void rs_angle_cache_init(rs_angle_cache *a, double *mem, const double *theta,
                         int64_t n, double scale);
/* Share lo rows with the other caches of a call (after init): `share`
 * zeroed before any task runs, `mem` 2 * RS_LO_ROWS * n doubles. */
void rs_angle_cache_share(rs_angle_cache *a, rs_lo_share *share, double *mem);
/* c[k] = scale cos(t theta_k), s[k] = scale sin(t theta_k), k < n. */
void rs_angle_row(rs_angle_cache *a, double t, double *c, double *s);

double rs_read_position(const char *p, int is_int);

/* The cos/sin of a fused M-RoPE row: n pairs sorted by stream (stream j's
 * pairs are [runs[j], runs[j+1]), frequencies theta in that order), each at
 * its stream's position, with the values one rs_angle_row per stream gives.
 * An integer position is q*RS_LO_ROWS + r: the exact row for r depends on r
 * and theta only, so it is kept once, shared by the streams and made run by
 * run as they need it; the row for q*RS_LO_ROWS is made with each run's own
 * q; one angle addition covers every run.  A row with a stream at another
 * position is made run by run as rs_angle_row makes it. */
typedef struct {
    rs_angle_cache a;             /* over all n pairs (hi_ok, hi_q, lo_ok unused) */
    const int64_t *runs;
    int64_t n_streams;
    double hq[RS_MAX_STREAMS];    /* run j's part of the hi row is the exact row of hq[j]*RS_LO_ROWS (NaN: none) */
    unsigned lo_runs[RS_LO_ROWS]; /* bit j set once lo row r holds run j */
} rs_stream_angles;

void rs_stream_angles_init(rs_stream_angles *m, double *mem, const double *theta_sorted,
                           const int64_t *runs, int64_t n_streams, double scale);
/* c[k] = scale cos(t[j] theta_k), s[k] likewise, for k in run j. */
void rs_stream_angle_row(rs_stream_angles *m, const double *t, double *c, double *s);

/* Turns positions into rows of cos/sin of one dtype (tables.c). */
typedef struct {
    rs_angle_cache cache;
    double *cd, *sd;   /* float64 rows before rounding to float32/float16 */
} rs_row_maker;

size_t rs_row_maker_doubles(int64_t n);
void rs_row_maker_init(rs_row_maker *m, double *mem, const double *theta,
                       int64_t n, double scale);
/* The row of position t, rounded once to dtype (enum rs_dtype). */
void rs_make_row(rs_row_maker *m, double t, int dtype, void *c, void *s);

/* The same for fused M-RoPE rows (rs_stream_angles), every pair at once. */
typedef struct {
    rs_stream_angles angles;
    double *cd, *sd;
} rs_streams_maker;

size_t rs_streams_maker_doubles(int64_t n);
void rs_streams_maker_init(rs_streams_maker *m, double *mem, const double *theta_sorted,
                           const int64_t *runs, int64_t n_streams, double scale);
/* The row of the streams' positions t[] (pairs in stream order), rounded
 * once to dtype. */
void rs_make_row_streams(rs_streams_maker *m, const double *t, int dtype, void *c, void *s);

/* The pairs counting-sorted by stream, stably: order[q] is the pair at
 * sorted place q and theta_sorted[q] its frequency; stream j's pairs are
 * q in [start[j], start[j+1]) (start has n_streams + 1 entries).  Returns 1
 * when the order is the identity (chunked sections).  pair_stream values
 * must be in [0, n_streams). */
int rs_sort_pairs(const int64_t *pair_stream, int64_t n_pairs, int64_t n_streams, const double *theta,
                  int64_t *order, double *theta_sorted, int64_t *start);

#endif
