/* chat_template: the subset of Jinja2 that Hugging Face chat templates use,
 * rendered as transformers renders them (trim_blocks, lstrip_blocks, the
 * raise_exception and strftime_now globals, a tojson that keeps non-ASCII).
 * The template is lexed and parsed to a tree, then evaluated over a small
 * value type. Everything a render allocates lives in one arena that is freed
 * at the end; errors unwind with longjmp to the entry point. */
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

/* Limits against hostile templates. */
#define CT_MAX_OUTPUT ((size_t)8 << 20)   /* bytes rendered */
#define CT_MAX_MEMORY ((size_t)256 << 20) /* arena bytes */
#define CT_MAX_DEPTH 200                  /* nesting of expressions, blocks and macro calls */
#define CT_MAX_STEPS 2000000L             /* statements evaluated and loop iterations */
#define CT_MAX_RANGE 100000               /* elements of range() */

/* ---- arena ------------------------------------------------------------- */

typedef struct blk {
    struct blk *next;
    size_t used, cap;
    max_align_t data[];
} blk;

typedef struct ctx ctx;
static void fail_at(ctx *c, int pos, moe_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5), noreturn));

/* ---- values ------------------------------------------------------------ */

enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_METHOD, V_FUNC, V_MACRO };
enum { FN_RAISE, FN_RANGE, FN_NAMESPACE, FN_STRFTIME };

typedef struct val val;
typedef struct node node;
typedef struct list list;
typedef struct dict dict;

struct val {
    int k;
    size_t n; /* string length */
    union {
        long long i;
        double f;
        const char *s;
        list *l;
        dict *d;
        struct method *m;
        int fn;
        struct macro *mac;
    };
};

struct list {
    val *v;
    int n, cap;
};

struct dict {
    val *key; /* strings */
    val *v;
    int n, cap;
};

struct method {
    val self;
    const char *name;
};

struct macro {
    node *x;
    struct scope *sc; /* where it was defined: it sees itself and its siblings */
};

/* ---- tokens and tree --------------------------------------------------- */

enum { T_TEXT, T_OPEN_STMT, T_CLOSE_STMT, T_OPEN_EXPR, T_CLOSE_EXPR, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct {
    int t;
    int pos; /* offset in the preprocessed source */
    const char *s;
    size_t n;
    long long i;
    double f;
} tok;

enum {
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE,
    E_LIT, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_AND, E_OR, E_NOT, E_NEG,
    E_POS, E_COND, E_LIST, E_DICT
};

typedef struct {
    node **v;
    int n, cap;
} nlist;

struct node {
    int k, pos;
    val lit;          /* E_LIT; N_TEXT */
    const char *name; /* E_NAME, E_ATTR, E_FILTER, E_TEST, N_MACRO, E_BIN operator */
    node *a, *b, *c;
    nlist l1, l2;     /* bodies, arguments, keyword values */
    const char **names; /* N_FOR/N_SET targets, keyword names, macro parameters */
    int nnames;
    int negate;
};

struct scope {
    struct scope *parent;
    dict vars;
};

typedef struct {
    char *p;
    size_t n, cap;
} buf;

struct ctx {
    jmp_buf jb;
    moe_error *err;
    blk *arena;
    size_t arena_total;
    /* source */
    const char *orig;
    char *src;       /* preprocessed */
    int *omap;       /* preprocessed offset -> original offset */
    size_t srcn;
    tok *toks;
    int ntok, ctok, itok;
    /* evaluation */
    buf out;
    struct scope *root;
    long steps;
    int depth;
    int brk; /* 1 break, 2 continue */
};

static void *ar_alloc(ctx *c, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!c->arena || c->arena->used + n > c->arena->cap) {
        size_t cap = n > 65536 ? n : 65536;
        if (c->arena_total + cap > CT_MAX_MEMORY)
            fail_at(c, -1, MOE_ENOMEM, "the template needs more than %zu MiB of memory", CT_MAX_MEMORY >> 20);
        blk *b = malloc(sizeof *b + cap);
        if (!b)
            fail_at(c, -1, MOE_ENOMEM, "out of memory");
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

static void *ar_grow(ctx *c, void *old, size_t oldn, size_t newn)
{
    void *p = ar_alloc(c, newn);
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

static void fail_at(ctx *c, int pos, moe_status code, const char *fmt, ...)
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

static val v_str(ctx *c, const char *s, size_t n)
{
    char *p = ar_alloc(c, n + 1);
    memcpy(p, s, n);
    return (val){.k = V_STR, .n = n, .s = p};
}

static val v_cstr(ctx *c, const char *s) { return v_str(c, s, strlen(s)); }
static val v_int(long long i) { return (val){.k = V_INT, .i = i}; }
static val v_bool(int b) { return (val){.k = V_BOOL, .i = b != 0}; }

static void buf_put(ctx *c, buf *b, const char *s, size_t n)
{
    if (b->n + n > CT_MAX_OUTPUT)
        fail_at(c, -1, MOE_EINVAL, "the rendered text would exceed %zu MiB", CT_MAX_OUTPUT >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = ar_grow(c, b->p, b->n, cap); /* arena: an error unwinds without leaks */
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
    buf_put(c, b, tmp, (size_t)n);
}

/* Length of the whitespace character at s, or 0. `js` selects JavaScript's
 * \s (the reference lexer) over Python's str.isspace (strip, split, trim). */
static size_t ws_len(const char *s, size_t n, int js)
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
static size_t ws_tail(const char *s, size_t n, int js)
{
    size_t e = n;
    while (e > 0) {
        size_t st = e - 1;
        while (st > 0 && e - st < 4 && ((unsigned char)s[st] & 0xc0) == 0x80)
            st--;
        size_t l = ws_len(s + st, e - st, js);
        if (l != e - st)
            break;
        e = st;
    }
    return n - e;
}

static int u8next(const char *s, size_t n, size_t i)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    return l > 0 ? (int)l : 1;
}

/* Strip chars (any of the code points in `chars`, or whitespace) from the
 * left (which & 1) and right (which & 2). */
static val str_strip(ctx *c, val s, const val *chars, int which)
{
    size_t a = 0, e = s.n;
    for (;;) {
        if (!(which & 1) || a >= e)
            break;
        size_t l;
        if (chars) {
            l = (size_t)u8next(s.s, e, a);
            if (!memmem(chars->s, chars->n, s.s + a, l))
                break;
        } else if (!(l = ws_len(s.s + a, e - a, 0))) {
            break;
        }
        a += l;
    }
    while ((which & 2) && e > a) {
        size_t st = e - 1;
        while (st > a && ((unsigned char)s.s[st] & 0xc0) == 0x80)
            st--;
        int hit = chars ? memmem(chars->s, chars->n, s.s + st, e - st) != NULL
                        : ws_len(s.s + st, e - st, 0) == e - st;
        if (!hit)
            break;
        e = st;
    }
    return v_str(c, s.s + a, e - a);
}

/* Map every code point through f (upper/lower/title). */
static val str_map(ctx *c, val s, int mode)
{
    buf b = {0};
    int word = 0;
    for (size_t i = 0; i < s.n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s.s + i, (utf8proc_ssize_t)(s.n - i), &cp);
        if (l <= 0) {
            buf_put(c, &b, s.s + i, 1);
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
        buf_put(c, &b, (const char *)enc, (size_t)el);
        i += (size_t)l;
    }
    val r = v_str(c, b.p ? b.p : "", b.n);
    return r;
}

/* ---- lists and dicts ---------------------------------------------------- */

static list *list_new(ctx *c)
{
    return ar_alloc(c, sizeof(list));
}

static void list_push(ctx *c, list *l, val v)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        l->v = ar_grow(c, l->v, (size_t)l->n * sizeof(val), (size_t)cap * sizeof(val));
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

static int dict_find(const dict *d, const char *k, size_t n)
{
    for (int i = 0; i < d->n; i++)
        if (d->key[i].n == n && memcmp(d->key[i].s, k, n) == 0)
            return i;
    return -1;
}

static void dict_set(ctx *c, dict *d, val key, val v)
{
    int i = dict_find(d, key.s, key.n);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        d->key = ar_grow(c, d->key, (size_t)d->n * sizeof(val), (size_t)cap * sizeof(val));
        d->v = ar_grow(c, d->v, (size_t)d->n * sizeof(val), (size_t)cap * sizeof(val));
        d->cap = cap;
    }
    d->key[d->n] = key;
    d->v[d->n++] = v;
}

static val dict_get(const dict *d, const char *k, size_t n)
{
    int i = dict_find(d, k, n);
    return i >= 0 ? d->v[i] : (val){.k = V_UNDEF};
}

static val from_json(ctx *c, const cJSON *j)
{
    if (cJSON_IsBool(j))
        return v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double f = j->valuedouble;
        if (f == floor(f) && fabs(f) < 9e15)
            return v_int((long long)f);
        return (val){.k = V_FLOAT, .f = f};
    }
    if (cJSON_IsString(j))
        return v_cstr(c, j->valuestring);
    if (cJSON_IsArray(j)) {
        list *l = list_new(c);
        const cJSON *x;
        cJSON_ArrayForEach(x, j) list_push(c, l, from_json(c, x));
        return (val){.k = V_LIST, .l = l};
    }
    if (cJSON_IsObject(j)) {
        dict *d = ar_alloc(c, sizeof *d);
        const cJSON *x;
        cJSON_ArrayForEach(x, j) dict_set(c, d, v_cstr(c, x->string), from_json(c, x));
        return (val){.k = V_DICT, .d = d};
    }
    return (val){.k = V_NONE};
}

/* ---- printing ----------------------------------------------------------- */

/* Python's repr of a float: the shortest digits that read back the same. */
static void put_float(ctx *c, buf *b, double f)
{
    if (isnan(f)) {
        buf_put(c, b, "nan", 3);
        return;
    }
    if (isinf(f)) {
        buf_put(c, b, f < 0 ? "-inf" : "inf", f < 0 ? 4 : 3);
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
    buf_put(c, b, tmp, strlen(tmp));
}

static void put_json_str(ctx *c, buf *b, const char *s, size_t n)
{
    buf_put(c, b, "\"", 1);
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
            buf_put(c, b, e, strlen(e));
        else if (ch < 0x20)
            buf_fmt(c, b, "\\u%04x", ch);
        else
            buf_put(c, b, s + i, 1);
    }
    buf_put(c, b, "\"", 1);
}

/* json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort) */
static void put_json(ctx *c, buf *b, val v, int indent, int sort, int depth)
{
    if (depth > CT_MAX_DEPTH)
        fail_at(c, -1, MOE_EINVAL, "tojson: value nested too deeply");
    switch (v.k) {
    case V_UNDEF:
    case V_NONE: buf_put(c, b, "null", 4); return;
    case V_BOOL: buf_put(c, b, v.i ? "true" : "false", v.i ? 4 : 5); return;
    case V_INT: buf_fmt(c, b, "%lld", v.i); return;
    case V_FLOAT:
        if (isnan(v.f) || isinf(v.f))
            buf_put(c, b, isnan(v.f) ? "NaN" : v.f < 0 ? "-Infinity" : "Infinity", isnan(v.f) ? 3 : v.f < 0 ? 9 : 8);
        else
            put_float(c, b, v.f);
        return;
    case V_STR: put_json_str(c, b, v.s, v.n); return;
    case V_LIST:
    case V_DICT:
    case V_NS: {
        int isl = v.k == V_LIST;
        int n = isl ? v.l->n : v.d->n;
        buf_put(c, b, isl ? "[" : "{", 1);
        int *ord = ar_alloc(c, (size_t)(n + 1) * sizeof(int));
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
                buf_put(c, b, indent ? "," : ", ", indent ? 1 : 2);
            if (indent) {
                buf_put(c, b, "\n", 1);
                for (int s = 0; s < indent * (depth + 1); s++)
                    buf_put(c, b, " ", 1);
            }
            if (isl) {
                put_json(c, b, v.l->v[i], indent, sort, depth + 1);
            } else {
                put_json_str(c, b, v.d->key[ord[i]].s, v.d->key[ord[i]].n);
                buf_put(c, b, ": ", 2);
                put_json(c, b, v.d->v[ord[i]], indent, sort, depth + 1);
            }
        }
        if (indent && n) {
            buf_put(c, b, "\n", 1);
            for (int s = 0; s < indent * depth; s++)
                buf_put(c, b, " ", 1);
        }
        buf_put(c, b, isl ? "]" : "}", 1);
        return;
    }
    default: fail_at(c, -1, MOE_EINVAL, "tojson: a function cannot be converted to JSON");
    }
}

