/* Small helpers shared by the unit tests: where the sources are, and
 * reading a whole file. */
#ifndef MOE_TESTUTIL_H
#define MOE_TESTUTIL_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* $top_srcdir (set by make check), else ".". */
const char *test_srcdir(void);
/* The whole file, NUL-terminated, or NULL; *len (if not NULL) its size.
 * The caller frees it. */
char *test_slurp(const char *path, size_t *len);
/* The file parsed as JSON, or NULL. The caller deletes it. */
cJSON *test_read_json(const char *path);

#endif
