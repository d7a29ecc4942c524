#!/usr/bin/env python3
"""GGUF fixtures from the tiny safetensors fixtures (numpy only).

    python3 tools/gen_gguf.py        # tests/fixtures/gguf/*.gguf, tests/fixtures/quant/*  (deterministic)
    python3 tools/gen_gguf.py NAME... # some of them ("quant-blocks": tests/fixtures/quant)
    python3 tools/gen_gguf.py --bench SRC_DIR OUT_DIR  # Q8_0 and Q4_K_M GGUF of a bench model

Written from ggml's docs/gguf.md, not with the gguf-py package: a header
("GGUF", version 3, tensor and metadata counts), the metadata, the tensor
infos (name, dimensions innermost first, ggml type, offset), then the data
section, every tensor padded to general.alignment (32). The files carry no
vocabulary (tokenizer.ggml.model = "no_vocab" with {arch}.vocab_size), as
llama.cpp's own test models. With --vocab (for tests/gguf_model_vocab.sh;
nothing committed) an F32 file carries the directory's tokenizer.json as
tools/gen_gguf_vocab.py writes it:

    python3 tools/gen_gguf.py --vocab SRC_DIR OUT.gguf [--pre NAME]

Names and keys follow llama.cpp (gguf-py/gguf/constants.py, tensor_mapping.py;
convert_hf_to_gguf.py): 1-D tensors and routers (ffn_gate_inp) stay F32; the
Q and K projections of the `llama` architecture are permuted as
LlamaModel.permute does, from rotate-half pairs to interleaved pairs.

Q8_0 (ggml-common.h block_q8_0; ggml-quants.c quantize_row_q8_0_ref): blocks
of 32 consecutive values of a row, d = max|x| / 127 stored as f16, and
q = round-half-away(x / d) as int8. A tensor whose rows are not a multiple of
32 falls back to F16, as llama-quantize does. Each Q8_0 file comes with a
"-deq" twin holding the same quantised values widened to F32, so the
engine's quantised kernels can be checked exactly, apart from the
quantisation error.

Q4_0, Q4_K, Q5_K and Q6_K (ggml-common.h block_q4_0, block_q4_K, block_q5_K,
block_q6_K) are quantised as ggml-quants.c's quantize_row_*_ref do it, in
float32 numpy: Q4_0 with d = max / -8; Q4_K and Q5_K with make_qkx2_quants'
search for each sub-block's scale and min, both stored in 6 bits against f16
super-block scales; Q6_K with make_qx_quants' search and int8 sub-block
scales. The files mix types as llama-quantize's Q4_0, Q4_K_M and Q5_K_M do
(MIXES below); dequantise() is ggml's dequantize_row_* and gives the values
of the "-deq" twins and of tests/fixtures/quant/*.f32.
"""

import json
import math
import os
import struct
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
ALIGN = 32

GGML = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30}
BLOCK = {"Q4_0": 32, "Q8_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9


def vocab_tool():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gen_gguf_vocab
    return gen_gguf_vocab


def read_safetensors(d):
    """Every tensor of a fixture directory as float32 (BF16 widened exactly)
    plus its original dtype tag."""
    out = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        raw = open(os.path.join(d, fn), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            buf = raw[base + b:base + e]
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(buf, "<f4")
            elif dt == "F16":
                a = np.frombuffer(buf, "<f2").astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise SystemExit(f"{fn}: {name}: dtype {dt}")
            out[name] = (a.reshape(info["shape"]).astype(np.float32), dt)
    return out


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: rows (head, half, i) -> (head, i, half)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def f32_to_bf16_bits(x):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + ((u >> 16) & 1) + 0x7FFF) >> 16).astype(np.uint16)


def q8_0(x):
    """Rows of x (..., cols), cols % 32 == 0 -> Q8_0 bytes and the dequantised values."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(blocks).max(axis=1)
    d = (amax / 127).astype(np.float32)
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
    v = blocks * inv[:, None]
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)  # C roundf
    d16 = d.astype(np.float16)
    raw = np.zeros((blocks.shape[0], 34), np.uint8)
    raw[:, :2] = d16.view(np.uint8).reshape(-1, 2)
    raw[:, 2:] = q.view(np.uint8)
    deq = (q.astype(np.float32) * d16.astype(np.float32)[:, None]).reshape(x.shape)
    return raw.tobytes(), deq


# ---- quantisers: ggml-quants.c's quantize_row_*_ref, in float32 numpy ----

EPS = np.float32(1e-15)  # ggml's GROUP_MAX_EPS


def f32(x):
    return np.asarray(x, np.float32)


def nearest_int(x):
    """ggml's nearest_int: round half to even (the 1.5·2^23 trick)."""
    return np.rint(f32(x)).astype(np.int32)


def half_bytes(v):
    return f32(v).astype("<f2").view(np.uint8).reshape(-1, 2)


