/* The settings file (see settings.h). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "colour.h"
#include "settings.h"

void settings_warn(ui_settings *cfg, const char *fmt, ...)
{
    size_t n = strlen(cfg->warn);
    if (n + 8 >= sizeof cfg->warn)
        return;
    if (n)
        n += (size_t)snprintf(cfg->warn + n, sizeof cfg->warn - n, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->warn + n, sizeof cfg->warn - n, fmt, ap);
    va_end(ap);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

void settings_load(ui_settings *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->palette = COLOUR_PALETTE_OKABE_ITO;
    cfg->mouse = 1;
    char path[4096];
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(path, sizeof path, "%s/moescope/config", xdg);
    else if (home && *home)
        snprintf(path, sizeof path, "%s/.config/moescope/config", home);
    else
        return;
    FILE *f = fopen(path, "r");
    if (!f)
        return; /* no settings: the defaults */
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    char line[4096 + 64];
    int ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            settings_warn(cfg, "config line %d: too long", ln);
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            continue;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            settings_warn(cfg, "config line %d: expected key = value", ln);
            continue;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        if (!strcmp(key, "palette")) {
            int p = colour_palette_find(val);
            if (p < 0)
                settings_warn(cfg, "config line %d: palette is okabe-ito or classic, not '%.32s'", ln, val);
            else
                cfg->palette = p;
        } else if (!strcmp(key, "colour") || !strcmp(key, "color")) {
            char *end;
            long l = strtol(val[0] == 'L' || val[0] == 'l' ? val + 1 : val, &end, 10);
            if (strcmp(val, "vote") && (!*val || *end || l < 0 || l > 4096))
                settings_warn(cfg, "config line %d: colour is vote or a layer number, not '%.32s'", ln, val);
            else
                snprintf(cfg->colour, sizeof cfg->colour, "%s", val);
        } else if (!strcmp(key, "model")) {
            if (!*val)
                settings_warn(cfg, "config line %d: model needs a path", ln);
            else
                snprintf(cfg->model, sizeof cfg->model, "%s", val);
        } else if (!strcmp(key, "threads")) {
            char *end;
            long v = strtol(val, &end, 10);
            if (!*val || *end || v < 1 || v > 256)
                settings_warn(cfg, "config line %d: threads is 1 to 256, not '%.32s'", ln, val);
            else
                cfg->threads = (int)v;
        } else if (!strcmp(key, "mouse")) {
            if (strcmp(val, "on") && strcmp(val, "off"))
                settings_warn(cfg, "config line %d: mouse is on or off, not '%.32s'", ln, val);
            else
                cfg->mouse = !strcmp(val, "on");
        } else if (!strncmp(key, "bind", 4) && isspace((unsigned char)key[4])) {
            const char *k = trim(key + 4);
            if (cfg->n_binds == SETTINGS_MAX_BINDS)
                settings_warn(cfg, "config line %d: more than %d bindings", ln, SETTINGS_MAX_BINDS);
            else if (!*val || strlen(k) >= sizeof cfg->binds[0].key || strlen(val) >= sizeof cfg->binds[0].command)
                settings_warn(cfg, "config line %d: bind KEY = COMMAND", ln);
            else {
                snprintf(cfg->binds[cfg->n_binds].key, sizeof cfg->binds[0].key, "%s", k);
                snprintf(cfg->binds[cfg->n_binds].command, sizeof cfg->binds[0].command, "%s",
                         val + (val[0] == ':'));
                cfg->binds[cfg->n_binds++].line = ln;
            }
        } else {
            settings_warn(cfg, "config line %d: unknown key '%.32s'", ln, key);
        }
    }
    fclose(f);
}
