//! `qforge inspect`.

use std::path::PathBuf;

use crate::gguf::{ErrorKind, GgufFile};
use crate::inspect::{
    render_json, render_shards_json, render_shards_text, render_text, InspectOptions,
};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file to inspect (the first shard of a split set shows the whole model).
    pub file: PathBuf,
    /// Print one JSON document (schema in spec/FORMAT.md).
    #[arg(long)]
    pub json: bool,
    /// Include the tensor table.
    #[arg(long)]
    pub tensors: bool,
    /// Do not abbreviate long arrays and strings.
    #[arg(long)]
    pub full: bool,
}

/// Exit 0 for a valid file, 1 (with the failed check and byte offset) for an invalid one.
pub fn run(args: InspectArgs) -> anyhow::Result<i32> {
    let file = match GgufFile::open_model_or_shard(&args.file) {
        Ok(f) => f,
        Err(e) => {
            // "PATH: byte N: what failed" (or the I/O error for an unreadable file)
            match e.kind {
                ErrorKind::Io(_) => eprintln!("error: cannot read {e}"),
                ref k if k.is_split_set() => eprintln!("error: invalid split set: {e}"),
                _ => eprintln!("error: invalid GGUF file {e}"),
            }
            return Ok(super::EXIT_INVALID);
        }
    };
    let opts = InspectOptions {
        tensors: args.tensors,
        full: args.full,
    };
    if args.json {
        let mut doc = render_json(file.header(), opts);
        if file.is_split() {
            doc["shards"] = render_shards_json(file.shards());
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render_text(file.header(), opts));
        print!("{}", render_shards_text(file.shards()));
        if let Ok(Some(count)) = crate::gguf::split_set::split_int(
            file.metadata(),
            crate::gguf::split_set::KEY_SPLIT_COUNT,
        ) {
            if count > 1 && !file.is_split() {
                println!(
                    "\nnote: one shard of a {count}-file split set; inspect its first shard for the whole model"
                );
            }
        }
    }
    Ok(0)
}
