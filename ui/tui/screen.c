/* The screen manager: owns the loop, the layout and the focus. It waits on
 * the keyboard and the worker's pipe at once, hands a key to the focused
 * pane and then to the global key table, and composes each frame in full
 * before one refresh (curses sends only the difference). Frames caused by
 * new tokens are paced to 10 per second; frames caused by keys are drawn
 * at once. A frame takes about 1.3 ms of CPU, which on two cores comes out
 * of the generation running beside it: at 30 frames a second the explorer
 * generated at 0.81-0.93 of `moescope run`'s speed (tests/bench/
 * tui_latency.sh, medians of 5 alternating runs), at 10 at 0.94-1.11. */
#include <curses.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "term.h"
#include "tui.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- drawing helpers ---------------------------------------------------- */

int ui_width(const char *s, size_t n)
{
    mbstate_t ms;
    memset(&ms, 0, sizeof ms);
    int w = 0;
    for (size_t i = 0; i < n;) {
        wchar_t wc;
        size_t l = mbrtowc(&wc, s + i, n - i, &ms);
        if (l == (size_t)-1 || l == (size_t)-2 || l == 0) {
            memset(&ms, 0, sizeof ms);
            w++, i++;
            continue;
        }
        int cw = wcwidth(wc);
        w += cw > 0 ? cw : 0;
        i += l;
    }
    return w;
}

void ui_escape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    mbstate_t ms;
    memset(&ms, 0, sizeof ms);
    for (size_t i = 0; i < n && o + 5 < cap;) {
        unsigned char b = (unsigned char)s[i];
        wchar_t wc;
        size_t l = b < 0x80 ? 1 : mbrtowc(&wc, s + i, n - i, &ms);
        if (b < 0x20 || b == 0x7f || b == '"' || l == (size_t)-1 || l == (size_t)-2 || l == 0) {
            memset(&ms, 0, sizeof ms);
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b);
            i++;
            continue;
        }
        if (o + l + 1 > cap)
            break;
        memcpy(out + o, s + i, l);
        o += l, i += l;
    }
    out[o] = 0;
}

int ui_text(int y, int x, const char *s, int maxw)
{
    size_t n = 0;
    int w = 0;
    mbstate_t ms;
    memset(&ms, 0, sizeof ms);
    while (s[n]) {
        wchar_t wc;
        size_t l = mbrtowc(&wc, s + n, strlen(s + n), &ms);
        if (l == (size_t)-1 || l == (size_t)-2 || l == 0)
            break;
        int cw = wcwidth(wc);
        if (cw < 0)
            cw = 0;
        if (w + cw > maxw)
            break;
        w += cw, n += l;
    }
    if (n)
        mvaddnstr(y, x, s, (int)n);
    return w;
}

void ui_frame(rect r, const char *title, int focused)
{
    if (r.w < 2 || r.h < 2)
        return;
    int a = focused ? (int)(A_BOLD | COLOR_PAIR(CP_BAR)) : (int)COLOR_PAIR(CP_DIM);
    attron(a);
    mvhline(r.y, r.x + 1, ACS_HLINE, r.w - 2);
    mvhline(r.y + r.h - 1, r.x + 1, ACS_HLINE, r.w - 2);
    mvvline(r.y + 1, r.x, ACS_VLINE, r.h - 2);
    mvvline(r.y + 1, r.x + r.w - 1, ACS_VLINE, r.h - 2);
    mvaddch(r.y, r.x, ACS_ULCORNER);
    mvaddch(r.y, r.x + r.w - 1, ACS_URCORNER);
    mvaddch(r.y + r.h - 1, r.x, ACS_LLCORNER);
    mvaddch(r.y + r.h - 1, r.x + r.w - 1, ACS_LRCORNER);
    attroff(a);
    if (focused)
        attron(A_BOLD);
    mvaddch(r.y, r.x + 1, ' ');
    int w = ui_text(r.y, r.x + 2, title, r.w - 5);
    addch(' ');
    (void)w;
    if (focused)
        attroff(A_BOLD);
}

