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
#include "settings.h"
#include "controls_parse.h"
#include "moescope/moescope.h"
#include "transcript.h"

static const char RUN_USAGE[] =
    "usage: moescope run MODEL (-p TEXT | --prompt-ids IDS) [options]\n"
    "  -p, --prompt TEXT      the prompt as text (needs the model's tokenizer)\n"
    "  --prompt-ids 1,5,9     the prompt as token ids\n"
    "  --chat                 wrap the prompt in the model's chat template (a user turn)\n"
    "  --template NAME|FILE   the chat template: chatml, llama3, mistral, tulu, or a file\n"
    "  --system TEXT          a system message before the prompt (with --chat)\n"
    "  --print-prompt         print the prompt as the model will see it, then stop\n"
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
    "  --kv-type T            KV cache type: f32 (default), f16 (half the memory) or\n"
    "                         q8_0 (8-bit blocks of 32, 17/64 of it)\n"
    ACT_TYPE_HELP
    "  --ignore-eos           keep generating past the end-of-generation tokens (EOS, EOT)\n"
    "  --print-ids            print only the generated ids, space-separated, on one line\n"
    "  --save FILE            save the session as a transcript (JSON: turns, every token's\n"
    "                         routing in all layers, controls; see docs/transcript.schema.json)\n"
    "  --trace FILE           the same document (the name from before transcripts)\n"
    "controls (repeatable; L: limits one to layer L):\n"
    "  --k N | L:N            experts per token (default: the model's own)\n"
    "  --expert-off E[,E] | L:E[,E]   switch experts off (--expert-on to undo)\n"
    "  --force E[,E] | L:E[,E]        send every token to these experts\n"
    "  --bias E=X | L:E=X     add X to expert E's router logit\n"
    "  --offset L:N=D | L:E:N=D | L:resid:N=D   add D to a neuron (steering)\n"
    "  --capacity C[,drop]    mark (or drop) assignments past capacity C x tokens x k / experts\n"
    "colour:\n"
    "  --colour auto|always|never     colour tokens by expert (auto: on a terminal, unless NO_COLOR)\n"
    "  --colour-by vote|LAYER         the layers' majority vote (default) or one layer's top expert\n"
    "  --palette okabe-ito|classic    the expert colours (default: the settings file's, else okabe-ito)\n"
    "Settings: palette and colour come from $XDG_CONFIG_HOME/moescope/config when not given here.\n";

typedef struct {
    const char *verb, *arg;
} control_arg;

typedef struct {
    const char *model;
    const char *trace;
    const char *save;          /* --save */
    const char *text;          /* -p */
    const char *template_name; /* --template */
    const char *system;        /* --system */
    int chat, print_prompt;
    int32_t *prompt;
    int n_prompt;
    long n_predict, threads, ctx, batch;
    int ignore_eos, print_ids, seed_set;
    moe_dtype kv_type;         /* --kv-type */
    moe_dtype act_type;        /* --act-type; MOE_DTYPE_COUNT: the session's default */
    moe_sampler_params sp;
    control_arg *controls;
    int n_controls;
    colour_when colour;
    int colour_layer;          /* -1: vote */
    int colour_by_set;         /* --colour-by given: the settings file's colour is not used */
    int palette;               /* --palette; -1: the settings file's */
} run_opts;

