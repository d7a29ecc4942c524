/* tokenizer: text <-> token ids from a Hugging Face tokenizer.json. The
 * pipeline is the one the file describes: added tokens are cut out first,
 * each remaining section is normalized, pre-tokenized into words, and each
 * word is merged by BPE (bpe.c). Byte-level vocabularies are converted to
 * raw bytes at load, so encoding never maps bytes to GPT-2 characters. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "config.h"
#include "error.h"
#include "gguf_vocab.h"
#include "tokenizer.h"

/* ---- small helpers ---------------------------------------------------- */

typedef struct {
    int32_t *v;
    int n, cap;
} idvec;

static int idvec_push(idvec *a, int32_t id)
{
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 256;
        int32_t *p = realloc(a->v, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *k, int dflt)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(x) ? cJSON_IsTrue(x) : dflt;
}

/* GPT-2's byte <-> character table: printable bytes stand for themselves,
 * the others for U+0100 upwards in byte order. */
static int bl_char[256];    /* byte -> code point */
static int bl_byte[324];    /* code point -> byte, -1 */

static void bl_tables_fill(void)
{
    int n = 0;
    for (int c = 0; c < 324; c++)
        bl_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        bl_char[b] = keep ? b : 256 + n++;
        bl_byte[bl_char[b]] = b;
    }
}

void tokenizer_tables(void)
{
    static int ready;
    if (!ready) { /* idempotent: racing threads write the same values */
        bl_tables_fill();
        ready = 1;
    }
}

/* Byte-level characters to raw bytes; out holds at least n bytes. Returns
 * the length, or -1 when s holds a character outside the table. */
long tokenizer_bl_to_raw(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0 || cp >= 324 || bl_byte[cp] < 0)
            return -1;
        out[k++] = (char)bl_byte[cp];
        i += (size_t)l;
    }
    return (long)k;
}

/* Length of the UTF-8 character at s (1 for a byte that starts none). */
static size_t u8len(const char *s, size_t n)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    return l > 0 ? (size_t)l : 1;
}

