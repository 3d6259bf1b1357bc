//! qforge's reader and writer against gguf-py (llama.cpp's own Python implementation), both
//! ways. Fixtures and the Python side: scripts/gen_gguf_fixtures.py.
//!
//! * gguf-py → qforge: files written by gguf-py's GGUFWriter read exactly as gguf-py's
//!   GGUFReader reads them (the committed JSON).
//! * qforge → gguf-py: the writer's output is byte-identical to committed files, and gguf-py's
//!   committed reading of those files equals what qforge meant to write (built here from the
//!   writer's input, not from qforge's reader).
//! * `QFORGE_GGUF_EXPORT=DIR cargo test --test gguf_interop` also writes every case with its
//!   intended JSON to DIR, for `python3 scripts/gen_gguf_fixtures.py --check DIR`.

use std::path::{Path, PathBuf};

use qforge::gguf::{
    encode_header, write_to_vec, Array, GgmlType, GgufFile, GgufHeader, Metadata, TensorSpec,
    Value, GGML_TYPES,
};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gguf")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn scalar_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        // an f32 widened exactly, as numpy's tolist() does
        Value::F32(x) => json!(*x as f64),
        Value::F64(x) => json!(x),
        Value::Array(_) => unreachable!("arrays hold scalars"),
    }
}

/// One metadata entry in the form of gguf-py's `describe()`.
fn kv_json(key: &str, v: &Value) -> Json {
    let mut e = json!({"key": key, "type": v.value_type().name()});
    let bits = |b: Vec<String>| Json::from(b);
    match v {
        Value::Array(a) => {
            e["element_type"] = json!(a.element_type().name());
            e["value"] = (0..a.len())
                .map(|i| scalar_json(&a.get(i).unwrap()))
                .collect();
            match a {
                Array::F32(x) => {
                    e["bits"] = bits(x.iter().map(|f| hex(&f.to_le_bytes())).collect())
                }
                Array::F64(x) => {
                    e["bits"] = bits(x.iter().map(|f| hex(&f.to_le_bytes())).collect())
                }
                _ => {}
            }
        }
        v => {
            e["value"] = scalar_json(v);
            match v {
                Value::F32(f) => e["bits"] = bits(vec![hex(&f.to_le_bytes())]),
                Value::F64(f) => e["bits"] = bits(vec![hex(&f.to_le_bytes())]),
                _ => {}
            }
        }
    }
    e
}

struct TensorJson<'a> {
    name: &'a str,
    ty: GgmlType,
    dims: &'a [u64],
    offset: u64,
    data: &'a [u8],
}

fn describe<'a>(
    version: u32,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
    kvs: impl Iterator<Item = (&'a str, &'a Value)>,
    tensors: impl Iterator<Item = TensorJson<'a>>,
) -> Json {
    json!({
        "version": version,
        "alignment": alignment,
        "data_offset": data_offset,
        "file_size": file_size,
        "kv": kvs.map(|(k, v)| kv_json(k, v)).collect::<Vec<_>>(),
        "tensors": tensors.map(|t| json!({
            "name": t.name,
            "type": t.ty.id(),
            "shape": t.dims,
            "offset": t.offset,
            "n_bytes": t.data.len(),
            "sha256": hex(&Sha256::digest(t.data)),
        })).collect::<Vec<_>>(),
    })
}

/// The document as qforge's reader sees a file.
fn describe_read(f: &GgufFile) -> Json {
    describe(
        f.version(),
        f.alignment(),
        f.data_offset(),
        f.file_size(),
        f.metadata().iter(),
        f.tensors().iter().enumerate().map(|(i, t)| TensorJson {
            name: &t.name,
            ty: t.ty,
            dims: &t.dims,
            offset: t.offset,
            data: f.tensor_data(i),
        }),
    )
}

