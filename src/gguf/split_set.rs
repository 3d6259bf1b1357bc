//! Reading a split set — the shards `llama-gguf-split --split` (and `qforge split`) write —
//! as one logical model.
//!
//! A set is opened from its **first** shard, as llama.cpp loads it: shard `i` (0-based) of `n`
//! is `PREFIX-{i+1:05}-of-{n:05}.gguf`, every shard carries `split.no`, `split.count` and
//! `split.tensors.count`, and the first holds the model's metadata. Each shard is opened with
//! the strict reader; then the set is checked: every shard is present, its `split.no` is its
//! place, its `split.count` and `split.tensors.count` equal the first shard's, no tensor name
//! occurs twice, and the shards hold `split.tensors.count` tensors in all. Any other shard given
//! as the set is refused with the first shard's name.
//!
//! The logical view ([`GgufFile::is_split`]) has the first shard's metadata without the
//! `split.*` keys and without its own `qforge.tensor_sha256`; when every shard carries a
//! well-formed hash list for its own tensors, the view carries their concatenation, which is
//! exactly the hash list of the merged tensor list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{ErrorKind, GgufError};
use super::value::{Array, Metadata, Value};
use super::GgufFile;

pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
/// qforge's per-tensor hash key (the same as `convert::KEY_TENSOR_SHA256`; the container
/// module does not depend on `convert`).
pub(crate) const KEY_HASHES: &str = "qforge.tensor_sha256";

/// The path of shard `index` (0-based) of `count` for `prefix`, as llama.cpp derives it.
pub fn shard_path(prefix: &Path, index: usize, count: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(shard_suffix(index, count));
    PathBuf::from(s)
}

fn shard_suffix(index: usize, count: usize) -> String {
    format!("-{:05}-of-{:05}.gguf", index + 1, count)
}

/// An integer split key as a wide integer (gguf-split writes UINT16/INT32; other writers'
/// integer types are accepted too); `None` when absent.
pub fn split_int(m: &Metadata, key: &'static str) -> Result<Option<i128>, ErrorKind> {
    Ok(Some(match m.get(key) {
        None => return Ok(None),
        Some(Value::U8(x)) => (*x).into(),
        Some(Value::I8(x)) => (*x).into(),
        Some(Value::U16(x)) => (*x).into(),
        Some(Value::I16(x)) => (*x).into(),
        Some(Value::U32(x)) => (*x).into(),
        Some(Value::I32(x)) => (*x).into(),
        Some(Value::U64(x)) => (*x).into(),
        Some(Value::I64(x)) => (*x).into(),
        Some(other) => {
            return Err(ErrorKind::SplitKey {
                key,
                problem: format!("is {}, not an integer", other.type_name()),
            })
        }
    }))
}

fn required_int(m: &Metadata, key: &'static str) -> Result<i128, ErrorKind> {
    split_int(m, key)?.ok_or(ErrorKind::SplitKey {
        key,
        problem: "is missing".into(),
    })
}

