#!/usr/bin/env python3
"""Make the tiny checkpoints of the non-Llama families bundled in fixtures/ (deterministic: fixed
seeds, one training thread; needs numpy, safetensors and tokenizers, no torch/transformers).

Each is a real checkpoint of its family in miniature: the config.json a real repository of that
family ships (field for field, scaled down), weights under the family's HF names, and the
tokenizer files the family ships. They are small enough to commit and large enough that a wrong
transform (a missing bias, norm, permutation or rope setting) moves the logits far beyond the
tolerance of the interop checks.

fixtures/tiny-qwen2   Qwen2ForCausalLM as Qwen2.5-0.5B-Instruct ships it (transformers v4 form):
    torch_dtype bfloat16, top-level rope_theta 1e6, use_sliding_window false, GQA 4/2, q/k/v
    biases, tied embeddings (no lm_head), config vocab_size larger than the tokenizer (llama.cpp's
    converter pads the token list with [PAD{i}]); one BF16 file.
fixtures/tiny-qwen3   Qwen3ForCausalLM as Qwen3 ships it, in transformers v5 form (rope_parameters,
    dtype): head_dim 64 with hidden 192 and 4 heads (H*D = 256 != hidden), q_norm/k_norm, GQA
    4/2, untied, F16, two shards with an index.

fixtures/tiny-phi3   Phi3ForCausalLM in the transformers v4 form Phi-3.5-mini ships: LongRoPE
    (rope_scaling type longrope, long/short factors, max_position_embeddings 131072 over an original
    4096), fused qkv_proj and gate_up_proj; with Phi-4-mini's GQA (4/2), partial rotary factor 0.75
    and tied embeddings; F16, one file. Phi-3's SentencePiece tokenizer: tokenizer.model (Llama-2
    trainer settings) plus the <|endoftext|>, <|user|>, <|end|>, ... tokens after it in
    added_tokens.json, tokenizer_config.json and tokenizer.json, config vocab_size padded beyond them.

fixtures/tiny-gemma3  Gemma3ForCausalLM as gemma-3-1b-it ships it (transformers v4 form): head_dim
    64 with hidden 128 and 4 heads, GQA 4/1, q/k norms, pre/post norms around attention and MLP,
    sliding window 16 with pattern 6 over 6 layers (so the window matters for the interop prompt),
    rope_theta 1e6 with rope_local_base_freq 1e4, tied, BF16 (norms get +1 in f32).
fixtures/tiny-gemma2  Gemma2ForCausalLM as gemma-2-2b-it ships it: softcapping 50/30, sliding
    window 16, F16 (norms get +1 in f16, then widen to F32), lm_head present (the converter drops it).
Both carry Gemma's SentencePiece tokenizer (no dummy prefix, <pad>/<eos>/<bos>/<unk> = 0..3,
<start_of_turn>/<end_of_turn> user-defined pieces) and its tokenizer.json twin (Replace(" ", "▁")
normalizer, byte fallback), checked here to encode like sentencepiece.

fixtures/tiny-qwen3moe  Qwen3MoeForCausalLM (transformers v5 form), 4 experts with 2 used,
    moe_intermediate_size 128, q/k norms, head_dim 64, BF16, two shards (experts of one layer
    split across them).
fixtures/tiny-qwen2moe  Qwen2MoeForCausalLM (v4 form), 4 experts with 2 used plus the shared
    expert and its sigmoid gate, q/k/v biases, F16, untied (llama.cpp requires output.weight).
fixtures/tiny-mixtral   MixtralForCausalLM (v4 form), 8 experts with 2 used (llama-quantize's
    8-expert rules apply), Q/K permuted like Llama, BF16, the Qwen byte-level tokenizer.

fixtures/tiny-olmo2    Olmo2ForCausalLM (v4 form): post-norms only, q/k norms over the whole
    projection, untied, F16; a cl100k-style tokenizer (the Llama-3 regex, ignore_merges false).
fixtures/tiny-smollm3  SmolLM3ForCausalLM: 4 layers so layer 3 is a NoPE layer, GQA, tied, BF16;
    a Llama-3.2-style tokenizer with ignore_merges false (llama.cpp's smaug-bpe).
fixtures/tiny-granite  GraniteForCausalLM (Granite 3.x form): embedding/attention/residual/logit
    multipliers, a head_dim the converter ignores, tied, BF16; a Digits + ByteLevel(GPT-2 regex)
    tokenizer with its specials first (llama.cpp's refact).

The Qwen fixtures carry Qwen's byte-level BPE tokenizer (trained here on the shared corpus): NFC normalizer,
Split(<Qwen2 regex>, isolated) + ByteLevel(use_regex=false), ignore_merges false, the
<|endoftext|>/<|im_start|>/<|im_end|> specials, no BOS, ChatML chat template.

    python3 scripts/make_tiny_arch_models.py
"""
import importlib.util
import io
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")


