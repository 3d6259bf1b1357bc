"""Importance-matrix interop, end to end with llama.cpp's own tools (llama-imatrix and
llama-quantize, built from the llama.cpp llama-cpp-python vendors; scripts/test.sh builds them):

  1. llama-imatrix computes an importance matrix for a fixture's f16 file on the interop
     corpus, in both of its formats (GGUF and the legacy .dat);
  2. for each type, `llama-quantize --imatrix` of qforge's f16 file and `qforge convert
     --imatrix` (from the safetensors checkpoint, and from the f16 GGUF) must give the same
     tensors and the same metadata (quantize.imatrix.* keys included);
  3. --include-weights / --exclude-weights as llama-quantize;
  4. bad imatrix files are clear errors with nothing written: truncated, corrupt, an entry
     whose size does not match its tensor, NaN and negative values, another model's imatrix.
"""
import json
import os
import struct
import subprocess

TYPES = ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs", "iq4_nl", "q4_0"]
FIXTURES = ["tiny-llama-bpe", "tiny-qwen3moe"]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{os.path.basename(cmd[0])} exit {r.returncode}: {(r.stderr or r.stdout)[-600:]}")
    return r


def imatrix_checks(h, args, fix, tmp):
    tools = args.llama_tools
    if not tools:
        return
    qforge, only = args.qforge, args.only
    calib = os.path.join(tmp, "calibration.txt")
    gen = h.load_generator()
    with open(calib, "w", encoding="utf-8") as f:
        f.write("\n".join(gen.CORPUS * 4 + gen.rng_texts(5, 200)))
    for name in FIXTURES:
        model_dir = os.path.join(fix, name)
        label = "imatrix " + name.removeprefix("tiny-")
        work = os.path.join(tmp, "imatrix", name)
        os.makedirs(work, exist_ok=True)
        f16 = os.path.join(work, "f16.gguf")
        mats = {"gguf": os.path.join(work, "imatrix.gguf"), "dat": os.path.join(work, "imatrix.dat")}

        def make_imatrix():
            h.convert(qforge, model_dir, "f16", f16)
            for fmt, path in mats.items():
                run([os.path.join(tools, "llama-imatrix"), "-m", f16, "-f", calib, "-o", path,
                     "--output-format", fmt, "-c", "64", "-b", "64", "--no-ppl", "-t", "2"])
            return f"llama-imatrix wrote both formats ({os.path.getsize(mats['gguf'])} / {os.path.getsize(mats['dat'])} bytes)"

        if not h.check(f"{label}: llama-imatrix on qforge's f16", make_imatrix, only, prerequisite=True):
            continue
        for fmt, mat in mats.items():
            for ty in TYPES:
                def identical(ty=ty, fmt=fmt, mat=mat):
                    ref = os.path.join(work, f"{ty}-{fmt}-llama.gguf")
                    run([os.path.join(tools, "llama-quantize"), "--imatrix", mat, f16, ref, ty.upper(), "2"])
                    problems = []
                    for src, tag in ((model_dir, "safetensors"), (f16, "f16 GGUF")):
                        out = os.path.join(work, f"{ty}-{fmt}-{tag.split()[0]}.gguf")
                        h.convert(qforge, src, ty, out, "--imatrix", mat)
                        (kva, a), (kvb, b) = h.read_gguf(out), h.read_gguf(ref)
                        diff = [x[0] for x, y in zip(a, b) if x != y]
                        kvd = h.describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
                        if diff or len(a) != len(b) or kvd:
                            problems.append(f"from {tag}: tensors {diff[:3]} metadata {kvd[:3]}")
                    if problems:
                        raise AssertionError("; ".join(problems))
                    kv, tensors = h.read_gguf(ref)
                    keys = sorted(k for k in kv if k.startswith("quantize.imatrix."))
                    entries = kv.get("quantize.imatrix.entries_count", (None, 0))[1]
                    if not entries:
                        raise AssertionError(f"llama-quantize used no importance entries ({keys})")
                    # negative control: the matrix changes the bytes, so identity above is
                    # identity of the weighted quantizers, not of two runs that ignored it
                    plain = os.path.join(work, f"{ty}-{fmt}-plain.gguf")
                    h.convert(qforge, f16, ty, plain)
                    if h.read_gguf(plain)[1] == tensors:
                        raise AssertionError("the same bytes without --imatrix: the check cannot see the matrix")
                    return f"{len(tensors)} tensors and metadata identical from safetensors and from f16 ({keys}, {entries} entries; differs without the matrix)"

                h.check(f"{label}: {ty} --imatrix ({fmt}) equals llama-quantize --imatrix", identical, only)

        def filters():
            mat = mats["gguf"]
            out = []
            for flag, value in (("--exclude-weights", "ffn_down"), ("--include-weights", "attn_v")):
                ref = os.path.join(work, f"filter{flag}.llama.gguf")
                run([os.path.join(tools, "llama-quantize"), "--imatrix", mat, flag, value, f16, ref, "Q4_K_M", "2"])
                got = os.path.join(work, f"filter{flag}.gguf")
                h.convert(qforge, model_dir, "q4_k_m", got, "--imatrix", mat, flag, value)
                (kva, a), (kvb, b) = h.read_gguf(got), h.read_gguf(ref)
                kvd = h.describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
                if a != b or kvd:
                    raise AssertionError(f"{flag} {value}: tensors equal {a == b}, metadata {kvd[:3]}")
                out.append(f"{flag} {value} (entries {kvb['quantize.imatrix.entries_count'][1]})")
            return "identical with " + ", ".join(out)

        h.check(f"{label}: --include-weights / --exclude-weights equal llama-quantize's", filters, only)

        def bad_files():
            good = open(mats["dat"], "rb").read()
            n = struct.unpack("<i", good[4:8])[0]
            first_name = good[8:8 + n].decode()
            cases = {}
            cases["truncated"] = (good[: len(good) // 2], "imatrix")
            cases["corrupt"] = (b"\x00\x00\x00\x80" + good[4:], "no data")
            # the first entry's values: NaN, then negative
            vals_at = 8 + n + 8
            nan = bytearray(good)
            nan[vals_at:vals_at + 4] = struct.pack("<f", float("nan"))
            cases["NaN value"] = (bytes(nan), "non-finite")
            neg = bytearray(good)
            neg[vals_at:vals_at + 4] = struct.pack("<f", -1.0)
            cases["negative value"] = (bytes(neg), "negative")
            # an entry one value short (sizes recounted so the file stays well-formed)
            nval = struct.unpack("<i", good[8 + n + 4:8 + n + 8])[0]
            short = good[:8 + n + 4] + struct.pack("<i", nval - 1) + good[vals_at:vals_at + 4 * (nval - 1)] \
                + good[vals_at + 4 * nval:]
            cases["entry of the wrong size"] = (short, first_name)
            # another model: no entry names a tensor of this one
            other = struct.pack("<i", 1) + struct.pack("<i", 9) + b"blk.0.foo" + struct.pack("<ii", 1, 4) \
                + struct.pack("<4f", 1, 2, 3, 4)
            cases["another model's imatrix"] = (other, "another model")
            results = []
            for what, (data, needle) in cases.items():
                path = os.path.join(work, "bad.dat")
                with open(path, "wb") as f:
                    f.write(data)
                out = os.path.join(work, "bad-out.gguf")
                r = h.run_qforge(qforge, "convert", model_dir, "-t", "q4_k_m", "--imatrix", path, "-o", out)
                if r.returncode == 0 or os.path.exists(out):
                    raise AssertionError(f"{what}: exit {r.returncode}, output exists {os.path.exists(out)}")
                if needle not in r.stderr or "bad.dat" not in r.stderr:
                    raise AssertionError(f"{what}: message lacks '{needle}' or the file name: {r.stderr.strip()[-300:]}")
                results.append(what)
            return "refused, named, nothing written: " + ", ".join(results)

        if name == FIXTURES[0]:
            h.check(f"{label}: bad imatrix files are clear errors", bad_files, only)
