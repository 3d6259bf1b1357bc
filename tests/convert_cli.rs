//! End-to-end `qforge convert` / `verify` through the binary, on checkpoints the tests build:
//! output structure, names, RoPE permutation, metadata types, tokenizer keys, thread-count
//! independence, and every error path (each with a clear message and no output file left).

use std::path::{Path, PathBuf};
use std::process::Command;

use qforge::gguf::{Array, GgmlType, GgufFile, Value};
use safetensors::tensor::{Dtype, TensorView};

const HIDDEN: usize = 64;
const FF: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const LAYERS: usize = 2;

fn qforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("run qforge")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deterministic pseudo-random weights (xorshift), so tests need no RNG crate state.
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

struct Model {
    dir: tempfile::TempDir,
}

impl Model {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn bytes_of(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    }
}

/// A small Llama checkpoint with a byte-level BPE tokenizer (256 byte tokens, a few merges).
fn tiny_llama(dtype: Dtype, tied: bool) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let vocab = 260usize;
    let hd = HIDDEN / HEADS;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        (
            "model.embed_tokens.weight".into(),
            vec![vocab, HIDDEN],
            weights(vocab * HIDDEN, 1),
        ),
        ("model.norm.weight".into(), vec![HIDDEN], vec![1.0; HIDDEN]),
    ];
    if !tied {
        tensors.push((
            "lm_head.weight".into(),
            vec![vocab, HIDDEN],
            weights(vocab * HIDDEN, 2),
        ));
    }
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}.");
        let s = 100 * (l as u64 + 1);
        tensors.extend([
            (
                p.clone() + "input_layernorm.weight",
                vec![HIDDEN],
                weights(HIDDEN, s),
            ),
            (
                p.clone() + "self_attn.q_proj.weight",
                vec![HIDDEN, HIDDEN],
                weights(HIDDEN * HIDDEN, s + 1),
            ),
            (
                p.clone() + "self_attn.k_proj.weight",
                vec![KV_HEADS * hd, HIDDEN],
                weights(KV_HEADS * hd * HIDDEN, s + 2),
            ),
            (
                p.clone() + "self_attn.v_proj.weight",
                vec![KV_HEADS * hd, HIDDEN],
                weights(KV_HEADS * hd * HIDDEN, s + 3),
            ),
            (
                p.clone() + "self_attn.o_proj.weight",
                vec![HIDDEN, HIDDEN],
                weights(HIDDEN * HIDDEN, s + 4),
            ),
            (
                p.clone() + "post_attention_layernorm.weight",
                vec![HIDDEN],
                weights(HIDDEN, s + 5),
            ),
            (
                p.clone() + "mlp.gate_proj.weight",
                vec![FF, HIDDEN],
                weights(FF * HIDDEN, s + 6),
            ),
            (
                p.clone() + "mlp.up_proj.weight",
                vec![FF, HIDDEN],
                weights(FF * HIDDEN, s + 7),
            ),
            (
                p.clone() + "mlp.down_proj.weight",
                vec![HIDDEN, FF],
                weights(FF * HIDDEN, s + 8),
            ),
        ]);
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), bytes_of(dtype, v)))
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.path().join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": vocab, "tie_word_embeddings": tied, "torch_dtype": "float16",
        "bos_token_id": 258, "eos_token_id": 259
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    // GPT-2 byte-to-unicode surface forms for the 256 byte tokens.
    let mut byte_tokens: Vec<String> = Vec::new();
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        byte_tokens.push(if printable {
            char::from_u32(b).unwrap().to_string()
        } else {
            let c = char::from_u32(256 + n).unwrap().to_string();
            n += 1;
            c
        });
    }
    let mut vocab_map = serde_json::Map::new();
    for (i, t) in byte_tokens.iter().enumerate() {
        vocab_map.insert(t.clone(), i.into());
    }
    vocab_map.insert("he".into(), 256.into());
    vocab_map.insert("Ġt".into(), 257.into());
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 258, "content": "<|begin_of_text|>", "special": true},
            {"id": 259, "content": "<|end_of_text|>", "special": true}
        ],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "vocab": vocab_map, "merges": ["h e", ["Ġ", "t"]]}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": "{{ messages }}"}"#,
    )
    .unwrap();
    Model { dir }
}

