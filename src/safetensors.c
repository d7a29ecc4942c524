/* safetensors: parse, validate and mmap the tensors of a checkpoint.
 *
 * A header is checked in three layers. First its bytes: length, UTF-8,
 * control characters, nesting depth and number syntax, as strictly as
 * serde_json (the reference implementation's parser) reads them, because
 * cJSON alone accepts more. Then cJSON builds the tree. Then every entry is
 * checked against the format's rules while a cursor walks the header text
 * beside the tree, so shapes and offsets are read exactly from their digits
 * rather than through a double. Nothing is trusted until all of it passes. */
#include "safetensors.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "error.h"

#define HEADER_MAX 100000000ull   /* the reference's MAX_HEADER_SIZE */
#define DEPTH_MAX 127             /* serde_json refuses the 128th nested container */
#define INDEX_MAX (256ull << 20)  /* real index files are a few MB at most */
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SUFFIX ".safetensors"
#define SHOWN MOE_SHOWN

static const struct {
    const char *name;
    unsigned bits;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8},        [ST_U8] = {"U8", 8},
    [ST_I8] = {"I8", 8},            [ST_F8_E5M2] = {"F8_E5M2", 8},
    [ST_F8_E4M3] = {"F8_E4M3", 8},  [ST_F8_E8M0] = {"F8_E8M0", 8},
    [ST_F4] = {"F4", 4},            [ST_F6_E2M3] = {"F6_E2M3", 6},
    [ST_F6_E3M2] = {"F6_E3M2", 6},  [ST_I16] = {"I16", 16},
    [ST_U16] = {"U16", 16},         [ST_F16] = {"F16", 16},
    [ST_BF16] = {"BF16", 16},       [ST_I32] = {"I32", 32},
    [ST_U32] = {"U32", 32},         [ST_F32] = {"F32", 32},
    [ST_F64] = {"F64", 64},         [ST_I64] = {"I64", 64},
    [ST_U64] = {"U64", 64},         [ST_C64] = {"C64", 64},
};

/* Types the reference crate accepts that st_dtype has no name for. */
static const char *const dtype_unnamed[] = {"F8_E4M3FNUZ", "F8_E5M2FNUZ"};

typedef struct {
    char *path;
    unsigned char *map; /* the whole file, read-only */
    size_t size;
    cJSON *meta;        /* the "__metadata__" object, or NULL */
    char *names;        /* this file's tensor names, back to back */
} st_file;

struct st_set {
    st_file *files;     /* (n_files), in the order they were opened */
    size_t n_files;
    st_tensor *t;       /* (n), sorted by name once the set is complete */
    size_t n, cap;
};

/* One header entry while its file is being checked. */
typedef struct {
    st_tensor t;
    uint64_t begin, end;
} entry;

/* ---- messages ---------------------------------------------------------- */

/* Fill err with "<file>: <message>" and return code. */
__attribute__((format(printf, 4, 5))) static moe_status
fail(moe_error *err, moe_status code, const char *file, const char *fmt, ...)
{
    char msg[sizeof ((moe_error *)0)->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return moe_fail(err, code, "%s: %s", file, msg);
}

static const char *shape_str(char *buf, size_t size, const uint64_t *shape, int ndim)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%llu", i ? ", " : "",
                                 (unsigned long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

static const char *json_kind(const cJSON *j)
{
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "not a JSON value";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

/* ---- bytes ------------------------------------------------------------- */

/* Offset of the first byte that breaks UTF-8 as Rust's str::from_utf8 reads
 * it (no overlong forms, no surrogates, nothing past U+10FFFF), or n. */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], lo = 0x80, hi = 0xBF;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return i;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += len;
    }
    return n;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Length of the strict JSON number at s, or 0 if s does not start one that
 * ends cleanly ("01", "1.", "+1", "1e" are all refused). */
static size_t number_len(const char *s, size_t n)
{
    size_t i = 0, d;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && is_digit(s[i]))
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        for (d = ++i; i < n && is_digit(s[i]); i++) {}
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        for (d = i; i < n && is_digit(s[i]); i++) {}
        if (i == d)
            return 0;
    }
    if (i < n && (is_digit(s[i]) || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                  s[i] == '+' || s[i] == '-'))
        return 0;
    return i;
}

static int is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The escape at h[i] (a backslash inside a string) must be one JSON knows;
 * cJSON reads "\uZZZZ" or a quote among the four digits as a NUL. */
