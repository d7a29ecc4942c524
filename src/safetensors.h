/* safetensors: parse, validate and mmap one checkpoint's tensors.
 *
 * A set is one file (model.safetensors), the shards listed in
 * model.safetensors.index.json, or every *.safetensors in a directory.
 * Every rule of the format's specification is checked at open; after that
 * the tensor views are trusted. Data pointers point into read-only mappings
 * owned by the set. */
#ifndef MOE_SAFETENSORS_H
#define MOE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "moescope/moescope.h"

#define ST_MAX_DIMS 8

/* Every dtype the specification names. Only F32, F16 and BF16 map to a
 * moe_dtype; the others are parsed and validated but cannot be computed. */
typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0, ST_F4, ST_F6_E2M3,
    ST_F6_E3M2, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32, ST_F64,
    ST_I64, ST_U64, ST_C64, ST_DTYPE_COUNT
} st_dtype;

typedef struct {
    const char *name;          /* owned by the set */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    const void *data;          /* into the file's mapping (may be unaligned) */
    const char *file;          /* path of the file holding it */
} st_tensor;

typedef struct st_set st_set;

/* Open the tensors of a model directory. Errors name the file and the rule
 * that was broken. */
moe_status st_set_open_dir(const char *dir, st_set **out, moe_error *err);
/* Open exactly one .safetensors file. */
moe_status st_set_open_file(const char *path, st_set **out, moe_error *err);
void st_set_close(st_set *s);

const st_tensor *st_set_find(const st_set *s, const char *name); /* NULL if absent */
size_t st_set_count(const st_set *s);
const st_tensor *st_set_at(const st_set *s, size_t i);
const char *st_dtype_name(st_dtype t);
/* The moe_dtype of a computable tensor type, or -1. */
int st_dtype_to_moe(st_dtype t);
/* Value of a "__metadata__" key of the first file, or NULL. */
const char *st_set_metadata(const st_set *s, const char *key);

#endif
