//! qforge's reader and writer against gguf-py (llama.cpp's own Python implementation):
//! files written by gguf-py read identically, and qforge's writer output is byte-identical to
//! a committed file whose gguf-py reading is committed beside it.
//! Fixtures: scripts/gen_gguf_fixtures.py.

use std::path::PathBuf;

use qforge::gguf::{
    write_to_vec, Array, GgmlType, GgufFile, GgufHeader, Metadata, TensorSpec, Value,
};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gguf")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn scalar_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => Json::from(*x),
        Value::I8(x) => Json::from(*x),
        Value::U16(x) => Json::from(*x),
        Value::I16(x) => Json::from(*x),
        Value::U32(x) => Json::from(*x),
        Value::I32(x) => Json::from(*x),
        Value::U64(x) => Json::from(*x),
        Value::I64(x) => Json::from(*x),
        Value::Bool(x) => Json::from(*x),
        Value::String(s) => Json::from(s.as_str()),
        Value::F32(_) | Value::F64(_) | Value::Array(_) => Json::Null,
    }
}

fn float_bits(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::F32(x) => Some(vec![hex(&x.to_le_bytes())]),
        Value::F64(x) => Some(vec![hex(&x.to_le_bytes())]),
        Value::Array(Array::F32(a)) => Some(a.iter().map(|x| hex(&x.to_le_bytes())).collect()),
        Value::Array(Array::F64(a)) => Some(a.iter().map(|x| hex(&x.to_le_bytes())).collect()),
        _ => None,
    }
}

/// Compare a parsed file with gguf-py's reading of it.
fn assert_matches(file: &GgufFile, want: &Json, label: &str) {
    assert_eq!(
        file.version(),
        want["version"].as_u64().unwrap() as u32,
        "{label}"
    );
    assert_eq!(
        file.alignment(),
        want["alignment"].as_u64().unwrap(),
        "{label}"
    );
    let kv = want["kv"].as_array().unwrap();
    let got: Vec<(&str, &Value)> = file.metadata().iter().collect();
    assert_eq!(got.len(), kv.len(), "{label}: key count");
    for ((key, value), w) in got.iter().zip(kv) {
        assert_eq!(*key, w["key"].as_str().unwrap(), "{label}: key order");
        let ty = value.value_type().name();
        assert_eq!(ty, w["type"].as_str().unwrap(), "{label}: type of {key}");
        if let Some(bits) = float_bits(value) {
            let want_bits: Vec<String> = w["bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap().to_string())
                .collect();
            assert_eq!(bits, want_bits, "{label}: {key}");
            continue;
        }
        match value {
            Value::Array(a) => {
                assert_eq!(
                    a.element_type().name(),
                    w["element_type"].as_str().unwrap(),
                    "{label}: {key}"
                );
                let vals: Vec<Json> = (0..a.len())
                    .map(|i| scalar_json(&a.get(i).unwrap()))
                    .collect();
                assert_eq!(Json::from(vals), w["value"], "{label}: {key}");
            }
            v => assert_eq!(scalar_json(v), w["value"], "{label}: {key}"),
        }
    }
    let tensors = want["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), tensors.len(), "{label}");
    for (i, (t, w)) in file.tensors().iter().zip(tensors).enumerate() {
        assert_eq!(t.name, w["name"].as_str().unwrap(), "{label}");
        assert_eq!(
            t.ty.id() as u64,
            w["type"].as_u64().unwrap(),
            "{label}: {}",
            t.name
        );
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, shape, "{label}: {}", t.name);
        assert_eq!(
            t.offset,
            w["offset"].as_u64().unwrap(),
            "{label}: {}",
            t.name
        );
        assert_eq!(
            t.n_bytes(),
            w["n_bytes"].as_u64().unwrap(),
            "{label}: {}",
            t.name
        );
        assert_eq!(
            hex(&Sha256::digest(file.tensor_data(i))),
            w["sha256"].as_str().unwrap(),
            "{label}: {}",
            t.name
        );
    }
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
        let want: Json =
            serde_json::from_slice(&std::fs::read(p.with_extension("json")).unwrap()).unwrap();
        let file = GgufFile::open(&p).unwrap();
        assert_matches(&file, &want, &name);
        n += 1;
    }
    assert_eq!(n, 3, "expected the three gguf-py fixtures");
}

/// The file qforge writes for the writer-direction fixture (deterministic).
fn qforge_written() -> Vec<u8> {
    let mut m = Metadata::new();
    let items: Vec<(&str, Value)> = vec![
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
    ];
    for (k, v) in items {
        m.insert(k, v).unwrap();
    }
    let f32s: Vec<u8> = (0..24)
        .flat_map(|i| (i as f32 * 0.5 - 3.0).to_le_bytes())
        .collect();
    let f16s: Vec<u8> = (0..32)
        .flat_map(|i| half::f16::from_f32(i as f32 / 8.0).to_le_bytes())
        .collect();
    let q8: Vec<u8> = (0..2 * 34)
        .map(|i| if i % 34 < 2 { 0x20 } else { i as u8 })
        .collect();
    let tensors = vec![
        (
            TensorSpec {
                name: "a.f32".into(),
                dims: vec![8, 3],
                ty: GgmlType::F32,
            },
            &f32s[..],
        ),
        (
            TensorSpec {
                name: "b.f16".into(),
                dims: vec![16, 2],
                ty: GgmlType::F16,
            },
            &f16s[..],
        ),
        (
            TensorSpec {
                name: "c.q8_0".into(),
                dims: vec![64],
                ty: GgmlType::Q8_0,
            },
            &q8[..],
        ),
    ];
    write_to_vec(&m, &tensors, 64).unwrap()
}

#[test]
fn writer_output_is_byte_identical_to_the_committed_file_gguf_py_reads() {
    let bytes = qforge_written();
    let path = fixtures().join("qforge-written-a64.gguf");
    if std::env::var_os("QFORGE_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    assert_eq!(
        bytes,
        std::fs::read(&path).unwrap(),
        "writer output changed"
    );
    let want: Json =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    assert_matches(&GgufFile::open(&path).unwrap(), &want, "qforge-written");
    // and the in-memory parse agrees with the file parse
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!(&h, GgufFile::open(&path).unwrap().header());
}
