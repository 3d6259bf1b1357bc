#!/usr/bin/env python3
"""Interop tests of `qforge convert` against real llama.cpp (llama-cpp-python), the HF tokenizers
and an independent numpy model.

    python3 tests/interop/run.py --qforge target/release/qforge [--only SUBSTRING] [--keep DIR]

Fixtures (fixtures/tiny-llama-*, made by scripts/make_tiny_models.py) and variants built from them
in a temporary directory:
  bpe                 byte-level BPE (Llama-3 style), F16 source, one file, untied, MHA
  bpe-string-merges   the same with tokenizer.json merges in the older "left right" string form
  spm                 SentencePiece tokenizer.model, BF16 source, two shards, tied, GQA 4/2
  spm-json-only       the same without tokenizer.model (tokenizer.json as transformers v5 writes it:
                      Metaspace pre-tokenizer)
  spm-json-legacy     without tokenizer.model, tokenizer.json in the legacy form (Prepend/Replace
                      normalizer, no pre-tokenizer) that Llama-2 repositories ship

Checks, per variant and output type (each prints PASS/FAIL with measured values):
  convert      exit status 0, the file exists, no temporary file left next to it
  metadata     every llama.* / general.* / tokenizer.* key llama.cpp needs, with its exact GGUF
               type and the value derived here from config.json / tokenizer files; the tensor
               table (GGUF names, shapes, types); for f16 the tensor bytes equal numpy's RNE
               float16 conversion of the (Q/K-permuted) source
  tokenize     llama.cpp's ids == sentencepiece's (tokenizer.model) or tokenizers' (tokenizer.json)
               ids, BOS as configured, on sample, special-token and random texts; llama.cpp
               detokenizes its ids back to the text
  f16 logits   llama.cpp's logits == numpy HF-Llama forward pass of the source weights (rounded to
               f16 as the file stores them): max |diff| / max |ref| < 5e-3, top-1 identical where
               the reference's top-2 margin exceeds 2% of the logit scale. Negative controls prove
               the check can fail: the same reference without the Q/K row permutation, and with
               rope_theta x 10, must both miss by more than 10x the tolerance.
  quant logits llama.cpp's logits of the q file == numpy forward of the q file's own dequantized
               weights (max rel diff < 5e-2: llama.cpp rounds activations to 8 bits for quantized
               matmuls), and stay close to the F16 logits (cosine thresholds per type, below)
  identity     q8_0 / q4_0 / q4_1 / q4_k_s / q4_k_m / iq4_nl: llama.cpp's llama_model_quantize of
               qforge's own f16 file gives the same tensors (names, order, types, shapes, bytes)
               and the same metadata (all keys, types, values, incl. general.file_type) except
               qforge.* keys, which llama-quantize copies unchanged from the f16 file
  errors       missing shard, truncated shard, tensors missing from / absent in the index,
               missing required tensor, unsupported architecture, NaN / Inf weight, config that
               contradicts the weights, unwritable output locations (nonexistent dir, parent is a
               file, read-only dir), write failing midway, unknown type: non-zero exit, a message
               naming the file/tensor, no file at the output path, a pre-existing output kept.

Architecture fixtures (fixtures/tiny-qwen2, tiny-qwen3, ...: every fixture with golden data in
fixtures/golden-arch) are checked by arch_checks.py against llama.cpp's own converter output and
HF transformers' logits; see that file.

Prints one line per check and ends with exactly 'N passed, M failed'; exits 1 if anything failed.
"""
import argparse
import importlib.util
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
    " one leading space",
    "Numbers 12345 and 3.14159, dates 2026-11-24, 1234567890.",
    "café naïve résumé — “quotes”",
    "日本語 and 中文",
    "emoji 🙂🚀 done 👍🏽",
    "def f(x):\n    return x * 2\n",
    "It's they're we've I'M YOU'LL",
    "tabs\tand\nnewlines\n\n\nend",
    "a",
    " ",
    "   ",
    "\n",
    "x  y   z    w",
    "<s> </s> <|eot_id|> written as plain text",
    "",
]
# (text, tokens parsed as special) for llama.cpp's special=True path, per tokenizer family
SPECIAL_TEXTS = {
    "bpe": ["<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>",
            "Hi<|end_of_text|>", "<|begin_of_text|>already has a BOS"],
    "spm": ["Hello world</s>", "</s>"],
}
PROMPT = ("The quick brown fox jumps over the lazy dog. It's 2026! def f(x): return x * 2 "
          "café 🙂 Numbers 12345 and 3.14159.")
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12,
             "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
             "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30,
             "bf16": 32}
QUANT_TYPES = ["q8_0", "q4_0", "q4_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m",
               "q6_k", "iq4_nl", "iq4_xs"]
# Minimum per-position cosine similarity of quantized vs F16 logits. The fixtures' weights are
# random Gaussians (no redundancy to absorb rounding), so 4-bit codes keep ~0.93-0.98 here;
# 2-3 bit codes much less (measured minima: q2_k 0.51, q3_k_s 0.80 on the SentencePiece
# fixture). Exactness is the byte identity with llama-quantize and the self-consistency check.
MIN_COSINE = {"q8_0": 0.999, "q4_0": 0.90, "q4_1": 0.90, "q2_k": 0.30, "q3_k_s": 0.60, "q3_k_m": 0.60,
              "q3_k_l": 0.60, "q4_k_s": 0.93, "q4_k_m": 0.93, "q5_k_s": 0.95,
              "q5_k_m": 0.95, "q6_k": 0.99, "iq4_nl": 0.90, "iq4_xs": 0.90}
F16_TOL = 5e-3
QUANT_SELF_TOL = 5e-2

RESULTS = []