/* ---- the frame -------------------------------------------------------- */

static void draw_status(tui *t, int w)
{
    const moe_model_info *in = t->info;
    const convo *c = &t->conv;
    char kbuf[64] = "", line[512];
    int same = 1;
    for (int r = 1; r < c->n_routes; r++)
        same &= t->view.k[r] == t->view.k[0];
    if (!c->n_routes) {
        snprintf(kbuf, sizeof kbuf, "dense");
    } else if (same) {
        snprintf(kbuf, sizeof kbuf, "k=%d", t->view.k[0]);
    } else {
        int n = snprintf(kbuf, sizeof kbuf, "k=");
        for (int r = 0; r < c->n_routes && n < (int)sizeof kbuf - 8; r++)
            n += snprintf(kbuf + n, sizeof kbuf - (size_t)n, r ? ",%d" : "%d", t->view.k[r]);
    }
    char colour[32];
    if (t->colour_layer < 0)
        snprintf(colour, sizeof colour, "vote");
    else
        snprintf(colour, sizeof colour, "L%d", c->route_layer[t->colour_layer]);
    const char *state = t->review ? "review" : t->busy ? "generating" : "idle";
    char mode[80];
    if (t->review)
        snprintf(mode, sizeof mode, "no model");
    else if (t->chat.on)
        snprintf(mode, sizeof mode, "chat: %s", t->chat.name);
    else
        snprintf(mode, sizeof mode, "%s", t->tok ? "raw" : "ids");
    snprintf(line, sizeof line,
             " moescope \xc2\xb7 %s \xc2\xb7 %s %d\xc3\x97top-%d \xc2\xb7 %s \xc2\xb7 colour: %s (%s) \xc2\xb7 %.0f tok/s "
             "\xc2\xb7 ctx %d/%d \xc2\xb7 %s \xc2\xb7 %s",
             t->model_name, in->arch, in->n_experts, in->k, kbuf, colour,
             term_nocolour() ? "no colour" : term_colour_mode(), t->tok_s, c->n, t->s ? moe_session_n_ctx(t->s) : c->n,
             mode, state);
    attron(COLOR_PAIR(CP_TITLE) | (term_nocolour() ? A_REVERSE : 0));
    mvhline(0, 0, ' ', w);
    ui_text(0, 0, line, w);
    attroff(COLOR_PAIR(CP_TITLE) | (term_nocolour() ? A_REVERSE : 0));
}

static void draw_prompt(tui *t, int y, int w)
{
    if (t->review) {
        attron(COLOR_PAIR(CP_DIM));
        ui_text(y, 0, "review mode: no model, no prompts (moescope view FILE --replay MODEL runs it again)", w);
        attroff(COLOR_PAIR(CP_DIM));
        return;
    }
    int point;
    const char *line, *prompt = prompt_text(&point, &line);
    int pw = ui_width(prompt, strlen(prompt));
    int cur = ui_width(line, (size_t)point);
    /* scroll the line horizontally so the cursor stays in view */
    int avail = w - pw - 1, skip_cols = cur > avail ? cur - avail : 0;
    const char *s = line;
    int skipped = 0;
    mbstate_t ms;
    memset(&ms, 0, sizeof ms);
    while (*s && skipped < skip_cols) {
        wchar_t wc;
        size_t l = mbrtowc(&wc, s, strlen(s), &ms);
        if (l == (size_t)-1 || l == (size_t)-2 || l == 0)
            l = 1;
        skipped += 1;
        s += l;
    }
    attron(t->focus == FOCUS_PROMPT ? A_BOLD : (int)COLOR_PAIR(CP_DIM));
    ui_text(y, 0, prompt, w);
    attroff(t->focus == FOCUS_PROMPT ? A_BOLD : (int)COLOR_PAIR(CP_DIM));
    ui_text(y, pw, s, avail);
    if (t->focus == FOCUS_PROMPT)
        move(y, pw + cur - skipped);
}

