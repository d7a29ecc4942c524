/* moescope bench MODEL: prompt processing and generation speed, measured
 * the way llama.cpp's llama-bench does (a warm-up, then several runs from
 * an empty context with random tokens), printed as the same table so the
 * two can be set side by side. We report the median, which this noisy
 * 2-core class of machine needs, with the standard deviation.
 *
 * Below the table: the weight bytes each generated token read (counted by
 * the engine) and the bandwidth that implies; the resident memory during
 * generation against what it may be (the weights touched, the KV cache and
 * 64 MiB); and with --trace, generation with the routing trace recorded
 * into a transcript as `run --save` does, in runs alternating with plain
 * ones so that the machine's load falls on both alike. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "moescope/moescope.h"
#include "transcript.h"

static const char BENCH_USAGE[] =
    "usage: moescope bench MODEL [options]\n"
    "  -p N        prompt tokens per prompt-processing test, 0 to skip (default 512)\n"
    "  -n N        tokens per generation test, 0 to skip (default 128)\n"
    "  -t N        threads (default: all cores)\n"
    "  -r N        runs per test; the median is reported (default 5)\n"
    "  -b N        batch size for prompt processing (default 512)\n"
    "  -d N        context depth: each test runs after N tokens already in the cache\n"
    "              (\"tg64 @ d4096\"; default 0)\n"
    "  --k N       experts per token (default: the model's own)\n"
    "  --kv-type T KV cache type: f32 (default), f16 or q8_0\n"
    "  --act-type T activations meeting Q4_K/Q5_K/Q6_K weights: q8 (8-bit, integer\n"
    "              kernels; default with AVX2/AVX-512) or f32\n"
    "  --trace     also generate while recording the routing trace, and compare\n";

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

/* One timed run after `depth` tokens (kept in the cache from the test's
 * start): n_prompt tokens at once, or n_gen tokens one at a time. *bytes
 * gets the weight bytes the run read. */
static int run_once(moe_session *s, int32_t *ids, int depth, int n_prompt, int n_gen, int vocab, double *secs,
                    uint64_t *bytes, moe_error *err)
{
    if (moe_session_truncate(s, depth, err))
        return 0;
    for (int i = 0; i < n_prompt + n_gen; i++)
        ids[i] = rand() % vocab;
    uint64_t b0 = moe_session_weight_bytes(s);
    double t0 = now();
    if (n_prompt && moe_session_eval(s, ids, n_prompt, err))
        return 0;
    for (int i = 0; i < n_gen; i++)
        if (moe_session_eval(s, &ids[i], 1, err))
            return 0;
    *secs = now() - t0;
    *bytes = moe_session_weight_bytes(s) - b0;
    return 1;
}

/* Median and standard deviation of n rates; sorts them. */
static double median_sd(double *v, long n, double *sd)
{
    double mean = 0, var = 0;
    for (long r = 0; r < n; r++)
        mean += v[r] / n;
    for (long r = 0; r < n; r++)
        var += (v[r] - mean) * (v[r] - mean) / (n > 1 ? n - 1 : 1);
    *sd = sqrt(var);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Resident memory now, from /proc/self: the whole process and the part
 * mapped from weight files (.safetensors, .gguf). 0 where /proc is
 * missing. */
static void resident(double *total, double *weights)
{
    *total = *weights = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return;
    char line[4096];
    int in_weights = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b, kb;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2) { /* a mapping: "start-end perms offset dev inode path" */
            size_t n = strcspn(line, "\n");
            line[n] = 0;
            in_weights = (n > 12 && !strcmp(line + n - 12, ".safetensors")) ||
                         (n > 5 && !strcmp(line + n - 5, ".gguf"));
        } else if (sscanf(line, "Rss: %lu kB", &kb) == 1) {
            *total += kb * 1024.0;
            if (in_weights)
                *weights += kb * 1024.0;
        }
    }
    fclose(f);
}

static void human_size(char *buf, size_t cap, double bytes)
{
    snprintf(buf, cap, bytes >= (1 << 30) ? "%.2f GiB" : "%.2f MiB",
             bytes / (bytes >= (1 << 30) ? (1 << 30) : (1 << 20)));
}

/* One table row. */
static void row(const char *name, const char *size, const char *params, const char *backend, long threads,
                const char *test, double median, double sd)
{
    char tps[40];
    snprintf(tps, sizeof tps, "%.2f ± %.2f", median, sd);
    printf("| %-30s | %10s | %10s | %-16s | %7ld | %15s | %20s |\n", name, size, params, backend, threads, test,
           tps);
    fflush(stdout);
}

