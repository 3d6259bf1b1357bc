//! The Qwen family, as llama.cpp's `conversion/qwen.py` converts it:
//! `Qwen2ForCausalLM` → `qwen2` (q/k/v biases) and `Qwen3ForCausalLM` → `qwen3` (per-head
//! q/k RMS norms, `head_dim` independent of `hidden_size`). Both use NeoX RoPE, so nothing is
//! permuted; the generic hyperparameter keys only.

use super::hparams::{ClassDefaults, TextHparams};
use super::{
    always_dropped, layer_names, split_layer_name, tensor_kind, ArchError, Architecture, Family,
    KeyContext, Mapped, QuantHints,
};
use crate::gguf::Value;
use crate::source::HfConfig;

/// `Qwen2ForCausalLM` and `Qwen3ForCausalLM`.
pub const FAMILY: Family = Family {
    hf_names: &["Qwen2ForCausalLM", "Qwen3ForCausalLM"],
    build: |name, config| Ok(Box::new(Qwen::from_config(name, config)?)),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Qwen2,
    Qwen3,
}

/// One Qwen2 or Qwen3 checkpoint.
#[derive(Clone, Debug)]
pub struct Qwen {
    variant: Variant,
    hp: TextHparams,
}

impl Qwen {
    fn from_config(hf_name: &str, c: &HfConfig) -> Result<Qwen, ArchError> {
        let variant = if hf_name == "Qwen3ForCausalLM" {
            Variant::Qwen3
        } else {
            Variant::Qwen2
        };
        // transformers 4.57's Qwen2Config / Qwen3Config defaults (what the converter sees).
        let defaults = ClassDefaults {
            max_position_embeddings: Some(32768),
            rms_norm_eps: Some(1e-6),
            rope_theta: Some(10000.0),
            num_key_value_heads: Some(32),
            head_dim: (variant == Variant::Qwen3).then_some(128),
            ..ClassDefaults::default()
        };
        let hp = TextHparams::read(c, &defaults)?;
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
        Ok(Qwen { variant, hp })
    }

    fn arch(&self) -> &'static str {
        match self.variant {
            Variant::Qwen2 => "qwen2",
            Variant::Qwen3 => "qwen3",
        }
    }
}

impl Architecture for Qwen {
    fn gguf_arch(&self) -> &'static str {
        self.arch()
    }

    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)> {
        self.hp.keys(self.arch(), ctx.file_type)
    }

    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        if always_dropped(hf) {
            return Ok(None);
        }
        let arch = self.arch();
        let unknown = || ArchError::UnknownTensor {
            name: hf.to_string(),
            arch,
        };
        match hf {
            "model.embed_tokens.weight" => return Ok(Some(Mapped::plain("token_embd.weight"))),
            "model.norm.weight" => return Ok(Some(Mapped::plain("output_norm.weight"))),
            "lm_head.weight" => return Ok(Some(Mapped::plain("output.weight"))),
            _ => {}
        }
        let (layer, module, suffix) =
            split_layer_name(hf, self.hp.n_layer, arch)?.ok_or_else(unknown)?;
        let gguf = match (module, suffix) {
            ("input_layernorm", "weight") => "attn_norm",
            ("self_attn.q_proj", _) => "attn_q",
            ("self_attn.k_proj", _) => "attn_k",
            ("self_attn.v_proj", _) => "attn_v",
            ("self_attn.o_proj", _) => "attn_output",
            ("self_attn.q_norm", "weight") if self.variant == Variant::Qwen3 => "attn_q_norm",
            ("self_attn.k_norm", "weight") if self.variant == Variant::Qwen3 => "attn_k_norm",
            ("post_attention_layernorm", "weight") => "ffn_norm",
            ("mlp.gate_proj", _) => "ffn_gate",
            ("mlp.up_proj", _) => "ffn_up",
            ("mlp.down_proj", _) => "ffn_down",
            _ => return Err(unknown()),
        };
        Ok(Some(Mapped::plain(format!("blk.{layer}.{gguf}.{suffix}"))))
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
        if self.variant == Variant::Qwen3 {
            kinds.extend(["attn_q_norm", "attn_k_norm"]);
        }
        kinds.extend(["ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]);
        layer_names(
            &["token_embd.weight", "output_norm.weight"],
            self.hp.n_layer,
            &kinds,
        )
    }

    fn quant_hints(&self) -> QuantHints {
        QuantHints {
            n_layer: self.hp.n_layer,
            n_head: self.hp.n_head,
            n_head_kv: self.hp.n_head_kv,
            n_expert: 0,
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
