//! qforge: turn Hugging Face safetensors checkpoints into GGUF files that llama.cpp runs,
//! and read GGUF files back.
//!
//! The crate is a library first; the `qforge` binary is a thin layer over it.
//!
//! - [`gguf`]: the container (value types, ggml type table, strict reader, streaming writer).
//! - [`quant`]: block formats, scalar reference quantizers and SIMD dequantizers.

pub mod gguf;
pub mod quant;

pub mod arch;
#[doc(hidden)]
pub mod cli;
pub mod convert;
pub mod source;
