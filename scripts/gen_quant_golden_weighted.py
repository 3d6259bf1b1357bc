#!/usr/bin/env python3
"""Golden vectors for the importance-weighted (imatrix) quantizers, made by ggml itself.

Loads libggml-base from the `llama-cpp-python` wheel with ctypes and calls
`ggml_quantize_chunk(type, src, dst, 0, nrows, 256, imatrix)` — exactly what llama-quantize
calls with an importance matrix (one importance value per column, the same vector for every
row) — for every type that takes weights, on the finite rows of fixtures/quant/kquant/input.f32
(the edge-case rows of the static goldens, minus those whose squares overflow f32) and six
importance vectors: log-normal, all ones, sparse, some zeros, tiny (1e-30 scale) and huge
(1e10 scale).

Writes fixtures/quant/weighted/:

  input.f32                 the rows used, little-endian f32, rows of 256
  imatrix.<variant>.f32     the importance vector (256 f32)
  <T>.<variant>.bin         ggml's bytes for every row
  manifest.json             versions, row kinds, variants, types

    python3 scripts/gen_quant_golden_weighted.py
"""
import ctypes
import glob
import json
import os

import numpy as np
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "fixtures", "quant", "kquant")
OUT = os.path.join(ROOT, "fixtures", "quant", "weighted")
ROW = 256
# name: (ggml type id, bytes per 256 values)
TYPES = {
    "Q4_0": (2, 144), "Q4_1": (3, 160), "Q5_0": (6, 176), "Q5_1": (7, 192), "Q8_0": (8, 272),
    "Q2_K": (10, 84), "Q3_K": (11, 110), "Q4_K": (12, 144), "Q5_K": (13, 176), "Q6_K": (14, 210),
    "IQ4_NL": (20, 144), "IQ4_XS": (23, 136),
}
# rows whose squares overflow f32 or that sit at f32's limits: the weighted paths' sums turn
# into inf/NaN there, which no caller can rely on (llama-quantize's models never get there)
SKIP = ("f32-max", "large*1e+19", "large*1e+30", "1e30-outlier")


def load_ggml():
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-base.so*"))[0], mode=ctypes.RTLD_GLOBAL)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    base.ggml_quantize_init.argtypes = [ctypes.c_int]
    return base


def importance(rng):
    ln = np.exp(rng.standard_normal(ROW))
    sparse = np.full(ROW, 1e-3)
    sparse[rng.integers(0, ROW, 12)] = 100.0
    some_zeros = np.exp(rng.standard_normal(ROW))
    some_zeros[rng.random(ROW) < 0.25] = 0.0
    return {
        "lognormal": ln,
        "ones": np.ones(ROW),
        "sparse": sparse,
        "some-zeros": some_zeros,
        "tiny": np.exp(rng.standard_normal(ROW)) * 1e-30,
        "huge": np.exp(rng.standard_normal(ROW)) * 1e10,
    }


def main():
    ggml = load_ggml()
    manifest = json.load(open(os.path.join(SRC, "manifest.json")))
    kinds = manifest["kinds"]
    x_all = np.fromfile(os.path.join(SRC, "input.f32"), dtype="<f4").reshape(-1, ROW)
    keep = [i for i, k in enumerate(kinds) if not k.startswith(SKIP)]
    x = np.ascontiguousarray(x_all[keep])
    os.makedirs(OUT, exist_ok=True)
    x.astype("<f4").tofile(os.path.join(OUT, "input.f32"))
    rng = np.random.default_rng(20261201)
    variants = importance(rng)
    for name, qw in variants.items():
        qw.astype("<f4").tofile(os.path.join(OUT, f"imatrix.{name}.f32"))
    out_types = {}
    for tname, (tid, size) in TYPES.items():
        ggml.ggml_quantize_init(tid)
        for vname, qw in variants.items():
            qw32 = np.ascontiguousarray(qw, dtype=np.float32)
            dst = np.zeros(len(x) * size, dtype=np.uint8)
            n = ggml.ggml_quantize_chunk(tid, x.ctypes.data, dst.ctypes.data, 0, len(x), ROW, qw32.ctypes.data)
            assert n == dst.size, (tname, n)
            dst.tofile(os.path.join(OUT, f"{tname}.{vname}.bin"))
        out_types[tname] = {"ggml_type": tid, "bytes_per_row": size}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"generator": "scripts/gen_quant_golden_weighted.py", "llama_cpp_python": llama_cpp.__version__,
                   "row": ROW, "kinds": [kinds[i] for i in keep], "variants": list(variants),
                   "types": out_types}, f, indent=1)
    print(f"{len(x)} rows x {len(variants)} importance vectors x {len(TYPES)} types -> {OUT}")


if __name__ == "__main__":
    main()
