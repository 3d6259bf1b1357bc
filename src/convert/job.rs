//! One conversion as a request: input (a path or a model id in the local Hugging Face cache),
//! recipe, type overrides, tokenizer and importance-matrix choices and run options →
//! [`ConvertJob`] (the input opened and the plan made) → [`ConvertSummary`] once written.
//!
//! The CLI's `convert` and the Python `qforge.convert` are both this; the summary is what
//! `convert --json` prints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::plan::{plan_with_options, Input, Plan, PlanOptions};
use super::recipe::{Recipe, TypeOverrides};
use super::run::{execute, execute_split, RunOptions};
use super::ConvertError;
use crate::gguf::GgmlType;
use crate::source::{hf_cache, imatrix::Imatrix};
use crate::split::SplitLimit;

/// Everything that decides a conversion except the output path.
#[derive(Clone, Debug, Default)]
pub struct ConvertRequest {
    /// A model folder, a `.safetensors` file, a `.gguf` file, or a model id (`owner/name`) in
    /// the local Hugging Face cache (used when no such path exists).
    pub input: PathBuf,
    /// The output type or llama-quantize mixture; `None` keeps the source precision.
    pub recipe: Option<Recipe>,
    /// Every quantizable tensor gets the recipe's base type (no mixture).
    pub pure: bool,
    /// Type of `output.weight` (and of a tied token embedding).
    pub output_tensor_type: Option<GgmlType>,
    /// Type of `token_embd.weight`.
    pub token_embedding_type: Option<GgmlType>,
    /// `PATTERN=TYPE` specs (regex searched in the GGUF tensor name; the first match wins).
    pub tensor_types: Vec<String>,
    /// llama.cpp's pre-tokenizer name, instead of recognising it from tokenizer.json.
    pub pre_tokenizer: Option<String>,
    /// An importance matrix file (llama-imatrix's GGUF or legacy .dat).
    pub imatrix: Option<PathBuf>,
    /// Use only imatrix entries whose name contains one of these.
    pub include_weights: Vec<String>,
    /// Drop imatrix entries whose name contains one of these.
    pub exclude_weights: Vec<String>,
    /// Threads, progress bar, progress callback, cancel flag.
    pub run: RunOptions,
    /// Write a split set (shards cut at this limit, as `llama-gguf-split` writes them)
    /// instead of one file.
    pub split: Option<SplitLimit>,
}

/// What `convert --json` prints: the output path, tensor count, bytes of tensor data read and
/// written, wall time of the run, GB/s of source read, and the process's peak RSS (Linux).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertSummary {
    /// The output file (of a split set: its first shard, the one llama.cpp loads).
    pub output: String,
    /// Every shard of a split output, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<String>>,
    pub tensors: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub seconds: f64,
    pub gb_per_s: f64,
    pub peak_rss_mib: Option<f64>,
}

/// A planned conversion: the input opened and every output tensor's type, size and offset
/// known. [`ConvertJob::execute`] writes it.
pub struct ConvertJob {
    /// The input as opened (a model id resolved to its snapshot folder).
    pub input_path: PathBuf,
    pub input: Input,
    pub plan: Plan,
    run: RunOptions,
    split: Option<SplitLimit>,
}

impl std::fmt::Debug for ConvertJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertJob")
            .field("input_path", &self.input_path)
            .field("tensors", &self.plan.tensors.len())
            .field("run", &self.run)
            .finish()
    }
}

/// A path that exists is used as it is; `owner/name` otherwise names a model in the local
/// Hugging Face cache.
pub fn resolve_input(input: &Path) -> Result<PathBuf, ConvertError> {
    match input.to_str() {
        Some(s) if !input.exists() && hf_cache::looks_like_model_id(s) => {
            Ok(hf_cache::resolve_model_id(s, &hf_cache::cache_roots())?)
        }
        _ => Ok(input.to_path_buf()),
    }
}

impl ConvertRequest {
    /// A request for `input` with every choice at its default (source precision).
    pub fn new(input: impl Into<PathBuf>) -> ConvertRequest {
        ConvertRequest {
            input: input.into(),
            ..ConvertRequest::default()
        }
    }

    /// The type overrides, with the `PATTERN=TYPE` specs parsed.
    pub fn type_overrides(&self) -> Result<TypeOverrides, ConvertError> {
        let mut overrides = TypeOverrides {
            pure: self.pure,
            output: self.output_tensor_type,
            token_embd: self.token_embedding_type,
            patterns: Vec::new(),
        };
        for spec in &self.tensor_types {
            overrides
                .add_pattern(spec)
                .map_err(|e| ConvertError::Plan(format!("--tensor-type {e}")))?;
        }
        Ok(overrides)
    }

    /// The importance matrix, loaded and filtered, if one was asked for.
    pub fn load_imatrix(&self) -> Result<Option<Arc<Imatrix>>, ConvertError> {
        if !self.include_weights.is_empty() && !self.exclude_weights.is_empty() {
            return Err(ConvertError::Plan(
                "--include-weights and --exclude-weights cannot be used together".into(),
            ));
        }
        match &self.imatrix {
            None => Ok(None),
            Some(path) => {
                let mut m = Imatrix::load(path)?;
                m.filter(&self.include_weights, &self.exclude_weights);
                Ok(Some(Arc::new(m)))
            }
        }
    }

