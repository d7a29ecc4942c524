/* The router pane (the selected token's gate probabilities in every MoE
 * layer, chosen experts marked) and the usage pane (each layer's share of
 * assignments per expert over the conversation, as stacked bars). */
#include <curses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "term.h"
#include "tui.h"

/* Eighth blocks, for bars with sub-cell resolution. */
static const char *const EIGHTHS[] = {"", "\xe2\x96\x8f", "\xe2\x96\x8e", "\xe2\x96\x8d", "\xe2\x96\x8c",
                                      "\xe2\x96\x8b", "\xe2\x96\x8a", "\xe2\x96\x89", "\xe2\x96\x88"};
static const char *const VBARS[] = {"\xe2\x96\x81", "\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83", "\xe2\x96\x84",
                                     "\xe2\x96\x85", "\xe2\x96\x86", "\xe2\x96\x87", "\xe2\x96\x88"};
static const char *const SHADES[] = {" ", "\xe2\x96\x91", "\xe2\x96\x92", "\xe2\x96\x93", "\xe2\x96\x88"};

/* A bar of value v in [0, 1] over w cells. */
static void bar(int y, int x, double v, int w)
{
    int eighths = (int)(v * w * 8 + 0.5);
    if (eighths > w * 8)
        eighths = w * 8;
    move(y, x);
    for (int i = 0; i < w; i++) {
        int e = eighths - i * 8;
        addstr(e >= 8 ? EIGHTHS[8] : e > 0 ? EIGHTHS[e] : " ");
    }
}

void pane_router_draw(tui *t, rect r)
{
    const convo *c = &t->conv;
    int sel = tui_selected(t);
    char title[128];
    if (sel < 0) {
        snprintf(title, sizeof title, "Router");
    } else {
        char txt[64];
        ui_escape(c->tok[sel].text, c->tok[sel].len, txt, sizeof txt);
        snprintf(title, sizeof title, "Router \xc2\xb7 token \"%s\" (#%d)", txt, sel);
    }
    ui_frame(r, title, 0);
    int x0 = r.x + 1, w = r.w - 2, y0 = r.y + 1, h = r.h - 2, E = c->n_experts, R = c->n_routes;
    if (w < 10 || h < 1 || !E)
        return;
    if (sel < 0) {
        attron(COLOR_PAIR(CP_DIM));
        ui_text(y0, x0 + 1, "no token yet: each MoE layer's router probabilities", w - 1);
        ui_text(y0 + 1, x0 + 1, "over the experts show here, chosen ones marked", w - 1);
        attroff(COLOR_PAIR(CP_DIM));
        return;
    }
    /* three forms as room allows: a bar per expert, a column per expert
     * (vertical eighths), or one heat cell per expert */
    const int pre = 8, tail = 14;
    int cw = (w - pre - tail) / E;
    int form = cw >= 5 ? 0 : cw >= 2 ? 1 : 2;
    if (form)
        cw = form == 1 ? 2 : 1;
    mvaddstr(y0, x0, "layer k");
    if (form < 2)
        for (int e = 0; e < E; e++) {
            char lab[40];
            const char *name = form == 0 ? tui_expert_name(t, e) : NULL;
            if (name && term_nocolour())
                snprintf(lab, sizeof lab, "%c %.*s", term_expert_letter(e), cw - 3, name);
            else if (name)
                snprintf(lab, sizeof lab, "%.*s", cw - 1, name);
            else
                snprintf(lab, sizeof lab, term_nocolour() ? "%c" : "%d", term_nocolour() ? term_expert_letter(e) : e);
            attron(term_expert_attr(e));
            mvaddstr(y0, x0 + pre + e * cw + (form == 0), lab);
            attroff(term_expert_attr(e));
        }
    else
        mvaddstr(y0, x0 + pre, "experts (heat)");
    y0++, h--;
    int first = 0;
    if (t->sel_route >= h)
        first = t->sel_route - h + 1;
    t->router_first = first;
    t->hit_router = (hit_rect){y0, x0, h < R - first ? h : R - first, w};
    for (int ri = first; ri < R && ri - first < h; ri++) {
        int y = y0 + ri - first;
        const float *p = convo_probs(c, sel, ri);
        const int16_t *ex = convo_experts(c, sel, ri);
        int k = convo_k(c, sel, ri);
        char lab[24];
        snprintf(lab, sizeof lab, "%sL%-3d%d", ri == t->sel_route ? "\xe2\x96\xb6" : " ", c->route_layer[ri], k);
        if (ri == t->sel_route)
            attron(A_BOLD);
        mvaddstr(y, x0, lab);
        if (ri == t->sel_route)
            attroff(A_BOLD);
        float pmax = 1e-9f;
        for (int e = 0; e < E; e++)
            pmax = p[e] > pmax ? p[e] : pmax;
        for (int e = 0; e < E; e++) {
            int chosen = 0;
            for (int j = 0; j < k; j++)
                chosen |= ex[j] == e;
            int off = !t->view.on[(size_t)ri * E + e];
            int x = x0 + pre + e * cw;
            int a = term_expert_attr(e);
            if (form == 2) {
                int sh = (int)(p[e] / pmax * 4 + 0.5);
                attron(a | (chosen ? A_REVERSE : 0));
                mvaddstr(y, x, off ? "x" : SHADES[sh]);
                attroff(a | (chosen ? A_REVERSE : 0));
                continue;
            }
            if (form == 1) {
                int v = (int)(p[e] * 8 + 0.5);
                attron(a);
                mvaddstr(y, x, off ? "x" : VBARS[v < 0 ? 0 : v > 8 ? 8 : v]);
                attroff(a);
                if (chosen)
                    mvaddstr(y, x + 1, "*");
                continue;
            }
            /* marker: * chosen, x switched off */
            if (chosen || off) {
                attron(chosen ? A_BOLD : COLOR_PAIR(CP_DIM));
                mvaddstr(y, x, chosen ? "*" : "x");
                attroff(chosen ? A_BOLD : COLOR_PAIR(CP_DIM));
            }
            attron(a);
            bar(y, x + 1, p[e], cw - 2);
            attroff(a);
        }
        /* the choice in numbers */
        char tl[48];
        int n = 0;
        const char *name = k == 1 ? tui_expert_name(t, ex[0]) : NULL;
        if (name) /* one choice: by name */
            n = snprintf(tl, sizeof tl, " %.8s %.2f", name, (double)p[ex[0]]);
        for (int j = 0; !name && j < k && j < 2 && n < (int)sizeof tl - 12; j++)
            n += snprintf(tl + n, sizeof tl - (size_t)n, term_nocolour() ? " %c%.2f" : " %d:%.2f",
                          term_nocolour() ? term_expert_letter(ex[j]) : ex[j], (double)p[ex[j]]);
        ui_text(y, x0 + w - tail, tl, tail);
    }
}

