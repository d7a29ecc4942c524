/* chat_template: the subset of Jinja2 that Hugging Face chat templates use,
 * rendered as transformers renders them (trim_blocks, lstrip_blocks, the
 * raise_exception and strftime_now globals, a tojson that keeps non-ASCII).
 * The template is lexed and parsed to a tree (jinja_parse.c), then
 * evaluated (jinja_eval.c, jinja_builtins.c) over a small value type
 * (jinja_value.c). Everything a render allocates lives in one arena that is
 * freed at the end; errors unwind with longjmp to the entry point here. */
#include <cjson/cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <utf8proc.h>

#include "config.h"
#include "error.h"
#include "gguf_vocab.h"
#include "jinja.h"

/* ---- API ---------------------------------------------------------------- */

static void free_arena(ctx *c)
{
    while (c->arena) {
        blk *b = c->arena->next;
        free(c->arena);
        c->arena = b;
    }
}

/* Render with a context given as a cJSON object. */
static moe_status render(const char *tmpl, const cJSON *context, char **out, moe_error *err)
{
    *out = NULL;
    if (!tmpl)
        return moe_fail(err, MOE_EINVAL, "chat template: no template given");
    ctx *c = calloc(1, sizeof *c);
    if (!c)
        return moe_fail(err, MOE_ENOMEM, "chat template: out of memory");
    c->err = err;
    moe_status st = MOE_OK;
    if (setjmp(c->jb)) {
        st = err ? err->code : MOE_EINVAL;
        if (st == MOE_OK)
            st = MOE_EINVAL;
        goto done;
    }
    c->orig = tmpl;
    jj_preprocess(c, tmpl);
    jj_lex(c);
    nlist prog = {0};
    jj_p_body(c, &prog, NULL, 0, NULL);
    c->root = jj_ar_alloc(c, sizeof *c->root);
    static const struct {
        const char *name;
        int fn;
    } fns[] = {{"raise_exception", FN_RAISE}, {"range", FN_RANGE}, {"namespace", FN_NAMESPACE}, {"strftime_now", FN_STRFTIME}};
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++)
        jj_assign(c, c->root, fns[i].name, (val){.k = V_FUNC, .fn = fns[i].fn});
    const cJSON *x;
    cJSON_ArrayForEach(x, context) jj_assign(c, c->root, x->string, jj_from_json(c, x));
    struct scope *top = jj_ar_alloc(c, sizeof *top);
    top->parent = c->root;
    jj_exec_body(c, &prog, top);
    *out = malloc(c->out.n + 1);
    if (!*out) {
        st = moe_fail(err, MOE_ENOMEM, "chat template: out of memory");
        goto done;
    }
    if (c->out.n)
        memcpy(*out, c->out.p, c->out.n);
    (*out)[c->out.n] = 0;
done:
    free_arena(c);
    free(c);
    return st;
}

moe_status moe_chat_render_json(const char *template_src, const char *context_json, char **out, moe_error *err)
{
    *out = NULL;
    cJSON *ctxj = cJSON_Parse(context_json ? context_json : "{}");
    if (!cJSON_IsObject(ctxj)) {
        cJSON_Delete(ctxj);
        return moe_fail(err, MOE_EINVAL, "chat template: the context is not a JSON object");
    }
    moe_status st = render(template_src, ctxj, out, err);
    cJSON_Delete(ctxj);
    return st;
}

moe_status moe_chat_render(const char *template_src, const moe_chat_message *msgs, int n, int add_generation_prompt,
                           const char *bos_token, const char *eos_token, char **out, moe_error *err)
{
    *out = NULL;
    cJSON *ctxj = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(ctxj, "messages");
    int ok = ctxj && arr;
    for (int i = 0; ok && i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        ok = m && cJSON_AddItemToArray(arr, m) && cJSON_AddStringToObject(m, "role", msgs[i].role ? msgs[i].role : "") &&
             cJSON_AddStringToObject(m, "content", msgs[i].content ? msgs[i].content : "");
    }
    ok = ok && cJSON_AddBoolToObject(ctxj, "add_generation_prompt", add_generation_prompt != 0) &&
         (bos_token ? cJSON_AddStringToObject(ctxj, "bos_token", bos_token) : cJSON_AddNullToObject(ctxj, "bos_token")) &&
         (eos_token ? cJSON_AddStringToObject(ctxj, "eos_token", eos_token) : cJSON_AddNullToObject(ctxj, "eos_token")) &&
         cJSON_AddNullToObject(ctxj, "tools");
    moe_status st = ok ? render(template_src, ctxj, out, err) : moe_fail(err, MOE_ENOMEM, "chat template: out of memory");
    cJSON_Delete(ctxj);
    return st;
}

