/* GGUF: parse, validate and mmap one model file.
 *
 * The header is walked once with a cursor that never reads past the end of
 * the mapping: every count and length is checked against the bytes that
 * remain before anything is allocated for it, and every product of sizes
 * is overflow-checked. The rules are those of ggml's docs/gguf.md and the
 * checks of ggml's reader (src/gguf.cpp), which is what decides in practice
 * whether a file is a GGUF file. The host is assumed little-endian, as the
 * files are (a big-endian file shows up as an absurd version). */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

#define GGUF_MAX_STRING (1ull << 30) /* ggml's GGUF_MAX_STRING_LENGTH */
#define GGUF_MAX_ARRAY (1ull << 30)  /* ggml's GGUF_MAX_ARRAY_ELEMENTS */
#define GGUF_MAX_KEY 65535           /* gguf.md: keys are at most 2^16-1 bytes */
#define SHOWN MOE_SHOWN

/* Block size and bytes per block of every ggml type (ggml.c's type_traits);
 * 0 for the numbers that ggml has removed. */
static const struct {
    const char *name;
    uint32_t block, size;
} types[GGML_TYPE_COUNT] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},    [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},    [42] = {"Q2_0", 64, 18},
};

static const struct {
    const char *name;
    unsigned size; /* bytes of one value; 0: a string or an array */
} vtypes[GGUF_VTYPE_COUNT] = {
    [GGUF_U8] = {"UINT8", 1},    [GGUF_I8] = {"INT8", 1},       [GGUF_U16] = {"UINT16", 2},
    [GGUF_I16] = {"INT16", 2},   [GGUF_U32] = {"UINT32", 4},    [GGUF_I32] = {"INT32", 4},
    [GGUF_F32] = {"FLOAT32", 4}, [GGUF_BOOL] = {"BOOL", 1},     [GGUF_STRING] = {"STRING", 0},
    [GGUF_ARRAY] = {"ARRAY", 0}, [GGUF_U64] = {"UINT64", 8},    [GGUF_I64] = {"INT64", 8},
    [GGUF_F64] = {"FLOAT64", 8},
};

struct gguf_file {
    char *path;
    unsigned char *map;
    size_t size;
    uint32_t version;
    size_t alignment;
    gguf_kv *kv;          /* (n_kv) in file order */
    size_t n_kv;
    gguf_tensor *t;       /* (n_t) in file order */
    size_t n_t;
    gguf_kv **kv_sorted;  /* by key, for lookup */
    gguf_tensor **t_sorted;
    char *names;          /* keys and tensor names, back to back */
};

/* A read cursor over [p, end) that fails instead of running past end. */
typedef struct {
    const unsigned char *p, *base, *end;
    const char *path;
    moe_error *err;
} cursor;

const char *gguf_type_name(uint32_t t)
{
    return t < GGML_TYPE_COUNT ? types[t].name : NULL;
}

uint32_t gguf_type_block(uint32_t t)
{
    return t < GGML_TYPE_COUNT ? types[t].block : 0;
}

uint32_t gguf_type_size(uint32_t t)
{
    return t < GGML_TYPE_COUNT ? types[t].size : 0;
}

const char *gguf_vtype_name(gguf_vtype t)
{
    return (unsigned)t < GGUF_VTYPE_COUNT ? vtypes[t].name : "?";
}

