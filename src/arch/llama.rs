//! The `llama` family: `LlamaForCausalLM` (Llama 2/3.x, SmolLM/SmolLM2), `MistralForCausalLM`
//! and `MixtralForCausalLM` → `llama`, and the two llama.cpp converts with `LlamaModel`
//! subclasses: `SmolLM3ForCausalLM` → `smollm3` (NoPE layers are hard-coded in llama.cpp) and
//! `GraniteForCausalLM` → `granite` (head_dim ignored; embedding/attention/residual/logit
//! multipliers). Q/K rows are permuted for llama.cpp's interleaved RoPE, Llama-3 rope scaling
//! becomes a generated `rope_freqs` tensor, Mixtral's experts (`w1`/`w2`/`w3`) are stacked into
//! 3-D `ffn_{gate,down,up}_exps`.

use super::hparams::positive_u32;
use super::{
    layer_names, map_with_layers, tensor_kind, ArchError, Architecture, Family, KeyContext, Mapped,
    QuantHints, Transform,
};
use crate::gguf::Value;
use crate::source::HfConfig;

/// `LlamaForCausalLM` and `MistralForCausalLM` (both llama.cpp's `llama`).
pub const FAMILY: Family = Family {
    hf_names: &[
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "SmolLM3ForCausalLM",
        "GraniteForCausalLM",
    ],
    build: |name, config| {
        let mut config = config.clone();
        if name == "GraniteForCausalLM" {
            // GraniteModel pops head_dim before anything reads it
            config.head_dim = None;
        }
        let config = &config;
        let mut p = LlamaParams::from_config(config)?;
        p.arch = match name {
            "SmolLM3ForCausalLM" => "smollm3",
            "GraniteForCausalLM" => "granite",
            _ => "llama",
        };
        if name == "GraniteForCausalLM" {
            // GraniteConfig's defaults are 1.0; the converter writes each when non-zero
            let m = |k: &str| config.f64_field(k).unwrap_or(1.0) as f32;
            p.granite = Some([
                m("attention_multiplier"),
                m("embedding_multiplier"),
                m("residual_multiplier"),
                m("logits_scaling"),
            ]);
        }
        // transformers' LlamaConfig always sets head_dim (hidden / heads when absent), so the
        // converter always writes key/value_length for Llama; Mistral/MixtralConfig leave it.
        if name == "LlamaForCausalLM" && p.head_dim.is_none() {
            p.head_dim = Some(p.rope_dim);
        }
        if name == "MixtralForCausalLM" {
            // MixtralConfig's defaults: 8 experts, 2 used
            let x = config.u64_field("num_local_experts").unwrap_or(8);
            let used = config.u64_field("num_experts_per_tok").unwrap_or(2);
            if !(2..=4096).contains(&x) || used == 0 || used > x {
                return Err(ArchError::Invalid(format!(
                    "num_local_experts {x} / num_experts_per_tok {used} are not a usable mixture"
                )));
            }
            p.experts = Some((x as u32, used as u32));
        }
        Ok(Box::new(p))
    },
};

/// llama.cpp's hyperparameters for the `llama` architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    pub n_layer: u32,
    pub n_ctx: u32,
    pub n_embd: u32,
    pub n_ff: u32,
    pub n_head: u32,
    /// Only written when config.json has `num_key_value_heads` (llama.cpp defaults to n_head).
    pub n_head_kv: Option<u32>,
    pub rope_theta: Option<f32>,
    pub rms_eps: f32,
    /// `head_dim` when config.json gives it.
    pub head_dim: Option<u32>,
    pub rope_dim: u32,
    pub vocab_size: Option<u32>,
    /// `linear` rope scaling factor.
    pub rope_linear_factor: Option<f32>,
    /// Llama-3 style rope scaling: the `rope_freqs.weight` tensor values (head_dim / 2).
    pub rope_freqs: Option<Vec<f32>>,
    pub tied_embeddings: bool,
    /// Mixtral: (num_local_experts, num_experts_per_tok).
    pub experts: Option<(u32, u32)>,
    /// `general.architecture`: llama, smollm3 or granite.
    pub arch: &'static str,
    /// Granite's attention, embedding, residual and logit multipliers.
    pub granite: Option<[f32; 4]>,
}

