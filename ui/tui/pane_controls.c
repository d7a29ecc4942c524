/* The panes that change the model: experts (on/off, force, the k dial,
 * scope all layers or the router's selected layer) and steering (neuron
 * offsets with sliders, and a picker of the most active neurons of the
 * token under the cursor). Every change goes through command_control, the `:` line's own
 * path, so keys and commands cannot disagree. */
#include <curses.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "term.h"
#include "tui.h"

const char *const EXPERTS_HELP[] = {
    "Up/Down          choose an expert",
    "Space            switch it off / on (in the scope)",
    "f                force every token to it (again: lift)",
    "a                scope: all layers / the router's selected layer",
    "r                reset every control",
    NULL,
};

const char *const STEER_HELP[] = {
    "Up/Down          choose an offset",
    "Left/Right       delta -/+ 0.5;  < > (or H L) -/+ 5",
    "m                mute / unmute",
    "d Delete         remove",
    "n                neuron picker: the most active neurons of the",
    "                 selected token (router layer, expert row);",
    "                 t cycles expert / shared expert / residual;",
    "                 Enter adds an offset",
    "mouse            click an offset to select it, its track to set",
    "                 the delta there, its arrows to step 0.5",
    NULL,
};

/* "L3:" when the scope is the selected layer, "" for all layers. */
static const char *scope_prefix(const tui *t, char *buf, size_t len)
{
    if (!t->scope_layer || !t->conv.n_routes)
        return "";
    snprintf(buf, len, "L%d:", t->conv.route_layer[t->sel_route]);
    return buf;
}

void pane_experts_draw(tui *t, rect r)
{
    const convo *c = &t->conv;
    char title[96];
    snprintf(title, sizeof title, "Experts \xc2\xb7 %s", t->scope_layer ? "selected layer" : "all layers");
    if (t->scope_layer && c->n_routes)
        snprintf(title, sizeof title, "Experts \xc2\xb7 layer %d", c->route_layer[t->sel_route]);
    if (t->review) /* nothing to switch without the model */
        snprintf(title, sizeof title, "Experts \xc2\xb7 disabled (review)");
    ui_frame(r, title, t->focus == FOCUS_EXPERTS);
    int x0 = r.x + 1, w = r.w - 2, y0 = r.y + 1, h = r.h - 3, E = c->n_experts;
    if (w < 12 || h < 1)
        return;
    if (!E) {
        ui_text(y0, x0, "a dense model: no experts", w);
        return;
    }
    /* share of the recent tokens' assignments, in scope */
    enum { RECENT = 64 };
    double *share = calloc((size_t)E, sizeof *share);
    if (!share)
        return;
    double tot = 0;
    for (int i = c->n > RECENT ? c->n - RECENT : 0; i < c->n; i++)
        for (int ri = 0; ri < c->n_routes; ri++) {
            if (t->scope_layer && ri != t->sel_route)
                continue;
            const int16_t *ex = convo_experts(c, i, ri);
            for (int j = 0; j < E && ex[j] >= 0; j++)
                share[ex[j]]++, tot++;
        }
    int first = t->sel_expert >= h ? t->sel_expert - h + 1 : 0, named = tui_expert_name(t, 0) != NULL;
    t->experts_first = first;
    t->hit_experts = (hit_rect){y0, x0, h < E - first ? h : E - first, w};
    for (int e = first; e < E && e - first < h; e++) {
        int y = y0 + e - first, on_all = 1, on_any = 0;
        for (int ri = 0; ri < c->n_routes; ri++) {
            if (t->scope_layer && ri != t->sel_route)
                continue;
            int on = t->view.on[(size_t)ri * E + e];
            on_all &= on;
            on_any |= on;
        }
        const char *box = t->review ? "[-]" : t->view.forced == e ? "[F]" : on_all ? "[x]" : on_any ? "[~]" : "[ ]";
        int cur = e == t->sel_expert && t->focus == FOCUS_EXPERTS;
        if (cur)
            attron(A_REVERSE);
        mvaddstr(y, x0, box);
        if (cur)
            attroff(A_REVERSE);
        char lab[40];
        const char *name = tui_expert_name(t, e);
        if (name && term_nocolour())
            snprintf(lab, sizeof lab, " %c %-8.8s", term_expert_letter(e), name);
        else if (name)
            snprintf(lab, sizeof lab, " %-10.10s", name);
        else
            snprintf(lab, sizeof lab, term_nocolour() ? " %c %-3d" : " %-5d",
                     term_nocolour() ? term_expert_letter(e) : e, e);
        attron(term_expert_attr(e));
        ui_text(y, x0 + 3, lab, w - 3);
        attroff(term_expert_attr(e));
        int lw = named ? 11 : 7, bx = x0 + 3 + lw, bw = w - 9 - lw;
        if (!on_any) {
            attron(COLOR_PAIR(CP_DIM));
            mvaddstr(y, bx, "off");
            attroff(COLOR_PAIR(CP_DIM));
            continue;
        }
        double v = tot > 0 ? share[e] / tot : 0;
        attron(term_expert_attr(e));
        for (int i = 0; i < bw && i < (int)(v * bw * 2 + 0.5); i++) /* bars at 2x: k=2 of 8 reads 25% */
            mvaddstr(y, bx + i, "\xe2\x96\x86");
        attroff(term_expert_attr(e));
        char pc[12];
        snprintf(pc, sizeof pc, "%4.0f%%", v * 100);
        mvaddstr(y, x0 + w - 5, pc);
    }
    free(share);
    /* the k dial */
    char kd[64];
    int k = c->n_routes ? t->view.k[t->scope_layer ? t->sel_route : 0] : 0;
    snprintf(kd, sizeof kd, "k %d of %d  \xe2\x97\x80 - + \xe2\x96\xb6", k, E);
    attron(A_BOLD);
    ui_text(r.y + r.h - 2, x0, kd, w);
    attroff(A_BOLD);
}

