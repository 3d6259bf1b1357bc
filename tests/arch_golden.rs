//! Every architecture fixture, converted to f16 by qforge, against what llama.cpp's own converter
//! (`convert_hf_to_gguf.py` of the llama.cpp CI installs) wrote for the same checkpoint:
//! `fixtures/golden-arch/<fixture>/converter.json`, made by `scripts/gen_arch_golden.py` where
//! torch is. Every metadata key with its GGUF type and value (except the descriptive
//! `general.*` naming keys and qforge's own `qforge.*` keys), and every tensor's name, type,
//! dims and SHA-256 must be equal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use qforge::gguf::{GgufFile, Value};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Keys whose values describe the file rather than the model (llama.cpp derives them from the
/// folder name and parameter count).
fn naming_key(k: &str) -> bool {
    matches!(
        k,
        "general.name" | "general.size_label" | "general.basename" | "general.finetune"
    ) || k.starts_with("qforge.")
}

fn type_name(v: &Value) -> Vec<String> {
    let scalar = |v: &Value| -> &'static str {
        match v {
            Value::U8(_) => "UINT8",
            Value::I8(_) => "INT8",
            Value::U16(_) => "UINT16",
            Value::I16(_) => "INT16",
            Value::U32(_) => "UINT32",
            Value::I32(_) => "INT32",
            Value::F32(_) => "FLOAT32",
            Value::Bool(_) => "BOOL",
            Value::String(_) => "STRING",
            Value::Array(_) => "ARRAY",
            Value::U64(_) => "UINT64",
            Value::I64(_) => "INT64",
            Value::F64(_) => "FLOAT64",
        }
    };
    match v {
        Value::Array(a) => match a.get(0) {
            Some(e) => vec!["ARRAY".into(), scalar(&e).into()],
            None => vec!["ARRAY".into()],
        },
        _ => vec![scalar(v).into()],
    }
}

/// The value as gguf-py's `ReaderField.contents()` gives it in JSON (f32 widened exactly).
fn to_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        Value::F32(x) => (*x as f64).into(),
        Value::F64(x) => (*x).into(),
        Value::Bool(x) => (*x).into(),
        Value::String(x) => x.clone().into(),
        Value::Array(a) => Json::Array(
            (0..a.len())
                .map(|i| to_json(&a.get(i).expect("in range")))
                .collect(),
        ),
    }
}

fn same_json(a: &Json, b: &Json) -> bool {
    match (a, b) {
        // f32 values: compare as f32 (the golden file prints Python's repr of the double)
        (Json::Number(x), Json::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        _ => a == b,
    }
}

fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.len() > 90 {
        format!("{}...", &s[..87])
    } else {
        s
    }
}