def widen_half(v):
    return f32(v).astype(np.float16).astype(np.float32)


def first_absmax(b):
    """The value of largest magnitude in each row, the first one on ties (ggml compares with <)."""
    return np.take_along_axis(b, np.abs(b).argmax(axis=1)[:, None], axis=1)[:, 0]


def q4_0(x):
    """quantize_row_q4_0_ref: d = max / -8 (max: the signed value of largest
    magnitude), q = min(15, trunc(x/d + 8.5))."""
    b = f32(x).reshape(-1, 32)
    mx = first_absmax(b)
    d = (mx / np.float32(-8)).astype(np.float32)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(15, np.trunc(b * idv[:, None] + np.float32(8.5)).astype(np.int32)).astype(np.uint8)
    raw = np.zeros((b.shape[0], 18), np.uint8)
    raw[:, :2] = half_bytes(d)
    raw[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return raw.tobytes()


def make_qkx2(x, w, nmax, rmin, rdelta, nstep):
    """make_qkx2_quants for each row of x (groups of 32) with weights w:
    returns (scale, the_min (>= 0), L)."""
    x, w = f32(x), f32(w)
    mn = np.minimum(x.min(axis=1), 0).astype(np.float32)
    mn0 = mn
    mx = x.max(axis=1)
    flat = mx == mn
    rng = np.where(flat, 1, mx - mn).astype(np.float32)
    sum_w = w.sum(axis=1, dtype=np.float32)
    sum_x = (w * x).sum(axis=1, dtype=np.float32)
    iscale = (np.float32(nmax) / rng).astype(np.float32)
    scale = (np.float32(1) / iscale).astype(np.float32)
    L = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
    diff = scale[:, None] * L + mn[:, None] - x
    best = (w * diff * diff).sum(axis=1, dtype=np.float32)
    for i in range(nstep + 1):
        isc = ((np.float32(rmin) + np.float32(rdelta) * np.float32(i) + np.float32(nmax)) / rng).astype(np.float32)
        l = np.clip(nearest_int(isc[:, None] * (x - mn[:, None])), 0, nmax).astype(np.float32)
        sl = (w * l).sum(axis=1, dtype=np.float32)
        sl2 = (w * l * l).sum(axis=1, dtype=np.float32)
        sxl = (w * l * x).sum(axis=1, dtype=np.float32)
        D = sum_w * sl2 - sl * sl
        ok = D > 0
        Ds = np.where(ok, D, 1)
        ts = ((sum_w * sxl - sum_x * sl) / Ds).astype(np.float32)
        tm = ((sl2 * sum_x - sl * sxl) / Ds).astype(np.float32)
        pos = tm > 0
        tm = np.where(pos, 0, tm).astype(np.float32)
        ts = np.where(pos, sxl / np.where(sl2 > 0, sl2, 1), ts).astype(np.float32)
        diff = ts[:, None] * l + tm[:, None] - x
        cur = (w * diff * diff).sum(axis=1, dtype=np.float32)
        better = ok & (cur < best)
        L = np.where(better[:, None], l.astype(np.int32), L)
        best = np.where(better, cur, best)
        scale = np.where(better, ts, scale)
        mn = np.where(better, tm, mn)
    scale = np.where(flat, 0, scale).astype(np.float32)
    L = np.where(flat[:, None], 0, L)
    return scale, np.where(flat, -mn0, -mn).astype(np.float32), L


def pack_scales_k4(ls, lm):
    """The 12 bytes of 6-bit scales and mins (get_scale_min_k4's layout); ls, lm (n, 8)."""
    s = np.zeros((ls.shape[0], 12), np.uint8)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    s[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return s


def unpack_scales_k4(s):
    sc = np.zeros((s.shape[0], 8), np.int32)
    m = np.zeros((s.shape[0], 8), np.int32)
    s = s.astype(np.int32)
    sc[:, 0:4] = s[:, 0:4] & 63
    m[:, 0:4] = s[:, 4:8] & 63
    sc[:, 4:8] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, m


def qk_45(x, nmax, rmin, nstep):
    """The common part of quantize_row_q4_K_ref / q5_K_ref: per super-block of
    256, eight sub-blocks of 32 quantised with make_qkx2_quants, their scales
    and mins to 6 bits against d = max scale / 63 and dmin = max min / 63,
    then every weight requantised with the stored scales. Returns
    (d bytes, dmin bytes, 12 scale bytes, L (n, 256))."""
    b = f32(x).reshape(-1, 8, 32)
    n = b.shape[0]
    sub = b.reshape(-1, 32)
    av = np.sqrt((sub * sub).sum(axis=1, dtype=np.float32) / np.float32(32)).astype(np.float32)
    w = av[:, None] + np.abs(sub)
    scale, mins, L = make_qkx2(sub, w, nmax, rmin, 0.1, nstep)
    scale, mins, L = scale.reshape(n, 8), mins.reshape(n, 8), L.reshape(n, 256)
    max_scale = np.maximum(scale.max(axis=1), 0)
    max_min = np.maximum(mins.max(axis=1), 0)
    inv_s = np.where(max_scale > 0, np.float32(63) / np.where(max_scale > 0, max_scale, 1), 0).astype(np.float32)
    inv_m = np.where(max_min > 0, np.float32(63) / np.where(max_min > 0, max_min, 1), 0).astype(np.float32)
    # ggml stores nearest_int into a uint8_t; scales and mins here are >= 0
    ls = np.clip(nearest_int(inv_s[:, None] * scale), 0, 63).astype(np.uint8)
    lm = np.clip(nearest_int(inv_m[:, None] * mins), 0, 63).astype(np.uint8)
    sbytes = pack_scales_k4(ls, lm)
    d = (max_scale / np.float32(63)).astype(np.float32)
    dmin = (max_min / np.float32(63)).astype(np.float32)
    sc, m = unpack_scales_k4(sbytes)
    dl = (widen_half(d)[:, None] * sc.astype(np.float32)).astype(np.float32)
    dm = (widen_half(dmin)[:, None] * m.astype(np.float32)).astype(np.float32)
    nz = dl != 0
    q = nearest_int((b + dm[:, :, None]) / np.where(nz, dl, 1)[:, :, None])
    q = np.clip(q, 0, nmax).reshape(n, 256)
    L = np.where(np.repeat(nz, 32, axis=1), q, L)
    return half_bytes(d), half_bytes(dmin), sbytes, L.astype(np.uint8)


def q4_k(x):
    d, dmin, s, L = qk_45(x, 15, -1.0, 20)
    n = L.shape[0]
    Lg = L.reshape(n, 4, 2, 32)
    qs = (Lg[:, :, 0, :] | (Lg[:, :, 1, :] << 4)).reshape(n, 128)
    return np.concatenate([d, dmin, s, qs], axis=1).tobytes()


def q5_k(x):
    d, dmin, s, L = qk_45(x, 31, -0.5, 15)
    n = L.shape[0]
    Lg = L.reshape(n, 4, 2, 32).astype(np.uint8)
    hi = Lg >> 4
    low = Lg & 0xF
    qs = (low[:, :, 0, :] | (low[:, :, 1, :] << 4)).reshape(n, 128)
    qh = np.zeros((n, 32), np.uint8)
    for g in range(4):
        qh |= (hi[:, g, 0, :] << (2 * g)) | (hi[:, g, 1, :] << (2 * g + 1))
    return np.concatenate([d, dmin, s, qh, qs], axis=1).tobytes()


def make_qx(x, nmax):
    """make_qx_quants(16, nmax, x, L, rmse_type 1, NULL) for each row of x: the scale."""
    x = f32(x)
    mx = first_absmax(x)
    zero = np.abs(mx) < EPS
    mxs = np.where(zero, 1, mx).astype(np.float32)
    w = x * x

    def attempt(iscale):
        l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1).astype(np.float32)
        return (w * x * l).sum(axis=1, dtype=np.float32), (w * l * l).sum(axis=1, dtype=np.float32)

    sumlx, suml2 = attempt((np.float32(-nmax) / mxs).astype(np.float32))
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, 1), 0).astype(np.float32)
    best = (scale * sumlx).astype(np.float32)
    for i in range(-9, 10):
        if i == 0:
            continue
        sumlx, suml2 = attempt((-(np.float32(nmax) + np.float32(0.1) * np.float32(i)) / mxs).astype(np.float32))
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        s2 = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, 1), 0).astype(np.float32)
        scale = np.where(better, s2, scale)
        best = np.where(better, s2 * sumlx, best).astype(np.float32)
    return np.where(zero, 0, scale).astype(np.float32)


