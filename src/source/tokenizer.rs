//! Tokenizer files of a Hugging Face model folder, turned into the vocabulary llama.cpp needs.
//!
//! Three shapes are understood:
//! - byte-level BPE from `tokenizer.json` (GPT-2 / Llama-3 style) → llama.cpp's `gpt2` model,
//!   with the pre-tokenizer recognised from the pre_tokenizer's structure and regex;
//! - SentencePiece from `tokenizer.model` (its protobuf, parsed here) → `llama`;
//! - SentencePiece-style BPE from `tokenizer.json` alone (Metaspace / `▁` normalizer with byte
//!   fallback) → `llama`, with scores rebuilt from the vocabulary order.
//!
//! Special tokens come from `tokenizer_config.json`, `tokenizer.json`'s `added_tokens` and
//! `config.json`; the chat template from `tokenizer_config.json` or `chat_template.jinja`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{HfConfig, SourceError};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The vocabulary as llama.cpp stores it under `tokenizer.ggml.*` and `tokenizer.chat_template`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    pub tokens: Vec<String>,
    /// SentencePiece scores (`llama` model only).
    pub scores: Option<Vec<f32>>,
    pub token_types: Vec<i32>,
    /// BPE merges as `"left right"` (`gpt2` model only).
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_sep: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

/// A byte-level BPE pre-tokenizer llama.cpp implements natively, identified by the regexes
/// its steps apply in order and, where names share regexes, the BPE model's `ignore_merges`.
struct KnownPre {
    name: &'static str,
    regexes: &'static [&'static str],
    ignore_merges: Option<bool>,
}

/// The GPT-2 regex, which `ByteLevel(use_regex=true)` applies implicitly.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's (and cl100k's) regex, shared by llama.cpp's `llama-bpe`, `smaug-bpe` and `dbrx`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const KNOWN_PRE: &[KnownPre] = &[
    KnownPre {
        name: "gpt-2",
        regexes: &[GPT2_REGEX],
        ignore_merges: None,
    },
    // llama.cpp's llama-bpe sets ignore_merges; smaug-bpe (and dbrx, the same pre-type
    // behaviour) does not: the model flag tells which one tokenizes like the source.
    KnownPre {
        name: "llama-bpe",
        regexes: &[LLAMA3_REGEX],
        ignore_merges: Some(true),
    },
    KnownPre {
        name: "smaug-bpe",
        regexes: &[LLAMA3_REGEX],
        ignore_merges: Some(false),
    },
    KnownPre {
        name: "qwen2",
        regexes: &[
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        ignore_merges: None,
    },
    // Digits(individual_digits) then ByteLevel(use_regex): SmolLM/SmolLM2 (`smollm`); Granite's
    // converter output names the same pre-type behaviour `refact`.
    KnownPre {
        name: "smollm",
        regexes: &[r"\p{N}", GPT2_REGEX],
        ignore_merges: None,
    },
];

/// Every `tokenizer.ggml.pre` string llama.cpp accepts for BPE vocabularies (`--pre`).
pub const LLAMA_CPP_PRE_NAMES: &[&str] = &[
    "default",
    "minicpm5",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "youtu",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "whitespace",
    "refact",
    "command-r",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "qwen35",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "glm4",
    "chatglm-bpe",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "exaone4",
    "exaone-moe",
    "chameleon",
    "minerva-7b",
    "megrez",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "trillion",
    "granite-docling",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "joyai-llm",
    "kimi-k2",
    "grok-2",
    "afmoe",
    "laguna",
    "minimax-m2",
    "solar-open",
    "mellum2",
];