__attribute__((format(printf, 2, 3))) static moe_status bad(cursor *c, const char *fmt, ...)
{
    char msg[sizeof ((moe_error *)0)->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return moe_fail(c->err, MOE_EFORMAT, "%s: %s", c->path, msg);
}

static uint64_t remain(const cursor *c)
{
    return (uint64_t)(c->end - c->p);
}

static int take(cursor *c, void *dst, size_t n, const char *what)
{
    if (remain(c) < n) {
        bad(c, "the file ends inside %s (offset %zu)", what, (size_t)(c->p - c->base));
        return 0;
    }
    memcpy(dst, c->p, n);
    c->p += n;
    return 1;
}

/* A string: its length (checked against the rest of the file), and where
 * its bytes are. */
static int take_str(cursor *c, const unsigned char **s, uint64_t *len, const char *what)
{
    if (!take(c, len, 8, what))
        return 0;
    if (*len > GGUF_MAX_STRING) {
        bad(c, "%s has length %llu, more than the limit of %llu bytes", what, (unsigned long long)*len,
            GGUF_MAX_STRING);
        return 0;
    }
    if (*len > remain(c)) {
        bad(c, "%s has length %llu but only %llu bytes of the file remain", what, (unsigned long long)*len,
            (unsigned long long)remain(c));
        return 0;
    }
    *s = c->p;
    c->p += *len;
    return 1;
}

/* Check one value of scalar type t at the cursor and step over it. */
static int skip_value(cursor *c, gguf_vtype t, const char *key)
{
    char k[SHOWN];
    if (t == GGUF_STRING) {
        const unsigned char *s;
        uint64_t n;
        char what[SHOWN + 32];
        snprintf(what, sizeof what, "the string value of '%s'", moe_shown(k, key));
        return take_str(c, &s, &n, what);
    }
    if (remain(c) < vtypes[t].size) {
        bad(c, "the file ends inside the value of '%s'", moe_shown(k, key));
        return 0;
    }
    if (t == GGUF_BOOL && *c->p > 1) { /* gguf.md: anything but 0 or 1 is invalid */
        bad(c, "key '%s' holds a bool of value %u; a bool is 0 or 1", moe_shown(k, key), *c->p);
        return 0;
    }
    c->p += vtypes[t].size;
    return 1;
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp((*(gguf_kv *const *)a)->key, (*(gguf_kv *const *)b)->key);
}

static int cmp_t(const void *a, const void *b)
{
    return strcmp((*(gguf_tensor *const *)a)->name, (*(gguf_tensor *const *)b)->name);
}

/* Copy a key or name out of the file as a C string; names with a NUL
 * byte are refused (they could not be looked up). */
static char *keep_name(char **next, const unsigned char *s, uint64_t n)
{
    char *d = *next;
    memcpy(d, s, n);
    d[n] = '\0';
    *next += n + 1;
    return memchr(d, '\0', n) ? NULL : d;
}

static moe_status parse(gguf_file *g, moe_error *err)
{
    cursor c = {g->map, g->map, g->map + g->size, g->path, err};
    char k[SHOWN], k2[SHOWN];
    unsigned char magic[4];
    uint64_t n_t, n_kv;

    if (g->size < 4 || (take(&c, magic, 4, "the magic"), memcmp(magic, "GGUF", 4)))
        return bad(&c, "not a GGUF file (it does not begin with the magic \"GGUF\")");
    if (!take(&c, &g->version, 4, "the version"))
        return MOE_EFORMAT;
    if (g->version == 1)
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: GGUF version 1 is not supported (only 2 and 3)", g->path);
    if ((g->version & 0xffff) == 0 && g->version)
        return moe_fail(err, MOE_EUNSUPPORTED,
                        "%s: GGUF version %u looks byte-swapped: a big-endian file is not supported", g->path,
                        g->version);
    if (g->version != 2 && g->version != 3)
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: GGUF version %u is not supported (only 2 and 3)", g->path,
                        g->version);
    if (!take(&c, &n_t, 8, "the tensor count") || !take(&c, &n_kv, 8, "the metadata count"))
        return MOE_EFORMAT;
    /* Every entry takes at least this many bytes, so no count can exceed
     * what the rest of the file holds: a key-value pair 8+1+4+1, a tensor
     * 8+1+4+8+4+8. */
    if (n_kv > remain(&c) / 14)
        return bad(&c, "the header claims %llu metadata entries, more than the file's %zu bytes can hold",
                   (unsigned long long)n_kv, g->size);
    if (n_t > remain(&c) / 33)
        return bad(&c, "the header claims %llu tensors, more than the file's %zu bytes can hold",
                   (unsigned long long)n_t, g->size);
    g->n_kv = n_kv;
    g->n_t = n_t;
    /* every name is shorter than the file; the copies fit in its size */
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->t = calloc(n_t ? n_t : 1, sizeof *g->t);
    g->kv_sorted = malloc((n_kv ? n_kv : 1) * sizeof *g->kv_sorted);
    g->t_sorted = malloc((n_t ? n_t : 1) * sizeof *g->t_sorted);
    g->names = malloc(g->size + 1);
    if (!g->kv || !g->t || !g->kv_sorted || !g->t_sorted || !g->names)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the header", g->path);
    char *next = g->names;

    /* ---- metadata ---- */
    for (size_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        const unsigned char *s;
        uint64_t len;
        uint32_t type;
        char what[48];
        snprintf(what, sizeof what, "the key of metadata entry %zu", i);
        if (!take_str(&c, &s, &len, what))
            return MOE_EFORMAT;
        if (len == 0)
            return bad(&c, "metadata entry %zu has an empty key", i);
        if (len > GGUF_MAX_KEY)
            return bad(&c, "metadata entry %zu has a key of %llu bytes; keys are at most %d", i,
                       (unsigned long long)len, GGUF_MAX_KEY);
        if (!(kv->key = keep_name(&next, s, len)))
            return bad(&c, "metadata entry %zu has a key with a NUL byte", i);
        if (!take(&c, &type, 4, "a value type"))
            return MOE_EFORMAT;
        if (type >= GGUF_VTYPE_COUNT)
            return bad(&c, "key '%s' has unknown value type %u", moe_shown(k, kv->key), type);
        kv->type = kv->elem = (gguf_vtype)type;
        kv->n = 1;
        if (type == GGUF_ARRAY) {
            uint64_t n;
            if (!take(&c, &type, 4, "an array's element type") || !take(&c, &n, 8, "an array's length"))
                return MOE_EFORMAT;
            if (type >= GGUF_VTYPE_COUNT)
                return bad(&c, "array '%s' has unknown element type %u", moe_shown(k, kv->key), type);
            if (type == GGUF_ARRAY) /* as ggml's reader: nested arrays are not read */
                return bad(&c, "array '%s' is an array of arrays, which GGUF readers do not support",
                           moe_shown(k, kv->key));
            if (n > GGUF_MAX_ARRAY)
                return bad(&c, "array '%s' has %llu elements, more than the limit of %llu", moe_shown(k, kv->key),
                           (unsigned long long)n, GGUF_MAX_ARRAY);
            /* each element takes at least its size (a string its length) */
            uint64_t least = type == GGUF_STRING ? 8 : vtypes[type].size;
            if (n > remain(&c) / least)
                return bad(&c, "array '%s' has %llu elements of %s, more than the rest of the file holds",
                           moe_shown(k, kv->key), (unsigned long long)n, vtypes[type].name);
            kv->elem = (gguf_vtype)type;
            kv->n = n;
        }
        kv->val = c.p;
        for (uint64_t j = 0; j < kv->n; j++)
            if (!skip_value(&c, kv->elem, kv->key))
                return MOE_EFORMAT;
        g->kv_sorted[i] = kv;
    }
    qsort(g->kv_sorted, n_kv, sizeof *g->kv_sorted, cmp_kv);
    for (size_t i = 1; i < n_kv; i++)
        if (!strcmp(g->kv_sorted[i]->key, g->kv_sorted[i - 1]->key))
            return bad(&c, "duplicate metadata key '%s'", moe_shown(k, g->kv_sorted[i]->key));

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find_kv(g, "general.alignment");
    if (al) {
        uint32_t a;
        if (al->type != GGUF_U32)
            return bad(&c, "general.alignment must be a UINT32, not %s", vtypes[al->type].name);
        memcpy(&a, al->val, 4);
        if (a == 0 || (a & (a - 1)))
            return bad(&c, "general.alignment %u is not a power of two", a);
        g->alignment = a;
    }

    /* ---- tensor infos ---- */
    for (size_t i = 0; i < n_t; i++) {
        gguf_tensor *t = &g->t[i];
        const unsigned char *s;
        uint64_t len, off;
        uint32_t nd;
        char what[48];
        snprintf(what, sizeof what, "the name of tensor %zu", i);
        if (!take_str(&c, &s, &len, what))
            return MOE_EFORMAT;
        if (len == 0)
            return bad(&c, "tensor %zu has an empty name", i);
        if (len >= GGUF_MAX_NAME)
            return bad(&c, "tensor %zu has a name of %llu bytes; names are at most %d", i,
                       (unsigned long long)len, GGUF_MAX_NAME - 1);
        if (!(t->name = keep_name(&next, s, len)))
            return bad(&c, "tensor %zu has a name with a NUL byte", i);
        if (!take(&c, &nd, 4, "a tensor's dimension count"))
            return MOE_EFORMAT;
        if (nd < 1 || nd > GGUF_MAX_DIMS)
            return bad(&c, "tensor '%s' has %u dimensions; 1 to %d are allowed", moe_shown(k, t->name), nd,
                       GGUF_MAX_DIMS);
        t->n_dims = (int)nd;
        t->numel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d < t->n_dims && !take(&c, &t->ne[d], 8, "a tensor's shape"))
                return MOE_EFORMAT;
            if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
                return bad(&c, "tensor '%s' has dimension %d of %lld elements; each must be at least 1",
                           moe_shown(k, t->name), d, (long long)t->ne[d]);
            if (__builtin_mul_overflow(t->numel, t->ne[d], &t->numel) || t->numel > INT64_MAX)
                return bad(&c, "tensor '%s': the product of its dimensions overflows", moe_shown(k, t->name));
        }
        if (!take(&c, &t->type, 4, "a tensor's type"))
            return MOE_EFORMAT;
        uint32_t blk = gguf_type_block(t->type), tsz = gguf_type_size(t->type);
        if (!blk)
            return bad(&c, "tensor '%s' has type %u, which is not a ggml type", moe_shown(k, t->name), t->type);
        if (t->ne[0] % blk)
            return bad(&c, "tensor '%s' of type %s has rows of %llu elements, not a multiple of its block size %u",
                       moe_shown(k, t->name), types[t->type].name, (unsigned long long)t->ne[0], blk);
        if (__builtin_mul_overflow(t->numel / blk, (uint64_t)tsz, &t->nbytes))
            return bad(&c, "tensor '%s': its size in bytes overflows", moe_shown(k, t->name));
        if (!take(&c, &off, 8, "a tensor's offset"))
            return MOE_EFORMAT;
        t->data = (const void *)(uintptr_t)off; /* an offset until the data section is known */
        g->t_sorted[i] = t;
    }
    qsort(g->t_sorted, n_t, sizeof *g->t_sorted, cmp_t);
    for (size_t i = 1; i < n_t; i++)
        if (!strcmp(g->t_sorted[i]->name, g->t_sorted[i - 1]->name))
            return bad(&c, "duplicate tensor name '%s'", moe_shown(k, g->t_sorted[i]->name));

    /* ---- the data section: aligned, tensors in order, each padded ---- */
    uint64_t start = (uint64_t)(c.p - c.base), expect = 0;
    start = (start + g->alignment - 1) / g->alignment * g->alignment;
    for (size_t i = 0; i < n_t; i++) {
        gguf_tensor *t = &g->t[i];
        uint64_t off = (uint64_t)(uintptr_t)t->data, end;
        if (off % g->alignment)
            return bad(&c, "tensor '%s' has data offset %llu, not a multiple of the alignment %zu",
                       moe_shown(k, t->name), (unsigned long long)off, g->alignment);
        if (start > g->size || off > g->size - start || t->nbytes > g->size - start - off)
            return bad(&c, "tensor '%s' (%s, %llu bytes at data offset %llu) lies past the end of the file",
                       moe_shown(k, t->name), types[t->type].name, (unsigned long long)t->nbytes,
                       (unsigned long long)off);
        if (off != expect)
            return bad(&c,
                       "tensor '%s' has data offset %llu, expected %llu (after '%s'): tensors are stored in "
                       "order, each padded to the alignment",
                       moe_shown(k, t->name), (unsigned long long)off, (unsigned long long)expect,
                       i ? moe_shown(k2, g->t[i - 1].name) : "the start");
        end = off + t->nbytes;
        expect = (end + g->alignment - 1) / g->alignment * g->alignment;
        t->data = g->map + start + off;
    }
    return MOE_OK;
}