static void draw_help(tui *t, int H, int W)
{
    static const char *const GLOBAL[] = {
        "Tab / S-Tab      next / previous pane (the prompt is one)",
        "Esc              stop generating; in the prompt: to the panes",
        "Ctrl-C           stop generating; when idle: ask to quit",
        "i                back to the prompt",
        "+ / -            k: experts per token (scope as Experts)",
        "[ / ]            router: select the layer above / below",
        "c                colour: vote, then each layer's top-1",
        ":                command line (commands below)",
        "s                save the transcript (moescope-DATE-TIME.json)",
        "/                search the transcript (n / N: next / previous)",
        "C                chat mode on / off (the model's template)",
        "mouse            click a token, a router layer or an expert",
        "F1 / ?           this help;  q  quit",
        NULL,
    };
    char cmds[40][96];
    int nc = command_help(cmds, 40);
    int n = 2;
    for (const char *const *p = GLOBAL; *p; p++)
        n++;
    for (const char *const *p = TRANSCRIPT_HELP; *p; p++)
        n++;
    for (const char *const *p = EXPERTS_HELP; *p; p++)
        n++;
    for (const char *const *p = STEER_HELP; *p; p++)
        n++;
    n += nc + 8 + (t->n_binds ? t->n_binds + 1 : 0);
    int hw = W - 4 < 78 ? W - 4 : 78, hh = H - 2 < n ? H - 2 : n;
    rect r = {(H - hh) / 2, (W - hw) / 2, hh, hw};
    for (int y = r.y; y < r.y + r.h; y++)
        mvhline(y, r.x, ' ', r.w);
    ui_frame(r, "Help \xc2\xb7 any key closes", 1);
    int y = r.y + 1, x = r.x + 2, w = r.w - 4, end = r.y + r.h - 1;
#define SECTION(name, arr)                                                                 \
    if (y < end) {                                                                         \
        attron(A_BOLD);                                                                    \
        ui_text(y++, x, name, w);                                                          \
        attroff(A_BOLD);                                                                   \
    }                                                                                      \
    for (const char *const *p = arr; *p && y < end; p++)                                   \
        ui_text(y++, x + 1, *p, w - 1);
    if (t->n_binds && y < end) {
        attron(A_BOLD);
        ui_text(y++, x, "Your keys (bind lines of the settings file; they come first)", w);
        attroff(A_BOLD);
    }
    for (int i = 0; i < t->n_binds && y < end; i++) {
        char line[128];
        snprintf(line, sizeof line, "%-16s :%s", t->binds[i].name, t->binds[i].command);
        ui_text(y++, x + 1, line, w - 1);
    }
    SECTION("Everywhere", GLOBAL)
    SECTION("Transcript", TRANSCRIPT_HELP)
    SECTION("Experts", EXPERTS_HELP)
    SECTION("Steering", STEER_HELP)
#undef SECTION
    if (y < end) {
        attron(A_BOLD);
        ui_text(y++, x, "Commands (: line, or a prompt line starting with :)", w);
        attroff(A_BOLD);
    }
    for (int i = 0; i < nc && y < end; i++)
        ui_text(y++, x + 1, cmds[i], w - 1);
    if (y < end)
        ui_text(y++, x, "Prompt: readline keys; Up/Down history, Ctrl-R search", w);
}

