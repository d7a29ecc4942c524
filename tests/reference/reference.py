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
OlmoeForCausalLM, Qwen2MoeForCausalLM and Qwen3MoeForCausalLM (MoeFamilyModel),
and checkpoints in transformers 5's fused expert layout (unfuse_experts), are
written from their transformers sources likewise (README.md, sections "OLMoE,
Qwen2-MoE, Qwen3-MoE" and "The fused expert layout").

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
    cfg = normalize_config(cfg)             # transformers 5 config.json (rope_parameters)
    weights = unfuse_experts(cfg, weights)  # transformers 5 fused expert tensors
    W = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    if cfg.get("architectures", [""])[0] in MICRO_ARCHS:
        return MicroModel(cfg, W)
    if cfg["architectures"][0] in FAMILY_ARCHS:
        return MoeFamilyModel(cfg, W)
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
    if is_micro_dir(model_dir):
        return micro_golden_for(model_dir, verbose)
    name = os.path.basename(os.path.normpath(model_dir))
    t0 = time.time()
    m = load_model(model_dir)
    ks = getattr(m, "ks", MOE_KS) if m.moe else (None,)
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
    if getattr(m, "moe_layers", None) is not None:
        doc["moe_layers"] = list(m.moe_layers)   # sparse layers: one routing_last entry each
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
             '  "reference": %s,' % json.dumps(doc["reference"])]
    if "moe_layers" in doc:
        lines.append('  "moe_layers": %s,' % json.dumps(doc["moe_layers"], separators=(", ", ": ")))
    lines.append('  "cases": [')
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
    layers = getattr(ctl, "moe_layers", None)    # trace entry -> layer, where some layers are dense
    for i, (pr, _, _) in enumerate(trace):
        if layers is not None:
            i = layers[i]
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
    if name in MICRO_CONTROL_CASES:
        return micro_controls_golden(name, verbose)
    t0 = time.time()
    m = load_model(os.path.join(MODELS, name))
    print("controls-%s: controls checked against each other" % name)
    ok = family_control_consistency(m, name) if isinstance(m, MoeFamilyModel) else control_consistency(m, name)
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
    if getattr(m, "moe_layers", None) is not None:
        doc["moe_layers"] = list(m.moe_layers)
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
        for k in (getattr(m, "ks", MOE_KS) if m.moe else (None,)):
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
    ok &= micro_self_check(g)
    ok &= family_self_check()
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
            m = type(m)(m.cfg, {k: v.float() for k, v in m.W.items()})
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


# ---------------------------------------------------------------------------
# MiCRo: Mixture of Cognitive Reasoners (MiCRoLlama, MiCRoOLMo)
# ---------------------------------------------------------------------------
#
# Written from BKHMSI/mixture-of-cognitive-reasoners (models/micro_llama.py:
# MiCRoLlamaDecoderLayer, MiCRoLlama; models/micro_olmo.py:
# MiCRoOLMo2DecoderLayer, MiCRoOLMo) and, for the expert blocks, the
# transformers classes those files instantiate (requirements.txt pins
# transformers 4.53.2): LlamaDecoderLayer / LlamaAttention / LlamaMLP and
# Olmo2DecoderLayer / Olmo2Attention / Olmo2MLP.  See README.md, "MiCRo".
#
# Per backbone layer: router logits = gate.1(gate.0(x)) on the layer's input
# hidden state x (not normalised; no activation between the two maps);
# softmax over the 4 experts; top-k; weights divided by (their sum + 1e-9);
# layer output = sum over the chosen experts of weight * block_e(x), where
# block_e is a whole decoder block with its own norms and residuals (so the
# residual stream passes through the weights).  Every expert block runs on
# every position (the released prefill calls each expert layer on the whole
# sequence; at decode steps an expert that was not chosen still appends the
# new token's keys and values to its own cache), so each expert's attention
# sees keys/values of all positions.

MICRO_ARCHS = {"MiCRoLlama": "llama", "MiCRoOLMo": "olmo2"}
MICRO_KS = (1, 2, 4)
MICRO_FIXTURES = ["micro-llama-tiny", "micro-olmo-tiny"]
MICRO_EXPERT_NAMES = ["logic", "social", "world", "language"]   # released ablate names, experts 0..3
MICRO_RENORM_EPS = 1e-9      # routing_weights /= (routing_weights.sum(dim=-1, keepdim=True) + 1e-9)
FIXTURE_NAMES.extend(n for n in MICRO_FIXTURES if n not in FIXTURE_NAMES)


def is_micro_dir(model_dir):
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            return json.load(f).get("architectures", [""])[0] in MICRO_ARCHS
    except (OSError, ValueError):
        return False


def micro_expected_shapes(cfg):
    """{tensor name: shape} of a MiCRo checkpoint, derived from the modules
    MiCRoLlama / MiCRoOLMo build (state_dict names, no "model." prefix)."""
    olmo = MICRO_ARCHS[cfg["architectures"][0]] == "olmo2"
    d, V, ff, E = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"], cfg["num_experts"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or d // nh
    out = {"embed_tokens.weight": (V, d), "lm_head.weight": (V, d),
           ("norm.weight" if olmo else "final_norm.weight"): (d,)}
    block = {"self_attn.q_proj.weight": (nh * hd, d), "self_attn.k_proj.weight": (nkv * hd, d),
             "self_attn.v_proj.weight": (nkv * hd, d), "self_attn.o_proj.weight": (d, nh * hd),
             "mlp.gate_proj.weight": (ff, d), "mlp.up_proj.weight": (ff, d), "mlp.down_proj.weight": (d, ff),
             "post_attention_layernorm.weight": (d,)}
    if olmo:
        block.update({"self_attn.q_norm.weight": (nh * hd,), "self_attn.k_norm.weight": (nkv * hd,),
                      "post_feedforward_layernorm.weight": (d,)})
    else:
        block["input_layernorm.weight"] = (d,)
    for i in range(cfg["backbone_num_layers"]):
        out["layers.%d.gate.0.weight" % i] = (d, d)
        out["layers.%d.gate.1.weight" % i] = (E, d)
        for e in range(E):
            for n, s in block.items():
                out["layers.%d.experts.%d.%s" % (i, e, n)] = s
    return out