    /// Resolve and open the input, read the overrides and the importance matrix, and plan.
    pub fn plan(&self) -> Result<ConvertJob, ConvertError> {
        let input_path = resolve_input(&self.input)?;
        let input = Input::open(&input_path)?;
        let overrides = self.type_overrides()?;
        let opts = PlanOptions {
            pre_tokenizer: self.pre_tokenizer.clone(),
            imatrix: self.load_imatrix()?,
        };
        let plan = plan_with_options(&input, &input_path, self.recipe, &overrides, &opts)?;
        Ok(ConvertJob {
            input_path,
            input,
            plan,
            run: self.run.clone(),
            split: self.split,
        })
    }

    /// [`ConvertRequest::plan`], then [`ConvertJob::execute`].
    pub fn convert(&self, output: &Path) -> Result<ConvertSummary, ConvertError> {
        self.plan()?.execute(output)
    }
}

impl ConvertJob {
    /// Things the user should know about the plan (e.g. tensors an imatrix has no entry for).
    pub fn notes(&self) -> &[String] {
        &self.plan.notes
    }

    /// Whether the output uses qforge extension types (NF4), which llama.cpp cannot load.
    pub fn uses_extension_types(&self) -> bool {
        self.plan.tensors.iter().any(|t| t.ty.is_extension())
    }

    /// Write the planned file to `output` (atomically: nothing appears under that name unless
    /// the run completes) and summarise the run.
    ///
    /// With a split limit, `output` names the set: `model.gguf` (or `model`) gives shards
    /// `model-00001-of-0000N.gguf` …, all renamed into place only when every one is complete.
    pub fn execute(&self, output: &Path) -> Result<ConvertSummary, ConvertError> {
        let (report, shards) = match self.split {
            None => (execute(&self.plan, &self.input, output, &self.run)?, None),
            Some(limit) => {
                let prefix = split_prefix(output);
                let (report, paths) =
                    execute_split(&self.plan, &self.input, &prefix, limit, &self.run)?;
                (report, Some(paths))
            }
        };
        let bytes_in = source_bytes(&self.input);
        let output = shards
            .as_ref()
            .and_then(|s| s.first())
            .map_or(output, |p| p.as_path());
        Ok(ConvertSummary {
            output: output.display().to_string(),
            shards: shards.map(|s| s.iter().map(|p| p.display().to_string()).collect()),
            tensors: report.tensors,
            bytes_in,
            bytes_out: report.data_bytes,
            seconds: report.seconds,
            gb_per_s: bytes_in as f64 / report.seconds.max(1e-9) / 1e9,
            peak_rss_mib: peak_rss_mib(),
        })
    }
}

impl ConvertRequest {
    /// A GGUF input with no type keeps every tensor byte for byte: a split set is merged into
    /// one file, and with a split limit any GGUF file or set is (re-)split. Returns the opened
    /// input when the request is such a copy ([`ConvertRequest::copy_unchanged`] writes it),
    /// `None` when it is planned as a conversion.
    pub fn unchanged_gguf(&self) -> Result<Option<crate::gguf::GgufFile>, ConvertError> {
        if self.recipe.is_some() {
            return Ok(None);
        }
        let path = resolve_input(&self.input)?;
        if !super::plan::is_gguf_file(&path) {
            return Ok(None); // a checkpoint: planned (and opened) once, by `plan`
        }
        let file = crate::gguf::GgufFile::open_model(&path)?;
        Ok((file.is_split() || self.split.is_some()).then_some(file))
    }

    /// Write `file` (from [`ConvertRequest::unchanged_gguf`]) to `output` unchanged: merged
    /// into one file, or split at the request's limit (`output` then names the set as in
    /// [`ConvertJob::execute`]). Tensors are checked against their stored hashes on the way;
    /// nothing appears under the output names on failure.
    pub fn copy_unchanged(
        &self,
        file: &crate::gguf::GgufFile,
        output: &Path,
    ) -> Result<ConvertSummary, ConvertError> {
        if self.pure
            || self.output_tensor_type.is_some()
            || self.token_embedding_type.is_some()
            || !self.tensor_types.is_empty()
            || self.imatrix.is_some()
        {
            return Err(ConvertError::Plan(format!(
                "{}: without -t a GGUF input is merged or split with every tensor unchanged; \
                 type options need -t",
                self.input.display()
            )));
        }
        let start = std::time::Instant::now();
        let edit = |e| ConvertError::Copy(Box::new(e));
        let (first, shards) = match self.split {
            None => {
                crate::split::merge(file, output).map_err(edit)?;
                (output.to_path_buf(), None)
            }
            Some(limit) => {
                let paths =
                    crate::split::split(file, &split_prefix(output), limit).map_err(edit)?;
                (paths[0].clone(), Some(paths))
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let data: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
        Ok(ConvertSummary {
            output: first.display().to_string(),
            shards: shards.map(|s| s.iter().map(|p| p.display().to_string()).collect()),
            tensors: file.tensors().len(),
            bytes_in: data,
            bytes_out: data,
            seconds,
            gb_per_s: data as f64 / seconds.max(1e-9) / 1e9,
            peak_rss_mib: peak_rss_mib(),
        })
    }
}

/// The shard prefix for a split output named `output`: without its `.gguf` extension.
pub fn split_prefix(output: &Path) -> PathBuf {
    match output.extension() {
        Some(e) if e.eq_ignore_ascii_case("gguf") => output.with_extension(""),
        _ => output.to_path_buf(),
    }
}

/// Bytes of tensor data in the input (what a conversion reads).
pub fn source_bytes(input: &Input) -> u64 {
    match input {
        Input::Checkpoint(ck) => ck.tensors().iter().map(|t| t.range.len() as u64).sum(),
        Input::Gguf(g) => g.tensors().iter().map(|t| t.n_bytes()).sum(),
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
