//! `Olmo2ForCausalLM` → `olmo2`, as llama.cpp's `conversion/olmo.py` (`Olmo2Model`) converts
//! it: the generic keys, no pre-norms (norms after attention and after the MLP), q/k RMS norms
//! over the whole projection (`{H·D}` and `{Hkv·D}`, not per head), NeoX RoPE (nothing
//! permuted), an untied output llama.cpp requires.

use super::hparams::{ClassDefaults, TextHparams};
use super::{
    layer_names, map_with_layers, tensor_kind, ArchError, Architecture, Family, KeyContext, Mapped,
    QuantHints,
};
use crate::gguf::Value;
use crate::source::tokenizer::Vocab;
use crate::source::HfConfig;

/// `Olmo2ForCausalLM`.
pub const FAMILY: Family = Family {
    hf_names: &["Olmo2ForCausalLM"],
    build: |_, config| Ok(Box::new(Olmo2::from_config(config)?)),
};

/// One OLMo 2 checkpoint.
#[derive(Clone, Debug)]
pub struct Olmo2 {
    hp: TextHparams,
}

impl Olmo2 {
    fn from_config(c: &HfConfig) -> Result<Olmo2, ArchError> {
        // transformers 4.57's Olmo2Config defaults.
        let defaults = ClassDefaults {
            max_position_embeddings: Some(2048),
            rms_norm_eps: Some(1e-5),
            rope_theta: Some(10000.0),
            ..ClassDefaults::default()
        };
        if c.field("sliding_window").is_some() {
            // Olmo2Model writes a per-layer sliding-window pattern then (OLMo 3's layout)
            return Err(ArchError::Invalid(
                "sliding_window in an Olmo2ForCausalLM config (OLMo 3 layout) is not supported"
                    .into(),
            ));
        }
        let hp = TextHparams::read(c, &defaults)?;
        if hp.n_ff.is_none() {
            return Err(ArchError::MissingKey {
                key: "intermediate_size",
            });
        }
        Ok(Olmo2 { hp })
    }
}

impl Architecture for Olmo2 {
    fn gguf_arch(&self) -> &'static str {
        "olmo2"
    }

    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)> {
        self.hp.keys("olmo2", ctx.file_type)
    }

    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        map_with_layers(hf, self.hp.n_layer, "olmo2", |l| {
            let gguf = match (l.module, l.suffix) {
                ("self_attn.q_proj", _) => "attn_q",
                ("self_attn.k_proj", _) => "attn_k",
                ("self_attn.v_proj", _) => "attn_v",
                ("self_attn.o_proj", _) => "attn_output",
                ("self_attn.q_norm", "weight") => "attn_q_norm",
                ("self_attn.k_norm", "weight") => "attn_k_norm",
                ("post_attention_layernorm", "weight") => "post_attention_norm",
                ("post_feedforward_layernorm", "weight") => "post_ffw_norm",
                ("mlp.gate_proj", _) => "ffn_gate",
                ("mlp.up_proj", _) => "ffn_up",
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
        let kv = Some((h.n_head_kv * h.head_dim) as usize);
        Some(match tensor_kind(gguf) {
            "token_embd.weight" | "output.weight" => vec![None, e],
            "output_norm.weight" | "post_attention_norm.weight" | "post_ffw_norm.weight" => {
                vec![e]
            }
            "attn_q.weight" => vec![q, e],
            "attn_k.weight" | "attn_v.weight" => vec![kv, e],
            "attn_output.weight" => vec![e, q],
            "attn_q_norm.weight" => vec![q],
            "attn_k_norm.weight" => vec![kv],
            "ffn_gate.weight" | "ffn_up.weight" => vec![f, e],
            "ffn_down.weight" => vec![e, f],
            _ => return None,
        })
    }

    fn required_tensors(&self) -> Vec<String> {
        layer_names(
            &["token_embd.weight", "output_norm.weight", "output.weight"],
            self.hp.n_layer,
            &[
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "attn_q_norm",
                "attn_k_norm",
                "post_attention_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
                "post_ffw_norm",
            ],
        )
    }

    fn quant_hints(&self) -> QuantHints {
        QuantHints::dense(&self.hp)
    }

    fn adjust_vocab(&self, vocab: &mut Vocab) {
        // OLMo 2's cl100k-style tokenizer: the Llama-3 regex without ignore_merges, which
        // llama.cpp's converter names dbrx (the same pre-tokenizer behaviour as smaug-bpe)
        if vocab.pre == "smaug-bpe" {
            vocab.pre = "dbrx".into();
        }
    }
}
