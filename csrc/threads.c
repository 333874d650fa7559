/*
 * Fork-join over a small persistent pool.  A call publishes its tasks; the
 * calling thread and every worker that is awake claim them one at a time,
 * and the caller waits only for tasks a worker has claimed.  So a call never
 * waits for a worker that has not woken (on a busy 2-core machine a thread
 * can be off the CPU for milliseconds): it then runs every task itself, at
 * the cost of one futex wake.  That is what lets a decode step (about 1 MiB)
 * use two threads; a thread started per call (~20 us) or a worker that must
 * wake before the call can end would cost more than it gives there.
 *
 * One call uses the pool at a time; a call made while it is busy (another
 * Python thread, the GIL being released in the kernels) starts threads of
 * its own, as every call did before the pool.  Workers block every signal,
 * never poll the interrupt (only the calling thread may take the GIL), and
 * are forgotten in a forked child (pthread_atfork), which starts its own.
 * The primitives come from rs_threads.h: POSIX threads or Win32.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "rs_internal.h"
#include "rs_threads.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

/* Test hook only (see rs_internal.h): which allocation from now fails. */
static int fail_countdown = 0;

void rs_test_fail_alloc(int nth)
{
    fail_countdown = nth > 0 ? nth : 0;
}

void *rs_alloc(size_t bytes)
{
    if (fail_countdown > 0 && --fail_countdown == 0)
        return NULL;
    return malloc(bytes > 0 ? bytes : 1);
}

int rs_run_tasks_shared(rs_task_fn fn, void *tasks, size_t task_size, int n, int n_threads,
                        size_t doubles_per_task, size_t mem_field, size_t shared_doubles, size_t shared_field,
                        const rs_interrupt *intr, int *stop)
{
    double *mem = (double *)rs_alloc(sizeof(double) * (doubles_per_task * (size_t)n + shared_doubles));
    double *shared;
    if (mem == NULL)
        return -1;
    shared = mem + doubles_per_task * (size_t)n;
    for (int i = 0; i < n; i++) {
        double *slice = mem + doubles_per_task * (size_t)i;
        memcpy((char *)tasks + (size_t)i * task_size + mem_field, &slice, sizeof(slice));
        if (shared_doubles > 0)
            memcpy((char *)tasks + (size_t)i * task_size + shared_field, &shared, sizeof(shared));
    }
    rs_parallel(fn, tasks, task_size, n, n_threads, intr, stop);
    free(mem);
    return 0;
}

int rs_run_tasks(rs_task_fn fn, void *tasks, size_t task_size, int n, int n_threads,
                 size_t doubles_per_task, size_t mem_field, const rs_interrupt *intr, int *stop)
{
    return rs_run_tasks_shared(fn, tasks, task_size, n, n_threads, doubles_per_task, mem_field, 0, 0, intr,
                               stop);
}

#if RS_HAVE_THREADS
/* Set on the pool's workers and on per-call threads: they never poll. */
static RS_THREAD_LOCAL int on_worker = 0;
#else
static const int on_worker = 0;
#endif

int rs_should_stop(const rs_interrupt *intr, int *stop, int asks)
{
    /* Tasks are claimed by whichever thread is free, so "task 0 asks" would
     * leave a call without a poll when a worker took task 0: every task
     * asks when it runs on the calling thread, and no task on a worker. */
    (void)asks;
    if (!on_worker && intr != NULL && intr->poll != NULL && intr->poll(intr->ctx))
        RS_FLAG_SET(stop);
    return RS_FLAG_GET(stop);
}

void rs_split_range(int64_t n, int parts, int i, int64_t *lo, int64_t *hi)
{
    int64_t q = n / parts, r = n % parts;
    *lo = q * i + (i < r ? i : r);
    *hi = *lo + q + (i < r ? 1 : 0);
}

/* ---- the thread split, measured ---- */

