//! Reader and writer errors: one kind per check, with the byte offset where the failing item
//! starts and (when reading a file) the file's path.

use std::fmt;
use std::path::PathBuf;

/// Which check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Needed `needed` more bytes for `what`, only `remaining` left.
    Truncated {
        what: String,
        needed: u64,
        remaining: u64,
    },
    BadMagic([u8; 4]),
    UnsupportedVersion(u32),
    /// The version's low 16 bits are zero: the file was written with the other byte order.
    ByteSwapped(u32),
    /// A count that cannot fit in the remaining bytes (or exceeds a cap).
    CountTooLarge {
        what: &'static str,
        count: u64,
        max: u64,
    },
    StringTooLong {
        length: u64,
        max: u64,
    },
    ArrayTooLong {
        length: u64,
        max: u64,
    },
    BadValueType(u32),
    NestedArray,
    InvalidUtf8 {
        what: String,
    },
    EmptyKey,
    DuplicateKey {
        key: String,
    },
    BadAlignment {
        found: String,
    },
    EmptyTensorName,
    TensorNameTooLong {
        name: String,
        length: u64,
    },
    DuplicateTensorName {
        name: String,
    },
    BadDimCount {
        name: String,
        n_dims: u32,
    },
    NegativeDim {
        name: String,
        dim: i64,
    },
    ElementCountOverflow {
        name: String,
    },
    UnknownType {
        name: String,
        id: u32,
    },
    BlockMismatch {
        name: String,
        ne0: u64,
        block: u64,
        ty: String,
    },
    ByteSizeOverflow {
        name: String,
    },
    BadOffset {
        name: String,
        found: u64,
        expected: u64,
    },
    DataOutOfBounds {
        name: String,
        end: u64,
        file_size: u64,
    },
    MissingKey {
        key: String,
    },
    WrongType {
        key: String,
        expected: &'static str,
        actual: String,
    },
    /// Writer: a tensor got more or fewer bytes than its shape and type need.
    TensorSize {
        name: String,
        expected: u64,
        got: u64,
    },
    /// Writer: finished before every tensor was written, or wrote past the last.
    TensorCount {
        expected: usize,
        got: usize,
    },
    /// Writer: a patched value must encode to the same length as its placeholder.
    PatchLength {
        key: String,
        expected: u64,
        got: u64,
    },
    Io(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            Truncated {
                what,
                needed,
                remaining,
            } => write!(
                f,
                "{what} needs {needed} bytes but only {remaining} remain (truncated file?)"
            ),
            BadMagic(m) => write!(f, "bad magic {m:02x?}: not a GGUF file (expected \"GGUF\")"),
            UnsupportedVersion(1) => {
                write!(f, "GGUF version 1 is no longer supported (only 2 and 3)")
            }
            UnsupportedVersion(v) => write!(f, "unsupported GGUF version {v} (only 2 and 3)"),
            ByteSwapped(v) => write!(
                f,
                "version field reads {v:#010x}: the file is big-endian (byte-swapped); qforge reads little-endian GGUF only"
            ),
            CountTooLarge { what, count, max } => {
                write!(f, "{what} {count} is larger than the file can hold (at most {max})")
            }
            StringTooLong { length, max } => {
                write!(f, "string length {length} exceeds the limit ({max})")
            }
            ArrayTooLong { length, max } => {
                write!(f, "array length {length} exceeds the limit ({max})")
            }
            BadValueType(t) => write!(f, "invalid value type id {t} (valid: 0..=12)"),
            NestedArray => write!(f, "nested arrays are not allowed"),
            InvalidUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            EmptyKey => write!(f, "empty metadata key"),
            DuplicateKey { key } => write!(f, "duplicate metadata key '{key}'"),
            BadAlignment { found } => write!(
                f,
                "general.alignment must be a UINT32 power of two no larger than 1 MiB, found {found}"
            ),
            EmptyTensorName => write!(f, "empty tensor name"),
            TensorNameTooLong { name, length } => write!(
                f,
                "tensor name '{name}' is {length} bytes; at most 63 are allowed"
            ),
            DuplicateTensorName { name } => write!(f, "duplicate tensor name '{name}'"),
            BadDimCount { name, n_dims } => {
                write!(f, "tensor '{name}': {n_dims} dimensions (must be 1..=4)")
            }
            NegativeDim { name, dim } => write!(f, "tensor '{name}': negative dimension {dim}"),
            ElementCountOverflow { name } => {
                write!(f, "tensor '{name}': element count overflows a signed 64-bit integer")
            }
            UnknownType { name, id } => write!(
                f,
                "tensor '{name}': unknown or removed ggml type id {id}"
            ),
            BlockMismatch { name, ne0, block, ty } => write!(
                f,
                "tensor '{name}': row length {ne0} is not a multiple of {ty}'s block size {block}"
            ),
            ByteSizeOverflow { name } => write!(f, "tensor '{name}': byte size overflows"),
            BadOffset {
                name,
                found,
                expected,
            } => write!(
                f,
                "tensor '{name}': offset {found} but expected {expected} (the running padded sum)"
            ),
            DataOutOfBounds {
                name,
                end,
                file_size,
            } => write!(
                f,
                "tensor '{name}': data ends at byte {end}, past the end of the {file_size}-byte file"
            ),
            MissingKey { key } => write!(f, "missing metadata key '{key}'"),
            WrongType {
                key,
                expected,
                actual,
            } => write!(f, "metadata key '{key}' has type {actual}, expected {expected}"),
            TensorSize {
                name,
                expected,
                got,
            } => write!(f, "tensor '{name}': expected {expected} bytes of data, got {got}"),
            TensorCount { expected, got } => {
                write!(f, "expected data for {expected} tensors, got {got}")
            }
            PatchLength { key, expected, got } => write!(
                f,
                "patched value of '{key}' encodes to {got} bytes, its placeholder to {expected}"
            ),
            Io(e) => write!(f, "{e}"),
        }
    }
}

/// A GGUF error: the check that failed, where, and in which file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufError {
    pub kind: ErrorKind,
    /// Byte offset of the item that failed the check.
    pub offset: u64,
    pub path: Option<PathBuf>,
}

impl GgufError {
    pub fn new(offset: u64, kind: ErrorKind) -> GgufError {
        GgufError {
            kind,
            offset,
            path: None,
        }
    }

    pub fn with_path(mut self, path: impl Into<PathBuf>) -> GgufError {
        self.path = Some(path.into());
        self
    }

    pub(crate) fn io(e: std::io::Error) -> GgufError {
        GgufError::new(0, ErrorKind::Io(e.to_string()))
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        match &self.kind {
            ErrorKind::Io(_)
            | ErrorKind::MissingKey { .. }
            | ErrorKind::WrongType { .. }
            | ErrorKind::TensorSize { .. }
            | ErrorKind::TensorCount { .. }
            | ErrorKind::PatchLength { .. } => write!(f, "{}", self.kind),
            _ => write!(f, "byte {}: {}", self.offset, self.kind),
        }
    }
}

impl std::error::Error for GgufError {}