pcre2_code *tokenizer_re_compile(const char *pat, int literal, const char *path, moe_error *err)
{
    int ec;
    PCRE2_SIZE eo;
    uint32_t opt = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opt, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        moe_fail(err, MOE_EUNSUPPORTED, "%s: pattern /%.80s/ does not compile at offset %zu: %s", path, pat,
                 (size_t)eo, (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return re;
}

/* A {"String": s} or {"Regex": r} pattern. */
static pcre2_code *pattern(const cJSON *o, const char *path, moe_error *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s;
    if ((s = jstr(p, "String")))
        return tokenizer_re_compile(s, 1, path, err);
    if ((s = jstr(p, "Regex")))
        return tokenizer_re_compile(s, 0, path, err);
    moe_fail(err, MOE_EFORMAT, "%s: a %s step has no String or Regex pattern", path, jstr(o, "type"));
    return NULL;
}

/* ---- reading the pipeline --------------------------------------------- */

/* Flatten o (a step or a Sequence of them under key `list`) into *steps. */
static int read_steps(const cJSON *o, const char *list, step **steps, int *n, const char *what,
                      int (*one)(const cJSON *, step *, const char *, moe_error *), const char *path,
                      moe_error *err)
{
    if (!o || cJSON_IsNull(o))
        return 0;
    const char *type = jstr(o, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(o, list))
        {
            if (read_steps(x, list, steps, n, what, one, path, err))
                return -1;
        }
        return 0;
    }
    step *p = realloc(*steps, (size_t)(*n + 1) * sizeof *p);
    if (!p)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory", path), -1;
    *steps = p;
    memset(&p[*n], 0, sizeof p[*n]);
    if (!type)
        return moe_fail(err, MOE_EFORMAT, "%s: a %s without a type", path, what), -1;
    if (one(o, &p[*n], path, err))
        return -1;
    (*n)++;
    return 0;
}

static int read_norm(const cJSON *o, step *s, const char *path, moe_error *err)
{
    const char *t = jstr(o, "type");
    static const char *names[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int i = 0; i < 4; i++)
        if (strcmp(t, names[i]) == 0)
            return s->kind = NORM_NFC + i, 0;
    if (strcmp(t, "Prepend") == 0 && jstr(o, "prepend")) {
        s->kind = NORM_PREPEND;
        return str_set(&s->a, jstr(o, "prepend"), strlen(jstr(o, "prepend")));
    }
    if (strcmp(t, "Replace") == 0 && jstr(o, "content")) {
        s->kind = NORM_REPLACE;
        s->re = pattern(o, path, err);
        return s->re ? str_set(&s->b, jstr(o, "content"), strlen(jstr(o, "content"))) : -1;
    }
    if (strcmp(t, "Lowercase") == 0)
        return s->kind = NORM_LOWER, 0;
    if (strcmp(t, "Strip") == 0) {
        s->kind = NORM_STRIP;
        s->start = jbool(o, "strip_left", 1);
        s->stop = jbool(o, "strip_right", 1);
        return 0;
    }
    moe_fail(err, MOE_EUNSUPPORTED, "%s: normalizer \"%.40s\" is not supported", path, t);
    return -1;
}

static int prepend_scheme(const cJSON *o)
{
    const char *ps = jstr(o, "prepend_scheme");
    if (ps)
        return strcmp(ps, "always") == 0 ? 2 : strcmp(ps, "first") == 0 ? 1 : 0;
    return jbool(o, "add_prefix_space", 1) ? 2 : 0;
}

static int read_pre(const cJSON *o, step *s, const char *path, moe_error *err)
{
    const char *t = jstr(o, "type");
    if (strcmp(t, "Split") == 0) {
        const char *b = jstr(o, "behavior");
        s->kind = PRE_SPLIT;
        s->invert = jbool(o, "invert", 0);
        if (!b || strcmp(b, "Isolated") == 0)
            s->split = SPLIT_ISOLATED;
        else if (strcmp(b, "Removed") == 0)
            s->split = SPLIT_REMOVED;
        else if (strcmp(b, "MergedWithPrevious") == 0)
            s->split = SPLIT_WITH_PREV;
        else if (strcmp(b, "MergedWithNext") == 0)
            s->split = SPLIT_WITH_NEXT;
        else
            return moe_fail(err, MOE_EUNSUPPORTED, "%s: Split behavior \"%.40s\" is not supported", path, b), -1;
        return (s->re = pattern(o, path, err)) ? 0 : -1;
    }
    if (strcmp(t, "ByteLevel") == 0) {
        s->kind = PRE_BYTELEVEL;
        s->prefix_space = jbool(o, "add_prefix_space", 0);
        if (jbool(o, "use_regex", 1) && !(s->re = tokenizer_re_compile(TOKENIZER_GPT2_PATTERN, 0, path, err)))
            return -1;
        return 0;
    }
    if (strcmp(t, "Metaspace") == 0) {
        const char *r = jstr(o, "replacement");
        s->kind = PRE_METASPACE;
        s->prepend = prepend_scheme(o);
        s->split = jbool(o, "split", 1);
        return str_set(&s->a, r ? r : "\xe2\x96\x81", strlen(r ? r : "\xe2\x96\x81"));
    }
    moe_fail(err, MOE_EUNSUPPORTED, "%s: pre-tokenizer \"%.40s\" is not supported", path, t);
    return -1;
}

static int read_dec(const cJSON *o, step *s, const char *path, moe_error *err)
{
    const char *t = jstr(o, "type");
    if (strcmp(t, "ByteLevel") == 0)
        return s->kind = DEC_BYTELEVEL, 0;
    if (strcmp(t, "ByteFallback") == 0)
        return s->kind = DEC_BYTEFALLBACK, 0;
    if (strcmp(t, "Fuse") == 0)
        return s->kind = DEC_FUSE, 0;
    if (strcmp(t, "Strip") == 0 && jstr(o, "content")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "start"), *b = cJSON_GetObjectItemCaseSensitive(o, "stop");
        s->kind = DEC_STRIP;
        s->start = cJSON_IsNumber(a) ? a->valueint : 0;
        s->stop = cJSON_IsNumber(b) ? b->valueint : 0;
        return str_set(&s->a, jstr(o, "content"), strlen(jstr(o, "content")));
    }
    if (strcmp(t, "Replace") == 0 && jstr(o, "content")) {
        s->kind = DEC_REPLACE;
        s->re = pattern(o, path, err);
        return s->re ? str_set(&s->b, jstr(o, "content"), strlen(jstr(o, "content"))) : -1;
    }
    if (strcmp(t, "Metaspace") == 0) {
        const char *r = jstr(o, "replacement");
        s->kind = DEC_METASPACE;
        s->prepend = prepend_scheme(o);
        return str_set(&s->a, r ? r : "\xe2\x96\x81", strlen(r ? r : "\xe2\x96\x81"));
    }
    moe_fail(err, MOE_EUNSUPPORTED, "%s: decoder \"%.40s\" is not supported", path, t);
    return -1;
}

static void free_steps(step *s, int n)
{
    for (int i = 0; i < n; i++) {
        pcre2_code_free(s[i].re);
        free(s[i].a.s);
        free(s[i].b.s);
    }
    free(s);
}

/* ---- text buffers ------------------------------------------------------ */

