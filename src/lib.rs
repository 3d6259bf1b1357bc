//! qforge: turn Hugging Face safetensors checkpoints into GGUF files that llama.cpp runs,
//! and read GGUF files back.
//!
//! The crate is a library first; the `qforge` binary is a thin layer over it.
//!
//! - [`gguf`]: the container (value types, ggml type table, strict reader, streaming writer).
//! - [`quant`]: block formats, scalar reference quantizers, SIMD kernels with runtime dispatch.
//! - [`source`]: safetensors checkpoints (single or sharded), config.json, tokenizer files.
//! - [`arch`]: Llama-family names, the rotary permutation, hyperparameters.
//! - [`convert`]: recipe → plan → streaming execution, and verification.
//! - [`inspect`]: text and JSON reports of a GGUF header.

pub mod arch;
pub mod convert;
pub mod diff;
pub mod edit;
pub mod gguf;
pub mod inspect;
pub mod quant;
pub mod source;
pub mod split;

#[doc(hidden)]
pub mod cli;