/* Flags that take a value, and the control verb each stands for. */
static const struct {
    const char *flag, *verb;
} FLAGS[] = {
    {"--prompt-ids", NULL}, {"-p", NULL}, {"--prompt", NULL}, {"-n", NULL}, {"--n-predict", NULL},
    {"--temp", NULL}, {"--top-k", NULL}, {"--top-p", NULL}, {"--min-p", NULL},
    {"--repeat-penalty", NULL}, {"--repeat-last-n", NULL}, {"--seed", NULL}, {"-t", NULL},
    {"--threads", NULL}, {"-c", NULL}, {"--ctx-size", NULL}, {"-b", NULL}, {"--batch-size", NULL},
    {"--kv-type", NULL}, {"--act-type", NULL}, {"--trace", NULL}, {"--save", NULL}, {"--template", NULL}, {"--system", NULL}, {"--colour", NULL}, {"--color", NULL}, {"--colour-by", NULL},
    {"--palette", NULL},
    {"--k", "k"}, {"--expert-off", "off"}, {"--expert-on", "on"}, {"--force", "force"},
    {"--bias", "bias"}, {"--offset", "offset"}, {"--capacity", "capacity"},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The settings file's palette and colour, where the flags leave them
 * open. Its problems are warnings: the run goes on with the defaults. */
static void settings_colour(run_opts *o, const moe_model_info *in)
{
    ui_settings cfg;
    settings_load(&cfg);
    colour_palette_set((colour_palette)(o->palette >= 0 ? o->palette : cfg.palette));
    if (!o->colour_by_set && cfg.colour[0] && strcmp(cfg.colour, "vote") != 0) {
        long l = strtol(cfg.colour + (cfg.colour[0] == 'L' || cfg.colour[0] == 'l'), NULL, 10);
        if (l < in->n_layers && in->n_moe_layers)
            o->colour_layer = (int)l;
        else
            settings_warn(&cfg, "colour = %s: the model has %d layers%s", cfg.colour, in->n_layers,
                          in->n_moe_layers ? "" : " and no experts");
    }
    if (cfg.warn[0])
        fprintf(stderr, "moescope: warning: %s (in %s)\n", cfg.warn, cfg.path);
}

/* Returns 0 on success, -1 after --help, or the exit status after printing
 * the problem. */
static int parse(int argc, char **argv, run_opts *o)
{
    o->n_predict = 128;
    o->sp = moe_sampler_defaults();
    o->colour_layer = -1;
    o->palette = -1;
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
        } else if (IS("--chat")) {
            o->chat = 1;
            continue;
        } else if (IS("--print-prompt")) {
            o->print_prompt = 1;
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
        } else if (IS("--save")) {
            o->save = v;
        } else if (IS("--template")) {
            o->template_name = v;
            o->chat = 1;
        } else if (IS("--system")) {
            o->system = v;
        } else if (IS("--colour") || IS("--color")) {
            if (!strcmp(v, "auto"))
                o->colour = COLOUR_AUTO;
            else if (!strcmp(v, "always"))
                o->colour = COLOUR_ALWAYS;
            else if (!strcmp(v, "never"))
                o->colour = COLOUR_NEVER;
            else
                return fail_msg("%s expects auto, always or never, not '%s'", a, v) + 1;
        } else if (IS("--palette")) {
            if ((o->palette = colour_palette_find(v)) < 0)
                return fail_msg("--palette is okabe-ito or classic, not '%s'", v) + 1;
        } else if (IS("--colour-by")) {
            o->colour_by_set = 1;
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
        } else if (IS("--kv-type")) {
            if (!arg_kv_type("--kv-type", v, &o->kv_type)) return 2;
        } else if (IS("--act-type")) {
            if (!arg_act_type("--act-type", v, &o->act_type)) return 2;
        }
#undef IS
    }
    if (!o->model)
        return fail_msg("run: no model given (see moescope run --help)") + 1;
    if (!o->prompt && !o->text)
        return fail_msg("run: no prompt given; use -p TEXT or --prompt-ids 1,5,9") + 1;
    if (o->prompt && o->text)
        return fail_msg("run: give the prompt as text (-p) or as ids (--prompt-ids), not both") + 1;
    if (o->chat && !o->text)
        return fail_msg("run: --chat wraps a text prompt; give it with -p") + 1;
    if (o->system && !o->chat)
        return fail_msg("run: --system needs --chat") + 1;
    if (!o->seed_set)
        o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    return 0;
}

/* Wrap the prompt in a chat template (the model's own, or --template) and
 * append the tokens that end the assistant's turn to stops (which holds
 * *n_stops ids and room for 16). Returns the rendered text (caller frees)
 * or NULL after printing the problem. */
