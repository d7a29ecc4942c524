/* moescope: the entry point. A table of subcommands; each lives in its own
 * cli_*.c file and uses only the engine's public API. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tui/explore.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"run", cmd_run, "generate from a prompt and stream the tokens"},
    {"inspect", cmd_inspect, "show a model's architecture, sizes and memory"},
    {"bench", cmd_bench, "measure prompt processing and generation speed"},
    {"perplexity", cmd_perplexity, "how well the model predicts texts: nll per token and perplexity"},
    {"analyze", cmd_analyze, "routing statistics over texts: shares, runs, load balance"},
    {"tokenize", cmd_tokenize, "text to token ids (or ids to text) on stdin, line by line"},
    {"export", cmd_export, "a saved transcript as an HTML page, CSV or coloured text"},
    {"replay", cmd_replay, "run a saved transcript again and report where it diverges"},
    {"view", cmd_view, "open a saved transcript in the explorer, without the model"},
    {"explore", cmd_explore, "the full-screen explorer (also: moescope [MODEL])"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: moescope [MODEL]            the explorer (default: the bundled model)\n"
               "       moescope COMMAND [MODEL] [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-8s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nMODEL is a directory with config.json and *.safetensors, or a Hugging Face\n"
               "id (org/name) in the local cache. `moescope COMMAND --help` for options.\n");
}

int main(int argc, char **argv)
{
    blas_env_select(argv);
    if (argc < 2)
        return cmd_explore(argc, argv);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("moescope %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0)
            return COMMANDS[i].run(argc - 1, argv + 1);
    /* not a command: explorer options, or a model path or Hugging Face id (org/name) */
    if (argv[1][0] == '-' || strchr(argv[1], '/') || access(argv[1], F_OK) == 0)
        return cmd_explore(argc, argv);
    fprintf(stderr, "moescope: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
