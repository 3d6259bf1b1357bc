#!/usr/bin/env python3
"""Peak RSS of converting a mixture-of-experts checkpoint as the expert count grows.

Synthetic Qwen3-MoE checkpoints (random f16, 4 layers, hidden 1024, moe_intermediate_size 512,
one shard per layer, the tiny Qwen tokenizer) with 8, 32 and 64 experts are converted to f16
(the stacking copy path) and q8_0; the expert tensors of a layer are stacked into one 3-D
tensor, streamed expert by expert, so peak RSS must not grow with the expert count.

    python3 bench/moe_rss.py [--experts 8 32 64] [--threads 2]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QFORGE = os.path.join(ROOT, "target", "release", "qforge")
TOKENIZER = os.path.join(ROOT, "fixtures", "tiny-qwen3moe")


def make(out, n_exp, hidden=1024, ff=512, layers=4, heads=8, kv=4, hd=128):
    os.makedirs(out, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER, f), out)
    vocab = json.load(open(os.path.join(TOKENIZER, "config.json")))["vocab_size"]
    rng = np.random.default_rng(1)

    def w(r, c):
        return (rng.standard_normal((r, c), dtype=np.float32) * 0.02).astype(np.float16)

    weight_map = {}
    for i in range(layers + 1):
        t = {}
        if i == layers:
            t["model.embed_tokens.weight"] = w(vocab, hidden)
            t["lm_head.weight"] = w(vocab, hidden)
            t["model.norm.weight"] = np.ones(hidden, np.float16)
        else:
            p = f"model.layers.{i}."
            t[p + "input_layernorm.weight"] = np.ones(hidden, np.float16)
            t[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float16)
            t[p + "self_attn.q_proj.weight"] = w(heads * hd, hidden)
            t[p + "self_attn.k_proj.weight"] = w(kv * hd, hidden)
            t[p + "self_attn.v_proj.weight"] = w(kv * hd, hidden)
            t[p + "self_attn.o_proj.weight"] = w(hidden, heads * hd)
            t[p + "self_attn.q_norm.weight"] = np.ones(hd, np.float16)
            t[p + "self_attn.k_norm.weight"] = np.ones(hd, np.float16)
            t[p + "mlp.gate.weight"] = w(n_exp, hidden)
            for x in range(n_exp):
                e = f"{p}mlp.experts.{x}."
                t[e + "gate_proj.weight"] = w(ff, hidden)
                t[e + "up_proj.weight"] = w(ff, hidden)
                t[e + "down_proj.weight"] = w(hidden, ff)
        fn = f"model-{i + 1:05d}-of-{layers + 1:05d}.safetensors"
        save_file(t, os.path.join(out, fn), metadata={"format": "pt"})
        weight_map.update({k: fn for k in t})
    json.dump({"weight_map": weight_map}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
    json.dump({
        "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": hidden, "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "moe_intermediate_size": ff, "num_experts": n_exp, "num_experts_per_tok": 2, "rms_norm_eps": 1e-6,
        "rope_theta": 1e6, "max_position_embeddings": 4096, "tie_word_embeddings": False, "vocab_size": vocab,
        "torch_dtype": "float16",
    }, open(os.path.join(out, "config.json"), "w"))


def timed(cmd):
    with tempfile.NamedTemporaryFile("r") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name] + cmd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, rss_kb = t.read().split()
    return float(wall), int(rss_kb) / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/qforge-moe-bench")
    args = ap.parse_args()
    rows = []
    for x in args.experts:
        model = os.path.join(args.work, f"moe-{x}")
        if not os.path.isdir(model):
            make(model, x)
        size = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model))
        for ty in ("f16", "q8_0"):
            out = os.path.join(args.work, f"out-{x}-{ty}.gguf")
            best = None
            for _ in range(3):
                r = timed([QFORGE, "convert", model, "-t", ty, "-o", out, "--quiet", "--threads", str(args.threads)])
                best = r if best is None or r[0] < best[0] else best
                os.remove(out)
            rows.append((x, size / 1e9, ty, best[0], best[1]))
            print(f"experts {x:3d}  source {size / 1e9:5.2f} GB  -t {ty:5s}  best wall {best[0]:6.2f} s  "
                  f"peak RSS {best[1]:6.1f} MiB", flush=True)
    print("\n| experts | source GB | type | wall s (best of 3) | peak RSS MiB |\n|---:|---:|---|---:|---:|")
    for x, gb, ty, wall, rss in rows:
        print(f"| {x} | {gb:.2f} | {ty} | {wall:.2f} | {rss:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
