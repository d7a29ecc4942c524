#!/usr/bin/env python3
"""Held-out loss per domain: the shipped (specialised) model against the paper's two controls.

    python3 tools/train/train.py --control general    # random stage-1 routing -> data/control-general
    python3 tools/train/train.py --control dense      # no experts, same active size -> data/control-dense
    python3 tools/train/compare_controls.py [--model assets/micro-tiny]

Every loss is measured by the engine: `moescope perplexity --lines --json` on the
held-out file of each domain (each document from a fresh context), as evaluate.py
does for the shipped model. Writes docs/bundled-model/controls.json and prints a
markdown table.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from evaluate import DOMAINS, moescope_loss  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "assets", "micro-tiny"))
    a = ap.parse_args()
    held = os.path.join(HERE, "data", "heldout")
    files = [os.path.join(held, d + ".txt") for d in DOMAINS + ["mixed"]]
    out = {}
    for name, d in (("specialised", a.model), ("general", os.path.join(HERE, "data", "control-general")),
                    ("dense", os.path.join(HERE, "data", "control-dense"))):
        if not os.path.exists(os.path.join(d, "config.json")):
            print("%s: %s is missing (train it first, see above)" % (name, d), file=sys.stderr)
            continue
        out[name] = {k: v[0] for k, v in moescope_loss(d, files).items()}
        print(name, {k: round(v, 3) for k, v in out[name].items()}, flush=True)
    with open(os.path.join(ROOT, "docs", "bundled-model", "controls.json"), "w") as f:
        json.dump(out, f, indent=1)
    doms = DOMAINS + ["mixed"]
    print("| model | " + " | ".join(doms) + " |")
    print("|---|" + "---|" * len(doms))
    for k, v in out.items():
        print("| %s | %s |" % (k, " | ".join("%.3f" % v[d] for d in doms)))


if __name__ == "__main__":
    main()
