//! `qforge convert` and `qforge verify`.

use std::path::PathBuf;

use anyhow::bail;

use crate::convert::{self, peak_rss_mib, ConvertRequest, Input, Recipe, RunOptions, RECIPE_NAMES};
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
    /// Print the plan (tensor, shape, source type -> output type, bytes) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: all cores). Output bytes do not depend on it.
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
    if args.recipe.is_none() {
        // a split set without -t is merged byte for byte, not planned
        let path = convert::resolve_input(&args.input)?;
        if path.is_file() {
            if let Input::Gguf(set) = Input::open(&path)? {
                if set.is_split() {
                    return merge_set(&set, &args);
                }
            }
        }
    }
    let request = ConvertRequest {
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
        eprintln!(
            "wrote {} ({} tensors, {} of tensor data) in {:.2}s, {:.2} GB/s of source read",
            out.display(),
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

/// `convert FIRST_SHARD -o OUT` without `-t`: the split set merged into one file, every tensor
/// byte for byte (with `-t` a set is re-typed like any GGUF file).
fn merge_set(set: &GgufFile, args: &ConvertArgs) -> anyhow::Result<i32> {
    if args.pure
        || args.output_tensor_type.is_some()
        || args.token_embedding_type.is_some()
        || !args.tensor_type.is_empty()
        || args.imatrix.is_some()
    {
        bail!("{}: without -t a split set is merged with every tensor unchanged; type options need -t", args.input.display());
    }
    let data: u64 = set.tensors().iter().map(|t| t.n_bytes()).sum();
    if args.dry_run {
        println!(
            "merge {} shards ({} tensors, {} of tensor data) unchanged into one file",
            set.shards().len(),
            set.tensors().len(),
            human(data)
        );
        return Ok(0);
    }
    let Some(out) = &args.output else {
        bail!("-o/--output is required (or use --dry-run)");
    };
    let start = std::time::Instant::now();
    crate::split::merge(set, out)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let doc = serde_json::json!({
            "output": out.display().to_string(),
            "tensors": set.tensors().len(),
            "shards": set.shards().len(),
            "bytes_in": data,
            "bytes_out": data,
            "seconds": seconds,
            "peak_rss_mib": peak_rss_mib(),
        });
        println!("{doc}");
    }
    if !args.quiet {
        eprintln!(
            "wrote {} (merged {} shards: {} tensors, {} of tensor data, unchanged) in {seconds:.2}s",
            out.display(),
            set.shards().len(),
            set.tensors().len(),
            human(data)
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
