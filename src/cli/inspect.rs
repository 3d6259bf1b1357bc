//! STUB: placeholder so the crate compiles; replaced by the real inspect command.

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file to inspect.
    pub file: std::path::PathBuf,
}

pub fn run(_args: InspectArgs) -> anyhow::Result<i32> {
    todo!()
}
