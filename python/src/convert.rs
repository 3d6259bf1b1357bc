//! `qforge.convert`: the library's `ConvertRequest` run on a worker thread while the calling
//! thread waits without the GIL, watching for Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use qforge::convert::{parse_ggml_type, ConvertError, ConvertRequest, ConvertSummary, RunOptions};
use qforge::gguf::GgmlType;
use qforge::split::SplitLimit;

use crate::errors;

/// How often the waiting thread looks for Ctrl-C.
const POLL: Duration = Duration::from_millis(50);

/// `progress=`: a bool (draw the CLI's bar on a terminal) or a callable.
pub enum Progress {
    Bar(bool),
    Callback(Py<PyAny>),
}

impl<'py> FromPyObject<'py> for Progress {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = ob.downcast::<PyBool>() {
            Ok(Progress::Bar(b.is_true()))
        } else if ob.is_callable() {
            Ok(Progress::Callback(ob.clone().unbind()))
        } else {
            Err(PyTypeError::new_err(format!(
                "progress must be True, False or a callable (done_bytes, total_bytes), not {}",
                ob.get_type().name()?
            )))
        }
    }
}

/// `split_max_size=`: bytes as an int, or a size string like "500M" / "4G".
pub struct SplitSize(u64);

impl<'py> FromPyObject<'py> for SplitSize {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(n) = ob.extract::<u64>() {
            if n == 0 {
                return Err(PyValueError::new_err("split_max_size must be positive"));
            }
            return Ok(SplitSize(n));
        }
        let text: String = ob.extract().map_err(|_| {
            PyTypeError::new_err("split_max_size must be a number of bytes or a string like \"4G\"")
        })?;
        qforge::split::parse_size(&text)
            .map(SplitSize)
            .map_err(|e| PyValueError::new_err(format!("split_max_size {e}")))
    }
}

fn ggml_type(what: &str, name: Option<&str>) -> PyResult<Option<GgmlType>> {
    name.map(|n| {
        parse_ggml_type(n).map_err(|e| errors::ConversionError::new_err(format!("{what}: {e}")))
    })
    .transpose()
}

fn summary_dict<'py>(py: Python<'py>, s: &ConvertSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("output", &s.output)?;
    if let Some(shards) = &s.shards {
        d.set_item("shards", shards)?;
    }
    d.set_item("tensors", s.tensors)?;
    d.set_item("bytes_in", s.bytes_in)?;
    d.set_item("bytes_out", s.bytes_out)?;
    d.set_item("seconds", s.seconds)?;
    d.set_item("gb_per_s", s.gb_per_s)?;
    d.set_item("peak_rss_mib", s.peak_rss_mib)?;
    Ok(d)
}

/// Convert `src` (a model folder, a .safetensors file, a .gguf file, or a model id in the
/// local Hugging Face cache) to the GGUF file `dst`, as `qforge convert` does, and return the
/// summary `qforge convert --json` prints.
///
/// `type` is the recipe (f16, q8_0, q4_k_m, ...; None keeps the source precision).
/// `overrides` maps a regex (searched in GGUF tensor names) to a type, first match wins, like
/// `--tensor-type`; `pure`, `output_tensor_type`, `token_embedding_type`, `pre_tokenizer`,
/// `imatrix`, `include_weights`, `exclude_weights` and `threads` are the CLI's options.
/// `progress`: True draws the CLI's progress bar when stderr is a terminal, False nothing, a
/// callable is called as `progress(done_bytes, total_bytes)` after every written chunk;
/// returning False (exactly) cancels with `qforge.Cancelled`, raising cancels and re-raises.
/// Ctrl-C stops the run with KeyboardInterrupt. A run that does not finish leaves nothing
/// under `dst` (and no temporary file next to it).
#[pyfunction]
#[pyo3(signature = (src, dst, r#type = None, *, threads = None, imatrix = None,
    include_weights = None, exclude_weights = None, overrides = None, pure = false,
    output_tensor_type = None, token_embedding_type = None, pre_tokenizer = None,
    split_max_size = None, split_max_tensors = None, progress = Progress::Bar(true)),
    text_signature = "(src, dst, type=None, *, threads=None, imatrix=None, include_weights=None, \
        exclude_weights=None, overrides=None, pure=False, output_tensor_type=None, \
        token_embedding_type=None, pre_tokenizer=None, split_max_size=None, \
        split_max_tensors=None, progress=True)")]
