/* Internal helpers shared by the core's files; not part of the public header. */
#ifndef RS_INTERNAL_H
#define RS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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

void rs_half_to_float_n(int64_t n, const uint16_t *src, float *dst);
void rs_float_to_half_n(int64_t n, const float *src, uint16_t *dst);

/* Run fn(arg_i) for i < n_tasks, task 0 on the calling thread, the others on
 * threads of their own.  Returns 0, or -1 if a thread could not start (the
 * task then runs on the calling thread, so the work is still done). */
typedef void (*rs_task_fn)(void *arg);
int rs_parallel(rs_task_fn fn, void *args, size_t arg_size, int n_tasks);

#endif
