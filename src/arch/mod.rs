//! Per-architecture knowledge, one module per model family — the way llama.cpp keeps
//! `conversion/<family>.py`. A family says which `config.json` architectures it converts and,
//! for one checkpoint, implements [`Architecture`]: the hyperparameter keys with llama.cpp's
//! value types, HF → GGUF tensor names with per-tensor transforms, the tensors llama.cpp
//! requires and the shapes it checks, and tensors generated from the config. No I/O.
//!
//! Adding an architecture is one module here (plus its entry in [`FAMILIES`]) and a fixture.

pub mod gemma;
pub mod hparams;
pub mod llama;
pub mod olmo;
pub mod phi;
pub mod qwen;

use crate::gguf::Value;
use crate::source::tokenizer::{Vocab, VocabStyle};
use crate::source::HfConfig;

pub use hparams::{ClassDefaults, TextHparams};
pub use llama::{llama3_rope_freqs, LlamaParams};

/// Builds the conversion rules for a checkpoint whose first architecture is the given name.
pub type BuildFn = fn(hf_name: &str, config: &HfConfig) -> Result<Box<dyn Architecture>, ArchError>;

/// A model family: the `config.json` architecture names it owns and how to build the
/// conversion rules for one checkpoint.
pub struct Family {
    /// `architectures[0]` values this family converts.
    pub hf_names: &'static [&'static str],
    /// The rules for a checkpoint whose first architecture is `hf_name`.
    pub build: BuildFn,
}

/// Every family qforge converts, in the order `supported()` lists them.
pub const FAMILIES: &[&Family] = &[
    &llama::FAMILY,
    &qwen::FAMILY,
    &gemma::FAMILY,
    &phi::FAMILY,
    &olmo::FAMILY,
];

/// Every supported `architectures` name.
pub fn supported() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.hf_names.iter().copied())
        .collect()
}

/// The conversion rules for a checkpoint, from its config's first architecture.
pub fn detect(config: &HfConfig) -> Result<Box<dyn Architecture>, ArchError> {
    let Some(name) = config.architectures.first() else {
        return Err(ArchError::Unsupported {
            found: "(none: config.json has no \"architectures\")".to_string(),
        });
    };
    for family in FAMILIES {
        if family.hf_names.contains(&name.as_str()) {
            return (family.build)(name, config);
        }
    }
    Err(ArchError::Unsupported {
        found: name.to_string(),
    })
}

/// Errors deciding how to convert a model. Messages name the key or tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    #[error("unsupported architecture {found} (supported: {})", supported().join(", "))]
    Unsupported { found: String },
    #[error("config.json: missing or invalid '{key}'")]
    MissingKey { key: &'static str },
    #[error("config.json: {0}")]
    Invalid(String),
    #[error("tensor '{name}': no GGUF name for it in the {arch} architecture")]
    UnknownTensor { name: String, arch: &'static str },
}

/// What llama-quantize's type rules need to know about the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantHints {
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
    /// llama.cpp types the model LLM_TYPE_70B (one attn_v rule depends on it).
    pub is_70b: bool,
}

/// Inputs to the hyperparameter keys that come from outside config.json.
#[derive(Clone, Copy, Debug)]
pub struct KeyContext {
    /// `general.file_type`, written among the hyperparameters as llama.cpp's converter does.
    pub file_type: u32,
    /// Entries in `tokenizer.ggml.tokens`.
    pub n_vocab: u32,
}

/// The conversion rules for one checkpoint of a family.
pub trait Architecture: std::fmt::Debug + Send + Sync {
    /// `general.architecture`.
    fn gguf_arch(&self) -> &'static str;

