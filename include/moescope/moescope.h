/* moescope — public API of the Mixture-of-Experts inference engine.
 *
 * The engine loads a checkpoint, runs the forward pass and records every
 * routing decision. It never prints, never exits and never touches the
 * terminal: errors come back as status codes plus a caller-owned moe_error.
 * Front ends (ui/) and tests include only the headers in include/moescope/. */
#ifndef MOESCOPE_H
#define MOESCOPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ----------------------------------------------------------- */

typedef enum {
    MOE_OK = 0,
    MOE_EIO,          /* a file could not be opened, read or mapped */
    MOE_EFORMAT,      /* a file is malformed or inconsistent */
    MOE_EUNSUPPORTED, /* well-formed, but not something moescope runs */
    MOE_ENOMEM,       /* an allocation failed or a size overflowed */
    MOE_EINVAL        /* an argument or setting is out of range */
} moe_status;

/* Caller-owned error message. Every function that takes a `moe_error *`
 * accepts NULL; on failure it writes one line a user can act on (which
 * file, which tensor, what was expected and what was found). */
typedef struct {
    moe_status code;
    char msg[768];
} moe_error;

/* Short name of a status code ("format error", ...). Static storage. */
const char *moe_status_str(moe_status s);

/* ---- model ------------------------------------------------------------ */

typedef struct moe_model moe_model;

/* Weight types. The Q types are ggml's block quantisations (GGUF files
 * only): Q8_0 and Q4_0 blocks of 32 weights with an f16 scale; Q4_K, Q5_K
 * and Q6_K super-blocks of 256 with 6- or 8-bit sub-block scales. */
typedef enum {
    MOE_F32 = 0, MOE_F16, MOE_BF16, MOE_Q8_0, MOE_Q4_0, MOE_Q4_K, MOE_Q5_K, MOE_Q6_K, MOE_DTYPE_COUNT
} moe_dtype;

/* What a model is, as read from its files. Strings live as long as the model. */
typedef struct {
    const char *arch;          /* adapter name: "llama", "mixtral", "olmoe", "qwen2moe", "qwen3moe" */
    const char *hf_class;      /* e.g. "MixtralForCausalLM" */
    const char *path;          /* the directory the weights came from */
    int n_layers;
    int dim;                   /* hidden size */
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ff;                    /* expert (or dense MLP) intermediate size */
    int dense_ff;              /* width of the dense MLPs (dense layers) */
    int shared_ff;             /* width of the shared expert; 0: none */
    int n_shared_experts;      /* 0 or 1 */
    int n_experts;             /* 0 for a dense model */
    int k;                     /* experts per token as configured */
    int renormalize;           /* the chosen experts' weights are rescaled to sum to 1 */
    int n_moe_layers;          /* layers with a router; the others are dense */
    const char *const *expert_names; /* (n_experts) names (MiCRo: logic, social, world,
                                      * language), or NULL: experts are numbers */
    int vocab;
    int max_pos;               /* max_position_embeddings */
    int tied_embeddings;
    int bos_id, eos_id;        /* -1 when the config does not say */
    float rope_theta;
    float norm_eps;
    moe_dtype dtype;           /* the type of most weight bytes */
    uint64_t bytes_by_type[MOE_DTYPE_COUNT]; /* weight bytes of each type (a GGUF mix) */
    uint64_t params_total;
    uint64_t params_active;    /* read per token with the configured k */
    uint64_t weight_bytes;     /* bytes of all tensors the model uses */
    uint64_t active_bytes;     /* weight bytes read per generated token */
    uint64_t kv_bytes_per_token; /* KV cache bytes per position (f32; MiCRo: every block's) */
} moe_model_info;

/* Open a model: a directory holding config.json and *.safetensors (one file
 * or shards listed in model.safetensors.index.json), or a Hugging Face id
 * ("org/name") found in the local cache. Weights are mmap'ed, not copied.
 * Returns MOE_OK and sets *out, or an error code with `err` filled and
 * *out set to NULL. Free with moe_model_close. */
