#!/usr/bin/env python3
"""Make the two tiny Llama checkpoints bundled in fixtures/ (deterministic: fixed seeds, one
training thread; needs numpy, safetensors, tokenizers and sentencepiece, no torch/transformers).

fixtures/tiny-llama-bpe  (what a transformers-v4 Llama-3 checkpoint looks like)
    config.json: LlamaForCausalLM, top-level rope_theta, torch_dtype "float16", untied
        (tie_word_embeddings false), MHA (4 heads, 4 KV heads), eos_token_id a list as in
        Llama-3.1 configs; model.safetensors: one file, F16, lm_head.weight present.
    tokenizer.json: byte-level BPE trained here with `tokenizers`, Llama-3 layout: no normalizer,
        pre_tokenizer Sequence[Split(<Llama-3 regex>, isolated), ByteLevel(use_regex=false)],
        model.ignore_merges true, merges written by tokenizers >= 0.20 as [left, right] pairs,
        special tokens appended after the BPE vocabulary, post_processor
        Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)].
    tokenizer_config.json: bos/eos, add_bos_token, added_tokens_decoder, chat_template string.

fixtures/tiny-llama-spm  (what a transformers-v5 Llama-2-style checkpoint looks like)
    config.json: LlamaForCausalLM, rope_parameters {rope_theta 500000, rope_type default} and
        dtype "bfloat16" (no top-level rope_theta/torch_dtype), explicit head_dim 64, GQA (4 query
        heads, 2 KV heads), tied embeddings (no lm_head.weight), rms_norm_eps 1e-6.
        rope_theta is deliberately not llama.cpp's default 10000 so that a converter that fails to
        read it from rope_parameters produces different logits.
    model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json: BF16, two shards.
    tokenizer.model: SentencePiece BPE trained here with Llama-2's trainer settings (byte
        fallback, split digits, dummy prefix, identity normalisation, whitespace-only pieces).
    tokenizer.json: the same tokenizer in the form transformers v5's LlamaTokenizer saves
        (normalizer null, pre_tokenizer Metaspace(prepend_scheme "first", split false), BPE with
        byte_fallback/fuse_unk, merges derived from the SentencePiece vocabulary the way
        transformers' SentencePieceExtractor/generate_merges orders them). The script asserts it
        encodes sample, corpus and random texts exactly as sentencepiece does, in this form and in
        the legacy form (normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer) that
        transformers v4 wrote with legacy=True and that Llama-2 repositories ship.
    tokenizer_config.json (no chat_template key) + chat_template.jinja.

    python3 scripts/make_tiny_models.py
"""
import io
import json
import os
import random
import shutil

import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")

# The Llama-3 pre-tokenizer regex (tokenizer.json of Meta-Llama-3), which llama.cpp implements
# natively as pre-tokenizer "llama-bpe".
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = """The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
To be, or not to be: that is the question. All that glitters is not gold; all who wander are not lost.
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.
The model reads the prompt, predicts the next token, and repeats until it reaches the end of the text.
Quantization stores each block of weights with a scale and small integers; the error stays bounded.
Large language models convert text into tokens, then into vectors, then back into text again.
llama.cpp runs GGUF files on the CPU; qforge writes them in one streaming pass with bounded memory.
She said that they would meet at the station at noon, and then walk together to the old harbour.
There are three kinds of lies: lies, damned lies, and statistics. Measure twice, cut once.
In the beginning the weights are random; training slowly shapes them into something useful.
def main():
    for i in range(10):
        print(f"value {i} = {i * i}")
    return 0
class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = dict(vocab)
        self.merges = {pair: rank for rank, pair in enumerate(merges)}
fn quantize(x: &[f32]) -> Vec<u8> { x.iter().map(|v| (v * 127.0).round() as u8).collect() }
for (int i = 0; i < n; i++) { sum += a[i] * b[i]; } return sum;
{"name": "tiny", "layers": 2, "heads": 4, "dtype": "float16", "tied": false}
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 4096 65536 3.14159 2.71828 1,000,000 12:30 2026-11-24
The answer is 42, the year is 1969, the price is $19.99 and the ratio is 0.75 or 75%.
Unicode: café naïve résumé Straße déjà vu façade — “quotes” ‘single’ … © ® € £ ¥ ±
Ünïcödé àccénts: élève, garçon, señor, Zürich, København, Kraków, İstanbul, Ελλάδα, Москва
Rare scripts: 日本語 中文 한국어 ไทย עברית العربية हिन्दी, emoji 🙂 🚀 🔥 👍🏽 ❤️ 🎉
Whitespace:  two  spaces,\ttabs\t, newlines\n\nand trailing spaces   
It's, they're, we've, I'm, you'll, he'd. DON'T SHOUT! I'LL SEE. Mixed-Case words, snake_case and camelCase.
""".split("\n")

