/* moescope analyze MODEL FILE...: routing statistics over texts, one file
 * per domain as in the papers' benchmarks. Each file runs through the model
 * in windows of the context length; every token's routing feeds the
 * statistics of its file and of the whole. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "controls_parse.h"
#include "corpus.h"
#include "moescope/moescope.h"

static const char ANALYZE_USAGE[] =
    "usage: moescope analyze MODEL FILE... [options]\n"
    "  --ids                  files hold token ids (whitespace or comma separated), not text\n"
    "  --json | --csv         machine-readable output instead of the table\n"
    "  --capacity C           capacity factor for the overflow figure (default 1.0)\n"
    "  --batch N              tokens per batch for capacity (default 512)\n"
    "  -c, --ctx-size N       tokens per window (default: min(model maximum, 4096))\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "  --k, --expert-off, --expert-on, --force, --bias, --offset   controls, as for run\n"
    "Figures per MoE layer: share of tokens whose first choice is each expert; the\n"
    "rate at which consecutive tokens keep their first choice (same-1) or share any\n"
    "expert (same-k), with the rate random routing would give; coefficients of\n"
    "variation of importance and load; the share of assignments past capacity.\n";

typedef struct {
    moe_stats *file, *all;
    int *layer_of;             /* (n_routes) model layer of each MoE layer */
} analyze_sink;

static void on_token(void *ctx, const moe_token_trace *t)
{
    analyze_sink *a = ctx;
    for (int r = 0; r < t->n_routes; r++)
        a->layer_of[r] = t->routes[r].layer;
    moe_stats_add(a->file, t);
    moe_stats_add(a->all, t);
}

static void put_layer_json(cJSON *arr, int layer, const moe_stats_layer *L, int E)
{
    cJSON *o = cJSON_CreateObject();
    if (layer >= 0)
        cJSON_AddNumberToObject(o, "layer", layer);
    else
        cJSON_AddStringToObject(o, "layer", "all");
    cJSON_AddItemToObject(o, "share_top1", cJSON_CreateDoubleArray(L->share_top1, E));
    cJSON_AddItemToObject(o, "share_any", cJSON_CreateDoubleArray(L->share_any, E));
    cJSON_AddNumberToObject(o, "same_top1", L->same_top1);
    cJSON_AddNumberToObject(o, "same_any", L->same_any);
    cJSON_AddNumberToObject(o, "chance_top1", L->chance_top1);
    cJSON_AddNumberToObject(o, "chance_any", L->chance_any);
    cJSON_AddNumberToObject(o, "cv_importance", L->cv_importance);
    cJSON_AddNumberToObject(o, "cv_load", L->cv_load);
    cJSON_AddNumberToObject(o, "overflow", L->overflow);
    cJSON_AddItemToArray(arr, o);
}

typedef enum { OUT_TABLE, OUT_JSON, OUT_CSV } out_kind;

