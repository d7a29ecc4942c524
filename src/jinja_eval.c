/* Jinja evaluation: expressions, operators, subscripts and slices,
 * statements (if, for, set, macro), with limits against hostile templates. */
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

/* ---- evaluation --------------------------------------------------------- */

int jj_truthy(val v)
{
    switch (v.k) {
    case V_UNDEF:
    case V_NONE: return 0;
    case V_BOOL:
    case V_INT: return v.i != 0;
    case V_FLOAT: return v.f != 0;
    case V_STR: return v.n != 0;
    case V_LIST: return v.l->n != 0;
    case V_DICT: return v.d->n != 0;
    default: return 1;
    }
}

static val lookup(struct scope *sc, const char *nm)
{
    for (; sc; sc = sc->parent) {
        int i = jj_dict_find(&sc->vars, nm, strlen(nm));
        if (i >= 0)
            return sc->vars.v[i];
    }
    return (val){.k = V_UNDEF};
}

void jj_assign(ctx *c, struct scope *sc, const char *nm, val v)
{
    int i = jj_dict_find(&sc->vars, nm, strlen(nm));
    if (i >= 0)
        sc->vars.v[i] = v;
    else
        jj_dict_set(c, &sc->vars, jj_v_cstr(c, nm), v);
}

int jj_equal(val a, val b, int depth)
{
    if (depth > CT_MAX_DEPTH)
        return 0;
    if (jj_is_num(a) && jj_is_num(b))
        return jj_num(a) == jj_num(b);
    if (a.k != b.k)
        return 0;
    switch (a.k) {
    case V_UNDEF:
    case V_NONE: return 1;
    case V_STR: return a.n == b.n && memcmp(a.s, b.s, a.n) == 0;
    case V_LIST:
        if (a.l->n != b.l->n)
            return 0;
        for (int i = 0; i < a.l->n; i++)
            if (!jj_equal(a.l->v[i], b.l->v[i], depth + 1))
                return 0;
        return 1;
    case V_DICT:
        if (a.d->n != b.d->n)
            return 0;
        for (int i = 0; i < a.d->n; i++) {
            val o = jj_dict_get(b.d, a.d->key[i].s, a.d->key[i].n);
            if (o.k == V_UNDEF || !jj_equal(a.d->v[i], o, depth + 1))
                return 0;
        }
        return 1;
    default: return a.d == b.d;
    }
}

int jj_compare(ctx *c, int pos, val a, val b)
{
    if (jj_is_num(a) && jj_is_num(b))
        return jj_num(a) < jj_num(b) ? -1 : jj_num(a) > jj_num(b);
    if (a.k == V_STR && b.k == V_STR) {
        size_t m = a.n < b.n ? a.n : b.n;
        int r = memcmp(a.s, b.s, m);
        return r ? r : (a.n > b.n) - (a.n < b.n);
    }
    jj_fail_at(c, pos, MOE_EINVAL, "cannot compare %s with %s", jj_type_name(a), jj_type_name(b));
}

int jj_contains(ctx *c, int pos, val item, val in)
{
    if (in.k == V_STR) {
        if (item.k != V_STR)
            jj_fail_at(c, pos, MOE_EINVAL, "'in <string>' needs a string on the left, not %s", jj_type_name(item));
        return item.n == 0 || memmem(in.s, in.n, item.s, item.n) != NULL;
    }
    if (in.k == V_LIST) {
        for (int i = 0; i < in.l->n; i++)
            if (jj_equal(item, in.l->v[i], 0))
                return 1;
        return 0;
    }
    if (in.k == V_DICT || in.k == V_NS)
        return item.k == V_STR && jj_dict_find(in.d, item.s, item.n) >= 0;
    if (in.k == V_UNDEF)
        return 0;
    jj_fail_at(c, pos, MOE_EINVAL, "'in' needs a string, list or dict on the right, not %s", jj_type_name(in));
}

val jj_concat(ctx *c, val a, val b)
{
    a = jj_to_str(c, a);
    b = jj_to_str(c, b);
    char *p = jj_ar_alloc(c, a.n + b.n + 1);
    memcpy(p, a.s, a.n);
    memcpy(p + a.n, b.s, b.n);
    if (a.n + b.n > CT_MAX_OUTPUT)
        jj_fail_at(c, -1, MOE_EINVAL, "a string would exceed %zu MiB", CT_MAX_OUTPUT >> 20);
    return (val){.k = V_STR, .s = p, .n = a.n + b.n};
}