static void put_repr(ctx *c, buf *b, val v, int depth);

/* str(v) as Python prints it (Jinja's {{ v }}). */
static void put_val(ctx *c, buf *b, val v, int depth)
{
    switch (v.k) {
    case V_UNDEF: return;
    case V_NONE: buf_put(c, b, "None", 4); return;
    case V_BOOL: buf_put(c, b, v.i ? "True" : "False", v.i ? 4 : 5); return;
    case V_INT: buf_fmt(c, b, "%lld", v.i); return;
    case V_FLOAT: put_float(c, b, v.f); return;
    case V_STR: buf_put(c, b, v.s, v.n); return;
    default: put_repr(c, b, v, depth);
    }
}

static void put_repr(ctx *c, buf *b, val v, int depth)
{
    if (depth > CT_MAX_DEPTH)
        fail_at(c, -1, MOE_EINVAL, "value nested too deeply to print");
    if (v.k == V_STR) {
        int dq = memchr(v.s, '\'', v.n) && !memchr(v.s, '"', v.n);
        buf_put(c, b, dq ? "\"" : "'", 1);
        for (size_t i = 0; i < v.n; i++) {
            char ch = v.s[i];
            if (ch == '\\' || (!dq && ch == '\''))
                buf_fmt(c, b, "\\%c", ch);
            else if (ch == '\n')
                buf_put(c, b, "\\n", 2);
            else if (ch == '\t')
                buf_put(c, b, "\\t", 2);
            else if (ch == '\r')
                buf_put(c, b, "\\r", 2);
            else
                buf_put(c, b, &ch, 1);
        }
        buf_put(c, b, dq ? "\"" : "'", 1);
    } else if (v.k == V_LIST) {
        buf_put(c, b, "[", 1);
        for (int i = 0; i < v.l->n; i++) {
            if (i)
                buf_put(c, b, ", ", 2);
            put_repr(c, b, v.l->v[i], depth + 1);
        }
        buf_put(c, b, "]", 1);
    } else if (v.k == V_DICT || v.k == V_NS) {
        buf_put(c, b, v.k == V_NS ? "<Namespace {" : "{", v.k == V_NS ? 12 : 1);
        for (int i = 0; i < v.d->n; i++) {
            if (i)
                buf_put(c, b, ", ", 2);
            put_repr(c, b, v.d->key[i], depth + 1);
            buf_put(c, b, ": ", 2);
            put_repr(c, b, v.d->v[i], depth + 1);
        }
        buf_put(c, b, v.k == V_NS ? "}>" : "}", v.k == V_NS ? 2 : 1);
    } else if (v.k == V_METHOD || v.k == V_FUNC || v.k == V_MACRO) {
        buf_put(c, b, "<function>", 10);
    } else {
        put_val(c, b, v, depth);
    }
}

static val to_str(ctx *c, val v)
{
    if (v.k == V_STR)
        return v;
    buf b = {0};
    put_val(c, &b, v, 0);
    val r = v_str(c, b.p ? b.p : "", b.n);
    return r;
}

static const char *type_name(val v)
{
    static const char *names[] = {"undefined", "none", "boolean", "integer", "float", "string",
                                  "list", "dict", "namespace", "method", "function", "macro"};
    return names[v.k];
}

/* ---- lexer -------------------------------------------------------------- */

/* What @huggingface/jinja and Jinja2 do before lexing, with the options
 * transformers sets: drop one trailing newline (keep_trailing_newline is
 * off), strip spaces and tabs before a block tag that starts a line
 * (lstrip_blocks), and the newline right after a block tag (trim_blocks). */
