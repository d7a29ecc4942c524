/* safetensors: every rule of the format, one hostile file per rule.
 *
 * Files are crafted in a private temporary directory. A rejected file must
 * fail with the stated code and a message that names the file and the
 * problem; an accepted one must give back exactly what was written. At the
 * end every file is truncated and mutated byte by byte to show that no
 * input crashes the parser (run under ASan/UBSan to make that mean much). */
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "tap.h"

static char root[] = "/tmp/moescope-st-XXXXXX";
static char *seen[512]; /* every single file written, for the mutation pass */
static size_t n_seen;

static char *path_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *path_of(const char *fmt, ...)
{
    char rel[512], *p;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    p = malloc(strlen(root) + strlen(rel) + 2);
    sprintf(p, "%s/%s", root, rel);
    return p;
}

static void put(const char *path, const void *a, size_t na, const void *b, size_t nb)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f)) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
}

/* A safetensors file whose length field says `len`; data is `n` bytes of
 * `data`, or zeros when data is NULL. */
static void put_len(const char *path, uint64_t len, const char *hdr, size_t hdr_n,
                    const void *data, size_t n)
{
    unsigned char *buf = calloc(1, 8 + hdr_n + n + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, hdr, hdr_n);
    if (data)
        memcpy(buf + 8 + hdr_n, data, n);
    put(path, buf, 8 + hdr_n + n, NULL, 0);
    free(buf);
    if (n_seen < sizeof seen / sizeof *seen)
        seen[n_seen++] = strdup(path);
}

static void put_st(const char *path, const char *hdr, const void *data, size_t n)
{
    put_len(path, strlen(hdr), hdr, strlen(hdr), data, n);
}

static int check_bad(moe_status rc, st_set *s, const moe_error *e, moe_status code,
                     const char *name, const char *word, const char *what)
{
    /* the word must be in the message proper, not in the path before it */
    const char *at = strstr(e->msg, name);
    int good = rc == code && !s && at && strstr(at + strlen(name), word);
    ok(good, "rejects %s", what);
    if (!good)
        diag("expected code %d with '%s' and '%s'; got %d: %s", code, name, word, rc, e->msg);
    else
        diag("%s", e->msg);
    st_set_close(s);
    return good;
}

/* Open `path` as one file and expect `code` with `word` in the message. */
static void expect_bad(const char *path, moe_status code, const char *word, const char *what)
{
    moe_error e = {0};
    st_set *s = (st_set *)(void *)&e; /* must come back NULL */
    moe_status rc = st_set_open_file(path, &s, &e);
    check_bad(rc, s, &e, code, strrchr(path, '/') + 1, word, what);
}

/* Write header `hdr` with `n` zero data bytes to <root>/<name>, expect failure. */
static void bad(const char *name, const char *hdr, size_t n, moe_status code, const char *word,
                const char *what)
{
    char *p = path_of("%s", name);
    put_st(p, hdr, NULL, n);
    expect_bad(p, code, word, what);
    free(p);
}

static void expect_bad_dir(const char *dir, moe_status code, const char *name, const char *word,
                           const char *what)
{
    moe_error e = {0};
    st_set *s = (st_set *)(void *)&e;
    moe_status rc = st_set_open_dir(dir, &s, &e);
    check_bad(rc, s, &e, code, name, word, what);
}

static st_set *open_good(const char *path, const char *what)
{
    moe_error e = {0};
    st_set *s = NULL;
    moe_status rc = st_set_open_file(path, &s, &e);
    ok(rc == MOE_OK && s, "accepts %s", what);
    if (rc)
        diag("%s", e.msg);
    return s;
}

static st_set *open_good_dir(const char *dir, const char *what)
{
    moe_error e = {0};
    st_set *s = NULL;
    moe_status rc = st_set_open_dir(dir, &s, &e);
    ok(rc == MOE_OK && s, "accepts %s", what);
    if (rc)
        diag("%s", e.msg);
    return s;
}

static void mkdir_in(const char *rel)
{
    char *p = path_of("%s", rel);
    if (mkdir(p, 0700)) {
        printf("Bail out! mkdir %s\n", p);
        exit(1);
    }
    free(p);
}

static void put_text(const char *rel, const char *text)
{
    char *p = path_of("%s", rel);
    put(p, text, strlen(text), NULL, 0);
    free(p);
}

/* One tensor file under <root>/<rel>: U8 tensors named by `names` (", "
 * separated), one byte each. */
static void put_u8s(const char *rel, const char *names)
{
    char hdr[1024], *p = path_of("%s", rel);
    const char *s = names;
    size_t used = 0, n = 0;
    used += (size_t)snprintf(hdr + used, sizeof hdr - used, "{");
    while (*s) {
        size_t len = strcspn(s, ",");
        used += (size_t)snprintf(hdr + used, sizeof hdr - used,
                                 "%s\"%.*s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}",
                                 n ? "," : "", (int)len, s, n, n + 1);
        n++;
        s += len;
        while (*s == ',' || *s == ' ')
            s++;
    }
    snprintf(hdr + used, sizeof hdr - used, "}");
    put_st(p, hdr, NULL, n);
    free(p);
}

/* ---- hostile single files --------------------------------------------- */

