#!/usr/bin/env python3
"""Golden data for the architecture fixtures, made once where torch is and committed, so that
CI (no torch) can compare qforge against two references:

  <fixture>/golden/converter.json   what llama.cpp's own converter (convert_hf_to_gguf.py of the
        llama.cpp that CI installs: the copy vendored in the pinned llama-cpp-python sdist) writes
        at --outtype f16: every metadata key with its GGUF type and value, in file order, and every
        tensor's name, ggml type, dims and SHA-256 of its bytes.
  <fixture>/golden/hf_logits.npy    HF transformers' logits (float64 forward of the checkpoint's
        weights, float32 saved) for golden/hf_tokens.json, the token ids of the interop prompt.

    python3 scripts/gen_arch_golden.py converter --llama-cpp DIR --out OUTDIR FIXTURE_DIR...
    python3 scripts/gen_arch_golden.py logits --out OUTDIR FIXTURE_DIR...

DIR is a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/) that is not part
of this repository. The converter refuses any BPE tokenizer whose hash it has not seen (all of
ours: they are trained here); for those the pre-tokenizer name llama.cpp uses for the regex
(`qwen2`, ...) is supplied, and everything else runs unchanged. The converter pins transformers
4.57.6: run `converter` with that version importable. Run `logits` with a transformers v5
release: 4.57 does not read the v5 config form (`rope_parameters`) and would compute the
logits of a different model (rope_theta 10000) for the fixtures written in that form.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

PROMPT = ("The quick brown fox jumps over the lazy dog. It's 2026! def f(x): return x * 2 "
          "— café, 日本語, 🙂. Numbers 12345 and 3.14159.")

# Pre-tokenizer names for tokenizers the converter's hash table does not know, by fixture.
PRE_FOR_UNKNOWN_HASH = {"tiny-qwen2": "qwen2", "tiny-qwen3": "qwen2", "tiny-qwen2moe": "qwen2", "tiny-qwen3moe": "qwen2",
                        "tiny-mixtral": "qwen2", "tiny-llama-bpe": "llama-bpe", "tiny-olmo2": "dbrx",
                        "tiny-smollm3": "smaug-bpe", "tiny-granite": "refact", "tiny-gemma3-vl": None}


def convert(llama_cpp, model_dir, outfile, pre):
    sys.path.insert(0, llama_cpp)
    sys.path.insert(1, os.path.join(llama_cpp, "gguf-py"))
    import convert_hf_to_gguf  # noqa: F401  (registers the model classes)
    from conversion import base

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            return pre

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f16", "--outfile", outfile]
    try:
        convert_hf_to_gguf.main()
    finally:
        sys.argv = argv
        base.TextModel.get_vocab_base_pre = original


def describe(path):
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(path)
    kv = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        types = [t.name for t in field.types]
        value = field.contents()
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            # exact f32 values survive JSON as the shortest repr of the double
            pass
        kv.append([name, types, value])
    tensors = []
    for t in r.tensors:
        data = bytes(np.asarray(t.data).tobytes())
        tensors.append([t.name, int(t.tensor_type), [int(x) for x in t.shape], hashlib.sha256(data).hexdigest()])
    return {"kv": kv, "tensors": tensors, "_value_types": [v.name for v in GGUFValueType]}


def hf_logits(model_dir):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    ids = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")).encode(PROMPT).ids
    # float64 where transformers allows it; its grouped expert matmul (MoE) takes float32 at most
    for dtype in (torch.float64, torch.float32):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        model.eval()
        try:
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].double().numpy()
            break
        except RuntimeError:
            if dtype == torch.float32:
                raise
    return ids, logits.astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["converter", "logits"])
    ap.add_argument("--llama-cpp")
    ap.add_argument("--out", required=True)
    ap.add_argument("fixtures", nargs="+")
    a = ap.parse_args()
    import transformers

    print("transformers", transformers.__version__, flush=True)
    for model_dir in a.fixtures:
        name = os.path.basename(os.path.normpath(model_dir))
        out = os.path.join(a.out, name)
        os.makedirs(out, exist_ok=True)
        if a.what == "converter":
            gguf_path = os.path.join("/tmp", name + "-f16.gguf")
            convert(os.path.abspath(a.llama_cpp), model_dir, gguf_path, PRE_FOR_UNKNOWN_HASH.get(name))
            doc = describe(gguf_path)
            doc["_made_by"] = {"converter": "convert_hf_to_gguf.py --outtype f16",
                               "transformers": transformers.__version__}
            with open(os.path.join(out, "converter.json"), "w") as f:
                json.dump(doc, f, ensure_ascii=False, indent=0)
            print(f"{name}: {len(doc['kv'])} keys, {len(doc['tensors'])} tensors", flush=True)
        else:
            ids, logits = hf_logits(model_dir)
            with open(os.path.join(out, "hf_tokens.json"), "w") as f:
                json.dump({"prompt": PROMPT, "ids": ids, "transformers": transformers.__version__}, f,
                          ensure_ascii=False)
            np.save(os.path.join(out, "hf_logits.npy"), logits)
            print(f"{name}: logits {logits.shape}", flush=True)


if __name__ == "__main__":
    main()