static void preprocess(ctx *c, const char *s)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '\n')
        n--;
    char *a = ar_alloc(c, n + 1);
    int *am = ar_alloc(c, (n + 1) * sizeof(int));
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
    char *b = ar_alloc(c, k + 1);
    int *bm = ar_alloc(c, (k + 1) * sizeof(int));
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
        c->toks = ar_grow(c, c->toks, (size_t)c->ntok * sizeof(tok), (size_t)cap * sizeof(tok));
        c->ctok = cap;
    }
    c->toks[c->ntok++] = t;
}

/* Drop trailing whitespace from the text token just before a {%- or {{-. */
static void strip_last_text(ctx *c)
{
    if (c->ntok && c->toks[c->ntok - 1].t == T_TEXT) {
        tok *t = &c->toks[c->ntok - 1];
        t->n -= ws_tail(t->s, t->n, 1);
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
            buf_put(c, &b, s + i++, 1);
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
            buf_put(c, &b, r, 1);
        } else if (e == 'x' || e == 'u') {
            int len = e == 'x' ? 2 : 4, cp = 0;
            for (int k = 0; k < len; k++) {
                int h = i + (size_t)k < c->srcn ? hexval(s[i + (size_t)k]) : -1;
                if (h < 0) {
                    fail_at(c, (int)i - 2, MOE_EFORMAT, "bad \\%c escape in a string literal", e);
                }
                cp = cp * 16 + h;
            }
            i += (size_t)len;
            utf8proc_uint8_t enc[4];
            utf8proc_ssize_t el = utf8proc_encode_char(cp, enc);
            buf_put(c, &b, (const char *)enc, (size_t)el);
        } else {
            fail_at(c, (int)i - 2, MOE_EFORMAT, "unknown escape \\%c in a string literal", e);
        }
    }
    if (i >= c->srcn) {
        fail_at(c, (int)start, MOE_EFORMAT, "unterminated string literal");
    }
    val v = v_str(c, b.p ? b.p : "", b.n);
    t->t = T_STR;
    t->s = v.s;
    t->n = v.n;
    return i + 1;
}

static void lex(ctx *c)
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
                    fail_at(c, (int)at, MOE_EFORMAT, "unterminated comment: no #} after {#");
                int strip_after = s[i - 1] == '-';
                if (strip_before)
                    strip_last_text(c);
                i += 2;
                if (strip_after)
                    while (i < n && ws_len(s + i, n - i, 1))
                        i += ws_len(s + i, n - i, 1);
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
        while (i < n && (l = ws_len(s + i, n - i, 1)))
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
                while (i < n && (l = ws_len(s + i, n - i, 1)))
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
                fail_at(c, (int)i, MOE_EFORMAT, "unexpected character '%c' inside a tag", ch);
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
        fail_at(c, open_at, MOE_EFORMAT, "unterminated %s: no %s before the end of the template",
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
    char *p = ar_alloc(c, t->n + 3);
    snprintf(p, t->n + 3, "'%.*s'", (int)t->n, t->s);
    return p;
}

static void expect_op(ctx *c, const char *op)
{
    tok *t = next(c);
    if (!is_op(t, op))
        fail_at(c, t->pos, MOE_EFORMAT, "expected '%s', found %s", op, tok_desc(c, t));
}

static const char *expect_name(ctx *c)
{
    tok *t = next(c);
    if (t->t != T_NAME)
        fail_at(c, t->pos, MOE_EFORMAT, "expected a name, found %s", tok_desc(c, t));
    char *p = ar_alloc(c, t->n + 1);
    memcpy(p, t->s, t->n);
    return p;
}

static void expect_close(ctx *c)
{
    tok *t = next(c);
    if (t->t != T_CLOSE_STMT)
        fail_at(c, t->pos, MOE_EFORMAT, "expected %%} to close the tag, found %s", tok_desc(c, t));
}

static node *mk(ctx *c, int k, int pos)
{
    node *x = ar_alloc(c, sizeof *x);
    x->k = k;
    x->pos = pos;
    return x;
}

static void nl_push(ctx *c, nlist *l, node *x)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        l->v = ar_grow(c, l->v, (size_t)l->n * sizeof(node *), (size_t)cap * sizeof(node *));
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static void add_name(ctx *c, node *x, const char *nm)
{
    const char **p = ar_grow(c, x->names, (size_t)x->nnames * sizeof(char *), (size_t)(x->nnames + 1) * sizeof(char *));
    p[x->nnames++] = nm;
    x->names = p;
}

static void enter(ctx *c, int pos)
{
    if (++c->depth > CT_MAX_DEPTH)
        fail_at(c, pos, MOE_EINVAL, "nested more than %d deep", CT_MAX_DEPTH);
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
                fail_at(c, t->pos, MOE_EFORMAT, "a positional argument after a keyword argument");
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
    enter(c, t->pos);
    node *x = mk(c, E_LIT, t->pos);
    if (t->t == T_STR) {
        x->lit = (val){.k = V_STR, .s = t->s, .n = t->n};
        while (peek(c)->t == T_STR) { /* adjacent literals concatenate */
            tok *u = next(c);
            char *p = ar_alloc(c, x->lit.n + u->n + 1);
            memcpy(p, x->lit.s, x->lit.n);
            memcpy(p + x->lit.n, u->s, u->n);
            x->lit.s = p;
            x->lit.n += u->n;
        }
    } else if (t->t == T_INT) {
        x->lit = v_int(t->i);
    } else if (t->t == T_FLOAT) {
        x->lit = (val){.k = V_FLOAT, .f = t->f};
    } else if (t->t == T_NAME) {
        if (is_name(t, "true") || is_name(t, "True"))
            x->lit = v_bool(1);
        else if (is_name(t, "false") || is_name(t, "False"))
            x->lit = v_bool(0);
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
        fail_at(c, t->pos, MOE_EFORMAT, "expected a value, found %s", tok_desc(c, t));
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
                y->b->lit = v_int(next(c)->i);
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
                        fail_at(c, t->pos, MOE_EFORMAT, "a slice takes at most two ':'");
                    continue;
                }
                if (is_op(peek(c), "]"))
                    break;
                if (parts[colons])
                    fail_at(c, peek(c)->pos, MOE_EFORMAT, "expected ']' or ':', found %s", tok_desc(c, peek(c)));
                parts[colons] = p_expr(c, 1);
            }
            expect_op(c, "]");
            if (colons) {
                y->k = E_SLICE;
                y->b = parts[0];
                y->c = parts[1];
                nl_push(c, &y->l1, parts[2]);
            } else if (!parts[0]) {
                fail_at(c, t->pos, MOE_EFORMAT, "empty subscript []");
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
                char *p = ar_alloc(c, u->n + 1);
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
    enter(c, t->pos);
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
        enter(c, t->pos);
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
    enter(c, peek(c)->pos);
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
static const char *p_body(ctx *c, nlist *body, const char *const *stops, int open_pos, const char *what);

static void p_for(ctx *c, node *x)
{
    add_name(c, x, expect_name(c));
    while (is_op(peek(c), ",")) {
        next(c);
        add_name(c, x, expect_name(c));
    }
    tok *t = next(c);
    if (!is_name(t, "in"))
        fail_at(c, t->pos, MOE_EFORMAT, "expected 'in' in a for tag, found %s", tok_desc(c, t));
    x->a = p_expr(c, 0);
    if (is_name(peek(c), "if")) {
        next(c);
        x->b = p_expr(c, 0);
    }
    if (is_name(peek(c), "recursive"))
        fail_at(c, peek(c)->pos, MOE_EUNSUPPORTED, "recursive for loops are not supported");
    expect_close(c);
    static const char *const stops[] = {"endfor", "else", NULL};
    const char *s = p_body(c, &x->l1, stops, x->pos, "for");
    if (strcmp(s, "else") == 0) {
        next(c);
        expect_close(c);
        static const char *const end[] = {"endfor", NULL};
        p_body(c, &x->l2, end, x->pos, "for");
    }
    next(c);
    expect_close(c);
}

static void p_if(ctx *c, node *x)
{
    x->a = p_expr(c, 1);
    expect_close(c);
    static const char *const stops[] = {"endif", "elif", "else", NULL};
    const char *s = p_body(c, &x->l1, stops, x->pos, "if");
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
        p_body(c, &x->l2, end, x->pos, "if");
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
        p_body(c, &x->l1, end, x->pos, "set");
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
    p_body(c, &x->l1, end, x->pos, "macro");
    next(c);
    expect_close(c);
}

static const char *p_body(ctx *c, nlist *body, const char *const *stops, int open_pos, const char *what)
{
    enter(c, peek(c)->pos);
    for (;;) {
        tok *t = next(c);
        if (t->t == T_EOF) {
            if (!stops)
                break;
            fail_at(c, open_pos, MOE_EFORMAT, "this {%% %s %%} has no {%% end%s %%}", what, what);
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
                fail_at(c, u->pos, MOE_EFORMAT, "expected }} to close the expression, found %s", tok_desc(c, u));
            nl_push(c, body, x);
        } else if (t->t == T_OPEN_STMT) {
            tok *k = peek(c);
            if (k->t != T_NAME)
                fail_at(c, k->pos, MOE_EFORMAT, "expected a tag name after {%%, found %s", tok_desc(c, k));
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
                fail_at(c, k->pos, MOE_EFORMAT, "{%% %.*s %%} without a matching opening tag", (int)k->n, k->s);
            } else {
                fail_at(c, k->pos, MOE_EUNSUPPORTED, "the {%% %.*s %%} tag is not supported", (int)k->n, k->s);
            }
            nl_push(c, body, x);
        } else {
            fail_at(c, t->pos, MOE_EFORMAT, "unexpected %s", tok_desc(c, t));
        }
    }
    c->depth--;
    return NULL;
}