static void test_framing(void)
{
    char *p;

    p = path_of("empty.safetensors");
    put(p, "", 0, NULL, 0);
    expect_bad(p, MOE_EFORMAT, "empty", "an empty file");
    free(p);

    p = path_of("seven.safetensors");
    put(p, "\x02\0\0\0\0\0\0", 7, NULL, 0);
    expect_bad(p, MOE_EFORMAT, "too short", "a 7-byte file");
    free(p);

    p = path_of("past_end.safetensors");
    put_len(p, 1000, "{}", 2, NULL, 0);
    expect_bad(p, MOE_EFORMAT, "past the end", "a header length past the end of the file");
    free(p);

    p = path_of("len_max.safetensors");
    put_len(p, UINT64_MAX, "{}", 2, NULL, 0);
    expect_bad(p, MOE_EFORMAT, "limit", "a header length of 2^64-1");
    free(p);

    p = path_of("len_100mb.safetensors");
    put_len(p, 100000001, "{}", 2, NULL, 0);
    expect_bad(p, MOE_EFORMAT, "limit", "a header length of 100,000,001 bytes");
    free(p);

    p = path_of("len_short.safetensors"); /* length cuts the JSON short */
    put_len(p, 5, "{\"a\":{}}", 8, NULL, 0);
    expect_bad(p, MOE_EFORMAT, "JSON", "a header length that cuts the JSON short");
    free(p);

    bad("not_utf8.safetensors", "{\"a\xff\":1}", 0, MOE_EFORMAT, "UTF-8", "a non-UTF-8 header");
    bad("overlong.safetensors", "{\"\xc0\xaf\":1}", 0, MOE_EFORMAT, "UTF-8",
        "an overlong UTF-8 sequence");
    bad("surrogate.safetensors", "{\"\xed\xa0\x80\":1}", 0, MOE_EFORMAT, "UTF-8",
        "a UTF-8-encoded surrogate");
    bad("no_brace.safetensors", "x{}", 0, MOE_EFORMAT, "'{'", "a header not starting with '{'");
    bad("bom.safetensors", "\xef\xbb\xbf{}", 0, MOE_EFORMAT, "'{'", "a header starting with a BOM");
    bad("blank.safetensors", "    ", 0, MOE_EFORMAT, "blank", "a header of spaces only");
    bad("array.safetensors", "[]", 0, MOE_EFORMAT, "object", "a top-level array");
    bad("malformed.safetensors", "{\"a\":{\"dtype\":}", 0, MOE_EFORMAT, "JSON", "malformed JSON");
    bad("garbage_after.safetensors", "{} x", 0, MOE_EFORMAT, "after", "text after the JSON object");
    bad("two_objects.safetensors", "{}{}", 0, MOE_EFORMAT, "after", "two JSON objects");
    bad("ctrl_out.safetensors", "{\x01}", 0, MOE_EFORMAT, "control", "a control byte between tokens");
    bad("ctrl_in.safetensors", "{\"a\nb\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0,
        MOE_EFORMAT, "control", "a raw newline inside a tensor name");
    bad("nul_escape.safetensors", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
        0, MOE_EFORMAT, "NUL", "an escaped NUL in a tensor name");
    bad("bad_escape.safetensors", "{\"a\\x\":{}}", 0, MOE_EFORMAT, "invalid escape",
        "an unknown escape \\x");
    bad("bad_u_escape.safetensors", "{\"__metadata__\":{\"k\":\"h\\u\"a\"e9\"}}", 0, MOE_EFORMAT,
        "invalid \\u escape", "a \\u escape with a quote among its digits");
    bad("short_u_escape.safetensors", "{\"__metadata__\":{\"k\":\"\\u12\"}}", 0, MOE_EFORMAT,
        "invalid \\u escape", "a \\u escape with two digits");
    bad("lone_surrogate.safetensors", "{\"__metadata__\":{\"k\":\"\\ud800\"}}", 0, MOE_EFORMAT,
        "JSON", "a lone UTF-16 surrogate escape");
    bad("leading_zero.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}",
        1, MOE_EFORMAT, "malformed number", "a number with a leading zero");
    bad("bare_dot.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.],\"data_offsets\":[0,1]}}", 1,
        MOE_EFORMAT, "malformed number", "a number ending in '.'");
    bad("inf.safetensors",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1e400}}", 1, MOE_EFORMAT,
        "out of range", "a number that overflows a double, in an ignored field");

    /* 100000 '[' trips the depth rule long before cJSON's own limit */
    size_t depth = 100000;
    char *deep = malloc(depth + 8);
    memcpy(deep, "{\"a\":", 5);
    memset(deep + 5, '[', depth);
    deep[5 + depth] = '\0';
    bad("deep.safetensors", deep, 0, MOE_EFORMAT, "nested", "100000 nested arrays");
    /* 200 levels: within cJSON's limit of 1000, past serde_json's 127 */
    char *mid = malloc(1000);
    size_t k = (size_t)sprintf(mid, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":");
    memset(mid + k, '[', 200);
    memset(mid + k + 200, ']', 200);
    strcpy(mid + k + 400, "}}");
    bad("deep200.safetensors", mid, 0, MOE_EFORMAT, "nested", "200 nested arrays in an ignored field");
    /* 127 levels in all is what serde_json still reads */
    k = (size_t)sprintf(mid, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":");
    memset(mid + k, '[', 125);
    memset(mid + k + 125, ']', 125);
    strcpy(mid + k + 250, "}}");
    p = path_of("deep127.safetensors");
    put_st(p, mid, NULL, 0);
    st_set_close(open_good(p, "127 levels of nesting"));
    free(p);
    free(mid);
    free(deep);
}

