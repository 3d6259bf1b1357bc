//! Conversion: recipe → plan (types, sizes, offsets, all from headers) → streaming execution,
//! plus verification of the result.

mod job;
mod nf4_meta;
pub mod plan;
mod produce;
pub mod recipe;
mod run;
mod verify;

use std::path::{Path, PathBuf};

pub use job::{
    peak_rss_mib, resolve_input, source_bytes, split_prefix, ConvertJob, ConvertRequest,
    ConvertSummary,
};
pub use plan::{
    plan, plan_with, plan_with_options, Input, Plan, PlanOptions, PlannedTensor, TensorSource,
    KEY_TENSOR_SHA256, KEY_VERSION,
};
pub(crate) use produce::GgufRows;
pub use recipe::{parse_ggml_type, Recipe, TypeOverrides, RECIPE_NAMES};
pub use run::{execute, execute_split, ProgressFn, RunOptions, RunReport};
pub(crate) use verify::ErrorSums;
pub use verify::{verify_against, verify_hashes, HashCheck, ShardCheck, TensorError, VerifyReport};

/// All values of tensor `index` of `file` as f32, in ggml order (row by row), including
/// NF4_DQ tensors (their state tensor is read from the same file).
pub fn dequantize_tensor(
    file: &crate::gguf::GgufFile,
    index: usize,
) -> Result<Vec<f32>, ConvertError> {
    if index >= file.tensors().len() {
        return Err(ConvertError::Plan(format!(
            "{}: no tensor {index} (the file has {})",
            file.path().display(),
            file.tensors().len()
        )));
    }
    let rows = GgufRows::new(file, index)?;
    let mut out = vec![0f32; rows.rows() * rows.row_len()];
    for (r, row) in out.chunks_exact_mut(rows.row_len()).enumerate() {
        rows.read(r, row)?;
    }
    Ok(out)
}

use crate::arch::ArchError;
use crate::gguf::GgufError;
use crate::quant::QuantError;
use crate::source::SourceError;

/// Everything that can stop a conversion. Each message names the file, tensor or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error(transparent)]
    Gguf(Box<GgufError>),
    #[error("{0}")]
    Plan(String),
    #[error("writing {}: {error}", path.display())]
    Output {
        path: PathBuf,
        error: Box<GgufError>,
    },
    #[error("tensor '{tensor}': non-finite value {value} at element {index} {what}")]
    NonFinite {
        tensor: String,
        index: u64,
        value: f32,
        what: String,
    },
    #[error("cancelled")]
    Cancelled,
    /// A GGUF input kept byte for byte (merged or re-split) could not be copied.
    #[error(transparent)]
    Copy(Box<crate::edit::EditError>),
    #[error("tensor '{tensor}': {source}")]
    Quant {
        tensor: String,
        #[source]
        source: QuantError,
    },
}

impl ConvertError {
    pub(crate) fn output(path: &Path, error: GgufError) -> ConvertError {
        ConvertError::Output {
            path: path.to_path_buf(),
            error: Box::new(error),
        }
    }
}

impl From<GgufError> for ConvertError {
    fn from(e: GgufError) -> ConvertError {
        ConvertError::Gguf(Box::new(e))
    }
}