int pane_experts_key(tui *t, int key)
{
    int E = t->conv.n_experts;
    char arg[64], pre[16];
    if (!E)
        return KEY_UNHANDLED;
    switch (key) {
    case KEY_UP: case 'k':
        t->sel_expert = t->sel_expert > 0 ? t->sel_expert - 1 : 0;
        return KEY_REDRAW;
    case KEY_DOWN: case 'j':
        t->sel_expert = t->sel_expert + 1 < E ? t->sel_expert + 1 : E - 1;
        return KEY_REDRAW;
    case ' ': {
        int on_all = 1;
        for (int ri = 0; ri < t->conv.n_routes; ri++)
            if (!t->scope_layer || ri == t->sel_route)
                on_all &= t->view.on[(size_t)ri * E + t->sel_expert];
        snprintf(arg, sizeof arg, "%s%d", scope_prefix(t, pre, sizeof pre), t->sel_expert);
        return command_control(t, on_all ? "off" : "on", arg);
    }
    case 'f':
        if (t->view.forced == t->sel_expert) {
            snprintf(arg, sizeof arg, "%snone", scope_prefix(t, pre, sizeof pre));
            t->view.forced = -1;
        } else {
            snprintf(arg, sizeof arg, "%s%d", scope_prefix(t, pre, sizeof pre), t->sel_expert);
            t->view.forced = t->sel_expert;
        }
        return command_control(t, "force", arg);
    case 'a':
        t->scope_layer = !t->scope_layer;
        return KEY_REDRAW;
    case 'r':
        return command_run(t, "reset");
    default:
        return KEY_UNHANDLED;
    }
}

/* "L3 e2 n88", "L3 n417", "L3 resid 17", "L3 shared n5" */
static void offset_name(const moe_offset *o, char *buf, size_t len)
{
    if (o->kind == MOE_OFFSET_RESID)
        snprintf(buf, len, "L%d resid %d", o->layer, o->neuron);
    else if (o->kind == MOE_OFFSET_SHARED)
        snprintf(buf, len, "L%d shared n%d", o->layer, o->neuron);
    else if (o->expert >= 0)
        snprintf(buf, len, "L%d e%d n%d", o->layer, o->expert, o->neuron);
    else
        snprintf(buf, len, "L%d n%d", o->layer, o->neuron);
}

/* The command argument that sets o to delta. */
static void offset_arg(const moe_offset *o, float delta, char *buf, size_t len)
{
    if (o->kind == MOE_OFFSET_RESID)
        snprintf(buf, len, "%d:resid:%d=%g", o->layer, o->neuron, (double)delta);
    else if (o->kind == MOE_OFFSET_SHARED)
        snprintf(buf, len, "%d:shared:%d=%g", o->layer, o->neuron, (double)delta);
    else if (o->expert >= 0)
        snprintf(buf, len, "%d:%d:%d=%g", o->layer, o->expert, o->neuron, (double)delta);
    else
        snprintf(buf, len, "%d:%d=%g", o->layer, o->neuron, (double)delta);
}

