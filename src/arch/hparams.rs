//! The hyperparameters llama.cpp's converter writes for every family that calls its generic
//! `TextModel.set_gguf_parameters`, read from config.json the way the converter sees them:
//! through the transformers config class, whose defaults fill the fields config.json lacks.

use serde_json::{Map, Value as Json};

use super::ArchError;
use crate::gguf::Value;
use crate::source::HfConfig;

/// Defaults of one transformers config class (`Qwen2Config`, ...) for the fields the generic
/// keys read. `None` means the class has no such attribute: the key is then written only when
/// config.json itself has the field.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassDefaults {
    pub max_position_embeddings: Option<u64>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    /// `rope_local_base_freq` (Gemma 3's sliding-window base).
    pub rope_local_base_freq: Option<f64>,
    /// `num_key_value_heads` when config.json lacks it; `None`: `num_attention_heads`.
    pub num_key_value_heads: Option<u64>,
    /// `head_dim` when config.json lacks it.
    pub head_dim: Option<u64>,
    pub num_experts: Option<u64>,
    pub num_experts_per_tok: Option<u64>,
}

/// The generic hyperparameters of one checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct TextHparams {
    pub n_layer: u32,
    pub n_ctx: Option<u32>,
    pub n_embd: u32,
    pub n_ff: Option<u32>,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub rope_theta: Option<f32>,
    pub rope_theta_swa: Option<f32>,
    /// `rope.scaling.*` keys (suffixes after `{arch}.`), in the converter's order.
    pub rope_scaling: Vec<(&'static str, Value)>,
    pub rms_eps: Option<f32>,
    pub n_expert: Option<u32>,
    pub n_expert_used: Option<u32>,
    /// `head_dim` as the converter sees it (written as key/value length when present).
    pub head_dim_key: Option<u32>,
    /// The attention head size: `head_dim`, else `hidden_size / num_attention_heads`.
    pub head_dim: u32,
}

fn first_u64(c: &HfConfig, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| c.u64_field(k))
}

fn first_f64(c: &HfConfig, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| c.f64_field(k))
}

/// A positive count that fits u32, or the error naming the key.
pub fn positive_u32(v: Option<u64>, key: &'static str) -> Result<u32, ArchError> {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v > 0)
        .ok_or(ArchError::MissingKey { key })
}

fn optional_u32(v: Option<u64>, key: &'static str) -> Result<Option<u32>, ArchError> {
    v.map(|v| positive_u32(Some(v), key)).transpose()
}

/// Largest head size accepted (some tables are allocated from it).
const MAX_HEAD_DIM: u32 = 1 << 16;

