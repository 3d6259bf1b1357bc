//! A stable-Rust stand-in for the cargo-fuzz targets: random byte strings and random
//! mutations of valid files go through the GGUF and safetensors parsers and both inspect
//! formatters. Nothing may panic; accepted tensors must lie inside the input.

use proptest::prelude::*;
use qforge::gguf::GgufHeader;
use qforge::inspect::{render_json, render_text, InspectOptions};

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gguf");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

fn exercise(data: &[u8]) {
    if let Ok(h) = GgufHeader::parse(data) {
        let opts = InspectOptions {
            tensors: true,
            full: false,
        };
        let _ = render_text(&h, opts);
        let _ = render_json(&h, opts);
        for t in &h.tensors {
            let start = (h.data_offset + t.offset) as usize;
            assert!(start + t.n_bytes() as usize <= data.len());
        }
    }
    if let Ok(tensors) = qforge::source::safetensors::parse_header(data) {
        for t in tensors {
            assert!(t.range.end <= data.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&data);
    }

    #[test]
    fn mutated_valid_files_never_panic(
        seed in 0usize..4,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        exercise(&data);
    }
}
