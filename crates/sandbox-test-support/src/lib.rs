//! Test helpers shared by every crate's integration tests.
//!
//! [`TestServer`] runs the real server (real HTTP on a free loopback port, real SQLite, the
//! real local runtime with bubblewrap) on a temporary data dir that is removed on drop. The
//! executor binary must have been built (`cargo build --bins`; the test script does it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sandbox_api::{CreateExecution, CreateSession, Execution, Language, Session};
use sandbox_client::Client;
use sandbox_server::{Config, Server};

/// The workspace's target directory for the current profile, found from the test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
}

/// A built binary of this workspace (`sandboxd`, `sandbox-executor`, `sbx`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let p = target_dir().join(name);
    if !p.is_file() {
        bail!("{} is not built; run `cargo build --bins` first (scripts/test.sh does)", p.display());
    }
    Ok(p)
}

pub struct TestServer {
    pub server: Option<Server>,
    pub client: Client,
    pub config: Config,
    /// Keeps the data dir alive; `None` after `into_data_dir`.
    data: Option<tempfile::TempDir>,
}

/// A config for tests: a free port, a fresh data dir under /tmp (which the sandbox user can
/// traverse), the built executor, and no warm pools (tests that are about pools turn them on),
/// so that every test starts only the sandboxes it asks for.
pub fn test_config(data_dir: &Path) -> anyhow::Result<Config> {
    Ok(Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_path_buf(),
        executor: Some(binary("sandbox-executor")?),
        run_pool: 0,
        session_pool: 0,
        ..Config::default()
    })
}

impl TestServer {
    /// Starts a server with default settings and checks that it is ready.
    pub async fn start() -> anyhow::Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` has adjusted its config; does not require readiness.
    pub async fn start_unchecked(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestServer> {
        let data = tempfile::Builder::new().prefix("sandboxd-test-").tempdir_in("/tmp")?;
        let mut config = test_config(data.path())?;
        tweak(&mut config);
        let server = Server::start(config.clone()).await.context("start sandboxd")?;
        let client = Client::new(&format!("http://{}", server.addr));
        Ok(TestServer { server: Some(server), client, config, data: Some(data) })
    }

    /// Starts a server and fails (never skips) if sandboxes cannot be created here.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestServer> {
        let t = Self::start_unchecked(tweak).await?;
        let (_, r) = t.client.readiness().await?;
        if !r.ready {
            bail!("sandboxd is not ready on this machine: {} (install step: scripts/install.sh)", r.sandbox.message);
        }
        Ok(t)
    }

    pub fn port(&self) -> u16 {
        self.server.as_ref().map(|s| s.addr.port()).unwrap_or(0)
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Stops the server (killing its sandboxes) and starts a new one on the same data dir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse()?;
        let server = Server::start(config).await?;
        self.client = Client::new(&format!("http://{}", server.addr));
        self.server = Some(server);
        Ok(())
    }

    pub async fn session(&self) -> anyhow::Result<Session> {
        Ok(self.client.create_session(&CreateSession::default()).await?)
    }

    /// Runs `code` in `session` and returns the execution.
    pub async fn exec(&self, session: &str, language: Language, code: &str) -> anyhow::Result<Execution> {
        Ok(self.client.execute(session, &exec_req(language, code)).await?)
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // A test that failed before `shutdown()`: still kill its sandboxes and cgroups.
            // This needs a multi-thread runtime (integration tests use one); on a
            // current-thread runtime, bwrap's --die-with-parent cleans up the processes.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                    tokio::task::block_in_place(|| handle.block_on(server.shutdown()));
                }
            }
        }
        drop(self.data.take());
    }
}

pub fn exec_req(language: Language, code: &str) -> CreateExecution {
    CreateExecution::new(language, code)
}
