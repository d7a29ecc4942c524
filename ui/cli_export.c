/* moescope export TRANSCRIPT: a saved session as a self-contained HTML page
 * (tokens coloured by expert, a legend, each token's routing on hover or
 * click, control changes inline), as CSV (one row per token, MoE layer and
 * expert) or as coloured text on a terminal. Needs no model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "colour.h"
#include "transcript.h"

static const char EXPORT_USAGE[] =
    "usage: moescope export TRANSCRIPT [--html OUT.html] [--csv OUT.csv] [--ansi] [--colour WHEN]\n"
    "  --html FILE    one self-contained page (no network): the conversation coloured by\n"
    "                 expert, a legend, each token's routing on hover or click, and the\n"
    "                 control changes marked where they happened\n"
    "  --csv FILE     one row per token, MoE layer and expert ('-' for stdout):\n"
    "                 token,pos,prompt,text,layer,expert,name,probability,chosen,rank,weight\n"
    "                 (text quoted; newline, tab, CR and backslash written as \\n \\t \\r \\\\,\n"
    "                 bytes of a partial character as \\xNN)\n"
    "  --ansi         the conversation on stdout coloured by expert, the legend on stderr\n"
    "  --colour auto|always|never   for --ansi (auto: on a terminal, unless NO_COLOR)\n";

/* The terminal palette of colour.c as RGB: Okabe-Ito first, then four more. */
static const char *const HTML_PALETTE[] = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00",
                                           "#cc79a7", "#bcbcbc", "#ff5f5f", "#87d787", "#af87ff", "#d7af87"};
#define N_HTML_PALETTE (int)(sizeof HTML_PALETTE / sizeof HTML_PALETTE[0])

/* How many tokens from i on (1 to 4) whose bytes together make whole UTF-8
 * characters, for pieces that are parts of a character; 0 if none do. */
static int char_run(const transcript *t, int i)
{
    unsigned char buf[64];
    size_t len = 0;
    for (int j = i; j < transcript_n_tokens(t) && j < i + 4; j++) {
        const transcript_token *k = transcript_token_at(t, j);
        if (!k->text || len + k->len > sizeof buf)
            return 0;
        memcpy(buf + len, k->text, k->len);
        len += k->len;
        if (transcript_utf8_ok(buf, len))
            return j - i + 1;
    }
    return 0;
}

static const char *expert_name(const transcript_model *m, int e)
{
    return m->expert_names && e >= 0 && e < m->n_experts ? m->expert_names[e] : NULL;
}

/* ---- HTML ---------------------------------------------------------------- */

static void html_text(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(s[i], f);
        }
    }
}

static void html_str(FILE *f, const char *s)
{
    html_text(f, s, strlen(s));
}

/* A JSON string inside <script>: escaped so that "</script>" cannot end it. */
static void js_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == '<' || c == '>' || c == '&')
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void fixed5(FILE *f, double v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%.5f", v);
    while (n > 1 && buf[n - 1] == '0')
        buf[--n] = 0;
    if (buf[n - 1] == '.')
        buf[--n] = 0;
    fputs(strcmp(buf, "-0") ? buf : "0", f);
}

static void html_controls(FILE *f, const transcript *t, int pos, int *next)
{
    for (; *next < transcript_n_controls(t) && transcript_control_at(t, *next)->pos == pos; (*next)++) {
        const transcript_control *c = transcript_control_at(t, *next);
        fprintf(f, "<span class=\"ctl\" title=\"control change from position %d\">&#9881; ", c->pos);
        html_str(f, c->change);
        fputs("</span>", f);
    }
}

