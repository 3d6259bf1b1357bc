//! The GGUF container: value types, the ggml type table, a strict reader and a streaming
//! writer. Knows nothing about safetensors or Hugging Face.

mod error;
pub mod reader;
pub mod split_set;
mod types;
mod value;
pub mod writer;

pub use error::{ErrorKind, GgufError};
pub use reader::{
    GgufFile, GgufHeader, TensorInfo, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_ARRAY_LEN, MAX_DIMS,
    MAX_NAME_LEN, MAX_STRING_LEN,
};
pub use types::{GgmlType, GGML_TYPES, NF4_DQ_ID_BASE, NF4_ID_BASE, NF4_MAX_BLOCK, NF4_MIN_BLOCK};
pub use value::{Array, FromValue, Metadata, Value, ValueType};
pub use writer::{
    encode_header, encode_value, write_to_vec, GgufFileWriter, GgufWriter, HeaderLayout,
    TensorSpec, WRITE_VERSION,
};
