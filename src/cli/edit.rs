//! `qforge edit` and `qforge diff`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::json;

use crate::diff::{KeyDiff, TensorChange};
use crate::edit::{self, Edit};
use crate::gguf::{GgufFile, Value};
use crate::inspect::value_text;

#[derive(clap::Args, Debug)]
pub struct EditArgs {
    /// The GGUF file to edit (it is not changed).
    pub input: PathBuf,
    /// Where to write the edited copy (atomically; tensor bytes unchanged).
    #[arg(short, long)]
    pub output: PathBuf,
    /// KEY=TYPE:VALUE, TYPE one of u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str. Repeatable.
    #[arg(long = "set", value_name = "KEY=TYPE:VALUE")]
    pub set: Vec<String>,
    /// Remove KEY. Repeatable.
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    /// Set tokenizer.chat_template to the contents of FILE.
    #[arg(long, value_name = "FILE")]
    pub chat_template_file: Option<PathBuf>,
    /// Make edits that would change a key's type or remove a key llama.cpp requires.
    #[arg(long)]
    pub force: bool,
}

pub fn edit(args: EditArgs) -> anyhow::Result<i32> {
    let mut edits = Vec::new();
    for spec in &args.set {
        edits.push(edit::parse_set(spec).map_err(|e| anyhow::anyhow!("--set {e}"))?);
    }
    for key in &args.delete {
        edits.push(Edit::Delete { key: key.clone() });
    }
    if let Some(path) = &args.chat_template_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        edits.push(Edit::Set {
            key: "tokenizer.chat_template".into(),
            value: Value::String(text),
        });
    }
    if edits.is_empty() {
        bail!("nothing to do: give --set, --delete or --chat-template-file");
    }
    let file = GgufFile::open(&args.input)?;
    let metadata = edit::apply(&file, &edits, args.force)?;
    edit::write_with_metadata(&file, &metadata, &args.output)?;
    eprintln!(
        "wrote {} ({} edit(s), {} tensors copied unchanged)",
        args.output.display(),
        edits.len(),
        file.tensors().len()
    );
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Dequantize tensors that differ and report RMSE, max abs error and SNR of B against A.
    #[arg(long)]
    pub values: bool,
}