moe_status moe_model_open(const char *path_or_id, moe_model **out, moe_error *err);
void moe_model_close(moe_model *m);
const moe_model_info *moe_model_info_get(const moe_model *m);
const char *moe_dtype_name(moe_dtype t);

/* Resolve a Hugging Face model id in the local cache ($HF_HUB_CACHE,
 * $HF_HOME/hub, ~/.cache/huggingface/hub). Writes the snapshot directory
 * into buf. The snapshot named by refs/main wins; otherwise the newest. */
moe_status moe_hf_resolve(const char *id, char *buf, size_t buflen, moe_error *err);

/* Architectures the engine can run, as a ", "-separated list. Static. */
const char *moe_supported_archs(void);

/* ---- routing record --------------------------------------------------- */

/* One MoE layer's decision for one token. Pointers are valid only during
 * the callback that delivers them; copy what you keep. */
typedef struct {
    int layer;                 /* index in the model's layer stack */
    int n_experts;
    const float *probs;        /* (n_experts) gate probabilities */
    int k;                     /* experts chosen */
    const int *experts;        /* (k) chosen experts, best first */
    const float *weights;      /* (k) mixing weights (0 for a dropped assignment) */
    const uint8_t *overflow;   /* (k) 1: past the expert's capacity in this batch
                                * (see moe_session_set_capacity); NULL when off */
} moe_route;

typedef struct {
    int pos;                   /* position in the sequence */
    int32_t id;                /* token id at that position */
    int n_routes;              /* number of MoE layers */
    const moe_route *routes;   /* (n_routes), in layer order */
} moe_token_trace;

/* Receives routing as tokens pass through the model. Called on the thread
 * that called moe_session_eval, once per token in order, after the forward
 * pass of the batch. Data is valid until the callback returns. */
typedef struct {
    void *ctx;
    void (*on_token)(void *ctx, const moe_token_trace *t);
} moe_trace_sink;

/* ---- session ----------------------------------------------------------
 * A session is not thread-safe: calls on one session must not overlap
 * (a front end that generates on a worker thread applies controls between
 * tokens, on that thread or under a lock). */

typedef struct moe_session moe_session;

typedef struct {
    int n_ctx;                 /* KV cache length; 0: min(max_pos, 4096) */
    int n_threads;             /* 0: all online cores */
    int n_batch;               /* tokens per prefill chunk; 0: 512 */
} moe_session_params;

/* Create a session on an open model (the model must outlive it). All
 * buffers are allocated here; evaluation allocates nothing. */
moe_status moe_session_new(moe_model *m, const moe_session_params *p,
                           moe_session **out, moe_error *err);
void moe_session_free(moe_session *s);

/* Run `n` tokens at the current position (a prompt is one call; decoding is
 * one token per call). Afterwards moe_session_logits gives the logits of
 * the last token. Fails with MOE_EINVAL if a token id is out of range or the
 * context is full; the session is then unchanged. */
moe_status moe_session_eval(moe_session *s, const int32_t *ids, int n, moe_error *err);
/* The same, keeping the logits of every one of the n tokens: row i of
 * `logits` (n rows of vocab floats, the caller's) gets token i's. For
 * perplexity and scoring; the vocabulary projection then costs n times
 * as much. moe_session_logits still gives the last row. */
moe_status moe_session_eval_all(moe_session *s, const int32_t *ids, int n, float *logits, moe_error *err);
const float *moe_session_logits(const moe_session *s); /* (vocab) */
int moe_session_pos(const moe_session *s);
int moe_session_n_ctx(const moe_session *s);
int moe_session_n_threads(const moe_session *s);
/* Forget every position (the KV cache is reused). */
void moe_session_reset(moe_session *s);
/* Forget the positions from `pos` on, keeping the cache before it (to
 * re-evaluate a conversation whose end changed). MOE_EINVAL if pos is
 * negative or past the current position. */
