//! Rendering a validated GGUF header for people (a text report) and programs (one JSON
//! document, schema in spec/FORMAT.md). Pure functions of the header, so they can be fuzzed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::gguf::{Array, GgmlType, GgufHeader, Value};

/// JSON schema version of [`render_json`].
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// What to include.
#[derive(Clone, Copy, Debug, Default)]
pub struct InspectOptions {
    /// Include the tensor table (the JSON always has it).
    pub tensors: bool,
    /// Do not abbreviate long arrays and strings.
    pub full: bool,
}

const ARRAY_PREVIEW: usize = 8;
const STRING_PREVIEW: usize = 200;

/// Escape control characters (C0, DEL, C1), the invisible bidirectional controls that can make
/// text display in a different order than it is stored, and backslashes, so names and strings
/// from a file cannot corrupt or disguise terminal output.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// ALM, LRM, RLM, the embeddings/overrides and the isolates (Unicode's Bidi_Control set).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn preview_string(s: &str, full: bool) -> String {
    if full || s.chars().count() <= STRING_PREVIEW {
        format!("\"{}\"", escape(s))
    } else {
        let head: String = s.chars().take(STRING_PREVIEW).collect();
        format!("\"{}\"... ({} chars)", escape(&head), s.chars().count())
    }
}

/// A value as `inspect` prints it (strings escaped, long strings and arrays abbreviated unless
/// `full`).
pub fn value_text(v: &Value, full: bool) -> String {
    scalar_text(v, full)
}

fn scalar_text(v: &Value, full: bool) -> String {
    match v {
        Value::String(s) => preview_string(s, full),
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::Array(a) => array_text(a, full),
    }
}

fn array_text(a: &Array, full: bool) -> String {
    let n = a.len();
    let shown = if full { n } else { n.min(ARRAY_PREVIEW) };
    let items: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| scalar_text(&v, full))
        .collect();
    if shown < n {
        format!("[len {n}] [{}, ...]", items.join(", "))
    } else {
        format!("[{}]", items.join(", "))
    }
}

fn scalar_json(v: &Value) -> Json {
    match v {
        Value::String(s) => json!(s),
        // JSON has no NaN/inf: write those as strings.
        Value::F32(x) if !x.is_finite() => json!(x.to_string()),
        Value::F64(x) if !x.is_finite() => json!(x.to_string()),
        Value::F32(x) => json!(*x as f64),
        Value::F64(x) => json!(x),
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::Array(_) => Json::Null,
    }
}

struct TypeTotal {
    tensors: u64,
    elements: u64,
    bytes: u64,
}

fn totals(h: &GgufHeader) -> BTreeMap<String, TypeTotal> {
    let mut m: BTreeMap<String, TypeTotal> = BTreeMap::new();
    for t in &h.tensors {
        let e = m.entry(t.ty.name()).or_insert(TypeTotal {
            tensors: 0,
            elements: 0,
            bytes: 0,
        });
        e.tensors += 1;
        e.elements += t.n_elements();
        e.bytes += t.n_bytes();
    }
    m
}

fn overall_bpw(h: &GgufHeader) -> f64 {
    let (e, b) = h.tensors.iter().fold((0u64, 0u64), |(e, b), t| {
        (e + t.n_elements(), b + t.n_bytes())
    });
    if e == 0 {
        0.0
    } else {
        b as f64 * 8.0 / e as f64
    }
}

fn extension_types(h: &GgufHeader) -> Vec<GgmlType> {
    let mut v: Vec<GgmlType> = h
        .tensors
        .iter()
        .map(|t| t.ty)
        .filter(|t| t.is_extension())
        .collect();
    v.dedup();
    v
}

/// The note printed for files llama.cpp cannot load.
pub const EXTENSION_NOTE: &str = "note: this file uses qforge extension types (NF4); llama.cpp cannot load it. Convert it with 'qforge convert FILE -t f16 -o out.gguf'.";