moe_status gguf_open(const char *path, gguf_file **out, moe_error *err)
{
    *out = NULL;
    gguf_file *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return moe_fail(err, MOE_ENOMEM, "out of memory opening %s", path);
    }
    g->map = MAP_FAILED;
    moe_status st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        st = moe_fail(err, MOE_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = moe_fail(err, MOE_EIO, "%s: not a regular file", path);
        goto fail;
    }
    g->size = (size_t)sb.st_size;
    if (g->size < 24) {
        st = moe_fail(err, MOE_EFORMAT, "%s: %zu bytes is too short for a GGUF header (24 bytes)", path, g->size);
        goto fail;
    }
    g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (g->map == MAP_FAILED) {
        st = moe_fail(err, MOE_EIO, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if ((st = parse(g, err)))
        goto fail;
    *out = g;
    return MOE_OK;
fail:
    if (fd >= 0)
        close(fd);
    gguf_close(g);
    return st;
}

void gguf_close(gguf_file *g)
{
    if (!g)
        return;
    if (g->map && g->map != MAP_FAILED)
        munmap(g->map, g->size);
    free(g->kv);
    free(g->t);
    free(g->kv_sorted);
    free(g->t_sorted);
    free(g->names);
    free(g->path);
    free(g);
}

const char *gguf_path(const gguf_file *g) { return g->path; }
uint32_t gguf_version(const gguf_file *g) { return g->version; }
size_t gguf_alignment(const gguf_file *g) { return g->alignment; }
size_t gguf_kv_count(const gguf_file *g) { return g->n_kv; }
const gguf_kv *gguf_kv_at(const gguf_file *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t gguf_tensor_count(const gguf_file *g) { return g->n_t; }
const gguf_tensor *gguf_tensor_at(const gguf_file *g, size_t i) { return i < g->n_t ? &g->t[i] : NULL; }

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key)
{
    gguf_kv probe = {.key = key}, *pp = &probe;
    gguf_kv **hit = bsearch(&pp, g->kv_sorted, g->n_kv, sizeof *g->kv_sorted, cmp_kv);
    return hit ? *hit : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name)
{
    gguf_tensor probe = {.name = name}, *pp = &probe;
    gguf_tensor **hit = bsearch(&pp, g->t_sorted, g->n_t, sizeof *g->t_sorted, cmp_t);
    return hit ? *hit : NULL;
}

/* ---- typed metadata ---- */

static const gguf_kv *want(const gguf_file *g, const char *key, int *found, moe_status *st, moe_error *err)
{
    const gguf_kv *kv = gguf_find_kv(g, key);
    *st = MOE_OK;
    if (found)
        *found = kv != NULL;
    else if (!kv)
        *st = moe_fail(err, MOE_EFORMAT, "%s: metadata key '%s' is missing", g->path, key);
    return kv;
}

static int is_int(gguf_vtype t)
{
    return t <= GGUF_I32 || t == GGUF_U64 || t == GGUF_I64;
}

/* An integer of type t at p; 0 if it does not fit an int64. */
static int read_int(gguf_vtype t, const unsigned char *p, int64_t *v)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64; } u;
    memcpy(&u, p, vtypes[t].size);
    switch (t) {
    case GGUF_U8: *v = u.u8; return 1;
    case GGUF_I8: *v = u.i8; return 1;
    case GGUF_U16: *v = u.u16; return 1;
    case GGUF_I16: *v = u.i16; return 1;
    case GGUF_U32: *v = u.u32; return 1;
    case GGUF_I32: *v = u.i32; return 1;
    case GGUF_I64: *v = u.i64; return 1;
    default: *v = (int64_t)u.u64; return u.u64 <= INT64_MAX;
    }
}