moe_status moe_session_truncate(moe_session *s, int pos, moe_error *err);
void moe_session_set_trace(moe_session *s, const moe_trace_sink *sink);
/* Store keys and values as t: MOE_F32 (the default), MOE_F16, which
 * halves the cache's memory and the attention's reads at long context and
 * rounds every key and value to f16 (logits then differ from an f32 cache
 * by about f16's relative precision, 2^-11, times the attention's
 * sensitivity), or MOE_Q8_0, llama.cpp's q8_0 cache type: each head's
 * keys and values in blocks of 32 with one f16 scale d = max|x|/127 and
 * 8-bit integers, 34 bytes per 32 values (17/64 of f32), each value
 * within d/2 (head_dim a multiple of 32). Only before the first token
 * (position 0): the cache is reallocated. MOE_EINVAL for another type, a
 * head dimension q8_0 cannot block, or a session holding tokens,
 * MOE_ENOMEM when out of memory; on failure the session is unchanged. */
moe_status moe_session_set_kv_type(moe_session *s, moe_dtype t, moe_error *err);
moe_dtype moe_session_kv_type(const moe_session *s);
/* How activations meet block-quantised weights of types Q4_K, Q5_K and
 * Q6_K (other types always meet f32 activations). MOE_Q8_0: each
 * activation vector is quantised to 8 bits, in blocks of 256 with one
 * scale d = max|x|/127, and multiplied in integers, as llama.cpp does:
 * faster, and each product then differs from the dequantised weights'
 * by at most Σ|w|·d/2, the activations' rounding. MOE_F32: the
 * dequantised weights times f32 activations, exactly the function of the
 * dequantised weights. The default is MOE_Q8_0 where the integer kernels
 * have SIMD code for this CPU (AVX2 or AVX-512), MOE_F32 elsewhere. May change
 * between any two calls. MOE_EINVAL for another type. */
moe_status moe_session_set_act_type(moe_session *s, moe_dtype t, moe_error *err);
moe_dtype moe_session_act_type(const moe_session *s);
/* Bytes of the session's KV cache: n_ctx positions of every layer's (or
 * MiCRo block's) keys and values at its type. */
size_t moe_session_kv_bytes(const moe_session *s);
/* Weight bytes the session's forward passes have multiplied since it was
 * created: each weight matrix once per product (only the experts that
 * ran), plus the embedding rows of the tokens. A difference over a decoded
 * token is the weight bytes that token read from memory. */
uint64_t moe_session_weight_bytes(const moe_session *s);

/* Experts per token: layer -1 sets every MoE layer. 1 <= k <= n_experts.
 * Takes effect at the next evaluated token. */
moe_status moe_session_set_k(moe_session *s, int layer, int k, moe_error *err);
int moe_session_get_k(const moe_session *s, int layer);

/* ---- controls (interventions) -------------------------------------------
 * Every control takes effect at the next evaluated token, acts in the
 * router or the MLP of the layers it names, and is logged with the position
 * at which it happened. `layer` -1 means every MoE layer. A rejected
 * change leaves the controls as they were. */

/* Switch an expert off (its router logit becomes -inf before the softmax,
 * so it is never chosen and the others share the weight by the model's
 * rule) or back on. k is clamped to the experts still on. Switching off the
 * last expert of a layer is refused. */
moe_status moe_session_set_expert(moe_session *s, int layer, int expert, int on, moe_error *err);
int moe_session_expert_on(const moe_session *s, int layer, int expert);

/* Send every token to exactly these experts (n of them, in any order), with
 * weights from their probabilities under the model's rule; n = 0 lifts it. */
moe_status moe_session_force(moe_session *s, int layer, const int *experts, int n, moe_error *err);

/* The experts forced in `layer` (0 to n_layers-1): writes up to cap of
 * them, in index order, and returns how many are forced (0: routing is
 * free). */
int moe_session_forced(const moe_session *s, int layer, int *experts, int cap);
/* The router bias on one expert of one layer (0 when none). */
float moe_session_bias(const moe_session *s, int layer, int expert);

/* Add delta to one expert's router logit (before masks and the softmax);
 * it replaces the expert's previous bias. */