/// A split key's value for an error message (values beyond i64 are clamped).
fn sat(x: i128) -> i64 {
    i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The set's prefix from the path of shard `index` of `count`, when the name follows the
/// pattern.
fn prefix_of(path: &Path, index: usize, count: usize) -> Option<PathBuf> {
    let s = path.to_str()?;
    s.strip_suffix(&shard_suffix(index, count))
        .map(PathBuf::from)
}

/// (split.no, split.count) of a shard that belongs to a set of more than one file.
fn shard_position(file: &GgufFile) -> Result<Option<(i128, i128)>, GgufError> {
    let m = file.metadata();
    let err = |k: ErrorKind| GgufError::new(k).with_path(file.path());
    let Some(count) = split_int(m, KEY_SPLIT_COUNT).map_err(err)? else {
        return Ok(None);
    };
    if count <= 1 {
        return Ok(None);
    }
    let no = required_int(m, KEY_SPLIT_NO).map_err(err)?;
    Ok(Some((no, count)))
}

impl GgufFile {
    /// Open `path` as a model: a single file as [`GgufFile::open`] does, or, when it is the
    /// first shard of a split set (`split.count` > 1), the whole set as
    /// [`GgufFile::open_split`] does. Another shard of a set is refused, naming the first.
    pub fn open_model(path: &Path) -> Result<GgufFile, GgufError> {
        let file = GgufFile::open(path)?;
        match shard_position(&file)? {
            None => Ok(file),
            Some(_) => GgufFile::join_set(file),
        }
    }

    /// Open `path` for reading it as it is: like [`GgufFile::open_model`], except that a shard
    /// other than the first opens alone, as a single file with its split keys (what `inspect`
    /// and `verify` of one shard show).
    pub fn open_model_or_shard(path: &Path) -> Result<GgufFile, GgufError> {
        let file = GgufFile::open(path)?;
        match shard_position(&file)? {
            Some((0, _)) => GgufFile::join_set(file),
            _ => Ok(file),
        }
    }

    /// Open the split set whose first shard is `first` as one logical model (see the module
    /// documentation for the checks). Errors name the shard file concerned.
    pub fn open_split(first: &Path) -> Result<GgufFile, GgufError> {
        let file = GgufFile::open(first)?;
        if split_int(file.metadata(), KEY_SPLIT_COUNT)
            .map_err(|k| GgufError::new(k).with_path(first))?
            .is_none()
        {
            return Err(GgufError::new(ErrorKind::SplitKey {
                key: KEY_SPLIT_COUNT,
                problem: "is missing: not a shard of a split set".into(),
            })
            .with_path(first));
        }
        GgufFile::join_set(file)
    }

    /// Find, open and check the other shards of the set whose first shard is `first`.
    fn join_set(first: GgufFile) -> Result<GgufFile, GgufError> {
        let path0 = first.path().to_path_buf();
        let at0 = |k: ErrorKind| GgufError::new(k).with_path(&path0);
        let m0 = first.metadata();
        let count = required_int(m0, KEY_SPLIT_COUNT).map_err(at0)?;
        if !(1..=u16::MAX as i128).contains(&count) {
            return Err(at0(ErrorKind::SplitKey {
                key: KEY_SPLIT_COUNT,
                problem: format!("is {count}, not between 1 and {}", u16::MAX),
            }));
        }
        let n = count as usize;
        let no = required_int(m0, KEY_SPLIT_NO).map_err(at0)?;
        if no != 0 {
            // the first shard's name, when this one's name follows the pattern
            let first_name = usize::try_from(no)
                .ok()
                .filter(|&i| i < n)
                .and_then(|i| prefix_of(&path0, i, n))
                .map(|p| file_name(&shard_path(&p, 0, n)))
                .unwrap_or_else(|| format!("PREFIX{}", shard_suffix(0, n)));
            return Err(at0(ErrorKind::NotFirstShard {
                no: (no + 1).max(0) as u64,
                count: n as u64,
                first: first_name,
            }));
        }
        let total = required_int(m0, KEY_SPLIT_TENSORS_COUNT).map_err(at0)?;
        let Some(prefix) = prefix_of(&path0, 0, n) else {
            return Err(at0(ErrorKind::ShardName {
                expected: shard_suffix(0, n),
            }));
        };
        let first_name = file_name(&path0);

        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in first.tensors() {
            seen.insert(t.name.clone(), 0);
        }
        let mut shards = Vec::with_capacity(n);
        shards.push(first);
        for i in 1..n {
            let p = shard_path(&prefix, i, n);
            let at = |k: ErrorKind| GgufError::new(k).with_path(&p);
            match std::fs::metadata(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(at(ErrorKind::ShardMissing {
                        first: first_name.clone(),
                        count: n as u64,
                    }))
                }
                _ => {}
            }
            let shard = GgufFile::open(&p)?;
            let m = shard.metadata();
            let no = required_int(m, KEY_SPLIT_NO).map_err(at)?;
            if no != i as i128 {
                return Err(at(ErrorKind::ShardNumber {
                    found: sat(no),
                    expected: i as u64,
                }));
            }
            for (key, want) in [(KEY_SPLIT_COUNT, count), (KEY_SPLIT_TENSORS_COUNT, total)] {
                let got = required_int(m, key).map_err(at)?;
                if got != want {
                    return Err(at(ErrorKind::ShardMismatch {
                        key,
                        found: sat(got),
                        expected: sat(want),
                        first: first_name.clone(),
                    }));
                }
            }
            for t in shard.tensors() {
                if let Some(&other) = seen.get(&t.name) {
                    return Err(at(ErrorKind::ShardDuplicateTensor {
                        name: t.name.clone(),
                        other: file_name(shards[other].path()),
                    }));
                }
                seen.insert(t.name.clone(), i);
            }
            shards.push(shard);
        }
        let found: u64 = shards.iter().map(|s| s.tensors().len() as u64).sum();
        if i128::from(found) != total {
            return Err(at0(ErrorKind::SetTensorCount {
                declared: sat(total),
                shards: n as u64,
                found,
            }));
        }
        let metadata = logical_metadata(&shards);
        Ok(GgufFile::from_shards(shards, metadata))
    }
}

/// The first shard's metadata without the split keys and its own hashes, plus the logical
/// hash list: the concatenation of the shards' lists when every shard has a well-formed list
/// of its own tensors (qforge's layout), or the first shard's list when it has one entry per
/// tensor of the whole set and no other shard has one (`llama-gguf-split` of a qforge file
/// copies every key into the first shard); otherwise none.
fn logical_metadata(shards: &[GgufFile]) -> Metadata {
    let mut m = shards[0].metadata().clone();
    for key in [
        KEY_SPLIT_NO,
        KEY_SPLIT_COUNT,
        KEY_SPLIT_TENSORS_COUNT,
        KEY_HASHES,
    ] {
        m.remove(key);
    }
    if let Some(all) = logical_hashes(shards) {
        // keys of a parsed file are non-empty, and this one was removed above: cannot fail
        let _ = m.set(KEY_HASHES, Value::Array(Array::String(all)));
    }
    m
}

fn logical_hashes(shards: &[GgufFile]) -> Option<Vec<String>> {
    let list = |s: &GgufFile| match s.metadata().get(KEY_HASHES) {
        Some(Value::Array(Array::String(h))) => Some(h.clone()),
        _ => None,
    };
    let total: usize = shards.iter().map(|s| s.tensors().len()).sum();
    let first = list(&shards[0])?;
    if shards.len() > 1
        && first.len() == total
        && first.len() != shards[0].tensors().len()
        && shards[1..]
            .iter()
            .all(|s| s.metadata().get(KEY_HASHES).is_none())
    {
        return Some(first);
    }
    let mut all = Vec::with_capacity(total.min(super::reader::PREALLOC_LIMIT));
    for s in shards {
        let h = list(s)?;
        if h.len() != s.tensors().len() {
            return None;
        }
        all.extend(h);
    }
    Some(all)
}