int cmd_bench(int argc, char **argv)
{
    long n_prompt = 512, n_gen = 128, threads = 0, reps = 5, batch = 512, k = 0, depth = 0;
    int trace = 0;
    moe_dtype kv_type = MOE_F32, act_type = MOE_DTYPE_COUNT; /* COUNT: the session's default */
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
        } else if (!strcmp(a, "--trace")) {
            trace = 1;
            continue;
        } else if (!strcmp(a, "--kv-type")) {
            if (!arg_kv_type("bench: --kv-type", v, &kv_type))
                return 2;
            i++;
            continue;
        } else if (!strcmp(a, "--act-type")) {
            if (!arg_act_type("bench: --act-type", v, &act_type))
                return 2;
            i++;
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
        } else if (!strcmp(a, "-d")) {
            dst = &depth, lo = 0, hi = 1 << 20;
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
    transcript *tr = NULL;
    moe_error err = {0};
    int rc = 1;
    long ctx = depth + (n_prompt > n_gen ? n_prompt : n_gen);
    moe_session_params sp = {(int)(ctx ? ctx : 1), (int)threads, (int)batch};
    long n_ids = depth > n_prompt + n_gen ? depth : n_prompt + n_gen;
    int32_t *ids = malloc((size_t)(n_ids + 1) * sizeof *ids);
    double *times = malloc((size_t)reps * 2 * sizeof *times), *traced = times + reps;
    if (!ids || !times) {
        fail_msg("out of memory");
        goto done;
    }
    if (moe_model_open(model, &m, &err) || moe_session_new(m, &sp, &s, &err) ||
        moe_session_set_kv_type(s, kv_type, &err) || (k && moe_session_set_k(s, -1, (int)k, &err)) ||
        (act_type != MOE_DTYPE_COUNT && moe_session_set_act_type(s, act_type, &err))) {
        fail_msg("%s", err.msg);
        goto done;
    }
    const moe_model_info *in = moe_model_info_get(m);
    moe_sampler_params smp = moe_sampler_defaults();
    if (trace && !(tr = transcript_new(m, NULL, &smp))) {
        fail_msg("out of memory for the transcript");
        goto done;
    }
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
    /* what is printed below the table */
    char notes[4][256];
    int n_notes = 0;
    double rss = 0, rss_weights = 0;
    char tg_name[40] = "";
    for (int test = 0; test < 2; test++) {
        int np = test == 0 ? (int)n_prompt : 0, ng = test == 1 ? (int)n_gen : 0;
        if (!np && !ng)
            continue;
        /* the context the test starts from, evaluated once (into the
         * transcript too, which records positions in order) */
        moe_session_reset(s);
        for (long i = 0; i < depth; i++)
            ids[i] = rand() % in->vocab;
        moe_trace_sink sink = tr ? transcript_sink(tr) : (moe_trace_sink){NULL, NULL};
        moe_session_set_trace(s, tr ? &sink : NULL);
        if (depth && moe_session_eval(s, ids, (int)depth, &err)) {
            fail_msg("%s", err.msg);
            goto done;
        }
        moe_session_set_trace(s, NULL);
        double warm;
        uint64_t bytes = 0, tbytes = 0;
        if (!run_once(s, ids, (int)depth, np, ng ? 1 : 0, in->vocab, &warm, &bytes, &err)) { /* warm-up */
            fail_msg("%s", err.msg);
            goto done;
        }
        int with_trace = trace && ng;
        for (long r = 0; r < reps; r++) {
            unsigned seed = (unsigned)rand();
            for (int t = 0; t <= with_trace; t++) {
                srand(seed); /* the same tokens with and without the trace */
                moe_session_set_trace(s, t ? &sink : NULL);
                if (!run_once(s, ids, (int)depth, np, ng, in->vocab, t ? &traced[r] : &times[r],
                              t ? &tbytes : &bytes, &err)) {
                    fail_msg("%s", err.msg);
                    goto done;
                }
                moe_session_set_trace(s, NULL);
            }
        }
        if (ng)
            resident(&rss, &rss_weights);
        int n_tok = np ? np : ng;
        for (long r = 0; r < reps; r++) {
            times[r] = n_tok / times[r]; /* tokens per second */
            traced[r] = with_trace ? n_tok / traced[r] : 0;
        }
        char testname[40];
        snprintf(testname, sizeof testname, "%s%d", np ? "pp" : "tg", n_tok);
        if (depth)
            snprintf(testname + strlen(testname), sizeof testname - strlen(testname), " @ d%ld", depth);
        if (ng)
            memcpy(tg_name, testname, sizeof tg_name);
        double sd, median = median_sd(times, reps, &sd);
        row(name, size, params, backend, threads, testname, median, sd);
        if (with_trace) {
            double tsd, tmedian = median_sd(traced, reps, &tsd);
            char tname[48];
            snprintf(tname, sizeof tname, "%s +trace", testname);
            row(name, size, params, backend, threads, tname, tmedian, tsd);
            snprintf(notes[n_notes++], sizeof notes[0],
                     "%s: with the routing trace recorded into a transcript, %.1f%% of the speed without "
                     "(medians of %ld alternating runs)",
                     testname, 100 * tmedian / median, reps);
        }
        if (ng) {
            double per_tok = (double)bytes / ng;
            snprintf(notes[n_notes++], sizeof notes[0],
                     "%s: %.1f MB of weights read per token (counted by the engine): %.1f GB/s at the median",
                     testname, per_tok / 1e6, per_tok * median / 1e9);
        }
    }
    printf("\nt/s: median of %ld runs ± standard deviation; BLAS core: %s; kernels: %s; "
           "experts per token: %d; KV cache %s; activations for K-quants %s\n",
           reps, moe_blas_core(), moe_kernel_isa(), in->n_experts ? moe_session_get_k(s, -1) : 0,
           moe_dtype_name(moe_session_kv_type(s)), moe_session_act_type(s) == MOE_Q8_0 ? "q8" : "f32");
    for (int i = 0; i < n_notes; i++)
        printf("%s\n", notes[i]);
    if (rss > 0) {
        double kv = (double)moe_session_kv_bytes(s), budget = rss_weights + kv + 64.0 * (1 << 20);
        printf("resident during %s: %.1f MiB = weights touched %.1f MiB + %.1f MiB else; limit: weights "
               "touched + KV cache (%ld tokens, %.1f MiB) + 64 MiB = %.1f MiB: %s\n",
               tg_name, rss / (1 << 20), rss_weights / (1 << 20), (rss - rss_weights) / (1 << 20), (long)moe_session_n_ctx(s),
               kv / (1 << 20), budget / (1 << 20), rss <= budget ? "within" : "OVER");
    }
    rc = 0;
done:
    transcript_free(tr);
    moe_session_free(s);
    moe_model_close(m);
    free(ids);
    free(times);
    return rc;
}
