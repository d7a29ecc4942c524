/* The tokenizer and chat template of a GGUF file (tokenizer.ggml.*), against
 * the same model's tokenizer.json in two ways: the ids equal the golden ids
 * of the independent JavaScript reference (tools/tokref, in
 * tests/fixtures/tokenizer/<vocab>.json) and the ids of the tokenizer.json
 * loader, on every case. The GGUF files are written from the tokenizer.json
 * files by tools/gen_gguf_vocab.py as llama.cpp's converter writes them:
 * llama2 is committed (tests/fixtures/gguf/vocab-llama2.gguf); the larger
 * qwen3 and llama3 ones are written at check time by tests/gguf_vocab.sh
 * into the directory given as the first argument. Each file's
 * end-of-generation ids are llama.cpp's. Then small vocabularies written
 * here key by key: llama.cpp's end-of-generation rules, hostile metadata. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"

static void show(const char *what, const char *text, const int32_t *ids, int n)
{
    char got[300];
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof got - 16; i++)
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%d", i ? "," : "", (int)ids[i]);
    got[k] = 0;
    diag("%s for \"%.60s\": [%s]", what, text, got);
}

/* A tokenizer's end-of-generation ids as "a,b,c" into buf. */
static void eog_list(const moe_tokenizer *t, char *buf, size_t cap)
{
    const int32_t *ids;
    int n = moe_tokenizer_eog(t, &ids);
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%d", i ? "," : "", (int)ids[i]);
}