    /// The hyperparameter keys (and `general.file_type`) in the order llama.cpp's converter
    /// writes them, with its value types.
    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)>;

    /// Map an HF tensor name. `Ok(None)` for tensors llama.cpp's converter drops.
    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError>;

    /// The safetensors shape llama.cpp will require for a GGUF tensor name (`None` in a
    /// position means any size, e.g. the vocabulary), or `None` for tensors it does not check.
    fn expected_shape(&self, gguf: &str) -> Option<Vec<Option<usize>>>;

    /// GGUF names llama.cpp requires.
    fn required_tensors(&self) -> Vec<String>;

    /// Tensors computed from the config (`rope_freqs.weight`, ...): GGUF name and values.
    fn generated_tensors(&self) -> Vec<(String, Vec<f32>)> {
        Vec::new()
    }

    /// What llama-quantize's type rules look at.
    fn quant_hints(&self) -> QuantHints;

    /// Which of llama.cpp's vocabulary builders the family's converter uses.
    fn vocab_style(&self) -> VocabStyle {
        VocabStyle::Default
    }

    /// Family-specific changes to the vocabulary keys (e.g. Gemma's `add_space_prefix`).
    fn adjust_vocab(&self, _vocab: &mut Vocab) {}
}

/// How a tensor's rows are reordered on the way to GGUF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// Undo HF's rotate-half layout for llama.cpp's interleaved RoPE, per head.
    PermuteRope {
        n_head: usize,
    },
}

impl Transform {
    /// The source row that lands at output row `out_row` of a tensor with `n_rows` rows.
    ///
    /// Within each head of `hd = n_rows / n_head` rows, output row `2i + p` comes from source
    /// row `p * hd/2 + i` (HF stores the two rotary halves one after the other).
    pub fn source_row(self, out_row: usize, n_rows: usize) -> usize {
        match self {
            Transform::None => out_row,
            Transform::PermuteRope { n_head } => {
                let hd = n_rows / n_head;
                let (head, within) = (out_row / hd, out_row % hd);
                let (i, p) = (within / 2, within % 2);
                head * hd + p * (hd / 2) + i
            }
        }
    }

    /// How many leading source rows are fully consumed once output rows `[0, out_rows)` are
    /// done, so their pages can be released while the rest of the tensor streams.
    pub fn source_rows_done(self, out_rows: usize, n_rows: usize) -> usize {
        match self {
            Transform::None => out_rows,
            Transform::PermuteRope { n_head } => {
                let hd = (n_rows / n_head).max(1);
                out_rows / hd * hd
            }
        }
    }
}

/// How a tensor's values change on the way to GGUF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValueOp {
    #[default]
    None,
    /// Gemma's RMSNorm computes `x * (1 + w)`; llama.cpp's converter stores `w + 1`, adding in
    /// the source precision: in f32 for bf16/f32 sources, rounded to f16 for f16 sources.
    AddOne,
}

/// A tensor's place in the GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub name: String,
    pub transform: Transform,
    pub values: ValueOp,
    /// For one expert's 2-D weight: its index in the 3-D tensor `name` that stacks all
    /// experts of the layer (ggml `ne2`).
    pub expert: Option<u32>,
}

impl Mapped {
    pub(crate) fn plain(name: impl Into<String>) -> Mapped {
        Mapped {
            name: name.into(),
            transform: Transform::None,
            values: ValueOp::None,
            expert: None,
        }
    }

    pub(crate) fn expert(name: impl Into<String>, index: u32) -> Mapped {
        Mapped {
            expert: Some(index),
            ..Mapped::plain(name)
        }
    }

    pub(crate) fn with_values(self, values: ValueOp) -> Mapped {
        Mapped { values, ..self }
    }
}

/// HF tensor name suffixes llama.cpp's converter skips for every architecture.
const DROPPED_SUFFIXES: &[&str] = &[
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
];

/// The non-layer tensors every family names alike: embeddings, final norm, LM head.
fn global_tensor(hf: &str) -> Option<Mapped> {
    Some(Mapped::plain(match hf {
        "model.embed_tokens.weight" => "token_embd.weight",
        "model.norm.weight" => "output_norm.weight",
        "lm_head.weight" => "output.weight",
        _ => return None,
    }))
}