/// The converter's rope dict: `rope_parameters`, else `rope_scaling`, else empty.
fn rope_dict(c: &HfConfig) -> Map<String, Json> {
    match c
        .field("rope_parameters")
        .or_else(|| c.field("rope_scaling"))
    {
        Some(Json::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

impl TextHparams {
    /// Read the generic hyperparameters, checked for consistency.
    pub fn read(c: &HfConfig, d: &ClassDefaults) -> Result<TextHparams, ArchError> {
        let n_layer = positive_u32(
            first_u64(
                c,
                &["n_layers", "num_hidden_layers", "n_layer", "num_layers"],
            )
            .or(c.num_hidden_layers),
            "num_hidden_layers",
        )?;
        let n_embd = positive_u32(
            first_u64(c, &["hidden_size", "n_embd", "dim"]).or(c.hidden_size),
            "hidden_size",
        )?;
        let n_head = positive_u32(
            first_u64(c, &["num_attention_heads", "n_head", "n_heads"]).or(c.num_attention_heads),
            "num_attention_heads",
        )?;
        let n_head_kv = positive_u32(
            first_u64(c, &["num_key_value_heads", "n_kv_heads"])
                .or(c.num_key_value_heads)
                .or(d.num_key_value_heads)
                .or(Some(n_head as u64)),
            "num_key_value_heads",
        )?;
        if n_head % n_head_kv != 0 {
            return Err(ArchError::Invalid(format!(
                "num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"
            )));
        }
        let head_dim_key = optional_u32(c.head_dim.or(d.head_dim), "head_dim")?;
        let head_dim = match head_dim_key {
            Some(hd) => hd,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(ArchError::Invalid(format!(
                    "hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}"
                )))
            }
        };
        if head_dim > MAX_HEAD_DIM || head_dim % 2 != 0 {
            return Err(ArchError::Invalid(format!(
                "head dimension {head_dim} is not an even number up to {MAX_HEAD_DIM}"
            )));
        }
        let n_ctx = optional_u32(
            first_u64(
                c,
                &[
                    "max_position_embeddings",
                    "n_ctx",
                    "n_positions",
                    "max_length",
                    "max_sequence_length",
                    "model_max_length",
                ],
            )
            .or(c.max_position_embeddings)
            .or(d.max_position_embeddings),
            "max_position_embeddings",
        )?;
        let n_ff = optional_u32(
            first_u64(
                c,
                &[
                    "prefix_dense_intermediate_size",
                    "dense_intermediate_size",
                    "intermediate_size",
                    "n_inner",
                    "hidden_dim",
                ],
            )
            .or(c.intermediate_size),
            "intermediate_size",
        )?;

        // RoPE, as TextModel.__init__ mirrors the top-level fields into the rope dict.
        let mut rope = rope_dict(c);
        let split = rope.contains_key("full_attention") || rope.contains_key("sliding_attention");
        if !split {
            let theta = first_f64(
                c,
                &[
                    "global_rope_theta",
                    "rope_global_theta",
                    "rope_theta_global",
                    "rope_theta",
                    "rotary_emb_base",
                ],
            )
            .or(c.rope.theta)
            .or(d.rope_theta);
            let local = first_f64(
                c,
                &[
                    "local_rope_theta",
                    "rope_local_theta",
                    "rope_theta_local",
                    "swa_rope_theta",
                    "rope_local_base_freq",
                ],
            )
            .or(d.rope_local_base_freq);
            if let Some(local) = local {
                rope.insert(
                    "sliding_attention".into(),
                    serde_json::json!({ "rope_theta": local }),
                );
            }
            if !rope.contains_key("rope_theta") {
                if let Some(t) = theta {
                    rope.insert("rope_theta".into(), t.into());
                }
            }
            if !rope.contains_key("rope_type") {
                if let Some(t) = rope.get("type").cloned() {
                    rope.insert("rope_type".into(), t);
                }
            }
            if !rope.contains_key("original_max_position_embeddings") {
                if let Some(v) = c.u64_field("original_max_position_embeddings") {
                    rope.insert("original_max_position_embeddings".into(), v.into());
                }
            }
        }
        let params = match rope.get("full_attention") {
            Some(Json::Object(m)) => m.clone(),
            _ => rope.clone(),
        };
        let pf = |k: &str| params.get(k).and_then(Json::as_f64);
        let mut rope_scaling: Vec<(&'static str, Value)> = Vec::new();
        match (params.get("rope_type").and_then(Json::as_str), pf("factor")) {
            (Some("linear"), Some(f)) => {
                rope_scaling.push(("rope.scaling.type", Value::String("linear".into())));
                rope_scaling.push(("rope.scaling.factor", Value::F32(f as f32)));
            }
            (Some("yarn"), Some(f)) => {
                rope_scaling.push(("rope.scaling.type", Value::String("yarn".into())));
                rope_scaling.push(("rope.scaling.factor", Value::F32(f as f32)));
                let orig = params
                    .get("original_max_position_embeddings")
                    .and_then(Json::as_u64);
                let orig = positive_u32(orig, "rope_scaling.original_max_position_embeddings")?;
                rope_scaling.push(("rope.scaling.original_context_length", Value::U32(orig)));
                for (key, names) in [
                    (
                        "rope.scaling.yarn_ext_factor",
                        &["extrapolation_factor"][..],
                    ),
                    (
                        "rope.scaling.yarn_attn_factor",
                        &["attention_factor", "attn_factor"][..],
                    ),
                    ("rope.scaling.yarn_beta_fast", &["beta_fast"][..]),
                    ("rope.scaling.yarn_beta_slow", &["beta_slow"][..]),
                ] {
                    if let Some(v) = names.iter().find_map(|n| pf(n)) {
                        rope_scaling.push((key, Value::F32(v as f32)));
                    }
                }
            }
            (Some("su" | "longrope"), _) => {
                rope_scaling.push(("rope.scaling.type", Value::String("longrope".into())));
            }
            _ => {}
        }
        let rope_theta = pf("rope_theta").map(|t| t as f32);
        let rope_theta_swa = rope
            .get("sliding_attention")
            .and_then(|s| s.get("rope_theta"))
            .and_then(Json::as_f64)
            .map(|t| t as f32);

        Ok(TextHparams {
            n_layer,
            n_ctx,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            rope_theta,
            rope_theta_swa,
            rope_scaling,
            rms_eps: first_f64(c, &["rms_norm_eps", "norm_eps"])
                .or(c.rms_norm_eps)
                .or(d.rms_norm_eps)
                .map(|v| v as f32),
            n_expert: optional_u32(
                first_u64(c, &["num_local_experts", "num_experts", "n_routed_experts"])
                    .or(d.num_experts),
                "num_experts",
            )?,
            n_expert_used: optional_u32(
                first_u64(
                    c,
                    &[
                        "num_experts_per_tok",
                        "num_experts_per_token",
                        "top_k_experts",
                    ],
                )
                .or(d.num_experts_per_tok),
                "num_experts_per_tok",
            )?,
            head_dim_key,
            head_dim,
        })
    }

    /// The keys `TextModel.set_gguf_parameters` writes, in its order, ending with
    /// `general.file_type`.
    pub fn keys(&self, arch: &str, file_type: u32) -> Vec<(String, Value)> {
        let k = |s: &str| format!("{arch}.{s}");
        let mut v = vec![(k("block_count"), Value::U32(self.n_layer))];
        if let Some(n) = self.n_ctx {
            v.push((k("context_length"), Value::U32(n)));
        }
        v.push((k("embedding_length"), Value::U32(self.n_embd)));
        if let Some(n) = self.n_ff {
            v.push((k("feed_forward_length"), Value::U32(n)));
        }
        v.push((k("attention.head_count"), Value::U32(self.n_head)));
        v.push((k("attention.head_count_kv"), Value::U32(self.n_head_kv)));
        for (suffix, value) in &self.rope_scaling {
            v.push((k(suffix), value.clone()));
        }
        if let Some(t) = self.rope_theta {
            v.push((k("rope.freq_base"), Value::F32(t)));
        }
        if let Some(t) = self.rope_theta_swa {
            v.push((k("rope.freq_base_swa"), Value::F32(t)));
        }
        if let Some(e) = self.rms_eps {
            v.push((k("attention.layer_norm_rms_epsilon"), Value::F32(e)));
        }
        if let Some(n) = self.n_expert {
            v.push((k("expert_count"), Value::U32(n)));
        }
        if let Some(n) = self.n_expert_used {
            v.push((k("expert_used_count"), Value::U32(n)));
        }
        if let Some(hd) = self.head_dim_key {
            v.push((k("attention.key_length"), Value::U32(hd)));
            v.push((k("attention.value_length"), Value::U32(hd)));
        }
        v.push(("general.file_type".into(), Value::U32(file_type)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> HfConfig {
        HfConfig::parse(text, Path::new("config.json")).unwrap()
    }

    #[test]
    fn class_defaults_fill_absent_fields() {
        let c = parse(r#"{"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2}"#);
        let d = ClassDefaults {
            max_position_embeddings: Some(32768),
            rms_norm_eps: Some(1e-6),
            rope_theta: Some(10000.0),
            num_key_value_heads: Some(32),
            ..ClassDefaults::default()
        };
        // 32 KV heads for 4 query heads: transformers' default, and inconsistent.
        assert!(TextHparams::read(&c, &d).is_err());
        let d = ClassDefaults {
            num_key_value_heads: None,
            head_dim: Some(128),
            ..d
        };
        let h = TextHparams::read(&c, &d).unwrap();
        assert_eq!((h.n_ctx, h.n_head_kv, h.head_dim), (Some(32768), 4, 128));
        assert_eq!(h.rope_theta, Some(10000.0));
        assert_eq!(h.rms_eps, Some(1e-6));
        let keys: Vec<String> = h.keys("qwen3", 1).into_iter().map(|k| k.0).collect();
        assert_eq!(
            keys,
            [
                "qwen3.block_count",
                "qwen3.context_length",
                "qwen3.embedding_length",
                "qwen3.attention.head_count",
                "qwen3.attention.head_count_kv",
                "qwen3.rope.freq_base",
                "qwen3.attention.layer_norm_rms_epsilon",
                "qwen3.attention.key_length",
                "qwen3.attention.value_length",
                "general.file_type"
            ]
        );
    }

    #[test]
    fn rope_scaling_forms() {
        let yarn = parse(
            r#"{"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,"rope_theta":1e6,
            "rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}}"#,
        );
        let h = TextHparams::read(&yarn, &ClassDefaults::default()).unwrap();
        assert_eq!(
            h.rope_scaling,
            vec![
                ("rope.scaling.type", Value::String("yarn".into())),
                ("rope.scaling.factor", Value::F32(4.0)),
                ("rope.scaling.original_context_length", Value::U32(32768)),
            ]
        );
        assert_eq!(h.rope_theta, Some(1e6));
        let v5 = parse(
            r#"{"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,
            "rope_parameters":{"rope_theta":5e5,"rope_type":"linear","factor":8.0}}"#,
        );
        let h = TextHparams::read(&v5, &ClassDefaults::default()).unwrap();
        assert_eq!(h.rope_theta, Some(5e5));
        assert_eq!(h.rope_scaling[1], ("rope.scaling.factor", Value::F32(8.0)));
        let missing = parse(
            r#"{"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,
            "rope_scaling":{"rope_type":"yarn","factor":4.0}}"#,
        );
        let e = TextHparams::read(&missing, &ClassDefaults::default()).unwrap_err();
        assert!(
            e.to_string().contains("original_max_position_embeddings"),
            "{e}"
        );
    }
}
