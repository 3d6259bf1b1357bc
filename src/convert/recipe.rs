//! Output-type recipes (`-t`): what type every tensor gets.
//!
//! For an architecture-aware conversion the choice is exactly llama-quantize's
//! (`llama_tensor_get_type` without imatrix or overrides, non-Falcon, dense): the output tensor
//! (or the token embedding when tied) goes to Q6_K (Q8_0 for q8_0), K-quant mixes bump
//! attn_v / ffn_down in the layers `use_more_bits` picks, and a row length that does not divide
//! the block falls back (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, then F16). The counters are
//! applied in llama-quantize's tensor order: non-block tensors, then by layer, each by name.

use std::fmt;
use std::str::FromStr;

use crate::gguf::GgmlType;

/// A `-t` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2K,
    Q3KS,
    Q3KM,
    Q3KL,
    /// Every quantizable tensor Q4_K (pure; only without an architecture).
    Q4K,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
    Iq4Nl,
    Iq4Xs,
    /// NF4 with double quantization for linear weights; embeddings and output kept F16.
    Nf4,
}

/// Names accepted by `-t`, in help order.
pub const RECIPE_NAMES: &[&str] = &[
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m",
    "q3_k_l", "q4_k", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "nf4",
];

impl FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Recipe, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Recipe::F32,
            "f16" => Recipe::F16,
            "bf16" => Recipe::Bf16,
            "q8_0" => Recipe::Q8_0,
            "q4_0" => Recipe::Q4_0,
            "q4_1" => Recipe::Q4_1,
            "q5_0" => Recipe::Q5_0,
            "q5_1" => Recipe::Q5_1,
            "q2_k" => Recipe::Q2K,
            "q3_k_s" => Recipe::Q3KS,
            "q3_k_m" => Recipe::Q3KM,
            "q3_k_l" => Recipe::Q3KL,
            "q4_k" => Recipe::Q4K,
            "q4_k_s" => Recipe::Q4KS,
            "q4_k_m" => Recipe::Q4KM,
            "q5_k_s" => Recipe::Q5KS,
            "q5_k_m" => Recipe::Q5KM,
            "q6_k" => Recipe::Q6K,
            "iq4_nl" => Recipe::Iq4Nl,
            "iq4_xs" => Recipe::Iq4Xs,
            "nf4" => Recipe::Nf4,
            _ => {
                return Err(format!(
                    "unknown type '{s}' (expected one of: {})",
                    RECIPE_NAMES.join(", ")
                ))
            }
        })
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Recipe::F32 => "f32",
            Recipe::F16 => "f16",
            Recipe::Bf16 => "bf16",
            Recipe::Q8_0 => "q8_0",
            Recipe::Q4_0 => "q4_0",
            Recipe::Q4_1 => "q4_1",
            Recipe::Q5_0 => "q5_0",
            Recipe::Q5_1 => "q5_1",
            Recipe::Q2K => "q2_k",
            Recipe::Q3KS => "q3_k_s",
            Recipe::Q3KM => "q3_k_m",
            Recipe::Q3KL => "q3_k_l",
            Recipe::Q4K => "q4_k",
            Recipe::Q4KS => "q4_k_s",
            Recipe::Q4KM => "q4_k_m",
            Recipe::Q5KS => "q5_k_s",
            Recipe::Q5KM => "q5_k_m",
            Recipe::Q6K => "q6_k",
            Recipe::Iq4Nl => "iq4_nl",
            Recipe::Iq4Xs => "iq4_xs",
            Recipe::Nf4 => "nf4",
        };
        f.write_str(s)
    }
}

