/* Jinja lexer and parser: the template source (with trim_blocks and
 * lstrip_blocks applied) to tokens, then to a tree of statements and
 * expressions. Errors name the line and column. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "error.h"
#include "jinja.h"

/* ---- lexer -------------------------------------------------------------- */

/* What @huggingface/jinja and Jinja2 do before lexing, with the options
 * transformers sets: drop one trailing newline (keep_trailing_newline is
 * off), strip spaces and tabs before a block tag that starts a line
 * (lstrip_blocks), and the newline right after a block tag (trim_blocks). */
void jj_preprocess(ctx *c, const char *s)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '\n')
        n--;
    char *a = jj_ar_alloc(c, n + 1);
    int *am = jj_ar_alloc(c, (n + 1) * sizeof(int));
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (i == 0 || s[i - 1] == '\n' || s[i - 1] == '\r') {
            size_t j = i;
            while (j < n && (s[j] == ' ' || s[j] == '\t'))
                j++;
            if (j + 1 < n && s[j] == '{' && (s[j + 1] == '%' || s[j + 1] == '#' || s[j + 1] == '-') && j > i)
                i = j;
        }
        am[k] = (int)i;
        a[k++] = s[i++];
    }
    char *b = jj_ar_alloc(c, k + 1);
    int *bm = jj_ar_alloc(c, (k + 1) * sizeof(int));
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (a[i] == '\n' && i >= 2 && a[i - 1] == '}' && (a[i - 2] == '%' || a[i - 2] == '#' || a[i - 2] == '-'))
            continue;
        bm[m] = am[i];
        b[m++] = a[i];
    }
    bm[m] = (int)n;
    c->src = b;
    c->omap = bm;
    c->srcn = m;
}

static void push_tok(ctx *c, tok t)
{
    if (c->ntok == c->ctok) {
        int cap = c->ctok ? c->ctok * 2 : 256;
        c->toks = jj_ar_grow(c, c->toks, (size_t)c->ntok * sizeof(tok), (size_t)cap * sizeof(tok));
        c->ctok = cap;
    }
    c->toks[c->ntok++] = t;
}

