/* Tokenizer against golden ids from an independent reference: the
 * @lenml/tokenizers port of Hugging Face tokenizers, run on real Qwen 3,
 * Llama 3 and Llama 2 vocabularies by tools/tokref/gen_golden.mjs. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"


/* Speed is measured by tests/bench/tokenizer.sh, not judged here: the
 * timings below are printed as diagnostics only. */

/* CPU time of this process: `make check -j` runs tests side by side, and
 * wall time would measure the neighbours. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}


static void show_mismatch(const char *what, const char *text, const cJSON *want, const int32_t *ids, int n)
{
    char *w = cJSON_PrintUnformatted(want);
    diag("%s mismatch for \"%.80s\"", what, text);
    diag("  want %.300s", w);
    char got[400];
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof got - 16; i++)
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%d", i ? "," : "", (int)ids[i]);
    got[k] = 0;
    diag("  got  [%s]", got);
    free(w);
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
        if (!l || i + l > n)
            return 0;
        for (size_t k = 1; k < l; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80)
                return 0;
        i += l;
    }
    return 1;
}

/* Stream ids through a detokenizer: the pieces must each be whole UTF-8
 * and together equal the full decode. Returns 1 when they do. */
static int stream_matches(const moe_tokenizer *t, moe_detokenizer *d, const int32_t *ids, int n, int skip)
{
    char *full;
    size_t flen;
    moe_error err;
    if (moe_tokenizer_decode(t, ids, n, skip, &full, &flen, &err) != MOE_OK)
        return 0;
    char *acc = malloc(flen + 64);
    size_t alen = 0;
    int good = acc != NULL;
    for (int i = 0; i < n && good; i++) {
        const char *p;
        size_t l;
        good = moe_detokenizer_push(d, ids[i], &p, &l, &err) == MOE_OK && alen + l <= flen && valid_utf8(p, l);
        if (good)
            memcpy(acc + alen, p, l), alen += l;
    }
    size_t l;
    const char *p = moe_detokenizer_flush(d, &l);
    good = good && l == 0 && alen == flen && memcmp(acc, full, flen) == 0;
    (void)p;
    free(acc);
    free(full);
    return good;
}

static void check_vocab(const char *vocab, double *mbps)
{
    char dir[1024], path[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/%s", test_srcdir(), vocab);
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/%s.json", test_srcdir(), vocab);
    moe_error err = {0};
    moe_tokenizer *t = NULL;
    double t0 = now();
    moe_status st = moe_tokenizer_open(dir, &t, &err);
    double load = now() - t0;
    if (!ok(st == MOE_OK, "%s: tokenizer.json opens", vocab)) {
        diag("%s", err.msg);
        return;
    }
    diag("%s: %d ids loaded in %.3f s of CPU", vocab, moe_tokenizer_vocab_size(t), load);
    size_t len;
    char *json = test_slurp(path, &len);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    free(json);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    if (!ok(cJSON_GetArraySize(cases) >= 300, "%s: at least 300 golden cases", vocab)) {
        cJSON_Delete(root);
        moe_tokenizer_free(t);
        return;
    }
    int n_cases = 0, n_plain = 0, n_special = 0, n_rt = 0, n_rt_ok = 0, shown = 0, n_stream = 0;
    moe_detokenizer *dk = moe_detokenizer_new(t, 0), *dks = moe_detokenizer_new(t, 1);
    cJSON_ArrayForEach(c, cases)
    {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int32_t *ids;
        int n;
        n_cases++;
        if (moe_tokenizer_encode(t, text, strlen(text), 0, &ids, &n, &err) != MOE_OK) {
            diag("encode failed: %s", err.msg);
            continue;
        }
        if (test_same_ids(cJSON_GetObjectItem(c, "ids"), ids, n))
            n_plain++;
        else if (shown++ < 8)
            show_mismatch(vocab, text, cJSON_GetObjectItem(c, "ids"), ids, n);
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "roundtrip"))) {
            char *back;
            size_t blen;
            n_rt++;
            if (moe_tokenizer_decode(t, ids, n, 0, &back, &blen, &err) == MOE_OK) {
                if (blen == strlen(text) && memcmp(back, text, blen) == 0)
                    n_rt_ok++;
                else if (shown++ < 8)
                    diag("%s: decode gives \"%.80s\" for \"%.80s\"", vocab, back, text);
                free(back);
            }
        }
        free(ids);
        if (moe_tokenizer_encode(t, text, strlen(text), 1, &ids, &n, &err) != MOE_OK)
            continue;
        if (stream_matches(t, dk, ids, n, 0) && stream_matches(t, dks, ids, n, 1))
            n_stream++;
        else if (shown++ < 8)
            diag("%s: streaming decode differs for \"%.80s\"", vocab, text);
        if (test_same_ids(cJSON_GetObjectItem(c, "ids_special"), ids, n))
            n_special++;
        else if (shown++ < 8)
            show_mismatch("with special tokens", text, cJSON_GetObjectItem(c, "ids_special"), ids, n);
        free(ids);
    }
    ok(n_plain == n_cases, "%s: ids equal the reference's for %d of %d strings", vocab, n_plain, n_cases);
    ok(n_special == n_cases, "%s: ids with special tokens equal the reference's for %d of %d strings", vocab,
       n_special, n_cases);
    ok(n_rt_ok == n_rt, "%s: decode(encode(s)) == s for %d of the %d strings the reference round-trips", vocab,
       n_rt_ok, n_rt);
    ok(n_stream == n_cases, "%s: streaming decode (BOS included, special tokens kept and skipped) equals the full "
       "decode, in whole UTF-8 characters, for %d of %d strings", vocab, n_stream, n_cases);
    moe_detokenizer_free(dk);
    moe_detokenizer_free(dks);

    /* Invalid UTF-8 has no JavaScript string, so no golden ids: it must
     * still encode, and byte-level vocabularies must give every byte back. */
    const char bad[] = "ok \xff\xfe bad \xc3 trunc \xe2\x82 end";
    int32_t *ids;
    int n;
    st = moe_tokenizer_encode(t, bad, sizeof bad - 1, 0, &ids, &n, &err);
    if (ok(st == MOE_OK && n > 0, "%s: invalid UTF-8 encodes", vocab)) {
        char *back;
        size_t blen;
        st = moe_tokenizer_decode(t, ids, n, 0, &back, &blen, &err);
        ok(st == MOE_OK && blen == sizeof bad - 1 && memcmp(back, bad, blen) == 0,
           "%s: invalid UTF-8 decodes back byte for byte", vocab);
        if (st == MOE_OK)
            free(back);
        free(ids);
    }
    int32_t oob = moe_tokenizer_vocab_size(t);
    char *txt;
    ok(moe_tokenizer_decode(t, &oob, 1, 0, &txt, &len, &err) == MOE_EINVAL, "%s: out-of-range id is refused",
       vocab);

    /* Speed: English prose, repeated to about 1 MB. */
    if (mbps) {
        size_t plen = 0, cap = 1 << 20;
        char *prose = malloc(cap + 4096);
        const cJSON *cc;
        while (plen < cap) {
            int i = 0;
            cJSON_ArrayForEach(cc, cases)
            {
                if (i++ >= 30) /* the prose seeds come first in strings.json */
                    break;
                const char *s = cJSON_GetObjectItem(cc, "text")->valuestring;
                size_t l = strlen(s);
                memcpy(prose + plen, s, l);
                prose[plen + l] = ' ';
                plen += l + 1;
            }
        }
        t0 = now();
        st = moe_tokenizer_encode(t, prose, plen, 0, &ids, &n, &err);
        double dt = now() - t0;
        *mbps = plen / dt / 1e6;
        diag("%s: encoded %zu bytes of prose into %d ids in %.3f s of CPU: %.2f MB/s", vocab, plen, n, dt, *mbps);
        ok(st == MOE_OK && n > (int)(plen / 16), "%s: encodes %zu bytes of prose in one call (%d ids)", vocab, plen, n);
        if (st == MOE_OK)
            free(ids);
        free(prose);
    }
    cJSON_Delete(root);
    moe_tokenizer_free(t);
}