static void check_vocab(const char *vocab, const char *gguf)
{
    char dir[1024], golden[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/%s", test_srcdir(), vocab);
    snprintf(golden, sizeof golden, "%s/tests/fixtures/tokenizer/%s.json", test_srcdir(), vocab);
    moe_error err = {0};
    moe_tokenizer *g = NULL, *j = NULL;
    if (!ok(moe_tokenizer_open(gguf, &g, &err) == MOE_OK, "%s: the GGUF tokenizer opens", vocab)) {
        diag("%s", err.msg);
        return;
    }
    if (moe_tokenizer_open(dir, &j, &err) != MOE_OK) {
        ok(0, "%s: tokenizer.json opens: %s", vocab, err.msg);
        moe_tokenizer_free(g);
        return;
    }
    ok(moe_tokenizer_vocab_size(g) == moe_tokenizer_vocab_size(j) && moe_tokenizer_bos(g) == moe_tokenizer_bos(j) &&
       moe_tokenizer_eos(g) == moe_tokenizer_eos(j),
       "%s: vocabulary size (%d), BOS (%d) and EOS (%d) equal tokenizer.json's (%d, %d, %d)", vocab,
       moe_tokenizer_vocab_size(g), (int)moe_tokenizer_bos(g), (int)moe_tokenizer_eos(g),
       moe_tokenizer_vocab_size(j), (int)moe_tokenizer_bos(j), (int)moe_tokenizer_eos(j));

    /* end of generation: llama.cpp's set, as its loader prints it for these
     * vocabularies ("EOG token = ..." of print_info, Qwen2.5/Qwen3 and
     * Llama 3 GGUF files); tokenizer.json's is its EOS alone */
    static const struct {
        const char *vocab, *eog;
    } eogs[] = {{"llama2", "2"}, {"qwen3", "151643,151645,151662,151663,151664"}, {"llama3", "128001,128009"}};
    for (size_t i = 0; i < sizeof eogs / sizeof eogs[0]; i++) {
        if (strcmp(eogs[i].vocab, vocab))
            continue;
        char got[128], gotj[32];
        eog_list(g, got, sizeof got);
        eog_list(j, gotj, sizeof gotj);
        char eos[16];
        snprintf(eos, sizeof eos, "%d", (int)moe_tokenizer_eos(j));
        ok(!strcmp(got, eogs[i].eog) && moe_tokenizer_is_eog(g, moe_tokenizer_eos(g)),
           "%s: the GGUF file's end-of-generation ids are llama.cpp's: %s", vocab, got);
        ok(!strcmp(gotj, eos), "%s: tokenizer.json's end-of-generation id is its EOS alone (%s)", vocab, gotj);
    }

    cJSON *root = test_read_json(golden);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    int n_cases = 0, n_ref = 0, n_ref_sp = 0, n_json = 0, n_rt = 0, n_rt_ok = 0, n_dec = 0, shown = 0;
    cJSON_ArrayForEach(c, cases)
    {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        size_t len = strlen(text);
        n_cases++;
        for (int sp = 0; sp < 2; sp++) {
            int32_t *a = NULL, *b = NULL;
            int na = 0, nb = 0;
            if (moe_tokenizer_encode(g, text, len, sp, &a, &na, &err) != MOE_OK ||
                moe_tokenizer_encode(j, text, len, sp, &b, &nb, &err) != MOE_OK) {
                diag("encode failed: %s", err.msg);
                free(a);
                continue;
            }
            int ref = test_same_ids(cJSON_GetObjectItem(c, sp ? "ids_special" : "ids"), a, na);
            int js = na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0;
            n_ref += !sp && ref;
            n_ref_sp += sp && ref;
            n_json += js;
            if ((!ref || !js) && shown++ < 6)
                show(sp ? "GGUF ids with special tokens" : "GGUF ids", text, a, na);
            if (!sp) {
                char *x = NULL, *y = NULL;
                size_t lx, ly;
                if (moe_tokenizer_decode(g, a, na, 0, &x, &lx, &err) == MOE_OK &&
                    moe_tokenizer_decode(j, a, na, 0, &y, &ly, &err) == MOE_OK && lx == ly && !memcmp(x, y, lx))
                    n_dec++;
                if (cJSON_IsTrue(cJSON_GetObjectItem(c, "roundtrip"))) {
                    n_rt++;
                    n_rt_ok += x && lx == len && memcmp(x, text, len) == 0;
                }
                free(x);
                free(y);
            }
            free(a);
            free(b);
        }
    }
    ok(n_cases >= 300 && n_ref == n_cases, "%s: GGUF ids equal the reference's for %d of %d strings", vocab, n_ref,
       n_cases);
    ok(n_ref_sp == n_cases, "%s: GGUF ids with special tokens (BOS as the file says) equal the reference's for %d "
       "of %d strings", vocab, n_ref_sp, n_cases);
    ok(n_json == 2 * n_cases, "%s: GGUF ids equal tokenizer.json's for %d of %d encodings", vocab, n_json,
       2 * n_cases);
    ok(n_rt_ok == n_rt, "%s: decode(encode(s)) == s through the GGUF tokenizer for %d of %d strings", vocab, n_rt_ok,
       n_rt);
    ok(n_dec == n_cases, "%s: the GGUF tokenizer decodes as tokenizer.json's does for %d of %d strings", vocab,
       n_dec, n_cases);

    /* pieces as the streaming detokenizer shows them, id by id */
    int n_piece = 0, n_ids = moe_tokenizer_vocab_size(g);
    for (int32_t id = 0; id < n_ids; id++) {
        size_t la = 0, lb = 0;
        const char *pa = moe_tokenizer_piece(g, id, &la), *pb = moe_tokenizer_piece(j, id, &lb);
        n_piece += (!pa && !pb) || (pa && pb && la == lb && !memcmp(pa, pb, la));
    }
    ok(n_piece == n_ids, "%s: every token's piece equals tokenizer.json's (%d of %d)", vocab, n_piece, n_ids);

    /* the chat template from the file renders as tokenizer_config.json's */
    char *tg = NULL, *bg = NULL, *eg = NULL, *tj = NULL, *bj = NULL, *ej = NULL;
    moe_error gerr = {0};
    moe_status sg = moe_chat_template_load(gguf, &tg, &bg, &eg, &gerr);
    moe_status sj = moe_chat_template_load(dir, &tj, &bj, &ej, &err);
    if (sj != MOE_OK) {
        ok(sg == MOE_EFORMAT && strstr(gerr.msg, "no chat template (tokenizer.chat_template)") != NULL,
           "%s: no chat template in tokenizer_config.json, none in the GGUF file (%s)", vocab, gerr.msg);
    } else if (ok(sg == MOE_OK, "%s: the GGUF file's chat template loads%s%s", vocab, sg ? ": " : "", gerr.msg)) {
        ok(!strcmp(tg, tj) && (bg == bj || (bg && bj && !strcmp(bg, bj))) && eg && ej && !strcmp(eg, ej),
           "%s: template, BOS text and EOS text equal tokenizer_config.json's (eos \"%s\")", vocab, eg ? eg : "");
        moe_chat_message m[3] = {{"system", "Be brief."}, {"user", "Hi there"}, {"assistant", "Hello!"}};
        char *ra = NULL, *rb = NULL;
        moe_status s1 = moe_chat_render(tg, m, 3, 1, bg, eg, &ra, &err);
        moe_status s2 = moe_chat_render(tj, m, 3, 1, bj, ej, &rb, &err);
        ok(s1 == MOE_OK && s2 == MOE_OK && !strcmp(ra, rb) && strstr(ra, "Hello!"),
           "%s: a three-turn conversation renders the same through both (%zu bytes)", vocab, ra ? strlen(ra) : 0);
        free(ra);
        free(rb);
    }
    free(tg), free(bg), free(eg), free(tj), free(bj), free(ej);
    cJSON_Delete(root);
    moe_tokenizer_free(g);
    moe_tokenizer_free(j);
}

/* ---- hostile metadata ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    unsigned n_kv;
} gw;

static void put(gw *w, const void *s, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2;
        w->p = realloc(w->p, w->cap);
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

static void put_u32(gw *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(gw *w, uint64_t v) { put(w, &v, 8); }
static void put_s(gw *w, const char *s)
{
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}
static void kv_str(gw *w, const char *k, const char *v)
{
    put_s(w, k), put_u32(w, 8), put_s(w, v), w->n_kv++;
}
static void kv_u32(gw *w, const char *k, uint32_t v)
{
    put_s(w, k), put_u32(w, 4), put_u32(w, v), w->n_kv++;
}
/* An array of strings from a ','-separated list. */
static void kv_strs(gw *w, const char *k, const char *list)
{
    put_s(w, k), put_u32(w, 9), put_u32(w, 8);
    uint64_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    put_u64(w, n);
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        put_u64(w, l);
        put(w, p, l);
        if (!e)
            break;
        p = e + 1;
    }
    w->n_kv++;
}
static void kv_i32s(gw *w, const char *k, const int32_t *v, uint64_t n)
{
    put_s(w, k), put_u32(w, 9), put_u32(w, 5), put_u64(w, n), put(w, v, n * 4), w->n_kv++;
}
static void kv_f32s(gw *w, const char *k, const float *v, uint64_t n)
{
    put_s(w, k), put_u32(w, 9), put_u32(w, 6), put_u64(w, n), put(w, v, n * 4), w->n_kv++;
}