static val binop(ctx *c, node *x, val a, val b)
{
    const char *op = x->name;
    if (strcmp(op, "==") == 0)
        return jj_v_bool(jj_equal(a, b, 0));
    if (strcmp(op, "!=") == 0)
        return jj_v_bool(!jj_equal(a, b, 0));
    if (strcmp(op, "in") == 0)
        return jj_v_bool(jj_contains(c, x->pos, a, b));
    if (strcmp(op, "not in") == 0)
        return jj_v_bool(!jj_contains(c, x->pos, a, b));
    if (strcmp(op, "~") == 0)
        return jj_concat(c, a, b);
    if (op[0] == '<' || op[0] == '>') {
        int r = jj_compare(c, x->pos, a, b);
        return jj_v_bool(op[0] == '<' ? (op[1] ? r <= 0 : r < 0) : (op[1] ? r >= 0 : r > 0));
    }
    if (strcmp(op, "+") == 0) {
        if (a.k == V_STR && b.k == V_STR)
            return jj_concat(c, a, b);
        if (a.k == V_LIST && b.k == V_LIST) {
            list *l = jj_list_new(c);
            for (int i = 0; i < a.l->n; i++)
                jj_list_push(c, l, a.l->v[i]);
            for (int i = 0; i < b.l->n; i++)
                jj_list_push(c, l, b.l->v[i]);
            return (val){.k = V_LIST, .l = l};
        }
    }
    if (strcmp(op, "*") == 0 && ((a.k == V_STR && b.k == V_INT) || (a.k == V_INT && b.k == V_STR))) {
        val s = a.k == V_STR ? a : b;
        long long k = a.k == V_INT ? a.i : b.i;
        if (k > 0 && s.n * (size_t)k > CT_MAX_OUTPUT)
            jj_fail_at(c, x->pos, MOE_EINVAL, "a string would exceed %zu MiB", CT_MAX_OUTPUT >> 20);
        size_t total = k > 0 ? s.n * (size_t)k : 0;
        char *p = jj_ar_alloc(c, total + 1);
        for (long long i = 0; i < k; i++)
            memcpy(p + (size_t)i * s.n, s.s, s.n);
        return (val){.k = V_STR, .s = p, .n = total};
    }
    if (!jj_is_num(a) || !jj_is_num(b))
        jj_fail_at(c, x->pos, MOE_EINVAL, "cannot apply '%s' to %s and %s", op, jj_type_name(a), jj_type_name(b));
    int fl = a.k == V_FLOAT || b.k == V_FLOAT;
    double fa = jj_num(a), fb = jj_num(b);
    long long ia = a.i, ib = b.i;
    switch (op[0]) {
    case '+': return fl ? (val){.k = V_FLOAT, .f = fa + fb} : jj_v_int(ia + ib);
    case '-': return fl ? (val){.k = V_FLOAT, .f = fa - fb} : jj_v_int(ia - ib);
    case '*':
        if (op[1]) {
            double r = pow(fa, fb);
            if (!fl && fb >= 0 && fabs(r) < 9e15)
                return jj_v_int((long long)r);
            return (val){.k = V_FLOAT, .f = r};
        }
        return fl ? (val){.k = V_FLOAT, .f = fa * fb} : jj_v_int(ia * ib);
    default: break;
    }
    if (fb == 0)
        jj_fail_at(c, x->pos, MOE_EINVAL, "division by zero");
    if (strcmp(op, "/") == 0)
        return (val){.k = V_FLOAT, .f = fa / fb};
    if (strcmp(op, "//") == 0)
        return fl ? (val){.k = V_FLOAT, .f = floor(fa / fb)} : jj_v_int((ia - ((ia % ib + ib) % ib)) / ib);
    /* % with Python's sign rule */
    if (fl) {
        double r = fmod(fa, fb);
        return (val){.k = V_FLOAT, .f = (r != 0 && (r < 0) != (fb < 0)) ? r + fb : r};
    }
    return jj_v_int(((ia % ib) + ib) % ib);
}

/* Code points of a string, as offsets (n+1 entries). */
int jj_cps(ctx *c, val s, size_t **off)
{
    size_t *o = jj_ar_alloc(c, (s.n + 1) * sizeof(size_t));
    int k = 0;
    for (size_t i = 0; i < s.n; i += (size_t)jj_u8next(s.s, s.n, i))
        o[k++] = i;
    o[k] = s.n;
    *off = o;
    return k;
}

