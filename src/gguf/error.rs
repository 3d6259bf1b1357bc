//! Reader and writer errors: one kind per check, with the byte offset where the failing item
//! starts (when there is one) and, when reading a file, the file's path.

use std::fmt;
use std::path::PathBuf;

/// Which check failed. Every reader check of spec/FORMAT.md §8 has its own variant, so callers
/// and tests can tell them apart without parsing messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Needed `needed` more bytes for `what`, only `remaining` left.
    #[error("{what} needs {needed} bytes but only {remaining} remain (truncated file?)")]
    Truncated {
        what: String,
        needed: u64,
        remaining: u64,
    },
    #[error("bad magic {0:02x?}: not a GGUF file (expected the bytes \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("{}", unsupported_version(*.0))]
    UnsupportedVersion(u32),
    /// The version's low 16 bits are zero: the file was written with the other byte order.
    #[error(
        "version field reads {0:#010x}: the file is big-endian (byte-swapped); \
         qforge reads little-endian GGUF only"
    )]
    ByteSwapped(u32),
    /// A count that cannot fit in the remaining bytes.
    #[error("{what} {count} is larger than the rest of the file can hold (at most {max})")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("{what}: length {length} exceeds the limit of {max} bytes")]
    StringTooLong { what: String, length: u64, max: u64 },
    #[error("array '{key}': {length} elements exceed the limit of {max}")]
    ArrayTooLong { key: String, length: u64, max: u64 },
    #[error("key '{key}': invalid value type id {id} (valid: 0..=12)")]
    BadValueType { key: String, id: u32 },
    #[error("key '{key}': arrays of arrays are not allowed")]
    NestedArray { key: String },
    #[error("{what} is not valid UTF-8 (invalid byte at position {valid_up_to})")]
    InvalidUtf8 { what: String, valid_up_to: u64 },
    #[error("empty metadata key")]
    EmptyKey,
    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },
    #[error("general.alignment has type {actual}; it must be UINT32")]
    AlignmentType { actual: String },
    #[error("alignment {value} is not a power of two between 1 and 1 MiB")]
    BadAlignment { value: u64 },
    /// Writer: the metadata declares one alignment and the writer was asked for another.
    #[error("general.alignment in the metadata is {declared} but the writer uses {requested}")]
    AlignmentMismatch { declared: u32, requested: u64 },
    #[error("empty tensor name")]
    EmptyTensorName,
    #[error("tensor name '{name}' is {length} bytes; at most 63 are allowed")]
    TensorNameTooLong { name: String, length: u64 },
    /// ggml copies names into C strings, so a NUL would silently truncate the name there.
    #[error("tensor name '{name}' contains a NUL byte")]
    TensorNameNul { name: String },
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensorName { name: String },
    #[error("tensor '{name}': {n_dims} dimensions (at most 4)")]
    BadDimCount { name: String, n_dims: u32 },
    #[error("tensor '{name}': dimension {index} is negative ({dim})")]
    NegativeDim { name: String, index: u32, dim: i64 },
    #[error("tensor '{name}': element count overflows a signed 64-bit integer")]
    ElementCountOverflow { name: String },
    #[error("tensor '{name}': unknown or removed ggml type id {id}")]
    UnknownType { name: String, id: u32 },
    #[error("tensor '{name}': row length {ne0} is not a multiple of {ty}'s block size {block}")]
    BlockMismatch {
        name: String,
        ne0: u64,
        block: u64,
        ty: String,
    },
    #[error("tensor '{name}': byte size overflows a signed 64-bit integer")]
    ByteSizeOverflow { name: String },
    #[error("tensor '{name}': offset {found} but expected {expected} (the running padded sum)")]
    BadOffset {
        name: String,
        found: u64,
        expected: u64,
    },
    #[error("tensor '{name}': data ends at byte {end}, past the end of the {file_size}-byte file")]
    DataOutOfBounds {
        name: String,
        end: u64,
        file_size: u64,
    },
    #[error("missing metadata key '{key}'")]
    MissingKey { key: String },
    #[error("metadata key '{key}' has type {actual}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        actual: String,
    },
    /// Writer: a tensor got more or fewer bytes than its shape and type need.
    #[error("tensor '{name}': expected {expected} bytes of data, got {got}")]
    TensorSize {
        name: String,
        expected: u64,
        got: u64,
    },
    /// Writer: finished before every tensor was written, or wrote past the last.
    #[error("expected data for {expected} tensors, got {got}")]
    TensorCount { expected: usize, got: usize },
    /// Writer: a patched value must encode to the same length as its placeholder.
    #[error("patched value of '{key}' encodes to {got} bytes, its placeholder to {expected}")]
    PatchLength {
        key: String,
        expected: u64,
        got: u64,
    },
    #[error("{0}")]
    Io(String),
    /// Split sets (the error's path is the shard concerned): a shard of the set is absent.
    #[error("missing (the set named by {first} has {count} shards)")]
    ShardMissing { first: String, count: u64 },
    /// A split key is absent, not an integer, or out of range.
    #[error("key '{key}' {problem}")]
    SplitKey { key: &'static str, problem: String },
    /// The first shard's name does not follow `PREFIX-00001-of-NNNNN.gguf`.
    #[error(
        "the name does not end in '{expected}', so the other shards of the set cannot be found"
    )]
    ShardName { expected: String },
    /// A shard other than the first was given where the set is opened.
    #[error(
        "shard {no} of {count} of a split set; give its first shard ({first}) for the whole model"
    )]
    NotFirstShard { no: u64, count: u64, first: String },
    /// A shard's `split.no` is not its place in the set.
    #[error("split.no is {found}, expected {expected}")]
    ShardNumber { found: i64, expected: u64 },
    /// A shard's `split.count` or `split.tensors.count` differs from the first shard's.
    #[error("{key} {found} differs from {expected} in the first shard ({first})")]
    ShardMismatch {
        key: &'static str,
        found: i64,
        expected: i64,
        first: String,
    },
    /// The shards together hold another number of tensors than `split.tensors.count`.
    #[error("split.tensors.count is {declared} but the {shards} shards hold {found} tensors")]
    SetTensorCount {
        declared: i64,
        shards: u64,
        found: u64,
    },
    /// A tensor name occurs in two shards.
    #[error("tensor '{name}' is also in {other}")]
    ShardDuplicateTensor { name: String, other: String },
}

