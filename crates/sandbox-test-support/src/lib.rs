//! Test helpers shared by every crate's integration tests.
//!
//! [`TestServer`] runs the real server (real HTTP on a free loopback port, real SQLite, the
//! real local runtime with bubblewrap) on a temporary data dir that is removed on drop. The
//! executor binary must have been built (`cargo build --bins`; the test script does it).

pub mod kubernetes;

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
///
/// `SANDBOXD_RUNTIME` and `SANDBOXD_FILE_ACCESS` choose what the tests run on, as they do for
/// `sandboxd`: `scripts/test.sh` runs suites again on Docker and through the executor so.
pub fn test_config(data_dir: &Path) -> anyhow::Result<Config> {
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_path_buf(),
        run_pool: 0,
        session_pool: 0,
        ..Config::default()
    };
    config.local.executor = Some(binary("sandbox-executor")?);
    if let Ok(runtime) = std::env::var("SANDBOXD_RUNTIME") {
        config.runtime = runtime.parse().map_err(|e| anyhow::anyhow!("SANDBOXD_RUNTIME: {e}"))?;
    }
    if let Ok(access) = std::env::var("SANDBOXD_FILE_ACCESS") {
        config.local.file_access = access.parse().map_err(|e| anyhow::anyhow!("SANDBOXD_FILE_ACCESS: {e}"))?;
    }
    Ok(config)
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

    /// What every hostile case ends with: the server still answers `/healthz`, and
    /// `bystander`, a session the attack did not aim at, still runs code.
    pub async fn assert_healthy(&self, bystander: &str) -> anyhow::Result<()> {
        let (status, body) = self.client.raw(reqwest::Method::GET, "/healthz", None).await?;
        anyhow::ensure!(status.is_success(), "/healthz answered {status}: {body}");
        let e = self.exec(bystander, Language::Bash, "echo alive").await?;
        anyhow::ensure!(e.stdout == "alive\n", "the bystander session no longer runs code: {e:?}");
        Ok(())
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

/// An executor request as sandboxd sends it: `code` in `language`, in the kernel if `kernel`,
/// with a 30 s timeout and 1 MiB of output.
pub fn exec_request(id: &str, language: Language, code: &str, kernel: bool) -> sandbox_protocol::ExecRequest {
    sandbox_protocol::ExecRequest {
        id: id.into(),
        language,
        code: code.into(),
        stdin: None,
        env: Default::default(),
        timeout_ms: 30_000,
        output_limit: 1 << 20,
        outputs_limit: 1 << 20,
        kernel,
        context: None,
        forget_context: false,
        stream: false,
    }
}

pub fn exec_req(language: Language, code: &str) -> CreateExecution {
    CreateExecution::new(language, code)
}

/// A new API key, as `sandboxd keys create ARGS` prints it for data dir `data` (ARGS:
/// `--tenant NAME [--admin]`).
pub fn create_key(data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(binary("sandboxd")?)
        .args([&["keys", "create"], args].concat())
        .env("SANDBOXD_DATA_DIR", data)
        .output()?;
    anyhow::ensure!(out.status.success(), "keys create: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The Python of the venv the test clients are installed in (`scripts/install-test-clients.sh`).
pub fn test_venv_python() -> anyhow::Result<PathBuf> {
    let python = target_dir().join("../test-venv/bin/python");
    if !python.is_file() {
        bail!("{} is missing; run scripts/install-test-clients.sh (scripts/test.sh does)", python.display());
    }
    Ok(python)
}

/// Runs a check script of `tests/` (a path from the workspace root) with the test venv's
/// Python, `args` and `env`: it passes when it exits 0 having said "all checks passed"; what
/// it said is the error otherwise.
pub fn run_check_script(script: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(script);
    let out = std::process::Command::new(test_venv_python()?)
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success() && said.contains("all checks passed"), "{said}");
    Ok(())
}

/// The value of the first series in Prometheus text `metrics` whose line starts with `prefix`
/// (a name and the first labels, say `sandboxd_sweep_actions_total{action="stopped_idle"`):
/// the labels after it (the replica's) may be anything.
pub fn metric_value(metrics: &str, prefix: &str) -> Option<u64> {
    let line = metrics.lines().find(|l| l.starts_with(prefix))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// Unmounts everything mounted under `dir`, deepest first: what a sandboxd killed in a test,
/// and never started again, left mounted (its workspace and system volumes), so that the
/// test's temporary directory can go and no loop device stays attached.
pub fn unmount_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    // The fifth field is the mount point (octal escapes for spaces; these paths have none).
    let mut points: Vec<&str> =
        table.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = std::process::Command::new("umount").arg(point).status();
    }
}

/// The real `sandboxd` binary as a child process, for tests of signals and crashes.
pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
    /// Its log lines (stderr), as they arrive.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `sandboxd` on a free port with `data_dir` (and `env`), and waits for its banner.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(binary("sandboxd")?)
            .env("SANDBOXD_LISTEN", "127.0.0.1:0")
            .env("SANDBOXD_DATA_DIR", data_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().context("no stderr")?;
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().context("sandboxd exited before listening")??;
            if let Some(url) = line.strip_prefix("sandboxd listening on ") {
                break url.to_string();
            }
        };
        // Keep draining, so the daemon never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Daemon { child, url, log })
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// Sends `signal` (a number, as kill(1) takes it).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        // std has no kill(); the kill command does it without unsafe code here.
        let status =
            std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> anyhow::Result<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(start.elapsed() < limit, "sandboxd did not exit within {limit:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    /// A clean stop when it still runs (it unmounts the workspace volumes it mounted), else
    /// SIGKILL.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && self.signal(15).is_ok() {
            let _ = self.wait_exit(std::time::Duration::from_secs(15));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 10 s) until execution `id` is running.
pub async fn until_running(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !matches!(client.get_execution(id).await.map(|e| e.status), Ok(sandbox_api::ExecutionStatus::Running)) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "execution {id} never ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Host processes whose command line mentions `needle` (bwrap's names a sandbox's workspace).
pub fn processes_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The instance label of the Docker runtime's containers for `data_dir`.
pub fn docker_instance(data_dir: &Path) -> String {
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    sandbox_runtime::local::tag(&dir.to_string_lossy())
}

/// How many containers of the Docker engine (`DOCKER_HOST`, else the local socket) the Docker
/// runtime made for `data_dir`, running or not. Panics when the engine cannot be asked: a
/// test that counts containers needs the engine.
pub fn docker_containers(data_dir: &Path) -> usize {
    let label = format!("label=org.sandbox-platform.instance={}", docker_instance(data_dir));
    let out = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &label]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().count(),
        Ok(o) => panic!("docker ps failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run docker: {e}"),
    }
}

