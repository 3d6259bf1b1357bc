//! Splitting a finished GGUF file into the shards llama.cpp loads as one model (the layout
//! `llama-gguf-split --split` writes): shard `i` of `n` is `PREFIX-{i+1:05}-of-{n:05}.gguf`,
//! the first shard carries all of the input's metadata, every shard carries `split.no` (u16),
//! `split.count` (u16) and `split.tensors.count` (i32), and the tensors keep their order.
//! When the input carries qforge's tensor hashes, each shard carries the hashes of its own
//! tensors, so every shard verifies on its own; tensors are copied unchanged and checked
//! against the stored hashes on the way.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::convert::KEY_TENSOR_SHA256;
use crate::edit::{copy_tensors, stored_hashes, EditError};
use crate::gguf::{Array, GgufFile, Metadata, Value};

pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// How to cut the tensor list into shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitLimit {
    /// At most this many tensors per shard (gguf-split's `--split-max-tensors`).
    Tensors(usize),
    /// At most this many bytes of (aligned) tensor data per shard (`--split-max-size`); a
    /// tensor larger than the limit gets a shard of its own.
    Bytes(u64),
}

/// The tensor index ranges of the shards, in order; never an empty shard.
pub fn plan_shards(file: &GgufFile, limit: SplitLimit) -> Vec<Range<usize>> {
    let n = file.tensors().len();
    let align = file.alignment().max(1);
    let mut shards = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, t) in file.tensors().iter().enumerate() {
        let size = t.n_bytes().div_ceil(align) * align;
        let cut = i > start
            && match limit {
                SplitLimit::Tensors(max) => i - start >= max.max(1),
                SplitLimit::Bytes(max) => bytes + size > max,
            };
        if cut {
            shards.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < n || shards.is_empty() {
        shards.push(start..n);
    }
    shards
}

/// The path of shard `index` (0-based) of `count` for `prefix`, as llama.cpp derives it.
pub fn shard_path(prefix: &Path, index: usize, count: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("-{:05}-of-{:05}.gguf", index + 1, count));
    PathBuf::from(s)
}

/// Write `file` as shards named after `prefix`; returns their paths. Every shard is written
/// atomically, and when one fails the shards already written are removed, so a failed split
/// leaves nothing under the output names.
pub fn split(file: &GgufFile, prefix: &Path, limit: SplitLimit) -> Result<Vec<PathBuf>, EditError> {
    if let Some(Value::U16(count)) = file.metadata().get(KEY_SPLIT_COUNT) {
        if *count > 1 {
            return Err(EditError::Refused(format!(
                "{} is a shard of a {count}-file split already; split the whole model instead",
                file.path().display()
            )));
        }
    }
    let shards = plan_shards(file, limit);
    if shards.len() > u16::MAX as usize {
        return Err(EditError::Refused(format!(
            "{}: {} shards; GGUF splits hold at most {}",
            file.path().display(),
            shards.len(),
            u16::MAX
        )));
    }
    let hashes = stored_hashes(file).map(|h| h.to_vec());
    if let Some(h) = &hashes {
        if h.len() != file.tensors().len() {
            return Err(EditError::Refused(format!(
                "{}: key '{KEY_TENSOR_SHA256}' has {} entries for {} tensors (the file is damaged; qforge verify tells more)",
                file.path().display(),
                h.len(),
                file.tensors().len()
            )));
        }
    }
    let total = i32::try_from(file.tensors().len()).map_err(|_| {
        EditError::Refused(format!(
            "{}: too many tensors for split.tensors.count",
            file.path().display()
        ))
    })?;
    let mut written = Vec::with_capacity(shards.len());
    for (i, range) in shards.iter().enumerate() {
        let mut m = if i == 0 {
            let mut m = file.metadata().clone();
            m.remove(KEY_TENSOR_SHA256);
            m.remove(KEY_SPLIT_NO);
            m.remove(KEY_SPLIT_COUNT);
            m.remove(KEY_SPLIT_TENSORS_COUNT);
            m
        } else {
            Metadata::new()
        };
        let gguf = |e| EditError::Gguf {
            path: file.path().to_path_buf(),
            error: Box::new(e),
        };
        m.set(KEY_SPLIT_NO, Value::U16(i as u16)).map_err(gguf)?;
        m.set(KEY_SPLIT_COUNT, Value::U16(shards.len() as u16))
            .map_err(gguf)?;
        m.set(KEY_SPLIT_TENSORS_COUNT, Value::I32(total))
            .map_err(gguf)?;
        if let Some(h) = &hashes {
            m.set(
                KEY_TENSOR_SHA256,
                Value::Array(Array::String(h[range.clone()].to_vec())),
            )
            .map_err(gguf)?;
        }
        let path = shard_path(prefix, i, shards.len());
        if let Err(e) = copy_tensors(file, &m, range.clone(), &path) {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_llama_cpps() {
        assert_eq!(
            shard_path(Path::new("out/model"), 0, 3),
            PathBuf::from("out/model-00001-of-00003.gguf")
        );
        assert_eq!(
            shard_path(Path::new("m"), 11, 12),
            PathBuf::from("m-00012-of-00012.gguf")
        );
    }
}
