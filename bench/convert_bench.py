#!/usr/bin/env python3
"""Whole-command convert benchmark: wall time and peak RSS of `qforge convert` to each --types
entry, next to llama.cpp quantizing the same model's f16 GGUF through its library API
(llama-cpp-python's `llama_model_quantize`) and a plain copy of the source bytes, all in the
same run on the same thread count. Prints a Markdown table with ratios.

    python3 bench/convert_bench.py --gb 1.5 --threads 2 [--types q8_0 q4_k_m ...] [--repeats 5]

The synthetic checkpoint is made by scripts/make_synthetic_checkpoint.py (cached in --work).
This machine's page cache and fresh memory are noisy, so before every timed run the input is
re-read and ~2 GB are written and deleted in the output folder; the commands compared are
interleaved, and the best of --repeats runs is reported.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QFORGE = os.path.join(ROOT, "target", "release", "qforge")

LLAMA_QUANTIZE = r"""
import sys, llama_cpp
src, dst, ftype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = ftype
p.nthread = threads
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
sys.exit(rc)
"""
FTYPES = {"q8_0": 7, "q4_0": 2, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14,
          "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30}


def timed(cmd):
    with tempfile.NamedTemporaryFile("r") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name] + cmd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, rss_kb = t.read().split()
    return float(wall), int(rss_kb) / 1024.0


def settle(inp, out_dir, mb=2048):
    """Re-read the input and write-then-delete ~2 GB in the output folder, so neither the page
    cache nor fresh-memory backing favours whichever command runs next."""
    warm(inp)
    junk = os.path.join(out_dir, "settle.tmp")
    block = os.urandom(1 << 20)
    with open(junk, "wb") as f:
        for _ in range(mb):
            f.write(block)
    os.remove(junk)
    warm(inp)


def best(cmd, inp, out_dir, repeats):
    runs = []
    for _ in range(repeats):
        settle(inp, out_dir)
        runs.append(timed(cmd))
    return min(runs)


def warm(path):
    for root, _, files in os.walk(path) if os.path.isdir(path) else [("", None, [path])]:
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/qforge-bench")
    ap.add_argument("--keep", action="store_true", help="keep the output files")
    ap.add_argument("--types", nargs="+", default=["q8_0", "q4_k_m"], choices=sorted(FTYPES))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, f"synth-{args.gb}")
    if not os.path.isdir(model):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_synthetic_checkpoint.py"),
                        model, "--gb", str(args.gb)], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    out = os.path.join(args.work, "out")
    os.makedirs(out, exist_ok=True)
    src_bytes = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model))
    rows = []
    copy_dir = os.path.join(out, "copy")

    def copy_once():
        shutil.rmtree(copy_dir, ignore_errors=True)
        r = timed(["cp", "-r", model, copy_dir])
        shutil.rmtree(copy_dir)
        return r

    copies = []
    for _ in range(args.repeats):
        settle(model, out)
        copies.append(copy_once())
    rows.append(("plain copy of the source (cp -r)", *min(copies)))
    f16 = os.path.join(out, "f16.gguf")
    t = ["--threads", str(args.threads), "--quiet"]
    rows.append(("qforge convert -> f16", *best([QFORGE, "convert", model, "-t", "f16", "-o", f16] + t,
                                              model, out, args.repeats)))
    results = {}
    for ty in args.types:
        q = [QFORGE, "convert", model, "-t", ty, "-o", os.path.join(out, f"qforge-{ty}.gguf")] + t
        ll = [sys.executable, "-c", LLAMA_QUANTIZE, f16, os.path.join(out, f"llama-{ty}.gguf"),
              str(FTYPES[ty]), str(args.threads)]
        qs, ls = [], []
        for _ in range(args.repeats):  # interleaved
            settle(model, out)
            qs.append(timed(q))
            settle(f16, out)
            ls.append(timed(ll))
        rows.append((f"qforge convert -> {ty} (from safetensors)", *min(qs)))
        rows.append((f"llama.cpp llama_model_quantize f16 GGUF -> {ty}", *min(ls)))
        results[("qforge", ty)] = min(qs)[0]
        results[("llama", ty)] = min(ls)[0]
    copy_wall = rows[0][1]
    print(f"\nsource: {src_bytes / 1e9:.2f} GB f16 safetensors, {args.threads} threads, best of {args.repeats}\n")
    print("| run | wall s | x copy | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    for name, wall, rss in rows:
        print(f"| {name} | {wall:.2f} | {wall / copy_wall:.2f} | {rss:.0f} |")
    for ty in args.types:
        print(f"\n{ty}: qforge is {results[('llama', ty)] / results[('qforge', ty)]:.2f}x faster than llama.cpp's quantizer")
    if not args.keep:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
