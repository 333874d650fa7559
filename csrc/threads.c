/*
 * A minimal fork-join: a call that is worth splitting starts n-1 threads and
 * joins them before it returns.  No pool, no global state: numexpr's
 * persistent pool shows what that costs in code and in fork safety, and a
 * thread start (~20 us) is small next to the >= 4 MiB of work we split.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "rs_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

int rs_run_tasks(rs_task_fn fn, void *tasks, size_t task_size, int n,
                 size_t doubles_per_task, size_t mem_field)
{
    double *mem = (double *)rs_alloc(sizeof(double) * doubles_per_task * (size_t)n);
    if (mem == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        double *slice = mem + doubles_per_task * (size_t)i;
        memcpy((char *)tasks + (size_t)i * task_size + mem_field, &slice, sizeof(slice));
    }
    rs_parallel(fn, tasks, task_size, n);
    free(mem);
    return 0;
}

int rs_should_stop(const rs_interrupt *intr, int *stop, int asks)
{
    if (asks && intr != NULL && intr->poll != NULL && intr->poll(intr->ctx))
        RS_FLAG_SET(stop);
    return RS_FLAG_GET(stop);
}

void rs_split_range(int64_t n, int parts, int i, int64_t *lo, int64_t *hi)
{
    int64_t q = n / parts, r = n % parts;
    *lo = q * i + (i < r ? i : r);
    *hi = *lo + q + (i < r ? 1 : 0);
}

/* Test hook only (see rs_internal.h): the highest instruction set the
 * probes admit (RS_SIMD_* below; 0: whatever the CPU has). */
static int simd_cap = 0;

void rs_test_force_baseline(int on)
{
    simd_cap = on ? RS_SIMD_BASELINE : 0;
}

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
int rs_cpu_has_avx2(void)
{
#if RS_HAVE_X86_DISPATCH
    static int cached = -1;
    if (capped_below(RS_SIMD_AVX2))
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2");
    }
    return cached;
#else
    return 0;
#endif
}

/* AVX-512F with the OS saving the 512-bit state (libgcc's probe checks
 * XCR0 as well as CPUID). */
int rs_cpu_has_avx512(void)
{
#if RS_HAVE_X86_DISPATCH
    static int cached = -1;
    if (capped_below(RS_SIMD_AVX512))
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f");
    }
    return cached;
#else
    return 0;
#endif
}

int rs_cpu_has_f16c(void)
{
#if RS_HAVE_X86_DISPATCH
    static int cached = -1;
    if (capped_below(RS_SIMD_AVX2))
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
    }
    return cached;
#else
    return 0;
#endif
}

#if RS_HAVE_PTHREADS
#include <pthread.h>

typedef struct {
    rs_task_fn fn;
    void *arg;
} rs_thread_arg;

static void *thread_main(void *p)
{
    rs_thread_arg *a = (rs_thread_arg *)p;
    a->fn(a->arg);
    return NULL;
}

int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks)
{
    pthread_t tid[64];
    rs_thread_arg targ[64];
    int started[64];
    int status = 0;
    char *base = (char *)args;
    if (n_tasks > 64)
        n_tasks = 64;
    for (int i = 1; i < n_tasks; i++) {
        targ[i].fn = fn;
        targ[i].arg = base + (size_t)i * arg_size;
        started[i] = pthread_create(&tid[i], NULL, thread_main, &targ[i]) == 0;
    }
    fn(base);
    for (int i = 1; i < n_tasks; i++) {
        if (started[i]) {
            pthread_join(tid[i], NULL);
        } else {
            fn(base + (size_t)i * arg_size);
            status = -1;
        }
    }
    return status;
}
#else
int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks)
{
    char *base = (char *)args;
    for (int i = 0; i < n_tasks; i++)
        fn(base + (size_t)i * arg_size);
    return 0;
}
#endif
