//! `qforge inspect` through the binary: exit codes, the JSON document against the reader,
//! abbreviation, escaping of control characters, and the NF4 note.

use std::process::Command;

use qforge::gguf::{write_to_vec, Array, GgmlType, GgufFile, Metadata, TensorSpec, Value};

fn inspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

fn fixture() -> String {
    format!(
        "{}/fixtures/gguf/gguf-py-all-types-a32.gguf",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn json_matches_the_reader() {
    let o = inspect(&[&fixture(), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = GgufFile::open(fixture().as_ref()).unwrap();
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["version"], 3);
    assert_eq!(
        j["tensor_count"].as_u64().unwrap() as usize,
        f.tensors().len()
    );
    assert_eq!(j["data_offset"].as_u64().unwrap(), f.data_offset());
    let md = j["metadata"].as_array().unwrap();
    assert_eq!(md.len(), f.metadata().len());
    for (entry, (k, v)) in md.iter().zip(f.metadata().iter()) {
        assert_eq!(entry["key"], k);
        assert_eq!(entry["type"], v.value_type().name());
    }
    let u32_entry = md.iter().find(|e| e["key"] == "t.u32").unwrap();
    assert_eq!(u32_entry["value"], 4000000000u64);
    let arr = md.iter().find(|e| e["key"] == "t.arr.string").unwrap();
    assert_eq!(arr["value"]["element_type"], "STRING");
    assert_eq!(arr["value"]["length"], 4);
    assert_eq!(arr["value"]["values"][2], "ünï");
    for (t, info) in j["tensors"].as_array().unwrap().iter().zip(f.tensors()) {
        assert_eq!(t["name"], info.name.as_str());
        assert_eq!(t["bytes"].as_u64().unwrap(), info.n_bytes());
        assert_eq!(t["offset"].as_u64().unwrap(), info.offset);
    }
    assert_eq!(j["llama_cpp_loadable"], true);
}

#[test]
fn exit_codes_for_invalid_files_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    let mut bytes = std::fs::read(fixture()).unwrap();
    bytes.truncate(100);
    std::fs::write(&bad, bytes).unwrap();
    let o = inspect(&[bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("bad.gguf") && e.contains("byte 16") && e.contains("metadata count"),
        "{e}"
    );
    assert_eq!(inspect(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(inspect(&[]).status.code(), Some(2));
}

#[test]
fn long_arrays_are_abbreviated_and_control_characters_escaped() {
    let mut m = Metadata::new();
    m.insert(
        "evil\u{1b}[31mkey",
        Value::String("line\nbreak\u{7}".into()),
    )
    .unwrap();
    m.insert("long", Value::Array(Array::U32((0..100).collect())))
        .unwrap();
    let data = [0u8; 36];
    let bytes = write_to_vec(
        &m,
        &[(
            TensorSpec {
                name: "w\tname".into(),
                dims: vec![64],
                ty: GgmlType::Nf4 { block: 64 },
            },
            &data[..],
        )],
        32,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, bytes).unwrap();
    let o = inspect(&[p.to_str().unwrap(), "--tensors"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.contains("evil\\u{1b}[31mkey"), "{text}");
    assert!(text.contains("\"line\\nbreak\\u{7}\""), "{text}");
    assert!(text.contains("w\\tname"), "{text}");
    assert!(
        text.contains("[len 100] [0, 1, 2, 3, 4, 5, 6, 7, ...]"),
        "{text}"
    );
    assert!(text.contains("llama.cpp cannot load it"), "{text}");
    let full = inspect(&[p.to_str().unwrap(), "--full"]);
    assert!(String::from_utf8(full.stdout)
        .unwrap()
        .contains("97, 98, 99]"));
    let j: serde_json::Value =
        serde_json::from_slice(&inspect(&[p.to_str().unwrap(), "--json"]).stdout).unwrap();
    assert_eq!(j["llama_cpp_loadable"], false);
    assert_eq!(j["extension_types"][0], "NF4");
    assert_eq!(j["metadata"][1]["value"]["truncated"], true);
}