def _base():
    spec = importlib.util.spec_from_file_location("make_tiny_models", os.path.join(ROOT, "scripts", "make_tiny_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BASE = _base()
CORPUS, write_json, save_bf16 = BASE.CORPUS, BASE.write_json, BASE.save_bf16

# Qwen2's pre-tokenizer regex (tokenizer.json of Qwen2/2.5/3): llama.cpp's "qwen2".
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def qwen_tokenizer(out):
    """Write tokenizer.json + tokenizer_config.json; return (tokenizer size, special ids)."""
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=480, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in QWEN_SPECIALS])
    tok.save(os.path.join(out, "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in QWEN_SPECIALS}
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": BASE.added_tokens_decoder(tok, QWEN_SPECIALS),
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })
    return tok.get_vocab_size(), ids


def dense_weights(rng, vocab, hidden, ff, layers, heads, kv_heads, head_dim, tied, std, qkv_bias=False,
                  qk_norm=False):
    """Random weights of a Llama-shaped decoder under HF names (float32)."""
    def w(rows, cols, s):
        return (rng.standard_normal((rows, cols)) * s).astype(np.float32)

    def vec(n, mean, s):
        return (mean + s * rng.standard_normal(n)).astype(np.float32)

    t = {"model.embed_tokens.weight": w(vocab, hidden, std["emb"])}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = vec(hidden, 1.0, 0.1)
        t[p + "self_attn.q_proj.weight"] = w(heads * head_dim, hidden, std["qk"])
        t[p + "self_attn.k_proj.weight"] = w(kv_heads * head_dim, hidden, std["qk"])
        t[p + "self_attn.v_proj.weight"] = w(kv_heads * head_dim, hidden, std["v"])
        if qkv_bias:
            t[p + "self_attn.q_proj.bias"] = vec(heads * head_dim, 0.0, 0.3)
            t[p + "self_attn.k_proj.bias"] = vec(kv_heads * head_dim, 0.0, 0.3)
            t[p + "self_attn.v_proj.bias"] = vec(kv_heads * head_dim, 0.0, 0.3)
        if qk_norm:
            t[p + "self_attn.q_norm.weight"] = vec(head_dim, 1.0, 0.3)
            t[p + "self_attn.k_norm.weight"] = vec(head_dim, 1.0, 0.3)
        t[p + "self_attn.o_proj.weight"] = w(hidden, heads * head_dim, std["o"])
        t[p + "post_attention_layernorm.weight"] = vec(hidden, 1.0, 0.1)
        t[p + "mlp.gate_proj.weight"] = w(ff, hidden, std["ff"])
        t[p + "mlp.up_proj.weight"] = w(ff, hidden, std["ff"])
        t[p + "mlp.down_proj.weight"] = w(hidden, ff, std["down"])
    t["model.norm.weight"] = vec(hidden, 1.0, 0.1)
    if not tied:
        t["lm_head.weight"] = w(vocab, hidden, std["head"])
    return t


def save_shards(t, out, n_shards, save_one):
    names = list(t)
    per = -(-len(names) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        part = names[i * per:(i + 1) * per]
        fn = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_one({k: t[k] for k in part}, os.path.join(out, fn))
        weight_map.update({k: fn for k in part})
    write_json(os.path.join(out, "model.safetensors.index.json"), {
        "metadata": {"total_size": int(sum(v.size * 2 for v in t.values()))},
        "weight_map": dict(sorted(weight_map.items())),
    })


def save_f16(tensors, path):
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, path, metadata={"format": "pt"})