fn tok_err(path: &Path, msg: impl Into<String>) -> SourceError {
    SourceError::Tokenizer {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn read_json(path: &Path) -> Result<Value, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| SourceError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// The tokenizer files found in a model folder.
struct Files {
    dir: PathBuf,
    /// `tokenizer.ggml.pre` chosen by the user (`--pre`), instead of recognising it.
    pre_override: Option<String>,
    tokenizer_json: Option<Value>,
    tokenizer_config: Option<Value>,
}

impl Files {
    fn json_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// Which of llama.cpp's converter vocabulary builders to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VocabStyle {
    /// `TextModel`'s: SentencePiece from tokenizer.model, else byte-level BPE.
    #[default]
    Default,
    /// `LlamaModel.set_vocab`: as `Default`, plus `add_space_prefix` from tokenizer_config.json's
    /// `add_prefix_space` whatever the tokenizer kind.
    Llama,
    /// `Phi3MiniModel.set_vocab`: SentencePiece whose added tokens (added_tokens.json,
    /// tokenizer_config.json's `added_tokens_decoder`, tokenizer.json's `added_tokens`, in that
    /// order) override any id with score -1000, CONTROL when `special` else USER_DEFINED; or
    /// byte-level BPE when tokenizer_config.json says `GPT2Tokenizer` (Phi-4).
    Phi3,
}

/// Load the vocabulary of the model folder `dir`. `vocab_size` from config.json pads the
/// token list with `[PAD{i}]` entries as llama.cpp's converter does.
pub fn load_vocab(dir: &Path, config: &HfConfig, style: VocabStyle) -> Result<Vocab, SourceError> {
    load_vocab_with(dir, config, style, None)
}

/// [`load_vocab`] with the byte-level pre-tokenizer name chosen by the caller (one of
/// [`LLAMA_CPP_PRE_NAMES`]) instead of recognised from tokenizer.json.
pub fn load_vocab_with(
    dir: &Path,
    config: &HfConfig,
    style: VocabStyle,
    pre: Option<&str>,
) -> Result<Vocab, SourceError> {
    if let Some(p) = pre.filter(|p| !LLAMA_CPP_PRE_NAMES.contains(p)) {
        return Err(tok_err(
            dir,
            format!(
                "--pre {p}: llama.cpp knows no such pre-tokenizer (it accepts: {})",
                LLAMA_CPP_PRE_NAMES.join(", ")
            ),
        ));
    }
    let tj = dir.join("tokenizer.json");
    let tc = dir.join("tokenizer_config.json");
    let files = Files {
        dir: dir.to_path_buf(),
        pre_override: pre.map(str::to_string),
        tokenizer_json: tj.is_file().then(|| read_json(&tj)).transpose()?,
        tokenizer_config: tc.is_file().then(|| read_json(&tc)).transpose()?,
    };
    let spm = dir.join("tokenizer.model");
    let gpt2_class = files
        .tokenizer_config
        .as_ref()
        .and_then(|c| c.get("tokenizer_class"))
        .and_then(|c| c.as_str())
        == Some("GPT2Tokenizer");
    let mut vocab = if style == VocabStyle::Phi3 && !gpt2_class {
        let bytes = std::fs::read(&spm).map_err(|source| SourceError::Io {
            path: spm.clone(),
            source,
        })?;
        sentencepiece_vocab(&spm, &bytes, &files, config, style)?
    } else if spm.is_file() && !(style == VocabStyle::Phi3 && gpt2_class) {
        let bytes = std::fs::read(&spm).map_err(|source| SourceError::Io {
            path: spm.clone(),
            source,
        })?;
        sentencepiece_vocab(&spm, &bytes, &files, config, style)?
    } else if let Some(json) = &files.tokenizer_json {
        if is_byte_level(json) {
            byte_level_bpe_vocab(&files, json, config)?
        } else {
            spm_style_json_vocab(&files, json, config)?
        }
    } else {
        return Err(tok_err(
            dir,
            "no tokenizer.model or tokenizer.json in the model folder",
        ));
    };
    special_tokens(&mut vocab, &files, config, style);
    vocab.chat_template = chat_template(&files)?;
    Ok(vocab)
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json helpers

/// True when the tokenizer works on GPT-2 byte-level symbols.
fn is_byte_level(json: &Value) -> bool {
    fn has(v: &Value, ty: &str) -> bool {
        match v {
            Value::Object(o) => {
                o.get("type").and_then(|t| t.as_str()) == Some(ty)
                    || o.get("pretokenizers")
                        .and_then(|p| p.as_array())
                        .is_some_and(|a| a.iter().any(|x| has(x, ty)))
            }
            _ => false,
        }
    }
    json.get("pre_tokenizer")
        .is_some_and(|p| has(p, "ByteLevel"))
}

/// Identify a byte-level pre-tokenizer: the `Split` regexes it applies, in order, plus the
/// implicit GPT-2 regex of `ByteLevel(use_regex = true)`.
fn recognise_pre(json: &Value, path: &Path) -> Result<&'static str, SourceError> {
    let pre = json.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
    let parts: Vec<Value> = match pre.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_default(),
        Some(_) => vec![pre.clone()],
        None => Vec::new(),
    };
    let mut regexes = Vec::new();
    for p in &parts {
        match p.get("type").and_then(|t| t.as_str()) {
            Some("Split") => {
                let re = p
                    .get("pattern")
                    .and_then(|pat| pat.get("Regex").or_else(|| pat.get("String")))
                    .and_then(|r| r.as_str())
                    .unwrap_or("");
                regexes.push(re.to_string());
            }
            Some("Digits") => {
                let individual = p
                    .get("individual_digits")
                    .and_then(|i| i.as_bool())
                    .unwrap_or(false);
                regexes.push(if individual { r"\p{N}" } else { r"\p{N}+" }.to_string());
            }
            Some("ByteLevel") if p.get("use_regex").and_then(|u| u.as_bool()).unwrap_or(true) => {
                regexes.push(GPT2_REGEX.to_string());
            }
            Some("ByteLevel") => {}
            Some(other) => {
                return Err(tok_err(
                    path,
                    format!("byte-level pre-tokenizer contains an unsupported '{other}' step (choose one with --pre NAME if llama.cpp implements it)"),
                ))
            }
            None => {}
        }
    }
    let ignore_merges = json
        .get("model")
        .and_then(|m| m.get("ignore_merges"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if let Some(k) = KNOWN_PRE.iter().find(|k| {
        k.regexes.len() == regexes.len()
            && k.regexes.iter().zip(&regexes).all(|(a, b)| a == b)
            && k.ignore_merges.is_none_or(|i| i == ignore_merges)
    }) {
        return Ok(k.name);
    }
    let supported: Vec<&str> = KNOWN_PRE.iter().map(|k| k.name).collect();
    Err(tok_err(
        path,
        format!(
            "unrecognised byte-level BPE pre-tokenizer (regexes {regexes:?}); qforge recognises {} \
             from tokenizer.json; name the one llama.cpp should use with --pre NAME",
            supported.join(", ")
        ),
    ))
}

fn json_model_vocab(json: &Value, path: &Path) -> Result<Vec<(String, u32)>, SourceError> {
    let model = json
        .get("model")
        .ok_or_else(|| tok_err(path, "no \"model\" section"))?;
    let ty = model.get("type").and_then(|t| t.as_str()).unwrap_or("BPE");
    if ty != "BPE" {
        return Err(tok_err(
            path,
            format!("tokenizer model type '{ty}' is not supported (only BPE)"),
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| tok_err(path, "model.vocab is not an object"))?;
    vocab
        .iter()
        .map(|(k, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (k.clone(), id))
                .ok_or_else(|| tok_err(path, format!("model.vocab['{k}'] is not a token id")))
        })
        .collect()
}

/// Merges in both the `"a b"` string form and the `["a", "b"]` pair form. Spaces inside a
/// pair element are written as U+0120 as llama.cpp's converter does, so the string form
/// stays splittable on one space.
fn json_merges(json: &Value, path: &Path) -> Result<Vec<String>, SourceError> {
    let Some(merges) = json.get("model").and_then(|m| m.get("merges")) else {
        return Ok(Vec::new());
    };
    let arr = merges
        .as_array()
        .ok_or_else(|| tok_err(path, "model.merges is not an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => {
                let part = |v: &Value| v.as_str().map(|s| s.replace(' ', "\u{120}"));
                match (part(&pair[0]), part(&pair[1])) {
                    (Some(a), Some(b)) => Ok(format!("{a} {b}")),
                    _ => Err(tok_err(
                        path,
                        format!("model.merges[{i}] is not two strings"),
                    )),
                }
            }
            _ => Err(tok_err(
                path,
                format!("model.merges[{i}] is neither a string nor a pair"),
            )),
        })
        .collect()
}

#[derive(Clone, Debug)]
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
}

/// tokenizer.json's `added_tokens`: (id, content, special) of every entry that has both.
fn json_added_tokens(files: &Files) -> impl Iterator<Item = (u64, &str, bool)> {
    files
        .tokenizer_json
        .as_ref()
        .and_then(|j| j.get("added_tokens"))
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let id = t.get("id").and_then(|v| v.as_u64())?;
            let content = t.get("content").and_then(|v| v.as_str())?;
            Some((id, content, is_special(t)))
        })
}