static const char HTML_STYLE[] =
    "body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;background:#fafafa}\n"
    "header{padding:12px 20px;border-bottom:1px solid #ddd;background:#fff}\n"
    "h1{font-size:18px;margin:0 0 4px}\n"
    ".meta{color:#555;font-size:13px;margin:0}\n"
    "#legend{list-style:none;padding:0;margin:8px 0 0;display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13px}\n"
    ".sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}\n"
    "main{display:flex;gap:16px;padding:16px 20px;align-items:flex-start}\n"
    "#text{flex:3;white-space:pre-wrap;font:14px/1.9 ui-monospace,'DejaVu Sans Mono',monospace;background:#fff;"
    "padding:12px;border:1px solid #ddd;border-radius:4px;word-break:break-word}\n"
    ".t{cursor:pointer;border-radius:2px;padding:1px 0}\n"
    ".t.p{text-decoration:underline dotted #888}\n"
    ".t:hover,.t.sel{outline:2px solid #222}\n"
    ".role{display:block;font:bold 12px system-ui,sans-serif;color:#666;text-transform:uppercase;margin:8px 0 2px}\n"
    ".ctl{font:12px system-ui,sans-serif;background:#333;color:#fff;padding:1px 5px;margin:0 3px;border-radius:3px}\n"
    "#panel{flex:2;position:sticky;top:10px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:12px;"
    "font-size:13px;max-height:90vh;overflow:auto}\n"
    "#panel h2{font-size:14px;margin:0 0 8px}\n"
    ".lay{margin:6px 0 10px}\n"
    ".row{display:flex;align-items:center;gap:6px;height:16px}\n"
    ".lab{width:110px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}\n"
    ".bar{height:11px;border-radius:2px;min-width:1px}\n"
    ".ch{font-weight:bold}\n"
    ".num{color:#555;font-variant-numeric:tabular-nums}\n";

/* The panel: the hovered (or clicked, which pins it) token's routing. */
static const char HTML_SCRIPT[] =
    "(function(){\n"
    "var D=JSON.parse(document.getElementById('routing').textContent);\n"
    "var P=document.getElementById('panel'),pinned=null;\n"
    "function esc(s){return s.replace(/[&<>\"]/g,function(c){return{'&':'&amp;','<':'&lt;','>':'&gt;','\"':'&quot;'}[c];});}\n"
    "function name(e){return D.names&&D.names[e]?e+' '+D.names[e]:'expert '+e;}\n"
    "function show(el){var i=+el.dataset.i,tk=D.tokens[i],h='<h2>token #'+i+' \\u00ab'+esc(el.textContent)+'\\u00bb</h2>';\n"
    " h+='<div class=\"num\">id '+D.ids[i]+(el.classList.contains('p')?' \\u00b7 prompt':' \\u00b7 generated')+'</div>';\n"
    " for(var r=0;r<tk.length;r++){var pr=tk[r][0],ex=tk[r][1],w=tk[r][2],ord=[];\n"
    "  for(var e=0;e<pr.length;e++)ord.push(e);\n"
    "  ord.sort(function(a,b){return pr[b]-pr[a];});\n"
    "  if(ord.length>12)ord=ord.filter(function(e,j){return j<10||ex.indexOf(e)>=0;});\n"
    "  h+='<div class=\"lay\"><b>layer '+D.layers[r]+'</b> \\u2192 '+ex.map(function(e,j){return name(e)+' ('+w[j].toFixed(3)+')';}).join(', ');\n"
    "  for(var j=0;j<ord.length;j++){var e=ord[j],c=ex.indexOf(e)>=0;\n"
    "   h+='<div class=\"row'+(c?' ch':'')+'\"><span class=\"lab\">'+esc(name(e))+'</span><span class=\"bar\" style=\"width:'+\n"
    "    (pr[e]*160).toFixed(1)+'px;background:'+D.palette[e%D.palette.length]+'\"></span><span class=\"num\">'+pr[e].toFixed(4)+(c?' \\u2713':'')+'</span></div>';}\n"
    "  h+='</div>';}\n"
    " P.innerHTML=h;}\n"
    "var T=document.getElementById('text');\n"
    "T.addEventListener('mouseover',function(ev){var el=ev.target;if(!pinned&&el.classList.contains('t'))show(el);});\n"
    "T.addEventListener('click',function(ev){var el=ev.target;if(!el.classList.contains('t'))return;\n"
    " if(pinned)pinned.classList.remove('sel');if(pinned===el){pinned=null;return;}\n"
    " pinned=el;el.classList.add('sel');show(el);});\n"
    "})();\n";