static moe_status check_escape(const char *h, size_t n, size_t i, const char *file, moe_error *err)
{
    char c = i + 1 < n ? h[i + 1] : '\0';
    if (c == 'u') {
        if (n - i < 6 || !is_hex(h[i + 2]) || !is_hex(h[i + 3]) || !is_hex(h[i + 4]) ||
            !is_hex(h[i + 5]))
            return fail(err, MOE_EFORMAT, file, "header has an invalid \\u escape at byte %zu", i);
        if (!memcmp(h + i + 2, "0000", 4))
            return fail(err, MOE_EFORMAT, file,
                        "header has an escaped NUL character (\\u0000) in a string at byte %zu", i);
        return MOE_OK;
    }
    if (c && strchr("\"\\/bfnrt", c))
        return MOE_OK;
    return fail(err, MOE_EFORMAT, file, "header has an invalid escape in a string at byte %zu", i);
}

/* The byte-level rules serde_json enforces and cJSON does not: no control
 * bytes in strings or between tokens, no escaped NUL (it would cut a C
 * string short and make two names one), strict number syntax, and at most
 * DEPTH_MAX nested containers. */
static moe_status header_scan(const char *h, size_t n, const char *file, moe_error *err)
{
    moe_status rc;
    int depth = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)h[i];
        if (c == '"') {
            for (i++; i < n && h[i] != '"'; i++) {
                if ((unsigned char)h[i] < 0x20)
                    return fail(err, MOE_EFORMAT, file,
                                "header has control character 0x%02x inside a string at byte %zu",
                                (unsigned char)h[i], i);
                if (h[i] == '\\' && (rc = check_escape(h, n, i, file, err)))
                    return rc;
                if (h[i] == '\\')
                    i += h[i + 1] == 'u' ? 5 : 1;
            }
            i++;
        } else if (c == '-' || is_digit((char)c)) {
            size_t len = number_len(h + i, n - i);
            if (!len)
                return fail(err, MOE_EFORMAT, file, "header has a malformed number at byte %zu", i);
            i += len;
        } else {
            if (c == '{' || c == '[') {
                if (++depth > DEPTH_MAX)
                    return fail(err, MOE_EFORMAT, file,
                                "header JSON is nested deeper than %d levels (byte %zu)", DEPTH_MAX,
                                i);
            } else if (c == '}' || c == ']') {
                depth--;
            } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                return fail(err, MOE_EFORMAT, file,
                            "header has control character 0x%02x at byte %zu", c, i);
            }
            i++;
        }
    }
    return MOE_OK;
}

/* ---- a cursor beside the tree ------------------------------------------
 * These walk text that cJSON has accepted and header_scan has checked, so
 * they can be simple: every string is closed, every container balanced,
 * and the buffer ends in NUL. */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *skip_string(const char *p)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p + 1;
}

static const char *skip_value(const char *p)
{
    if (*p == '"')
        return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        do {
            if (*p == '"') {
                p = skip_string(p);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']')
                depth--;
            p++;
        } while (depth > 0);
        return p;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p;
}

/* From the '{', '[' or ',' before a child to the start of its value. */
static const char *next_child(const char *p, int in_object)
{
    p = skip_ws(p + 1);
    if (in_object)
        p = skip_ws(skip_ws(skip_string(p)) + 1);
    return p;
}

/* Read the number at p as an exact unsigned integer; NULL, or why not. */
static const char *read_uint(const char *p, uint64_t *out)
{
    uint64_t v = 0;
    if (*p == '-')
        return "is negative";
    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return "does not fit in 64 bits";
        v = v * 10 + d;
    }
    if (*p == '.' || *p == 'e' || *p == 'E')
        return "is not an integer";
    *out = v;
    return NULL;
}

/* serde_json refuses a number that overflows a double; cJSON keeps inf. */
static int has_inf(const cJSON *j)
{
    if (cJSON_IsNumber(j))
        return isinf(j->valuedouble);
    for (const cJSON *c = j->child; c; c = c->next)
        if (has_inf(c))
            return 1;
    return 0;
}

/* ---- one header -------------------------------------------------------- */

/* Read the integers of "shape" or "data_offsets" from the text at p. */
static moe_status read_uints(const char *file, const char *name, const char *field,
                             const cJSON *arr, const char *p, uint64_t *out, moe_error *err)
{
    char sn[SHOWN];
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        const char *v = next_child(p, 0), *v_end = skip_value(v), *why;
        p = skip_ws(v_end);
        if (!cJSON_IsNumber(c))
            return fail(err, MOE_EFORMAT, file, "tensor '%s': %s[%d] is %s, not an integer",
                        moe_shown(sn, name), field, i, json_kind(c));
        if ((why = read_uint(v, &out[i])) != NULL)
            return fail(err, MOE_EFORMAT, file, "tensor '%s': %s[%d] = %.*s %s", moe_shown(sn, name),
                        field, i, (int)(v_end - v > 40 ? 40 : v_end - v), v, why);
    }
    return MOE_OK;
}