impl LlamaParams {
    /// Hyperparameters from config.json, checked for consistency.
    pub fn from_config(c: &HfConfig) -> Result<LlamaParams, ArchError> {
        let n_embd = positive_u32(c.hidden_size, "hidden_size")?;
        let n_head = positive_u32(c.num_attention_heads, "num_attention_heads")?;
        let n_head_kv = c
            .num_key_value_heads
            .map(|v| positive_u32(Some(v), "num_key_value_heads"))
            .transpose()?;
        if let Some(kv) = n_head_kv {
            if n_head % kv != 0 {
                return Err(ArchError::Invalid(format!(
                    "num_attention_heads {n_head} is not a multiple of num_key_value_heads {kv}"
                )));
            }
        }
        let head_dim = c
            .head_dim
            .map(|v| positive_u32(Some(v), "head_dim"))
            .transpose()?;
        if head_dim.is_none() && n_embd % n_head != 0 {
            return Err(ArchError::Invalid(format!(
                "hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}"
            )));
        }
        let rope_dim = head_dim.unwrap_or(n_embd / n_head);
        // rope_freqs (head_dim / 2 values) is allocated from this number.
        if rope_dim > 1 << 16 {
            return Err(ArchError::Invalid(format!(
                "head dimension {rope_dim} is implausible (at most 65536)"
            )));
        }
        if rope_dim % 2 != 0 {
            return Err(ArchError::Invalid(format!(
                "head dimension {rope_dim} is odd"
            )));
        }
        let rms_eps = c.rms_norm_eps.ok_or(ArchError::MissingKey {
            key: "rms_norm_eps",
        })? as f32;
        let rope_type = c.rope.rope_type.as_deref().unwrap_or("default");
        let mut rope_linear_factor = None;
        let mut rope_freqs = None;
        match rope_type {
            "default" => {}
            "linear" => {
                rope_linear_factor = Some(c.rope.factor.ok_or(ArchError::MissingKey {
                    key: "rope_scaling.factor",
                })? as f32)
            }
            "llama3" => {
                rope_freqs = Some(llama3_rope_freqs(
                    rope_dim as usize,
                    c.rope.theta.unwrap_or(10000.0),
                    c.rope.factor.unwrap_or(8.0),
                    c.rope.low_freq_factor.unwrap_or(1.0),
                    c.rope.high_freq_factor.unwrap_or(4.0),
                    c.rope.original_max_position_embeddings.unwrap_or(8192) as f64,
                ))
            }
            other => {
                return Err(ArchError::Invalid(format!(
                    "rope type '{other}' is not supported (default, linear, llama3)"
                )))
            }
        }
        Ok(LlamaParams {
            n_layer: positive_u32(c.num_hidden_layers, "num_hidden_layers")?,
            n_ctx: positive_u32(c.max_position_embeddings, "max_position_embeddings")?,
            n_embd,
            n_ff: positive_u32(c.intermediate_size, "intermediate_size")?,
            n_head,
            n_head_kv,
            rope_theta: c.rope.theta.map(|t| t as f32),
            rms_eps,
            head_dim,
            rope_dim,
            vocab_size: c.vocab_size.and_then(|v| u32::try_from(v).ok()),
            rope_linear_factor,
            rope_freqs,
            tied_embeddings: c.tie_word_embeddings,
            experts: None,
            arch: "llama",
            granite: None,
        })
    }

    /// The safetensors shape llama.cpp will require for a GGUF tensor name (`None` in a
    /// position means any size, e.g. the vocabulary), or `None` for tensors it does not check.
    pub fn expected_shape(&self, gguf: &str) -> Option<Vec<Option<usize>>> {
        let e = Some(self.n_embd as usize);
        let f = Some(self.n_ff as usize);
        let q = Some((self.n_head * self.rope_dim) as usize);
        let kv = Some((self.n_head_kv.unwrap_or(self.n_head) * self.rope_dim) as usize);
        let x = self.experts.map(|(x, _)| x as usize);
        Some(match tensor_kind(gguf) {
            "ffn_gate_inp.weight" => vec![x, e],
            "ffn_gate_exps.weight" | "ffn_up_exps.weight" => vec![x, f, e],
            "ffn_down_exps.weight" => vec![x, e, f],
            "token_embd.weight" | "output.weight" => vec![None, e],
            "output_norm.weight" | "attn_norm.weight" | "ffn_norm.weight" => vec![e],
            "attn_q.weight" => vec![q, e],
            "attn_k.weight" | "attn_v.weight" => vec![kv, e],
            "attn_output.weight" => vec![e, q],
            "ffn_gate.weight" | "ffn_up.weight" => vec![f, e],
            "ffn_down.weight" => vec![e, f],
            _ => return None,
        })
    }

