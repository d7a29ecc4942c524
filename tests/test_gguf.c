/* GGUF: every rule of the reader, one hostile file per rule.
 *
 * A valid file is built in memory, and each hostile case patches one field
 * of it (or builds it with one option changed). A rejected file must fail
 * with the stated code and a message naming the file and the problem; an
 * accepted one must give back exactly what was written. At the end the
 * valid file is truncated at every length and mutated byte by byte, to show
 * that no input crashes the reader (under ASan/UBSan that means more). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "tap.h"

static char dir[] = "/tmp/moescope-gguf-XXXXXX";
static char path[128];

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }

/* Options of the base file, and where its fields landed. */
typedef struct {
    uint32_t version, alignment;
    int dup_key, dup_tensor, long_name, no_tensors;
} opts;

enum {
    F_VERSION, F_NT, F_NKV, F_KEY0_LEN, F_KEY0, F_VAL0_LEN, F_KV1_TYPE, F_KV1_VAL, F_ARR_ELEM, F_ARR_N,
    F_BOOL, F_T0_NAME_LEN, F_T0_NAME, F_T0_NDIMS, F_T0_NE0, F_T0_NE1, F_T0_TYPE, F_T1_NE0, F_T1_TYPE, F_T1_OFF,
    F_COUNT
};
static size_t at[F_COUNT];

static const float T0[8] = {1, -2, 3.5f, 4, 0.25f, 6, -7, 8};

/* kv: general.architecture "llama", general.alignment, test.array [1,2,3]
 * (INT32), test.flag true. Tensors: "tok" F32 ne [4, 2]; "q" Q8_0 ne [64]. */
static buf build(opts o)
{
    buf b = {0};
    put(&b, "GGUF", 4);
    at[F_VERSION] = b.n, u32(&b, o.version ? o.version : 3);
    at[F_NT] = b.n, u64(&b, o.no_tensors ? 0 : 2);
    at[F_NKV] = b.n, u64(&b, 4);
    at[F_KEY0_LEN] = b.n, str(&b, "general.architecture");
    at[F_KEY0] = at[F_KEY0_LEN] + 8;
    u32(&b, 8), at[F_VAL0_LEN] = b.n, str(&b, "llama");
    str(&b, "general.alignment"), at[F_KV1_TYPE] = b.n, u32(&b, 4);
    at[F_KV1_VAL] = b.n, u32(&b, o.alignment ? o.alignment : 32);
    str(&b, "test.array"), u32(&b, 9), at[F_ARR_ELEM] = b.n, u32(&b, 5);
    at[F_ARR_N] = b.n, u64(&b, 3);
    for (int32_t i = 1; i <= 3; i++)
        put(&b, &i, 4);
    str(&b, o.dup_key ? "test.array" : "test.flag"), u32(&b, 7);
    at[F_BOOL] = b.n, put(&b, "\1", 1);
    size_t align = o.alignment ? o.alignment : 32;
    if (!o.no_tensors) {
        char longname[80];
        memset(longname, 'x', 64), longname[64] = 0;
        at[F_T0_NAME_LEN] = b.n, str(&b, o.long_name ? longname : "tok");
        at[F_T0_NAME] = at[F_T0_NAME_LEN] + 8;
        at[F_T0_NDIMS] = b.n, u32(&b, 2);
        at[F_T0_NE0] = b.n, u64(&b, 4);
        at[F_T0_NE1] = b.n, u64(&b, 2);
        at[F_T0_TYPE] = b.n, u32(&b, 0), u64(&b, 0);
        str(&b, o.dup_tensor ? "tok" : "q"), u32(&b, 1);
        at[F_T1_NE0] = b.n, u64(&b, 64);
        at[F_T1_TYPE] = b.n, u32(&b, 8);
        at[F_T1_OFF] = b.n, u64(&b, (32 + align - 1) / align * align);
        while (b.n % align)
            put(&b, "", 1);
        put(&b, T0, sizeof T0);
        while (b.n % align)
            put(&b, "", 1);
        for (int blk = 0; blk < 2; blk++) { /* Q8_0: f16 scale 1.0, then 32 int8 */
            uint16_t one = 0x3c00;
            put(&b, &one, 2);
            for (int i = 0; i < 32; i++) {
                int8_t q = (int8_t)(i - 16 + blk);
                put(&b, &q, 1);
            }
        }
    }
    return b;
}