SAMPLE_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing spaces  ",
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
]


def rng_texts(seed, n):
    """Random texts mixing corpus fragments, whitespace runs, digits and rare characters."""
    r = random.Random(seed)
    words = " ".join(CORPUS).split()
    pool = (list("aeiouxyzAEIOU0123456789.,;:!?'\"()[]{}<>-_/\\*&^%$#@~`+=|")
            + list("éüßñøçąłİ—“”…€日本語中文한국어ไทย🙂🚀👍🏽❤️"))
    seps = [" ", "  ", "   ", "\n", "\n\n", "\t", " \n", "\r\n", ""]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(r.randint(1, 12)):
            k = r.random()
            if k < 0.55:
                w = r.choice(words)
                if r.random() < 0.2:
                    w = w.upper() if r.random() < 0.5 else w.capitalize()
                parts.append(w)
            elif k < 0.8:
                parts.append("".join(r.choice(pool) for _ in range(r.randint(1, 4))))
            else:
                parts.append(str(r.randint(0, 10 ** r.randint(1, 9))))
            parts.append(r.choice(seps))
        out.append("".join(parts))
    return out


# ----------------------------------------------------------------------------------------------
# weights


def llama_weights(rng, vocab, hidden, ff, layers, heads, kv_heads, head_dim, tied, std):
    """Random Llama weights (float32) under HF names.

    The standard deviations are chosen so the model is not degenerate: attention is neither
    uniform nor one-hot (RoPE and the Q/K row order change the logits a lot), every sublayer adds
    a residual update comparable to the embedding, and the logits spread over a few units with a
    clear top-1 that is not simply the input token (tied embeddings would otherwise copy it).
    """
    def w(rows, cols, s):
        return (rng.standard_normal((rows, cols)) * s).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)

    t = {"model.embed_tokens.weight": w(vocab, hidden, std["emb"])}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm()
        t[p + "self_attn.q_proj.weight"] = w(heads * head_dim, hidden, std["qk"])
        t[p + "self_attn.k_proj.weight"] = w(kv_heads * head_dim, hidden, std["qk"])
        t[p + "self_attn.v_proj.weight"] = w(kv_heads * head_dim, hidden, std["v"])
        t[p + "self_attn.o_proj.weight"] = w(hidden, heads * head_dim, std["o"])
        t[p + "post_attention_layernorm.weight"] = norm()
        t[p + "mlp.gate_proj.weight"] = w(ff, hidden, std["ff"])
        t[p + "mlp.up_proj.weight"] = w(ff, hidden, std["ff"])
        t[p + "mlp.down_proj.weight"] = w(hidden, ff, std["down"])
    t["model.norm.weight"] = norm()
    if not tied:
        t["lm_head.weight"] = w(vocab, hidden, std["head"])
    return t


def to_bf16(a):
    """f32 -> bf16 bits (round to nearest even; no NaN in these weights), as uint16."""
    b = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def save_bf16(tensors, path):
    """safetensors.numpy has no bf16 dtype: write the file by hand (same layout rules)."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        raw = to_bf16(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def added_tokens_decoder(tok, names):
    return {str(tok.token_to_id(n)): {"content": n, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True} for n in names}


# ----------------------------------------------------------------------------------------------
# byte-level BPE (Llama-3 style)

BPE_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def make_bpe():
    out = os.path.join(FIX, "tiny-llama-bpe")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=496, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in BPE_SPECIALS])
    bos, eos, eot = (tok.token_to_id(s) for s in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    tok.save(os.path.join(out, "tokenizer.json"))
    vocab = tok.get_vocab_size()
    assert vocab == max(tok.get_vocab().values()) + 1
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "added_tokens_decoder": added_tokens_decoder(tok, BPE_SPECIALS),
        "add_bos_token": True,
        "bos_token": "<|begin_of_text|>",
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|end_of_text|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    hidden, ff, layers, heads = 256, 512, 2, 4
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": bos, "eos_token_id": [eos, eot], "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": ff, "max_position_embeddings": 256, "mlp_bias": False,
        "model_type": "llama", "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": heads, "pretraining_tp": 1, "rms_norm_eps": 1e-5, "rope_scaling": None,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.46.3", "use_cache": True, "vocab_size": vocab,
    })
    rng = np.random.default_rng(11)
    std = {"emb": 0.5, "head": 0.2, "qk": 0.06, "v": 0.06, "o": 0.04, "ff": 0.06, "down": 0.04}
    t = llama_weights(rng, vocab, hidden, ff, layers, heads, heads, hidden // heads, False, std)
    save_file({k: v.astype(np.float16) for k, v in t.items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    print(f"{out}: vocab {vocab}, {len(tok.get_vocab()) - 256 - len(BPE_SPECIALS)} merges")


# ----------------------------------------------------------------------------------------------
# SentencePiece BPE (Llama-2 style) and its tokenizer.json twin


def spm_merges(sp):
    """BPE merges equivalent to a SentencePiece BPE model, ordered as transformers'
    SentencePieceExtractor (generate_merges with the piece scores) orders them: every split of a
    piece into two in-vocabulary pieces, by descending piece score, then longer left part, then
    longer right part (a stable sort of the per-piece lists ordered by (id(left), id(right)))."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece in vocab:  # id order
        score = sp.get_score(vocab[piece])
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    for a, b, _ in merges:  # control and byte pieces must not be reachable by merging
        assert sp.is_unknown(vocab[a + b]) is False and not sp.is_control(vocab[a + b]) and not sp.is_byte(vocab[a + b])
    return vocab, [(a, b) for a, b, _ in merges]


