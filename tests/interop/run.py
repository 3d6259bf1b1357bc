#!/usr/bin/env python3
"""Interop tests against real llama.cpp (llama-cpp-python) and the HF tokenizers.

For each bundled fixture (and the SentencePiece fixture without tokenizer.model) and each type:
  - `qforge convert` succeeds and llama.cpp loads the file;
  - llama.cpp tokenizes sample texts exactly as the HF tokenizer (or sentencepiece) does;
  - F16 logits equal a numpy reference forward pass of the safetensors weights;
  - quantized logits stay close to the F16 ones;
  - q8_0 / q4_0 / q4_k_m tensors are byte-identical to llama.cpp quantizing qforge's F16 file.
Plus the convert error paths, each with a clear message and no file left at the output path.

    python3 tests/interop/run.py --qforge target/release/qforge

Prints one line per check and ends with 'N passed, M failed'; exits 1 if anything failed.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "fixtures")

SAMPLE_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing spaces  ",
    "Numbers 12345 and 3.14159, dates 2026-11-24.",
    "café naïve résumé — “quotes”",
    "日本語 and 中文",
    "emoji 🙂🚀 done",
    "def f(x):\n    return x * 2\n",
    "It's they're we've I'M",
    "tabs\tand\nnewlines\n\n",
    "a",
    " ",
]
PROMPT = "The quick brown fox jumps over the lazy dog. It's 2026!"
FTYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "q4_k_s": 14, "q4_k_m": 15, "iq4_nl": 25}

RESULTS = []


def check(name, fn):
    try:
        detail = fn()
        RESULTS.append(True)
        print(f"PASS {name}" + (f": {detail}" if detail else ""), flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        RESULTS.append(False)
        print(f"FAIL {name}: {e}", flush=True)
        traceback.print_exc(limit=2)


# ----------------------------------------------------------------------------------------------
# reference model


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "F32":
            v = np.frombuffer(raw, "<f4")
        elif e["dtype"] == "F16":
            v = np.frombuffer(raw, "<f2").astype(np.float32)
        elif e["dtype"] == "BF16":
            v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(e["dtype"])
        out[name] = v.reshape(e["shape"]).astype(np.float64)
    return out


def load_model(model_dir):
    weights = {}
    for fn in sorted(os.listdir(model_dir)):
        if fn.endswith(".safetensors"):
            weights.update(load_safetensors(os.path.join(model_dir, fn)))
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    return weights, cfg


def forward(weights, cfg, tokens, f16_weights):
    """HF Llama semantics in float64: RMSNorm, rotate-half RoPE, GQA, SiLU MLP."""
    W = {}
    for k, v in weights.items():
        # what an F16 GGUF holds: 2-D weights rounded to f16, 1-D tensors exact (F32)
        W[k] = v.astype(np.float16).astype(np.float64) if (f16_weights and v.ndim == 2) else v
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", h // nh)
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    n = len(tokens)

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(n), inv)
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)

    def rope(x):  # x: [heads, n, hd]
        rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)
        return x * cos + rot * sin

    x = W["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(x, W[p + "input_layernorm.weight"])
        q = (a @ W[p + "self_attn.q_proj.weight"].T).reshape(n, nh, hd).transpose(1, 0, 2)
        k = (a @ W[p + "self_attn.k_proj.weight"].T).reshape(n, nkv, hd).transpose(1, 0, 2)
        v = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k = np.repeat(k, nh // nkv, axis=0)
        v = np.repeat(v, nh // nkv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = s + np.triu(np.full((n, n), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        m = rms(x, W[p + "post_attention_layernorm.weight"])
        g = m @ W[p + "mlp.gate_proj.weight"].T
        u = m @ W[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"])
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T


# ----------------------------------------------------------------------------------------------
# helpers


def run_qforge(qforge, *args):
    return subprocess.run([qforge, *args], capture_output=True, text=True)


def convert(qforge, model, ty, out):
    r = run_qforge(qforge, "convert", model, "-t", ty, "-o", out, "--quiet")
    if r.returncode != 0:
        raise RuntimeError(f"convert {ty} failed: {r.stderr.strip()}")
    return out


def llama_logits(path, tokens):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, seed=1)
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float64), llm


def hf_ids(model_dir, text):
    if os.path.exists(os.path.join(model_dir, "tokenizer.model")):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
        return [sp.bos_id()] + sp.encode(text)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")).encode(text).ids


def gguf_tensors(path):
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {t.name: (int(t.tensor_type), [int(d) for d in t.shape], bytes(t.data.tobytes())) for t in r.tensors}


# ----------------------------------------------------------------------------------------------
# checks


def model_checks(qforge, name, model_dir, tmp):
    weights, cfg = load_model(model_dir)
    files = {}
    for ty in ["f16", "q8_0", "q4_0", "q4_1", "q4_k_s", "q4_k_m", "iq4_nl", "nf4"]:
        out = os.path.join(tmp, f"{name}-{ty}.gguf")
        check(f"{name}: convert to {ty}", lambda ty=ty, out=out: convert(qforge, model_dir, ty, out) and None)
        files[ty] = out

    import llama_cpp

    def tokenize():
        llm = llama_cpp.Llama(model_path=files["f16"], n_ctx=64, vocab_only=True, verbose=False)
        bad = []
        for text in SAMPLE_TEXTS:
            got = llm.tokenize(text.encode(), add_bos=True, special=False)
            want = hf_ids(model_dir, text)
            if got != want:
                bad.append((text, got, want))
        if bad:
            raise AssertionError(f"{len(bad)} texts differ, first: {bad[0]}")
        return f"{len(SAMPLE_TEXTS)} texts identical"

    check(f"{name}: llama.cpp tokenizes like the HF tokenizer", tokenize)

    tokens = hf_ids(model_dir, PROMPT)
    state = {}

    def f16_logits():
        got, _ = llama_logits(files["f16"], tokens)
        want = forward(weights, cfg, tokens, f16_weights=True)
        state["f16"] = got
        scale = np.abs(want).max()
        err = np.abs(got - want).max() / scale
        # llama.cpp multiplies f16 weights with activations rounded to f16: ~1e-3 relative.
        if not err < 5e-3:
            raise AssertionError(f"max |llama.cpp - reference| / max|reference| = {err:.2e}")
        agree = (got.argmax(-1) == want.argmax(-1)).mean()
        if agree < 1.0:
            raise AssertionError(f"top-1 agreement {agree:.3f}")
        return f"max rel err {err:.1e} over {len(tokens)} positions, top-1 identical"

    check(f"{name}: F16 logits equal the numpy reference", f16_logits)

    for ty in ["q8_0", "q4_0", "q4_1", "q4_k_s", "q4_k_m", "iq4_nl"]:
        def quant_logits(ty=ty):
            if "f16" not in state:
                raise AssertionError("no F16 logits")
            got, _ = llama_logits(files[ty], tokens)
            ref = state["f16"]
            cos = np.sum(got * ref, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
            # The fixtures are random (structureless) weights, the hardest case for 4-bit codes:
            # 4-bit types keep cosine ~0.9-0.97 here, Q8_0 > 0.999.
            limit = 0.999 if ty == "q8_0" else 0.85
            if cos.min() < limit:
                raise AssertionError(f"min cosine similarity to F16 {cos.min():.4f} < {limit}")
            return f"min cosine to F16 logits {cos.min():.5f}"

        check(f"{name}: {ty} logits close to F16", quant_logits)

        def identical(ty=ty):
            ref = os.path.join(tmp, f"{name}-{ty}-llama.gguf")
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype = FTYPES[ty]
            p.nthread = 2
            rc = llama_cpp.llama_model_quantize(files["f16"].encode(), ref.encode(), p)
            if rc != 0:
                raise AssertionError(f"llama_model_quantize returned {rc}")
            a, b = gguf_tensors(files[ty]), gguf_tensors(ref)
            if set(a) != set(b):
                raise AssertionError(f"tensor sets differ: {sorted(set(a) ^ set(b))}")
            diff = [n for n in a if a[n] != b[n]]
            if diff:
                n = diff[0]
                raise AssertionError(
                    f"{len(diff)} of {len(a)} tensors differ, e.g. {n}: qforge type {a[n][0]} vs llama.cpp {b[n][0]}")
            return f"{len(a)} tensors byte-identical to llama.cpp's {ty}"

        check(f"{name}: {ty} bytes equal llama-quantize of qforge's f16", identical)

    # llama-quantize's own overrides, reproduced by qforge's flags
    for label, qargs, params in [
        ("--pure q4_k_m", ["--pure"], {"pure": True}),
        ("q4_k_m --output-tensor-type q8_0 --token-embedding-type q8_0",
         ["--output-tensor-type", "q8_0", "--token-embedding-type", "q8_0"],
         {"output_tensor_type": 8, "token_embedding_type": 8}),
    ]:
        def overrides(qargs=qargs, params=params, label=label):
            out = os.path.join(tmp, f"{name}-{label.replace(' ', '_')}.gguf")
            r = run_qforge(qforge, "convert", model_dir, "-t", "q4_k_m", "-o", out, "--quiet", *qargs)
            if r.returncode != 0:
                raise AssertionError(r.stderr)
            ref = out + ".llama.gguf"
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype = FTYPES["q4_k_m"]
            p.nthread = 2
            for k, v in params.items():
                setattr(p, k, v)
            if llama_cpp.llama_model_quantize(files["f16"].encode(), ref.encode(), p) != 0:
                raise AssertionError("llama_model_quantize failed")
            a, b = gguf_tensors(out), gguf_tensors(ref)
            diff = [n for n in a if a[n] != b.get(n)]
            if diff or set(a) != set(b):
                raise AssertionError(f"tensors differ: {diff[:3]}")
            return f"{len(a)} tensors byte-identical"

        check(f"{name}: {label} equals llama-quantize with the same options", overrides)

    def requantize_gguf():
        # qforge re-typing its own f16 GGUF gives the same tensors as converting from safetensors
        out = os.path.join(tmp, f"{name}-f16-to-q4_k_m.gguf")
        convert(qforge, files["f16"], "q4_k_m", out)
        a, b = gguf_tensors(out), gguf_tensors(files["q4_k_m"])
        diff = [n for n in a if a[n] != b.get(n)]
        if diff or set(a) != set(b):
            raise AssertionError(f"tensors differ: {diff[:3]}")
        return f"{len(a)} tensors identical"

    check(f"{name}: f16 GGUF -> q4_k_m equals safetensors -> q4_k_m", requantize_gguf)

    def nf4_round_trip():
        r = run_qforge(qforge, "inspect", files["nf4"])
        if r.returncode != 0 or "llama.cpp cannot load it" not in r.stdout:
            raise AssertionError(f"inspect does not flag the NF4 file: {r.stdout[-300:]}")
        back = os.path.join(tmp, f"{name}-nf4-to-f16.gguf")
        convert(qforge, files["nf4"], "f16", back)
        got, _ = llama_logits(back, tokens)
        ref = state["f16"]
        cos = np.sum(got * ref, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
        if cos.min() < 0.85:
            raise AssertionError(f"NF4 -> f16 logits cosine {cos.min():.4f}")
        return f"loads in llama.cpp after -t f16; min cosine to F16 logits {cos.min():.5f}"

    check(f"{name}: nf4 file is flagged, and loads in llama.cpp after convert -t f16", nf4_round_trip)


def error_checks(qforge, tmp):
    spm_dir = os.path.join(FIX, "tiny-llama-spm")

    def case(label, mutate, needles):
        def run():
            d = os.path.join(tmp, "err-" + label.replace(" ", "-"))
            shutil.copytree(spm_dir, d)
            out_dir = os.path.join(tmp, "out-" + label.replace(" ", "-"))
            os.makedirs(out_dir)
            out = mutate(d, out_dir) or os.path.join(out_dir, "x.gguf")
            r = run_qforge(qforge, "convert", d, "-t", "q8_0", "-o", out)
            if r.returncode == 0:
                raise AssertionError("convert succeeded")
            for n in needles:
                if n not in r.stderr:
                    raise AssertionError(f"message lacks {n!r}: {r.stderr.strip()}")
            if os.path.exists(out):
                raise AssertionError("output file left behind")
            if os.path.isdir(os.path.dirname(out)) and os.listdir(os.path.dirname(out)):
                raise AssertionError(f"files left: {os.listdir(os.path.dirname(out))}")
            return r.stderr.strip().splitlines()[-1]

        check(f"error path: {label}", run)

    def missing_shard(d, _):
        os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))

    def truncated(d, _):
        p = os.path.join(d, "model-00001-of-00002.safetensors")
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) - 1000)

    def missing_from_index(d, _):
        p = os.path.join(d, "model.safetensors.index.json")
        with open(p) as f:
            idx = json.load(f)
        idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors"
        with open(p, "w") as f:
            json.dump(idx, f)

    def unsupported(d, _):
        p = os.path.join(d, "config.json")
        with open(p) as f:
            c = json.load(f)
        c["architectures"] = ["GPTNeoXForCausalLM"]
        with open(p, "w") as f:
            json.dump(c, f)

    def nan_weight(d, _):
        p = os.path.join(d, "model-00002-of-00002.safetensors")
        with open(p, "r+b") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            name = sorted(k for k in header if k.endswith("mlp.up_proj.weight"))[0]
            f.seek(8 + n + header[name]["data_offsets"][0] + 2 * 10)
            f.write(b"\xc0\x7f")  # bf16 NaN at element 10
        return None

    def unwritable(d, out_dir):
        return os.path.join(out_dir, "missing-dir", "x.gguf")

    case("missing shard", missing_shard, ["model-00002-of-00002.safetensors", "missing shard"])
    case("truncated safetensors", truncated, ["model-00001-of-00002.safetensors", "truncated"])
    case("tensor missing from the shards", missing_from_index, ["model.layers.9.mlp.up_proj.weight"])
    case("unsupported architecture", unsupported, ["unsupported architecture GPTNeoXForCausalLM"])
    case("NaN in a weight", nan_weight, ["ffn_up.weight", "element 10", "NaN"])
    case("unwritable output location", unwritable, ["missing-dir"])

    def disk_full():
        # A file-size limit makes writes fail with EFBIG partway through, as a full disk does
        # with ENOSPC: the error must be reported and the temporary file removed.
        import resource
        import signal

        out_dir = os.path.join(tmp, "out-full")
        os.makedirs(out_dir)
        out = os.path.join(out_dir, "x.gguf")

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

        r = subprocess.run([qforge, "convert", spm_dir, "-t", "f16", "-o", out], capture_output=True, text=True,
                           preexec_fn=limit)
        if r.returncode == 0:
            raise AssertionError("convert succeeded past the size limit")
        if "x.gguf" not in r.stderr or "too large" not in r.stderr.lower():
            raise AssertionError(f"unclear message: {r.stderr.strip()}")
        if os.listdir(out_dir):
            raise AssertionError(f"files left: {os.listdir(out_dir)}")
        return r.stderr.strip().splitlines()[-1]

    check("error path: output location full (write fails midway)", disk_full)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qforge", default=os.path.join(ROOT, "target", "release", "qforge"))
    args = ap.parse_args()
    qforge = os.path.abspath(args.qforge)
    with tempfile.TemporaryDirectory() as tmp:
        model_checks(qforge, "bpe", os.path.join(FIX, "tiny-llama-bpe"), tmp)
        model_checks(qforge, "spm", os.path.join(FIX, "tiny-llama-spm"), tmp)
        json_only = os.path.join(tmp, "tiny-llama-spm-json")
        shutil.copytree(os.path.join(FIX, "tiny-llama-spm"), json_only)
        os.remove(os.path.join(json_only, "tokenizer.model"))
        model_checks(qforge, "spm-json-only", json_only, tmp)
        error_checks(qforge, tmp)
    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
