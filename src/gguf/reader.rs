//! The strict reader. Every count, length, offset and type is checked against the bytes that
//! remain (with checked arithmetic) before anything is allocated or handed out; the checks are
//! listed, numbered, in spec/FORMAT.md §8.
//!
//! Memory use is bounded by the input: nothing is preallocated from a count beyond
//! [`PREALLOC_LIMIT`] entries, and every count is first checked against the bytes that remain,
//! so a header of `n` bytes never costs more than a small constant times `n` bytes of memory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{ErrorKind, GgufError};
use super::value::{Array, Metadata, Value, ValueType};
use super::GgmlType;

/// `GGUF` as bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Longest string accepted, in bytes (ggml's GGUF_MAX_STRING_LENGTH).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Longest array accepted, in elements (ggml's GGUF_MAX_ARRAY_ELEMENTS).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Largest `general.alignment` accepted (a hardening cap; ggml sets none).
pub const MAX_ALIGNMENT: u32 = 1 << 20;
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name in bytes (ggml's GGML_MAX_NAME is 64 including the NUL).
pub const MAX_NAME_LEN: u64 = 63;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: u32 = 4;
/// Smallest possible encoded KV pair: key length (8) + a one-byte key (empty keys are
/// rejected) + type (4) + the smallest value (1).
const MIN_KV_BYTES: u64 = 14;
/// Smallest possible tensor info: name length (8) + a one-byte name + n_dims (4) + type (4) +
/// offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 25;
/// Most entries reserved up front for any list whose length comes from the file; longer lists
/// grow as their entries are actually read.
pub const PREALLOC_LIMIT: usize = 4096;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml dimensions: `dims[0]` is the row length (fastest varying). Empty for a scalar.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (1 for zero dimensions). Saturates at `u64::MAX` for a hand-made
    /// info whose shape overflows; the reader never returns such an info.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Bytes of data. Validated by the reader; for a hand-made info whose size is not a whole
    /// number of blocks or overflows, `u64::MAX`.
    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.n_elements()).unwrap_or(u64::MAX)
    }
}

/// A parsed and validated header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section: the end of the tensor infos padded to the
    /// alignment.
    pub data_offset: u64,
    /// Size of the buffer the header was validated against.
    pub file_size: u64,
}