def q6_k(x):
    """quantize_row_q6_K_ref: sixteen groups of 16 with make_qx_quants(nmax 32),
    their scales to int8 against d = max scale / -128, then requantised."""
    b = f32(x).reshape(-1, 16, 16)
    n = b.shape[0]
    scales = make_qx(b.reshape(-1, 16), 32).reshape(n, 16)
    mx = first_absmax(scales)
    zero = np.abs(mx) < EPS
    iscale = (np.float32(-128) / np.where(zero, 1, mx)).astype(np.float32)
    d = np.where(zero, 0, np.float32(1) / iscale).astype(np.float32)
    sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)
    sc = np.where(zero[:, None], 0, sc).astype(np.int8)
    dl = (widen_half(d)[:, None] * sc.astype(np.float32)).astype(np.float32)
    nz = dl != 0
    q = np.clip(nearest_int(b / np.where(nz, dl, 1)[:, :, None]), -32, 31)
    q = np.where(nz[:, :, None], q, 0) + 32  # ggml leaves L at make_qx's value where d is 0; any value dequantises to 0
    L = q.reshape(n, 2, 4, 32).astype(np.uint8)  # (half, quarter, l)
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(n, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6)).reshape(n, 64)
    raw = np.concatenate([ql, qh, sc.view(np.uint8), half_bytes(d)], axis=1)
    raw[zero] = 0
    return raw.tobytes()


