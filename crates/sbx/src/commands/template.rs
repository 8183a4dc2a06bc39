//! `sbx template list|show|create|delete`.

use sandbox_api::{CreateTemplate, Template, TemplateStatus};
use sandbox_client::Client;

use crate::commands::SessionSettings;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// List templates.
    List,
    /// Show one template.
    Show { name: String },
    /// Create a template and wait until its packages are installed.
    Create(Box<Create>),
    /// Delete a template no session uses.
    Delete { name: String },
}

#[derive(clap::Args)]
pub struct Create {
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    /// Python package to preinstall, such as pandas or six==1.17.0 (repeatable).
    #[arg(long = "package", value_name = "SPEC")]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub settings: SessionSettings,
    /// "python" (default) or "none".
    #[arg(long)]
    pub kernel: Option<String>,
    /// Warm sandboxes kept ready for its sessions.
    #[arg(long)]
    pub pool_size: Option<usize>,
    /// Its sessions' image on the Docker runtime (built FROM the sandbox image).
    #[arg(long)]
    pub image: Option<String>,
    /// File type its sessions accept as uploads, such as .xlsx (repeatable; default: any).
    #[arg(long = "allow-upload", value_name = "EXT")]
    pub allowed_uploads: Vec<String>,
}

fn print_template_line(t: &Template) -> std::io::Result<()> {
    let status = match t.status {
        TemplateStatus::Building => "building",
        TemplateStatus::Ready => "ready",
        TemplateStatus::Failed => "failed",
    };
    let packages = if t.packages.is_empty() { "-".to_string() } else { t.packages.join(",") };
    crate::output::outln!(
        "{:20}  {:8}  mem={}MiB cpu={} pool={} packages={packages}",
        crate::output::printable(&t.name),
        status,
        t.limits.memory_mb,
        t.limits.cpu,
        t.pool_size
    )?;
    if let Some(e) = &t.error {
        crate::output::outln!("  error: {}", crate::output::printable(e))?;
    }
    Ok(())
}

pub async fn run(client: &Client, cmd: Command, json: bool) -> anyhow::Result<i32> {
    let show = |t: &Template| {
        if json {
            return output::print_json(t);
        }
        Ok(print_template_line(t)?)
    };
    match cmd {
        Command::List => {
            let list = client.list_templates().await?;
            if json {
                output::print_json(&list)?;
            } else {
                list.templates.iter().try_for_each(print_template_line)?;
            }
        }
        Command::Show { name } => show(&client.get_template(&name).await?)?,
        Command::Create(create) => {
            let Create { name, description, packages, settings, kernel, pool_size, image, allowed_uploads } = *create;
            let req = CreateTemplate {
                name: name.clone(),
                description,
                rootfs: None,
                image,
                limits: Some(settings.limits()),
                timeout_s: settings.timeout,
                kernel,
                env: Some(settings.env()?),
                packages: Some(packages),
                pool_size,
                idle_timeout_s: settings.idle_timeout,
                max_lifetime_s: settings.max_lifetime,
                allowed_uploads: Some(allowed_uploads),
            };
            let created = client.create_template(&req).await?;
            let t = if created.status == TemplateStatus::Building {
                let wait = client.wait_template(&name, std::time::Duration::from_secs(3600));
                output::with_progress("installing packages", wait).await?
            } else {
                created
            };
            show(&t)?;
            if t.status == TemplateStatus::Failed {
                return Ok(1);
            }
        }
        Command::Delete { name } => client.delete_template(&name).await?,
    }
    Ok(0)
}
