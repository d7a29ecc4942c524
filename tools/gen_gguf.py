#!/usr/bin/env python3
"""GGUF fixtures from the tiny safetensors fixtures (numpy only).

    python3 tools/gen_gguf.py        # tests/fixtures/gguf/*.gguf  (deterministic)

Written from ggml's docs/gguf.md, not with the gguf-py package: a header
("GGUF", version 3, tensor and metadata counts), the metadata, the tensor
infos (name, dimensions innermost first, ggml type, offset), then the data
section, every tensor padded to general.alignment (32). The files carry no
vocabulary (tokenizer.ggml.model = "no_vocab" with {arch}.vocab_size), as
llama.cpp's own test models.

Names and keys follow llama.cpp (gguf-py/gguf/constants.py, tensor_mapping.py;
convert_hf_to_gguf.py): 1-D tensors and routers (ffn_gate_inp) stay F32; the
Q and K projections of the `llama` architecture are permuted as
LlamaModel.permute does, from rotate-half pairs to interleaved pairs.

Q8_0 (ggml-common.h block_q8_0; ggml-quants.c quantize_row_q8_0_ref): blocks
of 32 consecutive values of a row, d = max|x| / 127 stored as f16, and
q = round-half-away(x / d) as int8. A tensor whose rows are not a multiple of
32 falls back to F16, as llama-quantize does. Each Q8_0 file comes with a
"-deq" twin holding the same quantised values widened to F32, so the
engine's quantised kernels can be checked exactly, apart from the
quantisation error.
"""

import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
ALIGN = 32

GGML = {"F32": 0, "F16": 1, "Q8_0": 8, "BF16": 30}
T_U32, T_I32, T_F32, T_BOOL, T_STRING = 4, 5, 6, 7, 8


def read_safetensors(d):
    """Every tensor of a fixture directory as float32 (BF16 widened exactly)
    plus its original dtype tag."""
    out = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        raw = open(os.path.join(d, fn), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            buf = raw[base + b:base + e]
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(buf, "<f4")
            elif dt == "F16":
                a = np.frombuffer(buf, "<f2").astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise SystemExit(f"{fn}: {name}: dtype {dt}")
            out[name] = (a.reshape(info["shape"]).astype(np.float32), dt)
    return out


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: rows (head, half, i) -> (head, i, half)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def f32_to_bf16_bits(x):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + ((u >> 16) & 1) + 0x7FFF) >> 16).astype(np.uint16)