# ---- dequantisers: ggml-quants.c's dequantize_row_*, in float32 numpy ----

def dequantise(gtype, raw, numel):
    """The values ggml's dequantize_row_* gives for numel weights of raw bytes."""
    u = np.frombuffer(raw, np.uint8)
    if gtype == GGML["Q8_0"]:
        b = u.reshape(-1, 34)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        return (d * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)[:numel]
    if gtype == GGML["Q4_0"]:
        b = u.reshape(-1, 18)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        q = np.concatenate([b[:, 2:] & 0xF, b[:, 2:] >> 4], axis=1).astype(np.int32) - 8
        return (q.astype(np.float32) * d).reshape(-1)
    if gtype in (GGML["Q4_K"], GGML["Q5_K"]):
        five = gtype == GGML["Q5_K"]
        b = u.reshape(-1, 176 if five else 144)
        n = b.shape[0]
        d = b[:, 0:2].copy().view("<f2").astype(np.float32)
        dmin = b[:, 2:4].copy().view("<f2").astype(np.float32)
        sc, m = unpack_scales_k4(b[:, 4:16])
        dl = (d * sc.astype(np.float32)).astype(np.float32)
        ml = (dmin * m.astype(np.float32)).astype(np.float32)
        qs = b[:, 48:] if five else b[:, 16:]
        qs = qs.reshape(n, 4, 32)
        q = np.stack([qs & 0xF, qs >> 4], axis=2).astype(np.int32)  # (n, 4, 2, 32)
        if five:
            qh = b[:, 16:48].astype(np.int32)
            for g in range(4):
                q[:, g, 0] += ((qh >> (2 * g)) & 1) << 4
                q[:, g, 1] += ((qh >> (2 * g + 1)) & 1) << 4
        q = q.reshape(n, 8, 32).astype(np.float32)
        return (dl[:, :, None] * q - ml[:, :, None]).astype(np.float32).reshape(-1)
    if gtype == GGML["Q6_K"]:
        b = u.reshape(-1, 210)
        n = b.shape[0]
        ql = b[:, :128].reshape(n, 2, 64).astype(np.int32)
        qh = b[:, 128:192].reshape(n, 2, 32).astype(np.int32)
        sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(n, 2, 4, 2)
        d = b[:, 208:210].copy().view("<f2").astype(np.float32).reshape(n, 1, 1, 1)
        q = np.stack([(ql[:, :, :32] & 0xF) | ((qh & 3) << 4),
                      (ql[:, :, 32:] & 0xF) | (((qh >> 2) & 3) << 4),
                      (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4),
                      (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)], axis=2) - 32  # (n, half, quarter, 32)
        q = q.reshape(n, 2, 4, 2, 16).astype(np.float32)
        ds = (d * sc).astype(np.float32)
        return (ds[..., None] * q).astype(np.float32).reshape(-1)
    raise ValueError(gtype)


QUANTISE = {"Q4_0": q4_0, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}


def quantise(x, kind):
    """Bytes of x (..., cols) in a quantised kind, a few thousand rows at a time."""
    rows = x.reshape(-1, x.shape[-1])
    step = max(1, (1 << 21) // rows.shape[1])
    return b"".join(QUANTISE[kind](rows[i:i + step]) for i in range(0, rows.shape[0], step))


def encode(x, kind):
    """(ggml type, bytes, values the engine will see) of x in `kind`."""
    if kind in QUANTISE:
        assert x.shape[-1] % BLOCK[kind] == 0, (kind, x.shape)
        raw = quantise(x, kind)
        return GGML[kind], raw, dequantise(GGML[kind], raw, x.size).reshape(x.shape)
    if kind == "Q8_0" and x.shape[-1] % 32 == 0:
        raw, deq = q8_0(x)
        return GGML["Q8_0"], raw, deq
    if kind in ("Q8_0", "F16"):
        h = x.astype("<f2")
        return GGML["F16"], h.tobytes(), h.astype(np.float32)
    if kind == "BF16":
        b = f32_to_bf16_bits(x)
        return GGML["BF16"], b.astype("<u2").tobytes(), (b.astype(np.uint32) << 16).view(np.float32)
    return GGML["F32"], x.astype("<f4").tobytes(), x


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []  # (name, numpy shape, ggml type, bytes)

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    def tensor(self, name, shape, gtype, data):
        self.tensors.append((name, tuple(shape), gtype, data))

    def save(self, path):
        def s(x):
            b = x.encode()
            return struct.pack("<Q", len(b)) + b

        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv)))
        for key, vt, v in self.kv:
            out += s(key) + struct.pack("<I", vt)
            if vt == T_STRING:
                out += s(v)
            elif vt == T_U32:
                out += struct.pack("<I", v)
            elif vt == T_I32:
                out += struct.pack("<i", v)
            elif vt == T_F32:
                out += struct.pack("<f", v)
            elif vt == T_BOOL:
                out += struct.pack("<B", int(v))
            elif vt == T_ARRAY:
                out += vocab_tool().gguf_array(v)
        off = 0
        for name, shape, gt, data in self.tensors:
            ne = list(reversed(shape))  # ggml: innermost first
            out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            out += struct.pack("<IQ", gt, off)
            off += (len(data) + ALIGN - 1) // ALIGN * ALIGN
        out += b"\0" * (-len(out) % ALIGN)
        for _, _, _, data in self.tensors:
            out += data + b"\0" * (-len(data) % ALIGN)
        with open(path + ".tmp", "wb") as f:
            f.write(out)
        os.replace(path + ".tmp", path)