/* Review mode: the control changes the transcript recorded, in place of
 * the sliders (which need the model). */
static void steer_draw_review(tui *t, rect r)
{
    ui_frame(r, "Control changes \xc2\xb7 recorded (review)", t->focus == FOCUS_STEER);
    int x0 = r.x + 1, w = r.w - 2, y0 = r.y + 1, h = r.h - 2, n = transcript_n_controls(t->rec);
    if (w < 16 || h < 1)
        return;
    attron(COLOR_PAIR(CP_DIM));
    if (!n)
        ui_text(y0, x0, "none: the session ran as the model says", w);
    for (int i = 0; i < n && i < h; i++) {
        const transcript_control *c = transcript_control_at(t->rec, i);
        char line[160];
        snprintf(line, sizeof line, "#%-5d %s", c->pos, c->change);
        ui_text(y0 + i, x0, line, w);
    }
    attroff(COLOR_PAIR(CP_DIM));
}

/* What the picker looks at: "L1 e3", "L1 shared", "L1 residual". */
static void picker_target(const tui *t, char *buf, size_t len)
{
    if (t->pick_kind == MOE_OFFSET_RESID)
        snprintf(buf, len, "L%d residual", t->pick_layer);
    else if (t->pick_kind == MOE_OFFSET_SHARED)
        snprintf(buf, len, "L%d shared", t->pick_layer);
    else if (t->conv.n_experts)
        snprintf(buf, len, "L%d e%d", t->pick_layer, t->pick_expert);
    else
        snprintf(buf, len, "L%d mlp", t->pick_layer);
}

void pane_steer_draw(tui *t, rect r)
{
    if (t->review) {
        steer_draw_review(t, r);
        return;
    }
    ui_frame(r, t->picker ? "Steering \xc2\xb7 neuron picker" : "Steering \xc2\xb7 neuron offsets", t->focus == FOCUS_STEER);
    int x0 = r.x + 1, w = r.w - 2, y0 = r.y + 1, h = r.h - 2;
    if (w < 16 || h < 1)
        return;
    char name[48], line[128];
    if (t->picker) {
        picker_target(t, name, sizeof name);
        snprintf(line, sizeof line, "#%d %s (t: target)", t->pick_pos, name);
        attron(COLOR_PAIR(CP_DIM));
        ui_text(y0, x0, line, w);
        attroff(COLOR_PAIR(CP_DIM));
        t->steer_first = -1;
        t->steer_rows = t->pick_n < h - 1 ? t->pick_n : h - 1;
        t->hit_steer = (hit_rect){y0 + 1, x0, t->steer_rows, w};
        t->slider_w = 0;
        for (int i = 0; i < t->pick_n && i + 1 < h; i++) {
            snprintf(line, sizeof line, " n%-6d %+8.3f", t->pick_neuron[i], (double)t->pick_val[i]);
            if (i == t->pick_sel)
                attron(A_REVERSE);
            ui_text(y0 + 1 + i, x0, line, w);
            if (i == t->pick_sel)
                attroff(A_REVERSE);
        }
        return;
    }
    if (!t->n_steer) {
        attron(COLOR_PAIR(CP_DIM));
        ui_text(y0, x0, "no offsets: n picks a neuron,", w);
        ui_text(y0 + 1, x0, ":offset 3:417=4 adds one", w);
        attroff(COLOR_PAIR(CP_DIM));
        return;
    }
    int first = t->sel_steer >= h ? t->sel_steer - h + 1 : 0;
    t->steer_first = first;
    t->steer_rows = t->n_steer - first < h ? t->n_steer - first : h;
    t->hit_steer = (hit_rect){y0, x0, t->steer_rows, w};
    t->slider_w = 0;
    for (int i = first; i < t->n_steer && i - first < h; i++) {
        const steer_entry *se = &t->steer[i];
        offset_name(&se->o, name, sizeof name);
        snprintf(line, sizeof line, "%-14s %+6.1f ", name, (double)se->o.delta);
        int y = y0 + i - first, cur = i == t->sel_steer && t->focus == FOCUS_STEER;
        if (cur)
            attron(A_REVERSE);
        int used = ui_text(y, x0, line, w);
        if (cur)
            attroff(A_REVERSE);
        int sw = w - used - 2;
        if (se->muted) {
            attron(COLOR_PAIR(CP_DIM));
            ui_text(y, x0 + used, "muted", w - used);
            attroff(COLOR_PAIR(CP_DIM));
        } else if (sw >= 5) {
            /* slider over [-10, 10] */
            float d = se->o.delta < -10 ? -10 : se->o.delta > 10 ? 10 : se->o.delta;
            int pos = (int)((d + 10) / 20 * (sw - 1) + 0.5);
            t->slider_x = x0 + used + 1, t->slider_w = sw;
            move(y, x0 + used);
            addstr("\xe2\x97\x80");
            for (int j = 0; j < sw; j++)
                addstr(j == pos ? "\xe2\x97\x8f" : "\xe2\x94\x80");
            addstr("\xe2\x96\xb6");
        }
    }
}

