#!/usr/bin/env python3
"""GGUF interop fixtures made and read by gguf-py (llama.cpp's own Python reader/writer).

    python3 scripts/gen_gguf_fixtures.py            # write fixtures/gguf/*.gguf + *.json
    python3 scripts/gen_gguf_fixtures.py --check DIR  # read qforge-written DIR/*.gguf with gguf-py
                                                      # and compare with DIR/*.json (exit 1 on mismatch)
    python3 scripts/gen_gguf_fixtures.py --describe F.gguf  # write gguf-py's reading of F to F.json

Each fixture NAME.gguf comes with NAME.json: what gguf-py's GGUFReader reads back (version,
alignment, data offset, file size, every key with its type and value (floats also as exact
bits), every tensor's name, type, shape, stored offset, size and the sha256 of its bytes). The
Rust tests (tests/gguf_interop.rs) build the same document from qforge's reader and compare
exactly.

The other direction: `QFORGE_GGUF_EXPORT=DIR cargo test --test gguf_interop` writes qforge's
files to DIR, each with the JSON of what qforge meant to write, and `--check DIR` verifies that
gguf-py reads exactly that.
"""
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "gguf")


def describe(path):
    """gguf-py's reading of a file, in the JSON form the Rust tests build too."""
    r = GGUFReader(path)
    kvs = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        t = f.types[0]
        entry = {"key": f.name, "type": t.name}
        if t == GGUFValueType.ARRAY:
            # parts: key length, key, value type, element type, count, elements...; the
            # element type is read from the file so that empty arrays have one too
            et = GGUFValueType(int(f.parts[3][0]))
            entry["element_type"] = et.name
            if et == GGUFValueType.STRING:
                entry["value"] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                entry["value"] = [np.asarray(f.parts[i]).tolist()[0] for i in f.data]
        elif t == GGUFValueType.STRING:
            entry["value"] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            entry["value"] = np.asarray(f.parts[f.data[0]]).tolist()[0]
        if entry["type"] == "BOOL" or entry.get("element_type") == "BOOL":
            v = entry["value"]
            entry["value"] = [bool(x) for x in v] if isinstance(v, list) else bool(v)
        if entry["type"] in ("FLOAT32", "FLOAT64") or entry.get("element_type") in ("FLOAT32", "FLOAT64"):
            # exact bits, since a JSON number says nothing about -0.0 or the f32 rounding
            dt = "<f4" if "32" in (entry.get("element_type") or entry["type"]) else "<f8"
            vals = entry["value"] if isinstance(entry["value"], list) else [entry["value"]]
            entry["bits"] = [np.asarray(v, dtype=dt).tobytes().hex() for v in vals]
        kvs.append(entry)
    tensors = []
    for t in r.tensors:
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "shape": [int(d) for d in t.shape],
            # the offset stored in the tensor info, relative to the data section
            "offset": int(t.field.parts[-1][0]),
            "n_bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
        })
        assert int(t.data_offset) == int(r.data_offset) + tensors[-1]["offset"]
    return {
        "version": int(r.fields["GGUF.version"].parts[0][0]),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "file_size": os.path.getsize(path),
        "kv": kvs,
        "tensors": tensors,
    }


def all_types_writer(path, alignment=None):
    w = GGUFWriter(path, "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 3.1415927)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "héllo \u2581 wörld\n\ttab")
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", -2.718281828459045)
    w.add_key_value("t.arr.u8", [1, 2, 255], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8)
    w.add_key_value("t.arr.i8", [-1, 2, -128], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT8)
    w.add_key_value("t.arr.u16", [1, 65535], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT16)
    w.add_key_value("t.arr.i16", [-32768, 7], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT16)
    w.add_key_value("t.arr.u32", [0, 4294967295], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT32)
    w.add_key_value("t.arr.i32", [-5, 5, 1 << 30], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
    w.add_key_value("t.arr.f32", [0.5, -1e-7, 3e38], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT32)
    w.add_key_value("t.arr.bool", [True, False, True], GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
    w.add_key_value("t.arr.string", ["a", "", "ünï", "<0x0A>"], GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
    w.add_key_value("t.arr.u64", [2**64 - 1], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT64)
    w.add_key_value("t.arr.i64", [-(2**63), 1], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT64)
    w.add_key_value("t.arr.f64", [1e300, -0.0], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT64)
    return w


def add_tensors(w, rng):
    w.add_tensor("f32", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 16)).astype(np.float16))
    bf = gguf.quants.quantize(rng.standard_normal((2, 32)).astype(np.float32), GGMLQuantizationType.BF16)
    w.add_tensor("bf16", bf, raw_dtype=GGMLQuantizationType.BF16)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    for name, qt in (("q8_0", GGMLQuantizationType.Q8_0), ("q4_0", GGMLQuantizationType.Q4_0)):
        w.add_tensor(name, gguf.quants.quantize(x, qt), raw_dtype=qt)
    # Q4_K container bytes: random payload with finite f16 super-scales
    raw = rng.integers(0, 256, (2, 144), dtype=np.uint8)
    raw[:, 0:4] = np.frombuffer(np.array([0.01, 0.02], dtype=np.float16).tobytes(), dtype=np.uint8)
    w.add_tensor("q4_k", raw, raw_dtype=GGMLQuantizationType.Q4_K)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(7, dtype=np.float32))


def write(w, path):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path[:-5] + ".json", "w") as f:
        json.dump(describe(path), f, indent=1, ensure_ascii=False)


def generate():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(3)
    for align in (32, 64):
        p = os.path.join(OUT, f"gguf-py-all-types-a{align}.gguf")
        w = all_types_writer(p, None if align == 32 else align)
        add_tensors(w, rng)
        write(w, p)
    p = os.path.join(OUT, "gguf-py-no-tensors.gguf")
    w = GGUFWriter(p, "llama")
    w.add_string("general.name", "empty")
    write(w, p)
    print("wrote", sorted(os.listdir(OUT)))


def check(d):
    bad = 0
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".gguf"):
            continue
        want = json.load(open(os.path.join(d, fn[:-5] + ".json")))
        got = describe(os.path.join(d, fn))
        if got != want:
            bad += 1
            print(f"MISMATCH {fn}")
            for k in sorted(set(got) | set(want)):
                if k in ("kv", "tensors"):
                    for g, w in zip(got.get(k, []), want.get(k, [])):
                        if g != w:
                            print(f"  {k}:\n    gguf-py: {g}\n    qforge:  {w}")
                    if len(got.get(k, [])) != len(want.get(k, [])):
                        print(f"  {k}: gguf-py has {len(got.get(k, []))}, qforge {len(want.get(k, []))}")
                elif got.get(k) != want.get(k):
                    print(f"  {k}: gguf-py {got.get(k)}, qforge {want.get(k)}")
        else:
            print(f"ok {fn}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--describe":
        # gguf-py's reading of a qforge-written file, saved beside it as NAME.json
        with open(sys.argv[2][:-5] + ".json", "w") as f:
            json.dump(describe(sys.argv[2]), f, indent=1, ensure_ascii=False)
    else:
        generate()
