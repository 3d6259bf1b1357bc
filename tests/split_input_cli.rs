//! A split set as input, given its first shard: `inspect`, `verify` and `convert` see the whole
//! model; `convert` without `-t` merges the shards back into the original file; a missing or
//! mismatched shard is an error naming the shard, and nothing is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qforge::gguf::{ErrorKind, GgufFile, Value};

fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("run qforge")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn convert(fixture: &str, ty: &str, out: &Path) {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    ok(&qforge(&[
        "convert",
        s(&fixture),
        "-t",
        ty,
        "--quiet",
        "-o",
        s(out),
    ]));
}

/// Split `src` into shards of at most `max` tensors named after `prefix`; their paths.
fn split(src: &Path, prefix: &Path, max: usize) -> Vec<PathBuf> {
    let out = ok(&qforge(&[
        "split",
        s(src),
        "-o",
        s(prefix),
        "--max-tensors",
        &max.to_string(),
    ]));
    out.lines().map(PathBuf::from).collect()
}

/// Every tensor of `a` and `b`: same names, types, shapes and bytes, in the same order.
fn assert_same_tensors(a: &GgufFile, b: &GgufFile) {
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (i, (x, y)) in a.tensors().iter().zip(b.tensors()).enumerate() {
        assert_eq!((&x.name, &x.dims, x.ty), (&y.name, &y.dims, y.ty));
        assert!(a.tensor_data(i) == b.tensor_data(i), "{} differs", x.name);
    }
}

