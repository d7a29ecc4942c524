/* gguf_vocab: the tokenizer and chat template a GGUF file carries in its
 * tokenizer.* metadata, as llama.cpp's converter writes them. The
 * tokenizer built here is the one tokenizer.c builds from tokenizer.json
 * (same struct, same encoder and decoders); only the loading differs. */
#ifndef MOE_GGUF_VOCAB_H
#define MOE_GGUF_VOCAB_H

#include "moescope/moescope.h"

/* 1 when path is a regular file that starts with the GGUF magic. */
int gguf_vocab_is_gguf(const char *path);

/* The tokenizer of the GGUF file at path, with moe_tokenizer_open's
 * contract. tokenizer.ggml.model "gpt2" (byte-level BPE, merges by rank,
 * the pre-tokenizer named by tokenizer.ggml.pre) and "llama" (SentencePiece
 * BPE, merges by score, byte fallback) are read; "no_vocab" and the others
 * are refused naming the file and the model. */
moe_status gguf_vocab_open(const char *path, moe_tokenizer **out, moe_error *err);

/* tokenizer.chat_template and the texts of the BOS/EOS tokens, with
 * moe_chat_template_load's contract (MOE_EFORMAT when there is no
 * template). */
moe_status gguf_vocab_chat_template(const char *path, char **template_src, char **bos, char **eos,
                                    moe_error *err);

/* 1 when the GGUF file at path carries a vocabulary (a tokenizer.ggml.model
 * other than "no_vocab"); 0 otherwise, also when it cannot be read. */
int gguf_vocab_present(const char *path);

#endif
