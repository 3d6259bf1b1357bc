//! Edits of a finished GGUF file: set or delete metadata keys and rewrite the file with the
//! new header and the tensor bytes unchanged (so the SHA-256 qforge stored for each tensor
//! stays valid), streaming, written atomically. Edits that would make llama.cpp refuse or
//! misread the file are refused unless forced.

use std::path::Path;

use crate::gguf::{GgufError, GgufFile, GgufFileWriter, Metadata, TensorSpec, Value};

/// Something to change in the metadata.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    Set { key: String, value: Value },
    Delete { key: String },
}

/// Why an edit cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    #[error("{0}")]
    Refused(String),
    #[error("{}: {error}", path.display())]
    Gguf {
        path: std::path::PathBuf,
        error: Box<GgufError>,
    },
}

/// Parse `KEY=TYPE:VALUE`; TYPE is one of u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str.
pub fn parse_set(spec: &str) -> Result<Edit, String> {
    let (key, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("'{spec}' is not KEY=TYPE:VALUE"))?;
    let (ty, text) = rest
        .split_once(':')
        .ok_or_else(|| format!("'{spec}': the value needs a type, e.g. {key}=u32:{rest}"))?;
    let bad = |e: &dyn std::fmt::Display| format!("'{spec}': {text:?} is not a {ty}: {e}");
    let value = match ty {
        "u8" => Value::U8(text.parse().map_err(|e| bad(&e))?),
        "i8" => Value::I8(text.parse().map_err(|e| bad(&e))?),
        "u16" => Value::U16(text.parse().map_err(|e| bad(&e))?),
        "i16" => Value::I16(text.parse().map_err(|e| bad(&e))?),
        "u32" => Value::U32(text.parse().map_err(|e| bad(&e))?),
        "i32" => Value::I32(text.parse().map_err(|e| bad(&e))?),
        "u64" => Value::U64(text.parse().map_err(|e| bad(&e))?),
        "i64" => Value::I64(text.parse().map_err(|e| bad(&e))?),
        "f32" => Value::F32(text.parse().map_err(|e| bad(&e))?),
        "f64" => Value::F64(text.parse().map_err(|e| bad(&e))?),
        "bool" => Value::Bool(text.parse().map_err(|e| bad(&e))?),
        "str" | "string" => Value::String(text.to_string()),
        other => {
            return Err(format!(
                "'{spec}': unknown type '{other}' (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str)"
            ))
        }
    };
    if key.is_empty() {
        return Err(format!("'{spec}': empty key"));
    }
    Ok(Edit::Set {
        key: key.to_string(),
        value,
    })
}

/// Keys llama.cpp needs to load any model of the file's architecture (deleting one makes the
/// file unloadable).
fn required_keys(arch: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "general.architecture",
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in ["block_count", "context_length", "embedding_length"] {
        v.push(format!("{arch}.{k}"));
    }
    v
}

/// The metadata after `edits`, checked: keys qforge manages (`general.alignment`,
/// `qforge.tensor_sha256`) are never edited; without `force`, an existing key keeps its type,
/// keys llama.cpp requires are not deleted, and `general.architecture` stays a string.
pub fn apply(file: &GgufFile, edits: &[Edit], force: bool) -> Result<Metadata, EditError> {
    let mut m = file.metadata().clone();
    let arch = match m.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let required = required_keys(&arch);
    let refuse = |msg: String| Err(EditError::Refused(msg));
    for e in edits {
        let key = match e {
            Edit::Set { key, .. } | Edit::Delete { key } => key.as_str(),
        };
        if key == "general.alignment" || key == crate::convert::KEY_TENSOR_SHA256 {
            return refuse(format!(
                "{key} describes the file's layout and tensors; it cannot be edited"
            ));
        }
        match e {
            Edit::Set { key, value } => {
                if let Some(old) = m.get(key) {
                    if old.type_name() != value.type_name() && !force {
                        return refuse(format!(
                            "{key} is {} in the file; setting it as {} would make llama.cpp misread it (use --force to do it anyway)",
                            old.type_name(),
                            value.type_name()
                        ));
                    }
                }
                if key == "general.architecture" && !matches!(value, Value::String(_)) && !force {
                    return refuse("general.architecture must be a string".into());
                }
                m.set(key, value.clone()).map_err(|e| EditError::Gguf {
                    path: file.path().to_path_buf(),
                    error: Box::new(e),
                })?;
            }
            Edit::Delete { key } => {
                if required.iter().any(|r| r == key) && !force {
                    return refuse(format!(
                        "llama.cpp cannot load a {arch} model without {key} (use --force to delete it anyway)"
                    ));
                }
                if m.remove(key).is_none() {
                    return refuse(format!("{key}: no such key in {}", file.path().display()));
                }
            }
        }
    }
    Ok(m)
}

