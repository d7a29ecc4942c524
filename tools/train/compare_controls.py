#!/usr/bin/env python3
"""Held-out loss per domain: the shipped (specialised) model against the controls.

    python3 tools/train/train.py --control general --out /tmp/general   # random stage-1 routing
    python3 tools/train/train.py --control dense --out /tmp/dense       # no experts, same active size
    python3 tools/train/compare_controls.py

Reads tools/train/data/model-{none,general,dense}.pt (written by train.py); writes
docs/bundled-model/controls.json and prints a markdown table. Loss in torch
(moescope has no perplexity mode; see README.md here).
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from evaluate import torch_loss  # noqa: E402
from model import MiCRo  # noqa: E402
from tokenizer import Encoder  # noqa: E402
from train import CONFIG, doc_list  # noqa: E402

torch.set_num_threads(1)
enc = Encoder(os.path.join(ROOT, "assets", "micro-tiny"))
docs = sorted(doc_list(enc, os.path.join(HERE, "data", "heldout.jsonl"))[::2], key=lambda d: len(d[1]))
out = {}
for name in ("none", "general", "dense"):
    p = os.path.join(HERE, "data", "model-%s.pt" % name)
    if not os.path.exists(p):
        continue
    cfg = dict(CONFIG)
    if name == "dense":
        cfg.update(num_experts=1, num_hidden_layers=cfg["backbone_num_layers"], expert_names=["dense"])
    m = MiCRo(cfg)
    m.load_state_dict(torch.load(p))
    m.eval()
    out["specialised" if name == "none" else name] = torch_loss(m, docs)
    print(name, out["specialised" if name == "none" else name], flush=True)
with open(os.path.join(ROOT, "docs", "bundled-model", "controls.json"), "w") as f:
    json.dump(out, f, indent=1)
doms = ["logic", "social", "world", "language", "mixed"]
print("| model | " + " | ".join(doms) + " |")
print("|---|" + "---|" * len(doms))
for k, v in out.items():
    print("| %s | %s |" % (k, " | ".join("%.3f" % v[d] for d in doms)))