impl Recipe {
    /// The type most tensors get (llama-quantize's `llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            Recipe::F32 => GgmlType::F32,
            Recipe::F16 => GgmlType::F16,
            Recipe::Bf16 => GgmlType::Bf16,
            Recipe::Q8_0 => GgmlType::Q8_0,
            Recipe::Q4_0 => GgmlType::Q4_0,
            Recipe::Q4_1 => GgmlType::Q4_1,
            Recipe::Q5_0 => GgmlType::Q5_0,
            Recipe::Q5_1 => GgmlType::Q5_1,
            Recipe::Q2K => GgmlType::Q2K,
            Recipe::Q3KS | Recipe::Q3KM | Recipe::Q3KL => GgmlType::Q3K,
            Recipe::Q4K | Recipe::Q4KS | Recipe::Q4KM => GgmlType::Q4K,
            Recipe::Q5KS | Recipe::Q5KM => GgmlType::Q5K,
            Recipe::Q6K => GgmlType::Q6K,
            Recipe::Iq4Nl => GgmlType::Iq4Nl,
            Recipe::Iq4Xs => GgmlType::Iq4Xs,
            Recipe::Nf4 => GgmlType::Nf4Dq { block: 64 },
        }
    }

    /// `general.file_type` (llama_ftype) for this recipe.
    pub fn file_type(self) -> u32 {
        match self {
            Recipe::F32 => 0,
            Recipe::F16 => 1,
            Recipe::Q4_0 => 2,
            Recipe::Q4_1 => 3,
            Recipe::Q8_0 => 7,
            Recipe::Q5_0 => 8,
            Recipe::Q5_1 => 9,
            Recipe::Q2K => 10,
            Recipe::Q3KS => 11,
            Recipe::Q3KM => 12,
            Recipe::Q3KL => 13,
            // No llama_ftype is "all Q4_K"; MOSTLY_Q4_K_S is the nearest.
            Recipe::Q4K | Recipe::Q4KS => 14,
            Recipe::Q4KM => 15,
            Recipe::Q5KS => 16,
            Recipe::Q5KM => 17,
            Recipe::Q6K => 18,
            Recipe::Iq4Nl => 25,
            Recipe::Iq4Xs => 30,
            Recipe::Bf16 => 32,
            // Extension: mostly F16 by llama.cpp's reckoning of the tensors it knows.
            Recipe::Nf4 => 1,
        }
    }

    /// True when the recipe quantizes to a ggml block type (llama-quantize semantics).
    pub fn is_quantized(self) -> bool {
        self.default_type().is_quantized()
    }
}

/// What llama-quantize needs to know about the model to pick types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
    /// llama.cpp types the model LLM_TYPE_70B (Llama 80 layers with GQA, Qwen2 80 layers).
    pub is_70b: bool,
    /// True when the file has no `output.weight` (token_embd doubles as output).
    pub tied: bool,
    /// An importance matrix is used (llama-quantize's `has_imatrix`: some of its rules depend
    /// on it).
    pub has_imatrix: bool,
}

impl ModelShape {
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(1)
    }
}

/// llama-quantize's `use_more_bits`.
pub fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// llama-quantize's tensor categories (`tensor_get_category`), by substring in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Output,
    TokenEmbd,
    /// attn_v and the tensors llama-quantize treats like it: fused attn_qkv and attn_kv_b.
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

/// The category of a GGUF tensor name.
pub fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    for (needle, cat) in [
        ("attn_qkv.weight", Category::AttnV),
        ("attn_kv_b.weight", Category::AttnV),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ] {
        if name.contains(needle) {
            return cat;
        }
    }
    Category::Other
}

/// `ggml_n_dims`: the dimension count without trailing 1s (at least 1), so a `{E, 1}` tensor
/// counts as 1-D.
pub fn ggml_n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// llama-quantize's `tensor_allows_quantization` for the tensors a llama model has.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
}

/// The block layer of a GGUF name (`blk.N.`), or -1.
pub fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// llama-quantize's tensor order: (layer, name) with non-block tensors (-1) first.
pub fn quantize_order(names: &[String]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| {
        (layer_of(&names[a]), names[a].as_str()).cmp(&(layer_of(&names[b]), names[b].as_str()))
    });
    idx
}