/* Check one tensor entry; `text` is where its value starts. */
static moe_status parse_entry(const char *file, const cJSON *item, const char *text, entry *e,
                              moe_error *err)
{
    const char *name = item->string;
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    uint64_t dims[ST_MAX_DIMS] = {0}, off[2] = {0};
    char sn[SHOWN], ss[256];
    moe_status rc;

    if (!cJSON_IsObject(item))
        return fail(err, MOE_EFORMAT, file, "tensor '%s': entry is %s, not an object",
                    moe_shown(sn, name), json_kind(item));
    const char *p = text;
    for (const cJSON *f = item->child; f; f = f->next) {
        const char *v = next_child(p, 1);
        const cJSON **slot = !strcmp(f->string, "dtype")          ? &dtype
                             : !strcmp(f->string, "shape")        ? &shape
                             : !strcmp(f->string, "data_offsets") ? &offs
                                                                  : NULL;
        p = skip_ws(skip_value(v));
        if (!slot) { /* the reference ignores fields it does not know */
            if (has_inf(f))
                return fail(err, MOE_EFORMAT, file,
                            "tensor '%s': field '%s' holds a number out of range",
                            moe_shown(sn, name), f->string);
            continue;
        }
        if (*slot)
            return fail(err, MOE_EFORMAT, file, "tensor '%s': field \"%s\" appears twice",
                        moe_shown(sn, name), f->string);
        *slot = f;
        if (slot == &dtype)
            continue;
        if (!cJSON_IsArray(f))
            return fail(err, MOE_EFORMAT, file, "tensor '%s': %s is %s, not an array",
                        moe_shown(sn, name), f->string, json_kind(f));
        int count = cJSON_GetArraySize(f);
        if (slot == &shape && count > ST_MAX_DIMS)
            return fail(err, MOE_EUNSUPPORTED, file,
                        "tensor '%s': shape has %d dimensions; moescope handles at most %d",
                        moe_shown(sn, name), count, ST_MAX_DIMS);
        if (slot == &offs && count != 2)
            return fail(err, MOE_EFORMAT, file,
                        "tensor '%s': data_offsets has %d entr%s; it needs exactly 2 (begin, end)",
                        moe_shown(sn, name), count, count == 1 ? "y" : "ies");
        rc = read_uints(file, name, f->string, f, v, slot == &shape ? dims : off, err);
        if (rc)
            return rc;
    }
    if (!dtype || !shape || !offs)
        return fail(err, MOE_EFORMAT, file, "tensor '%s': entry has no \"%s\"", moe_shown(sn, name),
                    !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

    if (!cJSON_IsString(dtype))
        return fail(err, MOE_EFORMAT, file, "tensor '%s': dtype is %s, not a string",
                    moe_shown(sn, name), json_kind(dtype));
    int t = 0;
    while (t < ST_DTYPE_COUNT && strcmp(dtype->valuestring, dtype_info[t].name))
        t++;
    if (t == ST_DTYPE_COUNT) {
        for (size_t k = 0; k < sizeof dtype_unnamed / sizeof *dtype_unnamed; k++)
            if (!strcmp(dtype->valuestring, dtype_unnamed[k]))
                return fail(err, MOE_EUNSUPPORTED, file,
                            "tensor '%s': dtype %s is valid safetensors but moescope "
                            "does not know it",
                            moe_shown(sn, name), dtype_unnamed[k]);
        char sd[SHOWN];
        return fail(err, MOE_EFORMAT, file, "tensor '%s': unknown dtype '%s'", moe_shown(sn, name),
                    moe_shown(sd, dtype->valuestring));
    }

    e->t.name = name;
    e->t.dtype = (st_dtype)t;
    e->t.ndim = cJSON_GetArraySize(shape);
    e->begin = off[0];
    e->end = off[1];
    shape_str(ss, sizeof ss, dims, e->t.ndim);

    /* Fold the element count left to right with a check at every step, as
     * the reference does: [2^62, 2^62, 0] overflows before it reaches 0. */
    uint64_t numel = 1, bits = dtype_info[t].bits;
    for (int i = 0; i < e->t.ndim; i++) {
        if (dims[i] && numel > UINT64_MAX / dims[i])
            return fail(err, MOE_EFORMAT, file,
                        "tensor '%s': shape %s has more than 2^64 elements (overflow)",
                        moe_shown(sn, name), ss);
        numel *= dims[i];
    }
    if (numel > UINT64_MAX / bits)
        return fail(err, MOE_EFORMAT, file,
                    "tensor '%s': %s shape %s needs more than 2^64 bits (overflow)",
                    moe_shown(sn, name), dtype_info[t].name, ss);
    if (numel * bits % 8)
        return fail(err, MOE_EFORMAT, file,
                    "tensor '%s': %s shape %s holds %llu bits, not a whole number of bytes",
                    moe_shown(sn, name), dtype_info[t].name, ss, (unsigned long long)(numel * bits));
    e->t.numel = numel;
    e->t.nbytes = numel * bits / 8;
    if (e->begin > e->end)
        return fail(err, MOE_EFORMAT, file,
                    "tensor '%s': data_offsets [%llu, %llu] begin after they end", moe_shown(sn, name),
                    (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != e->t.nbytes)
        return fail(err, MOE_EFORMAT, file,
                    "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes "
                    "but %s shape %s needs %llu",
                    moe_shown(sn, name), (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)(e->end - e->begin), dtype_info[t].name, ss,
                    (unsigned long long)e->t.nbytes);
    /* Only an empty tensor such as [0, 2^63] is consistent with a dimension
     * that st_tensor's int64_t cannot hold: valid, but not representable. */
    for (int i = 0; i < e->t.ndim; i++) {
        if (dims[i] > INT64_MAX)
            return fail(err, MOE_EUNSUPPORTED, file,
                        "tensor '%s': shape[%d] = %llu is larger than moescope can represent",
                        moe_shown(sn, name), i, (unsigned long long)dims[i]);
        e->t.shape[i] = (int64_t)dims[i];
    }
    return MOE_OK;
}

/* "__metadata__" is null (as good as absent) or an object of strings. */
static moe_status check_meta(const char *file, const cJSON *meta, moe_error *err)
{
    char sn[SHOWN];
    if (cJSON_IsNull(meta))
        return MOE_OK;
    if (!cJSON_IsObject(meta))
        return fail(err, MOE_EFORMAT, file, "__metadata__ is %s, not an object of strings",
                    json_kind(meta));
    int n = cJSON_GetArraySize(meta), i = 0;
    if (n == 0)
        return MOE_OK;
    const char **keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        return fail(err, MOE_ENOMEM, file, "out of memory reading __metadata__");
    for (const cJSON *c = meta->child; c; c = c->next) {
        if (!cJSON_IsString(c)) {
            free(keys);
            return fail(err, MOE_EFORMAT, file, "__metadata__ value of '%s' is %s, not a string",
                        moe_shown(sn, c->string), json_kind(c));
        }
        keys[i++] = c->string;
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_str);
    for (i = 1; i < n && strcmp(keys[i - 1], keys[i]); i++) {}
    moe_status rc = MOE_OK;
    if (i < n)
        rc = fail(err, MOE_EFORMAT, file, "__metadata__ has key '%s' twice", moe_shown(sn, keys[i]));
    free(keys);
    return rc;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const entry *const *)a)->t.name, (*(const entry *const *)b)->t.name);
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Tensors sorted by offset must tile the data section: the first begins at
 * 0, each begins where the previous ended, the last ends at its end. A hole
 * or a tail could smuggle a second file format (a polyglot). */