#define T(dtype, shape, offs) "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static void test_entries(void)
{
    bad("dup_name.safetensors", "{\"a\":" T("U8", "[4]", "[0,4]") ",\"a\":" T("U8", "[4]", "[4,8]") "}",
        8, MOE_EFORMAT, "twice", "a duplicate tensor name");
    bad("dup_field.safetensors",
        "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
        MOE_EFORMAT, "twice", "a duplicate \"dtype\" field");
    bad("not_object.safetensors", "{\"a\":[1,2]}", 0, MOE_EFORMAT, "not an object",
        "a tensor entry that is an array");
    bad("no_dtype.safetensors", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, MOE_EFORMAT,
        "dtype", "an entry without dtype");
    bad("no_offsets.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, MOE_EFORMAT,
        "data_offsets", "an entry without data_offsets");
    bad("bad_dtype.safetensors", "{\"a\":" T("F33", "[1]", "[0,4]") "}", 4, MOE_EFORMAT,
        "unknown dtype 'F33'", "an unknown dtype");
    bad("lower_dtype.safetensors", "{\"a\":" T("f32", "[1]", "[0,4]") "}", 4, MOE_EFORMAT,
        "unknown dtype 'f32'", "a lower-case dtype");
    bad("num_dtype.safetensors", "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
        MOE_EFORMAT, "not a string", "a numeric dtype");
    bad("fnuz.safetensors", "{\"a\":" T("F8_E4M3FNUZ", "[1]", "[0,1]") "}", 1, MOE_EUNSUPPORTED,
        "F8_E4M3FNUZ", "a dtype the crate knows and st_dtype does not");
    bad("neg_dim.safetensors", "{\"a\":" T("U8", "[-1]", "[0,0]") "}", 0, MOE_EFORMAT, "negative",
        "a negative dimension");
    bad("frac_dim.safetensors", "{\"a\":" T("U8", "[1.5]", "[0,1]") "}", 1, MOE_EFORMAT,
        "not an integer", "a fractional dimension");
    bad("float_dim.safetensors", "{\"a\":" T("U8", "[2.0]", "[0,2]") "}", 2, MOE_EFORMAT,
        "not an integer", "a dimension written 2.0 (serde_json refuses it as usize)");
    bad("exp_dim.safetensors", "{\"a\":" T("U8", "[1e1]", "[0,10]") "}", 10, MOE_EFORMAT,
        "not an integer", "a dimension written 1e1");
    bad("str_dim.safetensors", "{\"a\":" T("U8", "[\"4\"]", "[0,4]") "}", 4, MOE_EFORMAT,
        "a string", "a dimension that is a string");
    bad("shape_obj.safetensors", "{\"a\":" T("U8", "{}", "[0,0]") "}", 0, MOE_EFORMAT,
        "not an array", "a shape that is an object");
    bad("huge_dim.safetensors", "{\"a\":" T("U8", "[18446744073709551616]", "[0,0]") "}", 0,
        MOE_EFORMAT, "64 bits", "a dimension of 2^64");
    bad("int64_dim.safetensors", "{\"a\":" T("U8", "[0, 9223372036854775808]", "[0,0]") "}", 0,
        MOE_EUNSUPPORTED, "larger than moescope can represent",
        "an empty tensor with a dimension past INT64_MAX (the crate accepts it)");
    bad("int64_lone.safetensors", "{\"a\":" T("U8", "[9223372036854775808]", "[0,0]") "}", 0,
        MOE_EFORMAT, "overflow", "a lone dimension of 2^63 (its bit count overflows)");
    bad("nine_dims.safetensors", "{\"a\":" T("U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 1,
        MOE_EUNSUPPORTED, "at most 8", "9 dimensions");
    bad("offs_one.safetensors", "{\"a\":" T("U8", "[1]", "[1]") "}", 1, MOE_EFORMAT, "exactly 2",
        "data_offsets with one entry");
    bad("offs_three.safetensors", "{\"a\":" T("U8", "[1]", "[0,1,1]") "}", 1, MOE_EFORMAT,
        "exactly 2", "data_offsets with three entries");
    bad("offs_neg.safetensors", "{\"a\":" T("U8", "[0]", "[-1,-1]") "}", 0, MOE_EFORMAT, "negative",
        "negative data_offsets");
    bad("begin_gt_end.safetensors", "{\"a\":" T("U8", "[0]", "[4,0]") "}", 4, MOE_EFORMAT,
        "begin after", "data_offsets whose begin is past their end");
    bad("outside.safetensors", "{\"a\":" T("F32", "[4]", "[0,16]") "}", 8, MOE_EFORMAT,
        "holds only 8", "data_offsets past the end of the data");
    bad("outside_far.safetensors", "{\"a\":" T("U8", "[1]", "[18446744073709551614,18446744073709551615]") "}",
        1, MOE_EFORMAT, "hole", "data_offsets near 2^64");
    bad("overlap.safetensors", "{\"a\":" T("U8", "[4]", "[0,4]") ",\"b\":" T("U8", "[4]", "[2,6]") "}",
        6, MOE_EFORMAT, "overlaps", "overlapping tensors");
    bad("same_offsets.safetensors",
        "{\"a\":" T("U8", "[4]", "[0,4]") ",\"b\":" T("U8", "[4]", "[0,4]") "}", 4, MOE_EFORMAT,
        "overlaps", "two tensors on the same bytes");
    bad("empty_inside.safetensors",
        "{\"a\":" T("U8", "[8]", "[0,8]") ",\"e\":" T("U8", "[0]", "[4,4]") "}", 8, MOE_EFORMAT,
        "overlaps", "an empty tensor placed inside another");
    bad("hole.safetensors", "{\"a\":" T("U8", "[4]", "[0,4]") ",\"b\":" T("U8", "[4]", "[6,10]") "}",
        10, MOE_EFORMAT, "hole", "a hole between tensors");
    bad("hole_first.safetensors", "{\"a\":" T("U8", "[4]", "[2,6]") "}", 6, MOE_EFORMAT, "hole",
        "a first tensor that does not begin at 0");
    bad("trailing.safetensors", "{\"a\":" T("U8", "[4]", "[0,4]") "}", 5, MOE_EFORMAT, "trailing",
        "a byte after the last tensor");
    bad("trailing_empty.safetensors", "{}", 3, MOE_EFORMAT, "trailing",
        "data bytes in a file with no tensors");
    bad("model.safetensors", "{\"model.layers.0.mlp.up_proj.weight\":" T("F32", "[5, 6]", "[0,100]") "}",
        100, MOE_EFORMAT, "data_offsets [0, 100] hold 100 bytes but F32 shape [5, 6] needs 120",
        "a byte count that does not match the shape");
    bad("overflow3.safetensors",
        "{\"a\":" T("F32", "[4294967296, 4294967296, 4294967296]", "[0,0]") "}", 0, MOE_EFORMAT,
        "overflow", "a shape whose element count overflows");
    bad("overflow_crate1.safetensors", "{\"a\":" T("I32", "[2,18446744073709551614]", "[0,16]") "}",
        16, MOE_EFORMAT, "overflow", "the crate's first overflow case");
    bad("overflow_bits.safetensors", "{\"a\":" T("I32", "[2,9223372036854775807]", "[0,16]") "}", 16,
        MOE_EFORMAT, "overflow", "an element count whose bit size overflows");
    bad("overflow_before_zero.safetensors",
        "{\"a\":" T("U8", "[4611686018427387904,4611686018427387904,0]", "[0,0]") "}", 0, MOE_EFORMAT,
        "overflow", "an overflow before a zero dimension (the crate folds left)");
    bad("subbyte.safetensors", "{\"a\":" T("F4", "[3]", "[0,2]") "}", 2, MOE_EFORMAT,
        "whole number of bytes", "an F4 tensor of 12 bits");
    bad("subbyte6.safetensors", "{\"a\":" T("F6_E2M3", "[2]", "[0,2]") "}", 2, MOE_EFORMAT,
        "whole number of bytes", "an F6 tensor of 12 bits");
    bad("meta_num.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0, MOE_EFORMAT,
        "not a string", "metadata with a non-string value");
    bad("meta_nested.safetensors", "{\"__metadata__\":{\"x\":{\"y\":\"z\"}}}", 0, MOE_EFORMAT,
        "not a string", "metadata with an object value");
    bad("meta_array.safetensors", "{\"__metadata__\":[\"a\"]}", 0, MOE_EFORMAT, "__metadata__",
        "metadata that is an array");
    bad("meta_str.safetensors", "{\"__metadata__\":\"pt\"}", 0, MOE_EFORMAT, "__metadata__",
        "metadata that is a string");
    bad("meta_twice.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, MOE_EFORMAT,
        "two __metadata__", "two __metadata__ entries");
    bad("meta_dup_key.safetensors", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, MOE_EFORMAT,
        "twice", "a metadata key given twice");
}

/* ---- accepted single files ------------------------------------------- */

static void test_dtypes(void)
{
    /* Each dtype as shape [2, 4]: 8 elements, so nbytes == bits per element. */
    static const unsigned bits[ST_DTYPE_COUNT] = {
        [ST_BOOL] = 8, [ST_U8] = 8,  [ST_I8] = 8,   [ST_F8_E5M2] = 8, [ST_F8_E4M3] = 8,
        [ST_F8_E8M0] = 8, [ST_F4] = 4, [ST_F6_E2M3] = 6, [ST_F6_E3M2] = 6, [ST_I16] = 16,
        [ST_U16] = 16, [ST_F16] = 16, [ST_BF16] = 16, [ST_I32] = 32, [ST_U32] = 32,
        [ST_F32] = 32, [ST_F64] = 64, [ST_I64] = 64, [ST_U64] = 64, [ST_C64] = 64,
    };
    static const char *const names[ST_DTYPE_COUNT] = {
        "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "I16",
        "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64", "C64",
    };
    char hdr[4096];
    unsigned char data[512];
    size_t used = 0, at = 0, begin[ST_DTYPE_COUNT];
    /* Written in reverse so that offsets do not follow header order. */
    used += (size_t)snprintf(hdr, sizeof hdr, "{");
    for (int d = ST_DTYPE_COUNT - 1; d >= 0; d--) {
        begin[d] = at;
        used += (size_t)snprintf(hdr + used, sizeof hdr - used,
                                 "%s\"t_%s\":{\"dtype\":\"%s\",\"shape\":[2,4],\"data_offsets\":[%zu,%zu]}",
                                 d == ST_DTYPE_COUNT - 1 ? "" : ",", names[d], names[d], at,
                                 at + bits[d]);
        at += bits[d];
    }
    snprintf(hdr + used, sizeof hdr - used, "}");
    for (size_t i = 0; i < at; i++)
        data[i] = (unsigned char)(i * 7 + 1);
    char *p = path_of("dtypes.safetensors");
    put_st(p, hdr, data, at);
    st_set *s = open_good(p, "every dtype");
    free(p);
    if (!s)
        return;
    ok(st_set_count(s) == ST_DTYPE_COUNT, "holds %d tensors", ST_DTYPE_COUNT);
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        char name[32];
        snprintf(name, sizeof name, "t_%s", names[d]);
        const st_tensor *t = st_set_find(s, name);
        ok(t && t->dtype == (st_dtype)d && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 4 &&
               t->numel == 8 && t->nbytes == bits[d] &&
               *(const unsigned char *)t->data == data[begin[d]] && !strcmp(st_dtype_name(t->dtype), names[d]),
           "%s: %u bytes for 8 elements, data at offset %zu", names[d], bits[d], begin[d]);
    }
    /* st_set_at walks names in order */
    int sorted = 1;
    for (size_t i = 1; i < st_set_count(s); i++)
        sorted &= strcmp(st_set_at(s, i - 1)->name, st_set_at(s, i)->name) < 0;
    ok(sorted, "st_set_at gives tensors in name order");
    st_set_close(s);

    ok(st_dtype_to_moe(ST_F32) == MOE_F32 && st_dtype_to_moe(ST_F16) == MOE_F16 &&
           st_dtype_to_moe(ST_BF16) == MOE_BF16 && st_dtype_to_moe(ST_F64) == -1 &&
           st_dtype_to_moe(ST_U8) == -1 && st_dtype_to_moe(ST_F8_E4M3) == -1,
       "st_dtype_to_moe maps F32, F16, BF16 and nothing else");
}