/// Fallback when the row length does not divide the chosen type's block.
/// Returns the type and whether a fallback happened.
pub fn fallback(ty: GgmlType, ne0: u64) -> (GgmlType, bool) {
    if ne0.is_multiple_of(ty.block_size()) {
        return (ty, false);
    }
    let next = match ty {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        GgmlType::Iq4Xs => GgmlType::Iq4Nl,
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Nf4 { .. } | GgmlType::Nf4Dq { .. } => GgmlType::F16,
        // Q4_0/Q4_1/Q5_x/Q8_0/IQ4_NL have no fallback in llama-quantize except F16.
        _ => GgmlType::F16,
    };
    if !ne0.is_multiple_of(next.block_size()) {
        (GgmlType::F16, true)
    } else {
        (next, true)
    }
}

/// A ggml type qforge can write, by its lower-case name (`q4_k`, `q8_0`, `f16`, ...).
pub fn parse_ggml_type(s: &str) -> Result<GgmlType, String> {
    let t = match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::Bf16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q5_0" => GgmlType::Q5_0,
        "q5_1" => GgmlType::Q5_1,
        "q2_k" => GgmlType::Q2K,
        "q3_k" => GgmlType::Q3K,
        "q4_k" => GgmlType::Q4K,
        "q5_k" => GgmlType::Q5K,
        "q6_k" => GgmlType::Q6K,
        "iq4_nl" => GgmlType::Iq4Nl,
        "iq4_xs" => GgmlType::Iq4Xs,
        _ => {
            return Err(format!(
                "unknown tensor type '{s}' (expected one of: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs)"
            ))
        }
    };
    Ok(t)
}

/// Per-tensor overrides of the recipe, with llama-quantize's precedence:
/// `token_embd` / `output` types first, then the first `patterns` entry whose regex matches
/// the tensor name; a tensor so chosen skips the mixture rules (and their layer counters),
/// `pure` skips the mixture for every tensor. The row-length fallback still applies, so an
/// override can never produce an invalid file.
#[derive(Clone, Debug, Default)]
pub struct TypeOverrides {
    pub pure: bool,
    pub output: Option<GgmlType>,
    pub token_embd: Option<GgmlType>,
    pub patterns: Vec<(regex::Regex, GgmlType)>,
}

impl TypeOverrides {
    /// Parse `PATTERN=TYPE` (the regex is searched in the GGUF tensor name).
    pub fn add_pattern(&mut self, spec: &str) -> Result<(), String> {
        let (pat, ty) = spec
            .rsplit_once('=')
            .ok_or_else(|| format!("'{spec}' is not PATTERN=TYPE"))?;
        let re = regex::Regex::new(pat).map_err(|e| format!("bad pattern '{pat}': {e}"))?;
        self.patterns.push((re, parse_ggml_type(ty)?));
        Ok(())
    }

    fn pattern_type(&self, name: &str) -> Option<GgmlType> {
        self.patterns
            .iter()
            .find(|(re, _)| re.is_match(name))
            .map(|(_, t)| *t)
    }
}

/// Per-tensor type choice for an architecture-aware conversion, given tensors in file order
/// (GGUF names and ggml dims). Returns one type per tensor, in the same order.
pub fn choose_types(
    recipe: Recipe,
    shape: ModelShape,
    tensors: &[(String, Vec<u64>)],
) -> Vec<GgmlType> {
    choose_types_with(recipe, shape, tensors, &TypeOverrides::default())
}

