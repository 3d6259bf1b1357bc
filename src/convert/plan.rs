//! The conversion plan: every output tensor's name, shape, type, byte size and source, plus the
//! complete metadata, all known from headers before any tensor data is touched. The plan is
//! what `--dry-run` prints and what the streaming executor follows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::arch::{self, Architecture, KeyContext, Transform, ValueOp};
use crate::gguf::{Array, GgmlType, GgufFile, Metadata, Value};
use crate::quant::nf4::DqState;
use crate::source::tokenizer::{load_vocab_with, Vocab};
use crate::source::{Checkpoint, SourceDtype, SourceTensor};

use super::recipe::{choose_types_pure_with, choose_types_with, ModelShape, Recipe, TypeOverrides};
use super::ConvertError;

/// Metadata key holding one lowercase hex SHA-256 per tensor, in tensor-info order.
pub const KEY_TENSOR_SHA256: &str = "qforge.tensor_sha256";
/// Metadata key holding the qforge version that wrote the file.
pub const KEY_VERSION: &str = "qforge.version";

/// Where an output tensor's values come from.
#[derive(Clone, Debug)]
pub enum TensorSource {
    /// A safetensors tensor of the input checkpoint.
    Safetensors(SourceTensor),
    /// Equally shaped safetensors tensors stacked along a new outermost dimension (MoE
    /// experts: ggml `ne2` = the expert index); streamed row by row like one tensor.
    Stacked(Vec<SourceTensor>),
    /// Tensor `index` of the input GGUF file (with its double-quantization state when the
    /// tensor is NF4_DQ).
    Gguf {
        index: usize,
        dq: Option<Arc<DqState>>,
    },
    /// The double-quantization state of the NF4_DQ tensor just before it in the plan.
    Nf4DqState,
    /// Values computed by the planner (e.g. `rope_freqs.weight`).
    Generated(Vec<f32>),
}

/// One output tensor.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// ggml dimensions, `ne[0]` (the row length) first.
    pub dims: Vec<u64>,
    /// Output type.
    pub ty: GgmlType,
    /// Source element type, for the plan table.
    pub source_type: String,
    pub source: TensorSource,
    /// Row reordering applied on the way.
    pub transform: Transform,
    /// Value change applied on the way (after the reordering).
    pub values: ValueOp,
    /// Round values through f16 before quantizing, so the bytes equal llama-quantize's output
    /// when it quantizes our own f16 file.
    pub f16_intermediate: bool,
    /// Importance weights (imatrix entry): `ne0` values per expert (one set for 2-D tensors).
    pub importance: Option<Arc<Vec<f32>>>,
}

impl PlannedTensor {
    /// The safetensors tensor holding source row `row` and the row's index within it.
    pub fn source_part(&self, row: usize) -> Option<(&SourceTensor, usize)> {
        match &self.source {
            TensorSource::Safetensors(src) => Some((src, row)),
            TensorSource::Stacked(parts) => {
                let per = self.dims.get(1).copied().unwrap_or(1).max(1) as usize;
                parts.get(row / per).map(|p| (p, row % per))
            }
            _ => None,
        }
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    pub fn n_rows(&self) -> usize {
        (self.n_elements() / self.dims[0].max(1)) as usize
    }

    pub fn n_bytes(&self) -> u64 {
        self.ty
            .bytes_for(self.n_elements())
            .expect("planner only picks types whose block divides the row")
    }
}

/// What the converter will do.
pub struct Plan {
    pub input: PathBuf,
    pub recipe: Option<Recipe>,
    pub metadata: Metadata,
    pub tensors: Vec<PlannedTensor>,
    pub alignment: u64,
    /// Things the user should know about the plan (e.g. tensors an imatrix has no entry for).
    pub notes: Vec<String>,
}

impl Plan {
    /// Bytes of tensor data (with alignment padding).
    pub fn data_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.n_bytes().div_ceil(self.alignment) * self.alignment)
            .sum()
    }
}