static char *render_chat(const run_opts *o, const moe_model_info *in, const moe_tokenizer *tok, int32_t *stops,
                         int *n_stops)
{
    char *src = NULL, *bos = NULL, *eos = NULL, *out = NULL;
    moe_error err = {0};
    const char *builtin = o->template_name ? moe_chat_builtin(o->template_name) : NULL;
    if (o->template_name && !builtin) {
        /* not a built-in: a file holding a template */
        FILE *f = fopen(o->template_name, "rb");
        if (!f) {
            fail_msg("--template %s: neither a built-in template (%s) nor a readable file", o->template_name,
                     moe_chat_builtin_names());
            return NULL;
        }
        size_t cap = 1 << 20, n = 0;
        src = malloc(cap + 1);
        if (src)
            n = fread(src, 1, cap, f);
        fclose(f);
        if (!src || n == cap) {
            free(src);
            fail_msg("--template %s: unreadable or larger than 1 MiB", o->template_name);
            return NULL;
        }
        src[n] = 0;
    }
    /* BOS/EOS texts from tokenizer_config.json even when the template is ours */
    char *model_src = NULL;
    moe_status st = moe_chat_template_load(in->path, &model_src, &bos, &eos, &err);
    if (!builtin && !src) {
        if (st) {
            fail_msg("%s; pick a built-in template with --template (%s)", err.msg, moe_chat_builtin_names());
            goto done;
        }
        src = model_src;
        model_src = NULL;
    }
    moe_chat_message msgs[2];
    int n = 0;
    if (o->system)
        msgs[n++] = (moe_chat_message){"system", o->system};
    msgs[n++] = (moe_chat_message){"user", o->text};
    if (moe_chat_render(builtin ? builtin : src, msgs, n, 1, bos, eos, &out, &err)) {
        fail_msg("chat template: %s", err.msg);
        goto done;
    }
    /* end-of-turn strings that are single tokens stop generation */
    const char *strs[16];
    int ns = moe_chat_stop_strings(builtin ? builtin : src, eos, strs, 16);
    for (int i = 0; i < ns && *n_stops < 16; i++) {
        int32_t *ids = NULL;
        int nid = 0;
        if (!moe_tokenizer_encode(tok, strs[i], strlen(strs[i]), 0, &ids, &nid, NULL) && nid == 1)
            stops[(*n_stops)++] = ids[0];
        free(ids);
    }
done:
    free(model_src);
    free(src);
    free(bos);
    free(eos);
    return out;
}

/* What the run's trace sink sees: it records the colour expert of the
 * latest token and passes everything on to the transcript, if any. */
typedef struct {
    transcript *tr;
    int colour_layer;
    int last_colour;
} run_sink;

static void on_token(void *ctx, const moe_token_trace *t)
{
    run_sink *rs = ctx;
    rs->last_colour = -1;
    if (rs->colour_layer < 0 && t->n_routes) {
        rs->last_colour = transcript_colour_vote(t);
    } else {
        for (int r = 0; r < t->n_routes; r++)
            if (t->routes[r].layer == rs->colour_layer)
                rs->last_colour = t->routes[r].experts[0];
    }
    if (rs->tr)
        transcript_add_token(rs->tr, t);
}

/* Fill in what the transcript learns only at the end (the turns' texts
 * when they were given as ids or printed as ids, the controls) and write it
 * to each path asked for. 0, or 1 after printing the problem. */