void pane_usage_draw(tui *t, rect r)
{
    const convo *c = &t->conv;
    char title[64];
    snprintf(title, sizeof title, "Usage by layer \xc2\xb7 %d tokens", c->n);
    ui_frame(r, title, 0);
    int x0 = r.x + 1, w = r.w - 2, y0 = r.y + 1, h = r.h - 2, E = c->n_experts, R = c->n_routes;
    if (w < 12 || h < 1 || !E || !c->n)
        return;
    double *cnt = calloc((size_t)E, sizeof *cnt);
    if (!cnt)
        return;
    int bw = w - 5;
    for (int ri = 0; ri < R && ri < h; ri++) {
        memset(cnt, 0, (size_t)E * sizeof *cnt);
        double tot = 0;
        for (int i = 0; i < c->n; i++) {
            const int16_t *ex = convo_experts(c, i, ri);
            for (int j = 0; j < E && ex[j] >= 0; j++)
                cnt[ex[j]]++, tot++;
        }
        char lab[12];
        snprintf(lab, sizeof lab, "L%-3d", c->route_layer[ri]);
        mvaddstr(y0 + ri, x0, lab);
        /* stacked: cumulative rounding keeps the total width exact */
        double acc = 0;
        int x = 0;
        for (int e = 0; e < E && tot > 0; e++) {
            acc += cnt[e];
            int to = (int)(acc / tot * bw + 0.5);
            attron(term_expert_attr(e));
            for (; x < to; x++) {
                char ch[2] = {term_expert_letter(e), 0};
                mvaddstr(y0 + ri, x0 + 5 + x, term_nocolour() ? ch : "\xe2\x96\x88");
            }
            attroff(term_expert_attr(e));
        }
    }
    free(cnt);
}