static void draw(tui *t)
{
    int H, W;
    getmaxyx(stdscr, H, W);
    erase();
    curs_set(0);
    /* the panes say where clicks land as they draw */
    t->hit_transcript = t->hit_router = t->hit_experts = t->hit_steer = (hit_rect){0, 0, 0, 0};
    if (W < TERM_MIN_W || H < TERM_MIN_H) {
        char m[96];
        snprintf(m, sizeof m, "moescope needs %dx%d; this terminal is %dx%d", TERM_MIN_W, TERM_MIN_H, W, H);
        ui_text(H / 2 - 1 > 0 ? H / 2 - 1 : 0, W > (int)strlen(m) ? (W - (int)strlen(m)) / 2 : 0, m, W);
        ui_text(H / 2 > 1 ? H / 2 : 1, 0, "enlarge the window, or q to quit", W);
        refresh();
        return;
    }
    pthread_mutex_lock(&t->lock);
    draw_status(t, W);
    int ph = H - 4, th = ph * 11 / 20, bh = ph - th;
    int tw = W * 54 / 100;
    if (t->conv.n_routes + 3 > th && th < ph - 6) /* make room for every layer if it can */
        th = t->conv.n_routes + 3 < ph - 6 ? t->conv.n_routes + 3 : ph - 6, bh = ph - th;
    pane_transcript_draw(t, (rect){1, 0, th, tw});
    pane_router_draw(t, (rect){1, tw, th, W - tw});
    int ew = W * 27 / 100, sw = W * 33 / 100;
    pane_experts_draw(t, (rect){1 + th, 0, bh, ew});
    pane_steer_draw(t, (rect){1 + th, ew, bh, sw});
    pane_usage_draw(t, (rect){1 + th, ew + sw, bh, W - ew - sw});
    /* message or command line */
    if (t->cmdline) {
        mvaddch(H - 3, 0, (chtype)t->cmd_kind);
        ui_text(H - 3, 1, t->cmd, W - 2);
    } else if (t->confirm_quit) {
        attron(A_BOLD);
        ui_text(H - 3, 0, "Quit moescope? (y/n)", W);
        attroff(A_BOLD);
    } else if (t->restore) {
        char q[256];
        snprintf(q, sizeof q, "Restore the unsaved session of %s (%d tokens)? (y/n)", transcript_created(t->restore),
                 transcript_n_tokens(t->restore));
        attron(A_BOLD);
        ui_text(H - 3, 0, q, W);
        attroff(A_BOLD);
    } else if (t->msg[0]) {
        int a = t->msg_err ? (int)COLOR_PAIR(CP_ERR) | (term_nocolour() ? A_REVERSE : 0) : (int)COLOR_PAIR(CP_OK);
        attron(a);
        ui_text(H - 3, 0, t->msg, W);
        attroff(a);
    }
    pthread_mutex_unlock(&t->lock);
    const char *hints = t->review ? " F1 help \xc2\xb7 Tab focus \xc2\xb7 arrows move \xc2\xb7 / search \xc2\xb7 : command \xc2\xb7 s save a copy "
                                    "\xc2\xb7 q quit"
                        : t->focus == FOCUS_PROMPT
                            ? " Enter send \xc2\xb7 Tab/Esc panes \xc2\xb7 \xe2\x86\x91\xe2\x86\x93 history \xc2\xb7 C-r search "
                              "\xc2\xb7 :cmd \xc2\xb7 F1 help \xc2\xb7 C-c stop"
                            : " F1 help \xc2\xb7 Tab focus \xc2\xb7 Space toggle \xc2\xb7 +/- k \xc2\xb7 : command \xc2\xb7 s save "
                              "\xc2\xb7 i prompt \xc2\xb7 q quit";
    attron(COLOR_PAIR(CP_DIM));
    ui_text(H - 1, 0, hints, W);
    attroff(COLOR_PAIR(CP_DIM));
    if (t->help) {
        draw_help(t, H, W);
    } else if (t->cmdline) {
        move(H - 3, 1 + ui_width(t->cmd, (size_t)t->cmd_len));
        curs_set(1);
    } else {
        draw_prompt(t, H - 2, W);
        if (t->focus == FOCUS_PROMPT)
            curs_set(1);
    }
    refresh();
}

/* ---- keys ----------------------------------------------------------------- */

