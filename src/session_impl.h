/* The session's insides, shared by session.c (its life, the public calls,
 * the probes) and forward.c (the forward pass). Engine-private. */
#ifndef MOE_SESSION_IMPL_H
#define MOE_SESSION_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "matmul.h"
#include "model.h"
#include "pool.h"
#include "session.h"

/* Assignments of tokens to experts up to which a step runs all its experts
 * as one batch of products (decoding: k per token). */
enum { FEW_ROWS = 32 };
/* Queries of a prefill that one attention task takes together, so that
 * each key and value is read once for all of them. */
enum { ATTN_QB = 4 };

struct moe_session {
    moe_model *m;
    pool *pool;
    matmul_ctx *mm;
    int n_ctx, n_batch, pos;
    controls ctl;              /* the interventions in force */
    moe_trace_sink sink;

    /* activations of one chunk of nb <= n_batch tokens */
    float *x;                  /* (nb, dim) residual stream */
    float *xb;                 /* (nb, dim) normed input of a sublayer */
    float *q;                  /* (nb, q_dim) queries */
    float *att;                /* (nb, q_dim) attention output, heads concatenated */
    float *scores;             /* per thread: (ATTN_QB * g, n_ctx) attention weights of a
                                * block of queries, then (ATTN_QB * g, head_dim) twice: the
                                * block's queries and outputs side by side (g = n_heads /
                                * n_kv_heads) */
    size_t scores_per_thread;  /* floats */
    float *proj;               /* (nb, dim) output of o_proj / the MLPs */
    float *rlogits;            /* (nb, n_experts) router logits */
    /* routing of the chunk, kept for the trace */
    float *probs;              /* (nb, n_moe_layers, n_experts) */
    int *chosen;               /* (nb, n_moe_layers, n_experts) first k used */
    float *weights;            /* (nb, n_moe_layers, n_experts) first k used */
    uint8_t *overflow;         /* (nb, n_moe_layers, n_experts) first k used */
    int *load;                 /* (n_experts) assignments so far in the batch */
    int32_t *history;          /* (n_ctx) every token evaluated, for re-prefill */
    float *last_in;            /* (n_layers * kv_slots, dim) MLP input of the latest token */
    uint8_t *last_ok;          /* (n_layers * kv_slots) that block ran for the latest token */
    float *last_out;           /* (n_layers, dim) hidden state after each layer, latest token */
    /* what re-evaluating an earlier token overwrites, kept meanwhile */
    float *probe_in, *probe_out, *probe_logits; /* as last_in, last_out, logits */
    uint8_t *probe_ok;         /* as last_ok */
    unsigned char *probe_kv;   /* (n_layers * kv_slots, 2, n_kv_heads) head rows of kv_type: one
                                * cache position per block */
    int *n_chosen;             /* (nb, n_moe_layers) */
    moe_route *routes;         /* (n_moe_layers) handed to the sink */
    /* tokens grouped by expert */
    int *group_n;              /* (n_experts) */
    int *group_tok;            /* (n_experts, nb) */
    float *group_w;            /* (n_experts, nb) */
    float *xe;                 /* (nb, dim) gathered inputs of one expert */
    float *h1, *h3;            /* (nb, ff) expert hidden activations */
    /* every chosen expert of a step with at most FEW_ROWS assignments */
    float *xm;                 /* (FEW_ROWS, dim) inputs, then outputs, expert by expert */
    float *hm1, *hm3;          /* (FEW_ROWS, ff) their hidden activations */
    matmul_item *items;        /* (2 * n_experts) products of one dispatch */
    float *logits;             /* (vocab) of the last token */
    float *all_logits;         /* the caller's (n, vocab) during moe_session_eval_all: next row to fill */
    /* (n_layers * kv_slots, n_kv_heads, n_ctx, head_dim) of kv_type: a slot per
     * block, and each head's positions side by side for the attention kernels */
    unsigned char *kcache, *vcache;
    moe_dtype kv_type;         /* MOE_F32, MOE_F16 or MOE_Q8_0 */
    size_t kv_row;             /* bytes of one head's head_dim values in kv_type */
    float *knew, *vnew;        /* (nb, kv_dim) the chunk's keys and values before they are stored */
    uint64_t bytes_read;       /* weight bytes multiplied since the session began */
    float *acc;                /* (nb, dim) a MiCRo layer's weighted sum of blocks */
    float *hbuf;               /* (nb, dim) a block's stream after its attention */
    float *rope_cos, *rope_sin; /* (n_ctx, head_dim / 2) */
};

/* The forward pass of one chunk of nb <= n_batch tokens at s->pos: the
 * logits of its last token in s->logits (of every token into
 * s->all_logits when that is set), the routing of every token in s->probs,
 * s->chosen, s->weights and s->overflow, the latest token's activations in
 * last_in / last_out / last_ok. Allocates nothing. */
void session_forward(moe_session *s, const int32_t *ids, int nb);
/* Hand the chunk's routing to the trace sink, a token at a time. */
void session_deliver_trace(moe_session *s, const int32_t *ids, int nb);
/* The MLP hidden activation of the n rows in s->xe through W (after the
 * activation function and the offsets of (l, kind, expert)), into s->h1. */
void session_mlp_hidden(moe_session *s, const mlp_weights *W, int n, int l, moe_offset_kind kind, int expert);
/* The cache row of one block's KV head at a position. */
unsigned char *session_kv_at(const moe_session *s, unsigned char *cache, int slot, int head, int pos);

#endif
