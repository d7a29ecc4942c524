/* moescope perplexity MODEL FILE...: how well the model predicts each file,
 * as llama.cpp's llama-perplexity reports it: the mean negative
 * log-likelihood of every token after the first of each window, and its
 * exponential. Windows are evaluated as prompts whose every position's
 * logits the engine keeps (moe_session_eval_all); controls apply as in run,
 * which makes ablations measurable. With --lines every line is a document
 * of its own, from a fresh context. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "controls_parse.h"
#include "corpus.h"
#include "moescope/moescope.h"

static const char PPL_USAGE[] =
    "usage: moescope perplexity MODEL FILE... [options]\n"
    "  --ids                  files hold token ids (whitespace or comma separated), not text\n"
    "  --lines                every non-empty line is a document, evaluated from a fresh context\n"
    "                         (BOS first); else each file is one text\n"
    "  --json                 one JSON document instead of the table\n"
    "  -c, --ctx-size N       tokens per window (default: min(model maximum, 4096))\n"
    "  -t, --threads N        threads (default: all cores)\n"
    "  --k, --expert-off, --expert-on, --force, --bias, --offset, --capacity   controls, as for run\n"
    "Each file is cut into windows of the context length; every token after a\n"
    "window's first is predicted from the tokens before it in the window.\n";

/* log of the softmax of logits at index id, computed stably in double */
static double log_prob(const float *logits, int n, int id)
{
    float max = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)logits[i] - max);
    return (double)logits[id] - max - log(sum);
}

int cmd_perplexity(int argc, char **argv)
{
    const char *model = NULL;
    const char **files = calloc((size_t)argc, sizeof *files);
    const char **ctl = calloc((size_t)argc * 2, sizeof *ctl);
    int n_files = 0, n_ctl = 0, ids_mode = 0, json = 0, lines = 0, rc = 2;
    long ctx = 0, threads = 0;
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_tokenizer *tok = NULL;
    cJSON *doc = NULL;
    int32_t *ids = NULL;
    int *starts = NULL;
    float *rows = NULL;
    if (!files || !ctl) {
        fail_msg("out of memory");
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(PPL_USAGE, stdout);
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
            json = 1;
        } else if (!strcmp(a, "--lines")) {
            lines = 1;
        } else if (!v) {
            fail_msg("perplexity: %s needs a value", a);
            goto done;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            if (!arg_int(a, v, 2, 1 << 20, &ctx))
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
            fail_msg("perplexity: unknown option '%s' (see moescope perplexity --help)", a);
            goto done;
        }
    }
    if (!model || !n_files) {
        fail_msg("perplexity: give a model and at least one file (see moescope perplexity --help)");
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
    doc = cJSON_CreateObject();
    cJSON *jfiles = cJSON_AddArrayToObject(doc, "files");
    if (!json)
        printf("%-40s %10s %12s %12s\n", "file", "tokens", "nll/token", "perplexity");
    double all_nll = 0;
    long all_n = 0;
    int win = moe_session_n_ctx(s), chunk = win < 512 ? win : 512;
    if (!(rows = malloc((size_t)chunk * (size_t)in->vocab * sizeof *rows))) {
        fail_msg("out of memory for %d rows of logits", chunk);
        goto done;
    }
    for (int f = 0; f < n_files; f++) {
        int n = 0, n_docs = 1, one[2] = {0, 0};
        free(ids);
        free(starts);
        ids = NULL, starts = NULL;
        if (lines ? corpus_read_lines(files[f], ids_mode ? NULL : tok, 1, in->vocab, &ids, &starts, &n_docs)
                  : corpus_read(files[f], ids_mode ? NULL : tok, 1, in->vocab, &ids, &n))
            goto done;
        const int *doc_at = lines ? starts : (one[1] = n, one);
        n = doc_at[n_docs];
        double nll = 0;
        long scored = 0;
        /* each document in windows; each window from an empty cache, its
         * tokens fed a chunk at a time, every position's logits kept */
        for (int d = 0; d < n_docs; d++)
            for (int at = doc_at[d]; at < doc_at[d + 1]; at += win) {
                int len = doc_at[d + 1] - at < win ? doc_at[d + 1] - at : win;
                moe_session_reset(s);
                for (int c0 = 0; c0 < len; c0 += chunk) {
                    int nc = len - c0 < chunk ? len - c0 : chunk;
                    if (moe_session_eval_all(s, &ids[at + c0], nc, rows, &err)) {
                        fail_msg("%s: %s", files[f], err.msg);
                        goto done;
                    }
                    for (int j = 0; j < nc && c0 + j + 1 < len; j++) {
                        nll -= log_prob(rows + (size_t)j * in->vocab, in->vocab, ids[at + c0 + j + 1]);
                        scored++;
                    }
                }
            }
        all_nll += nll;
        all_n += scored;
        double mean = scored ? nll / scored : NAN;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "file", files[f]);
            cJSON_AddNumberToObject(o, "tokens", n);
            if (lines)
                cJSON_AddNumberToObject(o, "documents", n_docs);
            cJSON_AddNumberToObject(o, "scored", (double)scored);
            cJSON_AddNumberToObject(o, "nll", mean);
            cJSON_AddNumberToObject(o, "perplexity", exp(mean));
            cJSON_AddItemToArray(jfiles, o);
        } else {
            printf("%-40s %10d %12.4f %12.3f\n", files[f], n, mean, exp(mean));
        }
    }
    double mean = all_n ? all_nll / all_n : NAN;
    if (json) {
        cJSON_AddNumberToObject(doc, "nll", mean);
        cJSON_AddNumberToObject(doc, "perplexity", exp(mean));
        cJSON_AddNumberToObject(doc, "window", win);
        char *text = cJSON_Print(doc);
        if (text)
            puts(text);
        free(text);
    } else if (n_files > 1) {
        printf("%-40s %10ld %12.4f %12.3f\n", "(all files)", all_n, mean, exp(mean));
    }
    rc = 0;
done:
    cJSON_Delete(doc);
    free(ids);
    free(starts);
    free(rows);
    moe_tokenizer_free(tok);
    moe_session_free(s);
    moe_model_close(m);
    free(files);
    free(ctl);
    return rc;
}