def spm_tokenizer_json(sp, legacy):
    vocab, merges = spm_merges(sp)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if legacy:
        # transformers v4 LlamaConverter with legacy=True; what Llama-2 repositories ship
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        # transformers v5 LlamaTokenizer (legacy=False, add_prefix_space=True)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    return tok, len(merges)


def make_spm():
    out = os.path.join(FIX, "tiny-llama-spm")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    model = io.BytesIO()
    # Llama-2's trainer settings, scaled down. character_coverage < 1 leaves the rarest characters
    # (CJK, emoji, ...) to byte fallback, as in the real model.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3), model_writer=model, vocab_size=512, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        add_dummy_prefix=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_by_unicode_script=True, split_by_whitespace=True,
        max_sentencepiece_length=16, character_coverage=0.98, num_threads=1, minloglevel=2)
    proto = model.getvalue()
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    checked = SAMPLE_TEXTS + CORPUS + rng_texts(7, 3000)
    for legacy in (False, True):
        tok, n_merges = spm_tokenizer_json(sp, legacy)
        for text in checked:
            if not legacy and text[:1] == " ":
                # Metaspace prepends "▁" only when the text does not already start with one;
                # SentencePiece's dummy prefix (and llama.cpp's add_space_prefix) always does.
                continue
            want = [1] + sp.encode(text)
            got = tok.encode(text).ids
            assert got == want, (legacy, text, got, want)
    tok, n_merges = spm_tokenizer_json(sp, legacy=False)
    tok.save(os.path.join(out, "tokenizer.json"))
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": None,
        "added_tokens_decoder": added_tokens_decoder(tok, ["<unk>", "<s>", "</s>"]),
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 256,
        "pad_token": None,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    })
    with open(os.path.join(out, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write("{% for message in messages %}{% if message['role'] == 'user' %}"
                "{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}"
                "{% else %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}")
    hidden, ff, layers, heads, kv, hd = 256, 512, 2, 4, 2, 64
    n_vocab = sp.get_piece_size()
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "dtype": "bfloat16", "eos_token_id": 2, "head_dim": hd, "hidden_act": "silu",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": ff, "max_position_embeddings": 256,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": kv, "pad_token_id": None, "pretraining_tp": 1, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "tie_word_embeddings": True,
        "transformers_version": "5.0.0", "use_cache": True, "vocab_size": n_vocab,
    })
    rng = np.random.default_rng(22)
    std = {"emb": 0.2, "qk": 0.05, "v": 0.06, "o": 0.1, "ff": 0.06, "down": 0.1}
    t = llama_weights(rng, n_vocab, hidden, ff, layers, heads, kv, hd, True, std)
    names = list(t)  # layer order: embeddings + layer 0 in the first shard, the rest in the second
    shards = [names[: 1 + 9], names[1 + 9:]]
    weight_map = {}
    for i, part in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_bf16({k: t[k] for k in part}, os.path.join(out, fn))
        weight_map.update({k: fn for k in part})
    write_json(os.path.join(out, "model.safetensors.index.json"), {
        "metadata": {"total_parameters": int(sum(v.size for v in t.values())),
                     "total_size": int(sum(v.size * 2 for v in t.values()))},
        "weight_map": dict(sorted(weight_map.items())),
    })
    print(f"{out}: vocab {n_vocab}, {n_merges} merges, tokenizer.json == sentencepiece on {len(checked)} texts "
          f"(v5 Metaspace and legacy Prepend forms)")


if __name__ == "__main__":
    make_bpe()
    make_spm()
