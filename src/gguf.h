/* GGUF: parse, validate and mmap one llama.cpp/ggml model file.
 *
 * Every rule of ggml's docs/gguf.md and every check of ggml's own reader
 * (src/gguf.cpp) is applied at open: after that the metadata and tensor
 * views are trusted. Versions 2 and 3 are read; data pointers point into
 * the file's read-only mapping, owned by the gguf_file. */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "moescope/moescope.h"

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 64 /* ggml's GGML_MAX_NAME: a tensor name is shorter */

/* Metadata value types, as numbered in the file. */
typedef enum {
    GGUF_U8 = 0, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL,
    GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64, GGUF_VTYPE_COUNT
} gguf_vtype;

/* The ggml tensor types moescope names (the reader knows the sizes of all). */
enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q5_K = 13,
    GGML_Q6_K = 14, GGML_BF16 = 30, GGML_TYPE_COUNT = 43
};

typedef struct {
    const char *key;           /* NUL-terminated copy, owned by the file */
    gguf_vtype type;           /* GGUF_ARRAY for an array */
    gguf_vtype elem;           /* an array's element type (never GGUF_ARRAY) */
    uint64_t n;                /* an array's length; 1 otherwise */
    const unsigned char *val;  /* the value (an array's first element) in the mapping */
} gguf_kv;

typedef struct {
    const char *name;          /* NUL-terminated copy, owned by the file */
    uint32_t type;             /* ggml type */
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS];/* ne[0] innermost; unused dimensions are 1 */
    uint64_t numel;
    uint64_t nbytes;
    const void *data;          /* into the mapping, aligned to the file's alignment */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Open and check `path`. Errors name the file and the rule broken. */
moe_status gguf_open(const char *path, gguf_file **out, moe_error *err);
void gguf_close(gguf_file *g);

const char *gguf_path(const gguf_file *g);
uint32_t gguf_version(const gguf_file *g);
size_t gguf_alignment(const gguf_file *g);

size_t gguf_kv_count(const gguf_file *g);
const gguf_kv *gguf_kv_at(const gguf_file *g, size_t i);
const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key); /* NULL if absent */
size_t gguf_tensor_count(const gguf_file *g);
const gguf_tensor *gguf_tensor_at(const gguf_file *g, size_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name); /* NULL if absent */

/* Typed metadata. Each returns MOE_OK and sets *out (and *found to 1) when
 * the key holds a value of a fitting type; when it is absent, MOE_OK with
 * *found 0 (or MOE_EFORMAT naming the key when found is NULL: required).
 * A value of the wrong type, or an integer out of range, is MOE_EFORMAT.
 * Integers accept every integer type; floats F32 and F64. */
moe_status gguf_get_int(const gguf_file *g, const char *key, int64_t lo, int64_t hi, int64_t *out,
                        int *found, moe_error *err);
moe_status gguf_get_float(const gguf_file *g, const char *key, double *out, int *found, moe_error *err);
moe_status gguf_get_bool(const gguf_file *g, const char *key, int *out, int *found, moe_error *err);
/* A string value: *out points into the mapping (not NUL-terminated). */
moe_status gguf_get_str(const gguf_file *g, const char *key, const char **out, size_t *len, int *found,
                        moe_error *err);
/* An array of integers, copied into out (cap entries at most). */
moe_status gguf_get_int_array(const gguf_file *g, const char *key, int64_t *out, size_t cap, size_t *n,
                              int *found, moe_error *err);

/* One string of a string array: a view into the mapping, not NUL-terminated. */
typedef struct {
    const char *s;
    size_t n;
} gguf_strv;

/* An array of strings (every length was checked against the file at open).
 * On MOE_OK *out is a malloc'ed array of *n views that the caller frees
 * (the strings stay in the mapping); NULL with *n 0 when the key is
 * absent and found is not NULL. A key that is not an array of strings is
 * MOE_EFORMAT naming the key and what it holds. */
moe_status gguf_get_str_array(const gguf_file *g, const char *key, gguf_strv **out, size_t *n, int *found,
                              moe_error *err);
/* An array of numbers (F32, F64 or any integer type) as a malloc'ed array
 * of *n floats the caller frees; otherwise as gguf_get_str_array. */
moe_status gguf_get_float_array(const gguf_file *g, const char *key, float **out, size_t *n, int *found,
                                moe_error *err);
/* The element count of an array key, and its element type; 0 when the key
 * is absent or not an array. */
uint64_t gguf_array_len(const gguf_file *g, const char *key, gguf_vtype *elem);

/* The name ("Q8_0"), block size and block bytes of a ggml type; NULL/0 for
 * a number ggml does not define (or has removed). */
const char *gguf_type_name(uint32_t t);
uint32_t gguf_type_block(uint32_t t);
uint32_t gguf_type_size(uint32_t t);
const char *gguf_vtype_name(gguf_vtype t);

#endif
