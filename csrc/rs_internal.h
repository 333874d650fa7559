/* Internal helpers shared by the core's files; not part of the public header. */
#ifndef RS_INTERNAL_H
#define RS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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

#if !defined(_WIN32)
#define RS_HAVE_PTHREADS 1
#else
#define RS_HAVE_PTHREADS 0
#endif

/* Run-time CPU features (x86-64 only; 0 elsewhere), probed once. */
int rs_cpu_has_avx2(void);
int rs_cpu_has_f16c(void); /* with AVX, which its 256-bit forms need */

/* Split [0, n) into `parts` near-equal ranges; range i is [*lo, *hi). */
void rs_split_range(int64_t n, int parts, int i, int64_t *lo, int64_t *hi);

void rs_half_to_float_n(int64_t n, const uint16_t *src, float *dst);
void rs_float_to_half_n(int64_t n, const float *src, uint16_t *dst);

/* Run fn(arg_i) for i < n_tasks, task 0 on the calling thread, the others on
 * threads of their own (n_tasks == 1: no thread at all).  Returns 0, or -1
 * if a thread could not start (the task then runs on the calling thread, so
 * the work is still done). */
typedef void (*rs_task_fn)(void *arg);
int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks);

#endif