/// [`choose_types`] with overrides.
pub fn choose_types_with(
    recipe: Recipe,
    shape: ModelShape,
    tensors: &[(String, Vec<u64>)],
    ov: &TypeOverrides,
) -> Vec<GgmlType> {
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    let mut out: Vec<GgmlType> = vec![GgmlType::F32; tensors.len()];
    let n_attention_wv = names
        .iter()
        .filter(|n| category(n) == Category::AttnV)
        .count() as i64;
    let n_layer = shape.n_layer as i64;
    let mut i_attention_wv: i64 = 0;
    let mut i_ffn_down: i64 = 0;
    for i in quantize_order(&names) {
        let (name, dims) = &tensors[i];
        let ne0 = dims[0];
        if !allows_quantization(name, ggml_n_dims(dims)) {
            out[i] = GgmlType::F32;
            continue;
        }
        let explicit = match name.as_str() {
            "token_embd.weight" => ov.token_embd,
            "output.weight" => ov.output,
            _ => None,
        };
        if let Some(t) = explicit.or_else(|| ov.pattern_type(name)) {
            out[i] = fallback(t, ne0).0;
            continue;
        }
        let default = recipe.default_type();
        if ov.pure && default.is_quantized() {
            out[i] = fallback(default, ne0).0;
            continue;
        }
        if recipe == Recipe::Nf4 {
            // bitsandbytes quantizes nn.Linear weights only; embeddings and lm_head stay in
            // the compute dtype, which we write as F16.
            let linear = name.starts_with("blk.");
            out[i] = if linear {
                fallback(default, ne0).0
            } else {
                GgmlType::F16
            };
            continue;
        }
        if !default.is_quantized() {
            out[i] = default;
            continue;
        }
        let mut ty = default;
        let is_output = name == "output.weight" || (shape.tied && name == "token_embd.weight");
        if is_output && ov.output.is_some() {
            // a tied embedding takes the output type
            ty = ov.output.unwrap_or(default);
        } else if is_output {
            if ne0 % default.block_size() != 0 {
                ty = GgmlType::Q8_0;
            } else if default != GgmlType::Q8_0 {
                ty = GgmlType::Q6K;
            }
        } else if name == "token_embd.weight" {
            // unchanged for the recipes qforge offers
        } else {
            match category(name) {
                Category::AttnV => {
                    match recipe {
                        Recipe::Q2K if shape.n_gqa() >= 4 => ty = GgmlType::Q4K,
                        Recipe::Q2K => ty = GgmlType::Q3K,
                        Recipe::Q3KM if i_attention_wv < 2 => ty = GgmlType::Q5K,
                        Recipe::Q3KM => ty = GgmlType::Q4K,
                        Recipe::Q3KL => ty = GgmlType::Q5K,
                        Recipe::Iq4Nl | Recipe::Iq4Xs if shape.n_gqa() >= 4 => ty = GgmlType::Q5K,
                        Recipe::Q4KM | Recipe::Q5KM
                            if use_more_bits(i_attention_wv, n_attention_wv) =>
                        {
                            ty = GgmlType::Q6K
                        }
                        Recipe::Q4KS if i_attention_wv < 4 => ty = GgmlType::Q5K,
                        _ => {}
                    }
                    if shape.is_70b && matches!(ty, GgmlType::Q3K | GgmlType::Q4K) {
                        ty = GgmlType::Q5K;
                    }
                    if shape.n_expert == 8 {
                        ty = GgmlType::Q8_0;
                    }
                    i_attention_wv += 1;
                }
                Category::AttnK if shape.n_expert == 8 => ty = GgmlType::Q8_0,
                Category::AttnOutput if shape.n_expert == 8 => {
                    if matches!(
                        recipe,
                        Recipe::Q2K
                            | Recipe::Q3KS
                            | Recipe::Q3KM
                            | Recipe::Iq4Nl
                            | Recipe::Iq4Xs
                            | Recipe::Q4KS
                            | Recipe::Q4KM
                    ) {
                        ty = GgmlType::Q5K
                    }
                }
                Category::AttnOutput => match recipe {
                    Recipe::Q2K => ty = GgmlType::Q3K,
                    Recipe::Q3KM => ty = GgmlType::Q4K,
                    Recipe::Q3KL => ty = GgmlType::Q5K,
                    _ => {}
                },
                Category::FfnDown => {
                    // With experts llama-quantize reads the layer from the name (expert and
                    // shared-expert tensors of one layer are both ffn_down).
                    let i_layer = if shape.n_expert > 1 {
                        layer_of(name)
                    } else {
                        i_ffn_down
                    };
                    match recipe {
                        Recipe::Q2K => ty = GgmlType::Q3K,
                        Recipe::Q3KM if i_layer < n_layer / 16 => ty = GgmlType::Q5K,
                        Recipe::Q3KM => ty = GgmlType::Q4K,
                        Recipe::Q3KL => ty = GgmlType::Q5K,
                        Recipe::Q4KM | Recipe::Q5KM if use_more_bits(i_layer, n_layer) => {
                            ty = GgmlType::Q6K
                        }
                        Recipe::Iq4Nl | Recipe::Iq4Xs
                            if i_layer < n_layer / 8 && !shape.has_imatrix =>
                        {
                            ty = GgmlType::Q5K
                        }
                        Recipe::Q4KS if i_layer < n_layer / 8 => ty = GgmlType::Q5K,
                        // with an imatrix, the first eighth of ffn_down goes to the _1 types
                        Recipe::Q4_0 if shape.has_imatrix && i_layer < n_layer / 8 => {
                            ty = GgmlType::Q4_1
                        }
                        Recipe::Q5_0 if shape.has_imatrix && i_layer < n_layer / 8 => {
                            ty = GgmlType::Q5_1
                        }
                        _ => {}
                    }
                    i_ffn_down += 1;
                }
                _ => {}
            }
        }
        out[i] = fallback(ty, ne0).0;
    }
    out
}