/* ---- evaluation --------------------------------------------------------- */

static val eval(ctx *c, node *x, struct scope *sc);
static void exec_body(ctx *c, const nlist *body, struct scope *sc);

static int truthy(val v)
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
        int i = dict_find(&sc->vars, nm, strlen(nm));
        if (i >= 0)
            return sc->vars.v[i];
    }
    return (val){.k = V_UNDEF};
}

static void assign(ctx *c, struct scope *sc, const char *nm, val v)
{
    int i = dict_find(&sc->vars, nm, strlen(nm));
    if (i >= 0)
        sc->vars.v[i] = v;
    else
        dict_set(c, &sc->vars, v_cstr(c, nm), v);
}

static int is_num(val v) { return v.k == V_INT || v.k == V_FLOAT || v.k == V_BOOL; }
static double num(val v) { return v.k == V_FLOAT ? v.f : (double)v.i; }

static int equal(val a, val b, int depth)
{
    if (depth > CT_MAX_DEPTH)
        return 0;
    if (is_num(a) && is_num(b))
        return num(a) == num(b);
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
            if (!equal(a.l->v[i], b.l->v[i], depth + 1))
                return 0;
        return 1;
    case V_DICT:
        if (a.d->n != b.d->n)
            return 0;
        for (int i = 0; i < a.d->n; i++) {
            val o = dict_get(b.d, a.d->key[i].s, a.d->key[i].n);
            if (o.k == V_UNDEF || !equal(a.d->v[i], o, depth + 1))
                return 0;
        }
        return 1;
    default: return a.d == b.d;
    }
}

static int compare(ctx *c, int pos, val a, val b)
{
    if (is_num(a) && is_num(b))
        return num(a) < num(b) ? -1 : num(a) > num(b);
    if (a.k == V_STR && b.k == V_STR) {
        size_t m = a.n < b.n ? a.n : b.n;
        int r = memcmp(a.s, b.s, m);
        return r ? r : (a.n > b.n) - (a.n < b.n);
    }
    fail_at(c, pos, MOE_EINVAL, "cannot compare %s with %s", type_name(a), type_name(b));
}

static int contains(ctx *c, int pos, val item, val in)
{
    if (in.k == V_STR) {
        if (item.k != V_STR)
            fail_at(c, pos, MOE_EINVAL, "'in <string>' needs a string on the left, not %s", type_name(item));
        return item.n == 0 || memmem(in.s, in.n, item.s, item.n) != NULL;
    }
    if (in.k == V_LIST) {
        for (int i = 0; i < in.l->n; i++)
            if (equal(item, in.l->v[i], 0))
                return 1;
        return 0;
    }
    if (in.k == V_DICT || in.k == V_NS)
        return item.k == V_STR && dict_find(in.d, item.s, item.n) >= 0;
    if (in.k == V_UNDEF)
        return 0;
    fail_at(c, pos, MOE_EINVAL, "'in' needs a string, list or dict on the right, not %s", type_name(in));
}

static val concat(ctx *c, val a, val b)
{
    a = to_str(c, a);
    b = to_str(c, b);
    char *p = ar_alloc(c, a.n + b.n + 1);
    memcpy(p, a.s, a.n);
    memcpy(p + a.n, b.s, b.n);
    if (a.n + b.n > CT_MAX_OUTPUT)
        fail_at(c, -1, MOE_EINVAL, "a string would exceed %zu MiB", CT_MAX_OUTPUT >> 20);
    return (val){.k = V_STR, .s = p, .n = a.n + b.n};
}

static val binop(ctx *c, node *x, val a, val b)
{
    const char *op = x->name;
    if (strcmp(op, "==") == 0)
        return v_bool(equal(a, b, 0));
    if (strcmp(op, "!=") == 0)
        return v_bool(!equal(a, b, 0));
    if (strcmp(op, "in") == 0)
        return v_bool(contains(c, x->pos, a, b));
    if (strcmp(op, "not in") == 0)
        return v_bool(!contains(c, x->pos, a, b));
    if (strcmp(op, "~") == 0)
        return concat(c, a, b);
    if (op[0] == '<' || op[0] == '>') {
        int r = compare(c, x->pos, a, b);
        return v_bool(op[0] == '<' ? (op[1] ? r <= 0 : r < 0) : (op[1] ? r >= 0 : r > 0));
    }
    if (strcmp(op, "+") == 0) {
        if (a.k == V_STR && b.k == V_STR)
            return concat(c, a, b);
        if (a.k == V_LIST && b.k == V_LIST) {
            list *l = list_new(c);
            for (int i = 0; i < a.l->n; i++)
                list_push(c, l, a.l->v[i]);
            for (int i = 0; i < b.l->n; i++)
                list_push(c, l, b.l->v[i]);
            return (val){.k = V_LIST, .l = l};
        }
    }
    if (strcmp(op, "*") == 0 && ((a.k == V_STR && b.k == V_INT) || (a.k == V_INT && b.k == V_STR))) {
        val s = a.k == V_STR ? a : b;
        long long k = a.k == V_INT ? a.i : b.i;
        if (k > 0 && s.n * (size_t)k > CT_MAX_OUTPUT)
            fail_at(c, x->pos, MOE_EINVAL, "a string would exceed %zu MiB", CT_MAX_OUTPUT >> 20);
        size_t total = k > 0 ? s.n * (size_t)k : 0;
        char *p = ar_alloc(c, total + 1);
        for (long long i = 0; i < k; i++)
            memcpy(p + (size_t)i * s.n, s.s, s.n);
        return (val){.k = V_STR, .s = p, .n = total};
    }
    if (!is_num(a) || !is_num(b))
        fail_at(c, x->pos, MOE_EINVAL, "cannot apply '%s' to %s and %s", op, type_name(a), type_name(b));
    int fl = a.k == V_FLOAT || b.k == V_FLOAT;
    double fa = num(a), fb = num(b);
    long long ia = a.i, ib = b.i;
    switch (op[0]) {
    case '+': return fl ? (val){.k = V_FLOAT, .f = fa + fb} : v_int(ia + ib);
    case '-': return fl ? (val){.k = V_FLOAT, .f = fa - fb} : v_int(ia - ib);
    case '*':
        if (op[1]) {
            double r = pow(fa, fb);
            if (!fl && fb >= 0 && fabs(r) < 9e15)
                return v_int((long long)r);
            return (val){.k = V_FLOAT, .f = r};
        }
        return fl ? (val){.k = V_FLOAT, .f = fa * fb} : v_int(ia * ib);
    default: break;
    }
    if (fb == 0)
        fail_at(c, x->pos, MOE_EINVAL, "division by zero");
    if (strcmp(op, "/") == 0)
        return (val){.k = V_FLOAT, .f = fa / fb};
    if (strcmp(op, "//") == 0)
        return fl ? (val){.k = V_FLOAT, .f = floor(fa / fb)} : v_int((ia - ((ia % ib + ib) % ib)) / ib);
    /* % with Python's sign rule */
    if (fl) {
        double r = fmod(fa, fb);
        return (val){.k = V_FLOAT, .f = (r != 0 && (r < 0) != (fb < 0)) ? r + fb : r};
    }
    return v_int(((ia % ib) + ib) % ib);
}