moe_status gguf_get_int(const gguf_file *g, const char *key, int64_t lo, int64_t hi, int64_t *out, int *found,
                        moe_error *err)
{
    moe_status st;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    int64_t v = 0;
    if (kv->type == GGUF_ARRAY || !is_int(kv->type))
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is %s%s; an integer was expected", g->path, key,
                        kv->type == GGUF_ARRAY ? "an array of " : "a ",
                        vtypes[kv->type == GGUF_ARRAY ? kv->elem : kv->type].name);
    if (!read_int(kv->type, kv->val, &v) || v < lo || v > hi)
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is out of range (expected %lld to %lld)", g->path,
                        key, (long long)lo, (long long)hi);
    *out = v;
    return MOE_OK;
}

moe_status gguf_get_float(const gguf_file *g, const char *key, double *out, int *found, moe_error *err)
{
    moe_status st;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    if (kv->type == GGUF_F32) {
        float f;
        memcpy(&f, kv->val, 4);
        *out = f;
    } else if (kv->type == GGUF_F64) {
        memcpy(out, kv->val, 8);
    } else {
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is a %s; a FLOAT32 was expected", g->path, key,
                        vtypes[kv->type].name);
    }
    return MOE_OK;
}

moe_status gguf_get_bool(const gguf_file *g, const char *key, int *out, int *found, moe_error *err)
{
    moe_status st;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    if (kv->type != GGUF_BOOL)
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is a %s; a BOOL was expected", g->path, key,
                        vtypes[kv->type].name);
    *out = kv->val[0];
    return MOE_OK;
}

