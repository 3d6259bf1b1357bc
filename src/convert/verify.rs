//! `verify`: re-check a GGUF file's structure and the SHA-256 of every tensor against the
//! hashes qforge stored, and optionally measure each tensor's error against the source
//! checkpoint it was converted from.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::gguf::{GgufFile, Value};

use super::plan::{plan, Input, TensorSource, KEY_TENSOR_SHA256};
use super::ConvertError;

/// Hash check result of one tensor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HashCheck {
    pub name: String,
    pub expected: String,
    pub actual: String,
}

/// Error statistics of one tensor against its source.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TensorError {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub elements: u64,
    pub rmse: f64,
    pub max_abs: f64,
    /// 10·log10(Σx² / Σ(x−y)²); infinite (reported as null in JSON) for an exact copy.
    pub snr_db: Option<f64>,
}

/// The result of `verify`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Tensors whose hash was checked.
    pub hashed: usize,
    /// Tensors whose data does not match the stored hash.
    pub mismatched: Vec<HashCheck>,
    /// False when the file carries no qforge hashes.
    pub has_hashes: bool,
    /// Per-tensor error against the source (with `--against`).
    pub against: Vec<TensorError>,
    /// Source tensors with no counterpart in the file, and file tensors with none in the source.
    pub unmatched: Vec<String>,
    /// For a split set, each shard's result (empty for a single file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardCheck>,
}

/// The hash check of one shard of a split set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardCheck {
    pub file: String,
    pub tensors: usize,
    /// False when the shard's tensors have no stored hashes.
    pub has_hashes: bool,
    pub hashed: usize,
    /// Names of this shard's tensors whose data does not match the stored hash.
    pub mismatched: Vec<String>,
}

/// Running error of values against a reference, summed row by row in f64 so a tensor is never
/// held whole: what `verify --against` and `diff --values` report.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ErrorSums {
    /// Σ(want − got)².
    se: f64,
    /// Σwant².
    sx: f64,
    /// max |want − got|.
    pub max_abs: f64,
}

impl ErrorSums {
    /// Add one row: `want` the reference, `got` the values measured against it.
    pub(crate) fn add(&mut self, want: &[f32], got: &[f32]) {
        for (&a, &b) in want.iter().zip(got) {
            let d = a as f64 - b as f64;
            self.se += d * d;
            self.sx += a as f64 * a as f64;
            self.max_abs = self.max_abs.max(d.abs());
        }
    }

    /// Root mean square error over `n` values (0 counts as 1, so an empty tensor gives 0).
    pub(crate) fn rmse(&self, n: u64) -> f64 {
        (self.se / n.max(1) as f64).sqrt()
    }