static moe_status check_tiling(const char *file, entry **by, size_t n, uint64_t data_len,
                               moe_error *err)
{
    char sa[SHOWN], sb[SHOWN];
    uint64_t at = 0;
    qsort(by, n, sizeof *by, cmp_entry_offset);
    for (size_t i = 0; i < n; i++) {
        const entry *e = by[i];
        if (e->begin < at)
            return fail(err, MOE_EFORMAT, file,
                        "tensor '%s' (data_offsets [%llu, %llu]) overlaps tensor '%s' "
                        "(ends at %llu)",
                        moe_shown(sa, e->t.name), (unsigned long long)e->begin,
                        (unsigned long long)e->end, moe_shown(sb, by[i - 1]->t.name),
                        (unsigned long long)at);
        if (e->begin > at && i == 0)
            return fail(err, MOE_EFORMAT, file,
                        "the first tensor '%s' begins at byte %llu of the data, not 0: a hole",
                        moe_shown(sa, e->t.name), (unsigned long long)e->begin);
        if (e->begin > at)
            return fail(err, MOE_EFORMAT, file,
                        "bytes %llu to %llu of the data, between tensor '%s' and tensor '%s', "
                        "belong to no tensor: a hole",
                        (unsigned long long)at, (unsigned long long)e->begin,
                        moe_shown(sa, by[i - 1]->t.name), moe_shown(sb, e->t.name));
        at = e->end;
    }
    if (at > data_len)
        return fail(err, MOE_EFORMAT, file,
                    "tensor '%s' ends at byte %llu of the data, but the file holds only %llu",
                    moe_shown(sa, by[n - 1]->t.name), (unsigned long long)at,
                    (unsigned long long)data_len);
    if (at < data_len)
        return fail(err, MOE_EFORMAT, file,
                    "%llu trailing byte%s after the last tensor belong%s to no tensor",
                    (unsigned long long)(data_len - at), data_len - at == 1 ? "" : "s",
                    data_len - at == 1 ? "s" : "");
    return MOE_OK;
}

