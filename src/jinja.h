/* The Jinja subset behind chat templates (see chat_template.c): the
 * values, tokens and tree the lexer, parser and evaluator share, and the
 * calls between them. Engine-private. */
#ifndef MOE_JINJA_H
#define MOE_JINJA_H

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stddef.h>

#include "moescope/moescope.h"

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

/* Evaluated call arguments. */
typedef struct {
    val *pos;
    int npos;
    node *x;
    val *kw;
} args;

/* jinja_value.c */
void *jj_ar_alloc(ctx *c, size_t n);
void *jj_ar_grow(ctx *c, void *old, size_t oldn, size_t newn);
void jj_fail_at(ctx *c, int pos, moe_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5), noreturn));
val jj_v_str(ctx *c, const char *s, size_t n);
void jj_buf_put(ctx *c, buf *b, const char *s, size_t n);
size_t jj_ws_len(const char *s, size_t n, int js);
size_t jj_ws_tail(const char *s, size_t n, int js);
int jj_u8next(const char *s, size_t n, size_t i);
val jj_str_strip(ctx *c, val s, const val *chars, int which);
val jj_str_map(ctx *c, val s, int mode);
list *jj_list_new(ctx *c);
void jj_list_push(ctx *c, list *l, val v);
int jj_dict_find(const dict *d, const char *k, size_t n);
void jj_dict_set(ctx *c, dict *d, val key, val v);
val jj_dict_get(const dict *d, const char *k, size_t n);
val jj_from_json(ctx *c, const cJSON *j);
void jj_put_json(ctx *c, buf *b, val v, int indent, int sort, int depth);
void jj_put_val(ctx *c, buf *b, val v, int depth);
val jj_to_str(ctx *c, val v);
const char *jj_type_name(val v);

/* jinja_parse.c */
void jj_preprocess(ctx *c, const char *s);
void jj_lex(ctx *c);
void jj_enter(ctx *c, int pos);
const char *jj_p_body(ctx *c, nlist *body, const char *const *stops, int open_pos, const char *what);

/* jinja_eval.c */
int jj_truthy(val v);
void jj_assign(ctx *c, struct scope *sc, const char *nm, val v);
int jj_equal(val a, val b, int depth);
int jj_compare(ctx *c, int pos, val a, val b);
int jj_contains(ctx *c, int pos, val item, val in);
val jj_concat(ctx *c, val a, val b);
int jj_cps(ctx *c, val s, size_t **off);
val jj_subscript(ctx *c, int pos, val obj, val key);
val jj_attr(ctx *c, val obj, const char *nm);
val jj_slice(ctx *c, node *x, val obj, struct scope *sc);
val jj_eval(ctx *c, node *x, struct scope *sc);
void jj_exec_body(ctx *c, const nlist *body, struct scope *sc);

/* jinja_builtins.c */
val jj_call_method(ctx *c, int pos, struct method *m, const args *a);
val jj_call(ctx *c, node *x, struct scope *sc);
int jj_run_test(ctx *c, node *x, val v, struct scope *sc);
val jj_filter(ctx *c, node *x, struct scope *sc);

/* small values and numbers */
static inline val jj_v_cstr(ctx *c, const char *s) { return jj_v_str(c, s, strlen(s)); }
static inline val jj_v_int(long long i) { return (val){.k = V_INT, .i = i}; }
static inline val jj_v_bool(int b) { return (val){.k = V_BOOL, .i = b != 0}; }
static inline int jj_is_num(val v) { return v.k == V_INT || v.k == V_FLOAT || v.k == V_BOOL; }
static inline double jj_num(val v) { return v.k == V_FLOAT ? v.f : (double)v.i; }
static inline long long jj_clampi(long long i, long long lo, long long hi) { return i < lo ? lo : i > hi ? hi : i; }

#endif