#[allow(clippy::too_many_arguments)]
pub fn convert<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    r#type: Option<&str>,
    threads: Option<usize>,
    imatrix: Option<PathBuf>,
    include_weights: Option<Vec<String>>,
    exclude_weights: Option<Vec<String>>,
    overrides: Option<Bound<'py, PyDict>>,
    pure: bool,
    output_tensor_type: Option<&str>,
    token_embedding_type: Option<&str>,
    pre_tokenizer: Option<String>,
    split_max_size: Option<SplitSize>,
    split_max_tensors: Option<usize>,
    progress: Progress,
) -> PyResult<Bound<'py, PyDict>> {
    let split = match (split_max_size, split_max_tensors) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "give split_max_size or split_max_tensors, not both",
            ))
        }
        (_, Some(0)) => {
            return Err(PyValueError::new_err(
                "split_max_tensors must be at least 1",
            ))
        }
        (_, Some(n)) => Some(SplitLimit::Tensors(n)),
        (Some(SplitSize(b)), None) => Some(SplitLimit::Bytes(b)),
        (None, None) => None,
    };
    let recipe = r#type
        .map(|t| t.parse().map_err(errors::ConversionError::new_err))
        .transpose()?;
    let mut tensor_types = Vec::new();
    if let Some(d) = overrides {
        for (k, v) in d.iter() {
            let (k, v): (String, String) = (k.extract()?, v.extract()?);
            tensor_types.push(format!("{k}={v}"));
        }
    }
    let cancel = Arc::new(AtomicBool::new(false));
    // What the callback raised, and whether it returned False.
    let raised: Arc<Mutex<Option<PyErr>>> = Arc::new(Mutex::new(None));
    let refused = Arc::new(AtomicBool::new(false));
    let (bar, on_progress) = match progress {
        Progress::Bar(b) => (b, None),
        Progress::Callback(f) => {
            let (raised, refused) = (raised.clone(), refused.clone());
            let cb: Arc<qforge::convert::ProgressFn> = Arc::new(move |done: u64, total: u64| {
                Python::with_gil(|py| match f.call1(py, (done, total)) {
                    Ok(r) => {
                        let stop = r.bind(py).downcast::<PyBool>().is_ok_and(|b| !b.is_true());
                        if stop {
                            refused.store(true, Ordering::Relaxed);
                        }
                        !stop
                    }
                    Err(e) => {
                        if let Ok(mut slot) = raised.lock() {
                            slot.get_or_insert(e);
                        }
                        false
                    }
                })
            });
            (false, Some(cb))
        }
    };
    let request = ConvertRequest {
        split,
        input: src,
        recipe,
        pure,
        output_tensor_type: ggml_type("output_tensor_type", output_tensor_type)?,
        token_embedding_type: ggml_type("token_embedding_type", token_embedding_type)?,
        tensor_types,
        pre_tokenizer,
        imatrix,
        include_weights: include_weights.unwrap_or_default(),
        exclude_weights: exclude_weights.unwrap_or_default(),
        run: RunOptions {
            threads: threads.unwrap_or(0),
            progress: bar,
            on_progress,
            cancel: Some(cancel.clone()),
            ..RunOptions::default()
        },
    };
    let (tx, mut rx) = mpsc::channel::<Result<ConvertSummary, ConvertError>>();
    let out = dst.clone();
    let worker = std::thread::Builder::new()
        .name("qforge-convert".into())
        .spawn(move || {
            let result = request.unchanged_gguf().and_then(|copy| match copy {
                // a GGUF input without a type: merged or re-split unchanged
                Some(file) => request.copy_unchanged(&file, &out),
                None => request.plan().and_then(|job| {
                    if bar {
                        for note in job.notes() {
                            eprintln!("note: {note}");
                        }
                    }
                    job.execute(&out)
                }),
            });
            let _ = tx.send(result);
        })
        .map_err(|e| errors::QforgeError::new_err(format!("cannot start a thread: {e}")))?;
    // Wait without the GIL (the callback needs it), looking for Ctrl-C between waits.
    let mut interrupted: Option<PyErr> = None;
    let result = loop {
        let (back, got) = py.allow_threads(move || {
            let got = rx.recv_timeout(POLL);
            (rx, got)
        });
        rx = back;
        match got {
            Ok(r) => break Some(r),
            Err(RecvTimeoutError::Disconnected) => break None,
            Err(RecvTimeoutError::Timeout) => {
                if interrupted.is_none() {
                    if let Err(e) = py.check_signals() {
                        cancel.store(true, Ordering::Relaxed);
                        interrupted = Some(e);
                    }
                }
            }
        }
    };
    let joined = py.allow_threads(move || worker.join());
    if let Some(e) = interrupted {
        if let Some(Ok(summary)) = &result {
            // finished before the flag was seen: an interrupted call leaves no file either
            match &summary.shards {
                Some(shards) => shards.iter().for_each(|p| {
                    let _ = std::fs::remove_file(p);
                }),
                None => {
                    let _ = std::fs::remove_file(&dst);
                }
            }
        }
        return Err(e);
    }
    let result = match (result, joined) {
        (Some(r), _) => r,
        (None, _) => {
            return Err(errors::QforgeError::new_err(
                "the conversion thread stopped without a result (it panicked)",
            ))
        }
    };
    match result {
        Ok(summary) => summary_dict(py, &summary),
        Err(ConvertError::Cancelled) => {
            let raised = raised.lock().ok().and_then(|mut s| s.take());
            match raised {
                Some(e) => Err(e),
                None if refused.load(Ordering::Relaxed) => Err(errors::Cancelled::new_err(
                    "cancelled: the progress callback returned False",
                )),
                None => Err(errors::convert(py, &ConvertError::Cancelled)),
            }
        }
        Err(e) => Err(errors::convert(py, &e)),
    }
}
