/* Parsing numbers from the command line (see args.h). */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fail_msg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("moescope: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

typedef struct {
    const char *name;
    moe_dtype type;
} named_type;

/* s as one of n named types, or the error naming them all. */
static int arg_type_of(const char *flag, const char *s, const named_type *names, int n, moe_dtype *out)
{
    for (int i = 0; i < n; i++)
        if (s && !strcmp(s, names[i].name)) {
            *out = names[i].type;
            return 1;
        }
    char list[128] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", names[i].name,
                 i + 2 < n ? ", " : i + 1 < n ? " or " : "");
    fail_msg("%s takes %s, not '%s'", flag, list, s ? s : "");
    return 0;
}

int arg_kv_type(const char *flag, const char *s, moe_dtype *out)
{
    static const named_type kv[] = {{"f32", MOE_F32}, {"f16", MOE_F16}, {"q8_0", MOE_Q8_0}};
    return arg_type_of(flag, s, kv, 3, out);
}

int arg_act_type(const char *flag, const char *s, moe_dtype *out)
{
    static const named_type act[] = {{"f32", MOE_F32}, {"q8", MOE_Q8_0}};
    return arg_type_of(flag, s, act, 2, out);
}

int arg_int(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fail_msg("%s expects an integer from %ld to %ld, not '%s'", flag, lo, hi, s ? s : "");
        return 0;
    }
    *out = v;
    return 1;
}

int arg_float(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !(v >= lo && v <= hi)) {
        fail_msg("%s expects a number from %g to %g, not '%s'", flag, lo, hi, s ? s : "");
        return 0;
    }
    *out = v;
    return 1;
}

int arg_id_list(const char *flag, const char *s, int32_t **ids)
{
    *ids = NULL;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        fail_msg("out of memory");
        return -1;
    }
    int n = 0;
    const char *p = s;
    while (1) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            fail_msg("%s expects comma-separated token ids, such as 1,5,9 (bad at '%s')", flag, p);
            free(v);
            return -1;
        }
        v[n++] = (int32_t)x;
        if (!*end)
            break;
        p = end + 1;
    }
    *ids = v;
    return n;
}
