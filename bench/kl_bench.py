#!/usr/bin/env python3
"""Quality of each quantization type on the fixtures, as llama.cpp runs the files: the mean
KL divergence of the quantized model's next-token distribution from the F16 model's, and top-1
agreement, over held-out text — without and with an importance matrix computed by llama-imatrix
on separate calibration text.

    python3 bench/kl_bench.py [--llama-tools target/llama-tools] [--fixtures tiny-llama-bpe tiny-qwen2]

Needs llama-cpp-python and llama.cpp's tools (scripts/build_llama_tools.sh). Prints Markdown.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
import run as h  # noqa: E402  (the interop helpers: convert, llama_logits, load_generator)

TYPES = ["q2_k", "q3_k_m", "q4_k_m", "iq4_xs", "q5_k_m", "q6_k", "q8_0"]


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def kl(p_logits, q_logits):
    p, q = softmax(p_logits), softmax(q_logits)
    return float(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)), -1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qforge", default=os.path.join(ROOT, "target", "release", "qforge"))
    ap.add_argument("--llama-tools", default=os.path.join(ROOT, "target", "llama-tools"))
    ap.add_argument("--fixtures", nargs="+", default=["tiny-llama-bpe", "tiny-qwen2"])
    a = ap.parse_args()
    gen = h.load_generator()
    with tempfile.TemporaryDirectory() as tmp:
        calib = os.path.join(tmp, "calib.txt")
        with open(calib, "w", encoding="utf-8") as f:
            f.write("\n".join(gen.CORPUS * 4 + gen.rng_texts(5, 200)))
        held_out = " ".join(gen.rng_texts(777, 12))
        print("| fixture | type | bits/weight | KL, no imatrix | KL, imatrix | top-1, no imatrix | top-1, imatrix |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name in a.fixtures:
            d = os.path.join(ROOT, "fixtures", name)
            f16 = h.convert(a.qforge, d, "f16", os.path.join(tmp, f"{name}-f16.gguf"))
            mat = os.path.join(tmp, f"{name}.imatrix.gguf")
            subprocess.run([os.path.join(a.llama_tools, "llama-imatrix"), "-m", f16, "-f", calib, "-o", mat,
                            "-c", "64", "-b", "64", "--no-ppl", "-t", "2"], check=True, capture_output=True)
            tokens = h.llama(f16, vocab_only=True).tokenize(held_out.encode(), add_bos=True)[:120]
            ref = h.llama_logits(f16, tokens)
            for ty in TYPES:
                row = []
                for extra in ([], ["--imatrix", mat]):
                    out = h.convert(a.qforge, d, ty, os.path.join(tmp, f"{name}-{ty}-{len(extra)}.gguf"), *extra)
                    got = h.llama_logits(out, tokens)
                    h.release(out)
                    row.append((kl(ref, got), float(np.mean(got.argmax(-1) == ref.argmax(-1)))))
                kv, tensors = h.read_gguf(out)
                bits = 8.0 * sum(len(t[3]) for t in tensors) / sum(int(np.prod(t[2])) for t in tensors)
                print(f"| {name} | {ty} | {bits:.2f} | {row[0][0]:.4f} | {row[1][0]:.4f} | "
                      f"{row[0][1]:.2f} | {row[1][1]:.2f} |", flush=True)
            h.release(f16)


if __name__ == "__main__":
    main()