/// A file qforge writes, and its description computed from the writer's input alone.
struct Case {
    name: &'static str,
    metadata: Metadata,
    tensors: Vec<(TensorSpec, Vec<u8>)>,
    alignment: u64,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let t: Vec<(TensorSpec, &[u8])> = self
            .tensors
            .iter()
            .map(|(s, d)| (s.clone(), &d[..]))
            .collect();
        write_to_vec(&self.metadata, &t, self.alignment).unwrap()
    }

    /// What the file should say: the metadata (plus `general.alignment` appended when not 32,
    /// as the spec says), tensors at the running padded sum of their sizes.
    fn intended(&self) -> Json {
        let specs: Vec<TensorSpec> = self.tensors.iter().map(|(s, _)| s.clone()).collect();
        let header_len = encode_header(&self.metadata, &specs, self.alignment)
            .unwrap()
            .bytes
            .len() as u64;
        let pad = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offsets = Vec::new();
        let mut off = 0;
        for (_, d) in &self.tensors {
            offsets.push(off);
            off += pad(d.len() as u64);
        }
        let align = Value::U32(self.alignment as u32);
        let extra = (self.alignment != 32 && self.metadata.get("general.alignment").is_none())
            .then_some(("general.alignment", &align));
        describe(
            3,
            self.alignment,
            header_len,
            header_len + off,
            self.metadata.iter().chain(extra),
            self.tensors
                .iter()
                .zip(&offsets)
                .map(|((s, d), &offset)| TensorJson {
                    name: &s.name,
                    ty: s.ty,
                    dims: &s.dims,
                    offset,
                    data: d,
                }),
        )
    }
}

fn meta(items: Vec<(&str, Value)>) -> Metadata {
    let mut m = Metadata::new();
    for (k, v) in items {
        m.insert(k, v).unwrap();
    }
    m
}

fn spec(name: &str, dims: &[u64], ty: GgmlType) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
    }
}

/// Deterministic filler bytes for a tensor (container tests do not need real weights).
fn filler(s: &TensorSpec, seed: u8) -> Vec<u8> {
    let n = s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize;
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

/// Committed golden file: every value type and an array of each, F32/F16/Q8_0 tensors,
/// alignment 64.
fn case_a64() -> Case {
    let metadata = meta(vec![
        ("general.architecture", Value::String("llama".into())),
        ("t.u8", Value::U8(7)),
        ("t.i8", Value::I8(-7)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-2)),
        ("t.u32", Value::U32(123456789)),
        ("t.i32", Value::I32(-123456789)),
        ("t.f32", Value::F32(-0.25)),
        ("t.bool", Value::Bool(false)),
        ("t.string", Value::String("qforge ✓ \u{2581}x".into())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(1e-300)),
        ("t.arr.u8", Value::Array(Array::U8(vec![0, 128, 255]))),
        ("t.arr.i8", Value::Array(Array::I8(vec![-128, 127]))),
        ("t.arr.u16", Value::Array(Array::U16(vec![1, 2]))),
        ("t.arr.i16", Value::Array(Array::I16(vec![-1]))),
        ("t.arr.u32", Value::Array(Array::U32(vec![9, 8, 7]))),
        ("t.arr.i32", Value::Array(Array::I32(vec![1, 4, 6]))),
        ("t.arr.f32", Value::Array(Array::F32(vec![1.5, -2.25]))),
        ("t.arr.bool", Value::Array(Array::Bool(vec![false, true]))),
        (
            "t.arr.string",
            Value::Array(Array::String(vec!["x y".into(), "".into(), "日本".into()])),
        ),
        ("t.arr.u64", Value::Array(Array::U64(vec![1 << 40]))),
        ("t.arr.i64", Value::Array(Array::I64(vec![-(1 << 40)]))),
        ("t.arr.f64", Value::Array(Array::F64(vec![0.1, 0.2]))),
    ]);
    let f32s: Vec<u8> = (0..24)
        .flat_map(|i| (i as f32 * 0.5 - 3.0).to_le_bytes())
        .collect();
    let f16s: Vec<u8> = (0..32)
        .flat_map(|i| half::f16::from_f32(i as f32 / 8.0).to_le_bytes())
        .collect();
    let q8: Vec<u8> = (0..2 * 34)
        .map(|i| if i % 34 < 2 { 0x20 } else { i as u8 })
        .collect();
    Case {
        name: "qforge-written-a64",
        metadata,
        tensors: vec![
            (spec("a.f32", &[8, 3], GgmlType::F32), f32s),
            (spec("b.f16", &[16, 2], GgmlType::F16), f16s),
            (spec("c.q8_0", &[64], GgmlType::Q8_0), q8),
        ],
        alignment: 64,
    }
}