val jj_subscript(ctx *c, int pos, val obj, val key)
{
    if (obj.k == V_DICT || obj.k == V_NS) {
        if (key.k != V_STR)
            return (val){.k = V_UNDEF};
        return jj_dict_get(obj.d, key.s, key.n);
    }
    if ((obj.k == V_LIST || obj.k == V_STR) && (key.k == V_INT || key.k == V_BOOL)) {
        size_t *off = NULL;
        long long n = obj.k == V_LIST ? obj.l->n : jj_cps(c, obj, &off);
        long long i = key.i < 0 ? key.i + n : key.i;
        if (i < 0 || i >= n)
            return (val){.k = V_UNDEF};
        return obj.k == V_LIST ? obj.l->v[i] : jj_v_str(c, obj.s + off[i], off[i + 1] - off[i]);
    }
    if (obj.k == V_UNDEF)
        return obj;
    (void)pos;
    return (val){.k = V_UNDEF};
}

static const char *const str_methods[] = {"startswith", "endswith", "split", "strip", "lstrip", "rstrip", "replace",
                                          "upper", "lower", "title", "capitalize", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", NULL};

val jj_attr(ctx *c, val obj, const char *nm)
{
    if (obj.k == V_DICT || obj.k == V_NS) {
        val v = jj_dict_get(obj.d, nm, strlen(nm));
        if (v.k != V_UNDEF || obj.k == V_NS)
            return v;
    }
    const char *const *tbl = obj.k == V_STR ? str_methods : obj.k == V_DICT ? dict_methods : NULL;
    for (int i = 0; tbl && tbl[i]; i++)
        if (strcmp(tbl[i], nm) == 0) {
            struct method *m = jj_ar_alloc(c, sizeof *m);
            m->self = obj;
            m->name = tbl[i];
            return (val){.k = V_METHOD, .m = m};
        }
    return (val){.k = V_UNDEF};
}

val jj_slice(ctx *c, node *x, val obj, struct scope *sc)
{
    val a = x->b ? jj_eval(c, x->b, sc) : (val){.k = V_NONE};
    val b = x->c ? jj_eval(c, x->c, sc) : (val){.k = V_NONE};
    val s = x->l1.v[0] ? jj_eval(c, x->l1.v[0], sc) : (val){.k = V_NONE};
    long long step = s.k == V_INT ? s.i : 1;
    if (step == 0)
        jj_fail_at(c, x->pos, MOE_EINVAL, "slice step cannot be zero");
    if (obj.k != V_LIST && obj.k != V_STR)
        jj_fail_at(c, x->pos, MOE_EINVAL, "cannot slice %s", jj_type_name(obj));
    size_t *off = NULL;
    long long n = obj.k == V_LIST ? obj.l->n : jj_cps(c, obj, &off);
    long long lo, hi; /* Python's slice.indices */
    if (step > 0) {
        lo = a.k == V_INT ? (a.i < 0 ? jj_clampi(a.i + n, 0, n) : jj_clampi(a.i, 0, n)) : 0;
        hi = b.k == V_INT ? (b.i < 0 ? jj_clampi(b.i + n, 0, n) : jj_clampi(b.i, 0, n)) : n;
    } else {
        lo = a.k == V_INT ? (a.i < 0 ? jj_clampi(a.i + n, -1, n - 1) : jj_clampi(a.i, -1, n - 1)) : n - 1;
        hi = b.k == V_INT ? (b.i < 0 ? jj_clampi(b.i + n, -1, n - 1) : jj_clampi(b.i, -1, n - 1)) : -1;
    }
    list *l = obj.k == V_LIST ? jj_list_new(c) : NULL;
    buf sb = {0};
    for (long long i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (l)
            jj_list_push(c, l, obj.l->v[i]);
        else
            jj_buf_put(c, &sb, obj.s + off[i], off[i + 1] - off[i]);
    }
    if (l)
        return (val){.k = V_LIST, .l = l};
    val r = jj_v_str(c, sb.p ? sb.p : "", sb.n);
    return r;
}

val jj_eval(ctx *c, node *x, struct scope *sc)
{
    jj_enter(c, x->pos);
    val r;
    switch (x->k) {
    case E_LIT: r = x->lit; break;
    case E_NAME: r = lookup(sc, x->name); break;
    case E_ATTR: r = jj_attr(c, jj_eval(c, x->a, sc), x->name); break;
    case E_INDEX: {
        val o = jj_eval(c, x->a, sc);
        val k = jj_eval(c, x->b, sc);
        r = k.k == V_STR && o.k != V_DICT && o.k != V_NS ? jj_attr(c, o, k.s) : jj_subscript(c, x->pos, o, k);
        break;
    }
    case E_SLICE: r = jj_slice(c, x, jj_eval(c, x->a, sc), sc); break;
    case E_CALL: r = jj_call(c, x, sc); break;
    case E_FILTER: r = jj_filter(c, x, sc); break;
    case E_TEST: {
        int t = jj_run_test(c, x, jj_eval(c, x->a, sc), sc);
        r = jj_v_bool(x->negate ? !t : t);
        break;
    }
    case E_BIN: {
        val a = jj_eval(c, x->a, sc);
        r = binop(c, x, a, jj_eval(c, x->b, sc));
        break;
    }
    case E_AND: r = jj_eval(c, x->a, sc); if (jj_truthy(r)) r = jj_eval(c, x->b, sc); break;
    case E_OR: r = jj_eval(c, x->a, sc); if (!jj_truthy(r)) r = jj_eval(c, x->b, sc); break;
    case E_NOT: r = jj_v_bool(!jj_truthy(jj_eval(c, x->a, sc))); break;
    case E_NEG:
    case E_POS: {
        val a = jj_eval(c, x->a, sc);
        if (!jj_is_num(a))
            jj_fail_at(c, x->pos, MOE_EINVAL, "unary %c of %s", x->k == E_NEG ? '-' : '+', jj_type_name(a));
        r = x->k == E_POS ? a : a.k == V_FLOAT ? (val){.k = V_FLOAT, .f = -a.f} : jj_v_int(-a.i);
        break;
    }
    case E_COND:
        r = jj_truthy(jj_eval(c, x->a, sc)) ? jj_eval(c, x->b, sc) : x->c ? jj_eval(c, x->c, sc) : (val){.k = V_UNDEF};
        break;
    case E_LIST: {
        list *l = jj_list_new(c);
        for (int i = 0; i < x->l1.n; i++)
            jj_list_push(c, l, jj_eval(c, x->l1.v[i], sc));
        r = (val){.k = V_LIST, .l = l};
        break;
    }
    default: { /* E_DICT */
        dict *d = jj_ar_alloc(c, sizeof *d);
        for (int i = 0; i < x->l1.n; i++) {
            val k = jj_eval(c, x->l1.v[i], sc);
            if (k.k != V_STR)
                jj_fail_at(c, x->pos, MOE_EUNSUPPORTED, "dict keys other than strings are not supported");
            jj_dict_set(c, d, k, jj_eval(c, x->l2.v[i], sc));
        }
        r = (val){.k = V_DICT, .d = d};
    }
    }
    c->depth--;
    return r;
}

static void step(ctx *c, int pos)
{
    if (++c->steps > CT_MAX_STEPS)
        jj_fail_at(c, pos, MOE_EINVAL, "the template ran more than %ld steps", CT_MAX_STEPS);
}

static void exec_for(ctx *c, node *x, struct scope *sc)
{
    val it = jj_eval(c, x->a, sc);
    if (it.k == V_DICT) {
        struct method m = {it, "keys"};
        args none = {.x = x};
        it = jj_call_method(c, x->pos, &m, &none);
    } else if (it.k == V_STR) {
        node lf = {.k = E_FILTER, .pos = x->pos, .name = "list"};
        node lit = {.k = E_LIT, .lit = it};
        lf.a = &lit;
        it = jj_filter(c, &lf, sc);
    } else if (it.k == V_UNDEF || it.k == V_NONE) {
        list *l = jj_list_new(c);
        it = (val){.k = V_LIST, .l = l};
        if (it.k == V_NONE)
            jj_fail_at(c, x->pos, MOE_EINVAL, "cannot loop over none");
    } else if (it.k != V_LIST) {
        jj_fail_at(c, x->pos, MOE_EINVAL, "cannot loop over %s", jj_type_name(it));
    }
    struct scope *ls = jj_ar_alloc(c, sizeof *ls);
    ls->parent = sc;
    list *items = it.l;
    if (x->b) { /* for x in xs if cond: filter first, so loop.length counts what is kept */
        items = jj_list_new(c);
        for (int i = 0; i < it.l->n; i++) {
            step(c, x->pos);
            if (x->nnames == 1)
                jj_assign(c, ls, x->names[0], it.l->v[i]);
            if (jj_truthy(jj_eval(c, x->b, ls)))
                jj_list_push(c, items, it.l->v[i]);
        }
    }
    int n = items->n;
    dict *ld = jj_ar_alloc(c, sizeof *ld); /* one loop object, updated in place */
    for (int i = 0; i < n; i++) {
        step(c, x->pos);
        struct {
            const char *k;
            val v;
        } f[] = {{"index", jj_v_int(i + 1)},
                 {"index0", jj_v_int(i)},
                 {"revindex", jj_v_int(n - i)},
                 {"revindex0", jj_v_int(n - i - 1)},
                 {"first", jj_v_bool(i == 0)},
                 {"last", jj_v_bool(i == n - 1)},
                 {"length", jj_v_int(n)},
                 {"previtem", i > 0 ? items->v[i - 1] : (val){.k = V_UNDEF}},
                 {"nextitem", i < n - 1 ? items->v[i + 1] : (val){.k = V_UNDEF}}};
        for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
            if (i == 0)
                jj_dict_set(c, ld, jj_v_cstr(c, f[k].k), f[k].v);
            else
                ld->v[k] = f[k].v;
        }
        jj_assign(c, ls, "loop", (val){.k = V_DICT, .d = ld});
        val cur = items->v[i];
        if (x->nnames == 1) {
            jj_assign(c, ls, x->names[0], cur);
        } else {
            if (cur.k != V_LIST || cur.l->n != x->nnames)
                jj_fail_at(c, x->pos, MOE_EINVAL, "cannot unpack %s into %d loop variables", jj_type_name(cur), x->nnames);
            for (int k = 0; k < x->nnames; k++)
                jj_assign(c, ls, x->names[k], cur.l->v[k]);
        }
        jj_exec_body(c, &x->l1, ls);
        if (c->brk == 1) {
            c->brk = 0;
            break;
        }
        c->brk = 0;
    }
    if (n == 0)
        jj_exec_body(c, &x->l2, ls);
}