typedef struct {
    int key;
    int (*fn)(tui *t);
} key_action;

static int act_quit(tui *t)
{
    (void)t;
    return KEY_QUIT;
}

static int act_help(tui *t)
{
    t->help = 1;
    return KEY_REDRAW;
}

static int act_cmdline(tui *t)
{
    t->cmdline = 1;
    t->cmd_kind = ':';
    t->cmd_len = 0;
    t->cmd[0] = 0;
    return KEY_REDRAW;
}

static int act_search(tui *t)
{
    act_cmdline(t);
    t->cmd_kind = '/';
    return KEY_REDRAW;
}

static int act_chat(tui *t)
{
    return command_run(t, "chat");
}

static int act_focus_next(tui *t)
{
    t->picker = 0;
    t->focus = (t->focus + 1) % FOCUS_COUNT;
    if (t->review && t->focus == FOCUS_PROMPT) /* nothing to type to */
        t->focus++;
    return KEY_REDRAW;
}

static int act_focus_prev(tui *t)
{
    t->picker = 0;
    t->focus = (t->focus + FOCUS_COUNT - 1) % FOCUS_COUNT;
    if (t->review && t->focus == FOCUS_PROMPT)
        t->focus = FOCUS_COUNT - 1;
    return KEY_REDRAW;
}

static int act_prompt(tui *t)
{
    if (t->review) {
        tui_message(t, 1, "review mode: no model");
        return KEY_REDRAW;
    }
    t->focus = FOCUS_PROMPT;
    return KEY_REDRAW;
}

static int k_step(tui *t, int d)
{
    if (!t->conv.n_routes)
        return KEY_HANDLED;
    int r = t->scope_layer ? t->sel_route : 0, k = t->view.k[r] + d;
    if (k < 1 || k > t->conv.n_experts) {
        tui_message(t, 1, "k stays between 1 and %d", t->conv.n_experts);
        return KEY_REDRAW;
    }
    char arg[32];
    if (t->scope_layer)
        snprintf(arg, sizeof arg, "L%d:%d", t->conv.route_layer[r], k);
    else
        snprintf(arg, sizeof arg, "%d", k);
    return command_control(t, "k", arg);
}

static int act_k_up(tui *t)
{
    return k_step(t, 1);
}

static int act_k_down(tui *t)
{
    return k_step(t, -1);
}

static int act_colour(tui *t)
{
    t->colour_layer = t->colour_layer + 1 >= t->conv.n_routes ? -1 : t->colour_layer + 1;
    return KEY_REDRAW;
}

static int act_save(tui *t)
{
    return command_run(t, "save");
}

static int act_layer_up(tui *t)
{
    if (t->sel_route > 0)
        t->sel_route--;
    return KEY_REDRAW;
}

static int act_layer_down(tui *t)
{
    if (t->sel_route + 1 < t->conv.n_routes)
        t->sel_route++;
    return KEY_REDRAW;
}

static int act_stop(tui *t)
{
    if (t->busy) {
        t->stop = 1;
        tui_message(t, 0, "stopping...");
    }
    return KEY_REDRAW;
}

static const key_action GLOBAL_KEYS[] = {
    {'q', act_quit},          {'?', act_help},          {KEY_F(1), act_help},      {':', act_cmdline},
    {'\t', act_focus_next},   {KEY_BTAB, act_focus_prev}, {'i', act_prompt},       {'+', act_k_up},
    {'=', act_k_up},          {'-', act_k_down},        {'c', act_colour},         {'s', act_save},
    {'[', act_layer_up},      {']', act_layer_down},    {27, act_stop},            {'/', act_search},
    {'C', act_chat},
};

/* ---- the settings' key bindings ----------------------------------------- */

