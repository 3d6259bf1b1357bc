//! The ggml golden vectors in fixtures/quant/kquant (written by scripts/gen_quant_golden.py
//! through llama-cpp-python 0.3.36's libggml), shared by the K-quant test files.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/quant/kquant")
}

pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The row kinds of the edge-row fixtures, in file order; the manifest must be the one made
/// with the pinned llama.cpp and 256-value rows.
pub fn kinds() -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    assert_eq!(m["llama_cpp_python"], "0.3.36");
    assert_eq!(m["row"], 256);
    m["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}
