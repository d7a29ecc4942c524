/* Jinja built-ins: calls (functions, methods, macros), tests and
 * filters, as transformers' chat template environment provides them. */
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

static args eval_args(ctx *c, node *x, struct scope *sc, val *first)
{
    args a = {.x = x};
    a.pos = jj_ar_alloc(c, (size_t)(x->l1.n + 1) * sizeof(val));
    a.kw = jj_ar_alloc(c, (size_t)(x->l2.n + 1) * sizeof(val));
    if (first)
        a.pos[a.npos++] = *first;
    for (int i = 0; i < x->l1.n; i++)
        a.pos[a.npos++] = jj_eval(c, x->l1.v[i], sc);
    for (int i = 0; i < x->l2.n; i++)
        a.kw[i] = jj_eval(c, x->l2.v[i], sc);
    return a;
}

/* Argument i (positional) or keyword `kw`, else undefined. */
static val arg(const args *a, int i, const char *kw)
{
    if (i < a->npos)
        return a->pos[i];
    for (int k = 0; kw && k < a->x->l2.n; k++)
        if (strcmp(a->x->names[k], kw) == 0)
            return a->kw[k];
    return (val){.k = V_UNDEF};
}

static void want(ctx *c, int pos, val v, int kind, const char *what)
{
    if (v.k != kind)
        jj_fail_at(c, pos, MOE_EINVAL, "%s must be %s, not %s", what, jj_type_name((val){.k = kind}), jj_type_name(v));
}

static int starts_or_ends(ctx *c, int pos, val s, val p, int end)
{
    if (p.k == V_LIST) {
        for (int i = 0; i < p.l->n; i++)
            if (starts_or_ends(c, pos, s, p.l->v[i], end))
                return 1;
        return 0;
    }
    want(c, pos, p, V_STR, end ? "endswith's argument" : "startswith's argument");
    if (p.n > s.n)
        return 0;
    return memcmp(end ? s.s + s.n - p.n : s.s, p.s, p.n) == 0;
}