static const struct {
    const char *name;
    int key;
} KEY_NAMES[] = {
    {"Space", ' '},          {"Enter", '\n'},        {"Tab", '\t'},        {"BTab", KEY_BTAB},
    {"S-Tab", KEY_BTAB},     {"Up", KEY_UP},         {"Down", KEY_DOWN},   {"Left", KEY_LEFT},
    {"Right", KEY_RIGHT},    {"Home", KEY_HOME},     {"End", KEY_END},     {"PgUp", KEY_PPAGE},
    {"PgDn", KEY_NPAGE},     {"Delete", KEY_DC},     {"Insert", KEY_IC},   {"Backspace", KEY_BACKSPACE},
};

/* "x", "F5", "C-t", "PgDn" to a curses key code; -1 unknown, -2 reserved
 * (Esc and Ctrl-C always stop, so they cannot be bound). */
static int key_code(const char *name)
{
    size_t n = strlen(name);
    if (n == 1 && name[0] > ' ' && name[0] < 127)
        return (unsigned char)name[0];
    if ((name[0] == 'F' || name[0] == 'f') && n >= 2 && n <= 3 && isdigit((unsigned char)name[1]) &&
        (n == 2 || isdigit((unsigned char)name[2]))) {
        int f = atoi(name + 1);
        return f >= 1 && f <= 12 ? KEY_F(f) : -1;
    }
    if (n == 3 && (name[0] == 'C' || name[0] == 'c') && name[1] == '-' && isalpha((unsigned char)name[2])) {
        int c = tolower((unsigned char)name[2]) - 'a' + 1;
        return c == 3 ? -2 : c; /* C-c */
    }
    if (!strcasecmp(name, "Esc") || !strcasecmp(name, "Escape"))
        return -2;
    for (size_t i = 0; i < sizeof KEY_NAMES / sizeof KEY_NAMES[0]; i++)
        if (!strcasecmp(name, KEY_NAMES[i].name))
            return KEY_NAMES[i].key;
    return -1;
}

void screen_bind_keys(tui *t, ui_settings *cfg)
{
    t->n_binds = 0;
    for (int i = 0; i < cfg->n_binds; i++) {
        const char *name = cfg->binds[i].key, *cmd = cfg->binds[i].command;
        int key = key_code(name);
        if (key == -2) {
            settings_warn(cfg, "config line %d: %s is not bindable (it stops generating)", cfg->binds[i].line, name);
            continue;
        }
        if (key < 0) {
            settings_warn(cfg, "config line %d: unknown key name '%s'", cfg->binds[i].line, name);
            continue;
        }
        if (!command_exists(cmd)) {
            settings_warn(cfg, "config line %d: unknown command '%.40s'", cfg->binds[i].line, cmd);
            continue;
        }
        int j = 0; /* a later line for the same key replaces the earlier */
        while (j < t->n_binds && t->binds[j].key != key)
            j++;
        t->binds[j].key = key;
        snprintf(t->binds[j].name, sizeof t->binds[j].name, "%s", name);
        snprintf(t->binds[j].command, sizeof t->binds[j].command, "%s", cmd);
        if (j == t->n_binds)
            t->n_binds++;
    }
}

/* A bound key runs its command; in the prompt only function keys are
 * looked up, so typing and readline's own keys stay as they are. */
static int bound_key(tui *t, int key)
{
    if (t->focus == FOCUS_PROMPT && !t->review && !(key >= KEY_F(1) && key <= KEY_F(12)))
        return KEY_UNHANDLED;
    for (int i = 0; i < t->n_binds; i++)
        if (t->binds[i].key == key)
            return command_run(t, t->binds[i].command) | KEY_REDRAW;
    return KEY_UNHANDLED;
}

static int pane_key(tui *t, int key)
{
    switch (t->focus) {
    case FOCUS_TRANSCRIPT: return pane_transcript_key(t, key);
    case FOCUS_EXPERTS: return pane_experts_key(t, key);
    case FOCUS_STEER: return pane_steer_key(t, key);
    default: return KEY_UNHANDLED;
    }
}

