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

pub use crate::gguf::split_set::{
    shard_path, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT,
};

/// How to cut the tensor list into shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitLimit {
    /// At most this many tensors per shard (gguf-split's `--split-max-tensors`).
    Tensors(usize),
    /// At most this many bytes of (aligned) tensor data per shard (`--split-max-size`); a
    /// tensor larger than the limit gets a shard of its own.
    Bytes(u64),
}

/// A size limit like `500M` or `4G` in bytes (decimal units, as llama-gguf-split; a plain
/// number is bytes). The error quotes the text.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, ' '),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: not a size like 500M or 4G"))?;
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1_000,
        'M' => 1_000_000,
        'G' => 1_000_000_000,
        _ => return Err(format!("{text:?}: units are K, M or G")),
    };
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!("{text:?}: must be a positive size")),
        Some(v) => Ok(v),
    }
}

/// The tensor index ranges of the shards, in order; never an empty shard.
pub fn plan_shards(file: &GgufFile, limit: SplitLimit) -> Vec<Range<usize>> {
    let sizes: Vec<u64> = file.tensors().iter().map(|t| t.n_bytes()).collect();
    plan_shards_by_size(&sizes, file.alignment(), limit)
}

/// [`plan_shards`] for tensors of `sizes` bytes stored at `alignment`.
pub fn plan_shards_by_size(sizes: &[u64], alignment: u64, limit: SplitLimit) -> Vec<Range<usize>> {
    let n = sizes.len();
    let align = alignment.max(1);
    let mut shards = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, &t) in sizes.iter().enumerate() {
        let size = t.div_ceil(align) * align;
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

/// Write `file` as shards named after `prefix`; returns their paths. The set appears under
/// the output names only when every shard is complete: a failed split leaves nothing there.
pub fn split(file: &GgufFile, prefix: &Path, limit: SplitLimit) -> Result<Vec<PathBuf>, EditError> {
    // gguf-split writes UINT16; another writer's integer type still marks a shard
    let count = crate::gguf::split_set::split_int(file.metadata(), KEY_SPLIT_COUNT)
        .map_err(|k| EditError::Refused(format!("{}: {k}", file.path().display())))?;
    if let Some(count) = count.filter(|&c| c > 1) {
        return Err(EditError::Refused(format!(
            "{} is a shard of a {count}-file split already; split the whole model instead",
            file.path().display()
        )));
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
    let hashes = stored_hashes(file)?;
    let total = i32::try_from(file.tensors().len()).map_err(|_| {
        EditError::Refused(format!(
            "{}: too many tensors for split.tensors.count",
            file.path().display()
        ))
    })?;
    // Every shard is first written under a hidden temporary prefix and renamed into place
    // only once all of them are complete, so a failure leaves neither a partial set nor a
    // half-replaced earlier one under the output names.
    let staging = staging_prefix(prefix);
    let mut staged = Vec::with_capacity(shards.len());
    let mut result = Ok(());
    for (i, range) in shards.iter().enumerate() {
        let path = shard_path(&staging, i, shards.len());
        result = shard_metadata_for(file.metadata(), i, shards.len(), total, hashes, range)
            .map_err(|e| EditError::Gguf {
                path: file.path().to_path_buf(),
                error: Box::new(e),
            })
            .and_then(|m| copy_tensors(file, &m, range.clone(), &path));
        if result.is_err() {
            break;
        }
        staged.push(path);
    }
    let finals: Vec<PathBuf> = (0..shards.len())
        .map(|i| shard_path(prefix, i, shards.len()))
        .collect();
    if let Err(e) = result {
        staged.iter().for_each(|p| {
            let _ = std::fs::remove_file(p);
        });
        return Err(e);
    }
    commit_staged(&staged, &finals).map_err(EditError::Refused)?;
    Ok(finals)
}

/// The hidden prefix a set of shards for `prefix` is first written under (same folder, so the
/// final renames stay on one file system).
pub(crate) fn staging_prefix(prefix: &Path) -> PathBuf {
    let dir = match prefix.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "split".into());
    dir.join(format!(".{name}.qforge-split-{}", std::process::id()))
}

/// Rename every complete staged shard to its final name; on a failure remove the staged
/// shards not yet moved and the ones already moved, so no partial set is left behind.
pub(crate) fn commit_staged(staged: &[PathBuf], finals: &[PathBuf]) -> Result<(), String> {
    for (k, (from, to)) in staged.iter().zip(finals).enumerate() {
        if let Err(e) = std::fs::rename(from, to) {
            staged[k..].iter().chain(&finals[..k]).for_each(|p| {
                let _ = std::fs::remove_file(p);
            });
            return Err(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ));
        }
    }
    Ok(())
}

/// Write the split set `set` (opened with [`GgufFile::open_model`] or
/// [`GgufFile::open_split`] from its first shard) as one file `out`: the set's logical metadata
/// (the first shard's without the `split.*` keys, with the hash list of all tensors when the
/// shards carry hashes) and every tensor byte for byte in order, each checked against its
/// stored hash; streamed and written atomically (nothing appears under `out` on failure).
pub fn merge(set: &GgufFile, out: &Path) -> Result<(), EditError> {
    if !set.is_split() {
        return Err(EditError::Refused(format!(
            "{} is not a split set",
            set.path().display()
        )));
    }
    if set.metadata().get(KEY_TENSOR_SHA256).is_none() {
        // shards with hashes that do not add up to the set's list are damaged
        if let Some(s) = set
            .shards()
            .iter()
            .find(|s| s.metadata().get(KEY_TENSOR_SHA256).is_some())
        {
            return Err(EditError::Refused(format!(
                "{}: its '{KEY_TENSOR_SHA256}' does not fit the set (each shard needs one hash per tensor of its own); qforge verify tells more",
                s.path().display()
            )));
        }
    }
    copy_tensors(set, set.metadata(), 0..set.tensors().len(), out)
}

/// The metadata of shard `i` of `count` holding tensors `range` (of `total`): the first shard
/// carries `base` (without hashes and split keys), every shard the split keys and, when
/// `hashes` are given, the hashes of its own tensors.
pub fn shard_metadata_for(
    base: &Metadata,
    i: usize,
    count: usize,
    total: i32,
    hashes: Option<&[String]>,
    range: &Range<usize>,
) -> Result<Metadata, crate::gguf::GgufError> {
    let mut m = if i == 0 {
        let mut m = base.clone();
        for key in [
            KEY_TENSOR_SHA256,
            KEY_SPLIT_NO,
            KEY_SPLIT_COUNT,
            KEY_SPLIT_TENSORS_COUNT,
        ] {
            m.remove(key);
        }
        m
    } else {
        Metadata::new()
    };
    m.set(KEY_SPLIT_NO, Value::U16(i as u16))?;
    m.set(KEY_SPLIT_COUNT, Value::U16(count as u16))?;
    m.set(KEY_SPLIT_TENSORS_COUNT, Value::I32(total))?;
    if let Some(h) = hashes {
        m.set(
            KEY_TENSOR_SHA256,
            Value::Array(Array::String(h[range.clone()].to_vec())),
        )?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_module_knows_qforges_hash_key() {
        // gguf::split_set drops and rebuilds this key without depending on convert
        assert_eq!(crate::gguf::split_set::KEY_HASHES, KEY_TENSOR_SHA256);
    }

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
