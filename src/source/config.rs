//! Hugging Face `config.json`, in both the transformers v4 form (`rope_theta`, `torch_dtype`)
//! and the v5 form (`rope_parameters.rope_theta`, `dtype`).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::SourceError;

/// RoPE settings, merged from `rope_theta` / `rope_scaling` (v4) or `rope_parameters` (v5).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RopeConfig {
    /// Base frequency (`rope_theta`); `None` when the config does not say.
    pub theta: Option<f64>,
    /// `rope_type` (`default`, `linear`, `llama3`, ...); `None` or `default` for plain RoPE.
    pub rope_type: Option<String>,
    /// Scaling factor for `linear` / `llama3`.
    pub factor: Option<f64>,
    /// llama3 parameters.
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<u64>,
}

/// The fields of config.json qforge uses. Unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HfConfig {
    pub architectures: Vec<String>,
    pub hidden_size: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub num_hidden_layers: Option<u64>,
    pub num_attention_heads: Option<u64>,
    pub num_key_value_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub max_position_embeddings: Option<u64>,
    pub rms_norm_eps: Option<f64>,
    pub vocab_size: Option<u64>,
    pub tie_word_embeddings: bool,
    /// `torch_dtype` (v4) or `dtype` (v5), e.g. "bfloat16".
    pub dtype: Option<String>,
    pub rope: RopeConfig,
    pub bos_token_id: Option<u64>,
    /// The first id when config.json gives a list.
    pub eos_token_id: Option<u64>,
    pub pad_token_id: Option<u64>,
    /// `_name_or_path`, used as a fallback model name.
    pub name_or_path: Option<String>,
    /// The whole document, with `text_config` merged over the root as llama.cpp's converter
    /// does, for the fields only one family reads.
    pub raw: Value,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: Option<u64>,
    intermediate_size: Option<u64>,
    #[serde(alias = "n_layers", alias = "n_layer", alias = "num_layers")]
    num_hidden_layers: Option<u64>,
    num_attention_heads: Option<u64>,
    num_key_value_heads: Option<u64>,
    head_dim: Option<u64>,
    #[serde(alias = "n_ctx")]
    max_position_embeddings: Option<u64>,
    rms_norm_eps: Option<f64>,
    vocab_size: Option<u64>,
    tie_word_embeddings: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<Value>,
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
}

fn first_id(v: &Option<Value>) -> Option<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::Array(a)) => a.first().and_then(|x| x.as_u64()),
        _ => None,
    }
}

fn merge_rope(rope: &mut RopeConfig, v: &Value) {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    if let Some(t) = f("rope_theta") {
        rope.theta = Some(t);
    }
    if let Some(t) = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|x| x.as_str())
    {
        rope.rope_type = Some(t.to_string());
    }
    rope.factor = f("factor").or(rope.factor);
    rope.low_freq_factor = f("low_freq_factor").or(rope.low_freq_factor);
    rope.high_freq_factor = f("high_freq_factor").or(rope.high_freq_factor);
    rope.original_max_position_embeddings = v
        .get("original_max_position_embeddings")
        .and_then(|x| x.as_u64())
        .or(rope.original_max_position_embeddings);
}

impl HfConfig {
    /// Parse config.json text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<HfConfig, SourceError> {
        let json_err = |e: serde_json::Error| SourceError::Json {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        let mut doc: Value = serde_json::from_str(text).map_err(json_err)?;
        // Multimodal configs (Gemma 3, ...) keep the language model's fields in `text_config`.
        if let Some(Value::Object(text_config)) = doc.get("text_config").cloned() {
            if let Value::Object(root) = &mut doc {
                root.extend(text_config);
            }
        }
        let raw: Raw = Raw::deserialize(&doc).map_err(json_err)?;
        let mut rope = RopeConfig {
            theta: raw.rope_theta,
            ..RopeConfig::default()
        };
        if let Some(v) = raw.rope_scaling.as_ref().filter(|v| v.is_object()) {
            merge_rope(&mut rope, v);
        }
        if let Some(v) = raw.rope_parameters.as_ref().filter(|v| v.is_object()) {
            merge_rope(&mut rope, v);
        }
        Ok(HfConfig {
            architectures: raw.architectures,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads,
            head_dim: raw.head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            vocab_size: raw.vocab_size,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            dtype: raw.dtype.or(raw.torch_dtype),
            rope,
            bos_token_id: first_id(&raw.bos_token_id),
            eos_token_id: first_id(&raw.eos_token_id),
            pad_token_id: first_id(&raw.pad_token_id),
            name_or_path: raw.name_or_path,
            raw: doc,
        })
    }

    /// A field of the (merged) document; `None` when absent or `null`.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    /// A numeric field as f64.
    pub fn f64_field(&self, key: &str) -> Option<f64> {
        self.field(key).and_then(Value::as_f64)
    }

    /// A non-negative integer field.
    pub fn u64_field(&self, key: &str) -> Option<u64> {
        self.field(key).and_then(Value::as_u64)
    }

    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<HfConfig, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        HfConfig::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v5_forms_agree() {
        let v4 = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"rope_theta":500000.0,
            "torch_dtype":"bfloat16","eos_token_id":[2,3],"num_key_value_heads":2}"#;
        let v5 = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,
            "rope_parameters":{"rope_theta":500000.0,"rope_type":"default"},
            "dtype":"bfloat16","eos_token_id":2,"num_key_value_heads":2}"#;
        let a = HfConfig::parse(v4, Path::new("config.json")).unwrap();
        let b = HfConfig::parse(v5, Path::new("config.json")).unwrap();
        assert_eq!(a.rope.theta, Some(500000.0));
        assert_eq!(b.rope.theta, Some(500000.0));
        assert_eq!(a.dtype.as_deref(), Some("bfloat16"));
        assert_eq!(b.dtype, a.dtype);
        assert_eq!(a.eos_token_id, Some(2));
        assert_eq!(b.eos_token_id, Some(2));
        assert_eq!(b.rope.rope_type.as_deref(), Some("default"));
    }

    #[test]
    fn llama3_rope_scaling_is_read() {
        let c = r#"{"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let c = HfConfig::parse(c, Path::new("c.json")).unwrap();
        assert_eq!(c.rope.rope_type.as_deref(), Some("llama3"));
        assert_eq!(c.rope.factor, Some(8.0));
        assert_eq!(c.rope.original_max_position_embeddings, Some(8192));
    }

    #[test]
    fn malformed_json_names_the_file() {
        let e = HfConfig::parse("{", Path::new("dir/config.json")).unwrap_err();
        assert!(e.to_string().contains("dir/config.json"), "{e}");
    }
}