/* Whether a call pays for a second thread depends on the CPU and on where
 * its data is: on an Intel Xeon with 2 MiB of L2 per core a 1 MiB decode
 * step ran faster on two threads; on an AMD EPYC with 1 MiB of L2 per core
 * two were slower than one at that size, and on a loaded machine the second
 * thread's wake-up can cost more than its share.  So no size is fixed:
 * per size class (log2 of the bytes) and form, of every RS_SPLIT_PERIOD
 * calls the first RS_SPLIT_PROBES run on one thread and the next as many
 * on n, timed; the calls between take whichever was
 * faster (its least time per byte), and the next round of probes follows
 * the machine as it changes.  Results never depend on the split (each row's
 * bits are its own), only the time does.  The state is shared by all
 * calls; races between them can only blur a measurement (atomic fields). */
#define RS_SPLIT_CLASSES 8  /* 64 KiB .. 16 MiB */
#define RS_SPLIT_PROBES 4
#define RS_SPLIT_PERIOD 1024
#if defined(__GNUC__) || defined(__clang__)
#define RS_LOAD64(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define RS_STORE64(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define RS_ADD64(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#else
#define RS_LOAD64(p) (*(volatile int64_t *)(p))
#define RS_STORE64(p, v) (*(volatile int64_t *)(p) = (v))
static int64_t rs_add64(volatile int64_t *p, int64_t v)
{
    int64_t old = *p;
    *p = old + v;
    return old;
}
#define RS_ADD64(p, v) rs_add64((p), (v))
#endif

typedef struct {
    int64_t calls;   /* calls of the class so far */
    int64_t n;       /* the thread count the costs are for */
    int64_t cost[2]; /* least ns per 64 KiB seen on one thread [0] and on n [1]; 0: none */
} rs_split_class;

static rs_split_class split_state[2][RS_SPLIT_CLASSES];
static int split_mode = 0;

void rs_test_split(int mode)
{
    split_mode = mode;
}

static rs_split_class *split_class(int64_t bytes, int fused)
{
    int c = 0;
    while (c < RS_SPLIT_CLASSES - 1 && bytes >= ((int64_t)RS_SPLIT_MIN_BYTES << (c + 1)))
        c++;
    return &split_state[fused ? 1 : 0][c];
}

/* 1: the measured costs favour n threads (none measured yet: one). */
static int split_wins(const rs_split_class *k)
{
    const int64_t one = RS_LOAD64(&k->cost[0]), many = RS_LOAD64(&k->cost[1]);
    return one > 0 && many > 0 && many < one;
}

int rs_split_peek(int64_t bytes, int fused, int n)
{
    const rs_split_class *k;
    if (n <= 1 || bytes < RS_SPLIT_MIN_BYTES || split_mode == 2)
        return 1;
    if (bytes >= RS_SPLIT_ALL_BYTES || split_mode == 1)
        return n;
    k = split_class(bytes, fused);
    return RS_LOAD64(&k->n) == n && split_wins(k) ? n : 1;
}

int rs_split_pick(int64_t bytes, int fused, int n, int *probe)
{
    rs_split_class *k;
    int64_t c;
    *probe = 0;
    if (n <= 1 || bytes < RS_SPLIT_MIN_BYTES || split_mode != 0 || bytes >= RS_SPLIT_ALL_BYTES)
        return rs_split_peek(bytes, fused, n);
    k = split_class(bytes, fused);
    if (RS_LOAD64(&k->n) != n) { /* another thread count: measure afresh */
        RS_STORE64(&k->n, (int64_t)n);
        RS_STORE64(&k->calls, (int64_t)0);
    }
    c = RS_ADD64(&k->calls, 1) % RS_SPLIT_PERIOD;
    if (c < 2 * RS_SPLIT_PROBES) {
        if (c == 0) { /* a new round forgets the old costs */
            RS_STORE64(&k->cost[0], (int64_t)0);
            RS_STORE64(&k->cost[1], (int64_t)0);
        }
        /* one thread RS_SPLIT_PROBES times, then n as often: the n probes
         * follow one another as calls would once n is chosen, so the later
         * ones find the workers awake if the calls come close enough for
         * the workers' spin (alternating, every n probe of a decode step
         * among other work found them asleep and one thread won) */
        *probe = 1;
        return c < RS_SPLIT_PROBES ? 1 : n;
    }
    return split_wins(k) ? n : 1;
}