/* Code points of a string, as offsets (n+1 entries). */
static int cps(ctx *c, val s, size_t **off)
{
    size_t *o = ar_alloc(c, (s.n + 1) * sizeof(size_t));
    int k = 0;
    for (size_t i = 0; i < s.n; i += (size_t)u8next(s.s, s.n, i))
        o[k++] = i;
    o[k] = s.n;
    *off = o;
    return k;
}

static val subscript(ctx *c, int pos, val obj, val key)
{
    if (obj.k == V_DICT || obj.k == V_NS) {
        if (key.k != V_STR)
            return (val){.k = V_UNDEF};
        return dict_get(obj.d, key.s, key.n);
    }
    if ((obj.k == V_LIST || obj.k == V_STR) && (key.k == V_INT || key.k == V_BOOL)) {
        size_t *off = NULL;
        long long n = obj.k == V_LIST ? obj.l->n : cps(c, obj, &off);
        long long i = key.i < 0 ? key.i + n : key.i;
        if (i < 0 || i >= n)
            return (val){.k = V_UNDEF};
        return obj.k == V_LIST ? obj.l->v[i] : v_str(c, obj.s + off[i], off[i + 1] - off[i]);
    }
    if (obj.k == V_UNDEF)
        return obj;
    (void)pos;
    return (val){.k = V_UNDEF};
}

static const char *const str_methods[] = {"startswith", "endswith", "split", "strip", "lstrip", "rstrip", "replace",
                                          "upper", "lower", "title", "capitalize", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", NULL};

static val attr(ctx *c, val obj, const char *nm)
{
    if (obj.k == V_DICT || obj.k == V_NS) {
        val v = dict_get(obj.d, nm, strlen(nm));
        if (v.k != V_UNDEF || obj.k == V_NS)
            return v;
    }
    const char *const *tbl = obj.k == V_STR ? str_methods : obj.k == V_DICT ? dict_methods : NULL;
    for (int i = 0; tbl && tbl[i]; i++)
        if (strcmp(tbl[i], nm) == 0) {
            struct method *m = ar_alloc(c, sizeof *m);
            m->self = obj;
            m->name = tbl[i];
            return (val){.k = V_METHOD, .m = m};
        }
    return (val){.k = V_UNDEF};
}

static long long clampi(long long i, long long lo, long long hi) { return i < lo ? lo : i > hi ? hi : i; }

static val slice(ctx *c, node *x, val obj, struct scope *sc)
{
    val a = x->b ? eval(c, x->b, sc) : (val){.k = V_NONE};
    val b = x->c ? eval(c, x->c, sc) : (val){.k = V_NONE};
    val s = x->l1.v[0] ? eval(c, x->l1.v[0], sc) : (val){.k = V_NONE};
    long long step = s.k == V_INT ? s.i : 1;
    if (step == 0)
        fail_at(c, x->pos, MOE_EINVAL, "slice step cannot be zero");
    if (obj.k != V_LIST && obj.k != V_STR)
        fail_at(c, x->pos, MOE_EINVAL, "cannot slice %s", type_name(obj));
    size_t *off = NULL;
    long long n = obj.k == V_LIST ? obj.l->n : cps(c, obj, &off);
    long long lo, hi; /* Python's slice.indices */
    if (step > 0) {
        lo = a.k == V_INT ? (a.i < 0 ? clampi(a.i + n, 0, n) : clampi(a.i, 0, n)) : 0;
        hi = b.k == V_INT ? (b.i < 0 ? clampi(b.i + n, 0, n) : clampi(b.i, 0, n)) : n;
    } else {
        lo = a.k == V_INT ? (a.i < 0 ? clampi(a.i + n, -1, n - 1) : clampi(a.i, -1, n - 1)) : n - 1;
        hi = b.k == V_INT ? (b.i < 0 ? clampi(b.i + n, -1, n - 1) : clampi(b.i, -1, n - 1)) : -1;
    }
    list *l = obj.k == V_LIST ? list_new(c) : NULL;
    buf sb = {0};
    for (long long i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (l)
            list_push(c, l, obj.l->v[i]);
        else
            buf_put(c, &sb, obj.s + off[i], off[i + 1] - off[i]);
    }
    if (l)
        return (val){.k = V_LIST, .l = l};
    val r = v_str(c, sb.p ? sb.p : "", sb.n);
    return r;
}

/* Evaluated call arguments. */
typedef struct {
    val *pos;
    int npos;
    node *x;
    val *kw;
} args;

static args eval_args(ctx *c, node *x, struct scope *sc, val *first)
{
    args a = {.x = x};
    a.pos = ar_alloc(c, (size_t)(x->l1.n + 1) * sizeof(val));
    a.kw = ar_alloc(c, (size_t)(x->l2.n + 1) * sizeof(val));
    if (first)
        a.pos[a.npos++] = *first;
    for (int i = 0; i < x->l1.n; i++)
        a.pos[a.npos++] = eval(c, x->l1.v[i], sc);
    for (int i = 0; i < x->l2.n; i++)
        a.kw[i] = eval(c, x->l2.v[i], sc);
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
        fail_at(c, pos, MOE_EINVAL, "%s must be %s, not %s", what, type_name((val){.k = kind}), type_name(v));
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

static val call_method(ctx *c, int pos, struct method *m, const args *a)
{
    val s = m->self;
    const char *nm = m->name;
    if (s.k == V_DICT) {
        if (strcmp(nm, "get") == 0) {
            val k = arg(a, 0, NULL), v = k.k == V_STR ? dict_get(s.d, k.s, k.n) : (val){.k = V_UNDEF};
            if (v.k != V_UNDEF)
                return v;
            val d = arg(a, 1, NULL);
            return d.k == V_UNDEF ? (val){.k = V_NONE} : d;
        }
        list *l = list_new(c);
        for (int i = 0; i < s.d->n; i++) {
            if (nm[0] == 'k') {
                list_push(c, l, s.d->key[i]);
            } else if (nm[0] == 'v') {
                list_push(c, l, s.d->v[i]);
            } else {
                list *p = list_new(c);
                list_push(c, p, s.d->key[i]);
                list_push(c, p, s.d->v[i]);
                list_push(c, l, (val){.k = V_LIST, .l = p});
            }
        }
        return (val){.k = V_LIST, .l = l};
    }
    if (strcmp(nm, "startswith") == 0 || strcmp(nm, "endswith") == 0)
        return v_bool(starts_or_ends(c, pos, s, arg(a, 0, NULL), nm[0] == 'e'));
    if (strstr(nm, "strip")) {
        val ch = arg(a, 0, "chars");
        int which = nm[0] == 'l' ? 1 : nm[0] == 'r' ? 2 : 3;
        if (ch.k == V_STR)
            return str_strip(c, s, &ch, which);
        return str_strip(c, s, NULL, which);
    }
    if (strcmp(nm, "upper") == 0)
        return str_map(c, s, 0);
    if (strcmp(nm, "lower") == 0)
        return str_map(c, s, 1);
    if (strcmp(nm, "title") == 0)
        return str_map(c, s, 2);
    if (strcmp(nm, "capitalize") == 0)
        return str_map(c, s, 3);
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
                buf_put(c, &b, s.s + i, s.n - i);
                break;
            }
            buf_put(c, &b, s.s + i, (size_t)(hit - s.s) - i);
            buf_put(c, &b, n.s, n.n);
            if (left > 0)
                left--;
            i = (size_t)(hit - s.s) + o.n;
            if (!o.n) { /* "" matches between every character */
                if (i >= s.n)
                    break;
                size_t l = (size_t)u8next(s.s, s.n, i);
                buf_put(c, &b, s.s + i, l);
                i += l;
                if (i == s.n && left != 0)
                    buf_put(c, &b, n.s, n.n);
                if (i == s.n)
                    break;
            }
        }
        val r = v_str(c, b.p ? b.p : "", b.n);
        return r;
    }
    /* split(sep=None, maxsplit=-1) */
    val sep = arg(a, 0, "sep"), mx = arg(a, 1, "maxsplit");
    long long maxsplit = mx.k == V_INT ? mx.i : -1;
    list *l = list_new(c);
    if (sep.k == V_STR) {
        if (!sep.n)
            fail_at(c, pos, MOE_EINVAL, "split: empty separator");
        size_t i = 0;
        for (;;) {
            const char *hit = maxsplit != 0 ? memmem(s.s + i, s.n - i, sep.s, sep.n) : NULL;
            if (!hit) {
                list_push(c, l, v_str(c, s.s + i, s.n - i));
                break;
            }
            list_push(c, l, v_str(c, s.s + i, (size_t)(hit - s.s) - i));
            i = (size_t)(hit - s.s) + sep.n;
            if (maxsplit > 0)
                maxsplit--;
        }
    } else {
        size_t i = 0, w;
        for (;;) {
            while (i < s.n && (w = ws_len(s.s + i, s.n - i, 0)))
                i += w;
            if (i >= s.n)
                break;
            if (maxsplit == 0) {
                val rest = str_strip(c, v_str(c, s.s + i, s.n - i), NULL, 2);
                list_push(c, l, rest);
                break;
            }
            size_t j = i;
            while (j < s.n && !ws_len(s.s + j, s.n - j, 0))
                j += (size_t)u8next(s.s, s.n, j);
            list_push(c, l, v_str(c, s.s + i, j - i));
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
        fail_at(c, pos, MOE_EINVAL, "macro %s takes %d arguments, got %d", mac->name, mac->nnames, a->npos);
    enter(c, pos);
    struct scope *sc = ar_alloc(c, sizeof *sc);
    sc->parent = mc->sc;
    for (int i = 0; i < mac->nnames; i++) {
        val v = arg(a, i, mac->names[i]);
        if (v.k == V_UNDEF && mac->l2.v[i])
            v = eval(c, mac->l2.v[i], sc);
        assign(c, sc, mac->names[i], v);
    }
    buf saved = c->out;
    c->out = (buf){0};
    exec_body(c, &mac->l1, sc);
    buf mine = c->out;
    c->out = saved;
    val r = v_str(c, mine.p ? mine.p : "", mine.n);
    c->depth--;
    return r;
}

static val call(ctx *c, node *x, struct scope *sc)
{
    val f = eval(c, x->a, sc);
    args a = eval_args(c, x, sc, NULL);
    if (f.k == V_METHOD)
        return call_method(c, x->pos, f.m, &a);
    if (f.k == V_MACRO)
        return call_macro(c, x->pos, f.mac, &a);
    if (f.k != V_FUNC)
        fail_at(c, x->pos, f.k == V_UNDEF ? MOE_EUNSUPPORTED : MOE_EINVAL, "%s is not a function%s",
                x->a->k == E_NAME ? x->a->name : x->a->k == E_ATTR ? x->a->name : "this value",
                f.k == V_UNDEF ? " moescope knows" : "");
    switch (f.fn) {
    case FN_RAISE: {
        val m = to_str(c, arg(&a, 0, NULL));
        fail_at(c, x->pos, MOE_EINVAL, "the template raised an error: %.*s", (int)(m.n > 400 ? 400 : m.n), m.s);
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
            fail_at(c, x->pos, MOE_EINVAL, "range() step must not be zero");
        list *l = list_new(c);
        for (long long i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (l->n >= CT_MAX_RANGE)
                fail_at(c, x->pos, MOE_EINVAL, "range() of more than %d numbers", CT_MAX_RANGE);
            list_push(c, l, v_int(i));
        }
        return (val){.k = V_LIST, .l = l};
    }
    case FN_NAMESPACE: {
        dict *d = ar_alloc(c, sizeof *d);
        if (a.npos && (a.pos[0].k == V_DICT || a.pos[0].k == V_NS))
            for (int i = 0; i < a.pos[0].d->n; i++)
                dict_set(c, d, a.pos[0].d->key[i], a.pos[0].d->v[i]);
        for (int i = 0; i < x->l2.n; i++)
            dict_set(c, d, v_cstr(c, x->names[i]), a.kw[i]);
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
        return v_str(c, out, n);
    }
    }
}

static int run_test(ctx *c, node *x, val v, struct scope *sc)
{
    const char *t = x->name;
    val a0 = x->l1.n ? eval(c, x->l1.v[0], sc) : (val){.k = V_UNDEF};
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
        val m = str_map(c, v, t[0] == 'l');
        return m.n == v.n && memcmp(m.s, v.s, v.n) == 0;
    }
    if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "sameas"))
        return equal(v, a0, 0);
    if (!strcmp(t, "ne"))
        return !equal(v, a0, 0);
    if (!strcmp(t, "in"))
        return contains(c, x->pos, v, a0);
    if (!strcmp(t, "gt") || !strcmp(t, "lt") || !strcmp(t, "ge") || !strcmp(t, "le")) {
        int r = compare(c, x->pos, v, a0);
        return t[0] == 'g' ? (t[1] == 't' ? r > 0 : r >= 0) : (t[1] == 't' ? r < 0 : r <= 0);
    }
    fail_at(c, x->pos, MOE_EUNSUPPORTED, "the test '%s' is not supported", t);
}

