//! qforge's typed errors as Python exceptions: one base, `QforgeError`, and one subclass per
//! kind. The message is always the library error's own text (what the CLI prints after
//! `error: `).

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple, PyType};

use qforge::convert::ConvertError;
use qforge::edit::EditError;
use qforge::gguf::{ErrorKind, GgufError};
use qforge::source::SourceError as LibSourceError;

create_exception!(
    qforge,
    QforgeError,
    PyException,
    "Any qforge failure; the message names the file, tensor or key (and the byte offset where \
     one is known), as the command line prints it."
);
create_exception!(
    qforge,
    GGUFFormatError,
    QforgeError,
    "A malformed or hostile GGUF file: the check that failed. `path` is the file (or None) and \
     `offset` the byte offset of the item that failed (or None); the message names both."
);
create_exception!(
    qforge,
    SourceError,
    QforgeError,
    "A checkpoint problem: safetensors header, config.json, tokenizer files, the architecture, \
     the Hugging Face cache, an importance-matrix file."
);
create_exception!(
    qforge,
    ConversionError,
    QforgeError,
    "The conversion cannot be planned or run as asked: bad recipe, type or override, a \
     non-finite value in a tensor, a write that went wrong other than by I/O."
);
create_exception!(
    qforge,
    QuantizationError,
    QforgeError,
    "A block kernel refused its input (unknown type, not a whole number of blocks, non-finite \
     values)."
);
create_exception!(
    qforge,
    Cancelled,
    QforgeError,
    "`convert`'s progress callback returned False; nothing was left under the output name."
);

static OS_ERROR: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// `QforgeOSError(QforgeError, OSError)`: an I/O failure (a file missing or unreadable, an
/// output location unwritable or full). Made at import time because it has two bases.
pub fn os_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    OS_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(
                py,
                [
                    py.get_type::<QforgeError>().into_any(),
                    py.get_type::<PyOSError>().into_any(),
                ],
            )?;
            let dict = PyDict::new(py);
            dict.set_item("__module__", "qforge")?;
            dict.set_item(
                "__doc__",
                "An I/O failure (a file missing or unreadable, an output location unwritable \
                 or full); both a QforgeError and an OSError. `errno` is set where the system \
                 gave one; the message is qforge's (it names the file).",
            )?;
            let ty = py
                .get_type::<PyType>()
                .call1(("QforgeOSError", bases, dict))?;
            Ok(ty.downcast_into::<PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

/// Register the exception classes in the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("QforgeError", py.get_type::<QforgeError>())?;
    m.add("GGUFFormatError", py.get_type::<GGUFFormatError>())?;
    m.add("SourceError", py.get_type::<SourceError>())?;
    m.add("ConversionError", py.get_type::<ConversionError>())?;
    m.add("QuantizationError", py.get_type::<QuantizationError>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    m.add("QforgeOSError", os_error_type(py)?)?;
    Ok(())
}

fn os_error(py: Python<'_>, msg: String, errno: Option<i32>) -> PyErr {
    let ty = match os_error_type(py) {
        Ok(t) => t.clone(),
        Err(e) => return e,
    };
    let err = PyErr::from_type(ty, (msg,));
    if let Some(n) = errno {
        // `errno` alone (without `strerror`/`filename`) leaves str() as the message
        if let Err(e) = err.value(py).setattr("errno", n) {
            return e;
        }
    }
    err
}

/// A GGUF reader error: I/O → `QforgeOSError`, anything else → `GGUFFormatError` carrying
/// `path` and `offset`.
pub fn gguf(py: Python<'_>, e: &GgufError) -> PyErr {
    if let ErrorKind::Io(_) = e.kind {
        return os_error(py, e.to_string(), None);
    }
    let err = GGUFFormatError::new_err(e.to_string());
    let v = err.value(py);
    let set = v
        .setattr("path", e.path.clone())
        .and_then(|_| v.setattr("offset", e.offset));
    match set {
        Ok(()) => err,
        Err(e) => e,
    }
}

/// A checkpoint error: I/O → `QforgeOSError` (with errno), anything else → `SourceError`.
pub fn source(py: Python<'_>, e: &LibSourceError) -> PyErr {
    match e {
        LibSourceError::Io { source, .. } => os_error(py, e.to_string(), source.raw_os_error()),
        _ => SourceError::new_err(e.to_string()),
    }
}

/// Any conversion error, by kind.
pub fn convert(py: Python<'_>, e: &ConvertError) -> PyErr {
    match e {
        ConvertError::Source(s) => source(py, s),
        ConvertError::Arch(_) => SourceError::new_err(e.to_string()),
        ConvertError::Gguf(g) => gguf(py, g),
        ConvertError::Output { error, .. } if matches!(error.kind, ErrorKind::Io(_)) => {
            os_error(py, e.to_string(), None)
        }
        ConvertError::Plan(_) | ConvertError::NonFinite { .. } | ConvertError::Output { .. } => {
            ConversionError::new_err(e.to_string())
        }
        ConvertError::Quant { .. } => QuantizationError::new_err(e.to_string()),
        ConvertError::Cancelled => Cancelled::new_err(e.to_string()),
        ConvertError::Copy(c) => match c.as_ref() {
            EditError::Gguf { error, .. } if matches!(error.kind, ErrorKind::Io(_)) => {
                os_error(py, e.to_string(), None)
            }
            EditError::Gguf { .. } => GGUFFormatError::new_err(e.to_string()),
            _ => ConversionError::new_err(e.to_string()),
        },
        _ => QforgeError::new_err(e.to_string()),
    }
}