/// Committed golden file: edge values (empty arrays and strings, extreme floats, non-ASCII
/// keys), a scalar tensor (n_dims 0), a zero-element tensor, four dimensions with trailing 1s,
/// the integer and K-quant types, default alignment (no `general.alignment` key).
fn case_a32() -> Case {
    let metadata = meta(vec![
        ("general.architecture", Value::String("llama".into())),
        ("edge.empty.u8", Value::Array(Array::U8(vec![]))),
        ("edge.empty.string", Value::Array(Array::String(vec![]))),
        ("edge.empty.f64", Value::Array(Array::F64(vec![]))),
        ("edge.string.empty", Value::String(String::new())),
        ("edge.ключ.日本", Value::String("😀 tab\there".into())),
        ("edge.f32.subnormal", Value::F32(f32::from_bits(1))),
        ("edge.f32.neg_zero", Value::F32(-0.0)),
        ("edge.f32.max", Value::F32(f32::MAX)),
        ("edge.f64.max", Value::F64(f64::MAX)),
        ("edge.f64.min_positive", Value::F64(f64::MIN_POSITIVE)),
        ("edge.bool.true", Value::Bool(true)),
        ("edge.i32.min", Value::I32(i32::MIN)),
        ("edge.u16.zero", Value::U16(0)),
        (
            "edge.arr.f32",
            Value::Array(Array::F32(vec![-0.0, f32::MIN_POSITIVE, 1e-45, 65504.0])),
        ),
    ]);
    let specs = [
        spec("scalar", &[], GgmlType::F32),
        spec("zero", &[0, 3], GgmlType::F16),
        spec("i8", &[5], GgmlType::I8),
        spec("i16", &[3], GgmlType::I16),
        spec("i32", &[2, 2], GgmlType::I32),
        spec("i64", &[1], GgmlType::I64),
        spec("f64", &[2], GgmlType::F64),
        spec("bf16", &[4, 1, 1, 2], GgmlType::Bf16),
        spec("q4_k", &[256], GgmlType::Q4K),
        spec("q6_k", &[256, 1], GgmlType::Q6K),
        spec("iq4_nl", &[32], GgmlType::Iq4Nl),
    ];
    Case {
        name: "qforge-written-a32",
        metadata,
        tensors: specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), filler(s, i as u8)))
            .collect(),
        alignment: 32,
    }
}

/// Not committed (export only): one tensor of every ggml type qforge knows, alignment 1 and
/// 4096. Q8_1 is left out: gguf-py 0.19 sizes its blocks as 40 bytes, ggml as 36 (it is a
/// dot-product intermediate that never appears in files).
fn export_cases() -> Vec<Case> {
    let tensors = || -> Vec<(TensorSpec, Vec<u8>)> {
        GGML_TYPES
            .iter()
            .filter(|&&t| t != GgmlType::Q8_1)
            .enumerate()
            .map(|(i, &t)| {
                let s = spec(
                    &format!("t{i}.{}", t.name().to_lowercase()),
                    &[t.block_size() * 2, 3],
                    t,
                );
                let d = filler(&s, i as u8);
                (s, d)
            })
            .collect()
    };
    let metadata = meta(vec![(
        "general.architecture",
        Value::String("llama".into()),
    )]);
    vec![
        Case {
            name: "export-all-types-a1",
            metadata: metadata.clone(),
            tensors: tensors(),
            alignment: 1,
        },
        Case {
            name: "export-all-types-a4096",
            metadata,
            tensors: tensors(),
            alignment: 4096,
        },
    ]
}

