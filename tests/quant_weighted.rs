//! The importance-weighted (imatrix) quantizers against ggml itself: fixtures/quant/weighted,
//! written by scripts/gen_quant_golden_weighted.py with `ggml_quantize_chunk(type, …, imatrix)`
//! (what llama-quantize calls for a tensor with an imatrix entry) for every type that takes
//! weights, on edge-case rows and six importance vectors (log-normal, ones, sparse, some
//! zeros, tiny, huge). Every row must be byte-identical.

use std::path::PathBuf;

use qforge::gguf::GgmlType;
use qforge::quant::weighted::quantize_weighted;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/quant/weighted")
}

fn f32s(name: &str) -> Vec<f32> {
    std::fs::read(dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap()).unwrap()
}

/// Row kinds and importance-vector names from the manifest.
fn kinds_and_variants() -> (Vec<String>, Vec<String>) {
    let m = manifest();
    let list = |k: &str| -> Vec<String> {
        m[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    (list("kinds"), list("variants"))
}

/// Rows (by kind) whose bytes differ from ggml's for `ty` under every importance vector.
fn differences(name: &str, ty: GgmlType) -> Vec<String> {
    let (kinds, variants) = kinds_and_variants();
    let x = f32s("input.f32");
    assert_eq!(x.len(), kinds.len() * 256);
    assert_eq!(
        variants.len(),
        6,
        "importance vector variants in the manifest"
    );
    let mut bad = Vec::new();
    for v in &variants {
        let qw = f32s(&format!("imatrix.{v}.f32"));
        assert_eq!(qw.len(), 256, "imatrix.{v}.f32");
        let want = std::fs::read(dir().join(format!("{name}.{v}.bin"))).unwrap();
        assert_eq!(
            want.len() as u64,
            kinds.len() as u64 * ty.bytes_for(256).unwrap(),
            "{name}.{v}.bin"
        );
        let mut got = vec![0u8; want.len()];
        quantize_weighted(ty, &x, &qw, &mut got).unwrap();
        let per_row = want.len() / kinds.len();
        for (r, kind) in kinds.iter().enumerate() {
            if got[r * per_row..(r + 1) * per_row] != want[r * per_row..(r + 1) * per_row] {
                bad.push(format!("{name} {v}: row {r} ({kind})"));
            }
        }
    }
    bad
}

#[test]
fn weighted_quantizers_equal_ggml() {
    let mut bad = Vec::new();
    for (name, ty) in [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_K", GgmlType::Q4K),
        ("Q5_K", GgmlType::Q5K),
        ("Q6_K", GgmlType::Q6K),
        ("IQ4_NL", GgmlType::Iq4Nl),
        ("IQ4_XS", GgmlType::Iq4Xs),
    ] {
        bad.extend(differences(name, ty));
    }
    assert!(
        bad.is_empty(),
        "{} rows differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn weights_change_the_bytes_and_lengths_are_checked() {
    // the weighted path is not the static one (so the test above cannot pass by ignoring qw)
    let x = f32s("input.f32");
    let qw = f32s("imatrix.lognormal.f32");
    let mut weighted = vec![0u8; x.len() / 256 * 144];
    let mut plain = weighted.clone();
    quantize_weighted(GgmlType::Q4K, &x, &qw, &mut weighted).unwrap();
    qforge::quant::quantize(GgmlType::Q4K, &x, &mut plain).unwrap();
    assert_ne!(weighted, plain);
    // rows that are not a whole number of importance vectors are refused
    let mut out = vec![0u8; 144];
    assert!(quantize_weighted(GgmlType::Q4K, &x[..256], &qw[..128], &mut out).is_err());
    assert!(quantize_weighted(GgmlType::F16, &x[..256], &qw, &mut [0u8; 512]).is_err());
}