def fresh(name):
    out = os.path.join(FIX, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    return out


def make_qwen2():
    out = fresh("tiny-qwen2")
    n_tok, ids = qwen_tokenizer(out)
    vocab = 512  # > n_tok: the converter pads the token list to the embedding rows
    hidden, ff, layers, heads, kv = 256, 512, 2, 4, 2
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"], "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": ff, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": kv, "rms_norm_eps": 1e-6,
        "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
        "vocab_size": vocab,
    })
    rng = np.random.default_rng(33)
    std = {"emb": 0.25, "qk": 0.06, "v": 0.06, "o": 0.08, "ff": 0.06, "down": 0.08}
    t = dense_weights(rng, vocab, hidden, ff, layers, heads, kv, hidden // heads, True, std, qkv_bias=True)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: tokenizer {n_tok} tokens, config vocab {vocab}")


def make_qwen3():
    out = fresh("tiny-qwen3")
    n_tok, ids = qwen_tokenizer(out)
    vocab = n_tok
    hidden, ff, layers, heads, kv, hd = 192, 384, 3, 4, 2, 64
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"], "dtype": "float16", "eos_token_id": ids["<|im_end|>"],
        "head_dim": hd, "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": ff, "layer_types": ["full_attention"] * layers, "max_position_embeddings": 40960,
        "max_window_layers": layers, "model_type": "qwen3", "num_attention_heads": heads,
        "num_hidden_layers": layers, "num_key_value_heads": kv, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "sliding_window": None,
        "tie_word_embeddings": False, "transformers_version": "5.0.0", "use_cache": True,
        "use_sliding_window": False, "vocab_size": vocab,
    })
    rng = np.random.default_rng(44)
    std = {"emb": 0.3, "head": 0.2, "qk": 0.08, "v": 0.06, "o": 0.08, "ff": 0.06, "down": 0.08}
    t = dense_weights(rng, vocab, hidden, ff, layers, heads, kv, hd, False, std, qk_norm=True)
    save_shards(t, out, 2, save_f16)
    print(f"{out}: tokenizer {n_tok} tokens, head_dim {hd} x {heads} heads != hidden {hidden}")


PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
              "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
PHI3_CHAT_TEMPLATE = ("{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + "
                      "'<|end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def make_phi3():
    import sentencepiece as spm

    out = fresh("tiny-phi3")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3), model_writer=model, vocab_size=400, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        add_dummy_prefix=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_by_unicode_script=True, split_by_whitespace=True,
        max_sentencepiece_length=16, character_coverage=0.98, num_threads=1, minloglevel=2)
    proto = model.getvalue()
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    n_sp = sp.get_piece_size()
    # Phi-3's tokenizer.json is the Llama-2 (legacy) form; its added tokens follow the pieces.
    tok, _ = BASE.spm_tokenizer_json(sp, legacy=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in PHI3_ADDED])
    ids = {s: tok.token_to_id(s) for s in PHI3_ADDED}
    assert ids["<|endoftext|>"] == n_sp
    tok.save(os.path.join(out, "tokenizer.json"))
    write_json(os.path.join(out, "added_tokens.json"), ids)
    decoder = BASE.added_tokens_decoder(tok, ["<unk>", "<s>", "</s>"] + PHI3_ADDED)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
        "bos_token": "<s>", "chat_template": PHI3_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "legacy": False, "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "padding_side": "left", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False,
    })
    vocab = 448  # > tokenizer.model + added tokens: [PAD] entries
    hidden, ff, layers, heads, kv = 256, 512, 2, 4, 2
    hd = hidden // heads
    rope_dims = int(0.75 * hidden) // heads
    rng = np.random.default_rng(55)
    short = [round(float(x), 4) for x in 1.0 + 0.5 * rng.random(rope_dims // 2)]
    long = [round(float(x), 4) for x in 1.0 + 20.0 * rng.random(rope_dims // 2)]
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": ids["<|endoftext|>"], "hidden_act": "silu",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": ff,
        "max_position_embeddings": 131072, "model_type": "phi3", "num_attention_heads": heads,
        "num_hidden_layers": layers, "num_key_value_heads": kv, "original_max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"], "partial_rotary_factor": 0.75, "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-5, "rope_scaling": {"long_factor": long, "short_factor": short, "type": "longrope"},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": True, "torch_dtype": "float16",
        "transformers_version": "4.43.3", "use_cache": True, "vocab_size": vocab,
    })
    std = {"emb": 0.25, "qk": 0.08, "v": 0.06, "o": 0.08, "ff": 0.06, "down": 0.08}
    t = dense_weights(rng, vocab, hidden, ff, layers, heads, kv, hd, True, std)
    fused = {}
    for name, w in t.items():
        if ".self_attn.q_proj." in name:
            p = name.split("self_attn.")[0]
            fused[p + "self_attn.qkv_proj.weight"] = np.concatenate(
                [w, t[p + "self_attn.k_proj.weight"], t[p + "self_attn.v_proj.weight"]])
        elif ".self_attn.k_proj." in name or ".self_attn.v_proj." in name or ".mlp.up_proj." in name:
            continue
        elif ".mlp.gate_proj." in name:
            p = name.split("mlp.")[0]
            fused[p + "mlp.gate_up_proj.weight"] = np.concatenate([w, t[p + "mlp.up_proj.weight"]])
        else:
            fused[name] = w
    save_f16(fused, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_sp} pieces + {len(PHI3_ADDED)} added tokens, config vocab {vocab}, rope dims {rope_dims}")


GEMMA_TURNS = ["<start_of_turn>", "<end_of_turn>"]
GEMMA_CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + "
                       "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
                       "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")


