//! `sandboxd`: parses the configuration and runs the server until SIGTERM or SIGINT; or, with
//! `keys`, manages API keys.

mod flags;
mod keys;

use anyhow::Context;
use clap::Parser;
use sandbox_server::{Config, Server};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, clap::Parser)]
#[command(name = "sandboxd", version, about = "Code-execution sandboxes for AI agents: the control plane")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: flags::ConfigFlags,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDBOXD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = Config::from(args.config);
    if let Some(Command::Keys(command)) = args.command {
        return keys::run(&config, command).await;
    }
    let server = Server::start(config).await.context("cannot start sandboxd")?;
    println!("sandboxd listening on http://{}", server.addr);

    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
