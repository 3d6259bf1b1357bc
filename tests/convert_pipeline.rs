//! The conversion pipeline (workers claiming row chunks across tensors, an in-order writer,
//! hashers running behind it) with chunks far smaller than a tensor: output bytes equal the
//! one-thread, one-chunk-per-tensor run for every thread count, on models with row
//! permutations (Q/K), stacked experts, generated tensors and NF4_DQ state companions; each
//! stored hash is the SHA-256 of its tensor's bytes.

use std::path::Path;

use qforge::convert::{self, Input, RunOptions};
use qforge::gguf::{Array, GgufFile, Value};
use sha2::{Digest, Sha256};

fn run(model: &str, recipe: &str, threads: usize, chunk_elements: usize, out: &Path) -> Vec<u8> {
    let path = Path::new(model);
    let input = Input::open(path).unwrap();
    let plan = convert::plan(&input, path, Some(recipe.parse().unwrap())).unwrap();
    let opts = RunOptions {
        threads,
        chunk_elements,
        ..RunOptions::default()
    };
    convert::execute(&plan, &input, out, &opts).unwrap();
    std::fs::read(out).unwrap()
}

#[test]
fn small_chunks_and_any_thread_count_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let mut compared = 0;
    for model in [
        "fixtures/tiny-llama-spm",
        "fixtures/tiny-qwen3moe",
        "fixtures/tiny-phi3",
    ] {
        for recipe in ["f16", "q8_0", "q4_k_m", "nf4"] {
            let reference = run(model, recipe, 1, usize::MAX / 2, &out);
            for (threads, chunk) in [(1, 64), (2, 100), (3, 256), (8, 64), (8, 5000)] {
                let got = run(model, recipe, threads, chunk, &out);
                assert!(
                    got == reference,
                    "{model} {recipe}: {threads} threads, {chunk}-element chunks differ"
                );
                compared += 1;
            }
            // each stored hash is its tensor's SHA-256
            let f = GgufFile::open(&out).unwrap();
            let Some(Value::Array(Array::String(hashes))) =
                f.metadata().get(convert::KEY_TENSOR_SHA256)
            else {
                panic!("{model} {recipe}: no hashes")
            };
            assert_eq!(hashes.len(), f.tensors().len());
            for (i, h) in hashes.iter().enumerate() {
                let want: String = Sha256::digest(f.tensor_data(i))
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(h, &want, "{model} {recipe} tensor {i}");
            }
        }
    }
    assert_eq!(compared, 3 * 4 * 5);
}
