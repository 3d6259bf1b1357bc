//! `qforge convert` and `qforge verify`.

use std::path::PathBuf;

use anyhow::bail;

use crate::convert::{self, ConvertRequest, Recipe, RunOptions, RECIPE_NAMES};
use crate::gguf::GgufFile;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// A Hugging Face model folder, a .safetensors file, a .gguf file, or a model id
    /// (`owner/name`) downloaded to the local Hugging Face cache.
    pub input: PathBuf,
    /// Output type (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k q4_k_s
    /// q4_k_m q5_k_s q5_k_m q6_k iq4_nl iq4_xs nf4).
    /// Default: the source precision.
    #[arg(short = 't', long = "type", value_parser = parse_recipe)]
    pub recipe: Option<Recipe>,
    /// Output GGUF file (written atomically: nothing appears under this name on failure).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Write a split set instead of one file: shards OUTPUT-00001-of-0000N.gguf … (OUTPUT
    /// without .gguf) of at most SIZE bytes of tensor data each (500M, 4G: decimal units, as
    /// llama-gguf-split), tensors never cut; llama.cpp loads the set from the first shard.
    #[arg(long, value_name = "SIZE", conflicts_with = "split_max_tensors")]
    pub split_max_size: Option<String>,
    /// Write a split set of at most N tensors per shard (see --split-max-size).
    #[arg(long, value_name = "N")]
    pub split_max_tensors: Option<usize>,
    /// Print the plan (tensor, shape, source type -> output type, bytes) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Quantizing worker threads (default: all cores); writing and SHA-256 hashing run on
    /// threads of their own. Output bytes do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress bar or summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print a JSON summary on stdout (tensors, bytes in and out, seconds, GB/s of source
    /// read, peak RSS).
    #[arg(long)]
    pub json: bool,
    /// Every quantizable tensor gets the type's base type (no llama-quantize mixture).
    #[arg(long)]
    pub pure: bool,
    /// Type of output.weight (and of a tied token embedding), e.g. q8_0.
    #[arg(long, value_name = "TYPE", value_parser = crate::convert::parse_ggml_type)]
    pub output_tensor_type: Option<crate::gguf::GgmlType>,
    /// Type of token_embd.weight.
    #[arg(long, value_name = "TYPE", value_parser = crate::convert::parse_ggml_type)]
    pub token_embedding_type: Option<crate::gguf::GgmlType>,
    /// PATTERN=TYPE: tensors whose GGUF name matches the regex get TYPE; the first matching
    /// pattern wins. Repeatable.
    #[arg(long, value_name = "PATTERN=TYPE")]
    pub tensor_type: Vec<String>,
    /// llama.cpp's pre-tokenizer name (tokenizer.ggml.pre) for a byte-level BPE tokenizer,
    /// instead of recognising it from tokenizer.json (e.g. llama-bpe, qwen2, smollm, gpt-4o).
    #[arg(long = "pre", value_name = "NAME")]
    pub pre_tokenizer: Option<String>,
    /// Importance matrix from llama-imatrix (GGUF or legacy .dat): tensors with an entry are
    /// quantized with ggml's weighted quantizers, as llama-quantize --imatrix does.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Use only imatrix entries whose name contains NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    pub include_weights: Vec<String>,
    /// Drop imatrix entries whose name contains NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    pub exclude_weights: Vec<String>,
}

fn parse_recipe(s: &str) -> Result<Recipe, String> {
    s.parse()
}

fn human(bytes: u64) -> String {
    let mut v = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{v:.2} {unit}")
            };
        }
        v /= 1024.0;
    }
    unreachable!()
}