/// The opened input. One exists per conversion, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Checkpoint(Checkpoint),
    /// A GGUF file, or the logical view of a split set ([`GgufFile::is_split`]).
    Gguf(GgufFile),
}

impl Input {
    /// Open a model folder, a `.safetensors` file or a `.gguf` file; the first shard of a
    /// split set opens the whole set ([`GgufFile::open_model`]), another shard is refused.
    pub fn open(path: &Path) -> Result<Input, ConvertError> {
        if is_gguf_file(path) {
            Ok(Input::Gguf(GgufFile::open_model(path)?))
        } else {
            Ok(Input::Checkpoint(Checkpoint::open(path)?))
        }
    }
}

/// Whether `path` is a file that starts with the GGUF magic (reads four bytes).
pub(crate) fn is_gguf_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|_| &magic == b"GGUF")
}

fn ggml_dims(shape: &[usize]) -> Vec<u64> {
    if shape.is_empty() {
        return vec![1];
    }
    shape.iter().rev().map(|&d| d as u64).collect()
}

fn dtype_type(d: SourceDtype) -> GgmlType {
    match d {
        SourceDtype::F32 => GgmlType::F32,
        SourceDtype::F16 => GgmlType::F16,
        SourceDtype::Bf16 => GgmlType::Bf16,
    }
}

/// The default recipe when `-t` is absent: the source precision.
fn source_precision(tensors: &[SourceTensor]) -> Recipe {
    match tensors.iter().find(|t| t.shape.len() >= 2).map(|t| t.dtype) {
        Some(SourceDtype::Bf16) => Recipe::Bf16,
        Some(SourceDtype::F32) => Recipe::F32,
        _ => Recipe::F16,
    }
}

/// Build the plan for converting `input` with `recipe` (None = keep the source precision).
pub fn plan(input: &Input, path: &Path, recipe: Option<Recipe>) -> Result<Plan, ConvertError> {
    plan_with(input, path, recipe, &TypeOverrides::default())
}

/// [`plan`] with per-tensor type overrides.
pub fn plan_with(
    input: &Input,
    path: &Path,
    recipe: Option<Recipe>,
    ov: &TypeOverrides,
) -> Result<Plan, ConvertError> {
    plan_with_options(input, path, recipe, ov, &PlanOptions::default())
}

/// Choices about the conversion that are not tensor types.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// `tokenizer.ggml.pre` for a byte-level BPE tokenizer, instead of recognising it from
    /// tokenizer.json (one of llama.cpp's names).
    pub pre_tokenizer: Option<String>,
    /// An importance matrix (already filtered), used as llama-quantize uses it.
    pub imatrix: Option<Arc<crate::source::imatrix::Imatrix>>,
}

/// [`plan_with`] with [`PlanOptions`].
pub fn plan_with_options(
    input: &Input,
    path: &Path,
    recipe: Option<Recipe>,
    ov: &TypeOverrides,
    opts: &PlanOptions,
) -> Result<Plan, ConvertError> {
    match input {
        Input::Checkpoint(ck) => match &ck.config {
            Some(config) if !config.architectures.is_empty() || path.is_dir() => {
                let arch = arch::detect(config)?;
                plan_arch(ck, arch.as_ref(), recipe, ov, opts)
            }
            _ => plan_plain(ck, recipe, ov),
        },
        Input::Gguf(g) => plan_gguf(g, path, recipe, ov, opts),
    }
}

