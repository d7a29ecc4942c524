"""MiCRoLlama in torch, for training (semantics of tests/reference/README.md, MiCRo section).

Per MiCRo layer: router r = gate.1(gate.0(x)) on the (unnormalised) layer
input, p = softmax(r), top-k, weights p / (sum_topk p + 1e-9); each expert a
whole Llama decoder block with its residuals inside; every expert's attention
sees the keys/values of every position (all blocks computed on all positions;
the MLP only where the block is chosen). Plain RoPE (rope_scaling null).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(T, hd, theta):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    f = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    emb = torch.cat([f, f], -1)
    return emb.cos().float(), emb.sin().float()


def rot(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


class Attn(nn.Module):
    def __init__(self, d, nh, nkv, hd):
        super().__init__()
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.q_proj = nn.Linear(d, nh * hd, bias=False)
        self.k_proj = nn.Linear(d, nkv * hd, bias=False)
        self.v_proj = nn.Linear(d, nkv * hd, bias=False)
        self.o_proj = nn.Linear(nh * hd, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = rot(q, cos[:T], sin[:T]), rot(k, cos[:T], sin[:T])
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, 1)
        v = v.repeat_interleave(rep, 1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        a = torch.softmax(s, -1) @ v
        return self.o_proj(a.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.input_layernorm = RMSNorm(d, c["rms_norm_eps"])
        self.self_attn = Attn(d, c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"])
        self.post_attention_layernorm = RMSNorm(d, c["rms_norm_eps"])
        self.mlp = MLP(d, c["intermediate_size"])


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, E = c["hidden_size"], c["num_experts"]
        self.gate = nn.Sequential(nn.Linear(d, d, bias=False), nn.Linear(d, E, bias=False))
        self.experts = nn.ModuleList([Block(c) for _ in range(E)])

    def forward(self, x, cos, sin, route, k=1, st=False, off=None):
        """route: None (free top-k from the router) or a LongTensor (B, T) of expert ids (labels).
        st: straight-through router gradient (value of the top-1 weight stays 1).
        off: list of experts masked (router logit -inf). Returns (out, router logits)."""
        r = self.gate(x)
        if off:
            r = r.clone()
            r[..., off] = float("-inf")
        p = torch.softmax(r.float(), -1)
        if route is not None:
            idx = route.unsqueeze(-1)
            w = torch.ones_like(idx, dtype=x.dtype)
        else:
            top, idx = p.topk(k, -1)
            w = top / (top.sum(-1, keepdim=True) + 1e-9)
            if st:
                w = w - top.detach() + top  # value unchanged, d w / d p = 1
        out = torch.zeros_like(x)
        for e, blk in enumerate(self.experts):
            sel = (idx == e)                      # (B, T, k)
            we = (w * sel).sum(-1)                # (B, T)
            m = sel.any(-1)
            if not bool(m.any()):
                # keys/values still computed (they do not change the output): skip
                continue
            h = x + blk.self_attn(blk.input_layernorm(x), cos, sin)
            hm = h[m]
            y = hm + blk.mlp(blk.post_attention_layernorm(hm))
            out[m] = out[m] + we[m].unsqueeze(-1) * y
        return out, r


class MiCRo(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d = c["hidden_size"]
        self.embed_tokens = nn.Embedding(c["vocab_size"], d)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["backbone_num_layers"])])
        self.final_norm = RMSNorm(d, c["rms_norm_eps"])
        self.lm_head = nn.Linear(d, c["vocab_size"], bias=False)
        cos, sin = rope_tables(c["max_position_embeddings"], c["head_dim"], c["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for n, prm in self.named_parameters():
            if prm.dim() == 2:
                nn.init.normal_(prm, std=0.02)
                if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                    prm.data.mul_(1 / math.sqrt(2 * c["backbone_num_layers"]))

    def forward(self, ids, route=None, k=1, st=False, off=None):
        x = self.embed_tokens(ids)
        rl = []
        for layer in self.layers:
            x, r = layer(x, self.cos, self.sin, route, k, st, off)
            rl.append(r)
        return self.lm_head(self.final_norm(x)), rl