/// A bounds-checked little-endian reader over the file image. Descriptions of what is being
/// read are closures, so the success path formats nothing.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn pos(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::at(
                self.pos(),
                ErrorKind::Truncated {
                    what: what(),
                    needed: n,
                    remaining: self.remaining(),
                },
            ));
        }
        // n <= remaining <= usize::MAX
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A string: u64 length (≤ MAX_STRING_LEN and ≤ remaining), then UTF-8 bytes. Errors are
    /// reported at the string's length field.
    fn str(&mut self, what: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let at = self.pos();
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::at(
                at,
                ErrorKind::StringTooLong {
                    what: what(),
                    length: len,
                    max: MAX_STRING_LEN,
                },
            ));
        }
        let bytes = self.take(len, &what)?;
        std::str::from_utf8(bytes).map_err(|e| {
            GgufError::at(
                at,
                ErrorKind::InvalidUtf8 {
                    what: what(),
                    valid_up_to: e.valid_up_to() as u64,
                },
            )
        })
    }

    fn value_type(&mut self, key: &str, what: &str) -> Result<ValueType, GgufError> {
        let at = self.pos();
        let id = self.u32(|| format!("{what} of '{key}'"))?;
        ValueType::from_id(id).ok_or_else(|| {
            GgufError::at(
                at,
                ErrorKind::BadValueType {
                    key: key.to_string(),
                    id,
                },
            )
        })
    }

    fn scalar(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        let what = || format!("value of '{key}'");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::String => Value::String(self.str(what)?.to_owned()),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => {
                return Err(GgufError::at(
                    self.pos(),
                    ErrorKind::NestedArray {
                        key: key.to_string(),
                    },
                ))
            }
        })
    }

    /// `n` fixed-size elements, already bounded by the remaining bytes.
    fn fixed<T, const N: usize>(
        &mut self,
        n: u64,
        key: &str,
        conv: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, GgufError> {
        let bytes = self.take(n * N as u64, || format!("elements of '{key}'"))?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                conv(a)
            })
            .collect())
    }

    fn value(&mut self, key: &str) -> Result<Value, GgufError> {
        let ty = self.value_type(key, "type")?;
        if ty != ValueType::Array {
            return self.scalar(ty, key);
        }
        let elem_at = self.pos();
        let elem = self.value_type(key, "element type")?;
        if elem == ValueType::Array {
            return Err(GgufError::at(
                elem_at,
                ErrorKind::NestedArray {
                    key: key.to_string(),
                },
            ));
        }
        let len_at = self.pos();
        let n = self.u64(|| format!("length of '{key}'"))?;
        if n > MAX_ARRAY_LEN {
            return Err(GgufError::at(
                len_at,
                ErrorKind::ArrayTooLong {
                    key: key.to_string(),
                    length: n,
                    max: MAX_ARRAY_LEN,
                },
            ));
        }
        // Every element needs at least this many bytes (a string its length field), so the
        // count is bounded by the file before anything is allocated.
        let min_elem = elem.fixed_size().unwrap_or(8) as u64;
        let needed = n * min_elem; // n <= 2^30, min_elem <= 8: no overflow
        if needed > self.remaining() {
            return Err(GgufError::at(
                len_at,
                ErrorKind::Truncated {
                    what: format!("{n} elements of '{key}'"),
                    needed,
                    remaining: self.remaining(),
                },
            ));
        }
        let arr = match elem {
            ValueType::U8 => Array::U8(self.fixed(n, key, |[b]: [u8; 1]| b)?),
            ValueType::I8 => Array::I8(self.fixed(n, key, |[b]: [u8; 1]| b as i8)?),
            ValueType::Bool => Array::Bool(self.fixed(n, key, |[b]: [u8; 1]| b != 0)?),
            ValueType::U16 => Array::U16(self.fixed(n, key, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.fixed(n, key, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.fixed(n, key, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.fixed(n, key, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.fixed(n, key, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.fixed(n, key, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.fixed(n, key, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.fixed(n, key, f64::from_le_bytes)?),
            ValueType::String => {
                let mut v = Vec::with_capacity((n as usize).min(PREALLOC_LIMIT));
                for i in 0..n {
                    v.push(self.str(|| format!("element {i} of '{key}'"))?.to_owned());
                }
                Array::String(v)
            }
            ValueType::Array => unreachable!("rejected above"),
        };
        Ok(Value::Array(arr))
    }
}

fn pad(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

impl GgufHeader {
    /// Parse and validate a whole GGUF file image: the header and that every tensor's data
    /// lies inside `buf`. Applies every check of spec/FORMAT.md §8 before returning.
    pub fn parse(buf: &[u8]) -> Result<GgufHeader, GgufError> {
        let file_size = buf.len() as u64;
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = c.array(|| "magic".into())?;
        if magic != MAGIC {
            return Err(GgufError::at(0, ErrorKind::BadMagic(magic)));
        }
        let version = c.u32(|| "version".into())?;
        if version != 0 && version & 0xFFFF == 0 {
            return Err(GgufError::at(4, ErrorKind::ByteSwapped(version)));
        }
        if version != 2 && version != 3 {
            return Err(GgufError::at(4, ErrorKind::UnsupportedVersion(version)));
        }
        let n_tensors = c.u64(|| "tensor count".into())?;
        let n_kv = c.u64(|| "metadata count".into())?;
        // Both lists follow, so together they must fit in what remains.
        let max_kv = c.remaining() / MIN_KV_BYTES;
        if n_kv > max_kv {
            return Err(GgufError::at(
                16,
                ErrorKind::CountTooLarge {
                    what: "metadata count",
                    count: n_kv,
                    max: max_kv,
                },
            ));
        }
        let max_tensors = (c.remaining() - n_kv * MIN_KV_BYTES) / MIN_TENSOR_INFO_BYTES;
        if n_tensors > max_tensors {
            return Err(GgufError::at(
                8,
                ErrorKind::CountTooLarge {
                    what: "tensor count",
                    count: n_tensors,
                    max: max_tensors,
                },
            ));
        }

        let mut metadata = Metadata::new();
        let mut alignment_at = 0;
        for _ in 0..n_kv {
            let at = c.pos();
            let key = c.str(|| "metadata key".into())?;
            if key.is_empty() {
                return Err(GgufError::at(at, ErrorKind::EmptyKey));
            }
            if metadata.get(key).is_some() {
                return Err(GgufError::at(
                    at,
                    ErrorKind::DuplicateKey {
                        key: key.to_string(),
                    },
                ));
            }
            let value = c.value(key)?;
            if key == "general.alignment" {
                alignment_at = at;
            }
            metadata
                .insert(key, value)
                .map_err(|e| GgufError::at(at, e.kind))?;
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() && *a <= MAX_ALIGNMENT => *a as u64,
            Some(Value::U32(a)) => {
                return Err(GgufError::at(
                    alignment_at,
                    ErrorKind::BadAlignment { value: *a as u64 },
                ))
            }
            Some(v) => {
                return Err(GgufError::at(
                    alignment_at,
                    ErrorKind::AlignmentType {
                        actual: v.type_name(),
                    },
                ))
            }
        };

        let cap = (n_tensors as usize).min(PREALLOC_LIMIT);
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(cap);
        let mut info_offsets = Vec::with_capacity(cap);
        // Names borrow from the file image: the duplicate check allocates nothing per name.
        let mut names: HashSet<&str> = HashSet::with_capacity(cap);
        let mut expected_offset = 0u64;
        for _ in 0..n_tensors {
            let at = c.pos();
            let name = c.str(|| "tensor name".into())?;
            let err = |offset, kind| Err(GgufError::at(offset, kind));
            if name.is_empty() {
                return err(at, ErrorKind::EmptyTensorName);
            }
            if name.len() as u64 > MAX_NAME_LEN {
                return err(
                    at,
                    ErrorKind::TensorNameTooLong {
                        name: name.to_string(),
                        length: name.len() as u64,
                    },
                );
            }
            if name.contains('\0') {
                let name = name.to_string();
                return err(at, ErrorKind::TensorNameNul { name });
            }
            if !names.insert(name) {
                let name = name.to_string();
                return err(at, ErrorKind::DuplicateTensorName { name });
            }
            let name_owned = || name.to_string();

            let dims_at = c.pos();
            let n_dims = c.u32(|| format!("dimension count of '{name}'"))?;
            if n_dims > MAX_DIMS {
                let name = name_owned();
                return err(dims_at, ErrorKind::BadDimCount { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for index in 0..n_dims {
                let d_at = c.pos();
                let d = c.u64(|| format!("dimension {index} of '{name}'"))? as i64;
                if d < 0 {
                    let name = name_owned();
                    return err(
                        d_at,
                        ErrorKind::NegativeDim {
                            name,
                            index,
                            dim: d,
                        },
                    );
                }
                dims.push(d as u64);
            }
            let n_elements = dims.iter().try_fold(1u64, |acc, &d| {
                acc.checked_mul(d).filter(|&p| p <= i64::MAX as u64)
            });
            let Some(n_elements) = n_elements else {
                let name = name_owned();
                return err(dims_at, ErrorKind::ElementCountOverflow { name });
            };

            let ty_at = c.pos();
            let id = c.u32(|| format!("type of '{name}'"))?;
            let Some(ty) = GgmlType::from_id(id) else {
                let name = name_owned();
                return err(ty_at, ErrorKind::UnknownType { name, id });
            };
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % ty.block_size() != 0 {
                return err(
                    ty_at,
                    ErrorKind::BlockMismatch {
                        name: name_owned(),
                        ne0,
                        block: ty.block_size(),
                        ty: ty.name(),
                    },
                );
            }
            let Some(n_bytes) = ty.bytes_for(n_elements).filter(|&b| b <= i64::MAX as u64) else {
                let name = name_owned();
                return err(ty_at, ErrorKind::ByteSizeOverflow { name });
            };

            let off_at = c.pos();
            let offset = c.u64(|| format!("offset of '{name}'"))?;
            if offset != expected_offset {
                return err(
                    off_at,
                    ErrorKind::BadOffset {
                        name: name_owned(),
                        found: offset,
                        expected: expected_offset,
                    },
                );
            }
            let Some(next) = pad(n_bytes, alignment).and_then(|p| expected_offset.checked_add(p))
            else {
                let name = name_owned();
                return err(off_at, ErrorKind::ByteSizeOverflow { name });
            };
            expected_offset = next;
            info_offsets.push(at);
            tensors.push(TensorInfo {
                name: name_owned(),
                dims,
                ty,
                offset,
            });
        }

        // pos <= buf.len() <= isize::MAX and alignment <= 2^20: cannot overflow.
        let data_offset = c.pos().div_ceil(alignment) * alignment;
        for (t, &at) in tensors.iter().zip(&info_offsets) {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes()));
            match end {
                Some(end) if end <= file_size => {}
                _ => {
                    return Err(GgufError::at(
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

    /// Index of the tensor called `name` (a linear scan; [`GgufFile`] keeps an index).
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}

/// A memory-mapped, validated GGUF file with zero-copy tensor views.
///
/// One value is either a single file ([`GgufFile::open`]) or the logical view of a split set
/// ([`GgufFile::open_split`], [`GgufFile::open_model`]): then [`tensors`](GgufFile::tensors) is
/// the shards' tensors in order, [`tensor_data`](GgufFile::tensor_data) reads from the shard
/// holding the tensor, and [`shards`](GgufFile::shards) lists the shards, each a strict
/// single-file `GgufFile` of its own.
pub struct GgufFile {
    path: PathBuf,
    map: Option<Mmap>,
    header: GgufHeader,
    by_name: HashMap<String, usize>,
    /// The shards of a split set (empty for a single file).
    shards: Vec<GgufFile>,
    /// For a split set: tensor `i` is tensor `locs[i].1` of shard `locs[i].0`.
    locs: Vec<(usize, usize)>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Tensor name -> index in the header's tensor list (names are unique: the parser checks).
fn index_by_name(header: &GgufHeader) -> HashMap<String, usize> {
    header
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

impl GgufFile {
    /// Map and validate `path`. Errors name the file, the check and the byte offset.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let with_path = |e: GgufError| e.with_path(path);
        let file = File::open(path).map_err(|e| with_path(GgufError::io(e)))?;
        let meta = file.metadata().map_err(|e| with_path(GgufError::io(e)))?;
        if !meta.is_file() {
            return Err(with_path(GgufError::new(ErrorKind::Io(
                "not a regular file".into(),
            ))));
        }
        let map = if meta.len() == 0 {
            None // mapping an empty file fails on some platforms; it is just too short
        } else {
            // SAFETY: a read-only private mapping of a regular file. qforge never writes to a
            // file it has mapped; another process truncating it while mapped could fault
            // (SIGBUS), the standard caveat of every mmap-based reader, llama.cpp's included.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| with_path(GgufError::io(e)))?)
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let header = GgufHeader::parse(bytes).map_err(with_path)?;
        let by_name = index_by_name(&header);
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            header,
            by_name,
            shards: Vec::new(),
            locs: Vec::new(),
        })
    }

    /// The logical view of `shards` (already checked to form one set, at least one shard,
    /// tensor names unique across them) with `metadata`: the first shard's version, alignment,
    /// data offset and path, the tensors of all shards in order (each `offset` relative to its
    /// own shard's data section), and `file_size` the shards' sizes added up.
    pub(crate) fn from_shards(shards: Vec<GgufFile>, metadata: Metadata) -> GgufFile {
        let first = &shards[0];
        let n: usize = shards.iter().map(|s| s.tensors().len()).sum();
        let mut tensors = Vec::with_capacity(n);
        let mut locs = Vec::with_capacity(n);
        for (s, shard) in shards.iter().enumerate() {
            for (j, t) in shard.tensors().iter().enumerate() {
                tensors.push(t.clone());
                locs.push((s, j));
            }
        }
        let header = GgufHeader {
            version: first.version(),
            alignment: first.alignment(),
            metadata,
            tensors,
            data_offset: first.data_offset(),
            file_size: shards.iter().map(|s| s.file_size()).sum(),
        };
        let by_name = index_by_name(&header);
        GgufFile {
            path: first.path.clone(),
            map: None,
            header,
            by_name,
            shards,
            locs,
        }
    }

    /// The path given to open it (for a split set, its first shard's).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header (for a split set, the logical one: see [`GgufFile::from_shards`]).
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The shards of a split set, in order; empty for a single file.
    pub fn shards(&self) -> &[GgufFile] {
        &self.shards
    }

    /// Whether this is the logical view of a split set of more than one file.
    pub fn is_split(&self) -> bool {
        !self.shards.is_empty()
    }

    /// For a split set, the shard holding tensor `index` and the tensor's index there.
    pub fn shard_of(&self, index: usize) -> Option<(usize, usize)> {
        self.locs.get(index).copied()
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute offset of the data section.
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
        let &i = self.by_name.get(name)?;
        Some((i, &self.header.tensors[i]))
    }

    /// The data of tensor `index`: exactly `n_bytes` bytes, without padding (zero-copy; bounds
    /// were validated at open).
    ///
    /// # Panics
    /// If `index >= tensors().len()`.
    pub fn tensor_data(&self, index: usize) -> &[u8] {
        if let Some(&(s, j)) = self.locs.get(index) {
            return self.shards[s].tensor_data(j);
        }
        let t = &self.header.tensors[index];
        // validated: data_offset + offset + n_bytes <= file size
        let start = (self.header.data_offset + t.offset) as usize;
        let bytes: &[u8] = self.map.as_deref().unwrap_or(&[]);
        &bytes[start..start + t.n_bytes() as usize]
    }

    /// The info and data of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let (i, t) = self.tensor_by_name(name)?;
        Some((t, self.tensor_data(i)))
    }

    /// Drop the pages of a tensor's data from resident memory (they are re-read if touched).
    pub fn release(&self, index: usize) {
        self.release_prefix(index, u64::MAX);
    }

    /// Drop the pages of a tensor's first `n_bytes` bytes of data from resident memory, so a
    /// reader streaming a large tensor keeps only what it has not finished with.
    pub fn release_prefix(&self, index: usize, n_bytes: u64) {
        if let Some(&(s, j)) = self.locs.get(index) {
            return self.shards[s].release_prefix(j, n_bytes);
        }
        let Some(map) = &self.map else { return };
        let Some(t) = self.header.tensors.get(index) else {
            return;
        };
        let page = 4096u64;
        let begin = self.header.data_offset + t.offset;
        let start = begin.div_ceil(page) * page;
        let end = (begin + t.n_bytes().min(n_bytes)) / page * page;
        if end > start {
            // SAFETY: DONTNEED on a read-only, file-backed private mapping only drops clean
            // pages, which the kernel re-reads from the file on the next access; no Rust
            // reference observes different contents.
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
