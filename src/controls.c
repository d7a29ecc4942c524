/* Changing the controls of a session (see the contract comments in
 * moescope.h). Every change is validated first, so a refused one leaves
 * the controls untouched, and then logged with the position it applies
 * from. Allocation happens here, never in the forward pass. */
#include "controls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "session.h"

int controls_init(controls *c, int n_layers, int n_experts, int k)
{
    memset(c, 0, sizeof *c);
    c->n_layers = n_layers;
    c->n_experts = n_experts;
    size_t cells = (size_t)n_layers * n_experts;
    c->k = calloc((size_t)n_layers, sizeof *c->k);
    c->off = calloc(cells, 1);
    c->n_on = calloc((size_t)n_layers, sizeof *c->n_on);
    c->bias = calloc(cells, sizeof *c->bias);
    c->has_bias = calloc((size_t)n_layers, sizeof *c->has_bias);
    c->forced = calloc(cells, 1);
    c->n_forced = calloc((size_t)n_layers, sizeof *c->n_forced);
    if (!c->k || !c->off || !c->n_on || !c->bias || !c->has_bias || !c->forced || !c->n_forced) {
        controls_done(c);
        return -1;
    }
    for (int l = 0; l < n_layers; l++) {
        c->k[l] = k;
        c->n_on[l] = n_experts;
    }
    return 0;
}

void controls_done(controls *c)
{
    free(c->k);
    free(c->off);
    free(c->n_on);
    free(c->bias);
    free(c->has_bias);
    free(c->forced);
    free(c->n_forced);
    free(c->offsets);
    free(c->log);
    memset(c, 0, sizeof *c);
}

/* ---- validation ---------------------------------------------------------- */

static int is_moe_layer(const moe_model *m, int l)
{
    return m->layers[l].n_experts > 0;
}

static moe_status check_layer(const moe_session *s, int layer, moe_error *err)
{
    const moe_model *m = session_model(s);
    if (!m->cfg.n_experts)
        return moe_fail(err, MOE_EINVAL, "%s is a dense model: it has no experts to route",
                        m->info.hf_class);
    if (layer < -1 || layer >= m->cfg.n_layers || (layer >= 0 && !is_moe_layer(m, layer)))
        return moe_fail(err, MOE_EINVAL, "layer %d is not an MoE layer (the model has %d layers, 0 to %d)",
                        layer, m->cfg.n_layers, m->cfg.n_layers - 1);
    return MOE_OK;
}

static moe_status check_expert(const moe_session *s, int expert, moe_error *err)
{
    int n = session_model(s)->cfg.n_experts;
    if (expert < 0 || expert >= n)
        return moe_fail(err, MOE_EINVAL, "expert %d does not exist (the model has %d, 0 to %d)", expert, n,
                        n - 1);
    return MOE_OK;
}

/* The layers a change applies to: [*lo, *hi). */
static void layer_span(const moe_session *s, int layer, int *lo, int *hi)
{
    *lo = layer < 0 ? 0 : layer;
    *hi = layer < 0 ? session_model(s)->cfg.n_layers : layer + 1;
}

/* "L3:" for one layer, "" for all. */
static const char *layer_prefix(char *buf, size_t cap, int layer)
{
    if (layer < 0)
        buf[0] = 0;
    else
        snprintf(buf, cap, "L%d:", layer);
    return buf;
}

__attribute__((format(printf, 6, 7))) static void log_change(moe_session *s, moe_control_kind kind,
                                                             int layer, int expert, float value,
                                                             const char *fmt, ...)
{
    controls *c = session_controls(s);
    if (c->n_log == c->cap_log) {
        int cap = c->cap_log ? 2 * c->cap_log : 16;
        moe_control_event *grown = realloc(c->log, (size_t)cap * sizeof *grown);
        if (!grown)
            return; /* the change stands; only its log entry is lost */
        c->log = grown;
        c->cap_log = cap;
    }
    moe_control_event *e = &c->log[c->n_log++];
    e->pos = moe_session_pos(s);
    e->kind = kind;
    e->layer = layer;
    e->expert = expert;
    e->value = value;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
}

