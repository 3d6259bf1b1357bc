//! Importance-matrix files (`llama-imatrix` output) as llama-quantize reads them: the GGUF
//! format (`<name>.in_sum2` and `<name>.counts` tensors, `imatrix.*` keys) and the legacy
//! binary `.dat`, normalised to one importance value per column (per expert for 3-D expert
//! tensors), filtered by `--include-weights` / `--exclude-weights`. Every length is checked
//! against the bytes that remain before anything is allocated from it.

use std::collections::BTreeMap;
use std::path::Path;

use super::SourceError;
use crate::gguf::{GgmlType, GgufFile, Value};

/// Largest entry accepted (values per tensor; 2^28 floats = 1 GiB).
const MAX_VALUES: usize = 1 << 28;

/// A loaded importance matrix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// The path as given (llama-quantize stores it, truncated to 127 bytes).
    pub file: String,
    /// Calibration datasets named in the file.
    pub datasets: Vec<String>,
    /// Chunks the statistics were collected over (0 when the file does not say).
    pub chunk_count: u32,
    /// Per tensor name, the weights: `ne0` values per expert, experts one after another.
    pub entries: BTreeMap<String, Vec<f32>>,
}

fn bad(path: &Path, offset: u64, msg: impl Into<String>) -> SourceError {
    SourceError::Safetensors {
        path: path.to_path_buf(),
        offset,
        msg: msg.into(),
    }
}

