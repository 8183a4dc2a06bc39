//! sandboxd's configuration: one typed struct with defaults, each field overridable by a flag
//! and a `SANDBOXD_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use sandbox_runtime::cgroup::CgroupMode;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve the API on.
    #[arg(long, env = "SANDBOXD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve without API keys on an address beyond loopback: anyone who reaches it can run
    /// code. Without it, sandboxd refuses such an address until a key exists
    /// (`sandboxd keys create`).
    #[arg(long, env = "SANDBOXD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Host names (or `host:port`) MCP clients may reach `/mcp` by, besides the loopback
    /// ones, comma-separated: requests naming another `Host` are refused, so a web page
    /// cannot reach sandboxd through DNS rebinding. Name the host of a deployment here.
    #[arg(long, env = "SANDBOXD_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub mcp_allowed_hosts: Vec<String>,

    /// The domain of E2B-style sandbox addresses behind wildcard DNS and TLS:
    /// `https://<port>-<sandbox id>.<domain>` reaches a sandbox, `https://api.<domain>` the
    /// E2B control API (routed by `Host`). The E2B SDK takes it as `E2B_DOMAIN`.
    #[arg(long, env = "SANDBOXD_E2B_DOMAIN")]
    pub e2b_domain: Option<String>,

    /// Where the database, workspaces and runtime files live.
    #[arg(long, env = "SANDBOXD_DATA_DIR", default_value = "./sandbox-data")]
    pub data_dir: PathBuf,

    /// Which runtime runs sandboxes: `local` (bubblewrap + seccomp + cgroups on this host) or
    /// `docker` (a container per sandbox on a Docker engine, bubblewrap inside).
    #[arg(long, env = "SANDBOXD_RUNTIME", default_value = "local")]
    pub runtime: RuntimeKind,

    /// Default memory limit of a sandbox, MiB.
    #[arg(long, env = "SANDBOXD_DEFAULT_MEMORY_MB", default_value_t = 512)]
    pub default_memory_mb: u64,
    /// Largest memory limit a client may ask for, MiB.
    #[arg(long, env = "SANDBOXD_MAX_MEMORY_MB", default_value_t = 8192)]
    pub max_memory_mb: u64,
    /// Default process/thread limit of a sandbox.
    #[arg(long, env = "SANDBOXD_DEFAULT_PIDS", default_value_t = 256)]
    pub default_pids: u32,
    #[arg(long, env = "SANDBOXD_MAX_PIDS", default_value_t = 4096)]
    pub max_pids: u32,
    /// Default CPU limit, in cores.
    #[arg(long, env = "SANDBOXD_DEFAULT_CPU", default_value_t = 1.0)]
    pub default_cpu: f64,
    #[arg(long, env = "SANDBOXD_MAX_CPU", default_value_t = 16.0)]
    pub max_cpu: f64,

    /// Default per-execution wall-clock timeout, seconds.
    #[arg(long, env = "SANDBOXD_DEFAULT_TIMEOUT_S", default_value_t = 60.0)]
    pub default_timeout_s: f64,
    #[arg(long, env = "SANDBOXD_MAX_TIMEOUT_S", default_value_t = 3600.0)]
    pub max_timeout_s: f64,

    /// Bytes of stdout and of stderr kept per execution; the rest is dropped and flagged.
    #[arg(long, env = "SANDBOXD_OUTPUT_LIMIT_BYTES", default_value_t = 1 << 20)]
    pub output_limit_bytes: usize,

    /// Bytes all outputs of one execution may take together (streams, displays, results,
    /// errors); the rest is dropped and `outputs_truncated` set. At most 16 MiB.
    #[arg(long, env = "SANDBOXD_OUTPUTS_LIMIT_BYTES", default_value_t = sandbox_protocol::DEFAULT_OUTPUTS_LIMIT)]
    pub outputs_limit_bytes: usize,

    /// Keep a finished execution's record this many seconds (0: forever).
    #[arg(long, env = "SANDBOXD_EXECUTION_RETENTION_S", default_value_t = 7 * 24 * 3600)]
    pub execution_retention_s: u64,

    /// Keep at most this many finished executions per session, the newest (0: no limit).
    #[arg(long, env = "SANDBOXD_MAX_EXECUTIONS_PER_SESSION", default_value_t = 1000)]
    pub max_executions_per_session: usize,

    /// Largest request body accepted (413 above it).
    #[arg(long, env = "SANDBOXD_MAX_BODY_BYTES", default_value_t = 10 << 20)]
    pub max_body_bytes: usize,

    /// A connection must send a whole request head within this many seconds, and an idle
    /// keep-alive connection is closed after it (slow or stalled clients hold no connection).
    #[arg(long, env = "SANDBOXD_HEADER_READ_TIMEOUT_S", default_value_t = 10.0)]
    pub header_read_timeout_s: f64,

    /// Connections served at once; past it, a few more are kept for /healthz, /readyz and
    /// /metrics, and the rest are answered 503.
    #[arg(long, env = "SANDBOXD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Sandboxes started at once (default: one per CPU); later starts wait their turn.
    #[arg(long, env = "SANDBOXD_MAX_CONCURRENT_STARTS", default_value_t = default_concurrent_starts())]
    pub max_concurrent_starts: usize,

    /// Sandbox starts that may wait for their turn; past it, a request that needs a new
    /// sandbox is refused at once with 429 and `Retry-After`.
    #[arg(long, env = "SANDBOXD_MAX_QUEUED_STARTS", default_value_t = 256)]
    pub max_queued_starts: usize,

    /// New sessions are refused (503) when the memory limits of the sandboxes that run would
    /// add up to more than this many times the host's memory.
    #[arg(long, env = "SANDBOXD_MEMORY_OVERCOMMIT", default_value_t = 1.0)]
    pub memory_overcommit: f64,

    /// New sessions are refused (503) when the quotas of the workspaces kept would add up to
    /// more than this many times the disk they can use (free, plus what they use already).
    #[arg(long, env = "SANDBOXD_DISK_OVERCOMMIT", default_value_t = 10.0)]
    pub disk_overcommit: f64,

    /// New sessions are refused (503) while the data dir's disk has less free than this, MiB.
    #[arg(long, env = "SANDBOXD_MIN_FREE_DISK_MB", default_value_t = 2048)]
    pub min_free_disk_mb: u64,

    /// Executions that may wait in one session's queue; more are refused with 429.
    #[arg(long, env = "SANDBOXD_MAX_QUEUE", default_value_t = 32)]
    pub max_queue: usize,

    /// Started, idle sandboxes kept for `POST /v1/run` (0 = start each one cold).
    #[arg(long, env = "SANDBOXD_RUN_POOL", default_value_t = 2)]
    pub run_pool: usize,

    /// Started sandboxes with a warm Python kernel kept for new sessions (0 = start cold).
    #[arg(long, env = "SANDBOXD_SESSION_POOL", default_value_t = 2)]
    pub session_pool: usize,

    /// Stop a session's sandbox after this many seconds without use (the workspace stays).
    #[arg(long, env = "SANDBOXD_IDLE_TIMEOUT_S", default_value_t = 15 * 60)]
    pub idle_timeout_s: u64,

    /// Stop a session's sandbox this many seconds after it started, used or not.
    #[arg(long, env = "SANDBOXD_MAX_LIFETIME_S", default_value_t = 24 * 3600)]
    pub max_lifetime_s: u64,

    /// Keep the workspace of a stopped or deleted session this many seconds (0: forever).
    #[arg(long, env = "SANDBOXD_RETENTION_S", default_value_t = 24 * 3600)]
    pub retention_s: u64,

    /// How often the idle sweep looks for idle and expired sessions (and prunes, unmounts and
    /// removes what is due), seconds.
    #[arg(long, alias = "reaper-interval-s", env = "SANDBOXD_SWEEP_INTERVAL_S", default_value_t = 30.0)]
    pub sweep_interval_s: f64,

    /// Largest file one upload may write to a workspace (413 above it).
    #[arg(long, env = "SANDBOXD_MAX_FILE_BYTES", default_value_t = 2 << 30)]
    pub max_file_bytes: u64,

    /// Bytes of files a workspace may hold; uploads beyond it are refused with 507.
    #[arg(long, env = "SANDBOXD_WORKSPACE_QUOTA_BYTES", default_value_t = 10 << 30)]
    pub workspace_quota_bytes: u64,

    /// Package index for template and session package installs (default: PyPI, or pip's own
    /// configuration).
    #[arg(long, env = "SANDBOXD_PIP_INDEX_URL")]
    pub pip_index_url: Option<String>,

    /// Time limit of one package installation, seconds.
    #[arg(long, env = "SANDBOXD_PACKAGE_TIMEOUT_S", default_value_t = 600)]
    pub package_timeout_s: u64,

    /// Where workspaces are kept: `local` (directories under the data dir), or
    /// `s3://bucket[/prefix]` (an S3-compatible bucket; the directories become its cache).
    /// Endpoint, region and credentials come from the flags below or the usual `AWS_*`
    /// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
    #[arg(long, env = "SANDBOXD_STORAGE", default_value = "local")]
    pub storage: String,
    /// S3 endpoint URL (for S3-compatible servers other than AWS).
    #[arg(long, env = "SANDBOXD_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "SANDBOXD_S3_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "SANDBOXD_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// Prefer the environment for this one: a flag is visible to every user in `ps`.
    #[arg(long, env = "SANDBOXD_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// With S3 storage, how often running sessions' changed files are written back, seconds
    /// (they are also written back after each execution and when a session stops).
    #[arg(long, env = "SANDBOXD_SYNC_INTERVAL_S", default_value_t = 60.0)]
    pub sync_interval_s: f64,

    /// Where the server may send requests that callers point it at (execution callbacks)
    /// besides public addresses: CIDRs, addresses or host names, comma-separated. Loopback,
    /// private, link-local and other internal addresses are refused unless listed here.
    #[arg(long, env = "SANDBOXD_OUTBOUND_ALLOW", value_delimiter = ',')]
    pub outbound_allow: Vec<String>,

    /// Settings of the local runtime (last: its help heading applies to what follows).
    #[command(flatten, next_help_heading = "Local runtime")]
    pub local: LocalSection,

    #[command(flatten, next_help_heading = "Docker runtime")]
    pub docker: DockerSection,

    #[command(flatten, next_help_heading = "Limits of each tenant")]
    pub tenant: TenantLimits,
}

