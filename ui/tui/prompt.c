/* The prompt line: GNU readline driven through its callback interface, so
 * that curses keeps the terminal. Keys come from curses one at a time and
 * reach readline through rl_getc_function; readline's redisplay only marks
 * the line for the next frame, which the screen draws from rl_line_buffer.
 * Readline never touches the terminal (no prep/deprep, output to
 * /dev/null, no signal handlers of its own). History lives in
 * $XDG_STATE_HOME/moescope/history (~/.local/state/moescope/history). */
#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "tui.h"

static int pending = -1;
static char *done_line;
static FILE *devnull;
static char hist_path[4096];

static int getc_hook(FILE *f)
{
    (void)f;
    int c = pending;
    pending = -1;
    return c < 0 ? EOF : c;
}

static int avail_hook(void)
{
    return pending >= 0;
}

static void redisplay_hook(void)
{
}

static void no_prep(int meta)
{
    (void)meta;
}

static void no_deprep(void)
{
}

static void on_line(char *line)
{
    if (!line) /* Ctrl-D on an empty line: not a way out of the explorer */
        return;
    free(done_line);
    done_line = line;
    if (*line) {
        add_history(line);
        if (hist_path[0])
            append_history(1, hist_path);
    }
}

/* mkdir -p for the directory part of path. */
static void make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        mkdir(path, 0700);
        *p = '/';
    }
}

int prompt_init(tui *t)
{
    (void)t;
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (state && *state)
        snprintf(hist_path, sizeof hist_path, "%s/moescope/history", state);
    else if (home && *home)
        snprintf(hist_path, sizeof hist_path, "%s/.local/state/moescope/history", home);
    if (hist_path[0]) {
        make_dirs(hist_path);
        int fd = open(hist_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
        else
            hist_path[0] = 0; /* history stays in memory */
    }
    devnull = fopen("/dev/null", "w");
    rl_readline_name = "moescope";
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    rl_prep_term_function = no_prep;
    rl_deprep_term_function = no_deprep;
    rl_getc_function = getc_hook;
    rl_input_available_hook = avail_hook;
    rl_redisplay_function = redisplay_hook;
    rl_instream = stdin;
    rl_outstream = devnull ? devnull : stderr;
    rl_inhibit_completion = 1; /* Tab moves the focus */
    using_history();
    stifle_history(2000);
    if (hist_path[0])
        read_history(hist_path);
    rl_callback_handler_install("> ", on_line);
    return 0;
}

void prompt_done(void)
{
    rl_callback_handler_remove();
    if (hist_path[0])
        history_truncate_file(hist_path, 2000);
    free(done_line);
    done_line = NULL;
    if (devnull)
        fclose(devnull);
    devnull = NULL;
}

void prompt_key(int key)
{
    /* curses' function keys as the control keys readline binds by default */
    switch (key) {
    case KEY_LEFT: key = 2; break;       /* C-b */
    case KEY_RIGHT: key = 6; break;      /* C-f */
    case KEY_UP: key = 16; break;        /* C-p */
    case KEY_DOWN: key = 14; break;      /* C-n */
    case KEY_HOME: key = 1; break;       /* C-a */
    case KEY_END: key = 5; break;        /* C-e */
    case KEY_BACKSPACE: key = 127; break;
    case KEY_DC: key = 4; break;         /* C-d */
    case KEY_ENTER: key = '\r'; break;
    default: break;
    }
    if (key < 0 || key > 255)
        return;
    pending = key;
    rl_callback_read_char();
}

char *prompt_take_line(void)
{
    char *l = done_line;
    done_line = NULL;
    return l;
}

const char *prompt_text(int *cursor_byte, const char **line)
{
    *line = rl_line_buffer ? rl_line_buffer : "";
    *cursor_byte = rl_point;
    return rl_display_prompt ? rl_display_prompt : (rl_prompt ? rl_prompt : "> ");
}
