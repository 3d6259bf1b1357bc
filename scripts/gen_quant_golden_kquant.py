#!/usr/bin/env python3
"""Golden vectors for qforge's Q2_K, Q3_K, Q4_K, Q6_K, IQ4_NL and IQ4_XS, made by ggml itself.

Loads libggml-base from the `llama-cpp-python` wheel with ctypes and calls:

  * `ggml_quantize_chunk(type, src, dst, 0, nrows, 256, imatrix=NULL)`, the function
    llama-quantize calls (for Q4_K / Q6_K it runs `quantize_row_q4_K_ref` /
    `quantize_row_q6_K_ref`, for IQ4_NL `quantize_iq4_nl` with ntry = 7); the script asserts
    that the direct `quantize_row_q{4,6}_K_ref` calls give the same bytes;
  * `dequantize_row_q4_K` / `dequantize_row_q6_K` / `dequantize_row_iq4_nl` (ggml's
    `type_traits[type].to_float`) on those bytes and on random bytes with special f16 scales
    (inf, NaN, subnormal, ±0), and compares them with gguf-py's numpy dequantizers.

Writes fixtures/quant/kquant/:

  input.f32            inputs, little-endian f32, rows of 256 (see manifest "kinds")
  <T>.bin              ggml's quantized bytes of every row
  <T>.deq.f32          ggml's dequantization of <T>.bin
  <T>.rand.bin         random blocks (some with special scales)
  <T>.rand.deq.f32     ggml's dequantization of <T>.rand.bin
  manifest.json        versions, row kinds, sizes, gguf-py agreement

    python3 scripts/gen_quant_golden_kquant.py
"""
import ctypes
import glob
import json
import os

import numpy as np
import gguf
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "quant", "kquant")
ROW = 256
# name: (ggml type id, block elements, block bytes, ref quantizer or None, dequantizer)
TYPES = {
    "Q2_K": (10, 256, 84, "quantize_row_q2_K_ref", "dequantize_row_q2_K"),
    "Q3_K": (11, 256, 110, "quantize_row_q3_K_ref", "dequantize_row_q3_K"),
    "Q4_K": (12, 256, 144, "quantize_row_q4_K_ref", "dequantize_row_q4_K"),
    "Q6_K": (14, 256, 210, "quantize_row_q6_K_ref", "dequantize_row_q6_K"),
    "IQ4_XS": (23, 256, 136, None, "dequantize_row_iq4_xs"),
    "IQ4_NL": (20, 32, 18, None, "dequantize_row_iq4_nl"),
}
# byte offset of the f16 scale(s) inside a block, for the special-scale random blocks
SCALE_OFFSETS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q6_K": (208,), "IQ4_NL": (0,), "IQ4_XS": (0,)}
SPECIAL_F16 = [0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7D55, 0x0001, 0x83FF, 0x0000, 0x8000,
               0x7BFF, 0x0400]
F32_MAX = np.float32(3.4028235e38)


