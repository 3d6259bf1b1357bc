//! `qforge inspect`.

use std::path::PathBuf;

use crate::gguf::{ErrorKind, GgufFile};
use crate::inspect::{render_json, render_text, InspectOptions};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file to inspect.
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
    let file = match GgufFile::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            // "PATH: byte N: what failed" (or the I/O error for an unreadable file)
            match e.kind {
                ErrorKind::Io(_) => eprintln!("error: cannot read {e}"),
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
        println!(
            "{}",
            serde_json::to_string_pretty(&render_json(file.header(), opts))?
        );
    } else {
        print!("{}", render_text(file.header(), opts));
    }
    Ok(0)
}
