#!/usr/bin/env python3
"""Golden vectors for qforge's ggml quantizers, made by ggml itself.

Quantized bytes come from ggml's `ggml_quantize_chunk` (the function llama-quantize calls) in the
libggml-base shipped by the `llama-cpp-python` wheel (for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 the script also
asserts that gguf-py's numpy quantizers give the same bytes); dequantized values from gguf-py's
numpy dequantizers (bit-exact with ggml's). Writes fixtures/quant/golden/:

  input.f32            the inputs, little-endian f32, rows of 256
  <TYPE>.bin           ggml's quantized bytes for every row
  manifest.json        versions, row kinds, and per type the sha256 of the dequantized f32 bytes

    python3 scripts/gen_quant_golden.py
"""
import ctypes
import glob
import hashlib
import json
import os

import numpy as np
import gguf
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "quant", "golden")
TYPES = {"Q8_0": 8, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "IQ4_NL": 20}
ROW = 256


def load_ggml():
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-base.so*"))[0], mode=ctypes.RTLD_GLOBAL)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    base.ggml_quantize_init.argtypes = [ctypes.c_int]
    return base


def rows():
    """(kind, row) pairs: each row is 256 f32 values."""
    rng = np.random.default_rng(1234)
    out = []

    def add(kind, r):
        out.append((kind, np.asarray(r, dtype=np.float32).reshape(ROW)))

    for scale in (1e-3, 0.02, 1.0, 3.0):
        for _ in range(3):
            add(f"gaussian*{scale}", rng.standard_normal(ROW) * scale)
    # exact ties: integers and half-integers, whose scaled values land on .5
    for m in (8, 16, 127, 15, 31):
        add(f"ties-int-max{m}", rng.integers(-m, m + 1, ROW).astype(np.float32))
        add(f"ties-half-max{m}", rng.integers(-2 * m, 2 * m + 1, ROW).astype(np.float32) / 2)
    add("zeros", np.zeros(ROW))
    r = np.zeros(ROW); r[5] = 0.5; r[200] = -1.25
    add("mostly-zeros", r)
    r = rng.standard_normal(ROW); r[:40] = 0
    add("40-leading-zeros", r)
    r = rng.standard_normal(ROW); r[32:64] = 0; r[96:112] = 0
    add("zero-subblocks", r)
    add("subnormals", rng.standard_normal(ROW) * 1e-40)
    add("tiny", rng.standard_normal(ROW) * 1e-20)
    add("f16-range", rng.uniform(-65504, 65504, ROW))
    r = rng.standard_normal(ROW); r[7] = 65504.0; r[100] = -65504.0
    add("f16-max-outliers", r)
    add("large", rng.standard_normal(ROW) * 1e6)
    add("all-positive", np.abs(rng.standard_normal(ROW)) + 0.5)
    add("all-negative", -np.abs(rng.standard_normal(ROW)) - 0.1)
    add("constant", np.full(ROW, 0.37))
    add("student-t(2)", rng.standard_t(2, ROW))
    r = rng.standard_normal(ROW) * 0.02; r[rng.integers(0, ROW, 4)] = 8.0
    add("outliers", r)
    cosv = (0.1 + 2 * np.cos(np.arange(4096))).astype(np.float32)
    for i in range(4096 // ROW):
        add("cos", cosv[i * ROW:(i + 1) * ROW])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    lib = load_ggml()
    data = rows()
    x = np.stack([r for _, r in data]).astype("<f4")
    x.tofile(os.path.join(OUT, "input.f32"))
    manifest = {"generator": "scripts/gen_quant_golden.py", "llama_cpp_python": llama_cpp.__version__,
                "gguf_py": getattr(gguf, "__version__", "0.19.0"), "row": ROW,
                "kinds": [k for k, _ in data], "types": {}}
    nrows = x.shape[0]
    for name, tid in TYPES.items():
        qt = gguf.GGMLQuantizationType[name]
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        size = nrows * ROW // bs * ts
        buf = ctypes.create_string_buffer(size)
        lib.ggml_quantize_init(tid)
        n = lib.ggml_quantize_chunk(tid, x.ctypes.data, buf, 0, nrows, ROW, None)
        assert n == size, (name, n, size)
        q = np.frombuffer(buf.raw, dtype=np.uint8)
        q.tofile(os.path.join(OUT, f"{name}.bin"))
        entry = {}
        if name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
            # gguf-py's numpy quantizers must give the same bytes as ggml's C code.
            with np.errstate(all="ignore"):
                py = gguf.quants.quantize(x, qt).reshape(-1)
            assert np.array_equal(py, q), f"gguf-py and ggml disagree on {name}"
            entry["gguf_py_quantize_identical"] = True
        deq = gguf.quants.dequantize(q.reshape(nrows, -1), qt).astype("<f4")
        manifest["types"][name] = {"bytes": size, "dequant_sha256": hashlib.sha256(deq.tobytes()).hexdigest(),
                                   **entry}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{nrows} rows x {ROW}, {len(TYPES)} types -> {OUT}")


if __name__ == "__main__":
    main()