/* ---- the controls -------------------------------------------------------- */

moe_status moe_session_set_k(moe_session *s, int layer, int k, moe_error *err)
{
    moe_status st = check_layer(s, layer, err);
    if (st)
        return st;
    int n = session_model(s)->cfg.n_experts;
    if (k < 1 || k > n)
        return moe_fail(err, MOE_EINVAL, "experts per token must be from 1 to %d, not %d", n, k);
    controls *c = session_controls(s);
    int lo, hi;
    layer_span(s, layer, &lo, &hi);
    for (int l = lo; l < hi; l++)
        c->k[l] = k;
    char p[16];
    log_change(s, MOE_CTL_K, layer, -1, (float)k, "k %s%d", layer_prefix(p, sizeof p, layer), k);
    return MOE_OK;
}

int moe_session_get_k(const moe_session *s, int layer)
{
    const moe_model *m = session_model(s);
    if (!m->cfg.n_experts)
        return 0;
    if (layer < 0 || layer >= m->cfg.n_layers)
        layer = 0;
    return session_controls_const(s)->k[layer];
}

moe_status moe_session_set_expert(moe_session *s, int layer, int expert, int on, moe_error *err)
{
    moe_status st;
    if ((st = check_layer(s, layer, err)) || (st = check_expert(s, expert, err)))
        return st;
    controls *c = session_controls(s);
    int lo, hi;
    layer_span(s, layer, &lo, &hi);
    for (int l = lo; l < hi; l++)
        if (!on && !c->off[(size_t)l * c->n_experts + expert] && c->n_on[l] == 1)
            return moe_fail(err, MOE_EINVAL,
                            "expert %d is the last one on in layer %d; switch another on first", expert, l);
    for (int l = lo; l < hi; l++) {
        uint8_t *cell = &c->off[(size_t)l * c->n_experts + expert];
        c->n_on[l] += (*cell && on) - (!*cell && !on);
        *cell = !on;
    }
    char p[16];
    log_change(s, MOE_CTL_EXPERT, layer, expert, (float)!!on, "%s %s%d", on ? "on" : "off",
               layer_prefix(p, sizeof p, layer), expert);
    return MOE_OK;
}

int moe_session_expert_on(const moe_session *s, int layer, int expert)
{
    const controls *c = session_controls_const(s);
    if (layer < 0 || layer >= c->n_layers || expert < 0 || expert >= c->n_experts)
        return 0;
    return !c->off[(size_t)layer * c->n_experts + expert];
}

moe_status moe_session_force(moe_session *s, int layer, const int *experts, int n, moe_error *err)
{
    moe_status st = check_layer(s, layer, err);
    if (st)
        return st;
    controls *c = session_controls(s);
    if (n < 0 || n > c->n_experts)
        return moe_fail(err, MOE_EINVAL, "cannot force %d experts of %d", n, c->n_experts);
    for (int i = 0; i < n; i++) {
        if ((st = check_expert(s, experts[i], err)))
            return st;
        for (int j = 0; j < i; j++)
            if (experts[j] == experts[i])
                return moe_fail(err, MOE_EINVAL, "expert %d is named twice", experts[i]);
    }
    int lo, hi;
    layer_span(s, layer, &lo, &hi);
    char list[64] = "none", p[16];
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof list - 8; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, i ? ",%d" : "%d", experts[i]);
    for (int l = lo; l < hi; l++) {
        memset(c->forced + (size_t)l * c->n_experts, 0, (size_t)c->n_experts);
        for (int i = 0; i < n; i++)
            c->forced[(size_t)l * c->n_experts + experts[i]] = 1;
        c->n_forced[l] = n;
    }
    log_change(s, MOE_CTL_FORCE, layer, n ? experts[0] : -1, (float)n, "force %s%s",
               layer_prefix(p, sizeof p, layer), list);
    return MOE_OK;
}