/* Parse and check the header text h (n bytes, NUL after them) of f, whose
 * data section holds data_len bytes. On success the tensors are appended to
 * s, with names copied into f->names and metadata kept in f->meta. */
static moe_status parse_header(st_set *s, st_file *f, const char *h, size_t n,
                               uint64_t data_len, moe_error *err)
{
    const char *file = f->path, *end = NULL;
    cJSON *root = NULL, *meta = NULL;
    entry *ents = NULL, **by = NULL;
    size_t ne = 0, bad, names_len = 0;
    char sn[SHOWN];
    moe_status rc;

    if ((bad = utf8_bad((const unsigned char *)h, n)) < n)
        return fail(err, MOE_EFORMAT, file, "header is not valid UTF-8 (byte 0x%02x at offset %zu)",
                    (unsigned char)h[bad], bad);
    /* The README says the header begins with '{'; since 2026 the crate
     * reads leading JSON whitespace too, so that writers may pad for
     * alignment. Anything else first is refused. */
    const char *start = skip_ws(h);
    if (start == h + n)
        return fail(err, MOE_EFORMAT, file,
                    "header is blank; it must be a JSON object beginning with '{'");
    if (*start != '{')
        return fail(err, MOE_EFORMAT, file,
                    "header must be a JSON object beginning with '{', found byte 0x%02x",
                    (unsigned char)*start);
    if ((rc = header_scan(h, n, file, err)))
        return rc;
    root = cJSON_ParseWithLengthOpts(h, n, &end, 0);
    if (!root)
        return fail(err, MOE_EFORMAT, file, "header is not valid JSON (error near byte %ld)",
                    end ? (long)(end - h) : 0L);
    if (skip_ws(end) != h + n) {
        rc = fail(err, MOE_EFORMAT, file, "header has text after its JSON object (byte %ld)",
                  (long)(skip_ws(end) - h));
        goto out;
    }
    assert(cJSON_IsObject(root));

    size_t n_children = (size_t)cJSON_GetArraySize(root);
    ents = calloc(n_children ? n_children : 1, sizeof *ents);
    by = calloc(n_children ? n_children : 1, sizeof *by);
    if (!ents || !by) {
        rc = fail(err, MOE_ENOMEM, file, "out of memory for %zu header entries", n_children);
        goto out;
    }
    const char *p = start;
    for (cJSON *c = root->child; c; c = c->next) {
        const char *v = next_child(p, 1);
        p = skip_ws(skip_value(v));
        if (!strcmp(c->string, "__metadata__")) {
            if (meta) {
                rc = fail(err, MOE_EFORMAT, file, "header has two __metadata__ entries");
                goto out;
            }
            if ((rc = check_meta(file, c, err)))
                goto out;
            meta = c;
            continue;
        }
        if ((rc = parse_entry(file, c, v, &ents[ne], err)))
            goto out;
        by[ne] = &ents[ne];
        names_len += strlen(c->string) + 1;
        ne++;
    }

    qsort(by, ne, sizeof *by, cmp_entry_name);
    for (size_t i = 1; i < ne; i++)
        if (!strcmp(by[i - 1]->t.name, by[i]->t.name)) {
            rc = fail(err, MOE_EFORMAT, file, "tensor '%s' appears twice in the header",
                      moe_shown(sn, by[i]->t.name));
            goto out;
        }
    if ((rc = check_tiling(file, by, ne, data_len, err)))
        goto out;

    if (s->cap - s->n < ne) {
        size_t cap = s->n + ne + s->cap;
        st_tensor *t = realloc(s->t, cap * sizeof *t);
        if (!t) {
            rc = fail(err, MOE_ENOMEM, file, "out of memory for %zu tensors", cap);
            goto out;
        }
        s->t = t, s->cap = cap;
    }
    if (!(f->names = malloc(names_len ? names_len : 1))) {
        rc = fail(err, MOE_ENOMEM, file, "out of memory for tensor names");
        goto out;
    }
    const unsigned char *data = f->map + 8 + n;
    char *np = f->names;
    for (size_t i = 0; i < ne; i++) {
        st_tensor *t = &s->t[s->n++];
        size_t len = strlen(ents[i].t.name) + 1;
        *t = ents[i].t;
        t->name = memcpy(np, ents[i].t.name, len);
        np += len;
        t->data = data + ents[i].begin;
        t->file = f->path;
    }
    if (meta && cJSON_IsObject(meta))
        f->meta = cJSON_DetachItemViaPointer(root, meta);
    rc = MOE_OK;
out:
    free(by);
    free(ents);
    cJSON_Delete(root);
    return rc;
}