static void save(const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        perror(path);
        exit(99);
    }
}

/* Open `path`; expect failure with code and a message naming the file and
 * containing `needle`. */
static void expect_fail(const char *what, moe_status code, const char *needle)
{
    gguf_file *g = NULL;
    moe_error err = {0};
    moe_status st = gguf_open(path, &g, &err);
    int good = st == code && !g && strstr(err.msg, path) && strstr(err.msg, needle);
    ok(good, "%s: rejected (%s)", what, err.msg);
    if (!good)
        diag("got status %d, wanted %d with \"%s\"", st, code, needle);
    gguf_close(g);
}

typedef struct {
    const char *what;
    int field;
    int width;       /* bytes patched: 1, 4 or 8 */
    uint64_t value;
    int field2;      /* a second patch, or -1 */
    uint64_t value2;
    moe_status code;
    const char *needle;
} patch_case;

static void patch(unsigned char *p, int field, int width, uint64_t v)
{
    if (width == 8)
        memcpy(p + at[field], &v, 8);
    else if (width == 4) {
        uint32_t w = (uint32_t)v;
        memcpy(p + at[field], &w, 4);
    } else
        p[at[field]] = (unsigned char)v;
}

static const patch_case PATCHES[] = {
    {"bad magic", F_KEY0, 0, 0, -1, 0, MOE_EFORMAT, "magic"}, /* special-cased below */
    {"version 1", F_VERSION, 4, 1, -1, 0, MOE_EUNSUPPORTED, "version 1"},
    {"version 4", F_VERSION, 4, 4, -1, 0, MOE_EUNSUPPORTED, "version 4"},
    {"big-endian version", F_VERSION, 4, 3u << 24, -1, 0, MOE_EUNSUPPORTED, "byte-swapped"},
    {"metadata count past the file", F_NKV, 8, 1ull << 40, -1, 0, MOE_EFORMAT, "metadata entries"},
    {"tensor count past the file", F_NT, 8, 1ull << 40, -1, 0, MOE_EFORMAT, "tensors, more than"},
    {"key length past the file", F_KEY0_LEN, 8, 100000, -1, 0, MOE_EFORMAT, "bytes of the file remain"},
    {"string length over the limit", F_VAL0_LEN, 8, 1ull << 40, -1, 0, MOE_EFORMAT, "more than the limit"},
    {"empty key", F_KEY0_LEN, 8, 0, -1, 0, MOE_EFORMAT, "empty key"},
    {"key with a NUL byte", F_KEY0, 1, 0, -1, 0, MOE_EFORMAT, "NUL byte"},
    {"unknown value type", F_KV1_TYPE, 4, 13, -1, 0, MOE_EFORMAT, "unknown value type 13"},
    {"unknown array element type", F_ARR_ELEM, 4, 99, -1, 0, MOE_EFORMAT, "unknown element type 99"},
    {"array of arrays", F_ARR_ELEM, 4, 9, -1, 0, MOE_EFORMAT, "array of arrays"},
    {"array length over the limit", F_ARR_N, 8, 1ull << 31, -1, 0, MOE_EFORMAT, "more than the limit"},
    {"array length past the file", F_ARR_N, 8, 1ull << 28, -1, 0, MOE_EFORMAT, "more than the rest of the file"},
    {"bool of value 2", F_BOOL, 1, 2, -1, 0, MOE_EFORMAT, "a bool is 0 or 1"},
    {"alignment of the wrong type", F_KV1_TYPE, 4, 5, -1, 0, MOE_EFORMAT, "must be a UINT32, not INT32"},
    {"alignment not a power of two", F_KV1_VAL, 4, 48, -1, 0, MOE_EFORMAT, "48 is not a power of two"},
    {"alignment zero", F_KV1_VAL, 4, 0, -1, 0, MOE_EFORMAT, "0 is not a power of two"},
    {"empty tensor name", F_T0_NAME_LEN, 8, 0, -1, 0, MOE_EFORMAT, "empty name"},
    {"tensor name with a NUL byte", F_T0_NAME, 1, 0, -1, 0, MOE_EFORMAT, "name with a NUL byte"},
    {"no dimensions", F_T0_NDIMS, 4, 0, -1, 0, MOE_EFORMAT, "0 dimensions"},
    {"five dimensions", F_T0_NDIMS, 4, 5, -1, 0, MOE_EFORMAT, "5 dimensions"},
    {"dimension of 0", F_T0_NE1, 8, 0, -1, 0, MOE_EFORMAT, "at least 1"},
    {"negative dimension", F_T0_NE1, 8, UINT64_MAX, -1, 0, MOE_EFORMAT, "at least 1"},
    {"dimension product overflow", F_T0_NE0, 8, 1ull << 40, F_T0_NE1, 1ull << 30, MOE_EFORMAT, "overflows"},
    {"size in bytes overflow", F_T0_NE0, 8, 1ull << 61, -1, 0, MOE_EFORMAT, "size in bytes overflows"},
    {"unknown ggml type", F_T0_TYPE, 4, 43, -1, 0, MOE_EFORMAT, "type 43, which is not a ggml type"},
    {"removed ggml type", F_T0_TYPE, 4, 4, -1, 0, MOE_EFORMAT, "type 4, which is not a ggml type"},
    {"row not a multiple of the block", F_T1_NE0, 8, 48, -1, 0, MOE_EFORMAT, "not a multiple of its block size 32"},
    {"misaligned offset", F_T1_OFF, 8, 33, -1, 0, MOE_EFORMAT, "not a multiple of the alignment 32"},
    {"offset past the file", F_T1_OFF, 8, 1ull << 40, -1, 0, MOE_EFORMAT, "past the end of the file"},
    {"overlapping tensors", F_T1_OFF, 8, 0, -1, 0, MOE_EFORMAT, "offset 0, expected 32"},
    {"data past the file", F_T1_NE0, 8, 96, -1, 0, MOE_EFORMAT, "past the end of the file"},
};