/* Words after pre-tokenization: spans of one buffer. */
typedef struct {
    buf text;
    size_t *off, *len;
    int n, cap;
} words;

static int words_add(words *w, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        size_t *o = realloc(w->off, (size_t)cap * sizeof *o);
        if (!o)
            return -1;
        w->off = o;
        size_t *l = realloc(w->len, (size_t)cap * sizeof *l);
        if (!l)
            return -1;
        w->len = l;
        w->cap = cap;
    }
    w->off[w->n] = w->text.n;
    w->len[w->n++] = n;
    return buf_add(&w->text, s, n);
}

static void words_free(words *w)
{
    free(w->text.s);
    free(w->off);
    free(w->len);
}

/* Append s to out with every match of re replaced by `to`. */
int tokenizer_replace(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, const str *to, buf *out)
{
    size_t at = 0;
    while (at <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (buf_add(out, s + at, ov[0] - at) || buf_add(out, to->s, to->n))
            return -1;
        at = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
        if (ov[1] == ov[0] && ov[0] < n && buf_add(out, s + ov[0], 1))
            return -1;
    }
    return at < n ? buf_add(out, s + at, n - at) : 0;
}

/* ---- encoding ---------------------------------------------------------- */

static int normalize(const moe_tokenizer *t, pcre2_match_data *md, const char *s, size_t n, buf *out)
{
    if (buf_add(out, s, n))
        return -1;
    for (int i = 0; i < t->n_norm; i++) {
        const step *st = &t->norm[i];
        buf nb = {0};
        int rc = 0;
        switch (st->kind) {
        case NORM_NFC:
        case NORM_NFD:
        case NORM_NFKC:
        case NORM_NFKD: {
            static const int opts[] = {UTF8PROC_COMPOSE, UTF8PROC_DECOMPOSE, UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                                       UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
            utf8proc_uint8_t *d = NULL;
            utf8proc_ssize_t l = utf8proc_map((const utf8proc_uint8_t *)out->s, (utf8proc_ssize_t)out->n, &d,
                                              UTF8PROC_STABLE | opts[st->kind - NORM_NFC]);
            if (l < 0) { /* invalid UTF-8 or a NUL byte: left as it is */
                free(d);
                continue;
            }
            rc = buf_add(&nb, (char *)d, (size_t)l);
            free(d);
            break;
        }
        case NORM_PREPEND:
            if (out->n == 0)
                continue;
            rc = buf_add(&nb, st->a.s, st->a.n) || buf_add(&nb, out->s, out->n);
            break;
        case NORM_REPLACE:
            rc = tokenizer_replace(st->re, md, out->s, out->n, &st->b, &nb);
            break;
        case NORM_LOWER:
            for (size_t k = 0; k < out->n && !rc;) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t l = utf8proc_iterate((utf8proc_uint8_t *)out->s + k, (utf8proc_ssize_t)(out->n - k), &cp);
                if (l <= 0) {
                    rc = buf_add(&nb, out->s + k++, 1);
                    continue;
                }
                utf8proc_uint8_t e[4];
                utf8proc_ssize_t el = utf8proc_encode_char(utf8proc_tolower(cp), e);
                rc = buf_add(&nb, (char *)e, (size_t)el);
                k += (size_t)l;
            }
            break;
        case NORM_STRIP: {
            size_t a = 0, b = out->n;
            while (st->start && a < b && isspace((unsigned char)out->s[a]))
                a++;
            while (st->stop && b > a && isspace((unsigned char)out->s[b - 1]))
                b--;
            rc = buf_add(&nb, out->s + a, b - a);
            break;
        }
        }
        if (rc) {
            free(nb.s);
            return -1;
        }
        free(out->s);
        *out = nb;
        if (!out->s && buf_add(out, "", 0))
            return -1;
    }
    return 0;
}

/* Split s by re into `out` as HF's Split pre-tokenizer does. */
static int split(const pcre2_code *re, pcre2_match_data *md, int behaviour, int invert, const char *s, size_t n,
                 words *out)
{
    size_t at = 0, pend = 0; /* pend: start of a piece not yet emitted */
    while (at < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match splits nothing */
            at = ms + u8len(s + ms, n - ms);
            continue;
        }
        size_t gs = at; /* the gap before the match: [gs, ms) */
        if (invert) {
            /* matches are the words; gaps the delimiters, kept Isolated */
            if (words_add(out, s + gs, ms - gs) || words_add(out, s + ms, me - ms))
                return -1;
        } else if (behaviour == SPLIT_ISOLATED) {
            if (words_add(out, s + gs, ms - gs) || words_add(out, s + ms, me - ms))
                return -1;
        } else if (behaviour == SPLIT_REMOVED) {
            if (words_add(out, s + gs, ms - gs))
                return -1;
        } else if (behaviour == SPLIT_WITH_PREV) {
            if (words_add(out, s + pend, me - pend))
                return -1;
        } else { /* SPLIT_WITH_NEXT */
            if (words_add(out, s + pend, ms - pend))
                return -1;
        }
        pend = behaviour == SPLIT_WITH_NEXT ? ms : me;
        at = me;
    }
    if (behaviour == SPLIT_WITH_PREV || behaviour == SPLIT_WITH_NEXT)
        return words_add(out, s + pend, n - pend);
    return words_add(out, s + at, n - at);
}