/// Exit 0 when the files do not differ, 1 when they do (as `diff`); errors exit 2.
pub fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    let run = || -> anyhow::Result<crate::diff::DiffReport> {
        let a = GgufFile::open(&args.a)?;
        let b = GgufFile::open(&args.b)?;
        Ok(crate::diff::diff(&a, &b, args.values)?)
    };
    let report = match run() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    if args.json {
        let keys: Vec<_> = report
            .metadata
            .iter()
            .map(|d| match d {
                KeyDiff::Added { key, value } => json!({"key": key, "change": "added",
                    "type": value.type_name(), "b": value_text(value, false)}),
                KeyDiff::Removed { key, value } => json!({"key": key, "change": "removed",
                    "type": value.type_name(), "a": value_text(value, false)}),
                KeyDiff::Changed { key, a, b } => json!({"key": key, "change": "changed",
                    "a_type": a.type_name(), "b_type": b.type_name(),
                    "a": value_text(a, false), "b": value_text(b, false)}),
            })
            .collect();
        let tensors: Vec<_> = report
            .tensors
            .iter()
            .map(|t| {
                let mut j = match &t.change {
                    TensorChange::Added { ty, dims } => {
                        json!({"change": "added", "type": ty.name(), "dims": dims})
                    }
                    TensorChange::Removed { ty, dims } => {
                        json!({"change": "removed", "type": ty.name(), "dims": dims})
                    }
                    TensorChange::Retyped { a, b } => {
                        json!({"change": "retyped", "a_type": a.name(), "b_type": b.name()})
                    }
                    TensorChange::Reshaped { a, b } => {
                        json!({"change": "reshaped", "a_dims": a, "b_dims": b})
                    }
                    TensorChange::Changed => json!({"change": "changed"}),
                };
                j["name"] = json!(t.name);
                if let Some(v) = t.values {
                    j["rmse"] = json!(v.rmse);
                    j["max_abs_err"] = json!(v.max_abs);
                    j["snr_db"] = json!(v.snr_db);
                }
                j
            })
            .collect();
        let doc = json!({"identical": report.is_empty(), "metadata": keys, "tensors": tensors,
            "same_tensors": report.same_tensors});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        if report.is_empty() {
            println!("no differences ({} tensors identical)", report.same_tensors);
            return Ok(0);
        }
        println!("metadata: {} difference(s)", report.metadata.len());
        for d in &report.metadata {
            match d {
                KeyDiff::Added { key, value } => {
                    println!(
                        "  + {key}: {} {}",
                        value.type_name(),
                        value_text(value, false)
                    )
                }
                KeyDiff::Removed { key, value } => {
                    println!(
                        "  - {key}: {} {}",
                        value.type_name(),
                        value_text(value, false)
                    )
                }
                KeyDiff::Changed { key, a, b } => println!(
                    "  ~ {key}: {} {} -> {} {}",
                    a.type_name(),
                    value_text(a, false),
                    b.type_name(),
                    value_text(b, false)
                ),
            }
        }
        println!(
            "tensors: {} difference(s), {} identical",
            report.tensors.len(),
            report.same_tensors
        );
        for t in &report.tensors {
            let what = match &t.change {
                TensorChange::Added { ty, dims } => format!("+ {} {} {dims:?}", t.name, ty.name()),
                TensorChange::Removed { ty, dims } => {
                    format!("- {} {} {dims:?}", t.name, ty.name())
                }
                TensorChange::Retyped { a, b } => {
                    format!("~ {} retyped {} -> {}", t.name, a.name(), b.name())
                }
                TensorChange::Reshaped { a, b } => format!("~ {} reshaped {a:?} -> {b:?}", t.name),
                TensorChange::Changed => format!("~ {} bytes changed", t.name),
            };
            match t.values {
                Some(v) => println!(
                    "  {what}  rmse {:.3e}  max abs {:.3e}  snr {}",
                    v.rmse,
                    v.max_abs,
                    v.snr_db.map_or("inf".into(), |s| format!("{s:.2} dB"))
                ),
                None => println!("  {what}"),
            }
        }
    }
    Ok(if report.is_empty() { 0 } else { 1 })
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("limit").required(true).args(["max_tensors", "max_size"])))]
pub struct SplitArgs {
    /// The GGUF file to split (it is not changed).
    pub input: PathBuf,
    /// Output prefix: shards are written as PREFIX-00001-of-0000N.gguf (atomically).
    #[arg(short, long, value_name = "PREFIX")]
    pub output: PathBuf,
    /// At most N tensors per shard.
    #[arg(long, value_name = "N")]
    pub max_tensors: Option<usize>,
    /// At most SIZE bytes of tensor data per shard: a number with an optional K, M or G
    /// suffix (decimal units, as llama-gguf-split), e.g. 500M, 4G.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
}

/// [`crate::split::parse_size`] with the flag named in the error.
pub(crate) fn parse_size(flag: &str, text: &str) -> anyhow::Result<u64> {
    crate::split::parse_size(text).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

pub fn split(args: SplitArgs) -> anyhow::Result<i32> {
    use crate::split::{self, SplitLimit};
    let limit = match (args.max_tensors, &args.max_size) {
        (Some(0), _) => bail!("--max-tensors must be at least 1"),
        (Some(n), None) => SplitLimit::Tensors(n),
        (None, Some(s)) => SplitLimit::Bytes(parse_size("--max-size", s)?),
        _ => bail!("give one of --max-tensors or --max-size"),
    };
    let file = GgufFile::open(&args.input)?;
    let paths = split::split(&file, &args.output, limit)?;
    for p in &paths {
        println!("{}", p.display());
    }
    eprintln!(
        "wrote {} shard(s) of {} tensors; load the first one",
        paths.len(),
        file.tensors().len()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(parse_size("--max-size", "500M").unwrap(), 500_000_000);
        assert_eq!(parse_size("--max-size", "4G").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("--max-size", "12k").unwrap(), 12_000);
        assert_eq!(parse_size("--max-size", "4096").unwrap(), 4096);
        assert!(parse_size("--max-size", "0M").is_err());
        assert!(parse_size("--max-size", "5X").is_err());
        assert!(parse_size("--max-size", "M").is_err());
    }
}
