#!/usr/bin/env python3
"""Generate tiny random-weight Hugging Face checkpoints for moescope's tests.

    python3 tools/gen_fixtures.py               # all committed fixtures:
                                                #   tests/fixtures/models/* and assets/tiny-mixtral
    python3 tools/gen_fixtures.py --bench DIR   # Mixtral-shaped f16 bench model (~1 GB, not committed)
    python3 tools/gen_fixtures.py --bundled DIR # the small random Mixtral of assets/tiny-mixtral, into DIR
    python3 tools/gen_fixtures.py --bench-olmoe DIR  # OLMoE-shaped f16 bench model (~1.9 GB, not committed)
    python3 tools/gen_fixtures.py --only NAME   # one committed fixture (e.g. llama3-tiny)

Each output is a directory laid out as `save_pretrained` leaves it:
config.json (keys sorted, indent 2, as transformers writes it) and either
model.safetensors or model-0000i-of-0000n.safetensors + model.safetensors.index.json.
Tensor names and config keys are those of transformers' LlamaForCausalLM and
MixtralForCausalLM (the classic Mixtral checkpoint layout with
block_sparse_moe.experts.{e}.w1/w2/w3, as on the Hub), OlmoeForCausalLM,
Qwen2MoeForCausalLM and Qwen3MoeForCausalLM; the "-fused" fixtures are in
transformers 5's fused expert layout (mlp.experts.gate_up_proj / down_proj)
with a transformers 5 config.json (see tests/reference/README.md).

Everything is deterministic: each tensor is drawn from its own
numpy.random.default_rng([model seed, crc32(tensor name)]), so the output is
byte-identical from run to run and independent of the order of writing.
Only numpy is needed.
"""

import argparse
import json
import os
import sys
import time
import zlib

import numpy as np

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------
# model descriptions
#
# Scales (std of the normal draws).  The rule: every projection whose input is
# an RMS-normalised vector (rms ~1) or an attention / SwiGLU output gets
# std = gain / sqrt(fan_in), so activations stay of order 1; the embedding is
# smaller than the block outputs so that the residual stream is dominated by
# what the blocks compute (otherwise greedy decoding just repeats the input
# token, especially with tied embeddings); lm_head gives logits with std of a
# few units; the router gets a gain large enough that different tokens pick
# different experts.
# ---------------------------------------------------------------------------

DEFAULT_SCALES = {
    "embed": 1.0,        # absolute std of the embedding table
    "qkv": 1.0,          # gain / sqrt(hidden)
    "o": 1.0,            # gain / sqrt(n_heads * head_dim)
    "bias": 0.2,         # absolute std of attention biases
    "up": 1.0,           # gate/up (w1/w3): gain / sqrt(hidden)
    "down": 1.0,         # down (w2): gain / sqrt(intermediate)
    "router": 2.0,       # gain / sqrt(hidden)
    "lm_head": 3.0,      # gain / sqrt(hidden)  -> logits std ~3
    "norm": 0.1,         # norm weights 1 + norm * N(0,1)
}


def llama_config(hidden, layers, heads, kv_heads, inter, vocab, *, head_dim=None, rope_theta=10000.0,
                 rope_scaling=None, tie=False, attention_bias=False, max_pos=256, eps=1e-6,
                 torch_dtype="float32", bos=1, eos=2):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": attention_bias,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": eps,
        "rope_scaling": rope_scaling,
        "rope_theta": float(rope_theta),
        "tie_word_embeddings": tie,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": vocab,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return cfg


def mixtral_config(hidden, layers, heads, kv_heads, inter, vocab, experts, topk, *, rope_theta=1e6,
                   max_pos=4096, eps=1e-5, torch_dtype="float32", tie=False, bos=1, eos=2, sliding_window=None):
    # The keys of Mixtral-8x7B's config.json: no head_dim, no attention_bias,
    # no rope_scaling (an engine must apply the defaults).  sliding_window is
    # null there (full causal attention); an integer W limits each query at
    # position i to the keys at positions j with i - W < j <= i.
    return {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "model_type": "mixtral",
        "num_attention_heads": heads,
        "num_experts_per_tok": topk,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "num_local_experts": experts,
        "output_router_logits": False,
        "rms_norm_eps": eps,
        "rope_theta": float(rope_theta),
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "sliding_window": sliding_window,
        "tie_word_embeddings": tie,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": vocab,
    }


LLAMA3_ROPE = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    # 64 rather than Llama 3's 8192 so that, with head_dim 16 and theta 5e5,
    # the three regimes of the llama3 rule all occur: wavelengths 6.3 (< 16,
    # high frequency, kept), 32.4 (in [16, 64], smoothed), >= 167 (> 64,
    # divided by factor).
    "original_max_position_embeddings": 64,
    "rope_type": "llama3",
}

# Seed chosen (among 103..122) for comfortable decision margins in all three
# dtypes: greedy top-1/top-2 logit gap >= 0.01 and k-th/(k+1)-th router logit
# gap >= 1e-3 at every position of every golden case.
MIXTRAL_SEED = 109
MIXTRAL_TINY = dict(hidden=64, layers=3, heads=4, kv_heads=2, inter=96, vocab=320, experts=8, topk=2,
                    rope_theta=1e6, max_pos=256)