/// What one tenant (the keys of one `--tenant`; requests with no key are tenant `default`)
/// may hold at once, whatever the host could give: past a limit, 429 (sessions, executions)
/// or 507 (workspace bytes) naming it. 0: no limit.
#[derive(Debug, Clone, clap::Args)]
pub struct TenantLimits {
    /// Running sessions (with a sandbox) one tenant may have.
    #[arg(long = "tenant-max-sessions", env = "SANDBOXD_TENANT_MAX_SESSIONS", default_value_t = 100)]
    pub max_sessions: u64,

    /// Executions one tenant may have queued or running at once, over all its sessions and
    /// `/v1/run`.
    #[arg(long = "tenant-max-executions", env = "SANDBOXD_TENANT_MAX_EXECUTIONS", default_value_t = 200)]
    pub max_executions: u64,

    /// Bytes of files all of one tenant's workspaces on this host may hold, MiB: checked when a
    /// session is made and at each upload (code in a sandbox is held by its workspace quota).
    #[arg(long = "tenant-max-workspace-mb", env = "SANDBOXD_TENANT_MAX_WORKSPACE_MB", default_value_t = 100 << 10)]
    pub max_workspace_mb: u64,
}

/// Settings of the local runtime (`--runtime local`).
#[derive(Debug, Clone, clap::Args)]
pub struct LocalSection {
    /// The bubblewrap binary (a path, or a name looked up on PATH).
    #[arg(long, env = "SANDBOXD_BWRAP", default_value = "bwrap")]
    pub bwrap: PathBuf,