static int write_html(const transcript *t, FILE *f)
{
    const transcript_model *m = transcript_model_get(t);
    const moe_sampler_params *sp = transcript_sampler(t);
    int n = transcript_n_tokens(t);
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>moescope transcript: ",
          f);
    html_str(f, m->arch);
    fputs(" \xc2\xb7 ", f);
    html_str(f, m->path);
    fprintf(f, "</title>\n<style>\n%s", HTML_STYLE);
    for (int e = 0; e < m->n_experts; e++)
        fprintf(f, ".e%d{background:%s66}.e%d .sw,.sw.e%d{background:%s}\n", e, HTML_PALETTE[e % N_HTML_PALETTE], e,
                e, HTML_PALETTE[e % N_HTML_PALETTE]);
    fputs("</style>\n</head>\n<body>\n<header>\n<h1>moescope transcript</h1>\n<p class=\"meta\">", f);
    html_str(f, m->arch);
    if (*m->hf_class) {
        fputs(" (", f);
        html_str(f, m->hf_class);
        fputs(")", f);
    }
    fputs(" \xc2\xb7 ", f);
    html_str(f, m->path);
    fprintf(f, " \xc2\xb7 %d experts, k=%d, %d MoE layers \xc2\xb7 %d tokens", m->n_experts, m->k, m->n_moe_layers, n);
    if (*transcript_created(t)) {
        fputs(" \xc2\xb7 ", f);
        html_str(f, transcript_created(t));
    }
    fprintf(f, "<br>sampler: temp %g, top-k %d, top-p %g, min-p %g, repeat penalty %g, seed %llu", sp->temp, sp->top_k,
            sp->top_p, sp->min_p, sp->repeat_penalty, (unsigned long long)sp->seed);
    if (m->config_sha256)
        fprintf(f, " \xc2\xb7 config.json sha256 %.12s\xe2\x80\xa6", m->config_sha256);
    fputs(" \xc2\xb7 tokens coloured by the layers' majority vote; prompt tokens dotted</p>\n<ul id=\"legend\">\n", f);
    for (int e = 0; e < m->n_experts; e++) {
        fprintf(f, "<li class=\"lg\"><span class=\"sw e%d\"></span>%d", e, e);
        if (expert_name(m, e)) {
            fputc(' ', f);
            html_str(f, expert_name(m, e));
        }
        fputs("</li>\n", f);
    }
    fputs("</ul>\n", f);
    if (m->n_experts > N_HTML_PALETTE)
        fprintf(f, "<p class=\"meta\">%d colours: expert e shares the colour of e mod %d</p>\n", N_HTML_PALETTE,
                N_HTML_PALETTE);
    fputs("</header>\n<main>\n<div id=\"text\">", f);
    int next_turn = 0, next_ctl = 0;
    for (int i = 0; i < n; i++) {
        int roles = 0;
        for (; next_turn < transcript_n_turns(t) && transcript_turn_at(t, next_turn)->token <= i; next_turn++) {
            fputs(roles++ ? " + " : "<span class=\"role\">", f);
            html_str(f, transcript_turn_at(t, next_turn)->role);
        }
        if (roles)
            fputs("</span>", f);
        html_controls(f, t, i, &next_ctl);
        const transcript_token *k = transcript_token_at(t, i);
        fprintf(f, "<span class=\"t%s", k->prompt ? " p" : "");
        if (k->colour >= 0)
            fprintf(f, " e%d", k->colour);
        fprintf(f, "\" data-i=\"%d\">", i);
        if (k->text && transcript_utf8_ok((const unsigned char *)k->text, k->len)) {
            html_text(f, k->text, k->len);
        } else if (k->text) {
            /* part of a character: the run of tokens that completes it shows
             * it in the first span; the others stay empty */
            int run = char_run(t, i);
            for (int j = i; run && j < i + run; j++)
                html_text(f, transcript_token_at(t, j)->text, transcript_token_at(t, j)->len);
            if (!run)
                for (size_t b = 0; b < k->len; b++)
                    fprintf(f, "\\x%02x", (unsigned char)k->text[b]);
            for (int j = i + 1; j < i + run; j++) {
                const transcript_token *q = transcript_token_at(t, j);
                html_controls(f, t, j, &next_ctl);
                fprintf(f, "</span><span class=\"t%s", q->prompt ? " p" : "");
                if (q->colour >= 0)
                    fprintf(f, " e%d", q->colour);
                fprintf(f, "\" data-i=\"%d\">", j);
            }
            i += run ? run - 1 : 0;
        } else {
            fprintf(f, "[%d]", (int)k->id);
        }
        fputs("</span>", f);
    }
    html_controls(f, t, n, &next_ctl);
    while (next_ctl < transcript_n_controls(t)) /* past the last token (a loaded file guarantees none) */
        html_controls(f, t, transcript_control_at(t, next_ctl)->pos, &next_ctl);
    fputs("</div>\n<aside id=\"panel\">Hover over a token to see how each layer routed it; click to pin.</aside>\n"
          "</main>\n<script id=\"routing\" type=\"application/json\">\n{\"layers\":[",
          f);
    for (int r = 0; r < m->n_moe_layers; r++)
        fprintf(f, r ? ",%d" : "%d", m->moe_layers ? m->moe_layers[r] : r);
    fputs("],\"names\":", f);
    if (m->expert_names) {
        fputc('[', f);
        for (int e = 0; e < m->n_experts; e++) {
            if (e)
                fputc(',', f);
            js_str(f, m->expert_names[e]);
        }
        fputc(']', f);
    } else {
        fputs("null", f);
    }
    fputs(",\"palette\":[", f);
    for (int c = 0; c < N_HTML_PALETTE; c++)
        fprintf(f, c ? ",\"%s\"" : "\"%s\"", HTML_PALETTE[c]);
    fputs("],\"ids\":[", f);
    for (int i = 0; i < n; i++)
        fprintf(f, i ? ",%d" : "%d", (int)transcript_token_at(t, i)->id);
    fputs("],\n\"tokens\":[", f);
    for (int i = 0; i < n; i++) {
        fputs(i ? ",\n[" : "\n[", f);
        for (int r = 0; r < m->n_moe_layers; r++) {
            moe_route rt;
            transcript_route(t, i, r, &rt);
            fputs(r ? ",[[" : "[[", f);
            for (int e = 0; e < rt.n_experts; e++) {
                if (e)
                    fputc(',', f);
                fixed5(f, rt.probs[e]);
            }
            fputs("],[", f);
            for (int j = 0; j < rt.k; j++)
                fprintf(f, j ? ",%d" : "%d", rt.experts[j]);
            fputs("],[", f);
            for (int j = 0; j < rt.k; j++) {
                if (j)
                    fputc(',', f);
                fixed5(f, rt.weights[j]);
            }
            fputs("]]", f);
        }
        fputc(']', f);
    }
    fprintf(f, "]}\n</script>\n<script>\n%s</script>\n</body>\n</html>\n", HTML_SCRIPT);
    return 0;
}