static void test_hostile(void)
{
    buf base = build((opts){0});
    for (size_t i = 0; i < sizeof PATCHES / sizeof PATCHES[0]; i++) {
        const patch_case *c = &PATCHES[i];
        unsigned char *p = malloc(base.n);
        memcpy(p, base.p, base.n);
        if (i == 0)
            p[0] = 'X';
        else
            patch(p, c->field, c->width, c->value);
        if (c->field2 >= 0)
            patch(p, c->field2, 8, c->value2);
        save(p, base.n);
        expect_fail(c->what, c->code, c->needle);
        free(p);
    }

    save(base.p, 10);
    expect_fail("a 10-byte file", MOE_EFORMAT, "too short");
    save(base.p, at[F_KV1_TYPE] + 2);
    expect_fail("truncated in the metadata", MOE_EFORMAT, "ends inside");
    save(base.p, base.n - 1);
    expect_fail("truncated in the data", MOE_EFORMAT, "'q' (Q8_0, 68 bytes at data offset 32) lies past the end");

    buf b = build((opts){.dup_key = 1});
    save(b.p, b.n);
    expect_fail("duplicate key", MOE_EFORMAT, "duplicate metadata key 'test.array'");
    free(b.p);
    b = build((opts){.dup_tensor = 1});
    save(b.p, b.n);
    expect_fail("duplicate tensor name", MOE_EFORMAT, "duplicate tensor name 'tok'");
    free(b.p);
    b = build((opts){.long_name = 1});
    save(b.p, b.n);
    expect_fail("tensor name of 64 bytes", MOE_EFORMAT, "names are at most 63");
    free(b.p);
    unlink(path);
    expect_fail("a missing file", MOE_EIO, "cannot open");

    /* Robustness: every truncation and every single-byte change of the
     * header either opens or fails cleanly. */
    int crashes = 0, opened = 0;
    for (size_t n = 0; n < base.n; n++) {
        save(base.p, n);
        gguf_file *g = NULL;
        if (gguf_open(path, &g, NULL) == MOE_OK)
            opened++, gguf_close(g);
        else if (g)
            crashes++;
    }
    size_t header = at[F_T1_OFF] + 8;
    for (size_t i = 0; i < header; i++)
        for (int v = 0; v < 256; v += 51) {
            unsigned char *p = malloc(base.n);
            memcpy(p, base.p, base.n);
            p[i] ^= (unsigned char)(v | 1);
            save(p, base.n);
            gguf_file *g = NULL;
            if (gguf_open(path, &g, NULL) == MOE_OK) {
                /* whatever opened must be self-consistent */
                for (size_t t = 0; t < gguf_tensor_count(g); t++) {
                    const gguf_tensor *x = gguf_tensor_at(g, t);
                    volatile unsigned char last = ((const unsigned char *)x->data)[x->nbytes - 1];
                    (void)last;
                }
                gguf_close(g);
            }
            free(p);
        }
    ok(crashes == 0 && opened == 0, "every truncation of the file is rejected (%d opened)", opened);
    free(base.p);
}