/* A special token in tokenizer_config.json: a string or {"content": ...}. */
static const char *token_text(const cJSON *x)
{
    if (cJSON_IsString(x))
        return x->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(x, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

moe_status moe_chat_template_load(const char *path, char **template_src, char **bos, char **eos, moe_error *err)
{
    *template_src = NULL;
    if (bos)
        *bos = NULL;
    if (eos)
        *eos = NULL;
    if (gguf_vocab_is_gguf(path))
        return gguf_vocab_chat_template(path, template_src, bos, eos, err);
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(file, sizeof file, "%s/tokenizer_config.json", path);
    else
        snprintf(file, sizeof file, "%s", path);
    cJSON *root;
    moe_status st = json_read_file(file, 16u << 20, &root, err);
    if (st)
        return st;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template"), *x;
    const char *src = cJSON_IsString(t) ? t->valuestring : NULL;
    const cJSON *list_t = cJSON_IsArray(t) ? t : NULL;
    cJSON_ArrayForEach(x, list_t)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(x, "name");
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(x, "template");
        if (cJSON_IsString(nm) && cJSON_IsString(tp) && strcmp(nm->valuestring, "default") == 0)
            src = tp->valuestring;
    }
    if (!src) {
        cJSON_Delete(root);
        return moe_fail(err, MOE_EFORMAT, "%s: no chat_template (a string, or a list with a \"default\" entry)", file);
    }
    const char *b = token_text(cJSON_GetObjectItemCaseSensitive(root, "bos_token"));
    const char *e = token_text(cJSON_GetObjectItemCaseSensitive(root, "eos_token"));
    *template_src = strdup(src);
    int oom = !*template_src;
    if (bos && b && !(*bos = dup_or_null(b)))
        oom = 1;
    if (eos && e && !(*eos = dup_or_null(e)))
        oom = 1;
    cJSON_Delete(root);
    if (oom) {
        free(*template_src);
        *template_src = NULL;
        if (bos) {
            free(*bos);
            *bos = NULL;
        }
        if (eos) {
            free(*eos);
            *eos = NULL;
        }
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory", file);
    }
    return MOE_OK;
}

/* Built-in templates for --template, written as their families' own
 * tokenizer_config.json files spell them. */
static const struct {
    const char *name;
    const char *src;
} builtins[] = {
    {"chatml",
     "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
     "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"mistral",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
     "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are "
     "supported!') }}{% endif %}{% endfor %}"},
    {"tulu",
     "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
     "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == "
     "'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}{% else %}"
     "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}{% if loop.last and "
     "add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"},
};

const char *moe_chat_builtin(const char *name)
{
    for (size_t i = 0; name && i < sizeof builtins / sizeof *builtins; i++)
        if (strcmp(builtins[i].name, name) == 0)
            return builtins[i].src;
    return NULL;
}

const char *moe_chat_builtin_names(void) { return "chatml, llama3, mistral, tulu"; }

int moe_chat_stop_strings(const char *template_src, const char *eos_token, const char **out, int max)
{
    static const char *const turn_ends[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
                                            "<|endoftext|>", "</s>"};
    int n = 0;
    if (eos_token && *eos_token && n < max)
        out[n++] = eos_token;
    for (size_t i = 0; template_src && i < sizeof turn_ends / sizeof *turn_ends; i++) {
        if (!strstr(template_src, turn_ends[i]) || (eos_token && strcmp(eos_token, turn_ends[i]) == 0))
            continue;
        if (n < max)
            out[n] = turn_ends[i];
        n++;
    }
    return n < max ? n : max;
}