impl QuantHints {
    /// A dense model's hints from its generic hyperparameters (no experts, not LLM_TYPE_70B).
    pub(crate) fn dense(hp: &TextHparams) -> QuantHints {
        QuantHints {
            n_layer: hp.n_layer,
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            n_expert: 0,
            is_70b: false,
        }
    }
}

/// True for tensors every family drops.
fn always_dropped(hf: &str) -> bool {
    DROPPED_SUFFIXES.iter().any(|s| hf.ends_with(s))
}

/// The error for an HF tensor name `arch` has no GGUF name for.
pub(crate) fn unknown_tensor(hf: &str, arch: &'static str) -> ArchError {
    ArchError::UnknownTensor {
        name: hf.to_string(),
        arch,
    }
}

/// Where an HF tensor name goes before any family-specific rule: the part of
/// [`Architecture::map_tensor`] every family shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// A tensor llama.cpp's converter drops for every architecture.
    Dropped,
    /// A non-layer tensor every family names alike (embeddings, final norm, LM head).
    Global(Mapped),
    /// A decoder-layer tensor, for the family to map.
    Layer(LayerTensor<'a>),
    /// Neither a global nor a layer tensor: no family maps it.
    Unknown,
}

/// A decoder-layer tensor `model.layers.{layer}.{module}.{suffix}`, its layer checked against
/// `n_layer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerTensor<'a> {
    pub layer: u32,
    pub module: &'a str,
    /// `weight` or `bias`.
    pub suffix: &'a str,
    hf: &'a str,
    arch: &'static str,
}

impl<'a> LayerTensor<'a> {
    /// `blk.{layer}.{kind}.{suffix}`: the GGUF name of this tensor as a `kind` tensor.
    pub(crate) fn gguf_name(&self, kind: &str) -> String {
        format!("blk.{}.{kind}.{}", self.layer, self.suffix)
    }

    /// The error for a layer tensor the family has no GGUF name for.
    pub(crate) fn unknown(&self) -> ArchError {
        unknown_tensor(self.hf, self.arch)
    }

    /// One expert's weight, module `{prefix}{k}.{proj}`, as slice `k` of the layer's stacked
    /// `blk.N.{kind}.weight`, where `kinds` pairs each `proj` with its GGUF kind. `None` for a
    /// module without the prefix; a bias, an index that is not a number or a `proj` not in
    /// `kinds` is unknown.
    pub(crate) fn expert(
        &self,
        prefix: &str,
        kinds: &[(&str, &str)],
    ) -> Result<Option<Mapped>, ArchError> {
        let Some(rest) = self.module.strip_prefix(prefix) else {
            return Ok(None);
        };
        let (k, proj) = rest.split_once('.').ok_or_else(|| self.unknown())?;
        let k: u32 = k.parse().map_err(|_| self.unknown())?;
        let kind = kinds
            .iter()
            .find(|(p, _)| *p == proj && self.suffix == "weight")
            .ok_or_else(|| self.unknown())?
            .1;
        Ok(Some(Mapped::expert(self.gguf_name(kind), k)))
    }
}

/// Route an HF tensor name: dropped, a shared global tensor, a layer tensor or unknown.
/// Errors for a malformed or out-of-range layer name (see [`split_layer_name`]).
pub(crate) fn route<'a>(
    hf: &'a str,
    n_layer: u32,
    arch: &'static str,
) -> Result<Route<'a>, ArchError> {
    if always_dropped(hf) {
        return Ok(Route::Dropped);
    }
    if let Some(m) = global_tensor(hf) {
        return Ok(Route::Global(m));
    }
    Ok(match split_layer_name(hf, n_layer, arch)? {
        Some((layer, module, suffix)) => Route::Layer(LayerTensor {
            layer,
            module,
            suffix,
            hf,
            arch,
        }),
        None => Route::Unknown,
    })
}