fn base_name(path: &Path) -> String {
    if let Some(name) = crate::source::hf_cache::model_name_of_snapshot(path) {
        return name;
    }
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

fn put(m: &mut Metadata, key: &str, v: Value) -> Result<(), ConvertError> {
    m.insert(key, v).map_err(ConvertError::from)
}

/// Convert an HF checkpoint of a supported architecture.
fn plan_arch(
    ck: &Checkpoint,
    arch: &dyn Architecture,
    recipe: Option<Recipe>,
    ov: &TypeOverrides,
    opts: &PlanOptions,
) -> Result<Plan, ConvertError> {
    let config = ck.config.as_ref().expect("checked by caller");
    let recipe = recipe.unwrap_or_else(|| source_precision(ck.tensors()));

    let mut tensors: Vec<PlannedTensor> = Vec::new();
    let mut has_output = false;
    // Expert weights by the GGUF name of the tensor that stacks them, in first-seen order.
    let mut experts: Vec<(String, Vec<(u32, SourceTensor)>)> = Vec::new();
    for t in ck.tensors() {
        let Some(mapped) = arch.map_tensor(&t.name)? else {
            continue;
        };
        if let Some(k) = mapped.expert {
            match experts.iter_mut().find(|(n, _)| *n == mapped.name) {
                Some((_, list)) => list.push((k, t.clone())),
                None => experts.push((mapped.name, vec![(k, t.clone())])),
            }
            continue;
        }
        has_output |= mapped.name == "output.weight";
        if let Transform::PermuteRope { n_head } = mapped.transform {
            let rows = t.shape.first().copied().unwrap_or(0);
            if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
                return Err(ConvertError::Plan(format!(
                    "tensor '{}': {rows} rows cannot be split into {n_head} heads of even size \
                     for the rotary permutation (config.json and the weights disagree)",
                    t.name
                )));
            }
        }
        check_shape(arch, &t.name, &mapped.name, &t.shape)?;
        tensors.push(PlannedTensor {
            name: mapped.name,
            dims: ggml_dims(&t.shape),
            ty: GgmlType::F32,
            source_type: t.dtype.name().to_string(),
            source: TensorSource::Safetensors(t.clone()),
            transform: mapped.transform,
            values: mapped.values,
            f16_intermediate: false,
            importance: None,
        });
    }
    let n_expert = arch.quant_hints().n_expert;
    for (name, list) in experts {
        tensors.push(stack_experts(arch, &name, list, n_expert)?);
    }
    let missing: Vec<String> = arch
        .required_tensors()
        .into_iter()
        .filter(|n| !tensors.iter().any(|t| &t.name == n))
        .collect();
    if !missing.is_empty() {
        return Err(ConvertError::Plan(format!(
            "{}: {} tensor(s) llama.cpp requires are missing from the checkpoint: {}{}",
            ck.path.display(),
            missing.len(),
            missing
                .iter()
                .take(6)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 6 { ", ..." } else { "" }
        )));
    }
    for (name, values) in arch.generated_tensors() {
        tensors.push(PlannedTensor {
            name,
            dims: vec![values.len() as u64],
            ty: GgmlType::F32,
            source_type: "computed".into(),
            source: TensorSource::Generated(values),
            transform: Transform::None,
            values: ValueOp::None,
            f16_intermediate: false,
            importance: None,
        });
    }
    // llama-quantize's tensor order, so the file is laid out as llama.cpp lays out its own.
    let names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let order = super::recipe::quantize_order(&names);
    let mut tensors: Vec<PlannedTensor> = order.into_iter().map(|i| tensors[i].clone()).collect();

    let hints = arch.quant_hints();
    let shape = ModelShape {
        n_layer: hints.n_layer,
        n_head: hints.n_head,
        n_head_kv: hints.n_head_kv,
        n_expert: hints.n_expert,
        is_70b: hints.is_70b,
        tied: !has_output,
        has_imatrix: has_imatrix(opts),
    };
    let spec = name_dims(&tensors);
    let types = choose_types_with(recipe, shape, &spec, ov);
    for (t, ty) in tensors.iter_mut().zip(types) {
        t.ty = ty;
        // An f16 source is already on the f16 grid; rounding again would be a no-op.
        t.f16_intermediate = ty.is_quantized() && !ty.is_extension() && t.source_type != "F16";
    }

    if recipe.is_quantized() {
        collapse_trailing_ones(&mut tensors);
    }
    let notes = attach_importance(&mut tensors, opts)?;
    let tensors = add_nf4_state_tensors(tensors);
    check_names(&tensors)?;
    let mut vocab = load_vocab_with(
        &ck.path,
        config,
        arch.vocab_style(),
        opts.pre_tokenizer.as_deref(),
    )?;
    arch.adjust_vocab(&mut vocab);
    if let (Some(pre), "gpt2") = (&opts.pre_tokenizer, vocab.model.as_str()) {
        vocab.pre = pre.clone(); // the user's choice stands over the family's naming
    }
    let mut m = Metadata::new();
    put(
        &mut m,
        "general.architecture",
        Value::String(arch.gguf_arch().into()),
    )?;
    put(&mut m, "general.type", Value::String("model".into()))?;
    put(&mut m, "general.name", Value::String(base_name(&ck.path)))?;
    let ctx = KeyContext {
        file_type: recipe.file_type(),
        n_vocab: u32::try_from(vocab.tokens.len()).expect("vocabulary size is capped"),
    };
    for (key, value) in arch.hparams(ctx) {
        put(&mut m, &key, value)?;
    }
    put_vocab(&mut m, &vocab)?;
    finish_metadata(&mut m, &tensors, recipe)?;
    put_imatrix_metadata(&mut m, opts)?;
    Ok(Plan {
        input: ck.path.clone(),
        recipe: Some(recipe),
        metadata: m,
        tensors,
        alignment: 32,
        notes,
    })
}