static void test_good_files(void)
{
    char *p;
    st_set *s;

    /* Known floats, a scalar and empty tensors in one file. */
    float w[6] = {0.5f, -1.25f, 3.0f, 1e-3f, -0.0f, 65504.0f}, sc = 3.25f;
    unsigned char data[28];
    memcpy(data, w, sizeof w);
    memcpy(data + 24, &sc, 4);
    p = path_of("floats.safetensors");
    put_st(p,
           "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"h\\u00e9llo\"},"
           "\"w\":" T("F32", "[2, 3]", "[0,24]") ",\"scalar\":" T("F32", "[]", "[24,28]")
           ",\"e0\":" T("I32", "[2,0]", "[0,0]") ",\"e1\":" T("F16", "[0]", "[24,24]")
           ",\"e2\":" T("BF16", "[3,0,5]", "[28,28]") "}",
           data, sizeof data);
    s = open_good(p, "floats, a scalar and empty tensors");
    free(p);
    if (s) {
        const st_tensor *t = st_set_find(s, "w");
        float back[6] = {0};
        if (t)
            memcpy(back, t->data, sizeof back);
        ok(t && t->dtype == ST_F32 && t->numel == 6 && t->nbytes == 24 && !memcmp(back, w, sizeof w),
           "w reads back the six floats written");
        t = st_set_find(s, "scalar");
        float v = 0;
        if (t)
            memcpy(&v, t->data, 4);
        ok(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4 && v == 3.25f,
           "a scalar has ndim 0, one element and its value");
        t = st_set_find(s, "e2");
        ok(t && t->ndim == 3 && t->numel == 0 && t->nbytes == 0 && t->shape[2] == 5,
           "an empty tensor keeps its shape and holds 0 bytes");
        ok(st_set_find(s, "e0") && st_set_find(s, "e1") && st_set_count(s) == 5,
           "empty tensors at the start and middle are found");
        const char *fmt = st_set_metadata(s, "format"), *note = st_set_metadata(s, "note");
        ok(fmt && !strcmp(fmt, "pt") && note && !strcmp(note, "h\xc3\xa9llo") &&
               !st_set_metadata(s, "absent"),
           "metadata is readable, escapes decoded");
        ok(!st_set_find(s, "__metadata__") && !st_set_find(s, "nope") && !st_set_find(s, "W"),
           "absent names are not found");
        t = st_set_find(s, "w");
        ok(t && t->file && strstr(t->file, "floats.safetensors"), "a tensor knows its file");
        st_set_close(s);
    }

    /* Header padded with trailing spaces to 8-byte alignment, as writers do. */
    const char *h = "{\"a\":" T("U8", "[3]", "[0,3]") "}";
    char padded[256];
    size_t n = strlen(h), pn = (n + 7) / 8 * 8 + 8;
    memcpy(padded, h, n);
    memset(padded + n, ' ', pn - n);
    p = path_of("padded.safetensors");
    put_len(p, pn, padded, pn, "xyz", 3);
    s = open_good(p, "a header padded with trailing spaces");
    ok(s && st_set_find(s, "a") && !memcmp(st_set_find(s, "a")->data, "xyz", 3),
       "data after a padded header is where it belongs");
    st_set_close(s);
    free(p);

    p = path_of("lead_ws.safetensors"); /* the crate reads leading JSON whitespace since 2026 */
    put_st(p, "\t\n \r{\"a\":" T("U8", "[1]", "[0,1]") "}\r\n\t ", "q", 1);
    st_set_close(open_good(p, "a header with leading and trailing JSON whitespace"));
    free(p);

    p = path_of("empty_obj.safetensors");
    put_st(p, "{}", NULL, 0);
    s = open_good(p, "an empty header object");
    ok(s && st_set_count(s) == 0 && !st_set_find(s, "a") && !st_set_metadata(s, "x"),
       "a file with no tensors holds none");
    st_set_close(s);
    free(p);

    p = path_of("meta_only.safetensors");
    put_st(p, "{\"__metadata__\":{\"k\":\"v\"}}", NULL, 0);
    s = open_good(p, "a header with only metadata");
    ok(s && st_set_count(s) == 0 && st_set_metadata(s, "k") && !strcmp(st_set_metadata(s, "k"), "v"),
       "metadata-only file keeps its metadata");
    st_set_close(s);
    free(p);

    p = path_of("meta_null.safetensors"); /* serde reads null as an absent Option */
    put_st(p, "{\"__metadata__\":null,\"a\":" T("U8", "[1]", "[0,1]") "}", "z", 1);
    s = open_good(p, "__metadata__: null");
    ok(s && !st_set_metadata(s, "format"), "null metadata reads as none");
    st_set_close(s);
    free(p);

    p = path_of("unknown_field.safetensors"); /* serde ignores fields it does not know */
    put_st(p,
           "{\"a\":{\"dtype\":\"U8\",\"extra\":{\"x\":[1.5,true,null,\"s\"]},\"shape\":[2],"
           "\"data_offsets\":[0,2]}}",
           "ab", 2);
    st_set_close(open_good(p, "a tensor entry with an unknown field"));
    free(p);

    p = path_of("exact.safetensors"); /* digits past 2^53 read exactly */
    put_st(p, "{\"a\":" T("U8", "[0, 9007199254740993]", "[0,0]") "}", NULL, 0);
    s = open_good(p, "a dimension of 2^53 + 1 in an empty tensor");
    ok(s && st_set_find(s, "a") && st_set_find(s, "a")->shape[1] == 9007199254740993LL,
       "dimensions are read from their digits, not through a double");
    st_set_close(s);
    free(p);

    p = path_of("empty_twice.safetensors"); /* several empty tensors at one offset */
    put_st(p,
           "{\"a\":" T("U8", "[2]", "[0,2]") ",\"e\":" T("U8", "[0]", "[2,2]") ",\"f\":" T("U8", "[0]",
                                                                                         "[2,2]")
           ",\"b\":" T("U8", "[1]", "[2,3]") ",\"g\":" T("U8", "[0]", "[3,3]") "}",
           "abc", 3);
    s = open_good(p, "empty tensors sharing an offset, and one at the end");
    ok(s && st_set_count(s) == 5 && !memcmp(st_set_find(s, "b")->data, "c", 1),
       "tensors around empty ones point at their bytes");
    st_set_close(s);
    free(p);

    p = path_of("subbyte_ok.safetensors");
    put_st(p, "{\"a\":" T("F4", "[3,2]", "[0,3]") ",\"b\":" T("F6_E3M2", "[4]", "[3,6]") "}", "abcdef", 6);
    s = open_good(p, "F4 and F6 tensors of whole bytes");
    ok(s && st_set_find(s, "a")->nbytes == 3 && st_set_find(s, "b")->nbytes == 3,
       "F4 [3, 2] and F6 [4] take 3 bytes each");
    st_set_close(s);
    free(p);
}