impl Imatrix {
    /// Load `path`: a GGUF imatrix if it starts with the GGUF magic, else the legacy format.
    /// Values are normalised as llama-quantize does (sums / count per expert, 1.0 for an
    /// expert never hit; legacy values / ncall) and must be finite.
    pub fn load(path: &Path) -> Result<Imatrix, SourceError> {
        let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut m = if bytes.starts_with(b"GGUF") {
            Self::from_gguf(path)?
        } else {
            Self::from_legacy(&bytes, path)?
        };
        m.file = path.to_string_lossy().into_owned();
        for (name, values) in &m.entries {
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(bad(
                    path,
                    0,
                    format!("imatrix entry '{name}' contains the non-finite value {v}"),
                ));
            }
            if let Some(v) = values.iter().find(|&&v| v < 0.0) {
                return Err(bad(
                    path,
                    0,
                    format!("imatrix entry '{name}' contains the negative value {v} (a mean of squares cannot be)"),
                ));
            }
        }
        Ok(m)
    }

    fn from_gguf(path: &Path) -> Result<Imatrix, SourceError> {
        let g = GgufFile::open(path).map_err(|e| bad(path, 0, e.to_string()))?;
        let md = g.metadata();
        let datasets = match md.get("imatrix.datasets") {
            Some(Value::Array(crate::gguf::Array::String(v))) => Some(v.clone()),
            _ => None,
        };
        let chunk_count = match md.get("imatrix.chunk_count") {
            Some(Value::U32(v)) => Some(*v),
            _ => None,
        };
        let chunk_size = md.get("imatrix.chunk_size");
        let (Some(datasets), Some(chunk_count), Some(_)) = (datasets, chunk_count, chunk_size)
        else {
            return Err(bad(
                path,
                0,
                "missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)",
            ));
        };
        if g.tensors().is_empty() {
            return Err(bad(path, 0, "no data in file"));
        }
        let mut sums: BTreeMap<String, usize> = BTreeMap::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (i, t) in g.tensors().iter().enumerate() {
            if let Some(n) = t.name.strip_suffix(".in_sum2") {
                sums.insert(n.to_string(), i);
            } else if let Some(n) = t.name.strip_suffix(".counts") {
                counts.insert(n.to_string(), i);
            }
        }
        let f32s = |i: usize| -> Result<Vec<f32>, SourceError> {
            let t = &g.tensors()[i];
            if t.ty != GgmlType::F32 {
                return Err(bad(
                    path,
                    0,
                    format!("tensor '{}' must be F32, not {}", t.name, t.ty.name()),
                ));
            }
            Ok(g.tensor_data(i)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        };
        let mut entries = BTreeMap::new();
        for name in sums.keys().chain(counts.keys()) {
            let (Some(&si), Some(&ci)) = (sums.get(name), counts.get(name)) else {
                return Err(bad(
                    path,
                    0,
                    format!("mismatched sums and counts for '{name}'"),
                ));
            };
            if entries.contains_key(name) {
                continue;
            }
            let s = f32s(si)?;
            let c = f32s(ci)?;
            if c.is_empty() || s.len() % c.len() != 0 {
                return Err(bad(
                    path,
                    0,
                    format!(
                        "'{name}': {} sums do not split into {} experts",
                        s.len(),
                        c.len()
                    ),
                ));
            }
            let ne0 = s.len() / c.len();
            let mut w = vec![0f32; s.len()];
            for (j, &count) in c.iter().enumerate() {
                // counts are read through lround, as llama.cpp's loader does
                let count = count.round() as i64 as f32;
                for i in 0..ne0 {
                    w[j * ne0 + i] = if count > 0.0 {
                        s[j * ne0 + i] / count
                    } else {
                        1.0
                    };
                }
            }
            entries.insert(name.clone(), w);
        }
        Ok(Imatrix {
            file: String::new(),
            datasets,
            chunk_count,
            entries,
        })
    }

    fn from_legacy(bytes: &[u8], path: &Path) -> Result<Imatrix, SourceError> {
        let mut pos = 0usize;
        let i32_at = |pos: &mut usize, what: &str| -> Result<i32, SourceError> {
            let b = bytes.get(*pos..*pos + 4).ok_or_else(|| {
                bad(
                    path,
                    *pos as u64,
                    format!("truncated imatrix file: {what} needs 4 bytes"),
                )
            })?;
            *pos += 4;
            Ok(i32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let n_entries = i32_at(&mut pos, "the entry count")?;
        if n_entries < 1 {
            return Err(bad(
                path,
                0,
                "no data in file (neither GGUF nor a legacy imatrix)",
            ));
        }
        let mut entries = BTreeMap::new();
        for e in 0..n_entries {
            let at = pos as u64;
            let len = i32_at(&mut pos, "a name length")?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= bytes.len() - pos)
                .ok_or_else(|| bad(path, at, format!("entry {}: bad name length {len}", e + 1)))?;
            let name = String::from_utf8_lossy(&bytes[pos..pos + len]).into_owned();
            pos += len;
            let ncall = i32_at(&mut pos, "ncall")?;
            let at = pos as u64;
            let nval = i32_at(&mut pos, "the value count")?;
            let nval = usize::try_from(nval)
                .ok()
                .filter(|&n| (1..=MAX_VALUES).contains(&n) && n * 4 <= bytes.len() - pos)
                .ok_or_else(|| {
                    bad(
                        path,
                        at,
                        format!("entry '{name}': {nval} values do not fit in the file"),
                    )
                })?;
            let values: Vec<f32> = bytes[pos..pos + 4 * nval]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .map(|v| if ncall > 0 { v / ncall as f32 } else { v })
                .collect();
            pos += 4 * nval;
            entries.insert(name, values);
        }
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if pos < bytes.len() {
            if let Ok(n) = i32_at(&mut pos, "the chunk count") {
                chunk_count = n.max(0) as u32;
                if let Ok(len) = i32_at(&mut pos, "the dataset length") {
                    if let Some(d) = usize::try_from(len)
                        .ok()
                        .filter(|&l| l > 0)
                        .and_then(|l| bytes.get(pos..pos + l))
                    {
                        // a C string: up to the first NUL
                        let d = d.split(|&b| b == 0).next().unwrap_or(d);
                        datasets.push(String::from_utf8_lossy(d).into_owned());
                    }
                }
            }
        }
        Ok(Imatrix {
            file: String::new(),
            datasets,
            chunk_count,
            entries,
        })
    }

    /// llama-quantize's `--exclude-weights` then `--include-weights` (substring matches on the
    /// entry names; both at once is a usage error the caller reports).
    pub fn filter(&mut self, include: &[String], exclude: &[String]) {
        if !exclude.is_empty() {
            self.entries
                .retain(|name, _| !exclude.iter().any(|x| name.contains(x.as_str())));
        }
        if !include.is_empty() {
            self.entries
                .retain(|name, _| include.iter().any(|x| name.contains(x.as_str())));
        }
    }

    /// The keys llama-quantize adds when it uses an imatrix.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let trunc = |s: &str| -> String {
            let mut end = s.len().min(127);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        let mut v = vec![(
            "quantize.imatrix.file".to_string(),
            Value::String(trunc(&self.file)),
        )];
        if let Some(d) = self.datasets.first() {
            v.push(("quantize.imatrix.dataset".into(), Value::String(trunc(d))));
        }
        v.push((
            "quantize.imatrix.entries_count".into(),
            Value::U32(self.entries.len() as u32),
        ));
        if self.chunk_count > 0 {
            v.push((
                "quantize.imatrix.chunks_count".into(),
                Value::U32(self.chunk_count),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        if let Some((chunks, ds)) = trailer {
            b.extend(chunks.to_le_bytes());
            b.extend((ds.len() as i32).to_le_bytes());
            b.extend(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_values_are_divided_by_ncall() {
        let b = legacy(
            &[("blk.0.attn_q.weight", 4, &[8.0, 2.0]), ("x", 0, &[3.0])],
            Some((10, "data.txt")),
        );
        let m = Imatrix::from_legacy(&b, Path::new("m.dat")).unwrap();
        assert_eq!(m.entries["blk.0.attn_q.weight"], vec![2.0, 0.5]);
        assert_eq!(m.entries["x"], vec![3.0]);
        assert_eq!(
            (m.chunk_count, m.datasets.clone()),
            (10, vec!["data.txt".into()])
        );
        let no_trailer = legacy(&[("x", 2, &[3.0])], None);
        let m = Imatrix::from_legacy(&no_trailer, Path::new("m.dat")).unwrap();
        assert_eq!((m.chunk_count, m.datasets.len()), (0, 0));
    }

    #[test]
    fn legacy_truncation_and_bad_lengths_are_named_errors() {
        let b = legacy(&[("blk.0.attn_q.weight", 4, &[8.0, 2.0])], None);
        for cut in 1..b.len() {
            let e = Imatrix::from_legacy(&b[..cut], Path::new("m.dat")).unwrap_err();
            assert!(e.to_string().contains("m.dat"), "{e}");
        }
        let mut huge = b.clone();
        let at = 4 + 4 + "blk.0.attn_q.weight".len() + 4;
        huge[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        let e = Imatrix::from_legacy(&huge, Path::new("m.dat")).unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
        assert!(Imatrix::from_legacy(&0i32.to_le_bytes(), Path::new("m.dat")).is_err());
    }

    #[test]
    fn filters_are_substring_matches() {
        let mut m = Imatrix::default();
        for n in [
            "blk.0.attn_q.weight",
            "blk.0.ffn_down.weight",
            "blk.1.ffn_down.weight",
        ] {
            m.entries.insert(n.into(), vec![1.0]);
        }
        let mut a = m.clone();
        a.filter(&[], &["ffn_down".into()]);
        assert_eq!(a.entries.len(), 1);
        let mut b = m.clone();
        b.filter(&["blk.1.".into()], &[]);
        assert_eq!(
            b.entries.keys().collect::<Vec<_>>(),
            ["blk.1.ffn_down.weight"]
        );
        m.file = "x".repeat(200);
        let md = m.metadata();
        assert_eq!(md[0].1, Value::String("x".repeat(127)));
        assert_eq!(
            md[1],
            ("quantize.imatrix.entries_count".into(), Value::U32(3))
        );
    }
}