impl ErrorKind {
    /// Whether this is a check of a split set (a missing or mismatched shard) rather than of
    /// one file's bytes.
    pub fn is_split_set(&self) -> bool {
        matches!(
            self,
            ErrorKind::ShardMissing { .. }
                | ErrorKind::SplitKey { .. }
                | ErrorKind::ShardName { .. }
                | ErrorKind::NotFirstShard { .. }
                | ErrorKind::ShardNumber { .. }
                | ErrorKind::ShardMismatch { .. }
                | ErrorKind::SetTensorCount { .. }
                | ErrorKind::ShardDuplicateTensor { .. }
        )
    }
}

fn unsupported_version(v: u32) -> String {
    match v {
        1 => "GGUF version 1 is no longer supported (only versions 2 and 3 are)".into(),
        v => format!("unsupported GGUF version {v} (only versions 2 and 3 are)"),
    }
}

/// A GGUF error: the check that failed, where, and in which file.
///
/// Displays as `PATH: byte OFFSET: MESSAGE`, leaving out what is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufError {
    pub kind: ErrorKind,
    /// Byte offset (from the start of the file) of the item that failed the check. `None` for
    /// errors not tied to a position (I/O, typed metadata access, writer data errors before a
    /// position exists).
    pub offset: Option<u64>,
    pub path: Option<PathBuf>,
}

impl GgufError {
    /// An error not tied to a byte offset.
    pub fn new(kind: ErrorKind) -> GgufError {
        GgufError {
            kind,
            offset: None,
            path: None,
        }
    }

    /// An error about the item starting at byte `offset`.
    pub fn at(offset: u64, kind: ErrorKind) -> GgufError {
        GgufError {
            kind,
            offset: Some(offset),
            path: None,
        }
    }

    pub fn with_path(mut self, path: impl Into<PathBuf>) -> GgufError {
        self.path = Some(path.into());
        self
    }

    pub(crate) fn io(e: std::io::Error) -> GgufError {
        GgufError::new(ErrorKind::Io(e.to_string()))
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(o) = self.offset {
            write!(f, "byte {o}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for GgufError {}
