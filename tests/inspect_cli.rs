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
    for (entry, (_, v)) in md.iter().zip(f.metadata().iter()) {
        match v {
            Value::String(s) => assert_eq!(entry["value"], s.as_str()),
            Value::U64(x) => assert_eq!(entry["value"], *x),
            Value::I64(x) => assert_eq!(entry["value"], *x),
            Value::Bool(x) => assert_eq!(entry["value"], *x),
            Value::Array(a) => {
                assert_eq!(entry["value"]["length"], a.len());
                assert_eq!(entry["value"]["truncated"], a.len() > 8);
            }
            _ => {}
        }
    }
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), f.tensors().len());
    let mut total_bytes = 0;
    for (t, info) in tensors.iter().zip(f.tensors()) {
        assert_eq!(t["name"], info.name.as_str());
        assert_eq!(t["type"], info.ty.name());
        assert_eq!(t["type_id"], info.ty.id());
        assert_eq!(t["shape"], serde_json::json!(info.dims));
        assert_eq!(t["bytes"].as_u64().unwrap(), info.n_bytes());
        assert_eq!(t["offset"].as_u64().unwrap(), info.offset);
        total_bytes += info.n_bytes();
    }
    let by_type = j["by_type"].as_object().unwrap();
    assert_eq!(by_type["Q4_K"]["bytes"], 288);
    assert_eq!(by_type["F32"]["tensors"], 2);
    let bpw = j["bits_per_weight"].as_f64().unwrap();
    let elements: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    assert_eq!(bpw, total_bytes as f64 * 8.0 / elements as f64);
    assert_eq!(j["extension_types"], serde_json::json!([]));
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
        e == format!(
            "error: invalid GGUF file {}: byte 16: metadata count 25 is larger than the rest \
             of the file can hold (at most 5)\n",
            bad.display()
        ),
        "{e}"
    );
    assert!(o.stdout.is_empty());
    // unreadable
    let o = inspect(&[dir.path().join("missing.gguf").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: cannot read "));
    // valid, with and without options
    for args in [
        &[][..],
        &["--json"],
        &["--tensors", "--full"],
        &["--json", "--full"],
    ] {
        let mut a = vec![fixture()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        assert_eq!(inspect(&a).status.code(), Some(0), "{args:?}");
    }
    // usage errors
    assert_eq!(inspect(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(inspect(&[]).status.code(), Some(2));
    assert_eq!(inspect(&[&fixture(), &fixture()]).status.code(), Some(2));
}

#[test]
fn long_arrays_are_abbreviated_and_control_characters_escaped() {
    let mut m = Metadata::new();
    m.insert(
        "evil\u{1b}[31mkey\u{202e}",
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
    assert!(text.contains("evil\\u{1b}[31mkey\\u{202e}"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
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
