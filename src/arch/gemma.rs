//! The Gemma family, as llama.cpp's `conversion/gemma.py` converts it:
//! `Gemma2ForCausalLM` → `gemma2` and `Gemma3ForCausalLM` / the text model inside
//! `Gemma3ForConditionalGeneration` → `gemma3`. Every `*norm.weight` is stored as `w + 1`
//! (Gemma's RMSNorm computes `x * (1 + w)`), nothing is permuted (NeoX RoPE), the
//! SentencePiece vocabulary gets `add_space_prefix = false`, and Gemma 2's `lm_head` is
//! dropped (llama.cpp always uses the token embedding as output).

use super::hparams::{positive_u32, ClassDefaults, TextHparams};
use super::{
    layer_names, route, tensor_kind, unknown_tensor, ArchError, Architecture, Family, KeyContext,
    Mapped, QuantHints, Route, ValueOp,
};
use crate::gguf::Value;
use crate::source::tokenizer::Vocab;
use crate::source::HfConfig;

/// `Gemma2ForCausalLM`, `Gemma3ForCausalLM`, `Gemma3ForConditionalGeneration` (text only).
pub const FAMILY: Family = Family {
    hf_names: &[
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Gemma3ForConditionalGeneration",
    ],
    build: |name, config| Ok(Box::new(Gemma::from_config(name, config)?)),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Gemma2,
    Gemma3,
}

/// One Gemma 2 or Gemma 3 checkpoint.
#[derive(Clone, Debug)]
pub struct Gemma {
    variant: Variant,
    hp: TextHparams,
    n_ctx: u32,
    sliding_window: Option<u32>,
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
}

impl Gemma {
    fn from_config(hf_name: &str, c: &HfConfig) -> Result<Gemma, ArchError> {
        let variant = if hf_name == "Gemma2ForCausalLM" {
            Variant::Gemma2
        } else {
            Variant::Gemma3
        };
        // transformers 4.57's Gemma2Config / Gemma3TextConfig defaults.
        let defaults = match variant {
            Variant::Gemma2 => ClassDefaults {
                max_position_embeddings: Some(8192),
                rms_norm_eps: Some(1e-6),
                rope_theta: Some(10000.0),
                num_key_value_heads: Some(4),
                head_dim: Some(256),
                ..ClassDefaults::default()
            },
            Variant::Gemma3 => ClassDefaults {
                max_position_embeddings: Some(131072),
                rms_norm_eps: Some(1e-6),
                rope_theta: Some(1_000_000.0),
                rope_local_base_freq: Some(10000.0),
                num_key_value_heads: Some(4),
                head_dim: Some(256),
                ..ClassDefaults::default()
            },
        };
        let hp = TextHparams::read(c, &defaults)?;
        if hp.n_ff.is_none() {
            return Err(ArchError::MissingKey {
                key: "intermediate_size",
            });
        }
        let n_ctx = hp.n_ctx.unwrap_or(8192);
        let window = c.u64_field("sliding_window").or(Some(4096));
        let f32_field = |k: &str| c.f64_field(k).map(|v| v as f32);
        let (sliding_window, attn_softcap, final_softcap) = match variant {
            Variant::Gemma2 => (
                Some(positive_u32(window, "sliding_window")?),
                // Gemma2Config defaults 50 and 30; null in config.json means off
                Some(match c.field("attn_logit_softcapping") {
                    Some(v) => v.as_f64().unwrap_or(0.0) as f32,
                    None if c.raw.get("attn_logit_softcapping").is_some() => 0.0,
                    None => 50.0,
                }),
                Some(match c.field("final_logit_softcapping") {
                    Some(v) => v.as_f64().unwrap_or(0.0) as f32,
                    None if c.raw.get("final_logit_softcapping").is_some() => 0.0,
                    None => 30.0,
                }),
            ),
            Variant::Gemma3 => {
                if f32_field("attn_logit_softcapping").is_some_and(|v| v != 0.0) {
                    return Err(ArchError::Invalid(
                        "attn_logit_softcapping is set, but Gemma 3 has none (llama.cpp's converter refuses it)"
                            .into(),
                    ));
                }
                let pattern = c.u64_field("sliding_window_pattern");
                (
                    (pattern != Some(1))
                        .then(|| positive_u32(window, "sliding_window"))
                        .transpose()?,
                    None,
                    f32_field("final_logit_softcapping").filter(|&v| v != 0.0),
                )
            }
        };
        Ok(Gemma {
            variant,
            n_ctx,
            sliding_window,
            attn_softcap,
            final_softcap,
            hp,
        })
    }

    fn arch(&self) -> &'static str {
        match self.variant {
            Variant::Gemma2 => "gemma2",
            Variant::Gemma3 => "gemma3",
        }
    }
}

