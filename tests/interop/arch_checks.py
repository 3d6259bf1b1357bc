"""Interop checks for the architecture fixtures (fixtures/golden-arch/*: Qwen2, Qwen3, ...),
called from run.py with its helpers module. Per fixture:

  convert      f16 / q8_0 / q4_0 / q4_k_s / q4_k_m convert (exit 0, file present, no temp file)
  converter    the f16 file's metadata (keys, GGUF types, values; not the general.* naming keys)
               and tensors (names, types, dims, bytes) equal what llama.cpp's own
               convert_hf_to_gguf.py wrote for the checkpoint (golden-arch/<f>/converter.json)
  tokenize     llama.cpp's ids == the `tokenizers` library's ids on sample and random texts
               (texts that the tokenizer's NFC normalizer would change are left out: llama.cpp does
               not normalize), control tokens parsed like tokenizers with special=True
  f16 logits   llama.cpp's logits == HF transformers' logits of the checkpoint (golden-arch/<f>/
               hf_logits.npy, made by scripts/gen_arch_golden.py): max |diff| / max |ref| < F16_TOL,
               top-1 identical at positions with a clear winner; negative control: the same
               checkpoint with layer 0's o_proj negated must miss by more than 10x the tolerance
  identity     llama_model_quantize of qforge's f16 file gives exactly qforge's q file (tensors,
               metadata but qforge.*), for every quantized type
  quant logits the q files load and their logits stay close to F16's (cosine thresholds)
"""
import json
import os
import shutil
import unicodedata

import numpy as np

ARCH_TYPES = ["f16", "q8_0", "q4_0", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m",
              "q6_k", "iq4_xs"]
# Sanity bounds only (byte identity with llama-quantize is the exactness check): the tiny random
# models are sensitive (logit scales 12-24, rows of 192-256 so K-quants often fall back to q5_0).
# Measured minima over the fixtures: q8_0 0.9979, q4_0 0.748, q4_k_s 0.936, q4_k_m 0.869 (phi3).
MIN_COSINE = {"q8_0": 0.995, "q4_0": 0.70, "q2_k": 0.30, "q3_k_s": 0.50, "q3_k_m": 0.50, "q3_k_l": 0.50,
              "q4_k_s": 0.85, "q4_k_m": 0.85, "q5_k_s": 0.90, "q5_k_m": 0.90,
              "q6_k": 0.97, "iq4_xs": 0.70}
# Mixture-of-experts fixtures route each token to 2 of 4-8 experts: quantization noise flips
# routing decisions, which moves whole positions (measured minima: q8_0 0.9148, q4_0 0.5126,
# q4_k_s 0.7741, q4_k_m 0.7776 for Mixtral).
MIN_COSINE_MOE = {"q8_0": 0.90, "q4_0": 0.40, "q2_k": 0.10, "q3_k_s": 0.20, "q3_k_m": 0.20, "q3_k_l": 0.20,
                  "q4_k_s": 0.60, "q4_k_m": 0.60, "q5_k_s": 0.70, "q5_k_m": 0.70,
                  "q6_k": 0.85, "iq4_xs": 0.40}


def special_texts(tok, byte_level):
    """Texts made of the tokenizer's own control tokens and plain text. For SentencePiece-style
    tokenizers the control tokens come last: HF's tokenizer.json puts a "▁" before the text that
    follows a control token, sentencepiece and llama.cpp do not (a known HF difference)."""
    sp = [t.content for t in tok.get_added_tokens_decoder().values() if t.special and len(t.content) > 3][-3:]
    a, b, c = (sp * 3)[:3]
    if not byte_level:
        return [f"Hello world{a}", f"text more{b}{c}", f"x{a}{a}"]
    return [f"{a}user\nHello{b}\n{c}assistant\n", f"text{a}more", f"{b}{b}x", f" {c} spaced {a}"]


