/* The expert palettes (see colour.h). Okabe-Ito's eight colours come first
 * in its table, as 256-colour approximations; the four after them are not
 * part of the colour-blind-safe set and only serve models with more
 * experts. With eight colours, each palette keeps the six that read on
 * black and on white. */
#include "colour.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    int n256, n8;
    int c256[12];
    int c8[6];
} palette;

/* ANSI numbers: 0 black 1 red 2 green 3 yellow 4 blue 5 magenta 6 cyan 7 white */
static const palette PALETTES[COLOUR_PALETTE_COUNT] = {
    {"okabe-ito", 12, 6, {214, 75, 36, 227, 32, 166, 175, 250, 203, 114, 141, 180}, {3, 6, 2, 5, 4, 1}},
    {"classic", 12, 6, {196, 46, 33, 226, 201, 51, 208, 129, 118, 39, 218, 252}, {1, 2, 4, 3, 5, 6}},
};

static colour_palette active = COLOUR_PALETTE_OKABE_ITO;

void colour_palette_set(colour_palette p)
{
    if ((int)p >= 0 && (int)p < COLOUR_PALETTE_COUNT)
        active = p;
}

colour_palette colour_palette_get(void)
{
    return active;
}

const char *colour_palette_name(colour_palette p)
{
    return (int)p >= 0 && (int)p < COLOUR_PALETTE_COUNT ? PALETTES[p].name : NULL;
}

int colour_palette_find(const char *name)
{
    for (int i = 0; i < COLOUR_PALETTE_COUNT; i++)
        if (!strcmp(name, PALETTES[i].name))
            return i;
    return -1;
}

int colour_index(int expert)
{
    const palette *p = &PALETTES[active];
    return p->c256[(expert < 0 ? 0 : expert) % p->n256];
}

int colour_index8(int expert)
{
    const palette *p = &PALETTES[active];
    return p->c8[(expert < 0 ? 0 : expert) % p->n8];
}

int colour_palette_size(void)
{
    return PALETTES[active].n256;
}

int colour_palette_size8(void)
{
    return PALETTES[active].n8;
}

int colour_enabled(colour_when when, FILE *f)
{
    if (when != COLOUR_AUTO)
        return when == COLOUR_ALWAYS;
    const char *no = getenv("NO_COLOR"), *term = getenv("TERM");
    if (no && *no)
        return 0;
    if (term && !strcmp(term, "dumb"))
        return 0;
    return isatty(fileno(f));
}

const char *colour_start(int expert)
{
    static char buf[COLOUR_PALETTE_COUNT][12][24];
    int n = colour_palette_size(), i = (expert < 0 ? 0 : expert) % n;
    char *b = buf[active][i];
    if (!b[0])
        snprintf(b, sizeof buf[0][0], "\033[38;5;%dm", colour_index(i));
    return b;
}

void colour_legend(FILE *f, int n_experts, const char *const *names)
{
    int n = colour_palette_size();
    fputs("experts:", f);
    for (int e = 0; e < n_experts; e++) {
        if (names && names[e])
            fprintf(f, " %s%d %s%s", colour_start(e), e, names[e], COLOUR_END);
        else
            fprintf(f, " %s%d%s", colour_start(e), e, COLOUR_END);
    }
    if (n_experts > n)
        fprintf(f, "  (%d colours: expert e shares the colour of e mod %d)", n, n);
    fputc('\n', f);
}
