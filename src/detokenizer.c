/* detokenizer: token ids back to text through the decoders a
 * tokenizer.json names, whole (moe_tokenizer_decode) or streamed one id at
 * a time for generation (moe_detokenizer). */
#include "error.h"
#include "tokenizer.h"

/* ---- decoding ---------------------------------------------------------- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The byte a "<0xNN>" token stands for, or -1. */
static int fallback_byte(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || hexval(s[3]) < 0 || hexval(s[4]) < 0)
        return -1;
    return hexval(s[3]) * 16 + hexval(s[4]);
}

int tokenizer_decode_chain(const moe_tokenizer *t, pcre2_match_data *md, str *toks, int n, int upto_fuse)
{
    for (int d = 0; d < t->n_dec; d++) {
        const step *st = &t->dec[d];
        if (upto_fuse && (st->kind == DEC_FUSE || st->kind == DEC_STRIP))
            continue;
        if (st->kind == DEC_FUSE) {
            buf b = {0};
            for (int i = 0; i < n; i++)
                if (buf_add(&b, toks[i].s, toks[i].n))
                    return free(b.s), -1;
            for (int i = 0; i < n; i++) {
                free(toks[i].s);
                toks[i].s = NULL;
            }
            if (!b.s && buf_add(&b, "", 0))
                return -1;
            toks[0] = (str){b.s, b.n};
            n = n ? 1 : 0;
            continue;
        }
        for (int i = 0; i < n; i++) {
            str *x = &toks[i];
            buf b = {0};
            int rc = 0, v;
            switch (st->kind) {
            case DEC_BYTELEVEL: /* pieces are raw bytes already */
                continue;
            case DEC_REPLACE:
                rc = tokenizer_replace(st->re, md, x->s, x->n, &st->b, &b);
                break;
            case DEC_BYTEFALLBACK:
                if ((v = fallback_byte(x->s, x->n)) < 0)
                    continue;
                x->s[0] = (char)v;
                x->n = 1;
                continue;
            case DEC_STRIP: {
                size_t a = 0, e = x->n;
                for (int k = 0; k < st->start && a + st->a.n <= e && memcmp(x->s + a, st->a.s, st->a.n) == 0; k++)
                    a += st->a.n;
                for (int k = 0; k < st->stop && e >= a + st->a.n && memcmp(x->s + e - st->a.n, st->a.s, st->a.n) == 0; k++)
                    e -= st->a.n;
                memmove(x->s, x->s + a, e - a);
                x->n = e - a;
                continue;
            }
            case DEC_METASPACE: {
                /* the prepended replacement of the first token is dropped */
                for (size_t k = 0; k < x->n && !rc;)
                    if (k + st->a.n <= x->n && memcmp(x->s + k, st->a.s, st->a.n) == 0) {
                        rc = (k > 0 || i > 0 || !st->prepend || upto_fuse) ? buf_add(&b, " ", 1) : 0;
                        k += st->a.n;
                    } else {
                        rc = buf_add(&b, x->s + k++, 1);
                    }
                break;
            }
            }
            if (rc || (!b.s && buf_add(&b, "", 0))) {
                free(b.s);
                return -1;
            }
            free(x->s);
            *x = (str){b.s, b.n};
        }
    }
    return n;
}

