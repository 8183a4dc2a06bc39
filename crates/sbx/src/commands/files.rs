//! `sbx upload|download|ls`: files in a session's workspace, streamed, with a progress bar.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures_util::StreamExt;
use sandbox_client::Client;
use tokio::io::AsyncWriteExt;

use crate::output;

#[derive(clap::Args)]
pub struct Upload {
    session: String,
    /// Local file to send.
    local: PathBuf,
    /// Path in /workspace (default: the local file's name).
    remote: Option<String>,
}

#[derive(clap::Args)]
pub struct Download {
    session: String,
    /// Path in /workspace.
    remote: String,
    /// Where to write it (default: its name, in the current directory; `-` for stdout).
    local: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct List {
    session: String,
    /// Directory in /workspace (default: all of it).
    #[arg(default_value = "")]
    dir: String,
    /// Everything below it, not just its entries.
    #[arg(short, long)]
    recursive: bool,
}

/// A byte progress bar on stderr when it is a terminal; hidden otherwise.
fn bar(len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style =
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

pub async fn upload(client: &Client, args: Upload, json: bool) -> anyhow::Result<i32> {
    let remote = match args.remote {
        Some(r) => r,
        None => args.local.file_name().and_then(|n| n.to_str()).context("give the remote path")?.to_string(),
    };
    let file = tokio::fs::File::open(&args.local).await.with_context(|| format!("open {}", args.local.display()))?;
    let len = file.metadata().await?.len();
    let progress = bar(Some(len), &format!("upload {remote}"));
    let counted = progress.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).inspect(move |chunk| {
        if let Ok(c) = chunk {
            counted.inc(c.len() as u64);
        }
    });
    let result = client.upload(&args.session, &remote, reqwest::Body::wrap_stream(stream), Some(len)).await;
    progress.finish_and_clear();
    let up = result?;
    if json {
        output::print_json(&up)?;
    } else {
        output::outln!("{}  {} bytes  sha256 {}", output::printable(&up.path), up.size, up.sha256)?;
    }
    Ok(0)
}

pub async fn download(client: &Client, args: Download) -> anyhow::Result<i32> {
    let mut resp = client.download(&args.session, &args.remote).await?;
    let progress = bar(resp.content_length(), &format!("download {}", args.remote));
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match args.local.as_deref() {
        Some(p) if p == Path::new("-") => Box::new(tokio::io::stdout()),
        local => {
            let name = Path::new(&args.remote).file_name().map(PathBuf::from).unwrap_or_else(|| "download".into());
            let path = local.map(Path::to_path_buf).unwrap_or(name);
            Box::new(tokio::fs::File::create(&path).await.with_context(|| format!("create {}", path.display()))?)
        }
    };
    while let Some(chunk) = resp.chunk().await? {
        out.write_all(&chunk).await?;
        progress.inc(chunk.len() as u64);
    }
    out.flush().await?;
    progress.finish_and_clear();
    Ok(0)
}

pub async fn list(client: &Client, args: List, json: bool) -> anyhow::Result<i32> {
    let list = client.list_files(&args.session, &args.dir, args.recursive).await?;
    if json {
        output::print_json(&list)?;
        return Ok(0);
    }
    for f in &list.files {
        let kind = match f.kind {
            sandbox_api::FileType::File => "-",
            sandbox_api::FileType::Dir => "d",
            sandbox_api::FileType::Symlink => "l",
            sandbox_api::FileType::Other => "?",
        };
        let modified = f.modified_at.format("%Y-%m-%d %H:%M:%S");
        output::outln!("{kind} {:>12}  {modified}  {}", f.size, output::printable(&f.path))?;
    }
    if list.truncated {
        eprintln!("sbx: the listing was cut at the server's limit");
    }
    Ok(0)
}