moe_status gguf_get_str(const gguf_file *g, const char *key, const char **out, size_t *len, int *found,
                        moe_error *err)
{
    moe_status st;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    if (kv->type != GGUF_STRING)
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is a %s; a STRING was expected", g->path, key,
                        vtypes[kv->type].name);
    uint64_t n;
    memcpy(&n, kv->val, 8);
    *out = (const char *)kv->val + 8;
    *len = (size_t)n;
    return MOE_OK;
}

moe_status gguf_get_int_array(const gguf_file *g, const char *key, int64_t *out, size_t cap, size_t *n,
                              int *found, moe_error *err)
{
    moe_status st;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    if (kv->type != GGUF_ARRAY || !is_int(kv->elem))
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is not an array of integers", g->path, key);
    if (kv->n > cap)
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' has %llu elements; at most %zu were expected", g->path,
                        key, (unsigned long long)kv->n, cap);
    for (size_t i = 0; i < kv->n; i++)
        if (!read_int(kv->elem, kv->val + i * vtypes[kv->elem].size, &out[i]))
            return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' element %zu is out of range", g->path, key, i);
    *n = (size_t)kv->n;
    return MOE_OK;
}

static const char *array_kind(const gguf_kv *kv, char *buf, size_t cap)
{
    if (kv->type == GGUF_ARRAY)
        snprintf(buf, cap, "an array of %s", vtypes[kv->elem].name);
    else
        snprintf(buf, cap, "a %s", vtypes[kv->type].name);
    return buf;
}

