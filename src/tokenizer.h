/* The tokenizer's insides, shared by tokenizer.c (loading tokenizer.json,
 * encoding), gguf_vocab.c (loading a GGUF file's tokenizer.ggml.*) and
 * detokenizer.c (decoding, streaming). Nothing outside those uses it. */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "moescope/moescope.h"

/* GPT-2's pre-tokenizer regex (HF's ByteLevel pre-tokenizer with use_regex). */
#define TOKENIZER_GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct {
    char *s;
    size_t n;
} str;

typedef enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_PREPEND, NORM_REPLACE, NORM_LOWER, NORM_STRIP } norm_kind;
typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } pre_kind;
typedef enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_WITH_PREV, SPLIT_WITH_NEXT } split_kind;
typedef enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE } dec_kind;

/* One step of a normalizer, pre-tokenizer or decoder sequence. */
typedef struct {
    int kind;
    pcre2_code *re;      /* Split / Replace pattern */
    str a, b;            /* Prepend text; Replace from a to b; Metaspace a */
    int split, invert;   /* split behaviour; Metaspace split */
    int prefix_space;    /* ByteLevel add_prefix_space */
    int prepend;         /* Metaspace: 0 never, 1 first, 2 always */
    int start, stop;     /* Strip */
} step;

typedef struct {
    str s;
    int id;
    unsigned special : 1, lstrip : 1, rstrip : 1, single_word : 1;
} added_tok;

struct moe_tokenizer {
    bpe v;
    int n_ids;
    int byte_level;       /* pieces are GPT-2 byte-level characters */
    int byte_fallback, fuse_unk, ignore_merges;
    int unk;
    int byte_id[256];     /* byte-level: the id of each byte; else <0xNN> */
    added_tok *added;     /* sorted by length, longest first */
    int n_added;
    uint8_t added_first[256]; /* 1 for a byte that starts an added token */
    int *added_of;        /* (n_ids) index in added, or -1 */
    step *norm, *pre, *dec;
    int n_norm, n_pre, n_dec;
    int32_t *prefix, *suffix; /* ids the post-processor adds */
    int n_prefix, n_suffix;
    int32_t bos, eos;
    int32_t *eog;         /* (n_eog) ascending: the ids that end generation */
    int n_eog;
    str *shown;           /* (n_ids) piece as text, for moe_tokenizer_piece */
};

typedef struct {
    char *s;
    size_t n, cap;
} buf;

static inline int buf_add(buf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX / 4 || b->n > SIZE_MAX / 4)
        return -1; /* the doubling below cannot overflow */
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p)
            return -1;
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

static inline int str_set(str *d, const char *s, size_t n)
{
    d->s = malloc(n + 1);
    if (!d->s)
        return -1;
    memcpy(d->s, s, n);
    d->s[n] = 0;
    d->n = n;
    return 0;
}

/* Append s to out with every match of re replaced by `to`. 0, or -1 when
 * out of memory. */
int tokenizer_replace(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, const str *to, buf *out);

/* Apply the decoders to toks[0..n) in place, as HF's decode_chain does;
 * Fuse leaves one token. With upto_fuse, a token alone as it reads inside
 * a text: no Fuse, no Strip, no dropped first space. Returns the new
 * count, or -1 when out of memory. */
int tokenizer_decode_chain(const moe_tokenizer *t, pcre2_match_data *md, str *toks, int n, int upto_fuse);

/* ---- shared by the two loaders: tokenizer.c (tokenizer.json) and
 * gguf_vocab.c (a GGUF file's tokenizer.ggml.* metadata) ---- */

/* Compile pat (a literal string when `literal`) as the tokenizer's regexes
 * are compiled: UTF, Unicode properties, JIT where available. NULL with
 * err naming path when it does not compile. */
pcre2_code *tokenizer_re_compile(const char *pat, int literal, const char *path, moe_error *err);
/* Fill GPT-2's byte <-> character tables (idempotent). */
void tokenizer_tables(void);
/* Byte-level characters to raw bytes; out holds at least n bytes. Returns
 * the length, or -1 when s holds a character outside the table. Needs
 * tokenizer_tables. */
long tokenizer_bl_to_raw(const char *s, size_t n, char *out);
/* Sort t->added (longest first) and index it: added_first, added_of.
 * Every added id must be below n_ids. 0, or -1 when out of memory. */
int tokenizer_index_added(moe_tokenizer *t);
/* For SentencePiece-style vocabularies, each piece as the decoders show
 * it alone (t->shown); nothing for byte-level ones. 0, or -1 on ENOMEM. */
int tokenizer_show_pieces(moe_tokenizer *t);

#endif
