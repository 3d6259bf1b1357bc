//! `Phi3ForCausalLM` → `phi3` (Phi-3, Phi-3.5, Phi-4-mini), as llama.cpp's `conversion/phi.py`
//! (`Phi3MiniModel`) converts it: the fused `qkv_proj` and `gate_up_proj` stay fused
//! (`attn_qkv`, `ffn_up` = gate‖up), nothing is permuted (NeoX RoPE), partial rotary dims,
//! LongRoPE as two generated factor tensors plus `rope.scaling.attn_factor`, and its own
//! keys (no generic ones) and SentencePiece vocabulary rules.

use serde_json::Value as Json;

use super::hparams::{positive_u32, ClassDefaults, TextHparams};
use super::{
    layer_names, map_with_layers, tensor_kind, ArchError, Architecture, Family, KeyContext, Mapped,
    QuantHints,
};
use crate::gguf::Value;
use crate::source::tokenizer::VocabStyle;
use crate::source::HfConfig;

/// `Phi3ForCausalLM`.
pub const FAMILY: Family = Family {
    hf_names: &["Phi3ForCausalLM"],
    build: |_, config| Ok(Box::new(Phi3::from_config(config)?)),
};

/// LongRoPE settings: the two factor lists and the attention factor.
#[derive(Clone, Debug, PartialEq)]
struct LongRope {
    long: Vec<f32>,
    short: Vec<f32>,
    attn_factor: f32,
}

/// One Phi-3 checkpoint.
#[derive(Clone, Debug)]
pub struct Phi3 {
    hp: TextHparams,
    n_ctx: u32,
    n_ctx_orig: u32,
    rope_dims: u32,
    sliding_window: u32,
    long_rope: Option<LongRope>,
}

fn float_list(v: Option<&Json>, key: &'static str) -> Result<Option<Vec<f32>>, ArchError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Array(a)) => a
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .map(Some)
            .ok_or(ArchError::MissingKey { key }),
        Some(_) => Err(ArchError::MissingKey { key }),
    }
}

impl Phi3 {
    fn from_config(c: &HfConfig) -> Result<Phi3, ArchError> {
        // transformers 4.57's Phi3Config defaults.
        let defaults = ClassDefaults {
            max_position_embeddings: Some(4096),
            rms_norm_eps: Some(1e-5),
            rope_theta: Some(10000.0),
            ..ClassDefaults::default()
        };
        let hp = TextHparams::read(c, &defaults)?;
        if hp.n_ff.is_none() {
            return Err(ArchError::MissingKey {
                key: "intermediate_size",
            });
        }
        let n_ctx = positive_u32(
            c.u64_field("n_positions")
                .or(c.max_position_embeddings)
                .or(Some(4096)),
            "max_position_embeddings",
        )?;
        let rope = c
            .field("rope_parameters")
            .or_else(|| c.field("rope_scaling"))
            .cloned()
            .unwrap_or(Json::Null);
        let n_ctx_orig = positive_u32(
            rope.get("original_max_position_embeddings")
                .and_then(Json::as_u64)
                .or(c.u64_field("original_max_position_embeddings"))
                .or(Some(4096)),
            "original_max_position_embeddings",
        )?;
        let rot_pct = rope
            .get("partial_rotary_factor")
            .and_then(Json::as_f64)
            .or(c.f64_field("partial_rotary_factor"))
            .unwrap_or(1.0);
        // Python: int(rot_pct * n_embd) // n_head
        let rope_dims = ((rot_pct * hp.n_embd as f64) as u64 / hp.n_head as u64) as u32;
        if rope_dims == 0 || !rope_dims.is_multiple_of(2) || rope_dims > hp.head_dim {
            return Err(ArchError::Invalid(format!(
                "partial_rotary_factor {rot_pct} gives {rope_dims} rotary dimensions for heads of {}",
                hp.head_dim
            )));
        }
        let long = float_list(rope.get("long_factor"), "rope_scaling.long_factor")?;
        let long_rope = match long.filter(|l| !l.is_empty()) {
            None => None,
            Some(long) => {
                let short = float_list(rope.get("short_factor"), "rope_scaling.short_factor")?
                    .ok_or(ArchError::MissingKey {
                        key: "rope_scaling.short_factor",
                    })?;
                if long.len() != short.len() || long.len() * 2 != rope_dims as usize {
                    return Err(ArchError::Invalid(format!(
                        "rope_scaling: long_factor ({}) and short_factor ({}) must both have {} values \
                         (half the {rope_dims} rotary dimensions)",
                        long.len(),
                        short.len(),
                        rope_dims / 2
                    )));
                }
                let kind = rope
                    .get("rope_type")
                    .or_else(|| rope.get("type"))
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let scale = n_ctx as f64 / n_ctx_orig as f64;
                let attn_factor = match kind.as_str() {
                    "su" | "longrope" if scale > 1.0 => {
                        (1.0 + scale.ln() / (n_ctx_orig as f64).ln()).sqrt()
                    }
                    "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
                    "su" | "longrope" | "yarn" => 1.0,
                    "" => {
                        return Err(ArchError::MissingKey {
                            key: "rope_scaling.type",
                        })
                    }
                    other => {
                        return Err(ArchError::Invalid(format!(
                            "rope scaling type '{other}' is not supported for phi3 (longrope, su, yarn)"
                        )))
                    }
                };
                Some(LongRope {
                    long,
                    short,
                    attn_factor: attn_factor as f32,
                })
            }
        };
        Ok(Phi3 {
            n_ctx,
            n_ctx_orig,
            rope_dims,
            sliding_window: c
                .u64_field("sliding_window")
                .map_or(Ok(0), |v| positive_u32(Some(v), "sliding_window"))?,
            long_rope,
            hp,
        })
    }