/* Drop trailing whitespace from the text token just before a {%- or {{-. */
static void strip_last_text(ctx *c)
{
    if (c->ntok && c->toks[c->ntok - 1].t == T_TEXT) {
        tok *t = &c->toks[c->ntok - 1];
        t->n -= jj_ws_tail(t->s, t->n, 1);
        if (t->n == 0)
            c->ntok--;
    }
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

static size_t lex_string(ctx *c, size_t i, tok *t)
{
    const char *s = c->src;
    char q = s[i++];
    buf b = {0};
    size_t start = i - 1;
    while (i < c->srcn && s[i] != q) {
        if (s[i] != '\\') {
            jj_buf_put(c, &b, s + i++, 1);
            continue;
        }
        if (++i >= c->srcn)
            break;
        char e = s[i++];
        const char *r = NULL;
        switch (e) {
        case 'n': r = "\n"; break;
        case 't': r = "\t"; break;
        case 'r': r = "\r"; break;
        case 'b': r = "\b"; break;
        case 'f': r = "\f"; break;
        case 'v': r = "\v"; break;
        case '\'': r = "'"; break;
        case '"': r = "\""; break;
        case '\\': r = "\\"; break;
        default: break;
        }
        if (r) {
            jj_buf_put(c, &b, r, 1);
        } else if (e == 'x' || e == 'u') {
            int len = e == 'x' ? 2 : 4, cp = 0;
            for (int k = 0; k < len; k++) {
                int h = i + (size_t)k < c->srcn ? hexval(s[i + (size_t)k]) : -1;
                if (h < 0) {
                    jj_fail_at(c, (int)i - 2, MOE_EFORMAT, "bad \\%c escape in a string literal", e);
                }
                cp = cp * 16 + h;
            }
            i += (size_t)len;
            utf8proc_uint8_t enc[4];
            utf8proc_ssize_t el = utf8proc_encode_char(cp, enc);
            jj_buf_put(c, &b, (const char *)enc, (size_t)el);
        } else {
            jj_fail_at(c, (int)i - 2, MOE_EFORMAT, "unknown escape \\%c in a string literal", e);
        }
    }
    if (i >= c->srcn) {
        jj_fail_at(c, (int)start, MOE_EFORMAT, "unterminated string literal");
    }
    val v = jj_v_str(c, b.p ? b.p : "", b.n);
    t->t = T_STR;
    t->s = v.s;
    t->n = v.n;
    return i + 1;
}

void jj_lex(ctx *c)
{
    const char *s = c->src;
    size_t n = c->srcn, i = 0;
    int in_tag = 0; /* 0 text, 1 statement, 2 expression */
    int open_at = 0, curly = 0;
    static const char *ops[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ".",
                                ":", "|", "<", ">", "+", "-", "~", "*", "/", "%", "="};
    while (i < n) {
        if (!in_tag) {
            size_t j = i;
            while (j < n && !(s[j] == '{' && j + 1 < n && (s[j + 1] == '%' || s[j + 1] == '{' || s[j + 1] == '#')))
                j++;
            if (j > i) {
                push_tok(c, (tok){.t = T_TEXT, .pos = (int)i, .s = s + i, .n = j - i});
                i = j;
                continue;
            }
            if (s[i + 1] == '#') {
                size_t at = i;
                i += 2;
                int strip_before = i < n && s[i] == '-';
                while (i + 1 < n && !(s[i] == '#' && s[i + 1] == '}'))
                    i++;
                if (i + 1 >= n)
                    jj_fail_at(c, (int)at, MOE_EFORMAT, "unterminated comment: no #} after {#");
                int strip_after = s[i - 1] == '-';
                if (strip_before)
                    strip_last_text(c);
                i += 2;
                if (strip_after)
                    while (i < n && jj_ws_len(s + i, n - i, 1))
                        i += jj_ws_len(s + i, n - i, 1);
                continue;
            }
            in_tag = s[i + 1] == '%' ? 1 : 2;
            open_at = (int)i;
            curly = 0;
            if (i + 2 < n && s[i + 2] == '-') {
                strip_last_text(c);
                i++;
            }
            push_tok(c, (tok){.t = in_tag == 1 ? T_OPEN_STMT : T_OPEN_EXPR, .pos = open_at});
            i += 2;
            continue;
        }
        size_t l;
        while (i < n && (l = jj_ws_len(s + i, n - i, 1)))
            i += l;
        if (i >= n)
            break;
        const char *close = in_tag == 1 ? "%}" : "}}";
        int minus = s[i] == '-' && i + 2 < n + 0 && strncmp(s + i + 1, close, 2) == 0;
        if (minus || (strncmp(s + i, close, 2) == 0 && !(in_tag == 2 && curly > 0))) {
            push_tok(c, (tok){.t = in_tag == 1 ? T_CLOSE_STMT : T_CLOSE_EXPR, .pos = (int)i});
            i += minus ? 3 : 2;
            in_tag = 0;
            if (minus)
                while (i < n && (l = jj_ws_len(s + i, n - i, 1)))
                    i += l;
            continue;
        }
        tok t = {.pos = (int)i};
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\'' || ch == '"') {
            i = lex_string(c, i, &t);
        } else if (ch >= '0' && ch <= '9') {
            size_t j = i;
            while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_'))
                j++;
            int isf = j + 1 < n && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9' &&
                      !(c->ntok && c->toks[c->ntok - 1].t == T_OP && c->toks[c->ntok - 1].s[0] == '.');
            if (isf) {
                j++;
                while (j < n && s[j] >= '0' && s[j] <= '9')
                    j++;
            }
            char tmp[64];
            size_t m = 0;
            for (size_t k = i; k < j && m < sizeof tmp - 1; k++)
                if (s[k] != '_')
                    tmp[m++] = s[k];
            tmp[m] = 0;
            t.t = isf ? T_FLOAT : T_INT;
            t.f = strtod(tmp, NULL);
            t.i = strtoll(tmp, NULL, 10);
            i = j;
        } else if (ch == '_' || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')) {
            size_t j = i;
            while (j < n && (s[j] == '_' || ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z') || (s[j] >= '0' && s[j] <= '9')))
                j++;
            t.t = T_NAME;
            t.s = s + i;
            t.n = j - i;
            i = j;
        } else {
            size_t k;
            for (k = 0; k < sizeof ops / sizeof *ops; k++)
                if (strncmp(s + i, ops[k], strlen(ops[k])) == 0)
                    break;
            if (k == sizeof ops / sizeof *ops)
                jj_fail_at(c, (int)i, MOE_EFORMAT, "unexpected character '%c' inside a tag", ch);
            t.t = T_OP;
            t.s = ops[k];
            t.n = strlen(ops[k]);
            if (ops[k][0] == '{')
                curly++;
            else if (ops[k][0] == '}')
                curly--;
            i += t.n;
        }
        push_tok(c, t);
    }
    if (in_tag)
        jj_fail_at(c, open_at, MOE_EFORMAT, "unterminated %s: no %s before the end of the template",
                in_tag == 1 ? "{% tag" : "{{ expression", in_tag == 1 ? "%}" : "}}");
    push_tok(c, (tok){.t = T_EOF, .pos = (int)n});
}

/* ---- parser ------------------------------------------------------------- */

static tok *peek(ctx *c) { return &c->toks[c->itok]; }
static tok *next(ctx *c) { return &c->toks[c->itok < c->ntok - 1 ? c->itok++ : c->itok]; }

static int is_op(const tok *t, const char *op) { return t->t == T_OP && strlen(op) == t->n && memcmp(t->s, op, t->n) == 0; }
static int is_name(const tok *t, const char *nm) { return t->t == T_NAME && strlen(nm) == t->n && memcmp(t->s, nm, t->n) == 0; }

static const char *tok_desc(ctx *c, const tok *t)
{
    static const char *fixed[] = {"text", "{%", "%}", "{{", "}}"};
    if (t->t <= T_CLOSE_EXPR)
        return fixed[t->t];
    if (t->t == T_EOF)
        return "the end of the template";
    if (t->t == T_STR)
        return "a string";
    if (t->t == T_INT || t->t == T_FLOAT)
        return "a number";
    char *p = jj_ar_alloc(c, t->n + 3);
    snprintf(p, t->n + 3, "'%.*s'", (int)t->n, t->s);
    return p;
}

static void expect_op(ctx *c, const char *op)
{
    tok *t = next(c);
    if (!is_op(t, op))
        jj_fail_at(c, t->pos, MOE_EFORMAT, "expected '%s', found %s", op, tok_desc(c, t));
}

static const char *expect_name(ctx *c)
{
    tok *t = next(c);
    if (t->t != T_NAME)
        jj_fail_at(c, t->pos, MOE_EFORMAT, "expected a name, found %s", tok_desc(c, t));
    char *p = jj_ar_alloc(c, t->n + 1);
    memcpy(p, t->s, t->n);
    return p;
}

static void expect_close(ctx *c)
{
    tok *t = next(c);
    if (t->t != T_CLOSE_STMT)
        jj_fail_at(c, t->pos, MOE_EFORMAT, "expected %%} to close the tag, found %s", tok_desc(c, t));
}

static node *mk(ctx *c, int k, int pos)
{
    node *x = jj_ar_alloc(c, sizeof *x);
    x->k = k;
    x->pos = pos;
    return x;
}

static void nl_push(ctx *c, nlist *l, node *x)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        l->v = jj_ar_grow(c, l->v, (size_t)l->n * sizeof(node *), (size_t)cap * sizeof(node *));
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static void add_name(ctx *c, node *x, const char *nm)
{
    const char **p = jj_ar_grow(c, x->names, (size_t)x->nnames * sizeof(char *), (size_t)(x->nnames + 1) * sizeof(char *));
    p[x->nnames++] = nm;
    x->names = p;
}

void jj_enter(ctx *c, int pos)
{
    if (++c->depth > CT_MAX_DEPTH)
        jj_fail_at(c, pos, MOE_EINVAL, "nested more than %d deep", CT_MAX_DEPTH);
}

static node *p_expr(ctx *c, int with_cond);
static node *p_unary(ctx *c);

/* Call arguments after '(': positional into l1, keyword into l2 + names. */
static void p_args(ctx *c, node *x)
{
    while (!is_op(peek(c), ")")) {
        tok *t = peek(c);
        if (t->t == T_NAME && is_op(&c->toks[c->itok + 1], "=")) {
            add_name(c, x, expect_name(c));
            next(c);
            nl_push(c, &x->l2, p_expr(c, 1));
        } else {
            if (x->l2.n)
                jj_fail_at(c, t->pos, MOE_EFORMAT, "a positional argument after a keyword argument");
            nl_push(c, &x->l1, p_expr(c, 1));
        }
        if (!is_op(peek(c), ","))
            break;
        next(c);
    }
    expect_op(c, ")");
}

static node *p_primary(ctx *c)
{
    tok *t = next(c);
    jj_enter(c, t->pos);
    node *x = mk(c, E_LIT, t->pos);
    if (t->t == T_STR) {
        x->lit = (val){.k = V_STR, .s = t->s, .n = t->n};
        while (peek(c)->t == T_STR) { /* adjacent literals concatenate */
            tok *u = next(c);
            char *p = jj_ar_alloc(c, x->lit.n + u->n + 1);
            memcpy(p, x->lit.s, x->lit.n);
            memcpy(p + x->lit.n, u->s, u->n);
            x->lit.s = p;
            x->lit.n += u->n;
        }
    } else if (t->t == T_INT) {
        x->lit = jj_v_int(t->i);
    } else if (t->t == T_FLOAT) {
        x->lit = (val){.k = V_FLOAT, .f = t->f};
    } else if (t->t == T_NAME) {
        if (is_name(t, "true") || is_name(t, "True"))
            x->lit = jj_v_bool(1);
        else if (is_name(t, "false") || is_name(t, "False"))
            x->lit = jj_v_bool(0);
        else if (is_name(t, "none") || is_name(t, "None"))
            x->lit = (val){.k = V_NONE};
        else {
            x->k = E_NAME;
            c->itok--;
            x->name = expect_name(c);
        }
    } else if (is_op(t, "(")) {
        if (is_op(peek(c), ")")) {
            next(c);
            x->k = E_LIST;
        } else {
            node *e = p_expr(c, 1);
            if (is_op(peek(c), ",")) { /* a tuple: a list here */
                x->k = E_LIST;
                nl_push(c, &x->l1, e);
                while (is_op(peek(c), ",")) {
                    next(c);
                    if (is_op(peek(c), ")"))
                        break;
                    nl_push(c, &x->l1, p_expr(c, 1));
                }
            } else {
                x = e;
            }
            expect_op(c, ")");
        }
    } else if (is_op(t, "[")) {
        x->k = E_LIST;
        while (!is_op(peek(c), "]")) {
            nl_push(c, &x->l1, p_expr(c, 1));
            if (!is_op(peek(c), ","))
                break;
            next(c);
        }
        expect_op(c, "]");
    } else if (is_op(t, "{")) {
        x->k = E_DICT;
        while (!is_op(peek(c), "}")) {
            nl_push(c, &x->l1, p_expr(c, 1));
            expect_op(c, ":");
            nl_push(c, &x->l2, p_expr(c, 1));
            if (!is_op(peek(c), ","))
                break;
            next(c);
        }
        expect_op(c, "}");
    } else {
        jj_fail_at(c, t->pos, MOE_EFORMAT, "expected a value, found %s", tok_desc(c, t));
    }
    c->depth--;
    return x;
}

static node *p_postfix(ctx *c, node *x)
{
    for (;;) {
        tok *t = peek(c);
        if (is_op(t, ".")) {
            next(c);
            node *y = mk(c, E_ATTR, t->pos);
            y->a = x;
            if (peek(c)->t == T_INT) {
                y->k = E_INDEX;
                y->b = mk(c, E_LIT, t->pos);
                y->b->lit = jj_v_int(next(c)->i);
            } else {
                y->name = expect_name(c);
            }
            x = y;
        } else if (is_op(t, "[")) {
            next(c);
            node *y = mk(c, E_INDEX, t->pos);
            y->a = x;
            node *parts[3] = {0};
            int colons = 0;
            for (;;) {
                if (is_op(peek(c), ":")) {
                    next(c);
                    if (++colons > 2)
                        jj_fail_at(c, t->pos, MOE_EFORMAT, "a slice takes at most two ':'");
                    continue;
                }
                if (is_op(peek(c), "]"))
                    break;
                if (parts[colons])
                    jj_fail_at(c, peek(c)->pos, MOE_EFORMAT, "expected ']' or ':', found %s", tok_desc(c, peek(c)));
                parts[colons] = p_expr(c, 1);
            }
            expect_op(c, "]");
            if (colons) {
                y->k = E_SLICE;
                y->b = parts[0];
                y->c = parts[1];
                nl_push(c, &y->l1, parts[2]);
            } else if (!parts[0]) {
                jj_fail_at(c, t->pos, MOE_EFORMAT, "empty subscript []");
            } else {
                y->b = parts[0];
            }
            x = y;
        } else if (is_op(t, "(")) {
            next(c);
            node *y = mk(c, E_CALL, t->pos);
            y->a = x;
            p_args(c, y);
            x = y;
        } else {
            return x;
        }
    }
}

/* Filters (x | f(args)) and tests (x is [not] t arg) bind to a unary. */
static node *p_filters(ctx *c, node *x)
{
    for (;;) {
        tok *t = peek(c);
        if (is_op(t, "|")) {
            next(c);
            node *y = mk(c, E_FILTER, t->pos);
            y->a = x;
            y->name = expect_name(c);
            if (is_op(peek(c), "(")) {
                next(c);
                p_args(c, y);
            }
            x = y;
        } else if (is_name(t, "is")) {
            next(c);
            node *y = mk(c, E_TEST, t->pos);
            y->a = x;
            if (is_name(peek(c), "not")) {
                next(c);
                y->negate = 1;
            }
            tok *u = peek(c);
            if (is_name(u, "none") || is_name(u, "true") || is_name(u, "false")) {
                next(c);
                char *p = jj_ar_alloc(c, u->n + 1);
                memcpy(p, u->s, u->n);
                y->name = p;
            } else {
                y->name = expect_name(c);
            }
            tok *a = peek(c);
            if (is_op(a, "(")) {
                next(c);
                p_args(c, y);
            } else if ((a->t == T_NAME || a->t == T_STR || a->t == T_INT || a->t == T_FLOAT || is_op(a, "[") ||
                        is_op(a, "{")) &&
                       !is_name(a, "else") && !is_name(a, "or") && !is_name(a, "and") && !is_name(a, "if") &&
                       !is_name(a, "in") && !is_name(a, "is") && !is_name(a, "not")) {
                nl_push(c, &y->l1, p_postfix(c, p_primary(c)));
            }
            x = y;
        } else {
            return x;
        }
    }
}

static node *p_unary(ctx *c)
{
    tok *t = peek(c);
    jj_enter(c, t->pos);
    node *x;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(c);
        x = mk(c, is_op(t, "-") ? E_NEG : E_POS, t->pos);
        x->a = p_unary(c);
    } else {
        x = p_filters(c, p_postfix(c, p_primary(c)));
    }
    c->depth--;
    return x;
}

static node *bin(ctx *c, int pos, const char *op, node *l, node *r)
{
    node *x = mk(c, E_BIN, pos);
    x->name = op;
    x->a = l;
    x->b = r;
    return x;
}

static node *p_pow(ctx *c)
{
    node *x = p_unary(c);
    while (is_op(peek(c), "**")) {
        int pos = next(c)->pos;
        x = bin(c, pos, "**", x, p_unary(c));
    }
    return x;
}

static node *p_mul(ctx *c)
{
    node *x = p_pow(c);
    for (;;) {
        tok *t = peek(c);
        const char *op = is_op(t, "*") ? "*" : is_op(t, "/") ? "/" : is_op(t, "//") ? "//" : is_op(t, "%") ? "%" : NULL;
        if (!op)
            return x;
        next(c);
        x = bin(c, t->pos, op, x, p_pow(c));
    }
}

static node *p_concat(ctx *c)
{
    node *x = p_mul(c);
    while (is_op(peek(c), "~")) {
        int pos = next(c)->pos;
        x = bin(c, pos, "~", x, p_mul(c));
    }
    return x;
}

static node *p_add(ctx *c)
{
    node *x = p_concat(c);
    for (;;) {
        tok *t = peek(c);
        const char *op = is_op(t, "+") ? "+" : is_op(t, "-") ? "-" : NULL;
        if (!op)
            return x;
        next(c);
        x = bin(c, t->pos, op, x, p_concat(c));
    }
}

static node *p_compare(ctx *c)
{
    node *x = p_add(c);
    for (;;) {
        tok *t = peek(c);
        static const char *cmp[] = {"==", "!=", "<", ">", "<=", ">="};
        const char *op = NULL;
        for (int i = 0; i < 6; i++)
            if (is_op(t, cmp[i]))
                op = cmp[i];
        if (is_name(t, "in"))
            op = "in";
        else if (is_name(t, "not") && is_name(&c->toks[c->itok + 1], "in"))
            op = "not in", next(c);
        if (!op)
            return x;
        next(c);
        x = bin(c, t->pos, op, x, p_add(c));
    }
}

static node *p_not(ctx *c)
{
    tok *t = peek(c);
    if (is_name(t, "not")) {
        next(c);
        jj_enter(c, t->pos);
        node *x = mk(c, E_NOT, t->pos);
        x->a = p_not(c);
        c->depth--;
        return x;
    }
    return p_compare(c);
}

static node *p_and(ctx *c)
{
    node *x = p_not(c);
    while (is_name(peek(c), "and")) {
        node *y = mk(c, E_AND, next(c)->pos);
        y->a = x;
        y->b = p_not(c);
        x = y;
    }
    return x;
}

static node *p_or(ctx *c)
{
    node *x = p_and(c);
    while (is_name(peek(c), "or")) {
        node *y = mk(c, E_OR, next(c)->pos);
        y->a = x;
        y->b = p_and(c);
        x = y;
    }
    return x;
}

/* An expression; with_cond allows the inline `a if cond else b`. */
static node *p_expr(ctx *c, int with_cond)
{
    jj_enter(c, peek(c)->pos);
    node *x = p_or(c);
    while (with_cond && is_name(peek(c), "if")) {
        node *y = mk(c, E_COND, next(c)->pos);
        y->a = p_or(c); /* condition */
        y->b = x;       /* then */
        if (is_name(peek(c), "else")) {
            next(c);
            y->c = p_expr(c, 1);
        }
        x = y;
    }
    c->depth--;
    return x;
}

/* Statements up to one of the `stops` tag names ("endif", "elif", ...),
 * which is left unread after its {%. Returns the stop found. */

static void p_for(ctx *c, node *x)
{
    add_name(c, x, expect_name(c));
    while (is_op(peek(c), ",")) {
        next(c);
        add_name(c, x, expect_name(c));
    }
    tok *t = next(c);
    if (!is_name(t, "in"))
        jj_fail_at(c, t->pos, MOE_EFORMAT, "expected 'in' in a for tag, found %s", tok_desc(c, t));
    x->a = p_expr(c, 0);
    if (is_name(peek(c), "if")) {
        next(c);
        x->b = p_expr(c, 0);
    }
    if (is_name(peek(c), "recursive"))
        jj_fail_at(c, peek(c)->pos, MOE_EUNSUPPORTED, "recursive for loops are not supported");
    expect_close(c);
    static const char *const stops[] = {"endfor", "else", NULL};
    const char *s = jj_p_body(c, &x->l1, stops, x->pos, "for");
    if (strcmp(s, "else") == 0) {
        next(c);
        expect_close(c);
        static const char *const end[] = {"endfor", NULL};
        jj_p_body(c, &x->l2, end, x->pos, "for");
    }
    next(c);
    expect_close(c);
}

static void p_if(ctx *c, node *x)
{
    x->a = p_expr(c, 1);
    expect_close(c);
    static const char *const stops[] = {"endif", "elif", "else", NULL};
    const char *s = jj_p_body(c, &x->l1, stops, x->pos, "if");
    tok *t = next(c);
    if (strcmp(s, "elif") == 0) {
        node *y = mk(c, N_IF, t->pos);
        nl_push(c, &x->l2, y);
        p_if(c, y); /* consumes the endif */
        return;
    }
    if (strcmp(s, "else") == 0) {
        expect_close(c);
        static const char *const end[] = {"endif", NULL};
        jj_p_body(c, &x->l2, end, x->pos, "if");
        next(c);
    }
    expect_close(c);
}

static void p_set(ctx *c, node *x)
{
    const char *nm = expect_name(c);
    add_name(c, x, nm);
    if (is_op(peek(c), ".")) { /* ns.attr = ... */
        next(c);
        x->a = mk(c, E_NAME, x->pos);
        x->a->name = nm;
        x->name = expect_name(c);
    }
    while (!x->a && is_op(peek(c), ",")) {
        next(c);
        add_name(c, x, expect_name(c));
    }
    if (peek(c)->t == T_CLOSE_STMT && !x->a && x->nnames == 1) { /* {% set x %}...{% endset %} */
        next(c);
        x->k = N_SETBLOCK;
        static const char *const end[] = {"endset", NULL};
        jj_p_body(c, &x->l1, end, x->pos, "set");
        next(c);
        expect_close(c);
        return;
    }
    expect_op(c, "=");
    x->b = p_expr(c, 1);
    expect_close(c);
}

static void p_macro(ctx *c, node *x)
{
    x->name = expect_name(c);
    expect_op(c, "(");
    while (!is_op(peek(c), ")")) {
        add_name(c, x, expect_name(c));
        node *dflt = NULL;
        if (is_op(peek(c), "=")) {
            next(c);
            dflt = p_expr(c, 1);
        }
        nl_push(c, &x->l2, dflt);
        if (!is_op(peek(c), ","))
            break;
        next(c);
    }
    expect_op(c, ")");
    expect_close(c);
    static const char *const end[] = {"endmacro", NULL};
    jj_p_body(c, &x->l1, end, x->pos, "macro");
    next(c);
    expect_close(c);
}

const char *jj_p_body(ctx *c, nlist *body, const char *const *stops, int open_pos, const char *what)
{
    jj_enter(c, peek(c)->pos);
    for (;;) {
        tok *t = next(c);
        if (t->t == T_EOF) {
            if (!stops)
                break;
            jj_fail_at(c, open_pos, MOE_EFORMAT, "this {%% %s %%} has no {%% end%s %%}", what, what);
        }
        if (t->t == T_TEXT) {
            node *x = mk(c, N_TEXT, t->pos);
            x->lit = (val){.k = V_STR, .s = t->s, .n = t->n};
            nl_push(c, body, x);
        } else if (t->t == T_OPEN_EXPR) {
            node *x = mk(c, N_OUT, t->pos);
            x->a = p_expr(c, 1);
            tok *u = next(c);
            if (u->t != T_CLOSE_EXPR)
                jj_fail_at(c, u->pos, MOE_EFORMAT, "expected }} to close the expression, found %s", tok_desc(c, u));
            nl_push(c, body, x);
        } else if (t->t == T_OPEN_STMT) {
            tok *k = peek(c);
            if (k->t != T_NAME)
                jj_fail_at(c, k->pos, MOE_EFORMAT, "expected a tag name after {%%, found %s", tok_desc(c, k));
            for (int i = 0; stops && stops[i]; i++)
                if (is_name(k, stops[i])) {
                    c->depth--;
                    return stops[i];
                }
            next(c);
            node *x = mk(c, N_OUT, t->pos);
            if (is_name(k, "if")) {
                x->k = N_IF;
                p_if(c, x);
            } else if (is_name(k, "for")) {
                x->k = N_FOR;
                p_for(c, x);
            } else if (is_name(k, "set")) {
                x->k = N_SET;
                p_set(c, x);
            } else if (is_name(k, "macro")) {
                x->k = N_MACRO;
                p_macro(c, x);
            } else if (is_name(k, "break") || is_name(k, "continue")) {
                x->k = is_name(k, "break") ? N_BREAK : N_CONTINUE;
                expect_close(c);
            } else if (is_name(k, "generation") || is_name(k, "endgeneration")) {
                expect_close(c); /* transformers' assistant-mask marker: no output */
                continue;
            } else if (is_name(k, "endif") || is_name(k, "endfor") || is_name(k, "else") || is_name(k, "elif") ||
                       is_name(k, "endset") || is_name(k, "endmacro")) {
                jj_fail_at(c, k->pos, MOE_EFORMAT, "{%% %.*s %%} without a matching opening tag", (int)k->n, k->s);
            } else {
                jj_fail_at(c, k->pos, MOE_EUNSUPPORTED, "the {%% %.*s %%} tag is not supported", (int)k->n, k->s);
            }
            nl_push(c, body, x);
        } else {
            jj_fail_at(c, t->pos, MOE_EFORMAT, "unexpected %s", tok_desc(c, t));
        }
    }
    c->depth--;
    return NULL;
}
