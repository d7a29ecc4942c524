#!/usr/bin/env python3
"""Train the bundled tiny MiCRo model and export it to assets/micro-tiny/.

    python3 tools/train/train.py            # data, tokenizer, 3 stages, export
    python3 tools/train/train.py --steps 1000,300,600 --out DIR

Curriculum (MiCRo, Alkhamissi et al. 2025):
  1. experts: every token is routed to the expert of its label (sentence domain);
     all parameters but the routers trained on the LM loss.
  2. routers only: experts frozen, forward still routed by the labels, each
     layer's router trained with a cross-entropy against the token's label.
  3. end to end, free top-1 routing from the routers, LM loss only, no labels.
     With k = 1 the released weight p/(p + 1e-9) is 1 to float precision and
     passes (almost) no gradient to the router (d/dp = 1e-9/p^2), so in the
     released recipe stage 3 in effect trains the experts (and embeddings,
     head) under the routing learnt in stage 2. Default here: the same, made
     explicit (routers frozen). --stage3-router st instead makes the weight
     straight-through (value 1, gradient as if it were p: w = p - stop_grad(p)
     + 1, the Switch-style signal) with the routers at a tenth of the learning
     rate; run 1 used that and lost the social routing (see docs/bundled-model).
Deterministic (seeded; torch single thread).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from model import MiCRo  # noqa: E402
from tokenizer import Encoder  # noqa: E402
import safetensors_io as sio  # noqa: E402

DOMAINS = ["logic", "social", "world", "language"]
ROUTER3 = "frozen"

CONFIG = {
    "ablate": [], "architectures": ["MiCRoLlama"], "attention_bias": False, "attention_dropout": 0.0,
    "backbone_num_layers": 4, "bos_token_id": 1, "config_path": "configs/config_micro_llama.yml",
    "eos_token_id": 2, "expert_names": DOMAINS, "head_dim": 32, "hidden_act": "silu", "hidden_size": 128,
    "initializer_range": 0.02, "intermediate_size": 256, "jitter_noise": 0, "loss_method": "all",
    "max_position_embeddings": 256, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 4,
    "num_experts": 4, "num_experts_per_tok": 1, "num_hidden_layers": 16, "num_key_value_heads": 2,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "float32", "use_bfloat16": False, "use_cache": True,
    "use_router": True, "vocab_size": 4096,
}


def encode_docs(enc, path, limit=None):
    """-> ids, labels (np arrays): each doc is <s> + its units + </s> (label of <s> = first unit's, of </s> the last's)."""
    ids, labs, doms = [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if limit and n >= limit:
                break
            d = json.loads(line)
            first = True
            ids.append(1)
            labs.append(d["units"][0][0])
            doms.append(d["domain"])
            for lab, text in d["units"]:
                t = enc.encode(text if first else " " + text)
                first = False
                ids.extend(t)
                labs.extend([lab] * len(t))
            ids.append(2)  # </s>: documents end, so generation can stop
            labs.append(lab)
    return np.array(ids, dtype=np.int64), np.array(labs, dtype=np.int64), doms


def doc_list(enc, path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            ids, labs = [1], [d["units"][0][0]]
            for i, (lab, text) in enumerate(d["units"]):
                t = enc.encode(text if i == 0 else " " + text)
                ids.extend(t)
                labs.extend([lab] * len(t))
            out.append((d["domain"], ids[:256], labs[:256]))
    return out


def batches(ids, labs, B, T, steps, seed):
    g = np.random.default_rng(seed)
    n = (len(ids) - 1) // T
    for _ in range(steps):
        starts = g.integers(0, n, B) * T
        x = np.stack([ids[s:s + T] for s in starts])
        y = np.stack([ids[s + 1:s + T + 1] for s in starts])
        lab = np.stack([labs[s:s + T] for s in starts])
        yield torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lab)


def lr_at(i, n, base, warm=50):
    if i < warm:
        return base * (i + 1) / warm
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, n - warm))))


def run_stage(model, name, stage, data, steps, B, T, lr, seed, log):
    if stage == 1:
        params = [p for n, p in model.named_parameters() if ".gate." not in n]
        groups = [{"params": params, "lr": lr}]
    elif stage == 2:
        params = [p for n, p in model.named_parameters() if ".gate." in n]
        groups = [{"params": params, "lr": lr}]
    else:
        groups = [{"params": [p for n, p in model.named_parameters() if ".gate." not in n], "lr": lr}]
        if ROUTER3 == "st":
            groups.append({"params": [p for n, p in model.named_parameters() if ".gate." in n], "lr": lr * 0.1})
    for n, p in model.named_parameters():
        p.requires_grad_(any(p is q for g in groups for q in g["params"]))
    for g in groups:
        g["base"] = g["lr"]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.01 if stage != 2 else 0.0)
    t0 = time.time()
    model.train()
    for i, (x, y, lab) in enumerate(batches(*data, B, T, steps, seed)):
        for g in opt.param_groups:
            g["lr"] = lr_at(i, steps, g["base"])
        if stage == 1:
            logits, _ = model(x, route=lab)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
            extra = ""
        elif stage == 2:
            _, rl = model(x, route=lab)
            loss = sum(F.cross_entropy(r.reshape(-1, r.shape[-1]), lab.view(-1)) for r in rl) / len(rl)
            acc = sum((r.argmax(-1) == lab).float().mean().item() for r in rl) / len(rl)
            extra = " router-acc %.3f" % acc
        else:
            logits, rl = model(x, k=1, st=ROUTER3 == "st")
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
            agree = sum((r.argmax(-1) == lab).float().mean().item() for r in rl) / len(rl)
            extra = " label-agreement %.3f" % agree
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        if i % 50 == 0 or i == steps - 1:
            msg = "%s step %d/%d loss %.4f%s  %.0fs" % (name, i, steps, loss.item(), extra, time.time() - t0)
            print(msg, flush=True)
            log.append(msg)
    return time.time() - t0


@torch.no_grad()
def evaluate(model, docs, k=1, off=None, route_labels=False):
    """Held-out loss per domain (nats/token) and top-1 routing share per domain (majority vote)."""
    model.eval()
    tot, cnt = {}, {}
    share = {}
    for dom, ids, labs in docs:
        x = torch.tensor([ids[:-1]])
        y = torch.tensor([ids[1:]])
        logits, rl = model(x, route=torch.tensor([labs[:-1]]) if route_labels else None, k=k, off=off)
        l = F.cross_entropy(logits[0], y[0], reduction="sum").item()
        tot[dom] = tot.get(dom, 0.0) + l
        cnt[dom] = cnt.get(dom, 0) + y.shape[1]
        top = torch.stack([r[0].argmax(-1) for r in rl])  # (L, T)
        vote = torch.mode(top, 0).values
        s = share.setdefault(dom, np.zeros(4))
        s += np.bincount(vote.numpy(), minlength=4)
    return ({d: tot[d] / cnt[d] for d in tot},
            {d: (share[d] / share[d].sum()).round(4).tolist() for d in share})


def export(model, out, cfg):
    os.makedirs(out, exist_ok=True)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = sorted(sd)
    specs = [(n, "F32", sd[n].shape) for n in names]
    w = sio.StreamWriter(os.path.join(out, "model.safetensors"), specs)
    for n in names:
        w.write(n, sd[n])
    w.close()
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="230,160,100")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--out", default=None,
                    help="default: assets/micro-tiny, or tools/train/data/control-NAME for a control")
    ap.add_argument("--control", choices=["none", "general", "dense"], default="none",
                    help="general: stage-1 routing random per labelled segment instead of by label; "
                         "dense: one expert per layer (the same active size), no stage 2")
    ap.add_argument("--train-docs", type=int, default=40000)
    ap.add_argument("--stage3-router", choices=["frozen", "st"], default="frozen")
    a = ap.parse_args()
    if a.out is None:
        a.out = os.path.join(ROOT, "assets", "micro-tiny") if a.control == "none" else \
            os.path.join(HERE, "data", "control-" + a.control)
    global ROUTER3
    ROUTER3 = a.stage3_router
    torch.set_num_threads(1)
    torch.manual_seed(0)
    T0 = time.time()
    if not os.path.exists(os.path.join(HERE, "data", "train.jsonl")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_data.py")], check=True)
    if not os.path.exists(os.path.join(a.out, "tokenizer.json")):
        subprocess.run([sys.executable, os.path.join(HERE, "tokenizer.py"), a.out], check=True)
    enc = Encoder(a.out)
    ids, labs, _ = encode_docs(enc, os.path.join(HERE, "data", "train.jsonl"), a.train_docs)
    if a.control == "general":
        g = np.random.default_rng(5)
        change = np.concatenate([[True], labs[1:] != labs[:-1]])
        labs = g.integers(0, 4, change.sum())[np.cumsum(change) - 1]
    cfg = dict(CONFIG)
    if a.control == "dense":
        cfg.update(num_experts=1, num_hidden_layers=cfg["backbone_num_layers"], expert_names=["dense"])
        labs = np.zeros_like(labs)
    print("train tokens", len(ids), "per label", np.bincount(labs, minlength=4).tolist(), "%.0fs" % (time.time() - T0))
    held = doc_list(enc, os.path.join(HERE, "data", "heldout.jsonl"))
    model = MiCRo(cfg)
    print("parameters", sum(p.numel() for p in model.parameters()))
    s1, s2, s3 = [int(v) for v in a.steps.split(",")]
    if a.control == "dense":
        s2 = 0
    log = []
    times = {}
    times["stage1"] = run_stage(model, "stage1", 1, (ids, labs), s1, a.batch, a.seq, 3e-3, 1, log)
    times["stage2"] = run_stage(model, "stage2", 2, (ids, labs), s2, a.batch, a.seq, 3e-3, 2, log)
    for p in model.parameters():
        p.requires_grad_(True)
    ev2 = evaluate(model, held[::5])
    print("after stage 2: loss", ev2[0], "\nshare", ev2[1])
    times["stage3"] = run_stage(model, "stage3", 3, (ids, labs), s3, a.batch, a.seq, 1e-3, 3, log)
    ev = evaluate(model, held[::5])
    print("after stage 3: loss", ev[0], "\nshare", ev[1])
    export(model, a.out, cfg)
    # the default runs keep their state and report beside the data; others in their own directory
    default = a.out in (os.path.join(ROOT, "assets", "micro-tiny"), os.path.join(HERE, "data", "control-" + a.control))
    keep = os.path.join(HERE, "data") if default else a.out
    torch.save(model.state_dict(), os.path.join(keep, "model-%s.pt" % a.control))
    times["total"] = time.time() - T0
    rep = {"steps": [s1, s2, s3], "batch": a.batch, "seq": a.seq, "train_tokens_available": int(len(ids)),
           "tokens_seen": (s1 + s2 + s3) * a.batch * a.seq, "seconds": times, "control": a.control,
           "after_stage2": {"loss": ev2[0], "share": ev2[1]}, "after_stage3": {"loss": ev[0], "share": ev[1]},
           "log": log}
    with open(os.path.join(keep, "train-report-%s.json" % a.control), "w") as f:
        json.dump(rep, f, indent=1)
    print("times", times)


if __name__ == "__main__":
    main()