    /// The sandbox-executor binary; by default the one next to sandboxd.
    #[arg(long, env = "SANDBOXD_EXECUTOR")]
    pub executor: Option<PathBuf>,

    /// Host user sandboxes run as when sandboxd runs as root.
    #[arg(long, env = "SANDBOXD_SANDBOX_USER", default_value = "sandbox")]
    pub sandbox_user: String,

    /// cgroup version for limits: auto (v2, else v1), v2, v1, or off (no limits).
    #[arg(long, env = "SANDBOXD_CGROUPS", default_value = "auto")]
    pub cgroups: CgroupMode,

    /// Size of each sandbox's private /tmp, MiB.
    #[arg(long, env = "SANDBOXD_TMP_SIZE_MB", default_value_t = 256)]
    pub tmp_size_mb: u64,

    /// Workspaces as volumes of their own, so the quota holds for what code writes (ENOSPC in
    /// the sandbox): `auto` (when the host allows: root, loop devices, mkfs.ext4), `on`
    /// (refuse to start without), `off`. The system volume follows the same setting.
    #[arg(long, env = "SANDBOXD_WORKSPACE_VOLUMES", default_value = "auto")]
    pub workspace_volumes: VolumeMode,

    /// Size of the system volume, which holds what sandboxes mount besides their workspace:
    /// template environments, session packages, pip's cache and the runtime's files. Sparse:
    /// it takes only what is written. Installs past it fail with "no space left".
    #[arg(long, env = "SANDBOXD_SYSTEM_VOLUME_BYTES", default_value_t = 64 << 30)]
    pub system_volume_bytes: u64,

    /// How the file API reaches workspaces: `host` (on this disk, the fast way) or `executor`
    /// (through the executor inside the session's sandbox, as a runtime whose sandboxes do not
    /// share this disk must: to try that path on one host).
    #[arg(long, env = "SANDBOXD_FILE_ACCESS", default_value = "host")]
    pub file_access: FileAccess,
}

