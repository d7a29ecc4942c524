/* The transcript pane: the conversation, each token in its expert's colour
 * (or, without colour, its attribute), wrapped to the pane; a cursor over
 * tokens selects the one the router pane shows. The cursor follows the
 * newest token until the user moves it. */
#include <ctype.h>
#include <curses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "term.h"
#include "tui.h"

/* Where each token landed in the last frame, for up/down and scrolling. */
static int *tok_line, *tok_col, *tok_w, n_pos, cap_pos, total_lines;

const char *const TRANSCRIPT_HELP[] = {
    "Left/h Right/l   previous / next token",
    "Up/k Down/j      token on the line above / below",
    "Home/g End/G     first token / follow the newest",
    "PgUp PgDn        scroll a page",
    "/ n N            search the text; next / previous match",
    "click            select a token (wheel: scroll)",
    NULL,
};

int tui_selected(const tui *t)
{
    int n = t->conv.n;
    if (!n)
        return -1;
    return t->cursor < 0 || t->cursor >= n ? n - 1 : t->cursor;
}

/* The token as shown: printable UTF-8 kept, a newline ends the line (shown
 * as a dim ↵ so it can be selected), other bytes become U+FFFD. */
static int display(const convo_token *ct, char *out, size_t cap, int *width, int *newline)
{
    size_t o = 0;
    int w = 0;
    *newline = 0;
    mbstate_t ms;
    memset(&ms, 0, sizeof ms);
    for (size_t i = 0; i < ct->len && o + 4 < cap;) {
        unsigned char b = (unsigned char)ct->text[i];
        if (b == '\n') {
            *newline = 1;
            memcpy(out + o, "\xe2\x86\xb5", 3); /* ↵ */
            o += 3, w++, i++;
            continue;
        }
        if (b == '\t' || b == '\r') {
            out[o++] = ' ', w++, i++;
            continue;
        }
        wchar_t wc;
        size_t l = mbrtowc(&wc, ct->text + i, ct->len - i, &ms);
        int cw = (l == (size_t)-1 || l == (size_t)-2 || l == 0) ? -1 : wcwidth(wc);
        if (cw < 0 || (cw == 0 && l == 1)) {
            memset(&ms, 0, sizeof ms);
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3, w++, i++;
            continue;
        }
        memcpy(out + o, ct->text + i, l);
        o += l, w += cw, i += l;
    }
    if (!w) {
        memcpy(out + o, "\xc2\xb7", 2); /* · for an empty token */
        o += 2, w = 1;
    }
    out[o] = 0;
    *width = w;
    return (int)o;
}

static int ensure(int n)
{
    if (n <= cap_pos)
        return 0;
    int cap = n * 2;
    int *a = realloc(tok_line, (size_t)cap * sizeof *a);
    if (!a)
        return -1;
    tok_line = a;
    int *b = realloc(tok_col, (size_t)cap * sizeof *b);
    if (!b)
        return -1;
    tok_col = b;
    int *c = realloc(tok_w, (size_t)cap * sizeof *c);
    if (!c)
        return -1;
    tok_w = c;
    cap_pos = cap;
    return 0;
}