/// llama-quantize writes every tensor with `ggml_n_dims` dimensions: trailing 1s dropped (a
/// `{E, 1}` gate becomes `{E}`). Quantized files follow it so they equal its output.
fn collapse_trailing_ones(tensors: &mut [PlannedTensor]) {
    for t in tensors {
        while t.dims.len() > 1 && t.dims.last() == Some(&1) {
            t.dims.pop();
        }
    }
}

/// The shape llama.cpp will check for `gguf` (from the architecture), against a source shape.
fn check_shape(
    arch: &dyn Architecture,
    source: &str,
    gguf: &str,
    shape: &[usize],
) -> Result<(), ConvertError> {
    let Some(want) = arch.expected_shape(gguf) else {
        return Ok(());
    };
    let fits = want.len() == shape.len()
        && want
            .iter()
            .zip(shape)
            .all(|(w, &d)| w.is_none_or(|w| w == d));
    if fits {
        return Ok(());
    }
    let want: Vec<String> = want
        .iter()
        .map(|w| w.map_or("*".to_string(), |w| w.to_string()))
        .collect();
    Err(ConvertError::Plan(format!(
        "tensor '{source}': shape {shape:?} but config.json implies [{}] (llama.cpp would refuse the file)",
        want.join(", ")
    )))
}