static int cmdline_key(tui *t, int key)
{
    if (key == 27) {
        t->cmdline = 0;
    } else if (key == '\r' || key == '\n' || key == KEY_ENTER) {
        t->cmdline = 0;
        if (t->cmd_kind == '/') {
            if (t->cmd_len)
                snprintf(t->search, sizeof t->search, "%.*s", (int)sizeof t->search - 1, t->cmd);
            return search_step(t, 0);
        }
        return command_run(t, t->cmd) | KEY_REDRAW;
    } else if (key == KEY_BACKSPACE || key == 127 || key == 8) {
        if (t->cmd_len)
            t->cmd[--t->cmd_len] = 0;
        else
            t->cmdline = 0;
    } else if (key >= 32 && key < 256 && t->cmd_len + 1 < (int)sizeof t->cmd) {
        t->cmd[t->cmd_len++] = (char)key;
        t->cmd[t->cmd_len] = 0;
    }
    return KEY_REDRAW;
}

static int prompt_line(tui *t, char *line)
{
    int flags = KEY_REDRAW;
    if (line[0] == ':') {
        flags |= command_run(t, line + 1);
    } else if (line[0]) {
        if (worker_submit(t, JOB_GENERATE, line))
            tui_message(t, 1, "still generating: Esc stops it");
        else
            t->cursor = -1; /* follow the new tokens */
    }
    free(line);
    return flags;
}

/* A click selects what it lands on and focuses its pane; the wheel
 * moves the transcript's cursor a line. */
static int mouse_event(tui *t)
{
    MEVENT ev;
    if (getmouse(&ev) != OK)
        return KEY_HANDLED;
    int H, W, y = ev.y, x = ev.x;
    getmaxyx(stdscr, H, W);
    (void)W;
    if (t->help || t->confirm_quit || t->cmdline)
        return KEY_HANDLED;
    if (ev.bstate & (BUTTON4_PRESSED | BUTTON5_PRESSED)) {
        if (t->focus == FOCUS_PROMPT)
            t->focus = FOCUS_TRANSCRIPT;
        return pane_transcript_key(t, ev.bstate & BUTTON4_PRESSED ? KEY_UP : KEY_DOWN) | KEY_REDRAW;
    }
    if (!(ev.bstate & (BUTTON1_PRESSED | BUTTON1_CLICKED)))
        return KEY_HANDLED;
    const hit_rect *r;
    int tok = pane_transcript_hit(t, y, x);
    if (tok >= 0) {
        t->cursor = tok;
        t->focus = FOCUS_TRANSCRIPT;
        return KEY_REDRAW;
    }
#define INSIDE(rr) (r = &(rr), y >= r->y && y < r->y + r->h && x >= r->x && x < r->x + r->w)
    if (INSIDE(t->hit_router)) {
        t->sel_route = t->router_first + y - r->y;
        return KEY_REDRAW;
    }
    if (INSIDE(t->hit_experts)) {
        t->sel_expert = t->experts_first + y - r->y;
        t->focus = FOCUS_EXPERTS;
        return KEY_REDRAW;
    }
    if (INSIDE(t->hit_steer) && !t->review) {
        t->focus = FOCUS_STEER;
        return pane_steer_click(t, y - r->y, x) | KEY_REDRAW;
    }
#undef INSIDE
    if (y == H - 2 && !t->review)
        t->focus = FOCUS_PROMPT;
    return KEY_REDRAW;
}

/* The answer to "Restore the unsaved session?": y evaluates it into the
 * session, n or Esc starts afresh (the new session's autosave replaces it). */