/* Fill the picker with the most active neurons (by magnitude) of the
 * selected token at the target in t->pick_*: the engine evaluates that
 * token again under the controls in force, the session unchanged. */
static int picker_fill(tui *t)
{
    const moe_model_info *in = t->info;
    int cap = in->ff > in->dense_ff ? in->ff : in->dense_ff;
    if (cap < in->shared_ff)
        cap = in->shared_ff;
    if (cap < in->dim)
        cap = in->dim;
    float *act = malloc((size_t)cap * sizeof *act);
    if (!act) {
        tui_message(t, 1, "picker: out of memory");
        return -1;
    }
    moe_error err = {0};
    pthread_mutex_lock(&t->sess_lock);
    int n = t->pick_pos < moe_session_pos(t->s)
                ? moe_session_activations_at(t->s, t->pick_pos, t->pick_layer, t->pick_kind, t->pick_expert, act,
                                             cap, &err)
                : (snprintf(err.msg, sizeof err.msg, "token %d is no longer in the session", t->pick_pos), -1);
    pthread_mutex_unlock(&t->sess_lock);
    if (n < 0) {
        tui_message(t, 1, "picker: %s", err.msg);
        free(act);
        return -1;
    }
    if (n > cap)
        n = cap;
    t->pick_n = 0;
    for (int i = 0; i < n; i++) { /* insertion into the top PICK_N by |value| */
        int j = t->pick_n < PICK_N ? t->pick_n++ : PICK_N;
        while (j > 0 && fabsf(act[i]) > fabsf(t->pick_val[j - 1])) {
            if (j < PICK_N)
                t->pick_val[j] = t->pick_val[j - 1], t->pick_neuron[j] = t->pick_neuron[j - 1];
            j--;
        }
        if (j < PICK_N)
            t->pick_val[j] = act[i], t->pick_neuron[j] = i;
    }
    free(act);
    t->pick_sel = 0;
    return 0;
}

static void picker_open(tui *t)
{
    if (t->review) {
        tui_message(t, 1, "review mode: no model");
        return;
    }
    const convo *c = &t->conv;
    if (!c->n) {
        tui_message(t, 1, "picker: no token yet: generate first");
        return;
    }
    t->pick_pos = t->cursor >= 0 && t->cursor < c->n ? t->cursor : c->n - 1;
    t->pick_layer = c->n_routes ? c->route_layer[t->sel_route] : 0;
    t->pick_expert = c->n_experts ? t->sel_expert : 0;
    t->pick_kind = MOE_OFFSET_MLP;
    int asked = t->pick_expert, rc = picker_fill(t);
    if (rc && c->n_routes && c->n_experts) {
        /* a MiCRo block runs only for the tokens sent to it: take the
         * expert this token was sent to in this layer */
        int own = convo_experts(c, t->pick_pos, t->sel_route)[0];
        if (own >= 0 && own != asked) {
            t->pick_expert = own;
            rc = picker_fill(t);
        }
    }
    if (rc)
        return;
    t->picker = 1;
    if (t->pick_expert != asked) {
        const char *a = tui_expert_name(t, asked), *o = tui_expert_name(t, t->pick_expert);
        char an[32], on[32];
        snprintf(an, sizeof an, "%s", a ? a : "");
        snprintf(on, sizeof on, "%s", o ? o : "");
        tui_message(t, 0, "picker: expert %d%s%s did not run for this token; showing the one it was sent to, %d%s%s",
                    asked, a ? " " : "", an, t->pick_expert, o ? " " : "", on);
        return;
    }
    tui_message(t, 0, "picker: Enter adds an offset of %+g to the neuron, t changes the target, Esc closes", 4.0);
}

/* t in the picker: expert -> shared expert (where the model has one) ->
 * residual stream -> expert. */