# mixtral-tiny-swa: the mixtral-tiny dimensions with sliding-window attention.
# The window (12) is shorter than the 40-token golden prompt and than every
# prompt + 16 greedy tokens, so it really cuts context.  Seed chosen (among
# 401..440) by the same criteria as MIXTRAL_SEED: greedy margin >= 0.01,
# router gap >= 1e-3, >= 9 distinct greedy tokens, >= 7 experts in top-1 use.
MIXTRAL_SWA_SEED = 437
MIXTRAL_SWA_WINDOW = 12

FIXTURES = {
    "llama-tiny": dict(
        seed=101, dtype="F32", shards=1,
        config=llama_config(64, 2, 4, 2, 160, 320, rope_theta=10000.0, max_pos=256, eps=1e-6)),
    "llama3-tiny": dict(
        seed=102, dtype="F32", shards=1,
        # tied: the embedding is also lm_head, so it must be small (logits std =
        # 0.3 * sqrt(96) ~ 3) and the blocks must outweigh it in the residual
        # stream, or greedy decoding keeps predicting the current token
        scales={"embed": 0.3, "down": 6.0},
        config=llama_config(96, 2, 4, 2, 128, 320, head_dim=16, rope_theta=500000.0,
                            rope_scaling=LLAMA3_ROPE, tie=True, attention_bias=True, max_pos=256,
                            eps=1e-5)),
    "mixtral-tiny": dict(
        seed=MIXTRAL_SEED, dtype="F32", shards=2,
        config=mixtral_config(**MIXTRAL_TINY)),
    "mixtral-tiny-f16": dict(
        seed=MIXTRAL_SEED, dtype="F16", shards=1,
        config=mixtral_config(**MIXTRAL_TINY, torch_dtype="float16")),
    "mixtral-tiny-bf16": dict(
        seed=MIXTRAL_SEED, dtype="BF16", shards=1,
        config=mixtral_config(**MIXTRAL_TINY, torch_dtype="bfloat16")),
    "mixtral-tiny-swa": dict(
        seed=MIXTRAL_SWA_SEED, dtype="F32", shards=1,
        config=mixtral_config(**MIXTRAL_TINY, sliding_window=MIXTRAL_SWA_WINDOW)),
}

BUNDLED = dict(
    seed=201, dtype="F16", shards=1,
    config=mixtral_config(128, 4, 4, 2, 256, 512, 8, 2, rope_theta=1e6, max_pos=2048,
                          torch_dtype="float16"))

BENCH = dict(
    seed=301, dtype="F16", shards=1,
    config=mixtral_config(1024, 8, 16, 4, 2048, 32000, 8, 2, rope_theta=1e6, max_pos=4096,
                          torch_dtype="float16"))


# ---------------------------------------------------------------------------
# MiCRo (Mixture of Cognitive Reasoners; BKHMSI/mixture-of-cognitive-reasoners,
# models/micro_llama.py and models/micro_olmo.py).  Every layer is a router
# (`gate`, two bias-free linear maps) over 4 experts that are each a whole
# decoder block; the tensors sit at the root of the checkpoint (no "model."
# prefix).  See tests/reference/README.md, section MiCRo, for the sources.
# ---------------------------------------------------------------------------

# Expert order of the released code (the `ablate` names in
# MiCRoLlamaDecoderLayer.forward: logic -> 0, social -> 1, world -> 2,
# language -> 3).  The released config.json has no field for them:
# "expert_names" is moescope's own key.
MICRO_EXPERT_NAMES = ["logic", "social", "world", "language"]

# The MiCRo-specific keys, set on the config object by the released code before
# save_pretrained wrote config.json: MiCRoLlama.__init__ / MiCRoOLMo.__init__
# (backbone_num_layers, num_hidden_layers multiplied by num_experts,
# use_bfloat16), build_model (num_experts, use_router, num_experts_per_tok,
# jitter_noise, loss_method) and train_sft.py (config_path, ablate).  The
# values of config_path and ablate are placeholders (irrelevant to inference).


def _micro_keys(cfg, layers, experts, topk, config_path):
    cfg = dict(cfg)
    cfg.update({
        "ablate": [],
        "backbone_num_layers": layers,
        "config_path": config_path,
        "expert_names": list(MICRO_EXPERT_NAMES),
        "jitter_noise": 0,
        "loss_method": "all",
        "num_experts": experts,
        "num_experts_per_tok": topk,
        # the released code saves the *expanded* count: one KV-cache layer per
        # expert block (backbone layers x experts)
        "num_hidden_layers": layers * experts,
        "use_bfloat16": True,
        "use_router": True,
    })
    return cfg


