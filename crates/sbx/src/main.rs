//! `sbx`: the command-line client for sandboxd. Parses arguments and hands each subcommand to
//! its module under `commands/`; the process exit code mirrors the execution's.

mod commands;
mod output;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sbx", version, about = "Run code in sandboxd sandboxes")]
struct Cli {
    /// sandboxd's address.
    #[arg(long, global = true, env = "SANDBOX_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API key, when sandboxd has keys in force (`sandboxd keys create`).
    #[arg(long, global = true, env = "SANDBOX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the raw JSON response instead of the output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run code once in a throwaway sandbox.
    Run(commands::run::Args),
    /// Run code in an existing session.
    Exec(commands::exec::Args),
    /// Create, list, show or delete sessions.
    #[command(subcommand)]
    Session(commands::session::Command),
    /// Send a local file to a session's workspace (with a progress bar).
    Upload(commands::files::Upload),
    /// Fetch a file from a session's workspace (with a progress bar).
    Download(commands::files::Download),
    /// List files in a session's workspace.
    Ls(commands::files::List),
    /// List, show, create or delete templates.
    #[command(subcommand)]
    Template(commands::template::Command),
    /// Serve the MCP tools (run_code, files, packages) on stdin/stdout, for MCP clients such
    /// as Claude Desktop; they reach sandboxd at --url with --api-key.
    Mcp,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let client = sandbox_client::Client::with_key(&cli.url, cli.api_key.as_deref().filter(|k| !k.is_empty()));
    let result = match cli.command {
        Command::Run(args) => commands::run::run(&client, args, cli.json).await,
        Command::Exec(args) => commands::exec::run(&client, args, cli.json).await,
        Command::Session(cmd) => commands::session::run(&client, cmd, cli.json).await,
        Command::Upload(args) => commands::files::upload(&client, args, cli.json).await,
        Command::Download(args) => commands::files::download(&client, args).await,
        Command::Ls(args) => commands::files::list(&client, args, cli.json).await,
        Command::Template(cmd) => commands::template::run(&client, cmd, cli.json).await,
        Command::Mcp => commands::mcp::run(client).await,
    };
    match result {
        Ok(code) => std::process::exit(code),
        // The reader went away (`sbx ls $S | head`): nothing to say, like a tool killed by SIGPIPE.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::exit(141)
        }
        Err(e) => {
            eprintln!("sbx: {e:#}");
            std::process::exit(2);
        }
    }
}
