//! The streaming writer: header first (all offsets are known from shapes and types), then each
//! tensor's bytes in order and in pieces, zero padding after every tensor (the last one too),
//! and a SHA-256 of every tensor computed as it streams. No tensor is ever held whole.
//!
//! The writer refuses anything the reader would reject (names, shapes, sizes, alignment), so
//! whatever it writes reads back.
//!
//! [`GgufFileWriter`] writes into a temporary file beside the target and renames it over the
//! final name only after everything succeeded and was flushed to disk.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{ErrorKind, GgufError};
use super::reader::{
    DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_LEN, MAX_DIMS, MAX_NAME_LEN, MAX_STRING_LEN,
};
use super::value::{Array, Metadata, Value};
use super::GgmlType;

/// The GGUF version qforge writes.
pub const WRITE_VERSION: u32 = 3;

/// What the writer needs to know about a tensor before its data arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml dimensions, row length first. Written as given (0 to 4 of them; trailing 1s are
    /// kept, as gguf-py does).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Append the wire encoding of a value: its type id (u32), then for an array the element type
/// id (u32) and count (u64), then the payload.
pub fn encode_value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => encode_string(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            macro_rules! each {
                ($v:expr) => {
                    for x in $v {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                };
            }
            match a {
                Array::U8(v) => out.extend_from_slice(v),
                Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
                Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
                Array::U16(v) => each!(v),
                Array::I16(v) => each!(v),
                Array::U32(v) => each!(v),
                Array::I32(v) => each!(v),
                Array::F32(v) => each!(v),
                Array::U64(v) => each!(v),
                Array::I64(v) => each!(v),
                Array::F64(v) => each!(v),
                Array::String(v) => {
                    for s in v {
                        encode_string(out, s);
                    }
                }
            }
        }
    }
}

