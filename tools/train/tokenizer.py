#!/usr/bin/env python3
"""Byte-level BPE (GPT-2 style) trained on tools/train/data/tokenizer_corpus.txt.

Writes tokenizer.json / tokenizer_config.json in the layout of
tools/gen_tokenizer.py (ids 0-2 <unk> <s> </s>, 3-258 the bytes, then merges),
which moescope's tokenizer loads. Incremental pair counting so that 4k merges
train in well under a minute. Deterministic: ties go to the smallest pair.
Also provides encode() (a plain Python BPE encoder with the same pre-split)
used by the training script.
"""
import heapq
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gen_tokenizer import GPT2_PATTERN, SPECIAL, SPLIT, bytes_to_unicode  # noqa: E402


def train(text, n_merges):
    b2u = bytes_to_unicode()
    counts = {}
    for w in SPLIT.findall(text):
        counts[w] = counts.get(w, 0) + 1
    words = [[b2u[b] for b in w.encode("utf-8")] for w in sorted(counts)]
    freq = [counts[w] for w in sorted(counts)]
    pc, where = {}, {}
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pc[p] = pc.get(p, 0) + freq[i]
            where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in pc.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        c, p = heapq.heappop(heap)
        if pc.get(p, 0) != -c or c == 0:
            continue
        merges.append(p)
        a, b = p
        ab = a + b
        changed = set()
        for i in sorted(where.pop(p, ())):
            w = words[i]
            f = freq[i]
            for q in zip(w, w[1:]):
                pc[q] -= f
                changed.add(q)
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(ab)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for q in zip(out, out[1:]):
                pc[q] = pc.get(q, 0) + f
                changed.add(q)
                where.setdefault(q, set()).add(i)
        for q in changed:
            if pc.get(q, 0) > 0:
                heapq.heappush(heap, (-pc[q], q))
        pc.pop(p, None)
    return b2u, merges


def write(directory, text, vocab_size):
    b2u, merges = train(text, vocab_size - len(SPECIAL) - 256)
    vocab = {s: i for i, s in enumerate(SPECIAL)}
    for bt in range(256):
        vocab[b2u[bt]] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    assert len(vocab) == vocab_size, (len(vocab), vocab_size)
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(SPECIAL)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GPT2_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast",
              "clean_up_tokenization_spaces": False}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return vocab, merges


class Encoder:
    """BPE encoder for training (the training pre-split: ASCII classes)."""

    def __init__(self, directory):
        with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        self.vocab = tok["model"]["vocab"]
        self.rank = {tuple(m): i for i, m in enumerate(tok["model"]["merges"])}
        self.b2u = bytes_to_unicode()
        self.cache = {}
        self.inv = {i: s for s, i in self.vocab.items()}
        self.u2b = {u: b for b, u in self.b2u.items()}

    def _word(self, w):
        r = self.cache.get(w)
        if r is not None:
            return r
        parts = [self.b2u[b] for b in w.encode("utf-8")]
        while len(parts) > 1:
            best = min(((self.rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))))
            if best[0] == 1 << 30:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        r = [self.vocab[p] for p in parts]
        self.cache[w] = r
        return r

    def encode(self, text):
        out = []
        for w in SPLIT.findall(text):
            out.extend(self._word(w))
        return out

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            s = self.inv[i]
            if s in SPECIAL:
                continue
            bs.extend(self.u2b[c] for c in s)
        return bs.decode("utf-8", errors="replace")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "data", "tokenizer_corpus.txt"), encoding="utf-8") as f:
        text = f.read(6_000_000)
    v, m = write(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "assets", "micro-tiny"), text, 4096)
    print(len(v), "ids", len(m), "merges")
