/* Reading the texts that analyze and perplexity run through a model. */
#ifndef MOE_CORPUS_H
#define MOE_CORPUS_H

#include <stdint.h>

#include "moescope/moescope.h"

/* The tokens of the file at path: its text through tok (with BOS when
 * add_bos), or, with tok NULL, its token ids (whitespace or comma separated,
 * each below vocab). Returns 0 with *ids malloc'ed (the caller frees it),
 * or the exit status after printing what is wrong. */
int corpus_read(const char *path, const moe_tokenizer *tok, int add_bos, int vocab, int32_t **ids, int *n);
/* The same with every non-empty line a document of its own (tokenized
 * alone, BOS first when add_bos): all documents' tokens in *ids, document d
 * in [(*starts)[d], (*starts)[d + 1]) for d < *n_docs. Both malloc'ed. */
int corpus_read_lines(const char *path, const moe_tokenizer *tok, int add_bos, int vocab, int32_t **ids,
                      int **starts, int *n_docs);

#endif
