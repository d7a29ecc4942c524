"""Read a single-file .safetensors (F32/F16) into numpy arrays."""
import json

import numpy as np


def read(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        dt = {"F32": "<f4", "F16": "<f2"}[v["dtype"]]
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=dt).reshape(v["shape"]).astype(np.float32)
    return out