moe_status moe_session_set_bias(moe_session *s, int layer, int expert, float delta, moe_error *err);

typedef enum {
    MOE_OFFSET_MLP = 0,        /* hidden activation of a dense MLP or a routed expert */
    MOE_OFFSET_SHARED,         /* hidden activation of the shared expert */
    MOE_OFFSET_RESID           /* the residual stream after the layer */
} moe_offset_kind;

/* A neuron offset (steering): delta is added to neuron `neuron` of the
 * target at every position. For MOE_OFFSET_MLP the neuron is in the MLP's
 * hidden activation (after the activation function, before the down
 * projection) of expert `expert` (0 for a dense MLP); for MOE_OFFSET_RESID
 * it is a dimension of the hidden state after layer `layer`. */
typedef struct {
    int layer;                 /* a single layer: 0 to n_layers-1 */
    moe_offset_kind kind;
    int expert;                /* MOE_OFFSET_MLP only; -1 or 0 for a dense MLP */
    int neuron;
    float delta;
} moe_offset;

/* Set the offset for its target (layer, kind, expert, neuron), replacing
 * an earlier delta; delta 0 removes it. */
moe_status moe_session_set_offset(moe_session *s, const moe_offset *o, moe_error *err);
/* The offsets in force; valid until the next control change. */
const moe_offset *moe_session_offsets(const moe_session *s, int *n);

/* Expert capacity (Switch Transformer, GShard): within each evaluated
 * batch of T tokens an expert takes at most ceil(factor * T * k / n_experts)
 * assignments, in token order; later ones overflow and are marked in the
 * trace. With drop, an overflowing assignment is skipped (weight 0: the
 * token passes that expert by the residual), as in training; without it,
 * output is unchanged. A single decoded token never overflows. factor 0
 * turns capacity off. */
moe_status moe_session_set_capacity(moe_session *s, double factor, int drop, moe_error *err);

/* Run the conversation so far again under the current controls, so that
 * the KV cache and the trace reflect them (the default is that a change
 * applies from the next token). The trace sink sees every token again. */
moe_status moe_session_reprefill(moe_session *s, moe_error *err);

/* The MLP hidden activation (after the activation function and the
 * offsets in force, before the down projection) of the most recently
 * evaluated token in layer `layer`: of routed expert `expert` (computed
 * even if the router did not choose it), of the dense MLP (expert 0), or of
 * the shared expert (kind MOE_OFFSET_SHARED); with MOE_OFFSET_RESID the
 * hidden state after the layer. Writes up to cap values to out and returns
 * the width (out may be NULL with cap 0, to ask the width or whether the
 * block ran), or -1 with err filled. For picking neurons to steer. */
int moe_session_activations(moe_session *s, int layer, moe_offset_kind kind, int expert, float *out, int cap,
                            moe_error *err);
/* The same for the token at position `pos` (0 to moe_session_pos - 1):
 * that token is evaluated again over the cache before it, under the
 * controls in force now, and the session is left exactly as it was (cache,
 * logits, latest activations; no trace is delivered). Costs one token's
 * forward pass when pos is not the latest. */
int moe_session_activations_at(moe_session *s, int pos, int layer, moe_offset_kind kind, int expert, float *out,
                               int cap, moe_error *err);

/* Lift every control: all experts on, no force, bias, offset or capacity,
 * k as the model says. */
void moe_session_reset_controls(moe_session *s);

typedef enum {
    MOE_CTL_K, MOE_CTL_EXPERT, MOE_CTL_FORCE, MOE_CTL_BIAS, MOE_CTL_OFFSET, MOE_CTL_CAPACITY,
    MOE_CTL_RESET, MOE_CTL_REPREFILL
} moe_control_kind;

/* One logged change. `text` says it in the command vocabulary of the
 * front ends, verb and argument ("k 2", "off L1:5", "force 4",
 * "bias L0:3=-2", "capacity 1.5,drop"), or "reset" / "reprefill". */
