/* Small helpers shared by the unit tests: where the sources are, and
 * reading a whole file. */
#ifndef MOE_TESTUTIL_H
#define MOE_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* $top_srcdir (set by make check), else ".". */
const char *test_srcdir(void);
/* The whole file, NUL-terminated, or NULL; *len (if not NULL) its size.
 * The caller frees it. */
char *test_slurp(const char *path, size_t *len);
/* The file parsed as JSON, or NULL. The caller deletes it. */
cJSON *test_read_json(const char *path);

/* max |a[i] - b[i]| over n values; a NaN anywhere gives infinity, a failure. */
float test_max_abs_diff(const float *a, const float *b, int n);
/* The index of the largest of n values (the first on ties): greedy choice. */
int test_argmax(const float *v, int n);
/* 1 when the JSON array want holds exactly the n ids. */
int test_same_ids(const cJSON *want, const int32_t *ids, int n);

/* A deterministic generator (splitmix64) over the caller's state: the next
 * 64 bits, and a float uniform in [-1, 1). */
uint64_t test_rng_u64(uint64_t *state);
float test_rng_unit(uint64_t *state);

#endif