fn read_json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The document without float `value`s: serde_json's default float parser is not correctly
/// rounded (it can land one ulp off Python's shortest representation), and the `bits` beside
/// them state every float exactly.
fn exact(mut doc: Json) -> Json {
    for kv in doc["kv"].as_array_mut().unwrap() {
        if kv.get("bits").is_some() {
            kv.as_object_mut().unwrap().remove("value");
        }
    }
    doc
}

#[test]
fn reads_gguf_py_files_exactly_as_gguf_py_does() {
    let mut n = 0;
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("gguf-py-") && name.ends_with(".gguf")) {
            continue;
        }
        let want = read_json(&p.with_extension("json"));
        let file = GgufFile::open(&p).unwrap();
        assert_eq!(exact(describe_read(&file)), exact(want), "{name}");
        n += 1;
    }
    assert_eq!(n, 3, "expected the three gguf-py fixtures");
}

#[test]
fn gguf_py_fixtures_cover_every_value_type_and_the_tensor_types() {
    let f = GgufFile::open(&fixtures().join("gguf-py-all-types-a64.gguf")).unwrap();
    let mut scalars = std::collections::BTreeSet::new();
    let mut arrays = std::collections::BTreeSet::new();
    for (_, v) in f.metadata().iter() {
        match v {
            Value::Array(a) => arrays.insert(a.element_type().name()),
            v => scalars.insert(v.value_type().name()),
        };
    }
    assert_eq!(scalars.len(), 12, "{scalars:?}");
    assert_eq!(arrays.len(), 12, "{arrays:?}");
    let types: Vec<String> = f.tensors().iter().map(|t| t.ty.name()).collect();
    for t in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K"] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }
    assert_eq!(f.alignment(), 64);
}

#[test]
fn writer_output_is_byte_identical_to_committed_files_gguf_py_reads_as_intended() {
    for case in [case_a64(), case_a32()] {
        let bytes = case.bytes();
        let path = fixtures().join(format!("{}.gguf", case.name));
        if std::env::var_os("QFORGE_BLESS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        assert!(
            bytes == std::fs::read(&path).unwrap(),
            "{}: writer output changed",
            case.name
        );
        let gguf_py = read_json(&path.with_extension("json"));
        assert_eq!(
            exact(case.intended()),
            exact(gguf_py.clone()),
            "{}: gguf-py's reading",
            case.name
        );
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(
            exact(describe_read(&file)),
            exact(gguf_py),
            "{}: qforge's reading",
            case.name
        );
        assert_eq!(&GgufHeader::parse(&bytes).unwrap(), file.header());
    }
}

#[test]
fn export_for_the_gguf_py_check() {
    let mut cases = vec![case_a64(), case_a32()];
    cases.extend(export_cases());
    let out = std::env::var_os("QFORGE_GGUF_EXPORT").map(PathBuf::from);
    for case in &cases {
        let bytes = case.bytes();
        // what qforge reads back is what it meant to write, whatever gguf-py says
        let h = GgufHeader::parse(&bytes).unwrap();
        let want = case.intended();
        assert_eq!(want["data_offset"], h.data_offset, "{}", case.name);
        assert_eq!(want["file_size"], bytes.len(), "{}", case.name);
        if let Some(dir) = &out {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{}.gguf", case.name)), &bytes).unwrap();
            std::fs::write(
                dir.join(format!("{}.json", case.name)),
                serde_json::to_string_pretty(&want).unwrap(),
            )
            .unwrap();
        }
    }
}