/* One block of output: a file's (or the whole's) figures per layer. */
static void report(out_kind kind, const char *name, moe_stats *st, int n_routes, const int *layer_of, int E,
                   const char *const *names, cJSON *json_files)
{
    moe_stats_layer L;
    if (kind == OUT_JSON) {
        cJSON *f = cJSON_CreateObject(), *layers = cJSON_CreateArray();
        cJSON_AddStringToObject(f, "file", name);
        moe_stats_get(st, -1, &L);
        cJSON_AddNumberToObject(f, "tokens", (double)L.n_tokens);
        for (int r = 0; r < n_routes; r++) {
            moe_stats_get(st, r, &L);
            put_layer_json(layers, layer_of[r], &L, E);
        }
        moe_stats_get(st, -1, &L);
        put_layer_json(layers, -1, &L, E);
        cJSON_AddItemToObject(f, "layers", layers);
        cJSON_AddItemToArray(json_files, f);
        return;
    }
    for (int r = 0; r <= n_routes; r++) {
        moe_stats_get(st, r < n_routes ? r : -1, &L);
        char lname[16];
        if (r < n_routes)
            snprintf(lname, sizeof lname, "%d", layer_of[r]);
        else
            snprintf(lname, sizeof lname, "all");
        if (kind == OUT_CSV) {
            for (int e = 0; e < E; e++)
                printf("\"%s\",%s,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f\n", name, lname, e, L.share_top1[e],
                       L.share_any[e], L.same_top1, L.same_any, L.cv_importance, L.cv_load, L.overflow);
            continue;
        }
        if (r == 0)
            printf("\n%s: %llu tokens\n%-6s", name, (unsigned long long)L.n_tokens, "layer");
        if (r == 0) {
            for (int e = 0; e < E && e < 16; e++)
                if (names) /* the column's 8 characters hold a name's first 7 */
                    printf(" %7.7s", names[e]);
                else
                    printf(" %5s%-2d", "e", e);
            printf("  %-15s %-15s %6s %6s %8s\n", "same-1 (chance)", "same-k (chance)", "CVimp", "CVload",
                   "overflow");
        }
        printf("%-6s", lname);
        for (int e = 0; e < E && e < 16; e++)
            printf(" %6.1f%%", 100 * L.share_top1[e]);
        printf("  %5.1f%% (%4.1f%%)  %5.1f%% (%4.1f%%) %6.3f %6.3f %7.2f%%\n", 100 * L.same_top1,
               100 * L.chance_top1, 100 * L.same_any, 100 * L.chance_any, L.cv_importance, L.cv_load,
               100 * L.overflow);
    }
}