def micro_route(router_logits, k, bias=None, mask=None, force=None):
    """MiCRo gating: softmax over all experts, top-k, weights / (sum + 1e-9).

    Controls as in route(): bias added to the logits, masked experts get
    -inf (what the released `ablate` does by name), force fixes the chosen
    set.  The released + 1e-9 applies to the router's own top-k choice
    (with or without bias and mask; there the sum is >= 1/E, so it moves the
    weights by < 4e-9 relative); forced weights, which have no counterpart in
    the released code, are divided by their plain sum, as in route(): with
    + 1e-9 an expert forced where its probability is ~1e-9 would get weight
    ~0.5 and halve the residual stream that passes through the blocks.
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
        return probs, idx, w / w.sum(dim=-1, keepdim=True)
    if mask is not None:
        k = min(k, int((~mask).sum()))
    w, idx = torch.topk(probs, k, dim=-1)
    w = w / (w.sum(dim=-1, keepdim=True) + MICRO_RENORM_EPS)
    return probs, idx, w


class MicroModel:
    """MiCRoLlama / MiCRoOLMo forward pass, float64 (DT), no cache.

    forward(ids, k, trace, controls) has the interface of Model.forward;
    kv="chosen" is a diagnostic only (each expert's attention restricted to
    the positions routed to it: what an engine that skips non-chosen experts
    entirely would compute -- not the released model)."""

    moe = True
    window = None
    ks = MICRO_KS

    def __init__(self, cfg, W):
        arch = cfg["architectures"][0]
        if arch not in MICRO_ARCHS:
            raise ValueError("not a MiCRo architecture: %s" % arch)
        self.variant = MICRO_ARCHS[arch]
        if cfg.get("model_type") != self.variant:
            raise ValueError("%s: model_type %r, expected %r" % (arch, cfg.get("model_type"), self.variant))
        self.cfg, self.W = cfg, W
        self.d = cfg["hidden_size"]
        self.n_experts = self.E = cfg["num_experts"]
        self.top_k = cfg["num_experts_per_tok"]
        self.L = cfg["backbone_num_layers"]
        if cfg["num_hidden_layers"] != self.L * self.E:
            raise ValueError("num_hidden_layers %d != backbone_num_layers %d x num_experts %d"
                             % (cfg["num_hidden_layers"], self.L, self.E))
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.d // self.nh
        self.eps = cfg["rms_norm_eps"]
        self.vocab = cfg["vocab_size"]
        self.ff = cfg["intermediate_size"]
        assert cfg.get("hidden_act", "silu") == "silu" and not cfg.get("attention_bias", False)
        rs = cfg.get("rope_scaling")
        if rs and rs.get("rope_type", rs.get("type")) == "llama3":
            self.inv_freq = llama3_inv_freq(cfg["rope_theta"], self.hd, rs)
        elif rs and rs.get("rope_type", rs.get("type", "default")) != "default":
            raise ValueError("rope_scaling %r not implemented in the reference" % rs)
        else:
            self.inv_freq = default_inv_freq(cfg["rope_theta"], self.hd)
        self.expert_names = cfg.get("expert_names") or MICRO_EXPERT_NAMES
        want = micro_expected_shapes(cfg)
        got = {k: tuple(v.shape) for k, v in W.items()}
        if got != want:
            raise ValueError("MiCRo tensors: missing %s, unexpected %s, wrong shape %s" % (
                sorted(set(want) - set(got))[:4], sorted(set(got) - set(want))[:4],
                sorted(n for n in set(want) & set(got) if want[n] != got[n])[:4]))
        self.final_norm = W["norm.weight" if self.variant == "olmo2" else "final_norm.weight"]
        # always the checkpoint's own lm_head (MiCRoLlama never ties it, even
        # with tie_word_embeddings true in its config)
        self.lm_head = W["lm_head.weight"]

    def controls(self, spec):
        return Controls(spec, self.L, self.E, self.ff, self.d)

    def router_logits(self, i, x):
        # self.gate = nn.Sequential(Linear(h, h, bias=False), Linear(h, E, bias=False))
        p = "layers.%d.gate." % i
        return linear(linear(x, self.W[p + "0.weight"]), self.W[p + "1.weight"])

    def qkv(self, i, e, x, cos, sin):
        """Queries (nh,T,hd), keys and values (nkv,T,hd) of expert block e, RoPE applied."""
        W, p, T = self.W, "layers.%d.experts.%d." % (i, e), x.shape[0]
        if self.variant == "llama":
            # LlamaDecoderLayer: input_layernorm, then LlamaAttention
            h = rms_norm(x, W[p + "input_layernorm.weight"], self.eps)
            q = linear(h, W[p + "self_attn.q_proj.weight"])
            k = linear(h, W[p + "self_attn.k_proj.weight"])
            v = linear(h, W[p + "self_attn.v_proj.weight"])
        else:
            # Olmo2Attention: no input norm; RMSNorm over the whole q / k
            # projection (all heads at once) before the heads are split
            q = rms_norm(linear(x, W[p + "self_attn.q_proj.weight"]), W[p + "self_attn.q_norm.weight"], self.eps)
            k = rms_norm(linear(x, W[p + "self_attn.k_proj.weight"]), W[p + "self_attn.k_norm.weight"], self.eps)
            v = linear(x, W[p + "self_attn.v_proj.weight"])
        q = q.view(T, self.nh, self.hd).transpose(0, 1)
        k = k.view(T, self.nkv, self.hd).transpose(0, 1)
        v = v.view(T, self.nkv, self.hd).transpose(0, 1)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def kv_only(self, i, e, x, cos, sin):
        """Keys and values of a token for an expert that was not chosen, written
        after the released decode path (MiCRoLlamaDecoderLayer.forward,
        `sequence_length == 1 and batch_indices.numel() == 0`; Llama:
        input_layernorm -> k_proj / v_proj -> RoPE on k; OLMo:
        k_norm(k_proj(x)), v_proj(x) -> RoPE on k)."""
        W, p, T = self.W, "layers.%d.experts.%d." % (i, e), x.shape[0]
        if self.variant == "llama":
            h = rms_norm(x, W[p + "input_layernorm.weight"], self.eps)
            k = linear(h, W[p + "self_attn.k_proj.weight"])
            v = linear(h, W[p + "self_attn.v_proj.weight"])
        else:
            k = rms_norm(linear(x, W[p + "self_attn.k_proj.weight"]), W[p + "self_attn.k_norm.weight"], self.eps)
            v = linear(x, W[p + "self_attn.v_proj.weight"])
        k = k.view(T, -1, self.hd).transpose(0, 1)
        v = v.view(T, -1, self.hd).transpose(0, 1)
        return apply_rope(k, cos, sin), v

    def finish(self, i, e, x, o, offset=None):
        """Rest of expert block e after attention: o (T, nh*hd) is the head
        output before o_proj.  offset (ff,) is added to the MLP's hidden
        activation act(gate x) * up x (controls)."""
        W, p = self.W, "layers.%d.experts.%d." % (i, e)
        a = linear(o, W[p + "self_attn.o_proj.weight"])
        mlp = (W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
        if self.variant == "llama":
            # LlamaDecoderLayer: x + attn(norm x); then + mlp(post_attention_layernorm(.))
            x = x + a
            return x + swiglu(rms_norm(x, W[p + "post_attention_layernorm.weight"], self.eps), *mlp, offset)
        # Olmo2DecoderLayer: post-norms on the sublayer outputs, before each residual add
        x = x + rms_norm(a, W[p + "post_attention_layernorm.weight"], self.eps)
        return x + rms_norm(swiglu(x, *mlp, offset), W[p + "post_feedforward_layernorm.weight"], self.eps)

    def block(self, i, e, x, offset=None, blocked=None):
        """Expert block e of layer i on all T positions of x (T, d)."""
        T = x.shape[0]
        cos, sin = rope_cos_sin(self.inv_freq, T)
        q, k, v = self.qkv(i, e, x, cos, sin)
        rep = self.nh // self.nkv
        k, v = repeat_kv(k, rep), repeat_kv(v, rep)
        if blocked is None:
            o = causal_attention(q, k, v)
        else:
            s = torch.matmul(q, k.transpose(1, 2)) * (self.hd ** -0.5)
            o = torch.matmul(torch.softmax(s.masked_fill(blocked, float("-inf")), dim=-1), v)
        return self.finish(i, e, x, o.transpose(0, 1).reshape(T, self.nh * self.hd), offset)

    def layer(self, i, x, k, trace=None, controls=None, kv="all"):
        c = controls
        probs, idx, w = micro_route(self.router_logits(i, x), k,
                                    c.bias.get(i) if c else None, c.mask.get(i) if c else None,
                                    c.force.get(i) if c else None)
        out = torch.zeros_like(x)
        T = x.shape[0]
        for e in range(self.E):
            sel = (idx == e)
            rows = sel.any(dim=-1).nonzero().flatten()
            if rows.numel() == 0:
                # runs in the released prefill too, but its output is not used
                # and nothing else reads this block's keys and values
                continue
            blocked = None
            if kv == "chosen":
                blocked = attention_blocked(T) | ~sel.any(dim=-1)[None, :]
                blocked.fill_diagonal_(False)
            y = self.block(i, e, x, c.mlp.get((i, e)) if c else None, blocked)
            we = (w * sel).sum(dim=-1)[rows]
            out[rows] += we[:, None] * y[rows]
        if trace is not None:
            trace.append((probs, idx, w))
        return out

    def forward(self, ids, k=None, trace=None, controls=None, kv="all"):
        """ids -> logits (T, vocab).  k: experts per token (default num_experts_per_tok)."""
        k = k or self.top_k
        x = self.W["embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]
        for i in range(self.L):
            x = self.layer(i, x, k, trace, controls, kv)
            if controls is not None and i in controls.resid:
                x = x + controls.resid[i]
        return rms_norm(x, self.final_norm, self.eps) @ self.lm_head.t()

    def forward_cached(self, ids, k=None, controls=None):
        """Token-by-token decoding with one KV cache per (layer, expert), the
        way the released generate path fills them: a chosen expert runs its
        whole block on the new token (appending its keys/values); an expert
        that was not chosen only appends the new token's keys/values
        (kv_only).  Must equal forward() at every position."""
        k = k or self.top_k
        c = controls
        cache = {}
        cos_all, sin_all = rope_cos_sin(self.inv_freq, len(ids))
        rep = self.nh // self.nkv
        out_logits = []
        for t, tok in enumerate(ids):
            cos, sin = cos_all[t:t + 1], sin_all[t:t + 1]
            x = self.W["embed_tokens.weight"][tok][None, :]
            for i in range(self.L):
                _, idx, w = micro_route(self.router_logits(i, x), k,
                                        c.bias.get(i) if c else None, c.mask.get(i) if c else None,
                                        c.force.get(i) if c else None)
                out = torch.zeros_like(x)
                for e in range(self.E):
                    chosen = [j for j in range(idx.shape[1]) if int(idx[0, j]) == e]
                    K, V = cache.get((i, e), (None, None))
                    if chosen:
                        q, kk, vv = self.qkv(i, e, x, cos, sin)
                    else:
                        kk, vv = self.kv_only(i, e, x, cos, sin)
                    K = kk if K is None else torch.cat((K, kk), dim=1)
                    V = vv if V is None else torch.cat((V, vv), dim=1)
                    cache[(i, e)] = (K, V)
                    if chosen:
                        s = torch.matmul(q, repeat_kv(K, rep).transpose(1, 2)) * (self.hd ** -0.5)
                        o = torch.matmul(torch.softmax(s, dim=-1), repeat_kv(V, rep))
                        y = self.finish(i, e, x, o.transpose(0, 1).reshape(1, self.nh * self.hd),
                                        c.mlp.get((i, e)) if c else None)
                        out = out + w[0, chosen[0]] * y
                x = out
                if c is not None and i in c.resid:
                    x = x + c.resid[i]
            out_logits.append(rms_norm(x, self.final_norm, self.eps) @ self.lm_head.t())
        return torch.cat(out_logits, dim=0)

    def forward_ablate(self, ids, ablate, k=None):
        """The released `experts_ablate` path, literally: router_logits[..., e] = -inf
        for each named expert, softmax, torch.topk(k) over the probabilities
        (masked experts may be picked with weight 0 when k exceeds the
        unmasked ones), weights / (sum + 1e-9), weighted sum of the picked
        blocks.  Used to check that the mask control reproduces it."""
        k = k or self.top_k
        x = self.W["embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]
        for i in range(self.L):
            logits = self.router_logits(i, x).clone()
            for name in ablate:
                logits[..., self.expert_names.index(name)] = float("-inf")
            w, idx = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
            w = w / (w.sum(dim=-1, keepdim=True) + MICRO_RENORM_EPS)
            out = torch.zeros_like(x)
            for e in range(self.E):
                tt, jj = torch.where(idx == e)
                if tt.numel():
                    out.index_add_(0, tt, self.block(i, e, x)[tt] * w[tt, jj][:, None])
            x = out
        return rms_norm(x, self.final_norm, self.eps) @ self.lm_head.t()


def random_micro_model(variant, g, d=16, L=2, E=4, nh=4, nkv=2, ff=12, V=40, topk=1):
    """A small MiCRo model with random float64 weights (self-check only)."""
    cfg = {"architectures": ["MiCRoLlama" if variant == "llama" else "MiCRoOLMo"], "model_type": variant,
           "hidden_size": d, "num_attention_heads": nh, "num_key_value_heads": nkv, "intermediate_size": ff,
           "vocab_size": V, "num_experts": E, "num_experts_per_tok": topk, "backbone_num_layers": L,
           "num_hidden_layers": L * E, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
           "rope_scaling": ({"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8, "rope_type": "llama3"}
                            if variant == "llama" else None)}
    W = {}
    for n, s in sorted(micro_expected_shapes(cfg).items()):
        if len(s) == 1:
            W[n] = 1.0 + 0.1 * torch.randn(s, generator=g, dtype=DT)
        elif n.startswith("embed_tokens"):
            W[n] = torch.randn(s, generator=g, dtype=DT)
        else:
            W[n] = torch.randn(s, generator=g, dtype=DT) * ((3.0 if "gate.1" in n else 1.0) / math.sqrt(s[1]))
    return MicroModel(cfg, W)


def micro_self_check(g):
    """MiCRo blocks against other formulations (part of --self-check)."""
    ok = True

    def check(what, a, b, tol=1e-12):
        nonlocal ok
        err = float((a - b).abs().max())
        good = err <= tol
        ok &= good
        print("  %-58s max|diff| %.2e %s" % (what, err, "ok" if good else "FAIL"))

    ids = [int(v) for v in torch.randint(1, 40, (11,), generator=g)]
    for variant in ("llama", "olmo2"):
        m = random_micro_model(variant, g)
        # 1. cached decoding (per-expert caches, non-chosen experts append
        #    K/V only) == full forward, at every position
        for kk in (1, 2):
            tr = []
            full = m.forward(ids, kk, trace=tr)
            used = sorted({int(e) for _, idx, _ in tr for e in idx.flatten()})
            check("MiCRo-%s k=%d: per-expert KV caches == full forward (experts %s)" % (variant, kk, used),
                  m.forward_cached(ids, kk), full)
        ctl = m.controls({"bias": [[0, 2, 1.5]], "mask": [[1, 0]], "force": [[0, [3, 1]]],
                          "offsets": [[1, "mlp", 2, 3, 2.0], [0, "resid", None, 5, -1.0]]})
        check("MiCRo-%s controls: KV caches == full forward" % variant,
              m.forward_cached(ids, 1, ctl), m.forward(ids, 1, controls=ctl))
        # 2. one layer against a per-token loop in plain Python floats: softmax,
        #    top-k, weights / (sum + 1e-9), sum of weight * whole block output
        x = m.W["embed_tokens.weight"][torch.tensor(ids)]
        blocks = [m.block(0, e, x) for e in range(m.E)]
        for kk, spec in ((1, None), (2, None), (4, None), (2, {"bias": [[0, 1, 1.0]], "mask": [[0, 3]]}),
                         (1, {"force": [[0, [2, 0]]]}), (2, {"mask": [[0, 0], [0, 1], [0, 2]]})):
            s = spec or {}
            bias = [0.0] * m.E
            for _, e, dl in s.get("bias", []):
                bias[e] += dl
            masked = {e for _, e in s.get("mask", [])}
            force = s["force"][0][1] if "force" in s else None
            logits = (x @ m.W["layers.0.gate.0.weight"].t()) @ m.W["layers.0.gate.1.weight"].t()
            slow = torch.zeros_like(x)
            for t in range(len(ids)):
                z = [a + b for a, b in zip(logits[t].tolist(), bias)]
                mx = max(z[e] for e in range(m.E) if e not in masked)
                pr = [0.0 if e in masked else math.exp(z[e] - mx) for e in range(m.E)]
                pr = [p / sum(pr) for p in pr]
                on = [e for e in range(m.E) if e not in masked]
                chosen = force if force is not None else sorted(on, key=lambda e: -pr[e])[:min(kk, len(on))]
                tot = sum(pr[e] for e in chosen) + (0.0 if force is not None else 1e-9)
                for e in chosen:
                    slow[t] += pr[e] / tot * blocks[e][t]
            fast = m.layer(0, x, kk, controls=m.controls(spec) if spec else None)
            check("MiCRo-%s layer k=%d %s== per-token loop" % (variant, kk, "+".join(sorted(s)) + " " if s else ""),
                  fast, slow)
        # 3. the released ablation path (topk over probabilities with zeros)
        #    == the mask control, also when k exceeds the unmasked experts
        for kk, names in ((1, ["logic"]), (2, ["social", "world", "language"]), (4, ["world"])):
            spec = {"mask": [[-1, m.expert_names.index(n)] for n in names]}
            check("MiCRo-%s ablate %s k=%d == mask control" % (variant, ",".join(names), kk),
                  m.forward_ablate(ids, names, kk), m.forward(ids, kk, controls=m.controls(spec)), 1e-13)
    # 4. Olmo2 q/k norm is over the whole projection, not per head: differs
    m = random_micro_model("olmo2", g)
    x = m.W["embed_tokens.weight"][torch.tensor(ids)]
    kp = linear(x, m.W["layers.0.experts.0.self_attn.k_proj.weight"])
    whole = rms_norm(kp, m.W["layers.0.experts.0.self_attn.k_norm.weight"], m.eps)
    per_head = rms_norm(kp.view(len(ids), m.nkv, m.hd), 1.0, m.eps).reshape(len(ids), -1) * \
        m.W["layers.0.experts.0.self_attn.k_norm.weight"]
    d = float((whole - per_head).abs().max())
    ok &= d > 1e-3
    print("  %-58s max|diff| %.2e %s" % ("Olmo2 k_norm over all heads != per-head norm (sanity)", d,
                                          "ok" if d > 1e-3 else "FAIL"))
    return ok


def micro_golden_for(model_dir, verbose=True):
    """Golden file of a MiCRo fixture: prompts x k in (1, 2, 4)."""
    name = os.path.basename(os.path.normpath(model_dir))
    t0 = time.time()
    m = load_model(model_dir)
    cases, diag = [], []
    for prompt in prompts():
        if max(prompt) >= m.vocab:
            raise ValueError("prompt id out of the vocabulary of %s" % name)
        for k in m.ks:
            last_logits, toks, margins = greedy(m, prompt, k)
            tr = []
            m.forward(prompt + toks[:-1], k, trace=tr)
            gap = None
            if k < m.E:
                gap = min(float((s[:, k - 1] - s[:, k]).min())
                          for s in (torch.sort(torch.log(pr), dim=-1, descending=True).values for pr, _, _ in tr))
            tr = []
            m.forward(prompt, k, trace=tr)
            cases.append({
                "prompt": prompt,
                "k": k,
                "logits": [sig7(v) for v in last_logits.tolist()],
                "greedy": toks,
                "min_margin": sig7(min(margins)),
                "min_router_gap": sig7(gap) if gap is not None else None,
                "routing_last": {
                    "experts": [[int(e) for e in idx[-1].tolist()] for _, idx, _ in tr],
                    "weights": [[sig7(v) for v in w[-1].tolist()] for _, _, w in tr],
                },
            })
            # diagnostics: top-1 use per layer; what skipping non-chosen
            # experts' keys/values would change at the last prompt position
            top1 = [np.bincount(idx[:, 0].numpy(), minlength=m.E).tolist() for _, idx, _ in tr]
            sparse = float((m.forward(prompt, k, kv="chosen")[-1] - last_logits).abs().max())
            diag.append((len(prompt), k, top1, sparse))
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
        for c, (n, k, top1, sparse) in zip(cases, diag):
            lg = np.array(c["logits"])
            print("   len %2d k=%d logits std %5.2f max %6.2f  greedy %2d distinct  min_margin %.4f" % (
                n, k, lg.std(), lg.max(), len(set(c["greedy"])), c["min_margin"]), end="")
            if c["min_router_gap"] is not None:
                print("  min_router_gap %.2e" % c["min_router_gap"], end="")
            print("  top-1 per layer %s  K/V of chosen positions only: max|dlogit| %.4f" % (
                " ".join("".join("%3d" % v for v in cl) for cl in top1), sparse))
    return doc


# Control cases of the MiCRo fixtures, in the notation of CONTROL_CASES
# (k = 1, the config's num_experts_per_tok, unless stated).  Experts:
# 0 logic, 1 social, 2 world, 3 language.
MICRO_CONTROL_CASES = {
    "micro-llama-tiny": [
        ("mask-logic-all", 2, 1, {"mask": [[-1, 0]]}),
        ("mask-social-all-p7", 1, 1, {"mask": [[-1, 1]]}),
        ("mask-world-l1", 2, 1, {"mask": [[1, 2]]}),
        ("mask-3-l0-k2", 2, 2, {"mask": [[0, 0], [0, 1], [0, 3]]}),
        ("bias-language+2-all", 2, 1, {"bias": [[-1, 3, 2.0]]}),
        # logic (0) is layer 2's choice at the last prompt position (p 0.98)
        ("bias-logic-5-l2", 2, 1, {"bias": [[2, 0, -5.0]]}),
        ("force-social-all", 2, 1, {"force": [[-1, [1]]]}),
        ("force-logic-world-l1", 2, 1, {"force": [[1, [0, 2]]]}),
        ("mlp-l1e2n10", 2, 1, {"offsets": [[1, "mlp", 2, 10, 5.0]]}),
        ("resid-l1n5", 2, 1, {"offsets": [[1, "resid", None, 5, -5.0]]}),
        ("mask-bias-mlp-k2", 2, 2, {"mask": [[-1, 0]], "bias": [[1, 3, 1.5]],
                                    "offsets": [[2, "mlp", 1, 20, 3.0]]}),
    ],
    "micro-olmo-tiny": [
        ("mask-language-all", 2, 1, {"mask": [[-1, 3]]}),
        ("mask-logic-all-p7", 1, 1, {"mask": [[-1, 0]]}),
        ("bias-world+2-all", 2, 1, {"bias": [[-1, 2, 2.0]]}),
        ("force-logic-all", 2, 1, {"force": [[-1, [0]]]}),
        ("force-social-language-l1", 2, 1, {"force": [[1, [1, 3]]]}),
        ("mlp-l0e1n7", 2, 1, {"offsets": [[0, "mlp", 1, 7, 5.0]]}),
        ("resid-l0n3", 2, 1, {"offsets": [[0, "resid", None, 3, 6.0]]}),
        ("mask-bias-mlp-k2", 2, 2, {"mask": [[-1, 2]], "bias": [[0, 0, 1.5]],
                                    "offsets": [[1, "mlp", 3, 30, -4.0]]}),
    ],
}
CONTROL_CASES.update(MICRO_CONTROL_CASES)


def micro_control_consistency(m, name):
    """Whole-model checks of the controls against each other and against the
    released ablation path."""
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

    E, L = m.E, m.L
    for kk in (1, 2):
        # equal up to the released + 1e-9 of the top-k renormalisation (sum 1
        # here), which forced weights do not get: relative 1e-9
        keep = [[(i + 2 * j + 1) % E for j in range(kk)] for i in range(L)]
        check("k=%d, mask all but %s == force %s (to 1e-9 relative)" % (kk, keep, keep),
              run(kk, {"mask": [[i, e] for i in range(L) for e in range(E) if e not in keep[i]]}),
              run(kk, {"force": [[i, keep[i]] for i in range(L)]}), 1e-7)
    check("force all %d experts (k=1) == k=%d without controls (to 1e-9 relative)" % (E, E),
          run(1, {"force": [[-1, list(range(E))]]}), run(E, None), 1e-7)
    check("force all in reverse order == in order (bitwise)",
          run(1, {"force": [[-1, list(range(E))[::-1]]]}), run(1, {"force": [[-1, list(range(E))]]}), 0)
    check("mask [-1, 1] == mask [i, 1] for every layer (bitwise)",
          run(1, {"mask": [[-1, 1]]}), run(1, {"mask": [[i, 1] for i in range(L)]}), 0)
    check("bias 0 == no controls (bitwise)", run(1, {"bias": [[-1, 2, 0.0]]}), run(1, None), 0)
    check("mlp offset on an expert masked in that layer == the mask alone (bitwise)",
          run(1, {"mask": [[1, 2]], "offsets": [[1, "mlp", 2, 10, 5.0]]}), run(1, {"mask": [[1, 2]]}), 0)
    check("two mlp offsets on one target (2 + 3) == one of 5",
          run(1, {"offsets": [[1, "mlp", 2, 10, 2.0], [1, "mlp", 2, 10, 3.0]]}),
          run(1, {"offsets": [[1, "mlp", 2, 10, 5.0]]}))
    for kk, names in ((1, ["logic"]), (1, ["social", "language"]), (2, ["logic", "social", "world"])):
        check("released ablate %s (k=%d) == mask control" % (",".join(names), kk),
              m.forward_ablate(p40, names, kk), run(kk, {"mask": [[-1, m.expert_names.index(n)] for n in names]}),
              1e-13)
    print("   control consistency (%s):" % name, "passed" if ok else "FAILED")
    return ok


def micro_controls_golden(name, verbose=True):
    """Write tests/fixtures/golden/controls-<name>.json for a MiCRo fixture."""
    t0 = time.time()
    m = load_model(os.path.join(MODELS, name))
    print("controls-%s: controls checked against each other" % name)
    ok = micro_control_consistency(m, name)
    P = prompts()
    cases, report = [], []
    for label, pi, k, spec in MICRO_CONTROL_CASES[name]:
        prompt = P[pi]
        ctl = m.controls(spec)
        last_logits, toks, margins = greedy(m, prompt, k, controls=ctl)
        base_logits, base_toks, _ = greedy(m, prompt, k)
        effect = float((last_logits - base_logits).abs().max())
        first_div = next((n for n, (a, b) in enumerate(zip(toks, base_toks)) if a != b), None)
        tr = []
        m.forward(prompt + toks[:-1], k, trace=tr, controls=ctl)
        gap = controlled_router_gap(tr, k, ctl)
        tr = []
        m.forward(prompt, k, trace=tr, controls=ctl)
        cases.append({
            "name": label,
            "prompt": prompt,
            "k": k,
            "controls": {key: spec[key] for key in ("bias", "mask", "force", "offsets") if spec.get(key)},
            "logits": [sig7(v) for v in last_logits.tolist()],
            "greedy": toks,
            "min_margin": sig7(min(margins)),
            "min_router_gap": sig7(gap) if gap is not None else None,
            "routing_last": {
                "experts": [[int(e) for e in idx[-1].tolist()] for _, idx, _ in tr],
                "weights": [[sig7(v) for v in w[-1].tolist()] for _, _, w in tr],
                "probs": [[sig7(v) for v in pr[-1].tolist()] for pr, _, _ in tr],
            },
        })
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
            print("   %-24s len %2d k=%d max|dlogit| vs no controls %7.4f  %-24s min_margin %.4f" % (
                label, n, k, effect,
                "greedy identical" if first_div is None else "greedy differs from %d" % first_div, margin),
                end="")
            if gap is not None:
                print("  min_router_gap %.2e" % gap, end="")
            print("" if good else "  FAIL (needs effect > %g, margin >= %g)" % (MIN_CONTROL_EFFECT,
                                                                                 MIN_CONTROL_MARGIN))
    return ok


# ---------------------------------------------------------------------------
# OLMoE, Qwen2-MoE and Qwen3-MoE (issue 5), and transformers 5 checkpoints
#
# Written from transformers' src/transformers/models/olmoe/{modular,modeling,
# configuration}_olmoe.py, models/qwen2_moe/{modular,configuration}_qwen2_moe.py,
# models/qwen3_moe/{modular,modeling,configuration}_qwen3_moe.py and
# src/transformers/conversion_mapping.py (see README.md next to this file,
# sections "OLMoE, Qwen2-MoE, Qwen3-MoE" and "The fused expert layout").
# ---------------------------------------------------------------------------

FAMILY_ARCHS = {"OlmoeForCausalLM": "olmoe", "Qwen2MoeForCausalLM": "qwen2_moe",
                "Qwen3MoeForCausalLM": "qwen3_moe"}
FAMILY_FIXTURE_NAMES = ["olmoe-tiny", "qwen2moe-tiny", "qwen3moe-tiny", "qwen3moe-tiny-fused", "mixtral-tiny-fused"]
FIXTURE_NAMES.extend(n for n in FAMILY_FIXTURE_NAMES if n not in FIXTURE_NAMES)
# a "-fused" fixture holds its twin's weights in the fused layout: same golden values
FUSED_TWINS = {"qwen3moe-tiny-fused": "qwen3moe-tiny", "mixtral-tiny-fused": "mixtral-tiny"}


def normalize_config(cfg):
    """A transformers 5 config.json keeps the RoPE settings in "rope_parameters"
    ({"rope_theta", "rope_type", ...}: modeling_rope_utils moves a legacy
    rope_theta / rope_scaling there) and writes "dtype" for "torch_dtype".
    Returns the config with rope_theta / rope_scaling as the rest of this
    reference reads them (a copy; the input is not changed)."""
    rp = cfg.get("rope_parameters")
    if rp is None:
        return cfg
    cfg = dict(cfg)
    if "rope_theta" in cfg and float(cfg["rope_theta"]) != float(rp["rope_theta"]):
        raise ValueError("rope_theta %r disagrees with rope_parameters %r" % (cfg["rope_theta"], rp))
    cfg["rope_theta"] = float(rp["rope_theta"])
    rtype = rp.get("rope_type", rp.get("type", "default"))
    if rtype == "default":
        if cfg.get("rope_scaling") not in (None, {}):
            raise ValueError("rope_scaling %r next to a default rope_parameters" % (cfg["rope_scaling"],))
        cfg["rope_scaling"] = None
    else:
        cfg["rope_scaling"] = {key: v for key, v in rp.items() if key != "rope_theta"}
    return cfg


def unfuse_experts(cfg, weights):
    """Map a checkpoint in transformers 5's fused expert layout back to the
    per-expert names (numpy arrays in, numpy arrays out; anything else is
    passed through).  conversion_mapping.py builds, per sparse layer,

        mlp.experts.gate_up_proj (E, 2*ff, hidden): MergeModulelist(dim=0) of the
            experts, then Concatenate(dim=1) of [gate_proj, up_proj] (Mixtral:
            [w1, w3]) -- expert e's gate is gate_up_proj[e, :ff], its up
            gate_up_proj[e, ff:]; the matrices keep the (out, in) orientation
        mlp.experts.down_proj    (E, hidden, ff): expert e's down_proj (Mixtral w2)

    and renames Mixtral's ".block_sparse_moe." to ".mlp." (router
    mlp.gate.weight).  A layer must not carry both layouts."""
    suffix = ".mlp.experts.gate_up_proj"
    fused = sorted(n for n in weights if n.endswith(suffix))
    if not fused:
        if any(n.endswith(".mlp.experts.down_proj") for n in weights):
            raise ValueError("mlp.experts.down_proj without mlp.experts.gate_up_proj")
        return weights
    mixtral = cfg.get("model_type") == "mixtral"
    gate_n, up_n, down_n = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    E = cfg.get("num_local_experts") if mixtral else cfg.get("num_experts")
    out = {}
    handled = set()
    for name in fused:
        layer = name[:-len(suffix)]                       # "model.layers.L"
        gu = weights[name]
        dn_name = layer + ".mlp.experts.down_proj"
        if dn_name not in weights:
            raise ValueError("%s without %s" % (name, dn_name))
        dn = weights[dn_name]
        if gu.ndim != 3 or gu.shape[0] != E or gu.shape[1] % 2:
            raise ValueError("%s: shape %s is not (%d, 2*ff, hidden)" % (name, gu.shape, E))
        ff, d = gu.shape[1] // 2, gu.shape[2]
        if dn.shape != (E, d, ff):
            raise ValueError("%s: shape %s is not (%d, %d, %d)" % (dn_name, dn.shape, E, d, ff))
        dst = layer + (".block_sparse_moe.experts." if mixtral else ".mlp.experts.")
        for e in range(E):
            if layer + ".mlp.experts.%d.%s.weight" % (e, gate_n) in weights:
                raise ValueError("%s has both the fused and the per-expert layout" % layer)
            out[dst + "%d.%s.weight" % (e, gate_n)] = gu[e, :ff]
            out[dst + "%d.%s.weight" % (e, up_n)] = gu[e, ff:]
            out[dst + "%d.%s.weight" % (e, down_n)] = dn[e]
        handled.update((name, dn_name))
        if mixtral:
            out[layer + ".block_sparse_moe.gate.weight"] = weights[layer + ".mlp.gate.weight"]
            handled.add(layer + ".mlp.gate.weight")
    for name, a in weights.items():
        if name in handled:
            continue
        if name.endswith(".mlp.experts.down_proj"):
            raise ValueError("%s without its gate_up_proj" % name)
        if mixtral and ".mlp." in name:
            raise ValueError("unexpected tensor %s in a fused Mixtral checkpoint" % name)
        out[name] = a
    return out


def route_family(router_logits, k, norm_topk_prob, bias=None, mask=None, force=None):
    """OlmoeSparseMoeBlock.route_tokens_to_experts / Qwen2MoeTopKRouter.forward
    (Qwen3MoeTopKRouter is the same class): softmax over all experts, top-k,
    and only if norm_topk_prob divide the k weights by their sum; otherwise
    the weights are the softmax probabilities themselves.

    Controls as in route(): bias (E,) added to the logits, then masked
    experts get logit -inf, so the softmax is over the unmasked experts only
    (their probabilities sum to 1); force makes the chosen set exactly that
    list; otherwise the top k_eff = min(k, unmasked) are chosen.  The weights
    of the chosen experts are their probabilities, divided by their sum only
    when norm_topk_prob.  Returns (probs (T,E), experts (T,n), weights (T,n))."""
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
    if norm_topk_prob:
        w = w / w.sum(dim=-1, keepdim=True)
    return probs, idx, w


class FamilyControls:
    """Controls (see Controls) for a model whose sparse layers are
    moe_layers: layer -1 of a router control means every sparse layer, and
    naming a dense layer is an error.  Offsets:
      [layer, "mlp", expert, neuron, delta]  a routed expert of a sparse layer
                                             (neuron < its width), or the dense
                                             MLP of a dense layer (expert 0)
      [layer, "shared", null, neuron, delta] the shared expert (Qwen2-MoE) of
                                             a sparse layer: its hidden activation
                                             silu(gate x) * up x, every token
      [layer, "resid", null, neuron, delta]  as in Controls"""

    def __init__(self, spec, n_layers, n_experts, moe_layers, ff_expert, ff_dense, ff_shared, d_model):
        spec = spec or {}
        unknown = set(spec) - {"bias", "mask", "force", "offsets"}
        if unknown:
            raise ValueError("unknown controls %s" % sorted(unknown))
        L, E = n_layers, n_experts
        self.moe_layers = list(moe_layers)
        sparse = set(self.moe_layers)

        def layers(l, what):
            if not isinstance(l, int) or not -1 <= l < L:
                raise ValueError("%s: layer %r not in -1..%d" % (what, l, L - 1))
            if l != -1 and l not in sparse:
                raise ValueError("%s: layer %d is dense (sparse layers: %s)" % (what, l, self.moe_layers))
            return self.moe_layers if l == -1 else [l]

        def expert(e, what):
            if not isinstance(e, int) or not 0 <= e < E:
                raise ValueError("%s: expert %r not in 0..%d" % (what, e, E - 1))
            return e

        def neuron(o, n, width):
            if not isinstance(n, int) or not 0 <= n < width:
                raise ValueError("offset %r: neuron not in 0..%d" % (o, width - 1))

        self.bias, self.mask, self.force, self.mlp, self.shared, self.resid = {}, {}, {}, {}, {}, {}
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
                if l in sparse:
                    expert(e, "offset")
                    neuron(o, n, ff_expert)
                    width = ff_expert
                else:
                    if e != 0:
                        raise ValueError("offset %r: the dense MLP of layer %d is expert 0" % (o, l))
                    neuron(o, n, ff_dense)
                    width = ff_dense
                self.mlp.setdefault((l, e), torch.zeros(width, dtype=DT))[n] += float(delta)
            elif kind == "shared":
                if l not in sparse or not ff_shared:
                    raise ValueError("offset %r: layer %d has no shared expert" % (o, l))
                if e is not None:
                    raise ValueError("offset %r: a shared offset has expert null" % (o,))
                neuron(o, n, ff_shared)
                self.shared.setdefault(l, torch.zeros(ff_shared, dtype=DT))[n] += float(delta)
            elif kind == "resid":
                if e is not None:
                    raise ValueError("offset %r: a resid offset has expert null" % (o,))
                neuron(o, n, d_model)
                self.resid.setdefault(l, torch.zeros(d_model, dtype=DT))[n] += float(delta)
            else:
                raise ValueError("offset %r: kind must be \"mlp\", \"shared\" or \"resid\"" % (o,))


def family_moe_layers(cfg, family):
    """OLMoE: every layer is sparse (OlmoeDecoderLayer always builds an
    OlmoeSparseMoeBlock).  Qwen2-MoE / Qwen3-MoE (Qwen2MoeDecoderLayer.__init__,
    inherited by Qwen3MoeDecoderLayer): layer i is sparse iff
    i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0."""
    L = cfg["num_hidden_layers"]
    if family == "olmoe":
        return list(range(L))
    step = cfg.get("decoder_sparse_step", 1)
    only = cfg.get("mlp_only_layers") or []
    return [i for i in range(L) if i not in only and cfg["num_experts"] > 0 and (i + 1) % step == 0]


def family_expected_tensors(cfg, family):
    """{name: shape} a checkpoint of this family must hold (per-expert layout)."""
    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or d // nh
    E = cfg["num_experts"]
    ffe = cfg["intermediate_size"] if family == "olmoe" else cfg["moe_intermediate_size"]
    ffd = cfg["intermediate_size"]
    if family == "qwen2_moe":
        qkv_b, o_b = cfg.get("qkv_bias", True), False      # Qwen2MoeAttention: o_proj bias=False
    else:
        qkv_b = o_b = cfg.get("attention_bias", False)
    sparse = set(family_moe_layers(cfg, family))
    t = {"model.embed_tokens.weight": (cfg["vocab_size"], d), "model.norm.weight": (d,)}
    if not cfg.get("tie_word_embeddings", False):
        t["lm_head.weight"] = (cfg["vocab_size"], d)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        t[p + "input_layernorm.weight"] = (d,)
        t[p + "post_attention_layernorm.weight"] = (d,)
        for proj, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            t[p + "self_attn.%s_proj.weight" % proj] = (rows, d)
            if qkv_b:
                t[p + "self_attn.%s_proj.bias" % proj] = (rows,)
        t[p + "self_attn.o_proj.weight"] = (d, nh * hd)
        if o_b:
            t[p + "self_attn.o_proj.bias"] = (d,)
        if family == "olmoe":
            # OlmoeAttention: q_norm over hidden_size, k_norm over (hidden/heads) * kv_heads
            t[p + "self_attn.q_norm.weight"] = (d,)
            t[p + "self_attn.k_norm.weight"] = ((d // nh) * nkv,)
        elif family == "qwen3_moe":
            t[p + "self_attn.q_norm.weight"] = (hd,)
            t[p + "self_attn.k_norm.weight"] = (hd,)
        if i in sparse:
            t[p + "mlp.gate.weight"] = (E, d)
            for e in range(E):
                q = p + "mlp.experts.%d." % e
                t[q + "gate_proj.weight"] = (ffe, d)
                t[q + "up_proj.weight"] = (ffe, d)
                t[q + "down_proj.weight"] = (d, ffe)
            if family == "qwen2_moe":
                s = cfg["shared_expert_intermediate_size"]
                t[p + "mlp.shared_expert.gate_proj.weight"] = (s, d)
                t[p + "mlp.shared_expert.up_proj.weight"] = (s, d)
                t[p + "mlp.shared_expert.down_proj.weight"] = (d, s)
                t[p + "mlp.shared_expert_gate.weight"] = (1, d)
        else:
            t[p + "mlp.gate_proj.weight"] = (ffd, d)
            t[p + "mlp.up_proj.weight"] = (ffd, d)
            t[p + "mlp.down_proj.weight"] = (d, ffd)
    return t


class MoeFamilyModel(Model):
    """OlmoeForCausalLM, Qwen2MoeForCausalLM and Qwen3MoeForCausalLM.

    Decoder layer (LlamaDecoderLayer, as all three use):
        x += o_proj(attention(input_layernorm(x)));  x += mlp(post_attention_layernorm(x))
    Attention:
        OLMoE:  q = q_norm(q_proj x), k = k_norm(k_proj x) -- RMSNorm over the whole
                projection, before the heads are split --, v = v_proj x; if clip_qkv
                is not null, q, k and v are clamped to [-clip_qkv, clip_qkv] (after the
                norms); then heads, RoPE.  Biases on q/k/v/o only with attention_bias.
        Qwen2-MoE: q/k/v biases (qkv_bias, default true), none on o_proj.
        Qwen3-MoE: heads of head_dim (config, independent of hidden/heads); q_norm and
                k_norm (size head_dim) applied to each head after the split, before
                RoPE; biases on q/k/v/o only with attention_bias.
    MLP of a sparse layer: softmax router over num_experts, top-k, renormalised only
        with norm_topk_prob (route_family); experts gate_proj/up_proj/down_proj of
        width intermediate_size (OLMoE) or moe_intermediate_size (Qwen); Qwen2-MoE adds
        sigmoid(shared_expert_gate . x) * shared_expert(x) (width
        shared_expert_intermediate_size) for every token.  Dense layer (Qwen only,
        family_moe_layers): gate_proj/up_proj/down_proj of width intermediate_size."""

    def __init__(self, cfg, W):
        self.cfg = cfg
        self.W = W
        arch = cfg["architectures"][0]
        if arch not in FAMILY_ARCHS:
            raise ValueError("unsupported architecture %s" % arch)
        self.family = fam = FAMILY_ARCHS[arch]
        if cfg.get("model_type") != fam:
            raise ValueError("%s with model_type %r" % (arch, cfg.get("model_type")))
        self.moe = True
        self.d = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.d // self.nh
        if fam == "olmoe" and self.hd * self.nh != self.d:
            raise ValueError("OLMoE needs hidden_size divisible by the heads")
        self.eps = cfg["rms_norm_eps"]
        self.vocab = cfg["vocab_size"]
        assert cfg.get("hidden_act", "silu") == "silu"
        rs = cfg.get("rope_scaling")
        if rs and rs.get("rope_type", rs.get("type", "default")) != "default":
            raise ValueError("rope_scaling %r not implemented for %s" % (rs, arch))
        self.inv_freq = default_inv_freq(cfg["rope_theta"], self.hd)
        if cfg.get("use_sliding_window", False):
            raise ValueError("use_sliding_window is not implemented in the reference")
        self.window = None      # sliding_window is ignored while use_sliding_window is false
        self.n_experts = cfg["num_experts"]
        self.top_k = cfg["num_experts_per_tok"]
        self.norm_topk = bool(cfg.get("norm_topk_prob", False))   # False by default in all three configs
        self.moe_layers = family_moe_layers(cfg, fam)
        self.ff_expert = cfg["intermediate_size"] if fam == "olmoe" else cfg["moe_intermediate_size"]
        self.ff_dense = cfg["intermediate_size"]
        self.ff_shared = cfg["shared_expert_intermediate_size"] if fam == "qwen2_moe" else 0
        self.clip = cfg.get("clip_qkv") if fam == "olmoe" else None
        self.clip_count = [0, 0]            # clamped elements, elements seen (q, k, v together)
        # golden cases: k = 1, 2, the config's k and every expert
        self.ks = tuple(sorted({1, 2, self.top_k, self.n_experts}))
        tied = cfg.get("tie_word_embeddings", False)
        expected = family_expected_tensors(cfg, fam)
        got = {n: tuple(v.shape) for n, v in W.items()}
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
            raise ValueError("%s tensors: missing %s, unexpected %s, wrong shape %s" % (
                arch, missing[:4], extra[:4], [(n, got[n], expected[n]) for n in wrong[:4]]))
        self.lm_head = W["model.embed_tokens.weight"] if tied else W["lm_head.weight"]

    def attention(self, i, h):
        W = self.W
        p = "model.layers.%d.self_attn." % i
        T = h.shape[0]
        q = linear(h, W[p + "q_proj.weight"], W.get(p + "q_proj.bias"))
        k = linear(h, W[p + "k_proj.weight"], W.get(p + "k_proj.bias"))
        v = linear(h, W[p + "v_proj.weight"], W.get(p + "v_proj.bias"))
        if self.family == "olmoe":
            q = rms_norm(q, W[p + "q_norm.weight"], self.eps)
            k = rms_norm(k, W[p + "k_norm.weight"], self.eps)
            if self.clip is not None:
                c = float(self.clip)
                for t in (q, k, v):
                    self.clip_count[0] += int((t.abs() > c).sum())
                    self.clip_count[1] += t.numel()
                q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = q.view(T, self.nh, self.hd).transpose(0, 1)
        k = k.view(T, self.nkv, self.hd).transpose(0, 1)
        v = v.view(T, self.nkv, self.hd).transpose(0, 1)
        if self.family == "qwen3_moe":
            q = rms_norm(q, W[p + "q_norm.weight"], self.eps)
            k = rms_norm(k, W[p + "k_norm.weight"], self.eps)
        cos, sin = rope_cos_sin(self.inv_freq, T)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        rep = self.nh // self.nkv
        o = causal_attention(q, repeat_kv(k, rep), repeat_kv(v, rep), self.window)
        o = o.transpose(0, 1).reshape(T, self.nh * self.hd)
        return linear(o, W[p + "o_proj.weight"], W.get(p + "o_proj.bias"))

    def moe_block(self, i, h, k, trace, controls=None):
        W = self.W
        p = "model.layers.%d.mlp." % i
        c = controls
        logits = linear(h, W[p + "gate.weight"])
        if c is None:
            probs, idx, w = route_family(logits, k, self.norm_topk)
        else:
            probs, idx, w = route_family(logits, k, self.norm_topk, c.bias.get(i), c.mask.get(i), c.force.get(i))
        out = torch.zeros_like(h)
        for e in range(self.n_experts):
            sel = (idx == e)
            rows = sel.any(dim=-1).nonzero().flatten()
            if rows.numel() == 0:
                continue
            q = p + "experts.%d." % e
            y = swiglu(h[rows], W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"],
                       c.mlp.get((i, e)) if c is not None else None)
            we = (w * sel).sum(dim=-1)[rows]
            out[rows] += we[:, None] * y
        if self.family == "qwen2_moe":
            q = p + "shared_expert."
            s = swiglu(h, W[q + "gate_proj.weight"], W[q + "up_proj.weight"], W[q + "down_proj.weight"],
                       c.shared.get(i) if c is not None else None)
            out = out + torch.sigmoid(linear(h, W[p + "shared_expert_gate.weight"])) * s
        if trace is not None:
            trace.append((probs, idx, w))
        return out

    def controls(self, spec):
        return FamilyControls(spec, self.L, self.n_experts, self.moe_layers, self.ff_expert, self.ff_dense,
                              self.ff_shared, self.d)

    def forward(self, ids, k=None, trace=None, controls=None):
        """ids -> logits (T, vocab); trace gets one entry per sparse layer, in layer order."""
        W = self.W
        sparse = set(self.moe_layers)
        x = W["model.embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]
        for i in range(self.L):
            p = "model.layers.%d." % i
            x = x + self.attention(i, rms_norm(x, W[p + "input_layernorm.weight"], self.eps))
            h = rms_norm(x, W[p + "post_attention_layernorm.weight"], self.eps)
            if i in sparse:
                x = x + self.moe_block(i, h, k or self.top_k, trace, controls)
            else:
                x = x + swiglu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                               W[p + "mlp.down_proj.weight"],
                               controls.mlp.get((i, 0)) if controls is not None else None)
            if controls is not None and i in controls.resid:
                x = x + controls.resid[i]
        x = rms_norm(x, W["model.norm.weight"], self.eps)
        return x @ self.lm_head.t()


def _random_family_model(family, g, **over):
    """A small random MoeFamilyModel for the self-check."""
    cfg = {"architectures": [k for k, v in FAMILY_ARCHS.items() if v == family], "model_type": family,
           "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 12, "vocab_size": 20, "num_experts": 5, "num_experts_per_tok": 2,
           "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "moe_intermediate_size": 6,
           "shared_expert_intermediate_size": 10, "decoder_sparse_step": 1, "mlp_only_layers": [1]}
    cfg.update(over)
    W = {}
    for n, s in family_expected_tensors(cfg, family).items():
        W[n] = torch.randn(*s, generator=g, dtype=DT) * (1.0 if len(s) == 1 else 2.0 / math.sqrt(s[-1]))
        if n.endswith("norm.weight"):
            W[n] = 1 + 0.3 * W[n]
    return MoeFamilyModel(cfg, W)


def family_self_check():
    """The OLMoE / Qwen blocks against per-position loops in plain Python
    floats, written from the rules above; the fused layout against its
    definition."""
    g = torch.Generator().manual_seed(5)
    ok = True

    def check(what, a, b, tol=1e-12):
        nonlocal ok
        err = float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())
        good = err <= tol
        ok &= good
        print("  %-58s max|diff| %.2e %s" % (what, err, "ok" if good else "FAIL"))

    def rms(vec, w, eps):
        ms = sum(t * t for t in vec) / len(vec)
        return [w[j] * vec[j] / math.sqrt(ms + eps) for j in range(len(vec))]

    def attn_loop(m, i, h, clip=None):
        # per position: projections, norms, clip, RoPE by pairs (j, j + hd/2), causal softmax
        W, p, hd = m.W, "model.layers.%d.self_attn." % i, m.hd
        T = h.shape[0]

        def proj(name, t):
            y = W[p + name + "_proj.weight"] @ h[t]
            b = W.get(p + name + "_proj.bias")
            return (y + b if b is not None else y).tolist()

        Q, K, V = [], [], []
        for t in range(T):
            q, k, v = proj("q", t), proj("k", t), proj("v", t)
            if m.family == "olmoe":
                q = rms(q, W[p + "q_norm.weight"].tolist(), m.eps)
                k = rms(k, W[p + "k_norm.weight"].tolist(), m.eps)
                if clip is not None:
                    q, k, v = ([min(max(a, -clip), clip) for a in z] for z in (q, k, v))
            heads = lambda z, n: [z[j * hd:(j + 1) * hd] for j in range(n)]
            q, k, v = heads(q, m.nh), heads(k, m.nkv), heads(v, m.nkv)
            if m.family == "qwen3_moe":
                q = [rms(a, W[p + "q_norm.weight"].tolist(), m.eps) for a in q]
                k = [rms(a, W[p + "k_norm.weight"].tolist(), m.eps) for a in k]

            def rope(a):
                out = list(a)
                for j in range(hd // 2):
                    ang = t * float(m.inv_freq[j])
                    c, s = math.cos(ang), math.sin(ang)
                    out[j] = a[j] * c - a[j + hd // 2] * s
                    out[j + hd // 2] = a[j + hd // 2] * c + a[j] * s
                return out

            Q.append([rope(a) for a in q])
            K.append([rope(a) for a in k])
            V.append(v)
        out = torch.zeros(T, m.nh * hd, dtype=DT)
        for t in range(T):
            for hh in range(m.nh):
                kv = hh // (m.nh // m.nkv)
                s = [sum(a * b for a, b in zip(Q[t][hh], K[u][kv])) / math.sqrt(hd) for u in range(t + 1)]
                mx = max(s)
                e = [math.exp(a - mx) for a in s]
                z = sum(e)
                for j in range(hd):
                    out[t, hh * hd + j] = sum(e[u] / z * V[u][kv][j] for u in range(t + 1))
        return linear(out, W[p + "o_proj.weight"], W.get(p + "o_proj.bias"))

    def moe_loop(m, i, h, kk, spec):
        W, p, E = m.W, "model.layers.%d.mlp." % i, m.n_experts
        bias, masked, force, off, shoff = [0.0] * E, set(), None, {}, {}
        for _, e, dl in spec.get("bias", []):
            bias[e] += dl
        for _, e in spec.get("mask", []):
            masked.add(e)
        for _, es in spec.get("force", []):
            force = es
        for _, kind, e, n, dl in spec.get("offsets", []):
            if kind == "mlp":
                off[(e, n)] = off.get((e, n), 0.0) + dl
            else:
                shoff[n] = shoff.get(n, 0.0) + dl
        logits = h @ W[p + "gate.weight"].t()
        out = torch.zeros_like(h)

        def mlp(q, x, offs):
            a = W[q + "gate_proj.weight"] @ x
            act = a * torch.sigmoid(a) * (W[q + "up_proj.weight"] @ x)
            for n, dl in offs.items():
                act[n] += dl
            return W[q + "down_proj.weight"] @ act

        for t in range(h.shape[0]):
            z = [a + b for a, b in zip(logits[t].tolist(), bias)]
            mx = max(z[e] for e in range(E) if e not in masked)
            pr = [0.0 if e in masked else math.exp(z[e] - mx) for e in range(E)]
            tot = sum(pr)
            pr = [a / tot for a in pr]
            if force is not None:
                chosen = force
            else:
                on = [e for e in range(E) if e not in masked]
                chosen = sorted(on, key=lambda e: -pr[e])[:min(kk, len(on))]
            norm = sum(pr[e] for e in chosen) if m.norm_topk else 1.0
            for e in chosen:
                out[t] += pr[e] / norm * mlp(p + "experts.%d." % e, h[t],
                                             {n: dl for (oe, n), dl in off.items() if oe == e})
            if m.family == "qwen2_moe":
                gate = float(W[p + "shared_expert_gate.weight"][0] @ h[t])
                out[t] += 1.0 / (1.0 + math.exp(-gate)) * mlp(p + "shared_expert.", h[t], shoff)
        return out

    T = 7
    # OLMoE: norms over the whole projection, clip; 4 heads / 2 kv heads
    m = _random_family_model("olmoe", g, clip_qkv=None)
    h = torch.randn(T, m.d, generator=g, dtype=DT)
    check("OLMoE attention (q/k norm over projection) == loop", m.attention(0, h), attn_loop(m, 0, h))
    m.clip = 0.9
    m.clip_count = [0, 0]
    fast = m.attention(0, h)
    frac = m.clip_count[0] / m.clip_count[1]
    check("OLMoE attention, clip_qkv 0.9 (%.0f%% clamped) == loop" % (100 * frac), fast, attn_loop(m, 0, h, 0.9))
    if not 0.05 < frac < 0.95:
        ok = False
        print("  clip_qkv 0.9 clamps %.3f of the values: not a test of the clamp  FAIL" % frac)
    # Qwen2-MoE: q/k/v biases; Qwen3-MoE: per-head norms, head_dim 8 != 16/4
    m2 = _random_family_model("qwen2_moe", g)
    check("Qwen2-MoE attention (q/k/v biases, none on o) == loop", m2.attention(2, h), attn_loop(m2, 2, h))
    m3 = _random_family_model("qwen3_moe", g, head_dim=8, attention_bias=True)
    check("Qwen3-MoE attention (per-head q/k norm, head_dim 8) == loop", m3.attention(0, h), attn_loop(m3, 0, h))
    # routers and experts, with and without renormalisation, with controls
    h = torch.randn(T, 16, generator=g, dtype=DT)
    for mm in (_random_family_model("olmoe", g, norm_topk_prob=False),
               _random_family_model("qwen3_moe", g, norm_topk_prob=True, decoder_sparse_step=2, mlp_only_layers=[]),
               _random_family_model("qwen2_moe", g, norm_topk_prob=False)):
        i = mm.moe_layers[-1]
        for kk, spec in ((1, {}), (2, {}), (5, {}),
                         (2, {"bias": [[i, 1, 1.5], [i, 4, -2.0]], "mask": [[i, 2]]}),
                         (3, {"mask": [[i, 0], [i, 3]]}),
                         (2, {"bias": [[i, 3, 1.0]], "mask": [[i, 2]], "force": [[i, [4, 1, 0]]]}),
                         (2, {"offsets": [[i, "mlp", 1, 3, 2.5], [i, "mlp", 4, 5, -1.5]] +
                              ([[i, "shared", None, 7, 3.0]] if mm.ff_shared else [])})):
            ctl = mm.controls(spec)
            check("%s MoE k=%d %s == per-token loop" % (mm.family, kk, "+".join(sorted(spec)) or "plain"),
                  mm.moe_block(i, h, kk, None, ctl), moe_loop(mm, i, h, kk, spec))
    # sparse-layer rule
    for step, only, L, exp in ((1, [1], 3, [0, 2]), (2, [], 4, [1, 3]), (2, [], 3, [1]), (1, [], 2, [0, 1]),
                               (3, [5], 6, [2])):
        got = family_moe_layers({"num_hidden_layers": L, "decoder_sparse_step": step, "mlp_only_layers": only,
                                 "num_experts": 4}, "qwen2_moe")
        check("sparse layers, step %d, mlp_only %s, %d layers == %s" % (step, only, L, exp),
              torch.tensor(float(got == exp)), torch.tensor(1.0), 0)
    # the fused layout: gate first in gate_up_proj, not transposed
    E, ff, d = 3, 4, 5
    per = {}
    for e in range(E):
        for n, s in (("gate_proj", (ff, d)), ("up_proj", (ff, d)), ("down_proj", (d, ff))):
            per["model.layers.0.mlp.experts.%d.%s.weight" % (e, n)] = np.random.default_rng([7, e, len(n)]).standard_normal(s)
    fusedw = {"model.layers.0.mlp.experts.gate_up_proj": np.stack(
                  [np.concatenate([per["model.layers.0.mlp.experts.%d.gate_proj.weight" % e],
                                   per["model.layers.0.mlp.experts.%d.up_proj.weight" % e]]) for e in range(E)]),
              "model.layers.0.mlp.experts.down_proj": np.stack(
                  [per["model.layers.0.mlp.experts.%d.down_proj.weight" % e] for e in range(E)])}
    back = unfuse_experts({"model_type": "qwen3_moe", "num_experts": E}, fusedw)
    check("unfused layout == per-expert tensors (bitwise)",
          torch.tensor(float(sorted(back) == sorted(per) and all(np.array_equal(back[n], per[n]) for n in per))),
          torch.tensor(1.0), 0)
    x = np.random.default_rng(9).standard_normal(d)
    gu = fusedw["model.layers.0.mlp.experts.gate_up_proj"][1] @ x       # MixtralExperts.forward:
    ga, up = gu[:ff], gu[ff:]                                           # gate, up = linear(x, gate_up[e]).chunk(2)
    y = fusedw["model.layers.0.mlp.experts.down_proj"][1] @ (ga / (1 + np.exp(-ga)) * up)
    yref = swiglu(torch.tensor(x)[None], torch.tensor(per["model.layers.0.mlp.experts.1.gate_proj.weight"]),
                  torch.tensor(per["model.layers.0.mlp.experts.1.up_proj.weight"]),
                  torch.tensor(per["model.layers.0.mlp.experts.1.down_proj.weight"]))[0]
    check("fused expert forward (chunk(2) of x.gate_up[e]^T) == swiglu", torch.tensor(y), yref)
    return ok


def family_control_consistency(m, name):
    """control_consistency for MoeFamilyModel (sparse layers only; no
    renormalisation unless norm_topk_prob)."""
    ok = True
    p40 = prompts()[2]
    E, ML = m.n_experts, m.moe_layers

    def check(what, a, b, tol=1e-12, differ=False):
        nonlocal ok
        err = float((a - b).abs().max())
        good = err > 1e-6 if differ else err <= tol
        ok &= good
        print("   %-70s max|diff| %.2e %s" % (what, err, "ok" if good else "FAIL"))

    def run(k, spec):
        return m.forward(p40, k, controls=m.controls(spec) if spec is not None else None)

    for kk in (1, 2, 3):
        keep = {i: [(3 * i + 5 * j) % E for j in range(kk)] for i in ML}
        masked = run(kk, {"mask": [[i, e] for i in ML for e in range(E) if e not in keep[i]]})
        forced = run(kk, {"force": [[i, keep[i]] for i in ML]})
        if m.norm_topk:
            check("k=%d, mask all but %s == force them" % (kk, keep), masked, forced)
        else:
            # no renormalisation: masking makes the softmax sum to 1 over the kept
            # experts, forcing keeps their unmasked probabilities
            check("k=%d, mask all but %s != force them (norm_topk_prob false)" % (kk, keep), masked, forced,
                  differ=True)
        forced_masked = run(E, {"mask": [[i, e] for i in ML for e in range(E) if e not in keep[i]],
                                "force": [[i, keep[i]] for i in ML]})
        check("k=%d, mask all but %s == the same mask + force them" % (kk, keep), masked, forced_masked)
    check("force all %d experts (k=2) == k=%d without controls" % (E, E),
          run(2, {"force": [[-1, list(range(E))]]}), run(E, None))
    check("force all %d experts in reverse order == in order" % E,
          run(2, {"force": [[-1, list(range(E))[::-1]]]}), run(2, {"force": [[-1, list(range(E))]]}), 0)
    check("mask [-1, 3] == mask [i, 3] for every sparse layer %s (bitwise)" % ML,
          run(2, {"mask": [[-1, 3]]}), run(2, {"mask": [[i, 3] for i in ML]}), 0)
    check("bias [-1, 6, 2] == bias [i, 6, 2] for every sparse layer (bitwise)",
          run(2, {"bias": [[-1, 6, 2.0]]}), run(2, {"bias": [[i, 6, 2.0] for i in ML]}), 0)
    check("bias 0 == no controls (bitwise)", run(2, {"bias": [[-1, 6, 0.0]]}), run(2, None), 0)
    i = ML[0]
    check("mlp offset on an expert masked in that layer == the mask alone (bitwise)",
          run(2, {"mask": [[i, 3]], "offsets": [[i, "mlp", 3, 10, 5.0]]}), run(2, {"mask": [[i, 3]]}), 0)
    check("two mlp offsets on one target (2 + 3) == one of 5",
          run(2, {"offsets": [[i, "mlp", 3, 10, 2.0], [i, "mlp", 3, 10, 3.0]]}),
          run(2, {"offsets": [[i, "mlp", 3, 10, 5.0]]}))
    if m.ff_shared:
        check("two shared offsets on one target (1 + 3) == one of 4",
              run(2, {"offsets": [[i, "shared", None, 5, 1.0], [i, "shared", None, 5, 3.0]]}),
              run(2, {"offsets": [[i, "shared", None, 5, 4.0]]}))
        check("shared offset 0 == no controls (bitwise)",
              run(2, {"offsets": [[i, "shared", None, 5, 0.0]]}), run(2, None), 0)
    dense = [l for l in range(m.L) if l not in ML]
    if dense:
        check("dense-layer mlp offset 0 == no controls (bitwise)",
              run(2, {"offsets": [[dense[0], "mlp", 0, 3, 0.0]]}), run(2, None), 0)
    print("   control consistency (%s):" % name, "passed" if ok else "FAILED")
    return ok


def family_checks():
    """Whole-model facts the fixtures are meant to exercise (printed; a
    failure fails the run)."""
    ok = True
    p40 = prompts()[2]
    m = load_model(os.path.join(MODELS, "olmoe-tiny"))
    m.clip_count = [0, 0]
    base = m.forward(p40)
    frac = m.clip_count[0] / m.clip_count[1]
    noclip = MoeFamilyModel(dict(m.cfg, clip_qkv=None), m.W).forward(p40)
    diff = float((base[-1] - noclip[-1]).abs().max())
    good = m.clip_count[0] > 0 and diff > 1e-2
    ok &= good
    print("olmoe-tiny: clip_qkv %g clamps %d of %d q/k/v values (%.2f%%) over the 40-token prompt; "
          "without it the last logits move by %.4f %s" % (m.clip, m.clip_count[0], m.clip_count[1], 100 * frac, diff,
                                                         "ok" if good else "FAIL"))
    for name in ("olmoe-tiny", "qwen2moe-tiny"):
        mm = load_model(os.path.join(MODELS, name))
        for k in sorted({1, mm.top_k}):
            a = mm.forward(p40, k)[-1]
            mr = MoeFamilyModel(dict(mm.cfg, norm_topk_prob=True), mm.W)
            diff = float((a - mr.forward(p40, k)[-1]).abs().max())
            good = diff > 1e-2
            ok &= good
            print("%s: k=%d, renormalising the top-k weights (norm_topk_prob true) would move the last logits "
                  "by %.4f %s" % (name, k, diff, "ok" if good else "FAIL"))
    m = load_model(os.path.join(MODELS, "qwen2moe-tiny"))
    base = m.forward(p40)
    W = dict(m.W)
    for i in m.moe_layers:
        W["model.layers.%d.mlp.shared_expert_gate.weight" % i] = torch.full_like(
            W["model.layers.%d.mlp.shared_expert_gate.weight" % i], 0.0)
    half = MoeFamilyModel(m.cfg, W).forward(p40)
    diff = float((base[-1] - half[-1]).abs().max())
    good = diff > 1e-2
    ok &= good
    print("qwen2moe-tiny: sparse layers %s; the shared-expert gate (vs a constant 1/2) moves the last logits "
          "by %.4f %s" % (m.moe_layers, diff, "ok" if good else "FAIL"))
    win = m.cfg.get("sliding_window")
    if win:
        blocked = attention_blocked(len(p40), win)
        mw = MoeFamilyModel(m.cfg, m.W)
        mw.window = win         # what applying the (inactive) window would do
        wl = mw.forward(p40)
        diff = float((base[-1] - wl[-1]).abs().max())
        good = diff > 1e-2 and bool(blocked.any())
        ok &= good
        print("qwen2moe-tiny: sliding_window %d with use_sliding_window false is ignored; applying it would move "
              "the last logits by %.4f %s" % (win, diff, "ok" if good else "FAIL"))
    return ok


def fused_twin_check():
    """The golden values of each "-fused" fixture equal its twin's."""
    ok = True
    for fused, twin in FUSED_TWINS.items():
        a = os.path.join(GOLDEN, fused + ".json")
        b = os.path.join(GOLDEN, twin + ".json")
        if not (os.path.exists(a) and os.path.exists(b)):
            continue
        with open(a) as f:
            ga = json.load(f)
        with open(b) as f:
            gb = json.load(f)
        same = ga["cases"] == gb["cases"] and ga.get("moe_layers") == gb.get("moe_layers")
        ok &= same
        print("%s: golden values identical to %s's: %s" % (fused, twin, "yes" if same else "NO  FAIL"))
    return ok


