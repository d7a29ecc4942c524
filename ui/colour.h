/* Colouring tokens by expert on a terminal: the palettes, the legend and
 * the rule for when colour is on (a tty, no NO_COLOR, not TERM=dumb, unless
 * forced). Experts past the palette reuse it, and the legend says so.
 * The CLI and the explorer (ui/tui/term.c) draw from the same tables. */
#ifndef MOE_COLOUR_H
#define MOE_COLOUR_H

#include <stdio.h>

typedef enum { COLOUR_AUTO, COLOUR_ALWAYS, COLOUR_NEVER } colour_when;

/* Whether to colour output going to f. */
int colour_enabled(colour_when when, FILE *f);
/* The escape sequence that starts expert e's colour; static storage. */
const char *colour_start(int expert);
#define COLOUR_END "\033[0m"
/* Print "experts: 0 1 2 ..." with each number in its colour, with names
 * where given (names may be NULL). */
void colour_legend(FILE *f, int n_experts, const char *const *names);

/* The palettes. Okabe-Ito (the default) starts with the eight colours of
 * Okabe and Ito's colour-blind-safe set; classic is a brighter rainbow. */
typedef enum { COLOUR_PALETTE_OKABE_ITO, COLOUR_PALETTE_CLASSIC, COLOUR_PALETTE_COUNT } colour_palette;
/* Choose the palette for everything drawn afterwards (not thread-safe:
 * call it before drawing starts). */
void colour_palette_set(colour_palette p);
colour_palette colour_palette_get(void);
/* "okabe-ito" or "classic"; NULL for an unknown value. */
const char *colour_palette_name(colour_palette p);
/* The palette called name, or -1. */
int colour_palette_find(const char *name);
/* Expert e's colour in the palette: an xterm-256 index, or with eight
 * colours an ANSI colour number (0-7). e past the palette wraps. */
int colour_index(int expert);
int colour_index8(int expert);
/* Colours in the palette (256-colour and 8-colour tables). */
int colour_palette_size(void);
int colour_palette_size8(void);

#endif