typedef struct {
    int pos;                   /* the first position it applies to */
    moe_control_kind kind;
    int layer, expert;
    float value;               /* k, on (1) / off (0), bias or delta */
    char text[96];
} moe_control_event;

/* Every change so far, oldest first; valid until the next change. */
const moe_control_event *moe_session_control_log(const moe_session *s, int *n);

/* ---- routing statistics ------------------------------------------------
 * Figures over many tokens' routing, as the MoE papers report them. Feed
 * it the same moe_token_trace records a trace sink receives. */

typedef struct moe_stats moe_stats;

/* n_routes MoE layers of n_experts each, k experts per token (for the
 * chance baselines). Capacity: every `batch` consecutive tokens form a
 * batch (a sequence break or the end closes a shorter one) of T tokens in
 * which each expert of a layer takes at most
 * ceil(capacity_factor * T * k / n_experts) assignments (GShard's rule;
 * Switch routing is k = 1); the rest overflow and would be dropped. */
moe_status moe_stats_new(int n_routes, int n_experts, int k, double capacity_factor, int batch,
                         moe_stats **out, moe_error *err);
void moe_stats_free(moe_stats *st);
/* Add one token; t->n_routes must equal n_routes. */
void moe_stats_add(moe_stats *st, const moe_token_trace *t);
/* A sequence boundary: consecutive-token pairs and batches do not cross it. */
void moe_stats_break(moe_stats *st);

typedef struct {
    uint64_t n_tokens;
    const double *share_top1;  /* (n_experts) share of tokens whose first choice is e (sums to 1) */
    const double *share_any;   /* (n_experts) share of tokens routed to e at all (sums to k) */
    double same_top1;          /* consecutive tokens with the same first choice */
    double same_any;           /* consecutive tokens sharing at least one expert */
    double chance_top1;        /* the same, for uniformly random routing: 1/E */
    double chance_any;         /* 1 - C(E-k, k) / C(E, k) */
    double cv_importance;      /* coefficient of variation of summed gate weights */
    double cv_load;            /* ... of the number of assignments */
    double overflow;           /* share of assignments past the capacity */
} moe_stats_layer;

/* Figures of MoE layer `route` (0 <= route < n_routes), or of all layers
 * pooled with route = -1. Pointers are valid until the next add. */
void moe_stats_get(moe_stats *st, int route, moe_stats_layer *out);

/* ---- sampler ---------------------------------------------------------- */

typedef struct {
    float temp;                /* <= 0: greedy */
    int top_k;                 /* <= 0: off */
    float top_p;               /* >= 1: off */
    float min_p;               /* <= 0: off */
    float repeat_penalty;      /* 1: off */
    int repeat_last_n;         /* tokens of history the penalty looks at */
    uint64_t seed;
} moe_sampler_params;

typedef struct moe_sampler moe_sampler;

/* Defaults as llama.cpp: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0, repeat_last_n 64, seed 0. */
moe_sampler_params moe_sampler_defaults(void);
moe_status moe_sampler_new(const moe_sampler_params *p, int n_vocab,
                           moe_sampler **out, moe_error *err);
void moe_sampler_free(moe_sampler *s);
/* Remember an accepted token (for the repetition penalty). */
void moe_sampler_accept(moe_sampler *s, int32_t id);
/* Choose the next token from `logits` (n_vocab). Does not modify logits. */
int32_t moe_sampler_sample(moe_sampler *s, const float *logits);

/* ---- tokenizer -------------------------------------------------------- */

/* A Hugging Face tokenizer.json: byte-level BPE (GPT-2, Llama 3, Qwen) and
 * SentencePiece-style BPE with byte fallback (Llama 2, Mistral), with the
 * added tokens, normalizers, pre-tokenizers, post-processor and decoders
 * the file names. Immutable once opened: one tokenizer may be used from
 * several threads at once. */
typedef struct moe_tokenizer moe_tokenizer;