static int pretokenize(const moe_tokenizer *t, pcre2_match_data *md, const char *s, size_t n, int first,
                       words *out)
{
    words cur = {0};
    if (words_add(&cur, s, n))
        return words_free(&cur), -1;
    for (int i = 0; i < t->n_pre; i++) {
        const step *st = &t->pre[i];
        words nx = {0};
        int rc = 0;
        for (int w = 0; w < cur.n && !rc; w++) {
            const char *ws = cur.text.s + cur.off[w];
            size_t wn = cur.len[w];
            if (st->kind == PRE_SPLIT) {
                rc = split(st->re, md, st->split, st->invert, ws, wn, &nx);
            } else if (st->kind == PRE_BYTELEVEL) {
                buf b = {0};
                if (st->prefix_space && ws[0] != ' ')
                    rc = buf_add(&b, " ", 1);
                rc = rc || buf_add(&b, ws, wn);
                if (!rc)
                    rc = st->re ? split(st->re, md, SPLIT_ISOLATED, 0, b.s, b.n, &nx) : words_add(&nx, b.s, b.n);
                free(b.s);
            } else { /* PRE_METASPACE */
                buf b = {0};
                int pre = st->prepend == 2 || (st->prepend == 1 && first && w == 0);
                if (pre && !(wn >= st->a.n && memcmp(ws, st->a.s, st->a.n) == 0))
                    rc = buf_add(&b, st->a.s, st->a.n);
                for (size_t k = 0; k < wn && !rc; k++)
                    rc = ws[k] == ' ' ? buf_add(&b, st->a.s, st->a.n) : buf_add(&b, ws + k, 1);
                if (!rc && st->split) {
                    /* split before every replacement character */
                    size_t p = 0;
                    for (size_t k = 1; k + st->a.n <= b.n && !rc; k++)
                        if (memcmp(b.s + k, st->a.s, st->a.n) == 0) {
                            rc = words_add(&nx, b.s + p, k - p);
                            p = k;
                        }
                    rc = rc || words_add(&nx, b.s + p, b.n - p);
                } else if (!rc) {
                    rc = words_add(&nx, b.s, b.n);
                }
                free(b.s);
            }
        }
        words_free(&cur);
        cur = nx;
        if (rc)
            return words_free(&cur), -1;
    }
    *out = cur;
    return 0;
}

/* BPE one word into out. syms is scratch the caller keeps between words. */
static int encode_word(const moe_tokenizer *t, const char *w, size_t n, idvec *out, idvec *syms)
{
    int id;
    if (t->ignore_merges && (id = bpe_find(&t->v, w, n)) >= 0)
        return idvec_push(out, id);
    syms->n = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            id = t->byte_id[(unsigned char)w[i]];
            if (id < 0)
                id = t->unk;
            if (id >= 0 && idvec_push(syms, id))
                return -1;
        }
    } else {
        int last_unk = 0;
        for (size_t i = 0; i < n;) {
            size_t l = u8len(w + i, n - i);
            id = bpe_find(&t->v, w + i, l);
            int fb = id < 0 && t->byte_fallback;
            for (size_t k = 0; fb && k < l; k++)
                fb = t->byte_id[(unsigned char)w[i + k]] >= 0;
            if (id >= 0) {
                last_unk = 0;
                if (idvec_push(syms, id))
                    return -1;
            } else if (fb) {
                last_unk = 0;
                for (size_t k = 0; k < l; k++)
                    if (idvec_push(syms, t->byte_id[(unsigned char)w[i + k]]))
                        return -1;
            } else if (t->unk >= 0 && !(t->fuse_unk && last_unk)) {
                last_unk = 1;
                if (idvec_push(syms, t->unk))
                    return -1;
            }
            i += l;
        }
    }
    int k = bpe_merge(&t->v, syms->v, syms->n);
    if (k < 0)
        return -1;
    for (int i = 0; i < k; i++)
        if (idvec_push(out, syms->v[i]))
            return -1;
    return 0;
}

