//! `qforge convert --split-max-tensors/--split-max-size`: a conversion written straight into a
//! split set equals converting to one file and splitting it with `qforge split` (whose shards
//! llama.cpp loads, see the interop suite), shard for shard and byte for byte; a GGUF file or
//! set given without `-t` is re-split unchanged; merging the set back (convert FIRST -o OUT)
//! gives the one-file conversion byte for byte; a cancelled or refused split leaves nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("run qforge")
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The files in `dir` whose names start with `stem-`, sorted.
fn shards(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{stem}-"))
        })
        .collect();
    v.sort();
    v
}

fn assert_same_set(a: &[PathBuf], b: &[PathBuf]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    assert!(
        a.len() >= 2,
        "the limits in these tests make several shards"
    );
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            x.file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit_once('-')
                .unwrap()
                .1,
            y.file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit_once('-')
                .unwrap()
                .1
        );
        assert!(
            std::fs::read(x).unwrap() == std::fs::read(y).unwrap(),
            "{} differs from {}",
            x.display(),
            y.display()
        );
    }
}

#[test]
fn converting_into_shards_equals_converting_then_splitting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (model, ty, limit) in [
        ("tiny-qwen2", "q8_0", ["--max-tensors", "7"]),
        ("tiny-llama-spm", "q4_k_m", ["--max-size", "200K"]),
        ("tiny-qwen3moe", "f16", ["--max-tensors", "5"]),
    ] {
        let whole = d.join(format!("{model}-{ty}.gguf"));
        ok(qforge(&[
            "convert",
            s(&fixture(model)),
            "-t",
            ty,
            "-q",
            "-o",
            s(&whole),
        ]));
        let split_prefix = d.join(format!("split-{model}"));
        ok(qforge(&[
            "split",
            s(&whole),
            "-o",
            s(&split_prefix),
            limit[0],
            limit[1],
        ]));
        let direct = d.join(format!("direct-{model}.gguf"));
        let flag = format!("--split-{}", &limit[0][2..]);
        let o = ok(qforge(&[
            "convert",
            s(&fixture(model)),
            "-t",
            ty,
            "--json",
            "-q",
            &flag,
            limit[1],
            "-o",
            s(&direct),
        ]));
        let direct_shards = shards(d, &format!("direct-{model}"));
        assert_same_set(&shards(d, &format!("split-{model}")), &direct_shards);
        // the summary names the first shard and lists them all
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["output"], s(&direct_shards[0]));
        let listed: Vec<&str> = doc["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let expected: Vec<&str> = direct_shards.iter().map(|p| s(p)).collect();
        assert_eq!(listed, expected);
        // merged back: the one-file conversion, byte for byte
        let merged = d.join(format!("merged-{model}.gguf"));
        ok(qforge(&[
            "convert",
            s(&direct_shards[0]),
            "-q",
            "-o",
            s(&merged),
        ]));
        assert!(std::fs::read(&merged).unwrap() == std::fs::read(&whole).unwrap());
    }
}

#[test]
fn a_gguf_file_or_set_is_resplit_unchanged_without_a_type() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let whole = d.join("whole.gguf");
    ok(qforge(&[
        "convert",
        s(&fixture("tiny-qwen3")),
        "-t",
        "q4_k_m",
        "-q",
        "-o",
        s(&whole),
    ]));
    ok(qforge(&[
        "split",
        s(&whole),
        "-o",
        s(&d.join("by12")),
        "--max-tensors",
        "12",
    ]));
    ok(qforge(&[
        "split",
        s(&whole),
        "-o",
        s(&d.join("by5")),
        "--max-tensors",
        "5",
    ]));
    // a file re-split
    ok(qforge(&[
        "convert",
        s(&whole),
        "--split-max-tensors",
        "12",
        "-q",
        "-o",
        s(&d.join("f")),
    ]));
    assert_same_set(&shards(d, "by12"), &shards(d, "f"));
    // a set of 5-tensor shards re-split into 12-tensor shards
    let first5 = shards(d, "by5")[0].clone();
    ok(qforge(&[
        "convert",
        s(&first5),
        "--split-max-tensors",
        "12",
        "-q",
        "-o",
        s(&d.join("g.gguf")),
    ]));
    assert_same_set(&shards(d, "by12"), &shards(d, "g"));
}

#[test]
fn bad_split_options_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let model = fixture("tiny-qwen2");
    for (args, says) in [
        (
            vec!["--split-max-tensors", "0"],
            "--split-max-tensors must be at least 1",
        ),
        (
            vec!["--split-max-size", "12X"],
            "--split-max-size \"12X\": units are K, M or G",
        ),
        (
            vec!["--split-max-size", "0M"],
            "--split-max-size \"0M\": must be a positive size",
        ),
        (
            vec!["--split-max-size", "1M", "--split-max-tensors", "3"],
            "cannot be used with",
        ),
    ] {
        let mut a = vec!["convert", s(&model), "-t", "q8_0", "-o", s(&out)];
        a.extend(args);
        let o = qforge(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{a:?}: {err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn a_cancelled_split_conversion_leaves_no_shard_and_no_staging_file() {
    use qforge::convert::{self, ConvertError, Input, RunOptions};
    use qforge::split::SplitLimit;
    let model = fixture("tiny-qwen2");
    let input = Input::open(&model).unwrap();
    let plan = convert::plan(&input, &model, Some("q8_0".parse().unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        threads: 2,
        chunk_elements: 256,
        // cancel once the first shards are complete and the last is being written
        on_progress: Some(Arc::new(move |done, total| done < total * 9 / 10)),
        ..RunOptions::default()
    };
    let prefix = dir.path().join("m");
    let err =
        convert::execute_split(&plan, &input, &prefix, SplitLimit::Tensors(4), &opts).unwrap_err();
    assert!(matches!(err, ConvertError::Cancelled), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // the same run not cancelled writes the set
    let opts = RunOptions {
        threads: 2,
        ..RunOptions::default()
    };
    let (report, paths) =
        convert::execute_split(&plan, &input, &prefix, SplitLimit::Tensors(4), &opts).unwrap();
    assert_eq!(report.tensors, plan.tensors.len());
    assert_eq!(paths.len(), plan.tensors.len().div_ceil(4));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), paths.len());
}

#[test]
fn merging_a_damaged_shard_names_that_shard_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let whole = d.join("w.gguf");
    ok(qforge(&[
        "convert",
        s(&fixture("tiny-qwen2")),
        "-t",
        "q8_0",
        "-q",
        "-o",
        s(&whole),
    ]));
    ok(qforge(&[
        "split",
        s(&whole),
        "-o",
        s(&d.join("m")),
        "--max-tensors",
        "10",
    ]));
    let set = shards(d, "m");
    assert!(set.len() >= 3);
    let mut bytes = std::fs::read(&set[1]).unwrap();
    let at = bytes.len() - 100; // inside the shard's last tensor
    bytes[at] ^= 0x40;
    std::fs::write(&set[1], bytes).unwrap();
    let merged = d.join("merged.gguf");
    let o = qforge(&["convert", s(&set[0]), "-o", s(&merged)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("{}: tensor '", s(&set[1])))
            && err.contains("does not match the SHA-256 stored"),
        "{err}"
    );
    assert!(!merged.exists());
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 1 + set.len());
}
