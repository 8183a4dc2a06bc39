//! sandboxd's configuration: one typed struct with defaults, a section per runtime. The
//! binary turns flags and `SANDBOXD_*` variables into it (`sandboxd/src/flags.rs`, where each
//! setting's full help is); nothing here parses a command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use sandbox_runtime::cgroup::CgroupMode;
use sandbox_runtime::docker::SecondLayer;

/// Everything sandboxd is told at start; [`Config::default`] holds every setting's default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to serve the API on (`--listen`).
    pub listen: SocketAddr,
    /// Serve without API keys on an address beyond loopback: anyone who reaches it can run code
    /// (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
    /// Host names (or `host:port`) MCP clients may reach `/mcp` by, besides the loopback ones,
    /// comma-separated: requests naming another `Host` are refused, so a web page cannot reach
    /// sandboxd through DNS rebinding (`--mcp-allowed-hosts`).
    pub mcp_allowed_hosts: Vec<String>,
    /// The domain of E2B-style sandbox addresses behind wildcard DNS and TLS:
    /// `https://<port>-<sandbox id>.<domain>` reaches a sandbox, `https://api.<domain>` the E2B
    /// control API (routed by `Host`) (`--e2b-domain`).
    pub e2b_domain: Option<String>,
    /// Where the database, workspaces and runtime files live (`--data-dir`).
    pub data_dir: PathBuf,
    /// The database (`--database-url`): `postgres://...`, or `None` for SQLite in the data dir.
    pub database_url: Option<sandbox_store::DatabaseUrl>,
    /// This process's id among the replicas of its database (`--replica-id`); `None`: a tag
    /// of the data dir, the same across restarts.
    pub replica_id: Option<String>,
    /// Where other replicas reach this one (`--advertise-url`); `None`: `http://<listen>`.
    pub advertise_url: Option<String>,
    /// How long a replica's heartbeat holds its lease, seconds (`--replica-lease-s`).
    pub replica_lease_s: f64,
    /// Which runtime runs sandboxes: `local` (bubblewrap + seccomp + cgroups on this host) or
    /// `docker` (a container per sandbox on a Docker engine, bubblewrap inside) (`--runtime`).
    pub runtime: RuntimeKind,
    /// Default memory limit of a sandbox, MiB (`--default-memory-mb`).
    pub default_memory_mb: u64,
    /// Largest memory limit a client may ask for, MiB (`--max-memory-mb`).
    pub max_memory_mb: u64,
    /// Default process/thread limit of a sandbox (`--default-pids`).
    pub default_pids: u32,
    /// Largest process/thread limit a client may ask for (`--max-pids`).
    pub max_pids: u32,
    /// Default CPU limit, in cores (`--default-cpu`).
    pub default_cpu: f64,
    /// Largest CPU limit a client may ask for, in cores (`--max-cpu`).
    pub max_cpu: f64,
    /// Default per-execution wall-clock timeout, seconds (`--default-timeout-s`).
    pub default_timeout_s: f64,
    /// Largest per-execution timeout a client may ask for, seconds (`--max-timeout-s`).
    pub max_timeout_s: f64,
    /// Bytes of stdout and of stderr kept per execution; the rest is dropped and flagged
    /// (`--output-limit-bytes`).
    pub output_limit_bytes: usize,
    /// Bytes all outputs of one execution may take together (streams, displays, results, errors);
    /// the rest is dropped and `outputs_truncated` set (`--outputs-limit-bytes`).
    pub outputs_limit_bytes: usize,
    /// Keep a finished execution's record this many seconds (0: forever)
    /// (`--execution-retention-s`).
    pub execution_retention_s: u64,
    /// Keep at most this many finished executions per session, the newest (0: no limit)
    /// (`--max-executions-per-session`).
    pub max_executions_per_session: usize,
    /// Largest request body accepted (413 above it) (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// A connection must send a whole request head within this many seconds, and an idle keep-alive
    /// connection is closed after it (slow or stalled clients hold no connection)
    /// (`--header-read-timeout-s`).
    pub header_read_timeout_s: f64,
    /// Connections served at once; past it, a few more are kept for /healthz, /readyz and /metrics,
    /// and the rest are answered 503 (`--max-connections`).
    pub max_connections: usize,
    /// Sandboxes started at once (default: one per CPU); later starts wait their turn
    /// (`--max-concurrent-starts`).
    pub max_concurrent_starts: usize,
    /// Sandbox starts that may wait for their turn; past it, a request that needs a new sandbox is
    /// refused at once with 429 and `Retry-After` (`--max-queued-starts`).
    pub max_queued_starts: usize,
    /// New sessions are refused (503) when the memory limits of the sandboxes that run would add up
    /// to more than this many times the host's memory (`--memory-overcommit`).
    pub memory_overcommit: f64,
    /// New sessions are refused (503) when the quotas of the workspaces kept would add up to more
    /// than this many times the disk they can use (free, plus what they use already)
    /// (`--disk-overcommit`).
    pub disk_overcommit: f64,
    /// New sessions are refused (503) while the data dir's disk has less free than this, MiB
    /// (`--min-free-disk-mb`).
    pub min_free_disk_mb: u64,
    /// Executions that may wait in one session's queue; more are refused with 429 (`--max-queue`).
    pub max_queue: usize,
    /// Started, idle sandboxes kept for `POST /v1/run` (0 = start each one cold) (`--run-pool`).
    pub run_pool: usize,
    /// Started sandboxes with a warm Python kernel kept for new sessions (0 = start cold)
    /// (`--session-pool`).
    pub session_pool: usize,
    /// Stop a session's sandbox after this many seconds without use (the workspace stays)
    /// (`--idle-timeout-s`).
    pub idle_timeout_s: u64,
    /// Stop a session's sandbox this many seconds after it started, used or not
    /// (`--max-lifetime-s`).
    pub max_lifetime_s: u64,
    /// Keep the workspace of a stopped or deleted session this many seconds (0: forever)
    /// (`--retention-s`).
    pub retention_s: u64,
    /// How often the idle sweep looks for idle and expired sessions (and prunes, unmounts and
    /// removes what is due), seconds (`--sweep-interval-s`).
    pub sweep_interval_s: f64,
    /// Largest file one upload may write to a workspace (413 above it) (`--max-file-bytes`).
    pub max_file_bytes: u64,
    /// Bytes of files a workspace may hold; uploads beyond it are refused with 507
    /// (`--workspace-quota-bytes`).
    pub workspace_quota_bytes: u64,
    /// Package index for template and session package installs (default: PyPI, or pip's own
    /// configuration) (`--pip-index-url`).
    pub pip_index_url: Option<String>,
    /// Time limit of one package installation, seconds (`--package-timeout-s`).
    pub package_timeout_s: u64,
    /// Where workspaces are kept: `local` (directories under the data dir), or
    /// `s3://bucket[/prefix]` (an S3-compatible bucket; the directories become its cache)
    /// (`--storage`).
    pub storage: String,
    /// S3 endpoint URL (for S3-compatible servers other than AWS) (`--s3-endpoint`).
    pub s3_endpoint: Option<String>,
    /// S3 region (else `AWS_REGION`) (`--s3-region`).
    pub s3_region: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`) (`--s3-access-key-id`).
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (`--s3-secret-access-key`; else `AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: Option<String>,
    /// With S3 storage, how often running sessions' changed files are written back, seconds (they
    /// are also written back after each execution and when a session stops) (`--sync-interval-s`).
    pub sync_interval_s: f64,
    /// Where the server may send requests that callers point it at (execution callbacks) besides
    /// public addresses: CIDRs, addresses or host names, comma-separated (`--outbound-allow`).
    pub outbound_allow: Vec<String>,
    /// The local runtime (`--runtime local`).
    pub local: LocalSection,
    /// The Docker runtime (`--runtime docker`).
    pub docker: DockerSection,
    /// The Kubernetes runtime (`--runtime kubernetes`).
    pub kubernetes: KubernetesSection,
    /// What each tenant may hold at once.
    pub tenant: TenantLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            insecure_no_auth: false,
            mcp_allowed_hosts: Vec::new(),
            e2b_domain: None,
            data_dir: PathBuf::from("./sandbox-data"),
            database_url: None,
            replica_id: None,
            advertise_url: None,
            replica_lease_s: 5.0,
            runtime: RuntimeKind::Local,
            default_memory_mb: 512,
            max_memory_mb: 8192,
            default_pids: 256,
            max_pids: 4096,
            default_cpu: 1.0,
            max_cpu: 16.0,
            default_timeout_s: 60.0,
            max_timeout_s: 3600.0,
            output_limit_bytes: 1 << 20,
            outputs_limit_bytes: sandbox_protocol::DEFAULT_OUTPUTS_LIMIT,
            execution_retention_s: 7 * 24 * 3600,
            max_executions_per_session: 1000,
            max_body_bytes: 10 << 20,
            header_read_timeout_s: 10.0,
            max_connections: 1024,
            max_concurrent_starts: default_concurrent_starts(),
            max_queued_starts: 256,
            memory_overcommit: 1.0,
            disk_overcommit: 10.0,
            min_free_disk_mb: 2048,
            max_queue: 32,
            run_pool: 2,
            session_pool: 2,
            idle_timeout_s: 15 * 60,
            max_lifetime_s: 24 * 3600,
            retention_s: 24 * 3600,
            sweep_interval_s: 30.0,
            max_file_bytes: 2 << 30,
            workspace_quota_bytes: 10 << 30,
            pip_index_url: None,
            package_timeout_s: 600,
            storage: "local".to_string(),
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            sync_interval_s: 60.0,
            outbound_allow: Vec::new(),
            local: LocalSection::default(),
            docker: DockerSection::default(),
            kubernetes: KubernetesSection::default(),
            tenant: TenantLimits::default(),
        }
    }
}