def load_ggml():
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-base.so*"))[0], mode=ctypes.RTLD_GLOBAL)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    base.ggml_quantize_init.argtypes = [ctypes.c_int]
    for _, _, _, ref, deq in TYPES.values():
        for fn in filter(None, (ref, deq)):
            getattr(base, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            getattr(base, fn).restype = None
    return base


def rows():
    """(kind, row) pairs: each row is 256 f32 values."""
    rng = np.random.default_rng(20240611)
    out = []

    def add(kind, r):
        r = np.asarray(r, dtype=np.float64)
        with np.errstate(over="ignore"):
            r32 = r.astype(np.float32)
        assert r32.shape == (ROW,) and np.all(np.isfinite(r32)), kind
        out.append((kind, r32))

    g = lambda: rng.standard_normal(ROW)
    for scale in (1e-7, 1e-5, 1e-3, 0.02, 0.1, 1.0, 3.0):
        for _ in range(2):
            add(f"gaussian*{scale:g}", g() * scale)
    for _ in range(2):  # every 16-element group at its own magnitude
        add("group-scales", g() * np.repeat(10.0 ** rng.uniform(-4, 1, ROW // 16), 16))
    # exact ties and clean grids
    add("grid-0..15", np.arange(ROW) % 16)
    add("grid-8..7", np.arange(ROW) % 16 - 8)
    add("grid-32..31", np.arange(ROW) % 64 - 32)
    add("ints-max8", rng.integers(-8, 9, ROW))
    add("halves-max8", rng.integers(-16, 17, ROW) / 2)
    add("ints-max127", rng.integers(-127, 128, ROW))
    add("sixteenths", rng.integers(-64, 65, ROW) / 16)
    add("iq4nl-table", np.tile(gguf.quants.IQ4_NL.kvalues, ROW // 16))
    # Exact ties at each rounding site (the fits of exact grids are exact, so the ratios
    # below are the ones the code sees; tests/quant_kquant.rs relies on these rows to tell
    # round-half-even from round-half-away and the IQ4_NL tie rule):
    # Q4_K: sub-block 0 spans -63..882 in steps of 63 (scale 63, min 63, so d = dmin = 1);
    # sub-block j spans -s..14s in steps of s with s = k + 0.5: 6-bit scale and min tie at
    # s, and the requantization (x + m)/sc ties too.
    # A second pattern: scale and min 2.625 in sub-block 0 make inv_scale = inv_min = 24
    # exactly, and 24·s ties at 4.5, 16.5, …, 52.5 for the other seven.
    for order, subs in enumerate([[63.0, 2.5, 4.5, 6.5, 8.5, 0.5, 10.5, 12.5],
                                  [63.0, 12.5, 10.5, 0.5, 8.5, 6.5, 4.5, 2.5],
                                  [2.625, 0.1875, 0.6875, 1.1875, 1.4375, 1.6875, 1.9375, 2.1875]]):
        r = np.concatenate([s * (np.arange(32) % 16 - 1.0) for s in subs])
        add(f"q4k-scale-ties-{order}", r)
    # Q6_K: group 0 has abs max 4096 = 128·32 (scale −128, so d = 1); group j has abs max
    # 32·s with s = k + 0.5, so its 8-bit scale ties, and x/(d·sc) ties for even t.
    for sign in (1.0, -1.0):
        groups = []
        for j, s in enumerate([128.0, 2.5, 4.5, 6.5, 8.5, 0.5, 10.5, 12.5] * 2):
            t = np.concatenate([[32.0], rng.integers(-31, 32, 15)])
            groups.append(sign * s * t)
        add(f"q6k-scale-ties{'+' if sign > 0 else '-'}", np.concatenate(groups))
    # make_qx_quants: each 16-group starts with −32 (iscale 1: half-integers tie in the
    # first pass) or −32.5 (iscale 1 at is = +5 in the search). With a first group 1e5 times
    # larger, the others get 8-bit scale 0 and keep make_qx_quants' codes, so the ties show.
    for lead in (-32.0, -32.5):
        for big in (False, True):
            groups = [np.concatenate([[lead], rng.integers(-63, 64, 15) / 2]) for _ in range(16)]
            if big:  # mostly integers, so that iscale = 1 stays the best fit
                groups = [np.concatenate([[lead], rng.integers(-31, 32, 12), [-7.5, 4.5, 0.5]])
                          for _ in range(16)]
                groups[0] = groups[0] * 1e5
            add(f"qx-halves-lead{lead:g}{'-big-first' if big else ''}", np.concatenate(groups))
    # IQ4_NL: blocks led by ±127 (first pass id = ∓1 and search id = ±1) whose other
    # values are midpoints between table levels.
    mids = (np.array(gguf.quants.IQ4_NL.kvalues[:-1], float) + np.array(gguf.quants.IQ4_NL.kvalues[1:])) / 2
    for lead in (127.0, -127.0):
        blocks = []
        for _ in range(8):
            v = rng.choice(np.concatenate([mids, -mids]), 31)
            blocks.append(np.concatenate([[lead], v]))
        add(f"iq4nl-midpoints-lead{lead:g}", np.concatenate(blocks))
    # zeros
    add("zeros", np.zeros(ROW))
    add("negative-zeros", np.full(ROW, -0.0))
    add("mixed-zeros", np.where(np.arange(ROW) % 3 == 0, -0.0, 0.0))
    r = np.zeros(ROW); r[0] = 0.75
    add("single-first", r)
    r = np.zeros(ROW); r[255] = -2.5
    add("single-last", r)
    r = g(); r[32:64] = 0; r[160:192] = 0
    add("zero-32-groups", r)
    r = g(); r[16:32] = 0; r[96:112] = 0; r[240:256] = 0
    add("zero-16-groups", r)
    r = g(); r[:40] = 0
    add("40-leading-zeros", r)
    r = g() * 0.1; r[::2] = 0
    add("half-zeros", r)
    # tiny magnitudes: f32 subnormals, GROUP_MAX_EPS boundary, x² underflow
    add("subnormals", g() * 1e-40)
    r = g() * 1e-40; r[77] = 1.0
    add("subnormals+one", r)
    for scale in (1e-15, 3e-15, 1e-14, 1e-12):
        add(f"near-eps*{scale:g}", g() * scale)
    add("tiny*1e-20", g() * 1e-20)
    # huge magnitudes: f16 range, x² overflow, f32 max
    add("f16-range", rng.uniform(-65504, 65504, ROW))
    r = g(); r[7] = 65504.0; r[100] = -65504.0
    add("f16-max-outliers", r)
    for scale in (1e6, 1e10, 1e19, 1e30):
        add(f"large*{scale:g}", g() * scale)
    add("f32-max-random-signs", np.where(rng.random(ROW) < 0.5, -1.0, 1.0) * F32_MAX)
    add("f32-max-positive", np.full(ROW, F32_MAX))
    add("f32-max-alternating", np.where(np.arange(ROW) % 2 == 0, 1.0, -1.0) * F32_MAX)
    r = g(); r[[3, 64, 200]] = [F32_MAX, -F32_MAX, F32_MAX]
    add("f32-max-outliers", r)
    r = g() * 1e-3; r[50] = 1e30
    add("1e30-outlier", r)
    # single sign, constants, offsets
    add("all-positive", np.abs(g()) + 0.5)
    add("all-negative", -np.abs(g()) - 0.1)
    add("constant", np.full(ROW, 0.37))
    add("constant-negative", np.full(ROW, -2.0))
    add("offset-100", 100 + g())
    # heavy tails and outlier channels
    add("cauchy", rng.standard_cauchy(ROW))
    add("student-t(2)", rng.standard_t(2, ROW))
    r = g() * 0.02; r[::32] *= 400
    add("outlier-channels", r)
    r = g() * 0.02; r[rng.integers(0, ROW, 4)] = 8.0
    add("outliers", r)
    # test-quantize-fns' input, 4096 values
    cosv = (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float32))).astype(np.float32)
    for i in range(4096 // ROW):
        add("cos", cosv[i * ROW:(i + 1) * ROW])
    return out


def random_blocks(name, nblocks, rng):
    _, _, bsize, _, _ = TYPES[name]
    raw = rng.integers(0, 256, nblocks * bsize, dtype=np.uint8).reshape(nblocks, bsize)
    for b in range(nblocks):
        if b % 2 == 0:  # half the blocks get a special scale (some both, for Q4_K)
            for k, off in enumerate(SCALE_OFFSETS[name]):
                if k == 0 or b % 4 == 0:
                    v = SPECIAL_F16[(b // 2 + k * 5) % len(SPECIAL_F16)]
                    raw[b, off:off + 2] = [v & 0xFF, v >> 8]
    return raw.reshape(-1)


def ggml_dequant(lib, name, q, n):
    out = np.zeros(n, dtype=np.float32)
    getattr(lib, TYPES[name][4])(q.ctypes.data, out.ctypes.data, n)
    return out


def same_bits_or_both_nan(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | nan)), int(np.sum(
        nan & (a.view(np.uint32) != b.view(np.uint32))))


def main():
    os.makedirs(OUT, exist_ok=True)
    lib = load_ggml()
    data = rows()
    x = np.ascontiguousarray(np.stack([r for _, r in data]).astype("<f4"))
    nrows = x.shape[0]
    x.tofile(os.path.join(OUT, "input.f32"))
    manifest = {"generator": "scripts/gen_quant_golden_kquant.py", "llama_cpp_python": llama_cpp.__version__,
                "ggml_library": os.path.basename(os.path.realpath(
                    glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so*"))[0])),
                "gguf_py": getattr(gguf, "__version__", "0.19.0"), "row": ROW,
                "kinds": [k for k, _ in data], "types": {}}
    rng = np.random.default_rng(777)
    for name, (tid, bel, bsize, ref, _) in TYPES.items():
        qt = gguf.GGMLQuantizationType[name]
        size = nrows * ROW // bel * bsize
        buf = ctypes.create_string_buffer(size)
        lib.ggml_quantize_init(tid)
        n = lib.ggml_quantize_chunk(tid, x.ctypes.data, buf, 0, nrows, ROW, None)
        assert n == size, (name, n, size)
        q = np.frombuffer(buf.raw, dtype=np.uint8).copy()
        if ref is not None:
            buf2 = ctypes.create_string_buffer(size)
            getattr(lib, ref)(x.ctypes.data, buf2, nrows * ROW)
            assert buf2.raw == buf.raw, f"{ref} and ggml_quantize_chunk disagree"
        q.tofile(os.path.join(OUT, f"{name}.bin"))
        deq = ggml_dequant(lib, name, q, nrows * ROW)
        deq.astype("<f4").tofile(os.path.join(OUT, f"{name}.deq.f32"))

        nrand = 4096 // bel
        rq = random_blocks(name, nrand, rng)
        rq.tofile(os.path.join(OUT, f"{name}.rand.bin"))
        rdeq = ggml_dequant(lib, name, rq, nrand * bel)
        rdeq.astype("<f4").tofile(os.path.join(OUT, f"{name}.rand.deq.f32"))

        # gguf-py's dequantizers against ggml's, for the record
        with np.errstate(all="ignore"):
            py = gguf.quants.dequantize(q.reshape(nrows, -1), qt).reshape(-1)
            rpy = gguf.quants.dequantize(rq.reshape(1, -1), qt).reshape(-1)
        ok, nan_payload = same_bits_or_both_nan(py, deq)
        rok, rnan_payload = same_bits_or_both_nan(rpy, rdeq)
        manifest["types"][name] = {
            "ggml_type": tid, "bytes": size, "random_blocks": nrand,
            "ref_equals_quantize_chunk": ref is not None,
            "gguf_py_dequant_matches_ggml": ok and rok,
            "gguf_py_dequant_nan_payload_differences": nan_payload + rnan_payload,
        }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{nrows} rows x {ROW} -> {OUT}")
    print(json.dumps(manifest["types"], indent=1))


if __name__ == "__main__":
    main()
