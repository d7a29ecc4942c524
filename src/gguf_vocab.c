/* gguf_vocab: a tokenizer from a GGUF file's tokenizer.ggml.* metadata.
 *
 * The keys are those llama.cpp's converter writes (gguf-py constants.py;
 * read by llama.cpp's llama-vocab.cpp): the token texts, their types and
 * scores, the merges, the pre-tokenizer's name and the special token ids.
 * They are turned into the pipeline a tokenizer.json would describe for
 * the same model, so that both loaders give the same ids:
 *
 *   gpt2   byte-level BPE. Token texts are GPT-2 byte-level strings and are
 *          stored as raw bytes, as tokenizer.c does; merges "a b" rank in
 *          file order. tokenizer.ggml.pre picks the split regex (and the
 *          NFC normalizer where the family's tokenizer.json has one).
 *   llama  SentencePiece BPE. llama.cpp merges the adjacent pair whose
 *          concatenation is a token of the highest score, leftmost first;
 *          that is a rank-ordered merge table in which every split of a
 *          token into two tokens ranks by the token's score (equal scores,
 *          equal ranks). Characters without a token fall back to <0xNN>.
 *          Spaces become U+2581, with one prepended to each run of text
 *          when add_space_prefix (the default), as llama.cpp does after
 *          every special token.
 *
 * CONTROL, USER_DEFINED and UNKNOWN tokens are matched in the text before
 * anything else, as llama.cpp's tokenizer_st_partition does, like the
 * added tokens of a tokenizer.json; USER_DEFINED ones are not special.
 * The tokens that end generation are llama.cpp's set (eog_build). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "tokenizer.h"

/* llama.cpp's token types (gguf-py TokenType). */
enum { TT_UNDEFINED, TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE, TT_COUNT };

#define MAX_TOKENS (1 << 24) /* as tokenizer.c: ids fit the merge table's keys */