    /// GGUF names llama.cpp requires (output.weight is optional: tied embeddings).
    pub fn required_tensors(&self) -> Vec<String> {
        layer_names(
            &["token_embd.weight", "output_norm.weight"],
            self.n_layer,
            &[
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
            ]
            .into_iter()
            .chain(
                if self.experts.is_some() {
                    ["ffn_gate_inp", "ffn_up_exps", "ffn_down_exps"].as_slice()
                } else {
                    ["ffn_gate", "ffn_up", "ffn_down"].as_slice()
                }
                .iter()
                .copied(),
            )
            .collect::<Vec<_>>(),
        )
    }

    /// Map an HF tensor name. `Ok(None)` for tensors llama.cpp's converter drops.
    pub fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        map_with_layers(hf, self.n_layer, self.arch, |l| {
            if self.experts.is_some() {
                if l.module == "block_sparse_moe.gate" && l.suffix == "weight" {
                    return Ok(Some(Mapped::plain(l.gguf_name("ffn_gate_inp"))));
                }
                let kinds = [
                    ("w1", "ffn_gate_exps"),
                    ("w2", "ffn_down_exps"),
                    ("w3", "ffn_up_exps"),
                ];
                if let Some(m) = l.expert("block_sparse_moe.experts.", &kinds)? {
                    return Ok(Some(m));
                }
            }
            let n_kv = self.n_head_kv.unwrap_or(self.n_head) as usize;
            let (gguf, transform) = match l.module {
                "input_layernorm" => ("attn_norm", Transform::None),
                "self_attn.q_proj" => (
                    "attn_q",
                    Transform::PermuteRope {
                        n_head: self.n_head as usize,
                    },
                ),
                "self_attn.k_proj" => ("attn_k", Transform::PermuteRope { n_head: n_kv }),
                "self_attn.v_proj" => ("attn_v", Transform::None),
                "self_attn.o_proj" => ("attn_output", Transform::None),
                "post_attention_layernorm" => ("ffn_norm", Transform::None),
                "mlp.gate_proj" => ("ffn_gate", Transform::None),
                "mlp.up_proj" => ("ffn_up", Transform::None),
                "mlp.down_proj" => ("ffn_down", Transform::None),
                _ => return Err(l.unknown()),
            };
            Ok(Some(Mapped {
                name: l.gguf_name(gguf),
                transform,
                values: super::ValueOp::None,
                expert: None,
            }))
        })
    }
}