/* Open `path`: a directory holding tokenizer.json (and optionally
 * tokenizer_config.json, read for bos/eos and add_bos_token), the
 * tokenizer.json file itself (its sibling tokenizer_config.json is read if
 * present), or a GGUF file, whose tokenizer.ggml.* metadata (llama.cpp's
 * "gpt2" byte-level BPE with the pre-tokenizer tokenizer.ggml.pre names,
 * or "llama" SentencePiece) gives the ids the model's tokenizer.json
 * would. A GGUF file without a vocabulary (tokenizer.ggml.model
 * "no_vocab") is MOE_EUNSUPPORTED. Returns MOE_OK and sets *out, or an
 * error code with `err` filled (naming the file and the key or piece at
 * fault) and *out NULL. Free with moe_tokenizer_free. */
moe_status moe_tokenizer_open(const char *path, moe_tokenizer **out, moe_error *err);
/* 1 when `path` holds a tokenizer moe_tokenizer_open would try: a
 * directory with tokenizer.json, a tokenizer.json file, or a GGUF file
 * whose tokenizer.ggml.model is not "no_vocab". 0 otherwise, also when
 * the path cannot be read. Opens nothing else. */
int moe_tokenizer_present(const char *path);
void moe_tokenizer_free(moe_tokenizer *t);

/* Encode `len` bytes of `text` (any bytes; invalid UTF-8 is kept byte for
 * byte). Added tokens typed in the text are recognised as the reference
 * does. With add_special, the post-processor's tokens (BOS) are added as
 * the model expects. On success *ids is a malloc'ed array of *n ids that the
 * caller frees with free(); on error *ids is NULL and *n is 0. */
moe_status moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len,
                                int add_special, int32_t **ids, int *n, moe_error *err);

/* Decode n ids into text through the tokenizer's decoders. On success *text
 * is a malloc'ed, NUL-terminated string of *len bytes (the caller frees it);
 * special tokens appear as their text unless skip_special. */
moe_status moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n, int skip_special,
                                char **text, size_t *len, moe_error *err);

/* One past the largest id: the size of the id space, added tokens included. */
int moe_tokenizer_vocab_size(const moe_tokenizer *t);
/* The bytes a single token stands for when it follows other text (byte-level
 * tokens as raw bytes, "\xe2\x96\x81" of SentencePiece as a space, <0xNN> as
 * the byte). Sets *len; NULL for an id out of range or unused. Valid as long
 * as the tokenizer. */
const char *moe_tokenizer_piece(const moe_tokenizer *t, int32_t id, size_t *len);
/* 1 when id is an added token marked special (BOS, EOS, <|im_end|>). */
int moe_tokenizer_is_special(const moe_tokenizer *t, int32_t id);
/* BOS/EOS from tokenizer_config.json (a GGUF file's
 * tokenizer.ggml.bos_token_id/eos_token_id); -1 when there is none. */
int32_t moe_tokenizer_bos(const moe_tokenizer *t);
int32_t moe_tokenizer_eos(const moe_tokenizer *t);
/* 1 when generating `id` ends the text (llama.cpp's end-of-generation, EOG).
 * From tokenizer.json: the EOS alone. From a GGUF file, as llama.cpp's
 * llama_vocab: the eos, eot, eom and fim_pad/fim_rep/fim_sep token ids of
 * tokenizer.ggml.*, and the tokens whose text is <|eot_id|>, <|eom_id|>,
 * <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, <|end_of_text|>, <EOT>,
 * ... (llama.cpp's list; without an eot or fim key, its candidates for
 * them too). 0 for any other id, out of range included. */
int moe_tokenizer_is_eog(const moe_tokenizer *t, int32_t id);
/* The end-of-generation ids, ascending: sets *ids (valid as long as the
 * tokenizer; NULL when there are none) and returns how many. */
int moe_tokenizer_eog(const moe_tokenizer *t, const int32_t **ids);

/* Streaming detokenizer for generation: ids go in one at a time, text
 * comes out as soon as it is whole. It never emits part of a UTF-8
 * character (bytes of <0xNN> or byte-level tokens wait for the rest), and
 * the concatenated output equals moe_tokenizer_decode of all the ids. */