def gemma_tokenizer(out):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3), model_writer=model, vocab_size=420, model_type="bpe",
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", user_defined_symbols=GEMMA_TURNS,
        split_digits=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_by_unicode_script=True,
        split_by_whitespace=True, max_sentencepiece_length=16, character_coverage=0.98, num_threads=1,
        minloglevel=2)
    proto = model.getvalue()
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab, merges = BASE.spm_merges(sp)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"] + GEMMA_TURNS
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = sp.bos_id()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", bos)])
    for text in BASE.SAMPLE_TEXTS + CORPUS + BASE.rng_texts(7, 2000):
        want = [bos] + sp.encode(text)
        got = tok.encode(text).ids
        assert got == want, (text, got, want)
    assert tok.get_vocab_size() == sp.get_piece_size(), "added tokens are pieces of the model"
    tok.save(os.path.join(out, "tokenizer.json"))
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": BASE.added_tokens_decoder(tok, specials),
        "bos_token": "<bos>", "chat_template": GEMMA_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>", "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>",
        "sp_model_kwargs": {}, "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>", "use_default_system_prompt": False,
    })
    return sp.get_piece_size(), bos, sp.eos_id()


def gemma_weights(rng, vocab, hidden, ff, layers, heads, kv, hd, qk_norm, std):
    t = dense_weights(rng, vocab, hidden, ff, layers, heads, kv, hd, True, std, qk_norm=qk_norm)
    for i in range(layers):
        p = f"model.layers.{i}."
        # Gemma stores w with the norm computing x * (1 + w): small values around 0
        for n in ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"]:
            t[p + n + ".weight"] = (0.2 * rng.standard_normal(hidden)).astype(np.float32)
        if qk_norm:
            t[p + "self_attn.q_norm.weight"] = (0.3 * rng.standard_normal(hd)).astype(np.float32)
            t[p + "self_attn.k_norm.weight"] = (0.3 * rng.standard_normal(hd)).astype(np.float32)
    t["model.norm.weight"] = (0.2 * rng.standard_normal(hidden)).astype(np.float32)
    return t


def make_gemma3():
    out = fresh("tiny-gemma3")
    n_vocab, bos, eos = gemma_tokenizer(out)
    hidden, ff, layers, heads, kv, hd = 128, 256, 6, 4, 1, 64
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "bos_token_id": bos, "cache_implementation": "hybrid", "eos_token_id": [eos, 4],
        "final_logit_softcapping": None, "head_dim": hd, "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": ff, "max_position_embeddings": 32768,
        "model_type": "gemma3_text", "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": kv, "pad_token_id": 0, "query_pre_attn_scalar": hd, "rms_norm_eps": 1e-6,
        "rope_local_base_freq": 10000.0, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 16,
        "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
        "use_cache": True, "vocab_size": n_vocab,
    })
    rng = np.random.default_rng(66)
    # Gemma scales embeddings by sqrt(hidden): a small std keeps the residual comparable to
    # what each (post-normed) sublayer adds, so every layer moves the logits
    std = {"emb": 0.1, "qk": 0.15, "v": 0.1, "o": 0.1, "ff": 0.1, "down": 0.1}
    t = gemma_weights(rng, n_vocab, hidden, ff, layers, heads, kv, hd, True, std)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_vocab} pieces, {layers} layers (sliding pattern 6)")