val jj_call_method(ctx *c, int pos, struct method *m, const args *a)
{
    val s = m->self;
    const char *nm = m->name;
    if (s.k == V_DICT) {
        if (strcmp(nm, "get") == 0) {
            val k = arg(a, 0, NULL), v = k.k == V_STR ? jj_dict_get(s.d, k.s, k.n) : (val){.k = V_UNDEF};
            if (v.k != V_UNDEF)
                return v;
            val d = arg(a, 1, NULL);
            return d.k == V_UNDEF ? (val){.k = V_NONE} : d;
        }
        list *l = jj_list_new(c);
        for (int i = 0; i < s.d->n; i++) {
            if (nm[0] == 'k') {
                jj_list_push(c, l, s.d->key[i]);
            } else if (nm[0] == 'v') {
                jj_list_push(c, l, s.d->v[i]);
            } else {
                list *p = jj_list_new(c);
                jj_list_push(c, p, s.d->key[i]);
                jj_list_push(c, p, s.d->v[i]);
                jj_list_push(c, l, (val){.k = V_LIST, .l = p});
            }
        }
        return (val){.k = V_LIST, .l = l};
    }
    if (strcmp(nm, "startswith") == 0 || strcmp(nm, "endswith") == 0)
        return jj_v_bool(starts_or_ends(c, pos, s, arg(a, 0, NULL), nm[0] == 'e'));
    if (strstr(nm, "strip")) {
        val ch = arg(a, 0, "chars");
        int which = nm[0] == 'l' ? 1 : nm[0] == 'r' ? 2 : 3;
        if (ch.k == V_STR)
            return jj_str_strip(c, s, &ch, which);
        return jj_str_strip(c, s, NULL, which);
    }
    if (strcmp(nm, "upper") == 0)
        return jj_str_map(c, s, 0);
    if (strcmp(nm, "lower") == 0)
        return jj_str_map(c, s, 1);
    if (strcmp(nm, "title") == 0)
        return jj_str_map(c, s, 2);
    if (strcmp(nm, "capitalize") == 0)
        return jj_str_map(c, s, 3);
    if (strcmp(nm, "replace") == 0) {
        val o = arg(a, 0, "old"), n = arg(a, 1, "new"), cnt = arg(a, 2, "count");
        want(c, pos, o, V_STR, "replace's first argument");
        want(c, pos, n, V_STR, "replace's second argument");
        long long left = cnt.k == V_INT && cnt.i >= 0 ? cnt.i : -1;
        buf b = {0};
        size_t i = 0;
        while (i <= s.n) {
            const char *hit = left == 0 ? NULL
                              : o.n ? memmem(s.s + i, s.n - i, o.s, o.n)
                                    : s.s + i;
            if (!hit) {
                jj_buf_put(c, &b, s.s + i, s.n - i);
                break;
            }
            jj_buf_put(c, &b, s.s + i, (size_t)(hit - s.s) - i);
            jj_buf_put(c, &b, n.s, n.n);
            if (left > 0)
                left--;
            i = (size_t)(hit - s.s) + o.n;
            if (!o.n) { /* "" matches between every character */
                if (i >= s.n)
                    break;
                size_t l = (size_t)jj_u8next(s.s, s.n, i);
                jj_buf_put(c, &b, s.s + i, l);
                i += l;
                if (i == s.n && left != 0)
                    jj_buf_put(c, &b, n.s, n.n);
                if (i == s.n)
                    break;
            }
        }
        val r = jj_v_str(c, b.p ? b.p : "", b.n);
        return r;
    }
    /* split(sep=None, maxsplit=-1) */
    val sep = arg(a, 0, "sep"), mx = arg(a, 1, "maxsplit");
    long long maxsplit = mx.k == V_INT ? mx.i : -1;
    list *l = jj_list_new(c);
    if (sep.k == V_STR) {
        if (!sep.n)
            jj_fail_at(c, pos, MOE_EINVAL, "split: empty separator");
        size_t i = 0;
        for (;;) {
            const char *hit = maxsplit != 0 ? memmem(s.s + i, s.n - i, sep.s, sep.n) : NULL;
            if (!hit) {
                jj_list_push(c, l, jj_v_str(c, s.s + i, s.n - i));
                break;
            }
            jj_list_push(c, l, jj_v_str(c, s.s + i, (size_t)(hit - s.s) - i));
            i = (size_t)(hit - s.s) + sep.n;
            if (maxsplit > 0)
                maxsplit--;
        }
    } else {
        size_t i = 0, w;
        for (;;) {
            while (i < s.n && (w = jj_ws_len(s.s + i, s.n - i, 0)))
                i += w;
            if (i >= s.n)
                break;
            if (maxsplit == 0) {
                val rest = jj_str_strip(c, jj_v_str(c, s.s + i, s.n - i), NULL, 2);
                jj_list_push(c, l, rest);
                break;
            }
            size_t j = i;
            while (j < s.n && !jj_ws_len(s.s + j, s.n - j, 0))
                j += (size_t)jj_u8next(s.s, s.n, j);
            jj_list_push(c, l, jj_v_str(c, s.s + i, j - i));
            i = j;
            if (maxsplit > 0)
                maxsplit--;
        }
    }
    return (val){.k = V_LIST, .l = l};
}

static val call_macro(ctx *c, int pos, struct macro *mc, const args *a)
{
    node *mac = mc->x;
    if (a->npos > mac->nnames)
        jj_fail_at(c, pos, MOE_EINVAL, "macro %s takes %d arguments, got %d", mac->name, mac->nnames, a->npos);
    jj_enter(c, pos);
    struct scope *sc = jj_ar_alloc(c, sizeof *sc);
    sc->parent = mc->sc;
    for (int i = 0; i < mac->nnames; i++) {
        val v = arg(a, i, mac->names[i]);
        if (v.k == V_UNDEF && mac->l2.v[i])
            v = jj_eval(c, mac->l2.v[i], sc);
        jj_assign(c, sc, mac->names[i], v);
    }
    buf saved = c->out;
    c->out = (buf){0};
    jj_exec_body(c, &mac->l1, sc);
    buf mine = c->out;
    c->out = saved;
    val r = jj_v_str(c, mine.p ? mine.p : "", mine.n);
    c->depth--;
    return r;
}