/* ---- directories ------------------------------------------------------ */

static void test_dirs(void)
{
    char *d;
    st_set *s;

    /* A sharded checkpoint: two shards named by the index, one extra tensor
     * in a shard beyond the map, and a stray file the index does not name. */
    mkdir_in("sharded");
    put_u8s("sharded/model-00001-of-00002.safetensors", "a, b");
    put_u8s("sharded/model-00002-of-00002.safetensors", "c, extra");
    put_u8s("sharded/stray.safetensors", "zzz");
    put_text("sharded/model.safetensors.index.json",
             "{\"metadata\":{\"total_size\":4},\"weight_map\":{"
             "\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\","
             "\"c\":\"model-00002-of-00002.safetensors\"}}\n");
    d = path_of("sharded");
    s = open_good_dir(d, "a sharded directory with an index");
    if (s) {
        const st_tensor *a = st_set_find(s, "a"), *c = st_set_find(s, "c");
        ok(a && c && st_set_find(s, "b") && strstr(a->file, "model-00001-of-00002") &&
               strstr(c->file, "model-00002-of-00002"),
           "every tensor in the weight_map is found in its shard");
        ok(st_set_find(s, "extra") != NULL, "a shard's tensor missing from the map is still found");
        ok(!st_set_find(s, "zzz") && st_set_count(s) == 4, "a file the index does not name is not read");
        st_set_close(s);
    }
    free(d);

    /* A Hugging Face cache snapshot: the shard is a symlink to a blob. */
    mkdir_in("blobs");
    mkdir_in("snap");
    put_u8s("blobs/0123abcd", "x");
    d = path_of("snap/model.safetensors");
    if (symlink("../blobs/0123abcd", d))
        diag("symlink failed");
    free(d);
    d = path_of("snap");
    s = open_good_dir(d, "a snapshot whose model.safetensors is a symlink");
    ok(s && st_set_count(s) == 1 && st_set_find(s, "x"), "the linked file's tensor is found");
    st_set_close(s);
    free(d);

    /* model.safetensors wins over other files. */
    mkdir_in("single");
    put_u8s("single/model.safetensors", "w");
    put_u8s("single/adapter.safetensors", "w, v");
    d = path_of("single");
    s = open_good_dir(d, "a directory with model.safetensors");
    ok(s && st_set_count(s) == 1 && st_set_find(s, "w"), "model.safetensors alone is read");
    st_set_close(s);
    free(d);

    /* No index, no model.safetensors: every *.safetensors in name order. */
    mkdir_in("multi");
    put_text("multi/b.safetensors", ""); /* replaced below; proves sort, not readdir order */
    {
        char *p = path_of("multi/b.safetensors");
        put_st(p, "{\"__metadata__\":{\"who\":\"b\"},\"y\":" T("U8", "[1]", "[0,1]") "}", "y", 1);
        free(p);
        p = path_of("multi/a.safetensors");
        put_st(p, "{\"__metadata__\":{\"who\":\"a\"},\"x\":" T("U8", "[1]", "[0,1]") "}", "x", 1);
        free(p);
    }
    put_text("multi/notes.txt", "not a tensor file");
    mkdir_in("multi/dir.safetensors"); /* a directory with the suffix is skipped */
    d = path_of("multi");
    s = open_good_dir(d, "a directory of unindexed files");
    ok(s && st_set_count(s) == 2 && st_set_find(s, "x") && st_set_find(s, "y") &&
           st_set_metadata(s, "who") && !strcmp(st_set_metadata(s, "who"), "a"),
       "both files are read; metadata comes from the first by name");
    st_set_close(s);
    free(d);

    /* Hostile directories. */
    mkdir_in("none");
    put_text("none/README.md", "nothing here");
    d = path_of("none");
    expect_bad_dir(d, MOE_EIO, "none", "no ", "a directory with no safetensors");
    free(d);

    d = path_of("missing");
    expect_bad_dir(d, MOE_EIO, "missing", "cannot open", "a directory that does not exist");
    free(d);

    mkdir_in("dup_files");
    put_u8s("dup_files/a.safetensors", "p, q");
    put_u8s("dup_files/b.safetensors", "q");
    d = path_of("dup_files");
    expect_bad_dir(d, MOE_EFORMAT, "dup_files", "in both", "a tensor in two unindexed files");
    free(d);

    mkdir_in("dup_file_bad");
    put_u8s("dup_file_bad/a.safetensors", "p");
    put_text("dup_file_bad/b.safetensors", "junk");
    d = path_of("dup_file_bad");
    expect_bad_dir(d, MOE_EFORMAT, "b.safetensors", "too short", "a broken file among good ones");
    free(d);
}