pub fn run(args: ConvertArgs) -> anyhow::Result<i32> {
    let _ = RECIPE_NAMES;
    // Library errors already name the file, tensor or key.
    let split = match (args.split_max_tensors, &args.split_max_size) {
        (Some(0), _) => bail!("--split-max-tensors must be at least 1"),
        (Some(n), _) => Some(crate::split::SplitLimit::Tensors(n)),
        (None, Some(s)) => Some(crate::split::SplitLimit::Bytes(super::edit::parse_size(
            "--split-max-size",
            s,
        )?)),
        (None, None) => None,
    };
    let request = ConvertRequest {
        split,
        input: args.input,
        recipe: args.recipe,
        pure: args.pure,
        output_tensor_type: args.output_tensor_type,
        token_embedding_type: args.token_embedding_type,
        tensor_types: args.tensor_type,
        pre_tokenizer: args.pre_tokenizer,
        imatrix: args.imatrix,
        include_weights: args.include_weights,
        exclude_weights: args.exclude_weights,
        run: RunOptions {
            threads: args.threads,
            progress: !args.quiet,
            ..RunOptions::default()
        },
    };
    if let Some(file) = request.unchanged_gguf()? {
        let flags = (args.dry_run, args.json, args.quiet);
        return copy_gguf(&request, &file, args.output.as_deref(), flags);
    }
    let job = request.plan()?;
    let plan = &job.plan;
    if !args.quiet {
        for note in job.notes() {
            eprintln!("note: {note}");
        }
    }
    if args.dry_run {
        println!(
            "{:<40} {:<22} {:>6} -> {:<9} {:>12}",
            "tensor", "shape (ggml)", "source", "type", "bytes"
        );
        for t in &plan.tensors {
            println!(
                "{:<40} {:<22} {:>6} -> {:<9} {:>12}",
                t.name,
                format!("{:?}", t.dims),
                t.source_type,
                t.ty.name(),
                t.n_bytes()
            );
        }
        println!(
            "{} tensors, {} of tensor data ({} recipe)",
            plan.tensors.len(),
            human(plan.data_bytes()),
            plan.recipe.map(|r| r.to_string()).unwrap_or_default()
        );
        return Ok(0);
    }
    let Some(out) = args.output else {
        bail!("-o/--output is required (or use --dry-run)");
    };
    let summary = job.execute(&out)?;
    if args.json {
        println!("{}", serde_json::to_value(&summary)?);
    }
    if !args.quiet {
        let written = match &summary.shards {
            Some(s) => format!("{} shards, load {}", s.len(), summary.output),
            None => out.display().to_string(),
        };
        eprintln!(
            "wrote {} ({} tensors, {} of tensor data) in {:.2}s, {:.2} GB/s of source read",
            written,
            summary.tensors,
            human(summary.bytes_out),
            summary.seconds,
            summary.gb_per_s
        );
        if job.uses_extension_types() {
            eprintln!(
                "note: {} uses qforge extension types (NF4); llama.cpp cannot load it. \
                 'qforge convert {} -t f16 -o out.gguf' turns it into a file llama.cpp loads.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(0)
}

/// A GGUF input without `-t`: every tensor is kept byte for byte (a split set merged, or a
/// file or set re-split).
fn copy_gguf(
    request: &ConvertRequest,
    file: &GgufFile,
    output: Option<&std::path::Path>,
    (dry_run, json, quiet): (bool, bool, bool),
) -> anyhow::Result<i32> {
    let data: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
    let what = match request.split {
        Some(_) => format!("split {} tensors", file.tensors().len()),
        None => format!(
            "merged {} shards: {} tensors",
            file.shards().len(),
            file.tensors().len()
        ),
    };
    if dry_run {
        println!("{what}, {} of tensor data, unchanged", human(data));
        return Ok(0);
    }
    let Some(out) = output else {
        bail!("-o/--output is required (or use --dry-run)");
    };
    let summary = request.copy_unchanged(file, out)?;
    if json {
        println!("{}", serde_json::to_value(&summary)?);
    }
    if !quiet {
        let written = match &summary.shards {
            Some(p) => format!("{} shards, load {}", p.len(), summary.output),
            None => summary.output.clone(),
        };
        eprintln!(
            "wrote {written} ({what}, {} of tensor data, unchanged) in {:.2}s",
            human(data),
            summary.seconds
        );
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The GGUF file to check (the first shard of a split set checks every shard).
    pub file: PathBuf,
    /// Also compare every tensor with the checkpoint it was converted from.
    #[arg(long, value_name = "MODEL")]
    pub against: Option<PathBuf>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let file = match GgufFile::open_model_or_shard(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let mut report = convert::verify_hashes(&file)?;
    if let Some(src) = &args.against {
        report.against = convert::verify_against(&file, src)?;
    }
    let ok = report.mismatched.is_empty();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !report.shards.is_empty() {
            println!(
                "split set of {} shards, {} tensors",
                report.shards.len(),
                file.tensors().len()
            );
        }
        if report.has_hashes {
            println!(
                "structure ok; {} tensor hashes checked, {} mismatched",
                report.hashed,
                report.mismatched.len()
            );
        } else {
            println!("structure ok; the file carries no qforge tensor hashes");
        }
        for sh in &report.shards {
            if sh.has_hashes {
                println!(
                    "shard {}: {} tensors, {} hashes checked, {} mismatched",
                    sh.file,
                    sh.tensors,
                    sh.hashed,
                    sh.mismatched.len()
                );
            } else {
                println!(
                    "shard {}: {} tensors, no qforge tensor hashes",
                    sh.file, sh.tensors
                );
            }
        }
        for m in &report.mismatched {
            println!(
                "MISMATCH {}: stored {} but data hashes to {}",
                m.name, m.expected, m.actual
            );
        }
        if !report.against.is_empty() {
            println!(
                "\n{:<40} {:<8} {:>12} {:>12} {:>12} {:>9}",
                "tensor", "type", "elements", "rmse", "max_abs", "snr_db"
            );
            for e in &report.against {
                println!(
                    "{:<40} {:<8} {:>12} {:>12.6} {:>12.6} {:>9}",
                    e.name,
                    e.ty,
                    e.elements,
                    e.rmse,
                    e.max_abs,
                    e.snr_db.map_or("exact".into(), |s| format!("{s:.2}"))
                );
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}