static int finish_transcript(transcript *tr, const moe_tokenizer *tok, int reply, const moe_control_event *log,
                             int n_log, const char *save, const char *trace)
{
    transcript_sync_controls(tr, log, n_log, 0); /* all set before the first token: untimed */
    int n = transcript_n_tokens(tr);
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) {
        fail_msg("out of memory");
        return 1;
    }
    /* text the streaming loop did not see: a prompt given as ids, a reply printed as ids */
    for (int part = 0; tok && part < 2; part++) {
        int turn = part ? reply : reply - 1, m = 0;
        if (*transcript_turn_at(tr, turn)->text)
            continue;
        for (int i = 0; i < n; i++)
            if (transcript_token_at(tr, i)->prompt == !part)
                ids[m++] = transcript_token_at(tr, i)->id;
        char *text = NULL;
        size_t len = 0;
        if (m && !moe_tokenizer_decode(tok, ids, m, part, &text, &len, NULL))
            transcript_turn_append(tr, turn, text, len);
        free(text);
    }
    free(ids);
    char msg[512];
    if ((save && transcript_save(tr, save, msg, sizeof msg)) || (trace && transcript_save(tr, trace, msg, sizeof msg))) {
        fail_msg("%s", msg);
        return 1;
    }
    return 0;
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {0};
    o.act_type = MOE_DTYPE_COUNT;
    int rc = parse(argc, argv, &o);
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_sampler *smp = NULL;
    moe_tokenizer *tok = NULL;
    moe_detokenizer *detok = NULL;
    char *chat_text = NULL;
    run_sink rs = {0};
    moe_error err = {0};
    if (rc) {
        rc = rc < 0 ? 0 : rc;
        goto done;
    }
    moe_session_params sp = {(int)o.ctx, (int)o.threads, (int)o.batch};
    rc = 1;
    if (moe_model_open(o.model, &m, &err) || moe_session_new(m, &sp, &s, &err) ||
        moe_session_set_kv_type(s, o.kv_type, &err) ||
        (o.act_type != MOE_DTYPE_COUNT && moe_session_set_act_type(s, o.act_type, &err)) ||
        moe_sampler_new(&o.sp, moe_model_info_get(m)->vocab, &smp, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    const moe_model_info *in = moe_model_info_get(m);
    /* The tokenizer is optional for ids in and ids out, required for text. */
    int has_tok = moe_tokenizer_present(in->path);
    if ((o.text || has_tok) && moe_tokenizer_open(in->path, &tok, &err)) {
        fail_msg("%s%s", err.msg, has_tok ? "" : "; give the prompt as --prompt-ids");
        goto done;
    }
    /* generation ends on the model's EOS, the tokenizer's end-of-generation
     * ids (moe_tokenizer_is_eog) and, in a chat, the template's end of turn */
    int32_t stops[17];
    int n_stops = 0;
    if (in->eos_id >= 0)
        stops[n_stops++] = in->eos_id;
    if (o.chat && !(chat_text = render_chat(&o, in, tok, stops, &n_stops)))
        goto done;
    /* a rendered template carries its own BOS, as transformers' apply_chat_template assumes */
    const char *text = chat_text ? chat_text : o.text;
    if (text && moe_tokenizer_encode(tok, text, strlen(text), !chat_text, &o.prompt, &o.n_prompt, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    if (o.print_prompt) {
        if (text)
            fputs(text, stdout);
        printf("%s[%d tokens:", text && *text && text[strlen(text) - 1] == '\n' ? "" : "\n", o.n_prompt);
        for (int i = 0; i < o.n_prompt; i++)
            printf(" %d", (int)o.prompt[i]);
        printf("]\n");
        rc = 0;
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
    settings_colour(&o, in);
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
    int reply = -1; /* the assistant's turn in the transcript */
    if (o.trace || o.save) {
        if (!(rs.tr = transcript_new(m, tok, &o.sp)) || (o.system && transcript_add_turn(rs.tr, "system", o.system) < 0) ||
            transcript_add_turn(rs.tr, "user", o.text) < 0) {
            fail_msg("out of memory for the transcript");
            goto done;
        }
        transcript_set_prompt(rs.tr, 1);
    }
    moe_trace_sink sink = {&rs, on_token};
    moe_session_set_trace(s, &sink);
    if (!o.print_ids) {
        fprintf(stderr, "seed %llu\n", (unsigned long long)o.sp.seed);
        if (colour)
            colour_legend(stderr, in->n_experts, in->expert_names);
    }

    for (int i = 0; i < o.n_prompt; i++)
        moe_sampler_accept(smp, o.prompt[i]);
    if (text_out && text) { /* the prompt first, as llama.cpp does */
        fputs(text, stdout);
        fflush(stdout);
    }
    double t0 = now();
    if (moe_session_eval(s, o.prompt, o.n_prompt, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    double t1 = now();
    if (rs.tr) {
        transcript_set_prompt(rs.tr, 0);
        reply = transcript_add_turn(rs.tr, "assistant", NULL);
    }
    /* Each sampled token is fed back before it is printed: its routing,
     * and so its colour, is known only once the model has seen it. */
    int n_gen = 0;
    while (n_gen < o.n_predict) {
        int32_t id = moe_sampler_sample(smp, moe_session_logits(s));
        moe_sampler_accept(smp, id);
        int stop = tok && moe_tokenizer_is_eog(tok, id);
        for (int i = 0; i < n_stops; i++)
            stop |= id == stops[i];
        int last = n_gen + 1 == o.n_predict || (stop && !o.ignore_eos);
        int feed = !last || rs.tr || colour;
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
    fflush(stdout); /* the generation before the timings on stderr, also when both are piped */
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
    if (rs.tr && finish_transcript(rs.tr, tok, reply, log, n_log, o.save, o.trace))
        goto done;
    rc = 0;
done:
    free(chat_text);
    moe_detokenizer_free(detok);
    moe_tokenizer_free(tok);
    transcript_free(rs.tr);
    moe_sampler_free(smp);
    moe_session_free(s);
    moe_model_close(m);
    free(o.prompt);
    free(o.controls);
    return rc;
}
