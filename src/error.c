/* Error reporting helpers. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

moe_status moe_fail(moe_error *err, moe_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *moe_status_str(moe_status s)
{
    switch (s) {
    case MOE_OK: return "ok";
    case MOE_EIO: return "I/O error";
    case MOE_EFORMAT: return "format error";
    case MOE_EUNSUPPORTED: return "unsupported";
    case MOE_ENOMEM: return "out of memory";
    case MOE_EINVAL: return "invalid argument";
    }
    return "unknown error";
}

const char *moe_shown(char *buf, const char *s)
{
    size_t i = 0;
    for (; i < MOE_SHOWN - 4 && s[i]; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}