# Control cases of the OLMoE and Qwen2-MoE fixtures, in the notation of
# CONTROL_CASES (see README.md, "Routing controls in OLMoE and Qwen2-MoE").
FAMILY_CONTROL_CASES = {
    # k = 2 (the config's), norm_topk_prob false, sparse layers 0 and 2, layer 1 dense
    "qwen2moe-tiny": [
        ("mask-e3-all", 2, 2, {"mask": [[-1, 3]]}),
        ("mask-e0-all-p7", 1, 2, {"mask": [[-1, 0]]}),
        ("mask-e1-l2", 2, 2, {"mask": [[2, 1]]}),
        # k = 4 over 2 unmasked experts: k_eff = 2, weights = the masked softmax (sum 1)
        ("mask-6-all-k4", 2, 4, {"mask": [[-1, e] for e in (0, 2, 4, 5, 6, 7)]}),
        ("bias-e4+2-all", 2, 2, {"bias": [[-1, 4, 2.0]]}),
        # one forced expert: weight = its probability (no renormalisation)
        ("force-e5-all", 2, 2, {"force": [[-1, [5]]]}),
        ("force-e0e6-l0", 2, 2, {"force": [[0, [0, 6]]]}),
        ("mlp-l0e3n10", 2, 2, {"offsets": [[0, "mlp", 3, 10, 5.0]]}),
        ("shared-l2n20", 2, 2, {"offsets": [[2, "shared", None, 20, 4.0]]}),
        ("dense-l1n30", 2, 2, {"offsets": [[1, "mlp", 0, 30, 4.0]]}),
        ("resid-l1n7", 2, 2, {"offsets": [[1, "resid", None, 7, -5.0]]}),
        ("mask-bias-shared", 2, 2, {"mask": [[-1, 3]], "bias": [[2, 4, 1.5]],
                                    "offsets": [[0, "shared", None, 5, -3.0]]}),
    ],
    # k = 4 (the config's), 16 experts, norm_topk_prob false, every layer sparse
    "olmoe-tiny": [
        ("mask-e15-all", 2, 4, {"mask": [[-1, 15]]}),
        ("mask-e15-all-p7", 1, 4, {"mask": [[-1, 15]]}),
        ("mask-e3-l1", 2, 4, {"mask": [[1, 3]]}),
        # k = 4 over 3 unmasked experts: k_eff = 3, weights = the masked softmax (sum 1)
        ("mask-13-all-k4", 2, 4, {"mask": [[-1, e] for e in range(16) if e not in (0, 3, 15)]}),
        ("force-e7-all", 2, 4, {"force": [[-1, [7]]]}),
        ("force-e2e9-l2", 2, 4, {"force": [[2, [2, 9]]]}),
        ("mlp-l1e3n10", 2, 4, {"offsets": [[1, "mlp", 3, 10, 5.0]]}),
        ("mask-mlp", 2, 4, {"mask": [[-1, 6]], "offsets": [[2, "mlp", 8, 20, 4.0]]}),
    ],
}
CONTROL_CASES.update(FAMILY_CONTROL_CASES)


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
        ok &= fused_twin_check()
        ok &= family_checks()
        for n in CONTROL_CASES:
            ok &= controls_golden(n)
    print("done in %.2fs" % (time.time() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