#define LLAMA3_PATTERN \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_PATTERN \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Pre-tokenizers by llama.cpp's names, each as the family's tokenizer.json
 * spells it (HF's regexes: llama.cpp rewrites some for its own engine). */
static const struct {
    const char *name;
    const char *pattern;
    int nfc;           /* the tokenizer.json normalizes to NFC first */
    int ignore_merges; /* a word that is itself a token is not merged */
    int add_bos;       /* llama.cpp's add_bos_token when the key is absent */
} PRES[] = {
    {"llama-bpe", LLAMA3_PATTERN, 0, 1, 1}, /* Llama 3 */
    {"llama3", LLAMA3_PATTERN, 0, 1, 1},
    {"llama-v3", LLAMA3_PATTERN, 0, 1, 1},
    {"qwen2", QWEN2_PATTERN, 1, 0, 0},      /* Qwen 2/2.5/3 */
    {"gpt-2", TOKENIZER_GPT2_PATTERN, 0, 0, 0},
    {"olmo", TOKENIZER_GPT2_PATTERN, 1, 0, 0}, /* GPT-NeoX's tokenizer.json: NFC + ByteLevel */
    {"default", TOKENIZER_GPT2_PATTERN, 0, 0, 0},
};
#define PRE_NAMES "llama-bpe (llama3, llama-v3), qwen2, gpt-2, olmo, default"

static int is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int gguf_vocab_is_gguf(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    char magic[4];
    ssize_t got = read(fd, magic, 4);
    close(fd);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* Append a step of `kind` to a normalizer, pre-tokenizer or decoder list. */
static step *push(step **list, int *n, int kind)
{
    step *p = realloc(*list, (size_t)(*n + 1) * sizeof *p);
    if (!p)
        return NULL;
    *list = p;
    memset(&p[*n], 0, sizeof p[*n]);
    p[*n].kind = kind;
    return &p[(*n)++];
}

/* One tokenizer.ggml.<which>_token_id: -1 when absent, an error naming the
 * key when it is not an id of the vocabulary. */
static moe_status special_id(const gguf_file *g, const char *which, size_t n, int32_t *out, moe_error *err)
{
    char key[64];
    int64_t v;
    int found;
    snprintf(key, sizeof key, "tokenizer.ggml.%s", which);
    *out = -1;
    moe_status st = gguf_get_int(g, key, INT64_MIN, INT64_MAX, &v, &found, err);
    if (st || !found)
        return st;
    if (v < 0 || (uint64_t)v >= n)
        return moe_fail(err, MOE_EFORMAT, "%s: %s is %lld but the vocabulary has %zu tokens (ids 0..%zu)",
                        gguf_path(g), key, (long long)v, n, n - 1);
    *out = (int32_t)v;
    return MOE_OK;
}

static moe_status opt_bool(const gguf_file *g, const char *key, int dflt, int *out, moe_error *err)
{
    int found, v;
    moe_status st = gguf_get_bool(g, key, &v, &found, err);
    *out = !st && found ? v : dflt;
    return st;
}

typedef struct {
    float score;
    int id;
} scored;

static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id - y->id;
}

/* SentencePiece merges: every split of a NORMAL token into two tokens,
 * ranked by the token's score (highest first; equal scores, equal ranks). */
static int spm_merges(moe_tokenizer *t, const gguf_strv *tok, const int64_t *type, const float *score, size_t n)
{
    scored *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (type[i] == TT_NORMAL && tok[i].n > 1)
            order[k++] = (scored){score ? score[i] : 0.0f, (int)i};
    qsort(order, k, sizeof *order, by_score);
    uint32_t rank = 0;
    for (size_t j = 0; j < k; j++) {
        if (j > 0 && order[j].score != order[j - 1].score)
            rank++;
        const gguf_strv *s = &tok[order[j].id];
        for (size_t cut = 1; cut < s->n; cut++) {
            if (((unsigned char)s->s[cut] & 0xC0) == 0x80)
                continue; /* inside a UTF-8 character */
            int a = bpe_find(&t->v, s->s, cut), b = bpe_find(&t->v, s->s + cut, s->n - cut);
            if (a >= 0 && b >= 0)
                bpe_add_merge(&t->v, a, b, rank, order[j].id);
        }
    }
    free(order);
    return 0;
}

/* A byte-level text as raw bytes into tmp (which holds n bytes); the text
 * itself when it is not byte-level. */
static size_t raw(const char *s, size_t n, char *tmp, const char **out)
{
    long r = tokenizer_bl_to_raw(s, n, tmp);
    *out = r >= 0 ? tmp : s;
    return r >= 0 ? (size_t)r : n;
}

static moe_status bpe_merges(moe_tokenizer *t, const gguf_file *g, const gguf_strv *m, size_t n_merges,
                             char *tmp, moe_error *err)
{
    const char *path = gguf_path(g);
    for (size_t i = 0; i < n_merges; i++) {
        const char *s = m[i].s;
        size_t n = m[i].n, sp = 1; /* as llama.cpp: the space after the first byte */
        while (sp < n && s[sp] != ' ')
            sp++;
        if (n < 3 || sp >= n - 1)
            return moe_fail(err, MOE_EFORMAT, "%s: tokenizer.ggml.merges[%zu] (\"%.*s\") is not two tokens "
                            "separated by a space", path, i, (int)(n < 40 ? n : 40), s);
        const char *ra, *rb;
        size_t na = raw(s, sp, tmp, &ra);
        if (ra != tmp)
            memcpy(tmp, ra, na);
        size_t nb = raw(s + sp + 1, n - sp - 1, tmp + na, &rb);
        if (rb != tmp + na)
            memcpy(tmp + na, rb, nb);
        int a = bpe_find(&t->v, tmp, na), b = bpe_find(&t->v, tmp + na, nb), r = bpe_find(&t->v, tmp, na + nb);
        if (a < 0 || b < 0 || r < 0)
            return moe_fail(err, MOE_EFORMAT, "%s: tokenizer.ggml.merges[%zu] (\"%.*s\") names a token that is "
                            "not in tokenizer.ggml.tokens", path, i, (int)(n < 40 ? n : 40), s);
        bpe_add_merge(&t->v, a, b, (uint32_t)i, r);
    }
    return MOE_OK;
}

static moe_status oom(const gguf_file *g, moe_error *err)
{
    return moe_fail(err, MOE_ENOMEM, "%s: out of memory reading the vocabulary", gguf_path(g));
}

/* Texts llama.cpp's llama_vocab::impl::load looks for (its
 * special_eog_ids: end-of-generation tokens found by their text), and the
 * candidates it takes for a special id the file does not give. */
static const char *const EOG_TEXTS[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
                                        "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
                                        "<|end_of_text|>", "<end_of_utterance>", NULL};
/* DeepSeek's <｜end▁of▁sentence｜>; llama.cpp's other eot candidates are EOG_TEXTS */
static const char *const EOT_TEXTS[] = {"<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", NULL};
static const char *const FIM_PAD_TEXTS[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const FIM_REP_TEXTS[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
                                            NULL};
static const char *const FIM_SEP_TEXTS[] = {"<|file_sep|>", NULL};

/* Index in list of the text tok, or -1. */
static int text_in(const gguf_strv *tok, const char *const *list)
{
    for (int k = 0; list[k]; k++)
        if (is(tok->s, tok->n, list[k]))
            return k;
    return -1;
}

/* Mark in eog the last token (llama.cpp's token_to_id keeps the last id of
 * a text) of each text of list. */
static void mark_texts(char *eog, const gguf_strv *tok, size_t n, const char *const *list)
{
    unsigned seen = 0; /* a bit per text of list */
    for (size_t i = n; i-- > 0;) {
        int k = tok[i].n < 32 ? text_in(&tok[i], list) : -1;
        if (k >= 0 && !(seen & 1u << k)) {
            seen |= 1u << k;
            eog[i] = 1;
        }
    }
}

/* t->eog: the end-of-generation set llama.cpp builds for this vocabulary.
 * ids: eos, eot, eom, fim_pad, fim_rep, fim_sep (-1: absent). An id absent
 * from the file is looked for by text, as llama.cpp does; where it would
 * pick one of several candidates (in hash order) all of them are taken. */
static int eog_build(moe_tokenizer *t, const gguf_strv *tok, size_t n, const int32_t ids[6])
{
    char *eog = calloc(n, 1);
    if (!eog)
        return -1;
    static const char *const *const by_key[6] = {NULL, EOT_TEXTS, NULL, FIM_PAD_TEXTS, FIM_REP_TEXTS,
                                                 FIM_SEP_TEXTS};
    mark_texts(eog, tok, n, EOG_TEXTS);
    for (int k = 0; k < 6; k++) {
        if (ids[k] >= 0)
            eog[ids[k]] = 1;
        else if (by_key[k])
            mark_texts(eog, tok, n, by_key[k]);
    }
    /* gpt-oss (o200k_harmony): <|end|> ends a message, not the generation,
     * when <|return|> and <|call|> are there (llama.cpp drops it last, even
     * when a key names it) */
    int end = -1, ret = 0, call = 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!eog[i])
            continue;
        count++;
        end = is(tok[i].s, tok[i].n, "<|end|>") ? (int)i : end;
        ret |= is(tok[i].s, tok[i].n, "<|return|>");
        call |= is(tok[i].s, tok[i].n, "<|call|>");
    }
    if (end >= 0 && ret && call) {
        eog[end] = 0;
        count--;
    }
    if (count && !(t->eog = malloc(count * sizeof *t->eog))) {
        free(eog);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (eog[i])
            t->eog[t->n_eog++] = (int32_t)i;
    free(eog);
    return 0;
}

/* Fill t from g. Everything allocated hangs off t (freed by the caller on
 * error) or is freed here. */
static moe_status load(moe_tokenizer *t, const gguf_file *g, moe_error *err)
{
    const char *path = gguf_path(g), *model;
    size_t mlen, n = 0, n_merges = 0, n_scores = 0, n_types = 0;
    int found;
    moe_status st = gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen, &found, err);
    if (st)
        return st;
    if (!found)
        return moe_fail(err, MOE_EFORMAT, "%s: the file carries no tokenizer (no tokenizer.ggml.model)", path);
    if (is(model, mlen, "no_vocab") || is(model, mlen, "none"))
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: the file carries no vocabulary (tokenizer.ggml.model is "
                        "\"%.*s\"): only token ids can be given to it", path, (int)mlen, model);
    int spm = is(model, mlen, "llama");
    if (!spm && !is(model, mlen, "gpt2"))
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\" is not supported; supported: "
                        "gpt2 (byte-level BPE), llama (SentencePiece)", path, (int)(mlen < 40 ? mlen : 40), model);

    gguf_strv *tok = NULL, *merges = NULL;
    int64_t *type = NULL;
    float *score = NULL;
    char *tmp = NULL;
    if ((st = gguf_get_str_array(g, "tokenizer.ggml.tokens", &tok, &n, NULL, err)))
        goto done;
    if (n == 0 || n > MAX_TOKENS) {
        st = moe_fail(err, MOE_EFORMAT, "%s: tokenizer.ggml.tokens has %zu tokens; 1 to %d are read", path, n,
                      MAX_TOKENS);
        goto done;
    }
    if (!(type = malloc(n * sizeof *type))) {
        st = oom(g, err);
        goto done;
    }
    if ((st = gguf_get_int_array(g, "tokenizer.ggml.token_type", type, n, &n_types, &found, err)))
        goto done;
    if (!found) {
        n_types = n;
        for (size_t i = 0; i < n; i++)
            type[i] = TT_NORMAL;
    }
    if ((st = gguf_get_float_array(g, "tokenizer.ggml.scores", &score, &n_scores, &found, err)))
        goto done;
    if (n_types != n || (found && n_scores != n)) {
        st = moe_fail(err, MOE_EFORMAT, "%s: tokenizer.ggml.%s has %zu entries for %zu tokens", path,
                      n_types != n ? "token_type" : "scores", n_types != n ? n_types : n_scores, n);
        goto done;
    }
    size_t longest = 0;
    for (size_t i = 0; i < n; i++) {
        if (type[i] < 0 || type[i] >= TT_COUNT) {
            st = moe_fail(err, MOE_EFORMAT, "%s: tokenizer.ggml.token_type[%zu] is %lld, not a token type (0..%d)",
                          path, i, (long long)type[i], TT_COUNT - 1);
            goto done;
        }
        longest = tok[i].n > longest ? tok[i].n : longest;
    }
    if (!spm && (st = gguf_get_str_array(g, "tokenizer.ggml.merges", &merges, &n_merges, NULL, err)))
        goto done;
    for (size_t i = 0; i < n_merges; i++)
        longest = merges[i].n > longest ? merges[i].n : longest;
    if (!(tmp = malloc(longest + 1))) {
        st = oom(g, err);
        goto done;
    }

    /* the pre-tokenizer and llama.cpp's defaults that follow from it */
    int add_bos = spm, add_eos = 0, add_space = spm;
    if (!spm) {
        const char *pre = "default";
        size_t plen = 7;
        if ((st = gguf_get_str(g, "tokenizer.ggml.pre", &pre, &plen, &found, err)))
            goto done;
        if (!found)
            pre = "default", plen = 7;
        size_t p = 0, np = sizeof PRES / sizeof PRES[0];
        while (p < np && !is(pre, plen, PRES[p].name))
            p++;
        if (p == np) {
            st = moe_fail(err, MOE_EUNSUPPORTED, "%s: pre-tokenizer \"%.*s\" (tokenizer.ggml.pre) is not "
                          "supported; supported: " PRE_NAMES, path, (int)(plen < 40 ? plen : 40), pre);
            goto done;
        }
        step *s;
        if ((PRES[p].nfc && !push(&t->norm, &t->n_norm, NORM_NFC)) || !(s = push(&t->pre, &t->n_pre, PRE_SPLIT))) {
            st = oom(g, err);
            goto done;
        }
        s->split = SPLIT_ISOLATED;
        if (!(s->re = tokenizer_re_compile(PRES[p].pattern, 0, path, err))) {
            st = err ? err->code : MOE_EUNSUPPORTED;
            goto done;
        }
        t->byte_level = 1;
        t->ignore_merges = PRES[p].ignore_merges;
        add_bos = PRES[p].add_bos;
    }
    if ((st = opt_bool(g, "tokenizer.ggml.add_bos_token", add_bos, &add_bos, err)) ||
        (st = opt_bool(g, "tokenizer.ggml.add_eos_token", add_eos, &add_eos, err)) ||
        (st = opt_bool(g, "tokenizer.ggml.add_space_prefix", add_space, &add_space, err)))
        goto done;
    int32_t unk, ignored, eog[6];
    static const char *const others[] = {"padding_token_id", "seperator_token_id", "cls_token_id",
                                         "mask_token_id"};
    static const char *const ends[] = {"eot_token_id", "eom_token_id", "fim_pad_token_id",
                                       "fim_rep_token_id", "fim_sep_token_id"};
    if ((st = special_id(g, "bos_token_id", n, &t->bos, err)) ||
        (st = special_id(g, "eos_token_id", n, &t->eos, err)) ||
        (st = special_id(g, "unknown_token_id", n, &unk, err)))
        goto done;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if ((st = special_id(g, others[i], n, &ignored, err)))
            goto done;
    eog[0] = t->eos;
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
        if ((st = special_id(g, ends[i], n, &eog[i + 1], err)))
            goto done;
    if (eog_build(t, tok, n, eog)) {
        st = oom(g, err);
        goto done;
    }

    /* the pieces, the added tokens, the merges */
    t->n_ids = (int)n;
    size_t max_merges = n_merges;
    if (spm) /* at most one merge per character boundary of each token */
        for (size_t i = 0; i < n; i++)
            for (size_t k = 1; type[i] == TT_NORMAL && k < tok[i].n; k++)
                max_merges += ((unsigned char)tok[i].s[k] & 0xC0) != 0x80;
    size_t n_added = 0;
    for (size_t i = 0; i < n; i++)
        n_added += type[i] == TT_CONTROL || type[i] == TT_USER_DEFINED || type[i] == TT_UNKNOWN;
    if (bpe_init(&t->v, (int)n, max_merges) || !(t->added = calloc(n_added + 1, sizeof *t->added))) {
        st = oom(g, err);
        goto done;
    }
    tokenizer_tables();
    for (size_t i = 0; i < n; i++) {
        int added = type[i] == TT_CONTROL || type[i] == TT_USER_DEFINED || type[i] == TT_UNKNOWN;
        if (added && tok[i].n > 0) {
            added_tok *a = &t->added[t->n_added++];
            a->id = (int)i;
            a->special = type[i] != TT_USER_DEFINED;
            if (str_set(&a->s, tok[i].s, tok[i].n)) {
                st = oom(g, err);
                goto done;
            }
        }
        if (type[i] == TT_UNUSED || (added && !spm))
            continue; /* byte-level added tokens are text, not pieces */
        const char *r = tok[i].s;
        size_t len = spm ? tok[i].n : raw(tok[i].s, tok[i].n, tmp, &r);
        if (bpe_set(&t->v, (int)i, r, len)) {
            st = oom(g, err);
            goto done;
        }
        if (spm && unk < 0 && type[i] == TT_UNKNOWN)
            unk = (int32_t)i;
    }
    t->unk = unk;
    if (spm ? spm_merges(t, tok, type, score, n) : 0) {
        st = oom(g, err);
        goto done;
    }
    if (!spm && (st = bpe_merges(t, g, merges, n_merges, tmp, err)))
        goto done;
    t->byte_fallback = spm;
    for (int c = 0; c < 256; c++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", c);
        name[0] = t->byte_level ? (char)c : name[0];
        t->byte_id[c] = bpe_find(&t->v, name, t->byte_level ? 1 : 6);
    }

    if (spm) { /* the normalizer and decoders of a SentencePiece tokenizer.json */
        static const char sp[] = "\xe2\x96\x81";
        step *s;
        int bad = add_space && (!(s = push(&t->norm, &t->n_norm, NORM_PREPEND)) || str_set(&s->a, sp, 3));
        bad = bad || !(s = push(&t->norm, &t->n_norm, NORM_REPLACE)) || str_set(&s->b, sp, 3) ||
              !(s->re = tokenizer_re_compile(" ", 1, path, err));
        bad = bad || !(s = push(&t->dec, &t->n_dec, DEC_REPLACE)) || str_set(&s->b, " ", 1) ||
              !(s->re = tokenizer_re_compile(sp, 1, path, err));
        bad = bad || !push(&t->dec, &t->n_dec, DEC_BYTEFALLBACK) || !push(&t->dec, &t->n_dec, DEC_FUSE);
        bad = bad || (add_space && (!(s = push(&t->dec, &t->n_dec, DEC_STRIP)) || str_set(&s->a, " ", 1)));
        if (bad) {
            st = oom(g, err);
            goto done;
        }
        if (add_space)
            s->start = 1; /* the space prepended to the text is dropped again */
    }
    if ((add_bos && t->bos >= 0 && !(t->prefix = malloc(sizeof *t->prefix))) ||
        (add_eos && t->eos >= 0 && !(t->suffix = malloc(sizeof *t->suffix)))) {
        st = oom(g, err);
        goto done;
    }
    if (t->prefix)
        t->prefix[t->n_prefix++] = t->bos;
    if (t->suffix)
        t->suffix[t->n_suffix++] = t->eos;
    if (tokenizer_index_added(t) || tokenizer_show_pieces(t))
        st = oom(g, err);
