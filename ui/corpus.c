/* Reading the files that analyze and perplexity run through a model:
 * text through the model's tokenizer, or lists of token ids. */
#include "corpus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* The whole file, NUL-terminated, in *buf (the caller frees it), its
 * length in *len; or the exit status after printing what is wrong. */
static int read_all(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail_msg("%s: cannot open", path);
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size > (1L << 30)) {
        fclose(f);
        return fail_msg("%s: not a regular file of at most 1 GiB", path);
    }
    *buf = malloc((size_t)st.st_size + 1);
    *len = *buf ? fread(*buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!*buf)
        return fail_msg("out of memory reading %s", path);
    (*buf)[*len] = 0;
    return 0;
}

/* Token ids of a text file through the model's tokenizer. */
static int read_text(const moe_tokenizer *tok, const char *path, int add_bos, int32_t **out, int *n)
{
    char *buf;
    size_t got;
    int rc = read_all(path, &buf, &got);
    if (rc)
        return rc;
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

/* Token ids of one line of numbers (nul-terminated). */
static int line_ids(const char *path, int line, char *s, int vocab, int32_t *out, int *n)
{
    *n = 0;
    for (char *p = s;;) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (!*p)
            return 0;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= vocab)
            return fail_msg("%s: line %d: '%.20s' is not an id below the vocabulary size %d", path, line, p, vocab);
        out[(*n)++] = (int32_t)v;
        p = end;
    }
}

int corpus_read_lines(const char *path, const moe_tokenizer *tok, int add_bos, int vocab, int32_t **ids,
                      int **starts, int *n_docs)
{
    *ids = NULL, *starts = NULL, *n_docs = 0;
    char *buf;
    size_t got;
    int rc = read_all(path, &buf, &got);
    if (rc)
        return rc;
    size_t lines = 1;
    for (size_t i = 0; i < got; i++)
        lines += buf[i] == '\n';
    int32_t *all = NULL, *one = NULL;
    int *st0 = malloc((lines + 1) * sizeof *st0), n_all = 0, cap = 0, nd = 0, ln = 0;
    one = tok ? NULL : malloc((got / 2 + 1) * sizeof *one); /* ids are at least two bytes apart */
    if (!st0 || (!tok && !one))
        rc = fail_msg("out of memory reading %s", path);
    for (char *p = buf, *nl; !rc && p < buf + got; p = nl + 1) {
        ln++;
        nl = memchr(p, '\n', (size_t)(buf + got - p));
        if (!nl)
            nl = buf + got;
        *nl = 0;
        int32_t *t = NULL;
        int n = 0;
        if (tok) {
            size_t len = (size_t)(nl - p);
            while (len && (p[len - 1] == '\r' || p[len - 1] == ' '))
                len--;
            if (!len)
                continue;
            moe_error err = {0};
            if (moe_tokenizer_encode(tok, p, len, add_bos, &t, &n, &err)) {
                rc = fail_msg("%s: line %d: %s", path, ln, err.msg);
                break;
            }
        } else if ((rc = line_ids(path, ln, p, vocab, one, &n)) != 0) {
            break;
        }
        if (n && n_all + n > cap) {
            cap = (n_all + n) * 2;
            int32_t *g = realloc(all, (size_t)cap * sizeof *all);
            if (!g) {
                free(t);
                rc = fail_msg("out of memory reading %s", path);
                break;
            }
            all = g;
        }
        if (n) {
            memcpy(all + n_all, tok ? t : one, (size_t)n * sizeof *all);
            st0[nd++] = n_all;
            n_all += n;
        }
        free(t);
    }
    free(buf);
    free(one);
    if (rc) {
        free(all);
        free(st0);
        return rc;
    }
    st0[nd] = n_all;
    *ids = all, *starts = st0, *n_docs = nd;
    return 0;
}
