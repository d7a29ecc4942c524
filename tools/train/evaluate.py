#!/usr/bin/env python3
"""Evidence for the bundled model, measured with moescope itself (build/moescope).

    python3 tools/train/evaluate.py [--model assets/micro-tiny] [--n-docs 50] [--n-arith 120]

Engine measurements (subprocess calls of build/moescope):
  * `analyze --json` on the held-out file of each domain: top-1 share per expert
    and layer (the paper's per-layer plot);
  * `run --save` on held-out documents: the majority vote over layers of every
    prompt token (moescope's colour expert) -> routing share per domain, and on
    held-out mixed texts the agreement of the vote with each sentence's label;
  * `run --temp 0 --print-ids` on held-out arithmetic prompts: exact match, with
    each expert switched off (--expert-off E) and with --k 1..4;
  * `perplexity --lines --json` on the held-out file of each domain: held-out
    loss per domain (nats/token, every document from a fresh context), with
    each expert switched off and with --k 1..4; on held-out arithmetic, the
    loss of the answer tokens (prompt+answer minus prompt alone);
  * engine vs torch: greedy continuations and router probabilities (the only
    use of the torch model here: a check that it is the same function).
Writes docs/bundled-model/results.json (then plots.py: results.md and PNGs).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from model import MiCRo  # noqa: E402
from tokenizer import Encoder  # noqa: E402


def moescope_loss(model_dir, files, extra=()):
    """Held-out loss (nats/token) per file through `moescope perplexity --lines`:
    {basename: (mean nll, tokens scored, tokens)}."""
    out = json.loads(sh(["perplexity", model_dir] + list(files) + ["--lines", "--json", "-t", "1"] + list(extra)))
    return {os.path.basename(f["file"]).replace(".txt", ""): (f["nll"], f["scored"], f["tokens"])
            for f in out["files"]}


CONFIGS = [("k=1", [])] + [("off %s" % d, ["--expert-off", str(e)]) for e, d in
                          enumerate(["logic", "social", "world", "language"])] + \
    [("k=%d" % k, ["--k", str(k)]) for k in (2, 3, 4)]


DOMAINS = ["logic", "social", "world", "language"]
MOE = os.environ.get("MOESCOPE", os.path.join(ROOT, "build", "moescope"))
DOCS = os.path.join(ROOT, "docs", "bundled-model")


def sh(args):
    r = subprocess.run([MOE] + args, capture_output=True)
    if r.returncode:
        raise RuntimeError("moescope %s: %s" % (" ".join(args[:3]), r.stderr[-500:]))
    return r.stdout.decode("utf-8", errors="replace")


def load_torch(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    m = MiCRo(cfg)
    from safetensors_reader import read  # noqa
    sd = read(os.path.join(model_dir, "model.safetensors"))
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    m.eval()
    return m


def transcript(model_dir, text, extra=(), n=1):
    with tempfile.NamedTemporaryFile(suffix=".json") as t:
        sh(["run", model_dir, "-p", text, "-n", str(n), "--temp", "0", "-t", "1", "--save", t.name,
            "--colour", "never"] + list(extra))
        with open(t.name) as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "assets", "micro-tiny"))
    ap.add_argument("--n-docs", type=int, default=50)
    ap.add_argument("--n-arith", type=int, default=120)
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(DOCS, exist_ok=True)
    t0 = time.time()
    enc = Encoder(a.model)
    res = {}
    held = os.path.join(HERE, "data", "heldout")

    # 1. analyze: per-layer top-1 shares per domain
    files = [os.path.join(held, d + ".txt") for d in DOMAINS + ["mixed"]]
    an = json.loads(sh(["analyze", a.model] + files + ["--json", "-t", "1"]))
    res["analyze_per_layer"] = {}
    for f in an["files"]:
        name = os.path.basename(f["file"]).replace(".txt", "")
        res["analyze_per_layer"][name] = {str(l["layer"]): l["share_top1"] for l in f["layers"]}
    res["analyze_tokens"] = {os.path.basename(f["file"]): f["tokens"] for f in an["files"]}
    print("analyze done %.0fs" % (time.time() - t0), flush=True)

    # 2. majority vote per token, from transcripts of held-out documents
    hdocs = []
    with open(os.path.join(HERE, "data", "heldout.jsonl")) as f:
        for line in f:
            hdocs.append(json.loads(line))
    vote = {d: np.zeros(4) for d in DOMAINS + ["mixed"]}
    agree = np.zeros((4, 4))  # label x vote on mixed texts
    for dom in DOMAINS + ["mixed"]:
        sel = [d for d in hdocs if d["domain"] == dom][: a.n_docs]
        for d in sel:
            units, n = [], 1
            for i, (lab, u) in enumerate(d["units"]):
                n += len(enc.encode(u if i == 0 else " " + u))
                if n > 250:
                    break
                units.append((lab, u))
            if not units:
                continue
            d = {"units": units}
            text = " ".join(u for _, u in units)
            tr = transcript(a.model, text)
            toks = [t for t in tr["tokens"] if t.get("prompt")][1:]  # drop <s>
            v = np.array([t["colour"] for t in toks])
            vote[dom] += np.bincount(v, minlength=4)
            if dom == "mixed":
                labs = []
                for i, (lab, u) in enumerate(d["units"]):
                    labs += [lab] * len(enc.encode(u if i == 0 else " " + u))
                if len(labs) == len(v):
                    for l, e in zip(labs, v):
                        agree[l, e] += 1
    res["vote_share"] = {d: (vote[d] / vote[d].sum()).round(4).tolist() for d in vote}
    res["mixed_label_vs_vote"] = agree.astype(int).tolist()
    res["mixed_agreement"] = float(np.trace(agree) / max(1, agree.sum()))
    print("votes done %.0fs" % (time.time() - t0), flush=True)

    # 3. arithmetic exact match via greedy run
    arith = [l.rstrip("\n").split("\t") for l in open(os.path.join(held, "arith.tsv"))][: a.n_arith]
    configs = [("k=1", [])] + [("off %s" % DOMAINS[e], ["--expert-off", str(e)]) for e in range(4)] + \
        [("k=%d" % k, ["--k", str(k)]) for k in (2, 3, 4)]
    res["arith"] = {}
    samples = {}
    for name, extra in configs:
        ok = 0
        for p, ans in arith:
            out = sh(["run", a.model, "-p", p, "-n", "3", "--temp", "0", "--print-ids", "-t", "1"] + extra)
            ids = [int(x) for x in out.split()]
            gen = enc.decode(ids)
            if gen.strip().split(".")[0].strip() == ans:
                ok += 1
            samples.setdefault(name, []).append((p, gen))
        res["arith"][name] = ok / len(arith)
        print("arith", name, res["arith"][name], "%.0fs" % (time.time() - t0), flush=True)
    res["arith_n"] = len(arith)
    res["arith_samples"] = {k: v[:5] for k, v in samples.items()}

    # 4. engine vs torch
    m = load_torch(a.model)
    prompts = ["Tom has 3 apples and buys 5 more.", "Mia lost her favourite book, so she",
               "The capital of France is", "The jury said that the city", "If x + 4 = 9, then x ="]
    cmp = []
    for p in prompts:
        ids_p = [1] + enc.encode(p)
        tr = transcript(a.model, p, n=20)
        eng_ids = [t["id"] for t in tr["tokens"]]
        gen_eng = [t["id"] for t in tr["tokens"] if not t.get("prompt")]
        assert eng_ids[: len(ids_p)] == ids_p, (eng_ids[: len(ids_p)], ids_p)
        x = torch.tensor([eng_ids])
        with torch.no_grad():
            logits, rl = m(x)
        probs_t = torch.stack([torch.softmax(r[0].float(), -1) for r in rl], 1).numpy()  # (T, L, E)
        probs_e = np.array([[l["probs"] for l in t["layers"]] for t in tr["tokens"]])
        n = min(len(probs_e), probs_t.shape[0])
        # torch greedy
        cur = list(ids_p)
        with torch.no_grad():
            for _ in range(len(gen_eng)):
                lg, _ = m(torch.tensor([cur]))
                cur.append(int(lg[0, -1].argmax()))
        gen_t = cur[len(ids_p):]
        top2 = torch.topk(logits[0, len(ids_p) - 1:], 2, -1).values
        cmp.append({"prompt": p, "engine": enc.decode(gen_eng), "torch": enc.decode(gen_t),
                    "greedy_equal": gen_t == gen_eng,
                    "router_prob_max_abs_diff": float(np.abs(probs_e[:n] - probs_t[:n]).max()),
                    "min_greedy_margin": float((top2[:, 0] - top2[:, 1]).min())})
    res["engine_vs_torch"] = cmp
    print("compare done %.0fs" % (time.time() - t0), flush=True)

    # 5. held-out loss (moescope perplexity) with ablation and k
    res["loss"] = {}
    res["loss_tokens"] = {}
    for name, extra in CONFIGS:
        r = moescope_loss(a.model, files, extra)
        res["loss"][name] = {d: v[0] for d, v in r.items()}
        res["loss_tokens"] = {d: v[1] for d, v in r.items()}
        print("loss", name, {d: round(v, 3) for d, v in res["loss"][name].items()}, "%.0fs" % (time.time() - t0),
              flush=True)
    # 6. answer loss on held-out arithmetic: the nll of " <answer>." after the
    # prompt, as (prompt+answer) minus (prompt alone), both scored causally
    with tempfile.TemporaryDirectory() as td:
        fq, fa = os.path.join(td, "arith_q.txt"), os.path.join(td, "arith_qa.txt")
        with open(fq, "w") as f:
            f.write("".join(p + "\n" for p, _ in arith))
        with open(fa, "w") as f:
            f.write("".join("%s %s.\n" % (p, ans) for p, ans in arith))
        res["arith_answer_nll"] = {}
        for name, extra in CONFIGS:
            r = moescope_loss(a.model, [fq, fa], extra)
            (nq, sq, _), (na, sa, _) = r["arith_q"], r["arith_qa"]
            res["arith_answer_nll"][name] = (na * sa - nq * sq) / (sa - sq)
            print("answer nll", name, round(res["arith_answer_nll"][name], 3), flush=True)
    res["seconds"] = time.time() - t0
    with open(os.path.join(DOCS, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", os.path.join(DOCS, "results.json"))


if __name__ == "__main__":
    main()
