/* moescope replay TRANSCRIPT [MODEL]: run a saved session again — the same
 * prompt tokens, the control changes at the positions they were logged at,
 * the same sampler and seed — and report the first token whose id or
 * routing differs from the recording, or that the replay is identical.
 * A different model, engine version or sampler may diverge; that is what
 * the command is for. Exit status: 0 identical, 3 diverged, 1 error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "controls_parse.h"
#include "transcript.h"

static const char REPLAY_USAGE[] =
    "usage: moescope replay TRANSCRIPT [MODEL] [-t N]\n"
    "  regenerate a saved session with the same prompt, controls and sampler seed and\n"
    "  report the first token where it diverges (or \"identical, N tokens\")\n"
    "  MODEL           the model to run (default: the path in the transcript)\n"
    "  -t, --threads N threads (default: all cores)\n"
    "  --tolerance P   routing probabilities may differ by P (default 1e-4, the\n"
    "                  precision a transcript keeps)\n"
    "exit status: 0 identical, 3 diverged, 1 error\n";

/* Compares the replay's routing with the recording as tokens go by. */
typedef struct {
    const transcript *t;
    double tol;
    double max_diff;
    int first_bad;             /* token whose routing first differs; -1: none */
    int bad_route;
    char why[160];
} checker;

static void on_token(void *ctx, const moe_token_trace *tt)
{
    checker *c = ctx;
    if (tt->pos >= transcript_n_tokens(c->t))
        return;
    const transcript_model *m = transcript_model_get(c->t);
    for (int r = 0; r < tt->n_routes && r < m->n_moe_layers; r++) {
        moe_route rec;
        transcript_route(c->t, tt->pos, r, &rec);
        const moe_route *got = &tt->routes[r];
        int differs = got->k != rec.k || memcmp(got->experts, rec.experts, (size_t)rec.k * sizeof(int)) != 0;
        for (int e = 0; e < rec.n_experts && e < got->n_experts; e++) {
            double d = fabs((double)got->probs[e] - rec.probs[e]);
            if (d > c->max_diff)
                c->max_diff = d;
            if (d > c->tol && !differs && c->first_bad < 0)
                snprintf(c->why, sizeof c->why, "the probability of expert %d is %.5f, recorded %.5f", e,
                         (double)got->probs[e], (double)rec.probs[e]), c->first_bad = tt->pos, c->bad_route = r;
        }
        if (differs && c->first_bad < 0) {
            int n = snprintf(c->why, sizeof c->why, "chose experts");
            for (int j = 0; j < got->k && n < 120; j++)
                n += snprintf(c->why + n, sizeof c->why - (size_t)n, "%s%d", j ? "," : " ", got->experts[j]);
            n += snprintf(c->why + n, sizeof c->why - (size_t)n, ", recorded");
            for (int j = 0; j < rec.k && n < 150; j++)
                n += snprintf(c->why + n, sizeof c->why - (size_t)n, "%s%d", j ? "," : " ", rec.experts[j]);
            c->first_bad = tt->pos;
            c->bad_route = r;
        }
    }
}

