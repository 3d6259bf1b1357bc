//! The `qforge` command line: clap definitions and glue. Logic lives in the library.

mod convert;
mod edit;
mod inspect;

use clap::{Parser, Subcommand};

/// Exit code for a file that failed validation (or any other runtime failure).
pub const EXIT_INVALID: i32 = 1;
/// Exit code for a usage error (clap's own code).
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(name = "qforge", version, about = "Hugging Face safetensors -> quantized GGUF, and GGUF inspection", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a Hugging Face checkpoint, a .safetensors file or a .gguf file to GGUF.
    Convert(convert::ConvertArgs),
    /// Print a GGUF file's header, metadata and tensor table.
    Inspect(inspect::InspectArgs),
    /// Check a GGUF file's structure and tensor hashes, optionally its error against the source.
    Verify(convert::VerifyArgs),
    /// Set or delete metadata keys of a GGUF file, writing a copy with the tensors unchanged.
    Edit(edit::EditArgs),
    /// What differs between two GGUF files (metadata, tensors, optionally dequantized values).
    Diff(edit::DiffArgs),
    /// Split a GGUF file into shards llama.cpp loads as one model (as llama-gguf-split does).
    Split(edit::SplitArgs),
}

/// Run the CLI with the process arguments; returns the process exit code.
pub fn main() -> i32 {
    main_with_args(std::env::args_os())
}

/// Run the CLI with `args` (the first is the program name), as the Python package's `qforge`
/// command does; returns the exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => convert::verify(args),
        Command::Edit(args) => edit::edit(args),
        Command::Diff(args) => edit::diff(args),
        Command::Split(args) => edit::split(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Library errors carry their cause in their own message (file, tensor, offset),
            // so the chain is not printed again.
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}
