/* moescope [MODEL] / moescope explore [MODEL]: the explorer. Finds the
 * model (the bundled one when none is given), builds the session, the
 * worker and the terminal, runs the screen, and takes it all down again in
 * reverse order through one exit path. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../args.h"
#include "../cli.h"
#include "../colour.h"
#include "../settings.h"
#include "explore.h"
#include "term.h"
#include "tui.h"

static const char EXPLORE_USAGE[] =
    "usage: moescope [explore] [MODEL] [options]\n"
    "  MODEL                  a model directory or Hugging Face id (default: the bundled\n"
    "                         model: $MOESCOPE_MODEL, then assets/micro-tiny next to the program)\n"
    "  -n, --n-predict N      tokens per reply (default 64)\n"
    "  --temp T               temperature; 0 is greedy (default 0.8)\n"
    "  --seed S               sampling seed (default: random)\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "  -c, --ctx-size N       context length (default: min(model maximum, 4096))\n"
    "  --kv-type T            KV cache type: f32 (default), f16 (half the memory) or\n"
    "                         q8_0 (8-bit blocks of 32, 17/64 of it)\n"
    ACT_TYPE_HELP
    "  --ignore-eos           keep generating past the end-of-generation tokens (EOS, EOT)\n"
    "  --template NAME|FILE   chat with this template (chatml, llama3, mistral, tulu, or a file)\n"
    "  --raw                  raw completion even when the model has a chat template\n"
    "  --system TEXT          chat: the system message (also :system TEXT inside)\n"
    "  --restore, --no-restore  restore the unsaved session of a crashed explorer without\n"
    "                         asking, or start afresh (default: ask)\n"
    "Settings: $XDG_CONFIG_HOME/moescope/config (~/.config/moescope/config), key = value lines:\n"
    "  palette = okabe-ito | classic, colour = vote | LAYER, model = PATH, threads = N, mouse = on | off,\n"
    "  bind KEY = COMMAND (a : command on a key: bind F5 = reprefill, bind x = off 3)\n"
    "Inside: F1 or ? lists every key and command.\n";

/* The bundled model: $MOESCOPE_MODEL, then beside the executable
 * (<exe>/../assets/NAME for the build tree and installs, <exe>/assets/NAME),
 * then the compiled-in data directory; NAME is the trained micro-tiny, or
 * the random-weight tiny-mixtral where only that one is present. */