    fn qkv_rows(&self) -> usize {
        ((self.hp.n_head + 2 * self.hp.n_head_kv) * self.hp.head_dim) as usize
    }
}

impl Architecture for Phi3 {
    fn gguf_arch(&self) -> &'static str {
        "phi3"
    }

    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)> {
        let h = &self.hp;
        let k = |s: &str| format!("phi3.{s}");
        let u = Value::U32;
        let mut v = Vec::new();
        if let Some(lr) = &self.long_rope {
            v.push((k("rope.scaling.attn_factor"), Value::F32(lr.attn_factor)));
        }
        v.extend([
            (k("context_length"), u(self.n_ctx)),
            (
                k("rope.scaling.original_context_length"),
                u(self.n_ctx_orig),
            ),
            (k("embedding_length"), u(h.n_embd)),
            (k("feed_forward_length"), u(h.n_ff.unwrap_or(0))),
            (k("block_count"), u(h.n_layer)),
            (k("attention.head_count"), u(h.n_head)),
            (k("attention.head_count_kv"), u(h.n_head_kv)),
            (
                k("attention.layer_norm_rms_epsilon"),
                Value::F32(h.rms_eps.unwrap_or(1e-5)),
            ),
            (k("rope.dimension_count"), u(self.rope_dims)),
            (
                k("rope.freq_base"),
                Value::F32(h.rope_theta.unwrap_or(10000.0)),
            ),
            ("general.file_type".into(), u(ctx.file_type)),
            (k("attention.sliding_window"), u(self.sliding_window)),
        ]);
        v
    }

    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        map_with_layers(hf, self.hp.n_layer, "phi3", |l| {
            let gguf = match (l.module, l.suffix) {
                ("input_layernorm", "weight") => "attn_norm",
                ("self_attn.qkv_proj", _) => "attn_qkv",
                ("self_attn.o_proj", _) => "attn_output",
                ("post_attention_layernorm", "weight") => "ffn_norm",
                ("mlp.gate_up_proj", _) => "ffn_up",
                ("mlp.down_proj", _) => "ffn_down",
                _ => return Err(l.unknown()),
            };
            Ok(Some(Mapped::plain(l.gguf_name(gguf))))
        })
    }

    fn expected_shape(&self, gguf: &str) -> Option<Vec<Option<usize>>> {
        let h = &self.hp;
        let e = Some(h.n_embd as usize);
        let f = h.n_ff.map(|f| f as usize);
        let q = Some((h.n_head * h.head_dim) as usize);
        Some(match tensor_kind(gguf) {
            "token_embd.weight" | "output.weight" => vec![None, e],
            "output_norm.weight" | "attn_norm.weight" | "ffn_norm.weight" => vec![e],
            "attn_qkv.weight" => vec![Some(self.qkv_rows()), e],
            "attn_output.weight" => vec![e, q],
            "ffn_up.weight" => vec![f.map(|f| 2 * f), e],
            "ffn_down.weight" => vec![e, f],
            _ => return None,
        })
    }

    fn required_tensors(&self) -> Vec<String> {
        layer_names(
            &["token_embd.weight", "output_norm.weight"],
            self.hp.n_layer,
            &[
                "attn_norm",
                "attn_qkv",
                "attn_output",
                "ffn_norm",
                "ffn_up",
                "ffn_down",
            ],
        )
    }

    fn generated_tensors(&self) -> Vec<(String, Vec<f32>)> {
        match &self.long_rope {
            None => Vec::new(),
            Some(lr) => vec![
                ("rope_factors_long.weight".into(), lr.long.clone()),
                ("rope_factors_short.weight".into(), lr.short.clone()),
            ],
        }
    }

    fn quant_hints(&self) -> QuantHints {
        QuantHints::dense(&self.hp)
    }

    fn vocab_style(&self) -> VocabStyle {
        VocabStyle::Phi3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn phi(extra: &str) -> Result<Phi3, ArchError> {
        let text = format!(
            r#"{{"architectures":["Phi3ForCausalLM"],"hidden_size":256,"intermediate_size":512,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,
            "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":131072,
            "original_max_position_embeddings":4096{extra}}}"#
        );
        Phi3::from_config(&HfConfig::parse(&text, Path::new("config.json")).unwrap())
    }

    #[test]
    fn long_rope_factors_and_attention_factor() {
        let f: Vec<String> = (0..32).map(|i| format!("{}.0", 1 + i % 3)).collect();
        let list = f.join(",");
        let p = phi(&format!(
            r#","rope_scaling":{{"type":"longrope","long_factor":[{list}],"short_factor":[{list}]}}"#
        ))
        .unwrap();
        let g = p.generated_tensors();
        assert_eq!(g[0].0, "rope_factors_long.weight");
        assert_eq!(g[1].1.len(), 32);
        let want = (1.0 + (32.0f64).ln() / (4096.0f64).ln()).sqrt() as f32;
        let keys = p.hparams(KeyContext {
            file_type: 1,
            n_vocab: 1,
        });
        assert_eq!(
            keys[0],
            ("phi3.rope.scaling.attn_factor".into(), Value::F32(want))
        );
        assert!(keys.contains(&("phi3.attention.sliding_window".into(), Value::U32(0))));
        // wrong length: named
        let e =
            phi(r#","rope_scaling":{"type":"longrope","long_factor":[1.0],"short_factor":[1.0]}"#)
                .unwrap_err();
        assert!(e.to_string().contains("long_factor"), "{e}");
    }

    #[test]
    fn partial_rotary_and_fused_shapes() {
        let p = phi(r#","partial_rotary_factor":0.75"#).unwrap();
        assert_eq!(p.rope_dims, 48);
        assert_eq!(
            p.expected_shape("blk.0.attn_qkv.weight"),
            Some(vec![Some(768), Some(256)])
        );
        assert_eq!(
            p.expected_shape("blk.1.ffn_up.weight"),
            Some(vec![Some(1024), Some(256)])
        );
        assert_eq!(
            p.map_tensor("model.layers.1.mlp.gate_up_proj.weight")
                .unwrap()
                .unwrap()
                .name,
            "blk.1.ffn_up.weight"
        );
        assert!(p.generated_tensors().is_empty());
    }
}