static void test_valid(void)
{
    buf b = build((opts){0});
    save(b.p, b.n);
    gguf_file *g = NULL;
    moe_error err = {0};
    if (!ok(gguf_open(path, &g, &err) == MOE_OK, "the base file opens (%s)", err.msg)) {
        free(b.p);
        return;
    }
    ok(gguf_version(g) == 3 && gguf_alignment(g) == 32, "version 3, alignment 32");
    ok(gguf_kv_count(g) == 4 && gguf_tensor_count(g) == 2, "4 metadata entries, 2 tensors");
    const gguf_tensor *t0 = gguf_find_tensor(g, "tok"), *t1 = gguf_find_tensor(g, "q");
    ok(t0 && t0->type == GGML_F32 && t0->n_dims == 2 && t0->ne[0] == 4 && t0->ne[1] == 2 && t0->ne[2] == 1 &&
           t0->numel == 8 && t0->nbytes == 32 && !memcmp(t0->data, T0, sizeof T0),
       "tok: F32, ne [4, 2], its 8 values");
    ok(t1 && t1->type == GGML_Q8_0 && t1->numel == 64 && t1->nbytes == 68 &&
           ((const signed char *)t1->data)[34 + 2] == -15,
       "q: Q8_0, 64 elements in 68 bytes, its bytes");
    ok(t0 && t1 && (uintptr_t)t0->data % 32 == 0 && (uintptr_t)t1->data % 32 == 0, "data aligned to 32");
    ok(!gguf_find_tensor(g, "missing") && !gguf_find_kv(g, "missing"), "absent names are not found");
    ok(!strcmp(gguf_type_name(GGML_Q6_K), "Q6_K") && gguf_type_block(GGML_Q4_K) == 256 &&
           gguf_type_size(GGML_Q4_K) == 144 && gguf_type_size(GGML_Q5_K) == 176 &&
           gguf_type_size(GGML_Q6_K) == 210 && gguf_type_size(GGML_Q4_0) == 18 && !gguf_type_name(4),
       "ggml type table");

    const char *s;
    size_t len;
    int found = -1;
    ok(gguf_get_str(g, "general.architecture", &s, &len, NULL, &err) == MOE_OK && len == 5 &&
           !memcmp(s, "llama", 5),
       "string value");
    int64_t arr[4], v;
    size_t n;
    ok(gguf_get_int_array(g, "test.array", arr, 4, &n, NULL, &err) == MOE_OK && n == 3 && arr[0] == 1 &&
           arr[2] == 3,
       "integer array");
    ok(gguf_get_int_array(g, "test.array", arr, 2, &n, NULL, &err) == MOE_EFORMAT && strstr(err.msg, "at most 2"),
       "integer array longer than expected: %s", err.msg);
    int flag = 0;
    ok(gguf_get_bool(g, "test.flag", &flag, NULL, &err) == MOE_OK && flag == 1, "bool value");
    ok(gguf_get_int(g, "general.alignment", 0, 100, &v, NULL, &err) == MOE_OK && v == 32, "integer value");
    ok(gguf_get_int(g, "general.alignment", 0, 10, &v, NULL, &err) == MOE_EFORMAT && strstr(err.msg, "out of range"),
       "integer out of range: %s", err.msg);
    ok(gguf_get_int(g, "general.architecture", 0, 10, &v, NULL, &err) == MOE_EFORMAT &&
           strstr(err.msg, "'general.architecture' is a STRING; an integer was expected") && strstr(err.msg, path),
       "metadata of the wrong type: %s", err.msg);
    double d;
    ok(gguf_get_float(g, "test.flag", &d, NULL, &err) == MOE_EFORMAT && strstr(err.msg, "BOOL"),
       "a bool read as a float: %s", err.msg);
    ok(gguf_get_int(g, "test.array", 0, 10, &v, NULL, &err) == MOE_EFORMAT && strstr(err.msg, "an array of INT32"),
       "an array read as an integer: %s", err.msg);
    ok(gguf_get_int(g, "missing.key", 0, 10, &v, NULL, &err) == MOE_EFORMAT &&
           strstr(err.msg, "'missing.key' is missing"),
       "a required key that is missing: %s", err.msg);
    ok(gguf_get_int(g, "missing.key", 0, 10, &v, &found, &err) == MOE_OK && found == 0, "an optional key");

    /* the array accessors the GGUF tokenizer reads tokenizer.ggml.* with */
    gguf_strv *sv = NULL;
    float *fv = NULL;
    gguf_vtype et = GGUF_VTYPE_COUNT;
    ok(gguf_array_len(g, "test.array", &et) == 3 && et == GGUF_I32 && gguf_array_len(g, "test.flag", NULL) == 0 &&
           gguf_array_len(g, "missing.key", NULL) == 0,
       "array length and element type; 0 for a scalar or an absent key");
    ok(gguf_get_float_array(g, "test.array", &fv, &n, NULL, &err) == MOE_OK && n == 3 && fv[0] == 1 && fv[2] == 3,
       "an integer array read as numbers");
    free(fv);
    ok(gguf_get_str_array(g, "test.array", &sv, &n, NULL, &err) == MOE_EFORMAT && !sv &&
           strstr(err.msg, "'test.array' is an array of INT32; an array of STRING was expected") &&
           strstr(err.msg, path),
       "an integer array read as strings names the key: %s", err.msg);
    ok(gguf_get_str_array(g, "general.architecture", &sv, &n, NULL, &err) == MOE_EFORMAT &&
           strstr(err.msg, "'general.architecture' is a STRING"),
       "a string read as an array of strings: %s", err.msg);
    ok(gguf_get_float_array(g, "test.flag", &fv, &n, NULL, &err) == MOE_EFORMAT && strstr(err.msg, "'test.flag' is a BOOL"),
       "a bool read as an array of numbers: %s", err.msg);
    ok(gguf_get_str_array(g, "missing.key", &sv, &n, &found, &err) == MOE_OK && found == 0 && !sv && n == 0,
       "an optional array that is absent");
    ok(gguf_get_str_array(g, "missing.key", &sv, &n, NULL, &err) == MOE_EFORMAT && strstr(err.msg, "'missing.key' is missing"),
       "a required array that is missing: %s", err.msg);
    gguf_close(g);
    free(b.p);

    b = build((opts){.version = 2});
    save(b.p, b.n);
    ok(gguf_open(path, &g, &err) == MOE_OK && gguf_version(g) == 2, "version 2 opens");
    gguf_close(g);
    free(b.p);
    b = build((opts){.alignment = 64});
    save(b.p, b.n);
    g = NULL;
    ok(gguf_open(path, &g, &err) == MOE_OK && gguf_alignment(g) == 64 &&
           (const char *)gguf_find_tensor(g, "q")->data - (const char *)gguf_find_tensor(g, "tok")->data == 64,
       "general.alignment 64 is honoured (%s)", err.msg);
    gguf_close(g);
    free(b.p);
    b = build((opts){.no_tensors = 1});
    save(b.p, b.n);
    g = NULL;
    ok(gguf_open(path, &g, &err) == MOE_OK && gguf_tensor_count(g) == 0, "a file without tensors opens");
    gguf_close(g);
    free(b.p);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 99;
    }
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    test_valid();
    test_hostile();
    unlink(path);
    rmdir(dir);
    return done_testing();
}
