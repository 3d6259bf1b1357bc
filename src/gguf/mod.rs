//! The GGUF container: value types, the ggml type table, a strict reader and a streaming
//! writer. Knows nothing about safetensors or Hugging Face.

mod types;

pub use types::{GgmlType, GGML_TYPES, NF4_DQ_ID_BASE, NF4_ID_BASE, NF4_MAX_BLOCK, NF4_MIN_BLOCK};
