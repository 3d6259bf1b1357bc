//! `convert::ConvertRequest`, the library's conversion job: the same bytes and summary as the
//! CLI's `convert`, and the CLI's messages for bad requests.

use std::path::{Path, PathBuf};
use std::process::Command;

use qforge::convert::{ConvertError, ConvertRequest, RunOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn cli(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_request_writes_what_the_cli_writes_and_summarises_it_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny-llama-bpe");
    let by_cli = tmp.path().join("cli.gguf");
    let o = cli(
        &[
            "convert",
            src.to_str().unwrap(),
            "-t",
            "q4_k_m",
            "--tensor-type",
            "ffn_down=q8_0",
            "--token-embedding-type",
            "q4_1",
            "--json",
            "--quiet",
        ],
        &by_cli,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    let by_lib = tmp.path().join("lib.gguf");
    let request = ConvertRequest {
        recipe: Some("q4_k_m".parse().unwrap()),
        tensor_types: vec!["ffn_down=q8_0".into()],
        token_embedding_type: Some(qforge::gguf::GgmlType::Q4_1),
        run: RunOptions {
            threads: 1,
            ..RunOptions::default()
        },
        ..ConvertRequest::new(&src)
    };
    let job = request.plan().unwrap();
    assert!(job.notes().is_empty());
    assert!(!job.uses_extension_types());
    let summary = job.execute(&by_lib).unwrap();
    assert_eq!(
        std::fs::read(&by_lib).unwrap(),
        std::fs::read(&by_cli).unwrap()
    );

    let ours = serde_json::to_value(&summary).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&doc));
    assert_eq!(
        keys(&ours),
        [
            "bytes_in",
            "bytes_out",
            "gb_per_s",
            "output",
            "peak_rss_mib",
            "seconds",
            "tensors"
        ]
    );
    for k in ["tensors", "bytes_in", "bytes_out"] {
        assert_eq!(ours[k], doc[k], "{k}");
    }
    assert_eq!(summary.output, by_lib.display().to_string());
    let f = qforge::gguf::GgufFile::open(&by_lib).unwrap();
    assert_eq!(summary.tensors, f.tensors().len());
    let ty = |name: &str| f.tensor_by_name(name).unwrap().1.ty.name();
    assert_eq!(ty("blk.0.ffn_down.weight"), "Q8_0");
    assert_eq!(ty("token_embd.weight"), "Q4_1");
}

#[test]
fn bad_requests_fail_with_the_clis_messages_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny-qwen2");
    let out = tmp.path().join("x.gguf");
    let imatrix = tmp.path().join("m.dat");
    let cases: [(ConvertRequest, &[&str]); 2] = [
        (
            ConvertRequest {
                tensor_types: vec!["(=q8_0".into()],
                ..ConvertRequest::new(&src)
            },
            &["--tensor-type", "(=q8_0"],
        ),
        (
            ConvertRequest {
                imatrix: Some(imatrix.clone()),
                include_weights: vec!["a".into()],
                exclude_weights: vec!["b".into()],
                ..ConvertRequest::new(&src)
            },
            &[
                "--imatrix",
                imatrix.to_str().unwrap(),
                "--include-weights",
                "a",
                "--exclude-weights",
                "b",
            ],
        ),
    ];
    for (request, flags) in cases {
        let e = request.convert(&out).unwrap_err();
        assert!(matches!(e, ConvertError::Plan(_)), "{e:?}");
        let mut args = vec!["convert", src.to_str().unwrap()];
        args.extend_from_slice(flags);
        let o = cli(&args, &out);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&o.stderr), format!("error: {e}\n"));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
    // a model id absent from the cache: the source error, as the CLI prints it
    let e = ConvertRequest::new("acme/absent-model-xyz")
        .convert(&out)
        .unwrap_err();
    assert!(matches!(e, ConvertError::Source(_)), "{e:?}");
    assert!(e.to_string().contains("acme/absent-model-xyz"), "{e}");
}
