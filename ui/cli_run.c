/* moescope run MODEL: generate from a prompt and stream the tokens,
 * coloured by the expert the router picked, under any controls given.
 *
 * stdout carries only the generation (with --print-ids, one line of ids);
 * the legend, seed and timings go to stderr, so scripts can pipe it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "colour.h"
#include "controls_parse.h"
#include "moescope/moescope.h"
#include "trace_json.h"

static const char RUN_USAGE[] =
    "usage: moescope run MODEL (-p TEXT | --prompt-ids IDS) [options]\n"
    "  -p, --prompt TEXT      the prompt as text (needs the model's tokenizer.json)\n"
    "  --prompt-ids 1,5,9     the prompt as token ids\n"
    "  -n, --n-predict N      tokens to generate (default 128)\n"
    "  --temp T               temperature; 0 is greedy (default 0.8)\n"
    "  --top-k N              keep the N most likely tokens (default 40; 0 off)\n"
    "  --top-p P              nucleus sampling (default 0.95; 1 off)\n"
    "  --min-p P              drop tokens below P x the top probability (default 0.05)\n"
    "  --repeat-penalty R     penalise recent tokens (default 1.0, off)\n"
    "  --repeat-last-n N      how many recent tokens the penalty sees (default 64)\n"
    "  --seed S               sampling seed (default: random, printed to stderr)\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "  -c, --ctx-size N       context length (default: min(model maximum, 4096))\n"
    "  -b, --batch-size N     prompt tokens per forward pass (default 512)\n"
    "  --ignore-eos           keep generating past the end-of-sequence token\n"
    "  --print-ids            print only the generated ids, space-separated, on one line\n"
    "  --trace FILE           write every token's routing (all layers) as JSON\n"
    "controls (repeatable; L: limits one to layer L):\n"
    "  --k N | L:N            experts per token (default: the model's own)\n"
    "  --expert-off E[,E] | L:E[,E]   switch experts off (--expert-on to undo)\n"
    "  --force E[,E] | L:E[,E]        send every token to these experts\n"
    "  --bias E=X | L:E=X     add X to expert E's router logit\n"
    "  --offset L:N=D | L:E:N=D | L:resid:N=D   add D to a neuron (steering)\n"
    "  --capacity C[,drop]    mark (or drop) assignments past capacity C x tokens x k / experts\n"
    "colour:\n"
    "  --colour auto|always|never     colour tokens by expert (auto: on a terminal, unless NO_COLOR)\n"
    "  --colour-by vote|LAYER         the layers' majority vote (default) or one layer's top expert\n";

typedef struct {
    const char *verb, *arg;
} control_arg;

typedef struct {
    const char *model;
    const char *trace;
    const char *text;          /* -p */
    int32_t *prompt;
    int n_prompt;
    long n_predict, threads, ctx, batch;
    int ignore_eos, print_ids, seed_set;
    moe_sampler_params sp;
    control_arg *controls;
    int n_controls;
    colour_when colour;
    int colour_layer;          /* -1: vote */
} run_opts;