fn hashes(f: &GgufFile) -> Vec<String> {
    match f.metadata().get("qforge.tensor_sha256") {
        Some(Value::Array(qforge::gguf::Array::String(h))) => h.clone(),
        other => panic!("{}: no hashes: {other:?}", f.path().display()),
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("JSON")
}

#[test]
fn a_set_inspects_and_verifies_like_the_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    let whole_path = tmp.path().join("m.gguf");
    convert("tiny-qwen2", "q8_0", &whole_path);
    let whole = GgufFile::open(&whole_path).unwrap();
    let n = whole.tensors().len();
    let shards = split(&whole_path, &tmp.path().join("s"), n.div_ceil(3));
    assert_eq!(shards.len(), 3);

    // the library's logical view
    let set = GgufFile::open_model(&shards[0]).unwrap();
    assert!(set.is_split() && !whole.is_split());
    assert_eq!(set.shards().len(), 3);
    assert_same_tensors(&whole, &set);
    assert_eq!(set.metadata(), whole.metadata());
    assert_eq!(hashes(&set), hashes(&whole));
    assert_eq!(set.shard_of(n - 1), Some((2, n - 1 - 2 * n.div_ceil(3))));
    assert_eq!(
        set.file_size(),
        shards
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum::<u64>()
    );

    // inspect --json: the same model plus the shard list
    let a = json(&qforge(&["inspect", "--json", s(&whole_path)]));
    let b = json(&qforge(&["inspect", "--json", s(&shards[0])]));
    assert_eq!(a["metadata"], b["metadata"]);
    assert_eq!(a["tensor_count"], b["tensor_count"]);
    assert_eq!(a["by_type"], b["by_type"]);
    assert_eq!(a["bits_per_weight"], b["bits_per_weight"]);
    let strip = |t: &serde_json::Value| {
        let mut t = t.clone();
        t.as_object_mut().unwrap().remove("offset");
        t
    };
    let ta: Vec<_> = a["tensors"].as_array().unwrap().iter().map(strip).collect();
    let tb: Vec<_> = b["tensors"].as_array().unwrap().iter().map(strip).collect();
    assert_eq!(ta, tb);
    assert!(a.get("shards").is_none());
    let listed = b["shards"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let mut first = 0;
    for (i, (l, p)) in listed.iter().zip(&shards).enumerate() {
        assert_eq!(l["path"], s(p));
        assert_eq!(l["split_no"], i);
        assert_eq!(l["first_tensor"], first);
        let f = GgufFile::open(p).unwrap();
        assert_eq!(l["tensor_count"], f.tensors().len());
        assert_eq!(l["file_size"], f.file_size());
        first += f.tensors().len();
    }
    assert_eq!(first, n);
    let text = ok(&qforge(&["inspect", s(&shards[0])]));
    assert!(text.contains("split set of 3 shards"), "{text}");
    assert!(text.contains(&format!("tensors      {n}\n")), "{text}");
    for p in &shards {
        assert!(text.contains(s(p)), "{text}");
    }
    // another shard alone is shown alone, with a note
    let text = ok(&qforge(&["inspect", s(&shards[1])]));
    assert!(text.contains("one shard of a 3-file split set"), "{text}");
    assert!(!text.contains("split set of 3 shards"), "{text}");

    // verify: every shard's own hashes, reported per shard
    let v = ok(&qforge(&["verify", s(&shards[0])]));
    assert!(
        v.contains(&format!("{n} tensor hashes checked, 0 mismatched")),
        "{v}"
    );
    for p in &shards {
        let k = GgufFile::open(p).unwrap().tensors().len();
        let line = format!(
            "shard {}: {k} tensors, {k} hashes checked, 0 mismatched",
            s(p)
        );
        assert!(v.contains(&line), "{v}");
    }
    let r = json(&qforge(&["verify", "--json", s(&shards[0])]));
    assert_eq!(r["hashed"], n);
    assert_eq!(r["shards"].as_array().unwrap().len(), 3);

    // one flipped byte in the last shard: verify names the tensor and that shard
    let last = GgufFile::open(&shards[2]).unwrap();
    let t = last.tensors()[1].clone();
    let at = (last.data_offset() + t.offset) as usize;
    drop(last);
    drop(set);
    let mut bytes = std::fs::read(&shards[2]).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(&shards[2], &bytes).unwrap();
    let o = qforge(&["verify", s(&shards[0])]);
    assert_eq!(o.status.code(), Some(1));
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(v.contains(&format!("MISMATCH {}", t.name)), "{v}");
    assert!(
        v.contains(&format!("shard {}: ", s(&shards[2])))
            && v.contains(&format!("{n} tensor hashes checked, 1 mismatched")),
        "{v}"
    );
    let r = json_any(&qforge(&["verify", "--json", s(&shards[0])]));
    assert_eq!(r["shards"][2]["mismatched"], serde_json::json!([t.name]));
    assert_eq!(r["shards"][0]["mismatched"], serde_json::json!([]));
}

fn json_any(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
fn merging_a_set_reproduces_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // a K-quant mixture: requantizing would not give the same bytes, merging must
    let whole_path = tmp.path().join("m.gguf");
    convert("tiny-qwen2", "q4_k_m", &whole_path);
    let shards = split(&whole_path, &tmp.path().join("s"), 9);
    assert_eq!(shards.len(), 3);
    let merged = tmp.path().join("merged.gguf");
    let o = qforge(&["convert", s(&shards[0]), "-o", s(&merged)]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("merged 3 shards"));
    let whole = GgufFile::open(&whole_path).unwrap();
    let m = GgufFile::open(&merged).unwrap();
    assert_same_tensors(&whole, &m);
    assert_eq!(m.metadata(), whole.metadata());
    assert_eq!(hashes(&m), hashes(&whole));
    // the original file, byte for byte
    assert!(std::fs::read(&merged).unwrap() == std::fs::read(&whole_path).unwrap());
    ok(&qforge(&["verify", s(&merged)]));
    // type options without -t are refused (they would be ignored)
    let o = qforge(&[
        "convert",
        s(&shards[0]),
        "--pure",
        "-o",
        s(&tmp.path().join("p.gguf")),
    ]);
    assert!(!o.status.success());
    assert!(!tmp.path().join("p.gguf").exists());

    // with -t, a set is re-typed as the whole file is: f16 -> f16 keeps every byte, and
    // f16 -> q8_0 gives the same file from the set as from the whole
    let f16 = tmp.path().join("f16.gguf");
    convert("tiny-qwen2", "f16", &f16);
    let shards = split(&f16, &tmp.path().join("h"), 10);
    assert_eq!(shards.len(), 3);
    let again = tmp.path().join("again.gguf");
    ok(&qforge(&[
        "convert",
        s(&shards[0]),
        "-t",
        "f16",
        "--quiet",
        "-o",
        s(&again),
    ]));
    let (a, b) = (
        GgufFile::open(&f16).unwrap(),
        GgufFile::open(&again).unwrap(),
    );
    assert_same_tensors(&a, &b);
    assert_eq!(hashes(&a), hashes(&b));
    for (k, v) in a.metadata().iter() {
        if !k.starts_with("qforge.") {
            assert_eq!(b.metadata().get(k), Some(v), "{k}");
        }
    }
    let (q_set, q_whole) = (tmp.path().join("qs.gguf"), tmp.path().join("qw.gguf"));
    ok(&qforge(&[
        "convert",
        s(&shards[0]),
        "-t",
        "q8_0",
        "--quiet",
        "-o",
        s(&q_set),
    ]));
    ok(&qforge(&[
        "convert",
        s(&f16),
        "-t",
        "q8_0",
        "--quiet",
        "-o",
        s(&q_whole),
    ]));
    let (a, b) = (
        GgufFile::open(&q_whole).unwrap(),
        GgufFile::open(&q_set).unwrap(),
    );
    assert!(a
        .tensors()
        .iter()
        .any(|t| t.ty == qforge::gguf::GgmlType::Q8_0));
    assert_same_tensors(&a, &b);
    assert_eq!(a.metadata(), b.metadata());
}

/// Run convert, inspect and verify on `first`: each fails naming `culprit` and saying `what`;
/// convert writes nothing.
fn assert_refused(first: &Path, culprit: &Path, what: &str, tmp: &Path) {
    let out = tmp.join("out.gguf");
    for args in [
        vec!["convert", s(first), "-o", s(&out)],
        vec!["convert", s(first), "-t", "q8_0", "-o", s(&out)],
        vec!["inspect", s(first)],
        vec!["verify", s(first)],
    ] {
        let o = qforge(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(s(culprit)) && err.contains(what),
            "{args:?}: want {} and {what:?} in: {err}",
            culprit.display()
        );
        assert!(!out.exists(), "{args:?} wrote the output");
    }
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out") || n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_broken_set_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let whole = t.join("m.gguf");
    convert("tiny-qwen2", "q8_0", &whole);
    let set = split(&whole, &t.join("s"), 10); // 10 + 10 + 6 tensors
    assert_eq!(set.len(), 3);
    let keep = t.join("keep");
    std::fs::create_dir(&keep).unwrap();
    for p in &set {
        std::fs::copy(p, keep.join(p.file_name().unwrap())).unwrap();
    }
    let restore = || {
        for p in &set {
            std::fs::copy(keep.join(p.file_name().unwrap()), p).unwrap();
        }
    };
    let lib_err = |first: &Path| GgufFile::open_model(first).unwrap_err();

    // a missing shard
    std::fs::remove_file(&set[2]).unwrap();
    let e = lib_err(&set[0]);
    assert_eq!(e.path.as_deref(), Some(set[2].as_path()));
    assert!(
        matches!(e.kind, ErrorKind::ShardMissing { count: 3, .. }),
        "{e}"
    );
    assert_refused(
        &set[0],
        &set[2],
        ": missing (the set named by s-00001-of-00003.gguf has 3 shards)",
        t,
    );
    restore();
    assert!(GgufFile::open_model(&set[0]).is_ok());

    // a shard of another split of the same model (2 shards), renamed into this set
    let two = split(&whole, &t.join("two"), 13);
    assert_eq!(two.len(), 2);
    std::fs::copy(&two[1], &set[1]).unwrap();
    let e = lib_err(&set[0]);
    assert_eq!(e.path.as_deref(), Some(set[1].as_path()));
    assert!(
        matches!(
            e.kind,
            ErrorKind::ShardMismatch {
                key: "split.count",
                found: 2,
                expected: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_refused(
        &set[0],
        &set[1],
        "split.count 2 differs from 3 in the first shard (s-00001-of-00003.gguf)",
        t,
    );
    restore();

    // a different model's shard (20 tensors in all) renamed into this set
    let llama = t.join("llama.gguf");
    convert("tiny-llama-spm", "q8_0", &llama);
    let other = split(&llama, &t.join("l"), 7);
    assert_eq!(other.len(), 3);
    std::fs::copy(&other[1], &set[1]).unwrap();
    assert_refused(
        &set[0],
        &set[1],
        "split.tensors.count 20 differs from 26 in the first shard",
        t,
    );
    restore();

    // the same model cut elsewhere: shard 2 of that set holds a tensor of our shard 1
    let nine = split(&whole, &t.join("n"), 9);
    assert_eq!(nine.len(), 3);
    std::fs::copy(&nine[1], &set[1]).unwrap();
    let dup = GgufFile::open(&nine[1]).unwrap().tensors()[0].name.clone();
    assert_refused(
        &set[0],
        &set[1],
        &format!("tensor '{dup}' is also in s-00001-of-00003.gguf"),
        t,
    );
    restore();

    // the third shard in the second's place
    std::fs::copy(&set[2], &set[1]).unwrap();
    let e = lib_err(&set[0]);
    assert!(
        matches!(
            e.kind,
            ErrorKind::ShardNumber {
                found: 2,
                expected: 1
            }
        ),
        "{e}"
    );
    assert_refused(&set[0], &set[1], "split.no is 2, expected 1", t);
    restore();

    // every shard agrees on a tensor total the shards do not hold
    for p in &set {
        let edited = t.join("edited.gguf");
        ok(&qforge(&[
            "edit",
            s(p),
            "-o",
            s(&edited),
            "--set",
            "split.tensors.count=i32:27",
        ]));
        std::fs::rename(&edited, p).unwrap();
    }
    assert_refused(
        &set[0],
        &set[0],
        "split.tensors.count is 27 but the 3 shards hold 26 tensors",
        t,
    );
    restore();

    // the first shard under a name that does not follow the pattern
    let renamed = t.join("first.gguf");
    std::fs::copy(&set[0], &renamed).unwrap();
    assert_refused(
        &renamed,
        &renamed,
        "does not end in '-00001-of-00003.gguf'",
        t,
    );
    std::fs::remove_file(&renamed).unwrap();

    // convert given another shard: refused, naming the first
    let out = t.join("out.gguf");
    for ty in [None, Some("q8_0")] {
        let mut args = vec!["convert", s(&set[1]), "-o", s(&out)];
        if let Some(ty) = ty {
            args.extend(["-t", ty]);
        }
        let o = qforge(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(s(&set[1]))
                && err.contains("shard 2 of 3")
                && err.contains("(s-00001-of-00003.gguf)"),
            "{err}"
        );
        assert!(!out.exists());
    }
    // the intact set still opens
    assert_eq!(GgufFile::open_model(&set[0]).unwrap().tensors().len(), 26);
}

/// `llama-gguf-split` of a qforge file copies every key, the hash list of all tensors included,
/// into the first shard, and the other shards carry none: that list serves the whole set.
#[test]
fn a_set_with_every_hash_in_the_first_shard() {
    use qforge::edit::write_with_metadata;
    use qforge::gguf::Array;
    let tmp = tempfile::tempdir().unwrap();
    let whole_path = tmp.path().join("m.gguf");
    convert("tiny-qwen2", "q4_0", &whole_path);
    let whole = GgufFile::open(&whole_path).unwrap();
    let all = hashes(&whole);
    let shards = split(&whole_path, &tmp.path().join("s"), 10);
    assert_eq!(shards.len(), 3);
    for (i, p) in shards.iter().enumerate() {
        let f = GgufFile::open(p).unwrap();
        let mut m = f.metadata().clone();
        if i == 0 {
            m.set(
                "qforge.tensor_sha256",
                Value::Array(Array::String(all.clone())),
            )
            .unwrap();
        } else {
            m.remove("qforge.tensor_sha256").unwrap();
        }
        let tmp_out = tmp.path().join("re.gguf");
        write_with_metadata(&f, &m, &tmp_out).unwrap();
        drop(f);
        std::fs::rename(&tmp_out, p).unwrap();
    }
    let set = GgufFile::open_model(&shards[0]).unwrap();
    assert_eq!(hashes(&set), all);
    assert_eq!(set.metadata(), whole.metadata());
    drop(set);
    let r = json(&qforge(&["verify", "--json", s(&shards[0])]));
    assert_eq!(r["hashed"], whole.tensors().len());
    assert_eq!(r["has_hashes"], true);
    let per: Vec<u64> = r["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["hashed"].as_u64().unwrap())
        .collect();
    assert_eq!(per, vec![10, 10, 6]);
    let merged = tmp.path().join("merged.gguf");
    ok(&qforge(&[
        "convert",
        s(&shards[0]),
        "--quiet",
        "-o",
        s(&merged),
    ]));
    assert!(std::fs::read(&merged).unwrap() == std::fs::read(&whole_path).unwrap());

    // a damaged byte is still found, in the right shard
    let f = GgufFile::open(&shards[1]).unwrap();
    let t = f.tensors()[3].clone();
    let at = (f.data_offset() + t.offset) as usize;
    drop(f);
    let mut bytes = std::fs::read(&shards[1]).unwrap();
    bytes[at] ^= 1;
    std::fs::write(&shards[1], &bytes).unwrap();
    let o = qforge(&["verify", "--json", s(&shards[0])]);
    assert_eq!(o.status.code(), Some(1));
    let r = json_any(&o);
    assert_eq!(r["shards"][1]["mismatched"], serde_json::json!([t.name]));
    assert_eq!(r["shards"][2]["mismatched"], serde_json::json!([]));
    // and merging refuses to copy it
    std::fs::remove_file(&merged).unwrap();
    let o = qforge(&["convert", s(&shards[0]), "-o", s(&merged)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&t.name));
    assert!(!merged.exists());
}

#[test]
fn split_keys_must_be_integers_and_open_split_needs_a_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("m.gguf");
    convert("tiny-qwen2", "q8_0", &whole);
    let e = GgufFile::open_split(&whole).unwrap_err();
    assert_eq!(e.path.as_deref(), Some(whole.as_path()));
    assert!(
        matches!(
            e.kind,
            ErrorKind::SplitKey {
                key: "split.count",
                ..
            }
        ),
        "{e}"
    );
    // a plain file opens as itself
    assert!(!GgufFile::open_model(&whole).unwrap().is_split());
    let set = split(&whole, &tmp.path().join("s"), 10);
    let edited = tmp.path().join("e.gguf");
    ok(&qforge(&[
        "edit",
        s(&set[2]),
        "-o",
        s(&edited),
        "--force",
        "--set",
        "split.no=str:2",
    ]));
    std::fs::rename(&edited, &set[2]).unwrap();
    let e = GgufFile::open_model(&set[0]).unwrap_err();
    assert_eq!(e.path.as_deref(), Some(set[2].as_path()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: key 'split.no' is STRING, not an integer",
            set[2].display()
        )
    );
    assert!(e.kind.is_split_set());
}
