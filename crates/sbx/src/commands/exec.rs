//! `sbx exec SESSION`: one execution in an existing session.

use sandbox_api::CreateExecution;
use sandbox_client::Client;

use super::SourceArgs;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Session id.
    pub session: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(client: &Client, args: Args, json: bool) -> anyhow::Result<i32> {
    let src = args.source.source()?;
    let req = CreateExecution { timeout_s: args.source.timeout, ..CreateExecution::new(src.language, src.code) };
    let e = output::with_progress("running", client.execute(&args.session, &req)).await?;
    output::print_execution(&e, json)
}
