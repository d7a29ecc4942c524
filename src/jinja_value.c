/* Jinja values: the arena every render allocates from, strings, lists and
 * dicts, values from JSON, and printing (str, repr, tojson). */
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

void *jj_ar_alloc(ctx *c, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!c->arena || c->arena->used + n > c->arena->cap) {
        size_t cap = n > 65536 ? n : 65536;
        if (c->arena_total + cap > CT_MAX_MEMORY)
            jj_fail_at(c, -1, MOE_ENOMEM, "the template needs more than %zu MiB of memory", CT_MAX_MEMORY >> 20);
        blk *b = malloc(sizeof *b + cap);
        if (!b)
            jj_fail_at(c, -1, MOE_ENOMEM, "out of memory");
        b->next = c->arena;
        b->used = 0;
        b->cap = cap;
        c->arena = b;
        c->arena_total += cap;
    }
    void *p = (char *)c->arena->data + c->arena->used;
    c->arena->used += n;
    memset(p, 0, n);
    return p;
}

void *jj_ar_grow(ctx *c, void *old, size_t oldn, size_t newn)
{
    void *p = jj_ar_alloc(c, newn);
    if (old && oldn)
        memcpy(p, old, oldn);
    return p;
}

static void line_col(ctx *c, int pos, int *line, int *col)
{
    size_t o = pos < 0 ? 0 : (size_t)pos < c->srcn ? (size_t)c->omap[pos] : strlen(c->orig);
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < o && c->orig[i]; i++) {
        if (c->orig[i] == '\n')
            (*line)++, *col = 1;
        else
            (*col)++;
    }
}

void jj_fail_at(ctx *c, int pos, moe_status code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (pos >= 0 && c->orig) {
        int line, col;
        line_col(c, pos, &line, &col);
        moe_fail(c->err, code, "chat template, line %d column %d: %s", line, col, msg);
    } else {
        moe_fail(c->err, code, "chat template: %s", msg);
    }
    longjmp(c->jb, 1);
}

/* ---- strings ------------------------------------------------------------ */

val jj_v_str(ctx *c, const char *s, size_t n)
{
    char *p = jj_ar_alloc(c, n + 1);
    memcpy(p, s, n);
    return (val){.k = V_STR, .n = n, .s = p};
}

