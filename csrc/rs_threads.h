/*
 * The few threading primitives threads.c needs, over POSIX threads or the
 * Win32 API, chosen at compile time.  MSVC, which CPython's Windows builds
 * use, has no pthreads, and mingw's winpthreads is one more DLL to ship: so
 * Windows gets its own primitives (slim reader/writer locks, condition
 * variables, _beginthreadex), and threads.c is written against this header
 * only.  Internal to the core, like rs_internal.h.
 *
 *   rs_mutex, RS_MUTEX_INIT    lock, trylock (0: taken), unlock
 *   rs_cond, RS_COND_INIT      wait, wait at most `ms` milliseconds, signal, broadcast
 *   rs_once, RS_ONCE_INIT      rs_call_once(once, fn)
 *   rs_thread                  rs_thread_start (every signal blocked on POSIX), rs_thread_join
 *   RS_THREAD_FN(name, arg)    defines a thread's entry; it ends with RS_THREAD_END
 *   RS_THREAD_LOCAL            storage class of a per-thread variable
 *   rs_at_fork_child(fn)       fn runs in a forked child (POSIX; nothing on Windows: no fork)
 *   rs_reinit_mutex/cond       start a lock or condition afresh (the forked child)
 */
#ifndef RS_THREADS_H
#define RS_THREADS_H

#include <stddef.h>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <process.h>

#define RS_HAVE_THREADS 1

typedef SRWLOCK rs_mutex;
typedef CONDITION_VARIABLE rs_cond;
typedef INIT_ONCE rs_once;
typedef HANDLE rs_thread;
#define RS_MUTEX_INIT SRWLOCK_INIT
#define RS_COND_INIT CONDITION_VARIABLE_INIT
#define RS_ONCE_INIT INIT_ONCE_STATIC_INIT
#if defined(_MSC_VER) && !defined(__clang__)
#define RS_THREAD_LOCAL __declspec(thread)
#else
#define RS_THREAD_LOCAL __thread
#endif
#define RS_THREAD_FN(name, arg) static unsigned __stdcall name(void *arg)
#define RS_THREAD_END return 0

static inline void rs_mutex_lock(rs_mutex *m) { AcquireSRWLockExclusive(m); }
static inline int rs_mutex_trylock(rs_mutex *m) { return TryAcquireSRWLockExclusive(m) ? 0 : -1; }
static inline void rs_mutex_unlock(rs_mutex *m) { ReleaseSRWLockExclusive(m); }
static inline void rs_reinit_mutex(rs_mutex *m) { InitializeSRWLock(m); }
static inline void rs_cond_wait(rs_cond *c, rs_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
static inline void rs_cond_wait_ms(rs_cond *c, rs_mutex *m, int ms)
{
    SleepConditionVariableSRW(c, m, (DWORD)ms, 0);
}
static inline void rs_cond_signal(rs_cond *c) { WakeConditionVariable(c); }
static inline void rs_cond_broadcast(rs_cond *c) { WakeAllConditionVariable(c); }
static inline void rs_reinit_cond(rs_cond *c) { InitializeConditionVariable(c); }

/* InitOnceExecuteOnce wants a callback of its own shape: fn travels in a box
 * (a function pointer is not an object pointer in C). */
typedef struct {
    void (*fn)(void);
} rs_once_box;

static BOOL CALLBACK rs_once_trampoline(PINIT_ONCE once, PVOID box, PVOID *ctx)
{
    (void)once;
    (void)ctx;
    ((rs_once_box *)box)->fn();
    return TRUE;
}

static inline int rs_call_once(rs_once *once, void (*fn)(void))
{
    rs_once_box box;
    box.fn = fn;
    return InitOnceExecuteOnce(once, rs_once_trampoline, &box, NULL) ? 0 : -1;
}

static inline int rs_at_fork_child(void (*fn)(void))
{
    (void)fn;
    return 0;
}

/* _beginthreadex, not CreateThread: the thread may use the C runtime.  No
 * signal mask to set (console events reach Python by another way). */
static inline int rs_thread_start(rs_thread *t, unsigned(__stdcall *fn)(void *), void *arg, int detached)
{
    uintptr_t h = _beginthreadex(NULL, 0, fn, arg, 0, NULL);
    if (h == 0)
        return -1;
    *t = (HANDLE)h;
    if (detached)
        CloseHandle(*t);
    return 0;
}

static inline void rs_thread_join(rs_thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

#elif defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <signal.h>
#include <time.h>

#define RS_HAVE_THREADS 1

typedef pthread_mutex_t rs_mutex;
typedef pthread_cond_t rs_cond;
typedef pthread_once_t rs_once;
typedef pthread_t rs_thread;
#define RS_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define RS_COND_INIT PTHREAD_COND_INITIALIZER
#define RS_ONCE_INIT PTHREAD_ONCE_INIT
#define RS_THREAD_LOCAL __thread
#define RS_THREAD_FN(name, arg) static void *name(void *arg)
#define RS_THREAD_END return NULL

static inline void rs_mutex_lock(rs_mutex *m) { pthread_mutex_lock(m); }
static inline int rs_mutex_trylock(rs_mutex *m) { return pthread_mutex_trylock(m) == 0 ? 0 : -1; }
static inline void rs_mutex_unlock(rs_mutex *m) { pthread_mutex_unlock(m); }
static inline void rs_reinit_mutex(rs_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void rs_cond_wait(rs_cond *c, rs_mutex *m) { pthread_cond_wait(c, m); }
static inline void rs_cond_signal(rs_cond *c) { pthread_cond_signal(c); }
static inline void rs_cond_broadcast(rs_cond *c) { pthread_cond_broadcast(c); }
static inline void rs_reinit_cond(rs_cond *c) { pthread_cond_init(c, NULL); }

/* A wait that may return early (a wake-up, a spurious one) or after `ms`. */
static inline void rs_cond_wait_ms(rs_cond *c, rs_mutex *m, int ms)
{
    struct timespec until;
    if (clock_gettime(CLOCK_REALTIME, &until) != 0) {
        pthread_cond_wait(c, m);
        return;
    }
    until.tv_nsec += (long)ms * 1000000L;
    while (until.tv_nsec >= 1000000000L) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(c, m, &until);
}

static inline int rs_call_once(rs_once *once, void (*fn)(void))
{
    return pthread_once(once, fn) == 0 ? 0 : -1;
}

static inline int rs_at_fork_child(void (*fn)(void))
{
    return pthread_atfork(NULL, NULL, fn) == 0 ? 0 : -1;
}

/* Every signal blocked on the new thread: signals go to the threads Python
 * runs on. */
static inline int rs_thread_start(rs_thread *t, void *(*fn)(void *), void *arg, int detached)
{
    sigset_t all, old;
    pthread_attr_t attr;
    int rc;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    if (detached)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(t, &attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

static inline void rs_thread_join(rs_thread t) { pthread_join(t, NULL); }

#else
/* Neither: every call runs its tasks on the calling thread. */
#define RS_HAVE_THREADS 0
#define RS_THREAD_LOCAL
#endif

#endif
