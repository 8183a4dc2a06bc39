//! Real databases for tests (feature `testing`): a private SQLite file, or a fresh database on
//! a real PostgreSQL server. `scripts/test.sh` starts one server for the whole run and names
//! it in `SANDBOXD_TEST_POSTGRES_URL`; without it, each [`TestDatabase`] starts a server of its
//! own (`scripts/postgres.sh`), stopped when it is dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Backend, Store, StoreError};

/// The variable naming a PostgreSQL server tests may make databases on (its admin URL).
pub const POSTGRES_URL_VAR: &str = "SANDBOXD_TEST_POSTGRES_URL";

/// A database of one test's own; gone (with its private server, if any) when dropped.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    server: Option<PrivateServer>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A fresh database on `backend`.
    pub async fn new(backend: Backend) -> Result<TestDatabase, StoreError> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| setup(e.to_string()))?;
                let url = crate::sqlite_url(&dir.path().join("test.db"));
                Ok(TestDatabase { url, backend, server: None, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let (admin, server) = match std::env::var(POSTGRES_URL_VAR) {
                    Ok(url) => (url, None),
                    Err(_) => {
                        let server = PrivateServer::start()?;
                        (server.url.clone(), Some(server))
                    }
                };
                let url = create_database(&admin).await?;
                Ok(TestDatabase { url, backend, server, _dir: None })
            }
        }
    }

    /// The store on it, migrated.
    pub async fn store(&self) -> Result<Store, StoreError> {
        Store::connect(&self.url).await
    }

    /// Whether this database lives on a server of its own.
    pub fn has_private_server(&self) -> bool {
        self.server.is_some()
    }
}

fn setup(message: String) -> StoreError {
    StoreError::Open { url: "test database".into(), message }
}

/// Makes a database with a name of its own on the server at `admin`; returns its URL.
async fn create_database(admin: &str) -> Result<String, StoreError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("t_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await?;
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').ok_or_else(|| setup(format!("{admin}: no database in the URL")))?;
    Ok(format!("{base}/{name}"))
}

fn nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// A PostgreSQL server in a temporary directory, started by `scripts/postgres.sh`.
struct PrivateServer {
    dir: PathBuf,
    url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

impl PrivateServer {
    fn start() -> Result<PrivateServer, StoreError> {
        let dir = std::env::temp_dir().join(format!("sandbox-pg-{}-{}", std::process::id(), nanos()));
        let out = Command::new(script()).arg("start").arg(&dir).output().map_err(|e| setup(e.to_string()))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(setup(format!("scripts/postgres.sh start: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PrivateServer { dir, url })
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