void jj_buf_put(ctx *c, buf *b, const char *s, size_t n)
{
    if (b->n + n > CT_MAX_OUTPUT)
        jj_fail_at(c, -1, MOE_EINVAL, "the rendered text would exceed %zu MiB", CT_MAX_OUTPUT >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = jj_ar_grow(c, b->p, b->n, cap); /* arena: an error unwinds without leaks */
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_fmt(ctx *c, buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void buf_fmt(ctx *c, buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jj_buf_put(c, b, tmp, (size_t)n);
}

/* Length of the whitespace character at s, or 0. `js` selects JavaScript's
 * \s (the reference lexer) over Python's str.isspace (strip, split, trim). */
size_t jj_ws_len(const char *s, size_t n, int js)
{
    unsigned char b = (unsigned char)s[0];
    if (b == ' ' || (b >= 9 && b <= 13))
        return 1;
    if (b < 0x80)
        return !js && b >= 0x1c && b <= 0x1f;
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (l <= 0)
        return 0;
    int sp = cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
             cp == 0x202f || cp == 0x205f || cp == 0x3000 || (js ? cp == 0xfeff : cp == 0x85);
    return sp ? (size_t)l : 0;
}

/* Length of the whitespace run ending at s+n (walking back over UTF-8). */
size_t jj_ws_tail(const char *s, size_t n, int js)
{
    size_t e = n;
    while (e > 0) {
        size_t st = e - 1;
        while (st > 0 && e - st < 4 && ((unsigned char)s[st] & 0xc0) == 0x80)
            st--;
        size_t l = jj_ws_len(s + st, e - st, js);
        if (l != e - st)
            break;
        e = st;
    }
    return n - e;
}

int jj_u8next(const char *s, size_t n, size_t i)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    return l > 0 ? (int)l : 1;
}

/* Strip chars (any of the code points in `chars`, or whitespace) from the
 * left (which & 1) and right (which & 2). */
val jj_str_strip(ctx *c, val s, const val *chars, int which)
{
    size_t a = 0, e = s.n;
    for (;;) {
        if (!(which & 1) || a >= e)
            break;
        size_t l;
        if (chars) {
            l = (size_t)jj_u8next(s.s, e, a);
            if (!memmem(chars->s, chars->n, s.s + a, l))
                break;
        } else if (!(l = jj_ws_len(s.s + a, e - a, 0))) {
            break;
        }
        a += l;
    }
    while ((which & 2) && e > a) {
        size_t st = e - 1;
        while (st > a && ((unsigned char)s.s[st] & 0xc0) == 0x80)
            st--;
        int hit = chars ? memmem(chars->s, chars->n, s.s + st, e - st) != NULL
                        : jj_ws_len(s.s + st, e - st, 0) == e - st;
        if (!hit)
            break;
        e = st;
    }
    return jj_v_str(c, s.s + a, e - a);
}

/* Map every code point through f (upper/lower/title). */
val jj_str_map(ctx *c, val s, int mode)
{
    buf b = {0};
    int word = 0;
    for (size_t i = 0; i < s.n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s.s + i, (utf8proc_ssize_t)(s.n - i), &cp);
        if (l <= 0) {
            jj_buf_put(c, &b, s.s + i, 1);
            i++;
            continue;
        }
        utf8proc_int32_t o = cp;
        utf8proc_category_t cat = utf8proc_category(cp);
        int alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        if (mode == 0)
            o = utf8proc_toupper(cp);
        else if (mode == 1)
            o = utf8proc_tolower(cp);
        else if (mode == 2)
            o = alpha ? (word ? utf8proc_tolower(cp) : utf8proc_totitle(cp)) : cp;
        else
            o = i == 0 ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
        word = alpha;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t el = utf8proc_encode_char(o, enc);
        jj_buf_put(c, &b, (const char *)enc, (size_t)el);
        i += (size_t)l;
    }
    val r = jj_v_str(c, b.p ? b.p : "", b.n);
    return r;
}

/* ---- lists and dicts ---------------------------------------------------- */

list *jj_list_new(ctx *c)
{
    return jj_ar_alloc(c, sizeof(list));
}

void jj_list_push(ctx *c, list *l, val v)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        l->v = jj_ar_grow(c, l->v, (size_t)l->n * sizeof(val), (size_t)cap * sizeof(val));
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

int jj_dict_find(const dict *d, const char *k, size_t n)
{
    for (int i = 0; i < d->n; i++)
        if (d->key[i].n == n && memcmp(d->key[i].s, k, n) == 0)
            return i;
    return -1;
}

void jj_dict_set(ctx *c, dict *d, val key, val v)
{
    int i = jj_dict_find(d, key.s, key.n);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        d->key = jj_ar_grow(c, d->key, (size_t)d->n * sizeof(val), (size_t)cap * sizeof(val));
        d->v = jj_ar_grow(c, d->v, (size_t)d->n * sizeof(val), (size_t)cap * sizeof(val));
        d->cap = cap;
    }
    d->key[d->n] = key;
    d->v[d->n++] = v;
}

val jj_dict_get(const dict *d, const char *k, size_t n)
{
    int i = jj_dict_find(d, k, n);
    return i >= 0 ? d->v[i] : (val){.k = V_UNDEF};
}