impl Model {
    /// Apply text replacements to config.json.
    fn edit_config(&self, edits: &[(&str, &str)]) {
        let cfg = self.path().join("config.json");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "config.json lacks {from}");
            text = text.replace(from, to);
        }
        std::fs::write(&cfg, text).unwrap();
    }
}

fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn convert(model: &Path, ty: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert",
        model.to_str().unwrap(),
        "-t",
        ty,
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    qforge(&args)
}

fn f32_data(file: &GgufFile, name: &str) -> Vec<f32> {
    let i = file.tensors().iter().position(|t| t.name == name).unwrap();
    let t = &file.tensors()[i];
    let mut v = vec![0f32; t.n_elements() as usize];
    qforge::quant::dequantize(t.ty, file.tensor_data(i), &mut v).unwrap();
    v
}

#[test]
fn f16_output_has_llama_names_types_and_permuted_rows() {
    let m = tiny_llama(Dtype::F16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "f16.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    let meta = f.metadata();
    assert_eq!(
        meta.get("general.architecture"),
        Some(&Value::String("llama".into()))
    );
    assert_eq!(
        meta.get("llama.block_count"),
        Some(&Value::U32(LAYERS as u32))
    );
    assert_eq!(
        meta.get("llama.attention.head_count_kv"),
        Some(&Value::U32(KV_HEADS as u32))
    );
    assert_eq!(meta.get("llama.rope.freq_base"), Some(&Value::F32(10000.0)));
    assert_eq!(
        meta.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&Value::F32(1e-5))
    );
    assert_eq!(meta.get("general.file_type"), Some(&Value::U32(1)));
    assert_eq!(
        meta.get("general.quantization_version"),
        Some(&Value::U32(2))
    );
    assert_eq!(
        meta.get("tokenizer.ggml.model"),
        Some(&Value::String("gpt2".into()))
    );
    assert_eq!(
        meta.get("tokenizer.ggml.pre"),
        Some(&Value::String("gpt-2".into()))
    );
    assert_eq!(
        meta.get("tokenizer.ggml.bos_token_id"),
        Some(&Value::U32(258))
    );
    assert_eq!(
        meta.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    match meta.get("tokenizer.ggml.merges") {
        Some(Value::Array(Array::String(m))) => assert_eq!(m, &["h e", "Ġ t"]),
        other => panic!("merges: {other:?}"),
    }
    let ty = |n: &str| f.tensors().iter().find(|t| t.name == n).unwrap().ty;
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::F16);
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
    assert_eq!(ty("output.weight"), GgmlType::F16);
    // K rows permuted per KV head: output row 2i+p of a head = source row p*hd/2+i.
    let hd = HIDDEN / HEADS;
    let src = weights(KV_HEADS * hd * HIDDEN, 102);
    let k = f32_data(&f, "blk.0.attn_k.weight");
    for h in 0..KV_HEADS {
        for i in 0..hd / 2 {
            for p in 0..2 {
                let out_row = h * hd + 2 * i + p;
                let src_row = h * hd + p * (hd / 2) + i;
                for c in 0..HIDDEN {
                    let want = half::f16::from_f32(src[src_row * HIDDEN + c]).to_f32();
                    assert_eq!(k[out_row * HIDDEN + c], want);
                }
            }
        }
    }
    // V is not permuted.
    let v = f32_data(&f, "blk.1.attn_v.weight");
    let vsrc = weights(KV_HEADS * hd * HIDDEN, 203);
    assert_eq!(
        v[HIDDEN + 3],
        half::f16::from_f32(vsrc[HIDDEN + 3]).to_f32()
    );
    // verify passes and checks every hash
    let o = qforge(&["verify", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!(
        "{} tensor hashes checked, 0 mismatched",
        f.tensors().len()
    )));
}

