#!/usr/bin/env python3
"""Independent float64 reference for moescope's model tests.

    python3 tests/reference/reference.py                 # self-check, then regenerate all golden files
    python3 tests/reference/reference.py --self-check    # only the self-check
    python3 tests/reference/reference.py MODEL_DIR...    # golden files for these model directories only
    python3 tests/reference/reference.py --stats MODEL_DIR   # print routing / logit statistics
    python3 tests/reference/reference.py --f32-check     # this reference run in float32 vs the golden files
    python3 tests/reference/reference.py --controls      # self-check, then only the routing-controls golden files

A plain torch (CPU, float64) implementation of the forward passes of
transformers' LlamaForCausalLM and MixtralForCausalLM, written from
src/transformers/models/llama/modeling_llama.py,
src/transformers/models/mixtral/modeling_mixtral.py,
src/transformers/modeling_rope_utils.py and (sliding-window attention)
src/transformers/masking_utils.py (see README.md next to this file for the
function-by-function correspondence).  It shares no code with the C engine or
with tools/gen_fixtures.py: it parses config.json and the safetensors files
itself, with numpy, and widens F16/BF16 weights exactly to float64.

Golden files go to tests/fixtures/golden/<model>.json, and (routing
controls: expert bias, mask, force, neuron offsets; see Controls) to
tests/fixtures/golden/controls-<model>.json for mixtral-tiny and llama-tiny.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

torch.set_grad_enabled(False)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")

FIXTURE_NAMES = ["llama-tiny", "llama3-tiny", "mixtral-tiny", "mixtral-tiny-f16", "mixtral-tiny-bf16",
                 "mixtral-tiny-swa"]
PROMPT_SEED = 20240601
PROMPT_LENGTHS = (1, 7, 40)
PROMPT_VOCAB = 320          # prompts are drawn from [1, PROMPT_VOCAB): the same ids for every fixture
N_GREEDY = 16
MOE_KS = (1, 2, 8)
DT = torch.float64

# ---------------------------------------------------------------------------
# checkpoint reading (numpy, independent of tools/safetensors_io.py)
# ---------------------------------------------------------------------------


def read_safetensors(path):
    """Return {name: float64 numpy array}.  Validates the layout strictly."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError("%s: too short" % path)
    n = int.from_bytes(buf[:8], "little")
    if 8 + n > len(buf):
        raise ValueError("%s: header length %d past end of file" % (path, n))
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    base = 8 + n
    data_len = len(buf) - base
    out = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        raw = np.frombuffer(buf, dtype=np.uint8, count=e - b, offset=base + b)
        if dtype == "F32":
            assert e - b == 4 * count
            a = raw.view("<f4").astype(np.float64)
        elif dtype == "F16":
            assert e - b == 2 * count
            a = raw.view("<f2").astype(np.float64)
        elif dtype == "BF16":
            assert e - b == 2 * count
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise ValueError("%s: unsupported dtype %s" % (name, dtype))
        out[name] = a.reshape(shape)
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError("%s: hole or overlap in data section at %d" % (path, b))
        pos = e
    if pos != data_len:
        raise ValueError("%s: data section is %d bytes, tensors cover %d" % (path, data_len, pos))
    return out


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        for fn in sorted(set(wm.values())):
            part = read_safetensors(os.path.join(model_dir, fn))
            for k in part:
                if wm.get(k) != fn:
                    raise ValueError("%s: tensor %s not mapped to this file by the index" % (fn, k))
            weights.update(part)
        missing = set(wm) - set(weights)
        if missing:
            raise ValueError("index names tensors not found: %s" % sorted(missing)[:5])
    else:
        weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    W = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    return Model(cfg, W)


# ---------------------------------------------------------------------------
# building blocks (float64 throughout)
# ---------------------------------------------------------------------------


def rms_norm(x, w, eps):
    # LlamaRMSNorm / MixtralRMSNorm: x * rsqrt(mean(x^2) + eps) * weight.
    # (transformers does this in float32 and casts back; here all is float64.)
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def default_inv_freq(theta, dim):
    # _compute_default_rope_parameters: 1 / base^(arange(0, dim, 2) / dim)
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=DT) / dim))


def llama3_inv_freq(theta, dim, rs):
    # _compute_llama3_parameters
    inv_freq = default_inv_freq(theta, dim)
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # wavelen < high_freq_wavelen: keep; wavelen > low_freq_wavelen: divide by factor
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    # in between: interpolate with a smooth factor
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(inv_freq, T):
    # RotaryEmbedding.forward: freqs = pos * inv_freq; emb = cat(freqs, freqs)
    pos = torch.arange(T, dtype=DT)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    # x: (heads, T, head_dim); apply_rotary_pos_emb (non-interleaved halves)
    return x * cos[None] + rotate_half(x) * sin[None]


def repeat_kv(x, n_rep):
    # (n_kv, T, hd) -> (n_kv * n_rep, T, hd); head h uses kv head h // n_rep
    if n_rep == 1:
        return x
    nkv, T, hd = x.shape
    return x[:, None].expand(nkv, n_rep, T, hd).reshape(nkv * n_rep, T, hd)


def attention_blocked(T, window=None):
    """(T, T) bool, True where query i must NOT see key j.

    Causal: j > i is blocked (masking_utils.causal_mask_function: kv_idx <= q_idx).
    Sliding window W (masking_utils.sliding_window_overlay, and-ed with the
    causal mask by sliding_window_causal_mask_function): kv_idx > q_idx - W,
    so j <= i - W is blocked too.  Query i sees the W keys i-W+1 .. i."""
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    if window is not None:
        if window <= 0:
            raise ValueError("sliding_window must be a positive integer, not %r" % (window,))
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        mask = mask | (j <= i - window)
    return mask