/// A real S3-compatible server for the tests of S3 workspace storage: moto's server, from
/// PyPI (`scripts/install-test-s3.sh` installs it into `target/test-venv`), on a free port,
/// killed on drop.
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
}

/// Credentials moto accepts (any); set in each config, never in the environment.
const S3_KEY: &str = "test-key";
const S3_SECRET: &str = "test-secret";
const S3_REGION: &str = "us-east-1";

impl S3Server {
    pub async fn start() -> anyhow::Result<S3Server> {
        let moto = match std::env::var_os("SANDBOX_TEST_MOTO_SERVER") {
            Some(p) => PathBuf::from(p),
            None => target_dir().parent().unwrap_or(Path::new(".")).join("test-venv/bin/moto_server"),
        };
        if !moto.is_file() {
            bail!("{} is missing; run scripts/install-test-s3.sh (scripts/test.sh does)", moto.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", moto.display()))?;
        let server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        bail!("moto did not listen on port {port} within 20 s")
    }

    /// Creates bucket `name`.
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let resp = reqwest::Client::new().put(format!("{}/{name}", self.endpoint)).send().await?;
        if !resp.status().is_success() {
            bail!("create bucket {name}: {}", resp.status());
        }
        Ok(())
    }

    /// Points `config` at `url` (`s3://bucket/prefix`) on this server.
    pub fn configure(&self, config: &mut Config, url: &str) {
        configure_s3(config, url, &self.endpoint);
    }

    /// A client of `bucket`, to look at (or change) what sandboxd stored.
    pub fn bucket(&self, bucket: &str) -> anyhow::Result<object_store::aws::AmazonS3> {
        Ok(object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(S3_REGION)
            .with_access_key_id(S3_KEY)
            .with_secret_access_key(S3_SECRET)
            .build()?)
    }

    /// The bytes of object `key` in `bucket`, read with the test credentials.
    pub async fn object(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let got = self.bucket(bucket)?.get(&object_store::path::Path::parse(key)?).await;
        Ok(got.with_context(|| format!("s3://{bucket}/{key}"))?.bytes().await?.to_vec())
    }
}

/// Points `config` at `url` (`s3://bucket/prefix`) on the S3 server at `endpoint`, with the
/// test credentials (any server here, or none listening at all).
pub fn configure_s3(config: &mut Config, url: &str, endpoint: &str) {
    config.storage = url.to_string();
    config.s3_endpoint = Some(endpoint.to_string());
    config.s3_region = Some(S3_REGION.into());
    config.s3_access_key_id = Some(S3_KEY.into());
    config.s3_secret_access_key = Some(S3_SECRET.into());
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