/// Per-tensor type choice without an architecture: every tensor of two or more dimensions
/// gets the recipe's type (or its fallback), 1-D tensors stay F32.
pub fn choose_types_pure(recipe: Recipe, tensors: &[(String, Vec<u64>)]) -> Vec<GgmlType> {
    choose_types_pure_with(recipe, tensors, &TypeOverrides::default())
}

/// [`choose_types_pure`] where a matching `--tensor-type` pattern picks the type instead.
pub fn choose_types_pure_with(
    recipe: Recipe,
    tensors: &[(String, Vec<u64>)],
    ov: &TypeOverrides,
) -> Vec<GgmlType> {
    tensors
        .iter()
        .map(|(name, dims)| {
            if dims.len() < 2 {
                GgmlType::F32
            } else {
                let t = ov.pattern_type(name).unwrap_or(recipe.default_type());
                fallback(t, dims[0]).0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(n_layer: u32, tied: bool) -> Vec<(String, Vec<u64>)> {
        let mut t = vec![("token_embd.weight".to_string(), vec![4096, 32000])];
        if !tied {
            t.push(("output.weight".into(), vec![4096, 32000]));
        }
        t.push(("output_norm.weight".into(), vec![4096]));
        for l in 0..n_layer {
            for (n, d) in [
                ("attn_norm.weight", vec![4096]),
                ("attn_q.weight", vec![4096, 4096]),
                ("attn_k.weight", vec![4096, 4096]),
                ("attn_v.weight", vec![4096, 4096]),
                ("attn_output.weight", vec![4096, 4096]),
                ("ffn_norm.weight", vec![4096]),
                ("ffn_gate.weight", vec![4096, 11008]),
                ("ffn_up.weight", vec![4096, 11008]),
                ("ffn_down.weight", vec![11008, 4096]),
            ] {
                t.push((format!("blk.{l}.{n}"), d));
            }
        }
        t
    }

    fn shape(n_layer: u32, tied: bool) -> ModelShape {
        ModelShape {
            n_layer,
            n_head: 32,
            n_head_kv: 32,
            n_expert: 0,
            is_70b: false,
            tied,
            has_imatrix: false,
        }
    }

    fn type_of(t: &[(String, Vec<u64>)], types: &[GgmlType], name: &str) -> GgmlType {
        types[t.iter().position(|x| x.0 == name).unwrap()]
    }

    #[test]
    fn q4_k_m_bumps_the_documented_32_layer_set() {
        let t = llama(32, false);
        let types = choose_types(Recipe::Q4KM, shape(32, false), &t);
        // Reference: layers 0-3, 28-31 and 6, 9, ..., 27 get Q6_K (gguf-and-ggml.md §5.3).
        let bumped: Vec<u32> = (0..32)
            .filter(|&l| type_of(&t, &types, &format!("blk.{l}.attn_v.weight")) == GgmlType::Q6K)
            .collect();
        assert_eq!(
            bumped,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        for l in 0..32 {
            assert_eq!(
                type_of(&t, &types, &format!("blk.{l}.ffn_down.weight")),
                type_of(&t, &types, &format!("blk.{l}.attn_v.weight"))
            );
            assert_eq!(
                type_of(&t, &types, &format!("blk.{l}.attn_q.weight")),
                GgmlType::Q4K
            );
            assert_eq!(
                type_of(&t, &types, &format!("blk.{l}.attn_norm.weight")),
                GgmlType::F32
            );
        }
        assert_eq!(type_of(&t, &types, "output.weight"), GgmlType::Q6K);
        assert_eq!(type_of(&t, &types, "token_embd.weight"), GgmlType::Q4K);
    }

    #[test]
    fn q5_k_m_bumps_like_q4_k_m_and_q5_k_s_does_not() {
        let t = llama(32, false);
        let m = choose_types(Recipe::Q5KM, shape(32, false), &t);
        let s = choose_types(Recipe::Q5KS, shape(32, false), &t);
        for l in 0..32u32 {
            let bumped = use_more_bits(l as i64, 32);
            for kind in ["attn_v", "ffn_down"] {
                let name = format!("blk.{l}.{kind}.weight");
                let want = if bumped { GgmlType::Q6K } else { GgmlType::Q5K };
                assert_eq!(type_of(&t, &m, &name), want, "{name}");
                assert_eq!(type_of(&t, &s, &name), GgmlType::Q5K, "{name}");
            }
        }
        assert_eq!(type_of(&t, &m, "output.weight"), GgmlType::Q6K);
        assert_eq!(type_of(&t, &s, "token_embd.weight"), GgmlType::Q5K);
        assert_eq!(Recipe::Q5KM.file_type(), 17);
        // 8 experts: attn_v goes to Q8_0 whatever the mix
        let moe = ModelShape {
            n_expert: 8,
            ..shape(32, false)
        };
        let m = choose_types(Recipe::Q5KM, moe, &t);
        assert_eq!(type_of(&t, &m, "blk.5.attn_v.weight"), GgmlType::Q8_0);
        assert_eq!(type_of(&t, &m, "blk.5.attn_k.weight"), GgmlType::Q8_0);
    }

    #[test]
    fn tied_embedding_takes_the_output_rule() {
        let t = llama(2, true);
        let q4 = choose_types(Recipe::Q4_0, shape(2, true), &t);
        assert_eq!(type_of(&t, &q4, "token_embd.weight"), GgmlType::Q6K);
        let q8 = choose_types(Recipe::Q8_0, shape(2, true), &t);
        assert_eq!(type_of(&t, &q8, "token_embd.weight"), GgmlType::Q8_0);
        let f16 = choose_types(Recipe::F16, shape(2, true), &t);
        assert_eq!(type_of(&t, &f16, "token_embd.weight"), GgmlType::F16);
        assert_eq!(type_of(&t, &f16, "output_norm.weight"), GgmlType::F32);
    }

    #[test]
    fn fallbacks_follow_llama_quantize() {
        assert_eq!(fallback(GgmlType::Q4K, 4096), (GgmlType::Q4K, false));
        assert_eq!(fallback(GgmlType::Q4K, 4128), (GgmlType::Q5_0, true));
        assert_eq!(fallback(GgmlType::Q6K, 4128), (GgmlType::Q8_0, true));
        assert_eq!(fallback(GgmlType::Q4K, 100), (GgmlType::F16, true));
        assert_eq!(fallback(GgmlType::Q8_0, 100), (GgmlType::F16, true));
        assert_eq!(fallback(GgmlType::Iq4Xs, 4128), (GgmlType::Iq4Nl, true));
        assert_eq!(fallback(GgmlType::Q3K, 4128), (GgmlType::Q4_0, true));
    }

    #[test]
    fn parse_and_print_round_trip() {
        for name in RECIPE_NAMES {
            let r: Recipe = name.parse().unwrap();
            assert_eq!(&r.to_string(), name);
        }
        let e = "q3_k".parse::<Recipe>().unwrap_err();
        assert!(e.contains("q4_k_m"), "{e}");
    }

    #[test]
    fn overrides_follow_llama_quantize_precedence() {
        let t = llama(32, false);
        let mut ov = TypeOverrides {
            output: Some(GgmlType::Q8_0),
            ..TypeOverrides::default()
        };
        ov.add_pattern(r"blk\.(0|1)\.attn_v\.weight=q8_0").unwrap();
        ov.add_pattern(r"attn_v=q4_0").unwrap(); // second match never wins over the first
        let types = choose_types_with(Recipe::Q4KM, shape(32, false), &t, &ov);
        assert_eq!(type_of(&t, &types, "output.weight"), GgmlType::Q8_0);
        assert_eq!(type_of(&t, &types, "blk.0.attn_v.weight"), GgmlType::Q8_0);
        assert_eq!(type_of(&t, &types, "blk.2.attn_v.weight"), GgmlType::Q4_0);
        assert_eq!(type_of(&t, &types, "blk.0.ffn_down.weight"), GgmlType::Q6K);
        // --pure: no mixture anywhere
        let pure = TypeOverrides {
            pure: true,
            ..TypeOverrides::default()
        };
        let types = choose_types_with(Recipe::Q4KM, shape(32, false), &t, &pure);
        assert_eq!(type_of(&t, &types, "output.weight"), GgmlType::Q4K);
        assert_eq!(type_of(&t, &types, "blk.0.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(type_of(&t, &types, "blk.0.attn_norm.weight"), GgmlType::F32);
        assert!(ov.clone().add_pattern("nope").is_err());
        assert!(ov.clone().add_pattern("x=q7_k").is_err());
    }

    #[test]
    fn overridden_tensors_skip_the_layer_counters() {
        // llama-quantize counts attn_v tensors only in its mixture rules: overriding blk.0
        // shifts which later layers use_more_bits picks.
        let t = llama(32, false);
        let mut ov = TypeOverrides::default();
        ov.add_pattern(r"^blk\.0\.attn_v\.weight$=q8_0").unwrap();
        let types = choose_types_with(Recipe::Q4KM, shape(32, false), &t, &ov);
        let bumped: Vec<u32> = (1..32)
            .filter(|&l| type_of(&t, &types, &format!("blk.{l}.attn_v.weight")) == GgmlType::Q6K)
            .collect();
        // counter i = layer - 1 now: use_more_bits(i, 32) holds for i in 0..=3, 6, 9, ..., 28..
        let want: Vec<u32> = (1..32)
            .filter(|&l| use_more_bits(l as i64 - 1, 32))
            .collect();
        assert_eq!(bumped, want);
    }

    #[test]
    fn nf4_keeps_embeddings_f16() {
        let t = llama(2, false);
        let types = choose_types(Recipe::Nf4, shape(2, false), &t);
        assert_eq!(type_of(&t, &types, "token_embd.weight"), GgmlType::F16);
        assert_eq!(type_of(&t, &types, "output.weight"), GgmlType::F16);
        assert_eq!(
            type_of(&t, &types, "blk.0.attn_q.weight"),
            GgmlType::Nf4Dq { block: 64 }
        );
    }
}