def check(name, fn, only=None, prerequisite=False):
    """Run one check; --only skips checks whose name lacks every given substring, except
    prerequisites (conversions other checks read)."""
    if only and not prerequisite and not any(o in name for o in only):
        return None
    try:
        detail = fn()
        RESULTS.append(True)
        print(f"PASS {name}" + (f": {detail}" if detail else ""), flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        RESULTS.append(False)
        print(f"FAIL {name}: {e}", flush=True)
        traceback.print_exc(limit=3)
        return False


def load_generator():
    path = os.path.join(ROOT, "scripts", "make_tiny_models.py")
    spec = importlib.util.spec_from_file_location("make_tiny_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------
# the source checkpoint, read independently of qforge


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
        out[name] = v.reshape(e["shape"])
    return out


class Model:
    def __init__(self, model_dir):
        self.dir = model_dir
        self.weights = {}
        for fn in sorted(os.listdir(model_dir)):
            if fn.startswith("model") and fn.endswith(".safetensors"):
                self.weights.update(load_safetensors(os.path.join(model_dir, fn)))
        self.cfg = self._json("config.json")
        self.tcfg = self._json("tokenizer_config.json")
        self.tj = self._json("tokenizer.json")
        c = self.cfg
        self.n_head = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads", self.n_head)
        self.head_dim = c.get("head_dim", c["hidden_size"] // self.n_head)
        self.theta = c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        self.spm = os.path.exists(os.path.join(model_dir, "tokenizer.model"))
        self.byte_level = self.tj["model"]["type"] == "BPE" and not self.tj["model"].get("byte_fallback")
        self.metaspace = json.dumps(self.tj.get("pre_tokenizer")).find("Metaspace") >= 0

    def _json(self, name):
        with open(os.path.join(self.dir, name), encoding="utf-8") as f:
            return json.load(f)

    # -- tokenizer reference ---------------------------------------------------------------
    def hf_tokenizer(self, parse_special=True):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(self.dir, "tokenizer.json"))
        # encode_special_tokens: control-token text is ordinary text, as llama.cpp's special=False
        tok.encode_special_tokens = not parse_special
        return tok

    def reference_ids(self, text):
        """Ids the source tokenizer gives, BOS as configured (tokenizer_config add_bos_token)."""
        if self.spm:
            import sentencepiece as spm

            if not hasattr(self, "_sp"):
                self._sp = spm.SentencePieceProcessor(model_file=os.path.join(self.dir, "tokenizer.model"))
            bos = [self._sp.bos_id()] if self.tcfg.get("add_bos_token", True) else []
            return bos + self._sp.encode(text)
        if not hasattr(self, "_hf_plain"):
            self._hf_plain = self.hf_tokenizer(parse_special=False)
        return self._hf_plain.encode(text).ids

    def comparable(self, text):
        # A Metaspace pre-tokenizer prepends "▁" only when the text does not start with a space;
        # llama.cpp (like SentencePiece) always prepends one, so such texts cannot agree.
        return not (self.metaspace and not self.spm and text[:1] == " ")

    def special_id(self, key):
        v = self.tcfg.get(f"{key}_token")
        if isinstance(v, dict):
            v = v.get("content")
        if v is not None:
            for t in self.tj["added_tokens"]:
                if t["content"] == v:
                    return t["id"]
            if v in self.tj["model"]["vocab"]:
                return self.tj["model"]["vocab"][v]
        cid = self.cfg.get(f"{key}_token_id")
        if isinstance(cid, list):
            cid = cid[0] if cid else None
        return cid

    # -- GGUF expectations ------------------------------------------------------------------
    def gguf_tensors(self, out_type):
        """{gguf name: (hf name, ne)} plus whether the model is tied."""
        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
        layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
        out = {}
        for hf, w in self.weights.items():
            if hf in names:
                g = names[hf]
            else:
                parts = hf.split(".")
                g = f"blk.{parts[2]}.{layer['.'.join(parts[3:-1])]}.weight"
            out[g] = (hf, list(reversed(w.shape)))
        return out

    def permuted(self, hf):
        w = self.weights[hf]
        if hf.endswith("q_proj.weight"):
            return permute(w, self.n_head)
        if hf.endswith("k_proj.weight"):
            return permute(w, self.n_kv)
        return w

    def expected_kv(self, out_type):
        """{key: (type names as gguf-py lists them, value or None = any value)}."""
        c = self.cfg
        e = {
            "general.architecture": (["STRING"], "llama"),
            "general.file_type": (["UINT32"], FILE_TYPE.get(out_type)),
            "general.quantization_version": (["UINT32"], 2),
            "llama.block_count": (["UINT32"], c["num_hidden_layers"]),
            "llama.context_length": (["UINT32"], c["max_position_embeddings"]),
            "llama.embedding_length": (["UINT32"], c["hidden_size"]),
            "llama.feed_forward_length": (["UINT32"], c["intermediate_size"]),
            "llama.attention.head_count": (["UINT32"], self.n_head),
            "llama.attention.head_count_kv": (["UINT32"], self.n_kv),
            "llama.rope.freq_base": (["FLOAT32"], float(np.float32(self.theta))),
            "llama.attention.layer_norm_rms_epsilon": (["FLOAT32"], float(np.float32(c["rms_norm_eps"]))),
            "llama.rope.dimension_count": (["UINT32"], self.head_dim),
            "llama.vocab_size": (["UINT32"], c["vocab_size"]),
        }
        if "head_dim" in c:
            e["llama.attention.key_length"] = (["UINT32"], self.head_dim)
            e["llama.attention.value_length"] = (["UINT32"], self.head_dim)
        tj = self.tj
        if self.byte_level:
            vocab = dict(tj["model"]["vocab"])
            vocab.update({t["content"]: t["id"] for t in tj["added_tokens"]})
            n = c["vocab_size"]
            tokens = [f"[PAD{i}]" for i in range(n)]
            types = [5] * n
            control = {t["id"] for t in tj["added_tokens"] if t["special"]}
            for t, i in vocab.items():
                tokens[i] = t
                types[i] = 3 if i in control else 1
            merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
            e.update({
                "tokenizer.ggml.model": (["STRING"], "gpt2"),
                "tokenizer.ggml.pre": (["STRING"], "llama-bpe"),
                "tokenizer.ggml.tokens": (["ARRAY", "STRING"], tokens),
                "tokenizer.ggml.token_type": (["ARRAY", "INT32"], types),
                "tokenizer.ggml.merges": (["ARRAY", "STRING"], merges),
            })
        else:
            if self.spm:
                import sentencepiece as spm

                sp = spm.SentencePieceProcessor(model_file=os.path.join(self.dir, "tokenizer.model"))
                tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
                scores = [float(np.float32(sp.get_score(i))) for i in range(sp.get_piece_size())]
                types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
                         else 6 if sp.is_byte(i) else 1 for i in range(sp.get_piece_size())]
                # llama.cpp's converter: tokenizer_config.json's added_tokens_decoder overrides
                # its ids (score -1000; CONTROL when special), <unk> included
                for i, t in self.tcfg.get("added_tokens_decoder", {}).items():
                    i = int(i)
                    if i < len(tokens):
                        scores[i] = -1000.0
                        types[i] = 3 if t.get("special") else 4
                        tokens[i] = t["content"] if t.get("special") else t["content"].replace("\u2581", " ")
            else:
                by_id = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
                tokens = [t for t, _ in by_id]
                special = {t["id"] for t in tj["added_tokens"] if t["special"]}
                unk = tj["model"].get("unk_token")
                types = [2 if t == unk else 3 if i in special else 6 if (t.startswith("<0x") and len(t) == 6) else 1
                         for t, i in by_id]
                scores = None  # derived by the converter from the merge order; tokenization checks them
            e.update({
                "tokenizer.ggml.model": (["STRING"], "llama"),
                "tokenizer.ggml.pre": (["STRING"], "default"),
                "tokenizer.ggml.tokens": (["ARRAY", "STRING"], tokens),
                "tokenizer.ggml.scores": (["ARRAY", "FLOAT32"], scores),
                "tokenizer.ggml.token_type": (["ARRAY", "INT32"], types),
                "tokenizer.ggml.unknown_token_id": (["UINT32"], self.special_id("unk")),
            })
        e["tokenizer.ggml.bos_token_id"] = (["UINT32"], self.special_id("bos"))
        e["tokenizer.ggml.eos_token_id"] = (["UINT32"], self.special_id("eos"))
        e["tokenizer.ggml.add_bos_token"] = (["BOOL"], bool(self.tcfg.get("add_bos_token")))
        if "add_eos_token" in self.tcfg:
            e["tokenizer.ggml.add_eos_token"] = (["BOOL"], bool(self.tcfg["add_eos_token"]))
        jinja = os.path.join(self.dir, "chat_template.jinja")
        if os.path.exists(jinja):
            with open(jinja, encoding="utf-8") as f:
                e["tokenizer.chat_template"] = (["STRING"], f.read())
        else:
            e["tokenizer.chat_template"] = (["STRING"], self.tcfg["chat_template"])
        return e

    # -- reference forward pass -------------------------------------------------------------
    def forward(self, tokens, weights=None, f16=True, theta=None, permuted_qk=False):
        """HF LlamaForCausalLM in float64. weights default to the source rounded as an F16 GGUF
        stores them (2-D tensors to f16, 1-D exact). permuted_qk interprets Q/K rows in
        llama.cpp's interleaved order (what a converter that forgot the permutation produces)."""
        if weights is None:
            weights = self.weights
        W = {k: (v.astype(np.float16) if (f16 and v.ndim == 2) else v).astype(np.float64) for k, v in weights.items()}
        c = self.cfg
        nh, nkv, hd = self.n_head, self.n_kv, self.head_dim
        eps = c["rms_norm_eps"]
        theta = theta or self.theta
        n = len(tokens)

        def rms(x, w):
            return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

        inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
        ang = np.outer(np.arange(n), inv)
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1)
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1)

        def rope(x):  # [heads, n, hd], rotate_half
            rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)
            return x * cos + rot * sin

        x = W["model.embed_tokens.weight"][tokens]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            wq, wk = W[p + "self_attn.q_proj.weight"], W[p + "self_attn.k_proj.weight"]
            if permuted_qk:
                wq, wk = permute(wq, nh), permute(wk, nkv)
            a = rms(x, W[p + "input_layernorm.weight"])
            q = (a @ wq.T).reshape(n, nh, hd).transpose(1, 0, 2)
            k = (a @ wk.T).reshape(n, nkv, hd).transpose(1, 0, 2)
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


