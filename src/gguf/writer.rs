//! The streaming writer: header first (all offsets are known from shapes and types), then each
//! tensor's bytes in order and in pieces, zero padding after every tensor (the last one too),
//! and a SHA-256 of every tensor computed as it streams.
//!
//! [`GgufFileWriter`] writes into a temporary file beside the target and renames it over the
//! final name only after everything succeeded and was flushed to disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{ErrorKind, GgufError};
use super::reader::{DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use super::value::{Array, Metadata, Value};
use super::GgmlType;

/// What the writer needs to know about a tensor before its data arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml dimensions, row length first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Append the wire encoding of a value (type id, then payload).
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

fn pad_len(n: u64, align: u64) -> u64 {
    (align - n % align) % align
}

/// Encode the header for `metadata` and `tensors`: returns the bytes (padded to the alignment)
/// and, per key, the byte range of its encoded value (type id included) for later patching.
#[allow(clippy::type_complexity)]
pub fn encode_header(
    metadata: &Metadata,
    tensors: &[TensorSpec],
    alignment: u64,
) -> Result<(Vec<u8>, HashMap<String, (u64, u64)>, Vec<u64>), GgufError> {
    if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT as u64 {
        return Err(GgufError::new(
            0,
            ErrorKind::BadAlignment {
                found: alignment.to_string(),
            },
        ));
    }
    let declared = metadata.get("general.alignment");
    match declared {
        None => {}
        Some(Value::U32(a)) if *a as u64 == alignment => {}
        Some(v) => {
            return Err(GgufError::new(
                0,
                ErrorKind::BadAlignment {
                    found: format!("{v:?} in the metadata but {alignment} requested"),
                },
            ))
        }
    }
    let add_alignment = declared.is_none() && alignment != DEFAULT_ALIGNMENT;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&((metadata.len() + add_alignment as usize) as u64).to_le_bytes());
    let mut positions = HashMap::new();
    let extra = add_alignment.then_some(("general.alignment", Value::U32(alignment as u32)));
    for (key, value) in metadata.iter().chain(extra.iter().map(|(k, v)| (*k, v))) {
        if let Value::Array(a) = value {
            if a.is_empty() {
                // gguf-py never writes empty arrays and some readers choke on them; keep the
                // encoding legal anyway (it is) and let callers decide.
            }
        }
        encode_string(&mut out, key);
        let start = out.len() as u64;
        encode_value(&mut out, value);
        positions.insert(key.to_string(), (start, out.len() as u64 - start));
    }
    let mut seen = std::collections::HashSet::new();
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        let name = t.name.clone();
        if t.name.is_empty() {
            return Err(GgufError::new(0, ErrorKind::EmptyTensorName));
        }
        if t.name.len() as u64 > MAX_NAME_LEN {
            return Err(GgufError::new(
                0,
                ErrorKind::TensorNameTooLong {
                    length: t.name.len() as u64,
                    name,
                },
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(GgufError::new(0, ErrorKind::DuplicateTensorName { name }));
        }
        if t.dims.len() > MAX_DIMS as usize {
            return Err(GgufError::new(
                0,
                ErrorKind::BadDimCount {
                    name,
                    n_dims: t.dims.len() as u32,
                },
            ));
        }
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| {
                a.checked_mul(d).filter(|&p| p <= i64::MAX as u64)
            })
            .ok_or_else(|| {
                GgufError::new(0, ErrorKind::ElementCountOverflow { name: name.clone() })
            })?;
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % t.ty.block_size() != 0 {
            return Err(GgufError::new(
                0,
                ErrorKind::BlockMismatch {
                    name,
                    ne0,
                    block: t.ty.block_size(),
                    ty: t.ty.name(),
                },
            ));
        }
        let bytes = t
            .ty
            .bytes_for(n)
            .ok_or_else(|| GgufError::new(0, ErrorKind::ByteSizeOverflow { name: name.clone() }))?;
        encode_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        sizes.push(bytes);
        offset = offset
            .checked_add(bytes + pad_len(bytes, alignment))
            .ok_or_else(|| GgufError::new(0, ErrorKind::ByteSizeOverflow { name }))?;
    }
    let pad = pad_len(out.len() as u64, alignment);
    out.resize(out.len() + pad as usize, 0);
    Ok((out, positions, sizes))
}

/// A streaming GGUF writer over any seekable sink.
pub struct GgufWriter<W: Write + Seek> {
    sink: W,
    alignment: u64,
    names: Vec<String>,
    sizes: Vec<u64>,
    value_pos: HashMap<String, (u64, u64)>,
    current: usize,
    written: u64,
    hasher: Sha256,
    hashes: Vec<[u8; 32]>,
}