def micro_llama_config(hidden, layers, heads, kv_heads, inter, vocab, *, experts=4, topk=1, head_dim=None,
                       rope_theta=500000.0, rope_scaling=None, eps=1e-5, max_pos=256, torch_dtype="float32",
                       bos=1, eos=2):
    # MiCRoLlama is built from AutoConfig.from_pretrained("meta-llama/Llama-3.2-1B"),
    # so its config.json has that key set (head_dim, rope_scaling llama3,
    # tie_word_embeddings true) plus the MiCRo keys.  tie_word_embeddings stays
    # true although MiCRoLlama has its own lm_head.weight, never tied to
    # embed_tokens (it defines no get_output_embeddings).
    cfg = llama_config(hidden, layers, heads, kv_heads, inter, vocab, head_dim=head_dim, rope_theta=rope_theta,
                       rope_scaling=rope_scaling, tie=True, attention_bias=False, max_pos=max_pos, eps=eps,
                       torch_dtype=torch_dtype, bos=bos, eos=eos)
    cfg["architectures"] = ["MiCRoLlama"]
    return _micro_keys(cfg, layers, experts, topk, "configs/config_micro_llama.yml")


def micro_olmo_config(hidden, layers, heads, kv_heads, inter, vocab, *, experts=4, topk=1, rope_theta=500000.0,
                      eps=1e-6, max_pos=256, torch_dtype="float32", bos=1, eos=2, pad=0):
    # MiCRoOLMo is built from AutoConfig.from_pretrained("allenai/OLMo-2-0425-1B"):
    # the key set of an OLMo 2 config.json (no head_dim, rope_scaling null,
    # untied) plus the MiCRo keys.
    cfg = {
        "architectures": ["MiCRoOLMo"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "model_type": "olmo2",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pad_token_id": pad,
        "rms_norm_eps": eps,
        "rope_scaling": None,
        "rope_theta": float(rope_theta),
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": vocab,
    }
    return _micro_keys(cfg, layers, experts, topk, "configs/config_micro_olmo.yml")


def micro_tensor_list(cfg):
    """[(name, shape, kind, fan_in)] of a MiCRo checkpoint, in module order
    (MiCRoLlama/MiCRoOLMo.build_model: embed_tokens, layers, lm_head, final norm;
    per layer gate.0, gate.1, then the expert blocks)."""
    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // nh
    ff = cfg["intermediate_size"]
    E = cfg["num_experts"]
    olmo = cfg["architectures"][0] == "MiCRoOLMo"
    out = [("embed_tokens.weight", (cfg["vocab_size"], d), "embed", d)]
    for i in range(cfg["backbone_num_layers"]):
        p = "layers.%d." % i
        out.append((p + "gate.0.weight", (d, d), "qkv", d))          # hidden -> hidden
        out.append((p + "gate.1.weight", (E, d), "router", d))      # hidden -> experts
        for e in range(E):
            q = p + "experts.%d." % e
            out.append((q + "self_attn.q_proj.weight", (nh * hd, d), "qkv", d))
            out.append((q + "self_attn.k_proj.weight", (nkv * hd, d), "qkv", d))
            out.append((q + "self_attn.v_proj.weight", (nkv * hd, d), "qkv", d))
            out.append((q + "self_attn.o_proj.weight", (d, nh * hd), "o", nh * hd))
            if olmo:
                out.append((q + "self_attn.q_norm.weight", (nh * hd,), "norm", d))
                out.append((q + "self_attn.k_norm.weight", (nkv * hd,), "norm", d))
            out.append((q + "mlp.gate_proj.weight", (ff, d), "up", d))
            out.append((q + "mlp.up_proj.weight", (ff, d), "up", d))
            out.append((q + "mlp.down_proj.weight", (d, ff), "down", ff))
            if olmo:
                out.append((q + "post_attention_layernorm.weight", (d,), "norm", d))
                out.append((q + "post_feedforward_layernorm.weight", (d,), "norm", d))
            else:
                out.append((q + "input_layernorm.weight", (d,), "norm", d))
                out.append((q + "post_attention_layernorm.weight", (d,), "norm", d))
    out.append(("lm_head.weight", (cfg["vocab_size"], d), "lm_head", d))
    out.append(("norm.weight" if olmo else "final_norm.weight", (d,), "norm", d))
    return out


MICRO_LLAMA_ROPE = {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    # Llama 3.2's factor and band factors, but 64 instead of 8192 so that with
    # head_dim 16 and theta 5e5 all three bands of the llama3 rule occur.
    "original_max_position_embeddings": 64,
    "rope_type": "llama3",
}

# Seeds chosen (micro-llama-tiny among 501..560, micro-olmo-tiny among
# 601..620) for decision margins over every golden case (prompts of 1, 7, 40
# tokens x k = 1, 2, 4): greedy top-1/top-2 gap >= 0.01, router k-th/(k+1)-th
# gap >= 1e-3, >= 9 distinct greedy tokens, every expert someone's top-1 in
# every layer over the 40-token prompt.
MICRO_LLAMA_SEED = 551
MICRO_OLMO_SEED = 614

FIXTURES.update({
    "micro-llama-tiny": dict(
        seed=MICRO_LLAMA_SEED, dtype="F32", shards=1,
        config=micro_llama_config(64, 3, 4, 2, 128, 320, head_dim=16, rope_theta=500000.0,
                                  rope_scaling=MICRO_LLAMA_ROPE, eps=1e-5, max_pos=256)),
    "micro-olmo-tiny": dict(
        seed=MICRO_OLMO_SEED, dtype="F32", shards=1,
        config=micro_olmo_config(64, 2, 4, 2, 128, 320, rope_theta=500000.0, eps=1e-6, max_pos=256)),
})


# ---------------------------------------------------------------------------
# OLMoE, Qwen2-MoE and Qwen3-MoE (issue 5), written from transformers'
# src/transformers/models/{olmoe,qwen2_moe,qwen3_moe}/configuration_*.py and
# modeling_*.py, and the fused expert layout of transformers 5
# (src/transformers/conversion_mapping.py).  See tests/reference/README.md,
# sections "OLMoE, Qwen2-MoE, Qwen3-MoE" and "The fused expert layout".
# ---------------------------------------------------------------------------

FAMILY_MODEL_TYPES = ("olmoe", "qwen2_moe", "qwen3_moe")


def olmoe_config(hidden, layers, heads, kv_heads, inter, vocab, experts, topk, *, norm_topk_prob=False,
                 clip_qkv=None, attention_bias=False, rope_theta=10000.0, max_pos=256, eps=1e-5,
                 torch_dtype="float32", tie=False, bos=1, eos=2):
    # The keys of allenai/OLMoE-1B-7B-0924's config.json (OlmoeConfig).  The
    # expert width is intermediate_size (OLMoE has no moe_intermediate_size);
    # no head_dim key (hidden / heads); every layer is sparse.
    return {
        "architectures": ["OlmoeForCausalLM"],
        "attention_bias": attention_bias,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "clip_qkv": clip_qkv,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "model_type": "olmoe",
        "norm_topk_prob": norm_topk_prob,
        "num_attention_heads": heads,
        "num_experts": experts,
        "num_experts_per_tok": topk,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "output_router_logits": False,
        "rms_norm_eps": eps,
        "rope_scaling": None,
        "rope_theta": float(rope_theta),
        "router_aux_loss_coef": 0.01,
        "tie_word_embeddings": tie,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": vocab,
    }


def qwen2moe_config(hidden, layers, heads, kv_heads, inter, moe_inter, shared_inter, vocab, experts, topk, *,
                    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=(), sliding_window=None,
                    rope_theta=1e6, max_pos=256, eps=1e-6, torch_dtype="float32", tie=False, bos=1, eos=2):
    # The keys of Qwen/Qwen1.5-MoE-A2.7B's config.json (Qwen2MoeConfig), plus
    # mlp_only_layers.  No qkv_bias key: transformers 5 defaults it to true
    # (q/k/v biases; transformers 4 hard-coded them), o_proj never has one.
    # sliding_window is a number but use_sliding_window is false, so it does
    # not apply (as in the released configs).
    return {
        "architectures": ["Qwen2MoeForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "decoder_sparse_step": decoder_sparse_step,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "max_window_layers": layers,
        "mlp_only_layers": list(mlp_only_layers),
        "model_type": "qwen2_moe",
        "moe_intermediate_size": moe_inter,
        "norm_topk_prob": norm_topk_prob,
        "num_attention_heads": heads,
        "num_experts": experts,
        "num_experts_per_tok": topk,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "output_router_logits": False,
        "rms_norm_eps": eps,
        "rope_theta": float(rope_theta),
        "router_aux_loss_coef": 0.001,
        "shared_expert_intermediate_size": shared_inter,
        "sliding_window": sliding_window,
        "tie_word_embeddings": tie,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


def qwen3moe_config(hidden, layers, heads, kv_heads, head_dim, inter, moe_inter, vocab, experts, topk, *,
                    norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=(), attention_bias=False,
                    rope_theta=1e6, max_pos=256, eps=1e-6, torch_dtype="float32", tie=False, bos=1, eos=2):
    # The keys of Qwen/Qwen3-30B-A3B's config.json (Qwen3MoeConfig): head_dim
    # explicit and independent of hidden / heads, attention_bias false,
    # sliding_window null with use_sliding_window false.
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "attention_bias": attention_bias,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "decoder_sparse_step": decoder_sparse_step,
        "eos_token_id": eos,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "max_window_layers": layers,
        "mlp_only_layers": list(mlp_only_layers),
        "model_type": "qwen3_moe",
        "moe_intermediate_size": moe_inter,
        "norm_topk_prob": norm_topk_prob,
        "num_attention_heads": heads,
        "num_experts": experts,
        "num_experts_per_tok": topk,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "output_router_logits": False,
        "rms_norm_eps": eps,
        "rope_scaling": None,
        "rope_theta": float(rope_theta),
        "router_aux_loss_coef": 0.001,
        "sliding_window": None,
        "tie_word_embeddings": tie,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


def v5_config(cfg):
    """config.json as transformers 5 writes it: "dtype" instead of
    "torch_dtype", and the RoPE settings in "rope_parameters" ({"rope_theta",
    "rope_type"}) instead of "rope_theta" / "rope_scaling"."""
    c = dict(cfg)
    c["dtype"] = c.pop("torch_dtype")
    theta = c.pop("rope_theta")
    if c.pop("rope_scaling", None) is not None:
        raise ValueError("v5_config: only plain RoPE is written here")
    c["rope_parameters"] = {"rope_theta": theta, "rope_type": "default"}
    return c


def family_moe_layers(cfg):
    """Indices of the sparse (MoE) layers.  OLMoE: every layer
    (OlmoeDecoderLayer always builds OlmoeSparseMoeBlock).  Qwen2-MoE and
    Qwen3-MoE (Qwen2MoeDecoderLayer.__init__, which Qwen3MoeDecoderLayer
    inherits): layer i is sparse iff i is not in mlp_only_layers and
    num_experts > 0 and (i + 1) % decoder_sparse_step == 0; otherwise it has a
    dense MLP of width intermediate_size."""
    L = cfg["num_hidden_layers"]
    if cfg["model_type"] == "olmoe":
        return list(range(L))
    step = cfg.get("decoder_sparse_step", 1)
    only = cfg.get("mlp_only_layers") or []
    return [i for i in range(L) if i not in only and cfg["num_experts"] > 0 and (i + 1) % step == 0]


def family_tensor_list(cfg):
    """[(name, shape, kind, fan_in)] of an OLMoE / Qwen2-MoE / Qwen3-MoE
    checkpoint in the per-expert layout (as transformers 4 saves it, and 5
    with save_original_format=True, its default), in module order."""
    mt = cfg["model_type"]
    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // nh
    E = cfg["num_experts"]
    ff_exp = cfg["intermediate_size"] if mt == "olmoe" else cfg["moe_intermediate_size"]
    ff_dense = cfg["intermediate_size"]
    if mt == "qwen2_moe":
        qkv_bias, o_bias = cfg.get("qkv_bias", True), False
    else:
        qkv_bias = o_bias = cfg.get("attention_bias", False)
    sparse = set(family_moe_layers(cfg))
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], d), "embed", d)]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        for proj, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            out.append((p + "self_attn.%s_proj.weight" % proj, (rows, d), "qkv", d))
            if qkv_bias:
                out.append((p + "self_attn.%s_proj.bias" % proj, (rows,), "bias", d))
        out.append((p + "self_attn.o_proj.weight", (d, nh * hd), "o", nh * hd))
        if o_bias:
            out.append((p + "self_attn.o_proj.bias", (d,), "bias", nh * hd))
        if mt == "olmoe":      # over the whole projection: hidden, and kv_heads * head_dim
            out.append((p + "self_attn.q_norm.weight", (nh * hd,), "norm", d))
            out.append((p + "self_attn.k_norm.weight", (nkv * hd,), "norm", d))
        elif mt == "qwen3_moe":  # per head: head_dim
            out.append((p + "self_attn.q_norm.weight", (hd,), "norm", d))
            out.append((p + "self_attn.k_norm.weight", (hd,), "norm", d))
        if i in sparse:
            out.append((p + "mlp.gate.weight", (E, d), "router", d))
            for e in range(E):
                q = p + "mlp.experts.%d." % e
                out.append((q + "gate_proj.weight", (ff_exp, d), "up", d))
                out.append((q + "up_proj.weight", (ff_exp, d), "up", d))
                out.append((q + "down_proj.weight", (d, ff_exp), "down", ff_exp))
            if mt == "qwen2_moe":
                sff = cfg["shared_expert_intermediate_size"]
                q = p + "mlp.shared_expert."
                out.append((q + "gate_proj.weight", (sff, d), "up", d))
                out.append((q + "up_proj.weight", (sff, d), "up", d))
                out.append((q + "down_proj.weight", (d, sff), "down", sff))
                # sigmoid(shared_expert_gate . x): router gain, so the gate varies
                out.append((p + "mlp.shared_expert_gate.weight", (1, d), "router", d))
        else:
            out.append((p + "mlp.gate_proj.weight", (ff_dense, d), "up", d))
            out.append((p + "mlp.up_proj.weight", (ff_dense, d), "up", d))
            out.append((p + "mlp.down_proj.weight", (d, ff_dense), "down", ff_dense))
        out.append((p + "input_layernorm.weight", (d,), "norm", d))
        out.append((p + "post_attention_layernorm.weight", (d,), "norm", d))
    out.append(("model.norm.weight", (d,), "norm", d))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (cfg["vocab_size"], d), "lm_head", d))
    return out