static void show_piece(const char *text, size_t len)
{
    fputc('"', stdout);
    for (size_t i = 0; text && i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    fputc('"', stdout);
}

int cmd_replay(int argc, char **argv)
{
    const char *file = NULL, *model = NULL;
    long threads = 0;
    double tol = 1e-4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(REPLAY_USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads") || !strcmp(a, "--tolerance")) {
            if (!v)
                return fail_msg("replay: %s needs a value", a) + 1;
            i++;
            if (!strcmp(a, "--tolerance") ? !arg_float(a, v, 0, 1, &tol) : !arg_int(a, v, 1, 256, &threads))
                return 2;
        } else if (a[0] == '-') {
            return fail_msg("replay: unknown option '%s' (see moescope replay --help)", a) + 1;
        } else if (!file) {
            file = a;
        } else if (!model) {
            model = a;
        } else {
            return fail_msg("replay: unexpected argument '%s'", a) + 1;
        }
    }
    if (!file)
        return fail_msg("replay: no transcript given (see moescope replay --help)") + 1;
    char msg[1024];
    transcript *t = transcript_load(file, msg, sizeof msg);
    if (!t)
        return fail_msg("%s", msg);
    const transcript_model *tm = transcript_model_get(t);
    int n = transcript_n_tokens(t), rc = 1;
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_sampler *smp = NULL;
    moe_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    moe_error err = {0};
    if (!model)
        model = tm->path;
    if (n == 0 || !transcript_token_at(t, 0)->prompt) {
        fail_msg("%s: %s", file, n ? "the first token is not a prompt token: nothing to start from" : "no tokens to replay");
        goto done;
    }
    if (moe_model_open(model, &m, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    const moe_model_info *in = moe_model_info_get(m);
    if (strcmp(in->arch, tm->arch) || in->n_layers != tm->n_layers || in->n_experts != tm->n_experts ||
        in->n_moe_layers != tm->n_moe_layers) {
        fail_msg("%s is %s with %d layers and %d experts in %d MoE layers; the transcript was made with %s with %d, "
                 "%d and %d",
                 model, in->arch, in->n_layers, in->n_experts, in->n_moe_layers, tm->arch, tm->n_layers,
                 tm->n_experts, tm->n_moe_layers);
        goto done;
    }
    char cfg[4200], hex[65];
    snprintf(cfg, sizeof cfg, "%s/config.json", in->path);
    if (tm->config_sha256 && transcript_sha256_file(cfg, hex) == 0 && strcmp(hex, tm->config_sha256))
        fprintf(stderr, "note: %s differs from the config.json the transcript was made with (sha256 %.12s..., "
                        "recorded %.12s...)\n",
                cfg, hex, tm->config_sha256);
    moe_session_params sp = {n, (int)threads, 0};
    if (moe_session_new(m, &sp, &s, &err) || moe_sampler_new(transcript_sampler(t), in->vocab, &smp, &err)) {
        fail_msg("%s", err.msg);
        goto done;
    }
    if (moe_tokenizer_present(in->path) && moe_tokenizer_open(in->path, &tok, &err))
        tok = NULL; /* texts are only for the report */
    checker chk = {t, tol, 0, -1, 0, ""};
    moe_trace_sink sink = {&chk, on_token};
    moe_session_set_trace(s, &sink);
    if (!(ids = malloc((size_t)n * sizeof *ids))) {
        fail_msg("out of memory");
        goto done;
    }
    int next_ctl = 0, n_prompt = 0, n_gen = 0, diverged = -1;
    int32_t got = -1;
    for (int i = 0; i < n;) {
        for (; next_ctl < transcript_n_controls(t) && transcript_control_at(t, next_ctl)->pos <= i; next_ctl++)
            if (control_apply_logged(s, transcript_control_at(t, next_ctl)->change, msg, sizeof msg)) {
                fail_msg("%s: control change %d: %s", file, next_ctl, msg);
                goto done;
            }
        const transcript_token *k = transcript_token_at(t, i);
        int j = i;
        if (k->prompt) {
            /* a run of prompt tokens is one batch, as it was fed, up to the next control change */
            int stop = next_ctl < transcript_n_controls(t) ? transcript_control_at(t, next_ctl)->pos : n;
            while (j < n && j < stop && transcript_token_at(t, j)->prompt) {
                ids[j - i] = transcript_token_at(t, j)->id;
                moe_sampler_accept(smp, ids[j - i]);
                j++;
            }
            n_prompt += j - i;
        } else {
            got = moe_sampler_sample(smp, moe_session_logits(s));
            if (got != k->id) {
                diverged = i;
                break;
            }
            moe_sampler_accept(smp, got);
            ids[0] = got;
            j = i + 1;
            n_gen++;
        }
        if (moe_session_eval(s, ids, j - i, &err)) {
            fail_msg("%s", err.msg);
            goto done;
        }
        i = j;
    }
    if (diverged >= 0) {
        const transcript_token *k = transcript_token_at(t, diverged);
        size_t len = 0;
        const char *piece = tok ? moe_tokenizer_piece(tok, got, &len) : NULL;
        printf("diverges at token %d (generated token %d): recorded %d ", diverged, n_gen + 1, (int)k->id);
        show_piece(k->text, k->len);
        printf(", replayed %d ", (int)got);
        show_piece(piece, len);
        putchar('\n');
        if (chk.first_bad >= 0 && chk.first_bad < diverged)
            printf("routing first differs at token %d, layer %d: %s\n", chk.first_bad,
                   tm->moe_layers ? tm->moe_layers[chk.bad_route] : chk.bad_route, chk.why);
        rc = 3;
    } else if (chk.first_bad >= 0) {
        printf("same %d tokens, but the routing differs at token %d, layer %d: %s\n", n, chk.first_bad,
               tm->moe_layers ? tm->moe_layers[chk.bad_route] : chk.bad_route, chk.why);
        rc = 3;
    } else {
        printf("identical, %d tokens (%d prompt, %d generated); routing probabilities within %.1e of the "
               "recording\n",
               n, n_prompt, n_gen, chk.max_diff);
        rc = 0;
    }
done:
    free(ids);
    moe_tokenizer_free(tok);
    moe_sampler_free(smp);
    moe_session_free(s);
    moe_model_close(m);
    transcript_free(t);
    return rc;
}
