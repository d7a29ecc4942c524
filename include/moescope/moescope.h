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

typedef enum { MOE_F32 = 0, MOE_F16, MOE_BF16, MOE_DTYPE_COUNT } moe_dtype;

/* What a model is, as read from its files. Strings live as long as the model. */
typedef struct {
    const char *arch;          /* adapter name: "llama", "mixtral" */
    const char *hf_class;      /* e.g. "MixtralForCausalLM" */
    const char *path;          /* the directory the weights came from */
    int n_layers;
    int dim;                   /* hidden size */
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ff;                    /* expert (or dense MLP) intermediate size */
    int n_experts;             /* 0 for a dense model */
    int k;                     /* experts per token as configured */
    int n_moe_layers;          /* layers with a router */
    int vocab;
    int max_pos;               /* max_position_embeddings */
    int tied_embeddings;
    int bos_id, eos_id;        /* -1 when the config does not say */
    float rope_theta;
    float norm_eps;
    moe_dtype dtype;           /* the type of most weight bytes */
    uint64_t params_total;
    uint64_t params_active;    /* read per token with the configured k */
    uint64_t weight_bytes;     /* bytes of all tensors the model uses */
    uint64_t active_bytes;     /* weight bytes read per generated token */
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
    const float *weights;      /* (k) mixing weights applied */
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

/* ---- session ---------------------------------------------------------- */

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
const float *moe_session_logits(const moe_session *s); /* (vocab) */
int moe_session_pos(const moe_session *s);
int moe_session_n_ctx(const moe_session *s);
int moe_session_n_threads(const moe_session *s);
/* Forget every position (the KV cache is reused). */
void moe_session_reset(moe_session *s);
void moe_session_set_trace(moe_session *s, const moe_trace_sink *sink);

/* Experts per token: layer -1 sets every MoE layer. 1 <= k <= n_experts.
 * Takes effect at the next evaluated token. */
moe_status moe_session_set_k(moe_session *s, int layer, int k, moe_error *err);
int moe_session_get_k(const moe_session *s, int layer);

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

/* ---- runtime ---------------------------------------------------------- */

/* The BLAS core OpenBLAS chose ("SkylakeX", "Prescott", ...). Static. */
const char *moe_blas_core(void);
/* The SIMD kernels in use: "avx512", "avx2" or "portable". Static. */
const char *moe_kernel_isa(void);

#ifdef __cplusplus
}
#endif
#endif
