#!/usr/bin/env python3
"""Figures and tables from docs/bundled-model/results.json (written by evaluate.py)."""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DOCS = os.path.join(ROOT, "docs", "bundled-model")
DOMAINS = ["logic", "social", "world", "language"]
COLS = ["#d62728", "#2ca02c", "#1f77b4", "#ff7f0e"]


def main():
    with open(os.path.join(DOCS, "results.json")) as f:
        r = json.load(f)
    tr = {}
    p = os.path.join(HERE, "data", "train-report-none.json")
    if os.path.exists(p):
        with open(p) as f:
            tr = json.load(f)
    md = ["# The bundled model: measurements", "",
          "Produced by `python3 tools/train/evaluate.py` (engine: `build/moescope analyze` / `run` / `perplexity`) and "
          "`python3 tools/train/plots.py`. Experts: 0 logic, 1 social, 2 world, 3 language.", ""]
    if tr:
        md += ["## Training", "", "| stage | steps | seconds |", "|---|---|---|"]
        for i, s in enumerate(("stage1", "stage2", "stage3")):
            md.append("| %s | %d | %.0f |" % (s, tr["steps"][i], tr["seconds"][s]))
        md += ["", "Batch %d x %d tokens; %d tokens seen; total wall time %.0f s (1 CPU thread)." %
               (tr["batch"], tr["seq"], tr["tokens_seen"], tr["seconds"]["total"]), ""]
    vs = r["vote_share"]
    md += ["## Routing share per domain (majority vote over layers, `moescope run --save`)", "",
           "| held-out text | " + " | ".join(DOMAINS) + " | own expert first? |", "|---|---|---|---|---|---|"]
    for i, d in enumerate(DOMAINS + ["mixed"]):
        row = vs[d]
        own = "" if d == "mixed" else ("yes" if int(np.argmax(row)) == i else "no")
        md.append("| %s | %s | %s |" % (d, " | ".join("%.1f%%" % (100 * x) for x in row), own))
    md += ["", "On held-out mixed texts the vote equals the sentence's label for %.1f%% of tokens "
           "(rows: label, columns: vote):" % (100 * r["mixed_agreement"]), "",
           "| label \\ vote | " + " | ".join(DOMAINS) + " |", "|---|---|---|---|---|"]
    for i, d in enumerate(DOMAINS):
        md.append("| %s | %s |" % (d, " | ".join(str(x) for x in r["mixed_label_vs_vote"][i])))
    md += ["", "## Top-1 share per layer (`moescope analyze --json`)", "",
           "![per-layer shares](per_layer.png)", ""]
    md += ["| held-out text | layer | " + " | ".join(DOMAINS) + " |", "|---|---|---|---|---|---|"]
    for d in DOMAINS:
        for l, s in r["analyze_per_layer"][d].items():
            md.append("| %s | %s | %s |" % (d, l, " | ".join("%.2f" % x for x in s)))
    md += ["", "## Ablation and test-time k", "",
           "Arithmetic exact match: %d held-out prompts (operand pairs never seen in training), "
           "greedy `moescope run --temp 0`, answer = the number before the next period. "
           "Held-out loss (nats/token): `moescope perplexity --lines` on the held-out file of each domain "
           "(%s tokens scored; every document from a fresh context), with `--expert-off E` or `--k K`. "
           "Answer NLL: the loss of the answer tokens after each arithmetic prompt (the same command on "
           "prompt+answer minus prompt alone)." % (r["arith_n"], ", ".join(
               "%s %d" % (d, n) for d, n in r.get("loss_tokens", {}).items())), "",
           "| setting | arithmetic EM | answer NLL | " + " | ".join("loss " + d for d in DOMAINS + ["mixed"]) + " |",
           "|---|---|---|---|---|---|---|---|"]
    for name in r["arith"]:
        L = r["loss"][name]
        md.append("| %s | %.1f%% | %.3f | %s |" % (name, 100 * r["arith"][name], r["arith_answer_nll"][name],
                                                  " | ".join("%.3f" % L[d] for d in DOMAINS + ["mixed"])))
    md += ["", "![ablation](ablation.png) ![k](topk.png) ![vote](vote_share.png)", "",
           "## Engine vs torch", "", "| prompt | greedy equal | router prob max abs diff | min greedy margin | engine continuation |",
           "|---|---|---|---|---|"]
    for c in r["engine_vs_torch"]:
        md.append("| %s | %s | %.1e | %.3f | %s |" % (c["prompt"], c["greedy_equal"], c["router_prob_max_abs_diff"],
                                                    c["min_greedy_margin"], c["engine"].replace("\n", " ").replace("|", "/")))
    cp = os.path.join(DOCS, "controls.json")
    if os.path.exists(cp):
        with open(cp) as f:
            ctl = json.load(f)
        md += ["", "## The paper's controls (held-out loss, nats/token; `tools/train/compare_controls.py`)", "",
               "| model | " + " | ".join(DOMAINS + ["mixed"]) + " |", "|---|---|---|---|---|---|"]
        for name, L in ctl.items():
            md.append("| %s | %s |" % (name, " | ".join("%.3f" % L[d] for d in DOMAINS + ["mixed"])))
    md += ["", "## Arithmetic samples (k=1)", ""]
    for p, g in r["arith_samples"]["k=1"]:
        md.append("- `%s` → `%s`" % (p, g.replace("\n", " ")))
    with open(os.path.join(DOCS, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: tables only")
        return
    # vote share
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(5)
    bottom = np.zeros(5)
    for e in range(4):
        v = np.array([vs[d][e] for d in DOMAINS + ["mixed"]])
        ax.bar(x, v, bottom=bottom, color=COLS[e], label=DOMAINS[e])
        bottom += v
    ax.set_xticks(x, DOMAINS + ["mixed"])
    ax.set_ylabel("share of tokens (vote)")
    ax.set_xlabel("held-out text")
    ax.legend(title="expert", fontsize=7, bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(os.path.join(DOCS, "vote_share.png"), dpi=100)
    # per layer
    fig, axs = plt.subplots(1, 4, figsize=(11, 2.8), sharey=True)
    for i, d in enumerate(DOMAINS):
        pl = r["analyze_per_layer"][d]
        layers = [l for l in pl if l != "all"]
        for e in range(4):
            axs[i].plot([int(l) for l in layers], [pl[l][e] for l in layers], "o-", color=COLS[e], label=DOMAINS[e])
        axs[i].set_title("%s text" % d)
        axs[i].set_xlabel("layer")
        axs[i].set_xticks([int(l) for l in layers])
    axs[0].set_ylabel("top-1 share")
    axs[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(DOCS, "per_layer.png"), dpi=100)
    # ablation
    names = ["k=1"] + ["off " + d for d in DOMAINS]
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.2))
    axs[0].bar(range(5), [r["arith_answer_nll"][n] for n in names], color=["grey"] + COLS)
    axs[0].set_xticks(range(5), ["none"] + DOMAINS)
    axs[0].set_xlabel("expert switched off")
    axs[0].set_ylabel("held-out arithmetic answer NLL")
    w = 0.15
    for j, n in enumerate(names):
        axs[1].bar(np.arange(4) + (j - 2) * w, [r["loss"][n][d] - r["loss"]["k=1"][d] for d in DOMAINS], w,
                   color=(["grey"] + COLS)[j], label="off " + n[4:] if j else "none")
    axs[1].set_xticks(range(4), DOMAINS)
    axs[1].set_xlabel("held-out text")
    axs[1].set_ylabel("loss increase (nats/token)")
    axs[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(DOCS, "ablation.png"), dpi=100)
    # k
    ks = ["k=1", "k=2", "k=3", "k=4"]
    fig, axs = plt.subplots(1, 2, figsize=(9, 3))
    axs[0].plot(range(1, 5), [r["arith_answer_nll"][k] for k in ks], "o-")
    axs[0].set_xlabel("k at test time")
    axs[0].set_ylabel("arithmetic answer NLL")
    for i, d in enumerate(DOMAINS):
        axs[1].plot(range(1, 5), [r["loss"][k][d] for k in ks], "o-", color=COLS[i], label=d)
    axs[1].set_xlabel("k at test time")
    axs[1].set_ylabel("held-out loss")
    axs[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(DOCS, "topk.png"), dpi=100)
    print("wrote figures to", DOCS)


if __name__ == "__main__":
    main()