/// One 3-D tensor from the `n_expert` 2-D expert weights that map to `name`: every expert
/// present once, all of one shape and dtype.
fn stack_experts(
    arch: &dyn Architecture,
    name: &str,
    mut list: Vec<(u32, SourceTensor)>,
    n_expert: u32,
) -> Result<PlannedTensor, ConvertError> {
    list.sort_by_key(|(k, _)| *k);
    let first = list[0].1.clone();
    let sibling = |k: u32| {
        // the HF name of expert k, spelled like the first one found
        let k0 = list[0].0;
        first
            .name
            .replace(&format!("experts.{k0}."), &format!("experts.{k}."))
    };
    for want in 0..n_expert {
        match list.get(want as usize) {
            Some((k, _)) if *k == want => {}
            Some((k, t)) if *k < want => {
                return Err(ConvertError::Plan(format!(
                    "tensor '{}': expert {k} of '{name}' appears twice",
                    t.name
                )))
            }
            _ => {
                return Err(ConvertError::Plan(format!(
                    "tensor '{}' is missing: '{name}' stacks {n_expert} experts (config.json), \
                     expert {want} is not in the checkpoint",
                    sibling(want)
                )))
            }
        }
    }
    if let Some((k, t)) = list.get(n_expert as usize) {
        return Err(ConvertError::Plan(format!(
            "tensor '{}': expert {k}, but config.json says {n_expert} experts",
            t.name
        )));
    }
    for (_, t) in &list[1..] {
        if t.shape != first.shape || t.dtype != first.dtype {
            return Err(ConvertError::Plan(format!(
                "tensor '{}': {} {:?}, but '{}' is {} {:?}; experts stacked into '{name}' must match",
                t.name,
                t.dtype.name(),
                t.shape,
                first.name,
                first.dtype.name(),
                first.shape
            )));
        }
    }
    let mut shape = vec![list.len()];
    shape.extend_from_slice(&first.shape);
    check_shape(arch, &first.name, name, &shape)?;
    Ok(PlannedTensor {
        name: name.to_string(),
        dims: ggml_dims(&shape),
        ty: GgmlType::F32,
        source_type: first.dtype.name().to_string(),
        source: TensorSource::Stacked(list.into_iter().map(|(_, t)| t).collect()),
        transform: Transform::None,
        values: ValueOp::None,
        f16_intermediate: false,
        importance: None,
    })
}

fn put_vocab(m: &mut Metadata, v: &Vocab) -> Result<(), ConvertError> {
    put(m, "tokenizer.ggml.model", Value::String(v.model.clone()))?;
    put(m, "tokenizer.ggml.pre", Value::String(v.pre.clone()))?;
    put(
        m,
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(v.tokens.clone())),
    )?;
    if let Some(scores) = &v.scores {
        put(
            m,
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(scores.clone())),
        )?;
    }
    put(
        m,
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(v.token_types.clone())),
    )?;
    if !v.merges.is_empty() {
        put(
            m,
            "tokenizer.ggml.merges",
            Value::Array(Array::String(v.merges.clone())),
        )?;
    }
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", v.bos),
        ("tokenizer.ggml.eos_token_id", v.eos),
        ("tokenizer.ggml.unknown_token_id", v.unk),
        ("tokenizer.ggml.padding_token_id", v.pad),
    ] {
        if let Some(id) = id {
            put(m, key, Value::U32(id))?;
        }
    }
    for (key, flag) in [
        ("tokenizer.ggml.add_bos_token", v.add_bos),
        ("tokenizer.ggml.add_eos_token", v.add_eos),
        ("tokenizer.ggml.add_sep_token", v.add_sep),
        ("tokenizer.ggml.add_space_prefix", v.add_space_prefix),
    ] {
        if let Some(flag) = flag {
            put(m, key, Value::Bool(flag))?;
        }
    }
    if let Some(t) = &v.chat_template {
        put(m, "tokenizer.chat_template", Value::String(t.clone()))?;
    }
    Ok(())
}

/// Keys every qforge file ends with: the quantization version, our version, extension-type
/// metadata and the placeholder for the tensor hashes.
fn finish_metadata(
    m: &mut Metadata,
    tensors: &[PlannedTensor],
    _recipe: Recipe,
) -> Result<(), ConvertError> {
    put(m, "general.quantization_version", Value::U32(2))?;
    put(
        m,
        KEY_VERSION,
        Value::String(env!("CARGO_PKG_VERSION").into()),
    )?;
    if tensors.iter().any(|t| t.ty.is_extension()) {
        super::nf4_meta::put_nf4_metadata(m)?;
    }
    // Same-length placeholders, patched once every tensor's hash is known.
    put(
        m,
        KEY_TENSOR_SHA256,
        Value::Array(Array::String(vec!["0".repeat(64); tensors.len()])),
    )?;
    Ok(())
}

