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

#endif