impl Architecture for Gemma {
    fn gguf_arch(&self) -> &'static str {
        self.arch()
    }

    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)> {
        let h = &self.hp;
        let a = self.arch();
        let k = |s: &str| format!("{a}.{s}");
        let u = Value::U32;
        match self.variant {
            Variant::Gemma2 => {
                let mut v = vec![
                    (k("context_length"), u(self.n_ctx)),
                    (k("embedding_length"), u(h.n_embd)),
                    (k("block_count"), u(h.n_layer)),
                    (k("feed_forward_length"), u(h.n_ff.unwrap_or(0))),
                    (k("attention.head_count"), u(h.n_head)),
                    (k("attention.head_count_kv"), u(h.n_head_kv)),
                    (
                        k("attention.layer_norm_rms_epsilon"),
                        Value::F32(h.rms_eps.unwrap_or(1e-6)),
                    ),
                    (k("attention.key_length"), u(h.head_dim)),
                    (k("attention.value_length"), u(h.head_dim)),
                    ("general.file_type".into(), u(ctx.file_type)),
                ];
                if let Some(s) = self.attn_softcap {
                    v.push((k("attn_logit_softcapping"), Value::F32(s)));
                }
                if let Some(s) = self.final_softcap {
                    v.push((k("final_logit_softcapping"), Value::F32(s)));
                }
                if let Some(w) = self.sliding_window {
                    v.push((k("attention.sliding_window"), u(w)));
                }
                v
            }
            Variant::Gemma3 => {
                // The generic keys; Gemma3Model then rewrites some of them with the same values.
                let mut v = h.keys(a, ctx.file_type);
                if let Some(s) = self.final_softcap {
                    v.push((k("final_logit_softcapping"), Value::F32(s)));
                }
                if let Some(w) = self.sliding_window {
                    v.push((k("attention.sliding_window"), u(w)));
                }
                v
            }
        }
    }

    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        // llama.cpp's converter deletes "language_model." from every name and drops the
        // vision tower and projector of Gemma3ForConditionalGeneration.
        let name = hf.replace("language_model.", "");
        let name = name.as_str();
        if name.starts_with("vision_tower.")
            || name.starts_with("multi_modal_projector.")
            || name.contains("vision_")
            || name.contains("projector.")
        {
            return Ok(None);
        }
        let arch = self.arch();
        // Unknown names are reported as the checkpoint spells them, "language_model." and all.
        let unknown = || unknown_tensor(hf, arch);
        let norm = |m: Mapped| Ok(Some(m.with_values(ValueOp::AddOne)));
        let l = match route(name, self.hp.n_layer, arch)? {
            Route::Dropped => return Ok(None),
            // llama.cpp's gemma2 loader never reads output.weight: the converter drops it
            Route::Global(m) if m.name == "output.weight" && self.variant == Variant::Gemma2 => {
                return Ok(None)
            }
            Route::Global(m) if m.name == "output_norm.weight" => return norm(m),
            Route::Global(m) => return Ok(Some(m)),
            Route::Layer(l) => l,
            Route::Unknown => return Err(unknown()),
        };
        let gguf = match (l.module, l.suffix) {
            ("input_layernorm", "weight") => "attn_norm",
            ("self_attn.q_proj", _) => "attn_q",
            ("self_attn.k_proj", _) => "attn_k",
            ("self_attn.v_proj", _) => "attn_v",
            ("self_attn.o_proj", _) => "attn_output",
            ("self_attn.q_norm", "weight") if self.variant == Variant::Gemma3 => "attn_q_norm",
            ("self_attn.k_norm", "weight") if self.variant == Variant::Gemma3 => "attn_k_norm",
            ("post_attention_layernorm", "weight") => "post_attention_norm",
            ("pre_feedforward_layernorm", "weight") => "ffn_norm",
            ("post_feedforward_layernorm", "weight") => "post_ffw_norm",
            ("mlp.gate_proj", _) => "ffn_gate",
            ("mlp.up_proj", _) => "ffn_up",
            ("mlp.down_proj", _) => "ffn_down",
            _ => return Err(unknown()),
        };
        let m = Mapped::plain(l.gguf_name(gguf));
        if name.ends_with("norm.weight") {
            norm(m)
        } else {
            Ok(Some(m))
        }
    }

    fn expected_shape(&self, gguf: &str) -> Option<Vec<Option<usize>>> {
        let h = &self.hp;
        let e = Some(h.n_embd as usize);
        let f = h.n_ff.map(|f| f as usize);
        let q = Some((h.n_head * h.head_dim) as usize);
        let kv = Some((h.n_head_kv * h.head_dim) as usize);
        let d = Some(h.head_dim as usize);
        Some(match tensor_kind(gguf) {
            "token_embd.weight" | "output.weight" => vec![None, e],
            "output_norm.weight"
            | "attn_norm.weight"
            | "ffn_norm.weight"
            | "post_attention_norm.weight"
            | "post_ffw_norm.weight" => vec![e],
            "attn_q.weight" => vec![q, e],
            "attn_k.weight" | "attn_v.weight" => vec![kv, e],
            "attn_output.weight" => vec![e, q],
            "attn_q_norm.weight" | "attn_k_norm.weight" => vec![d],
            "ffn_gate.weight" | "ffn_up.weight" => vec![f, e],
            "ffn_down.weight" => vec![e, f],
            _ => return None,
        })
    }

    fn required_tensors(&self) -> Vec<String> {
        let mut kinds = vec!["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output"];
        if self.variant == Variant::Gemma3 {
            kinds.extend(["attn_q_norm", "attn_k_norm"]);
        }
        kinds.extend([
            "post_attention_norm",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "post_ffw_norm",
        ]);
        layer_names(
            &["token_embd.weight", "output_norm.weight"],
            self.hp.n_layer,
            &kinds,
        )
    }

    fn quant_hints(&self) -> QuantHints {
        QuantHints::dense(&self.hp)
    }

    fn adjust_vocab(&self, vocab: &mut Vocab) {
        if vocab.model == "llama" {
            vocab.add_space_prefix = Some(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gemma3_conditional() -> Gemma {
        let c = HfConfig::parse(
            r#"{"architectures":["Gemma3ForConditionalGeneration"],
            "text_config":{"hidden_size":128,"intermediate_size":256,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":1,"head_dim":64,
            "rope_scaling":{"rope_type":"linear","factor":8.0},"sliding_window":16},
            "vision_config":{"hidden_size":32}}"#,
            Path::new("config.json"),
        )
        .unwrap();
        Gemma::from_config("Gemma3ForConditionalGeneration", &c).unwrap()
    }

    #[test]
    fn text_config_and_vision_tensors() {
        let g = gemma3_conditional();
        let m = g
            .map_tensor("model.language_model.layers.1.pre_feedforward_layernorm.weight")
            .unwrap()
            .unwrap();
        assert_eq!(m.name, "blk.1.ffn_norm.weight");
        assert_eq!(m.values, ValueOp::AddOne);
        let m = g
            .map_tensor("language_model.model.layers.0.self_attn.q_norm.weight")
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.name.as_str(), m.values),
            ("blk.0.attn_q_norm.weight", ValueOp::AddOne)
        );
        let m = g
            .map_tensor("model.language_model.layers.0.mlp.down_proj.weight")
            .unwrap()
            .unwrap();
        assert_eq!(m.values, ValueOp::None);
        for dropped in [
            "model.vision_tower.vision_model.embeddings.patch_embedding.weight",
            "model.multi_modal_projector.mm_input_projection_weight",
            "vision_tower.vision_model.post_layernorm.weight",
        ] {
            assert_eq!(g.map_tensor(dropped).unwrap(), None, "{dropped}");
        }
        let keys = g.hparams(KeyContext {
            file_type: 1,
            n_vocab: 1,
        });
        for want in [
            ("gemma3.rope.scaling.factor", Value::F32(8.0)),
            ("gemma3.rope.freq_base", Value::F32(1e6)),
            ("gemma3.rope.freq_base_swa", Value::F32(10000.0)),
            ("gemma3.attention.sliding_window", Value::U32(16)),
            ("gemma3.context_length", Value::U32(131072)),
            ("gemma3.attention.key_length", Value::U32(64)),
        ] {
            assert!(
                keys.contains(&(want.0.to_string(), want.1.clone())),
                "{want:?} in {keys:?}"
            );
        }
    }

    #[test]
    fn gemma2_drops_lm_head_and_has_softcaps() {
        let c = HfConfig::parse(
            r#"{"architectures":["Gemma2ForCausalLM"],"hidden_size":128,"intermediate_size":256,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32}"#,
            Path::new("config.json"),
        )
        .unwrap();
        let g = Gemma::from_config("Gemma2ForCausalLM", &c).unwrap();
        assert_eq!(g.map_tensor("lm_head.weight").unwrap(), None);
        let keys = g.hparams(KeyContext {
            file_type: 1,
            n_vocab: 1,
        });
        assert!(keys.contains(&("gemma2.attn_logit_softcapping".into(), Value::F32(50.0))));
        assert!(keys.contains(&("gemma2.final_logit_softcapping".into(), Value::F32(30.0))));
        assert!(!keys.iter().any(|k| k.0.contains("freq_base")));
    }
}
