#!/usr/bin/env python3
"""Write a synthetic Llama checkpoint of a chosen size for the convert benchmark.

Random f16 weights (std 0.02), written shard by shard so the generator itself needs little
memory. The tokenizer files are copied from the bundled tiny BPE fixture; config.json pads the
vocabulary to the embedding size, as real checkpoints often do.

    python3 scripts/make_synthetic_checkpoint.py OUT_DIR --gb 1.5
"""
import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_SRC = os.path.join(HERE, "..", "fixtures", "tiny-llama-bpe")


def layer_tensors(i, hidden, ff, rng):
    def w(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    p = f"model.layers.{i}."
    return {
        p + "input_layernorm.weight": np.ones(hidden, dtype=np.float16),
        p + "self_attn.q_proj.weight": w(hidden, hidden),
        p + "self_attn.k_proj.weight": w(hidden, hidden),
        p + "self_attn.v_proj.weight": w(hidden, hidden),
        p + "self_attn.o_proj.weight": w(hidden, hidden),
        p + "post_attention_layernorm.weight": np.ones(hidden, dtype=np.float16),
        p + "mlp.gate_proj.weight": w(ff, hidden),
        p + "mlp.up_proj.weight": w(ff, hidden),
        p + "mlp.down_proj.weight": w(hidden, ff),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gb", type=float, default=1.5, help="approximate size in GB (1e9 bytes)")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()
    h, ff, v = args.hidden, args.ff, args.vocab
    per_layer = 2 * (4 * h * h + 3 * h * ff)
    fixed = 2 * (2 * v * h)
    n_layer = max(1, round((args.gb * 1e9 - fixed) / per_layer))
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(0)
    weight_map = {}
    shard = 0
    head = {
        "model.embed_tokens.weight": (rng.standard_normal((v, h), dtype=np.float32) * 0.02).astype(np.float16),
        "lm_head.weight": (rng.standard_normal((v, h), dtype=np.float32) * 0.02).astype(np.float16),
        "model.norm.weight": np.ones(h, dtype=np.float16),
    }
    n_shards = 1 + n_layer
    for s in range(n_shards):
        tensors = head if s == 0 else layer_tensors(s - 1, h, ff, rng)
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file(tensors, os.path.join(args.out, name))
        for k in tensors:
            weight_map[k] = name
        del tensors
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": h,
        "intermediate_size": ff,
        "num_hidden_layers": n_layer,
        "num_attention_heads": h // 64,
        "num_key_value_heads": h // 64,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": v,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_SRC, fn), os.path.join(args.out, fn))
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in set(weight_map.values()))
    print(f"{args.out}: {n_layer} layers, {total / 1e9:.2f} GB of safetensors")


if __name__ == "__main__":
    main()
