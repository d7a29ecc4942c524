/* The settings file, $XDG_CONFIG_HOME/moescope/config
 * (~/.config/moescope/config), shared by the explorer and `run`: `key =
 * value` lines, `#` comments. A problem in it never stops moescope: the
 * line is skipped and described in warn, for the caller to show. */
#ifndef MOE_UI_SETTINGS_H
#define MOE_UI_SETTINGS_H

enum { SETTINGS_MAX_BINDS = 32 };

typedef struct {
    int palette;               /* colour_palette */
    char colour[32];           /* "vote" or a layer number; "" unset */
    char model[4096];          /* default model; "" unset */
    int threads;               /* 0 unset */
    int mouse;                 /* 1 on (default), 0 off */
    struct {                   /* bind KEY = COMMAND, in file order */
        char key[16];          /* as written: "x", "F5", "C-t", "PgDn" */
        char command[96];      /* a `:` command line without the colon */
        int line;
    } binds[SETTINGS_MAX_BINDS];
    int n_binds;
    char path[4096];           /* the file read; "" none */
    char warn[512];            /* problems found, for the message bar or stderr */
} ui_settings;

/* Read the settings file (missing: defaults, no warning). Never fails:
 * unknown keys and bad values are skipped and described in cfg->warn. Key
 * names and commands of `bind` lines are checked by the explorer, which
 * knows them. */
void settings_load(ui_settings *cfg);
/* Add a problem to cfg->warn ("; "-separated, cut when full). */
void settings_warn(ui_settings *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