/// Write `file` with `metadata` to `out`: the same tensors (names, types, shapes, bytes) in
/// the same order, streamed, atomically. When the file carries qforge's tensor hashes, the
/// copy is checked against them before it is renamed into place.
pub fn write_with_metadata(
    file: &GgufFile,
    metadata: &Metadata,
    out: &Path,
) -> Result<(), EditError> {
    copy_tensors(file, metadata, 0..file.tensors().len(), out)
}

/// Write the tensors `range` of `file` (names, types, shapes, bytes unchanged) under
/// `metadata` to `out`, streamed, atomically; each copied tensor is checked against the
/// SHA-256 the input stores for it, when it stores them, before the file is renamed into place.
pub(crate) fn copy_tensors(
    file: &GgufFile,
    metadata: &Metadata,
    range: std::ops::Range<usize>,
    out: &Path,
) -> Result<(), EditError> {
    let err = |e: GgufError| EditError::Gguf {
        path: out.to_path_buf(),
        error: Box::new(e),
    };
    let stored = stored_hashes(file)?;
    let specs: Vec<TensorSpec> = file.tensors()[range.clone()]
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: if t.dims.is_empty() {
                vec![1]
            } else {
                t.dims.clone()
            },
            ty: t.ty,
        })
        .collect();
    let mut w = GgufFileWriter::create(out, metadata, &specs, file.alignment()).map_err(err)?;
    for i in range.clone() {
        for chunk in file.tensor_data(i).chunks(16 << 20) {
            w.write_tensor_data(chunk).map_err(err)?;
        }
        file.release(i);
    }
    if let Some(stored) = stored {
        let got = w.tensor_hashes();
        for (i, h) in range.clone().zip(got.iter()) {
            let hex = hex_digest(h);
            if stored.get(i) != Some(&hex) {
                return Err(EditError::Refused(format!(
                    "{}: tensor '{}' does not match the SHA-256 stored in the file (the input is damaged; qforge verify tells more)",
                    // in a split set, the shard that holds the tensor
                    file.shard_of(i)
                        .map_or(file.path(), |(s, _)| file.shards()[s].path())
                        .display(),
                    file.tensors()[i].name
                )));
            }
        }
    }
    w.finish().map_err(err)?;
    Ok(())
}

/// The per-tensor SHA-256 (hex) qforge stored in `file`, if it has them; a list of the wrong
/// length is refused (the file is damaged).
pub(crate) fn stored_hashes(file: &GgufFile) -> Result<Option<&[String]>, EditError> {
    let key = crate::convert::KEY_TENSOR_SHA256;
    match file.metadata().get(key) {
        Some(Value::Array(crate::gguf::Array::String(stored))) => {
            if stored.len() != file.tensors().len() {
                return Err(EditError::Refused(format!(
                    "{}: key '{key}' has {} entries for {} tensors (the file is damaged; qforge verify tells more)",
                    file.path().display(),
                    stored.len(),
                    file.tensors().len()
                )));
            }
            Ok(Some(stored))
        }
        _ => Ok(None),
    }
}

fn hex_digest(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
