//! The strict reader. Every count, length, offset and type is checked against the bytes that
//! remain (with checked arithmetic) before anything is allocated or handed out; the checks are
//! listed, numbered, in spec/FORMAT.md.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{ErrorKind, GgufError};
use super::value::{Array, Metadata, Value, ValueType};
use super::GgmlType;

/// `GGUF` as bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Longest string accepted (ggml's GGUF_MAX_STRING_LENGTH).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Longest array accepted (ggml's GGUF_MAX_ARRAY_ELEMENTS).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Largest `general.alignment` accepted (a hardening cap; ggml sets none).
pub const MAX_ALIGNMENT: u32 = 1 << 20;
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name in bytes (ggml's GGML_MAX_NAME is 64 including the NUL).
pub const MAX_NAME_LEN: u64 = 63;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: u32 = 4;
/// Smallest possible encoded KV pair: key length, empty-key-free 1-byte key is checked later,
/// so: 8 (key length) + 4 (type) + 1 (smallest value).
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible tensor info: 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml dimensions: `dims[0]` is the row length (fastest varying).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (1 for zero dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data (validated by the reader not to overflow).
    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.n_elements()).unwrap_or(0)
    }
}

/// A parsed and validated header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Size of the buffer the header was validated against.
    pub file_size: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::new(
                self.pos as u64,
                ErrorKind::Truncated {
                    what: what.to_string(),
                    needed: n,
                    remaining: self.remaining(),
                },
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let len = self.u64(&format!("{what} length"))?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::new(
                at,
                ErrorKind::StringTooLong {
                    length: len,
                    max: MAX_STRING_LEN,
                },
            ));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            GgufError::new(
                at,
                ErrorKind::InvalidUtf8 {
                    what: what.to_string(),
                },
            )
        })
    }

    fn scalar(&mut self, ty: ValueType, what: &str) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => unreachable!("arrays are read by value()"),
        })
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType, GgufError> {
        let at = self.pos as u64;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::new(at, ErrorKind::BadValueType(id)))
    }

    fn value(&mut self, key: &str) -> Result<Value, GgufError> {
        let what = format!("value of '{key}'");
        let ty = self.value_type(&format!("type of '{key}'"))?;
        if ty != ValueType::Array {
            return self.scalar(ty, &what);
        }
        let at = self.pos as u64;
        let elem = self.value_type(&format!("element type of '{key}'"))?;
        if elem == ValueType::Array {
            return Err(GgufError::new(at, ErrorKind::NestedArray));
        }
        let len_at = self.pos as u64;
        let n = self.u64(&format!("length of '{key}'"))?;
        if n > MAX_ARRAY_LEN {
            return Err(GgufError::new(
                len_at,
                ErrorKind::ArrayTooLong {
                    length: n,
                    max: MAX_ARRAY_LEN,
                },
            ));
        }
        // Every element needs at least this many bytes, so the count is bounded by the file
        // before anything is allocated.
        let min_elem = elem.fixed_size().unwrap_or(8) as u64;
        if n.saturating_mul(min_elem) > self.remaining() {
            return Err(GgufError::new(
                len_at,
                ErrorKind::Truncated {
                    what: format!("{n} elements of '{key}'"),
                    needed: n.saturating_mul(min_elem),
                    remaining: self.remaining(),
                },
            ));
        }
        let n = n as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let bytes = self.take((n * size_of::<$t>()) as u64, &what)?;
                Array::$variant(
                    bytes
                        .chunks_exact(size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("sized chunk")))
                        .collect(),
                )
            }};
        }
        let arr = match elem {
            ValueType::U8 => Array::U8(self.take(n as u64, &what)?.to_vec()),
            ValueType::I8 => Array::I8(
                self.take(n as u64, &what)?
                    .iter()
                    .map(|&b| b as i8)
                    .collect(),
            ),
            ValueType::Bool => Array::Bool(
                self.take(n as u64, &what)?
                    .iter()
                    .map(|&b| b != 0)
                    .collect(),
            ),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&format!("element {i} of '{key}'"))?);
                }
                Array::String(v)
            }
            ValueType::Array => unreachable!("checked above"),
        };
        Ok(Value::Array(arr))
    }
}