/// Differences between a GGUF file and a converter golden document.
fn differences(file: &GgufFile, golden: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    let mut want: BTreeMap<String, (Vec<String>, Json)> = BTreeMap::new();
    for e in golden["kv"].as_array().expect("kv list") {
        let types = e[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        want.insert(e[0].as_str().unwrap().to_string(), (types, e[2].clone()));
    }
    let mut seen = Vec::new();
    for (key, value) in file.metadata().iter() {
        if naming_key(key) {
            continue;
        }
        seen.push(key.to_string());
        match want.get(key) {
            None => problems.push(format!("key {key} is not in llama.cpp's file")),
            Some((types, v)) => {
                let got_types = type_name(value);
                if &got_types != types {
                    problems.push(format!(
                        "key {key}: type {got_types:?}, llama.cpp {types:?}"
                    ));
                } else if !same_json(&to_json(value), v) {
                    problems.push(format!(
                        "key {key}: {} vs llama.cpp {}",
                        short(&to_json(value)),
                        short(v)
                    ));
                }
            }
        }
    }
    for key in want.keys() {
        if !naming_key(key) && !seen.contains(key) {
            problems.push(format!("key {key} missing (llama.cpp writes it)"));
        }
    }
    let mut want_t: BTreeMap<String, &Json> = golden["tensors"]
        .as_array()
        .expect("tensor list")
        .iter()
        .map(|t| (t[0].as_str().unwrap().to_string(), t))
        .collect();
    for (i, t) in file.tensors().iter().enumerate() {
        let Some(g) = want_t.remove(&t.name) else {
            problems.push(format!("tensor {} is not in llama.cpp's file", t.name));
            continue;
        };
        let dims: Vec<u64> = g[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let hash: String = Sha256::digest(file.tensor_data(i))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if g[1].as_u64() != Some(t.ty.id() as u64) || dims != t.dims {
            problems.push(format!(
                "tensor {}: type {} dims {:?}, llama.cpp type {} dims {dims:?}",
                t.name,
                t.ty.id(),
                t.dims,
                g[1]
            ));
        } else if g[3].as_str() != Some(hash.as_str()) {
            problems.push(format!("tensor {}: bytes differ from llama.cpp's", t.name));
        }
    }
    for name in want_t.keys() {
        problems.push(format!("tensor {name} missing (llama.cpp writes it)"));
    }
    problems
}

fn convert_f16(fixture: &Path, out: &Path) -> GgufFile {
    let o = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args([
            "convert",
            fixture.to_str().unwrap(),
            "-t",
            "f16",
            "--quiet",
            "-o",
        ])
        .arg(out)
        .output()
        .expect("run qforge");
    assert!(
        o.status.success(),
        "{}: {}",
        fixture.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    GgufFile::open(out).expect("qforge's output reads back")
}

fn golden_fixtures() -> Vec<(PathBuf, Json)> {
    let dir = root().join("fixtures/golden-arch");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures/golden-arch")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n).join("converter.json")).unwrap();
            (
                root().join("fixtures").join(&n),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_architecture_fixture_equals_llama_cpps_converter() {
    let fixtures = golden_fixtures();
    assert_eq!(fixtures.len(), 13, "fixtures/golden-arch lost a fixture");
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (fixture, golden) in &fixtures {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let file = convert_f16(fixture, &tmp.path().join(format!("{name}.gguf")));
        let problems = differences(&file, golden);
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_comparison_sees_a_changed_key_and_tensor() {
    // Negative control: the same golden document with one value and one hash altered must be
    // reported, so the test above cannot pass by comparing nothing.
    let (fixture, mut golden) = golden_fixtures().remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let file = convert_f16(&fixture, &tmp.path().join("x.gguf"));
    assert!(differences(&file, &golden).is_empty());
    let kv = golden["kv"].as_array_mut().unwrap();
    let i = kv
        .iter()
        .position(|e| e[0].as_str().unwrap().ends_with(".block_count"))
        .unwrap();
    kv[i][2] = 99.into();
    golden["tensors"][0][3] = "00".into();
    golden["kv"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(["x.extra", ["UINT32"], 1]));
    let p = differences(&file, &golden);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].contains("block_count"), "{p:?}");
    assert!(p.iter().any(|m| m.contains("bytes differ")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("x.extra missing")), "{p:?}");
}

/// A copy of a fixture with an edited config.json.
fn edited_fixture(name: &str, tmp: &Path, edit: impl Fn(&mut Json)) -> PathBuf {
    std::fs::create_dir_all(tmp).unwrap();
    let src = root().join("fixtures").join(name);
    let dst = tmp.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let path = dst.join("config.json");
    let mut cfg: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
    dst
}

fn convert_fails(dir: &Path, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(["convert", dir.to_str().unwrap(), "-t", "q8_0", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!out.exists(), "nothing under the output name");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn configs_that_contradict_the_weights_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    // Qwen3: head_dim 32 instead of 64 -> attn_q has the wrong row count
    let d = edited_fixture("tiny-qwen3", tmp.path(), |c| c["head_dim"] = 32.into());
    let e = convert_fails(&d, &out);
    assert!(
        e.contains("self_attn.") && e.contains("config.json implies"),
        "{e}"
    );
    // Phi-3: LongRoPE factors of the wrong length for the rotary dimensions
    let d = edited_fixture("tiny-phi3", tmp.path(), |c| {
        c["partial_rotary_factor"] = 0.5.into()
    });
    let e = convert_fails(&d, &out);
    assert!(e.contains("long_factor"), "{e}");
    // Qwen2 with more layers than the checkpoint has: the missing tensors are listed
    let d = edited_fixture("tiny-qwen2", tmp.path(), |c| {
        c["num_hidden_layers"] = 3.into()
    });
    let e = convert_fails(&d, &out);
    assert!(
        e.contains("blk.2.attn_norm.weight") && e.contains("missing"),
        "{e}"
    );
}

/// Rewrite one tensor's safetensors header entry of a copied checkpoint (the data stays).
fn edit_header(dir: &Path, edit: impl Fn(&mut serde_json::Map<String, Json>)) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Map<String, Json> =
            serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        edit(&mut header);
        let mut text = serde_json::to_vec(&Json::Object(header)).unwrap();
        // keep the data where it was: pad the header to its old length
        assert!(text.len() <= n, "edited header grew");
        text.resize(n, b' ');
        let mut out = bytes[..8].to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&path, out).unwrap();
    }
}

#[test]
fn expert_tensors_must_all_be_there_and_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    // an expert missing from the checkpoint: named, with the tensor it would have been
    let d = edited_fixture("tiny-qwen2moe", tmp.path(), |_| {});
    edit_header(&d, |h| {
        h.remove("model.layers.1.mlp.experts.2.up_proj.weight");
    });
    let e = convert_fails(&d, &out);
    assert!(
        e.contains("model.layers.1.mlp.experts.2.up_proj.weight")
            && e.contains("blk.1.ffn_up_exps.weight"),
        "{e}"
    );
    // experts of unequal shapes (expert 3's down_proj claims another shape, same bytes)
    let d = edited_fixture("tiny-mixtral", &tmp.path().join("b"), |_| {});
    edit_header(&d, |h| {
        let t = h
            .get_mut("model.layers.0.block_sparse_moe.experts.3.w2.weight")
            .unwrap();
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        t["shape"] = serde_json::json!([shape[0] / 2, shape[1] * 2]);
    });
    let e = convert_fails(&d, &out);
    assert!(
        e.contains("experts.3.w2.weight") && e.contains("must match"),
        "{e}"
    );
    // config.json says more experts than the checkpoint has: the router's shape is the first
    // thing that contradicts it
    let d = edited_fixture("tiny-qwen3moe", &tmp.path().join("c"), |c| {
        c["num_experts"] = 5.into()
    });
    let e = convert_fails(&d, &out);
    assert!(
        e.contains("mlp.gate.weight") && e.contains("implies [5, 128]"),
        "{e}"
    );
}

#[test]
fn pre_tokenizer_can_be_named_when_it_cannot_be_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let d = edited_fixture("tiny-qwen2", tmp.path(), |_| {});
    // a regex llama.cpp has no pre-tokenizer for: recognition fails and says --pre
    let tj = d.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj)
        .unwrap()
        .replace(r"\\p{N}|", r"\\p{N}{1,2}|");
    std::fs::write(&tj, text).unwrap();
    let out = tmp.path().join("out.gguf");
    let e = convert_fails(&d, &out);
    assert!(e.contains("--pre NAME") && e.contains("qwen2"), "{e}");
    let run = |pre: &str| {
        Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args([
                "convert",
                d.to_str().unwrap(),
                "-t",
                "f16",
                "--quiet",
                "--pre",
                pre,
                "-o",
            ])
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run("qwen2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.metadata().get("tokenizer.ggml.pre"),
        Some(&Value::String("qwen2".into()))
    );
    std::fs::remove_file(&out).unwrap();
    let o = run("no-such-pre");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("llama-bpe") && e.contains("no-such-pre"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn gemma3_conditional_generation_converts_to_its_text_model() {
    // tiny-gemma3 repackaged as transformers saves Gemma3ForConditionalGeneration: the text
    // config under text_config, the weights under model.language_model., a vision tower and
    // projector beside them. llama.cpp's converter writes the same file for both forms (checked
    // once against it); qforge must too.
    use safetensors::tensor::{Dtype, TensorView};
    let tmp = tempfile::tempdir().unwrap();
    let src = root().join("fixtures/tiny-gemma3");
    let dst = tmp.path().join("tiny-gemma3-vl");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut text: Json =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    text.as_object_mut().unwrap().remove("architectures");
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": text, "vision_config": {"hidden_size": 32, "model_type": "siglip_vision_model"},
        "torch_dtype": "bfloat16"
    });
    std::fs::write(dst.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ones = [0x80u8, 0x3f].repeat(32); // bf16 1.0
    let mut views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let renamed = format!(
                "model.language_model.{}",
                name.strip_prefix("model.").unwrap()
            );
            (renamed, v)
        })
        .collect();
    for extra in [
        "model.vision_tower.vision_model.post_layernorm.weight",
        "model.multi_modal_projector.mm_soft_emb_norm.weight",
    ] {
        views.push((
            extra.to_string(),
            TensorView::new(Dtype::BF16, vec![32], &ones).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, &None, &dst.join("model.safetensors")).unwrap();
    let golden: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/golden-arch/tiny-gemma3/converter.json"))
            .unwrap(),
    )
    .unwrap();
    let file = convert_f16(&dst, &tmp.path().join("vl.gguf"));
    let problems = differences(&file, &golden);
    assert!(problems.is_empty(), "{problems:?}");
}