/* Write the header and the kvs of w to a temporary file; its path in path. */
static void save(gw *w, char *path)
{
    strcpy(path, "/tmp/moe_vocab_XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "wb");
    uint32_t v = 3;
    uint64_t nt = 0, nkv = w->n_kv;
    fwrite("GGUF", 1, 4, f), fwrite(&v, 4, 1, f), fwrite(&nt, 8, 1, f), fwrite(&nkv, 8, 1, f);
    fwrite(w->p, 1, w->n, f);
    fclose(f);
    free(w->p);
    memset(w, 0, sizeof *w);
}

enum { GOOD, WRONG_TOKENS, BAD_MERGE, BAD_BOS, SCORES, TYPES, TYPE_VALUE, PRE, MODEL, NO_VOCAB, NO_SPACE, BAD_FIM,
       N_CASES };

/* A five-token byte-level vocabulary, broken in one way. */
static void build(gw *w, int how)
{
    static const int32_t types[5] = {1, 1, 1, 1, 3}, bad_type[5] = {1, 1, 9, 1, 3};
    static const float scores[4] = {0, 0, 0, 0};
    kv_str(w, "general.architecture", "llama");
    kv_str(w, "tokenizer.ggml.model", how == MODEL ? "bert" : how == NO_VOCAB ? "no_vocab" : "gpt2");
    kv_str(w, "tokenizer.ggml.pre", how == PRE ? "tekken-9" : "gpt-2");
    if (how == WRONG_TOKENS)
        kv_i32s(w, "tokenizer.ggml.tokens", types, 5);
    else
        kv_strs(w, "tokenizer.ggml.tokens", "a,b,ab,c,<|end|>");
    kv_i32s(w, "tokenizer.ggml.token_type", how == TYPE_VALUE ? bad_type : types, how == TYPES ? 4 : 5);
    if (how == SCORES)
        kv_f32s(w, "tokenizer.ggml.scores", scores, 4);
    kv_strs(w, "tokenizer.ggml.merges", how == BAD_MERGE ? "a b,c d" : how == NO_SPACE ? "a b,ab" : "a b");
    kv_u32(w, "tokenizer.ggml.eos_token_id", 4);
    kv_u32(w, "tokenizer.ggml.bos_token_id", how == BAD_BOS ? 5 : 4);
    if (how == BAD_FIM)
        kv_u32(w, "tokenizer.ggml.fim_rep_token_id", 9);
}

static void check_hostile(void)
{
    static const struct {
        moe_status want;
        const char *says;
    } expect[N_CASES] = {
        [GOOD] = {MOE_OK, ""},
        [WRONG_TOKENS] = {MOE_EFORMAT, "'tokenizer.ggml.tokens' is an array of INT32; an array of STRING"},
        [BAD_MERGE] = {MOE_EFORMAT, "tokenizer.ggml.merges[1] (\"c d\") names a token that is not in"},
        [BAD_BOS] = {MOE_EFORMAT, "tokenizer.ggml.bos_token_id is 5 but the vocabulary has 5 tokens"},
        [SCORES] = {MOE_EFORMAT, "tokenizer.ggml.scores has 4 entries for 5 tokens"},
        [TYPES] = {MOE_EFORMAT, "tokenizer.ggml.token_type has 4 entries for 5 tokens"},
        [TYPE_VALUE] = {MOE_EFORMAT, "tokenizer.ggml.token_type[2] is 9"},
        [PRE] = {MOE_EUNSUPPORTED, "pre-tokenizer \"tekken-9\" (tokenizer.ggml.pre) is not supported"},
        [MODEL] = {MOE_EUNSUPPORTED, "tokenizer.ggml.model \"bert\" is not supported"},
        [NO_VOCAB] = {MOE_EUNSUPPORTED, "carries no vocabulary"},
        [NO_SPACE] = {MOE_EFORMAT, "tokenizer.ggml.merges[1] (\"ab\") is not two tokens"},
        [BAD_FIM] = {MOE_EFORMAT, "tokenizer.ggml.fim_rep_token_id is 9 but the vocabulary has 5 tokens"},
    };
    for (int how = 0; how < N_CASES; how++) {
        gw w = {0};
        char path[64];
        build(&w, how);
        save(&w, path);
        moe_error err = {0};
        moe_tokenizer *t = NULL;
        moe_status st = moe_tokenizer_open(path, &t, &err);
        int good = st == expect[how].want && (st == MOE_OK ? t != NULL : !t && strstr(err.msg, path) &&
                                                                          strstr(err.msg, expect[how].says));
        if (how == GOOD)
            good = ok(good, "the small vocabulary opens");
        else
            good = ok(good, "hostile vocabulary #%d: %s naming the file and %s", how,
                      moe_status_str(expect[how].want), expect[how].says);
        if (!good)
            diag("got %s: %s", moe_status_str(st), err.msg);
        if (how == GOOD && t) {
            int32_t *ids;
            int n;
            st = moe_tokenizer_encode(t, "abc<|end|>", 10, 1, &ids, &n, &err);
            ok(st == MOE_OK && n == 3 && ids[0] == 2 && ids[1] == 3 && ids[2] == 4,
               "the small vocabulary merges \"a b\" and matches its CONTROL token: abc<|end|> -> 2 3 4");
            if (st == MOE_OK)
                free(ids);
        }
        moe_tokenizer_free(t);
        remove(path);
    }
}

/* End of generation in small byte-level vocabularies, by the rules of
 * llama.cpp's llama_vocab::impl::load (src/llama-vocab.cpp): the eos, eot,
 * eom and fim_pad/rep/sep ids, the tokens spelled as its end markers, an
 * eot or fim token looked for by text when no key names it, the last id of
 * a text that is spelled twice, and gpt-oss's <|end|> dropped when
 * <|return|> and <|call|> are there. */
static void check_eog(void)
{
    static const struct {
        const char *tokens; /* ','-separated */
        const char *keys;   /* "name=id ..." tokenizer.ggml.name */
        const char *want;   /* the EOG ids */
        const char *what;
    } cases[] = {
        {"a,b,ab,c,</s>", "eos_token_id=4", "4", "EOS"},
        {"a,b,ab,c,</s>", "eos_token_id=4 eot_token_id=3 eom_token_id=0", "0,3,4", "the eot and eom keys"},
        {"a,b,ab,<|im_end|>,<|endoftext|>,<end_of_turn>,<|eom_id|>,<|eot_id|>,<EOT>,<|end_of_text|>,<|start|>", "",
         "3,4,5,6,7,8,9", "end markers by text, not <|start|>"},
        {"a,b,ab,<|end|>,<|return|>,<|call|>", "", "4,5", "gpt-oss: <|return|> and <|call|>, not <|end|>"},
        {"a,b,ab,<|end|>,<|return|>", "", "3,4", "<|end|> without <|call|>"},
        {"a,b,ab,<PAD>,<|file_sep|>,<reponame>", "", "3,4,5", "FIM pad, sep and repo tokens by text"},
        {"a,b,ab,<PAD>,<|file_sep|>,<reponame>", "fim_pad_token_id=0", "0,4,5", "fim_pad_token_id instead of <PAD>"},
        {"a,b,ab,<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "", "3",
         "DeepSeek's end of sentence as the eot token"},
        {"a,b,ab,<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "eot_token_id=0", "0",
         "an eot key: no eot token by text"},
        {"a,b,ab,<|im_end|>,<|im_end|>", "", "4", "a text spelled twice: its last id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw w = {0};
        char path[64], got[64];
        kv_str(&w, "general.architecture", "llama");
        kv_str(&w, "tokenizer.ggml.model", "gpt2");
        kv_str(&w, "tokenizer.ggml.pre", "gpt-2");
        kv_strs(&w, "tokenizer.ggml.tokens", cases[i].tokens);
        kv_strs(&w, "tokenizer.ggml.merges", "a b");
        for (const char *p = cases[i].keys; *p;) {
            char key[64];
            int len, id;
            if (sscanf(p, "%40[a-z_]=%d%n", key + 15, &id, &len) != 2)
                break;
            memcpy(key, "tokenizer.ggml.", 15);
            kv_u32(&w, key, (uint32_t)id);
            p += len;
            p += *p == ' ';
        }
        save(&w, path);
        moe_error err = {0};
        moe_tokenizer *t = NULL;
        if (moe_tokenizer_open(path, &t, &err) != MOE_OK) {
            ok(0, "end of generation, %s: the vocabulary opens: %s", cases[i].what, err.msg);
            remove(path);
            continue;
        }
        eog_list(t, got, sizeof got);
        /* moe_tokenizer_is_eog says the same as the list, and no for ids out of range */
        const int32_t *ids;
        int n_eog = moe_tokenizer_eog(t, &ids), agree = 1;
        for (int32_t id = -1; id <= moe_tokenizer_vocab_size(t); id++) {
            int in = 0;
            for (int k = 0; k < n_eog; k++)
                in |= ids[k] == id;
            agree &= moe_tokenizer_is_eog(t, id) == in;
        }
        ok(!strcmp(got, cases[i].want) && agree, "end of generation, %s: ids {%s}", cases[i].what, got);
        if (strcmp(got, cases[i].want))
            diag("want {%s}", cases[i].want);
        moe_tokenizer_free(t);
        remove(path);
    }
}

/* Every byte of the small vocabulary file set to each of a few values:
 * each file opens or is refused with a message, never crashes (the
 * sanitizer build makes a memory error fail the test). */
static void check_corruptions(void)
{
    gw w = {0};
    char path[64];
    build(&w, GOOD);
    save(&w, path);
    size_t len;
    char *good = test_slurp(path, &len);
    static const unsigned char vals[] = {0x00, 0x01, 0x09, 0x7f, 0xff};
    int opened = 0, refused = 0, silent = 0;
    for (size_t i = 4; good && i < len; i++)
        for (size_t v = 0; v < sizeof vals; v++) {
            if ((unsigned char)good[i] == vals[v])
                continue;
            FILE *f = fopen(path, "wb");
            fwrite(good, 1, len, f);
            fseek(f, (long)i, SEEK_SET);
            fputc(vals[v], f);
            fclose(f);
            moe_error err = {0};
            moe_tokenizer *t = NULL;
            moe_status st = moe_tokenizer_open(path, &t, &err);
            if (st == MOE_OK) {
                int32_t *ids;
                int n;
                if (moe_tokenizer_encode(t, "abc<|end|> a", 12, 1, &ids, &n, &err) == MOE_OK)
                    free(ids);
                opened++;
            } else {
                refused++;
                silent += !err.msg[0] || t != NULL;
            }
            moe_tokenizer_free(t);
        }
    ok(good && opened + refused > 500 && silent == 0,
       "every one-byte corruption of the small vocabulary opens (%d) or is refused with a message (%d)", opened,
       refused);
    free(good);
    remove(path);
}

int main(int argc, char **argv)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf/vocab-llama2.gguf", test_srcdir());
    check_vocab("llama2", path);
    static const char *const big[] = {"qwen3", "llama3"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s.gguf", argc > 1 ? argv[1] : "", big[i]);
        if (argc < 2)
            skip("%s: no directory of GGUF vocabularies given (tests/gguf_vocab.sh writes them with "
                 "tools/gen_gguf_vocab.py, which needs python3)", big[i]);
        else if (access(path, R_OK) == 0)
            check_vocab(big[i], path);
        else
            ok(0, "%s: tools/gen_gguf_vocab.py wrote %s", big[i], path);
    }
    check_hostile();
    check_eog();
    check_corruptions();

    char no_vocab[1024], dir[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf/vocab-llama2.gguf", test_srcdir());
    snprintf(no_vocab, sizeof no_vocab, "%s/tests/fixtures/gguf/mixtral-tiny-f32.gguf", test_srcdir());
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/llama2", test_srcdir());
    ok(moe_tokenizer_present(path) == 1 && moe_tokenizer_present(no_vocab) == 0 && moe_tokenizer_present(dir) == 1 &&
           moe_tokenizer_present("/nonexistent/model.gguf") == 0,
       "moe_tokenizer_present: a GGUF vocabulary yes, a no_vocab GGUF model no, a tokenizer.json directory yes");
    return done_testing();
}