/// Convert a bare safetensors file (or folder without config): names kept, every tensor of
/// two or more dimensions gets the recipe's type.
fn plan_plain(
    ck: &Checkpoint,
    recipe: Option<Recipe>,
    ov: &TypeOverrides,
) -> Result<Plan, ConvertError> {
    let recipe = recipe.unwrap_or_else(|| source_precision(ck.tensors()));
    let mut tensors: Vec<PlannedTensor> = ck
        .tensors()
        .iter()
        .map(|t| PlannedTensor {
            name: t.name.clone(),
            dims: ggml_dims(&t.shape),
            ty: GgmlType::F32,
            source_type: t.dtype.name().into(),
            source: TensorSource::Safetensors(t.clone()),
            transform: Transform::None,
            values: ValueOp::None,
            f16_intermediate: false,
            importance: None,
        })
        .collect();
    let spec = name_dims(&tensors);
    for (t, ty) in tensors
        .iter_mut()
        .zip(choose_types_pure_with(recipe, &spec, ov))
    {
        t.ty = ty;
    }
    let tensors = add_nf4_state_tensors(tensors);
    check_names(&tensors)?;
    let mut m = Metadata::new();
    put(&mut m, "general.name", Value::String(base_name(&ck.path)))?;
    put(&mut m, "general.file_type", Value::U32(recipe.file_type()))?;
    finish_metadata(&mut m, &tensors, recipe)?;
    Ok(Plan {
        input: ck.path.clone(),
        recipe: Some(recipe),
        metadata: m,
        tensors,
        alignment: 32,
        notes: Vec::new(),
    })
}

fn check_names(tensors: &[PlannedTensor]) -> Result<(), ConvertError> {
    for t in tensors {
        if t.name.len() >= 64 {
            return Err(ConvertError::Plan(format!(
                "tensor '{}': name is {} bytes; GGUF allows at most 63",
                t.name,
                t.name.len()
            )));
        }
    }
    Ok(())
}

/// Re-type a GGUF file: metadata kept, tensor types re-chosen (or dequantized to f32/f16).
fn plan_gguf(
    g: &GgufFile,
    path: &Path,
    recipe: Option<Recipe>,
    ov: &TypeOverrides,
    opts: &PlanOptions,
) -> Result<Plan, ConvertError> {
    let recipe = recipe.ok_or_else(|| {
        ConvertError::Plan(format!(
            "{}: a GGUF input needs -t (the type to convert to)",
            path.display()
        ))
    })?;
    // A set opened with GgufFile::open_model has no split keys; a shard opened on its own
    // with GgufFile::open does.
    let count =
        crate::gguf::split_set::split_int(g.metadata(), crate::gguf::split_set::KEY_SPLIT_COUNT)
            .map_err(|k| ConvertError::Plan(format!("{}: {k}", path.display())))?;
    if let Some(count) = count.filter(|&c| c > 1) {
        return Err(ConvertError::Plan(format!(
            "{}: one shard of a {count}-file split opened alone; open the set from its first shard (GgufFile::open_model) to convert the whole model",
            path.display()
        )));
    }
    let mut tensors = Vec::new();
    for (index, info) in g.tensors().iter().enumerate() {
        if super::nf4_meta::is_state_tensor(&info.name) {
            continue; // consumed with the tensor it belongs to
        }
        let dq = dq_state_of(g, index)?.map(Arc::new);
        tensors.push(PlannedTensor {
            name: info.name.clone(),
            // A 0-dimensional (scalar) tensor is one element: written as [1].
            dims: if info.dims.is_empty() {
                vec![1]
            } else {
                info.dims.clone()
            },
            ty: info.ty,
            source_type: info.ty.name(),
            source: TensorSource::Gguf { index, dq },
            transform: Transform::None,
            values: ValueOp::None,
            f16_intermediate: false,
            importance: None,
        });
    }
    let spec = name_dims(&tensors);
    let arch = g
        .metadata()
        .get("general.architecture")
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        });
    let types = if let (Some(a), true) = (arch.as_deref(), recipe.is_quantized()) {
        let get = |k: &str| -> u32 {
            match g.metadata().get(&format!("{a}.{k}")) {
                Some(Value::U32(v)) => *v,
                _ => 0,
            }
        };
        let n_head = get("attention.head_count");
        let kv = get("attention.head_count_kv");
        let n_head_kv = if kv == 0 { n_head } else { kv };
        let n_layer = get("block_count");
        let shape = ModelShape {
            n_layer,
            n_head,
            n_head_kv,
            n_expert: get("expert_count"),
            // llama.cpp's LLM_TYPE_70B, the only model type its type rules look at.
            is_70b: n_layer == 80
                && ((a == "llama" && n_head != n_head_kv) || matches!(a, "qwen2" | "olmo")),
            tied: !tensors.iter().any(|t| t.name == "output.weight"),
            has_imatrix: has_imatrix(opts),
        };
        choose_types_with(recipe, shape, &spec, ov)
    } else {
        // Dequantizing (or a file we do not know): types by dimension, like the pure recipe,
        // but keep the original 1-D types' F32.
        choose_types_pure_with(recipe, &spec, ov)
    };
    for (t, ty) in tensors.iter_mut().zip(types) {
        t.f16_intermediate = false;
        t.ty = ty;
    }
    if recipe.is_quantized() {
        collapse_trailing_ones(&mut tensors);
    }
    let notes = attach_importance(&mut tensors, opts)?;
    let tensors = add_nf4_state_tensors(tensors);
    check_names(&tensors)?;
    let mut m = Metadata::new();
    for (k, v) in g.metadata().iter() {
        if k == KEY_TENSOR_SHA256
            || k == KEY_VERSION
            || k == "general.file_type"
            || k == "general.quantization_version"
            || k.starts_with("qforge.nf4.")
            || k == "general.alignment"
            || (opts.imatrix.is_some() && k.starts_with("quantize.imatrix."))
        {
            continue;
        }
        put(&mut m, k, v.clone())?;
    }
    put(&mut m, "general.file_type", Value::U32(recipe.file_type()))?;
    finish_metadata(&mut m, &tensors, recipe)?;
    put_imatrix_metadata(&mut m, opts)?;
    Ok(Plan {
        input: path.to_path_buf(),
        recipe: Some(recipe),
        metadata: m,
        tensors,
        alignment: 32,
        notes,
    })
}

