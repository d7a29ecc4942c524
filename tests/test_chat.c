/* Chat templates: moescope's renderings against @huggingface/jinja's, byte
 * for byte (tests/fixtures/chat/NAME.json, made by
 * tools/tokref/gen_chat_golden.mjs), and the errors a broken or hostile
 * template must produce. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"



static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

/* First byte where a and b differ, for the diagnostic. */
static void show_diff(const char *want, const char *got)
{
    size_t i = 0;
    while (want[i] && want[i] == got[i])
        i++;
    size_t from = i > 30 ? i - 30 : 0;
    diag("differs at byte %zu", i);
    diag("want: %.60s", want + from);
    diag("got:  %.60s", got + from);
}

/* Every case of one fixture through moe_chat_render_json, and the plain
 * message cases again through moe_chat_render. */
static void check_fixture(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/chat/%s.json", test_srcdir(), name);
    cJSON *fx = test_read_json(path);
    if (!ok(fx != NULL, "%s: fixture readable", name))
        return;
    const char *tmpl = jstr(fx, "template");
    const char *builtin = jstr(fx, "builtin");
    if (builtin) {
        const char *b = moe_chat_builtin(builtin);
        ok(b && strcmp(b, tmpl) == 0, "%s: built-in '%s' is the template the reference rendered", name, builtin);
    }
    int n = 0, same = 0, errs = 0, errs_ok = 0, plain = 0, plain_same = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "cases"))
    {
        const cJSON *context = cJSON_GetObjectItemCaseSensitive(c, "context");
        char *cj = cJSON_PrintUnformatted(context);
        const char *want = jstr(c, "output"), *want_err = jstr(c, "error"), *title = jstr(c, "title");
        if (!title)
            title = "?";
        char *out = NULL;
        moe_error err = {0};
        moe_status st = moe_chat_render_json(tmpl, cj, &out, &err);
        n++;
        if (want) {
            int eq = st == MOE_OK && strcmp(out, want) == 0;
            same += eq;
            if (!eq) {
                diag("%s / %s: %s", name, title, st ? err.msg : "output differs");
                if (!st)
                    show_diff(want, out);
            }
        } else {
            errs++;
            int eq = want_err && st != MOE_OK && out == NULL && strstr(err.msg, want_err) != NULL;
            errs_ok += eq;
            if (!eq)
                diag("%s / %s: want the error \"%s\", got %s", name, title, want_err, st ? err.msg : "success");
        }
        free(out);
        free(cj);

        /* The struct API, where the messages are plain role/content pairs. */
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(context, "messages");
        int nm = cJSON_GetArraySize(msgs);
        moe_chat_message *m = calloc((size_t)nm + 1, sizeof *m);
        int i = 0, simple = cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(context, "tools")) &&
                            !cJSON_GetObjectItemCaseSensitive(context, "enable_thinking");
        const cJSON *x;
        cJSON_ArrayForEach(x, msgs)
        {
            simple = simple && cJSON_GetArraySize(x) == 2;
            m[i].role = jstr(x, "role");
            m[i].content = jstr(x, "content");
            i++;
        }
        int agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(context, "add_generation_prompt"));
        st = moe_chat_render(tmpl, m, nm, agp, jstr(context, "bos_token"), jstr(context, "eos_token"), &out, &err);
        if (simple && strcmp(name, "features") != 0) { /* features prints the whole context */
            plain++;
            plain_same += want ? st == MOE_OK && strcmp(out, want) == 0 : want_err && st != MOE_OK && strstr(err.msg, want_err) != NULL;
        }
        free(out);
        free(m);
    }
    ok(n > 0 && same + errs_ok == n, "%s: %d of %d renderings byte-identical to the reference (%d of %d expected errors)",
       name, same, n - errs, errs_ok, errs);
    if (plain)
        ok(plain_same == plain, "%s: moe_chat_render agrees on %d of %d", name, plain_same, plain);
    cJSON_Delete(fx);
}

/* A template that must fail: the status and a fragment of the message. */
static void check_error(const char *what, const char *tmpl, moe_status want, const char *fragment)
{
    char *out = (char *)"unset";
    moe_error err = {0};
    moe_chat_message m[] = {{"user", "hi"}};
    moe_status st = moe_chat_render(tmpl, m, 1, 1, "<s>", "</s>", &out, &err);
    int good = st == want && out == NULL && strstr(err.msg, fragment) != NULL;
    ok(good, "%s", what);
    if (!good)
        diag("status %d (%s), message: %s", st, moe_status_str(st), err.msg);
    free(out);
}

static void check_render(const char *what, const char *tmpl, const char *ctxj, const char *want)
{
    char *out = NULL;
    moe_error err = {0};
    moe_status st = moe_chat_render_json(tmpl, ctxj, &out, &err);
    int good = st == MOE_OK && strcmp(out, want) == 0;
    ok(good, "%s", what);
    if (!good)
        diag("got: %s", st ? err.msg : out);
    free(out);
}

