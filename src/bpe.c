/* The BPE merge table and merge loop. The loop is the one Hugging Face's
 * tokenizers runs: a heap of candidate pairs ordered by (rank, position),
 * symbols in a linked list, stale heap entries dropped when popped, so a
 * word of n symbols costs O(n log n) however long it is. */
#include "bpe.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

int bpe_init(bpe *b, int n, size_t max_merges)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    b->off = calloc((size_t)n, sizeof *b->off);
    b->len = malloc((size_t)n * sizeof *b->len);
    b->vcap = pow2_at_least((size_t)n * 2);
    b->vtab = calloc(b->vcap, sizeof *b->vtab);
    b->mcap = pow2_at_least(max_merges * 2);
    b->mkey = calloc(b->mcap, sizeof *b->mkey);
    b->mrank = malloc(b->mcap * sizeof *b->mrank);
    b->mres = malloc(b->mcap * sizeof *b->mres);
    if (!b->off || !b->len || !b->vtab || !b->mkey || !b->mrank || !b->mres) {
        bpe_done(b);
        return -1;
    }
    for (int i = 0; i < n; i++)
        b->len[i] = -1;
    return 0;
}

void bpe_done(bpe *b)
{
    free(b->pool);
    free(b->off);
    free(b->len);
    free(b->vtab);
    free(b->mkey);
    free(b->mrank);
    free(b->mres);
    memset(b, 0, sizeof *b);
}

int bpe_find(const bpe *b, const char *s, size_t len)
{
    size_t mask = b->vcap - 1;
    for (size_t i = hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        uint32_t v = b->vtab[i];
        if (!v)
            return -1;
        int id = (int)v - 1;
        if ((size_t)b->len[id] == len && memcmp(b->pool + b->off[id], s, len) == 0)
            return id;
    }
}

int bpe_set(bpe *b, int id, const char *s, size_t len)
{
    if (b->pool_len + len > b->pool_cap) {
        size_t cap = b->pool_cap ? b->pool_cap : 1 << 20;
        while (cap < b->pool_len + len)
            cap *= 2;
        char *p = realloc(b->pool, cap);
        if (!p)
            return -1;
        b->pool = p;
        b->pool_cap = cap;
    }
    if (b->len[id] >= 0)
        return 0; /* an id given twice keeps its first piece */
    memcpy(b->pool + b->pool_len, s, len);
    b->off[id] = (uint32_t)b->pool_len;
    b->pool_len += len;
    if (bpe_find(b, s, len) >= 0) {
        b->len[id] = (int32_t)len; /* decodable, but encodes as the first id */
        return 0;
    }
    b->len[id] = (int32_t)len;
    size_t mask = b->vcap - 1;
    size_t i = hash_bytes(s, len) & mask;
    while (b->vtab[i])
        i = (i + 1) & mask;
    b->vtab[i] = (uint32_t)id + 1;
    return 0;
}

static size_t merge_slot(const bpe *b, uint64_t key)
{
    size_t mask = b->mcap - 1;
    size_t i = hash_u64(key) & mask;
    while (b->mkey[i] && b->mkey[i] != key)
        i = (i + 1) & mask;
    return i;
}

void bpe_add_merge(bpe *b, int a, int c, uint32_t rank, int res)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)c) + 1;
    if (b->mcount * 2 >= b->mcap)
        return; /* bpe_init sized the table for every merge; never full */
    size_t i = merge_slot(b, key);
    if (b->mkey[i])
        return;
    b->mkey[i] = key;
    b->mrank[i] = rank;
    b->mres[i] = res;
    b->mcount++;
}

/* The merge of (a, c): its rank, or UINT32_MAX when none. */
static uint32_t merge_find(const bpe *b, int a, int c, int *res)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)c) + 1;
    size_t i = merge_slot(b, key);
    if (!b->mkey[i])
        return UINT32_MAX;
    *res = b->mres[i];
    return b->mrank[i];
}

/* A candidate merge of the symbols at pos and right. Ranks name one pair
 * each, so a candidate whose rank still matches its two symbols is valid. */
typedef struct {
    uint32_t rank;
    int pos;   /* left symbol */
    int right; /* right symbol when pushed */
} cand;

static int cand_less(const cand *x, const cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(cand *h, int *n, cand c)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

/* Move h[i] down to its place among the n entries. */
static void heap_down(cand *h, int n, int i)
{
    cand last = h[i];
    for (;;) {
        int l = 2 * i + 1, m = i;
        const cand *best = &last;
        if (l < n && cand_less(&h[l], best))
            best = &h[l], m = l;
        if (l + 1 < n && cand_less(&h[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    h[i] = last;
}

static cand heap_pop(cand *h, int *n)
{
    cand top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, m = i;
        const cand *best = &last;
        if (l < *n && cand_less(&h[l], best))
            best = &h[l], m = l;
        if (l + 1 < *n && cand_less(&h[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

int bpe_merge(const bpe *b, int32_t *ids, int n)
{
    if (n < 2)
        return n;
    int *next = malloc((size_t)n * sizeof *next);
    int *prev = malloc((size_t)n * sizeof *prev);
    /* Every merge pushes at most two candidates, so 3n bounds the heap. */
    cand *heap = malloc((size_t)n * 3 * sizeof *heap);
    if (!next || !prev || !heap) {
        free(next);
        free(prev);
        free(heap);
        return -1;
    }
    int hn = 0;
    for (int i = 0; i < n; i++) {
        next[i] = i + 1 < n ? i + 1 : -1;
        prev[i] = i - 1;
    }
    for (int i = 0; i + 1 < n; i++) {
        int res;
        uint32_t r = merge_find(b, ids[i], ids[i + 1], &res);
        if (r != UINT32_MAX)
            heap[hn++] = (cand){r, i, i + 1};
    }
    for (int i = hn / 2 - 1; i >= 0; i--) /* heapify: O(n) for long words */
        heap_down(heap, hn, i);
    while (hn > 0) {
        cand c = heap_pop(heap, &hn);
        int res;
        /* Stale when either side merged since the candidate was pushed. */
        if (ids[c.pos] < 0 || next[c.pos] != c.right || merge_find(b, ids[c.pos], ids[c.right], &res) != c.rank)
            continue;
        ids[c.pos] = res;
        ids[c.right] = -1;
        int nx = next[c.right];
        next[c.pos] = nx;
        if (nx >= 0)
            prev[nx] = c.pos;
        int pv = prev[c.pos];
        uint32_t r;
        int m;
        if (pv >= 0 && (r = merge_find(b, ids[pv], res, &m)) != UINT32_MAX)
            heap_push(heap, &hn, (cand){r, pv, c.pos});
        if (nx >= 0 && (r = merge_find(b, res, ids[nx], &m)) != UINT32_MAX)
            heap_push(heap, &hn, (cand){r, c.pos, nx});
    }
    int k = 0;
    for (int i = 0; i >= 0; i = next[i])
        ids[k++] = ids[i];
    free(next);
    free(prev);
    free(heap);
    return k;
}
