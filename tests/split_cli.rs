//! `qforge split` through the binary: shard names, split keys, tensors unchanged and in order,
//! per-shard hashes that verify, and failures that leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qforge::gguf::{GgufFile, Value};

fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("run qforge")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn convert(ty: &str, out: &Path) {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-qwen2");
    let o = qforge(&["convert", s(&fixture), "-t", ty, "--quiet", "-o", s(out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `qforge split SRC -o PREFIX LIMIT...`
fn split_cmd(src: &str, prefix: &str, limit: &[&str]) -> Output {
    let mut args = vec!["split", src, "-o", prefix];
    args.extend_from_slice(limit);
    qforge(&args)
}

fn stdout_paths(o: &Output) -> Vec<PathBuf> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The shards together hold exactly the input's tensors, in order, byte for byte; the first
/// shard holds the input's metadata; every shard has consistent split keys and verifies.
fn check_shards(src: &GgufFile, shards: &[PathBuf]) -> Vec<usize> {
    let n = shards.len();
    let mut counts = Vec::new();
    let mut next = 0;
    for (i, p) in shards.iter().enumerate() {
        let expected = format!("-{:05}-of-{:05}.gguf", i + 1, n);
        assert!(
            s(p).ends_with(&expected),
            "{} is not shard {i}",
            p.display()
        );
        let f = GgufFile::open(p).unwrap();
        let m = f.metadata();
        assert_eq!(m.get("split.no"), Some(&Value::U16(i as u16)));
        assert_eq!(m.get("split.count"), Some(&Value::U16(n as u16)));
        assert_eq!(
            m.get("split.tensors.count"),
            Some(&Value::I32(src.tensors().len() as i32))
        );
        if i == 0 {
            for (k, v) in src.metadata().iter() {
                if k != "qforge.tensor_sha256" {
                    assert_eq!(m.get(k), Some(v), "{k} differs in the first shard");
                }
            }
        } else {
            assert_eq!(m.get("general.architecture"), None);
        }
        assert!(!f.tensors().is_empty(), "shard {i} is empty");
        for (j, t) in f.tensors().iter().enumerate() {
            let want = &src.tensors()[next];
            assert_eq!((&t.name, &t.dims, t.ty), (&want.name, &want.dims, want.ty));
            assert_eq!(f.tensor_data(j), src.tensor_data(next), "{}", t.name);
            next += 1;
        }
        counts.push(f.tensors().len());
        let v = qforge(&["verify", s(p)]);
        assert!(
            v.status.success(),
            "shard {i}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
    }
    assert_eq!(next, src.tensors().len());
    counts
}

#[test]
fn split_by_tensor_count_cuts_like_gguf_split() {
    let tmp = tempfile::tempdir().unwrap();
    let src_path = tmp.path().join("m.gguf");
    convert("q8_0", &src_path);
    let src = GgufFile::open(&src_path).unwrap();
    let total = src.tensors().len();
    let o = split_cmd(
        s(&src_path),
        s(&tmp.path().join("out/m")),
        &["--max-tensors", "7"],
    );
    // the output directory does not exist: a clear error and nothing written
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(s(&tmp.path().join("out"))), "{err}");
    std::fs::create_dir(tmp.path().join("out")).unwrap();
    let o = split_cmd(
        s(&src_path),
        s(&tmp.path().join("out/m")),
        &["--max-tensors", "7"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shards = stdout_paths(&o);
    assert_eq!(shards.len(), total.div_ceil(7));
    let counts = check_shards(&src, &shards);
    assert!(counts[..counts.len() - 1].iter().all(|&c| c == 7));
    assert_eq!(counts.iter().sum::<usize>(), total);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("out")).unwrap().count(),
        shards.len()
    );
}

#[test]
fn split_by_size_keeps_each_shard_under_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let src_path = tmp.path().join("m.gguf");
    convert("f16", &src_path);
    let src = GgufFile::open(&src_path).unwrap();
    let align = src.alignment();
    let padded: Vec<u64> = src
        .tensors()
        .iter()
        .map(|t| t.n_bytes().div_ceil(align) * align)
        .collect();
    let biggest = *padded.iter().max().unwrap();
    let limit = biggest * 2;
    let o = split_cmd(
        s(&src_path),
        s(&tmp.path().join("m")),
        &["--max-size", &limit.to_string()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shards = stdout_paths(&o);
    assert!(shards.len() > 1);
    let counts = check_shards(&src, &shards);
    // each shard is under the limit, and adding the next shard's first tensor would pass it
    let mut start = 0;
    for (i, &c) in counts.iter().enumerate() {
        let bytes: u64 = padded[start..start + c].iter().sum();
        assert!(bytes <= limit, "shard {i}: {bytes} > {limit}");
        if i + 1 < counts.len() {
            assert!(bytes + padded[start + c] > limit, "shard {i} was cut early");
        }
        start += c;
    }
}

#[test]
fn split_refuses_bad_limits_and_damaged_input() {
    let tmp = tempfile::tempdir().unwrap();
    let src_path = tmp.path().join("m.gguf");
    convert("q8_0", &src_path);
    let prefix = tmp.path().join("x");
    for args in [
        vec!["--max-tensors", "0"],
        vec!["--max-size", "0M"],
        vec!["--max-size", "3X"],
        vec![],
    ] {
        let o = split_cmd(s(&src_path), s(&prefix), &args);
        assert!(!o.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--max-"), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "{args:?} wrote a file"
        );
    }
    // flip one byte of the last tensor: the split fails on it, naming it, and removes the
    // shards it had already written
    let src = GgufFile::open(&src_path).unwrap();
    let last = src.tensors().last().unwrap().clone();
    let at = src.data_offset() + last.offset;
    drop(src);
    let mut bytes = std::fs::read(&src_path).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(&src_path, &bytes).unwrap();
    let o = split_cmd(s(&src_path), s(&prefix), &["--max-tensors", "5"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&last.name), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "m.gguf")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_shard_is_not_split_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src_path = tmp.path().join("m.gguf");
    convert("q8_0", &src_path);
    let o = split_cmd(
        s(&src_path),
        s(&tmp.path().join("m")),
        &["--max-tensors", "10"],
    );
    assert!(o.status.success());
    let shards = stdout_paths(&o);
    let first = shards[0].clone();
    let o = split_cmd(
        s(&first),
        s(&tmp.path().join("again")),
        &["--max-tensors", "3"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("shard"));
    // nor is a later shard converted as if it were the whole model (the first shard stands
    // for the whole set: tests/split_input_cli.rs)
    let o = qforge(&[
        "convert",
        s(&shards[1]),
        "-t",
        "q8_0",
        "-o",
        s(&tmp.path().join("c.gguf")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("shard") && err.contains(s(&shards[1])),
        "{err}"
    );
    assert!(!tmp.path().join("c.gguf").exists());
}
