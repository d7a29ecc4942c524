#!/usr/bin/env python3
"""Vocabulary-only GGUF files from a Hugging Face tokenizer directory
(tokenizer.json + tokenizer_config.json), as llama.cpp's converter writes
the tokenizer.ggml.* keys (standard library only).

    python3 tools/gen_gguf_vocab.py SRC_DIR OUT.gguf [--pre NAME]
    python3 tools/gen_gguf_vocab.py          # the committed fixture(s)

Like llama.cpp's models/ggml-vocab-*.gguf, the files hold metadata and no
tensors. The conventions follow convert_hf_to_gguf.py (get_vocab_base,
does_token_look_special, _set_vocab_gpt2) and gguf-py's vocab.py
(SpecialVocab):

byte-level BPE (model "gpt2", e.g. Qwen, Llama 3)
    tokens: the tokenizer.json pieces by id (byte-level characters as they
    are); an id with no piece is "[PAD<id>]" of type UNUSED. An added token
    is CONTROL when it is special or looks special (<|...|>, <｜...｜>,
    <pad>, <mask>, <unused...>), USER_DEFINED otherwise; other tokens are
    NORMAL. merges: "a b" strings in the file's order. tokenizer.ggml.pre
    names the pre-tokenizer (the converter finds it from a hash of the
    tokenizer's output; here it is given with --pre).

SentencePiece BPE (model "llama", e.g. Llama 2, Mistral)
    tokens by id; <unk> is UNKNOWN, <0xNN> BYTE, the other special added
    tokens CONTROL. llama.cpp merges these by score, highest first. A
    tokenizer.model holds the scores; from tokenizer.json alone the
    converter (LlamaHfVocab) writes -1000 for every token, which leaves
    llama.cpp nothing to merge by. Here a token's score is minus the rank
    of the first merge in tokenizer.json that makes it (0 for tokens no
    merge makes), which orders the merges as the tokenizer.model's scores
    do: transformers derives tokenizer.json's merges by sorting on those
    scores. add_space_prefix is true when the normalizer prepends U+2581.

Special token ids come from tokenizer_config.json's *_token entries
matched against the added tokens (SpecialVocab). add_bos_token and
add_eos_token say what tokenizer.json's post-processor adds (a
TemplateProcessing that starts or ends with a special token; nothing for
any other), or without a post-processor what tokenizer_config.json says;
they are always written, so that llama.cpp's per-pre-tokenizer default
(BOS on for llama-bpe) does not apply where tokenizer.json adds none. chat_template is copied when tokenizer_config.json has one.
"""

import json
import os
import re
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def gguf_str(x):
    b = x.encode("utf-8") if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def gguf_value(vt, v):
    if vt == T_STRING:
        return gguf_str(v)
    if vt == T_U32:
        return struct.pack("<I", v)
    if vt == T_I32:
        return struct.pack("<i", v)
    if vt == T_F32:
        return struct.pack("<f", v)
    if vt == T_BOOL:
        return struct.pack("<B", int(bool(v)))
    raise ValueError(vt)


def gguf_array(v):
    """The bytes of an array value (elem vtype, values), after its type."""
    et, vals = v
    out = struct.pack("<IQ", et, len(vals))
    if et == T_I32:
        return out + struct.pack("<%di" % len(vals), *vals)
    if et == T_F32:
        return out + struct.pack("<%df" % len(vals), *vals)
    return out + b"".join(gguf_value(et, x) for x in vals)