int moe_session_forced(const moe_session *s, int layer, int *experts, int cap)
{
    const controls *c = session_controls_const(s);
    if (layer < 0 || layer >= c->n_layers || !c->n_forced[layer])
        return 0;
    int n = 0;
    for (int e = 0; e < c->n_experts; e++)
        if (c->forced[(size_t)layer * c->n_experts + e] && n++ < cap)
            experts[n - 1] = e;
    return c->n_forced[layer];
}

float moe_session_bias(const moe_session *s, int layer, int expert)
{
    const controls *c = session_controls_const(s);
    if (layer < 0 || layer >= c->n_layers || expert < 0 || expert >= c->n_experts)
        return 0;
    return c->bias[(size_t)layer * c->n_experts + expert];
}

moe_status moe_session_set_bias(moe_session *s, int layer, int expert, float delta, moe_error *err)
{
    moe_status st;
    if ((st = check_layer(s, layer, err)) || (st = check_expert(s, expert, err)))
        return st;
    if (!(delta >= -1e4f && delta <= 1e4f))
        return moe_fail(err, MOE_EINVAL, "router bias %g is out of range (-10000 to 10000)", delta);
    controls *c = session_controls(s);
    int lo, hi;
    layer_span(s, layer, &lo, &hi);
    for (int l = lo; l < hi; l++) {
        c->bias[(size_t)l * c->n_experts + expert] = delta;
        c->has_bias[l] = 0;
        for (int e = 0; e < c->n_experts; e++)
            c->has_bias[l] |= c->bias[(size_t)l * c->n_experts + e] != 0;
    }
    char p[16];
    log_change(s, MOE_CTL_BIAS, layer, expert, delta, "bias %s%d=%+g", layer_prefix(p, sizeof p, layer),
               expert, delta);
    return MOE_OK;
}

static int same_target(const moe_offset *a, const moe_offset *b)
{
    return a->layer == b->layer && a->kind == b->kind && a->neuron == b->neuron &&
           (a->kind != MOE_OFFSET_MLP || a->expert == b->expert);
}

moe_status moe_session_set_offset(moe_session *s, const moe_offset *o, moe_error *err)
{
    const moe_model *m = session_model(s);
    const moe_config *cfg = &m->cfg;
    if (o->layer < 0 || o->layer >= cfg->n_layers)
        return moe_fail(err, MOE_EINVAL, "offset layer %d is out of range (0 to %d)", o->layer,
                        cfg->n_layers - 1);
    if (!(o->delta >= -1e6f && o->delta <= 1e6f))
        return moe_fail(err, MOE_EINVAL, "offset delta %g is out of range", o->delta);
    int width;
    switch (o->kind) {
    case MOE_OFFSET_MLP: {
        int n_exp = m->layers[o->layer].n_experts;
        if (!n_exp && o->expert != 0 && o->expert != -1)
            return moe_fail(err, MOE_EINVAL, "layer %d has one dense MLP, not expert %d", o->layer, o->expert);
        if (n_exp && o->expert == -1)
            return moe_fail(err, MOE_EINVAL, "layer %d has %d routed experts: name one (L:E:N=D)", o->layer,
                            n_exp);
        if (n_exp && (o->expert < 0 || o->expert >= n_exp))
            return moe_fail(err, MOE_EINVAL, "expert %d does not exist in layer %d (0 to %d)", o->expert,
                            o->layer, n_exp - 1);
        width = n_exp ? cfg->moe_ff : cfg->ff;
        break;
    }
    case MOE_OFFSET_SHARED:
        if (!m->layers[o->layer].shared.gate.data)
            return moe_fail(err, MOE_EINVAL, "layer %d of %s has no shared expert", o->layer, m->info.hf_class);
        width = m->layers[o->layer].shared.gate.rows;
        break;
    case MOE_OFFSET_RESID:
        width = cfg->dim;
        break;
    default:
        return moe_fail(err, MOE_EINVAL, "unknown offset kind %d", (int)o->kind);
    }
    if (o->neuron < 0 || o->neuron >= width)
        return moe_fail(err, MOE_EINVAL, "neuron %d is out of range (0 to %d)", o->neuron, width - 1);

    moe_offset o_norm = *o;
    if (o_norm.kind == MOE_OFFSET_MLP && o_norm.expert < 0)
        o_norm.expert = 0; /* a dense MLP is stored as expert 0 */
    o = &o_norm;
    controls *c = session_controls(s);
    int at = 0;
    while (at < c->n_offsets && !same_target(&c->offsets[at], o))
        at++;
    if (o->delta == 0) {
        if (at < c->n_offsets)
            c->offsets[at] = c->offsets[--c->n_offsets];
    } else if (at < c->n_offsets) {
        c->offsets[at].delta = o->delta;
    } else {
        if (c->n_offsets == c->cap_offsets) {
            int cap = c->cap_offsets ? 2 * c->cap_offsets : 8;
            moe_offset *grown = realloc(c->offsets, (size_t)cap * sizeof *grown);
            if (!grown)
                return moe_fail(err, MOE_ENOMEM, "out of memory adding an offset");
            c->offsets = grown;
            c->cap_offsets = cap;
        }
        c->offsets[c->n_offsets++] = *o;
    }
    if (o->kind == MOE_OFFSET_SHARED)
        log_change(s, MOE_CTL_OFFSET, o->layer, -1, o->delta, "offset L%d:shared:%d=%+g", o->layer, o->neuron,
                   o->delta);
    else if (o->kind == MOE_OFFSET_RESID)
        log_change(s, MOE_CTL_OFFSET, o->layer, -1, o->delta, "offset L%d:resid:%d=%+g", o->layer,
                   o->neuron, o->delta);
    else if (m->layers[o->layer].n_experts)
        log_change(s, MOE_CTL_OFFSET, o->layer, o->expert, o->delta, "offset L%d:%d:%d=%+g", o->layer,
                   o->expert, o->neuron, o->delta);
    else
        log_change(s, MOE_CTL_OFFSET, o->layer, 0, o->delta, "offset L%d:%d=%+g", o->layer, o->neuron,
                   o->delta);
    return MOE_OK;
}

