#!/usr/bin/env python3
"""Break a GGUF file in one named way, for tests/hostile.sh and
tests/gguf_model_vocab.sh (standard library only).

    gguf_edit.py IN OUT EDIT...

EDIT is one of
    set-str KEY VALUE       a string value (added when absent)
    set-u32 KEY N           a UINT32 value (added when absent)
    drop-tensor NAME        remove a tensor's info (its bytes stay, unused)
    shape NAME D0,D1,...    new dimensions, innermost first (keep them no
                            larger than the data, or the reader refuses first)
    tokens N                a tokenizer.ggml.tokens array of N strings
    set-token ID TEXT       token ID of tokenizer.ggml.tokens spelled TEXT
    fill-f32 NAME X         every value of an F32 tensor set to X

The tensors are laid out again as the format requires (in order, each
padded to the alignment), keeping each one's leading bytes: a dropped
tensor's bytes go, a smaller shape keeps the start of the data. Tensor
types F32, F16, BF16 and Q8_0 (GGUF v2/v3, from ggml's docs/gguf.md).
"""

import struct
import sys

TYPE_SIZE = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34)}  # ggml type: (block, bytes per block)
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def parse(raw):
    p = 4

    def take(fmt):
        nonlocal p
        v = struct.unpack_from("<" + fmt, raw, p)
        p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal p
        n = take("Q")
        s = raw[p:p + n]
        p += n
        return s

    def value(t):
        nonlocal p
        if t == 8:
            return struct.pack("<Q", len(s := string())) + s
        if t == 9:
            et, n = take("I"), take("Q")
            start = p
            for _ in range(n):
                value(et)
            return struct.pack("<IQ", et, n) + raw[start:p]
        b = raw[p:p + SIZES[t]]
        p += SIZES[t]
        return b

    version, n_t, n_kv = take("I"), take("Q"), take("Q")
    kvs = []
    for _ in range(n_kv):
        k = string()
        t = take("I")
        kvs.append([k, t, value(t)])
    tensors = []
    for _ in range(n_t):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        tensors.append([name, ne, take("I"), take("Q")])
    align = 32
    for k, t, v in kvs:
        if k == b"general.alignment":
            align = struct.unpack("<I", v)[0]
    data = p + (-p % align)
    return version, kvs, tensors, align, raw[data:]


def nbytes(ne, gt):
    n = 1
    for d in ne:
        n *= d
    block, size = TYPE_SIZE[gt]
    return n // block * size


def write(path, version, kvs, tensors, align, data):
    out_data = bytearray()
    for t in tensors:  # t[4]: the tensor's bytes
        t[3] = len(out_data)
        out_data += t[4][:nbytes(t[1], t[2])] + b"\0" * (-nbytes(t[1], t[2]) % align)
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for k, t, v in kvs:
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + v
    for name, ne, gt, off, _ in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(ne))
        out += b"".join(struct.pack("<Q", n) for n in ne) + struct.pack("<IQ", gt, off)
    out += b"\0" * (-len(out) % align)
    with open(path, "wb") as f:
        f.write(out + out_data)


def set_kv(kvs, key, t, v):
    k = key.encode()
    for kv in kvs:
        if kv[0] == k:
            kv[1], kv[2] = t, v
            return
    kvs.append([k, t, v])


def main(argv):
    if len(argv) < 4:
        raise SystemExit(__doc__)
    version, kvs, tensors, align, data = parse(open(argv[1], "rb").read())
    for t in tensors:
        t.append(bytearray(data[t[3]:t[3] + nbytes(t[1], t[2])]))
    op, args = argv[3], argv[4:]
    find = {t[0].decode(): t for t in tensors}
    if op == "set-str":
        b = args[1].encode()
        set_kv(kvs, args[0], 8, struct.pack("<Q", len(b)) + b)
    elif op == "set-u32":
        set_kv(kvs, args[0], 4, struct.pack("<I", int(args[1])))
    elif op == "drop-tensor":
        tensors.remove(find[args[0]])
    elif op == "shape":
        find[args[0]][1] = [int(x) for x in args[1].split(",")]
    elif op == "tokens":
        toks = b"".join(struct.pack("<Q", len(s)) + s for s in (b"t%d" % i for i in range(int(args[0]))))
        set_kv(kvs, "tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, int(args[0])) + toks)
    elif op == "set-token":
        kv = next(kv for kv in kvs if kv[0] == b"tokenizer.ggml.tokens")
        et, n = struct.unpack_from("<IQ", kv[2])
        assert kv[1] == 9 and et == 8, "set-token needs an array of strings"
        p, toks = 12, []
        for _ in range(n):
            m = struct.unpack_from("<Q", kv[2], p)[0]
            toks.append(kv[2][p + 8:p + 8 + m])
            p += 8 + m
        toks[int(args[0])] = args[1].encode()
        kv[2] = struct.pack("<IQ", 8, n) + b"".join(struct.pack("<Q", len(s)) + s for s in toks)
    elif op == "fill-f32":
        t = find[args[0]]
        assert t[2] == 0, "fill-f32 needs an F32 tensor"
        n = nbytes(t[1], 0) // 4
        t[4] = bytearray(struct.pack("<%df" % n, *([float(args[1])] * n)))
    else:
        raise SystemExit(f"gguf_edit.py: unknown edit {op}")
    write(argv[2], version, kvs, tensors, align, None)


if __name__ == "__main__":
    main(sys.argv)