/// Whether an importance matrix with entries is in use (llama-quantize's `has_imatrix`).
fn has_imatrix(opts: &PlanOptions) -> bool {
    opts.imatrix.as_ref().is_some_and(|m| !m.entries.is_empty())
}

/// The keys llama-quantize writes when it uses an imatrix.
fn put_imatrix_metadata(m: &mut Metadata, opts: &PlanOptions) -> Result<(), ConvertError> {
    if let (true, Some(im)) = (has_imatrix(opts), &opts.imatrix) {
        for (k, v) in im.metadata() {
            put(m, &k, v)?;
        }
    }
    Ok(())
}

/// Give every quantized tensor whose type takes importance weights its imatrix entry, as
/// llama-quantize matches them: by exact name, `ne0 · n_expert` values (a token embedding of
/// another size goes without; any other size is an error). Returns notes for the user.
fn attach_importance(
    tensors: &mut [PlannedTensor],
    opts: &PlanOptions,
) -> Result<Vec<String>, ConvertError> {
    let Some(im) = opts.imatrix.as_ref().filter(|m| !m.entries.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut missing = Vec::new();
    let mut matched = 0usize;
    for t in tensors.iter_mut() {
        if !t.ty.is_quantized() || t.ty.is_extension() {
            continue;
        }
        let Some(entry) = im.entries.get(&t.name) else {
            if crate::quant::weighted::takes_importance(t.ty) {
                missing.push(t.name.clone());
            }
            continue;
        };
        matched += 1;
        let ne0 = t.dims[0] as usize;
        let experts = t.dims.get(2).copied().unwrap_or(1) as usize;
        if entry.len() != ne0 * experts {
            if t.name == "token_embd.weight" || t.name == "per_layer_token_embd.weight" {
                continue;
            }
            return Err(ConvertError::Plan(format!(
                "{}: imatrix entry '{}' has {} values, but the tensor needs {} ({} per row x {} expert(s))",
                im.file,
                t.name,
                entry.len(),
                ne0 * experts,
                ne0,
                experts
            )));
        }
        if crate::quant::weighted::takes_importance(t.ty) {
            t.importance = Some(Arc::new(entry.clone()));
        }
    }
    if matched == 0 {
        return Err(ConvertError::Plan(format!(
            "{}: none of its {} entries names a tensor of this model (an imatrix for another model?)",
            im.file,
            im.entries.len()
        )));
    }
    let mut notes = Vec::new();
    if !missing.is_empty() {
        notes.push(format!(
            "the imatrix has no entry for {} quantized tensor(s), quantized without importance weights as llama-quantize does: {}{}",
            missing.len(),
            missing.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
            if missing.len() > 4 { ", ..." } else { "" }
        ));
    }
    Ok(notes)
}

/// After every NF4_DQ tensor, the F32 tensor that carries its double-quantization state.
fn add_nf4_state_tensors(tensors: Vec<PlannedTensor>) -> Vec<PlannedTensor> {
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if let GgmlType::Nf4Dq { block } = t.ty {
            let n_blocks = (t.n_elements() / block as u64) as usize;
            let state = PlannedTensor {
                name: super::nf4_meta::state_name(&t.name),
                dims: vec![DqState::tensor_len(n_blocks) as u64],
                ty: GgmlType::F32,
                source_type: "computed".into(),
                source: TensorSource::Nf4DqState,
                transform: Transform::None,
                values: ValueOp::None,
                f16_intermediate: false,
                importance: None,
            };
            out.push(t);
            out.push(state);
        } else {
            out.push(t);
        }
    }
    out
}

