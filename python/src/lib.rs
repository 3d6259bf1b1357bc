//! The `qforge._qforge` Python extension: GGUF reading with numpy tensors, the block kernels
//! over numpy arrays, and the CLI entry point. Everything here converts types and errors;
//! the work is the qforge library's.

use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use qforge::gguf::{Array, GgmlType, GgufFile, Value};

mod convert;
mod errors;

/// A kernel or argument error of `quantize`/`dequantize`/`type_size`.
fn err(e: impl std::fmt::Display) -> PyErr {
    errors::QuantizationError::new_err(e.to_string())
}

fn parse_type(name: &str) -> PyResult<GgmlType> {
    qforge::convert::parse_ggml_type(name).map_err(err)
}

fn value_to_py(py: Python<'_>, v: &Value) -> PyResult<PyObject> {
    Ok(match v {
        Value::U8(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I8(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::U16(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I16(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::U32(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I32(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::U64(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::I64(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::F32(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::F64(x) => x.into_pyobject(py)?.into_any().unbind(),
        Value::Bool(x) => x.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(a) => match a {
            Array::U8(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::I8(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::U16(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::I16(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::U32(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::I32(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::U64(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::I64(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::F32(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::F64(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::Bool(x) => PyList::new(py, x)?.into_any().unbind(),
            Array::String(x) => PyList::new(py, x)?.into_any().unbind(),
        },
    })
}

/// A GGUF file, memory-mapped and checked by qforge's strict reader.
#[pyclass(frozen, module = "qforge")]
struct GGUFFile {
    file: GgufFile,
}

impl GGUFFile {
    fn index(&self, name: &str) -> PyResult<usize> {
        self.file
            .tensor_by_name(name)
            .map(|(i, _)| i)
            .ok_or_else(|| {
                pyo3::exceptions::PyKeyError::new_err(format!(
                    "{}: no tensor '{name}'",
                    self.file.path().display()
                ))
            })
    }

    /// numpy order: the slowest-varying dimension first (ggml's dims reversed); `()` for a
    /// tensor stored with no dimensions (one value), as gguf-py reads it.
    fn numpy_shape(&self, index: usize) -> Vec<usize> {
        let t = &self.file.tensors()[index];
        t.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

#[pymethods]
impl GGUFFile {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        Ok(GGUFFile {
            // the first shard of a split set opens the whole set, as `qforge inspect` does
            file: GgufFile::open_model_or_shard(&path).map_err(|e| errors::gguf(py, &e))?,
        })
    }

    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.file.path().to_path_buf()
    }

    /// The shard files of a split set opened from its first shard (empty for one file).
    #[getter]
    fn shards(&self) -> Vec<std::path::PathBuf> {
        self.file
            .shards()
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect()
    }

    #[getter]
    fn version(&self) -> u32 {
        self.file.version()
    }

    #[getter]
    fn alignment(&self) -> u64 {
        self.file.alignment()
    }

    /// The metadata as a dict of Python values (in file order).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.file.metadata().iter() {
            d.set_item(k, value_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// The GGUF value type of a key (`UINT32`, `STRING`, `ARRAY[STRING]`, ...).
    fn value_type(&self, key: &str) -> PyResult<String> {
        let v = self
            .file
            .metadata()
            .get(key)
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(key.to_string()))?;
        Ok(v.type_name().to_string())
    }

    /// One dict per tensor, in file order: name, type, shape (numpy order), n_bytes, offset
    /// (from the start of the data section).
    #[getter]
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for (i, t) in self.file.tensors().iter().enumerate() {
            let d = PyDict::new(py);
            d.set_item("name", &t.name)?;
            d.set_item("type", t.ty.name())?;
            d.set_item("shape", self.numpy_shape(i))?;
            d.set_item("n_bytes", t.n_bytes())?;
            d.set_item("offset", t.offset)?;
            list.append(d)?;
        }
        Ok(list)
    }

    fn __len__(&self) -> usize {
        self.file.tensors().len()
    }

    fn __contains__(&self, name: &str) -> bool {
        self.file.tensor_by_name(name).is_some()
    }

    /// The tensor's values, dequantized to float32 (SIMD kernels; NF4_DQ with its state
    /// tensor), shaped in numpy order.
    fn dequantize<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let i = self.index(name)?;
        let values = py
            .allow_threads(|| qforge::convert::dequantize_tensor(&self.file, i))
            .map_err(|e| errors::convert(py, &e))?;
        let shape = self.numpy_shape(i);
        Ok(PyArray1::from_vec(py, values).reshape(shape)?.into_any())
    }

    /// The tensor's stored bytes as a read-only uint8 view of the mapped file (no copy); the
    /// view keeps this file open.
    fn raw<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let this = slf.get();
        let i = this.index(name)?;
        let view = numpy::ndarray::ArrayView1::from(this.file.tensor_data(i));
        // SAFETY: the view points into the file's read-only mapping, which lives as long as
        // `slf`; the array holds `slf` as its base object, so the mapping outlives the array.
        let array = unsafe { PyArray1::borrow_from_array(&view, slf.clone().into_any()) };
        // SAFETY: clearing WRITEABLE on an array we just created, before anyone else sees it;
        // the mapping is read-only, so a write through the view would fault.
        unsafe {
            (*array.as_array_ptr()).flags &= !numpy::npyffi::NPY_ARRAY_WRITEABLE;
        }
        Ok(array)
    }

    /// Re-hash every tensor against the SHA-256 qforge stored: {"has_hashes", "hashed",
    /// "mismatched": [tensor names]}.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = py
            .allow_threads(|| qforge::convert::verify_hashes(&self.file))
            .map_err(|e| errors::convert(py, &e))?;
        let d = PyDict::new(py);
        d.set_item("has_hashes", report.has_hashes)?;
        d.set_item("hashed", report.hashed)?;
        let bad: Vec<&str> = report.mismatched.iter().map(|m| m.name.as_str()).collect();
        d.set_item("mismatched", bad)?;
        Ok(d)
    }

    /// The `qforge inspect --json` document as a dict.
    #[pyo3(signature = (full = false))]
    fn inspect<'py>(&self, py: Python<'py>, full: bool) -> PyResult<Bound<'py, PyAny>> {
        let doc = qforge::inspect::render_json(
            self.file.header(),
            qforge::inspect::InspectOptions {
                tensors: true,
                full,
            },
        );
        py.import("json")?.call_method1("loads", (doc.to_string(),))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "GGUFFile('{}', {} keys, {} tensors)",
            self.file.path().display(),
            self.file.metadata().iter().count(),
            self.file.tensors().len()
        )
    }
}

/// Quantize float32 values (a whole number of blocks) to `type` (e.g. "q4_k", "q8_0"),
/// byte-identical to ggml's quantizer; returns the blocks as a uint8 array.
#[pyfunction]
fn quantize<'py>(
    py: Python<'py>,
    values: PyReadonlyArrayDyn<'py, f32>,
    r#type: &str,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let ty = parse_type(r#type)?;
    let src = values
        .as_slice()
        .map_err(|_| err("quantize needs a C-contiguous float32 array"))?;
    let n = ty.bytes_for(src.len() as u64).ok_or_else(|| {
        err(format!(
            "{} values are not a whole number of {} blocks ({} values each)",
            src.len(),
            ty.name(),
            ty.block_size()
        ))
    })?;
    let mut out = vec![0u8; n as usize];
    py.allow_threads(|| qforge::quant::quantize(ty, src, &mut out))
        .map_err(err)?;
    Ok(PyArray1::from_vec(py, out))
}

/// Dequantize `type` blocks (a uint8 array) to float32 values.
#[pyfunction]
fn dequantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, u8>,
    r#type: &str,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let ty = parse_type(r#type)?;
    let src = data
        .as_slice()
        .map_err(|_| err("dequantize needs a contiguous uint8 array"))?;
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    if src.len() % ts != 0 {
        return Err(err(format!(
            "{} bytes are not a whole number of {} blocks ({ts} bytes each)",
            src.len(),
            ty.name()
        )));
    }
    let mut out = vec![0f32; src.len() / ts * bs];
    py.allow_threads(|| qforge::quant::dequantize(ty, src, &mut out))
        .map_err(err)?;
    Ok(PyArray1::from_vec(py, out))
}

/// (values per block, bytes per block) of a type.
#[pyfunction]
fn type_size(r#type: &str) -> PyResult<(u64, u64)> {
    let ty = parse_type(r#type)?;
    Ok((ty.block_size(), ty.type_size()))
}

/// Run the qforge command line with `args` (the first is the program name); returns the exit
/// code. Output goes to the process's stdout/stderr.
#[pyfunction]
fn run_cli(py: Python<'_>, args: Vec<String>) -> i32 {
    py.allow_threads(|| qforge::cli::main_with_args(args))
}

#[pymodule]
fn _qforge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GGUFFile>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(convert::convert, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(type_size, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    Ok(())
}