val jj_from_json(ctx *c, const cJSON *j)
{
    if (cJSON_IsBool(j))
        return jj_v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double f = j->valuedouble;
        if (f == floor(f) && fabs(f) < 9e15)
            return jj_v_int((long long)f);
        return (val){.k = V_FLOAT, .f = f};
    }
    if (cJSON_IsString(j))
        return jj_v_cstr(c, j->valuestring);
    if (cJSON_IsArray(j)) {
        list *l = jj_list_new(c);
        const cJSON *x;
        cJSON_ArrayForEach(x, j) jj_list_push(c, l, jj_from_json(c, x));
        return (val){.k = V_LIST, .l = l};
    }
    if (cJSON_IsObject(j)) {
        dict *d = jj_ar_alloc(c, sizeof *d);
        const cJSON *x;
        cJSON_ArrayForEach(x, j) jj_dict_set(c, d, jj_v_cstr(c, x->string), jj_from_json(c, x));
        return (val){.k = V_DICT, .d = d};
    }
    return (val){.k = V_NONE};
}

/* ---- printing ----------------------------------------------------------- */

/* Python's repr of a float: the shortest digits that read back the same. */
static void put_float(ctx *c, buf *b, double f)
{
    if (isnan(f)) {
        jj_buf_put(c, b, "nan", 3);
        return;
    }
    if (isinf(f)) {
        jj_buf_put(c, b, f < 0 ? "-inf" : "inf", f < 0 ? 4 : 3);
        return;
    }
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    if (!strpbrk(tmp, ".eninf"))
        strcat(tmp, ".0");
    jj_buf_put(c, b, tmp, strlen(tmp));
}

static void put_json_str(ctx *c, buf *b, const char *s, size_t n)
{
    jj_buf_put(c, b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *e = NULL;
        switch (ch) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default: break;
        }
        if (e)
            jj_buf_put(c, b, e, strlen(e));
        else if (ch < 0x20)
            buf_fmt(c, b, "\\u%04x", ch);
        else
            jj_buf_put(c, b, s + i, 1);
    }
    jj_buf_put(c, b, "\"", 1);
}

/* json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort) */
void jj_put_json(ctx *c, buf *b, val v, int indent, int sort, int depth)
{
    if (depth > CT_MAX_DEPTH)
        jj_fail_at(c, -1, MOE_EINVAL, "tojson: value nested too deeply");
    switch (v.k) {
    case V_UNDEF:
    case V_NONE: jj_buf_put(c, b, "null", 4); return;
    case V_BOOL: jj_buf_put(c, b, v.i ? "true" : "false", v.i ? 4 : 5); return;
    case V_INT: buf_fmt(c, b, "%lld", v.i); return;
    case V_FLOAT:
        if (isnan(v.f) || isinf(v.f))
            jj_buf_put(c, b, isnan(v.f) ? "NaN" : v.f < 0 ? "-Infinity" : "Infinity", isnan(v.f) ? 3 : v.f < 0 ? 9 : 8);
        else
            put_float(c, b, v.f);
        return;
    case V_STR: put_json_str(c, b, v.s, v.n); return;
    case V_LIST:
    case V_DICT:
    case V_NS: {
        int isl = v.k == V_LIST;
        int n = isl ? v.l->n : v.d->n;
        jj_buf_put(c, b, isl ? "[" : "{", 1);
        int *ord = jj_ar_alloc(c, (size_t)(n + 1) * sizeof(int));
        for (int i = 0; i < n; i++)
            ord[i] = i;
        if (!isl && sort) /* insertion sort: dicts here are small */
            for (int i = 1; i < n; i++)
                for (int j = i; j > 0; j--) {
                    val x = v.d->key[ord[j - 1]], y = v.d->key[ord[j]];
                    size_t m = x.n < y.n ? x.n : y.n;
                    int cmp = memcmp(x.s, y.s, m);
                    if (cmp < 0 || (cmp == 0 && x.n <= y.n))
                        break;
                    int t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                }
        for (int i = 0; i < n; i++) {
            if (i)
                jj_buf_put(c, b, indent ? "," : ", ", indent ? 1 : 2);
            if (indent) {
                jj_buf_put(c, b, "\n", 1);
                for (int s = 0; s < indent * (depth + 1); s++)
                    jj_buf_put(c, b, " ", 1);
            }
            if (isl) {
                jj_put_json(c, b, v.l->v[i], indent, sort, depth + 1);
            } else {
                put_json_str(c, b, v.d->key[ord[i]].s, v.d->key[ord[i]].n);
                jj_buf_put(c, b, ": ", 2);
                jj_put_json(c, b, v.d->v[ord[i]], indent, sort, depth + 1);
            }
        }
        if (indent && n) {
            jj_buf_put(c, b, "\n", 1);
            for (int s = 0; s < indent * depth; s++)
                jj_buf_put(c, b, " ", 1);
        }
        jj_buf_put(c, b, isl ? "]" : "}", 1);
        return;
    }
    default: jj_fail_at(c, -1, MOE_EINVAL, "tojson: a function cannot be converted to JSON");
    }
}