static int find_default_model(char *buf, size_t len)
{
    const char *env = getenv("MOESCOPE_MODEL");
    if (env && *env) {
        snprintf(buf, len, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        static const char *const REL[] = {"/../assets/micro-tiny", "/assets/micro-tiny",
                                          "/../share/moescope/micro-tiny", "/../assets/tiny-mixtral",
                                          "/assets/tiny-mixtral", "/../share/moescope/tiny-mixtral"};
        for (size_t i = 0; i < sizeof REL / sizeof REL[0]; i++) {
            char p[PATH_MAX + 64], cfg[PATH_MAX + 80];
            snprintf(p, sizeof p, "%s%s", exe, REL[i]);
            snprintf(cfg, sizeof cfg, "%s/config.json", p);
            if (access(cfg, R_OK) == 0 && strlen(p) < len) {
                memcpy(buf, p, strlen(p) + 1);
                return 0;
            }
        }
    }
#ifdef MOESCOPE_DATADIR
    snprintf(buf, len, "%s/micro-tiny", MOESCOPE_DATADIR);
    return 0;
#else
    return -1;
#endif
}

/* colour = LAYER from the settings, or a warning when it is no MoE layer. */
static void colour_setting(tui *t, ui_settings *cfg)
{
    if (!cfg->colour[0] || !strcmp(cfg->colour, "vote"))
        return;
    long l = strtol(cfg->colour[0] == 'L' || cfg->colour[0] == 'l' ? cfg->colour + 1 : cfg->colour, NULL, 10);
    for (int r = 0; r < t->conv.n_routes; r++)
        if (t->conv.route_layer[r] == l)
            t->colour_layer = r;
    if (t->colour_layer < 0)
        snprintf(cfg->warn + strlen(cfg->warn), sizeof cfg->warn - strlen(cfg->warn),
                 "%sconfig: colour %s is not an MoE layer of this model", cfg->warn[0] ? "; " : "", cfg->colour);
}

/* What the explorer and review mode start with alike: no layer colour,
 * no forced expert, no search, the settings' mouse and key bindings. */
static void tui_defaults(tui *t, ui_settings *cfg)
{
    t->colour_layer = -1;
    t->view.forced = -1;
    t->cmd_kind = ':';
    t->match_first = t->match_last = -1;
    t->mouse = cfg->mouse;
    screen_bind_keys(t, cfg);
}

int cmd_explore(int argc, char **argv)
{
    const char *model = NULL, *template_name = NULL, *system = NULL;
    long threads = 0, ctx = 0, n_predict = 64;
    moe_dtype kv_type = MOE_F32, act_type = MOE_DTYPE_COUNT; /* COUNT: the session's default */
    int ignore_eos = 0, seed_set = 0, raw = 0, restore = -1;
    moe_sampler_params sp = moe_sampler_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double f;
#define IS(s) (strcmp(a, s) == 0)
        if (IS("--help") || IS("-h")) {
            fputs(EXPLORE_USAGE, stdout);
            return 0;
        } else if (IS("--ignore-eos")) {
            ignore_eos = 1;
        } else if (IS("--raw")) {
            raw = 1;
        } else if (IS("--restore") || IS("--no-restore")) {
            restore = IS("--restore");
        } else if (a[0] != '-') {
            if (model)
                return fail_msg("unexpected argument '%s' (the model is '%s')", a, model);
            model = a;
        } else if (!v) {
            return fail_msg("%s needs a value (see moescope explore --help)", a);
        } else if (IS("-n") || IS("--n-predict")) {
            if (!arg_int(a, v, 1, 1 << 20, &n_predict)) return 2;
            i++;
        } else if (IS("-t") || IS("--threads")) {
            if (!arg_int(a, v, 1, 256, &threads)) return 2;
            i++;
        } else if (IS("-c") || IS("--ctx-size")) {
            if (!arg_int(a, v, 16, 1 << 20, &ctx)) return 2;
            i++;
        } else if (IS("--kv-type")) {
            if (!arg_kv_type("--kv-type", v, &kv_type)) return 2;
            i++;
        } else if (IS("--act-type")) {
            if (!arg_act_type("--act-type", v, &act_type)) return 2;
            i++;
        } else if (IS("--template")) {
            template_name = v;
            i++;
        } else if (IS("--system")) {
            system = v;
            i++;
        } else if (IS("--temp")) {
            if (!arg_float(a, v, 0, 100, &f)) return 2;
            sp.temp = (float)f;
            i++;
        } else if (IS("--seed")) {
            char *end;
            sp.seed = strtoull(v, &end, 10);
            if (!*v || *end || *v == '-')
                return fail_msg("--seed expects a non-negative integer, not '%s'", v);
            seed_set = 1;
            i++;
        } else {
            return fail_msg("unknown option '%s' (see moescope explore --help)", a);
        }
#undef IS
    }
    ui_settings cfg;
    settings_load(&cfg);
    colour_palette_set((colour_palette)cfg.palette);
    if (!threads)
        threads = cfg.threads;
    const char *env = getenv("MOESCOPE_MODEL");
    if (!model && !(env && *env) && cfg.model[0])
        model = cfg.model;
    char def[PATH_MAX];
    if (!model) {
        if (find_default_model(def, sizeof def))
            return fail_msg("no model given and the bundled one was not found; set MOESCOPE_MODEL or "
                            "give a model directory");
        model = def;
    }
    if (!seed_set)
        sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);

    tui *t = calloc(1, sizeof *t);
    if (!t)
        return fail_msg("out of memory");
    int rc = 1, term = 0, worker = 0, locks = 0, ran = 0;
    moe_error err = {0};
    t->sp = sp;
    t->n_predict = (int)n_predict;
    t->ignore_eos = ignore_eos;
    t->cursor = -1;
    tui_defaults(t, &cfg);
    moe_session_params prm = {(int)ctx, (int)threads, 0};
    if (moe_model_open(model, &t->m, &err) || moe_session_new(t->m, &prm, &t->s, &err) ||
        moe_session_set_kv_type(t->s, kv_type, &err) ||
        (act_type != MOE_DTYPE_COUNT && moe_session_set_act_type(t->s, act_type, &err))) {
        fail_msg("%s", err.msg);
        goto done;
    }
    t->info = moe_model_info_get(t->m);
    if (moe_sampler_new(&sp, t->info->vocab, &t->smp, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    if (moe_tokenizer_present(t->info->path) && moe_tokenizer_open(t->info->path, &t->tok, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    t->model_name = strrchr(t->info->path, '/') && strrchr(t->info->path, '/')[1] ? strrchr(t->info->path, '/') + 1
                                                                                : t->info->path;
    int R = t->info->n_moe_layers, E = t->info->n_experts;
    if (convo_init(&t->conv, R, E, t->info->n_layers, t->tok) ||
        !(t->view.k = calloc((size_t)R + 1, sizeof *t->view.k)) ||
        !(t->view.on = calloc((size_t)R * (size_t)E + 1, 1))) {
        fail_msg("out of memory");
        goto done;
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->sess_lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    locks = 1;
    if (record_init(t)) {
        fail_msg("out of memory");
        goto done;
    }
    view_refresh(t);
    /* chat mode when the model has a template (or one is named), else raw */
    char chat_msg[512] = "";
    int chat_err = 0;
    if (t->tok && !raw)
        chat_err = chat_set_template(t, template_name ? template_name : "model", chat_msg, sizeof chat_msg) &&
                   template_name;
    else if (template_name)
        chat_err = 1, snprintf(chat_msg, sizeof chat_msg, "--template: %s",
                               raw ? "--raw turns chat off" : "this model has no tokenizer");
    if (system && chat_set_system(&t->chat, system)) {
        fail_msg("out of memory");
        goto done;
    }
    colour_setting(t, &cfg);
    if (worker_start(t)) {
        fail_msg("cannot start the generation thread");
        goto done;
    }
    worker = 1;
    if (term_init())
        goto done;
    term = 1;
    term_wake_fd = t->wake_fd[1];
    t->nocolour = term_nocolour();
    prompt_init(t);
    term_mouse(t->mouse);
    char old_msg[1024];
    transcript *old = restore ? autosave_find(t, old_msg, sizeof old_msg) : NULL;
    if (old && restore == 1) {
        tui_message(t, 0, "restoring %d tokens...", transcript_n_tokens(old));
        worker_submit_restore(t, old);
    } else if (old) { /* ask; until the answer the old autosave is kept */
        t->restore = old;
        t->autosave_off = 1;
    }
    if (old_msg[0] && restore)
        tui_message(t, 1, "%s", old_msg);
    else if (cfg.warn[0])
        tui_message(t, 1, "%s (in %s)", cfg.warn, cfg.path);
    else if (chat_err)
        tui_message(t, 1, "%s", chat_msg);
    else if (!(old && restore == 1)) /* else the restore speaks */
        tui_message(t, 0, "%s: %s, %d layers, %d experts, top-%d, %s. Type a prompt and press Enter; F1 for help.",
                    t->model_name, t->info->arch, t->info->n_layers, E, t->info->k,
                    t->chat.on ? "chat" : t->tok ? "raw completion" : "no tokenizer: prompts are ids (#1,5,9)");
    rc = screen_run(t) ? 1 : 0;
    ran = 1;
    prompt_done();
done:
    if (term)
        term_done();
    if (worker)
        worker_stop(t);
    /* a quit asked for by the user ends the session; a signal (a closed
     * terminal, kill) keeps it for the next start */
    if (ran && !term_quit_signal && !rc)
        autosave_remove(t);
    else if (ran)
        autosave_tick(t, 1);
    if (term_quit_signal && term)
        fprintf(stderr, "moescope: quit on signal %d\n", (int)term_quit_signal);
    if (locks) {
        pthread_mutex_destroy(&t->lock);
        pthread_mutex_destroy(&t->sess_lock);
        pthread_cond_destroy(&t->cond);
        record_done(t);
    }
    transcript_free(t->restore);
    transcript_free(t->job_old); /* a restore queued as the explorer quit */
    free(t->job_text);
    free(t->view.k);
    free(t->view.on);
    convo_done(&t->conv);
    chat_done(&t->chat);
    moe_tokenizer_free(t->tok);
    moe_sampler_free(t->smp);
    moe_session_free(t->s);
    moe_model_close(t->m);
    free(t);
    return rc;
}

static const char VIEW_USAGE[] =
    "usage: moescope view FILE [--replay [MODEL]]\n"
    "  open a saved transcript in the explorer in review mode, without the model: the\n"
    "  conversation in expert colours, the cursor, the router and usage panes; the\n"
    "  controls that need the model are shown disabled\n"
    "  --replay [MODEL]  instead, run the session again on MODEL (default: the transcript's)\n"
    "                    and report the first token where it diverges (moescope replay)\n";

/* moescope view FILE: the explorer on a transcript, without a model,
 * session or worker. The tokens reach the panes as a live session's trace
 * sink would deliver them (transcript_token_trace). */
int cmd_view(int argc, char **argv)
{
    const char *file = NULL;
    int replay = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(VIEW_USAGE, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--replay")) {
            replay = i;
        } else if (argv[i][0] == '-' && !replay) {
            return fail_msg("view: unknown option '%s' (see moescope view --help)", argv[i]) + 1;
        } else if (!file) {
            file = argv[i];
        } else if (!replay) {
            return fail_msg("view: unexpected argument '%s'", argv[i]) + 1;
        }
    }
    if (!file)
        return fail_msg("view: no transcript given (see moescope view --help)") + 1;
    if (replay) { /* moescope replay FILE [MODEL] [options] */
        char **av = calloc((size_t)argc + 1, sizeof *av);
        if (!av)
            return fail_msg("out of memory");
        int n = 0;
        av[n++] = "replay";
        av[n++] = (char *)file;
        for (int i = 1; i < argc; i++)
            if (i != replay && argv[i] != file)
                av[n++] = argv[i];
        int rc = cmd_replay(n, av);
        free(av);
        return rc;
    }
    char msg[1024];
    transcript *rec = transcript_load(file, msg, sizeof msg);
    if (!rec) /* before the terminal is touched */
        return fail_msg("%s", msg);
    ui_settings cfg;
    settings_load(&cfg);
    colour_palette_set((colour_palette)cfg.palette);
    tui *t = calloc(1, sizeof *t);
    if (!t) {
        transcript_free(rec);
        return fail_msg("out of memory");
    }
    const transcript_model *tm = transcript_model_get(rec);
    int R = tm->n_moe_layers, E = tm->n_experts, n = transcript_n_tokens(rec), rc = 1, term = 0;
    t->review = 1;
    t->rec = rec;
    t->autosave_off = 1;
    t->review_info = (moe_model_info){.arch = tm->arch, .hf_class = tm->hf_class, .path = tm->path,
                                      .n_layers = tm->n_layers, .n_experts = E, .k = tm->k, .n_moe_layers = R,
                                      .expert_names = tm->expert_names, .vocab = tm->vocab};
    t->info = &t->review_info;
    const char *slash = strrchr(tm->path, '/');
    t->model_name = slash && slash[1] ? slash + 1 : tm->path;
    t->sp = *transcript_sampler(rec);
    t->focus = FOCUS_TRANSCRIPT;
    t->cursor = n ? 0 : -1;
    tui_defaults(t, &cfg);
    t->wake_fd[0] = t->wake_fd[1] = -1;
    moe_route *routes = calloc((size_t)R + 1, sizeof *routes);
    if (!routes || convo_init(&t->conv, R, E, tm->n_layers, NULL) ||
        !(t->view.k = calloc((size_t)R + 1, sizeof *t->view.k)) ||
        !(t->view.on = calloc((size_t)R * (size_t)E + 1, 1)) || pipe(t->wake_fd)) {
        fail_msg("out of memory");
        goto done;
    }
    for (int r = 0; r < R; r++)
        t->view.k[r] = tm->k;
    memset(t->view.on, 1, (size_t)R * (size_t)E);
    for (int i = 0; i < n; i++) {
        const transcript_token *tk = transcript_token_at(rec, i);
        moe_token_trace tt;
        transcript_token_trace(rec, i, routes, &tt);
        t->conv.prompt_mode = tk->prompt;
        convo_add_text(&t->conv, &tt, tk->text, tk->len);
    }
    t->conv.prompt_mode = 0;
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->sess_lock, NULL);
    pthread_mutex_init(&t->rec_lock, NULL);
    colour_setting(t, &cfg);
    if (term_init())
        goto unlock;
    term = 1;
    term_wake_fd = t->wake_fd[1];
    t->nocolour = term_nocolour();
    term_mouse(t->mouse);
    if (cfg.warn[0])
        tui_message(t, 1, "%s (in %s)", cfg.warn, cfg.path);
    else
        tui_message(t, 0, "review of %s: %d tokens, %d turns, %d control changes, made %s; no model",
                    file, n, transcript_n_turns(rec), transcript_n_controls(rec), transcript_created(rec));
    rc = screen_run(t) ? 1 : 0;
unlock:
    if (term)
        term_done();
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->sess_lock);
    pthread_mutex_destroy(&t->rec_lock);
done:
    for (int i = 0; i < 2; i++)
        if (t->wake_fd[i] >= 0)
            close(t->wake_fd[i]);
    free(routes);
    free(t->view.k);
    free(t->view.on);
    convo_done(&t->conv);
    transcript_free(t->rec);
    free(t);
    return rc;
}