def make_gemma2():
    out = fresh("tiny-gemma2")
    n_vocab, bos, eos = gemma_tokenizer(out)
    hidden, ff, layers, heads, kv, hd = 128, 256, 2, 4, 2, 32
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0, "bos_token_id": bos, "cache_implementation": "hybrid", "eos_token_id": [eos, 4],
        "final_logit_softcapping": 30.0, "head_dim": hd, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": ff, "max_position_embeddings": 8192, "model_type": "gemma2",
        "num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": kv, "pad_token_id": 0,
        "query_pre_attn_scalar": hd, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 16,
        "torch_dtype": "float16", "transformers_version": "4.42.4", "use_cache": True, "vocab_size": n_vocab,
    })
    rng = np.random.default_rng(77)
    std = {"emb": 0.1, "qk": 0.15, "v": 0.1, "o": 0.1, "ff": 0.1, "down": 0.1}
    t = gemma_weights(rng, n_vocab, hidden, ff, layers, heads, kv, hd, False, std)
    t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()  # tied, but saved (the converter drops it)
    save_f16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_vocab} pieces, f16, lm_head saved")


def moe_layers(rng, t, layers, hidden, n_exp, ff_exp, names, router, std):
    """Replace the dense MLP of every layer by n_exp experts under HF names
    names = (prefix, gate, up, down) and a router."""
    def w(rows, cols, s):
        return (rng.standard_normal((rows, cols)) * s).astype(np.float32)

    for i in range(layers):
        p = f"model.layers.{i}."
        for k in ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"):
            t.pop(p + k)
        pre, gate, up, down = names
        t[p + router] = w(n_exp, hidden, 0.5)
        for x in range(n_exp):
            e = f"{p}{pre}.{x}."
            t[e + gate + ".weight"] = w(ff_exp, hidden, std["ff"])
            t[e + up + ".weight"] = w(ff_exp, hidden, std["ff"])
            t[e + down + ".weight"] = w(hidden, ff_exp, std["down"])
    return t


def make_qwen3moe():
    out = fresh("tiny-qwen3moe")
    n_tok, ids = qwen_tokenizer(out)
    hidden, layers, heads, kv, hd, n_exp, used, ff_exp = 128, 2, 4, 2, 64, 4, 2, 128
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"], "decoder_sparse_step": 1, "dtype": "bfloat16",
        "eos_token_id": ids["<|im_end|>"], "head_dim": hd, "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": 384, "max_position_embeddings": 40960,
        "max_window_layers": layers, "mlp_only_layers": [], "model_type": "qwen3_moe",
        "moe_intermediate_size": ff_exp, "norm_topk_prob": True, "num_attention_heads": heads,
        "num_experts": n_exp, "num_experts_per_tok": used, "num_hidden_layers": layers,
        "num_key_value_heads": kv, "output_router_logits": False, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "router_aux_loss_coef": 0.001,
        "sliding_window": None, "tie_word_embeddings": False, "transformers_version": "5.0.0",
        "use_cache": True, "use_sliding_window": False, "vocab_size": n_tok,
    })
    rng = np.random.default_rng(88)
    std = {"emb": 0.3, "head": 0.2, "qk": 0.08, "v": 0.06, "o": 0.08, "ff": 0.08, "down": 0.08}
    t = dense_weights(rng, n_tok, hidden, 256, layers, heads, kv, hd, False, std, qk_norm=True)
    t = moe_layers(rng, t, layers, hidden, n_exp, ff_exp, ("mlp.experts", "gate_proj", "up_proj", "down_proj"),
                   "mlp.gate.weight", std)
    save_shards(dict(sorted(t.items())), out, 2, lambda ts, path: save_bf16(ts, path))
    print(f"{out}: {n_exp} experts ({used} used), moe_intermediate_size {ff_exp}")


