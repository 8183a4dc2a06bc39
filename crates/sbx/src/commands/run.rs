//! `sbx run`: one execution in a throwaway sandbox.

use sandbox_api::RunRequest;
use sandbox_client::Client;

use super::SourceArgs;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write the PNG outputs (charts) to this directory and print their paths.
    #[arg(long, value_name = "DIR")]
    pub save_images: Option<std::path::PathBuf>,
}

pub async fn run(client: &Client, args: Args, json: bool) -> anyhow::Result<i32> {
    let src = args.source.source()?;
    let req = RunRequest { timeout_s: args.source.timeout, ..RunRequest::new(src.language, src.code) };
    let e = output::with_progress("running", client.run(&req)).await?;
    output::print_execution(&e, json, args.save_images.as_deref())
}