# The llama-quantize mixes (llama.cpp src/llama-quant.cpp,
# llama_tensor_get_type_impl and tensor_type_fallback) for the tensors these
# files have. Q4_0: every matrix Q4_0 but output.weight, which is Q6_K.
# Q4_K_M / Q5_K_M: Q4_K / Q5_K by default; output.weight Q6_K; attn_v and
# ffn_down Q6_K in the layers use_more_bits picks (the first and last eighth
# and every third between); with 8 experts (Mixtral) attn_v and attn_k are
# Q8_0 and, in Q4_K_M, attn_output Q5_K. A matrix whose rows are not whole
# blocks falls back as llama-quantize does: Q6_K to Q8_0 (Q4_K and Q5_K
# would become Q5_0 and Q5_1, which moescope does not read: the fixtures
# are shaped so that this never happens), anything to F16 below 32.
MIXES = {"Q4_0": "Q4_0", "Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K"}
FALLBACK = {"Q6_K": "Q8_0", "Q4_0": "F16", "Q8_0": "F16"}


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_type(ftype, name, cols, n_layers, n_expert):
    """The type llama-quantize gives the matrix `name` (rows of `cols`) in a mix."""
    t = MIXES[ftype]
    k_m = ftype != "Q4_0"
    layer = int(name.split(".")[1]) if name.startswith("blk.") else 0
    if name == "output.weight":
        t = "Q8_0" if cols % BLOCK[t] else "Q6_K"
    elif name.endswith("attn_v.weight"):
        if k_m and use_more_bits(layer, n_layers):
            t = "Q6_K"
        if n_expert == 8:
            t = "Q8_0"
    elif name.endswith("attn_k.weight"):
        if n_expert == 8:
            t = "Q8_0"
    elif "ffn_down" in name:
        if k_m and use_more_bits(layer, n_layers):
            t = "Q6_K"
    elif name.endswith("attn_output.weight"):
        if n_expert == 8 and ftype == "Q4_K_M":
            t = "Q5_K"
    while cols % BLOCK.get(t, 1):
        if t not in FALLBACK:
            raise SystemExit(f"{name}: rows of {cols} need {t}'s fallback, which moescope does not read")
        t = FALLBACK[t]
    return t


def llama3_rope_factors(cfg, hd):
    """Llama 3 RoPE scaling as convert_hf_to_gguf.py's LlamaModel stores it:
    rope_freqs.weight, one factor per frequency (frequency i is divided by
    factor i), computed in float32 as there. One difference: the converter
    reads original_max_position_embeddings from the top level of
    config.json (8192, Llama 3.1's value, when absent); the fixtures keep it
    in rope_scaling, where transformers reads it, so it is taken from there."""
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return None
    base = cfg.get("rope_theta", 10000.0)
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))
    factor = rs.get("factor", 8.0)
    low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


ARCH = {"MixtralForCausalLM": "llama", "LlamaForCausalLM": "llama", "Qwen2MoeForCausalLM": "qwen2moe",
        "Qwen3MoeForCausalLM": "qwen3moe", "OlmoeForCausalLM": "olmoe"}


