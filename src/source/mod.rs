//! Reading Hugging Face checkpoints: safetensors files (single or sharded, memory-mapped),
//! `config.json`, and the tokenizer files. Knows nothing about GGUF names.

mod checkpoint;
pub mod config;
pub mod hf_cache;
pub mod imatrix;
pub mod safetensors;
pub mod tokenizer;

use std::path::PathBuf;

pub use checkpoint::{Checkpoint, SourceTensor};
pub use config::{HfConfig, RopeConfig};
pub use safetensors::{SafetensorsFile, SourceDtype, TensorEntry};

/// Errors reading a checkpoint. Every variant names the file; most name the tensor or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: byte {offset}: {msg}", path.display())]
    Safetensors {
        path: PathBuf,
        offset: u64,
        msg: String,
    },
    #[error("{}: {msg}", path.display())]
    Json { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
}