def make_qwen2moe():
    out = fresh("tiny-qwen2moe")
    n_tok, ids = qwen_tokenizer(out)
    hidden, layers, heads, kv, n_exp, used, ff_exp, ff_sh = 128, 2, 4, 2, 4, 2, 64, 128
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"],
        "decoder_sparse_step": 1, "eos_token_id": ids["<|im_end|>"], "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": 256, "max_position_embeddings": 8192,
        "max_window_layers": layers, "model_type": "qwen2_moe", "moe_intermediate_size": ff_exp,
        "norm_topk_prob": False, "num_attention_heads": heads, "num_experts": n_exp, "num_experts_per_tok": used,
        "num_hidden_layers": layers, "num_key_value_heads": kv, "output_router_logits": False,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
        "shared_expert_intermediate_size": ff_sh, "sliding_window": 32768, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.40.0.dev0", "use_cache": True,
        "use_sliding_window": False, "vocab_size": n_tok,
    })
    rng = np.random.default_rng(99)
    std = {"emb": 0.3, "head": 0.2, "qk": 0.08, "v": 0.06, "o": 0.08, "ff": 0.08, "down": 0.08}
    t = dense_weights(rng, n_tok, hidden, 256, layers, heads, kv, hidden // heads, False, std, qkv_bias=True)
    t = moe_layers(rng, t, layers, hidden, n_exp, ff_exp, ("mlp.experts", "gate_proj", "up_proj", "down_proj"),
                   "mlp.gate.weight", std)
    for i in range(layers):
        p = f"model.layers.{i}.mlp."
        t[p + "shared_expert.gate_proj.weight"] = (rng.standard_normal((ff_sh, hidden)) * 0.08).astype(np.float32)
        t[p + "shared_expert.up_proj.weight"] = (rng.standard_normal((ff_sh, hidden)) * 0.08).astype(np.float32)
        t[p + "shared_expert.down_proj.weight"] = (rng.standard_normal((hidden, ff_sh)) * 0.08).astype(np.float32)
        t[p + "shared_expert_gate.weight"] = (rng.standard_normal((1, hidden)) * 0.3).astype(np.float32)
    save_f16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_exp} experts ({used} used) + shared expert {ff_sh}")


def make_mixtral():
    out = fresh("tiny-mixtral")
    n_tok, ids = qwen_tokenizer(out)
    hidden, ff, layers, heads, kv, n_exp, used = 128, 128, 2, 4, 2, 8, 2
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"], "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": ff, "max_position_embeddings": 32768, "model_type": "mixtral",
        "num_attention_heads": heads, "num_experts_per_tok": used, "num_hidden_layers": layers,
        "num_key_value_heads": kv, "num_local_experts": n_exp, "output_router_logits": False,
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0",
        "use_cache": True, "vocab_size": n_tok,
    })
    rng = np.random.default_rng(111)
    std = {"emb": 0.3, "head": 0.2, "qk": 0.1, "v": 0.06, "o": 0.08, "ff": 0.08, "down": 0.08}
    t = dense_weights(rng, n_tok, hidden, ff, layers, heads, kv, hidden // heads, False, std)
    t = moe_layers(rng, t, layers, hidden, n_exp, ff, ("block_sparse_moe.experts", "w1", "w3", "w2"),
                   "block_sparse_moe.gate.weight", std)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_exp} experts ({used} used)")


def bpe_tokenizer(out, kind, specials, bos=None, eos=None, add_bos=False, specials_first=False):
    """A byte-level BPE tokenizer.json + tokenizer_config.json of one of the shapes:
    'llama3' (Split(Llama-3 regex) + ByteLevel(use_regex=false)) or 'digits' (Digits(individual)
    + ByteLevel(use_regex=true)). ignore_merges is false. Returns (size, ids)."""
    tok = Tokenizer(models.BPE(ignore_merges=False))
    if kind == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(BASE.LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=470, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials if specials_first else [])
    tok.train_from_iterator(CORPUS * 3, trainer)
    if not specials_first:
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    else:
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    ids = {s: tok.token_to_id(s) for s in specials}
    if add_bos:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                          special_tokens=[(bos, ids[bos])])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(os.path.join(out, "tokenizer.json"))
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": add_bos, "add_prefix_space": False,
        "added_tokens_decoder": BASE.added_tokens_decoder(tok, specials), "bos_token": bos,
        "chat_template": CHATML_TEMPLATE.replace("<|im_start|>", specials[-2]).replace("<|im_end|>", specials[-1]),
        "clean_up_tokenization_spaces": False, "eos_token": eos, "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer" if kind == "digits" else "PreTrainedTokenizerFast",
        **({"unk_token": eos, "pad_token": eos} if kind == "digits" else {}),
    })
    n = tok.get_vocab_size()
    assert n == max(tok.get_vocab().values()) + 1
    return n, ids


