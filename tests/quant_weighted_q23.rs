//! The importance-weighted (imatrix) Q2_K and Q3_K quantizers against ggml itself:
//! fixtures/quant/weighted, written by scripts/gen_quant_golden_weighted.py with
//! `ggml_quantize_chunk(type, src, dst, 0, nrows, 256, imatrix)` (ggml's
//! `quantize_row_q2_K_impl` / `quantize_row_q3_K_impl`), over the edge-case rows of
//! manifest.json and six importance vectors. Every row must be byte-identical.

use std::path::PathBuf;

use qforge::gguf::GgmlType;
use qforge::quant::weighted::{quantize_weighted, takes_importance};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/quant/weighted")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn f32s(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Row kinds and importance-vector names from the manifest.
fn kinds_and_variants() -> (Vec<String>, Vec<String>) {
    let m: serde_json::Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    assert_eq!(m["llama_cpp_python"], "0.3.36");
    assert_eq!(m["row"], 256);
    let list = |k: &str| -> Vec<String> {
        m[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    (list("kinds"), list("variants"))
}

const TYPES: [(&str, GgmlType, usize); 2] =
    [("Q2_K", GgmlType::Q2K, 84), ("Q3_K", GgmlType::Q3K, 110)];

/// Rows whose bytes differ from ggml's for `ty`, as "NAME variant: row r (kind)" lines, and
/// the number of rows compared.
fn differences(name: &str, ty: GgmlType, bytes_per_row: usize) -> (Vec<String>, usize) {
    let (kinds, variants) = kinds_and_variants();
    assert_eq!(variants.len(), 6);
    let x = f32s("input.f32");
    assert_eq!(x.len(), kinds.len() * 256);
    let mut bad = Vec::new();
    let mut compared = 0;
    for v in &variants {
        let qw = f32s(&format!("imatrix.{v}.f32"));
        assert_eq!(qw.len(), 256, "imatrix.{v}.f32");
        let want = read(&format!("{name}.{v}.bin"));
        assert_eq!(want.len(), kinds.len() * bytes_per_row, "{name}.{v}.bin");
        let mut got = vec![0u8; want.len()];
        quantize_weighted(ty, &x, &qw, &mut got).unwrap();
        for (r, kind) in kinds.iter().enumerate() {
            let span = r * bytes_per_row..(r + 1) * bytes_per_row;
            if got[span.clone()] != want[span] {
                bad.push(format!("{name} {v}: row {r} ({kind})"));
            }
            compared += 1;
        }
    }
    (bad, compared)
}

#[test]
fn weighted_q2_k_equals_ggml() {
    let (name, ty, bpr) = TYPES[0];
    let (bad, n) = differences(name, ty, bpr);
    assert!(
        bad.is_empty(),
        "{} of {n} rows differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn weighted_q3_k_equals_ggml() {
    let (name, ty, bpr) = TYPES[1];
    let (bad, n) = differences(name, ty, bpr);
    assert!(
        bad.is_empty(),
        "{} of {n} rows differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn q2_k_and_q3_k_take_importance_and_it_changes_the_bytes() {
    let x = f32s("input.f32");
    let qw = f32s("imatrix.lognormal.f32");
    for (name, ty, bpr) in TYPES {
        assert!(takes_importance(ty), "{name}");
        // the weighted path is not the static one (so the tests above cannot pass by
        // ignoring the weights)
        let mut weighted = vec![0u8; x.len() / 256 * bpr];
        let mut plain = weighted.clone();
        quantize_weighted(ty, &x, &qw, &mut weighted).unwrap();
        qforge::quant::quantize(ty, &x, &mut plain).unwrap();
        assert_ne!(weighted, plain, "{name}");
        // an all-zero block is all zero bytes (kquants-imatrix §2.12)
        let mut out = vec![0xAAu8; bpr];
        quantize_weighted(ty, &[0f32; 256], &qw, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == 0), "{name} zero block: {out:?}");
        // rows that are not a whole number of super-blocks are refused
        assert!(quantize_weighted(ty, &x[..256], &qw[..128], &mut out).is_err());
    }
}
