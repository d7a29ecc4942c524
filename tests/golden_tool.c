/* Prints parts of a golden file for the shell tests:
 *   golden_tool FILE CASE prompt|greedy|k|count|logits
 * ids come out comma-separated (prompt) or space-separated (greedy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"

int main(int argc, char **argv)
{
    golden g;
    if (argc != 4 || golden_load(argv[1], &g))
        return 2;
    int i = atoi(argv[2]), rc = 0;
    if (!strcmp(argv[3], "count")) {
        printf("%d\n", g.n_cases);
    } else if (i < 0 || i >= g.n_cases) {
        rc = 2;
    } else if (!strcmp(argv[3], "prompt")) {
        for (int j = 0; j < g.cases[i].n_prompt; j++)
            printf(j ? ",%d" : "%d", g.cases[i].prompt[j]);
        printf("\n");
    } else if (!strcmp(argv[3], "greedy")) {
        for (int j = 0; j < g.cases[i].n_greedy; j++)
            printf(j ? " %d" : "%d", g.cases[i].greedy[j]);
        printf("\n");
    } else if (!strcmp(argv[3], "logits")) {
        for (int j = 0; j < g.cases[i].n_logits; j++)
            printf(j ? " %.9g" : "%.9g", (double)g.cases[i].logits[j]);
        printf("\n");
    } else if (!strcmp(argv[3], "k")) {
        printf("%d\n", g.cases[i].k);
    } else {
        rc = 2;
    }
    golden_free(&g);
    return rc;
}