/// What one tenant (the keys of one `--tenant`; requests with no key are tenant `default`)
/// may hold at once, whatever the host could give: past a limit, 429 (sessions, executions)
/// or 507 (workspace bytes) naming it. 0: no limit.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Running sessions (with a sandbox) one tenant may have (`--tenant-max-sessions`).
    pub max_sessions: u64,
    /// Executions one tenant may have queued or running at once, over all its sessions and
    /// `/v1/run` (`--tenant-max-executions`).
    pub max_executions: u64,
    /// Bytes of files all of one tenant's workspaces on this host may hold, MiB: checked when a
    /// session is made and at each upload (code in a sandbox is held by its workspace quota)
    /// (`--tenant-max-workspace-mb`).
    pub max_workspace_mb: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits { max_sessions: 100, max_executions: 200, max_workspace_mb: 100 << 10 }
    }
}

/// Settings of the local runtime (`--runtime local`).
#[derive(Debug, Clone)]
pub struct LocalSection {
    /// The bubblewrap binary (a path, or a name looked up on PATH) (`--bwrap`).
    pub bwrap: PathBuf,
    /// The sandbox-executor binary; by default the one next to sandboxd (`--executor`).
    pub executor: Option<PathBuf>,
    /// Host user sandboxes run as when sandboxd runs as root (`--sandbox-user`).
    pub sandbox_user: String,
    /// cgroup version for limits: auto (v2, else v1), v2, v1, or off (no limits) (`--cgroups`).
    pub cgroups: CgroupMode,
    /// Size of each sandbox's private /tmp, MiB (`--tmp-size-mb`).
    pub tmp_size_mb: u64,
    /// Workspaces as volumes of their own, so the quota holds for what code writes (ENOSPC in the
    /// sandbox): `auto` (when the host allows: root, loop devices, mkfs.ext4), `on` (refuse to
    /// start without), `off` (`--workspace-volumes`).
    pub workspace_volumes: VolumeMode,
    /// Size of the system volume, which holds what sandboxes mount besides their workspace:
    /// template environments, session packages, pip's cache and the runtime's files
    /// (`--system-volume-bytes`).
    pub system_volume_bytes: u64,
    /// How the file API reaches workspaces: `host` (on this disk, the fast way) or `executor`
    /// (through the executor inside the session's sandbox, as a runtime whose sandboxes do not
    /// share this disk must: to try that path on one host) (`--file-access`).
    pub file_access: FileAccess,
}

