//! What differs between two GGUF files: metadata keys added, removed or changed (type or
//! value), tensors added, removed, retyped, reshaped or with other bytes, and optionally how
//! far apart two versions of a tensor are once dequantized (RMSE, max abs error, SNR), so a
//! user can see what a requantization or an edit changed.

use rayon::prelude::*;

use crate::convert::{ConvertError, ErrorSums, GgufRows};
use crate::gguf::{GgmlType, GgufFile, Value};

/// One metadata difference.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyDiff {
    Added { key: String, value: Value },
    Removed { key: String, value: Value },
    Changed { key: String, a: Value, b: Value },
}

/// How a tensor differs.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorChange {
    Added {
        ty: GgmlType,
        dims: Vec<u64>,
    },
    Removed {
        ty: GgmlType,
        dims: Vec<u64>,
    },
    /// Same shape, another type.
    Retyped {
        a: GgmlType,
        b: GgmlType,
    },
    Reshaped {
        a: Vec<u64>,
        b: Vec<u64>,
    },
    /// Same type and shape, other bytes.
    Changed,
}

/// Error statistics between the dequantized values of the two versions (A is the reference).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueStats {
    pub rmse: f64,
    pub max_abs: f64,
    /// 10·log10(Σa² / Σ(a−b)²); `None` when the values are equal.
    pub snr_db: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorDiff {
    pub name: String,
    pub change: TensorChange,
    pub values: Option<ValueStats>,
}

/// Everything that differs, in file order of A then B.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiffReport {
    pub metadata: Vec<KeyDiff>,
    pub tensors: Vec<TensorDiff>,
    /// Tensors present in both files with identical type, shape and bytes.
    pub same_tensors: usize,
}

impl DiffReport {
    pub fn is_empty(&self) -> bool {
        self.metadata.is_empty() && self.tensors.is_empty()
    }
}

/// Keys that only restate the tensors (their hashes) and are therefore not compared.
const DERIVED_KEYS: &[&str] = &[crate::convert::KEY_TENSOR_SHA256];

/// Compare two files; with `values`, dequantize every tensor present in both with the same
/// shape and differing bytes and measure how far B is from A.
pub fn diff(a: &GgufFile, b: &GgufFile, values: bool) -> Result<DiffReport, ConvertError> {
    let mut report = DiffReport::default();
    for (k, va) in a.metadata().iter() {
        if DERIVED_KEYS.contains(&k) {
            continue;
        }
        match b.metadata().get(k) {
            None => report.metadata.push(KeyDiff::Removed {
                key: k.to_string(),
                value: va.clone(),
            }),
            Some(vb) if !same_value(va, vb) => report.metadata.push(KeyDiff::Changed {
                key: k.to_string(),
                a: va.clone(),
                b: vb.clone(),
            }),
            Some(_) => {}
        }
    }
    for (k, vb) in b.metadata().iter() {
        if !DERIVED_KEYS.contains(&k) && a.metadata().get(k).is_none() {
            report.metadata.push(KeyDiff::Added {
                key: k.to_string(),
                value: vb.clone(),
            });
        }
    }
    // tensors: compared in parallel (byte comparison and dequantization dominate)
    let pairs: Vec<(usize, Option<usize>)> = (0..a.tensors().len())
        .map(|i| (i, b.tensor_by_name(&a.tensors()[i].name).map(|x| x.0)))
        .collect();
    let results: Vec<Result<Option<TensorDiff>, ConvertError>> = pairs
        .par_iter()
        .map(|&(i, j)| {
            let ta = &a.tensors()[i];
            let Some(j) = j else {
                return Ok(Some(TensorDiff {
                    name: ta.name.clone(),
                    change: TensorChange::Removed {
                        ty: ta.ty,
                        dims: ta.dims.clone(),
                    },
                    values: None,
                }));
            };
            let tb = &b.tensors()[j];
            let change = if ta.dims != tb.dims {
                TensorChange::Reshaped {
                    a: ta.dims.clone(),
                    b: tb.dims.clone(),
                }
            } else if ta.ty != tb.ty {
                TensorChange::Retyped { a: ta.ty, b: tb.ty }
            } else if a.tensor_data(i) != b.tensor_data(j) {
                TensorChange::Changed
            } else {
                return Ok(None);
            };
            let stats = match (&change, values) {
                (TensorChange::Retyped { .. } | TensorChange::Changed, true) => {
                    Some(value_stats(a, i, b, j)?)
                }
                _ => None,
            };
            Ok(Some(TensorDiff {
                name: ta.name.clone(),
                change,
                values: stats,
            }))
        })
        .collect();
    let mut same = 0;
    for r in results {
        match r? {
            Some(d) => report.tensors.push(d),
            None => same += 1,
        }
    }
    report.same_tensors = same;
    for tb in b.tensors() {
        if a.tensor_by_name(&tb.name).is_none() {
            report.tensors.push(TensorDiff {
                name: tb.name.clone(),
                change: TensorChange::Added {
                    ty: tb.ty,
                    dims: tb.dims.clone(),
                },
                values: None,
            });
        }
    }
    Ok(report)
}

/// Equal values of the same type; floats by bits (NaN equals NaN).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Row-streamed dequantization of tensor `i` of `a` and `j` of `b` (same shape).
fn value_stats(a: &GgufFile, i: usize, b: &GgufFile, j: usize) -> Result<ValueStats, ConvertError> {
    let (rows_a, rows_b) = (GgufRows::new(a, i)?, GgufRows::new(b, j)?);
    let (row_len, rows) = (rows_a.row_len(), rows_a.rows());
    let (mut ra, mut rb) = (vec![0f32; row_len], vec![0f32; row_len]);
    let mut sums = ErrorSums::default();
    for r in 0..rows {
        rows_a.read(r, &mut ra)?;
        rows_b.read(r, &mut rb)?;
        sums.add(&ra, &rb);
    }
    Ok(ValueStats {
        rmse: sums.rmse((rows * row_len) as u64),
        max_abs: sums.max_abs,
        snr_db: sums.snr_db(),
    })
}
