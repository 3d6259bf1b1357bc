//! A checkpoint: one or more safetensors shards plus the folder's config, opened together.
//!
//! Shards come from `model.safetensors.index.json` when it exists (every listed shard must
//! exist, every indexed tensor must be found in the shard the index names, and no shard may
//! hold a tensor the index does not list); otherwise from `model*.safetensors` in the folder,
//! sorted by name. A single `.safetensors` path is accepted too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{HfConfig, SafetensorsFile, SourceDtype, SourceError};

/// One tensor of the checkpoint, with the shard it lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: SourceDtype,
    /// safetensors (row-major) shape.
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Absolute byte range in that file.
    pub range: std::ops::Range<usize>,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An opened checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The folder (or the single file) that was opened.
    pub path: PathBuf,
    /// `config.json`, when the checkpoint is a folder that has one.
    pub config: Option<HfConfig>,
    files: Vec<SafetensorsFile>,
    tensors: Vec<SourceTensor>,
}

fn err(path: &Path, msg: impl Into<String>) -> SourceError {
    SourceError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn list_names(names: &BTreeSet<String>, max: usize) -> String {
    let mut s: Vec<&str> = names.iter().take(max).map(|s| s.as_str()).collect();
    if names.len() > max {
        s.push("...");
    }
    s.join(", ")
}

impl Checkpoint {
    /// Open a model folder or a single `.safetensors` file.
    pub fn open(path: &Path) -> Result<Checkpoint, SourceError> {
        if path.is_file() {
            let file = SafetensorsFile::open(path)?;
            let mut ck = Checkpoint {
                path: path.to_path_buf(),
                config: None,
                files: vec![file],
                tensors: Vec::new(),
            };
            ck.collect_tensors(None)?;
            return Ok(ck);
        }
        if !path.is_dir() {
            return Err(err(path, "no such file or folder"));
        }
        let config_path = path.join("config.json");
        let config = if config_path.is_file() {
            Some(HfConfig::load(&config_path)?)
        } else {
            None
        };
        let index_path = path.join("model.safetensors.index.json");
        let (shard_names, index) = if index_path.is_file() {
            let (shards, map) = read_index(&index_path)?;
            (shards, Some(map))
        } else {
            (find_model_files(path)?, None)
        };
        let missing: BTreeSet<String> = shard_names
            .iter()
            .filter(|s| !path.join(s).is_file())
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(err(
                &index_path,
                format!(
                    "missing shard file(s) listed in the index: {}",
                    list_names(&missing, 8)
                ),
            ));
        }
        let files = shard_names
            .iter()
            .map(|s| SafetensorsFile::open(&path.join(s)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ck = Checkpoint {
            path: path.to_path_buf(),
            config,
            files,
            tensors: Vec::new(),
        };
        ck.collect_tensors(index.as_ref().map(|m| (&index_path, m)))?;
        Ok(ck)
    }

    fn collect_tensors(
        &mut self,
        index: Option<(&PathBuf, &BTreeMap<String, String>)>,
    ) -> Result<(), SourceError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (fi, file) in self.files.iter().enumerate() {
            for t in file.tensors() {
                if let Some(&other) = seen.get(&t.name) {
                    return Err(err(
                        file.path(),
                        format!(
                            "tensor '{}' is also in {}",
                            t.name,
                            self.files[other].path().display()
                        ),
                    ));
                }
                seen.insert(t.name.clone(), fi);
                self.tensors.push(SourceTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    file: fi,
                    range: t.range.clone(),
                });
            }
        }
        if let Some((index_path, map)) = index {
            let mut missing = BTreeSet::new();
            for (name, shard) in map {
                match seen.get(name) {
                    None => {
                        missing.insert(format!("{name} (in {shard})"));
                    }
                    Some(&fi) => {
                        let actual = self.files[fi]
                            .path()
                            .file_name()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        if &actual != shard {
                            return Err(err(
                                index_path,
                                format!(
                                    "tensor '{name}' is indexed in {shard} but found in {actual}"
                                ),
                            ));
                        }
                    }
                }
            }
            if !missing.is_empty() {
                return Err(err(
                    index_path,
                    format!(
                        "{} indexed tensor(s) not found in the shards: {}",
                        missing.len(),
                        list_names(&missing, 8)
                    ),
                ));
            }
            let extra: BTreeSet<String> = seen
                .keys()
                .filter(|n| !map.contains_key(*n))
                .cloned()
                .collect();
            if !extra.is_empty() {
                return Err(err(
                    index_path,
                    format!(
                        "{} tensor(s) in the shards are missing from the index: {}",
                        extra.len(),
                        list_names(&extra, 8)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every tensor, in shard order then data-offset order.
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    /// The shards.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Look a tensor up by name.
    pub fn tensor(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Raw bytes of a tensor (zero-copy from the map).
    pub fn bytes(&self, t: &SourceTensor) -> &[u8] {
        self.files[t.file].slice(t.range.clone())
    }

    /// Convert elements `[start, start + out.len())` of a tensor to f32 (exact for all
    /// source dtypes).
    pub fn read_f32(&self, t: &SourceTensor, start: usize, out: &mut [f32]) {
        let size = t.dtype.size();
        let bytes = &self.bytes(t)[start * size..(start + out.len()) * size];
        let ty = match t.dtype {
            SourceDtype::F32 => crate::gguf::GgmlType::F32,
            SourceDtype::F16 => crate::gguf::GgmlType::F16,
            SourceDtype::Bf16 => crate::gguf::GgmlType::Bf16,
        };
        crate::quant::dequantize(ty, bytes, out).expect("lengths match by construction");
    }

    /// Drop a finished tensor's pages from resident memory.
    pub fn release(&self, t: &SourceTensor) {
        self.files[t.file].release(t.range.clone());
    }

    /// Start reading elements `[start, end)` of a tensor ahead of their use.
    pub fn will_need(&self, t: &SourceTensor, start: usize, end: usize) {
        let size = t.dtype.size();
        let a = (t.range.start + start * size).min(t.range.end);
        let b = (t.range.start + end * size).min(t.range.end);
        self.files[t.file].will_need(a..b);
    }

    /// Drop the pages of a tensor's first `n_elements` elements from resident memory.
    pub fn release_prefix(&self, t: &SourceTensor, n_elements: usize) {
        let end = (t.range.start + n_elements * t.dtype.size()).min(t.range.end);
        self.files[t.file].release(t.range.start..end);
    }
}

/// Shard file names from an index, sorted, and the tensor -> shard map.
fn read_index(path: &Path) -> Result<(Vec<String>, BTreeMap<String, String>), SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| SourceError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| err(path, "no \"weight_map\" object"))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let shard = v
            .as_str()
            .ok_or_else(|| err(path, format!("weight_map['{k}'] is not a string")))?;
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            return Err(err(
                path,
                format!("weight_map['{k}'] = '{shard}' is not a plain file name"),
            ));
        }
        out.insert(k.clone(), shard.to_string());
    }
    let shards: BTreeSet<String> = out.values().cloned().collect();
    Ok((shards.into_iter().collect(), out))
}

fn find_model_files(dir: &Path) -> Result<Vec<String>, SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(err(
            dir,
            "no model*.safetensors files and no model.safetensors.index.json",
        ));
    }
    Ok(names)
}
