/* A persistent pool of worker threads for the forward pass.
 *
 * pool_run publishes a job and the threads claim its tasks one at a time
 * from a shared counter, so a thread that is ahead simply takes more. The
 * counter also carries the job's generation: a worker that wakes late, or
 * was descheduled, finds the generation moved on and its claim refused, so
 * pool_run waits only for the tasks, never for an idle worker to check in.
 * Workers spin for a moment before they sleep on a condition variable:
 * decoding dispatches about a hundred small jobs per token, and waking a
 * sleeping thread costs more than most of those jobs. */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

/* Polls before sleeping. With the pause instruction (40-150 ns) this is
 * 0.1-0.5 ms, longer than the gaps between the matrix products of a token.
 * Every YIELD_EVERY polls the thread yields, so that spinning costs little
 * when threads outnumber cores (other programs, or a pool too large). */
enum { POOL_SPIN = 1 << 12, YIELD_EVERY = 64 };

typedef struct {
    pool *p;
    int id; /* 1 .. n-1; the caller is thread 0 */
    pthread_t th;
} pool_worker;

struct pool {
    int n;                /* threads, the caller included */
    int n_started;        /* workers running */
    pool_worker *workers; /* (n - 1) */

    /* The current job. Atomic because a late worker may read them while
     * the next job is written; its claim then fails and it reads again. */
    _Atomic(pool_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n_tasks;
    _Atomic uint64_t claim; /* generation << 32 | next task to hand out */
    atomic_int done;        /* tasks of the current job finished */
    atomic_int stop;        /* set by pool_free */

    /* Sleeping is announced in these counters before the condition is
     * checked under mu, and the other side changes the condition before it
     * reads them (all seq_cst), so mu is taken only when someone sleeps. */
    atomic_int sleepers;       /* workers asleep on wake, or about to be */
    atomic_int caller_waiting; /* the caller asleep on finished, or about to be */
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* workers wait for a new generation */
    pthread_cond_t finished; /* the caller waits for done == n_tasks */
};

static inline void cpu_relax(int i)
{
    if (i % YIELD_EVERY == YIELD_EVERY - 1) {
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint32_t gen_of(uint64_t claim)
{
    return (uint32_t)(claim >> 32);
}

/* Claim and run tasks until the job in `claim` has none left. Returns the
 * generation of the last job seen, which may be newer than the one this
 * thread started on; it then helped with that one too. */
static uint32_t run_tasks(pool *p, int thread)
{
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        /* Read the job that goes with c. Should the job change meanwhile,
         * the exchange below fails (pool_run closes the old claim before
         * it writes the new job), and c is reloaded with the new one. */
        pool_fn fn = atomic_load_explicit(&p->fn, memory_order_acquire);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_acquire);
        int n_tasks = atomic_load_explicit(&p->n_tasks, memory_order_acquire);
        uint32_t task = (uint32_t)c;
        if (atomic_load_explicit(&p->stop, memory_order_relaxed) || task >= (uint32_t)n_tasks)
            return gen_of(c);
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue;
        fn(ctx, (int)task, thread);
        /* The last task of a job wakes the caller, if it went to sleep. */
        if (atomic_fetch_add(&p->done, 1) + 1 == n_tasks && atomic_load(&p->caller_waiting)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->finished);
            pthread_mutex_unlock(&p->mu);
        }
        c = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void *worker_main(void *arg)
{
    pool_worker *w = arg;
    pool *p = w->p;
    uint32_t seen = 0;

    while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
        int i = 0;
        while (gen_of(atomic_load_explicit(&p->claim, memory_order_relaxed)) == seen) {
            if (i++ < POOL_SPIN) {
                cpu_relax(i);
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (gen_of(atomic_load(&p->claim)) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        seen = run_tasks(p, w->id);
    }
    return NULL;
}

/* Open a new generation (with stop set, this ends the workers). */
static void publish(pool *p, uint64_t claim)
{
    atomic_store(&p->claim, claim);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
}

static void stop_workers(pool *p)
{
    atomic_store(&p->stop, 1);
    publish(p, ((uint64_t)gen_of(atomic_load(&p->claim)) + 1) << 32);
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
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->n_tasks, 0);
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_waiting, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&p->wake, NULL) != 0)
        goto fail_wake;
    if (pthread_cond_init(&p->finished, NULL) != 0)
        goto fail_finished;
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
    pthread_cond_destroy(&p->finished);
fail_finished:
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
    pthread_cond_destroy(&p->finished);
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

    /* Close the previous job's claim before writing the new job. A thread
     * may hold the old claim (every task handed out) and read the new
     * n_tasks, which could be larger: its exchange must then fail rather
     * than run a task that does not exist. The job is written with release
     * stores, so whoever reads it also sees the claim closed. */
    uint64_t old = atomic_load_explicit(&p->claim, memory_order_relaxed);
    atomic_store(&p->claim, old | UINT32_MAX);
    atomic_store_explicit(&p->fn, fn, memory_order_release);
    atomic_store_explicit(&p->ctx, ctx, memory_order_release);
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_release);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    publish(p, (uint64_t)(gen_of(old) + 1) << 32);

    run_tasks(p, 0);

    /* Every task is claimed; wait for those still running elsewhere. */
    for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != n_tasks;) {
        if (i++ < POOL_SPIN) {
            cpu_relax(i);
            continue;
        }
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_waiting, 1);
        while (atomic_load(&p->done) != n_tasks)
            pthread_cond_wait(&p->finished, &p->mu);
        atomic_store(&p->caller_waiting, 0);
        pthread_mutex_unlock(&p->mu);
    }
}