static int encode_section(const moe_tokenizer *t, pcre2_match_data *md, const char *s, size_t n, int first,
                          idvec *out, idvec *syms)
{
    buf nb = {0};
    words w = {0};
    int rc = normalize(t, md, s, n, &nb);
    if (!rc && nb.n > 0)
        rc = pretokenize(t, md, nb.s, nb.n, first, &w);
    for (int i = 0; i < w.n && !rc; i++)
        rc = encode_word(t, w.text.s + w.off[i], w.len[i], out, syms);
    free(nb.s);
    words_free(&w);
    return rc;
}

static int is_word_byte(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

/* The first added token in s[from..n): sets [*ms, *me) and returns its
 * index, or -1. Longest first among tokens starting at the same byte. */
static int find_added(const moe_tokenizer *t, const char *s, size_t n, size_t from, size_t *ms, size_t *me)
{
    for (size_t i = from; i < n; i++)
        for (int a = 0; t->added_first[(unsigned char)s[i]] && a < t->n_added; a++) {
            const added_tok *x = &t->added[a];
            if (x->s.s[0] != s[i] || x->s.n > n - i || memcmp(s + i, x->s.s, x->s.n) != 0)
                continue;
            size_t e = i + x->s.n, b = i;
            if (x->single_word && ((b > 0 && is_word_byte((unsigned char)s[b - 1])) ||
                                   (e < n && is_word_byte((unsigned char)s[e]))))
                continue;
            while (x->lstrip && b > from && isspace((unsigned char)s[b - 1]))
                b--;
            while (x->rstrip && e < n && isspace((unsigned char)s[e]))
                e++;
            *ms = b;
            *me = e;
            return a;
        }
    return -1;
}

moe_status moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int add_special,
                                int32_t **ids, int *n, moe_error *err)
{
    *ids = NULL;
    *n = 0;
    if (len > (size_t)1 << 30)
        return moe_fail(err, MOE_EINVAL, "text of %zu bytes is larger than the 1 GiB a tokenizer takes", len);
    idvec out = {0}, syms = {0};
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    int rc = !md;
    for (int i = 0; add_special && i < t->n_prefix && !rc; i++)
        rc = idvec_push(&out, t->prefix[i]);
    size_t at = 0;
    int section = 0;
    while (at < len && !rc) {
        size_t ms = len, me = len;
        int a = t->n_added ? find_added(t, text, len, at, &ms, &me) : -1;
        if (ms > at)
            rc = encode_section(t, md, text + at, ms - at, section++ == 0, &out, &syms);
        if (a >= 0 && !rc) {
            rc = idvec_push(&out, t->added[a].id);
            section++;
        }
        at = me;
    }
    for (int i = 0; add_special && i < t->n_suffix && !rc; i++)
        rc = idvec_push(&out, t->suffix[i]);
    pcre2_match_data_free(md);
    free(syms.v);
    if (rc) {
        free(out.v);
        return moe_fail(err, MOE_ENOMEM, "out of memory encoding %zu bytes", len);
    }
    if (!out.v)
        out.v = malloc(sizeof *out.v); /* a valid pointer for zero ids */
    if (!out.v)
        return moe_fail(err, MOE_ENOMEM, "out of memory");
    *ids = out.v;
    *n = out.n;
    return MOE_OK;
}

/* ---- loading ----------------------------------------------------------- */

void moe_tokenizer_free(moe_tokenizer *t)
{
    if (!t)
        return;
    if (t->shown)
        for (int i = 0; i < t->n_ids; i++)
            free(t->shown[i].s);
    free(t->shown);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].s.s);
    free(t->added);
    free(t->added_of);
    free_steps(t->norm, t->n_norm);
    free_steps(t->pre, t->n_pre);
    free_steps(t->dec, t->n_dec);
    free(t->prefix);
    free(t->suffix);
    free(t->eog);
    bpe_done(&t->v);
    free(t);
}

static int added_cmp(const void *a, const void *b)
{
    const added_tok *x = a, *y = b;
    if (x->s.n != y->s.n)
        return x->s.n < y->s.n ? 1 : -1;
    return x->id - y->id;
}

int tokenizer_index_added(moe_tokenizer *t)
{
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, added_cmp);
    for (int i = 0; i < t->n_added; i++)
        t->added_first[(unsigned char)t->added[i].s.s[0]] = 1;
    t->added_of = malloc((size_t)(t->n_ids ? t->n_ids : 1) * sizeof *t->added_of);
    if (!t->added_of)
        return -1;
    for (int i = 0; i < t->n_ids; i++)
        t->added_of[i] = -1;
    for (int i = 0; i < t->n_added; i++)
        t->added_of[t->added[i].id] = i;
    return 0;
}