fn pad(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

impl GgufHeader {
    /// Parse and validate the header of a whole GGUF file image.
    pub fn parse(buf: &[u8]) -> Result<GgufHeader, GgufError> {
        let file_size = buf.len() as u64;
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = c.array("magic")?;
        if magic != MAGIC {
            return Err(GgufError::new(0, ErrorKind::BadMagic(magic)));
        }
        let version = c.u32("version")?;
        if version != 0 && version & 0xFFFF == 0 {
            return Err(GgufError::new(4, ErrorKind::ByteSwapped(version)));
        }
        if version != 2 && version != 3 {
            return Err(GgufError::new(4, ErrorKind::UnsupportedVersion(version)));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let max_kv = c.remaining() / MIN_KV_BYTES;
        if n_kv > max_kv {
            return Err(GgufError::new(
                16,
                ErrorKind::CountTooLarge {
                    what: "metadata count",
                    count: n_kv,
                    max: max_kv,
                },
            ));
        }
        let mut metadata = Metadata::new();
        let mut alignment_at = None;
        for _ in 0..n_kv {
            let at = c.pos as u64;
            let key = c.string("metadata key")?;
            if key.is_empty() {
                return Err(GgufError::new(at, ErrorKind::EmptyKey));
            }
            let value = c.value(&key)?;
            if key == "general.alignment" {
                alignment_at = Some(at);
            }
            metadata
                .insert(&key, value)
                .map_err(|e| GgufError::new(at, e.kind))?;
        }
        let alignment = match (metadata.get("general.alignment"), alignment_at) {
            (None, _) => DEFAULT_ALIGNMENT,
            (Some(Value::U32(a)), _) if a.is_power_of_two() && *a <= MAX_ALIGNMENT => *a as u64,
            (Some(v), at) => {
                return Err(GgufError::new(
                    at.unwrap_or(0),
                    ErrorKind::BadAlignment {
                        found: format!("{} {:?}", v.type_name(), v),
                    },
                ))
            }
        };
        let max_tensors = c.remaining() / MIN_TENSOR_INFO_BYTES;
        if n_tensors > max_tensors {
            return Err(GgufError::new(
                8,
                ErrorKind::CountTooLarge {
                    what: "tensor count",
                    count: n_tensors,
                    max: max_tensors,
                },
            ));
        }
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::with_capacity(n_tensors as usize);
        let mut expected_offset = 0u64;
        let mut info_offsets = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let at = c.pos as u64;
            info_offsets.push(at);
            let name = c.string("tensor name")?;
            if name.is_empty() {
                return Err(GgufError::new(at, ErrorKind::EmptyTensorName));
            }
            if name.len() as u64 > MAX_NAME_LEN {
                return Err(GgufError::new(
                    at,
                    ErrorKind::TensorNameTooLong {
                        length: name.len() as u64,
                        name,
                    },
                ));
            }
            if !names.insert(name.clone()) {
                return Err(GgufError::new(at, ErrorKind::DuplicateTensorName { name }));
            }
            let dims_at = c.pos as u64;
            let n_dims = c.u32(&format!("dimension count of '{name}'"))?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::new(
                    dims_at,
                    ErrorKind::BadDimCount { name, n_dims },
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d_at = c.pos as u64;
                let d = c.u64(&format!("dimension of '{name}'"))? as i64;
                if d < 0 {
                    return Err(GgufError::new(
                        d_at,
                        ErrorKind::NegativeDim { name, dim: d },
                    ));
                }
                dims.push(d as u64);
            }
            let n_elements = dims.iter().try_fold(1u64, |acc, &d| {
                acc.checked_mul(d).filter(|&p| p <= i64::MAX as u64)
            });
            let Some(n_elements) = n_elements else {
                return Err(GgufError::new(
                    dims_at,
                    ErrorKind::ElementCountOverflow { name },
                ));
            };
            let ty_at = c.pos as u64;
            let id = c.u32(&format!("type of '{name}'"))?;
            let Some(ty) = GgmlType::from_id(id) else {
                return Err(GgufError::new(ty_at, ErrorKind::UnknownType { name, id }));
            };
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % ty.block_size() != 0 {
                return Err(GgufError::new(
                    ty_at,
                    ErrorKind::BlockMismatch {
                        name,
                        ne0,
                        block: ty.block_size(),
                        ty: ty.name(),
                    },
                ));
            }
            let Some(n_bytes) = ty.bytes_for(n_elements).filter(|&b| b <= i64::MAX as u64) else {
                return Err(GgufError::new(ty_at, ErrorKind::ByteSizeOverflow { name }));
            };
            let off_at = c.pos as u64;
            let offset = c.u64(&format!("offset of '{name}'"))?;
            if offset != expected_offset {
                return Err(GgufError::new(
                    off_at,
                    ErrorKind::BadOffset {
                        name,
                        found: offset,
                        expected: expected_offset,
                    },
                ));
            }
            expected_offset = pad(n_bytes, alignment)
                .and_then(|p| expected_offset.checked_add(p))
                .ok_or_else(|| {
                    GgufError::new(off_at, ErrorKind::ByteSizeOverflow { name: name.clone() })
                })?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let data_offset = pad(c.pos as u64, alignment).expect("position is small");
        for (t, &at) in tensors.iter().zip(&info_offsets) {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes()));
            match end {
                Some(end) if end <= file_size => {}
                _ => {
                    return Err(GgufError::new(
                        at,
                        ErrorKind::DataOutOfBounds {
                            name: t.name.clone(),
                            end: end.unwrap_or(u64::MAX),
                            file_size,
                        },
                    ))
                }
            }
        }
        Ok(GgufHeader {
            version,
            alignment,
            metadata,
            tensors,
            data_offset,
            file_size,
        })
    }
}