/// `map_tensor` of a family that takes the shared routes as they are: dropped and global
/// tensors settled, unknown names an error, and `layer` maps each layer tensor.
pub(crate) fn map_with_layers(
    hf: &str,
    n_layer: u32,
    arch: &'static str,
    layer: impl FnOnce(LayerTensor<'_>) -> Result<Option<Mapped>, ArchError>,
) -> Result<Option<Mapped>, ArchError> {
    match route(hf, n_layer, arch)? {
        Route::Dropped => Ok(None),
        Route::Global(m) => Ok(Some(m)),
        Route::Layer(l) => layer(l),
        Route::Unknown => Err(unknown_tensor(hf, arch)),
    }
}

/// A decoder-layer tensor name `model.layers.N.<module>.<weight|bias>` split into its parts,
/// with the layer checked against `n_layer`. `Ok(None)` when the name is not a layer tensor.
fn split_layer_name<'a>(
    hf: &'a str,
    n_layer: u32,
    arch: &'static str,
) -> Result<Option<(u32, &'a str, &'a str)>, ArchError> {
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return Ok(None);
    };
    let unknown = || unknown_tensor(hf, arch);
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: u32 = layer.parse().map_err(|_| unknown())?;
    if layer >= n_layer {
        return Err(ArchError::Invalid(format!(
            "tensor '{hf}' is for layer {layer} but num_hidden_layers is {n_layer}"
        )));
    }
    match rest.rsplit_once('.') {
        Some((module, suffix @ ("weight" | "bias"))) => Ok(Some((layer, module, suffix))),
        _ => Err(unknown()),
    }
}

/// The per-layer GGUF tensor kind of a name (`blk.3.attn_q.weight` → `attn_q.weight`), or the
/// whole name for non-layer tensors.
pub(crate) fn tensor_kind(gguf: &str) -> &str {
    gguf.strip_prefix("blk.")
        .map_or(gguf, |r| r.split_once('.').map_or(r, |x| x.1))
}

