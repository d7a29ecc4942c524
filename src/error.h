/* Filling a caller-owned moe_error: the one way the engine reports failure. */
#ifndef MOE_ERROR_H
#define MOE_ERROR_H

#include "moescope/moescope.h"

/* Format a message into err (which may be NULL) and return `code`. */
moe_status moe_fail(moe_error *err, moe_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Room for a name quoted in a message (a tensor, a key), cut by moe_shown. */
#define MOE_SHOWN 100

/* s made fit for a one-line message in buf[MOE_SHOWN]: control bytes
 * become '?', a long name is cut with "...". Returns buf. */
const char *moe_shown(char *buf, const char *s);

#endif
