//! `qforge edit` and `qforge diff` through the binary, on files converted from the fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qforge::gguf::{GgufFile, Value};

fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("run qforge")
}

fn convert(ty: &str, out: &Path) {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-qwen2");
    let o = qforge(&[
        "convert",
        fixture.to_str().unwrap(),
        "-t",
        ty,
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn edit_sets_and_deletes_keys_and_keeps_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    convert("q8_0", &src);
    let template = tmp.path().join("t.jinja");
    std::fs::write(&template, "{{ messages }}").unwrap();
    let o = qforge(&[
        "edit",
        s(&src),
        "-o",
        s(&out),
        "--set",
        "general.name=str:Renamed",
        "--set",
        "qwen2.context_length=u32:4096",
        "--set",
        "x.new=f32:0.5",
        "--delete",
        "tokenizer.ggml.padding_token_id",
        "--chat-template-file",
        s(&template),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (GgufFile::open(&src).unwrap(), GgufFile::open(&out).unwrap());
    let m = b.metadata();
    assert_eq!(
        m.get("general.name"),
        Some(&Value::String("Renamed".into()))
    );
    assert_eq!(m.get("qwen2.context_length"), Some(&Value::U32(4096)));
    assert_eq!(m.get("x.new"), Some(&Value::F32(0.5)));
    assert_eq!(m.get("tokenizer.ggml.padding_token_id"), None);
    assert_eq!(
        m.get("tokenizer.chat_template"),
        Some(&Value::String("{{ messages }}".into()))
    );
    // every other key unchanged, in order; tensors identical (so the stored hashes verify)
    let untouched = |k: &str| {
        ![
            "general.name",
            "qwen2.context_length",
            "x.new",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.chat_template",
        ]
        .contains(&k)
    };
    let ka: Vec<_> = a.metadata().iter().filter(|(k, _)| untouched(k)).collect();
    let kb: Vec<_> = b.metadata().iter().filter(|(k, _)| untouched(k)).collect();
    assert_eq!(ka, kb);
    assert_eq!(a.tensors().len(), b.tensors().len());
    for i in 0..a.tensors().len() {
        assert_eq!(a.tensors()[i].name, b.tensors()[i].name);
        assert_eq!(a.tensor_data(i), b.tensor_data(i));
    }
    let v = qforge(&["verify", s(&out)]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn edit_refuses_what_would_break_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    convert("f16", &src);
    for (args, needle) in [
        (vec!["--set", "qwen2.block_count=f32:2"], "UINT32"),
        (vec!["--delete", "qwen2.block_count"], "cannot load"),
        (vec!["--delete", "general.architecture"], "cannot load"),
        (
            vec!["--set", "general.alignment=u32:64"],
            "cannot be edited",
        ),
        (
            vec!["--set", "qforge.tensor_sha256=str:x"],
            "cannot be edited",
        ),
        (vec!["--delete", "no.such.key"], "no such key"),
        (vec!["--set", "x=u32:minus"], "not a u32"),
        (vec!["--set", "x"], "KEY=TYPE:VALUE"),
    ] {
        let mut full = vec!["edit", s(&src), "-o", s(&out)];
        full.extend(args.iter().copied());
        let o = qforge(&full);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left a file");
    }
    // --force does it anyway
    let o = qforge(&[
        "edit",
        s(&src),
        "-o",
        s(&out),
        "--force",
        "--set",
        "qwen2.block_count=f32:2",
    ]);
    assert!(o.status.success());
    let b = GgufFile::open(&out).unwrap();
    assert_eq!(
        b.metadata().get("qwen2.block_count"),
        Some(&Value::F32(2.0))
    );
}

#[test]
fn diff_shows_exactly_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let (f16, q4) = (tmp.path().join("f16.gguf"), tmp.path().join("q4.gguf"));
    convert("f16", &f16);
    convert("q4_k_m", &q4);
    // a file against itself: nothing, exit 0
    let o = qforge(&["diff", s(&f16), s(&f16)]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("no differences"));
    // a requantization: file_type changes, exactly the quantized tensors are retyped
    let o = qforge(&["diff", s(&f16), s(&q4), "--values", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys = doc["metadata"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["key"], "general.file_type");
    let a = GgufFile::open(&f16).unwrap();
    let b = GgufFile::open(&q4).unwrap();
    let retyped: Vec<&str> = a
        .tensors()
        .iter()
        .zip(b.tensors())
        .filter(|(x, y)| x.ty != y.ty)
        .map(|(x, _)| x.name.as_str())
        .collect();
    assert!(!retyped.is_empty(), "the requantization retyped nothing");
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), retyped.len());
    for t in tensors {
        assert_eq!(t["change"], "retyped");
        assert!(retyped.contains(&t["name"].as_str().unwrap()));
        let snr = t["snr_db"].as_f64().unwrap();
        // Q4_K/Q6_K/Q5_0 of smooth random weights: 20-40 dB
        assert!((18.0..45.0).contains(&snr), "{t}");
    }
    assert_eq!(
        doc["same_tensors"].as_u64().unwrap() as usize,
        a.tensors().len() - retyped.len()
    );
    // errors exit 2
    let o = qforge(&["diff", s(&f16), "/nonexistent.gguf"]);
    assert_eq!(o.status.code(), Some(2));
}