def fused_plan(cfg):
    """The tensors of a checkpoint in transformers 5's fused expert layout, as
    [(name, shape, build)] with build(get) -> float32 array, where get(name)
    gives a tensor of the per-expert layout (tensor_list), so both layouts
    hold the same values.  Per sparse layer, from conversion_mapping.py
    ("mixtral" and "qwen2_moe", which "qwen3_moe" and "olmoe" reuse):

      mlp.experts.gate_up_proj  (E, 2*ff, hidden) = for each expert e,
          rows 0..ff-1 its gate_proj (Mixtral w1), rows ff..2ff-1 its up_proj (w3)
          (MergeModulelist(dim=0) then Concatenate(dim=1); not transposed)
      mlp.experts.down_proj     (E, hidden, ff)   = each expert's down_proj (w2)

    and for Mixtral the rename ".block_sparse_moe." -> ".mlp." (router:
    mlp.gate.weight).  Everything else keeps its name and shape."""
    base = tensor_list(cfg)
    info = {n: s for n, s, _, _ in base}
    mixtral = cfg["model_type"] == "mixtral"
    E = cfg.get("num_local_experts") or cfg.get("num_experts")
    gate_n, up_n, down_n = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    fused = {}      # first source tensor name -> [(name, shape, build)]
    consumed = set()
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        src = p + ("block_sparse_moe." if mixtral else "mlp.")
        first = src + "experts.0.%s.weight" % gate_n
        if first not in info:
            continue                     # a dense layer
        g = [src + "experts.%d.%s.weight" % (e, gate_n) for e in range(E)]
        u = [src + "experts.%d.%s.weight" % (e, up_n) for e in range(E)]
        dn = [src + "experts.%d.%s.weight" % (e, down_n) for e in range(E)]
        ff, d = info[g[0]]
        entries = []
        if mixtral:
            entries.append((p + "mlp.gate.weight", info[src + "gate.weight"],
                            lambda get, n=src + "gate.weight": get(n)))
            consumed.add(src + "gate.weight")
        entries.append((p + "mlp.experts.gate_up_proj", (E, 2 * ff, d),
                        lambda get, g=g, u=u: np.stack([np.concatenate([get(a), get(b)], axis=0)
                                                        for a, b in zip(g, u)])))
        entries.append((p + "mlp.experts.down_proj", (E, d, ff),
                        lambda get, dn=dn: np.stack([get(a) for a in dn])))
        consumed.update(g + u + dn)
        fused[first] = entries
    out = []
    for n, s, _, _ in base:
        if n in fused:
            out.extend(fused[n])
        if n not in consumed:
            out.append((n, s, lambda get, n=n: get(n)))
    return out