void pane_transcript_draw(tui *t, rect r)
{
    char title[96];
    if (t->colour_layer < 0)
        snprintf(title, sizeof title, "Transcript \xc2\xb7 colour: layer vote");
    else
        snprintf(title, sizeof title, "Transcript \xc2\xb7 colour: layer %d", t->conv.route_layer[t->colour_layer]);
    ui_frame(r, title, t->focus == FOCUS_TRANSCRIPT);
    int x0 = r.x + 1, w = r.w - 2, y0 = r.y + 1, h = r.h - 2;
    if (w < 4 || h < 2)
        return;
    /* legend */
    const convo *c = &t->conv;
    int lx = x0;
    attron(COLOR_PAIR(CP_DIM));
    mvaddstr(y0, lx, "experts ");
    attroff(COLOR_PAIR(CP_DIM));
    lx += 8;
    for (int e = 0; e < c->n_experts && lx < x0 + w - 4; e++) {
        char lab[48];
        const char *name = tui_expert_name(t, e);
        int n = term_nocolour() ? name ? snprintf(lab, sizeof lab, "%c=%.24s ", term_expert_letter(e), name)
                                       : snprintf(lab, sizeof lab, "%c=%d ", term_expert_letter(e), e)
                : name ? snprintf(lab, sizeof lab, "%d %.24s ", e, name)
                       : snprintf(lab, sizeof lab, "%d ", e);
        if (lx + n - 1 > x0 + w)
            break;
        attron(term_expert_attr(e));
        mvaddnstr(y0, lx, lab, n - 1);
        attroff(term_expert_attr(e));
        lx += n + (name != NULL);
    }
    y0++, h--;
    t->hit_transcript = (hit_rect){y0, x0, h, w};
    n_pos = 0;
    if (c->n == 0) {
        attron(COLOR_PAIR(CP_DIM));
        ui_text(y0 + 1, x0 + 1, "Type a prompt below and press Enter; the model continues it,", w - 2);
        ui_text(y0 + 2, x0 + 1, "each token coloured by the expert its router picked.", w - 2);
        attroff(COLOR_PAIR(CP_DIM));
        return;
    }
    if (ensure(c->n))
        return;
    /* lay out */
    char buf[128];
    int line = 0, col = 0, dw, nl;
    for (int i = 0; i < c->n; i++) {
        display(&c->tok[i], buf, sizeof buf, &dw, &nl);
        if (col > 0 && col + dw > w)
            line++, col = 0;
        tok_line[i] = line, tok_col[i] = col, tok_w[i] = dw;
        col += dw;
        if (nl || col >= w)
            line++, col = 0;
    }
    n_pos = c->n;
    total_lines = line + (col > 0);
    int sel = tui_selected(t);
    /* scroll so the selection shows */
    if (t->cursor < 0)
        t->top_line = total_lines - h;
    if (tok_line[sel] < t->top_line)
        t->top_line = tok_line[sel];
    if (tok_line[sel] >= t->top_line + h)
        t->top_line = tok_line[sel] - h + 1;
    if (t->top_line > total_lines - h)
        t->top_line = total_lines - h;
    if (t->top_line < 0)
        t->top_line = 0;
    for (int i = 0; i < c->n; i++) {
        int y = tok_line[i] - t->top_line;
        if (y < 0 || y >= h)
            continue;
        display(&c->tok[i], buf, sizeof buf, &dw, &nl);
        int e = convo_colour(c, i, t->colour_layer);
        int a = term_expert_attr(e);
        if (i >= t->match_first && i <= t->match_last)
            a |= (int)A_UNDERLINE;
        if (i == sel)
            a = (int)(A_REVERSE | A_BOLD) | (term_nocolour() ? 0 : a);
        attron(a);
        ui_text(y0 + y, x0 + tok_col[i], buf, w - tok_col[i]);
        attroff(a);
    }
    /* without colour, the selected token's expert is spelled out */
    if (term_nocolour() && sel >= 0) {
        int e = convo_colour(c, sel, t->colour_layer);
        snprintf(buf, sizeof buf, " #%d: expert %c (%d) ", sel, term_expert_letter(e), e);
        mvaddstr(r.y + r.h - 1, r.x + r.w - 2 - (int)strlen(buf), buf);
    }
}

int pane_transcript_hit(const tui *t, int y, int x)
{
    const hit_rect *r = &t->hit_transcript;
    if (y < r->y || y >= r->y + r->h || x < r->x || x >= r->x + r->w)
        return -1;
    int line = y - r->y + t->top_line, col = x - r->x;
    for (int i = 0; i < n_pos && i < t->conv.n; i++)
        if (tok_line[i] == line && col >= tok_col[i] && col < tok_col[i] + tok_w[i])
            return i;
    return -1;
}

/* The token on the line `dl` lines away from the selection, nearest in column. */
static int vertical(int sel, int dl)
{
    int want = tok_line[sel] + dl, best = sel, bestd = 1 << 30;
    for (int i = 0; i < n_pos; i++) {
        if (tok_line[i] != want)
            continue;
        int d = abs(tok_col[i] - tok_col[sel]);
        if (d < bestd)
            best = i, bestd = d;
    }
    return best;
}