impl<W: Write + Seek> GgufWriter<W> {
    /// Write the header for `metadata` and `tensors` to `sink`.
    pub fn new(
        mut sink: W,
        metadata: &Metadata,
        tensors: &[TensorSpec],
        alignment: u64,
    ) -> Result<GgufWriter<W>, GgufError> {
        let (header, value_pos, sizes) = encode_header(metadata, tensors, alignment)?;
        sink.write_all(&header).map_err(GgufError::io)?;
        let mut w = GgufWriter {
            sink,
            alignment,
            names: tensors.iter().map(|t| t.name.clone()).collect(),
            sizes,
            value_pos,
            current: 0,
            written: 0,
            hasher: Sha256::new(),
            hashes: Vec::with_capacity(tensors.len()),
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
        let pad = pad_len(self.sizes[self.current], self.alignment);
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = pad as usize;
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

    /// Append data of the current tensor. A tensor may arrive in any number of pieces; once it
    /// has exactly its size, it is padded and the next tensor begins. A piece that would run
    /// past the current tensor's end is an error.
    pub fn write_tensor_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.current >= self.sizes.len() {
            return Err(GgufError::new(
                0,
                ErrorKind::TensorCount {
                    expected: self.sizes.len(),
                    got: self.sizes.len() + 1,
                },
            ));
        }
        let size = self.sizes[self.current];
        let after = self.written + bytes.len() as u64;
        if after > size {
            return Err(GgufError::new(
                0,
                ErrorKind::TensorSize {
                    name: self.names[self.current].clone(),
                    expected: size,
                    got: after,
                },
            ));
        }
        self.sink.write_all(bytes).map_err(GgufError::io)?;
        self.hasher.update(bytes);
        self.written = after;
        self.complete_empty()
    }

    /// SHA-256 of every tensor completed so far, in order.
    pub fn tensor_hashes(&self) -> Vec<[u8; 32]> {
        self.hashes.clone()
    }

    /// Overwrite the value of `key` in the header. The new value must encode to exactly as
    /// many bytes as the one the header was written with.
    pub fn patch_value(&mut self, key: &str, value: &Value) -> Result<(), GgufError> {
        let &(pos, len) = self.value_pos.get(key).ok_or_else(|| {
            GgufError::new(
                0,
                ErrorKind::MissingKey {
                    key: key.to_string(),
                },
            )
        })?;
        let mut enc = Vec::with_capacity(len as usize);
        encode_value(&mut enc, value);
        if enc.len() as u64 != len {
            return Err(GgufError::new(
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
            .seek(SeekFrom::Start(pos))
            .map_err(GgufError::io)?;
        self.sink.write_all(&enc).map_err(GgufError::io)?;
        self.sink
            .seek(SeekFrom::Start(here))
            .map_err(GgufError::io)?;
        Ok(())
    }

    /// Check every tensor was written in full and hand back the sink (flushed).
    pub fn finish(mut self) -> Result<(W, Vec<[u8; 32]>), GgufError> {
        if self.current != self.sizes.len() {
            if self.written > 0 {
                return Err(GgufError::new(
                    0,
                    ErrorKind::TensorSize {
                        name: self.names[self.current].clone(),
                        expected: self.sizes[self.current],
                        got: self.written,
                    },
                ));
            }
            return Err(GgufError::new(
                0,
                ErrorKind::TensorCount {
                    expected: self.sizes.len(),
                    got: self.current,
                },
            ));
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
/// Dropping it unfinished (an error, a panic) deletes the temporary file, so nothing ever
/// appears under the final name unless the file is complete and synced.
///
/// [`finish`]: GgufFileWriter::finish
pub struct GgufFileWriter {
    inner: GgufWriter<BufWriter<tempfile::NamedTempFile>>,
    path: PathBuf,
}

impl GgufFileWriter {
    pub fn create(
        path: &Path,
        metadata: &Metadata,
        tensors: &[TensorSpec],
        alignment: u64,
    ) -> Result<GgufFileWriter, GgufError> {
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
                GgufError::new(
                    0,
                    ErrorKind::Io(format!("cannot create a file in {}: {why}", dir.display())),
                )
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

    pub fn tensor_hashes(&self) -> Vec<[u8; 32]> {
        self.inner.tensor_hashes()
    }

    pub fn patch_value(&mut self, key: &str, value: &Value) -> Result<(), GgufError> {
        self.inner.patch_value(key, value)
    }

    /// Flush, fsync, and rename over the final name. Returns the tensor hashes.
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
            GgufError::new(
                0,
                ErrorKind::Io(format!(
                    "cannot rename into {}: {}",
                    self.path.display(),
                    e.error
                )),
            )
        })?;
        drop(file);
        Ok(hashes)
    }
}