int tokenizer_show_pieces(moe_tokenizer *t)
{
    if (t->byte_level)
        return 0;
    /* SentencePiece pieces as text: what the decoders make of each alone */
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    if (!md || !(t->shown = calloc((size_t)t->n_ids, sizeof *t->shown))) {
        pcre2_match_data_free(md);
        return -1;
    }
    for (int i = 0; i < t->n_ids; i++) {
        if (t->v.len[i] < 0 || t->added_of[i] >= 0)
            continue;
        str s;
        if (str_set(&s, t->v.pool + t->v.off[i], (size_t)t->v.len[i]) ||
            (t->shown[i] = s, tokenizer_decode_chain(t, md, &t->shown[i], 1, 1) < 0)) {
            pcre2_match_data_free(md);
            return -1;
        }
    }
    pcre2_match_data_free(md);
    return 0;
}

/* A piece as the file spells it, converted to raw bytes when byte-level.
 * tmp holds at least strlen(s) bytes. */
static size_t raw_piece(const moe_tokenizer *t, const char *s, char *tmp, const char **out)
{
    size_t n = strlen(s);
    long r = t->byte_level ? tokenizer_bl_to_raw(s, n, tmp) : -1;
    *out = r >= 0 ? tmp : s;
    return r >= 0 ? (size_t)r : n;
}

/* The id of a token named in a config file: an added token or a piece. */
static int token_id(const moe_tokenizer *t, const char *s)
{
    for (int i = 0; s && i < t->n_added; i++)
        if (strcmp(t->added[i].s.s, s) == 0)
            return t->added[i].id;
    if (!s)
        return -1;
    char *tmp = malloc(strlen(s) + 1);
    if (!tmp)
        return -1;
    const char *r;
    size_t n = raw_piece(t, s, tmp, &r);
    int id = bpe_find(&t->v, r, n);
    free(tmp);
    return id;
}

/* "bos_token": "<s>" or {"content": "<s>", ...} */
static const char *config_token(const cJSON *cfg, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsString(x) ? x->valuestring : jstr(x, "content");
}

static int read_model(moe_tokenizer *t, const cJSON *model, const char *path, moe_error *err)
{
    const char *type = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && strcmp(type, "BPE") != 0)
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: model type \"%.40s\" is not supported (only BPE)", path, type), -1;
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return moe_fail(err, MOE_EFORMAT, "%s: model has no vocab object or merges array", path), -1;
    const char *pre = jstr(model, "continuing_subword_prefix"), *suf = jstr(model, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: BPE subword prefixes/suffixes are not supported", path), -1;
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);

    const cJSON *x;
    cJSON_ArrayForEach(x, vocab)
    {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= (1 << 24))
            return moe_fail(err, MOE_EFORMAT, "%s: vocab entry \"%.40s\" has no id in 0..2^24", path, x->string), -1;
        if (x->valueint >= t->n_ids)
            t->n_ids = x->valueint + 1;
    }
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    if (bpe_init(&t->v, t->n_ids, n_merges))
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for %d pieces", path, t->n_ids), -1;
    char tmp[1024];
    cJSON_ArrayForEach(x, vocab)
    {
        const char *r;
        if (strlen(x->string) >= sizeof tmp)
            return moe_fail(err, MOE_EFORMAT, "%s: vocab piece of %zu bytes is too long", path, strlen(x->string)), -1;
        size_t n = raw_piece(t, x->string, tmp, &r);
        if (bpe_set(&t->v, x->valueint, r, n))
            return moe_fail(err, MOE_ENOMEM, "%s: out of memory", path), -1;
    }
    uint32_t rank = 0;
    cJSON_ArrayForEach(x, merges)
    {
        char a[512], b[512];
        const char *sp;
        if (cJSON_IsString(x) && (sp = strchr(x->valuestring, ' ')) && (size_t)(sp - x->valuestring) < sizeof a &&
            strlen(sp + 1) < sizeof b && !strchr(sp + 1, ' ')) {
            memcpy(a, x->valuestring, (size_t)(sp - x->valuestring));
            a[sp - x->valuestring] = 0;
            strcpy(b, sp + 1);
        } else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 && cJSON_IsString(x->child) &&
                   cJSON_IsString(x->child->next) && strlen(x->child->valuestring) < sizeof a &&
                   strlen(x->child->next->valuestring) < sizeof b) {
            strcpy(a, x->child->valuestring);
            strcpy(b, x->child->next->valuestring);
        } else {
            return moe_fail(err, MOE_EFORMAT, "%s: merge #%u is neither \"a b\" nor [\"a\", \"b\"]", path, rank), -1;
        }
        char ra[1024];
        const char *pa, *pb;
        size_t na = raw_piece(t, a, tmp, &pa);
        memcpy(ra, pa, na);
        size_t nb = raw_piece(t, b, ra + na, &pb);
        if (pb != ra + na)
            memcpy(ra + na, pb, nb);
        int ia = bpe_find(&t->v, ra, na), ib = bpe_find(&t->v, ra + na, nb), ir = bpe_find(&t->v, ra, na + nb);
        if (ia < 0 || ib < 0 || ir < 0)
            return moe_fail(err, MOE_EFORMAT, "%s: merge #%u (\"%.40s\" \"%.40s\") names a piece not in the vocab",
                            path, rank, a, b), -1;
        bpe_add_merge(&t->v, ia, ib, rank++, ir);
    }
    const char *unk = jstr(model, "unk_token");
    t->unk = unk ? bpe_find(&t->v, unk, strlen(unk)) : -1;
    for (int c = 0; c < 256; c++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", c);
        name[0] = (char)c;
        t->byte_id[c] = t->byte_level ? bpe_find(&t->v, name, 1)
                        : t->byte_fallback ? (snprintf(name, sizeof name, "<0x%02X>", c), bpe_find(&t->v, name, 6))
                                           : -1;
    }
    return 0;
}

