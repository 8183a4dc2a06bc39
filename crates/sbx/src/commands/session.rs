//! `sbx session create|list|show|delete|interrupt|restart|install`.

use std::collections::BTreeMap;

use anyhow::Context;
use sandbox_api::{CreateSession, LimitsRequest, Session};
use sandbox_client::Client;

use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a session; prints its id.
    Create {
        /// Template whose defaults and packages it gets (default: "default").
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        pids: Option<u32>,
        #[arg(long)]
        cpu: Option<f64>,
        /// Default per-execution timeout, seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Environment variable for every execution, KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
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
    /// Install Python packages for this session (pip, with network, outside its sandbox).
    Install {
        id: String,
        /// Requirement specifiers, such as iniconfig or six==1.17.0.
        #[arg(required = true)]
        packages: Vec<String>,
    },
}

pub fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').with_context(|| format!("--env {p:?} is not KEY=VALUE"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn print_session_line(s: &Session) {
    println!(
        "{}  {:8}  {}  mem={}MiB pids={} cpu={}",
        s.id,
        s.status.as_str(),
        s.created_at.format("%Y-%m-%d %H:%M:%S"),
        s.limits.memory_mb,
        s.limits.pids,
        s.limits.cpu
    );
}

pub async fn run(client: &Client, cmd: Command, json: bool) -> anyhow::Result<i32> {
    match cmd {
        Command::Create { template, memory_mb, pids, cpu, timeout, env } => {
            let req = CreateSession {
                template,
                env: Some(parse_env(&env)?),
                limits: Some(LimitsRequest { memory_mb, pids, cpu }),
                timeout_s: timeout,
                ..Default::default()
            };
            let s = output::with_progress("starting sandbox", client.create_session(&req)).await?;
            if json {
                output::print_json(&s)?;
            } else {
                println!("{}", s.id);
            }
        }
        Command::List => {
            let list = client.list_sessions().await?;
            if json {
                output::print_json(&list)?;
            } else {
                list.sessions.iter().for_each(print_session_line);
            }
        }
        Command::Show { id } => {
            let s = client.get_session(&id).await?;
            if json {
                output::print_json(&s)?;
            } else {
                print_session_line(&s);
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
        Command::Install { id, packages } => {
            let specs: Vec<&str> = packages.iter().map(String::as_str).collect();
            let r = output::with_progress("installing packages", client.install_packages(&id, &specs)).await?;
            if json {
                output::print_json(&r)?;
            } else if r.status == sandbox_api::InstallStatus::Succeeded {
                let names: Vec<String> = r.installed.iter().map(|p| format!("{}-{}", p.name, p.version)).collect();
                println!("installed: {}", if names.is_empty() { "nothing new".into() } else { names.join(" ") });
            }
            if r.status != sandbox_api::InstallStatus::Succeeded {
                eprintln!("sbx: {}", r.error.as_deref().unwrap_or("the installation failed"));
                return Ok(1);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_split_on_the_first_equals() {
        let env = parse_env(&["A=1".into(), "B=x=y".into()]).expect("valid");
        assert_eq!(env["B"], "x=y");
        assert!(parse_env(&["nope".into()]).is_err());
    }
}