def write_fused_model(outdir, spec, verbose=True):
    """write_model for spec["fused"]: one file, expert tensors fused (fused_plan)."""
    t0 = time.time()
    cfg = spec["config"]
    dtype = spec["dtype"]
    if spec.get("shards", 1) != 1:
        raise ValueError("fused fixtures are written as a single file")
    scales = dict(DEFAULT_SCALES)
    scales.update(spec.get("scales", {}))
    os.makedirs(outdir, exist_ok=True)
    for fn in os.listdir(outdir):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(outdir, fn))
    with open(os.path.join(outdir, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    meta = {n: (s, k, fi) for n, s, k, fi in tensor_list(cfg)}

    def get(n):
        s, k, fi = meta[n]
        return make_tensor(spec["seed"], n, s, k, fi, scales)

    plan = sorted(fused_plan(cfg), key=lambda t: t[0])
    w = st.StreamWriter(os.path.join(outdir, "model.safetensors"), [(n, dtype, s) for n, s, _ in plan],
                        metadata={"format": "pt"})
    for n, s, build in plan:
        a = np.ascontiguousarray(build(get), dtype=np.float32)
        assert a.shape == tuple(s), (n, a.shape, s)
        w.write(n, a)
    w.close()
    nparams = sum(int(np.prod(s)) for _, s, _ in plan)
    size = sum(os.path.getsize(os.path.join(outdir, fn)) for fn in os.listdir(outdir))
    if verbose:
        print("%-40s %-5s %10d params %11d bytes %6.2fs" % (os.path.relpath(outdir, ROOT) if outdir.startswith(ROOT)
                                                          else outdir, dtype, nparams, size, time.time() - t0))
    return nparams, size


# Seeds chosen (see tests/reference/README.md) for decision margins: greedy
# top-1/top-2 gap >= 0.01, router k-th/(k+1)-th gap >= 1e-3, at least 9
# distinct greedy tokens in 16, in every golden case.  OLMoE (16 experts,
# top-4, 12 cases) met them with none of 100 seeds at the default scales or
# router gain 2 / embedding 0.5, nor at router gain 4; 2 of 120 seeds (781..900)
# with router gain 3 and embedding std 0.5, of which 786.
OLMOE_SEED = 786
OLMOE_SCALES = {"embed": 0.5, "router": 3.0}
QWEN2MOE_SEED = 817
QWEN3MOE_SEED = 930
# clip_qkv small enough that the clamp acts (about 1.2% of the q/k/v values
# of the 40-token prompt; OLMoE-1B-7B itself has null): see tests/reference/README.md.
OLMOE_CLIP_QKV = 2.5
OLMOE_TINY = dict(norm_topk_prob=False, clip_qkv=OLMOE_CLIP_QKV, rope_theta=10000.0, max_pos=256, eps=1e-5)
QWEN2MOE_TINY = dict(norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], sliding_window=16,
                     rope_theta=1e6, max_pos=256, eps=1e-6)
QWEN3MOE_TINY = dict(norm_topk_prob=True, decoder_sparse_step=2, mlp_only_layers=[], rope_theta=1e6,
                     max_pos=256, eps=1e-6)

FIXTURES.update({
    # hidden, layers, heads, kv_heads, intermediate (= expert width), vocab, experts, top-k
    "olmoe-tiny": dict(
        seed=OLMOE_SEED, dtype="F32", shards=1, scales=OLMOE_SCALES,
        config=olmoe_config(64, 3, 4, 2, 32, 320, 16, 4, **OLMOE_TINY)),
    # hidden, layers, heads, kv_heads, intermediate (dense layer 1), moe_intermediate,
    # shared_expert_intermediate, vocab, experts, top-k
    "qwen2moe-tiny": dict(
        seed=QWEN2MOE_SEED, dtype="F32", shards=1,
        config=qwen2moe_config(64, 3, 4, 2, 128, 40, 96, 320, 8, 2, **QWEN2MOE_TINY)),
    # hidden, layers, heads, kv_heads, head_dim (4 * 32 = 128 != 64), intermediate
    # (dense layers 0, 2), moe_intermediate, vocab, experts, top-k
    "qwen3moe-tiny": dict(
        seed=QWEN3MOE_SEED, dtype="F32", shards=1,
        config=qwen3moe_config(64, 4, 4, 2, 32, 112, 48, 320, 8, 2, **QWEN3MOE_TINY)),
    # the same weights in transformers 5's fused expert layout, config.json as
    # transformers 5 writes it
    "qwen3moe-tiny-fused": dict(
        seed=QWEN3MOE_SEED, dtype="F32", shards=1, fused=True,
        config=v5_config(qwen3moe_config(64, 4, 4, 2, 32, 112, 48, 320, 8, 2, **QWEN3MOE_TINY))),
    "mixtral-tiny-fused": dict(
        seed=MIXTRAL_SEED, dtype="F32", shards=1, fused=True,
        config=v5_config(mixtral_config(**MIXTRAL_TINY))),
})

# OLMoE-shaped bench model (issue 5): OLMoE-1B-7B's layout and vocabulary
# (50304) at hidden 1024, 8 layers, 16 heads (MHA, as OLMoE), 64 experts of
# width 512, top-8, no renormalisation, no clip.
BENCH_OLMOE = dict(
    seed=302, dtype="F16", shards=1,
    config=olmoe_config(1024, 8, 16, 16, 512, 50304, 64, 8, norm_topk_prob=False, clip_qkv=None,
                        rope_theta=10000.0, max_pos=4096, eps=1e-5, torch_dtype="float16"))


# ---------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------

def tensor_list(cfg):
    """[(name, shape, kind, fan_in)] in the module order of the transformers model."""
    if cfg["architectures"][0] in ("MiCRoLlama", "MiCRoOLMo"):
        return micro_tensor_list(cfg)
    if cfg["model_type"] in FAMILY_MODEL_TYPES:
        return family_tensor_list(cfg)
    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // nh
    ff = cfg["intermediate_size"]
    moe = cfg["model_type"] == "mixtral"
    bias = cfg.get("attention_bias", False)
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], d), "embed", d)]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        for proj, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            out.append((p + "self_attn.%s_proj.weight" % proj, (rows, d), "qkv", d))
            if bias:
                out.append((p + "self_attn.%s_proj.bias" % proj, (rows,), "bias", d))
        out.append((p + "self_attn.o_proj.weight", (d, nh * hd), "o", nh * hd))
        if bias:
            out.append((p + "self_attn.o_proj.bias", (d,), "bias", nh * hd))
        if moe:
            out.append((p + "block_sparse_moe.gate.weight", (cfg["num_local_experts"], d), "router", d))
            for e in range(cfg["num_local_experts"]):
                q = p + "block_sparse_moe.experts.%d." % e
                out.append((q + "w1.weight", (ff, d), "up", d))
                out.append((q + "w2.weight", (d, ff), "down", ff))
                out.append((q + "w3.weight", (ff, d), "up", d))
        else:
            out.append((p + "mlp.gate_proj.weight", (ff, d), "up", d))
            out.append((p + "mlp.up_proj.weight", (ff, d), "up", d))
            out.append((p + "mlp.down_proj.weight", (d, ff), "down", ff))
        out.append((p + "input_layernorm.weight", (d,), "norm", d))
        out.append((p + "post_attention_layernorm.weight", (d,), "norm", d))
    out.append(("model.norm.weight", (d,), "norm", d))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (cfg["vocab_size"], d), "lm_head", d))
    return out