/* item.a.b for selectattr and map(attribute=...). */
static val attr_path_get(ctx *c, val it, val path)
{
    size_t i = 0;
    while (i <= path.n) {
        const char *dot = memchr(path.s + i, '.', path.n - i);
        size_t e = dot ? (size_t)(dot - path.s) : path.n;
        val key = v_str(c, path.s + i, e - i);
        char *end;
        long long ix = strtoll(key.s, &end, 10);
        it = it.k == V_LIST && key.n && !*end ? subscript(c, -1, it, v_int(ix)) : attr(c, it, key.s);
        i = e + 1;
    }
    return it;
}

/* A one-test selectattr/rejectattr/select/reject over a list. */
static val select_items(ctx *c, node *x, val v, const args *a, int attr, int keep)
{
    list *l = list_new(c);
    val an = attr ? arg(a, 1, NULL) : (val){.k = V_UNDEF};
    val tn = arg(a, attr ? 2 : 1, NULL);
    if (attr)
        want(c, x->pos, an, V_STR, "the attribute name");
    for (int i = 0; v.k == V_LIST && i < v.l->n; i++) {
        val it = attr ? attr_path_get(c, v.l->v[i], an) : v.l->v[i];
        int ok;
        if (tn.k == V_UNDEF) {
            ok = truthy(it);
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
            ok = run_test(c, &t, it, NULL);
        }
        if (ok == keep)
            list_push(c, l, v.l->v[i]);
    }
    return (val){.k = V_LIST, .l = l};
}

