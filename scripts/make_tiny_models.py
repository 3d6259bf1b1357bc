#!/usr/bin/env python3
"""Make the two tiny Llama checkpoints bundled in fixtures/ (deterministic; needs numpy,
safetensors, tokenizers and sentencepiece, no torch).

fixtures/tiny-llama-bpe: transformers-v4 config, F16, one model.safetensors, untied, MHA,
    a Llama-3 style byte-level BPE tokenizer (tokenizer.json) trained on an embedded corpus.
fixtures/tiny-llama-spm: transformers-v5 config (rope_parameters, dtype), BF16, two shards with
    an index, tied embeddings, GQA (4 query / 2 KV heads, explicit head_dim), a SentencePiece BPE
    tokenizer.model with byte fallback plus an equivalent HF tokenizer.json (checked here to
    encode the sample texts exactly as sentencepiece does), chat_template.jinja.

    python3 scripts/make_tiny_models.py
"""
import io
import json
import os
import shutil

import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = """The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
To be, or not to be: that is the question. All that glitters is not gold; all who wander are not lost.
def main():\n    for i in range(10):\n        print(f"value {i} = {i * i}")\n    return 0\n
fn quantize(x: &[f32]) -> Vec<u8> { x.iter().map(|v| (v * 127.0).round() as u8).collect() }
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 65536 3.14159 2.71828 1,000,000 12:30 2026-11-24
Unicode: café naïve résumé Straße déjà vu — “quotes” ‘single’ … © ® ™ € £ ¥ 日本語 中文 한국어 русский ελληνικά
Emoji: 🙂 🚀 🔥 👍🏽 ❤️ 🎉 and symbols ← → ↑ ↓ ∑ ∫ √ ∞ ≈ ≠ ≤ ≥
Whitespace:  two  spaces,\ttabs\t, newlines\n\nand trailing spaces   
It's, they're, we've, I'm, you'll, he'd. DON'T SHOUT! Mixed-Case words, snake_case and camelCase identifiers.
Large language models convert text into tokens, then into vectors; quantization stores weights in fewer bits.
llama.cpp runs GGUF files; qforge writes them in one streaming pass with bounded memory.
""".split("\n")

SAMPLE_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing spaces  ",
    "Numbers 12345 and 3.14159, dates 2026-11-24.",
    "café naïve résumé — “quotes”",
    "日本語 and 中文",
    "emoji 🙂🚀 done",
    "def f(x):\n    return x * 2\n",
    "It's they're we've",
    "tabs\tand\nnewlines\n\n",
]


def llama_weights(rng, vocab, hidden, ff, layers, heads, kv_heads, head_dim, tied):
    def w(rows, cols, std=0.02):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    t = {"model.embed_tokens.weight": w(vocab, hidden, 0.5),
         "model.norm.weight": (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)}
    if not tied:
        t["lm_head.weight"] = w(vocab, hidden, 0.05)
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "self_attn.q_proj.weight"] = w(heads * head_dim, hidden, 0.08)
        t[p + "self_attn.k_proj.weight"] = w(kv_heads * head_dim, hidden, 0.08)
        t[p + "self_attn.v_proj.weight"] = w(kv_heads * head_dim, hidden, 0.08)
        t[p + "self_attn.o_proj.weight"] = w(hidden, heads * head_dim, 0.05)
        t[p + "post_attention_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "mlp.gate_proj.weight"] = w(ff, hidden, 0.06)
        t[p + "mlp.up_proj.weight"] = w(ff, hidden, 0.06)
        t[p + "mlp.down_proj.weight"] = w(hidden, ff, 0.04)
    return t


def to_bf16(a):
    """f32 -> bf16 bits (round to nearest even), as a uint16 array."""
    b = a.astype(np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def save_bf16(tensors, path):
    """safetensors.numpy has no bf16 dtype: write the file by hand."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        raw = to_bf16(arr).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_bpe():
    out = os.path.join(FIX, "tiny-llama-bpe")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=480, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.add_special_tokens(specials)
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{specials[0]} $A", pair=f"{specials[0]} $A {specials[0]} $B", special_tokens=[(specials[0], bos)])
    tok.save(os.path.join(out, "tokenizer.json"))
    vocab = tok.get_vocab_size()
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": specials[0], "eos_token": specials[1], "add_bos_token": True,
                   "chat_template": "{% for m in messages %}<|begin_of_text|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
                   "model_max_length": 256}, f, indent=1)
    hidden, ff, layers, heads = 256, 512, 2, 4
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": heads, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "vocab_size": vocab, "tie_word_embeddings": False,
              "torch_dtype": "float16", "bos_token_id": bos, "eos_token_id": tok.token_to_id(specials[1])}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    rng = np.random.default_rng(11)
    t = llama_weights(rng, vocab, hidden, ff, layers, heads, heads, hidden // heads, tied=False)
    save_file({k: v.astype(np.float16) for k, v in t.items()}, os.path.join(out, "model.safetensors"))
    print(f"{out}: vocab {vocab}")


def spm_merges(sp):
    """Ordered BPE merges equivalent to a SentencePiece BPE model (HF's extractor rule)."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, pid in sorted(vocab.items(), key=lambda kv: kv[1]):
        if not sp.is_unknown(pid) and (sp.is_control(pid) or sp.is_byte(pid)):
            continue
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, pid))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    return vocab, [(a, b) for a, b, _ in merges]


def make_spm():
    out = os.path.join(FIX, "tiny-llama-spm")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3), model_writer=model, vocab_size=400, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        add_dummy_prefix=True, normalization_rule_name="identity", character_coverage=1.0,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, minloglevel=2)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab, merges = spm_merges(sp)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    for text in SAMPLE_TEXTS + CORPUS:
        want = [1] + sp.encode(text)
        got = tok.encode(text).ids
        assert got == want, (text, got, want)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                   "add_eos_token": False, "legacy": True}, f, indent=1)
    with open(os.path.join(out, "chat_template.jinja"), "w") as f:
        f.write("{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}</s>\n{% endfor %}")
    hidden, ff, layers, heads, kv, hd = 256, 512, 2, 4, 2, 64
    n_vocab = sp.get_piece_size()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "head_dim": hd, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
              "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "vocab_size": n_vocab,
              "tie_word_embeddings": True, "dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    rng = np.random.default_rng(22)
    t = llama_weights(rng, n_vocab, hidden, ff, layers, heads, kv, hd, tied=True)
    names = list(t)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_bf16({k: t[k] for k in part}, os.path.join(out, fn))
        weight_map.update({k: fn for k in part})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.size * 2 for v in t.values())}, "weight_map": weight_map}, f,
                  indent=1)
    print(f"{out}: vocab {n_vocab}")


if __name__ == "__main__":
    make_bpe()
    make_spm()