def negate_tensor(model_dir, name):
    """Flip the sign of one F16/BF16/F32 tensor of a safetensors checkpoint in place."""
    import struct

    for fn in sorted(os.listdir(model_dir)):
        if not fn.endswith(".safetensors"):
            continue
        path = os.path.join(model_dir, fn)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        if name not in header:
            continue
        e = header[name]
        a, b = e["data_offsets"]
        with open(path, "r+b") as f:
            f.seek(8 + n + a)
            raw = f.read(b - a)
            if e["dtype"] in ("F16", "BF16"):
                out = (np.frombuffer(raw, "<u2") ^ np.uint16(0x8000)).astype("<u2").tobytes()
            else:
                out = (np.frombuffer(raw, "<u4") ^ np.uint32(0x80000000)).astype("<u4").tobytes()
            f.seek(8 + n + a)
            f.write(out)
        return
    raise AssertionError(f"{name} not found in {model_dir}")


def golden_fixtures(fix):
    """Fixtures with HF logits (the Llama fixtures have converter goldens only: run.py's
    model_checks test them against a numpy forward pass)."""
    d = os.path.join(fix, "golden-arch")
    names = sorted(n for n in os.listdir(d) if os.path.exists(os.path.join(d, n, "hf_logits.npy")))
    assert len(names) == 11, f"fixtures/golden-arch: {len(names)} fixtures with HF logits, expected 11"
    return names