/* An index directory holding shards s1 (a, b) and s2 (c) and `index`. */
static char *index_case(const char *name, const char *index)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s", name);
    mkdir_in(rel);
    snprintf(rel, sizeof rel, "%s/s1.safetensors", name);
    put_u8s(rel, "a, b");
    snprintf(rel, sizeof rel, "%s/s2.safetensors", name);
    put_u8s(rel, "c");
    snprintf(rel, sizeof rel, "%s/model.safetensors.index.json", name);
    put_text(rel, index);
    return path_of("%s", name);
}

static void test_index(void)
{
    char *d;
    const char *I = "model.safetensors.index.json";

    d = index_case("ix_ok", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
                            "\"c\":\"s2.safetensors\"}}");
    st_set *s = open_good_dir(d, "the baseline index case");
    ok(s && st_set_count(s) == 3, "it holds a, b and c");
    st_set_close(s);
    free(d);

    d = index_case("ix_malformed", "{\"weight_map\": {\"a\": ");
    expect_bad_dir(d, MOE_EFORMAT, I, "JSON", "a malformed index");
    free(d);
    d = index_case("ix_array", "[]");
    expect_bad_dir(d, MOE_EFORMAT, I, "not an object", "an index that is an array");
    free(d);
    d = index_case("ix_no_map", "{\"metadata\":{}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "weight_map", "an index without weight_map");
    free(d);
    d = index_case("ix_map_array", "{\"weight_map\":[]}");
    expect_bad_dir(d, MOE_EFORMAT, I, "weight_map", "a weight_map that is an array");
    free(d);
    d = index_case("ix_map_empty", "{\"weight_map\":{}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "no tensors", "an empty weight_map");
    free(d);
    d = index_case("ix_map_twice", "{\"weight_map\":{\"a\":\"s1.safetensors\"},\"weight_map\":{}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "twice", "two weight_map entries");
    free(d);
    d = index_case("ix_value_num", "{\"weight_map\":{\"a\":1}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "not a file name", "a weight_map value that is a number");
    free(d);
    d = index_case("ix_missing_shard", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":"
                                       "\"s1.safetensors\",\"c\":\"s3.safetensors\"}}");
    expect_bad_dir(d, MOE_EIO, "s3.safetensors", "cannot open", "a shard that does not exist");
    free(d);

    put_u8s("x.safetensors", "a"); /* would load if the escape were followed */
    d = index_case("ix_escape", "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "plain file name", "a shard path escaping the directory");
    free(d);
    d = index_case("ix_subdir", "{\"weight_map\":{\"a\":\"sub/s1.safetensors\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "plain file name", "a shard path with a directory");
    free(d);
    d = index_case("ix_absolute", "{\"weight_map\":{\"a\":\"/etc/passwd\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "plain file name", "an absolute shard path");
    free(d);
    d = index_case("ix_dotdot", "{\"weight_map\":{\"a\":\"..\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "plain file name", "a shard named '..'");
    free(d);
    d = index_case("ix_absent", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"q\":\"s1.safetensors\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "does not hold", "a listed tensor absent from its shard");
    free(d);
    d = index_case("ix_wrong_shard", "{\"weight_map\":{\"a\":\"s2.safetensors\",\"c\":\"s1.safetensors\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "does not hold", "a tensor listed in the wrong shard");
    free(d);
    d = index_case("ix_dup_key", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s2.safetensors\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "twice", "a tensor listed twice in the weight_map");
    free(d);

    d = index_case("ix_two_shards", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    put_u8s("ix_two_shards/s2.safetensors", "c, a");
    expect_bad_dir(d, MOE_EFORMAT, "ix_two_shards", "in both", "a tensor present in two shards");
    free(d);

    d = index_case("ix_bad_shard", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    {
        char *p = path_of("ix_bad_shard/s2.safetensors");
        put_st(p, "[]", NULL, 0);
        free(p);
    }
    expect_bad_dir(d, MOE_EFORMAT, "s2.safetensors", "'{'", "a shard that is itself malformed");
    free(d);

    char *deep = malloc(100100);
    memcpy(deep, "{\"weight_map\":", 14);
    memset(deep + 14, '[', 100000);
    deep[14 + 100000] = '\0';
    d = index_case("ix_deep", deep);
    expect_bad_dir(d, MOE_EFORMAT, I, "JSON", "an index nested 100000 deep");
    free(d);
    free(deep);

    d = index_case("ix_not_utf8", "{\"weight_map\":{\"a\xff\":\"s1.safetensors\"}}");
    expect_bad_dir(d, MOE_EFORMAT, I, "UTF-8", "an index that is not UTF-8");
    free(d);
}

/* ---- no input crashes ------------------------------------------------- */

static int survives(const char *scratch, const unsigned char *buf, size_t n)
{
    moe_error e = {0};
    st_set *s = NULL;
    put(scratch, buf, n, NULL, 0);
    moe_status rc = st_set_open_file(scratch, &s, &e);
    if (rc == MOE_OK) {
        /* whatever was accepted must be internally consistent */
        int fine = s != NULL;
        for (size_t i = 0; fine && i < st_set_count(s); i++) {
            const st_tensor *t = st_set_at(s, i);
            unsigned sum = 0; /* touch every byte: a bad pointer faults here */
            for (uint64_t b = 0; b < t->nbytes; b++)
                sum += ((const unsigned char *)t->data)[b];
            fine = t->nbytes <= n && st_set_find(s, t->name) == t && sum < 256u * (t->nbytes + 1);
        }
        st_set_close(s);
        return fine;
    }
    return s == NULL && e.msg[0] && strstr(e.msg, "scratch") && rc != MOE_OK;
}

static void test_mutations(void)
{
    char *scratch = path_of("scratch.safetensors");
    static const unsigned char subst[] = {'0', '9', '[', '"', '-', '.', 0x00, 0xff, '}', ' ', 'e', ','};
    for (size_t f = 0; f < n_seen; f++) {
        FILE *in = fopen(seen[f], "rb");
        unsigned char *buf;
        long size;
        if (!in || fseek(in, 0, SEEK_END) || (size = ftell(in)) < 0 || fseek(in, 0, SEEK_SET)) {
            ok(0, "read %s", seen[f]);
            if (in)
                fclose(in);
            continue;
        }
        buf = malloc((size_t)size + 1);
        if (fread(buf, 1, (size_t)size, in) != (size_t)size)
            size = 0;
        fclose(in);
        size_t lim = (size_t)size < 300 ? (size_t)size : 300, tries = 0;
        int all = 1;
        for (size_t len = 0; len <= lim; len++, tries++)
            all &= survives(scratch, buf, len);
        for (size_t i = 0; i < lim; i++) {
            unsigned char keep = buf[i];
            buf[i] = subst[i % sizeof subst];
            all &= survives(scratch, buf, (size_t)size);
            buf[i] = keep ^ 0x01;
            all &= survives(scratch, buf, (size_t)size);
            buf[i] = keep;
            tries += 2;
        }
        ok(all, "%zu truncations and mutations of %s end cleanly", tries, strrchr(seen[f], '/') + 1);
        free(buf);
    }
    free(scratch);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    if (!mkdtemp(root)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    test_framing();
    test_entries();
    test_dtypes();
    test_good_files();
    test_dirs();
    test_index();
    test_mutations();
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < n_seen; i++)
        free(seen[i]);
    return done_testing();
}
