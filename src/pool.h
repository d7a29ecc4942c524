/* A persistent pool of worker threads for the forward pass.
 * The calling thread works too, so a pool of n runs n-1 workers. */
#ifndef MOE_POOL_H
#define MOE_POOL_H

typedef struct pool pool;

/* task in [0, n_tasks); thread in [0, pool_size) identifies the thread so
 * that a task can use per-thread scratch. */
typedef void (*pool_fn)(void *ctx, int task, int thread);

pool *pool_new(int n_threads);           /* NULL on failure */
void pool_free(pool *p);
int pool_size(const pool *p);
/* Run fn for every task and return when all have finished. */
void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks);

#endif