def make_olmo2():
    out = fresh("tiny-olmo2")
    n_tok, ids = bpe_tokenizer(out, "llama3", ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"],
                               bos="<|endoftext|>", eos="<|endoftext|>")
    hidden, ff, layers, heads, kv = 128, 256, 2, 4, 2
    hd = hidden // heads
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": None, "eos_token_id": ids["<|endoftext|>"], "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": ff, "max_position_embeddings": 4096, "model_type": "olmo2",
        "num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": kv,
        "pad_token_id": ids["<|pad|>"], "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 500000,
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.48.0",
        "use_cache": True, "vocab_size": n_tok,
    })
    rng = np.random.default_rng(121)
    std = {"emb": 0.3, "head": 0.2, "qk": 0.1, "v": 0.08, "o": 0.08, "ff": 0.08, "down": 0.08}
    t = dense_weights(rng, n_tok, hidden, ff, layers, heads, kv, hd, False, std)
    for i in range(layers):
        p = f"model.layers.{i}."
        t.pop(p + "input_layernorm.weight")
        t[p + "post_feedforward_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "self_attn.q_norm.weight"] = (1.0 + 0.3 * rng.standard_normal(heads * hd)).astype(np.float32)
        t[p + "self_attn.k_norm.weight"] = (1.0 + 0.3 * rng.standard_normal(kv * hd)).astype(np.float32)
    save_f16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_tok} tokens")


def make_smollm3():
    out = fresh("tiny-smollm3")
    n_tok, ids = bpe_tokenizer(out, "llama3", ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"],
                               bos="<|begin_of_text|>", eos="<|im_end|>", add_bos=True)
    hidden, ff, layers, heads, kv = 128, 256, 4, 4, 2
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["SmolLM3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": ids["<|im_end|>"], "hidden_act": "silu",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": ff, "max_position_embeddings": 65536,
        "max_window_layers": layers, "mlp_bias": False, "model_type": "smollm3", "no_rope_layer_interval": 4,
        "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(layers)], "num_attention_heads": heads,
        "num_hidden_layers": layers, "num_key_value_heads": kv, "pad_token_id": ids["<|end_of_text|>"],
        "pretraining_tp": 2, "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 5000000.0,
        "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.54.0.dev0", "use_cache": False, "use_sliding_window": False, "vocab_size": n_tok,
    })
    rng = np.random.default_rng(131)
    std = {"emb": 0.3, "qk": 0.1, "v": 0.08, "o": 0.08, "ff": 0.08, "down": 0.08}
    t = dense_weights(rng, n_tok, hidden, ff, layers, heads, kv, hidden // heads, True, std)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_tok} tokens, layer 3 NoPE")


def make_granite():
    out = fresh("tiny-granite")
    specials = ["<|end_of_text|>", "<fim_prefix>", "<|start_of_role|>", "<|end_of_role|>"]
    n_tok, ids = bpe_tokenizer(out, "digits", specials, bos="<|end_of_text|>", eos="<|end_of_text|>",
                               specials_first=True)
    hidden, ff, layers, heads, kv = 128, 256, 2, 4, 2
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["GraniteForCausalLM"], "attention_bias": False, "attention_dropout": 0.1,
        "attention_multiplier": 0.03125, "bos_token_id": ids["<|end_of_text|>"], "embedding_multiplier": 12.0,
        "eos_token_id": ids["<|end_of_text|>"], "head_dim": 32, "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": ff, "logits_scaling": 4.0, "max_position_embeddings": 4096,
        "mlp_bias": False, "model_type": "granite", "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": kv, "pad_token_id": ids["<|end_of_text|>"], "residual_multiplier": 0.22,
        "rms_norm_eps": 1e-5, "rope_scaling": None, "rope_theta": 10000000.0, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "transformers_version": "4.46.0.dev0", "use_cache": True, "vocab_size": n_tok,
    })
    rng = np.random.default_rng(141)
    std = {"emb": 0.05, "qk": 0.15, "v": 0.15, "o": 0.3, "ff": 0.1, "down": 0.3}
    t = dense_weights(rng, n_tok, hidden, ff, layers, heads, kv, hidden // heads, True, std)
    save_bf16(t, os.path.join(out, "model.safetensors"))
    print(f"{out}: {n_tok} tokens, multipliers")


if __name__ == "__main__":
    make_olmo2()
    make_smollm3()
    make_granite()
    make_qwen3moe()
    make_qwen2moe()
    make_mixtral()
    make_qwen2()
    make_qwen3()
    make_phi3()
    make_gemma3()
    make_gemma2()
