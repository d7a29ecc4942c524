/* Parsing the control vocabulary (see controls_parse.h). */
#include "controls_parse.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const VERBS[] = {"k", "off", "on", "force", "bias", "offset", "capacity", NULL};

int control_is_verb(const char *verb)
{
    for (const char *const *v = VERBS; *v; v++)
        if (!strcmp(verb, *v))
            return 1;
    return 0;
}

const char *control_flag_verb(const char *flag)
{
    if (strncmp(flag, "--", 2) != 0)
        return NULL;
    if (!strcmp(flag, "--expert-off"))
        return "off";
    if (!strcmp(flag, "--expert-on"))
        return "on";
    return control_is_verb(flag + 2) ? flag + 2 : NULL;
}

__attribute__((format(printf, 3, 4))) static int bad(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return -1;
}

/* A non-negative integer at *p, advancing past it. */
static int take_int(const char **p, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno || v < 0 || v > 1 << 30 || **p == '-' || **p == '+' || **p == ' ')
        return 0;
    *out = (int)v;
    *p = end;
    return 1;
}

static int take_float(const char **p, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(*p, &end);
    if (end == *p || errno || !isfinite(v) || **p == ' ')
        return 0;
    *out = (float)v;
    *p = end;
    return 1;
}

/* An optional "L:" prefix; *layer is -1 without one. */
static int take_layer(const char **p, int *layer)
{
    const char *q = *p;
    *layer = -1;
    if (*q == 'L' || *q == 'l')
        q++;
    int l;
    if (take_int(&q, &l) && *q == ':') {
        *layer = l;
        *p = q + 1;
        return 1;
    }
    return **p != 'L' && **p != 'l'; /* "L" must be followed by a layer */
}

/* "E[,E..]" into ex; returns the count or -1. */
static int take_list(const char **p, int *ex, int cap)
{
    int n = 0;
    do {
        if (n == cap || !take_int(p, &ex[n]))
            return -1;
        n++;
    } while (**p == ',' && (*p)++);
    return n;
}

int control_apply(moe_session *s, const char *verb, const char *arg, char *msg, size_t msglen)
{
    moe_error err = {0};
    const char *p = arg ? arg : "";
    int layer, n, e, ex[256];
    float x;
    moe_status st = MOE_OK;
    if (!strcmp(verb, "k")) {
        if (!take_layer(&p, &layer) || !take_int(&p, &n) || *p)
            return bad(msg, msglen, "k: expected N or L:N (e.g. 2 or L3:2), not '%s'", arg);
        st = moe_session_set_k(s, layer, n, &err);
    } else if (!strcmp(verb, "off") || !strcmp(verb, "on")) {
        if (!take_layer(&p, &layer) || (n = take_list(&p, ex, 256)) < 0 || *p)
            return bad(msg, msglen, "%s: expected E[,E...] or L:E[,E...] (e.g. 3 or L5:2), not '%s'", verb, arg);
        /* validate every expert before changing any, so a bad one changes nothing */
        for (int i = 0; i < n && !st; i++) {
            st = moe_session_set_expert(s, layer, ex[i], !strcmp(verb, "on"), &err);
            if (st) /* undo the ones already applied */
                for (int j = 0; j < i; j++)
                    moe_session_set_expert(s, layer, ex[j], strcmp(verb, "on") != 0, NULL);
        }
    } else if (!strcmp(verb, "force")) {
        if (!take_layer(&p, &layer))
            return bad(msg, msglen, "force: expected E[,E...], L:E[,E...] or none, not '%s'", arg);
        if (!strcmp(p, "none"))
            n = 0;
        else if ((n = take_list(&p, ex, 256)) < 0 || *p)
            return bad(msg, msglen, "force: expected E[,E...], L:E[,E...] or none, not '%s'", arg);
        st = moe_session_force(s, layer, ex, n, &err);
    } else if (!strcmp(verb, "bias")) {
        if (!take_layer(&p, &layer) || !take_int(&p, &e) || *p++ != '=' || !take_float(&p, &x) || *p)
            return bad(msg, msglen, "bias: expected E=X or L:E=X (e.g. 3=2.5 or L0:3=-1), not '%s'", arg);
        st = moe_session_set_bias(s, layer, e, x, &err);
    } else if (!strcmp(verb, "offset")) {
        moe_offset o = {0};
        o.kind = MOE_OFFSET_MLP;
        if (*p == 'L' || *p == 'l')
            p++;
        int ok = take_int(&p, &o.layer) && *p++ == ':';
        if (ok && !strncmp(p, "resid:", 6)) {
            o.kind = MOE_OFFSET_RESID;
            p += 6;
        } else if (ok && !strncmp(p, "shared:", 7)) {
            o.kind = MOE_OFFSET_SHARED;
            p += 7;
        }
        int a = 0, b = -1;
        ok = ok && take_int(&p, &a);
        if (ok && *p == ':' && o.kind == MOE_OFFSET_MLP) {
            p++;
            ok = take_int(&p, &b);
        }
        ok = ok && *p++ == '=' && take_float(&p, &o.delta) && !*p;
        if (!ok)
            return bad(msg, msglen,
                       "offset: expected L:N=D, L:E:N=D, L:shared:N=D or L:resid:N=D (e.g. 3:417=4), not '%s'",
                       arg);
        if (b >= 0) { /* L:E:N */
            o.expert = a;
            o.neuron = b;
        } else {
            o.expert = -1; /* the layer's dense MLP */
            o.neuron = a;
        }
        st = moe_session_set_offset(s, &o, &err);
    } else if (!strcmp(verb, "capacity")) {
        int drop = 0;
        if (!strcmp(p, "off")) {
            x = 0;
        } else if (!take_float(&p, &x) || x <= 0 || (*p && strcmp(p, ",drop") != 0)) {
            return bad(msg, msglen, "capacity: expected C, C,drop or off (e.g. 1.25), not '%s'", arg);
        } else {
            drop = *p != 0;
        }
        st = moe_session_set_capacity(s, x, drop, &err);
    } else {
        return bad(msg, msglen, "unknown control '%s' (k, off, on, force, bias, offset, capacity)", verb);
    }
    if (st)
        return bad(msg, msglen, "%s %s: %s", verb, arg, err.msg);
    return 0;
}

int control_apply_logged(moe_session *s, const char *change, char *msg, size_t msglen)
{
    moe_error err = {0};
    if (!strcmp(change, "reset")) {
        moe_session_reset_controls(s);
        return 0;
    }
    if (!strcmp(change, "reprefill")) {
        if (moe_session_reprefill(s, &err) == MOE_OK)
            return 0;
        return bad(msg, msglen, "%s", err.msg);
    }
    char verb[16], arg[96];
    const char *sp = strchr(change, ' ');
    if (!sp || (size_t)(sp - change) >= sizeof verb)
        return bad(msg, msglen, "control '%s' is not in the control vocabulary", change);
    memcpy(verb, change, (size_t)(sp - change));
    verb[sp - change] = 0;
    snprintf(arg, sizeof arg, "%s", sp + 1);
    char *drop = strstr(arg, " drop"); /* transcripts of 0.1.0 logged "capacity C drop" */
    if (!strcmp(verb, "capacity") && drop)
        *drop = ',';
    return control_apply(s, verb, arg, msg, msglen);
}