impl Default for LocalSection {
    fn default() -> Self {
        LocalSection {
            bwrap: PathBuf::from("bwrap"),
            executor: None,
            sandbox_user: "sandbox".to_string(),
            cgroups: CgroupMode::Auto,
            tmp_size_mb: 256,
            workspace_volumes: VolumeMode::Auto,
            system_volume_bytes: 64 << 30,
            file_access: FileAccess::Host,
        }
    }
}

/// Settings of the Docker runtime (`--runtime docker`). Containers run as `--sandbox-user`
/// (when sandboxd is root) and the file API follows `--file-access`, as for the local runtime.
#[derive(Debug, Clone)]
pub struct DockerSection {
    /// The Docker engine: `unix:///var/run/docker.sock`, `tcp://host:2375`, ...; by default
    /// `DOCKER_HOST`, else the local socket (`--docker-host`).
    pub host: Option<String>,
    /// The image of sandboxes without a template image of their own
    /// (`scripts/build-sandbox-image.sh` builds it) (`--docker-image`).
    pub image: String,
    /// The second isolation layer, bubblewrap inside each container: `auto` (on where the engine
    /// allows it; readiness says plainly when it does not), `on` (no sandbox without it), `off`
    /// (`--docker-second-layer`).
    pub second_layer: SecondLayer,
}