val jj_call(ctx *c, node *x, struct scope *sc)
{
    val f = jj_eval(c, x->a, sc);
    args a = eval_args(c, x, sc, NULL);
    if (f.k == V_METHOD)
        return jj_call_method(c, x->pos, f.m, &a);
    if (f.k == V_MACRO)
        return call_macro(c, x->pos, f.mac, &a);
    if (f.k != V_FUNC)
        jj_fail_at(c, x->pos, f.k == V_UNDEF ? MOE_EUNSUPPORTED : MOE_EINVAL, "%s is not a function%s",
                x->a->k == E_NAME ? x->a->name : x->a->k == E_ATTR ? x->a->name : "this value",
                f.k == V_UNDEF ? " moescope knows" : "");
    switch (f.fn) {
    case FN_RAISE: {
        val m = jj_to_str(c, arg(&a, 0, NULL));
        jj_fail_at(c, x->pos, MOE_EINVAL, "the template raised an error: %.*s", (int)(m.n > 400 ? 400 : m.n), m.s);
    }
    case FN_RANGE: {
        val p0 = arg(&a, 0, NULL), p1 = arg(&a, 1, NULL), p2 = arg(&a, 2, NULL);
        long long lo = 0, hi, st = 1;
        if (p1.k == V_UNDEF)
            hi = p0.i;
        else
            lo = p0.i, hi = p1.i;
        if (p2.k == V_INT)
            st = p2.i;
        if (st == 0)
            jj_fail_at(c, x->pos, MOE_EINVAL, "range() step must not be zero");
        list *l = jj_list_new(c);
        for (long long i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (l->n >= CT_MAX_RANGE)
                jj_fail_at(c, x->pos, MOE_EINVAL, "range() of more than %d numbers", CT_MAX_RANGE);
            jj_list_push(c, l, jj_v_int(i));
        }
        return (val){.k = V_LIST, .l = l};
    }
    case FN_NAMESPACE: {
        dict *d = jj_ar_alloc(c, sizeof *d);
        if (a.npos && (a.pos[0].k == V_DICT || a.pos[0].k == V_NS))
            for (int i = 0; i < a.pos[0].d->n; i++)
                jj_dict_set(c, d, a.pos[0].d->key[i], a.pos[0].d->v[i]);
        for (int i = 0; i < x->l2.n; i++)
            jj_dict_set(c, d, jj_v_cstr(c, x->names[i]), a.kw[i]);
        return (val){.k = V_NS, .d = d};
    }
    default: { /* FN_STRFTIME */
        val fmt = arg(&a, 0, NULL);
        want(c, x->pos, fmt, V_STR, "strftime_now's format");
        char out[256];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral" /* the format is the template's, as in Python */
        size_t n = strftime(out, sizeof out, fmt.s, &tm);
#pragma GCC diagnostic pop
        return jj_v_str(c, out, n);
    }
    }
}

int jj_run_test(ctx *c, node *x, val v, struct scope *sc)
{
    const char *t = x->name;
    val a0 = x->l1.n ? jj_eval(c, x->l1.v[0], sc) : (val){.k = V_UNDEF};
    if (!strcmp(t, "defined"))
        return v.k != V_UNDEF;
    if (!strcmp(t, "undefined"))
        return v.k == V_UNDEF;
    if (!strcmp(t, "none"))
        return v.k == V_NONE;
    if (!strcmp(t, "string"))
        return v.k == V_STR;
    if (!strcmp(t, "number"))
        return v.k == V_INT || v.k == V_FLOAT;
    if (!strcmp(t, "integer"))
        return v.k == V_INT;
    if (!strcmp(t, "float"))
        return v.k == V_FLOAT;
    if (!strcmp(t, "boolean"))
        return v.k == V_BOOL;
    if (!strcmp(t, "true"))
        return v.k == V_BOOL && v.i;
    if (!strcmp(t, "false"))
        return v.k == V_BOOL && !v.i;
    if (!strcmp(t, "mapping"))
        return v.k == V_DICT;
    if (!strcmp(t, "sequence"))
        return v.k == V_LIST || v.k == V_STR || v.k == V_DICT;
    if (!strcmp(t, "iterable"))
        return v.k == V_LIST || v.k == V_STR || v.k == V_DICT;
    if (!strcmp(t, "callable"))
        return v.k == V_FUNC || v.k == V_METHOD || v.k == V_MACRO;
    if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        want(c, x->pos, v, V_INT, "the value tested");
        return (int)(((v.i % 2) + 2) % 2) == (t[0] == 'o');
    }
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (v.k != V_STR)
            return 0;
        val m = jj_str_map(c, v, t[0] == 'l');
        return m.n == v.n && memcmp(m.s, v.s, v.n) == 0;
    }
    if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "sameas"))
        return jj_equal(v, a0, 0);
    if (!strcmp(t, "ne"))
        return !jj_equal(v, a0, 0);
    if (!strcmp(t, "in"))
        return jj_contains(c, x->pos, v, a0);
    if (!strcmp(t, "gt") || !strcmp(t, "lt") || !strcmp(t, "ge") || !strcmp(t, "le")) {
        int r = jj_compare(c, x->pos, v, a0);
        return t[0] == 'g' ? (t[1] == 't' ? r > 0 : r >= 0) : (t[1] == 't' ? r < 0 : r <= 0);
    }
    jj_fail_at(c, x->pos, MOE_EUNSUPPORTED, "the test '%s' is not supported", t);
}