int cmd_analyze(int argc, char **argv)
{
    const char *model = NULL;
    const char **files = calloc((size_t)argc, sizeof *files);
    const char **ctl = calloc((size_t)argc * 2, sizeof *ctl);
    int n_files = 0, n_ctl = 0, ids_mode = 0, rc = 2;
    out_kind kind = OUT_TABLE;
    double capacity = 1.0;
    long batch = 512, ctx = 0, threads = 0;
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_tokenizer *tok = NULL;
    analyze_sink sink = {0};
    cJSON *json = NULL;
    int32_t *ids = NULL;
    if (!files || !ctl) {
        fail_msg("out of memory");
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(ANALYZE_USAGE, stdout);
            rc = 0;
            goto done;
        } else if (a[0] != '-') {
            if (!model)
                model = a;
            else
                files[n_files++] = a;
        } else if (!strcmp(a, "--ids")) {
            ids_mode = 1;
        } else if (!strcmp(a, "--json")) {
            kind = OUT_JSON;
        } else if (!strcmp(a, "--csv")) {
            kind = OUT_CSV;
        } else if (!v) {
            fail_msg("analyze: %s needs a value", a);
            goto done;
        } else if (!strcmp(a, "--capacity")) {
            if (!arg_float(a, v, 1e-3, 1e3, &capacity))
                goto done;
            i++;
        } else if (!strcmp(a, "--batch")) {
            if (!arg_int(a, v, 1, 1 << 20, &batch))
                goto done;
            i++;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            if (!arg_int(a, v, 1, 1 << 20, &ctx))
                goto done;
            i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!arg_int(a, v, 1, 256, &threads))
                goto done;
            i++;
        } else if (control_flag_verb(a)) {
            ctl[n_ctl++] = control_flag_verb(a);
            ctl[n_ctl++] = v;
            i++;
        } else {
            fail_msg("analyze: unknown option '%s' (see moescope analyze --help)", a);
            goto done;
        }
    }
    if (!model || !n_files) {
        fail_msg("analyze: give a model and at least one file (see moescope analyze --help)");
        goto done;
    }
    rc = 1;
    moe_error err = {0};
    moe_session_params sp = {(int)ctx, (int)threads, 0};
    if (moe_model_open(model, &m, &err) || moe_session_new(m, &sp, &s, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    const moe_model_info *in = moe_model_info_get(m);
    if (!in->n_moe_layers) {
        fail_msg("%s is a dense model: there is no routing to analyze", in->hf_class);
        goto done;
    }
    if (!ids_mode && moe_tokenizer_open(in->path, &tok, &err)) {
        fail_msg("%s (for files of token ids, use --ids)", err.msg);
        goto done;
    }
    for (int i = 0; i < n_ctl; i += 2) {
        char msg[512];
        if (control_apply(s, ctl[i], ctl[i + 1], msg, sizeof msg)) {
            fail_msg("%s", msg);
            goto done;
        }
    }
    int k = moe_session_get_k(s, -1), E = in->n_experts, nr = in->n_moe_layers;
    moe_stats *all = NULL;
    if (moe_stats_new(nr, E, k, capacity, (int)batch, &all, &err) ||
        !(sink.layer_of = calloc((size_t)nr, sizeof *sink.layer_of))) {
        fail_msg("%s", err.msg);
        moe_stats_free(all);
        goto done;
    }
    sink.all = all;
    moe_trace_sink ts = {&sink, on_token};
    moe_session_set_trace(s, &ts);
    int progress = isatty(fileno(stderr)) && kind == OUT_TABLE;
    json = cJSON_CreateObject();
    cJSON *jfiles = cJSON_AddArrayToObject(json, "files");
    if (kind == OUT_CSV)
        printf("file,layer,expert,share_top1,share_any,same_top1,same_any,cv_importance,cv_load,overflow\n");
    for (int f = 0; f < n_files; f++) {
        int n = 0;
        free(ids);
        ids = NULL;
        if (corpus_read(files[f], ids_mode ? NULL : tok, 0, in->vocab, &ids, &n))
            goto done_stats;
        if (moe_stats_new(nr, E, k, capacity, (int)batch, &sink.file, &err)) {
            fail_msg("%s", err.msg);
            goto done_stats;
        }
        /* windows of the context length, each a sequence of its own */
        int win = moe_session_n_ctx(s);
        for (int at = 0; at < n; at += win) {
            int len = n - at < win ? n - at : win;
            moe_session_reset(s);
            moe_stats_break(sink.file);
            moe_stats_break(all);
            if (moe_session_eval(s, ids + at, len, &err)) {
                fail_msg("%s: %s", files[f], err.msg);
                goto done_stats;
            }
            if (progress)
                fprintf(stderr, "\ranalyze: file %d/%d, %d/%d tokens", f + 1, n_files, at + len, n);
        }
        if (progress)
            fprintf(stderr, "\r\033[K");
        report(kind, files[f], sink.file, nr, sink.layer_of, E, in->expert_names, jfiles);
        moe_stats_free(sink.file);
        sink.file = NULL;
    }
    if (n_files > 1 || kind == OUT_JSON)
        report(kind, "(all files)", all, nr, sink.layer_of, E, in->expert_names, jfiles);
    if (kind == OUT_JSON) {
        cJSON *m_o = cJSON_AddObjectToObject(json, "model");
        cJSON_AddStringToObject(m_o, "arch", in->arch);
        cJSON_AddStringToObject(m_o, "path", in->path);
        cJSON_AddNumberToObject(m_o, "n_experts", E);
        cJSON_AddNumberToObject(m_o, "k", k);
        cJSON_AddNumberToObject(json, "capacity_factor", capacity);
        cJSON_AddNumberToObject(json, "batch", (double)batch);
        char *text = cJSON_Print(json);
        if (text)
            puts(text);
        free(text);
    }
    rc = 0;
done_stats:
    moe_stats_free(sink.file);
    moe_stats_free(all);
done:
    cJSON_Delete(json);
    free(ids);
    free(sink.layer_of);
    moe_tokenizer_free(tok);
    moe_session_free(s);
    moe_model_close(m);
    free(files);
    free(ctl);
    return rc;
}
