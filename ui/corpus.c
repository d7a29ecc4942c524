/* Reading the files that analyze and perplexity run through a model:
 * text through the model's tokenizer, or lists of token ids. */
#include "corpus.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "args.h"

/* Token ids from a file of numbers. */
static int read_ids(const char *path, int vocab, int32_t **out, int *n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fail_msg("%s: cannot open", path);
    int cap = 1024;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    *n = 0;
    long v;
    int c;
    while (ids) {
        while ((c = fgetc(f)) == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r')
            ;
        if (c == EOF)
            break;
        ungetc(c, f);
        if (fscanf(f, "%ld", &v) != 1 || v < 0 || v >= vocab) {
            fclose(f);
            free(ids);
            return fail_msg("%s: token %d is not an id below the vocabulary size %d", path, *n + 1, vocab);
        }
        if (*n == cap) {
            int32_t *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g)
                free(ids);
            ids = g;
        }
        if (ids)
            ids[(*n)++] = (int32_t)v;
    }
    fclose(f);
    if (!ids)
        return fail_msg("out of memory reading %s", path);
    *out = ids;
    return 0;
}

/* Token ids of a text file through the model's tokenizer. */
static int read_text(const moe_tokenizer *tok, const char *path, int add_bos, int32_t **out, int *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail_msg("%s: cannot open", path);
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size > (1L << 30)) {
        fclose(f);
        return fail_msg("%s: not a regular file of at most 1 GiB", path);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!buf)
        return fail_msg("out of memory reading %s", path);
    moe_error err = {0};
    moe_status s = moe_tokenizer_encode(tok, buf, got, add_bos, out, n, &err);
    free(buf);
    return s ? fail_msg("%s: %s", path, err.msg) : 0;
}

int corpus_read(const char *path, const moe_tokenizer *tok, int add_bos, int vocab, int32_t **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    return tok ? read_text(tok, path, add_bos, ids, n) : read_ids(path, vocab, ids, n);
}
