/* moescope tokenize: the tokenizer on the command line, for tests and
 * scripts. One input line in, one output line out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "cli.h"
#include "moescope/moescope.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moescope tokenize MODEL_OR_DIR [--bos] [--decode]\n\n"
               "Reads lines from stdin. For each line (without its newline) prints the\n"
               "token ids, space-separated, on one line.\n"
               "  --bos      add the tokens the model adds around a text (BOS)\n"
               "  --decode   read ids (space-separated) per line and print the text\n"
               "MODEL_OR_DIR is a directory holding tokenizer.json, a tokenizer.json file,\n"
               "a GGUF file (its tokenizer.ggml.* vocabulary), or a Hugging Face id\n"
               "(org/name) in the local cache.\n");
}

static int decode_line(const moe_tokenizer *t, char *line)
{
    int32_t *ids = NULL;
    int n = 0, cap = 0;
    char *p = line, *end;
    moe_error err;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX) {
            free(ids);
            return fail_msg("--decode: \"%.40s\" is not a token id", p);
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            int32_t *q = realloc(ids, (size_t)cap * sizeof *q);
            if (!q) {
                free(ids);
                return fail_msg("out of memory");
            }
            ids = q;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    char *text;
    size_t len;
    if (moe_tokenizer_decode(t, ids, n, 0, &text, &len, &err)) {
        free(ids);
        return fail_msg("%s", err.msg);
    }
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    free(ids);
    return 0;
}

static int encode_line(const moe_tokenizer *t, const char *line, size_t len, int bos)
{
    int32_t *ids;
    int n;
    moe_error err;
    if (moe_tokenizer_encode(t, line, len, bos, &ids, &n, &err))
        return fail_msg("%s", err.msg);
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL;
    int bos = 0, decode = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--bos") == 0) {
            bos = 1;
        } else if (strcmp(argv[i], "--decode") == 0) {
            decode = 1;
        } else if (argv[i][0] == '-' || model) {
            fprintf(stderr, "moescope tokenize: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            model = argv[i];
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    char dir[4096];
    moe_error err;
    struct stat sb;
    /* a path that does not exist may be a Hugging Face id */
    if (stat(model, &sb) != 0 && strchr(model, '/') && moe_hf_resolve(model, dir, sizeof dir, &err) == MOE_OK)
        model = dir;
    moe_tokenizer *t;
    if (moe_tokenizer_open(model, &t, &err))
        return fail_msg("%s", err.msg);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = 0;
    while (!rc && (got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n')
            line[--len] = 0;
        rc = decode ? decode_line(t, line) : encode_line(t, line, len, bos);
    }
    free(line);
    moe_tokenizer_free(t);
    if (fflush(stdout) != 0)
        return fail_msg("writing the output failed");
    return rc;
}