static void put_repr(ctx *c, buf *b, val v, int depth);

/* str(v) as Python prints it (Jinja's {{ v }}). */
void jj_put_val(ctx *c, buf *b, val v, int depth)
{
    switch (v.k) {
    case V_UNDEF: return;
    case V_NONE: jj_buf_put(c, b, "None", 4); return;
    case V_BOOL: jj_buf_put(c, b, v.i ? "True" : "False", v.i ? 4 : 5); return;
    case V_INT: buf_fmt(c, b, "%lld", v.i); return;
    case V_FLOAT: put_float(c, b, v.f); return;
    case V_STR: jj_buf_put(c, b, v.s, v.n); return;
    default: put_repr(c, b, v, depth);
    }
}

static void put_repr(ctx *c, buf *b, val v, int depth)
{
    if (depth > CT_MAX_DEPTH)
        jj_fail_at(c, -1, MOE_EINVAL, "value nested too deeply to print");
    if (v.k == V_STR) {
        int dq = memchr(v.s, '\'', v.n) && !memchr(v.s, '"', v.n);
        jj_buf_put(c, b, dq ? "\"" : "'", 1);
        for (size_t i = 0; i < v.n; i++) {
            char ch = v.s[i];
            if (ch == '\\' || (!dq && ch == '\''))
                buf_fmt(c, b, "\\%c", ch);
            else if (ch == '\n')
                jj_buf_put(c, b, "\\n", 2);
            else if (ch == '\t')
                jj_buf_put(c, b, "\\t", 2);
            else if (ch == '\r')
                jj_buf_put(c, b, "\\r", 2);
            else
                jj_buf_put(c, b, &ch, 1);
        }
        jj_buf_put(c, b, dq ? "\"" : "'", 1);
    } else if (v.k == V_LIST) {
        jj_buf_put(c, b, "[", 1);
        for (int i = 0; i < v.l->n; i++) {
            if (i)
                jj_buf_put(c, b, ", ", 2);
            put_repr(c, b, v.l->v[i], depth + 1);
        }
        jj_buf_put(c, b, "]", 1);
    } else if (v.k == V_DICT || v.k == V_NS) {
        jj_buf_put(c, b, v.k == V_NS ? "<Namespace {" : "{", v.k == V_NS ? 12 : 1);
        for (int i = 0; i < v.d->n; i++) {
            if (i)
                jj_buf_put(c, b, ", ", 2);
            put_repr(c, b, v.d->key[i], depth + 1);
            jj_buf_put(c, b, ": ", 2);
            put_repr(c, b, v.d->v[i], depth + 1);
        }
        jj_buf_put(c, b, v.k == V_NS ? "}>" : "}", v.k == V_NS ? 2 : 1);
    } else if (v.k == V_METHOD || v.k == V_FUNC || v.k == V_MACRO) {
        jj_buf_put(c, b, "<function>", 10);
    } else {
        jj_put_val(c, b, v, depth);
    }
}

val jj_to_str(ctx *c, val v)
{
    if (v.k == V_STR)
        return v;
    buf b = {0};
    jj_put_val(c, &b, v, 0);
    val r = jj_v_str(c, b.p ? b.p : "", b.n);
    return r;
}

const char *jj_type_name(val v)
{
    static const char *names[] = {"undefined", "none", "boolean", "integer", "float", "string",
                                  "list", "dict", "namespace", "method", "function", "macro"};
    return names[v.k];
}
