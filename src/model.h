/* The loaded model: one internal description of every architecture.
 *
 * An architecture adapter (model.c) maps Hugging Face tensor names and
 * config keys onto these structs, checking every shape once. The forward
 * pass (session.c) trusts them. Matrices are views into the mmap; the small
 * vectors (norm weights, biases) are converted to f32 copies. */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "config.h"
#include "moescope/moescope.h"
#include "router.h"
#include "gguf.h"
#include "safetensors.h"

/* A row-major weight matrix in the checkpoint's own type. */
typedef struct {
    moe_dtype t;
    const void *data;          /* NULL when absent */
    int rows, cols;
} wmat;

typedef struct {
    wmat gate;                 /* (ff, dim)  w1 / gate_proj */
    wmat up;                   /* (ff, dim)  w3 / up_proj */
    wmat down;                 /* (dim, ff)  w2 / down_proj */
} mlp_weights;

typedef enum {
    QK_NORM_NONE = 0,
    QK_NORM_WHOLE,             /* OLMoE: RMSNorm over the whole projection */
    QK_NORM_HEAD               /* Qwen3: RMSNorm over each head */
} qk_norm_kind;

typedef struct layer_weights {
    float *attn_norm;          /* (dim); NULL in a post-norm block */
    wmat wq;                   /* (n_heads * head_dim, dim) */
    wmat wk;                   /* (n_kv_heads * head_dim, dim) */
    wmat wv;                   /* (n_kv_heads * head_dim, dim) */
    wmat wo;                   /* (dim, n_heads * head_dim) */
    float *bq, *bk, *bv, *bo;  /* biases where the family has them, else NULL */
    float *q_norm, *k_norm;    /* (q_dim), (kv_dim) or (head_dim) by qk_norm */
    float *ffn_norm;           /* (dim) pre-MLP norm; NULL in a post-norm block */
    float *post_attn_norm;     /* (dim) OLMo-2-style blocks: norm of the attention output */
    float *post_ffn_norm;      /* (dim) ... and of the MLP output */
    int n_experts;             /* routed experts; 0: a dense layer */
    wmat router0;              /* (dim, dim) MiCRo's first router map; else absent */
    struct layer_weights *blocks; /* (n_experts) MiCRo: each expert a whole decoder block */
    wmat router;               /* (n_experts, dim) */
    mlp_weights *experts;      /* (n_experts), each of width moe_ff */
    mlp_weights dense;         /* a dense layer's MLP, width ff */
    mlp_weights shared;        /* the shared expert (Qwen2-MoE), width shared_ff */
    wmat shared_gate;          /* (1, dim) */
} layer_weights;

struct moe_model {
    moe_config cfg;
    moe_model_info info;
    router_rule rule;
    qk_norm_kind qk_norm;
    st_set *st;
    gguf_file *gguf;           /* a GGUF model's file (then st is NULL) */
    void *owned;               /* weights the model copied (GGUF llama: un-permuted Q and K) */
    char *dir;
    wmat embed;                /* (vocab, dim) */
    float *final_norm;         /* (dim) */
    wmat lm_head;              /* (vocab, dim); the embedding when tied */
    layer_weights *layers;     /* (n_layers) */
    float *vecs;               /* storage of every f32 vector above */
    int kv_slots;              /* KV caches per layer: 1, or the experts of a MiCRo layer */
};

/* Bind a GGUF file (gguf_model.c): fills m->cfg, the weights and the size
 * figures of m->info, and names the adapter and its Hugging Face class. */
moe_status gguf_model_bind(moe_model *m, const char *path, const char **arch_name, const char **hf_class,
                           moe_error *err);

/* The type holding most weight bytes, for inspect and bench. */
moe_dtype model_main_dtype(const uint64_t bytes_by_type[MOE_DTYPE_COUNT]);

#endif
