//! `convert --json`: the summary scripts read, with numbers that match the files.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn json_summary_matches_the_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.gguf");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-qwen2");
    let o = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args([
            "convert",
            fixture.to_str().unwrap(),
            "-t",
            "q8_0",
            "--json",
            "--quiet",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = qforge::gguf::GgufFile::open(&out).unwrap();
    assert_eq!(doc["tensors"].as_u64().unwrap() as usize, f.tensors().len());
    let padded: u64 = f
        .tensors()
        .iter()
        .map(|t| t.n_bytes().div_ceil(32) * 32)
        .sum();
    assert_eq!(doc["bytes_out"].as_u64().unwrap(), padded);
    let source: u64 = std::fs::metadata(fixture.join("model.safetensors"))
        .unwrap()
        .len();
    let bytes_in = doc["bytes_in"].as_u64().unwrap();
    assert!(
        bytes_in > 0 && bytes_in < source,
        "{bytes_in} of a {source}-byte file"
    );
    let seconds = doc["seconds"].as_f64().unwrap();
    let gbps = doc["gb_per_s"].as_f64().unwrap();
    assert!((gbps - bytes_in as f64 / seconds / 1e9).abs() < 1e-6 * gbps.max(1.0));
    assert!(doc["peak_rss_mib"].as_f64().unwrap() > 1.0);
}

/// A checkpoint big enough that converting it to Q4_K takes a while (a 4096 x 8192 F32 tensor).
fn big_safetensors(dir: &std::path::Path) -> PathBuf {
    use safetensors::tensor::{Dtype, TensorView};
    let n = 4096 * 8192;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..n)
        .flat_map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5).to_le_bytes()
        })
        .collect();
    let view = TensorView::new(Dtype::F32, vec![8192, 4096], &data).unwrap();
    let path = dir.join("big.safetensors");
    safetensors::serialize_to_file([("w", view)], &None, &path).unwrap();
    path
}

#[test]
fn a_killed_conversion_leaves_nothing_and_readers_never_see_a_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = big_safetensors(tmp.path());
    let out = tmp.path().join("out.gguf");
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args([
                "convert",
                src.to_str().unwrap(),
                "-t",
                "q4_k",
                "--quiet",
                "--threads",
                "1",
                "-o",
            ])
            .arg(&out)
            .spawn()
            .unwrap()
    };
    // killed midway: once its temporary file exists, SIGKILL
    let mut child = start();
    let temp_seen = (0..2000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        std::fs::read_dir(tmp.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        temp_seen,
        "the conversion finished before it could be killed"
    );
    assert!(
        !out.exists(),
        "a killed conversion left a file under the output name"
    );
    // a full run: while it writes, the output name never holds a file; at the end it does
    let mut child = start();
    let mut seen_partial = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success());
            break;
        }
        if out.exists() {
            // the name appears only by the final rename: the file must already be complete
            if qforge::gguf::GgufFile::open(&out).is_err() {
                seen_partial = true;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(!seen_partial);
    assert!(qforge::gguf::GgufFile::open(&out).is_ok());
}