static int restore_answer(tui *t, int key)
{
    if (key == 'y' || key == 'Y') {
        if (worker_submit_restore(t, t->restore)) {
            tui_message(t, 1, "busy: try again when the worker is idle");
            return KEY_REDRAW;
        }
        tui_message(t, 0, "restoring %d tokens...", transcript_n_tokens(t->restore));
        t->cursor = -1;
    } else if (key == 'n' || key == 'N' || key == 27) {
        transcript_free(t->restore);
        tui_message(t, 0, "not restored: this session's autosave replaces it");
    } else {
        return KEY_HANDLED;
    }
    t->restore = NULL;
    t->autosave_off = t->review;
    return KEY_REDRAW;
}

static int handle_key(tui *t, int key)
{
    if (key == KEY_RESIZE)
        return KEY_REDRAW;
    if (key == KEY_MOUSE)
        return mouse_event(t);
    if (t->help) {
        t->help = 0;
        return KEY_REDRAW;
    }
    if (t->confirm_quit) {
        t->confirm_quit = 0;
        return key == 'y' || key == 'Y' || key == 3 ? KEY_QUIT : KEY_REDRAW;
    }
    if (t->restore)
        return restore_answer(t, key);
    if (key == 3) { /* Ctrl-C */
        if (t->busy)
            return act_stop(t);
        t->confirm_quit = 1;
        return KEY_REDRAW;
    }
    if (t->cmdline)
        return cmdline_key(t, key);
    int H, W;
    getmaxyx(stdscr, H, W);
    if (W < TERM_MIN_W || H < TERM_MIN_H) /* nothing to act on but quitting */
        return key == 'q' ? KEY_QUIT : KEY_HANDLED;
    int bound = bound_key(t, key);
    if (bound)
        return bound;
    if (t->focus == FOCUS_PROMPT && !t->review) {
        if (key == '\t' || (key == 27 && !t->busy))
            return act_focus_next(t);
        if (key == 27)
            return act_stop(t);
        if (key == KEY_F(1))
            return act_help(t);
        if (key == KEY_BTAB)
            return act_focus_prev(t);
        prompt_key(key);
        char *line = prompt_take_line();
        return line ? prompt_line(t, line) : KEY_REDRAW;
    }
    int f = pane_key(t, key);
    if (f)
        return f;
    for (size_t i = 0; i < sizeof GLOBAL_KEYS / sizeof GLOBAL_KEYS[0]; i++)
        if (GLOBAL_KEYS[i].key == key)
            return GLOBAL_KEYS[i].fn(t);
    return KEY_HANDLED;
}

int screen_run(tui *t)
{
    double last = 0;
    int dirty = 1, urgent = 1;
    const double FRAME = 1.0 / 10; /* seconds between frames that new tokens cause */
    for (;;) {
        if (term_quit_signal)
            return 0;
        double tn = now();
        if (dirty && (urgent || tn - last >= FRAME)) {
            atomic_store(&t->tokens_undrawn, 0); /* later tokens wake us again */
            draw(t);
            last = tn;
            dirty = urgent = 0;
        }
        int timeout = dirty ? (int)((FRAME - (tn - last)) * 1000) + 1 : 250;
        struct pollfd pf[2] = {{0, POLLIN, 0}, {t->wake_fd[0], POLLIN, 0}};
        int n = poll(pf, 2, timeout);
        if (n < 0 && errno != EINTR)
            return -1;
        if (pf[1].revents & POLLIN) {
            char buf[256];
            while (read(t->wake_fd[0], buf, sizeof buf) > 0)
                ;
            dirty = 1;
        }
        if (n <= 0 && !dirty) /* a tick: refresh tok/s and the state */
            dirty = 1;
        pthread_mutex_lock(&t->lock);
        int busy = t->busy, need_view = t->need_view;
        t->need_view = 0;
        pthread_mutex_unlock(&t->lock);
        if (need_view)
            view_refresh(t);
        if (!busy) /* control changes while idle; a large record's timer */
            autosave_tick(t, 0);
        int key;
        while ((key = getch()) != ERR) {
            int f = handle_key(t, key);
            if (f & KEY_QUIT)
                return 0;
            dirty = urgent = 1;
        }
    }
}
