//! One memory-mapped `.safetensors` file: a strict header parser and zero-copy tensor views.
//!
//! Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section.
//! Every entry's `data_offsets` are relative to the data section. We check every length and
//! offset against the file size before handing out a byte, and refuse overlapping tensors.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::SourceError;

/// Headers larger than this are refused (the format's own readers cap at 100 MB).
const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;
/// safetensors allows at most this many dimensions in practice; we refuse more.
const MAX_DIMS: usize = 8;

/// Element type of a source tensor. Only floating types can be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceDtype {
    F32,
    F16,
    Bf16,
}

impl SourceDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::Bf16 => 2,
        }
    }

    /// The safetensors dtype string.
    pub fn name(self) -> &'static str {
        match self {
            SourceDtype::F32 => "F32",
            SourceDtype::F16 => "F16",
            SourceDtype::Bf16 => "BF16",
        }
    }

    fn parse(s: &str) -> Option<SourceDtype> {
        match s {
            "F32" => Some(SourceDtype::F32),
            "F16" => Some(SourceDtype::F16),
            "BF16" => Some(SourceDtype::Bf16),
            _ => None,
        }
    }
}

/// Header entry of one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name as stored in the file.
    pub name: String,
    /// Element type.
    pub dtype: SourceDtype,
    /// Shape in safetensors (row-major, slowest first) order.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: Range<usize>,
}

impl TensorEntry {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A mapped safetensors file with its validated header.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    tensors: Vec<TensorEntry>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Map `path` and validate its header.
    pub fn open(path: &Path) -> Result<SafetensorsFile, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only and private to this process. Another process
        // truncating the file while we read it could fault; that is the documented caveat of
        // every mmap-based reader and is accepted for checkpoint files we only read.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let tensors = parse_header(&map).map_err(|(offset, msg)| SourceError::Safetensors {
            path: path.to_path_buf(),
            offset,
            msg,
        })?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in data-offset order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The bytes of a tensor of this file (zero-copy).
    pub fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        self.slice(entry.range.clone())
    }

    /// A byte range of the file; ranges come from a validated header.
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.map[range]
    }

    /// Tell the kernel we are done with a byte range so its pages can leave resident memory.
    /// Pages of a read-only file mapping are simply re-read if touched again.
    pub fn release(&self, range: Range<usize>) {
        let page = 4096;
        let start = range.start.div_ceil(page) * page;
        let end = range.end / page * page;
        if end > start {
            // SAFETY: DONTNEED on a read-only, file-backed, private mapping only drops clean
            // page-cache references; later reads fault the pages back in from the file.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }

    /// Ask the kernel to start reading a byte range ahead of its use (asynchronous
    /// read-ahead; a no-op for pages already in memory). Advisory: failures are ignored.
    pub fn will_need(&self, range: Range<usize>) {
        let page = 4096;
        let start = range.start / page * page;
        let end = range.end.min(self.map.len());
        if end > start {
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, start, end - start);
        }
    }
}

/// Parse and validate the header of a whole safetensors file image. Errors carry the byte
/// offset of the offending item and a message naming it.
pub fn parse_header(buf: &[u8]) -> Result<Vec<TensorEntry>, (u64, String)> {
    if buf.len() < 8 {
        return Err((
            0,
            format!(
                "file is {} bytes, too short for the 8-byte header length",
                buf.len()
            ),
        ));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let available = buf.len() as u64 - 8;
    if n > MAX_HEADER_LEN || n > available {
        return Err((
            0,
            format!("header length {n} exceeds the {available} bytes after it (truncated or not a safetensors file)"),
        ));
    }
    let header_end = 8 + n as usize;
    let json: serde_json::Value = serde_json::from_slice(&buf[8..header_end])
        .map_err(|e| (8, format!("header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| (8, "header is not a JSON object".to_string()))?;
    let data_len = buf.len() - header_end;
    let mut tensors = Vec::with_capacity(obj.len());
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: String| (8u64, format!("tensor '{name}': {what}"));
        let dtype_str = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("missing dtype".into()))?;
        let dtype = SourceDtype::parse(dtype_str).ok_or_else(|| {
            bad(format!(
                "dtype {dtype_str} is not supported (only F32, F16 and BF16 weights can be converted)"
            ))
        })?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("missing shape".into()))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape has a non-integer dimension".into()))?;
        if shape.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dimensions (at most {MAX_DIMS})",
                shape.len()
            )));
        }
        let offsets: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect())
            .ok_or_else(|| bad("data_offsets must be two integers".into()))?;
        let (begin, end) = (offsets[0], offsets[1]);
        let n_elements = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("element count overflows".into()))?;
        let expected = n_elements
            .checked_mul(dtype.size())
            .ok_or_else(|| bad("byte size overflows".into()))?;
        if end < begin || end > data_len as u64 {
            return Err((
                header_end as u64 + begin,
                format!(
                    "tensor '{name}': data_offsets [{begin}, {end}] outside the {data_len}-byte data section (file truncated?)"
                ),
            ));
        }
        if (end - begin) as usize != expected {
            return Err((
                header_end as u64 + begin,
                format!(
                    "tensor '{name}': {} bytes of data but shape {shape:?} of {} needs {expected}",
                    end - begin,
                    dtype.name()
                ),
            ));
        }
        tensors.push(TensorEntry {
            name: name.clone(),
            dtype,
            shape,
            range: header_end + begin as usize..header_end + end as usize,
        });
    }
    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    for pair in tensors.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err((
                pair[1].range.start as u64,
                format!("tensors '{}' and '{}' overlap", pair[0].name, pair[1].name),
            ));
        }
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_image(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_tensors_in_offset_order() {
        let h = r#"{"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}"#;
        let img = file_image(h, &[0u8; 8]);
        let t = parse_header(&img).unwrap();
        let base = 8 + h.len();
        assert_eq!(t[0].name, "a");
        assert_eq!(t[0].range, base..base + 4);
        assert_eq!(t[1].name, "b");
        assert_eq!(t[1].dtype, SourceDtype::F16);
        assert_eq!(t[1].shape, vec![2]);
    }

    #[test]
    fn rejects_truncated_data_with_offset() {
        let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let img = file_image(h, &[0u8; 8]);
        let (off, msg) = parse_header(&img).unwrap_err();
        assert_eq!(off, 8 + h.len() as u64);
        assert!(msg.contains("'w'") && msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn rejects_size_mismatch_overlap_and_dtype() {
        let h = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
        assert!(parse_header(&file_image(h, &[0; 16]))
            .unwrap_err()
            .1
            .contains("needs 12"));
        let h = r#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}"#;
        assert!(parse_header(&file_image(h, &[0; 12]))
            .unwrap_err()
            .1
            .contains("overlap"));
        let h = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        assert!(parse_header(&file_image(h, &[0; 8]))
            .unwrap_err()
            .1
            .contains("I64"));
    }

    #[test]
    fn rejects_huge_header_length_and_short_files() {
        let mut img = u64::MAX.to_le_bytes().to_vec();
        img.extend_from_slice(b"{}");
        assert!(parse_header(&img).unwrap_err().1.contains("exceeds"));
        assert!(parse_header(&[1, 2, 3])
            .unwrap_err()
            .1
            .contains("too short"));
        for cut in 0..40 {
            let h = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
            let img = file_image(h, &[0; 8]);
            if cut < img.len() {
                assert!(parse_header(&img[..cut]).is_err());
            }
        }
    }
}