impl Architecture for LlamaParams {
    fn gguf_arch(&self) -> &'static str {
        self.arch
    }

    fn hparams(&self, ctx: KeyContext) -> Vec<(String, Value)> {
        let a = self.arch;
        let k = |s: &str| format!("{a}.{s}");
        let u = Value::U32;
        let mut v = vec![
            (k("block_count"), u(self.n_layer)),
            (k("context_length"), u(self.n_ctx)),
            (k("embedding_length"), u(self.n_embd)),
            (k("feed_forward_length"), u(self.n_ff)),
            (k("attention.head_count"), u(self.n_head)),
        ];
        if let Some(kv) = self.n_head_kv {
            v.push((k("attention.head_count_kv"), u(kv)));
        }
        if let Some(theta) = self.rope_theta {
            v.push((k("rope.freq_base"), Value::F32(theta)));
        }
        v.push((
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(self.rms_eps),
        ));
        if let Some((x, used)) = self.experts {
            v.push((k("expert_count"), u(x)));
            v.push((k("expert_used_count"), u(used)));
        }
        if let Some(hd) = self.head_dim {
            v.push((k("attention.key_length"), u(hd)));
            v.push((k("attention.value_length"), u(hd)));
        }
        v.push(("general.file_type".into(), u(ctx.file_type)));
        v.push((k("vocab_size"), u(self.vocab_size.unwrap_or(ctx.n_vocab))));
        v.push((k("rope.dimension_count"), u(self.rope_dim)));
        if let Some(f) = self.rope_linear_factor {
            v.push((k("rope.scaling.type"), Value::String("linear".into())));
            v.push((k("rope.scaling.factor"), Value::F32(f)));
        }
        if let Some(m) = self.granite {
            for (key, value) in [
                "attention.scale",
                "embedding_scale",
                "residual_scale",
                "logit_scale",
            ]
            .into_iter()
            .zip(m)
            {
                if value != 0.0 {
                    v.push((k(key), Value::F32(value)));
                }
            }
        }
        v
    }

    fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        LlamaParams::map_tensor(self, hf)
    }

    fn expected_shape(&self, gguf: &str) -> Option<Vec<Option<usize>>> {
        LlamaParams::expected_shape(self, gguf)
    }

    fn required_tensors(&self) -> Vec<String> {
        LlamaParams::required_tensors(self)
    }

    fn generated_tensors(&self) -> Vec<(String, Vec<f32>)> {
        self.rope_freqs
            .iter()
            .map(|f| ("rope_freqs.weight".to_string(), f.clone()))
            .collect()
    }

    fn vocab_style(&self) -> crate::source::tokenizer::VocabStyle {
        crate::source::tokenizer::VocabStyle::Llama
    }

    fn adjust_vocab(&self, vocab: &mut crate::source::tokenizer::Vocab) {
        // LlamaModel.set_vocab: vocabularies of 49152 (SmolLM/SmolLM2, small Granite) add no BOS
        if self.vocab_size == Some(49152) {
            vocab.add_bos = Some(false);
        }
        // Granite's Digits + ByteLevel tokenizer: llama.cpp's converter names it refact (the
        // same pre-tokenizer behaviour as smollm but for clean_spaces on detokenization)
        if self.arch == "granite" && vocab.pre == "smollm" {
            vocab.pre = "refact".into();
        }
    }

    fn quant_hints(&self) -> QuantHints {
        let n_head_kv = self.n_head_kv.unwrap_or(self.n_head);
        QuantHints {
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_head_kv,
            n_expert: self.experts.map_or(0, |(x, _)| x),
            // llama.cpp's LLM_TYPE_70B for llama: 80 layers with GQA.
            is_70b: self.n_layer == 80 && self.n_head != n_head_kv,
        }
    }
}

/// llama.cpp's `rope_freqs.weight` for Llama-3 rope scaling (convert_hf_to_gguf's formula).
pub fn llama3_rope_freqs(
    dim: usize,
    base: f64,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    old_ctx: f64,
) -> Vec<f32> {
    let low_wavelen = old_ctx / low_freq_factor;
    let high_wavelen = old_ctx / high_freq_factor;
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth =
                    (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HfConfig {
        HfConfig {
            architectures: vec!["LlamaForCausalLM".into()],
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
    fn maps_names_with_kv_heads_for_k() {
        let p = LlamaParams::from_config(&config()).unwrap();
        let k = p
            .map_tensor("model.layers.1.self_attn.k_proj.weight")
            .unwrap()
            .unwrap();
        assert_eq!(k.name, "blk.1.attn_k.weight");
        assert_eq!(k.transform, Transform::PermuteRope { n_head: 2 });
        let q = p
            .map_tensor("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .unwrap();
        assert_eq!(q.transform, Transform::PermuteRope { n_head: 4 });
        assert_eq!(
            p.map_tensor("model.layers.0.mlp.down_proj.weight")
                .unwrap()
                .unwrap()
                .name,
            "blk.0.ffn_down.weight"
        );
        assert_eq!(
            p.map_tensor("model.layers.0.self_attn.rotary_emb.inv_freq")
                .unwrap(),
            None
        );
        assert!(p.map_tensor("model.layers.2.mlp.up_proj.weight").is_err());
        assert!(matches!(
            p.map_tensor("model.vision.weight"),
            Err(ArchError::UnknownTensor { .. })
        ));
    }

    #[test]
    fn llama3_freqs_follow_the_piecewise_rule() {
        let f = llama3_rope_freqs(128, 500000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0); // highest frequency: short wavelength, unscaled
        assert_eq!(f[63], 8.0); // lowest frequency: scaled by the factor
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn params_require_rms_eps_and_consistent_heads() {
        let mut c = config();
        c.rms_norm_eps = None;
        assert_eq!(
            LlamaParams::from_config(&c).unwrap_err(),
            ArchError::MissingKey {
                key: "rms_norm_eps"
            }
        );
        let mut c = config();
        c.num_key_value_heads = Some(3);
        assert!(LlamaParams::from_config(&c).is_err());
        let p = LlamaParams::from_config(&config()).unwrap();
        assert_eq!((p.rope_dim, p.n_head_kv), (64, Some(2)));
    }
}
