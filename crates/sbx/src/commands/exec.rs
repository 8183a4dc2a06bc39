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
    /// Print output as it is produced rather than at the end.
    #[arg(long)]
    pub stream: bool,
    /// Write the PNG outputs (charts) to this directory and print their paths.
    #[arg(long, value_name = "DIR")]
    pub save_images: Option<std::path::PathBuf>,
}

pub async fn run(client: &Client, args: Args, json: bool) -> anyhow::Result<i32> {
    let src = args.source.source()?;
    let req = CreateExecution { timeout_s: args.source.timeout, ..CreateExecution::new(src.language, src.code) };
    if args.stream && !json {
        use std::io::Write;
        let e = client
            .execute_stream(&args.session, &req, |name, data| match name {
                "stdout" => {
                    print!("{data}");
                    let _ = std::io::stdout().flush();
                }
                "stderr" => eprint!("{data}"),
                _ => {}
            })
            .await?;
        // Streams were printed live; show the rest (results, displays, errors) as usual.
        let rest = sandbox_api::Execution { stdout: String::new(), stderr: String::new(), ..e };
        return output::print_execution(&rest, false, args.save_images.as_deref());
    }
    let e = output::with_progress("running", client.execute(&args.session, &req)).await?;
    output::print_execution(&e, json, args.save_images.as_deref())
}
