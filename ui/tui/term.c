/* Terminal ownership (see term.h). */
#include "term.h"

#include <curses.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../colour.h"

volatile sig_atomic_t term_quit_signal;
int term_wake_fd = -1;
static int active, nocolour, n_pairs_exp, eight;
static const char *mode = "none";


static void on_quit_signal(int sig)
{
    term_quit_signal = sig;
    if (term_wake_fd >= 0) {
        char c = 0;
        ssize_t w = write(term_wake_fd, &c, 1);
        (void)w;
    }
}

/* A crash: give the terminal back, then die as the signal says (a core
 * dump, the right exit status). */
static void on_crash_signal(int sig)
{
    if (active)
        endwin();
    active = 0;
    signal(sig, SIG_DFL);
    raise(sig);
}

static void handle(int sig, void (*fn)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

int term_init(void)
{
    setlocale(LC_ALL, "");
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "moescope: the explorer needs a terminal (use `moescope run` in scripts)\n");
        return -1;
    }
    const char *no = getenv("NO_COLOR");
    nocolour = no && *no;
    set_escdelay(100); /* a lone Esc within 0.1 s; mouse sequences on a loaded machine stay whole */
    if (!initscr()) {
        fprintf(stderr, "moescope: cannot initialise the terminal (TERM=%s)\n", getenv("TERM"));
        return -1;
    }
    active = 1;
    handle(SIGINT, on_quit_signal, 0);
    handle(SIGTERM, on_quit_signal, 0);
    handle(SIGHUP, on_quit_signal, 0);
    handle(SIGSEGV, on_crash_signal, (int)SA_RESETHAND);
    handle(SIGABRT, on_crash_signal, (int)SA_RESETHAND);
    handle(SIGBUS, on_crash_signal, (int)SA_RESETHAND);
    handle(SIGFPE, on_crash_signal, (int)SA_RESETHAND);
    raw(); /* Ctrl-C is a key: it stops a generation rather than the program */
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    curs_set(0);
    if (!nocolour && has_colors()) {
        start_color();
        use_default_colors();
        /* the palette is colour.c's, shared with the CLI */
        eight = COLORS < 256;
        int n = eight ? colour_palette_size8() : colour_palette_size();
        mode = eight ? "8" : "256";
        for (int i = 0; i < n && CP_EXPERT0 + i < COLOR_PAIRS; i++, n_pairs_exp++)
            init_pair((short)(CP_EXPERT0 + i), (short)(eight ? colour_index8(i) : colour_index(i)), -1);
        init_pair(CP_TITLE, COLOR_BLACK, COLOR_CYAN);
        init_pair(CP_DIM, COLORS >= 256 ? 244 : COLOR_WHITE, -1);
        init_pair(CP_ERR, COLOR_WHITE, COLOR_RED);
        init_pair(CP_OK, COLOR_GREEN, -1);
        init_pair(CP_SEL, COLOR_BLACK, COLOR_WHITE);
        init_pair(CP_BAR, COLOR_CYAN, -1);
    } else {
        nocolour = 1;
        mode = "none";
    }
    return 0;
}

void term_done(void)
{
    if (!active)
        return;
    curs_set(1);
    endwin();
    active = 0;
}

void term_mouse(int on)
{
    /* presses rather than clicks: a click is reported at once, not after
     * waiting to see whether a release follows */
    mouseinterval(0);
    mousemask(on ? BUTTON1_PRESSED | BUTTON1_CLICKED | BUTTON4_PRESSED | BUTTON5_PRESSED : 0, NULL);
}

int term_nocolour(void)
{
    return nocolour;
}

const char *term_colour_mode(void)
{
    return mode;
}

int term_expert_attr(int e)
{
    if (e < 0)
        return 0;
    if (nocolour) {
        static const int ATTRS[] = {A_BOLD, A_UNDERLINE, A_NORMAL, A_DIM, A_BOLD | A_UNDERLINE, A_ITALIC,
                                    A_DIM | A_UNDERLINE, A_ITALIC | A_BOLD};
        return (int)ATTRS[e % 8];
    }
    return (int)COLOR_PAIR(CP_EXPERT0 + e % (n_pairs_exp ? n_pairs_exp : 1)) | (eight ? A_BOLD : 0);
}

char term_expert_letter(int e)
{
    e %= 52;
    return (char)(e < 26 ? 'A' + e : 'a' + e - 26);
}