/* item.a.b for selectattr and map(attribute=...). */
static val attr_path_get(ctx *c, val it, val path)
{
    size_t i = 0;
    while (i <= path.n) {
        const char *dot = memchr(path.s + i, '.', path.n - i);
        size_t e = dot ? (size_t)(dot - path.s) : path.n;
        val key = jj_v_str(c, path.s + i, e - i);
        char *end;
        long long ix = strtoll(key.s, &end, 10);
        it = it.k == V_LIST && key.n && !*end ? jj_subscript(c, -1, it, jj_v_int(ix)) : jj_attr(c, it, key.s);
        i = e + 1;
    }
    return it;
}

/* A one-test selectattr/rejectattr/select/reject over a list. */
static val select_items(ctx *c, node *x, val v, const args *a, int attr, int keep)
{
    list *l = jj_list_new(c);
    val an = attr ? arg(a, 1, NULL) : (val){.k = V_UNDEF};
    val tn = arg(a, attr ? 2 : 1, NULL);
    if (attr)
        want(c, x->pos, an, V_STR, "the attribute name");
    for (int i = 0; v.k == V_LIST && i < v.l->n; i++) {
        val it = attr ? attr_path_get(c, v.l->v[i], an) : v.l->v[i];
        int ok;
        if (tn.k == V_UNDEF) {
            ok = jj_truthy(it);
        } else {
            want(c, x->pos, tn, V_STR, "the test name");
            node t = {.k = E_TEST, .pos = x->pos, .name = tn.s};
            nlist one = {0};
            node lit = {.k = E_LIT, .pos = x->pos};
            node *lp = &lit;
            if (a->npos > (attr ? 3 : 2)) {
                lit.lit = a->pos[attr ? 3 : 2];
                one.v = &lp;
                one.n = 1;
            }
            t.l1 = one;
            ok = jj_run_test(c, &t, it, NULL);
        }
        if (ok == keep)
            jj_list_push(c, l, v.l->v[i]);
    }
    return (val){.k = V_LIST, .l = l};
}

