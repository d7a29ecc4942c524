"""Minimal safetensors writer (numpy only), used by tools/gen_fixtures.py.

Format (https://github.com/huggingface/safetensors, README "Format"):

    u64 little-endian N | N bytes of UTF-8 JSON header | data section

The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
with offsets relative to the start of the data section, plus an optional
"__metadata__" string->string map.  The header is padded with trailing spaces
so that the data section starts at an offset that is a multiple of 8.  Tensor
data are little-endian, row-major (C order), contiguous, with no holes; here
they are laid out in the order the tensors are listed.

The writer streams: the caller gives the list of (name, dtype, shape) first
(the header needs every offset), then each tensor's array in the same order,
so a 1 GB checkpoint never has to be held in memory.

This module deliberately contains no reader: tests/reference/reference.py reads
the files with its own, independent code.
"""

import json
import os

import numpy as np

# safetensors dtype tag -> (bytes per element, numpy storage dtype)
DTYPES = {
    "F32": (4, np.dtype("<f4")),
    "F16": (2, np.dtype("<f2")),
    "BF16": (2, np.dtype("<u2")),  # stored as raw 16-bit patterns
}

TORCH_DTYPE_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def f32_to_bf16_bits(x):
    """Round float32 values to bfloat16 (round-to-nearest-even), return uint16 bits.

    bfloat16 is the top 16 bits of an IEEE float32.  Rounding to nearest even:
    add 0x7FFF plus the lowest kept bit, then truncate.  NaNs map to a quiet NaN
    of the same sign; overflow correctly rounds to +-inf.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    bias = ((u >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)
    r = ((u + bias) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        r[nan] = ((u[nan] >> np.uint64(16)).astype(np.uint16) & np.uint16(0x8000)) | np.uint16(0x7FC0)
    return r


def bf16_bits_to_f32(b):
    """Exact widening of bfloat16 bit patterns to float32."""
    b = np.asarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode(x, dtype):
    """Convert a float array to the storage array for a safetensors dtype tag."""
    if dtype == "F32":
        return np.ascontiguousarray(x, dtype="<f4")
    if dtype == "F16":
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32).astype("<f2"))
    if dtype == "BF16":
        return np.ascontiguousarray(f32_to_bf16_bits(x), dtype="<u2")
    raise ValueError("unsupported dtype %r" % dtype)


def nbytes(dtype, shape):
    n = DTYPES[dtype][0]
    for d in shape:
        n *= int(d)
    return n


def build_header(specs, metadata=None):
    """specs: list of (name, dtype, shape).  Returns (header bytes incl. padding, total data bytes)."""
    header = {"__metadata__": dict(metadata if metadata is not None else {"format": "pt"})}
    off = 0
    for name, dtype, shape in specs:
        if name in header:
            raise ValueError("duplicate tensor name %r" % name)
        n = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [off, off + n]}
        off += n
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pad = (-(8 + len(js))) % 8
    js += b" " * pad
    return js, off


class StreamWriter:
    """Write one .safetensors file tensor by tensor, in the order of `specs`."""

    def __init__(self, path, specs, metadata=None):
        self.path = path
        self.specs = list(specs)
        self.i = 0
        hdr, self.total = build_header(self.specs, metadata)
        self.f = open(path + ".tmp", "wb")
        self.f.write(len(hdr).to_bytes(8, "little"))
        self.f.write(hdr)

    def write(self, name, array):
        """array: float values (any float dtype) of the declared shape; encoded here."""
        exp_name, dtype, shape = self.specs[self.i]
        if name != exp_name:
            raise ValueError("tensor %r written out of order (expected %r)" % (name, exp_name))
        if tuple(array.shape) != tuple(shape):
            raise ValueError("tensor %r has shape %s, declared %s" % (name, array.shape, tuple(shape)))
        data = encode(array, dtype)
        assert data.nbytes == nbytes(dtype, shape)
        self.f.write(data.tobytes(order="C"))
        self.i += 1

    def close(self):
        if self.i != len(self.specs):
            raise ValueError("%d of %d tensors written" % (self.i, len(self.specs)))
        self.f.close()
        os.replace(self.path + ".tmp", self.path)


def write_index(path, weight_map, total_size):
    """model.safetensors.index.json as transformers writes it (keys sorted)."""
    idx = {"metadata": {"total_size": int(total_size)},
           "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
    with open(path, "w") as f:
        f.write(json.dumps(idx, indent=2) + "\n")