#[test]
fn output_bytes_do_not_depend_on_threads() {
    let m = tiny_llama(Dtype::BF16, true);
    let tmp = tempfile::tempdir().unwrap();
    let a = out_path(&tmp, "a.gguf");
    let b = out_path(&tmp, "b.gguf");
    assert!(convert(m.path(), "q4_0", &a, &["--threads", "1"])
        .status
        .success());
    assert!(convert(m.path(), "q4_0", &b, &["--threads", "3"])
        .status
        .success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let f = GgufFile::open(&a).unwrap();
    // tied: no output.weight, token_embd takes the output rule (Q6_K needs 256 | ne0; 64 does
    // not, so llama-quantize picks Q8_0)
    assert!(f.tensors().iter().all(|t| t.name != "output.weight"));
    let embd = f
        .tensors()
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(embd.ty, GgmlType::Q8_0);
}

#[test]
fn default_type_is_the_source_precision() {
    let m = tiny_llama(Dtype::BF16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = qforge(&[
        "convert",
        m.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    let q = f
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q.ty, GgmlType::Bf16);
    assert_eq!(f.metadata().get("general.file_type"), Some(&Value::U32(32)));
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let m = tiny_llama(Dtype::F16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "never.gguf");
    let o = convert(m.path(), "q8_0", &out, &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("blk.1.ffn_down.weight"), "{text}");
    assert!(text.contains("Q8_0"), "{text}");
    assert!(!out.exists());
}

fn assert_fails_cleanly(o: &std::process::Output, out: &Path, needles: &[&str]) {
    assert!(!o.status.success(), "expected failure");
    let e = stderr(o);
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
    assert!(!out.exists(), "{} was left behind", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn unsupported_architecture_fails_before_output() {
    let m = tiny_llama(Dtype::F16, false);
    m.edit_config(&[("LlamaForCausalLM", "GPTNeoXForCausalLM")]);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert_fails_cleanly(
        &o,
        &out,
        &[
            "unsupported architecture GPTNeoXForCausalLM",
            "LlamaForCausalLM",
        ],
    );
}

/// Overwrite element `index` of `tensor` in the model's safetensors file with `bits`.
fn poison(m: &Model, tensor: &str, index: usize, bits: &[u8]) {
    let st = m.path().join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let begin = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + header_len + begin + bits.len() * index;
    bytes[at..at + bits.len()].copy_from_slice(bits);
    std::fs::write(&st, bytes).unwrap();
}

#[test]
fn nan_in_a_weight_names_tensor_and_index() {
    let m = tiny_llama(Dtype::F32, false);
    poison(
        &m,
        "model.layers.1.mlp.up_proj.weight",
        77,
        &f32::NAN.to_le_bytes(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = convert(m.path(), "q8_0", &out, &[]);
    assert_fails_cleanly(&o, &out, &["blk.1.ffn_up.weight", "element 77", "NaN"]);
}

#[test]
fn infinity_is_caught_when_rows_are_copied_unconverted() {
    // f16 -> f16 copies bytes; K is permuted, so the reported index is the source element.
    let m = tiny_llama(Dtype::F16, false);
    poison(
        &m,
        "model.layers.0.self_attn.k_proj.weight",
        200,
        &half::f16::INFINITY.to_le_bytes(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert_fails_cleanly(&o, &out, &["blk.0.attn_k.weight", "element 200", "inf"]);
}

#[test]
fn truncated_safetensors_names_the_file() {
    let m = tiny_llama(Dtype::F16, false);
    let st = m.path().join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert_fails_cleanly(&o, &out, &["model.safetensors", "truncated"]);
}

#[test]
fn unwritable_output_location_is_reported() {
    let m = tiny_llama(Dtype::F16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("no-such-dir").join("x.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-dir"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn verify_names_a_corrupted_tensor() {
    let m = tiny_llama(Dtype::F16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    assert!(convert(m.path(), "q8_0", &out, &[]).status.success());
    let f = GgufFile::open(&out).unwrap();
    let i = f
        .tensors()
        .iter()
        .position(|t| t.name == "blk.0.ffn_gate.weight")
        .unwrap();
    let at = f.data_offset() + f.tensors()[i].offset + 5;
    drop(f);
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(&out, bytes).unwrap();
    let o = qforge(&["verify", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("MISMATCH blk.0.ffn_gate.weight"), "{text}");
    assert!(text.contains("1 mismatched"), "{text}");
}

#[test]
fn verify_against_source_reports_error_bounds() {
    let m = tiny_llama(Dtype::F16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    assert!(convert(m.path(), "q8_0", &out, &[]).status.success());
    let o = qforge(&[
        "verify",
        out.to_str().unwrap(),
        "--against",
        m.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["against"].as_array().unwrap();
    assert_eq!(rows.len(), 3 + 9 * LAYERS);
    for r in rows {
        let name = r["name"].as_str().unwrap();
        let rmse = r["rmse"].as_f64().unwrap();
        if r["type"] == "F32" {
            assert_eq!(rmse, 0.0, "{name} should be exact");
        } else {
            // weights are uniform in ±0.05: Q8_0's step is ≤ 0.05/127, RMSE well under it
            assert!(rmse > 0.0 && rmse < 2.5e-4, "{name}: rmse {rmse}");
            assert!(r["snr_db"].as_f64().unwrap() > 35.0, "{name}");
        }
    }
}

/// A quantizing recipe writes Qwen2-MoE's [n, 1] shared-expert gate as [n] (as llama-quantize
/// does); verify --against still pairs it with its source tensor.
#[test]
fn verify_against_accepts_a_squeezed_shared_expert_gate() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-qwen2moe");
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    assert!(convert(Path::new(model), "q8_0", &out, &[])
        .status
        .success());
    let file = qforge::gguf::GgufFile::open(&out).unwrap();
    let (_, gate) = file
        .tensor_by_name("blk.0.ffn_gate_inp_shexp.weight")
        .unwrap();
    assert_eq!(gate.dims.len(), 1, "{:?}", gate.dims);
    let o = qforge(&[
        "verify",
        out.to_str().unwrap(),
        "--against",
        model,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gate = v["against"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "blk.0.ffn_gate_inp_shexp.weight")
        .expect("the gate is compared");
    assert_eq!(gate["rmse"].as_f64(), Some(0.0));
}

#[test]
fn head_count_that_does_not_divide_q_rows_is_an_error() {
    let m = tiny_llama(Dtype::F16, false);
    m.edit_config(&[
        (
            "\"num_attention_heads\":4",
            "\"num_attention_heads\":3,\"head_dim\":16",
        ),
        ("\"num_key_value_heads\":2", "\"num_key_value_heads\":3"),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert_fails_cleanly(
        &o,
        &out,
        &[
            "model.layers.0.self_attn.",
            "split into 3 heads",
            "rotary permutation",
        ],
    );
}

#[test]
fn mistral_architecture_converts_like_llama() {
    let m = tiny_llama(Dtype::F16, false);
    m.edit_config(&[("LlamaForCausalLM", "MistralForCausalLM")]);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "m.gguf");
    let o = convert(m.path(), "q8_0", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.metadata().get("general.architecture"),
        Some(&Value::String("llama".into()))
    );
}

#[test]
fn nf4_output_has_state_tensors_and_decodes_within_bounds() {
    let m = tiny_llama(Dtype::F32, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "nf4.gguf");
    let o = convert(m.path(), "nf4", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    let q = f
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q.ty, GgmlType::Nf4Dq { block: 64 });
    let state = f
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight.nf4dq")
        .unwrap();
    // 64 x 64 weights = 64 blocks of 64: one group, so offset + 1 nested absmax
    assert_eq!((state.ty, state.dims.clone()), (GgmlType::F32, vec![2]));
    let embd = f
        .tensors()
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(embd.ty, GgmlType::F16);
    let o = qforge(&[
        "verify",
        out.to_str().unwrap(),
        "--against",
        m.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for r in v["against"].as_array().unwrap() {
        if r["type"] == "NF4_DQ" {
            // weights uniform in ±0.05: NF4's largest gap is 0.30·absmax, error ≤ 0.0076
            assert!(r["max_abs"].as_f64().unwrap() < 0.0077, "{r}");
            assert!(r["snr_db"].as_f64().unwrap() > 15.0, "{r}");
        }
    }
    let back = out_path(&tmp, "back.gguf");
    let o = qforge(&[
        "convert",
        out.to_str().unwrap(),
        "-t",
        "f16",
        "-o",
        back.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b = GgufFile::open(&back).unwrap();
    assert!(b
        .tensors()
        .iter()
        .all(|t| !t.ty.is_extension() && !t.name.ends_with(".nf4dq")));
    assert!(b.metadata().get("qforge.nf4.codebook").is_none());
}

#[test]
fn implausible_sizes_in_config_are_refused_without_allocating() {
    for (from, to, needle) in [
        (
            "\"vocab_size\":260",
            "\"vocab_size\":4000000000",
            "implausible",
        ),
        (
            "\"num_attention_heads\":4",
            "\"num_attention_heads\":4,\"head_dim\":2147483648",
            "head dimension",
        ),
    ] {
        let m = tiny_llama(Dtype::F16, false);
        m.edit_config(&[(from, to)]);
        let tmp = tempfile::tempdir().unwrap();
        let out = out_path(&tmp, "x.gguf");
        let o = convert(m.path(), "f16", &out, &[]);
        assert_fails_cleanly(&o, &out, &[needle]);
    }
}

#[test]
fn gguf_input_with_scalar_and_empty_tensors_retypes() {
    use qforge::gguf::{write_to_vec, Metadata, TensorSpec};
    let mut m = Metadata::new();
    m.insert("general.name", Value::String("odd".into()))
        .unwrap();
    let scalar = 2.5f32.to_le_bytes();
    let w: Vec<u8> = (0..64)
        .flat_map(|i| (i as f32 / 10.0).to_le_bytes())
        .collect();
    let bytes = write_to_vec(
        &m,
        &[
            (
                TensorSpec {
                    name: "s".into(),
                    dims: vec![],
                    ty: GgmlType::F32,
                },
                &scalar[..],
            ),
            (
                TensorSpec {
                    name: "e".into(),
                    dims: vec![32, 0],
                    ty: GgmlType::F32,
                },
                &[][..],
            ),
            (
                TensorSpec {
                    name: "w".into(),
                    dims: vec![32, 2],
                    ty: GgmlType::F32,
                },
                &w[..],
            ),
        ],
        32,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = out_path(&tmp, "in.gguf");
    std::fs::write(&input, bytes).unwrap();
    let out = out_path(&tmp, "out.gguf");
    let o = convert(&input, "q8_0", &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    let ty = |n: &str| f.tensors().iter().find(|t| t.name == n).unwrap().ty;
    assert_eq!(
        (ty("s"), ty("e"), ty("w")),
        (GgmlType::F32, GgmlType::Q8_0, GgmlType::Q8_0)
    );
    assert_eq!(f32_data(&f, "s"), vec![2.5]);
}

#[test]
fn tensor_type_patterns_first_match_wins_and_bad_specs_are_usage_errors() {
    let m = tiny_llama(Dtype::F16, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp, "x.gguf");
    let o = convert(
        m.path(),
        "q4_0",
        &out,
        &[
            "--tensor-type",
            r"blk\.1\.ffn_.*=q8_0",
            "--tensor-type",
            "ffn_up=f16",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let f = GgufFile::open(&out).unwrap();
    let ty = |n: &str| f.tensors().iter().find(|t| t.name == n).unwrap().ty;
    assert_eq!(ty("blk.1.ffn_up.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.0.ffn_up.weight"), GgmlType::F16);
    assert_eq!(ty("blk.0.ffn_gate.weight"), GgmlType::Q4_0);
    for bad in ["ffn_up", "ffn_up=q7_k", "(=q8_0"] {
        let out = out_path(&tmp, "bad.gguf");
        let o = convert(m.path(), "q4_0", &out, &["--tensor-type", bad]);
        assert!(!o.status.success(), "{bad} accepted");
        assert!(stderr(&o).contains("--tensor-type"), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

#[test]
fn missing_required_tensor_and_shape_contradictions_are_errors() {
    // a layer without its V projection: llama.cpp would refuse the file
    let m = tiny_llama(Dtype::F16, false);
    let st = m.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let loaded = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, TensorView)> = loaded
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.self_attn.v_proj.weight")
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let st2 = tmp.path().join("model.safetensors");
    safetensors::serialize_to_file(kept, &None, &st2).unwrap();
    std::fs::copy(&st2, &st).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_path(&out_dir, "x.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert_fails_cleanly(&o, &out, &["blk.1.attn_v.weight", "missing"]);

    // config says 8 heads of 16 but q_proj has 64 rows
    let m = tiny_llama(Dtype::F16, false);
    m.edit_config(&[(
        "\"num_attention_heads\":4",
        "\"num_attention_heads\":8,\"head_dim\":16",
    )]);
    let out = out_path(&out_dir, "y.gguf");
    let o = convert(m.path(), "f16", &out, &[]);
    assert_fails_cleanly(
        &o,
        &out,
        &["model.layers.0.self_attn.", "config.json implies"],
    );
}