/// Settings of the Docker runtime (`--runtime docker`). Containers run as `--sandbox-user`
/// (when sandboxd is root) and the file API follows `--file-access`, as for the local runtime.
#[derive(Debug, Clone, clap::Args)]
pub struct DockerSection {
    /// The Docker engine: `unix:///var/run/docker.sock`, `tcp://host:2375`, ...; by default
    /// `DOCKER_HOST`, else the local socket. The API version is negotiated with the engine.
    #[arg(long = "docker-host", env = "DOCKER_HOST")]
    pub host: Option<String>,

    /// The image of sandboxes without a template image of their own
    /// (`scripts/build-sandbox-image.sh` builds it).
    #[arg(long = "docker-image", env = "SANDBOXD_DOCKER_IMAGE", default_value = "sandbox-platform/sandbox:latest")]
    pub image: String,

    /// The second isolation layer, bubblewrap inside each container: `auto` (on where the
    /// engine allows it; readiness says plainly when it does not), `on` (no sandbox without
    /// it), `off`.
    #[arg(long = "docker-second-layer", env = "SANDBOXD_DOCKER_SECOND_LAYER", default_value = "auto")]
    pub second_layer: sandbox_runtime::docker::SecondLayer,
}

/// See `--file-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileAccess {
    Host,
    Executor,
}

/// The runtimes sandboxd can run sandboxes with (see `runtimes.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Local,
    Docker,
}

fn default_concurrent_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Whether workspaces are volumes of their own (see `--workspace-volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VolumeMode {
    Auto,
    On,
    Off,
}

/// For clap's derive on the binary: `sandboxd [OPTIONS]`.
#[derive(Debug, clap::Parser)]
#[command(name = "sandboxd", version, about = "Code-execution sandboxes for AI agents: the control plane")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
}

impl Default for Config {
    fn default() -> Self {
        use clap::Parser;
        // Cannot fail: every field has a default. Environment variables still apply.
        Cli::parse_from(["sandboxd"]).config
    }
}

impl Config {
    /// Checks cross-field consistency; the message names the offending settings.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (self.default_memory_mb <= self.max_memory_mb, "default memory above the maximum"),
            (self.default_pids <= self.max_pids, "default pids above the maximum"),
            (self.default_cpu > 0.0 && self.default_cpu <= self.max_cpu, "default cpu must be in (0, max_cpu]"),
            (
                self.default_timeout_s > 0.0 && self.default_timeout_s <= self.max_timeout_s,
                "default timeout must be in (0, max_timeout_s]",
            ),
            (self.output_limit_bytes > 0, "output limit must be positive"),
            (
                self.outputs_limit_bytes > 0 && self.outputs_limit_bytes <= sandbox_protocol::MAX_OUTPUTS_LIMIT,
                "outputs limit must be in (0, 16 MiB]",
            ),
            (
                self.output_limit_bytes <= sandbox_protocol::MAX_OUTPUTS_LIMIT,
                "output limit per stream must be at most 16 MiB",
            ),
            (
                self.header_read_timeout_s.is_finite() && self.header_read_timeout_s >= 0.1,
                "header read timeout must be at least 0.1 s",
            ),
            (self.max_connections > 0, "max connections must be positive"),
            (self.max_concurrent_starts > 0, "max concurrent starts must be positive"),
            (
                self.memory_overcommit.is_finite() && self.memory_overcommit > 0.0,
                "memory overcommit must be a positive factor",
            ),
            (
                self.disk_overcommit.is_finite() && self.disk_overcommit > 0.0,
                "disk overcommit must be a positive factor",
            ),
            (self.idle_timeout_s > 0 && self.max_lifetime_s > 0, "idle timeout and lifetime must be positive"),
            (
                self.sweep_interval_s.is_finite() && self.sweep_interval_s >= 0.05,
                "sweep interval must be at least 0.05 s",
            ),
            (self.sync_interval_s.is_finite() && self.sync_interval_s >= 0.05, "sync interval must be at least 0.05 s"),
            (
                self.storage == "local" || self.storage.starts_with("s3://"),
                "storage must be local or s3://bucket[/prefix]",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(msg.to_string()),
            None => Ok(()),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db").join("sandbox.db")
    }

    /// The S3 settings, when workspaces are kept in a bucket.
    pub fn s3(&self) -> Option<sandbox_workspace::S3Options> {
        self.storage.starts_with("s3://").then(|| sandbox_workspace::S3Options {
            url: self.storage.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./sandbox-data"));
        assert_eq!(c.output_limit_bytes, 1 << 20);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn inconsistent_limits_are_refused() {
        let c = Config { default_memory_mb: 10_000, max_memory_mb: 100, ..Config::default() };
        assert!(c.validate().expect_err("must fail").contains("memory"));
    }
}
