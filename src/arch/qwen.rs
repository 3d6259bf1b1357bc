//! The Qwen family, as llama.cpp's `conversion/qwen.py` converts it:
//! `Qwen2ForCausalLM` → `qwen2` (q/k/v biases), `Qwen3ForCausalLM` → `qwen3` (per-head q/k RMS
//! norms, `head_dim` independent of `hidden_size`), and their mixture-of-experts versions
//! `Qwen2MoeForCausalLM` → `qwen2moe` (plus a shared expert with its own gate) and
//! `Qwen3MoeForCausalLM` → `qwen3moe`, whose per-expert weights are stacked into 3-D
//! `ffn_{gate,up,down}_exps`. All use NeoX RoPE, so nothing is permuted.

use super::hparams::{positive_u32, ClassDefaults, TextHparams};
use super::{
    layer_names, map_with_layers, tensor_kind, ArchError, Architecture, Family, KeyContext, Mapped,
    QuantHints,
};
use crate::gguf::Value;
use crate::source::HfConfig;

/// `Qwen2ForCausalLM` and `Qwen3ForCausalLM`.
pub const FAMILY: Family = Family {
    hf_names: &[
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen2MoeForCausalLM",
        "Qwen3MoeForCausalLM",
    ],
    build: |name, config| Ok(Box::new(Qwen::from_config(name, config)?)),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Qwen2,
    Qwen3,
    Qwen2Moe,
    Qwen3Moe,
}

impl Variant {
    fn moe(self) -> bool {
        matches!(self, Variant::Qwen2Moe | Variant::Qwen3Moe)
    }

    fn qk_norm(self) -> bool {
        matches!(self, Variant::Qwen3 | Variant::Qwen3Moe)
    }
}

/// One Qwen2 or Qwen3 checkpoint.
#[derive(Clone, Debug)]
pub struct Qwen {
    variant: Variant,
    hp: TextHparams,
    /// `moe_intermediate_size` (MoE only).
    n_ff_exp: Option<u32>,
    /// `shared_expert_intermediate_size` (Qwen2-MoE only).
    n_ff_shexp: Option<u32>,
}

impl Qwen {
    fn from_config(hf_name: &str, c: &HfConfig) -> Result<Qwen, ArchError> {
        let variant = match hf_name {
            "Qwen3ForCausalLM" => Variant::Qwen3,
            "Qwen2MoeForCausalLM" => Variant::Qwen2Moe,
            "Qwen3MoeForCausalLM" => Variant::Qwen3Moe,
            _ => Variant::Qwen2,
        };
        // transformers 4.57's Qwen2/Qwen3/Qwen2Moe/Qwen3MoeConfig defaults (what the converter
        // sees).
        let defaults = ClassDefaults {
            max_position_embeddings: Some(32768),
            rms_norm_eps: Some(1e-6),
            rope_theta: Some(10000.0),
            num_key_value_heads: Some(match variant {
                Variant::Qwen2Moe => 16,
                Variant::Qwen3Moe => 4,
                _ => 32,
            }),
            head_dim: (variant == Variant::Qwen3).then_some(128),
            num_experts: match variant {
                Variant::Qwen2Moe => Some(60),
                Variant::Qwen3Moe => Some(128),
                _ => None,
            },
            num_experts_per_tok: match variant {
                Variant::Qwen2Moe => Some(4),
                Variant::Qwen3Moe => Some(8),
                _ => None,
            },
            ..ClassDefaults::default()
        };
        let hp = TextHparams::read(c, &defaults)?;
        let (mut n_ff_exp, mut n_ff_shexp) = (None, None);
        if variant.moe() {
            let sparse_step = c.u64_field("decoder_sparse_step").unwrap_or(1);
            let dense_layers = c
                .field("mlp_only_layers")
                .and_then(|v| v.as_array())
                .is_some_and(|a| !a.is_empty());
            if sparse_step > 1 || dense_layers {
                return Err(ArchError::Invalid(
                    "dense MLP layers (mlp_only_layers / decoder_sparse_step > 1) in a Qwen MoE \
                     model: llama.cpp's loader expects experts in every layer"
                        .into(),
                ));
            }
            if hp.n_expert.unwrap_or(0) < 2 || hp.n_expert_used.unwrap_or(0) == 0 {
                return Err(ArchError::MissingKey { key: "num_experts" });
            }
            if hp.n_expert.unwrap_or(0) > 4096 {
                return Err(ArchError::Invalid(format!(
                    "num_experts {} is implausible (at most 4096)",
                    hp.n_expert.unwrap_or(0)
                )));
            }
            n_ff_exp = Some(positive_u32(
                c.u64_field("moe_intermediate_size")
                    .or(Some(if variant == Variant::Qwen2Moe {
                        1408
                    } else {
                        768
                    })),
                "moe_intermediate_size",
            )?);
            if variant == Variant::Qwen2Moe {
                n_ff_shexp = Some(positive_u32(
                    c.u64_field("shared_expert_intermediate_size")
                        .or(Some(5632)),
                    "shared_expert_intermediate_size",
                )?);
            }
        }
        if hp.n_ff.is_none() {
            return Err(ArchError::MissingKey {
                key: "intermediate_size",
            });
        }
        if hp.rms_eps.is_none() {
            return Err(ArchError::MissingKey {
                key: "rms_norm_eps",
            });
        }
        if variant == Variant::Qwen2 && hp.n_head * hp.head_dim != hp.n_embd {
            // llama.cpp's qwen2 loader sizes the query projection by hidden_size.
            return Err(ArchError::Invalid(format!(
                "qwen2 needs num_attention_heads x head_dim = hidden_size, got {} x {} != {}",
                hp.n_head, hp.head_dim, hp.n_embd
            )));
        }
        Ok(Qwen {
            variant,
            hp,
            n_ff_exp,
            n_ff_shexp,
        })
    }