def convert(src, dst, kind, merged=True, out=OUT, twin=True, hook=None, vocab=None):
    """vocab: (tokenizer directory, pre-tokenizer name) whose tokenizer the
    file carries, or None for no_vocab."""
    cfg = json.load(open(os.path.join(MODELS, src, "config.json")))
    w = read_safetensors(os.path.join(MODELS, src))
    arch = ARCH[cfg["architectures"][0]]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    dim, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or dim // nh
    ne = cfg.get("num_local_experts", cfg.get("num_experts", 0))
    g = Writer()
    g.add("general.architecture", T_STRING, arch)
    g.add("general.name", T_STRING, src)
    a = arch + "."
    g.add(a + "block_count", T_U32, L)
    g.add(a + "context_length", T_U32, cfg["max_position_embeddings"])
    g.add(a + "embedding_length", T_U32, dim)
    g.add(a + "feed_forward_length", T_U32, cfg["intermediate_size"])
    g.add(a + "attention.head_count", T_U32, nh)
    g.add(a + "attention.head_count_kv", T_U32, nkv)
    g.add(a + "attention.key_length", T_U32, hd)
    g.add(a + "attention.value_length", T_U32, hd)
    g.add(a + "rope.dimension_count", T_U32, hd)
    g.add(a + "rope.freq_base", T_F32, cfg.get("rope_theta", 10000.0))
    g.add(a + "attention.layer_norm_rms_epsilon", T_F32, cfg["rms_norm_eps"])
    g.add(a + "vocab_size", T_U32, cfg["vocab_size"])
    if ne:
        g.add(a + "expert_count", T_U32, ne)
        g.add(a + "expert_used_count", T_U32, cfg["num_experts_per_tok"])
    if "moe_intermediate_size" in cfg:
        g.add(a + "expert_feed_forward_length", T_U32, cfg["moe_intermediate_size"])
    if cfg.get("shared_expert_intermediate_size"):
        g.add(a + "expert_shared_feed_forward_length", T_U32, cfg["shared_expert_intermediate_size"])
    if cfg.get("clip_qkv"):
        g.add(a + "attention.clamp_kqv", T_F32, cfg["clip_qkv"])
    if vocab:
        kvs = [kv for kv in vocab_tool().vocab_kvs(*vocab) if not kv[0].startswith("general.")]
        for kv in kvs:
            g.add(*kv)
        for key in ("bos_token_id", "eos_token_id"):
            if not any(kv[0] == "tokenizer.ggml." + key for kv in kvs):
                g.add("tokenizer.ggml." + key, T_U32, cfg[key])
    else:
        g.add("tokenizer.ggml.model", T_STRING, "no_vocab")
        g.add("tokenizer.ggml.bos_token_id", T_U32, cfg["bos_token_id"])
        g.add("tokenizer.ggml.eos_token_id", T_U32, cfg["eos_token_id"])

    deq = Writer()
    deq.kv = g.kv

    types = {}

    def put(name, x, weight=True):
        t = kind if weight and x.ndim >= 2 else "F32"
        if t in MIXES:
            t = mix_type(kind, name, x.shape[-1], L, ne)
        gt, data, seen = encode(x, t)
        types[gt] = types.get(gt, 0) + len(data)
        g.tensor(name, x.shape, gt, data)
        deq.tensor(name, x.shape, GGML["F32"], seen.astype("<f4").tobytes())

    put("token_embd.weight", w["model.embed_tokens.weight"][0])
    for l in range(L):
        p = f"model.layers.{l}."
        b = f"blk.{l}."
        put(b + "attn_norm.weight", w[p + "input_layernorm.weight"][0])
        for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")):
            for part in ("weight", "bias"):
                if p + f"self_attn.{hf}.{part}" not in w:
                    continue
                x = w[p + f"self_attn.{hf}.{part}"][0]
                if arch == "llama" and hf in ("q_proj", "k_proj"):
                    x = permute(x, nh if hf == "q_proj" else nkv)
                put(b + f"{gg}.{part}", x)
        for hf, gg in (("q_norm", "attn_q_norm"), ("k_norm", "attn_k_norm")):
            if p + f"self_attn.{hf}.weight" in w:
                put(b + f"{gg}.weight", w[p + f"self_attn.{hf}.weight"][0])
        put(b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"][0])
        moe = "block_sparse_moe." if p + "block_sparse_moe.gate.weight" in w else "mlp."
        if p + moe + "gate.weight" in w:
            g_router = w[p + moe + "gate.weight"][0]
            gt, data, seen = encode(g_router, "F32")  # routers stay F32, as llama-quantize keeps them
            g.tensor(b + "ffn_gate_inp.weight", g_router.shape, gt, data)
            deq.tensor(b + "ffn_gate_inp.weight", g_router.shape, gt, data)
            names = ("w1", "w3", "w2") if moe == "block_sparse_moe." else ("gate_proj", "up_proj", "down_proj")
            for hf, gg in zip(names, ("gate", "up", "down")):
                xs = [w[p + moe + f"experts.{e}.{hf}.weight"][0] for e in range(ne)]
                if merged:
                    put(b + f"ffn_{gg}_exps.weight", np.stack(xs))
                else:
                    for e in range(ne):
                        put(b + f"ffn_{gg}.{e}.weight", xs[e])
            if p + "mlp.shared_expert.gate_proj.weight" in w:
                for gg in ("gate", "up", "down"):
                    put(b + f"ffn_{gg}_shexp.weight", w[p + f"mlp.shared_expert.{gg}_proj.weight"][0])
                put(b + "ffn_gate_inp_shexp.weight", w[p + "mlp.shared_expert_gate.weight"][0].reshape(-1))
        else:
            for gg in ("gate", "up", "down"):
                put(b + f"ffn_{gg}.weight", w[p + f"mlp.{gg}_proj.weight"][0])
    rf = llama3_rope_factors(cfg, hd)
    if rf is not None:
        put("rope_freqs.weight", rf)
    put("output_norm.weight", w["model.norm.weight"][0])
    if "lm_head.weight" in w:
        put("output.weight", w["lm_head.weight"][0])
    os.makedirs(out, exist_ok=True)
    if hook:
        hook(g)
    g.save(os.path.join(out, dst + ".gguf"))
    if twin and (kind == "Q8_0" or kind in MIXES):
        deq.save(os.path.join(out, dst + "-deq.gguf"))
    names = {v: k for k, v in GGML.items()}
    total = sum(types.values())
    return ", ".join(f"{names[t]} {100 * n / total:.0f}%" for t, n in sorted(types.items(), key=lambda kv: -kv[1]))


FIXTURES = [
    # (safetensors fixture, GGUF name, weight type, merged experts)
    ("mixtral-tiny", "mixtral-tiny-f32", "F32", True),
    ("mixtral-tiny", "mixtral-tiny-f32-split", "F32", False),
    ("mixtral-tiny-f16", "mixtral-tiny-f16", "F16", True),
    ("mixtral-tiny-bf16", "mixtral-tiny-bf16", "BF16", True),
    ("mixtral-tiny", "mixtral-tiny-q8_0", "Q8_0", True),
    ("llama-tiny", "llama-tiny-f32", "F32", True),
    ("llama3-tiny", "llama3-tiny-f32", "F32", True),  # Llama 3 RoPE scaling: rope_freqs.weight
    ("qwen2moe-tiny", "qwen2moe-tiny-f32", "F32", True),
    ("qwen2moe-tiny", "qwen2moe-tiny-q8_0", "Q8_0", True),
    ("qwen3moe-tiny", "qwen3moe-tiny-f32", "F32", True),
    ("qwen3moe-tiny", "qwen3moe-tiny-q8_0", "Q8_0", True),
    ("olmoe-tiny", "olmoe-tiny-f32", "F32", True),
    ("olmoe-tiny", "olmoe-tiny-q8_0", "Q8_0", True),
    # K-quants need rows of 256: the "-k-tiny" models below
    ("mixtral-k-tiny", "mixtral-k-tiny-q4_k_m", "Q4_K_M", True),
    ("qwen3moe-k-tiny", "qwen3moe-k-tiny-q4_k_m", "Q4_K_M", True),
    ("qwen3moe-k-tiny", "qwen3moe-k-tiny-q5_k_m", "Q5_K_M", True),
    ("olmoe-k-tiny", "olmoe-k-tiny-q4_k_m", "Q4_K_M", True),
    ("olmoe-k-tiny", "olmoe-k-tiny-q4_0", "Q4_0", True),
    ("qwen2moe-k-tiny", "qwen2moe-k-tiny-q4_k_m", "Q4_K_M", True),
    # an error case: mixtral-tiny's metadata and only token_embd.weight, whose
    # rows of 64 are stored as Q4_K (the tensor as a whole is 80 blocks of 256;
    # ggml's reader, and gguf.c, refuse rows that are not whole blocks)
    ("mixtral-tiny", "bad-q4_k-rows", "bad-rows", True),
]


def bad_rows(g):
    name, shape, gt, data = next(t for t in g.tensors if t[0] == "token_embd.weight")
    x = np.frombuffer(data, "<f4").reshape(-1, 256)
    g.tensors = [(name, shape, GGML["Q4_K"], q4_k(x))]


def k_models():
    """Safetensors sources (F16) for the K-quant fixtures, written by
    gen_fixtures.write_model: hidden 256, so that every matrix that reads the
    residual stream has rows of whole super-blocks; one layer, in which
    use_more_bits picks Q6_K for attn_v and ffn_down, and ffn_down's rows
    (the expert width, 32) fall back to Q8_0 as llama-quantize does. Mixtral
    has 8 experts, so its Q4_K_M has llama.cpp's 8-expert rules (attn_k and
    attn_v Q8_0, attn_output Q5_K); the others a 128-token vocabulary to stay
    small. Seeds: the first that routes the test prompt's last token alike
    in the quantised and the unquantised model (mixtral: 1001 does not)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gen_fixtures as gf
    h = dict(max_pos=256, torch_dtype="float16")
    return gf, {
        "mixtral-k-tiny": dict(seed=1011, dtype="F16", shards=1,
                               config=gf.mixtral_config(256, 1, 4, 1, 32, 256, 8, 2, rope_theta=1e6, **h)),
        "qwen3moe-k-tiny": dict(seed=1002, dtype="F16", shards=1,
                                config=gf.qwen3moe_config(256, 1, 4, 1, 64, 32, 32, 128, 4, 2, **h)),
        "olmoe-k-tiny": dict(seed=1003, dtype="F16", shards=1, scales=gf.OLMOE_SCALES,
                             config=gf.olmoe_config(256, 1, 4, 1, 32, 128, 4, 2, **h)),
        "qwen2moe-k-tiny": dict(seed=1004, dtype="F16", shards=1,
                                config=gf.qwen2moe_config(256, 1, 4, 1, 32, 32, 32, 128, 4, 2, **h)),
    }


def quant_blocks():
    """tests/fixtures/quant/TYPE.bin: 16 blocks of each quantised type, and
    TYPE.f32 the values dequantise() (ggml's dequantize_row_*) gives them,
    for test_quant.c. Half the blocks quantise data with awkward ranges
    (zeros, a constant, one outlier, magnitudes 1e4 and 1e-5, all positive);
    the other half are random bytes with a finite random d (and dmin), so
    every bit of every field is exercised, negative Q6_K scales included."""
    rng = np.random.default_rng(20240611)
    out = os.path.join(ROOT, "tests", "fixtures", "quant")
    os.makedirs(out, exist_ok=True)
    sizes = {"Q8_0": 34, "Q4_0": 18, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
    for kind, bb in sizes.items():
        n = BLOCK[kind]
        rows = [np.zeros(n), np.full(n, 0.37), rng.standard_normal(n) * 0.02, rng.standard_normal(n) * 1e4,
                rng.standard_normal(n) * 1e-5, np.abs(rng.standard_normal(n)), rng.standard_normal(n)]
        rows.append(rng.standard_normal(n) * 0.1)
        rows[-1][n // 3] = 25.0
        x = np.stack(rows).astype(np.float32)
        raw = quantise(x, kind) if kind in QUANTISE else encode(x, "Q8_0")[1]
        rnd = rng.integers(0, 256, (8, bb), dtype=np.uint8)
        halves = (rng.standard_normal((8, 2)) * 0.05).astype("<f2").view(np.uint8)
        if kind == "Q6_K":
            rnd[:, 208:210] = halves[:, 0:2]
        else:
            rnd[:, 0:4 if kind in ("Q4_K", "Q5_K") else 2] = halves[:, 0:4 if kind in ("Q4_K", "Q5_K") else 2]
        raw += rnd.tobytes()
        vals = dequantise(GGML[kind], raw, len(raw) // bb * n)
        assert np.isfinite(vals).all()
        name = kind.lower()
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(raw)
        with open(os.path.join(out, name + ".f32"), "wb") as f:
            f.write(vals.astype("<f4").tobytes())
        print("tests/fixtures/quant/" + name, len(raw) // bb, "blocks")


BENCH_USAGE = "usage: gen_gguf.py --bench SRC_DIR OUT_DIR  (Q8_0 and Q4_K_M GGUF of a safetensors model)"

if __name__ == "__main__":
    sys.dont_write_bytecode = True
    if len(sys.argv) > 1 and sys.argv[1] == "--bench":
        # the bench model's GGUF versions (not committed; no "-deq" twins)
        if len(sys.argv) != 4:
            raise SystemExit(BENCH_USAGE)
        src, out = os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
        base = os.path.basename(src.rstrip("/")).replace("-f16", "")
        for kind in ("Q8_0", "Q4_K_M"):
            print(base + "-" + kind.lower(), convert(src, base + "-" + kind.lower(), kind, True, out, False))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--vocab":
        args = sys.argv[2:]
        pre = vocab_tool().pop_pre(args)
        if len(args) != 2:
            raise SystemExit("usage: gen_gguf.py --vocab SRC_DIR OUT.gguf [--pre NAME]")
        src, dst = os.path.abspath(args[0]), os.path.abspath(args[1])
        if not dst.endswith(".gguf"):
            raise SystemExit("gen_gguf.py --vocab: OUT must end in .gguf")
        convert(src, os.path.basename(dst)[:-5], "F32", True, os.path.dirname(dst), False, vocab=(src, pre))
        sys.exit(0)
    if len(sys.argv) == 1 or "quant-blocks" in sys.argv[1:]:
        quant_blocks()
    gf, kms = k_models()
    made = set()
    for src, dst, kind, merged in FIXTURES:
        if len(sys.argv) > 1 and dst not in sys.argv[1:]:
            continue
        if src in kms and src not in made:
            gf.write_model(os.path.join(MODELS, src), kms[src])
            made.add(src)
        if kind == "bad-rows":
            convert(src, dst, "F32", merged, twin=False, hook=bad_rows)
            print(dst)
            continue
        mix = convert(src, dst, kind, merged)
        print(dst, mix)