static int read_added(moe_tokenizer *t, const cJSON *list, const char *path, moe_error *err)
{
    int n = cJSON_GetArraySize(list);
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory", path), -1;
    const cJSON *x;
    cJSON_ArrayForEach(x, list)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "id");
        const char *c = jstr(x, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) || !c || !*c)
            return moe_fail(err, MOE_EFORMAT, "%s: added token #%d needs an id and a non-empty content", path,
                            t->n_added), -1;
        added_tok *a = &t->added[t->n_added++];
        a->id = id->valueint;
        a->special = jbool(x, "special", 0);
        a->lstrip = jbool(x, "lstrip", 0);
        a->rstrip = jbool(x, "rstrip", 0);
        a->single_word = jbool(x, "single_word", 0);
        if (str_set(&a->s, c, strlen(c)))
            return moe_fail(err, MOE_ENOMEM, "%s: out of memory", path), -1;
    }
    return 0;
}

/* Ids the TemplateProcessing "single" template puts around the text. */
static int read_post(moe_tokenizer *t, const cJSON *pp, const char *path, moe_error *err)
{
    const char *type = jstr(pp, "type");
    if (!type)
        return 0;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(pp, "processors"))
        {
            if (read_post(t, x, path, err))
                return -1;
        }
        return 0;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return 0; /* ByteLevel and the like add no tokens */
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"), *x;
    int after = 0;
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(pp, "single"))
    {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(x, "SpecialToken");
        if (!sp) {
            after = 1;
            continue;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(specials, jstr(sp, "id") ? jstr(sp, "id") : "");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids"), *i;
        if (!cJSON_IsArray(ids))
            return moe_fail(err, MOE_EFORMAT, "%s: post_processor names special token \"%.40s\" without ids", path,
                            jstr(sp, "id")), -1;
        cJSON_ArrayForEach(i, ids)
        {
            int32_t **v = after ? &t->suffix : &t->prefix;
            int *n = after ? &t->n_suffix : &t->n_prefix;
            int32_t *p = realloc(*v, (size_t)(*n + 1) * sizeof *p);
            if (!p)
                return moe_fail(err, MOE_ENOMEM, "%s: out of memory", path), -1;
            if (!cJSON_IsNumber(i) || i->valueint < 0 || i->valueint >= t->n_ids)
                return free(p), moe_fail(err, MOE_EFORMAT, "%s: post_processor id out of range", path), -1;
            p[(*n)++] = i->valueint;
            *v = p;
        }
    }
    return 0;
}

static int has_step(const step *s, int n, int kind)
{
    for (int i = 0; i < n; i++)
        if (s[i].kind == kind)
            return 1;
    return 0;
}