    fn arch(&self) -> &'static str {
        match self.variant {
            Variant::Qwen2 => "qwen2",
            Variant::Qwen3 => "qwen3",
            Variant::Qwen2Moe => "qwen2moe",
            Variant::Qwen3Moe => "qwen3moe",
        }
    }
}

impl Architecture for Qwen {
    fn gguf_arch(&self) -> &'static str {
        self.arch()
    }

    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)> {
        let mut v = self.hp.keys(self.arch(), ctx.file_type);
        if let Some(n) = self.n_ff_exp {
            v.push((
                format!("{}.expert_feed_forward_length", self.arch()),
                Value::U32(n),
            ));
        }
        if let Some(n) = self.n_ff_shexp {
            v.push((
                format!("{}.expert_shared_feed_forward_length", self.arch()),
                Value::U32(n),
            ));
        }
        v
    }

    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        map_with_layers(hf, self.hp.n_layer, self.arch(), |l| {
            let moe = self.variant.moe();
            if moe {
                let kinds = [
                    ("gate_proj", "ffn_gate_exps"),
                    ("up_proj", "ffn_up_exps"),
                    ("down_proj", "ffn_down_exps"),
                ];
                if let Some(m) = l.expert("mlp.experts.", &kinds)? {
                    return Ok(Some(m));
                }
            }
            let shared = self.variant == Variant::Qwen2Moe;
            let gguf = match (l.module, l.suffix) {
                ("input_layernorm", "weight") => "attn_norm",
                ("self_attn.q_proj", _) => "attn_q",
                ("self_attn.k_proj", _) => "attn_k",
                ("self_attn.v_proj", _) => "attn_v",
                ("self_attn.o_proj", _) => "attn_output",
                ("self_attn.q_norm", "weight") if self.variant.qk_norm() => "attn_q_norm",
                ("self_attn.k_norm", "weight") if self.variant.qk_norm() => "attn_k_norm",
                ("post_attention_layernorm", "weight") => "ffn_norm",
                ("mlp.gate_proj", _) if !moe => "ffn_gate",
                ("mlp.up_proj", _) if !moe => "ffn_up",
                ("mlp.down_proj", _) if !moe => "ffn_down",
                ("mlp.gate", "weight") if moe => "ffn_gate_inp",
                ("mlp.shared_expert.gate_proj", "weight") if shared => "ffn_gate_shexp",
                ("mlp.shared_expert.up_proj", "weight") if shared => "ffn_up_shexp",
                ("mlp.shared_expert.down_proj", "weight") if shared => "ffn_down_shexp",
                ("mlp.shared_expert_gate", "weight") if shared => "ffn_gate_inp_shexp",
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
        let kv = Some((h.n_head_kv * h.head_dim) as usize);
        let d = Some(h.head_dim as usize);
        let x = h.n_expert.map(|x| x as usize);
        let fe = self.n_ff_exp.map(|f| f as usize);
        let fs = self.n_ff_shexp.map(|f| f as usize);
        Some(match tensor_kind(gguf) {
            "ffn_gate_inp.weight" => vec![x, e],
            "ffn_gate_exps.weight" | "ffn_up_exps.weight" => vec![x, fe, e],
            "ffn_down_exps.weight" => vec![x, e, fe],
            "ffn_gate_shexp.weight" | "ffn_up_shexp.weight" => vec![fs, e],
            "ffn_down_shexp.weight" => vec![e, fs],
            "ffn_gate_inp_shexp.weight" => vec![Some(1), e],
            "token_embd.weight" | "output.weight" => vec![None, e],
            "output_norm.weight" | "attn_norm.weight" | "ffn_norm.weight" => vec![e],
            "attn_q.weight" => vec![q, e],
            "attn_k.weight" | "attn_v.weight" => vec![kv, e],
            "attn_q.bias" => vec![q],
            "attn_k.bias" | "attn_v.bias" => vec![kv],
            "attn_output.weight" => vec![e, q],
            "attn_output.bias" => vec![e],
            "attn_q_norm.weight" | "attn_k_norm.weight" => vec![d],
            "ffn_gate.weight" | "ffn_up.weight" => vec![f, e],
            "ffn_down.weight" => vec![e, f],
            _ => return None,
        })
    }

    fn required_tensors(&self) -> Vec<String> {
        let mut kinds = vec!["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output"];
        if self.variant.qk_norm() {
            kinds.extend(["attn_q_norm", "attn_k_norm"]);
        }
        kinds.push("ffn_norm");
        if self.variant.moe() {
            kinds.extend([
                "ffn_gate_inp",
                "ffn_gate_exps",
                "ffn_up_exps",
                "ffn_down_exps",
            ]);
        } else {
            kinds.extend(["ffn_gate", "ffn_up", "ffn_down"]);
        }
        if self.variant == Variant::Qwen2Moe {
            kinds.extend([
                "ffn_gate_inp_shexp",
                "ffn_gate_shexp",
                "ffn_up_shexp",
                "ffn_down_shexp",
            ]);
        }
        // llama.cpp's qwen2moe loader has no tied-embedding fallback
        let globals: &[&str] = if self.variant == Variant::Qwen2Moe {
            &["token_embd.weight", "output_norm.weight", "output.weight"]
        } else {
            &["token_embd.weight", "output_norm.weight"]
        };
        layer_names(globals, self.hp.n_layer, &kinds)
    }

    fn quant_hints(&self) -> QuantHints {
        QuantHints {
            n_layer: self.hp.n_layer,
            n_head: self.hp.n_head,
            n_head_kv: self.hp.n_head_kv,
            n_expert: if self.variant.moe() {
                self.hp.n_expert.unwrap_or(0)
            } else {
                0
            },
            // llama.cpp types an 80-layer qwen2 as LLM_TYPE_70B (Qwen2-72B).
            is_70b: self.variant == Variant::Qwen2 && self.hp.n_layer == 80,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn qwen3() -> Qwen {
        let c = HfConfig::parse(
            r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":192,"intermediate_size":384,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":64,
            "rms_norm_eps":1e-6,"rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}"#,
            Path::new("config.json"),
        )
        .unwrap();
        Qwen::from_config("Qwen3ForCausalLM", &c).unwrap()
    }

    #[test]
    fn qwen3_maps_norms_and_checks_head_dim_shapes() {
        let q = qwen3();
        let m = q
            .map_tensor("model.layers.1.self_attn.k_norm.weight")
            .unwrap()
            .unwrap();
        assert_eq!(m, Mapped::plain("blk.1.attn_k_norm.weight"));
        assert_eq!(
            q.expected_shape("blk.0.attn_q.weight"),
            Some(vec![Some(256), Some(192)])
        );
        assert_eq!(
            q.expected_shape("blk.0.attn_output.weight"),
            Some(vec![Some(192), Some(256)])
        );
        assert_eq!(
            q.expected_shape("blk.0.attn_q_norm.weight"),
            Some(vec![Some(64)])
        );
        assert!(q
            .required_tensors()
            .contains(&"blk.1.attn_k_norm.weight".to_string()));
        let keys = q.hparams(KeyContext {
            file_type: 1,
            n_vocab: 10,
        });
        assert!(keys.contains(&("qwen3.attention.key_length".into(), Value::U32(64))));
        assert!(keys.contains(&("qwen3.rope.freq_base".into(), Value::F32(1e6))));
        assert!(matches!(
            q.map_tensor("model.layers.0.mlp.experts.0.up_proj.weight"),
            Err(ArchError::UnknownTensor { arch: "qwen3", .. })
        ));
    }

    #[test]
    fn qwen2_keeps_biases_and_has_no_qk_norm() {
        let c = HfConfig::parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":256,"intermediate_size":512,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-6,
            "rope_theta":1000000.0}"#,
            Path::new("config.json"),
        )
        .unwrap();
        let q = Qwen::from_config("Qwen2ForCausalLM", &c).unwrap();
        assert_eq!(
            q.map_tensor("model.layers.0.self_attn.q_proj.bias")
                .unwrap()
                .unwrap()
                .name,
            "blk.0.attn_q.bias"
        );
        assert_eq!(q.expected_shape("blk.0.attn_k.bias"), Some(vec![Some(128)]));
        assert!(q
            .map_tensor("model.layers.0.self_attn.q_norm.weight")
            .is_err());
        let keys: Vec<String> = q
            .hparams(KeyContext {
                file_type: 1,
                n_vocab: 10,
            })
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert!(!keys.iter().any(|k| k.contains("key_length")));
        assert_eq!(q.quant_hints().n_head_kv, 2);
    }
}
