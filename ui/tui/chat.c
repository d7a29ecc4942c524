/* Chat mode: prompts become user turns of the model's chat template (or a
 * built-in one), the whole conversation is rendered again for every turn,
 * and replies end at the template's end-of-turn tokens. The worker
 * compares the rendered tokens with what the KV cache holds and evaluates
 * only the new suffix when the cache is a prefix of them (worker.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui.h"

const char *tui_expert_name(const tui *t, int e)
{
    const char *const *names = t->info ? t->info->expert_names : NULL;
    if (!names || e < 0 || e >= t->info->n_experts)
        return NULL;
    return names[e] && names[e][0] ? names[e] : NULL;
}

void chat_clear(chat_state *c)
{
    for (int i = 0; i < c->n_turns; i++)
        free((char *)c->turns[i].content);
    c->n_turns = 0;
}

void chat_done(chat_state *c)
{
    chat_clear(c);
    free(c->turns);
    free(c->system);
    free(c->src);
    free(c->bos);
    free(c->eos);
    memset(c, 0, sizeof *c);
}

int chat_is_stop(const chat_state *c, int32_t id)
{
    for (int i = 0; i < c->n_stops; i++)
        if (c->stops[i] == id)
            return 1;
    return 0;
}

/* A template file, at most 1 MiB; NULL when unreadable. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *src = malloc(cap + 1);
    if (src)
        n = fread(src, 1, cap, f);
    fclose(f);
    if (!src || n == cap) {
        free(src);
        return NULL;
    }
    src[n] = 0;
    return src;
}

int chat_set_template(tui *t, const char *name, char *msg, size_t len)
{
    chat_state *c = &t->chat;
    moe_error err = {0};
    if (!t->tok) {
        snprintf(msg, len, "chat needs a tokenizer, and this model has none (no tokenizer.json, or a GGUF file without a vocabulary)");
        return -1;
    }
    /* BOS/EOS texts come from tokenizer_config.json whichever template is used */
    char *model_src = NULL, *bos = NULL, *eos = NULL, *src = NULL, label[64];
    moe_status st = moe_chat_template_load(t->info->path, &model_src, &bos, &eos, &err);
    if (!strcmp(name, "model")) {
        if (st) {
            snprintf(msg, len, "%s; pick a built-in one with :template (%s)", err.msg, moe_chat_builtin_names());
            goto fail;
        }
        src = model_src;
        model_src = NULL;
        snprintf(label, sizeof label, "the model's");
    } else if (moe_chat_builtin(name)) {
        src = strdup(moe_chat_builtin(name));
        snprintf(label, sizeof label, "%s", name);
    } else if (!(src = read_file(name))) {
        snprintf(msg, len, "template '%s': neither a built-in (%s) nor a readable file under 1 MiB", name,
                 moe_chat_builtin_names());
        goto fail;
    } else {
        const char *base = strrchr(name, '/');
        snprintf(label, sizeof label, "%s", base ? base + 1 : name);
    }
    if (!src) {
        snprintf(msg, len, "out of memory");
        goto fail;
    }
    /* a template that cannot render one turn is refused now, not mid-chat */
    moe_chat_message probe = {"user", "hi"};
    char *out = NULL;
    if (moe_chat_render(src, &probe, 1, 1, bos, eos, &out, &err)) {
        snprintf(msg, len, "template %s: %s", label, err.msg);
        goto fail;
    }
    free(out);
    free(c->src);
    free(c->bos);
    free(c->eos);
    c->src = src, c->bos = bos, c->eos = eos;
    snprintf(c->name, sizeof c->name, "%s", label);
    /* end-of-turn strings that are single tokens stop a reply */
    const char *strs[MAX_STOPS];
    int ns = moe_chat_stop_strings(src, eos, strs, MAX_STOPS);
    c->n_stops = 0;
    for (int i = 0; i < ns && c->n_stops < MAX_STOPS; i++) {
        int32_t *ids = NULL;
        int nid = 0;
        if (!moe_tokenizer_encode(t->tok, strs[i], strlen(strs[i]), 0, &ids, &nid, NULL) && nid == 1)
            c->stops[c->n_stops++] = ids[0];
        free(ids);
    }
    c->on = 1;
    free(model_src);
    snprintf(msg, len, "chat: %s template, replies stop at %d end-of-turn token%s", c->name, c->n_stops,
             c->n_stops == 1 ? "" : "s");
    return 0;
fail:
    free(src);
    free(model_src);
    free(bos);
    free(eos);
    return -1;
}

int chat_set_system(chat_state *c, const char *text)
{
    char *s = text && *text ? strdup(text) : NULL;
    if (text && *text && !s)
        return -1;
    free(c->system);
    c->system = s;
    return 0;
}

int chat_add_turn(chat_state *c, const char *role, const char *text, size_t n)
{
    if (c->n_turns == c->cap_turns) {
        int cap = c->cap_turns ? c->cap_turns * 2 : 16;
        moe_chat_message *m = realloc(c->turns, (size_t)cap * sizeof *m);
        if (!m)
            return -1;
        c->turns = m, c->cap_turns = cap;
    }
    char *s = malloc(n + 1);
    if (!s)
        return -1;
    memcpy(s, text, n);
    s[n] = 0;
    c->turns[c->n_turns++] = (moe_chat_message){role, s};
    return 0;
}

int chat_render_ids(tui *t, const char *user, int32_t **ids, int *n, moe_error *err)
{
    chat_state *c = &t->chat;
    *ids = NULL, *n = 0;
    if (chat_add_turn(c, "user", user, strlen(user))) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return -1;
    }
    char *text = NULL;
    /* the system message first, then the turns */
    int sys = c->system != NULL, nm = c->n_turns + sys;
    moe_chat_message *msgs = malloc((size_t)nm * sizeof *msgs);
    if (!msgs) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        free((char *)c->turns[--c->n_turns].content);
        return -1;
    }
    if (sys)
        msgs[0] = (moe_chat_message){"system", c->system};
    memcpy(msgs + sys, c->turns, (size_t)c->n_turns * sizeof *msgs);
    /* a rendered template carries its own BOS, as apply_chat_template assumes */
    if (moe_chat_render(c->src, msgs, nm, 1, c->bos, c->eos, &text, err) ||
        moe_tokenizer_encode(t->tok, text, strlen(text), 0, ids, n, err)) {
        free(text);
        free(msgs);
        free((char *)c->turns[--c->n_turns].content);
        return -1;
    }
    free(text);
    free(msgs);
    return 0;
}

void chat_add_reply(tui *t, const int32_t *ids, int n)
{
    char *text = NULL;
    size_t len = 0;
    if (n > 0 && moe_tokenizer_decode(t->tok, ids, n, 0, &text, &len, NULL))
        text = NULL, len = 0;
    chat_add_turn(&t->chat, "assistant", text ? text : "", len);
    free(text);
}
