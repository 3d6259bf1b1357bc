//! Per-architecture knowledge: which HF architectures we convert, HF → GGUF tensor names,
//! per-tensor transforms (the Q/K rotary permutation), and the hyperparameters llama.cpp
//! reads. No I/O.

use crate::source::HfConfig;

/// Architectures qforge converts, by their `config.json` `architectures` name.
pub const SUPPORTED: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM"];

/// A supported architecture. Both are llama.cpp's `llama` architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
}

/// Errors deciding how to convert a model. Messages name the key or tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    #[error("unsupported architecture {found} (supported: {})", SUPPORTED.join(", "))]
    Unsupported { found: String },
    #[error("config.json: missing or invalid '{key}'")]
    MissingKey { key: &'static str },
    #[error("config.json: {0}")]
    Invalid(String),
    #[error("tensor '{name}': no GGUF name for it in the llama architecture")]
    UnknownTensor { name: String },
}

impl Arch {
    /// The architecture of a checkpoint's config.
    pub fn detect(config: &HfConfig) -> Result<Arch, ArchError> {
        match config.architectures.first().map(String::as_str) {
            Some("LlamaForCausalLM") | Some("LLaMAForCausalLM") => Ok(Arch::Llama),
            Some("MistralForCausalLM") => Ok(Arch::Mistral),
            Some(other) => Err(ArchError::Unsupported {
                found: other.to_string(),
            }),
            None => Err(ArchError::Unsupported {
                found: "(none: config.json has no \"architectures\")".to_string(),
            }),
        }
    }

    /// `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        "llama"
    }
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
}

impl Transform {
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

/// A tensor's place in the GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub name: String,
    pub transform: Transform,
}

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
}

fn need_u32(v: Option<u64>, key: &'static str) -> Result<u32, ArchError> {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v > 0)
        .ok_or(ArchError::MissingKey { key })
}

impl LlamaParams {
    /// Hyperparameters from config.json, checked for consistency.
    pub fn from_config(c: &HfConfig) -> Result<LlamaParams, ArchError> {
        let n_embd = need_u32(c.hidden_size, "hidden_size")?;
        let n_head = need_u32(c.num_attention_heads, "num_attention_heads")?;
        let n_head_kv = c
            .num_key_value_heads
            .map(|v| need_u32(Some(v), "num_key_value_heads"))
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
            .map(|v| need_u32(Some(v), "head_dim"))
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
            n_layer: need_u32(c.num_hidden_layers, "num_hidden_layers")?,
            n_ctx: need_u32(c.max_position_embeddings, "max_position_embeddings")?,
            n_embd,
            n_ff: need_u32(c.intermediate_size, "intermediate_size")?,
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
        })
    }

    /// The safetensors shape llama.cpp will require for a GGUF tensor name (`None` in a
    /// position means any size, e.g. the vocabulary), or `None` for tensors it does not check.
    pub fn expected_shape(&self, gguf: &str) -> Option<Vec<Option<usize>>> {
        let e = Some(self.n_embd as usize);
        let f = Some(self.n_ff as usize);
        let q = Some((self.n_head * self.rope_dim) as usize);
        let kv = Some((self.n_head_kv.unwrap_or(self.n_head) * self.rope_dim) as usize);
        let kind = gguf
            .strip_prefix("blk.")
            .map_or(gguf, |r| r.split_once('.').map_or(r, |x| x.1));
        Some(match kind {
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
        let mut v = vec![
            "token_embd.weight".to_string(),
            "output_norm.weight".to_string(),
        ];
        for l in 0..self.n_layer {
            for t in [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                v.push(format!("blk.{l}.{t}.weight"));
            }
        }
        v
    }

    /// Map an HF tensor name. `Ok(None)` for tensors llama.cpp's converter drops.
    pub fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ArchError> {
        const DROPPED: &[&str] = &[
            ".attention.masked_bias",
            ".attention.bias",
            ".rotary_emb.inv_freq",
        ];
        if DROPPED.iter().any(|s| hf.ends_with(s)) {
            return Ok(None);
        }
        let unknown = || ArchError::UnknownTensor {
            name: hf.to_string(),
        };
        let plain = |name: String| {
            Ok(Some(Mapped {
                name,
                transform: Transform::None,
            }))
        };
        match hf {
            "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
            "model.norm.weight" => return plain("output_norm.weight".into()),
            "lm_head.weight" => return plain("output.weight".into()),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.").ok_or_else(unknown)?;
        let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
        let layer: u32 = layer.parse().map_err(|_| unknown())?;
        if layer >= self.n_layer {
            return Err(ArchError::Invalid(format!(
                "tensor '{hf}' is for layer {layer} but num_hidden_layers is {}",
                self.n_layer
            )));
        }
        let (module, suffix) = match rest.rsplit_once('.') {
            Some((m, s @ ("weight" | "bias"))) => (m, s),
            _ => return Err(unknown()),
        };
        let n_kv = self.n_head_kv.unwrap_or(self.n_head) as usize;
        let (gguf, transform) = match module {
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
            _ => return Err(unknown()),
        };
        Ok(Some(Mapped {
            name: format!("blk.{layer}.{gguf}.{suffix}"),
            transform,
        }))
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
    fn detects_supported_and_names_unsupported() {
        assert_eq!(Arch::detect(&config()).unwrap(), Arch::Llama);
        let mut c = config();
        c.architectures = vec!["GPTNeoXForCausalLM".into()];
        let e = Arch::detect(&c).unwrap_err().to_string();
        assert_eq!(
            e,
            "unsupported architecture GPTNeoXForCausalLM (supported: LlamaForCausalLM, MistralForCausalLM)"
        );
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