done:
    free(tok);
    free(merges);
    free(type);
    free(score);
    free(tmp);
    return st;
}

moe_status gguf_vocab_open(const char *path, moe_tokenizer **out, moe_error *err)
{
    *out = NULL;
    gguf_file *g;
    moe_status st = gguf_open(path, &g, err);
    if (st)
        return st;
    moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        gguf_close(g);
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory", path);
    }
    t->bos = t->eos = t->unk = -1;
    st = load(t, g, err);
    gguf_close(g);
    if (st) {
        moe_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MOE_OK;
}

int gguf_vocab_present(const char *path)
{
    gguf_file *g;
    moe_error err;
    if (!gguf_vocab_is_gguf(path) || gguf_open(path, &g, &err))
        return 0;
    const char *m;
    size_t n;
    int found;
    int has = gguf_get_str(g, "tokenizer.ggml.model", &m, &n, &found, &err) == MOE_OK && found &&
              !is(m, n, "no_vocab") && !is(m, n, "none");
    gguf_close(g);
    return has;
}

/* The text of special token `key` (a tokenizer.ggml.*_token_id), malloc'ed
 * into *out; nothing when the key or the tokens are absent. */
static moe_status token_text(const gguf_file *g, const char *key, char **out, moe_error *err)
{
    gguf_strv *tok;
    size_t n;
    int found;
    int32_t id;
    moe_status st = gguf_get_str_array(g, "tokenizer.ggml.tokens", &tok, &n, &found, err);
    if (st || !found)
        return st;
    if (!(st = special_id(g, key, n, &id, err)) && id >= 0) {
        const char *model;
        size_t mlen;
        int bl = gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen, &found, NULL) == MOE_OK && found &&
                 is(model, mlen, "gpt2");
        char *s = malloc(tok[id].n + 1);
        if (!s) {
            st = oom(g, err);
        } else {
            tokenizer_tables();
            long r = bl ? tokenizer_bl_to_raw(tok[id].s, tok[id].n, s) : -1;
            if (r < 0)
                memcpy(s, tok[id].s, tok[id].n);
            s[r < 0 ? (long)tok[id].n : r] = 0;
            *out = s;
        }
    }
    free(tok);
    return st;
}

moe_status gguf_vocab_chat_template(const char *path, char **template_src, char **bos, char **eos, moe_error *err)
{
    gguf_file *g;
    moe_status st = gguf_open(path, &g, err);
    if (st)
        return st;
    const char *s;
    size_t n;
    int found;
    if ((st = gguf_get_str(g, "tokenizer.chat_template", &s, &n, &found, err)))
        goto done;
    if (!found) {
        st = moe_fail(err, MOE_EFORMAT, "%s: no chat template (tokenizer.chat_template)", path);
        goto done;
    }
    if (memchr(s, 0, n)) {
        st = moe_fail(err, MOE_EFORMAT, "%s: tokenizer.chat_template holds a NUL byte", path);
        goto done;
    }
    if (!(*template_src = malloc(n + 1))) {
        st = oom(g, err);
        goto done;
    }
    memcpy(*template_src, s, n);
    (*template_src)[n] = 0;
    if ((bos && (st = token_text(g, "bos_token_id", bos, err))) ||
        (eos && (st = token_text(g, "eos_token_id", eos, err)))) {
        free(*template_src);
        *template_src = NULL;
        if (bos) {
            free(*bos);
            *bos = NULL;
        }
    }
done:
    gguf_close(g);
    return st;
}
