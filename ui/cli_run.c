/* moescope run MODEL: generate from a prompt and stream the tokens.
 *
 * stdout carries only the generation (with --print-ids, one line of ids);
 * timings and the seed go to stderr, so scripts can pipe the output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "moescope/moescope.h"
#include "trace_json.h"

static const char RUN_USAGE[] =
    "usage: moescope run MODEL --prompt-ids IDS [options]\n"
    "  --prompt-ids 1,5,9     the prompt as token ids\n"
    "  -n, --n-predict N      tokens to generate (default 128)\n"
    "  --temp T               temperature; 0 is greedy (default 0.8)\n"
    "  --top-k N              keep the N most likely tokens (default 40; 0 off)\n"
    "  --top-p P              nucleus sampling (default 0.95; 1 off)\n"
    "  --min-p P              drop tokens below P x the top probability (default 0.05)\n"
    "  --repeat-penalty R     penalise recent tokens (default 1.0, off)\n"
    "  --repeat-last-n N      how many recent tokens the penalty sees (default 64)\n"
    "  --seed S               sampling seed (default: random, printed to stderr)\n"
    "  --k N                  experts per token (default: the model's own)\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "  -c, --ctx-size N       context length (default: min(model maximum, 4096))\n"
    "  -b, --batch-size N     prompt tokens per forward pass (default 512)\n"
    "  --ignore-eos           keep generating past the end-of-sequence token\n"
    "  --print-ids            print only the generated ids, space-separated, on one line\n"
    "  --trace FILE           write every token's routing (all layers) as JSON\n";

typedef struct {
    const char *model;
    const char *trace;
    int32_t *prompt;
    int n_prompt;
    long n_predict, k, threads, ctx, batch;
    int ignore_eos, print_ids, seed_set;
    moe_sampler_params sp;
} run_opts;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Returns 0 on success, or the exit status after printing the problem. */
static int parse(int argc, char **argv, run_opts *o)
{
    o->n_predict = 128;
    o->sp = moe_sampler_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        double f;
#define IS(s) (strcmp(a, s) == 0)
        if (IS("--help") || IS("-h")) {
            fputs(RUN_USAGE, stdout);
            return -1;
        } else if (IS("--ignore-eos")) {
            o->ignore_eos = 1;
            continue;
        } else if (IS("--print-ids")) {
            o->print_ids = 1;
            continue;
        } else if (a[0] != '-') {
            if (o->model)
                return fail_msg("run: unexpected argument '%s' (the model is '%s')", a, o->model) + 1;
            o->model = a;
            continue;
        }
        static const char *const with_value[] = {
            "--prompt-ids", "-p", "--prompt", "-n", "--n-predict", "--temp", "--top-k", "--top-p",
            "--min-p", "--repeat-penalty", "--repeat-last-n", "--seed", "--k", "-t", "--threads",
            "-c", "--ctx-size", "-b", "--batch-size", "--trace", NULL};
        int known = 0;
        for (const char *const *w = with_value; *w; w++)
            known |= IS(*w);
        if (!known)
            return fail_msg("run: unknown option '%s' (see moescope run --help)", a) + 1;
        if (!v)
            return fail_msg("run: %s needs a value", a) + 1;
        i++;
        if (IS("--prompt-ids")) {
            free(o->prompt);
            if ((o->n_prompt = arg_id_list(a, v, &o->prompt)) < 0)
                return 2;
        } else if (IS("-p") || IS("--prompt")) {
            return fail_msg("run: text prompts need the tokenizer, which is not built yet; "
                            "give the prompt as --prompt-ids") + 1;
        } else if (IS("--trace")) {
            o->trace = v;
        } else if (IS("-n") || IS("--n-predict")) {
            if (!arg_int(a, v, 0, 1 << 20, &o->n_predict)) return 2;
        } else if (IS("--temp")) {
            if (!arg_float(a, v, 0, 100, &f)) return 2;
            o->sp.temp = (float)f;
        } else if (IS("--top-k")) {
            if (!arg_int(a, v, 0, 1 << 24, &n)) return 2;
            o->sp.top_k = (int)n;
        } else if (IS("--top-p")) {
            if (!arg_float(a, v, 0, 1, &f)) return 2;
            o->sp.top_p = (float)f;
        } else if (IS("--min-p")) {
            if (!arg_float(a, v, 0, 1, &f)) return 2;
            o->sp.min_p = (float)f;
        } else if (IS("--repeat-penalty")) {
            if (!arg_float(a, v, 0.01, 100, &f)) return 2;
            o->sp.repeat_penalty = (float)f;
        } else if (IS("--repeat-last-n")) {
            if (!arg_int(a, v, 0, 1 << 20, &n)) return 2;
            o->sp.repeat_last_n = (int)n;
        } else if (IS("--seed")) {
            char *end;
            o->sp.seed = strtoull(v, &end, 10);
            if (!*v || *end)
                return fail_msg("--seed expects a non-negative integer, not '%s'", v) + 1;
            o->seed_set = 1;
        } else if (IS("--k")) {
            if (!arg_int(a, v, 1, 4096, &o->k)) return 2;
        } else if (IS("-t") || IS("--threads")) {
            if (!arg_int(a, v, 1, 256, &o->threads)) return 2;
        } else if (IS("-c") || IS("--ctx-size")) {
            if (!arg_int(a, v, 1, 1 << 20, &o->ctx)) return 2;
        } else if (IS("-b") || IS("--batch-size")) {
            if (!arg_int(a, v, 1, 8192, &o->batch)) return 2;
        } else {
            return fail_msg("run: unknown option '%s' (see moescope run --help)", a) + 1;
        }
#undef IS
    }
    if (!o->model)
        return fail_msg("run: no model given (see moescope run --help)") + 1;
    if (!o->prompt)
        return fail_msg("run: no prompt given; use --prompt-ids 1,5,9") + 1;
    if (!o->seed_set)
        o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    return 0;
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) {
        free(o.prompt);
        return rc < 0 ? 0 : rc;
    }
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_sampler *smp = NULL;
    trace_json *tj = NULL;
    moe_error err = {0};
    moe_session_params sp = {(int)o.ctx, (int)o.threads, (int)o.batch};
    rc = 1;
    if (moe_model_open(o.model, &m, &err) || moe_session_new(m, &sp, &s, &err) ||
        (o.k && moe_session_set_k(s, -1, (int)o.k, &err)) ||
        moe_sampler_new(&o.sp, moe_model_info_get(m)->vocab, &smp, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    if (o.n_prompt + o.n_predict > moe_session_n_ctx(s)) {
        fail_msg("prompt (%d) plus tokens to generate (%ld) exceed the context of %d; use -c",
                 o.n_prompt, o.n_predict, moe_session_n_ctx(s));
        goto done;
    }
    if (!o.print_ids)
        fprintf(stderr, "seed %llu\n", (unsigned long long)o.sp.seed);
    if (o.trace) {
        if (!(tj = trace_json_new(m, &o.sp))) {
            fail_msg("out of memory for the trace");
            goto done;
        }
        moe_trace_sink sink = trace_json_sink(tj);
        moe_session_set_trace(s, &sink);
        trace_json_set_prompt(tj, 1);
    }

    int eos = moe_model_info_get(m)->eos_id;
    for (int i = 0; i < o.n_prompt; i++)
        moe_sampler_accept(smp, o.prompt[i]);
    double t0 = now();
    if (moe_session_eval(s, o.prompt, o.n_prompt, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    double t1 = now();
    if (tj)
        trace_json_set_prompt(tj, 0);
    int n_gen = 0;
    for (; n_gen < o.n_predict; n_gen++) {
        int32_t id = moe_sampler_sample(smp, moe_session_logits(s));
        moe_sampler_accept(smp, id);
        printf(n_gen ? " %d" : "%d", (int)id);
        fflush(stdout);
        int last = n_gen + 1 == o.n_predict || (id == eos && !o.ignore_eos);
        /* the last token is fed to the model only so that its routing is traced */
        if ((!last || tj) && moe_session_eval(s, &id, 1, &err)) {
            fail_msg("%s", err.msg);
            goto done;
        }
        if (last) {
            n_gen++;
            break;
        }
    }
    printf("\n");
    double t2 = now();
    if (!o.print_ids)
        fprintf(stderr, "prompt %d tokens in %.3f s (%.1f t/s); generated %d tokens in %.3f s (%.1f t/s)\n",
                o.n_prompt, t1 - t0, o.n_prompt / (t1 - t0), n_gen, t2 - t1,
                n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0.0);
    char msg[512];
    if (tj && trace_json_write(tj, o.trace, msg, sizeof msg)) {
        fail_msg("%s", msg);
        goto done;
    }
    rc = 0;
done:
    trace_json_free(tj);
    moe_sampler_free(smp);
    moe_session_free(s);
    moe_model_close(m);
    free(o.prompt);
    return rc;
}