/// A memory-mapped, validated GGUF file with zero-copy tensor views.
pub struct GgufFile {
    path: PathBuf,
    map: Option<Mmap>,
    header: GgufHeader,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map and validate `path`. Errors name the file, the check and the byte offset.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let with_path = |e: GgufError| e.with_path(path);
        let file = File::open(path).map_err(|e| with_path(GgufError::io(e)))?;
        let len = file
            .metadata()
            .map_err(|e| with_path(GgufError::io(e)))?
            .len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: read-only private mapping; the file is not modified by qforge while
            // mapped. A concurrent truncation by another process could fault, the standard
            // caveat of mmap readers.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| with_path(GgufError::io(e)))?)
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let header = GgufHeader::parse(bytes).map_err(with_path)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.header.file_size
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// Index and info of the tensor called `name`.
    pub fn tensor_by_name(&self, name: &str) -> Option<(usize, &TensorInfo)> {
        self.header
            .tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
    }

    /// The data of tensor `index` (zero-copy; bounds were validated at open).
    pub fn tensor_data(&self, index: usize) -> &[u8] {
        let t = &self.header.tensors[index];
        let start = (self.header.data_offset + t.offset) as usize;
        let bytes: &[u8] = self.map.as_deref().unwrap_or(&[]);
        &bytes[start..start + t.n_bytes() as usize]
    }

    /// Drop the pages of a tensor's data from resident memory (they are re-read if touched).
    pub fn release(&self, index: usize) {
        let Some(map) = &self.map else { return };
        let t = &self.header.tensors[index];
        let page = 4096u64;
        let start = (self.header.data_offset + t.offset).div_ceil(page) * page;
        let end = (self.header.data_offset + t.offset + t.n_bytes()) / page * page;
        if end > start {
            // SAFETY: DONTNEED on a read-only file-backed mapping only drops clean pages.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start as usize,
                    (end - start) as usize,
                )
            };
        }
    }
}