def causal_attention(q, k, v, window=None):
    # eager_attention_forward with a causal (or sliding-window causal) mask; q,k,v: (H, T, hd)
    T, hd = q.shape[1], q.shape[2]
    scores = torch.matmul(q, k.transpose(1, 2)) * (hd ** -0.5)
    scores = scores.masked_fill(attention_blocked(T, window), float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.matmul(p, v)


def linear(x, w, b=None):
    y = x @ w.t()
    return y + b if b is not None else y


def silu(x):
    return x * torch.sigmoid(x)


def swiglu(x, w_gate, w_up, w_down, offset=None):
    # LlamaMLP: down(act(gate(x)) * up(x)); MixtralBlockSparseTop2MLP: w2(act(w1 x) * w3 x)
    # offset (controls): a (intermediate,) vector added to the hidden
    # activation act(gate x) * up x before the down projection.
    a = silu(linear(x, w_gate)) * linear(x, w_up)
    if offset is not None:
        a = a + offset
    return linear(a, w_down)


def route(router_logits, k, bias=None, mask=None, force=None):
    """MixtralSparseMoeBlock gating: softmax over all experts, top-k, renormalise.

    Controls (all optional): bias (E,) is added to the router logits, then
    the experts where mask (E,) bool is True get logit -inf (probability 0);
    the softmax is over all experts.  force (a list of expert ids) makes the
    chosen experts exactly that set, regardless of k; otherwise the top
    k_eff = min(k, unmasked experts) are chosen.  Either way the chosen
    experts' probabilities are divided by their sum (Mixtral's rule).

    Returns (probs (T,E), experts (T,n) in descending weight order, weights (T,n))."""
    if bias is not None:
        router_logits = router_logits + bias
    if mask is not None:
        router_logits = router_logits.masked_fill(mask, float("-inf"))
    probs = torch.softmax(router_logits, dim=-1)
    if force is not None:
        f = torch.tensor(force, dtype=torch.long)
        w, order = torch.sort(probs[:, f], dim=-1, descending=True, stable=True)
        idx = f[order]
    else:
        if mask is not None:
            k = min(k, int((~mask).sum()))
        w, idx = torch.topk(probs, k, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    return probs, idx, w


class Controls:
    """Routing controls (interventions), applied at every position.

    spec (the "controls" object of tests/fixtures/golden/controls-*.json):
      "bias":    [[layer, expert, delta], ...]   router logit[expert] += delta (before the softmax)
      "mask":    [[layer, expert], ...]          router logit[expert] = -inf (after the biases)
      "force":   [[layer, [expert, ...]], ...]   the chosen experts are exactly this set
      "offsets": [[layer, "mlp", expert, neuron, delta], ...]   hidden activation of that
                                                 expert's MLP (dense: expert 0), where computed
                 [[layer, "resid", null, neuron, delta], ...]   hidden state after the layer
    layer -1 = every MoE layer (bias, mask, force only; an offset names one
    layer).  Biases on the same (layer, expert) and offsets on the same
    target add up; masks are a union; two force entries reaching the same
    layer, a forced expert that is masked, masking every expert of a layer,
    and router controls on a dense model are errors."""

    def __init__(self, spec, n_layers, n_experts, d_ff, d_model):
        spec = spec or {}
        unknown = set(spec) - {"bias", "mask", "force", "offsets"}
        if unknown:
            raise ValueError("unknown controls %s" % sorted(unknown))
        L, E = n_layers, n_experts

        def layers(l, what):
            if not isinstance(l, int) or not -1 <= l < L:
                raise ValueError("%s: layer %r not in -1..%d" % (what, l, L - 1))
            if E == 0:
                raise ValueError("%s: the model has no router" % what)
            return range(L) if l == -1 else [l]

        def expert(e, what):
            if not isinstance(e, int) or not 0 <= e < E:
                raise ValueError("%s: expert %r not in 0..%d" % (what, e, E - 1))
            return e

        self.bias, self.mask, self.force, self.mlp, self.resid = {}, {}, {}, {}, {}
        for l, e, delta in spec.get("bias", []):
            ls = layers(l, "bias")
            expert(e, "bias")
            for i in ls:
                self.bias.setdefault(i, torch.zeros(E, dtype=DT))[e] += float(delta)
        for l, e in spec.get("mask", []):
            ls = layers(l, "mask")
            expert(e, "mask")
            for i in ls:
                self.mask.setdefault(i, torch.zeros(E, dtype=torch.bool))[e] = True
        for i, m in self.mask.items():
            if bool(m.all()):
                raise ValueError("mask: every expert of layer %d is masked" % i)
        for l, es in spec.get("force", []):
            ls = layers(l, "force")
            es = [expert(e, "force") for e in es]
            if not es or len(set(es)) != len(es):
                raise ValueError("force: empty or repeated expert set %r" % (es,))
            for i in ls:
                if i in self.force:
                    raise ValueError("force: two entries for layer %d" % i)
                if i in self.mask and bool(self.mask[i][es].any()):
                    raise ValueError("force: a forced expert is masked in layer %d" % i)
                self.force[i] = list(es)
        for o in spec.get("offsets", []):
            l, kind, e, n, delta = o
            if not isinstance(l, int) or not 0 <= l < L:
                raise ValueError("offset %r: layer not in 0..%d" % (o, L - 1))
            if kind == "mlp":
                if E == 0:
                    if e != 0:
                        raise ValueError("offset %r: a dense MLP is expert 0" % (o,))
                else:
                    expert(e, "offset")
                if not isinstance(n, int) or not 0 <= n < d_ff:
                    raise ValueError("offset %r: neuron not in 0..%d" % (o, d_ff - 1))
                self.mlp.setdefault((l, e), torch.zeros(d_ff, dtype=DT))[n] += float(delta)
            elif kind == "resid":
                if e is not None:
                    raise ValueError("offset %r: a resid offset has expert null" % (o,))
                if not isinstance(n, int) or not 0 <= n < d_model:
                    raise ValueError("offset %r: neuron not in 0..%d" % (o, d_model - 1))
                self.resid.setdefault(l, torch.zeros(d_model, dtype=DT))[n] += float(delta)
            else:
                raise ValueError("offset %r: kind must be \"mlp\" or \"resid\"" % (o,))


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------


class Model:
    def __init__(self, cfg, W):
        self.cfg = cfg
        self.W = W
        arch = cfg["architectures"][0]
        if arch not in ("LlamaForCausalLM", "MixtralForCausalLM"):
            raise ValueError("unsupported architecture %s" % arch)
        self.moe = arch == "MixtralForCausalLM"
        self.d = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.d // self.nh
        self.eps = cfg["rms_norm_eps"]
        self.vocab = cfg["vocab_size"]
        assert cfg.get("hidden_act", "silu") == "silu"
        theta = cfg.get("rope_theta", 1e6 if self.moe else 10000.0)
        rs = cfg.get("rope_scaling")
        if rs and rs.get("rope_type", rs.get("type")) == "llama3":
            rs = dict(rs)
            rs.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
            self.inv_freq = llama3_inv_freq(theta, self.hd, rs)
        elif rs and rs.get("rope_type", rs.get("type", "default")) != "default":
            raise ValueError("rope_scaling %r not implemented in the reference" % rs)
        else:
            self.inv_freq = default_inv_freq(theta, self.hd)
        # Sliding-window attention: MixtralModel.forward uses
        # create_sliding_window_causal_mask when config.sliding_window is not
        # None, else create_causal_mask.  LlamaModel always uses the plain
        # causal mask (LlamaConfig has no sliding_window).
        self.window = cfg.get("sliding_window") if self.moe else None
        if self.window is not None and (not isinstance(self.window, int) or self.window <= 0):
            raise ValueError("sliding_window must be null or a positive integer, not %r" % (self.window,))
        self.n_experts = cfg.get("num_local_experts", 0)
        self.top_k = cfg.get("num_experts_per_tok", 0)
        tied = cfg.get("tie_word_embeddings", False)
        self.lm_head = W["model.embed_tokens.weight"] if tied else W["lm_head.weight"]
        if tied and "lm_head.weight" in W:
            raise ValueError("tied model carries an lm_head.weight")

    def attention(self, i, h):
        W = self.W
        p = "model.layers.%d.self_attn." % i
        T = h.shape[0]
        q = linear(h, W[p + "q_proj.weight"], W.get(p + "q_proj.bias"))
        k = linear(h, W[p + "k_proj.weight"], W.get(p + "k_proj.bias"))
        v = linear(h, W[p + "v_proj.weight"], W.get(p + "v_proj.bias"))
        q = q.view(T, self.nh, self.hd).transpose(0, 1)
        k = k.view(T, self.nkv, self.hd).transpose(0, 1)
        v = v.view(T, self.nkv, self.hd).transpose(0, 1)
        cos, sin = rope_cos_sin(self.inv_freq, T)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        rep = self.nh // self.nkv
        o = causal_attention(q, repeat_kv(k, rep), repeat_kv(v, rep), self.window)
        o = o.transpose(0, 1).reshape(T, self.nh * self.hd)
        return linear(o, W[p + "o_proj.weight"], W.get(p + "o_proj.bias"))

    def moe_block(self, i, h, k, trace, controls=None):
        W = self.W
        p = "model.layers.%d.block_sparse_moe." % i
        if controls is None:
            probs, idx, w = route(linear(h, W[p + "gate.weight"]), k)
        else:
            probs, idx, w = route(linear(h, W[p + "gate.weight"]), k, controls.bias.get(i),
                                  controls.mask.get(i), controls.force.get(i))
        out = torch.zeros_like(h)
        for e in range(self.n_experts):
            sel = (idx == e)                      # (T, k)
            rows = sel.any(dim=-1).nonzero().flatten()
            if rows.numel() == 0:
                continue
            q = p + "experts.%d." % e
            # an mlp offset acts only on the rows (tokens) that chose expert e
            y = swiglu(h[rows], W[q + "w1.weight"], W[q + "w3.weight"], W[q + "w2.weight"],
                       controls.mlp.get((i, e)) if controls is not None else None)
            we = (w * sel).sum(dim=-1)[rows]
            out[rows] += we[:, None] * y
        if trace is not None:
            trace.append((probs, idx, w))
        return out

    def controls(self, spec):
        """A Controls object for this model from a golden-file "controls" spec."""
        return Controls(spec, self.L, self.n_experts, self.cfg["intermediate_size"], self.d)

    def forward(self, ids, k=None, trace=None, controls=None):
        """ids: list of token ids -> logits (T, vocab), float64.  controls: a Controls or None."""
        W = self.W
        x = W["model.embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]
        for i in range(self.L):
            p = "model.layers.%d." % i
            x = x + self.attention(i, rms_norm(x, W[p + "input_layernorm.weight"], self.eps))
            h = rms_norm(x, W[p + "post_attention_layernorm.weight"], self.eps)
            if self.moe:
                x = x + self.moe_block(i, h, k or self.top_k, trace, controls)
            else:
                x = x + swiglu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                               W[p + "mlp.down_proj.weight"],
                               controls.mlp.get((i, 0)) if controls is not None else None)
            if controls is not None and i in controls.resid:
                # resid offset: after the layer's MLP residual add, at every position
                x = x + controls.resid[i]
        x = rms_norm(x, W["model.norm.weight"], self.eps)
        return x @ self.lm_head.t()


# ---------------------------------------------------------------------------
# golden files
# ---------------------------------------------------------------------------


def prompts():
    rng = np.random.default_rng(PROMPT_SEED)
    return [[int(t) for t in rng.integers(1, PROMPT_VOCAB, size=n)] for n in PROMPT_LENGTHS]


def sig7(x):
    return float("%.7g" % x)


def greedy(model, prompt, k, n=N_GREEDY, controls=None):
    """Greedy decoding by re-running the whole sequence at each step (no cache)."""
    seq = list(prompt)
    out, margins, first = [], [], None
    for step in range(n):
        logits = model.forward(seq, k, controls=controls)[-1]
        if first is None:
            first = logits
        top2 = torch.topk(logits, 2)
        nxt = int(top2.indices[0])
        margins.append(float(top2.values[0] - top2.values[1]))
        out.append(nxt)
        seq.append(nxt)
    return first, out, margins


def golden_for(model_dir, verbose=True):
    name = os.path.basename(os.path.normpath(model_dir))
    t0 = time.time()
    m = load_model(model_dir)
    ks = MOE_KS if m.moe else (None,)
    cases = []
    # With a sliding window, the same weights with full causal attention, to
    # show that the window matters (and changes nothing while it covers all).
    # Also with the window off by one either way (W + 1 keys is what some older
    # transformers mask helpers admitted), to show the boundary is pinned down.
    full = Model(dict(m.cfg, sliding_window=None), m.W) if m.window is not None else None
    off_by_one = ([Model(dict(m.cfg, sliding_window=w), m.W) for w in (m.window - 1, m.window + 1)]
                  if m.window is not None and m.window > 1 else [])
    window_report = []
    for prompt in prompts():
        if max(prompt) >= m.vocab:
            raise ValueError("prompt id out of the vocabulary of %s" % name)
        for k in ks:
            trace = [] if m.moe else None
            last_logits, toks, margins = greedy(m, prompt, k)
            if full is not None:
                full_logits, full_toks, _ = greedy(full, prompt, k)
                diff = float((last_logits - full_logits).abs().max())
                first_div = next((n for n, (a, b) in enumerate(zip(toks, full_toks)) if a != b), None)
                obo = [float((o.forward(prompt, k)[-1] - last_logits).abs().max()) for o in off_by_one]
                window_report.append((len(prompt), k, diff, first_div, obo))
                if len(prompt) <= m.window and diff != 0.0:
                    raise AssertionError("%s: window %d changed the logits of a %d-token prompt"
                                         % (name, m.window, len(prompt)))
                if len(prompt) > m.window and min([diff] + obo) <= 1e-2:
                    raise AssertionError("%s: window %d (vs null, W-1, W+1) moves the logits of a %d-token "
                                         "prompt by only %.2e" % (name, m.window, len(prompt), min([diff] + obo)))
            case = {
                "prompt": prompt,
                "k": k,
                "logits": [sig7(v) for v in last_logits.tolist()],
                "greedy": toks,
                "min_margin": sig7(min(margins)),
            }
            if m.moe:
                # smallest gap between the k-th and (k+1)-th router logit over
                # every layer and position of prompt + greedy continuation
                # (None when k selects every expert: no decision to get wrong)
                tr = []
                m.forward(prompt + toks[:-1], k, trace=tr)
                gap = None
                if k < m.n_experts:
                    gap = min(float((s[:, k - 1] - s[:, k]).min())
                              for s in (torch.sort(torch.log(pr), dim=-1, descending=True).values
                                        for pr, _, _ in tr))
                case["min_router_gap"] = sig7(gap) if gap is not None else None
                # routing at the last prompt position, one entry per layer:
                # chosen experts in descending weight order, their renormalised weights
                tr = []
                m.forward(prompt, k, trace=tr)
                case["routing_last"] = {
                    "experts": [[int(e) for e in idx[-1].tolist()] for _, idx, _ in tr],
                    "weights": [[sig7(v) for v in w[-1].tolist()] for _, _, w in tr],
                }
            cases.append(case)
    doc = {
        "model": name,
        "reference": "tests/reference/reference.py, torch %s, float64" % torch.__version__,
        "cases": cases,
    }
    os.makedirs(GOLDEN, exist_ok=True)
    path = os.path.join(GOLDEN, name + ".json")
    with open(path, "w") as f:
        f.write(format_golden(doc))
    if verbose:
        print("%-22s %d cases  %6d bytes  %.2fs" % (name, len(cases), os.path.getsize(path), time.time() - t0))
        for c in cases:
            lg = np.array(c["logits"])
            print("   len %2d k=%-4s logits std %5.2f max %6.2f  greedy %2d distinct  min_margin %.4f" % (
                len(c["prompt"]), c["k"], lg.std(), lg.max(), len(set(c["greedy"])), c["min_margin"]), end="")
            if c.get("min_router_gap") is not None:
                print("  min_router_gap %.2e" % c["min_router_gap"], end="")
            print()
        for n, k, diff, first_div, obo in window_report:
            print("   sliding_window %d vs null: len %2d k=%s  max|dlogit| at last prompt position %.4f  %s" % (
                m.window, n, k, diff,
                "greedy identical" if first_div is None else "greedy differs from step %d" % first_div), end="")
            if obo:
                print("   (vs W-1: %.4f, vs W+1: %.4f)" % tuple(obo), end="")
            print()
    return doc


def format_golden(doc):
    """JSON with one case field per line, so that diffs of golden files stay readable."""
    lines = ['{', '  "model": %s,' % json.dumps(doc["model"]),
             '  "reference": %s,' % json.dumps(doc["reference"]), '  "cases": [']
    for ci, c in enumerate(doc["cases"]):
        fields = ['    "%s": %s' % (key, json.dumps(val, separators=(", ", ": "))) for key, val in c.items()]
        lines.append('   {')
        lines.append(",\n".join(fields))
        lines.append('   }' + ("," if ci + 1 < len(doc["cases"]) else ""))
    lines.append('  ]')
    lines.append('}')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# golden files for routing controls (interventions)
# ---------------------------------------------------------------------------

# Each case: a short name, a prompt (index into prompts(): 2 = 40 tokens,
# 1 = 7 tokens), k (None for dense models) and the controls, in the golden
# files' notation (see Controls).  Each must move the last-prompt-position
# logits by > 1e-2 against the same prompt and k without controls, and keep
# the greedy margins >= 1e-3 (checked when the files are written).
_ALL_BUT_2_6 = [[-1, e] for e in (0, 1, 3, 4, 5, 7)]
CONTROL_CASES = {
    "mixtral-tiny": [
        ("mask-e3-all", 2, 2, {"mask": [[-1, 3]]}),
        ("mask-e3-all-p7", 1, 2, {"mask": [[-1, 3]]}),
        ("mask-e5-l1", 2, 2, {"mask": [[1, 5]]}),
        ("mask-e0..6-l0", 2, 2, {"mask": [[0, e] for e in range(7)]}),
        ("mask-6-all-k4", 2, 4, {"mask": _ALL_BUT_2_6}),
        ("bias-e6+2-all", 2, 2, {"bias": [[-1, 6, 2.0]]}),
        # expert 1 is not among layer 2's top 2 at the last prompt position,
        # so a negative bias on it cannot move those logits (layer 2 is the
        # last layer): the case lowers expert 4, that position's top choice
        ("bias-e4-3-l2", 2, 2, {"bias": [[2, 4, -3.0]]}),
        ("force-e4-all", 2, 2, {"force": [[-1, [4]]]}),
        ("force-e4-all-p7", 1, 2, {"force": [[-1, [4]]]}),
        ("force-e1e3-l1", 2, 2, {"force": [[1, [1, 3]]]}),
        ("force-e012-all-k2", 2, 2, {"force": [[-1, [0, 1, 2]]]}),
        ("mlp-l1e3n10", 2, 2, {"offsets": [[1, "mlp", 3, 10, 5.0]]}),
        ("mlp2-resid", 2, 2, {"offsets": [[0, "mlp", 3, 20, 3.0], [2, "mlp", 4, 40, -4.0],
                                          [0, "resid", None, 7, -4.0]]}),
        ("resid-l2n0", 2, 2, {"offsets": [[2, "resid", None, 0, 6.0]]}),
        ("mask-bias-mlp", 2, 2, {"mask": [[-1, 3]], "bias": [[1, 6, 1.5]],
                                 "offsets": [[2, "mlp", 4, 20, 3.0]]}),
    ],
    "llama-tiny": [
        ("mlp-l0n3", 2, None, {"offsets": [[0, "mlp", 0, 3, 4.0]]}),
        ("mlp-l0n3-p7", 1, None, {"offsets": [[0, "mlp", 0, 3, 4.0]]}),
        ("resid-l1n5", 2, None, {"offsets": [[1, "resid", None, 5, -5.0]]}),
        ("mlp-resid", 2, None, {"offsets": [[0, "mlp", 0, 3, 4.0], [1, "resid", None, 5, -5.0]]}),
    ],
}
MIN_CONTROL_EFFECT = 1e-2
MIN_CONTROL_MARGIN = 1e-3


def controlled_router_gap(trace, k, ctl):
    """Smallest gap between the k_eff-th and (k_eff+1)-th router logit (after
    bias and mask) over the traced layers and positions, counting only the
    layers where top-k decides something: not forced, k_eff < unmasked."""
    gap = None
    for i, (pr, _, _) in enumerate(trace):
        if i in ctl.force:
            continue
        n_on = pr.shape[1] - (int(ctl.mask[i].sum()) if i in ctl.mask else 0)
        ke = min(k, n_on)
        if ke == n_on:
            continue
        srt = torch.sort(torch.log(pr), dim=-1, descending=True).values
        g = float((srt[:, ke - 1] - srt[:, ke]).min())
        gap = g if gap is None else min(gap, g)
    return gap


def control_consistency(m, name):
    """Whole-model checks of the controls against each other (exact up to rounding)."""
    ok = True
    p40 = prompts()[2]

    def check(what, a, b, tol=1e-12):
        nonlocal ok
        err = float((a - b).abs().max())
        good = err <= tol
        ok &= good
        print("   %-70s max|diff| %.2e %s" % (what, err, "ok" if good else "FAIL"))

    def run(k, spec):
        return m.forward(p40, k, controls=m.controls(spec) if spec is not None else None)

    if m.moe:
        E, L = m.n_experts, m.L
        for kk in (1, 2, 3):
            # per layer a different set of kk experts
            keep = [[(3 * i + 5 * j) % E for j in range(kk)] for i in range(L)]
            masked = run(kk, {"mask": [[i, e] for i in range(L) for e in range(E) if e not in keep[i]]})
            forced = run(kk, {"force": [[i, keep[i]] for i in range(L)]})
            check("k=%d, mask all but %s == force %s" % (kk, keep, keep), masked, forced)
        check("force all %d experts (k=2) == k=%d without controls" % (E, E),
              run(2, {"force": [[-1, list(range(E))]]}), run(E, None))
        check("force all %d experts in reverse order == in order" % E,
              run(2, {"force": [[-1, list(range(E))[::-1]]]}), run(2, {"force": [[-1, list(range(E))]]}), 0)
        check("mask [-1, 3] == mask [0, 3], [1, 3], [2, 3] (bitwise)",
              run(2, {"mask": [[-1, 3]]}), run(2, {"mask": [[i, 3] for i in range(L)]}), 0)
        check("bias [-1, 6, 2] == bias [i, 6, 2] for every layer (bitwise)",
              run(2, {"bias": [[-1, 6, 2.0]]}), run(2, {"bias": [[i, 6, 2.0] for i in range(L)]}), 0)
        check("bias 0 == no controls (bitwise)", run(2, {"bias": [[-1, 6, 0.0]]}), run(2, None), 0)
        check("mlp offset on an expert masked in that layer == the mask alone (bitwise)",
              run(2, {"mask": [[1, 3]], "offsets": [[1, "mlp", 3, 10, 5.0]]}), run(2, {"mask": [[1, 3]]}), 0)
        check("two mlp offsets on one target (2 + 3) == one of 5",
              run(2, {"offsets": [[1, "mlp", 3, 10, 2.0], [1, "mlp", 3, 10, 3.0]]}),
              run(2, {"offsets": [[1, "mlp", 3, 10, 5.0]]}))
    else:
        check("mlp offset 0 == no controls (bitwise)", run(None, {"offsets": [[0, "mlp", 0, 3, 0.0]]}),
              run(None, None), 0)
        check("two mlp offsets on one target (1.5 + 2.5) == one of 4",
              run(None, {"offsets": [[0, "mlp", 0, 3, 1.5], [0, "mlp", 0, 3, 2.5]]}),
              run(None, {"offsets": [[0, "mlp", 0, 3, 4.0]]}))
        check("two resid offsets on one target (-2 + -3) == one of -5",
              run(None, {"offsets": [[1, "resid", None, 5, -2.0], [1, "resid", None, 5, -3.0]]}),
              run(None, {"offsets": [[1, "resid", None, 5, -5.0]]}))
    print("   control consistency (%s):" % name, "passed" if ok else "FAILED")
    return ok


def controls_golden(name, verbose=True):
    """Write tests/fixtures/golden/controls-<name>.json; returns False if a check fails."""
    t0 = time.time()
    m = load_model(os.path.join(MODELS, name))
    print("controls-%s: controls checked against each other" % name)
    ok = control_consistency(m, name)
    P = prompts()
    cases, report = [], []
    for label, pi, k, spec in CONTROL_CASES[name]:
        prompt = P[pi]
        ctl = m.controls(spec)
        last_logits, toks, margins = greedy(m, prompt, k, controls=ctl)
        base_logits, base_toks, _ = greedy(m, prompt, k)
        effect = float((last_logits - base_logits).abs().max())
        first_div = next((n for n, (a, b) in enumerate(zip(toks, base_toks)) if a != b), None)
        case = {
            "name": label,
            "prompt": prompt,
            "k": k,
            "controls": {key: spec[key] for key in ("bias", "mask", "force", "offsets") if spec.get(key)},
            "logits": [sig7(v) for v in last_logits.tolist()],
            "greedy": toks,
            "min_margin": sig7(min(margins)),
        }
        gap = None
        if m.moe:
            tr = []
            m.forward(prompt + toks[:-1], k, trace=tr, controls=ctl)
            gap = controlled_router_gap(tr, k, ctl)
            case["min_router_gap"] = sig7(gap) if gap is not None else None
            tr = []
            m.forward(prompt, k, trace=tr, controls=ctl)
            case["routing_last"] = {
                "experts": [[int(e) for e in idx[-1].tolist()] for _, idx, _ in tr],
                "weights": [[sig7(v) for v in w[-1].tolist()] for _, _, w in tr],
                "probs": [[sig7(v) for v in pr[-1].tolist()] for pr, _, _ in tr],
            }
        cases.append(case)
        good = effect > MIN_CONTROL_EFFECT and min(margins) >= MIN_CONTROL_MARGIN
        ok &= good
        report.append((label, len(prompt), k, effect, first_div, min(margins), gap, good))
    doc = {
        "model": name,
        "reference": "tests/reference/reference.py, torch %s, float64" % torch.__version__,
        "cases": cases,
    }
    path = os.path.join(GOLDEN, "controls-%s.json" % name)
    with open(path, "w") as f:
        f.write(format_golden(doc))
    if verbose:
        print("%-22s %d cases  %6d bytes  %.2fs" % ("controls-" + name, len(cases), os.path.getsize(path),
                                                  time.time() - t0))
        for label, n, k, effect, first_div, margin, gap, good in report:
            print("   %-18s len %2d k=%-4s max|dlogit| vs no controls %7.4f  %-24s min_margin %.4f" % (
                label, n, k, effect,
                "greedy identical" if first_div is None else "greedy differs from %d" % first_div, margin),
                end="")
            if gap is not None:
                print("  min_router_gap %.2e" % gap, end="")
            print("" if good else "  FAIL (needs effect > %g, margin >= %g)" % (MIN_CONTROL_EFFECT,
                                                                                 MIN_CONTROL_MARGIN))
    return ok


def stats(model_dir):
    """Routing spread and greedy diversity, to check that a fixture is not degenerate."""
    m = load_model(model_dir)
    print(model_dir, "vocab", m.vocab, "head_dim", m.hd, "inv_freq", [round(v, 6) for v in m.inv_freq.tolist()])
    for prompt in prompts():
        for k in (MOE_KS if m.moe else (None,)):
            tr = []
            lg = m.forward(prompt, k, trace=tr)
            line = "  len %2d k=%s logits std %.2f" % (len(prompt), k, float(lg[-1].std()))
            if m.moe:
                counts = [np.bincount(idx[:, 0].numpy(), minlength=m.n_experts).tolist() for _, idx, _ in tr]
                line += "  top1 counts per layer " + " ".join("".join("%2d" % c for c in cl) for cl in counts)
            print(line)


# ---------------------------------------------------------------------------
# self-check: the vectorised blocks against plain loops / other formulations
# ---------------------------------------------------------------------------


def self_check():
    g = torch.Generator().manual_seed(0)
    ok = True

    def check(what, a, b, tol=1e-12):
        nonlocal ok
        err = float((a - b).abs().max())
        good = err <= tol
        ok &= good
        print("  %-58s max|diff| %.2e %s" % (what, err, "ok" if good else "FAIL"))

    # 1. attention (with GQA) against an explicit per-head, per-position loop
    H, KV, T, hd = 4, 2, 9, 8
    q = torch.randn(H, T, hd, generator=g, dtype=DT)
    k = torch.randn(KV, T, hd, generator=g, dtype=DT)
    v = torch.randn(KV, T, hd, generator=g, dtype=DT)
    fast_attn = fast = causal_attention(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV))
    slow = torch.zeros_like(fast)
    for h in range(H):
        kv = h // (H // KV)
        for t in range(T):
            s = torch.tensor([float(q[h, t] @ k[kv, u]) / math.sqrt(hd) for u in range(t + 1)], dtype=DT)
            p = torch.exp(s - s.max())
            p = p / p.sum()
            slow[h, t] = sum(p[u] * v[kv, u] for u in range(t + 1))
    check("attention == per-head loop (GQA, causal)", fast, slow)

    # 1b. sliding-window attention against the same loop restricted to the
    #     keys u with t - W < u <= t (transformers' masking_utils rule)
    Wn = 3
    fast_swa = causal_attention(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV), Wn)
    slow = torch.zeros_like(fast_swa)
    for h in range(H):
        kv = h // (H // KV)
        for t in range(T):
            us = [u for u in range(t + 1) if u > t - Wn]
            s = torch.tensor([float(q[h, t] @ k[kv, u]) / math.sqrt(hd) for u in us], dtype=DT)
            p = torch.exp(s - s.max())
            p = p / p.sum()
            slow[h, t] = sum(p[n] * v[kv, u] for n, u in enumerate(us))
    check("sliding-window attention (W=3) == loop over t-W < u <= t", fast_swa, slow)
    # the window admits exactly min(t + 1, W) keys, the newest being t itself
    blocked = attention_blocked(T, Wn)
    counts = (~blocked).sum(dim=1).to(DT)
    check("sliding window W=3: keys seen per query == min(t+1, W)", counts,
          torch.tensor([min(t + 1, Wn) for t in range(T)], dtype=DT), 0)
    # a window at least as long as the sequence changes nothing
    check("sliding window W=T == plain causal attention (bitwise)",
          causal_attention(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV), T), fast_attn, 0)

    # 2. attention against torch's own scaled-dot-product attention (torch 1.13:
    #    the private F._scaled_dot_product_attention, boolean "may attend" mask)
    sdpa = getattr(torch.nn.functional, "_scaled_dot_product_attention", None)
    if sdpa is not None:
        allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
        ref, _ = sdpa(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV), allowed, 0.0, False, False)
        check("attention == torch F._scaled_dot_product_attention", fast_attn, ref)
        # banded mask built the other way round: tril(0) minus tril(-W)
        band = torch.tril(torch.ones(T, T, dtype=torch.bool)) & ~torch.tril(torch.ones(T, T, dtype=torch.bool),
                                                                              diagonal=-Wn)
        ref, _ = sdpa(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV), band, 0.0, False, False)
        check("sliding-window attention == F._scaled_dot_product_attention", fast_swa, ref)

    # 3. RoPE via rotate_half == complex rotation of pairs (j, j + hd/2)
    inv = llama3_inv_freq(500000.0, 16, {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 64})
    x = torch.randn(3, T, 16, generator=g, dtype=DT)
    cos, sin = rope_cos_sin(inv, T)
    fast = apply_rope(x, cos, sin)
    z = torch.complex(x[..., :8], x[..., 8:])
    ang = torch.arange(T, dtype=DT)[:, None] * inv[None, :]
    zr = z * torch.polar(torch.ones_like(ang), ang)[None]
    check("RoPE rotate_half == complex rotation of (j, j+d/2)", fast, torch.cat((zr.real, zr.imag), -1))

    # 4. llama3 inv_freq: the three regimes, computed element by element
    base = default_inv_freq(500000.0, 16)
    exp = []
    for f in base.tolist():
        wl = 2 * math.pi / f
        if wl < 64 / 4:
            exp.append(f)
        elif wl > 64 / 1:
            exp.append(f / 8)
        else:
            s = (64 / wl - 1) / (4 - 1)
            exp.append((1 - s) * f / 8 + s * f)
    check("llama3 inv_freq == scalar per-band formula", inv, torch.tensor(exp, dtype=DT), 0)

    # 5. MoE block vs dense evaluation of every expert with a 0/1 selection
    class Fake:
        pass
    d, ff, E = 12, 10, 6
    W = {}
    for e in range(E):
        W["model.layers.0.block_sparse_moe.experts.%d.w1.weight" % e] = torch.randn(ff, d, generator=g, dtype=DT)
        W["model.layers.0.block_sparse_moe.experts.%d.w3.weight" % e] = torch.randn(ff, d, generator=g, dtype=DT)
        W["model.layers.0.block_sparse_moe.experts.%d.w2.weight" % e] = torch.randn(d, ff, generator=g, dtype=DT)
    W["model.layers.0.block_sparse_moe.gate.weight"] = torch.randn(E, d, generator=g, dtype=DT)
    m = Fake()
    m.W, m.n_experts = W, E
    h = torch.randn(T, d, generator=g, dtype=DT)
    for kk in (1, 2, E):
        fast = Model.moe_block(m, 0, h, kk, None)
        logits = h @ W["model.layers.0.block_sparse_moe.gate.weight"].t()
        slow = torch.zeros_like(h)
        for t in range(T):
            pr = [math.exp(v) for v in logits[t].tolist()]
            s = sum(pr)
            pr = [v / s for v in pr]
            order = sorted(range(E), key=lambda e: -pr[e])[:kk]
            tot = sum(pr[e] for e in order)
            for e in order:
                p = "model.layers.0.block_sparse_moe.experts.%d." % e
                a = W[p + "w1.weight"] @ h[t]
                y = W[p + "w2.weight"] @ (a * torch.sigmoid(a) * (W[p + "w3.weight"] @ h[t]))
                slow[t] += pr[e] / tot * y
        check("MoE top-%d == per-token loop over chosen experts" % kk, fast, slow)

    # 6. RMSNorm against torch's formulation through layer statistics
    x = torch.randn(5, 16, generator=g, dtype=DT)
    w = torch.randn(16, generator=g, dtype=DT)
    check("RMSNorm == x / sqrt(mean(x^2)+eps) * w", rms_norm(x, w, 1e-5),
          x / torch.sqrt((x * x).sum(-1, keepdim=True) / 16 + 1e-5) * w)

    # 7. SiLU against torch's own
    check("silu == torch.nn.functional.silu", silu(x), torch.nn.functional.silu(x))

    # 8. MoE block with controls (bias, mask, force, mlp offsets) against a
    #    per-token loop written from the rules in plain Python floats
    def slow_moe(kk, spec):
        bias = [0.0] * E
        masked = set()
        force = None
        off = {}
        for _, e, dl in spec.get("bias", []):
            bias[e] += dl
        for _, e in spec.get("mask", []):
            masked.add(e)
        for _, es in spec.get("force", []):
            force = es
        for _, _, e, n, dl in spec.get("offsets", []):
            off[(e, n)] = off.get((e, n), 0.0) + dl
        logits = h @ W["model.layers.0.block_sparse_moe.gate.weight"].t()
        out = torch.zeros_like(h)
        for t in range(T):
            z = [v + b for v, b in zip(logits[t].tolist(), bias)]
            mx = max(z[e] for e in range(E) if e not in masked)
            pr = [0.0 if e in masked else math.exp(z[e] - mx) for e in range(E)]
            tot = sum(pr)
            pr = [v / tot for v in pr]
            if force is not None:
                chosen = force
            else:
                on = [e for e in range(E) if e not in masked]
                chosen = sorted(on, key=lambda e: -pr[e])[:min(kk, len(on))]
            tot = sum(pr[e] for e in chosen)
            for e in chosen:
                p = "model.layers.0.block_sparse_moe.experts.%d." % e
                a = W[p + "w1.weight"] @ h[t]
                act = a * torch.sigmoid(a) * (W[p + "w3.weight"] @ h[t])
                for (oe, n), dl in off.items():
                    if oe == e:
                        act[n] += dl
                out[t] += pr[e] / tot * (W[p + "w2.weight"] @ act)
        return out

    for kk, spec in ((2, {"bias": [[0, 1, 1.5], [0, 4, -2.0], [0, 1, 0.5]], "mask": [[0, 2]]}),
                     (3, {"mask": [[0, 0], [0, 1], [0, 3], [0, 5]]}),
                     (1, {"mask": [[0, e] for e in range(E - 1)]}),
                     (2, {"bias": [[0, 3, 1.0]], "mask": [[0, 2]], "force": [[0, [4, 1, 0]]]}),
                     (2, {"bias": [[-1, 5, 0.7]], "offsets": [[0, "mlp", 1, 3, 2.5], [0, "mlp", 5, 7, -1.5],
                                                              [0, "mlp", 1, 3, 0.5]]})):
        ctl = Controls(spec, 1, E, ff, d)
        check("MoE k=%d with %s == per-token loop" % (kk, "+".join(sorted(spec))),
              Model.moe_block(m, 0, h, kk, None, ctl), slow_moe(kk, spec))
    print("self-check:", "passed" if ok else "FAILED")
    return ok