void rs_split_note(int64_t bytes, int fused, int threads_used, int64_t ns)
{
    rs_split_class *k;
    int64_t cost, *slot, old;
    if (bytes < RS_SPLIT_MIN_BYTES || bytes >= RS_SPLIT_ALL_BYTES || ns <= 0)
        return;
    k = split_class(bytes, fused);
    cost = ns * (int64_t)RS_SPLIT_MIN_BYTES / bytes + 1;
    slot = &k->cost[threads_used > 1];
    old = RS_LOAD64(slot);
    if (old == 0 || cost < old)
        RS_STORE64(slot, cost);
}

int64_t rs_now_ns(void)
{
#ifdef _WIN32
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (int64_t)((double)t.QuadPart * 1e9 / (double)f.QuadPart);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

/* Test hook only (see rs_internal.h): the highest instruction set the
 * probes admit (RS_SIMD_* below; 0: whatever the CPU has). */
static int simd_cap = 0;

void rs_test_simd_cap(int level)
{
    simd_cap = level;
}

static int capped_below(int level)
{
    return simd_cap != 0 && simd_cap < level;
}

/* The probes: the answer cannot change while the process runs, and racing
 * threads all store the same value, so a plain static cache is safe. */
#if RS_HAVE_X86_DISPATCH
#define RS_PROBE(level, test)                                                  \
    do {                                                                       \
        static int cached = -1;                                                \
        if (capped_below(level))                                               \
            return 0;                                                          \
        if (cached < 0) {                                                      \
            __builtin_cpu_init();                                              \
            cached = (test);                                                   \
        }                                                                      \
        return cached;                                                         \
    } while (0)
#else
#define RS_PROBE(level, test) return (void)capped_below(level), 0
#endif

int rs_cpu_has_avx2(void)
{
    RS_PROBE(RS_SIMD_AVX2, __builtin_cpu_supports("avx2"));
}

/* AVX-512F with the OS saving the 512-bit state (libgcc's probe checks
 * XCR0 as well as CPUID). */
int rs_cpu_has_avx512(void)
{
    RS_PROBE(RS_SIMD_AVX512, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f"));
}

/* with AVX, which the 256-bit forms need */
int rs_cpu_has_f16c(void)
{
    RS_PROBE(RS_SIMD_AVX2, __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c"));
}

int rs_cpu_has_neon(void)
{
#if RS_HAVE_NEON
    return !capped_below(RS_SIMD_NEON);
#else
    return 0;
#endif
}

#if RS_HAVE_THREADS
/* ---- threads of one call (the pool is busy) ---- */

/* Thread t of n runs tasks t, t + n, t + 2n, ... */
typedef struct {
    rs_task_fn fn;
    char *base;
    size_t arg_size;
    int first, step, n_tasks;
} rs_thread_arg;

static void run_strided(const rs_thread_arg *a)
{
    for (int i = a->first; i < a->n_tasks; i += a->step)
        a->fn(a->base + (size_t)i * a->arg_size);
}

RS_THREAD_FN(thread_main, p)
{
    on_worker = 1;
    run_strided((const rs_thread_arg *)p);
    RS_THREAD_END;
}

static int parallel_own_threads(rs_task_fn fn, char *base, size_t arg_size, int n_tasks,
                                int n_threads)
{
    rs_thread tid[RS_MAX_TASKS];
    rs_thread_arg targ[RS_MAX_TASKS];
    int started[RS_MAX_TASKS];
    int status = 0;
    if (n_threads < 1)
        n_threads = 1;
    for (int i = 0; i < n_threads; i++) {
        targ[i].fn = fn;
        targ[i].base = base;
        targ[i].arg_size = arg_size;
        targ[i].first = i;
        targ[i].step = n_threads;
        targ[i].n_tasks = n_tasks;
    }
    for (int i = 1; i < n_threads; i++)
        started[i] = rs_thread_start(&tid[i], thread_main, &targ[i], 0) == 0;
    run_strided(&targ[0]);
    for (int i = 1; i < n_threads; i++) {
        if (started[i]) {
            rs_thread_join(tid[i]);
        } else {
            run_strided(&targ[i]);
            status = -1;
        }
    }
    return status;
}

/* ---- the pool ---- */

static struct {
    rs_mutex lock;          /* guards every field below (job and running are
                             * also read without it, atomically, by spinners) */
    rs_cond wake;           /* workers: a job was published */
    rs_cond idle;           /* the caller: no task is running on a worker */
    int n_workers;
    int64_t job;            /* bumped per published job */
    rs_task_fn fn;
    char *base;
    size_t arg_size;
    int n_tasks, next, end;  /* unclaimed: [next, end) */
    int64_t running;         /* tasks running on workers */
} pool = {RS_MUTEX_INIT, RS_COND_INIT, RS_COND_INIT,
          0, 0, NULL, NULL, 0, 0, 0, 0, 0};
/* Held by the one call using the pool. */
static rs_mutex pool_owner = RS_MUTEX_INIT;
static rs_once pool_once = RS_ONCE_INIT;

/* In a forked child the workers do not exist, and the locks may be held by
 * threads that do not either: start from nothing. */
static void pool_after_fork_in_child(void)
{
    rs_reinit_mutex(&pool.lock);
    rs_reinit_cond(&pool.wake);
    rs_reinit_cond(&pool.idle);
    rs_reinit_mutex(&pool_owner);
    pool.n_workers = 0;
    pool.job = 0;
    pool.fn = NULL;
    pool.base = NULL;
    pool.n_tasks = pool.next = pool.end = pool.running = 0;
}

static void pool_register_fork(void)
{
    rs_at_fork_child(pool_after_fork_in_child);
}

/* Claim and run tasks of the current job until none is left; pool.lock is
 * held on entry and on return. */
static void run_claimed(void)
{
    while (pool.next < pool.end) {
        /* the caller from the front, workers from the back: on time, each
         * thread gets the same contiguous share call after call (its rows
         * stay in its core's cache); late, a worker takes the last piece */
        const int i = on_worker ? --pool.end : pool.next++;
        rs_task_fn fn = pool.fn;
        char *arg = pool.base + (size_t)i * pool.arg_size;
        if (on_worker)
            RS_STORE64(&pool.running, pool.running + 1);
        rs_mutex_unlock(&pool.lock);
        fn(arg);
        rs_mutex_lock(&pool.lock);
        if (on_worker) {
            RS_STORE64(&pool.running, pool.running - 1);
            if (pool.running == 0)
                rs_cond_signal(&pool.idle);
        }
    }
}

/* Waiting threads spin for a while before they sleep: waking a sleeping
 * thread (a futex) took tens of microseconds on the KVM machines measured,
 * as long as a whole decode step, so a split over two threads lost to one;
 * a worker still spinning from the previous call joins the next at once.
 * OpenMP runtimes spin the same way (GNU's GOMP_SPINCOUNT, Intel's
 * KMP_BLOCKTIME); the pause instruction keeps the spinning core's sibling
 * and the memory bus free. */
#define RS_SPIN_NS 200000
static int64_t spin_ns = RS_SPIN_NS;

int64_t rs_set_spin_ns(int64_t ns)
{
    const int64_t prev = spin_ns;
    spin_ns = ns < 0 ? RS_SPIN_NS : ns;
    return prev;
}

static void cpu_relax(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spin (pool.lock not held) for at most spin_ns while *at equals `value`
 * (a worker: no new job yet) or, `above`, exceeds it (the caller: workers
 * still running). */
static void spin_while(int64_t *at, int64_t value, int above)
{
    const int64_t budget = spin_ns;
    int64_t end = 0, v;
    for (int i = 0; budget > 0 && (v = RS_LOAD64(at), above ? v > value : v == value); i++) {
        cpu_relax();
        if ((i & 63) == 0) {
            const int64_t now = rs_now_ns();
            if (end == 0)
                end = now + budget;
            else if (now > end)
                return;
        }
    }
}

RS_THREAD_FN(worker_main, p)
{
    /* the job current when the worker was made: it joins the next one */
    int64_t seen = (int64_t)(intptr_t)p;
    on_worker = 1;
    rs_mutex_lock(&pool.lock);
    for (;;) {
        if (pool.job == seen) {
            rs_mutex_unlock(&pool.lock);
            spin_while(&pool.job, seen, 0);
            rs_mutex_lock(&pool.lock);
        }
        while (pool.job == seen)
            rs_cond_wait(&pool.wake, &pool.lock);
        seen = pool.job;
        run_claimed();
    }
    RS_THREAD_END; /* not reached: workers live as long as the process */
}

int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks, int n_threads,
                const rs_interrupt *intr, int *stop)
{
    char *base = (char *)args;
    int status = 0;
    if (n_tasks > RS_MAX_TASKS)
        n_tasks = RS_MAX_TASKS;
    if (n_threads > n_tasks)
        n_threads = n_tasks;
    if (n_tasks <= 0)
        return 0;
    if (n_threads <= 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(base + (size_t)i * arg_size);
        return 0;
    }
    if (on_worker || rs_call_once(&pool_once, pool_register_fork) != 0 ||
        rs_mutex_trylock(&pool_owner) != 0)
        return parallel_own_threads(fn, base, arg_size, n_tasks, n_threads);
    rs_mutex_lock(&pool.lock);
    while (pool.n_workers < n_threads - 1) {
        rs_thread tid;
        if (rs_thread_start(&tid, worker_main, (void *)(intptr_t)pool.job, 1) != 0) {
            status = -1; /* the caller runs what no worker claims */
            break;
        }
        pool.n_workers++;
    }
    pool.fn = fn;
    pool.base = base;
    pool.arg_size = arg_size;
    pool.n_tasks = n_tasks;
    pool.next = 0;
    pool.end = n_tasks;
    RS_STORE64(&pool.running, 0);
    RS_STORE64(&pool.job, pool.job + 1);
    rs_cond_broadcast(&pool.wake);
    run_claimed();
    if (pool.running > 0) {
        rs_mutex_unlock(&pool.lock);
        spin_while(&pool.running, 0, 1);
        rs_mutex_lock(&pool.lock);
    }
    while (pool.running > 0) {
        /* Out of work while workers finish theirs: keep polling the
         * interrupt (a worker never may), so Ctrl-C still stops them. */
        if (intr == NULL || intr->poll == NULL || stop == NULL) {
            rs_cond_wait(&pool.idle, &pool.lock);
            continue;
        }
        rs_cond_wait_ms(&pool.idle, &pool.lock, 5);
        if (pool.running > 0) {
            rs_mutex_unlock(&pool.lock);
            rs_should_stop(intr, stop, 1);
            rs_mutex_lock(&pool.lock);
        }
    }
    pool.fn = NULL;
    pool.n_tasks = pool.next = pool.end = 0;
    rs_mutex_unlock(&pool.lock);
    rs_mutex_unlock(&pool_owner);
    return status;
}
#else
int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks, int n_threads,
                const rs_interrupt *intr, int *stop)
{
    (void)intr;
    (void)stop;
    char *base = (char *)args;
    for (int i = 0; i < n_tasks; i++)
        fn(base + (size_t)i * arg_size);
    return 0;
}

int64_t rs_set_spin_ns(int64_t ns)
{
    (void)ns; /* no threads, none to spin */
    return 0;
}
#endif
