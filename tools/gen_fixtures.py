#!/usr/bin/env python3
"""Generate tiny random-weight Hugging Face checkpoints for moescope's tests.

    python3 tools/gen_fixtures.py               # all committed fixtures:
                                                #   tests/fixtures/models/* and assets/tiny-mixtral
    python3 tools/gen_fixtures.py --bench DIR   # Mixtral-shaped f16 bench model (~1 GB, not committed)
    python3 tools/gen_fixtures.py --bundled DIR # the small random Mixtral of assets/tiny-mixtral, into DIR
    python3 tools/gen_fixtures.py --only NAME   # one committed fixture (e.g. llama3-tiny)

Each output is a directory laid out as `save_pretrained` leaves it:
config.json (keys sorted, indent 2, as transformers writes it) and either
model.safetensors or model-0000i-of-0000n.safetensors + model.safetensors.index.json.
Tensor names and config keys are those of transformers' LlamaForCausalLM and
MixtralForCausalLM (the classic Mixtral checkpoint layout with
block_sparse_moe.experts.{e}.w1/w2/w3, as on the Hub).

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
# tensors
# ---------------------------------------------------------------------------

def tensor_list(cfg):
    """[(name, shape, kind, fan_in)] in the module order of the transformers model."""
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

It was generated, byte for byte reproducibly, by

    python3 tools/gen_fixtures.py              # (re)writes all fixtures and this directory
    python3 tools/gen_fixtures.py --bundled DIR  # this model alone, into DIR

(numpy only; every tensor is drawn from numpy.random.default_rng seeded with
the model seed and the CRC-32 of the tensor name).
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", metavar="DIR", help="write the ~1 GB f16 Mixtral-shaped bench model into DIR")
    ap.add_argument("--bundled", metavar="DIR", help="write the small random Mixtral (assets/tiny-mixtral) into DIR")
    ap.add_argument("--only", metavar="NAME", choices=sorted(FIXTURES), help="write one committed fixture")
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.bench:
        write_model(os.path.abspath(a.bench), BENCH)
    if a.bundled:
        write_model(os.path.abspath(a.bundled), BUNDLED)
    if a.only:
        write_model(os.path.join(ROOT, "tests", "fixtures", "models", a.only), FIXTURES[a.only])
    if not (a.bench or a.bundled or a.only):
        for name, spec in FIXTURES.items():
            write_model(os.path.join(ROOT, "tests", "fixtures", "models", name), spec)
        d = os.path.join(ROOT, "assets", "tiny-mixtral")
        write_model(d, BUNDLED)
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write(BUNDLED_README)
    print("done in %.2fs" % (time.time() - t0))


if __name__ == "__main__":
    main()
