/* A persistent pool of worker threads for the forward pass.
 *
 * pool_run publishes a job by bumping a generation counter. Workers spin on
 * that counter for a moment before they sleep on a condition variable:
 * decoding dispatches about a hundred small jobs per token, and waking a
 * sleeping thread costs more than most of those jobs. Tasks are handed out
 * by an atomic counter, so a thread that is ahead simply takes more. */
#include "pool.h"

#include <assert.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Polls of the counter before sleeping: with the pause instruction about
 * 50-500 µs, longer than the gaps between the matrix products of a token
 * and short enough not to starve anyone when threads outnumber cores. */
enum { POOL_SPIN = 1 << 12 };

typedef struct {
    pool *p;
    int id; /* 1 .. n-1; the caller is thread 0 */
    pthread_t th;
} pool_worker;

struct pool {
    int n;               /* threads, the caller included */
    int n_started;       /* workers running */
    pool_worker *workers; /* (n - 1) */

    /* The current job, written by pool_run before it bumps gen. */
    pool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;    /* the next task index to hand out */
    atomic_int running; /* workers that have not finished the current job */
    atomic_int stop;    /* set by pool_free before its final bump */
    atomic_uint gen;    /* bumped once per job */

    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers sleep here waiting for gen to move */
    pthread_cond_t done; /* the caller sleeps here waiting for running == 0 */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void run_tasks(pool *p, int thread)
{
    int t;
    while ((t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed)) < p->n_tasks)
        p->fn(p->ctx, t, thread);
}

/* Wait until gen differs from `seen`; returns the new value. */
static unsigned wait_job(pool *p, unsigned seen)
{
    unsigned g;
    for (int i = 0; i < POOL_SPIN; i++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
        pthread_cond_wait(&p->wake, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg)
{
    pool_worker *w = arg;
    pool *p = w->p;
    unsigned seen = 0;

    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed))
            return NULL;
        run_tasks(p, w->id);
        /* The last worker out wakes the caller. The counter alone is not
         * enough: the caller may be about to sleep, so signal under mu. */
        if (atomic_fetch_sub_explicit(&p->running, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Bump the generation: starts a job, or with stop set, ends the workers. */
static void publish(pool *p)
{
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

static void stop_workers(pool *p)
{
    atomic_store_explicit(&p->stop, 1, memory_order_relaxed);
    publish(p);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i].th, NULL);
    p->n_started = 0;
}

pool *pool_new(int n_threads)
{
    if (n_threads < 1)
        return NULL;
    pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads;
    atomic_init(&p->next, 0);
    atomic_init(&p->running, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->gen, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&p->wake, NULL) != 0)
        goto fail_wake;
    if (pthread_cond_init(&p->done, NULL) != 0)
        goto fail_done;
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers)
            goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            pool_worker *w = &p->workers[i];
            w->p = p;
            w->id = i + 1;
            if (pthread_create(&w->th, NULL, worker_main, w) != 0)
                goto fail;
            p->n_started++;
        }
    }
    return p;

fail:
    stop_workers(p);
    free(p->workers);
    pthread_cond_destroy(&p->done);
fail_done:
    pthread_cond_destroy(&p->wake);
fail_wake:
    pthread_mutex_destroy(&p->mu);
fail_mu:
    free(p);
    return NULL;
}

void pool_free(pool *p)
{
    if (!p)
        return;
    stop_workers(p);
    free(p->workers);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int pool_size(const pool *p)
{
    return p->n;
}

/* Not reentrant: one thread calls pool_run at a time, and a task must not
 * call pool_run on the same pool. */
void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    /* One task, or no workers: waking anyone would only add latency. */
    if (p->n == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    assert(n_tasks <= INT_MAX - p->n); /* room for each thread's last overshoot */

    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->running, p->n - 1, memory_order_relaxed);
    publish(p);

    run_tasks(p, 0);

    /* Every task has been claimed; wait for the workers to finish theirs
     * (and to stop reading the job, which the next call overwrites). */
    for (int i = 0; atomic_load_explicit(&p->running, memory_order_acquire) != 0; i++) {
        if (i < POOL_SPIN) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->running, memory_order_acquire) != 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
        break;
    }
}
