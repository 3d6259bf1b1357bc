//! Opening checkpoints: single files, shards with and without an index, and every way an
//! index and its shards can disagree.

use std::collections::HashMap;
use std::path::Path;

use qforge::source::{Checkpoint, SourceDtype};
use safetensors::tensor::{Dtype, TensorView};

fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

fn f16_bytes(vals: &[f32]) -> Vec<u8> {
    vals.iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect()
}

fn write_index(dir: &Path, map: &[(&str, &str)]) {
    let wm: HashMap<&str, &str> = map.iter().copied().collect();
    let json = serde_json::json!({"metadata": {}, "weight_map": wm});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string(&json).unwrap(),
    )
    .unwrap();
}

fn sharded(dir: &Path) {
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        &[(
            "a",
            Dtype::F16,
            vec![2, 2],
            f16_bytes(&[1.0, 2.0, 3.0, 4.0]),
        )],
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[(
            "b",
            Dtype::BF16,
            vec![2],
            vec![0x80, 0x3f, 0x00, 0xc0], // 1.0, -2.0
        )],
    );
}

#[test]
fn reads_sharded_checkpoint_values_exactly() {
    let dir = tempfile::tempdir().unwrap();
    sharded(dir.path());
    write_index(
        dir.path(),
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
        ],
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let a = ck.tensor("a").unwrap();
    assert_eq!((a.dtype, a.shape.clone()), (SourceDtype::F16, vec![2, 2]));
    let mut out = [0f32; 3];
    ck.read_f32(a, 1, &mut out);
    assert_eq!(out, [2.0, 3.0, 4.0]);
    let mut out = [0f32; 2];
    ck.read_f32(ck.tensor("b").unwrap(), 0, &mut out);
    assert_eq!(out, [1.0, -2.0]);
}

#[test]
fn missing_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    sharded(dir.path());
    write_index(
        dir.path(),
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
            ("c", "model-00003-of-00003.safetensors"),
        ],
    );
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("missing shard") && e.contains("model-00003-of-00003.safetensors"),
        "{e}"
    );
}

#[test]
fn tensor_missing_from_shards_is_named() {
    let dir = tempfile::tempdir().unwrap();
    sharded(dir.path());
    write_index(
        dir.path(),
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
            ("ghost", "model-00002-of-00002.safetensors"),
        ],
    );
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("ghost") && e.contains("not found"), "{e}");
}

#[test]
fn tensor_missing_from_index_is_named() {
    let dir = tempfile::tempdir().unwrap();
    sharded(dir.path());
    write_st(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &[
            ("a", Dtype::F16, vec![1], f16_bytes(&[1.0])),
            ("extra", Dtype::F16, vec![1], f16_bytes(&[1.0])),
        ],
    );
    write_index(
        dir.path(),
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
        ],
    );
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("missing from the index") && e.contains("extra"),
        "{e}"
    );
}

#[test]
fn tensor_in_the_wrong_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    sharded(dir.path());
    write_index(
        dir.path(),
        &[
            ("a", "model-00002-of-00002.safetensors"),
            ("b", "model-00001-of-00002.safetensors"),
        ],
    );
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("indexed in"), "{e}");
}

#[test]
fn truncated_shard_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    write_st(&p, &[("w", Dtype::F32, vec![64], vec![0u8; 256])]);
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 10).unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("byte ") && e.contains("'w'"),
        "{e}"
    );
}

#[test]
fn duplicate_tensor_across_shards_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["model-1.safetensors", "model-2.safetensors"] {
        write_st(
            &dir.path().join(n),
            &[("dup", Dtype::F32, vec![1], vec![0u8; 4])],
        );
    }
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("'dup'") && e.contains("also in"), "{e}");
}

#[test]
fn folder_without_weights_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("consolidated.safetensors"), b"x").unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no model*.safetensors"), "{e}");
}