val jj_filter(ctx *c, node *x, struct scope *sc)
{
    val v = jj_eval(c, x->a, sc);
    args a = eval_args(c, x, sc, NULL);
    const char *f = x->name;
    int pos = x->pos;
    if (!strcmp(f, "safe"))
        return v;
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        val d = arg(&a, 0, "default_value"), b = arg(&a, 1, "boolean");
        if (v.k == V_UNDEF || (jj_truthy(b) && !jj_truthy(v)))
            return d.k == V_UNDEF ? jj_v_str(c, "", 0) : d;
        return v;
    }
    if (!strcmp(f, "tojson")) {
        val ind = arg(&a, 0, "indent"), sk = arg(&a, 1, "sort_keys");
        buf b = {0};
        jj_put_json(c, &b, v, ind.k == V_INT ? (int)jj_clampi(ind.i, 0, 16) : 0, jj_truthy(sk), 0);
        val r = jj_v_str(c, b.p ? b.p : "", b.n);
        return r;
    }
    if (!strcmp(f, "string"))
        return jj_to_str(c, v);
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        size_t *off;
        if (v.k == V_STR)
            return jj_v_int(jj_cps(c, v, &off));
        if (v.k == V_LIST)
            return jj_v_int(v.l->n);
        if (v.k == V_DICT)
            return jj_v_int(v.d->n);
        jj_fail_at(c, pos, MOE_EINVAL, "length of %s", jj_type_name(v));
    }
    if (!strcmp(f, "int")) {
        if (v.k == V_STR) {
            char *end;
            long long i = strtoll(v.s, &end, 10);
            return end == v.s ? (arg(&a, 0, "default").k == V_INT ? arg(&a, 0, "default") : jj_v_int(0)) : jj_v_int(i);
        }
        return jj_is_num(v) ? jj_v_int((long long)jj_num(v)) : jj_v_int(0);
    }
    if (!strcmp(f, "float")) {
        if (v.k == V_STR)
            return (val){.k = V_FLOAT, .f = strtod(v.s, NULL)};
        return (val){.k = V_FLOAT, .f = jj_is_num(v) ? jj_num(v) : 0};
    }
    if (!strcmp(f, "abs")) {
        if (v.k == V_INT)
            return jj_v_int(v.i < 0 ? -v.i : v.i);
        if (v.k == V_FLOAT)
            return (val){.k = V_FLOAT, .f = fabs(v.f)};
        jj_fail_at(c, pos, MOE_EINVAL, "abs of %s", jj_type_name(v));
    }
    if (!strcmp(f, "items")) {
        if (v.k != V_DICT)
            jj_fail_at(c, pos, MOE_EINVAL, "items of %s", jj_type_name(v));
        struct method m = {v, "items"};
        return jj_call_method(c, pos, &m, &a);
    }
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) {
        if (v.k != V_LIST)
            jj_fail_at(c, pos, MOE_EINVAL, "%s over %s", f, jj_type_name(v));
        args b = a; /* shift so that argument 1 is the attribute/test as for the method form */
        b.pos = jj_ar_alloc(c, (size_t)(a.npos + 1) * sizeof(val));
        b.pos[0] = v;
        memcpy(b.pos + 1, a.pos, (size_t)a.npos * sizeof(val));
        b.npos = a.npos + 1;
        return select_items(c, x, v, &b, strstr(f, "attr") != NULL, f[0] == 's');
    }
    if (!strcmp(f, "map")) {
        val at = arg(&a, 99, "attribute");
        list *l = jj_list_new(c);
        for (int i = 0; v.k == V_LIST && i < v.l->n; i++) {
            if (at.k == V_STR) {
                val it = attr_path_get(c, v.l->v[i], at);
                if (it.k == V_UNDEF && arg(&a, 99, "default").k != V_UNDEF)
                    it = arg(&a, 99, "default");
                jj_list_push(c, l, it);
            } else {
                jj_fail_at(c, pos, MOE_EUNSUPPORTED, "map is supported only with attribute=");
            }
        }
        return (val){.k = V_LIST, .l = l};
    }
    if (!strcmp(f, "list")) {
        if (v.k == V_LIST)
            return v;
        list *l = jj_list_new(c);
        if (v.k == V_DICT)
            for (int i = 0; i < v.d->n; i++)
                jj_list_push(c, l, v.d->key[i]);
        else if (v.k == V_STR)
            for (size_t i = 0; i < v.n; i += (size_t)jj_u8next(v.s, v.n, i))
                jj_list_push(c, l, jj_v_str(c, v.s + i, (size_t)jj_u8next(v.s, v.n, i)));
        else
            jj_fail_at(c, pos, MOE_EINVAL, "list of %s", jj_type_name(v));
        return (val){.k = V_LIST, .l = l};
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (v.k == V_LIST)
            return v.l->n ? v.l->v[f[0] == 'f' ? 0 : v.l->n - 1] : (val){.k = V_UNDEF};
        if (v.k == V_STR)
            return jj_subscript(c, pos, v, jj_v_int(f[0] == 'f' ? 0 : -1));
        jj_fail_at(c, pos, MOE_EINVAL, "%s of %s", f, jj_type_name(v));
    }
    if (!strcmp(f, "reverse")) {
        node sl = {.k = E_SLICE, .pos = pos};
        node step = {.k = E_LIT, .lit = jj_v_int(-1)};
        node *sp = &step;
        sl.l1 = (nlist){.v = &sp, .n = 1};
        return jj_slice(c, &sl, v, sc);
    }
    if (!strcmp(f, "join")) {
        val sep = arg(&a, 0, "d"), at = arg(&a, 1, "attribute");
        if (v.k != V_LIST)
            jj_fail_at(c, pos, MOE_EINVAL, "join of %s", jj_type_name(v));
        val r = jj_v_str(c, "", 0);
        for (int i = 0; i < v.l->n; i++) {
            if (i && sep.k == V_STR)
                r = jj_concat(c, r, sep);
            r = jj_concat(c, r, at.k == V_STR ? attr_path_get(c, v.l->v[i], at) : v.l->v[i]);
        }
        return r;
    }
    if (!strcmp(f, "unique")) {
        list *l = jj_list_new(c);
        for (int i = 0; v.k == V_LIST && i < v.l->n; i++)
            if (!jj_contains(c, pos, v.l->v[i], (val){.k = V_LIST, .l = l}))
                jj_list_push(c, l, v.l->v[i]);
        return (val){.k = V_LIST, .l = l};
    }
    if (v.k == V_STR) {
        if (!strcmp(f, "trim"))
            return arg(&a, 0, "chars").k == V_STR ? jj_str_strip(c, v, &a.pos[0], 3) : jj_str_strip(c, v, NULL, 3);
        if (!strcmp(f, "title")) { /* Jinja's rule: words start after - ( { [ < or whitespace */
            val low = jj_str_map(c, v, 1);
            char *p = jj_ar_alloc(c, low.n + 1);
            memcpy(p, low.s, low.n);
            int start = 1;
            for (size_t i = 0; i < low.n;) {
                size_t l = (size_t)jj_u8next(low.s, low.n, i), w = jj_ws_len(low.s + i, low.n - i, 0);
                int sep = w || strchr("-({[<", low.s[i]) != NULL;
                if (start && !sep) {
                    val up = jj_str_map(c, jj_v_str(c, low.s + i, l), 0);
                    if (up.n == l)
                        memcpy(p + i, up.s, l);
                }
                start = sep;
                i += l;
            }
            return (val){.k = V_STR, .s = p, .n = low.n};
        }
        static const char *maps[] = {"upper", "lower", "title", "capitalize"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(f, maps[i]))
                return jj_str_map(c, v, i);
        if (!strcmp(f, "replace")) {
            struct method m = {v, "replace"};
            return jj_call_method(c, pos, &m, &a);
        }
        if (!strcmp(f, "indent")) {
            val w = arg(&a, 0, "width"), first = arg(&a, 1, "first"), blank = arg(&a, 2, "blank");
            val pad = w.k == V_STR ? w : jj_v_str(c, "    ", (size_t)(w.k == V_INT ? jj_clampi(w.i, 0, 64) : 4));
            if (w.k == V_INT) {
                char *p = jj_ar_alloc(c, pad.n + 1);
                memset(p, ' ', pad.n);
                pad.s = p;
            }
            val r = jj_v_str(c, "", 0);
            size_t i = 0;
            for (int ln = 0; i <= v.n; ln++) {
                const char *nl = memchr(v.s + i, '\n', v.n - i);
                size_t e = nl ? (size_t)(nl - v.s) : v.n;
                if ((ln > 0 || jj_truthy(first)) && (e > i || jj_truthy(blank)))
                    r = jj_concat(c, r, pad);
                r = jj_concat(c, r, jj_v_str(c, v.s + i, e - i + (nl ? 1 : 0)));
                i = e + 1;
                if (!nl)
                    break;
            }
            return r;
        }
    }
    if (v.k == V_UNDEF && (!strcmp(f, "trim") || !strcmp(f, "upper") || !strcmp(f, "lower")))
        return jj_v_str(c, "", 0);
    jj_fail_at(c, pos, MOE_EUNSUPPORTED, "the filter '%s' is not supported for %s", f, jj_type_name(v));
}