    /// 10·log10(Σwant² / Σ(want − got)²); `None` when the values are equal.
    pub(crate) fn snr_db(&self) -> Option<f64> {
        (self.se > 0.0).then(|| 10.0 * (self.sx / self.se).log10())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check every stored tensor hash of `file`. For a split set, each shard's own hash list is
/// checked against its own tensors (so a damaged list names the shard), or, for a set whose
/// first shard holds the hashes of all tensors (`llama-gguf-split` of a qforge file), that list;
/// either way the report gives each shard's result in [`VerifyReport::shards`].
pub fn verify_hashes(file: &GgufFile) -> Result<VerifyReport, ConvertError> {
    if !file.is_split() {
        return verify_one(file);
    }
    let shards = file.shards();
    let own = |s: &GgufFile| s.metadata().get(KEY_TENSOR_SHA256).is_some();
    let logical_only = file.metadata().get(KEY_TENSOR_SHA256).is_some()
        && !shards[1..].iter().any(own)
        && matches!(shards[0].metadata().get(KEY_TENSOR_SHA256),
            Some(Value::Array(crate::gguf::Array::String(h))) if h.len() != shards[0].tensors().len());
    let mut report = VerifyReport::default();
    if logical_only {
        report = verify_one(file)?;
        for (k, shard) in shards.iter().enumerate() {
            let mismatched = report
                .mismatched
                .iter()
                .filter(|m| {
                    file.tensor_by_name(&m.name)
                        .and_then(|(i, _)| file.shard_of(i))
                        .is_some_and(|(s, _)| s == k)
                })
                .map(|m| m.name.clone())
                .collect();
            report.shards.push(ShardCheck {
                file: shard.path().display().to_string(),
                tensors: shard.tensors().len(),
                has_hashes: true,
                hashed: shard.tensors().len(),
                mismatched,
            });
        }
        return Ok(report);
    }
    report.has_hashes = true;
    for shard in shards {
        let r = verify_one(shard)?;
        report.has_hashes &= r.has_hashes;
        report.hashed += r.hashed;
        report.shards.push(ShardCheck {
            file: shard.path().display().to_string(),
            tensors: shard.tensors().len(),
            has_hashes: r.has_hashes,
            hashed: r.hashed,
            mismatched: r.mismatched.iter().map(|m| m.name.clone()).collect(),
        });
        report.mismatched.extend(r.mismatched);
    }
    Ok(report)
}

/// [`verify_hashes`] of one file (or of a set's logical hash list).
fn verify_one(file: &GgufFile) -> Result<VerifyReport, ConvertError> {
    let mut report = VerifyReport::default();
    let Some(value) = file.metadata().get(KEY_TENSOR_SHA256) else {
        return Ok(report);
    };
    let hashes = match value {
        Value::Array(crate::gguf::Array::String(h)) => h,
        _ => {
            return Err(ConvertError::Plan(format!(
                "{}: key '{KEY_TENSOR_SHA256}' is not an array of strings",
                file.path().display()
            )))
        }
    };
    if hashes.len() != file.tensors().len() {
        return Err(ConvertError::Plan(format!(
            "{}: key '{KEY_TENSOR_SHA256}' has {} entries for {} tensors",
            file.path().display(),
            hashes.len(),
            file.tensors().len()
        )));
    }
    report.has_hashes = true;
    // Tensors are hashed in parallel (SHA-256 is sequential within one tensor only).
    use rayon::prelude::*;
    let actual: Vec<String> = (0..file.tensors().len())
        .into_par_iter()
        .map(|i| {
            let h = hex(&Sha256::digest(file.tensor_data(i)));
            file.release(i);
            h
        })
        .collect();
    for ((info, expected), actual) in file.tensors().iter().zip(hashes).zip(actual) {
        report.hashed += 1;
        if &actual != expected {
            report.mismatched.push(HashCheck {
                name: info.name.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(report)
}

/// `dims` without trailing ones (at least one dimension kept).
fn squeeze(dims: &[u64]) -> &[u64] {
    let keep = dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    &dims[..keep.min(dims.len())]
}

/// Compare every tensor of `file` with the tensor it was made from in `source`.
pub fn verify_against(file: &GgufFile, source: &Path) -> Result<Vec<TensorError>, ConvertError> {
    let input = Input::open(source)?;
    // Planning the source again gives every GGUF name with its source tensor and row order.
    let p = plan(&input, source, None)?;
    let mut out = Vec::new();
    for t in &p.tensors {
        let Some(index) = file.tensors().iter().position(|x| x.name == t.name) else {
            continue;
        };
        let info = &file.tensors()[index];
        // Trailing ones do not change the layout: a quantizing recipe writes a [n, 1] tensor
        // (Qwen2-MoE's shared-expert gate) as [n], as llama-quantize does.
        if squeeze(&info.dims) != squeeze(&t.dims) {
            return Err(ConvertError::Plan(format!(
                "tensor '{}': shape {:?} in the file but {:?} in the source",
                t.name, info.dims, t.dims
            )));
        }
        if matches!(t.source, TensorSource::Generated(_)) {
            continue;
        }
        let row_len = t.row_len();
        let rows = super::GgufRows::new(file, index)?;
        let mut want = vec![0f32; row_len];
        let mut got = vec![0f32; row_len];
        let mut sums = ErrorSums::default();
        for r in 0..t.n_rows() {
            super::produce::read_source_row(
                t,
                &input,
                t.transform.source_row(r, t.n_rows()),
                &mut want,
            )?;
            rows.read(r, &mut got)?;
            sums.add(&want, &got);
        }
        let n = t.n_elements();
        out.push(TensorError {
            name: t.name.clone(),
            ty: info.ty.name(),
            elements: n,
            rmse: sums.rmse(n),
            max_abs: sums.max_abs,
            snr_db: sums.snr_db(),
        });
    }
    Ok(out)
}
