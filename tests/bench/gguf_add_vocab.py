#!/usr/bin/env python3
"""Give a no_vocab GGUF file a vocabulary, keeping its tensors byte for byte.

    gguf_add_vocab.py IN.gguf OUT.gguf TOKENIZER_DIR [VOCAB_SIZE]

llama.cpp (as node-llama-cpp runs it) needs a tokenizer even to evaluate
token ids, and the bench models have none: this adds the tokenizer.ggml.*
keys that tools/gen_gguf_vocab.py writes for TOKENIZER_DIR (a tokenizer.json
with as many ids as the model's vocabulary: the llama2 test vocabulary has
the bench model's 32000; VOCAB_SIZE pads it with unused placeholder
tokens, as for the OLMoE-shaped model's 50304). Standard library only.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import gguf_edit  # noqa: E402
import gen_gguf_vocab as gv  # noqa: E402

src, dst, tokdir = sys.argv[1:4]
pad = int(sys.argv[4]) if len(sys.argv) > 4 else 0  # pad the vocabulary to this many ids
captured = {}
gv.write_gguf = lambda path, kvs: captured.setdefault("kvs", kvs)
gv.convert(tokdir, "/dev/null", "default")
raw = open(src, "rb").read()
version, kvs, tensors, align, data = gguf_edit.parse(raw)
kvs = [kv for kv in kvs if not kv[0].startswith(b"tokenizer.")]
def enc(vt, v):
    if vt == gv.T_ARRAY:
        et, vals = v
        b = struct.pack("<IQ", et, len(vals))
        if et == gv.T_I32: return b + struct.pack("<%di" % len(vals), *vals)
        if et == gv.T_F32: return b + struct.pack("<%df" % len(vals), *vals)
        return b + b"".join(gv.gguf_value(et, x) for x in vals)
    return gv.gguf_value(vt, v)
if pad:  # unused placeholder tokens up to the model's vocabulary size (type 5: UNUSED)
    fill = {"tokenizer.ggml.tokens": lambda i: "<unused_%d>" % i, "tokenizer.ggml.scores": lambda i: -1e9,
            "tokenizer.ggml.token_type": lambda i: 5}
    for kv in captured["kvs"]:
        if kv[0] in fill:
            et, vals = kv[2]
            kv_vals = list(vals) + [fill[kv[0]](i) for i in range(len(vals), pad)]
            captured["kvs"][captured["kvs"].index(kv)] = (kv[0], kv[1], (et, kv_vals))
for k, vt, v in captured["kvs"]:
    if k.startswith("tokenizer.") and k != "tokenizer.chat_template":
        kvs.append([k.encode(), vt, enc(vt, v)])
out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
for k, t, v in kvs:
    out += struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + v
for name, ne, gt, off in tensors:
    out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(ne))
    out += b"".join(struct.pack("<Q", n) for n in ne) + struct.pack("<IQ", gt, off)
out += b"\0" * (-len(out) % align)
with open(dst, "wb") as f:
    f.write(out); f.write(data)
print(dst, len(kvs), "kvs")
