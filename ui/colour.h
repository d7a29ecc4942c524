/* Colouring tokens by expert on a terminal: the palette, the legend and
 * the rule for when colour is on (a tty, no NO_COLOR, not TERM=dumb, unless
 * forced). Experts past the palette reuse it, and the legend says so. */
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

#endif