/* Flags that take a value, and the control verb each stands for. */
static const struct {
    const char *flag, *verb;
} FLAGS[] = {
    {"--prompt-ids", NULL}, {"-p", NULL}, {"--prompt", NULL}, {"-n", NULL}, {"--n-predict", NULL},
    {"--temp", NULL}, {"--top-k", NULL}, {"--top-p", NULL}, {"--min-p", NULL},
    {"--repeat-penalty", NULL}, {"--repeat-last-n", NULL}, {"--seed", NULL}, {"-t", NULL},
    {"--threads", NULL}, {"-c", NULL}, {"--ctx-size", NULL}, {"-b", NULL}, {"--batch-size", NULL},
    {"--trace", NULL}, {"--colour", NULL}, {"--color", NULL}, {"--colour-by", NULL},
    {"--k", "k"}, {"--expert-off", "off"}, {"--expert-on", "on"}, {"--force", "force"},
    {"--bias", "bias"}, {"--offset", "offset"}, {"--capacity", "capacity"},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Returns 0 on success, -1 after --help, or the exit status after printing
 * the problem. */
static int parse(int argc, char **argv, run_opts *o)
{
    o->n_predict = 128;
    o->sp = moe_sampler_defaults();
    o->colour_layer = -1;
    if (!(o->controls = calloc((size_t)argc, sizeof *o->controls)))
        return fail_msg("out of memory") + 1;
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
        size_t fi = 0;
        while (fi < sizeof FLAGS / sizeof FLAGS[0] && strcmp(a, FLAGS[fi].flag))
            fi++;
        if (fi == sizeof FLAGS / sizeof FLAGS[0])
            return fail_msg("run: unknown option '%s' (see moescope run --help)", a) + 1;
        if (!v)
            return fail_msg("run: %s needs a value", a) + 1;
        i++;
        if (FLAGS[fi].verb) {
            o->controls[o->n_controls++] = (control_arg){FLAGS[fi].verb, v};
        } else if (IS("--prompt-ids")) {
            free(o->prompt);
            if ((o->n_prompt = arg_id_list(a, v, &o->prompt)) < 0)
                return 2;
        } else if (IS("-p") || IS("--prompt")) {
            o->text = v;
        } else if (IS("--trace")) {
            o->trace = v;
        } else if (IS("--colour") || IS("--color")) {
            if (!strcmp(v, "auto"))
                o->colour = COLOUR_AUTO;
            else if (!strcmp(v, "always"))
                o->colour = COLOUR_ALWAYS;
            else if (!strcmp(v, "never"))
                o->colour = COLOUR_NEVER;
            else
                return fail_msg("%s expects auto, always or never, not '%s'", a, v) + 1;
        } else if (IS("--colour-by")) {
            if (strcmp(v, "vote") != 0) {
                if (!arg_int(a, v, 0, 1 << 16, &n)) return 2;
                o->colour_layer = (int)n;
            }
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
            if (!*v || *end || *v == '-')
                return fail_msg("--seed expects a non-negative integer, not '%s'", v) + 1;
            o->seed_set = 1;
        } else if (IS("-t") || IS("--threads")) {
            if (!arg_int(a, v, 1, 256, &o->threads)) return 2;
        } else if (IS("-c") || IS("--ctx-size")) {
            if (!arg_int(a, v, 1, 1 << 20, &o->ctx)) return 2;
        } else if (IS("-b") || IS("--batch-size")) {
            if (!arg_int(a, v, 1, 8192, &o->batch)) return 2;
        }
#undef IS
    }
    if (!o->model)
        return fail_msg("run: no model given (see moescope run --help)") + 1;
    if (!o->prompt && !o->text)
        return fail_msg("run: no prompt given; use -p TEXT or --prompt-ids 1,5,9") + 1;
    if (o->prompt && o->text)
        return fail_msg("run: give the prompt as text (-p) or as ids (--prompt-ids), not both") + 1;
    if (!o->seed_set)
        o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    return 0;
}

/* What the run's trace sink sees: it records the colour expert of the
 * latest token and passes everything on to the JSON trace, if any. */
typedef struct {
    trace_json *json;
    moe_trace_sink json_sink;
    int colour_layer;
    int last_colour;
} run_sink;