int main(void)
{
    static const char *const fixtures[] = {"qwen3", "llama3", "mistral", "tulu", "chatml", "llama3_instruct", "features"};
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++)
        check_fixture(fixtures[i]);

    /* Python's Jinja where @huggingface/jinja departs from it. */
    check_render("str.strip(chars) strips only those characters", "{{ '\\n x \\n'.strip('\\n') }}|", "{}", " x |");
    check_render("booleans and none print as Python prints them", "{{ true }} {{ none }} {{ [1, 'a'] }}", "{}",
                 "True None [1, 'a']");
    check_render("the title filter and str.title", "{{ 'hello_world x' | title }} {{ 'hello_world x'.title() }}", "{}",
                 "Hello_world X Hello_World X");
    check_render("length counts code points", "{{ '\xc3\xa9\xf0\x9f\x99\x82' | length }}{{ 'h\\u00e9' | length }}", "{}", "22");
    check_render("set in a loop does not leak out of it", "{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}",
                 "{}", "1");
    check_render("a macro with defaults and keywords",
                 "{% macro f(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ f(1) }}{{ f(2, b=3) }}", "{}", "1B23");
    check_render("a comment with whitespace control", "a  {#- gone -#}  b", "{}", "ab");
    check_render("lstrip_blocks and trim_blocks", "x\n    {% if true %}\n  y\n    {% endif %}\nz\n", "{}", "x\n  y\nz");

    /* Broken templates: the construct and the place. */
    check_error("an unsupported tag is named", "{% call foo() %}x{% endcall %}", MOE_EUNSUPPORTED, "{% call %} tag is not supported");
    check_error("an unsupported filter is named", "{{ 'x' | wordwrap }}", MOE_EUNSUPPORTED, "filter 'wordwrap'");
    check_error("an unknown function is named", "{{ cycler(1) }}", MOE_EUNSUPPORTED, "cycler is not a function");
    check_error("an unterminated expression", "abc {{ messages", MOE_EFORMAT, "line 1 column 5: unterminated {{");
    check_error("an unterminated tag", "a\nb {% if true", MOE_EFORMAT, "line 2 column 3: unterminated {% tag");
    check_error("an unterminated string", "{{ 'abc }}", MOE_EFORMAT, "unterminated string");
    check_error("an unterminated comment", "{# abc", MOE_EFORMAT, "unterminated comment");
    check_error("a missing endfor", "{% for m in messages %}{{ m }}", MOE_EFORMAT, "has no {% endfor %}");
    check_error("a stray endif", "x{% endif %}", MOE_EFORMAT, "without a matching opening tag");
    check_error("raise_exception's message reaches the user",
                "{% if messages[0].role == 'user' %}{{ raise_exception('roles must alternate') }}{% endif %}", MOE_EINVAL,
                "the template raised an error: roles must alternate");

    /* Hostile templates stop within bounds. */
    check_error("a recursion bomb", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", MOE_EINVAL, "nested more than");
    check_error("a loop bomb",
                "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
                MOE_EINVAL, "steps");
    check_error("an output bomb",
                "{% set s = 'x' * 1000 %}{% for a in range(20000) %}{{ s }}{% endfor %}",
                MOE_EINVAL, "exceed");
    check_error("a string-doubling bomb",
                "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                MOE_EINVAL, "exceed");
    {
        char deep[4200];
        strcpy(deep, "{{ ");
        for (int i = 0; i < 2000; i++)
            strcat(deep, "(");
        strcat(deep, "1 }}");
        check_error("deeply nested parentheses", deep, MOE_EINVAL, "nested more than");
    }

    /* Every prefix of a real template ends in a rendering or an error. */
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/fixtures/chat/qwen3.json", test_srcdir());
        cJSON *fx = test_read_json(path);
        const char *tmpl = fx ? jstr(fx, "template") : NULL;
        size_t len = tmpl ? strlen(tmpl) : 0;
        char *cut = malloc(len + 1);
        int runs = 0, clean = 1;
        for (size_t k = 0; cut && k < len; k += 3, runs++) {
            memcpy(cut, tmpl, k);
            cut[k] = 0;
            char *out = NULL;
            moe_error e = {0};
            moe_status s = moe_chat_render_json(cut, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", &out, &e);
            if ((s == MOE_OK) != (out != NULL) || (s != MOE_OK && !e.msg[0]))
                clean = 0;
            free(out);
        }
        ok(tmpl && clean, "%d truncations of the qwen3 template render or fail with a message", runs);
        free(cut);
        cJSON_Delete(fx);
    }

    /* The template a model ships, and its stop strings. */
    char dir[4096], *src = NULL, *bos = NULL, *eos = NULL;
    moe_error err = {0};
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/qwen3", test_srcdir());
    moe_status st = moe_chat_template_load(dir, &src, &bos, &eos, &err);
    ok(st == MOE_OK && src && strstr(src, "<|im_start|>") && !bos && eos && strcmp(eos, "<|im_end|>") == 0,
       "qwen3: chat_template and EOS from tokenizer_config.json (no BOS)");
    const char *stops[8];
    int ns = src ? moe_chat_stop_strings(src, eos, stops, 8) : 0;
    ok(ns >= 1 && strcmp(stops[0], "<|im_end|>") == 0, "qwen3: <|im_end|> ends a turn (%d stop strings)", ns);
    free(src);
    free(bos);
    free(eos);
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/llama2", test_srcdir());
    st = moe_chat_template_load(dir, &src, &bos, &eos, &err);
    ok(st == MOE_EFORMAT && !src && strstr(err.msg, "no chat_template"), "llama2: a config without a template is refused");
    ns = moe_chat_stop_strings(moe_chat_builtin("llama3"), "<|end_of_text|>", stops, 8);
    ok(ns == 2 && strcmp(stops[0], "<|end_of_text|>") == 0 && strcmp(stops[1], "<|eot_id|>") == 0,
       "llama3: EOS and <|eot_id|> end a turn");
    ok(moe_chat_builtin("nope") == NULL && moe_chat_builtin("chatml") != NULL, "built-ins by name");
    return done_testing();
}