typedef struct moe_detokenizer moe_detokenizer;

/* The tokenizer must outlive the detokenizer. NULL when out of memory. */
moe_detokenizer *moe_detokenizer_new(const moe_tokenizer *t, int skip_special);
void moe_detokenizer_free(moe_detokenizer *d);
/* Feed one id. Sets *text and *len to the bytes now ready (possibly none);
 * they stay valid until the next call on d. MOE_EINVAL for an id out of
 * range, MOE_ENOMEM when out of memory. */
moe_status moe_detokenizer_push(moe_detokenizer *d, int32_t id, const char **text, size_t *len, moe_error *err);
/* At the end of a stream: the bytes held back (an incomplete character),
 * valid until the next call on d; the detokenizer starts a new stream. */
const char *moe_detokenizer_flush(moe_detokenizer *d, size_t *len);

/* ---- chat templates ---------------------------------------------------
 * A model's chat_template (Jinja2, from tokenizer_config.json) rendered as
 * transformers' apply_chat_template renders it: trim_blocks and
 * lstrip_blocks on, raise_exception() and strftime_now() available. The
 * subset of Jinja covers the templates of the supported families; a
 * construct outside it fails with MOE_EUNSUPPORTED naming it and its line.
 * Rendering is bounded (output size, steps, nesting), so a hostile template
 * fails with MOE_EINVAL instead of running away. */

typedef struct {
    const char *role;          /* "system", "user", "assistant", ... */
    const char *content;
} moe_chat_message;

/* Render `template_src` for n messages. bos_token/eos_token may be NULL
 * (then they are none in the template, as in transformers). On success
 * *out is a malloc'ed NUL-terminated string the caller frees; on error
 * *out is NULL and err says what failed and where (line and column of the
 * template; raise_exception's message). */
moe_status moe_chat_render(const char *template_src, const moe_chat_message *msgs, int n,
                           int add_generation_prompt, const char *bos_token, const char *eos_token,
                           char **out, moe_error *err);

/* The same with the whole template context as a JSON object: "messages"
 * (objects with any fields: tool_calls, reasoning_content...),
 * "add_generation_prompt", "bos_token", "eos_token", "tools", and any
 * other variable the template reads (enable_thinking, ...). */
moe_status moe_chat_render_json(const char *template_src, const char *context_json, char **out,
                                moe_error *err);

/* Read the chat template and the BOS/EOS token texts from `path`: a
 * directory holding tokenizer_config.json, or that file, or a GGUF file
 * (tokenizer.chat_template; BOS/EOS from tokenizer.ggml.bos/eos_token_id).
 * chat_template may be a string or a list of {name, template}, of which
 * "default" is taken.
 * On success *template_src (and *bos, *eos where not NULL; a token the file
 * does not name stays NULL) are malloc'ed strings the caller frees.
 * MOE_EFORMAT when the file has no chat template. */
moe_status moe_chat_template_load(const char *path, char **template_src, char **bos, char **eos,
                                  moe_error *err);

/* A built-in template by name ("chatml", "llama3", "mistral", "tulu") for
 * models without one, or NULL. Static storage. */
const char *moe_chat_builtin(const char *name);
/* The built-in names as a ", "-separated list. Static. */
const char *moe_chat_builtin_names(void);

/* The strings that end an assistant turn under this template: eos_token
 * first (when not NULL), then each end-of-turn marker the template writes
 * (<|im_end|>, <|eot_id|>, </s>, ...). Fills at most max pointers (static
 * strings, or eos_token itself) and returns how many. */
int moe_chat_stop_strings(const char *template_src, const char *eos_token, const char **out, int max);

/* ---- runtime ---------------------------------------------------------- */

/* The BLAS core OpenBLAS chose ("SkylakeX", "Prescott", ...). Static. */
const char *moe_blas_core(void);
/* The SIMD kernels in use: "amx" (AVX-512 with AMX tile products),
 * "avx512", "avx2" or "portable". Static. */
const char *moe_kernel_isa(void);

#ifdef __cplusplus
}
#endif
#endif
