//! Model ids resolved in a fabricated Hugging Face cache: refs, snapshots whose files are
//! symlinks into blobs/, an incomplete snapshot (a dangling blob link), and unknown ids.

use std::path::{Path, PathBuf};
use std::process::Command;

use qforge::source::hf_cache::resolve_model_id;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-qwen2")
}

/// A cache repo for `fixture` under `root` with snapshot `commit`; `skip` names a file whose
/// blob is left undownloaded (its link dangles).
fn add_snapshot(root: &Path, repo: &str, commit: &str, skip: Option<&str>) -> PathBuf {
    let repo = root.join(repo);
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let blob = repo.join("blobs").join(format!("{commit}-{name}"));
        if Some(name.as_str()) != skip {
            std::fs::copy(e.path(), &blob).unwrap();
        }
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(blob.file_name().unwrap()),
            snap.join(&name),
        )
        .unwrap();
    }
    snap
}

fn set_ref(root: &Path, repo: &str, commit: &str) {
    let refs = root.join(repo).join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), commit).unwrap();
}

#[test]
fn refs_main_wins_when_complete_else_a_complete_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    let repo = "models--acme--tiny-qwen2";
    let good = add_snapshot(&root, repo, "1111", None);
    let broken = add_snapshot(&root, repo, "2222", Some("model.safetensors"));
    set_ref(&root, repo, "1111");
    assert_eq!(
        resolve_model_id("acme/tiny-qwen2", std::slice::from_ref(&root)).unwrap(),
        good
    );
    // refs/main names the incomplete one: the complete snapshot is used instead
    set_ref(&root, repo, "2222");
    assert_eq!(
        resolve_model_id("acme/tiny-qwen2", std::slice::from_ref(&root)).unwrap(),
        good
    );
    // only the incomplete one left: an error naming it and the download command
    std::fs::remove_dir_all(&good).unwrap();
    let e = resolve_model_id("acme/tiny-qwen2", std::slice::from_ref(&root))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&broken.display().to_string()), "{e}");
    assert!(
        e.contains("huggingface-cli download acme/tiny-qwen2"),
        "{e}"
    );
}

#[test]
fn unknown_id_names_every_folder_looked_in() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = vec![tmp.path().join("a"), tmp.path().join("b")];
    let e = resolve_model_id("nobody/nothing", &roots)
        .unwrap_err()
        .to_string();
    for r in &roots {
        assert!(
            e.contains(&r.join("models--nobody--nothing").display().to_string()),
            "{e}"
        );
    }
}

#[test]
fn convert_takes_a_model_id_and_writes_what_the_folder_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hf_home").join("hub");
    add_snapshot(&root, "models--acme--tiny-qwen2", "3333", None);
    set_ref(&root, "models--acme--tiny-qwen2", "3333");
    let qforge = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args(args)
            .env_remove("HF_HUB_CACHE")
            .env("HF_HOME", tmp.path().join("hf_home"))
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let by_id = tmp.path().join("by-id.gguf");
    let by_dir = tmp.path().join("by-dir.gguf");
    let o = qforge(&[
        "convert",
        "acme/tiny-qwen2",
        "-t",
        "q8_0",
        "--quiet",
        "-o",
        by_id.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = qforge(&[
        "convert",
        fixture().to_str().unwrap(),
        "-t",
        "q8_0",
        "--quiet",
        "-o",
        by_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    // same model name (from the cache folder), same bytes
    assert!(std::fs::read(&by_id).unwrap() == std::fs::read(&by_dir).unwrap());

    let missing = tmp.path().join("missing.gguf");
    let o = qforge(&[
        "convert",
        "acme/not-downloaded",
        "-t",
        "f16",
        "-o",
        missing.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("models--acme--not-downloaded") && err.contains("huggingface-cli download"),
        "{err}"
    );
    assert!(!missing.exists());
}