/* Write json to a temporary tokenizer.json and open it. */
static moe_status open_text(const char *json, moe_error *err)
{
    char path[] = "/tmp/moe_tok_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return MOE_EIO;
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
    moe_tokenizer *t = NULL;
    moe_status st = moe_tokenizer_open(path, &t, err);
    moe_tokenizer_free(t);
    remove(path);
    return st;
}

/* Files a user might hand over by mistake end in an error that says what is
 * wrong, never in a crash. */
static void check_bad_files(void)
{
    static const struct {
        const char *json;
        moe_status want;
        const char *says;
    } bad[] = {
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", MOE_EUNSUPPORTED, "Unigram"},
        {"{\"model\": {\"type\": \"BPE\"}}", MOE_EFORMAT, "vocab"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}",
         MOE_EFORMAT, "merge #0"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b c\"]}}",
         MOE_EFORMAT, "merge #0"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}", MOE_EFORMAT, "\"a\""},
        {"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"},"
         " \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", MOE_EUNSUPPORTED, "does not compile"},
        {"{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, "
         "\"merges\": []}}", MOE_EUNSUPPORTED, "BertNormalizer"},
        {"{\"added_tokens\": [{\"id\": 99999999, \"content\": \"x\"}], \"model\": {\"type\": \"BPE\", "
         "\"vocab\": {}, \"merges\": []}}", MOE_EFORMAT, "added token"},
        {"{\"model\": ", MOE_EFORMAT, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moe_error err = {0};
        moe_status st = open_text(bad[i].json, &err);
        if (!ok(st == bad[i].want && strstr(err.msg, bad[i].says), "bad tokenizer.json #%zu: %s naming %s", i,
                moe_status_str(bad[i].want), bad[i].says))
            diag("got %s: %s", moe_status_str(st), err.msg);
    }
}

int main(void)
{
    double mbps;
    check_vocab("qwen3", &mbps);
    check_vocab("llama3", &mbps);
    check_vocab("llama2", &mbps);
    check_bad_files();

    moe_tokenizer *t = (moe_tokenizer *)1;
    moe_error err = {0};
    ok(moe_tokenizer_open("/nonexistent/tokenizer.json", &t, &err) == MOE_EIO && !t && strstr(err.msg, "nonexistent"),
       "a missing tokenizer.json is an I/O error naming the file");
    return done_testing();
}