/// `blk.{l}.{kind}.weight` for every layer and kind, after the given non-layer names.
pub(crate) fn layer_names(globals: &[&str], n_layer: u32, kinds: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = globals.iter().map(|s| s.to_string()).collect();
    for l in 0..n_layer {
        for k in kinds {
            v.push(format!("blk.{l}.{k}.weight"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arch: &str) -> HfConfig {
        HfConfig {
            architectures: vec![arch.into()],
            hidden_size: Some(256),
            intermediate_size: Some(512),
            num_hidden_layers: Some(2),
            num_attention_heads: Some(4),
            num_key_value_heads: Some(2),
            max_position_embeddings: Some(128),
            rms_norm_eps: Some(1e-5),
            ..HfConfig::default()
        }
    }

    #[test]
    fn detects_each_family_and_lists_every_supported_name() {
        assert_eq!(
            detect(&config("LlamaForCausalLM")).unwrap().gguf_arch(),
            "llama"
        );
        assert_eq!(
            detect(&config("MistralForCausalLM")).unwrap().gguf_arch(),
            "llama"
        );
        assert_eq!(
            detect(&config("Qwen2ForCausalLM")).unwrap().gguf_arch(),
            "qwen2"
        );
        assert_eq!(
            detect(&config("Qwen3ForCausalLM")).unwrap().gguf_arch(),
            "qwen3"
        );
        let e = detect(&config("GPTNeoXForCausalLM"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unsupported architecture GPTNeoXForCausalLM (supported: "),
            "{e}"
        );
        for name in supported() {
            assert!(e.contains(name), "{e} lacks {name}");
        }
        let mut none = config("x");
        none.architectures.clear();
        assert!(detect(&none)
            .unwrap_err()
            .to_string()
            .contains("no \"architectures\""));
    }

    #[test]
    fn every_supported_name_belongs_to_one_family() {
        let names = supported();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    #[test]
    fn permutation_matches_the_reshape_definition() {
        // Reference: reshape [H, 2, hd/2] -> swap axes 1,2 -> [H, hd/2, 2], flattened.
        let (n_head, hd) = (3usize, 8usize);
        let n = n_head * hd;
        let mut expected = Vec::new();
        for h in 0..n_head {
            for i in 0..hd / 2 {
                for p in 0..2 {
                    expected.push(h * hd + p * (hd / 2) + i);
                }
            }
        }
        let t = Transform::PermuteRope { n_head };
        let got: Vec<usize> = (0..n).map(|r| t.source_row(r, n)).collect();
        assert_eq!(got, expected);
        assert_eq!(&got[..4], &[0, 4, 1, 5]);
        // Every source row below source_rows_done is used by some output row below out_rows.
        for done in 0..=n {
            let prefix = t.source_rows_done(done, n);
            assert!(prefix <= done);
            for src in 0..prefix {
                assert!(got[..done].contains(&src));
            }
        }
    }

    #[test]
    fn layer_names_split_and_check_the_layer() {
        assert_eq!(
            split_layer_name("model.layers.1.self_attn.q_proj.bias", 2, "qwen2").unwrap(),
            Some((1, "self_attn.q_proj", "bias"))
        );
        assert_eq!(
            split_layer_name("model.norm.weight", 2, "qwen2").unwrap(),
            None
        );
        assert!(matches!(
            split_layer_name("model.layers.2.mlp.up_proj.weight", 2, "qwen2"),
            Err(ArchError::Invalid(_))
        ));
        assert!(matches!(
            split_layer_name("model.layers.x.mlp.up_proj.weight", 2, "qwen2"),
            Err(ArchError::UnknownTensor { arch: "qwen2", .. })
        ));
        assert_eq!(tensor_kind("blk.12.attn_q.bias"), "attn_q.bias");
    }

    #[test]
    fn route_settles_shared_tensors_and_hands_layer_tensors_on() {
        assert_eq!(
            route("model.layers.0.self_attn.rotary_emb.inv_freq", 2, "llama").unwrap(),
            Route::Dropped
        );
        assert_eq!(
            route("lm_head.weight", 2, "llama").unwrap(),
            Route::Global(Mapped::plain("output.weight"))
        );
        assert_eq!(
            route("model.vision.weight", 2, "llama").unwrap(),
            Route::Unknown
        );
        let Route::Layer(l) = route("model.layers.1.mlp.up_proj.bias", 2, "qwen2").unwrap() else {
            panic!("not a layer tensor");
        };
        assert_eq!((l.layer, l.module, l.suffix), (1, "mlp.up_proj", "bias"));
        assert_eq!(l.gguf_name("ffn_up"), "blk.1.ffn_up.bias");
        assert_eq!(
            l.unknown(),
            unknown_tensor("model.layers.1.mlp.up_proj.bias", "qwen2")
        );
        assert!(matches!(
            route("model.layers.2.mlp.up_proj.weight", 2, "qwen2"),
            Err(ArchError::Invalid(_))
        ));
        let expert = |hf| {
            let Route::Layer(l) = route(hf, 2, "qwen2moe").unwrap() else {
                panic!("not a layer tensor");
            };
            l.expert("mlp.experts.", &[("up_proj", "ffn_up_exps")])
        };
        assert_eq!(
            expert("model.layers.1.mlp.experts.7.up_proj.weight").unwrap(),
            Some(Mapped::expert("blk.1.ffn_up_exps.weight", 7))
        );
        assert_eq!(expert("model.layers.1.mlp.up_proj.weight").unwrap(), None);
        for bad in [
            "model.layers.1.mlp.experts.7.up_proj.bias",
            "model.layers.1.mlp.experts.x.up_proj.weight",
            "model.layers.1.mlp.experts.7.gate_proj.weight",
        ] {
            assert_eq!(expert(bad), Err(unknown_tensor(bad, "qwen2moe")));
        }
        assert_eq!(tensor_kind("output.weight"), "output.weight");
    }
}