moe_status moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n, int skip_special, char **text,
                                size_t *len, moe_error *err)
{
    *text = NULL;
    if (len)
        *len = 0;
    str *toks = calloc((size_t)n + 1, sizeof *toks);
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    int k = 0, rc = !toks || !md;
    moe_status st = rc ? MOE_ENOMEM : MOE_OK;
    for (int i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids) {
            st = moe_fail(err, MOE_EINVAL, "token id %d is outside the vocabulary (0..%d)", (int)id, t->n_ids - 1);
            rc = 1;
            break;
        }
        int a = t->added_of[id];
        if (a >= 0 && skip_special && t->added[a].special)
            continue;
        if (a >= 0)
            rc = str_set(&toks[k++], t->added[a].s.s, t->added[a].s.n);
        else if (t->v.len[id] >= 0)
            rc = str_set(&toks[k++], t->v.pool + t->v.off[id], (size_t)t->v.len[id]);
    }
    if (!rc)
        k = tokenizer_decode_chain(t, md, toks, k, 0), rc = k < 0;
    buf b = {0};
    for (int i = 0; i < k && !rc; i++)
        rc = buf_add(&b, toks[i].s, toks[i].n);
    if (!rc && !b.s)
        rc = buf_add(&b, "", 0);
    for (int i = 0; toks && i <= n; i++)
        free(toks[i].s);
    free(toks);
    pcre2_match_data_free(md);
    if (rc) {
        free(b.s);
        return st ? st : moe_fail(err, MOE_ENOMEM, "out of memory decoding %d tokens", n);
    }
    *text = b.s;
    if (len)
        *len = b.n;
    return MOE_OK;
}

/* ---- streaming --------------------------------------------------------- */

struct moe_detokenizer {
    const moe_tokenizer *t;
    int skip_special;
    int strip0;      /* leading spaces the decoders drop from a text */
    int strip;       /* of those, still to drop in this stream */
    int started;     /* a byte has been emitted in this stream */
    buf out;         /* emitted by the last call */
    char held[8];    /* the start of an incomplete UTF-8 character */
    size_t n_held;
};

moe_detokenizer *moe_detokenizer_new(const moe_tokenizer *t, int skip_special)
{
    moe_detokenizer *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->t = t;
    d->skip_special = skip_special;
    int fused = 0;
    for (int i = 0; i < t->n_dec; i++) {
        const step *st = &t->dec[i];
        if (st->kind == DEC_FUSE)
            fused = 1;
        else if (st->kind == DEC_STRIP && fused && st->a.n == 1 && st->a.s[0] == ' ')
            d->strip0 = st->start;
        else if (st->kind == DEC_METASPACE && st->prepend)
            d->strip0 = 1;
    }
    d->strip = d->strip0;
    return d;
}

void moe_detokenizer_free(moe_detokenizer *d)
{
    if (d)
        free(d->out.s);
    free(d);
}

/* Bytes at the end of s[0..n) that start a UTF-8 character not yet whole. */
static size_t incomplete_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

moe_status moe_detokenizer_push(moe_detokenizer *d, int32_t id, const char **text, size_t *len, moe_error *err)
{
    const moe_tokenizer *t = d->t;
    d->out.n = 0;
    *text = "";
    *len = 0;
    if (id < 0 || id >= t->n_ids)
        return moe_fail(err, MOE_EINVAL, "token id %d is outside the vocabulary (0..%d)", (int)id, t->n_ids - 1);
    size_t n = 0;
    const char *p = NULL;
    if (!(d->skip_special && moe_tokenizer_is_special(t, id)))
        p = moe_tokenizer_piece(t, id, &n);
    if (!p || n == 0)
        return MOE_OK;
    if (buf_add(&d->out, d->held, d->n_held) || buf_add(&d->out, p, n))
        return moe_fail(err, MOE_ENOMEM, "out of memory");
    d->n_held = 0;
    size_t skip = 0;
    while (!d->started && d->strip > 0 && skip < d->out.n && d->out.s[skip] == ' ')
        skip++, d->strip--;
    size_t tail = incomplete_tail(d->out.s + skip, d->out.n - skip);
    memcpy(d->held, d->out.s + d->out.n - tail, tail);
    d->n_held = tail;
    d->out.n -= tail;
    if (d->out.n > skip)
        d->started = 1;
    *text = d->out.s + skip;
    *len = d->out.n - skip;
    return MOE_OK;
}

const char *moe_detokenizer_flush(moe_detokenizer *d, size_t *len)
{
    d->out.n = 0;
    int fail = buf_add(&d->out, d->held, d->n_held);
    *len = fail ? 0 : d->out.n;
    d->n_held = 0;
    d->started = 0;
    d->strip = d->strip0;
    return fail ? "" : d->out.s;
}