moe_status gguf_get_str_array(const gguf_file *g, const char *key, gguf_strv **out, size_t *n, int *found,
                              moe_error *err)
{
    moe_status st;
    *out = NULL;
    *n = 0;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    char what[64];
    if (kv->type != GGUF_ARRAY || kv->elem != GGUF_STRING)
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is %s; an array of STRING was expected", g->path, key,
                        array_kind(kv, what, sizeof what));
    /* each element is at least its 8-byte length, all inside the file */
    gguf_strv *v = malloc((kv->n ? (size_t)kv->n : 1) * sizeof *v);
    if (!v)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the %llu strings of '%s'", g->path,
                        (unsigned long long)kv->n, key);
    const unsigned char *p = kv->val;
    for (uint64_t i = 0; i < kv->n; i++) {
        uint64_t len;
        memcpy(&len, p, 8);
        v[i] = (gguf_strv){(const char *)p + 8, (size_t)len};
        p += 8 + len;
    }
    *out = v;
    *n = (size_t)kv->n;
    return MOE_OK;
}

moe_status gguf_get_float_array(const gguf_file *g, const char *key, float **out, size_t *n, int *found,
                                moe_error *err)
{
    moe_status st;
    *out = NULL;
    *n = 0;
    const gguf_kv *kv = want(g, key, found, &st, err);
    if (!kv)
        return st;
    char what[64];
    if (kv->type != GGUF_ARRAY || !(kv->elem == GGUF_F32 || kv->elem == GGUF_F64 || is_int(kv->elem)))
        return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' is %s; an array of numbers was expected", g->path,
                        key, array_kind(kv, what, sizeof what));
    float *v = malloc((kv->n ? (size_t)kv->n : 1) * sizeof *v);
    if (!v)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the %llu numbers of '%s'", g->path,
                        (unsigned long long)kv->n, key);
    size_t sz = vtypes[kv->elem].size;
    for (uint64_t i = 0; i < kv->n; i++) {
        const unsigned char *p = kv->val + i * sz;
        if (kv->elem == GGUF_F32) {
            memcpy(&v[i], p, 4);
        } else if (kv->elem == GGUF_F64) {
            double d;
            memcpy(&d, p, 8);
            v[i] = (float)d;
        } else {
            int64_t x;
            if (!read_int(kv->elem, p, &x)) {
                free(v);
                return moe_fail(err, MOE_EFORMAT, "%s: metadata '%s' element %llu is out of range", g->path, key,
                                (unsigned long long)i);
            }
            v[i] = (float)x;
        }
    }
    *out = v;
    *n = (size_t)kv->n;
    return MOE_OK;
}

uint64_t gguf_array_len(const gguf_file *g, const char *key, gguf_vtype *elem)
{
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || kv->type != GGUF_ARRAY)
        return 0;
    if (elem)
        *elem = kv->elem;
    return kv->n;
}