/// The human-readable report.
pub fn render_text(h: &GgufHeader, opts: InspectOptions) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "GGUF version {}", h.version);
    let _ = writeln!(o, "alignment    {}", h.alignment);
    let _ = writeln!(o, "tensors      {}", h.tensors.len());
    let _ = writeln!(o, "metadata     {} keys", h.metadata.len());
    let _ = writeln!(o, "data offset  {}", h.data_offset);
    let _ = writeln!(o, "file size    {}", h.file_size);
    let _ = writeln!(o, "\nmetadata:");
    for (k, v) in h.metadata.iter() {
        let _ = writeln!(
            o,
            "  {:<44} {:<16} {}",
            escape(k),
            v.type_name(),
            scalar_text(v, opts.full)
        );
    }
    if opts.tensors {
        let _ = writeln!(o, "\ntensors:");
        let _ = writeln!(
            o,
            "  {:<44} {:<8} {:<24} {:>12} {:>12} {:>6}",
            "name", "type", "shape (ggml)", "offset", "bytes", "bpw"
        );
        for t in &h.tensors {
            let _ = writeln!(
                o,
                "  {:<44} {:<8} {:<24} {:>12} {:>12} {:>6.2}",
                escape(&t.name),
                t.ty.name(),
                format!("{:?}", t.dims),
                t.offset,
                t.n_bytes(),
                t.ty.bits_per_weight()
            );
        }
    }
    let _ = writeln!(o, "\nby type:");
    for (name, t) in totals(h) {
        let _ = writeln!(
            o,
            "  {:<10} {:>6} tensors {:>14} elements {:>14} bytes",
            name, t.tensors, t.elements, t.bytes
        );
    }
    let _ = writeln!(o, "overall bits per weight: {:.3}", overall_bpw(h));
    if !extension_types(h).is_empty() {
        let _ = writeln!(o, "\n{EXTENSION_NOTE}");
    }
    o
}

/// The shard list of a split set ([`crate::gguf::GgufFile::shards`]) for the text report:
/// one line per shard with its path, tensors (index range in the logical list) and file size.
pub fn render_shards_text(shards: &[crate::gguf::GgufFile]) -> String {
    let mut o = String::new();
    if shards.is_empty() {
        return o;
    }
    let _ = writeln!(o, "\nsplit set of {} shards:", shards.len());
    let mut first = 0;
    for (i, s) in shards.iter().enumerate() {
        let n = s.tensors().len();
        let _ = writeln!(
            o,
            "  {:>5}  {}  tensors {}..{} ({n})  {} bytes",
            i,
            escape(&s.path().display().to_string()),
            first,
            first + n,
            s.file_size()
        );
        first += n;
    }
    o
}

/// The `shards` array of the JSON document for a split set: per shard its path, `split_no`,
/// the index of its first tensor in the logical list, its tensor count and file size.
pub fn render_shards_json(shards: &[crate::gguf::GgufFile]) -> Json {
    let mut first = 0;
    let list: Vec<Json> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.tensors().len();
            let j = json!({
                "path": s.path().display().to_string(),
                "split_no": i,
                "first_tensor": first,
                "tensor_count": n,
                "file_size": s.file_size(),
            });
            first += n;
            j
        })
        .collect();
    Json::Array(list)
}

/// The JSON document (schema version [`JSON_SCHEMA_VERSION`]).
pub fn render_json(h: &GgufHeader, opts: InspectOptions) -> Json {
    let metadata: Vec<Json> = h
        .metadata
        .iter()
        .map(|(k, v)| match v {
            Value::Array(a) => {
                let n = a.len();
                let shown = if opts.full { n } else { n.min(ARRAY_PREVIEW) };
                let values: Vec<Json> = (0..shown)
                    .filter_map(|i| a.get(i))
                    .map(|x| scalar_json(&x))
                    .collect();
                json!({
                    "key": k,
                    "type": "ARRAY",
                    "value": {
                        "element_type": a.element_type().name(),
                        "length": n,
                        "values": values,
                        "truncated": shown < n,
                    }
                })
            }
            v => json!({"key": k, "type": v.value_type().name(), "value": scalar_json(v)}),
        })
        .collect();
    let tensors: Vec<Json> = h
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ty.name(),
                "type_id": t.ty.id(),
                "shape": t.dims,
                "offset": t.offset,
                "bytes": t.n_bytes(),
                "bits_per_weight": t.ty.bits_per_weight(),
            })
        })
        .collect();
    let by_type: serde_json::Map<String, Json> = totals(h)
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                json!({"tensors": t.tensors, "elements": t.elements, "bytes": t.bytes}),
            )
        })
        .collect();
    let ext = extension_types(h);
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "version": h.version,
        "alignment": h.alignment,
        "tensor_count": h.tensors.len(),
        "metadata_count": h.metadata.len(),
        "data_offset": h.data_offset,
        "file_size": h.file_size,
        "metadata": metadata,
        "tensors": tensors,
        "by_type": by_type,
        "bits_per_weight": overall_bpw(h),
        "extension_types": ext.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "llama_cpp_loadable": ext.is_empty(),
    })
}