static void on_token(void *ctx, const moe_token_trace *t)
{
    run_sink *rs = ctx;
    rs->last_colour = -1;
    if (rs->colour_layer < 0 && t->n_routes) {
        rs->last_colour = trace_colour_vote(t);
    } else {
        for (int r = 0; r < t->n_routes; r++)
            if (t->routes[r].layer == rs->colour_layer)
                rs->last_colour = t->routes[r].experts[0];
    }
    if (rs->json)
        rs->json_sink.on_token(rs->json_sink.ctx, t);
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {0};
    int rc = parse(argc, argv, &o);
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_sampler *smp = NULL;
    moe_tokenizer *tok = NULL;
    moe_detokenizer *detok = NULL;
    run_sink rs = {0};
    moe_error err = {0};
    if (rc) {
        rc = rc < 0 ? 0 : rc;
        goto done;
    }
    moe_session_params sp = {(int)o.ctx, (int)o.threads, (int)o.batch};
    rc = 1;
    if (moe_model_open(o.model, &m, &err) || moe_session_new(m, &sp, &s, &err) ||
        moe_sampler_new(&o.sp, moe_model_info_get(m)->vocab, &smp, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    const moe_model_info *in = moe_model_info_get(m);
    /* The tokenizer is optional for ids in and ids out, required for text. */
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", in->path);
    if ((o.text || access(tok_path, F_OK) == 0) && moe_tokenizer_open(in->path, &tok, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    if (o.text && moe_tokenizer_encode(tok, o.text, strlen(o.text), 1, &o.prompt, &o.n_prompt, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    if (o.n_prompt == 0) {
        fail_msg("run: the prompt is empty");
        goto done;
    }
    int text_out = tok && !o.print_ids;
    if (text_out && !(detok = moe_detokenizer_new(tok, 1))) {
        fail_msg("out of memory");
        goto done;
    }
    for (int i = 0; i < o.n_controls; i++) {
        char msg[512];
        if (control_apply(s, o.controls[i].verb, o.controls[i].arg, msg, sizeof msg)) {
            fail_msg("%s", msg);
            goto done;
        }
    }
    if (o.colour_layer >= in->n_layers || (o.colour_layer >= 0 && !in->n_moe_layers)) {
        fail_msg("--colour-by %d: the model has %d layers%s", o.colour_layer, in->n_layers,
                 in->n_moe_layers ? "" : " and no experts");
        goto done;
    }
    if (o.n_prompt + o.n_predict > moe_session_n_ctx(s)) {
        fail_msg("prompt (%d) plus tokens to generate (%ld) exceed the context of %d; use -c", o.n_prompt,
                 o.n_predict, moe_session_n_ctx(s));
        goto done;
    }
    int colour = !o.print_ids && in->n_moe_layers && colour_enabled(o.colour, stdout);
    rs.colour_layer = o.colour_layer;
    if (o.trace) {
        if (!(rs.json = trace_json_new(m, tok, &o.sp))) {
            fail_msg("out of memory for the trace");
            goto done;
        }
        rs.json_sink = trace_json_sink(rs.json);
        trace_json_set_prompt(rs.json, 1);
    }
    moe_trace_sink sink = {&rs, on_token};
    moe_session_set_trace(s, &sink);
    if (!o.print_ids) {
        fprintf(stderr, "seed %llu\n", (unsigned long long)o.sp.seed);
        if (colour)
            colour_legend(stderr, in->n_experts, NULL);
    }

    for (int i = 0; i < o.n_prompt; i++)
        moe_sampler_accept(smp, o.prompt[i]);
    if (text_out && o.text) { /* the prompt first, as llama.cpp does */
        fputs(o.text, stdout);
        fflush(stdout);
    }
    double t0 = now();
    if (moe_session_eval(s, o.prompt, o.n_prompt, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    double t1 = now();
    if (rs.json)
        trace_json_set_prompt(rs.json, 0);
    /* Each sampled token is fed back before it is printed: its routing,
     * and so its colour, is known only once the model has seen it. */
    int n_gen = 0, eos = in->eos_id, eos2 = tok ? moe_tokenizer_eos(tok) : -1;
    while (n_gen < o.n_predict) {
        int32_t id = moe_sampler_sample(smp, moe_session_logits(s));
        moe_sampler_accept(smp, id);
        int last = n_gen + 1 == o.n_predict || ((id == eos || id == eos2) && !o.ignore_eos);
        int feed = !last || rs.json || colour;
        if (feed && moe_session_eval(s, &id, 1, &err)) {
            fail_msg("%s", err.msg);
            goto done;
        }
        if (text_out) {
            /* text comes out when it is whole, in the colour of the token
             * that completed it */
            const char *piece;
            size_t len;
            if (moe_detokenizer_push(detok, id, &piece, &len, &err)) {
                fail_msg("%s", err.msg);
                goto done;
            }
            if (len && colour && rs.last_colour >= 0)
                printf("%s%.*s%s", colour_start(rs.last_colour), (int)len, piece, COLOUR_END);
            else if (len)
                fwrite(piece, 1, len, stdout);
        } else if (colour && rs.last_colour >= 0) {
            printf("%s%s%d%s", n_gen ? " " : "", colour_start(rs.last_colour), (int)id, COLOUR_END);
        } else {
            printf(n_gen ? " %d" : "%d", (int)id);
        }
        fflush(stdout);
        n_gen++;
        if (last)
            break;
    }
    if (text_out) {
        size_t len;
        const char *rest = moe_detokenizer_flush(detok, &len);
        fwrite(rest, 1, len, stdout);
    }
    printf("\n");
    double t2 = now();
    if (!o.print_ids)
        fprintf(stderr, "prompt %d tokens in %.3f s (%.1f t/s); generated %d tokens in %.3f s (%.1f t/s)\n",
                o.n_prompt, t1 - t0, o.n_prompt / (t1 - t0), n_gen, t2 - t1, n_gen / (t2 - t1));
    int n_log;
    const moe_control_event *log = moe_session_control_log(s, &n_log);
    if (!o.print_ids && n_log) {
        fprintf(stderr, "controls:");
        for (int i = 0; i < n_log; i++)
            fprintf(stderr, " %s%s", log[i].text, i + 1 < n_log ? ";" : "\n");
    }
    char msg[512];
    if (rs.json)
        trace_json_set_controls(rs.json, log, n_log);
    if (rs.json && trace_json_write(rs.json, o.trace, msg, sizeof msg)) {
        fail_msg("%s", msg);
        goto done;
    }
    rc = 0;
done:
    moe_detokenizer_free(detok);
    moe_tokenizer_free(tok);
    trace_json_free(rs.json);
    moe_sampler_free(smp);
    moe_session_free(s);
    moe_model_close(m);
    free(o.prompt);
    free(o.controls);
    return rc;
}