moe_status moe_tokenizer_open(const char *path, moe_tokenizer **out, moe_error *err)
{
    *out = NULL;
    if (gguf_vocab_is_gguf(path))
        return gguf_vocab_open(path, out, err);
    char json[4096], cfgpath[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(json, sizeof json, "%s/tokenizer.json", path);
        snprintf(cfgpath, sizeof cfgpath, "%s/tokenizer_config.json", path);
    } else {
        snprintf(json, sizeof json, "%s", path);
        const char *slash = strrchr(path, '/');
        snprintf(cfgpath, sizeof cfgpath, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
    }
    tokenizer_tables();
    cJSON *root = NULL, *cfg = NULL;
    moe_status st = json_read_file(json, (size_t)512 << 20, &root, err);
    if (st)
        return st;
    moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory", json);
    }
    moe_error cerr;
    if (stat(cfgpath, &sb) == 0 && json_read_file(cfgpath, 16u << 20, &cfg, &cerr) != MOE_OK) {
        st = moe_fail(err, cerr.code, "%s", cerr.msg);
        goto fail;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (read_steps(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizers", &t->norm, &t->n_norm,
                   "normalizer", read_norm, json, err) ||
        read_steps(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pretokenizers", &t->pre, &t->n_pre,
                   "pre-tokenizer", read_pre, json, err) ||
        read_steps(cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoders", &t->dec, &t->n_dec, "decoder",
                   read_dec, json, err))
        goto fail_code;
    t->byte_level = has_step(t->pre, t->n_pre, PRE_BYTELEVEL) || has_step(t->dec, t->n_dec, DEC_BYTELEVEL);
    const cJSON *x;
    cJSON_ArrayForEach(x, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "id");
        if (cJSON_IsNumber(id) && id->valueint >= t->n_ids && id->valuedouble < (1 << 24))
            t->n_ids = id->valueint + 1;
    }
    if (read_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), json, err) ||
        read_added(t, added, json, err) ||
        read_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), json, err))
        goto fail_code;
    if (tokenizer_index_added(t))
        goto fail_nomem;
    t->bos = token_id(t, config_token(cfg, "bos_token"));
    t->eos = token_id(t, config_token(cfg, "eos_token"));
    /* here only EOS ends generation, as in transformers, where the model's
     * eos_token_id does; markers such as <|im_end|> stop a chat turn
     * through the template (moe_chat_stop_strings) */
    if (t->eos >= 0 && !(t->eog = malloc(sizeof *t->eog)))
        goto fail_nomem;
    if (t->eog)
        t->eog[t->n_eog++] = t->eos;
    if (!cJSON_GetObjectItemCaseSensitive(root, "post_processor") ||
        cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "post_processor"))) {
        /* no post-processor: tokenizer_config.json says what to add */
        if (jbool(cfg, "add_bos_token", 0) && t->bos >= 0 && !(t->prefix = malloc(sizeof *t->prefix)))
            goto fail_nomem;
        if (t->prefix)
            t->prefix[t->n_prefix++] = t->bos;
        if (jbool(cfg, "add_eos_token", 0) && t->eos >= 0 && !(t->suffix = malloc(sizeof *t->suffix)))
            goto fail_nomem;
        if (t->suffix)
            t->suffix[t->n_suffix++] = t->eos;
    }
    if (tokenizer_show_pieces(t))
        goto fail_nomem;
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    *out = t;
    return MOE_OK;
fail_nomem:
    st = moe_fail(err, MOE_ENOMEM, "%s: out of memory", json);
    goto fail;
fail_code:
    st = err ? err->code : MOE_EFORMAT;
    if (!st)
        st = MOE_EFORMAT;
fail:
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    moe_tokenizer_free(t);
    return st;
}

int moe_tokenizer_present(const char *path)
{
    struct stat sb;
    char json[4096];
    if (stat(path, &sb) != 0)
        return 0;
    if (S_ISDIR(sb.st_mode)) {
        snprintf(json, sizeof json, "%s/tokenizer.json", path);
        return access(json, R_OK) == 0;
    }
    if (gguf_vocab_is_gguf(path))
        return gguf_vocab_present(path);
    return S_ISREG(sb.st_mode) && access(path, R_OK) == 0;
}

/* ---- accessors ----------------------------------------------------------- */

int moe_tokenizer_vocab_size(const moe_tokenizer *t)
{
    return t->n_ids;
}

const char *moe_tokenizer_piece(const moe_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids)
        return NULL;
    int a = t->added_of[id];
    if (a >= 0) {
        *len = t->added[a].s.n;
        return t->added[a].s.s;
    }
    if (t->shown && t->shown[id].s) {
        *len = t->shown[id].n;
        return t->shown[id].s;
    }
    if (t->v.len[id] < 0)
        return NULL;
    *len = (size_t)t->v.len[id];
    return t->v.pool + t->v.off[id];
}

int moe_tokenizer_is_special(const moe_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && t->added_of[id] >= 0 && t->added[t->added_of[id]].special;
}

int32_t moe_tokenizer_bos(const moe_tokenizer *t)
{
    return t->bos;
}

int32_t moe_tokenizer_eos(const moe_tokenizer *t)
{
    return t->eos;
}

int moe_tokenizer_is_eog(const moe_tokenizer *t, int32_t id)
{
    int lo = 0, hi = t->n_eog;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (t->eog[mid] == id)
            return 1;
        if (t->eog[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int moe_tokenizer_eog(const moe_tokenizer *t, const int32_t **ids)
{
    *ids = t->eog;
    return t->n_eog;
}