def f32_check(dirs):
    """Run this same reference in float32 against the float64 golden files.

    A proxy for what an f32 engine can reach: prints the largest logit
    difference and whether the greedy continuations are identical."""
    global DT
    ok = True
    for d in dirs:
        name = os.path.basename(os.path.normpath(d))
        with open(os.path.join(GOLDEN, name + ".json")) as f:
            g = json.load(f)
        docs = [(name, g)]
        cpath = os.path.join(GOLDEN, "controls-%s.json" % name)
        if os.path.exists(cpath):
            with open(cpath) as f:
                docs.append(("controls-" + name, json.load(f)))
        DT = torch.float32
        try:
            m = load_model(d)
            m = Model(m.cfg, {k: v.float() for k, v in m.W.items()})
            for label, g in docs:
                worst, same = 0.0, True
                for c in g["cases"]:
                    ctl = m.controls(c["controls"]) if "controls" in c else None
                    seq = list(c["prompt"])
                    lg = m.forward(seq, c["k"], controls=ctl)[-1].double()
                    worst = max(worst, float((lg - torch.tensor(c["logits"], dtype=torch.float64)).abs().max()))
                    out = []
                    for _ in range(len(c["greedy"])):
                        out.append(int(m.forward(seq, c["k"], controls=ctl)[-1].argmax()))
                        seq.append(out[-1])
                    same &= out == c["greedy"]
                ok &= same and worst < 1e-3
                print("%-22s float32 vs golden: max|dlogit| %.2e, greedy identical: %s" % (label, worst, same))
        finally:
            DT = torch.float64
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model directories (default: all fixtures)")
    ap.add_argument("--self-check", action="store_true", help="only run the self-check")
    ap.add_argument("--stats", action="store_true", help="print routing/logit statistics instead of writing")
    ap.add_argument("--f32-check", action="store_true",
                    help="run the reference in float32 against the golden files (tolerance evidence)")
    ap.add_argument("--controls", action="store_true",
                    help="self-check, then only the golden files of the routing controls")
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.self_check:
        return 0 if self_check() else 1
    if a.controls:
        if a.models:
            ap.error("--controls takes no model directories")
        if not self_check():
            return 1
        ok = True
        for n in CONTROL_CASES:
            ok &= controls_golden(n)
        print("done in %.2fs" % (time.time() - t0))
        return 0 if ok else 1
    dirs = a.models or [os.path.join(MODELS, n) for n in FIXTURE_NAMES]
    if a.f32_check:
        return 0 if f32_check(dirs) else 1
    if a.stats:
        for d in dirs:
            stats(d)
        return 0
    if not self_check():
        return 1
    for d in dirs:
        golden_for(d)
    ok = True
    if not a.models:
        for n in CONTROL_CASES:
            ok &= controls_golden(n)
    print("done in %.2fs" % (time.time() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