/// The double-quantization state tensor `index` of a GGUF file needs to be read: `Some` for an
/// NF4_DQ tensor (from its state tensor), `None` for every other type.
pub(crate) fn dq_state_of(g: &GgufFile, index: usize) -> Result<Option<DqState>, ConvertError> {
    match g.tensors()[index].ty {
        GgmlType::Nf4Dq { block } => Ok(Some(load_dq_state(g, index, block)?)),
        _ => Ok(None),
    }
}

/// Read the double-quantization state of NF4_DQ tensor `index` of a GGUF file.
pub fn load_dq_state(g: &GgufFile, index: usize, block: u32) -> Result<DqState, ConvertError> {
    let info = &g.tensors()[index];
    let bad = |msg: String| {
        ConvertError::Plan(format!(
            "{}: tensor '{}': {msg}",
            g.path().display(),
            info.name
        ))
    };
    super::nf4_meta::check_nf4_metadata(g.metadata()).map_err(&bad)?;
    let name = super::nf4_meta::state_name(&info.name);
    let (si, st) = g
        .tensor_by_name(&name)
        .ok_or_else(|| bad(format!("its state tensor '{name}' is missing")))?;
    let n_blocks = (info.n_elements() / block as u64) as usize;
    if st.ty != GgmlType::F32 || st.n_elements() as usize != DqState::tensor_len(n_blocks) {
        return Err(bad(format!(
            "state tensor '{name}' must be F32 with {} elements",
            DqState::tensor_len(n_blocks)
        )));
    }
    let values: Vec<f32> = g
        .tensor_data(si)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    DqState::from_values(&values, n_blocks).ok_or_else(|| bad("bad state tensor".into()))
}

/// (GGUF name, ggml dims) of every tensor, what the type rules look at.
fn name_dims(tensors: &[PlannedTensor]) -> Vec<(String, Vec<u64>)> {
    tensors
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone()))
        .collect()
}

/// The source dtype of a planned safetensors tensor as a ggml type.
pub fn source_ggml_type(t: &SourceTensor) -> GgmlType {
    dtype_type(t.dtype)
}