def make_tensor(seed, name, shape, kind, fan_in, scales):
    """The float32 values of one tensor, deterministic in (seed, name)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    z = rng.standard_normal(shape, dtype=np.float32)
    if kind == "norm":
        return (np.float32(1.0) + np.float32(scales["norm"]) * z).astype(np.float32)
    if kind in ("embed", "bias"):
        std = scales[kind]
    else:
        std = scales[kind] / np.sqrt(fan_in)
    z *= np.float32(std)
    return z


def write_model(outdir, spec, verbose=True):
    """Write config.json and the safetensors file(s) of one model description."""
    if spec.get("fused"):
        return write_fused_model(outdir, spec, verbose)
    t0 = time.time()
    cfg = spec["config"]
    dtype = spec["dtype"]
    scales = dict(DEFAULT_SCALES)
    scales.update(spec.get("scales", {}))
    os.makedirs(outdir, exist_ok=True)
    # remove stale checkpoint files from an earlier layout
    for fn in os.listdir(outdir):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(outdir, fn))
    with open(os.path.join(outdir, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    tensors = tensor_list(cfg)
    nshards = spec.get("shards", 1)
    # Shard assignment in module order, cutting at equal byte counts (as
    # transformers' max_shard_size splitting does, so a layer may straddle two
    # files).  Within a file the safetensors library orders tensors by name, so
    # do the same.
    total = sum(st.nbytes(dtype, s) for _, s, _, _ in tensors)
    files = []
    acc = 0
    cur = []
    for t in tensors:
        cur.append(t)
        acc += st.nbytes(dtype, t[1])
        if len(files) < nshards - 1 and acc >= total * (len(files) + 1) / nshards:
            files.append(cur)
            cur = []
    files.append(cur)
    assert len(files) == nshards
    weight_map = {}
    for fi, group in enumerate(files):
        fname = ("model.safetensors" if nshards == 1
                 else "model-%05d-of-%05d.safetensors" % (fi + 1, nshards))
        group = sorted(group, key=lambda t: t[0])
        specs = [(name, dtype, shape) for name, shape, _, _ in group]
        w = st.StreamWriter(os.path.join(outdir, fname), specs, metadata={"format": "pt"})
        for name, shape, kind, fan_in in group:
            w.write(name, make_tensor(spec["seed"], name, shape, kind, fan_in, scales))
            weight_map[name] = fname
        w.close()
    if nshards > 1:
        st.write_index(os.path.join(outdir, "model.safetensors.index.json"), weight_map, total)
    nparams = sum(int(np.prod(s)) for _, s, _, _ in tensors)
    size = sum(os.path.getsize(os.path.join(outdir, fn)) for fn in os.listdir(outdir))
    if verbose:
        print("%-40s %-5s %10d params %11d bytes %6.2fs" % (os.path.relpath(outdir, ROOT) if outdir.startswith(ROOT)
                                                          else outdir, dtype, nparams, size, time.time() - t0))
    return nparams, size


BUNDLED_README = """\
# tiny-mixtral

