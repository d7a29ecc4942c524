/* The expert palette (see colour.h). The first eight are the
 * colour-blind-safe Okabe-Ito colours as 256-colour approximations. */
#include "colour.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int PALETTE[] = {214, 75, 36, 227, 32, 166, 175, 250, 203, 114, 141, 180};
#define N_PALETTE (int)(sizeof PALETTE / sizeof PALETTE[0])

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
    static char buf[N_PALETTE][24];
    int i = (expert < 0 ? 0 : expert) % N_PALETTE;
    if (!buf[i][0])
        snprintf(buf[i], sizeof buf[i], "\033[38;5;%dm", PALETTE[i]);
    return buf[i];
}

void colour_legend(FILE *f, int n_experts, const char *const *names)
{
    fputs("experts:", f);
    for (int e = 0; e < n_experts; e++) {
        if (names && names[e])
            fprintf(f, " %s%d %s%s", colour_start(e), e, names[e], COLOUR_END);
        else
            fprintf(f, " %s%d%s", colour_start(e), e, COLOUR_END);
    }
    if (n_experts > N_PALETTE)
        fprintf(f, "  (%d colours: expert e shares the colour of e mod %d)", N_PALETTE, N_PALETTE);
    fputc('\n', f);
}