def arch_checks(h, args, name, fix, tmp):
    qforge, only = args.qforge, args.only
    model_dir = os.path.join(fix, name)
    gold_dir = os.path.join(fix, "golden-arch", name)
    label = name.removeprefix("tiny-")
    files = {}
    for ty in ARCH_TYPES:
        out = os.path.join(tmp, label, f"{ty}.gguf")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if h.check(f"{label}: convert -t {ty}", lambda ty=ty, out=out: h.convert(qforge, model_dir, ty, out) and None,
                   only, prerequisite=True):
            files[ty] = out
    if "f16" not in files:
        return

    def converter():
        with open(os.path.join(gold_dir, "converter.json"), encoding="utf-8") as f:
            gold = json.load(f)
        kv, tensors = h.read_gguf(files["f16"])
        naming = {"general.name", "general.size_label", "general.basename", "general.finetune"}
        want = {k: (t, v) for k, t, v in gold["kv"] if k not in naming}
        got = {k: v for k, v in kv.items() if k not in naming and not k.startswith("qforge.")}
        problems = h.describe_kv_diff(got, want)
        import hashlib

        gt = {t[0]: t[1:] for t in gold["tensors"]}
        mine = {n: [tid, shape, hashlib.sha256(data).hexdigest()] for n, tid, shape, data in tensors}
        if set(gt) != set(mine):
            problems.append(f"tensor sets differ: {sorted(set(gt) ^ set(mine))}")
        problems += [f"{n}: differs" for n in gt if n in mine and mine[n] != gt[n]]
        if problems:
            raise AssertionError(f"{len(problems)} differences: " + "; ".join(problems[:6]))
        return f"{len(want)} keys and {len(gt)} tensors identical to llama.cpp's convert_hf_to_gguf.py"

    h.check(f"{label}: f16 equals llama.cpp's converter output", converter, only)

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    plain = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    plain.encode_special_tokens = True
    gen = h.load_generator()

    def tokenize():
        llm = h.llama(files["f16"], vocab_only=True)
        texts = [t for t in h.SAMPLE_TEXTS + gen.rng_texts(4321, 300) if unicodedata.normalize("NFC", t) == t]
        bad = []
        for text in texts:
            got = llm.tokenize(text.encode(), add_bos=True, special=False)
            want = plain.encode(text).ids
            if got != want:
                bad.append((text, got, want))
        if bad:
            raise AssertionError(f"{len(bad)} of {len(texts)} texts differ, first: {bad[0]}")
        specials = []
        tj = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
        texts_special = special_texts(tok, "ByteLevel" in json.dumps(tj.get("pre_tokenizer")))
        for text in texts_special:
            got = llm.tokenize(text.encode(), add_bos=True, special=True)
            want = tok.encode(text).ids
            if got != want:
                specials.append((text, got, want))
        if specials:
            raise AssertionError(f"control-token texts differ: {specials}")
        return f"{len(texts)} texts and {len(texts_special)} control-token texts identical to tokenizers"

    h.check(f"{label}: llama.cpp tokenizes like tokenizers", tokenize, only)

    with open(os.path.join(gold_dir, "hf_tokens.json"), encoding="utf-8") as f:
        prompt = json.load(f)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg_keys = sorted(k for k in json.load(f) if k in ("num_experts", "num_local_experts"))
    tokens = prompt["ids"]
    want = np.load(os.path.join(gold_dir, "hf_logits.npy")).astype(np.float64)
    state = {}

    def f16_logits():
        llm = h.llama(files["f16"], vocab_only=True)
        ids = llm.tokenize(prompt["prompt"].encode(), add_bos=True, special=False)
        if ids != tokens:
            raise AssertionError(f"llama.cpp tokenizes the prompt as {ids}, transformers' run used {tokens}")
        got = h.llama_logits(files["f16"], tokens)
        state["f16"] = got
        scale = np.abs(want).max()
        err = np.abs(got - want).max() / scale
        top2 = np.sort(want, -1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 0.02 * scale
        if clear.sum() == 0:
            raise AssertionError("no position has a clear top-1 winner: the check would see nothing")
        agree = (got.argmax(-1) == want.argmax(-1))[clear].mean()
        # negative control: the same checkpoint with layer 0's attention output projection
        # negated (a weight the check must see, whatever norms follow it) has to miss by more
        # than 10x the tolerance
        ctl_dir = os.path.join(tmp, label, "o-proj-negated")
        shutil.copytree(model_dir, ctl_dir, dirs_exist_ok=True)
        negate_tensor(ctl_dir, "model.layers.0.self_attn.o_proj.weight")
        ctl_file = h.convert(qforge, ctl_dir, "f16", os.path.join(tmp, label, "o-proj-negated.gguf"))
        ctl = np.abs(h.llama_logits(ctl_file, tokens) - want).max() / scale
        h.release(ctl_file)
        if not err < h.F16_TOL:
            raise AssertionError(f"max |llama.cpp - transformers| / max |transformers| = {err:.2e} >= {h.F16_TOL}")
        if agree < 1.0:
            raise AssertionError(f"top-1 agreement {agree:.3f} at {clear.sum()} positions with a clear winner")
        if not ctl > 10 * h.F16_TOL:
            raise AssertionError(f"negative control (o_proj negated) is only {ctl:.2e} away: the check cannot see it")
        return (f"max rel err {err:.1e} vs transformers over {len(tokens)} positions (logit scale {scale:.1f}); "
                f"top-1 identical at {clear.sum()} clear positions; control o_proj negated: {ctl:.2f}")

    h.check(f"{label}: f16 logits equal HF transformers' logits", f16_logits, only)

    for ty in [t for t in ARCH_TYPES if t != "f16" and t in files]:
        def identical(ty=ty):
            ref = os.path.join(tmp, label, f"{ty}-llama-quantize.gguf")
            h.llama_quantize(files["f16"], ref, h.FILE_TYPE[ty])
            (kva, a), (kvb, b) = h.read_gguf(files[ty]), h.read_gguf(ref)
            diff = [x[0] for x, y in zip(a, b) if x != y]
            kvd = h.describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
            if diff or len(a) != len(b) or kvd:
                raise AssertionError(f"tensors differ: {diff[:4]} (counts {len(a)}/{len(b)}); metadata: {kvd[:4]}")
            return f"{len(a)} tensors (ggml types {sorted({t[1] for t in a})}) and metadata identical"

        h.check(f"{label}: {ty} equals llama-quantize of qforge's f16", identical, only)

        def quant_logits(ty=ty):
            got = h.llama_logits(files[ty], tokens)
            h.release(files[ty])
            cos = h.cosines(got, state.get("f16", want))
            bound = (MIN_COSINE_MOE if "expert" in json.dumps(cfg_keys) else MIN_COSINE)[ty]
            if cos.min() < bound:
                raise AssertionError(f"min cosine to F16 logits {cos.min():.4f} < {bound}")
            return f"loads; min cosine to F16 logits {cos.min():.4f} (mean {cos.mean():.4f})"

        h.check(f"{label}: {ty} logits", quant_logits, only)
    h.release(files["f16"])