impl Default for DockerSection {
    fn default() -> Self {
        DockerSection {
            host: None,
            image: "sandbox-platform/sandbox:latest".to_string(),
            second_layer: SecondLayer::Auto,
        }
    }
}

/// Settings of the Kubernetes runtime (`--runtime kubernetes`): each sandbox a Pod in
/// `namespace`, reached over the pod network. The cluster is found as kubectl finds it
/// (`KUBECONFIG`, `~/.kube/config`, or the pod's service account in a cluster).
#[derive(Debug, Clone)]
pub struct KubernetesSection {
    /// A kubeconfig file naming the cluster (`--kubernetes-kubeconfig`); none: found as
    /// kubectl finds it.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The namespace of sandbox pods (`--kubernetes-namespace`).
    pub namespace: String,
    /// The image of sandboxes without a template image of their own (`--kubernetes-image`).
    pub image: String,
    /// The uid and gid code runs as (`--kubernetes-user uid:gid`; the sandbox image's user).
    pub user: (u32, u32),
    /// The second layer (bubblewrap and `seccomp_profile` inside each pod): needs user
    /// namespaces for pods on the cluster (`--kubernetes-second-layer on|off`).
    pub second_layer: bool,
    /// A `Localhost` seccomp profile on every node, relative to the kubelet's seccomp
    /// directory (`--kubernetes-seccomp-profile`); none: `RuntimeDefault`.
    pub seccomp_profile: Option<String>,
    /// A RuntimeClass for sandbox pods (gVisor, Kata) (`--kubernetes-runtime-class`).
    pub runtime_class: Option<String>,
    /// Node labels sandbox pods must land on, as a JSON object (`--kubernetes-node-selector`).
    pub node_selector: Option<String>,
    /// Tolerations of sandbox pods, as the API's JSON list (`--kubernetes-tolerations`).
    pub tolerations: Option<String>,
    /// A ReadWriteMany claim holding every workspace, one directory each
    /// (`--kubernetes-workspace-claim`); none: an `emptyDir` per pod.
    pub workspace_claim: Option<String>,
    /// Size of a pod's `emptyDir` workspace, MiB (`--kubernetes-workspace-mb`).
    pub workspace_mb: u64,
    /// Size of a pod's `/tmp`, MiB (`--kubernetes-tmp-mb`).
    pub tmp_mb: u64,
    /// How long a pod may take to be ready before its start fails with the cluster's reason
    /// (`--kubernetes-start-timeout-s`).
    pub start_timeout_s: f64,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        KubernetesSection {
            kubeconfig: None,
            namespace: "sandboxes".to_string(),
            image: "sandbox-platform/sandbox:latest".to_string(),
            user: (1000, 1000),
            second_layer: false,
            seccomp_profile: None,
            runtime_class: None,
            node_selector: None,
            tolerations: None,
            workspace_claim: None,
            workspace_mb: 1024,
            tmp_mb: 256,
            start_timeout_s: 120.0,
        }
    }
}

/// See `--file-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAccess {
    Host,
    Executor,
}

/// The runtimes sandboxd can run sandboxes with (see `runtimes.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Local,
    Docker,
    Kubernetes,
}

fn default_concurrent_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Whether workspaces are volumes of their own (see `--workspace-volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeMode {
    Auto,
    On,
    Off,
}

impl std::str::FromStr for FileAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(FileAccess::Host),
            "executor" => Ok(FileAccess::Executor),
            other => Err(format!("{other:?}: expected host, executor")),
        }
    }
}

impl std::fmt::Display for FileAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileAccess::Host => "host",
            FileAccess::Executor => "executor",
        })
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(RuntimeKind::Local),
            "docker" => Ok(RuntimeKind::Docker),
            "kubernetes" => Ok(RuntimeKind::Kubernetes),
            other => Err(format!("{other:?}: expected local, docker, kubernetes")),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Local => "local",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Kubernetes => "kubernetes",
        })
    }
}

impl std::str::FromStr for VolumeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(VolumeMode::Auto),
            "on" => Ok(VolumeMode::On),
            "off" => Ok(VolumeMode::Off),
            other => Err(format!("{other:?}: expected auto, on, off")),
        }
    }
}

impl std::fmt::Display for VolumeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VolumeMode::Auto => "auto",
            VolumeMode::On => "on",
            VolumeMode::Off => "off",
        })
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
            (self.replica_lease_s.is_finite() && self.replica_lease_s >= 0.3, "replica lease must be at least 0.3 s"),
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

    /// The database's URL: `--database-url`, else the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.as_str().to_string(),
            None => sandbox_store::sqlite_url(&self.db_path()),
        }
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