static val filter(ctx *c, node *x, struct scope *sc)
{
    val v = eval(c, x->a, sc);
    args a = eval_args(c, x, sc, NULL);
    const char *f = x->name;
    int pos = x->pos;
    if (!strcmp(f, "safe"))
        return v;
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        val d = arg(&a, 0, "default_value"), b = arg(&a, 1, "boolean");
        if (v.k == V_UNDEF || (truthy(b) && !truthy(v)))
            return d.k == V_UNDEF ? v_str(c, "", 0) : d;
        return v;
    }
    if (!strcmp(f, "tojson")) {
        val ind = arg(&a, 0, "indent"), sk = arg(&a, 1, "sort_keys");
        buf b = {0};
        put_json(c, &b, v, ind.k == V_INT ? (int)clampi(ind.i, 0, 16) : 0, truthy(sk), 0);
        val r = v_str(c, b.p ? b.p : "", b.n);
        return r;
    }
    if (!strcmp(f, "string"))
        return to_str(c, v);
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        size_t *off;
        if (v.k == V_STR)
            return v_int(cps(c, v, &off));
        if (v.k == V_LIST)
            return v_int(v.l->n);
        if (v.k == V_DICT)
            return v_int(v.d->n);
        fail_at(c, pos, MOE_EINVAL, "length of %s", type_name(v));
    }
    if (!strcmp(f, "int")) {
        if (v.k == V_STR) {
            char *end;
            long long i = strtoll(v.s, &end, 10);
            return end == v.s ? (arg(&a, 0, "default").k == V_INT ? arg(&a, 0, "default") : v_int(0)) : v_int(i);
        }
        return is_num(v) ? v_int((long long)num(v)) : v_int(0);
    }
    if (!strcmp(f, "float")) {
        if (v.k == V_STR)
            return (val){.k = V_FLOAT, .f = strtod(v.s, NULL)};
        return (val){.k = V_FLOAT, .f = is_num(v) ? num(v) : 0};
    }
    if (!strcmp(f, "abs")) {
        if (v.k == V_INT)
            return v_int(v.i < 0 ? -v.i : v.i);
        if (v.k == V_FLOAT)
            return (val){.k = V_FLOAT, .f = fabs(v.f)};
        fail_at(c, pos, MOE_EINVAL, "abs of %s", type_name(v));
    }
    if (!strcmp(f, "items")) {
        if (v.k != V_DICT)
            fail_at(c, pos, MOE_EINVAL, "items of %s", type_name(v));
        struct method m = {v, "items"};
        return call_method(c, pos, &m, &a);
    }
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) {
        if (v.k != V_LIST)
            fail_at(c, pos, MOE_EINVAL, "%s over %s", f, type_name(v));
        args b = a; /* shift so that argument 1 is the attribute/test as for the method form */
        b.pos = ar_alloc(c, (size_t)(a.npos + 1) * sizeof(val));
        b.pos[0] = v;
        memcpy(b.pos + 1, a.pos, (size_t)a.npos * sizeof(val));
        b.npos = a.npos + 1;
        return select_items(c, x, v, &b, strstr(f, "attr") != NULL, f[0] == 's');
    }
    if (!strcmp(f, "map")) {
        val at = arg(&a, 99, "attribute");
        list *l = list_new(c);
        for (int i = 0; v.k == V_LIST && i < v.l->n; i++) {
            if (at.k == V_STR) {
                val it = attr_path_get(c, v.l->v[i], at);
                if (it.k == V_UNDEF && arg(&a, 99, "default").k != V_UNDEF)
                    it = arg(&a, 99, "default");
                list_push(c, l, it);
            } else {
                fail_at(c, pos, MOE_EUNSUPPORTED, "map is supported only with attribute=");
            }
        }
        return (val){.k = V_LIST, .l = l};
    }
    if (!strcmp(f, "list")) {
        if (v.k == V_LIST)
            return v;
        list *l = list_new(c);
        if (v.k == V_DICT)
            for (int i = 0; i < v.d->n; i++)
                list_push(c, l, v.d->key[i]);
        else if (v.k == V_STR)
            for (size_t i = 0; i < v.n; i += (size_t)u8next(v.s, v.n, i))
                list_push(c, l, v_str(c, v.s + i, (size_t)u8next(v.s, v.n, i)));
        else
            fail_at(c, pos, MOE_EINVAL, "list of %s", type_name(v));
        return (val){.k = V_LIST, .l = l};
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (v.k == V_LIST)
            return v.l->n ? v.l->v[f[0] == 'f' ? 0 : v.l->n - 1] : (val){.k = V_UNDEF};
        if (v.k == V_STR)
            return subscript(c, pos, v, v_int(f[0] == 'f' ? 0 : -1));
        fail_at(c, pos, MOE_EINVAL, "%s of %s", f, type_name(v));
    }
    if (!strcmp(f, "reverse")) {
        node sl = {.k = E_SLICE, .pos = pos};
        node step = {.k = E_LIT, .lit = v_int(-1)};
        node *sp = &step;
        sl.l1 = (nlist){.v = &sp, .n = 1};
        return slice(c, &sl, v, sc);
    }
    if (!strcmp(f, "join")) {
        val sep = arg(&a, 0, "d"), at = arg(&a, 1, "attribute");
        if (v.k != V_LIST)
            fail_at(c, pos, MOE_EINVAL, "join of %s", type_name(v));
        val r = v_str(c, "", 0);
        for (int i = 0; i < v.l->n; i++) {
            if (i && sep.k == V_STR)
                r = concat(c, r, sep);
            r = concat(c, r, at.k == V_STR ? attr_path_get(c, v.l->v[i], at) : v.l->v[i]);
        }
        return r;
    }
    if (!strcmp(f, "unique")) {
        list *l = list_new(c);
        for (int i = 0; v.k == V_LIST && i < v.l->n; i++)
            if (!contains(c, pos, v.l->v[i], (val){.k = V_LIST, .l = l}))
                list_push(c, l, v.l->v[i]);
        return (val){.k = V_LIST, .l = l};
    }
    if (v.k == V_STR) {
        if (!strcmp(f, "trim"))
            return arg(&a, 0, "chars").k == V_STR ? str_strip(c, v, &a.pos[0], 3) : str_strip(c, v, NULL, 3);
        if (!strcmp(f, "title")) { /* Jinja's rule: words start after - ( { [ < or whitespace */
            val low = str_map(c, v, 1);
            char *p = ar_alloc(c, low.n + 1);
            memcpy(p, low.s, low.n);
            int start = 1;
            for (size_t i = 0; i < low.n;) {
                size_t l = (size_t)u8next(low.s, low.n, i), w = ws_len(low.s + i, low.n - i, 0);
                int sep = w || strchr("-({[<", low.s[i]) != NULL;
                if (start && !sep) {
                    val up = str_map(c, v_str(c, low.s + i, l), 0);
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
                return str_map(c, v, i);
        if (!strcmp(f, "replace")) {
            struct method m = {v, "replace"};
            return call_method(c, pos, &m, &a);
        }
        if (!strcmp(f, "indent")) {
            val w = arg(&a, 0, "width"), first = arg(&a, 1, "first"), blank = arg(&a, 2, "blank");
            val pad = w.k == V_STR ? w : v_str(c, "    ", (size_t)(w.k == V_INT ? clampi(w.i, 0, 64) : 4));
            if (w.k == V_INT) {
                char *p = ar_alloc(c, pad.n + 1);
                memset(p, ' ', pad.n);
                pad.s = p;
            }
            val r = v_str(c, "", 0);
            size_t i = 0;
            for (int ln = 0; i <= v.n; ln++) {
                const char *nl = memchr(v.s + i, '\n', v.n - i);
                size_t e = nl ? (size_t)(nl - v.s) : v.n;
                if ((ln > 0 || truthy(first)) && (e > i || truthy(blank)))
                    r = concat(c, r, pad);
                r = concat(c, r, v_str(c, v.s + i, e - i + (nl ? 1 : 0)));
                i = e + 1;
                if (!nl)
                    break;
            }
            return r;
        }
    }
    if (v.k == V_UNDEF && (!strcmp(f, "trim") || !strcmp(f, "upper") || !strcmp(f, "lower")))
        return v_str(c, "", 0);
    fail_at(c, pos, MOE_EUNSUPPORTED, "the filter '%s' is not supported for %s", f, type_name(v));
}

static val eval(ctx *c, node *x, struct scope *sc)
{
    enter(c, x->pos);
    val r;
    switch (x->k) {
    case E_LIT: r = x->lit; break;
    case E_NAME: r = lookup(sc, x->name); break;
    case E_ATTR: r = attr(c, eval(c, x->a, sc), x->name); break;
    case E_INDEX: {
        val o = eval(c, x->a, sc);
        val k = eval(c, x->b, sc);
        r = k.k == V_STR && o.k != V_DICT && o.k != V_NS ? attr(c, o, k.s) : subscript(c, x->pos, o, k);
        break;
    }
    case E_SLICE: r = slice(c, x, eval(c, x->a, sc), sc); break;
    case E_CALL: r = call(c, x, sc); break;
    case E_FILTER: r = filter(c, x, sc); break;
    case E_TEST: {
        int t = run_test(c, x, eval(c, x->a, sc), sc);
        r = v_bool(x->negate ? !t : t);
        break;
    }
    case E_BIN: {
        val a = eval(c, x->a, sc);
        r = binop(c, x, a, eval(c, x->b, sc));
        break;
    }
    case E_AND: r = eval(c, x->a, sc); if (truthy(r)) r = eval(c, x->b, sc); break;
    case E_OR: r = eval(c, x->a, sc); if (!truthy(r)) r = eval(c, x->b, sc); break;
    case E_NOT: r = v_bool(!truthy(eval(c, x->a, sc))); break;
    case E_NEG:
    case E_POS: {
        val a = eval(c, x->a, sc);
        if (!is_num(a))
            fail_at(c, x->pos, MOE_EINVAL, "unary %c of %s", x->k == E_NEG ? '-' : '+', type_name(a));
        r = x->k == E_POS ? a : a.k == V_FLOAT ? (val){.k = V_FLOAT, .f = -a.f} : v_int(-a.i);
        break;
    }
    case E_COND:
        r = truthy(eval(c, x->a, sc)) ? eval(c, x->b, sc) : x->c ? eval(c, x->c, sc) : (val){.k = V_UNDEF};
        break;
    case E_LIST: {
        list *l = list_new(c);
        for (int i = 0; i < x->l1.n; i++)
            list_push(c, l, eval(c, x->l1.v[i], sc));
        r = (val){.k = V_LIST, .l = l};
        break;
    }
    default: { /* E_DICT */
        dict *d = ar_alloc(c, sizeof *d);
        for (int i = 0; i < x->l1.n; i++) {
            val k = eval(c, x->l1.v[i], sc);
            if (k.k != V_STR)
                fail_at(c, x->pos, MOE_EUNSUPPORTED, "dict keys other than strings are not supported");
            dict_set(c, d, k, eval(c, x->l2.v[i], sc));
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
        fail_at(c, pos, MOE_EINVAL, "the template ran more than %ld steps", CT_MAX_STEPS);
}

static void exec_for(ctx *c, node *x, struct scope *sc)
{
    val it = eval(c, x->a, sc);
    if (it.k == V_DICT) {
        struct method m = {it, "keys"};
        args none = {.x = x};
        it = call_method(c, x->pos, &m, &none);
    } else if (it.k == V_STR) {
        node lf = {.k = E_FILTER, .pos = x->pos, .name = "list"};
        node lit = {.k = E_LIT, .lit = it};
        lf.a = &lit;
        it = filter(c, &lf, sc);
    } else if (it.k == V_UNDEF || it.k == V_NONE) {
        list *l = list_new(c);
        it = (val){.k = V_LIST, .l = l};
        if (it.k == V_NONE)
            fail_at(c, x->pos, MOE_EINVAL, "cannot loop over none");
    } else if (it.k != V_LIST) {
        fail_at(c, x->pos, MOE_EINVAL, "cannot loop over %s", type_name(it));
    }
    struct scope *ls = ar_alloc(c, sizeof *ls);
    ls->parent = sc;
    list *items = it.l;
    if (x->b) { /* for x in xs if cond: filter first, so loop.length counts what is kept */
        items = list_new(c);
        for (int i = 0; i < it.l->n; i++) {
            step(c, x->pos);
            if (x->nnames == 1)
                assign(c, ls, x->names[0], it.l->v[i]);
            if (truthy(eval(c, x->b, ls)))
                list_push(c, items, it.l->v[i]);
        }
    }
    int n = items->n;
    dict *ld = ar_alloc(c, sizeof *ld); /* one loop object, updated in place */
    for (int i = 0; i < n; i++) {
        step(c, x->pos);
        struct {
            const char *k;
            val v;
        } f[] = {{"index", v_int(i + 1)},
                 {"index0", v_int(i)},
                 {"revindex", v_int(n - i)},
                 {"revindex0", v_int(n - i - 1)},
                 {"first", v_bool(i == 0)},
                 {"last", v_bool(i == n - 1)},
                 {"length", v_int(n)},
                 {"previtem", i > 0 ? items->v[i - 1] : (val){.k = V_UNDEF}},
                 {"nextitem", i < n - 1 ? items->v[i + 1] : (val){.k = V_UNDEF}}};
        for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
            if (i == 0)
                dict_set(c, ld, v_cstr(c, f[k].k), f[k].v);
            else
                ld->v[k] = f[k].v;
        }
        assign(c, ls, "loop", (val){.k = V_DICT, .d = ld});
        val cur = items->v[i];
        if (x->nnames == 1) {
            assign(c, ls, x->names[0], cur);
        } else {
            if (cur.k != V_LIST || cur.l->n != x->nnames)
                fail_at(c, x->pos, MOE_EINVAL, "cannot unpack %s into %d loop variables", type_name(cur), x->nnames);
            for (int k = 0; k < x->nnames; k++)
                assign(c, ls, x->names[k], cur.l->v[k]);
        }
        exec_body(c, &x->l1, ls);
        if (c->brk == 1) {
            c->brk = 0;
            break;
        }
        c->brk = 0;
    }
    if (n == 0)
        exec_body(c, &x->l2, ls);
}

static void exec_body(ctx *c, const nlist *body, struct scope *sc)
{
    enter(c, body->n ? body->v[0]->pos : -1);
    for (int i = 0; i < body->n && !c->brk; i++) {
        node *x = body->v[i];
        step(c, x->pos);
        switch (x->k) {
        case N_TEXT: buf_put(c, &c->out, x->lit.s, x->lit.n); break;
        case N_OUT: put_val(c, &c->out, eval(c, x->a, sc), 0); break;
        case N_IF: exec_body(c, truthy(eval(c, x->a, sc)) ? &x->l1 : &x->l2, sc); break;
        case N_FOR: exec_for(c, x, sc); break;
        case N_SET: {
            val v = eval(c, x->b, sc);
            if (x->a) {
                val ns = eval(c, x->a, sc);
                if (ns.k != V_NS)
                    fail_at(c, x->pos, MOE_EINVAL, "cannot set an attribute of %s (only of a namespace())", type_name(ns));
                dict_set(c, ns.d, v_cstr(c, x->name), v);
            } else if (x->nnames == 1) {
                assign(c, sc, x->names[0], v);
            } else {
                if (v.k != V_LIST || v.l->n != x->nnames)
                    fail_at(c, x->pos, MOE_EINVAL, "cannot unpack %s into %d names", type_name(v), x->nnames);
                for (int k = 0; k < x->nnames; k++)
                    assign(c, sc, x->names[k], v.l->v[k]);
            }
            break;
        }
        case N_SETBLOCK: {
            buf saved = c->out;
            c->out = (buf){0};
            exec_body(c, &x->l1, sc);
            buf mine = c->out;
            c->out = saved;
            assign(c, sc, x->names[0], v_str(c, mine.p ? mine.p : "", mine.n));
            break;
        }
        case N_MACRO: {
            struct macro *mc = ar_alloc(c, sizeof *mc);
            mc->x = x;
            mc->sc = sc;
            assign(c, sc, x->name, (val){.k = V_MACRO, .mac = mc});
            break;
        }
        case N_BREAK: c->brk = 1; break;
        case N_CONTINUE: c->brk = 2; break;
        default: break;
        }
    }
    c->depth--;
}

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
    preprocess(c, tmpl);
    lex(c);
    nlist prog = {0};
    p_body(c, &prog, NULL, 0, NULL);
    c->root = ar_alloc(c, sizeof *c->root);
    static const struct {
        const char *name;
        int fn;
    } fns[] = {{"raise_exception", FN_RAISE}, {"range", FN_RANGE}, {"namespace", FN_NAMESPACE}, {"strftime_now", FN_STRFTIME}};
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++)
        assign(c, c->root, fns[i].name, (val){.k = V_FUNC, .fn = fns[i].fn});
    const cJSON *x;
    cJSON_ArrayForEach(x, context) assign(c, c->root, x->string, from_json(c, x));
    struct scope *top = ar_alloc(c, sizeof *top);
    top->parent = c->root;
    exec_body(c, &prog, top);
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