static void picker_cycle(tui *t)
{
    moe_offset_kind was = t->pick_kind;
    if (t->pick_kind == MOE_OFFSET_MLP && t->info->shared_ff)
        t->pick_kind = MOE_OFFSET_SHARED;
    else if (t->pick_kind != MOE_OFFSET_RESID)
        t->pick_kind = MOE_OFFSET_RESID;
    else
        t->pick_kind = MOE_OFFSET_MLP;
    if (picker_fill(t))
        t->pick_kind = was;
}

int pane_steer_key(tui *t, int key)
{
    char arg[96];
    if (t->picker) {
        switch (key) {
        case KEY_UP: case 'k': if (t->pick_sel > 0) t->pick_sel--; return KEY_REDRAW;
        case KEY_DOWN: case 'j': if (t->pick_sel + 1 < t->pick_n) t->pick_sel++; return KEY_REDRAW;
        case 27: case 'n': t->picker = 0; return KEY_REDRAW;
        case 't': picker_cycle(t); return KEY_REDRAW;
        case '\r': case '\n': case KEY_ENTER: {
            if (!t->pick_n)
                return KEY_HANDLED;
            moe_offset o = {t->pick_layer, t->pick_kind,
                            t->pick_kind == MOE_OFFSET_MLP && t->conv.n_experts ? t->pick_expert : -1,
                            t->pick_neuron[t->pick_sel], 0};
            float d = t->pick_val[t->pick_sel] < 0 ? -4.0f : 4.0f;
            offset_arg(&o, d, arg, sizeof arg);
            t->picker = 0;
            command_control(t, "offset", arg);
            t->sel_steer = t->n_steer ? t->n_steer - 1 : 0;
            return KEY_REDRAW;
        }
        default: return KEY_UNHANDLED;
        }
    }
    if (key == 'n') {
        picker_open(t);
        return KEY_REDRAW;
    }
    if (!t->n_steer)
        return KEY_UNHANDLED;
    steer_entry *se = &t->steer[t->sel_steer];
    float step = 0;
    switch (key) {
    case KEY_UP: case 'k': if (t->sel_steer > 0) t->sel_steer--; return KEY_REDRAW;
    case KEY_DOWN: case 'j': if (t->sel_steer + 1 < t->n_steer) t->sel_steer++; return KEY_REDRAW;
    case KEY_LEFT: case 'h': step = -0.5f; break;
    case KEY_RIGHT: case 'l': step = 0.5f; break;
    case '<': case 'H': case KEY_SLEFT: step = -5; break;
    case '>': case 'L': case KEY_SRIGHT: step = 5; break;
    case 'm':
        se->muted = !se->muted;
        offset_arg(&se->o, se->muted ? 0 : se->o.delta, arg, sizeof arg);
        return command_control(t, "offset", arg);
    case 'd': case KEY_DC:
        se->muted = 0;
        offset_arg(&se->o, 0, arg, sizeof arg);
        return command_control(t, "offset", arg);
    default: return KEY_UNHANDLED;
    }
    float d = se->o.delta + step;
    if (fabsf(d) < 1e-6f) /* 0 would remove it: step over */
        d += step;
    if (se->muted)
        se->muted = 0;
    offset_arg(&se->o, d, arg, sizeof arg);
    return command_control(t, "offset", arg);
}

int pane_steer_click(tui *t, int row, int x)
{
    if (t->picker) {
        if (row < 0 || row >= t->pick_n)
            return KEY_HANDLED;
        if (row != t->pick_sel) {
            t->pick_sel = row;
            return KEY_REDRAW;
        }
        return pane_steer_key(t, '\n');
    }
    int i = t->steer_first + row;
    if (row < 0 || i >= t->n_steer)
        return KEY_HANDLED;
    t->sel_steer = i;
    if (t->slider_w < 2 || t->steer[i].muted)
        return KEY_REDRAW;
    if (x == t->slider_x - 1 || x == t->slider_x + t->slider_w) /* the arrows: a fine step */
        return pane_steer_key(t, x < t->slider_x ? KEY_LEFT : KEY_RIGHT);
    if (x < t->slider_x || x >= t->slider_x + t->slider_w)
        return KEY_REDRAW;
    /* the track spans [-10, 10]; land on the 0.5 grid the keys use, never 0 */
    float d = -10.0f + 20.0f * (float)(x - t->slider_x) / (float)(t->slider_w - 1);
    d = roundf(d * 2) / 2;
    if (d == 0)
        d = x - t->slider_x < t->slider_w / 2 ? -0.5f : 0.5f;
    char arg[96];
    offset_arg(&t->steer[i].o, d, arg, sizeof arg);
    return command_control(t, "offset", arg);
}
