/* moescope bench MODEL: prompt processing and generation speed, measured
 * the way llama.cpp's llama-bench does (a warm-up, then several runs from
 * an empty context with random tokens), printed as the same table so the
 * two can be set side by side. We report the median, which this noisy
 * 2-core class of machine needs, with the standard deviation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "moescope/moescope.h"

static const char BENCH_USAGE[] =
    "usage: moescope bench MODEL [options]\n"
    "  -p N        prompt tokens per prompt-processing test, 0 to skip (default 512)\n"
    "  -n N        tokens per generation test, 0 to skip (default 128)\n"
    "  -t N        threads (default: all cores)\n"
    "  -r N        runs per test; the median is reported (default 5)\n"
    "  -b N        batch size for prompt processing (default 512)\n"
    "  --k N       experts per token (default: the model's own)\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One timed run: n_prompt tokens at once, or n_gen tokens one at a time. */
static int run_once(moe_session *s, int32_t *ids, int n_prompt, int n_gen, int vocab, double *secs,
                    moe_error *err)
{
    moe_session_reset(s);
    for (int i = 0; i < n_prompt + n_gen; i++)
        ids[i] = rand() % vocab;
    double t0 = now();
    if (n_prompt && moe_session_eval(s, ids, n_prompt, err))
        return 0;
    for (int i = 0; i < n_gen; i++)
        if (moe_session_eval(s, &ids[i], 1, err))
            return 0;
    *secs = now() - t0;
    return 1;
}

static void human_size(char *buf, size_t cap, double bytes)
{
    snprintf(buf, cap, bytes >= (1 << 30) ? "%.2f GiB" : "%.2f MiB",
             bytes / (bytes >= (1 << 30) ? (1 << 30) : (1 << 20)));
}

int cmd_bench(int argc, char **argv)
{
    long n_prompt = 512, n_gen = 128, threads = 0, reps = 5, batch = 512, k = 0;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *dst = NULL, lo = 0, hi = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(BENCH_USAGE, stdout);
            return 0;
        } else if (a[0] != '-') {
            model = a;
            continue;
        } else if (!strcmp(a, "-p")) {
            dst = &n_prompt, lo = 0, hi = 1 << 16;
        } else if (!strcmp(a, "-n")) {
            dst = &n_gen, lo = 0, hi = 1 << 16;
        } else if (!strcmp(a, "-t")) {
            dst = &threads, lo = 1, hi = 256;
        } else if (!strcmp(a, "-r")) {
            dst = &reps, lo = 1, hi = 1000;
        } else if (!strcmp(a, "-b")) {
            dst = &batch, lo = 1, hi = 8192;
        } else if (!strcmp(a, "--k")) {
            dst = &k, lo = 1, hi = 4096;
        } else {
            return fail_msg("bench: unknown option '%s' (see moescope bench --help)", a) + 1;
        }
        if (!arg_int(a, v, lo, hi, dst))
            return 2;
        i++;
    }
    if (!model)
        return fail_msg("bench: no model given (see moescope bench --help)") + 1;

    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_error err = {0};
    int rc = 1;
    long ctx = n_prompt > n_gen ? n_prompt : n_gen;
    moe_session_params sp = {(int)(ctx ? ctx : 1), (int)threads, (int)batch};
    int32_t *ids = malloc((size_t)(n_prompt + n_gen + 1) * sizeof *ids);
    double *times = malloc((size_t)reps * sizeof *times);
    if (!ids || !times) {
        fail_msg("out of memory");
        goto done;
    }
    if (moe_model_open(model, &m, &err) || moe_session_new(m, &sp, &s, &err) ||
        (k && moe_session_set_k(s, -1, (int)k, &err))) {
        fail_msg("%s", err.msg);
        goto done;
    }
    const moe_model_info *in = moe_model_info_get(m);
    char name[64], size[32], params[32];
    double pt = (double)in->params_total;
    snprintf(name, sizeof name, "%s %.2f%s %s", in->arch, pt >= 1e9 ? pt / 1e9 : pt / 1e6, pt >= 1e9 ? "B" : "M",
             moe_dtype_name(in->dtype));
    human_size(size, sizeof size, (double)in->weight_bytes);
    snprintf(params, sizeof params, pt >= 1e9 ? "%.2f B" : "%.2f M", pt >= 1e9 ? pt / 1e9 : pt / 1e6);
    threads = moe_session_n_threads(s);
    printf("| %-30s | %10s | %10s | %-16s | %7s | %15s | %20s |\n", "model", "size", "params", "backend",
           "threads", "test", "t/s");
    printf("| ------------------------------ | ---------: | ---------: | ---------------- | ------: | "
           "--------------: | -------------------: |\n");
    char backend[64];
    snprintf(backend, sizeof backend, "CPU %s+BLAS", moe_kernel_isa());
    srand(1234);
    for (int test = 0; test < 2; test++) {
        int np = test == 0 ? (int)n_prompt : 0, ng = test == 1 ? (int)n_gen : 0;
        if (!np && !ng)
            continue;
        double warm;
        if (!run_once(s, ids, np ? np : 0, ng ? 1 : 0, in->vocab, &warm, &err)) { /* warm-up */
            fail_msg("%s", err.msg);
            goto done;
        }
        for (long r = 0; r < reps; r++)
            if (!run_once(s, ids, np, ng, in->vocab, &times[r], &err)) {
                fail_msg("%s", err.msg);
                goto done;
            }
        int n_tok = np ? np : ng;
        double mean = 0, var = 0;
        for (long r = 0; r < reps; r++) {
            times[r] = n_tok / times[r]; /* tokens per second */
            mean += times[r] / reps;
        }
        for (long r = 0; r < reps; r++)
            var += (times[r] - mean) * (times[r] - mean) / (reps > 1 ? reps - 1 : 1);
        qsort(times, (size_t)reps, sizeof *times, cmp_double);
        double median = reps % 2 ? times[reps / 2] : (times[reps / 2 - 1] + times[reps / 2]) / 2;
        char testname[24], tps[40];
        snprintf(testname, sizeof testname, "%s%d", np ? "pp" : "tg", n_tok);
        snprintf(tps, sizeof tps, "%.2f ± %.2f", median, sqrt(var));
        printf("| %-30s | %10s | %10s | %-16s | %7ld | %15s | %20s |\n", name, size, params, backend,
               threads, testname, tps);
        fflush(stdout);
    }
    printf("\nt/s: median of %ld runs ± standard deviation; BLAS core: %s; kernels: %s; "
           "experts per token: %d\n",
           reps, moe_blas_core(), moe_kernel_isa(), in->n_experts ? moe_session_get_k(s, -1) : 0);
    rc = 0;
done:
    moe_session_free(s);
    moe_model_close(m);
    free(ids);
    free(times);
    return rc;
}