def permute(w, n_head):
    """HF rotate-half row order -> llama.cpp interleaved pairs (convert_hf_to_gguf's permute)."""
    r = w.shape[0]
    return w.reshape(n_head, 2, r // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    r = w.shape[0]
    return w.reshape(n_head, r // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ----------------------------------------------------------------------------------------------
# GGUF and llama.cpp helpers


def read_gguf(path):
    """(kv {key: (type names, value)}, [(name, type id, shape, bytes)] in file order)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    kv = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        kv[k] = ([t.name for t in f.types], f.contents())
    tensors = [(t.name, int(t.tensor_type), [int(d) for d in t.shape], bytes(t.data.tobytes())) for t in r.tensors]
    return kv, tensors


def dequantized_weights(path, model):
    """The GGUF's tensors dequantized by gguf-py and mapped back to HF names / row order."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    back = {g: hf for g, (hf, _) in model.gguf_tensors(None).items()}
    out = {}
    for t in GGUFReader(path).tensors:
        hf = back[t.name]
        a = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(list(reversed([int(d) for d in t.shape])))
        if hf.endswith("q_proj.weight"):
            a = unpermute(a, model.n_head)
        elif hf.endswith("k_proj.weight"):
            a = unpermute(a, model.n_kv)
        out[hf] = a
    if "lm_head.weight" not in model.weights:
        out.pop("lm_head.weight", None)
    return out


_LOADED = {}


def llama(path, vocab_only=False):
    import llama_cpp

    key = (path, vocab_only)
    if key not in _LOADED:
        _LOADED[key] = llama_cpp.Llama(model_path=path, n_ctx=128, logits_all=True, vocab_only=vocab_only,
                                       verbose=False, seed=1, n_threads=2)
    return _LOADED[key]


def release(path):
    for key in [k for k in _LOADED if k[0] == path]:
        _LOADED.pop(key).close()


def llama_logits(path, tokens):
    llm = llama(path)
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float64)


def llama_quantize(src, dst, ftype, **params):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    for k, v in params.items():
        setattr(p, k, v)
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
    if rc != 0:
        raise AssertionError(f"llama_model_quantize returned {rc}")


def cosines(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def run_qforge(qforge, *args, **kw):
    return subprocess.run([qforge, *args], capture_output=True, text=True, **kw)


def convert(qforge, model_dir, ty, out, *extra):
    r = run_qforge(qforge, "convert", model_dir, "-t", ty, "-o", out, "--quiet", *extra)
    if r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}: {r.stderr.strip()}")
    if not os.path.isfile(out):
        raise AssertionError("exit 0 but no output file")
    left = [f for f in os.listdir(os.path.dirname(out)) if f.startswith(".") and f.endswith(".tmp")]
    if left:
        raise AssertionError(f"temporary files left: {left}")
    return out


def describe_kv_diff(a, b, skip=lambda k: False):
    """Human-readable differences between two KV dicts (keys, types, values)."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        if skip(k):
            continue
        if k not in a or k not in b:
            diffs.append(f"{k} only in {'first' if k in a else 'second'}")
        elif a[k][0] != b[k][0]:
            diffs.append(f"{k}: type {a[k][0]} vs {b[k][0]}")
        elif a[k][1] != b[k][1]:
            diffs.append(f"{k}: {short(a[k][1])} vs {short(b[k][1])}")
    return diffs


def short(v):
    s = repr(v)
    return s if len(s) < 80 else s[:77] + "..."


# ----------------------------------------------------------------------------------------------
# per-model checks


def model_checks(args, name, model_dir, tmp, types, identity=True, extras=True):
    qforge, only = args.qforge, args.only
    model = Model(model_dir)
    gen = load_generator()
    files = {}
    for ty in types:
        out = os.path.join(tmp, name, f"{ty}.gguf")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if check(f"{name}: convert -t {ty}", lambda ty=ty, out=out: convert(qforge, model_dir, ty, out) and None, only,
                 prerequisite=True):
            files[ty] = out

    # -- metadata and tensor table -------------------------------------------------------------
    for ty, path in files.items():
        if ty == "nf4":
            continue  # qforge's own NF4 type ids: gguf-py cannot read them; checked separately below

        def metadata(ty=ty, path=path):
            kv, tensors = read_gguf(path)
            problems = []
            for key, (types_, value) in model.expected_kv(ty).items():
                if key not in kv:
                    problems.append(f"{key} missing")
                elif kv[key][0] != types_:
                    problems.append(f"{key}: type {kv[key][0]}, want {types_}")
                elif value is not None and kv[key][1] != value:
                    problems.append(f"{key}: {short(kv[key][1])}, want {short(value)}")
            want = model.gguf_tensors(ty)
            got = {t[0]: t for t in tensors}
            if set(got) != set(want):
                problems.append(f"tensor names differ: {sorted(set(got) ^ set(want))}")
            for g, (hf, ne) in want.items():
                if g not in got:
                    continue
                _, tid, shape, data = got[g]
                if shape != ne:
                    problems.append(f"{g}: shape {shape}, want {ne}")
                one_d = len(ne) == 1
                if one_d and tid != 0:
                    problems.append(f"{g}: 1-D tensor of type {tid}, want F32 (0)")
                if ty == "f16":
                    want_t = np.float32 if one_d else np.float16
                    if not one_d and tid != 1:
                        problems.append(f"{g}: type {tid}, want F16 (1)")
                    elif data != model.permuted(hf).astype(want_t).tobytes():
                        problems.append(f"{g}: bytes differ from the permuted source rounded to {want_t.__name__}")
            if problems:
                raise AssertionError(f"{len(problems)} problems: " + "; ".join(problems[:6]))
            extra = sorted(k for k in kv if k not in model.expected_kv(ty))
            return f"{len(model.expected_kv(ty))} keys and {len(want)} tensors as expected; other keys: {extra}"

        check(f"{name}: {ty} metadata, types and tensor table", metadata, only)

    if "f16" not in files:
        return files

    # -- tokenizer -------------------------------------------------------------------------
    def tokenize():
        llm = llama(files["f16"], vocab_only=True)
        texts = [t for t in SAMPLE_TEXTS + gen.rng_texts(1234, 300) if model.comparable(t)]
        bad = []
        for text in texts:
            got = llm.tokenize(text.encode(), add_bos=True, special=False)
            want = model.reference_ids(text)
            if got != want:
                bad.append((text, got, want))
        if bad:
            raise AssertionError(f"{len(bad)} of {len(texts)} texts differ, first: {bad[0]}")
        control = ""
        if model.byte_level:
            # The texts must be able to tell the Llama-3 regex from GPT-2's (a wrong
            # tokenizer.ggml.pre): tokenize them with GPT-2's pre-tokenizer and count changes.
            from tokenizers import pre_tokenizers

            gpt2 = model.hf_tokenizer(parse_special=False)
            gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            changed = sum(gpt2.encode(t).ids != model.reference_ids(t) for t in texts)
            if changed == 0:
                raise AssertionError("no text distinguishes the Llama-3 pre-tokenizer from GPT-2's")
            control = f"; {changed} of them tokenize differently with GPT-2's pre-tokenizer"
        ref = "sentencepiece" if model.spm else "tokenizers"
        skipped = len(SAMPLE_TEXTS) + 300 - len(texts)
        return (f"{len(texts)} texts identical to {ref}"
                + (f" ({skipped} with a leading space skipped: Metaspace)" if skipped else "") + control)

    check(f"{name}: llama.cpp tokenizes like the source tokenizer", tokenize, only)

    def special_tokens():
        llm = llama(files["f16"], vocab_only=True)
        hf = model.hf_tokenizer()
        fam = "bpe" if model.byte_level else "spm"
        bad = []
        for text in SPECIAL_TEXTS[fam]:
            got = llm.tokenize(text.encode(), add_bos=True, special=True)
            want = hf.encode(text).ids
            if got != want:
                bad.append((text, got, want))
        if bad:
            raise AssertionError(f"{bad}")
        return f"{len(SPECIAL_TEXTS[fam])} texts with control tokens identical to tokenizers"

    check(f"{name}: control tokens parsed like tokenizers (special=True)", special_tokens, only)

    def detokenize():
        llm = llama(files["f16"], vocab_only=True)
        bad = []
        texts = [t for t in SAMPLE_TEXTS + gen.rng_texts(99, 100) if t]
        for text in texts:
            # llama-cpp-python drops the leading space of the decoded text when the ids start
            # with BOS: that undoes SentencePiece's dummy prefix, and would eat a real space of
            # a byte-level BPE text.
            ids = llm.tokenize(text.encode(), add_bos=not model.byte_level, special=False)
            back = llm.detokenize(ids)
            if back != text.encode():
                bad.append((text, back))
        if bad:
            raise AssertionError(f"{len(bad)} of {len(texts)} texts do not round-trip, first: {bad[0]}")
        return f"{len(texts)} texts round-trip"

    check(f"{name}: llama.cpp detokenizes back to the text", detokenize, only)

    # -- logits ------------------------------------------------------------------------------
    tokens = model.reference_ids(PROMPT)
    state = {}

    def f16_logits():
        got = llama_logits(files["f16"], tokens)
        want = model.forward(tokens)
        state["f16"] = got
        scale = np.abs(want).max()
        err = np.abs(got - want).max() / scale
        top2 = np.sort(want, -1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 0.02 * scale
        agree = (got.argmax(-1) == want.argmax(-1))[clear].mean()
        controls = {
            "no Q/K permutation": model.forward(tokens, permuted_qk=True),
            "rope_theta x10": model.forward(tokens, theta=model.theta * 10),
        }
        ctl = {k: np.abs(got - v).max() / scale for k, v in controls.items()}
        if not err < F16_TOL:
            raise AssertionError(f"max |llama.cpp - reference| / max |reference| = {err:.2e} >= {F16_TOL}")
        if agree < 1.0:
            raise AssertionError(f"top-1 agreement {agree:.3f} at {clear.sum()} positions with a clear winner")
        for k, v in ctl.items():
            if not v > 10 * F16_TOL:
                raise AssertionError(f"negative control '{k}' is only {v:.2e} away: the check cannot see it")
        return (f"max rel err {err:.1e} over {len(tokens)} positions (logit scale {scale:.1f}, std "
                f"{want.std(-1).mean():.2f}); top-1 identical at {clear.sum()} clear positions; controls: "
                + ", ".join(f"{k} {v:.2f}" for k, v in ctl.items()))

    check(f"{name}: f16 logits equal the numpy reference", f16_logits, only)

    for ty in [t for t in QUANT_TYPES if t in files]:
        def quant_logits(ty=ty):
            got = llama_logits(files[ty], tokens)
            release(files[ty])
            own = model.forward(tokens, weights=dequantized_weights(files[ty], model), f16=False)
            self_err = np.abs(got - own).max() / np.abs(own).max()
            msg = f"vs its own dequantized weights: max rel err {self_err:.1e}"
            if not self_err < QUANT_SELF_TOL:
                raise AssertionError(msg)
            if "f16" in state:
                ref = state["f16"]
                cos = cosines(got, ref)
                top1 = (got.argmax(-1) == ref.argmax(-1)).mean()
                msg += f"; vs F16: min cosine {cos.min():.4f} (mean {cos.mean():.4f}), top-1 agreement {top1:.2f}"
                if cos.min() < MIN_COSINE[ty]:
                    raise AssertionError(msg + f" < {MIN_COSINE[ty]}")
            return msg

        check(f"{name}: {ty} logits", quant_logits, only)

    if identity:
        kv16 = None
        for ty in [t for t in QUANT_TYPES if t in files]:
            def identical(ty=ty):
                ref = os.path.join(tmp, name, f"{ty}-llama-quantize.gguf")
                llama_quantize(files["f16"], ref, FILE_TYPE[ty])
                kva, ta = read_gguf(files[ty])
                kvb, tb = read_gguf(ref)
                problems = []
                if [t[0] for t in ta] != [t[0] for t in tb]:
                    if sorted(t[0] for t in ta) != sorted(t[0] for t in tb):
                        problems.append(f"tensor sets differ: {sorted({t[0] for t in ta} ^ {t[0] for t in tb})}")
                    else:
                        problems.append("tensor order differs")
                db = {t[0]: t for t in tb}
                for n_, tid, shape, data in ta:
                    if n_ not in db:
                        continue
                    _, tid2, shape2, data2 = db[n_]
                    if (tid, shape) != (tid2, shape2):
                        problems.append(f"{n_}: type/shape {tid}/{shape} vs llama.cpp {tid2}/{shape2}")
                    elif data != data2:
                        nb = sum(x != y for x, y in zip(data, data2))
                        problems.append(f"{n_}: {nb} of {len(data)} bytes differ")
                kvd = describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
                problems += [f"metadata {d}" for d in kvd]
                if problems:
                    raise AssertionError(f"{len(problems)} differences: " + "; ".join(problems[:6]))
                same_file = open(files[ty], "rb").read() == open(ref, "rb").read()
                types_used = sorted({t[1] for t in ta})
                return (f"{len(ta)} tensors (ggml types {types_used}) and all non-qforge metadata identical"
                        + ("; whole file byte-identical" if same_file else ""))

            check(f"{name}: {ty} equals llama-quantize of qforge's f16", identical, only)

    if not extras:
        return files

    # llama-quantize's own overrides, reproduced by qforge's flags
    for label, qargs, params in [
        ("--pure q4_k_m", ["--pure"], {"pure": True}),
        ("q4_k_m --output-tensor-type q8_0 --token-embedding-type q8_0",
         ["--output-tensor-type", "q8_0", "--token-embedding-type", "q8_0"],
         {"output_tensor_type": 8, "token_embedding_type": 8}),
    ]:
        def overrides(qargs=qargs, params=params, label=label):
            out = os.path.join(tmp, name, label.replace(" ", "_") + ".gguf")
            convert(qforge, model_dir, "q4_k_m", out, *qargs)
            ref = out + ".llama.gguf"
            llama_quantize(files["f16"], ref, FILE_TYPE["q4_k_m"], **params)
            (kva, a), (kvb, b) = read_gguf(out), read_gguf(ref)
            diff = [x[0] for x, y in zip(a, b) if x != y]
            kvd = describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
            if diff or len(a) != len(b) or kvd:
                raise AssertionError(f"tensors differ: {diff[:3]}; metadata: {kvd[:3]}")
            return f"{len(a)} tensors and metadata identical"

        check(f"{name}: {label} equals llama-quantize with the same options", overrides, only)

    def requantize_gguf():
        out = os.path.join(tmp, name, "f16-to-q4_k_m.gguf")
        convert(qforge, files["f16"], "q4_k_m", out)
        (kva, a), (kvb, b) = read_gguf(out), read_gguf(files["q4_k_m"])
        diff = [x[0] for x, y in zip(a, b) if x != y]
        kvd = describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
        if diff or len(a) != len(b) or kvd:
            raise AssertionError(f"tensors differ: {diff[:3]}; metadata: {kvd[:3]}")
        return f"{len(a)} tensors and metadata identical"

    if "q4_k_m" in files:
        check(f"{name}: f16 GGUF -> q4_k_m equals safetensors -> q4_k_m", requantize_gguf, only)

    def nf4_round_trip():
        r = run_qforge(qforge, "inspect", files["nf4"])
        if r.returncode != 0 or "llama.cpp cannot load it" not in r.stdout:
            raise AssertionError(f"inspect does not flag the NF4 file: {r.stdout[-300:]}")
        back = os.path.join(tmp, name, "nf4-to-f16.gguf")
        convert(qforge, files["nf4"], "f16", back)
        got = llama_logits(back, tokens)
        release(back)
        cos = cosines(got, state["f16"])
        if cos.min() < 0.90:
            raise AssertionError(f"NF4 -> f16 logits min cosine {cos.min():.4f}")
        return f"loads in llama.cpp after -t f16; min cosine to F16 logits {cos.min():.4f}"

    if "nf4" in files and "f16" in state:
        check(f"{name}: nf4 file is flagged, and loads in llama.cpp after convert -t f16", nf4_round_trip, only)
    return files


def same_conversion(args, name, variant_dir, base_f16, tmp, label):
    """The variant converts to exactly the base fixture's f16 file (metadata and tensors)."""
    def run():
        out = os.path.join(tmp, name + ".gguf")
        convert(args.qforge, variant_dir, "f16", out)
        (kva, a), (kvb, b) = read_gguf(out), read_gguf(base_f16)
        kvd = describe_kv_diff(kva, kvb, skip=lambda k: k.startswith("qforge."))
        if kvd or a != b:
            raise AssertionError(f"metadata: {kvd[:4]}; tensors equal: {a == b}")
        return f"{label}: identical metadata and tensors"

    check(f"{name}: converts to the same GGUF as the base fixture", run, args.only)


# ----------------------------------------------------------------------------------------------
# error paths


def error_checks(args, tmp):
    qforge, only = args.qforge, args.only
    spm_dir = os.path.join(FIX, "tiny-llama-spm")
    bpe_dir = os.path.join(FIX, "tiny-llama-bpe")

    def edit_json(path, fn):
        with open(path) as f:
            obj = json.load(f)
        fn(obj)
        with open(path, "w") as f:
            json.dump(obj, f)

    def st_header(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            return n, json.loads(f.read(n))

    def poke(path, tensor, index, raw):
        n, header = st_header(path)
        width = {"F16": 2, "BF16": 2, "F32": 4}[header[tensor]["dtype"]]
        with open(path, "r+b") as f:
            f.seek(8 + n + header[tensor]["data_offsets"][0] + width * index)
            f.write(raw)

    def drop_tensor(path, tensor):
        """Rewrite a safetensors file without one tensor."""
        n, header = st_header(path)
        with open(path, "rb") as f:
            f.seek(8 + n)
            data = f.read()
        new, blobs, off = {}, [], 0
        for k, e in header.items():
            if k == "__metadata__":
                new[k] = e
                continue
            if k == tensor:
                continue
            a, b = e["data_offsets"]
            blobs.append(data[a:b])
            new[k] = dict(e, data_offsets=[off, off + b - a])
            off += b - a
        h = json.dumps(new).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

    def case(label, base, mutate, needles, ty="q8_0", out_name="x.gguf", keep_existing=False):
        def run():
            slug = label.replace(" ", "-").replace("/", "-")
            d = os.path.join(tmp, "err", slug, os.path.basename(base))
            shutil.copytree(base, d)
            out_dir = os.path.join(tmp, "err", slug, "out")
            os.makedirs(out_dir)
            out = mutate(d, out_dir) or os.path.join(out_dir, out_name)
            if keep_existing:
                with open(out, "wb") as f:
                    f.write(b"previous contents")
            before = sorted(os.listdir(os.path.dirname(out))) if os.path.isdir(os.path.dirname(out)) else None
            r = run_qforge(qforge, "convert", d, "-t", ty, "-o", out)
            if r.returncode == 0:
                raise AssertionError("convert succeeded")
            # each needle: a string, or a tuple of alternatives (HF or GGUF tensor name)
            missing = [n for n in needles
                       if not any(a.lower() in r.stderr.lower() for a in (n if isinstance(n, tuple) else (n,)))]
            if missing:
                raise AssertionError(f"message lacks {missing}: {r.stderr.strip()}")
            if keep_existing:
                with open(out, "rb") as f:
                    if f.read() != b"previous contents":
                        raise AssertionError("the existing output file was changed")
            elif os.path.lexists(out):
                raise AssertionError("output file left behind")
            after = sorted(os.listdir(os.path.dirname(out))) if os.path.isdir(os.path.dirname(out)) else None
            if after != before:
                raise AssertionError(f"files left in the output directory: {sorted(set(after) - set(before or []))}")
            return r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "(no message)"

        check(f"error path: {label}", run, only)

    shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"

    case("missing shard", spm_dir, lambda d, o: os.remove(os.path.join(d, shard2)), [shard2])

    def truncated(d, _):
        p = os.path.join(d, shard1)
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) - 1000)

    case("truncated safetensors", spm_dir, truncated, [shard1, "truncated"])

    def header_too_long(d, _):
        p = os.path.join(d, shard2)
        with open(p, "r+b") as f:
            f.write(struct.pack("<Q", os.path.getsize(p) * 4))

    case("safetensors header length beyond the file", spm_dir, header_too_long, [shard2])

    def indexed_but_absent(d, _):
        edit_json(os.path.join(d, "model.safetensors.index.json"),
                  lambda idx: idx["weight_map"].__setitem__("model.layers.9.mlp.up_proj.weight", shard2))

    case("index lists a tensor no shard has", spm_dir, indexed_but_absent, ["model.layers.9.mlp.up_proj.weight"])

    def unindexed(d, _):
        edit_json(os.path.join(d, "model.safetensors.index.json"),
                  lambda idx: idx["weight_map"].pop("model.layers.1.mlp.up_proj.weight"))

    case("a shard holds a tensor missing from the index", spm_dir, unindexed, ["model.layers.1.mlp.up_proj.weight"])

    def required_absent(d, _):
        name = "model.layers.1.self_attn.v_proj.weight"
        drop_tensor(os.path.join(d, shard2), name)
        edit_json(os.path.join(d, "model.safetensors.index.json"), lambda idx: idx["weight_map"].pop(name))

    case("a required tensor is absent everywhere", spm_dir, required_absent,
         [("model.layers.1.self_attn.v_proj.weight", "blk.1.attn_v.weight")])

    def unsupported(d, _):
        edit_json(os.path.join(d, "config.json"), lambda c: c.__setitem__("architectures", ["GPTNeoXForCausalLM"]))

    case("unsupported architecture", spm_dir, unsupported, ["GPTNeoXForCausalLM"])

    def heads_mismatch(d, _):
        edit_json(os.path.join(d, "config.json"), lambda c: c.__setitem__("num_attention_heads", 8))

    case("config contradicts the weights (8 heads x 64 != 256 q_proj rows)", spm_dir, heads_mismatch,
         [("q_proj", "attn_q", "o_proj", "attn_output")])

    def nan_weight(d, _):
        poke(os.path.join(d, shard2), "model.layers.1.mlp.up_proj.weight", 10, b"\xc0\x7f")  # bf16 NaN

    case("NaN in a bf16 weight", spm_dir, nan_weight, [("ffn_up", "up_proj"), "NaN", "10"])

    def inf_weight(d, _):
        # f16 +Inf at element 77
        poke(os.path.join(d, "model.safetensors"), "model.layers.0.self_attn.o_proj.weight", 77, b"\x00\x7c")

    case("+Inf in an f16 weight (f16 -> f16 copy)", bpe_dir, inf_weight, [("attn_output", "o_proj"), "77"], ty="f16")
    case("+Inf in an f16 weight (-> q4_k_m)", bpe_dir, inf_weight, [("attn_output", "o_proj"), "77"], ty="q4_k_m")
    case("NaN with an existing output file (kept unchanged)", spm_dir, nan_weight, [("ffn_up", "up_proj")],
         keep_existing=True)

    case("output directory does not exist", spm_dir, lambda d, o: os.path.join(o, "missing-dir", "x.gguf"),
         ["missing-dir"])

    def parent_is_file(d, o):
        with open(os.path.join(o, "plain-file"), "w") as f:
            f.write("x")
        return os.path.join(o, "plain-file", "x.gguf")

    case("output parent is a regular file", spm_dir, parent_is_file, ["plain-file"])

    def read_only(d, o):
        ro = os.path.join(o, "ro")
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        return os.path.join(ro, "x.gguf")

    if os.geteuid() != 0:
        case("output directory is read-only", spm_dir, read_only, ["ro"])
    else:
        # root ignores directory permissions; /proc refuses new files to everyone
        case("output directory is read-only (/proc; running as root)", spm_dir,
             lambda d, o: "/proc/qforge-interop-test.gguf", ["/proc"])

    def existing_dir(d, o):
        os.makedirs(os.path.join(o, "a-directory"))
        return os.path.join(o, "a-directory")

    def run_existing_dir():
        out = existing_dir(None, os.path.join(tmp, "err-outdir"))
        r = run_qforge(qforge, "convert", spm_dir, "-t", "q8_0", "-o", out)
        if r.returncode == 0 or not os.path.isdir(out) or os.listdir(out):
            raise AssertionError(f"exit {r.returncode}; directory contents {os.listdir(out)}")
        if "a-directory" not in r.stderr:
            raise AssertionError(f"unclear message: {r.stderr.strip()}")
        return r.stderr.strip().splitlines()[-1]

    check("error path: output path is an existing directory", run_existing_dir, only)

    def unknown_type():
        out = os.path.join(tmp, "err-type", "x.gguf")
        os.makedirs(os.path.dirname(out))
        r = run_qforge(qforge, "convert", spm_dir, "-t", "q3_xyz", "-o", out)
        if r.returncode == 0 or os.listdir(os.path.dirname(out)):
            raise AssertionError(f"exit {r.returncode}, files {os.listdir(os.path.dirname(out))}")
        if "q3_xyz" not in r.stderr:
            raise AssertionError(f"unclear message: {r.stderr.strip()}")
        return r.stderr.strip().splitlines()[0]

    check("error path: unknown output type", unknown_type, only)

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

    check("error path: output location full (write fails midway)", disk_full, only)


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qforge", default=os.path.join(ROOT, "target", "release", "qforge"),
                    help="path of the qforge binary under test")
    ap.add_argument("--only", action="append", help="run only checks whose name contains this (repeatable)")
    ap.add_argument("--keep", help="write outputs to this directory and keep them")
    ap.add_argument("--llama-tools", help="folder with llama.cpp's llama-imatrix and llama-quantize "
                                          "(the importance-matrix checks run only with it)")
    args = ap.parse_args()
    args.qforge = os.path.abspath(args.qforge)
    try:
        import llama_cpp

        print(f"llama-cpp-python {llama_cpp.__version__}, qforge {args.qforge}", flush=True)
    except ImportError as e:
        print(f"FAIL llama_cpp cannot be imported: {e}")
        print("0 passed, 1 failed")
        sys.exit(1)
    if not os.access(args.qforge, os.X_OK):
        print(f"FAIL {args.qforge} is not an executable")
        print("0 passed, 1 failed")
        sys.exit(1)

    ctx = tempfile.TemporaryDirectory() if not args.keep else None
    tmp = ctx.name if ctx else os.path.abspath(args.keep)
    os.makedirs(tmp, exist_ok=True)
    try:
        all_types = ["f16"] + QUANT_TYPES + ["nf4"]
        bpe = model_checks(args, "bpe", os.path.join(FIX, "tiny-llama-bpe"), tmp, all_types)
        spm = model_checks(args, "spm", os.path.join(FIX, "tiny-llama-spm"), tmp, all_types)

        variants = os.path.join(tmp, "variants")
        # byte-level BPE with "left right" string merges (tokenizer.json written by tokenizers < 0.20)
        d = os.path.join(variants, "string-merges", "tiny-llama-bpe")
        shutil.copytree(os.path.join(FIX, "tiny-llama-bpe"), d)
        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        if "f16" in bpe:
            same_conversion(args, "bpe-string-merges", d, bpe["f16"], variants, "merges as strings")

        # SentencePiece fixture without tokenizer.model: the v5 tokenizer.json alone
        d = os.path.join(variants, "json-only", "tiny-llama-spm")
        shutil.copytree(os.path.join(FIX, "tiny-llama-spm"), d)
        os.remove(os.path.join(d, "tokenizer.model"))
        json_only = model_checks(args, "spm-json-only", d, tmp, ["f16", "q8_0", "q4_0", "q4_k_m"], extras=False)

        # ... and the legacy tokenizer.json form (Prepend/Replace normalizer, no pre-tokenizer)
        d = os.path.join(variants, "json-legacy", "tiny-llama-spm")
        shutil.copytree(os.path.join(FIX, "tiny-llama-spm"), d)
        os.remove(os.path.join(d, "tokenizer.model"))
        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        tj["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                                {"type": "Replace", "pattern": {"String": " "},
                                                                 "content": "\u2581"}]}
        tj["pre_tokenizer"] = None
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        model_checks(args, "spm-json-legacy", d, tmp, ["f16"], identity=False, extras=False)
        if "f16" in json_only:
            same_conversion(args, "spm-json-legacy", d, json_only["f16"], variants, "legacy vs Metaspace form")

        import arch_checks

        for name in arch_checks.golden_fixtures(FIX):
            arch_checks.arch_checks(sys.modules[__name__], args, name, FIX, tmp)

        import edit_checks

        edit_checks.edit_checks(sys.modules[__name__], args, FIX, tmp)

        import imatrix_checks

        imatrix_checks.imatrix_checks(sys.modules[__name__], args, FIX, tmp)

        error_checks(args, tmp)
    finally:
        for key in list(_LOADED):
            _LOADED.pop(key).close()
        if ctx:
            ctx.cleanup()
    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