A small Mixtral-architecture checkpoint (MixtralForCausalLM layout: hidden 128,
4 layers, 4 attention heads / 2 key-value heads, 8 experts, top-2, intermediate
256, vocabulary 512, float16) with **random weights**. It has never been
trained: its output is noise, and its routing only shows the mechanics of a
top-2-of-8 router.

The weights were generated, byte for byte reproducibly, by

    python3 tools/gen_fixtures.py              # (re)writes all fixtures and this directory
    python3 tools/gen_fixtures.py --bundled DIR  # this model alone, into DIR

(numpy only; every tensor is drawn from numpy.random.default_rng seeded with
the model seed and the CRC-32 of the tensor name).

`tokenizer.json` is a byte-level BPE vocabulary of 512 ids (`<unk>`, `<s>`,
`</s>`, the 256 bytes and 253 merges) trained on the text of the GPL-3 licence
by `python3 tools/gen_tokenizer.py`.
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", metavar="DIR", help="write the ~1 GB f16 Mixtral-shaped bench model into DIR")
    ap.add_argument("--bundled", metavar="DIR", help="write the small random Mixtral (assets/tiny-mixtral) into DIR")
    ap.add_argument("--bench-olmoe", metavar="DIR",
                    help="write the ~1.9 GB f16 OLMoE-shaped bench model (64 experts, top-8) into DIR")
    ap.add_argument("--only", metavar="NAME", choices=sorted(FIXTURES), help="write one committed fixture")
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.bench:
        write_model(os.path.abspath(a.bench), BENCH)
    if a.bundled:
        write_model(os.path.abspath(a.bundled), BUNDLED)
    if a.bench_olmoe:
        write_model(os.path.abspath(a.bench_olmoe), BENCH_OLMOE)
    if a.only:
        write_model(os.path.join(ROOT, "tests", "fixtures", "models", a.only), FIXTURES[a.only])
    if not (a.bench or a.bundled or a.only or a.bench_olmoe):
        for name, spec in FIXTURES.items():
            write_model(os.path.join(ROOT, "tests", "fixtures", "models", name), spec)
        d = os.path.join(ROOT, "assets", "tiny-mixtral")
        write_model(d, BUNDLED)
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write(BUNDLED_README)
    print("done in %.2fs" % (time.time() - t0))


if __name__ == "__main__":
    main()
