//! `sbx session create|list|show|delete|interrupt|restart|install`.

use sandbox_api::{CreateSession, Session};
use sandbox_client::Client;

use crate::commands::SessionSettings;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a session; prints its id.
    Create {
        /// Template whose defaults and packages it gets (default: "default").
        #[arg(long)]
        template: Option<String>,
        #[command(flatten)]
        settings: SessionSettings,
    },
    /// List sessions.
    List,
    /// Show one session.
    Show { id: String },
    /// Delete a session (kills its sandbox; the record stays).
    Delete { id: String },
    /// Interrupt the running cell (KeyboardInterrupt; the kernel's variables are kept).
    Interrupt { id: String },
    /// Replace the session's kernel with a fresh one (files are kept).
    Restart { id: String },
    /// Stop the session's sandbox now (the workspace stays; it resumes on demand).
    Stop { id: String },
    /// Start a new sandbox on a stopped session's workspace.
    Resume { id: String },
    /// Install Python packages for this session (pip, with network, outside its sandbox).
    Install {
        id: String,
        /// Requirement specifiers, such as iniconfig or six==1.17.0.
        #[arg(required = true)]
        packages: Vec<String>,
    },
}

fn print_session_line(s: &Session) -> std::io::Result<()> {
    crate::output::outln!(
        "{}  {:8}  {}  mem={}MiB pids={} cpu={}",
        s.id,
        s.status.as_str(),
        s.created_at.format("%Y-%m-%d %H:%M:%S"),
        s.limits.memory_mb,
        s.limits.pids,
        s.limits.cpu
    )
}

pub async fn run(client: &Client, cmd: Command, json: bool) -> anyhow::Result<i32> {
    match cmd {
        Command::Create { template, settings } => {
            let req = CreateSession {
                template,
                env: Some(settings.env()?),
                limits: Some(settings.limits()),
                timeout_s: settings.timeout,
                idle_timeout_s: settings.idle_timeout,
                max_lifetime_s: settings.max_lifetime,
                ..Default::default()
            };
            let s = output::with_progress("starting sandbox", client.create_session(&req)).await?;
            if json {
                output::print_json(&s)?;
            } else {
                crate::output::outln!("{}", s.id)?;
            }
        }
        Command::List => {
            let list = client.list_sessions().await?;
            if json {
                output::print_json(&list)?;
            } else {
                list.sessions.iter().try_for_each(print_session_line)?;
            }
        }
        Command::Show { id } => {
            let s = client.get_session(&id).await?;
            if json {
                output::print_json(&s)?;
            } else {
                print_session_line(&s)?;
            }
        }
        Command::Delete { id } => client.delete_session(&id).await?,
        Command::Interrupt { id } => {
            if !client.interrupt(&id).await? {
                eprintln!("sbx: nothing was running in {id}");
            }
        }
        Command::Restart { id } => {
            output::with_progress("restarting the kernel", client.restart(&id)).await?;
        }
        Command::Stop { id } => print_session_line(&client.stop_session(&id).await?)?,
        Command::Resume { id } => {
            print_session_line(&output::with_progress("starting sandbox", client.resume_session(&id)).await?)?
        }
        Command::Install { id, packages } => {
            let specs: Vec<&str> = packages.iter().map(String::as_str).collect();
            let r = output::with_progress("installing packages", client.install_packages(&id, &specs)).await?;
            if json {
                output::print_json(&r)?;
            } else if r.status == sandbox_api::InstallStatus::Succeeded {
                let names: Vec<String> = r.installed.iter().map(|p| format!("{}-{}", p.name, p.version)).collect();
                let names = if names.is_empty() { "nothing new".into() } else { names.join(" ") };
                crate::output::outln!("installed: {names}")?;
            }
            if r.status != sandbox_api::InstallStatus::Succeeded {
                eprintln!("sbx: {}", r.error.as_deref().unwrap_or("the installation failed"));
                return Ok(1);
            }
        }
    }
    Ok(0)
}
