/* bpe: a BPE vocabulary (piece <-> id), its merge table, and the merge
 * loop that turns the symbols of one pre-tokenized word into token ids.
 * Used by the tokenizer; knows nothing about JSON or Unicode. */
#ifndef MOE_BPE_H
#define MOE_BPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n;            /* ids 0..n-1 */
    char *pool;       /* piece bytes, back to back */
    size_t pool_len, pool_cap;
    uint32_t *off;    /* (n) offset of each piece in pool */
    int32_t *len;     /* (n) piece length; -1: the id has no piece */
    uint32_t *vtab;   /* piece -> id+1, open addressing; 0 is empty */
    size_t vcap;
    uint64_t *mkey;   /* (a << 32 | b) + 1 -> merge; 0 is empty */
    uint32_t *mrank;  /* rank of the merge: lower merges first */
    int32_t *mres;    /* the id a+b becomes */
    size_t mcap, mcount;
} bpe;

/* Allocate for ids 0..n-1 and up to max_merges merges. 0 or -1 (ENOMEM). */
int bpe_init(bpe *b, int n, size_t max_merges);
void bpe_done(bpe *b);
/* Set the piece of id. 0, -1 on ENOMEM. A later duplicate piece does not
 * replace the id found for it. */
int bpe_set(bpe *b, int id, const char *s, size_t len);
/* The id of piece s, or -1. */
int bpe_find(const bpe *b, const char *s, size_t len);
/* Record that a followed by b merges into res with the given rank; the
 * first rank recorded for a pair wins. */
void bpe_add_merge(bpe *b, int a, int c, uint32_t rank, int res);
/* Merge the n symbol ids in ids (in place) by rank, leftmost first among
 * equal ranks. Returns the new count. Scratch comes from the heap;
 * returns -1 when an allocation fails. */
int bpe_merge(const bpe *b, int32_t *ids, int n);

#endif