/// tokenizer_config.json's `added_tokens_decoder`, the same way (ids are the object's keys).
fn config_added_tokens(files: &Files) -> impl Iterator<Item = (u64, &str, bool)> {
    files
        .tokenizer_config
        .as_ref()
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(|a| a.as_object())
        .into_iter()
        .flatten()
        .filter_map(|(id, t)| {
            let id = id.parse::<u64>().ok()?;
            let content = t.get("content").and_then(|v| v.as_str())?;
            Some((id, content, is_special(t)))
        })
}

fn is_special(t: &Value) -> bool {
    t.get("special").and_then(|v| v.as_bool()).unwrap_or(false)
}

fn added_tokens(files: &Files) -> Vec<AddedToken> {
    let mut out: Vec<AddedToken> = Vec::new();
    // tokenizer.json's list first; the config adds ids it does not have
    for (id, content, special) in json_added_tokens(files) {
        if let Ok(id) = u32::try_from(id) {
            out.push(AddedToken {
                id,
                content: content.to_string(),
                special,
            });
        }
    }
    for (id, content, special) in config_added_tokens(files) {
        let Ok(id) = u32::try_from(id) else { continue };
        if out.iter().any(|a| a.id == id) {
            continue;
        }
        out.push(AddedToken {
            id,
            content: content.to_string(),
            special,
        });
    }
    out
}