moe_status moe_session_set_capacity(moe_session *s, double factor, int drop, moe_error *err)
{
    moe_status st = check_layer(s, -1, err);
    if (st)
        return st;
    if (!(factor >= 0 && factor <= 1e4))
        return moe_fail(err, MOE_EINVAL, "capacity factor %g is out of range (0 to 10000)", factor);
    controls *c = session_controls(s);
    c->capacity = factor;
    c->drop = factor > 0 && drop;
    if (factor > 0)
        log_change(s, MOE_CTL_CAPACITY, -1, -1, (float)factor, "capacity %g%s", factor, c->drop ? ",drop" : "");
    else
        log_change(s, MOE_CTL_CAPACITY, -1, -1, 0, "capacity off");
    return MOE_OK;
}

const moe_offset *moe_session_offsets(const moe_session *s, int *n)
{
    const controls *c = session_controls_const(s);
    *n = c->n_offsets;
    return c->offsets;
}

void moe_session_reset_controls(moe_session *s)
{
    controls *c = session_controls(s);
    size_t cells = (size_t)c->n_layers * c->n_experts;
    int k = session_model(s)->cfg.k;
    memset(c->off, 0, cells);
    memset(c->bias, 0, cells * sizeof *c->bias);
    memset(c->forced, 0, cells);
    for (int l = 0; l < c->n_layers; l++) {
        c->k[l] = k;
        c->n_on[l] = c->n_experts;
        c->has_bias[l] = 0;
        c->n_forced[l] = 0;
    }
    c->n_offsets = 0;
    c->capacity = 0;
    c->drop = 0;
    log_change(s, MOE_CTL_RESET, -1, -1, 0, "reset");
}

void controls_note_reprefill(moe_session *s)
{
    log_change(s, MOE_CTL_REPREFILL, -1, -1, 0, "reprefill");
}

const moe_control_event *moe_session_control_log(const moe_session *s, int *n)
{
    const controls *c = session_controls_const(s);
    *n = c->n_log;
    return c->log;
}