/// The limits the reader enforces on values (spec/FORMAT.md §8, checks 5 and 7).
fn check_value(key: &str, v: &Value, at: u64) -> Result<(), GgufError> {
    let long = |s: &str, what: &dyn Fn() -> String| {
        if s.len() as u64 > MAX_STRING_LEN {
            Err(GgufError::at(
                at,
                ErrorKind::StringTooLong {
                    what: what(),
                    length: s.len() as u64,
                    max: MAX_STRING_LEN,
                },
            ))
        } else {
            Ok(())
        }
    };
    long(key, &|| "metadata key".into())?;
    match v {
        Value::String(s) => long(s, &|| format!("value of '{key}'")),
        Value::Array(a) => {
            if a.len() as u64 > MAX_ARRAY_LEN {
                return Err(GgufError::at(
                    at,
                    ErrorKind::ArrayTooLong {
                        key: key.to_string(),
                        length: a.len() as u64,
                        max: MAX_ARRAY_LEN,
                    },
                ));
            }
            if let Array::String(v) = a {
                for (i, s) in v.iter().enumerate() {
                    long(s, &|| format!("element {i} of '{key}'"))?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn pad_len(n: u64, align: u64) -> u64 {
    (align - n % align) % align
}

/// The encoded header and where things landed in it.
#[derive(Clone, Debug)]
pub struct HeaderLayout {
    /// Magic through the zero padding before the data section (a multiple of the alignment).
    pub bytes: Vec<u8>,
    /// Per key, the byte range of its encoded value (type id included): `(start, len)`.
    pub value_pos: HashMap<String, (u64, u64)>,
    /// Per tensor, its data size in bytes (without padding).
    pub sizes: Vec<u64>,
    /// Per tensor, its offset relative to the data section.
    pub offsets: Vec<u64>,
}

/// Encode the header for `metadata` and `tensors` with the given alignment, after checking
/// everything the reader checks. `general.alignment` is added (as UINT32) when `alignment` is
/// not 32 and the metadata does not already carry it; if it does, it must equal `alignment`.
pub fn encode_header(
    metadata: &Metadata,
    tensors: &[TensorSpec],
    alignment: u64,
) -> Result<HeaderLayout, GgufError> {
    if !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT as u64 {
        return Err(GgufError::new(ErrorKind::BadAlignment { value: alignment }));
    }
    let declared = metadata.get("general.alignment");
    match declared {
        None => {}
        Some(Value::U32(a)) if *a as u64 == alignment => {}
        Some(Value::U32(a)) => {
            return Err(GgufError::new(ErrorKind::AlignmentMismatch {
                declared: *a,
                requested: alignment,
            }))
        }
        Some(v) => {
            return Err(GgufError::new(ErrorKind::AlignmentType {
                actual: v.type_name(),
            }))
        }
    }
    let add_alignment = declared.is_none() && alignment != DEFAULT_ALIGNMENT;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&((metadata.len() + add_alignment as usize) as u64).to_le_bytes());
    let mut value_pos = HashMap::with_capacity(metadata.len() + 1);
    let extra = add_alignment.then_some(("general.alignment", Value::U32(alignment as u32)));
    for (key, value) in metadata.iter().chain(extra.iter().map(|(k, v)| (*k, v))) {
        check_value(key, value, out.len() as u64)?;
        encode_string(&mut out, key);
        let start = out.len() as u64;
        encode_value(&mut out, value);
        value_pos.insert(key.to_string(), (start, out.len() as u64 - start));
    }
    let mut seen = HashSet::with_capacity(tensors.len());
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        let at = out.len() as u64;
        let err = |kind| Err(GgufError::at(at, kind));
        let name = || t.name.clone();
        if t.name.is_empty() {
            return err(ErrorKind::EmptyTensorName);
        }
        if t.name.len() as u64 > MAX_NAME_LEN {
            return err(ErrorKind::TensorNameTooLong {
                name: name(),
                length: t.name.len() as u64,
            });
        }
        if t.name.contains('\0') {
            return err(ErrorKind::TensorNameNul { name: name() });
        }
        if !seen.insert(t.name.as_str()) {
            return err(ErrorKind::DuplicateTensorName { name: name() });
        }
        if t.dims.len() > MAX_DIMS as usize {
            return err(ErrorKind::BadDimCount {
                name: name(),
                n_dims: t.dims.len() as u32,
            });
        }
        if let Some((index, &d)) = t
            .dims
            .iter()
            .enumerate()
            .find(|(_, &d)| d > i64::MAX as u64)
        {
            return err(ErrorKind::NegativeDim {
                name: name(),
                index: index as u32,
                dim: d as i64,
            });
        }
        let Some(n) = t.dims.iter().try_fold(1u64, |a, &d| {
            a.checked_mul(d).filter(|&p| p <= i64::MAX as u64)
        }) else {
            return err(ErrorKind::ElementCountOverflow { name: name() });
        };
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % t.ty.block_size() != 0 {
            return err(ErrorKind::BlockMismatch {
                name: name(),
                ne0,
                block: t.ty.block_size(),
                ty: t.ty.name(),
            });
        }
        let Some(bytes) = t.ty.bytes_for(n).filter(|&b| b <= i64::MAX as u64) else {
            return err(ErrorKind::ByteSizeOverflow { name: name() });
        };
        encode_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        sizes.push(bytes);
        offsets.push(offset);
        let Some(next) = offset.checked_add(bytes + pad_len(bytes, alignment)) else {
            return err(ErrorKind::ByteSizeOverflow { name: name() });
        };
        offset = next;
    }
    let pad = pad_len(out.len() as u64, alignment);
    out.resize(out.len() + pad as usize, 0);
    Ok(HeaderLayout {
        bytes: out,
        value_pos,
        sizes,
        offsets,
    })
}

/// A streaming GGUF writer over any seekable sink.
///
/// ```
/// use qforge::gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value};
/// let mut meta = Metadata::new();
/// meta.insert("general.architecture", Value::String("llama".into())).unwrap();
/// let specs = [TensorSpec { name: "w".into(), dims: vec![4, 2], ty: GgmlType::F32 }];
/// let mut w = GgufWriter::new(std::io::Cursor::new(Vec::new()), &meta, &specs, 32).unwrap();
/// w.write_tensor_data(&[0u8; 16]).unwrap(); // any number of pieces, in order
/// w.write_tensor_data(&[0u8; 16]).unwrap(); // the tensor is complete: padding follows
/// let (cursor, hashes) = w.finish().unwrap();
/// assert_eq!(hashes.len(), 1);
/// assert_eq!(cursor.into_inner().len() % 32, 0);
/// ```
pub struct GgufWriter<W: Write + Seek> {
    sink: W,
    /// Sink position of the magic: patches are relative to it.
    base: u64,
    alignment: u64,
    names: Vec<String>,
    sizes: Vec<u64>,
    /// Absolute position (from the magic) of each tensor's data.
    starts: Vec<u64>,
    value_pos: HashMap<String, (u64, u64)>,
    current: usize,
    written: u64,
    hasher: Sha256,
    hashes: Vec<[u8; 32]>,
    /// False when the caller hashes the tensor bytes itself (off the write path).
    hashing: bool,
}

impl<W: Write + Seek> std::fmt::Debug for GgufWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("tensors", &self.sizes.len())
            .field("current", &self.current)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> GgufWriter<W> {
    /// Check and write the header for `metadata` and `tensors` at the sink's current position.
    pub fn new(
        mut sink: W,
        metadata: &Metadata,
        tensors: &[TensorSpec],
        alignment: u64,
    ) -> Result<GgufWriter<W>, GgufError> {
        let layout = encode_header(metadata, tensors, alignment)?;
        let base = sink.stream_position().map_err(GgufError::io)?;
        sink.write_all(&layout.bytes).map_err(GgufError::io)?;
        let data_start = layout.bytes.len() as u64;
        let mut w = GgufWriter {
            sink,
            base,
            alignment,
            names: tensors.iter().map(|t| t.name.clone()).collect(),
            sizes: layout.sizes,
            starts: layout.offsets.iter().map(|o| data_start + o).collect(),
            value_pos: layout.value_pos,
            current: 0,
            written: 0,
            hasher: Sha256::new(),
            hashes: Vec::with_capacity(tensors.len()),
            hashing: true,
        };
        w.complete_empty()?;
        Ok(w)
    }

    /// Tensors of zero bytes are complete as soon as they are reached.
    fn complete_empty(&mut self) -> Result<(), GgufError> {
        while self.current < self.sizes.len() && self.sizes[self.current] == self.written {
            self.finish_current()?;
        }
        Ok(())
    }

    fn finish_current(&mut self) -> Result<(), GgufError> {
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = pad_len(self.sizes[self.current], self.alignment) as usize;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.sink.write_all(&ZEROS[..n]).map_err(GgufError::io)?;
            left -= n;
        }
        let h = std::mem::take(&mut self.hasher).finalize();
        self.hashes.push(h.into());
        self.current += 1;
        self.written = 0;
        Ok(())
    }

    /// Index of the tensor whose data is expected next, or `None` when all are complete.
    pub fn current_tensor(&self) -> Option<usize> {
        (self.current < self.sizes.len()).then_some(self.current)
    }

    /// Append data of the current tensor. A tensor may arrive in any number of pieces; once it
    /// has exactly its size, it is padded and the next tensor begins. A piece that would run
    /// past the current tensor's end is refused (nothing of it is written).
    pub fn write_tensor_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.current >= self.sizes.len() {
            return Err(GgufError::new(ErrorKind::TensorCount {
                expected: self.sizes.len(),
                got: self.sizes.len() + 1,
            }));
        }
        let size = self.sizes[self.current];
        let after = self.written + bytes.len() as u64;
        if after > size {
            return Err(GgufError::at(
                self.starts[self.current],
                ErrorKind::TensorSize {
                    name: self.names[self.current].clone(),
                    expected: size,
                    got: after,
                },
            ));
        }
        self.sink.write_all(bytes).map_err(GgufError::io)?;
        if self.hashing {
            self.hasher.update(bytes);
        }
        self.written = after;
        self.complete_empty()
    }

    /// SHA-256 of every tensor completed so far, in order, over exactly its data bytes
    /// (empty when hashing is off).
    pub fn tensor_hashes(&self) -> Vec<[u8; 32]> {
        if self.hashing {
            self.hashes.clone()
        } else {
            Vec::new()
        }
    }

    /// Stop hashing the tensor data as it is written (the caller hashes it elsewhere, e.g.
    /// in parallel). Only before any data is written.
    pub fn disable_hashing(&mut self) {
        if self.current == 0 && self.written == 0 {
            self.hashing = false;
        }
    }

    /// Overwrite the value of `key` in the header already written. The new value must encode
    /// to exactly as many bytes as the one the header was written with (type id included).
    pub fn patch_value(&mut self, key: &str, value: &Value) -> Result<(), GgufError> {
        let &(pos, len) = self.value_pos.get(key).ok_or_else(|| {
            GgufError::new(ErrorKind::MissingKey {
                key: key.to_string(),
            })
        })?;
        check_value(key, value, pos)?;
        let mut enc = Vec::with_capacity(len as usize);
        encode_value(&mut enc, value);
        if enc.len() as u64 != len {
            return Err(GgufError::at(
                pos,
                ErrorKind::PatchLength {
                    key: key.to_string(),
                    expected: len,
                    got: enc.len() as u64,
                },
            ));
        }
        let here = self.sink.stream_position().map_err(GgufError::io)?;
        self.sink
            .seek(SeekFrom::Start(self.base + pos))
            .map_err(GgufError::io)?;
        self.sink.write_all(&enc).map_err(GgufError::io)?;
        self.sink
            .seek(SeekFrom::Start(here))
            .map_err(GgufError::io)?;
        Ok(())
    }

    /// Check every tensor was written in full, flush, and hand back the sink and the SHA-256
    /// of every tensor in order.
    pub fn finish(mut self) -> Result<(W, Vec<[u8; 32]>), GgufError> {
        if self.current != self.sizes.len() {
            if self.written > 0 {
                return Err(GgufError::at(
                    self.starts[self.current],
                    ErrorKind::TensorSize {
                        name: self.names[self.current].clone(),
                        expected: self.sizes[self.current],
                        got: self.written,
                    },
                ));
            }
            return Err(GgufError::new(ErrorKind::TensorCount {
                expected: self.sizes.len(),
                got: self.current,
            }));
        }
        self.sink.flush().map_err(GgufError::io)?;
        Ok((self.sink, self.hashes))
    }
}

/// Write a complete GGUF image into memory (tests, small files).
pub fn write_to_vec(
    metadata: &Metadata,
    tensors: &[(TensorSpec, &[u8])],
    alignment: u64,
) -> Result<Vec<u8>, GgufError> {
    let specs: Vec<TensorSpec> = tensors.iter().map(|t| t.0.clone()).collect();
    let mut w = GgufWriter::new(
        std::io::Cursor::new(Vec::new()),
        metadata,
        &specs,
        alignment,
    )?;
    for (_, data) in tensors {
        w.write_tensor_data(data)?;
    }
    Ok(w.finish()?.0.into_inner())
}

/// A [`GgufWriter`] into a temporary file that becomes `path` only on [`finish`].
///
/// The temporary file (`.NAME.XXXXXX.tmp`) is created in the target's folder so the final
/// rename stays on one file system and is atomic. Dropping the writer unfinished (an error, a
/// panic) deletes it, so nothing ever appears under the final name unless the file is complete
/// and synced; an existing file under that name is left untouched until the rename.
///
/// [`finish`]: GgufFileWriter::finish
pub struct GgufFileWriter {
    inner: GgufWriter<BufWriter<tempfile::NamedTempFile>>,
    path: PathBuf,
}

impl std::fmt::Debug for GgufFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFileWriter")
            .field("path", &self.path)
            .field("inner", &self.inner)
            .finish()
    }
}