def q8_0(x):
    """Rows of x (..., cols), cols % 32 == 0 -> Q8_0 bytes and the dequantised values."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(blocks).max(axis=1)
    d = (amax / 127).astype(np.float32)
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
    v = blocks * inv[:, None]
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)  # C roundf
    d16 = d.astype(np.float16)
    raw = np.zeros((blocks.shape[0], 34), np.uint8)
    raw[:, :2] = d16.view(np.uint8).reshape(-1, 2)
    raw[:, 2:] = q.view(np.uint8)
    deq = (q.astype(np.float32) * d16.astype(np.float32)[:, None]).reshape(x.shape)
    return raw.tobytes(), deq


def encode(x, kind):
    """(ggml type, bytes, values the engine will see) of x in `kind`."""
    if kind == "Q8_0" and x.shape[-1] % 32 == 0:
        raw, deq = q8_0(x)
        return GGML["Q8_0"], raw, deq
    if kind in ("Q8_0", "F16"):
        h = x.astype("<f2")
        return GGML["F16"], h.tobytes(), h.astype(np.float32)
    if kind == "BF16":
        b = f32_to_bf16_bits(x)
        return GGML["BF16"], b.astype("<u2").tobytes(), (b.astype(np.uint32) << 16).view(np.float32)
    return GGML["F32"], x.astype("<f4").tobytes(), x


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []  # (name, numpy shape, ggml type, bytes)

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    def tensor(self, name, shape, gtype, data):
        self.tensors.append((name, tuple(shape), gtype, data))

    def save(self, path):
        def s(x):
            b = x.encode()
            return struct.pack("<Q", len(b)) + b

        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv)))
        for key, vt, v in self.kv:
            out += s(key) + struct.pack("<I", vt)
            if vt == T_STRING:
                out += s(v)
            elif vt == T_U32:
                out += struct.pack("<I", v)
            elif vt == T_I32:
                out += struct.pack("<i", v)
            elif vt == T_F32:
                out += struct.pack("<f", v)
            elif vt == T_BOOL:
                out += struct.pack("<B", int(v))
        off = 0
        for name, shape, gt, data in self.tensors:
            ne = list(reversed(shape))  # ggml: innermost first
            out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            out += struct.pack("<IQ", gt, off)
            off += (len(data) + ALIGN - 1) // ALIGN * ALIGN
        out += b"\0" * (-len(out) % ALIGN)
        for _, _, _, data in self.tensors:
            out += data + b"\0" * (-len(data) % ALIGN)
        with open(path + ".tmp", "wb") as f:
            f.write(out)
        os.replace(path + ".tmp", path)


ARCH = {"MixtralForCausalLM": "llama", "LlamaForCausalLM": "llama", "Qwen2MoeForCausalLM": "qwen2moe",
        "Qwen3MoeForCausalLM": "qwen3moe", "OlmoeForCausalLM": "olmoe"}


def convert(src, dst, kind, merged=True):
    cfg = json.load(open(os.path.join(MODELS, src, "config.json")))
    w = read_safetensors(os.path.join(MODELS, src))
    arch = ARCH[cfg["architectures"][0]]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    dim, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or dim // nh
    ne = cfg.get("num_local_experts", cfg.get("num_experts", 0))
    g = Writer()
    g.add("general.architecture", T_STRING, arch)
    g.add("general.name", T_STRING, src)
    a = arch + "."
    g.add(a + "block_count", T_U32, L)
    g.add(a + "context_length", T_U32, cfg["max_position_embeddings"])
    g.add(a + "embedding_length", T_U32, dim)
    g.add(a + "feed_forward_length", T_U32, cfg["intermediate_size"])
    g.add(a + "attention.head_count", T_U32, nh)
    g.add(a + "attention.head_count_kv", T_U32, nkv)
    g.add(a + "attention.key_length", T_U32, hd)
    g.add(a + "attention.value_length", T_U32, hd)
    g.add(a + "rope.dimension_count", T_U32, hd)
    g.add(a + "rope.freq_base", T_F32, cfg.get("rope_theta", 10000.0))
    g.add(a + "attention.layer_norm_rms_epsilon", T_F32, cfg["rms_norm_eps"])
    g.add(a + "vocab_size", T_U32, cfg["vocab_size"])
    if ne:
        g.add(a + "expert_count", T_U32, ne)
        g.add(a + "expert_used_count", T_U32, cfg["num_experts_per_tok"])
    if "moe_intermediate_size" in cfg:
        g.add(a + "expert_feed_forward_length", T_U32, cfg["moe_intermediate_size"])
    if cfg.get("shared_expert_intermediate_size"):
        g.add(a + "expert_shared_feed_forward_length", T_U32, cfg["shared_expert_intermediate_size"])
    if cfg.get("clip_qkv"):
        g.add(a + "attention.clamp_kqv", T_F32, cfg["clip_qkv"])
    g.add("tokenizer.ggml.model", T_STRING, "no_vocab")
    g.add("tokenizer.ggml.bos_token_id", T_U32, cfg["bos_token_id"])
    g.add("tokenizer.ggml.eos_token_id", T_U32, cfg["eos_token_id"])

    deq = Writer()
    deq.kv = g.kv

    def put(name, x, weight=True):
        gt, data, seen = encode(x, kind if weight and x.ndim >= 2 else "F32")
        g.tensor(name, x.shape, gt, data)
        deq.tensor(name, x.shape, GGML["F32"], seen.astype("<f4").tobytes())

    put("token_embd.weight", w["model.embed_tokens.weight"][0])
    for l in range(L):
        p = f"model.layers.{l}."
        b = f"blk.{l}."
        put(b + "attn_norm.weight", w[p + "input_layernorm.weight"][0])
        for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")):
            for part in ("weight", "bias"):
                if p + f"self_attn.{hf}.{part}" not in w:
                    continue
                x = w[p + f"self_attn.{hf}.{part}"][0]
                if arch == "llama" and hf in ("q_proj", "k_proj"):
                    x = permute(x, nh if hf == "q_proj" else nkv)
                put(b + f"{gg}.{part}", x)
        for hf, gg in (("q_norm", "attn_q_norm"), ("k_norm", "attn_k_norm")):
            if p + f"self_attn.{hf}.weight" in w:
                put(b + f"{gg}.weight", w[p + f"self_attn.{hf}.weight"][0])
        put(b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"][0])
        moe = "block_sparse_moe." if p + "block_sparse_moe.gate.weight" in w else "mlp."
        if p + moe + "gate.weight" in w:
            g_router = w[p + moe + "gate.weight"][0]
            gt, data, seen = encode(g_router, "F32")  # routers stay F32, as llama-quantize keeps them
            g.tensor(b + "ffn_gate_inp.weight", g_router.shape, gt, data)
            deq.tensor(b + "ffn_gate_inp.weight", g_router.shape, gt, data)
            names = ("w1", "w3", "w2") if moe == "block_sparse_moe." else ("gate_proj", "up_proj", "down_proj")
            for hf, gg in zip(names, ("gate", "up", "down")):
                xs = [w[p + moe + f"experts.{e}.{hf}.weight"][0] for e in range(ne)]
                if merged:
                    put(b + f"ffn_{gg}_exps.weight", np.stack(xs))
                else:
                    for e in range(ne):
                        put(b + f"ffn_{gg}.{e}.weight", xs[e])
            if p + "mlp.shared_expert.gate_proj.weight" in w:
                for gg in ("gate", "up", "down"):
                    put(b + f"ffn_{gg}_shexp.weight", w[p + f"mlp.shared_expert.{gg}_proj.weight"][0])
                put(b + "ffn_gate_inp_shexp.weight", w[p + "mlp.shared_expert_gate.weight"][0].reshape(-1))
        else:
            for gg in ("gate", "up", "down"):
                put(b + f"ffn_{gg}.weight", w[p + f"mlp.{gg}_proj.weight"][0])
    put("output_norm.weight", w["model.norm.weight"][0])
    if "lm_head.weight" in w:
        put("output.weight", w["lm_head.weight"][0])
    os.makedirs(OUT, exist_ok=True)
    g.save(os.path.join(OUT, dst + ".gguf"))
    if kind == "Q8_0":
        deq.save(os.path.join(OUT, dst + "-deq.gguf"))


FIXTURES = [
    # (safetensors fixture, GGUF name, weight type, merged experts)
    ("mixtral-tiny", "mixtral-tiny-f32", "F32", True),
    ("mixtral-tiny", "mixtral-tiny-f32-split", "F32", False),
    ("mixtral-tiny-f16", "mixtral-tiny-f16", "F16", True),
    ("mixtral-tiny-bf16", "mixtral-tiny-bf16", "BF16", True),
    ("mixtral-tiny", "mixtral-tiny-q8_0", "Q8_0", True),
    ("llama-tiny", "llama-tiny-f32", "F32", True),
    ("qwen2moe-tiny", "qwen2moe-tiny-f32", "F32", True),
    ("qwen2moe-tiny", "qwen2moe-tiny-q8_0", "Q8_0", True),
    ("qwen3moe-tiny", "qwen3moe-tiny-f32", "F32", True),
    ("qwen3moe-tiny", "qwen3moe-tiny-q8_0", "Q8_0", True),
    ("olmoe-tiny", "olmoe-tiny-f32", "F32", True),
    ("olmoe-tiny", "olmoe-tiny-q8_0", "Q8_0", True),
]

if __name__ == "__main__":
    for src, dst, kind, merged in FIXTURES:
        if len(sys.argv) > 1 and dst not in sys.argv[1:]:
            continue
        convert(src, dst, kind, merged)
        print(dst)