/* ---- CSV ----------------------------------------------------------------- */

static void csv_text(FILE *f, const transcript_token *k)
{
    fputc('"', f);
    if (!k->text)
        fprintf(f, "[%d]", (int)k->id);
    int whole = k->text && transcript_utf8_ok((const unsigned char *)k->text, k->len);
    for (size_t i = 0; k->text && i < k->len; i++) {
        unsigned char c = (unsigned char)k->text[i];
        if (c == '"')
            fputs("\"\"", f);
        else if (c == '\\')
            fputs("\\\\", f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || (!whole && c >= 0x80))
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int write_csv(const transcript *t, FILE *f)
{
    const transcript_model *m = transcript_model_get(t);
    fputs("token,pos,prompt,text,layer,expert,name,probability,chosen,rank,weight\n", f);
    for (int i = 0; i < transcript_n_tokens(t); i++) {
        const transcript_token *k = transcript_token_at(t, i);
        for (int r = 0; r < m->n_moe_layers; r++) {
            moe_route rt;
            transcript_route(t, i, r, &rt);
            for (int e = 0; e < rt.n_experts; e++) {
                int rank = 0;
                for (int j = 0; j < rt.k && !rank; j++)
                    if (rt.experts[j] == e)
                        rank = j + 1;
                fprintf(f, "%d,%d,%d,", i, k->pos, k->prompt);
                csv_text(f, k);
                fprintf(f, ",%d,%d,", rt.layer, e);
                if (expert_name(m, e)) {
                    fputc('"', f);
                    for (const char *s = expert_name(m, e); *s; s++)
                        fputs(*s == '"' ? "\"\"" : (char[]){*s, 0}, f);
                    fputc('"', f);
                }
                fputc(',', f);
                fixed5(f, rt.probs[e]);
                fprintf(f, ",%d,", rank > 0);
                if (rank) {
                    fprintf(f, "%d,", rank);
                    fixed5(f, rt.weights[rank - 1]);
                } else {
                    fputc(',', f);
                }
                fputc('\n', f);
            }
        }
    }
    return 0;
}

/* ---- ANSI ---------------------------------------------------------------- */

static void ansi_controls(FILE *f, const transcript *t, int pos, int *next, int colour)
{
    for (; *next < transcript_n_controls(t) && transcript_control_at(t, *next)->pos == pos; (*next)++)
        fprintf(f, "%s[%s]%s", colour ? "\033[2m" : "", transcript_control_at(t, *next)->change,
                colour ? COLOUR_END : "");
}

static void write_ansi(const transcript *t, FILE *f, int colour)
{
    const transcript_model *m = transcript_model_get(t);
    if (colour && m->n_experts)
        colour_legend(stderr, m->n_experts, m->expert_names);
    int next_turn = 0, next_ctl = 0, n = transcript_n_tokens(t);
    for (int i = 0; i < n; i++) {
        int roles = 0;
        for (; next_turn < transcript_n_turns(t) && transcript_turn_at(t, next_turn)->token <= i; next_turn++)
            fprintf(f, "%s%s", roles++ ? "+" : i ? (colour ? "\n\033[1m" : "\n") : (colour ? "\033[1m" : ""),
                    transcript_turn_at(t, next_turn)->role);
        if (roles)
            fprintf(f, ":%s\n", colour ? COLOUR_END : "");
        ansi_controls(f, t, i, &next_ctl, colour);
        const transcript_token *k = transcript_token_at(t, i);
        if (colour && k->colour >= 0)
            fputs(colour_start(k->colour), f);
        if (k->text)
            fwrite(k->text, 1, k->len, f); /* bytes of a character come together on the terminal */
        else
            fprintf(f, "[%d]", (int)k->id);
        if (colour && k->colour >= 0)
            fputs(COLOUR_END, f);
    }
    ansi_controls(f, t, n, &next_ctl, colour);
    fputc('\n', f);
}

/* ---- the command --------------------------------------------------------- */

/* Write with fn to path ('-': stdout). 0, or 1 after printing the problem. */
static int write_out(const char *path, const transcript *t, int (*fn)(const transcript *, FILE *))
{
    int to_stdout = !strcmp(path, "-");
    FILE *f = to_stdout ? stdout : fopen(path, "w");
    if (!f)
        return fail_msg("%s: cannot write: %s", path, strerror(errno));
    fn(t, f);
    int bad = fflush(f) != 0 || ferror(f);
    int err = errno;
    if (!to_stdout && fclose(f) != 0)
        bad = 1, err = errno;
    if (bad)
        return fail_msg("%s: write failed: %s", path, strerror(err ? err : EIO));
    return 0;
}

int cmd_export(int argc, char **argv)
{
    const char *file = NULL, *html = NULL, *csv = NULL;
    int ansi = 0;
    colour_when when = COLOUR_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(EXPORT_USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--ansi")) {
            ansi = 1;
        } else if (!strcmp(a, "--html") || !strcmp(a, "--csv") || !strcmp(a, "--colour") || !strcmp(a, "--color")) {
            if (!v)
                return fail_msg("export: %s needs a value", a) + 1;
            i++;
            if (!strcmp(a, "--html"))
                html = v;
            else if (!strcmp(a, "--csv"))
                csv = v;
            else if (!strcmp(v, "auto") || !strcmp(v, "always") || !strcmp(v, "never"))
                when = !strcmp(v, "auto") ? COLOUR_AUTO : !strcmp(v, "always") ? COLOUR_ALWAYS : COLOUR_NEVER;
            else
                return fail_msg("%s expects auto, always or never, not '%s'", a, v) + 1;
        } else if (a[0] == '-' && a[1]) {
            return fail_msg("export: unknown option '%s' (see moescope export --help)", a) + 1;
        } else if (file) {
            return fail_msg("export: unexpected argument '%s' (the transcript is '%s')", a, file) + 1;
        } else {
            file = a;
        }
    }
    if (!file)
        return fail_msg("export: no transcript given (see moescope export --help)") + 1;
    if (!html && !csv && !ansi)
        return fail_msg("export: say what to write: --html FILE, --csv FILE or --ansi") + 1;
    char msg[1024];
    transcript *t = transcript_load(file, msg, sizeof msg);
    if (!t)
        return fail_msg("%s", msg);
    int rc = 0;
    if (html)
        rc |= write_out(html, t, write_html);
    if (csv && !rc)
        rc |= write_out(csv, t, write_csv);
    if (ansi && !rc) {
        write_ansi(t, stdout, colour_enabled(when, stdout));
        fflush(stdout);
    }
    transcript_free(t);
    return rc;
}
