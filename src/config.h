/* config.json: a Hugging Face model configuration, read and checked once.
 * The architecture adapter (model.c) turns it into tensor shapes. */
#ifndef MOE_CONFIG_H
#define MOE_CONFIG_H

#include <cjson/cJSON.h>

#include "moescope/moescope.h"

typedef enum { ROPE_DEFAULT = 0, ROPE_LINEAR, ROPE_LLAMA3 } rope_kind;

typedef struct {
    char hf_class[64];         /* architectures[0] */
    char model_type[32];
    int n_layers;
    int dim;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ff;                    /* intermediate_size: dense MLPs (and Mixtral's experts) */
    int moe_ff;                /* moe_intermediate_size, else ff: routed experts */
    int shared_ff;             /* shared_expert_intermediate_size; 0: none */
    int n_experts;             /* num_local_experts or num_experts; 0 for dense */
    int k;                     /* num_experts_per_tok */
    int norm_topk_prob;        /* -1 when absent (the family's default) */
    int decoder_sparse_step;   /* Qwen-MoE: every n-th layer is sparse */
    int *mlp_only_layers;      /* (n_mlp_only) Qwen-MoE: dense layers */
    int n_mlp_only;
    double clip_qkv;           /* OLMoE: clamp q, k, v; 0 off */
    char **expert_names;       /* (n_experts + 1, NULL-terminated) "expert_names", or NULL */
    int vocab;
    int max_pos;
    int tied;                  /* tie_word_embeddings */
    int attn_bias;             /* attention_bias */
    int mlp_bias;              /* mlp_bias */
    int bos_id, eos_id;        /* -1 when absent */
    int sliding_window;        /* attend to the last N positions; 0: all */
    double rope_theta;
    double norm_eps;
    rope_kind rope;
    double rope_factor;
    double rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    float *rope_freqs;         /* (head_dim / 2) divisors of each frequency, or NULL:
                                  llama.cpp's rope_freqs.weight (Llama 3 scaling) */
} moe_config;

/* Read a JSON file of at most max_bytes. On success *out is a cJSON tree
 * the caller frees with cJSON_Delete. */
moe_status json_read_file(const char *path, size_t max_bytes, cJSON **out, moe_error *err);

/* Parse the configuration at `path` for one of the architectures the
 * engine knows; model_type/architectures decide which keys are needed.
 * Free with config_done. */
moe_status config_load(const char *path, moe_config *c, moe_error *err);
void config_done(moe_config *c);

#endif