/// Text that llama.cpp's converter treats as a control token even when not marked special.
fn looks_special(s: &str) -> bool {
    (s.starts_with("<|") && s.ends_with("|>"))
        || (s.starts_with("<｜") && s.ends_with("｜>"))
        || s.starts_with("<unused")
        || matches!(s, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
}

fn added_type(t: &AddedToken) -> i32 {
    if t.special || looks_special(&t.content) {
        token_type::CONTROL
    } else {
        token_type::USER_DEFINED
    }
}

/// Size of the token table: the config's vocab_size, or one past the highest id.
fn table_size(
    base: &[(String, u32)],
    added: &[AddedToken],
    config: &HfConfig,
    path: &Path,
) -> Result<usize, SourceError> {
    let max_id = base
        .iter()
        .map(|(_, id)| *id)
        .chain(added.iter().map(|a| a.id))
        .max();
    table_size_for(max_id, config, path)
}

/// Largest vocabulary accepted (tables are allocated from the file's ids and sizes).
const MAX_VOCAB: usize = 1 << 24;

fn table_size_for(
    max_id: Option<u32>,
    config: &HfConfig,
    path: &Path,
) -> Result<usize, SourceError> {
    let needed = max_id.map_or(0, |m| m as usize + 1);
    // The token table is allocated from these numbers, so they are capped: real vocabularies
    // are below 2^20 entries.
    let largest = needed.max(config.vocab_size.unwrap_or(0) as usize);
    if largest > MAX_VOCAB {
        return Err(tok_err(
            path,
            format!("a vocabulary of {largest} tokens is implausible (at most {MAX_VOCAB})"),
        ));
    }
    match config.vocab_size {
        Some(n) if (n as usize) < needed => Err(tok_err(
            path,
            format!(
                "config.json vocab_size {n} is smaller than the tokenizer's highest id {}",
                needed - 1
            ),
        )),
        Some(n) => Ok(n as usize),
        None => Ok(needed),
    }
}

fn byte_level_bpe_vocab(
    files: &Files,
    json: &Value,
    config: &HfConfig,
) -> Result<Vocab, SourceError> {
    let path = files.json_path();
    let pre: String = match &files.pre_override {
        Some(p) => p.clone(),
        None => recognise_pre(json, &path)?.to_string(),
    };
    let base = json_model_vocab(json, &path)?;
    let added = added_tokens(files);
    let n = table_size(&base, &added, config, &path)?;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![token_type::UNUSED; n];
    for (tok, id) in base {
        tokens[id as usize] = Some(tok);
        types[id as usize] = token_type::NORMAL;
    }
    for a in &added {
        tokens[a.id as usize] = Some(a.content.clone());
        types[a.id as usize] = added_type(a);
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    Ok(Vocab {
        model: "gpt2".into(),
        pre,
        tokens,
        scores: None,
        token_types: types,
        merges: json_merges(json, &path)?,
        ..Vocab::default()
    })
}

/// tokenizer.json of a SentencePiece BPE model (Llama-2 style) without tokenizer.model.
fn spm_style_json_vocab(
    files: &Files,
    json: &Value,
    config: &HfConfig,
) -> Result<Vocab, SourceError> {
    let path = files.json_path();
    let model = json.get("model").cloned().unwrap_or(Value::Null);
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let text = json.to_string();
    let spm_like =
        text.contains("\u{2581}") && (text.contains("Metaspace") || text.contains("Prepend"));
    if !spm_like {
        return Err(tok_err(
            &path,
            "tokenizer.json is neither byte-level BPE nor SentencePiece-style (no ByteLevel pre-tokenizer, no Metaspace/▁ normalizer)",
        ));
    }
    let base = json_model_vocab(json, &path)?;
    let added = added_tokens(files);
    let unk = model
        .get("unk_token")
        .and_then(|u| u.as_str())
        .map(str::to_string);
    let n = table_size(&base, &added, config, &path)?;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![token_type::UNUSED; n];
    let mut scores = vec![-1000.0f32; n];
    let mut by_id: Vec<(u32, String)> = base.into_iter().map(|(t, id)| (id, t)).collect();
    by_id.sort();
    // SentencePiece BPE scores a normal piece by minus its merge rank; vocab ids follow that
    // rank, so rebuilding the score from the id order reproduces the merge priority.
    let mut rank = 0u32;
    for (id, tok) in by_id {
        let i = id as usize;
        let is_byte = byte_fallback
            && tok.len() == 6
            && tok.starts_with("<0x")
            && tok.ends_with('>')
            && u8::from_str_radix(&tok[3..5], 16).is_ok();
        if Some(&tok) == unk.as_ref() {
            types[i] = token_type::UNKNOWN;
            scores[i] = 0.0;
        } else if is_byte {
            types[i] = token_type::BYTE;
            scores[i] = 0.0;
        } else {
            types[i] = token_type::NORMAL;
            scores[i] = -(rank as f32);
            rank += 1;
        }
        tokens[i] = Some(tok);
    }
    for a in &added {
        let i = a.id as usize;
        if Some(&a.content) == unk.as_ref() {
            continue;
        }
        // Control tokens of the base vocabulary (<s>, </s>) keep score 0 like SentencePiece.
        let ty = added_type(a);
        types[i] = ty;
        scores[i] = if ty == token_type::CONTROL {
            0.0
        } else {
            -1000.0
        };
        tokens[i] = Some(if ty == token_type::USER_DEFINED {
            a.content.replace('\u{2581}', " ")
        } else {
            a.content.clone()
        });
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    Ok(Vocab {
        model: "llama".into(),
        pre: "default".into(),
        tokens,
        scores: Some(scores),
        token_types: types,
        add_space_prefix: Some(true),
        ..Vocab::default()
    })
}

// ---------------------------------------------------------------------------------------------
// tokenizer.model (SentencePiece ModelProto)

/// A minimal protobuf reader: just what ModelProto needs.
struct Proto<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Proto<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Next field: (field number, wire type, payload). Payload is the slice for
    /// length-delimited fields, the raw bytes for fixed ones, empty for varints (value in .3).
    fn field(&mut self) -> Option<(u64, u8, &'a [u8], u64)> {
        let key = self.varint()?;
        let (num, wt) = (key >> 3, (key & 7) as u8);
        match wt {
            0 => Some((num, wt, &[], self.varint()?)),
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
                self.pos += n;
                Some((num, wt, s, 0))
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let s = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
                self.pos += len;
                Some((num, wt, s, 0))
            }
            _ => None,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// A SentencePiece piece: text, score, type.
type Piece = (String, f32, i32);

/// Pieces (text, score, type) and `normalizer_spec.add_dummy_prefix` from a ModelProto.
fn parse_model_proto(bytes: &[u8], path: &Path) -> Result<(Vec<Piece>, bool), SourceError> {
    let mut p = Proto { buf: bytes, pos: 0 };
    let mut pieces = Vec::new();
    let mut add_dummy_prefix = true;
    while !p.done() {
        let at = p.pos;
        let (num, wt, payload, _) = p
            .field()
            .ok_or_else(|| tok_err(path, format!("malformed protobuf at byte {at}")))?;
        match (num, wt) {
            (1, 2) => {
                let mut q = Proto {
                    buf: payload,
                    pos: 0,
                };
                let (mut text, mut score, mut ty) = (String::new(), 0.0f32, token_type::NORMAL);
                while !q.done() {
                    let (n, w, s, v) = q.field().ok_or_else(|| {
                        tok_err(
                            path,
                            format!("malformed piece {} at byte {at}", pieces.len()),
                        )
                    })?;
                    match (n, w) {
                        (1, 2) => {
                            text = String::from_utf8(s.to_vec()).map_err(|_| {
                                tok_err(path, format!("piece {} is not UTF-8", pieces.len()))
                            })?
                        }
                        (2, 5) => score = f32::from_le_bytes(s.try_into().expect("4 bytes")),
                        (3, 0) => ty = v as i32,
                        _ => {}
                    }
                }
                pieces.push((text, score, ty));
            }
            (3, 2) => {
                let mut q = Proto {
                    buf: payload,
                    pos: 0,
                };
                while !q.done() {
                    let (n, w, _, v) = q
                        .field()
                        .ok_or_else(|| tok_err(path, "malformed normalizer_spec"))?;
                    if (n, w) == (3, 0) {
                        add_dummy_prefix = v != 0;
                    }
                }
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        return Err(tok_err(path, "no pieces: not a SentencePiece model"));
    }
    Ok((pieces, add_dummy_prefix))
}

fn sentencepiece_vocab(
    path: &Path,
    bytes: &[u8],
    files: &Files,
    config: &HfConfig,
    style: VocabStyle,
) -> Result<Vocab, SourceError> {
    // llama.cpp's `_create_vocab_sentencepiece` (and Phi3MiniModel's variant): the pieces
    // (user-defined ones count as NORMAL), [PAD{i}] up to config.json's vocab_size, then
    // added tokens override their ids with score -1000. add_space_prefix is not written here
    // (LlamaModel writes it only from tokenizer_config.json's add_prefix_space).
    let (pieces, _) = parse_model_proto(bytes, path)?;
    let max_id = (pieces.len() as u32).checked_sub(1);
    let n = table_size_for(max_id, config, path)?;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![token_type::UNUSED; n];
    for (i, (text, score, ty)) in pieces.into_iter().enumerate() {
        tokens[i] = text;
        scores[i] = score;
        types[i] = match ty {
            2 | 3 | 5 | 6 => ty,
            _ => token_type::NORMAL,
        };
    }
    let mut set = |id: u64, content: String, ty: i32| {
        if let Some(i) = usize::try_from(id).ok().filter(|&i| i < n) {
            tokens[i] = content;
            scores[i] = -1000.0;
            types[i] = ty;
        }
    };
    let added_json = files.dir.join("added_tokens.json");
    if added_json.is_file() {
        if let Value::Object(map) = read_json(&added_json)? {
            for (content, id) in map {
                if let Some(id) = id.as_u64() {
                    set(id, content, token_type::USER_DEFINED);
                }
            }
        }
    }
    // Generic: tokenizer_config.json's added_tokens_decoder, CONTROL when special or
    // special-looking, else USER_DEFINED with "▁" as a space. Phi-3: that list and then
    // tokenizer.json's added_tokens, CONTROL only when special, text as is.
    let mut added: Vec<(u64, String, bool)> = config_added_tokens(files)
        .map(|(id, content, special)| (id, content.to_string(), special))
        .collect();
    if style == VocabStyle::Phi3 {
        added.extend(
            json_added_tokens(files)
                .map(|(id, content, special)| (id, content.to_string(), special)),
        );
    }
    for (id, content, is_special) in added {
        if style == VocabStyle::Phi3 {
            let ty = if is_special {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            set(id, content, ty);
        } else if is_special || looks_special(&content) {
            set(id, content, token_type::CONTROL);
        } else {
            set(
                id,
                content.replace('\u{2581}', " "),
                token_type::USER_DEFINED,
            );
        }
    }
    Ok(Vocab {
        model: "llama".into(),
        pre: "default".into(),
        tokens,
        scores: Some(scores),
        token_types: types,
        ..Vocab::default()
    })
}

// ---------------------------------------------------------------------------------------------
// special tokens and chat template

fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn special_tokens(vocab: &mut Vocab, files: &Files, config: &HfConfig, style: VocabStyle) {
    let index: HashMap<&str, u32> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let n = vocab.tokens.len() as u64;
    let from_config = |key: &str| -> Option<u32> {
        let c = files.tokenizer_config.as_ref()?;
        let content = token_content(c.get(key)?)?;
        index.get(content.as_str()).copied()
    };
    let valid = |id: Option<u64>| id.filter(|&i| i < n).map(|i| i as u32);
    vocab.bos = from_config("bos_token").or(valid(config.bos_token_id));
    vocab.eos = from_config("eos_token").or(valid(config.eos_token_id));
    vocab.unk = from_config("unk_token");
    vocab.pad = from_config("pad_token").or(valid(config.pad_token_id));
    if vocab.unk.is_none() && vocab.model == "llama" {
        vocab.unk = vocab
            .token_types
            .iter()
            .position(|&t| t == token_type::UNKNOWN)
            .map(|i| i as u32);
    }
    let flag = |key: &str| -> Option<bool> {
        files
            .tokenizer_config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| v.as_bool())
    };
    // gguf-py's SpecialVocab: what the post-processor implies wins over tokenizer_config.json,
    // which only fills what the post-processor leaves unset.
    let content =
        |key: &str| -> Option<String> { token_content(files.tokenizer_config.as_ref()?.get(key)?) };
    let post = files
        .tokenizer_json
        .as_ref()
        .map_or(PostSpecials::default(), |j| {
            post_processor_specials(j, content("eos_token"), content("sep_token"))
        });
    vocab.add_bos = post.bos.or_else(|| flag("add_bos_token"));
    vocab.add_sep = post.sep.or_else(|| flag("add_sep_token"));
    vocab.add_eos = post.eos.or_else(|| flag("add_eos_token"));
    if style == VocabStyle::Llama {
        if let Some(prefix) = flag("add_prefix_space") {
            vocab.add_space_prefix = Some(prefix);
        }
    }
}

/// What a tokenizer.json post-processor says about adding BOS / EOS / SEP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PostSpecials {
    bos: Option<bool>,
    eos: Option<bool>,
    sep: Option<bool>,
}

/// Whether the post-processor adds BOS / EOS / SEP, as gguf-py's SpecialVocab reads it: a
/// `ByteLevel` step says "neither" unless something already decided; a `TemplateProcessing`
/// step whose `single` template has more than one piece adds BOS when it starts with a special
/// token and EOS when it ends with one, and its `pair` template `A <x> [<y>] B` adds SEP when
/// the separator is the EOS or SEP token. `None` where nothing is said.
fn post_processor_specials(json: &Value, eos: Option<String>, sep: Option<String>) -> PostSpecials {
    let mut out = PostSpecials::default();
    let Some(post) = json.get("post_processor").filter(|p| !p.is_null()) else {
        return out;
    };
    let steps: Vec<&Value> = match post.get("processors").and_then(|p| p.as_array()) {
        Some(list) => list.iter().collect(),
        None => vec![post],
    };
    let special_id = |v: &Value| -> Option<String> {
        v.get("SpecialToken")?
            .get("id")?
            .as_str()
            .map(str::to_string)
    };
    let sequence_id = |v: &Value| -> Option<String> {
        v.get("Sequence")?.get("id")?.as_str().map(str::to_string)
    };
    let is_sep = |id: &Option<String>| id.is_some() && (*id == sep || *id == eos);
    for step in steps {
        match step.get("type").and_then(|t| t.as_str()) {
            Some("ByteLevel") => {
                out.bos.get_or_insert(false);
                out.eos.get_or_insert(false);
            }
            Some("TemplateProcessing") => {
                let list = |key: &str| -> Vec<Value> {
                    step.get(key)
                        .and_then(|s| s.as_array())
                        .cloned()
                        .unwrap_or_default()
                };
                let (single, pair) = (list("single"), list("pair"));
                let (mut first, mut last) = (None, None);
                if single.len() > 1 {
                    first = special_id(&single[0]);
                    last = special_id(&single[single.len() - 1]);
                    if first.is_some() {
                        out.bos = Some(true);
                    }
                    if last.is_some() {
                        out.eos = Some(true);
                    }
                }
                if pair.is_empty() {
                    continue;
                }
                let start = usize::from(first.is_some() && special_id(&pair[0]) == first);
                let stop = if last.is_some() && special_id(&pair[pair.len() - 1]) == last {
                    pair.len() - 1
                } else {
                    pair.len()
                };
                let mid = pair.get(start..stop).unwrap_or(&[]);
                if mid.len() < 3
                    || sequence_id(&mid[0]).as_deref() != Some("A")
                    || sequence_id(&mid[mid.len() - 1]).as_deref() != Some("B")
                {
                    continue;
                }
                let inner = &mid[1..mid.len() - 1];
                let mut add_sep = is_sep(&special_id(&inner[0])) && last.is_none();
                if inner.len() == 2 && is_sep(&special_id(&inner[1])) {
                    add_sep = true;
                }
                out.sep = Some(add_sep);
            }
            _ => {}
        }
    }
    out
}

fn chat_template(files: &Files) -> Result<Option<String>, SourceError> {
    let jinja = files.dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|source| SourceError::Io {
                path: jinja,
                source,
            });
    }
    let Some(t) = files
        .tokenizer_config
        .as_ref()
        .and_then(|c| c.get("chat_template"))
    else {
        return Ok(None);
    };
    Ok(match t {
        Value::String(s) => Some(s.clone()),
        // A list of named templates: the one named "default" is the main template.
        Value::Array(list) => list
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|e| e.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recognises_pre_tokenizers_by_structure() {
        let gpt2 = json!({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}});
        assert_eq!(recognise_pre(&gpt2, Path::new("t.json")).unwrap(), "gpt-2");
        let llama3 = |ignore_merges: bool| {
            json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
            "model": {"type": "BPE", "ignore_merges": ignore_merges}})
        };
        assert_eq!(
            recognise_pre(&llama3(true), Path::new("t.json")).unwrap(),
            "llama-bpe"
        );
        // same regex, merges applied to whole words: llama.cpp's smaug-bpe (SmolLM3, OLMo 2)
        assert_eq!(
            recognise_pre(&llama3(false), Path::new("t.json")).unwrap(),
            "smaug-bpe"
        );
        // SmolLM / Granite: Digits(individual) + ByteLevel(use_regex)
        let smollm = json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}});
        assert_eq!(
            recognise_pre(&smollm, Path::new("t.json")).unwrap(),
            "smollm"
        );
        let odd = json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\d+"}},
            {"type": "ByteLevel", "use_regex": false}]}});
        let e = recognise_pre(&odd, Path::new("t.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llama-bpe") && e.contains("gpt-2") && e.contains("t.json"),
            "{e}"
        );
        assert!(e.contains("--pre NAME"), "{e}");
    }

    #[test]
    fn merges_in_both_forms() {
        let j = json!({"model": {"merges": ["a b", ["c d", "e"]]}});
        assert_eq!(
            json_merges(&j, Path::new("t")).unwrap(),
            vec!["a b".to_string(), "c\u{120}d e".to_string()]
        );
    }

    fn proto_piece(text: &str, score: f32, ty: u8) -> Vec<u8> {
        let mut p = vec![0x0a, text.len() as u8];
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.extend_from_slice(&[0x18, ty]);
        let mut out = vec![0x0a, p.len() as u8];
        out.extend(p);
        out
    }

    #[test]
    fn parses_sentencepiece_proto() {
        let mut m = proto_piece("<unk>", 0.0, 2);
        m.extend(proto_piece("\u{2581}the", -3.5, 1));
        m.extend(proto_piece("<0x0A>", 0.0, 6));
        // normalizer_spec { add_dummy_prefix: false }
        m.extend_from_slice(&[0x1a, 0x02, 0x18, 0x00]);
        let (pieces, prefix) = parse_model_proto(&m, Path::new("tokenizer.model")).unwrap();
        assert_eq!(pieces[1], ("\u{2581}the".to_string(), -3.5, 1));
        assert_eq!(pieces[2].2, token_type::BYTE);
        assert!(!prefix);
        let cut = &m[..m.len() - 7];
        assert!(parse_model_proto(cut, Path::new("tokenizer.model")).is_err());
    }

    #[test]
    fn post_processor_flags_follow_gguf_py() {
        let bos = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
        let seq = json!({"Sequence": {"id": "A", "type_id": 0}});
        let eos = json!({"SpecialToken": {"id": "</s>", "type_id": 0}});
        let tp = |single: Value| json!({"type": "TemplateProcessing", "single": single});
        let j = json!({"post_processor": tp(json!([bos, seq]))});
        assert_eq!(flags(&j), (Some(true), None));
        let j = json!({"post_processor": tp(json!([bos, seq, eos]))});
        assert_eq!(flags(&j), (Some(true), Some(true)));
        // a one-piece template says nothing
        let j = json!({"post_processor": tp(json!([bos]))});
        assert_eq!(flags(&j), (None, None));
        // ByteLevel says "neither" unless a later step adds one (Llama-3: ByteLevel + template)
        let byte_level = json!({"type": "ByteLevel", "trim_offsets": false});
        let j = json!({"post_processor": byte_level});
        assert_eq!(flags(&j), (Some(false), Some(false)));
        let j = json!({"post_processor": {"type": "Sequence", "processors": [
            byte_level, tp(json!([bos, seq]))]}});
        assert_eq!(flags(&j), (Some(true), Some(false)));
        assert_eq!(flags(&json!({"post_processor": null})), (None, None));
        // pair "<s> A <s> B": the separator is neither EOS nor SEP -> add_sep false;
        // "<s> A </s> B" with EOS </s> -> true
        let a = json!({"Sequence": {"id": "A", "type_id": 0}});
        let b = json!({"Sequence": {"id": "B", "type_id": 1}});
        let pair = |mid: &Value| {
            json!({"post_processor": {"type": "TemplateProcessing", "single": [bos, a],
                "pair": [bos, a, mid, b]}})
        };
        let sep_of = |j: &Value| post_processor_specials(j, Some("</s>".into()), None).sep;
        assert_eq!(sep_of(&pair(&bos)), Some(false));
        assert_eq!(sep_of(&pair(&eos)), Some(true));
        assert_eq!(
            sep_of(&json!({"post_processor": tp(json!([bos, seq]))})),
            None
        );
    }

    fn flags(j: &Value) -> (Option<bool>, Option<bool>) {
        let p = post_processor_specials(j, Some("</s>".into()), None);
        (p.bos, p.eos)
    }
}