void jj_exec_body(ctx *c, const nlist *body, struct scope *sc)
{
    jj_enter(c, body->n ? body->v[0]->pos : -1);
    for (int i = 0; i < body->n && !c->brk; i++) {
        node *x = body->v[i];
        step(c, x->pos);
        switch (x->k) {
        case N_TEXT: jj_buf_put(c, &c->out, x->lit.s, x->lit.n); break;
        case N_OUT: jj_put_val(c, &c->out, jj_eval(c, x->a, sc), 0); break;
        case N_IF: jj_exec_body(c, jj_truthy(jj_eval(c, x->a, sc)) ? &x->l1 : &x->l2, sc); break;
        case N_FOR: exec_for(c, x, sc); break;
        case N_SET: {
            val v = jj_eval(c, x->b, sc);
            if (x->a) {
                val ns = jj_eval(c, x->a, sc);
                if (ns.k != V_NS)
                    jj_fail_at(c, x->pos, MOE_EINVAL, "cannot set an attribute of %s (only of a namespace())", jj_type_name(ns));
                jj_dict_set(c, ns.d, jj_v_cstr(c, x->name), v);
            } else if (x->nnames == 1) {
                jj_assign(c, sc, x->names[0], v);
            } else {
                if (v.k != V_LIST || v.l->n != x->nnames)
                    jj_fail_at(c, x->pos, MOE_EINVAL, "cannot unpack %s into %d names", jj_type_name(v), x->nnames);
                for (int k = 0; k < x->nnames; k++)
                    jj_assign(c, sc, x->names[k], v.l->v[k]);
            }
            break;
        }
        case N_SETBLOCK: {
            buf saved = c->out;
            c->out = (buf){0};
            jj_exec_body(c, &x->l1, sc);
            buf mine = c->out;
            c->out = saved;
            jj_assign(c, sc, x->names[0], jj_v_str(c, mine.p ? mine.p : "", mine.n));
            break;
        }
        case N_MACRO: {
            struct macro *mc = jj_ar_alloc(c, sizeof *mc);
            mc->x = x;
            mc->sc = sc;
            jj_assign(c, sc, x->name, (val){.k = V_MACRO, .mac = mc});
            break;
        }
        case N_BREAK: c->brk = 1; break;
        case N_CONTINUE: c->brk = 2; break;
        default: break;
        }
    }
    c->depth--;
}
