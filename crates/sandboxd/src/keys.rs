//! `sandboxd keys create|list|revoke`: API keys, kept in the data dir's database. They work
//! beside a running server: it reads the keys on every request.

use anyhow::Context;
use sandbox_service::Config;
use sandbox_store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Makes a key for a tenant and prints it once (only its hash is kept).
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// The key sees every tenant's sessions, not only its own.
        #[arg(long)]
        admin: bool,
    },
    /// Lists the keys (never their secrets).
    List,
    /// Revokes a key: requests with it are refused from now on.
    Revoke {
        /// The key's id (`key_...`, as `list` shows it).
        id: String,
    },
}

pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    if config.database_url.is_none() {
        let dir = config.data_dir.join("db");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let url = config.database_url();
    let store = Store::connect(&url).await.with_context(|| format!("open {}", sandbox_store::redacted(&url)))?;
    match command {
        KeysCommand::Create { tenant, admin } => {
            let made = sandbox_service::access::auth::create_key(&store, &tenant, admin).await?;
            let role = if admin { ", admin" } else { "" };
            eprintln!("created {} for tenant {tenant}{role}; the key is shown this once:", made.key.id);
            println!("{}", made.token);
        }
        KeysCommand::List => {
            println!("{:<30} {:<24} {:<6} {:<26} REVOKED", "ID", "TENANT", "ADMIN", "CREATED");
            for key in store.keys().await? {
                let revoked = key.revoked_at.map_or("-".to_string(), |at| at.to_rfc3339());
                let admin = if key.admin { "yes" } else { "no" };
                println!(
                    "{:<30} {:<24} {:<6} {:<26} {revoked}",
                    key.id,
                    key.tenant,
                    admin,
                    key.created_at.to_rfc3339()
                );
            }
        }
        KeysCommand::Revoke { id } => {
            sandbox_service::access::auth::revoke_key(&store, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