def write_gguf(path, kvs):
    """kvs: (key, vtype, value) or (key, T_ARRAY, (elem vtype, values))."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)))
    for key, vt, v in kvs:
        out += gguf_str(key) + struct.pack("<I", vt)
        out += gguf_array(v) if vt == T_ARRAY else gguf_value(vt, v)
    with open(path + ".tmp", "wb") as f:
        f.write(out)
    os.replace(path + ".tmp", path)


def looks_special(t):
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<｜") and t.endswith("｜>")) or (t.startswith("<unused") and t.endswith(">")))


def config_token(cfg, typ):
    x = cfg.get(typ + "_token")
    return x.get("content") if isinstance(x, dict) else x


def template_adds(pp):
    """(bos, eos) added by a post-processor, or (None, None) when it says nothing."""
    if not isinstance(pp, dict):
        return None, None
    procs = pp.get("processors", [pp]) if pp.get("type") == "Sequence" else [pp]
    for p in procs:
        if p.get("type") == "TemplateProcessing":
            single = p.get("single", [])
            first = bool(single) and "SpecialToken" in single[0]
            last = len(single) > 1 and "SpecialToken" in single[-1]
            return first, last
    return False, False


def convert(src, out, pre):
    write_gguf(out, vocab_kvs(src, pre))


def vocab_kvs(src, pre):
    """The metadata convert() writes, as (key, vtype, value) tuples."""
    tj = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
    cpath = os.path.join(src, "tokenizer_config.json")
    cfg = json.load(open(cpath, encoding="utf-8")) if os.path.exists(cpath) else {}
    model = tj["model"]
    if model.get("type") != "BPE":
        raise SystemExit(f"{src}: model type {model.get('type')} is not BPE")
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    by_id = {i: t for t, i in model["vocab"].items()}
    for i, a in added.items():
        by_id[i] = a["content"]
    n = max(by_id) + 1
    merges = [m if isinstance(m, str) else " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                                                    for part in m) for m in model["merges"]]
    spm = bool(model.get("byte_fallback"))

    tokens, types, scores = [], [], []
    if spm:
        rank_of = {}
        for r, m in enumerate(merges):
            a, b = m.split(" ")
            rank_of.setdefault(a + b, r)
    for i in range(n):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            scores.append(-1000.0)
            continue
        if spm:
            if i in added and added[i]["content"] == model.get("unk_token"):
                ty = UNKNOWN
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t):
                ty = BYTE
            elif i in added and added[i].get("special"):
                ty = CONTROL
            elif i in added:
                ty = USER_DEFINED
            else:
                ty = NORMAL
            scores.append(-float(rank_of[t]) if t in rank_of and ty == NORMAL else 0.0)
        elif i in added:
            ty = CONTROL if added[i].get("special") or looks_special(t) else USER_DEFINED
        else:
            ty = NORMAL
        tokens.append(t)
        types.append(ty)

    kvs = [("general.architecture", T_STRING, "llama"),
           ("general.name", T_STRING, os.path.basename(os.path.normpath(src)) + " vocabulary"),
           ("tokenizer.ggml.model", T_STRING, "llama" if spm else "gpt2")]
    if not spm:
        kvs.append(("tokenizer.ggml.pre", T_STRING, pre or "default"))
    kvs.append(("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)))
    if spm:
        kvs.append(("tokenizer.ggml.scores", T_ARRAY, (T_F32, scores)))
    kvs.append(("tokenizer.ggml.token_type", T_ARRAY, (T_I32, types)))
    if not spm:
        kvs.append(("tokenizer.ggml.merges", T_ARRAY, (T_STRING, merges)))
    content = {a["content"]: i for i, a in added.items()}
    keys = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
            "pad": "padding_token_id", "cls": "cls_token_id", "mask": "mask_token_id"}  # gguf-py's Keys.Tokenizer
    for typ, key in keys.items():
        c = config_token(cfg, typ)
        if c is not None and c in content:
            kvs.append(("tokenizer.ggml." + key, T_U32, content[c]))
    add_bos, add_eos = template_adds(tj.get("post_processor"))
    if add_bos is None:  # no post-processor: tokenizer_config.json says
        add_bos, add_eos = cfg.get("add_bos_token", False), cfg.get("add_eos_token", False)
    kvs.append(("tokenizer.ggml.add_bos_token", T_BOOL, bool(add_bos)))
    kvs.append(("tokenizer.ggml.add_eos_token", T_BOOL, bool(add_eos)))
    if spm:
        norm = json.dumps(tj.get("normalizer")) + json.dumps(tj.get("pre_tokenizer"))
        kvs.append(("tokenizer.ggml.add_space_prefix", T_BOOL, "\\u2581" in norm or "\u2581" in norm))
    ct = cfg.get("chat_template")
    if isinstance(ct, list):
        ct = next((x["template"] for x in ct if x.get("name") == "default"), None)
    if isinstance(ct, str):
        kvs.append(("tokenizer.chat_template", T_STRING, ct))
    return kvs


# (tokenizer directory, pre-tokenizer name, committed file)
FIXTURES = [("tests/fixtures/tokenizer/llama2", None, "tests/fixtures/gguf/vocab-llama2.gguf")]

def pop_pre(args):
    """The value of a --pre NAME option (None without one), taken out of args."""
    if "--pre" not in args:
        return None
    k = args.index("--pre")
    if k + 1 == len(args):
        raise SystemExit("--pre needs a pre-tokenizer name")
    pre = args[k + 1]
    del args[k:k + 2]
    return pre


if __name__ == "__main__":
    args = sys.argv[1:]
    pre = pop_pre(args)
    if len(args) == 2:
        convert(args[0], args[1], pre)
    elif not args:
        for src, p, dst in FIXTURES:
            convert(os.path.join(ROOT, src), os.path.join(ROOT, dst), p)
            print(dst, os.path.getsize(os.path.join(ROOT, dst)), "bytes")
    else:
        raise SystemExit(__doc__)