/* ---- files and sets ---------------------------------------------------- */

static void file_done(st_file *f)
{
    if (f->map)
        munmap(f->map, f->size);
    cJSON_Delete(f->meta);
    free(f->names);
    free(f->path);
}

/* Map one .safetensors file, check it, and add its tensors to s. */
static moe_status file_load(st_set *s, const char *path, moe_error *err)
{
    st_file f = {0};
    struct stat st;
    char *h = NULL;
    moe_status rc;
    int fd = -1;

    if (!(f.path = strdup(path)))
        return fail(err, MOE_ENOMEM, path, "out of memory");
    if (s->n_files % 8 == 0) {
        st_file *files = realloc(s->files, (s->n_files + 8) * sizeof *files);
        if (!files) {
            rc = fail(err, MOE_ENOMEM, path, "out of memory");
            goto fail;
        }
        s->files = files;
    }
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) < 0) {
        rc = fail(err, MOE_EIO, path, "cannot open: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fail(err, MOE_EIO, path, "not a regular file");
        goto fail;
    }
    if (st.st_size < 8) {
        rc = fail(err, MOE_EFORMAT, path,
                  "file is %s%lld bytes; a safetensors file starts with an 8-byte header length",
                  st.st_size ? "too short: " : "empty: ", (long long)st.st_size);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = fail(err, MOE_ENOMEM, path, "file is too large to map");
        goto fail;
    }
    f.size = (size_t)st.st_size;
    f.map = mmap(NULL, f.size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f.map == MAP_FAILED) {
        f.map = NULL;
        rc = fail(err, MOE_EIO, path, "cannot map %zu bytes: %s", f.size, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;

    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f.map[i];
    if (n > HEADER_MAX) {
        rc = fail(err, MOE_EFORMAT, path, "header length %llu is larger than the %llu-byte limit",
                  (unsigned long long)n, HEADER_MAX);
        goto fail;
    }
    if (n > f.size - 8) {
        rc = fail(err, MOE_EFORMAT, path,
                  "header length %llu runs past the end of the file (%zu bytes)",
                  (unsigned long long)n, f.size);
        goto fail;
    }
    /* A NUL-terminated copy: cJSON and the cursor may read one byte past. */
    if (!(h = malloc((size_t)n + 1))) {
        rc = fail(err, MOE_ENOMEM, path, "out of memory for a %llu-byte header",
                  (unsigned long long)n);
        goto fail;
    }
    memcpy(h, f.map + 8, (size_t)n);
    h[n] = '\0';
    if ((rc = parse_header(s, &f, h, (size_t)n, f.size - 8 - n, err)))
        goto fail;
    free(h);
    s->files[s->n_files++] = f;
    return MOE_OK;
fail:
    if (fd >= 0)
        close(fd);
    free(h);
    file_done(&f);
    return rc;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Sort the set by name; a name held by two files is an error. */
static moe_status set_sort(st_set *s, const char *where, moe_error *err)
{
    char sn[SHOWN];
    if (s->n)
        qsort(s->t, s->n, sizeof *s->t, cmp_tensor_name);
    for (size_t i = 1; i < s->n; i++)
        if (!strcmp(s->t[i - 1].name, s->t[i].name))
            return fail(err, MOE_EFORMAT, where, "tensor '%s' is in both %s and %s",
                        moe_shown(sn, s->t[i].name), s->t[i - 1].file, s->t[i].file);
    return MOE_OK;
}

void st_set_close(st_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_files; i++)
        file_done(&s->files[i]);
    free(s->files);
    free(s->t);
    free(s);
}

moe_status st_set_open_file(const char *path, st_set **out, moe_error *err)
{
    st_set *s = calloc(1, sizeof *s);
    moe_status rc;
    *out = NULL;
    if (!s)
        return fail(err, MOE_ENOMEM, path, "out of memory");
    if ((rc = file_load(s, path, err)) || (rc = set_sort(s, path, err))) {
        st_set_close(s);
        return rc;
    }
    *out = s;
    return MOE_OK;
}

/* A shard named in an index must be a file of the directory itself. */
static int plain_name(const char *name)
{
    return *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

typedef struct {
    const char *tensor, *shard;
} map_entry;

static int cmp_map_tensor(const void *a, const void *b)
{
    return strcmp(((const map_entry *)a)->tensor, ((const map_entry *)b)->tensor);
}

static int cmp_map_shard(const void *a, const void *b)
{
    return strcmp(((const map_entry *)a)->shard, ((const map_entry *)b)->shard);
}

static moe_status read_all(const char *path, char **out, size_t *len, moe_error *err)
{
    struct stat st;
    size_t got = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *out = NULL;
    if (fd < 0 || fstat(fd, &st) < 0) {
        moe_status rc = fail(err, MOE_EIO, path, "cannot open: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > INDEX_MAX) {
        close(fd);
        return fail(err, S_ISREG(st.st_mode) ? MOE_EFORMAT : MOE_EIO, path,
                    S_ISREG(st.st_mode) ? "file is larger than an index can be"
                                        : "not a regular file");
    }
    if (!(buf = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return fail(err, MOE_ENOMEM, path, "out of memory");
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            moe_status rc = fail(err, MOE_EIO, path, "cannot read: %s",
                                 r ? strerror(errno) : "file shrank while reading");
            close(fd);
            free(buf);
            return rc;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return MOE_OK;
}

/* Load the shards that model.safetensors.index.json names. Like
 * transformers, only the shards the weight_map lists are opened; tensors
 * those shards hold beyond the map are kept and findable. */
static moe_status open_index(st_set *s, const char *dir, const char *ipath, moe_error *err)
{
    char *buf = NULL, *path = NULL, sn[SHOWN], sf[SHOWN];
    const char *end = NULL;
    cJSON *root = NULL;
    const cJSON *wm = NULL;
    map_entry *m = NULL;
    size_t len = 0, n = 0, bad;
    moe_status rc;

    if ((rc = read_all(ipath, &buf, &len, err)))
        return rc;
    if ((bad = utf8_bad((const unsigned char *)buf, len)) < len) {
        rc = fail(err, MOE_EFORMAT, ipath, "not valid UTF-8 (byte 0x%02x at offset %zu)",
                  (unsigned char)buf[bad], bad);
        goto out;
    }
    if (!(root = cJSON_ParseWithLengthOpts(buf, len, &end, 0)) || *skip_ws(end)) {
        rc = fail(err, MOE_EFORMAT, ipath, "not valid JSON (error near byte %ld)",
                  end ? (long)(skip_ws(end) - buf) : 0L);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = fail(err, MOE_EFORMAT, ipath, "top level is %s, not an object", json_kind(root));
        goto out;
    }
    for (const cJSON *c = root->child; c; c = c->next)
        if (!strcmp(c->string, "weight_map")) {
            if (wm) {
                rc = fail(err, MOE_EFORMAT, ipath, "\"weight_map\" appears twice");
                goto out;
            }
            wm = c;
        }
    if (!wm || !cJSON_IsObject(wm) || !wm->child) {
        rc = fail(err, MOE_EFORMAT, ipath, "%s",
                  !wm                   ? "has no \"weight_map\" object"
                  : !cJSON_IsObject(wm) ? "\"weight_map\" is not an object"
                                        : "\"weight_map\" lists no tensors");
        goto out;
    }
    if (!(m = malloc((size_t)cJSON_GetArraySize(wm) * sizeof *m))) {
        rc = fail(err, MOE_ENOMEM, ipath, "out of memory");
        goto out;
    }
    for (const cJSON *c = wm->child; c; c = c->next, n++) {
        if (!cJSON_IsString(c)) {
            rc = fail(err, MOE_EFORMAT, ipath, "weight_map entry for '%s' is %s, not a file name",
                      moe_shown(sn, c->string), json_kind(c));
            goto out;
        }
        if (!plain_name(c->valuestring)) {
            rc = fail(err, MOE_EFORMAT, ipath,
                      "weight_map puts '%s' in '%s', which is not a plain file name "
                      "in the directory",
                      moe_shown(sn, c->string), moe_shown(sf, c->valuestring));
            goto out;
        }
        m[n].tensor = c->string;
        m[n].shard = c->valuestring;
    }
    qsort(m, n, sizeof *m, cmp_map_tensor);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(m[i - 1].tensor, m[i].tensor)) {
            rc = fail(err, MOE_EFORMAT, ipath, "weight_map lists tensor '%s' twice",
                      moe_shown(sn, m[i].tensor));
            goto out;
        }

    /* Open each distinct shard once, in name order. */
    qsort(m, n, sizeof *m, cmp_map_shard);
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(m[i - 1].shard, m[i].shard))
            continue;
        if (!(path = join(dir, m[i].shard))) {
            rc = fail(err, MOE_ENOMEM, ipath, "out of memory");
            goto out;
        }
        if ((rc = file_load(s, path, err))) {
            static const char why[] = " (a shard listed in " INDEX_NAME ")";
            if (err && strlen(err->msg) + sizeof why <= sizeof err->msg)
                strcat(err->msg, why);
            goto out;
        }
        free(path);
        path = NULL;
    }
    if ((rc = set_sort(s, dir, err)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_set_find(s, m[i].tensor);
        size_t dl = strlen(dir);
        if (!t || strncmp(t->file, dir, dl) || t->file[dl] != '/' ||
            strcmp(t->file + dl + 1, m[i].shard)) {
            rc = fail(err, MOE_EFORMAT, ipath,
                      "weight_map puts tensor '%s' in %s, but that shard does not hold it%s%s",
                      moe_shown(sn, m[i].tensor), moe_shown(sf, m[i].shard), t ? "; it is in " : "",
                      t ? t->file : "");
            goto out;
        }
    }
    rc = MOE_OK;
out:
    free(path);
    free(m);
    cJSON_Delete(root);
    free(buf);
    return rc;
}

static int has_suffix(const char *name)
{
    size_t n = strlen(name), k = sizeof SUFFIX - 1;
    return n > k && !strcmp(name + n - k, SUFFIX);
}

/* Every *.safetensors of the directory, in name order. */
static moe_status open_all(st_set *s, const char *dir, moe_error *err)
{
    DIR *d = opendir(dir);
    char **names = NULL, *path = NULL;
    size_t n = 0, cap = 0;
    moe_status rc = MOE_OK;
    struct dirent *de;

    if (!d)
        return fail(err, MOE_EIO, dir, "cannot open directory: %s", strerror(errno));
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (!has_suffix(de->d_name))
            continue;
        if (!(path = join(dir, de->d_name))) {
            rc = fail(err, MOE_ENOMEM, dir, "out of memory");
            goto out;
        }
        /* stat, not lstat: a Hugging Face cache links each file to a blob */
        int regular = stat(path, &st) == 0 && S_ISREG(st.st_mode);
        free(path);
        path = NULL;
        if (!regular)
            continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? 2 * cap : 8) * sizeof *names);
            if (!grown) {
                rc = fail(err, MOE_ENOMEM, dir, "out of memory");
                goto out;
            }
            names = grown;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = fail(err, MOE_ENOMEM, dir, "out of memory");
            goto out;
        }
        n++;
    }
    if (n == 0) {
        rc = fail(err, MOE_EIO, dir, "no %s, %s or *%s file in the directory", INDEX_NAME,
                  SINGLE_NAME, SUFFIX);
        goto out;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (!(path = join(dir, names[i]))) {
            rc = fail(err, MOE_ENOMEM, dir, "out of memory");
            goto out;
        }
        if ((rc = file_load(s, path, err)))
            goto out;
        free(path);
        path = NULL;
    }
    rc = set_sort(s, dir, err);
out:
    free(path);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

moe_status st_set_open_dir(const char *dir, st_set **out, moe_error *err)
{
    st_set *s = NULL;
    char *ipath = NULL, *spath = NULL;
    struct stat st;
    moe_status rc;

    *out = NULL;
    if (stat(dir, &st) < 0)
        return fail(err, MOE_EIO, dir, "cannot open directory: %s", strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fail(err, MOE_EIO, dir, "not a directory");
    if (!(s = calloc(1, sizeof *s)) || !(ipath = join(dir, INDEX_NAME)) ||
        !(spath = join(dir, SINGLE_NAME))) {
        rc = fail(err, MOE_ENOMEM, dir, "out of memory");
        goto out;
    }
    if (stat(ipath, &st) == 0)
        rc = open_index(s, dir, ipath, err);
    else if (stat(spath, &st) == 0)
        rc = file_load(s, spath, err);
    else
        rc = open_all(s, dir, err);
out:
    free(ipath);
    free(spath);
    if (rc) {
        st_set_close(s);
        return rc;
    }
    *out = s;
    return MOE_OK;
}

/* ---- queries ----------------------------------------------------------- */

const st_tensor *st_set_find(const st_set *s, const char *name)
{
    st_tensor key = {.name = name};
    if (!s->n)
        return NULL;
    return bsearch(&key, s->t, s->n, sizeof *s->t, cmp_tensor_name);
}

size_t st_set_count(const st_set *s) { return s->n; }

const st_tensor *st_set_at(const st_set *s, size_t i)
{
    assert(i < s->n);
    return &s->t[i];
}

const char *st_dtype_name(st_dtype t)
{
    return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].name : "?";
}

int st_dtype_to_moe(st_dtype t)
{
    switch (t) {
    case ST_F32: return MOE_F32;
    case ST_F16: return MOE_F16;
    case ST_BF16: return MOE_BF16;
    default: return -1;
    }
}

const char *st_set_metadata(const st_set *s, const char *key)
{
    if (!s->n_files || !s->files[0].meta)
        return NULL;
    for (const cJSON *c = s->files[0].meta->child; c; c = c->next)
        if (!strcmp(c->string, key))
            return c->valuestring;
    return NULL;
}