int pane_transcript_key(tui *t, int key)
{
    int n = t->conv.n, sel = tui_selected(t);
    if (sel < 0)
        return KEY_UNHANDLED;
    int to = sel;
    switch (key) {
    case KEY_LEFT: case 'h': to = sel - 1; break;
    case KEY_RIGHT: case 'l': to = sel + 1; break;
    case KEY_UP: case 'k': if (sel < n_pos) to = vertical(sel, -1); break;
    case KEY_DOWN: case 'j': if (sel < n_pos) to = vertical(sel, 1); break;
    case KEY_PPAGE: if (sel < n_pos) to = vertical(sel, -10); break;
    case KEY_NPAGE: if (sel < n_pos) to = vertical(sel, 10); break;
    case KEY_HOME: case 'g': to = 0; break;
    case KEY_END: case 'G': t->cursor = -1; return KEY_REDRAW;
    case 'n': return search_step(t, 1);
    case 'N': return search_step(t, -1);
    default: return KEY_UNHANDLED;
    }
    if (to < 0)
        to = 0;
    if (to >= n)
        to = n - 1;
    t->cursor = to;
    return KEY_REDRAW;
}

static int match_at(const char *text, size_t n, size_t at, const char *q, size_t qn)
{
    if (at + qn > n)
        return 0;
    for (size_t j = 0; j < qn; j++)
        if (tolower((unsigned char)text[at + j]) != tolower((unsigned char)q[j]))
            return 0;
    return 1;
}

int search_step(tui *t, int dir)
{
    size_t qn = strlen(t->search);
    if (!qn) {
        tui_message(t, 1, "no search yet: / searches the transcript");
        return KEY_REDRAW;
    }
    pthread_mutex_lock(&t->lock);
    const convo *c = &t->conv;
    /* the transcript's text, and where each token starts in it */
    size_t n = 0;
    for (int i = 0; i < c->n; i++)
        n += c->tok[i].len;
    char *text = malloc(n + 1);
    size_t *start = malloc(((size_t)c->n + 1) * sizeof *start);
    int found = -1, count = 0, nth = 0, first = -1, last = -1;
    if (text && start) {
        size_t o = 0;
        for (int i = 0; i < c->n; i++) {
            start[i] = o;
            memcpy(text + o, c->tok[i].text, c->tok[i].len);
            o += c->tok[i].len;
        }
        start[c->n] = o;
        int sel = tui_selected(t);
        size_t from = sel >= 0 ? start[sel] : 0;
        /* every match, keeping the first after (or last before) the selection */
        size_t fm = 0, wrap = 0;
        int have_wrap = 0;
        for (size_t at = 0; at + qn <= n; at++) {
            if (!match_at(text, n, at, t->search, qn))
                continue;
            count++;
            if (dir > 0 && at > from && found < 0)
                found = count, fm = at;
            if (dir < 0 && at < from)
                found = count, fm = at;
            if (!have_wrap || dir < 0)
                wrap = at, have_wrap = 1, nth = count;
        }
        if (found < 0 && have_wrap)
            found = nth, fm = wrap;
        if (found >= 0) {
            nth = found;
            for (int i = 0; i < c->n; i++) {
                if (first < 0 && start[i + 1] > fm)
                    first = i;
                if (start[i] < fm + qn)
                    last = i;
            }
        }
    }
    int oom = !text || !start;
    pthread_mutex_unlock(&t->lock);
    free(text);
    free(start);
    t->match_first = first, t->match_last = last;
    if (oom)
        tui_message(t, 1, "search: out of memory");
    else if (first < 0)
        tui_message(t, 1, "/%s: not found", t->search);
    else {
        t->cursor = first;
        t->focus = FOCUS_TRANSCRIPT;
        tui_message(t, 0, "/%s: match %d of %d, token #%d (n next, N previous)", t->search, nth, count, first);
    }
    return KEY_REDRAW;
}