impl GgufFileWriter {
    /// Check the header, create the temporary file beside `path` and write the header to it.
    pub fn create(
        path: &Path,
        metadata: &Metadata,
        tensors: &[TensorSpec],
        alignment: u64,
    ) -> Result<GgufFileWriter, GgufError> {
        if path.is_dir() {
            return Err(GgufError::new(ErrorKind::Io(format!(
                "{} is a directory",
                path.display()
            ))));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let prefix = format!(
            ".{}.",
            path.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "out".into())
        );
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| {
                // tempfile's message repeats the random temporary name; the OS error is enough.
                let full = e.to_string();
                let why = full.split(" at path ").next().unwrap_or(&full).to_string();
                GgufError::new(ErrorKind::Io(format!(
                    "cannot create a file in {}: {why}",
                    dir.display()
                )))
            })?;
        let inner = GgufWriter::new(
            BufWriter::with_capacity(1 << 20, tmp),
            metadata,
            tensors,
            alignment,
        )?;
        Ok(GgufFileWriter {
            inner,
            path: path.to_path_buf(),
        })
    }

    pub fn write_tensor_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.inner.write_tensor_data(bytes)
    }

    pub fn current_tensor(&self) -> Option<usize> {
        self.inner.current_tensor()
    }

    /// SHA-256 of every tensor completed so far, in order.
    pub fn tensor_hashes(&self) -> Vec<[u8; 32]> {
        self.inner.tensor_hashes()
    }

    /// See [`GgufWriter::disable_hashing`].
    pub fn disable_hashing(&mut self) {
        self.inner.disable_hashing()
    }

    pub fn patch_value(&mut self, key: &str, value: &Value) -> Result<(), GgufError> {
        self.inner.patch_value(key, value)
    }

    /// Check completeness, flush, fsync, and rename over the final name (then fsync the
    /// folder, best effort, so the rename itself survives a crash). Returns the tensor hashes.
    pub fn finish(self) -> Result<Vec<[u8; 32]>, GgufError> {
        let (buf, hashes) = self.inner.finish()?;
        let tmp = buf
            .into_inner()
            .map_err(|e| GgufError::io(e.into_error()))?;
        // Temporary files are created 0600; the result should be an ordinary file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(GgufError::io)?;
        }
        tmp.as_file().sync_all().map_err(GgufError::io)?;
        let file: File = tmp.persist(&self.path).map_err(|e| {
            GgufError::new(ErrorKind::Io(format!(
                "cannot rename into {}: {}",
                self.path.display(),
                e.error
            )))
        })?;
        drop(file);
        #[cfg(unix)]
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(hashes)
    }
}
