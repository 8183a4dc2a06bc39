//! sandboxd's flags: every setting of the service's [`Config`] as a flag and a `SANDBOXD_*`
//! variable, with the config's own defaults (shown in `--help`). Parsing lives here, in the
//! binary; the service is handed the typed config.

use std::net::SocketAddr;
use std::path::PathBuf;

use sandbox_runtime::cgroup::CgroupMode;
use sandbox_runtime::docker::SecondLayer;
use sandbox_service::config::{
    Config, DockerSection, FileAccess, KubernetesSection, LocalSection, RuntimeKind, TenantLimits, VolumeMode,
};

/// Where each flag's default comes from, so that there is one default per setting.
fn defaults() -> Config {
    Config::default()
}

/// `sandboxd [OPTIONS]`: the settings, as flags.
#[derive(Debug, clap::Args)]
pub struct ConfigFlags {
    /// Address to serve the API on.
    #[arg(long, env = "SANDBOXD_LISTEN", default_value_t = defaults().listen)]
    listen: SocketAddr,
    /// Serve without API keys on an address beyond loopback: anyone who reaches it can run
    /// code. Without it, sandboxd refuses such an address until a key exists
    /// (`sandboxd keys create`).
    #[arg(long, env = "SANDBOXD_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Host names (or `host:port`) MCP clients may reach `/mcp` by, besides the loopback
    /// ones, comma-separated: requests naming another `Host` are refused, so a web page
    /// cannot reach sandboxd through DNS rebinding. Name the host of a deployment here.
    #[arg(long, env = "SANDBOXD_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    mcp_allowed_hosts: Vec<String>,
    /// The domain of E2B-style sandbox addresses behind wildcard DNS and TLS:
    /// `https://<port>-<sandbox id>.<domain>` reaches a sandbox, `https://api.<domain>` the
    /// E2B control API (routed by `Host`). The E2B SDK takes it as `E2B_DOMAIN`.
    #[arg(long, env = "SANDBOXD_E2B_DOMAIN")]
    e2b_domain: Option<String>,
    /// Where the database, workspaces and runtime files live.
    #[arg(long, env = "SANDBOXD_DATA_DIR", default_value_os_t = defaults().data_dir)]
    data_dir: PathBuf,
    /// The database sessions, executions, templates and keys are kept in:
    /// `postgres://user:password@host:port/db` (prefer the environment for it: a flag is visible
    /// to every user in `ps`), or a `sqlite:` URL. By default, SQLite in the data dir.
    #[arg(long, env = "SANDBOXD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<sandbox_store::DatabaseUrl>,
    /// This process's id among the replicas sharing its database (letters, digits, '-', '_').
    /// By default a tag of the data dir, so a restart on the same data dir is the same replica
    /// and recovers its own earlier work. Replicas that share one data dir need ids of their
    /// own.
    #[arg(long, env = "SANDBOXD_REPLICA_ID")]
    replica_id: Option<String>,
    /// Where the other replicas reach this one (`http://host:port`). By default
    /// `http://<--listen>`.
    #[arg(long, env = "SANDBOXD_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// A replica whose heartbeat is older than this many seconds is dead to the others: one
    /// of them adopts its work (its executions interrupted, its sessions stopped, to resume
    /// anywhere). Heartbeats go every third of it.
    #[arg(long, env = "SANDBOXD_REPLICA_LEASE_S", default_value_t = defaults().replica_lease_s)]
    replica_lease_s: f64,
    /// Which runtime runs sandboxes: `local` (bubblewrap + seccomp + cgroups on this host),
    /// `docker` (a container per sandbox on a Docker engine, bubblewrap inside) or
    /// `kubernetes` (a pod per sandbox; being built, see the README).
    #[arg(long, env = "SANDBOXD_RUNTIME", default_value_t = defaults().runtime)]
    runtime: RuntimeKind,
    /// Default memory limit of a sandbox, MiB.
    #[arg(long, env = "SANDBOXD_DEFAULT_MEMORY_MB", default_value_t = defaults().default_memory_mb)]
    default_memory_mb: u64,
    /// Largest memory limit a client may ask for, MiB.
    #[arg(long, env = "SANDBOXD_MAX_MEMORY_MB", default_value_t = defaults().max_memory_mb)]
    max_memory_mb: u64,
    /// Default process/thread limit of a sandbox.
    #[arg(long, env = "SANDBOXD_DEFAULT_PIDS", default_value_t = defaults().default_pids)]
    default_pids: u32,
    /// Largest process/thread limit a client may ask for.
    #[arg(long, env = "SANDBOXD_MAX_PIDS", default_value_t = defaults().max_pids)]
    max_pids: u32,
    /// Default CPU limit, in cores.
    #[arg(long, env = "SANDBOXD_DEFAULT_CPU", default_value_t = defaults().default_cpu)]
    default_cpu: f64,
    /// Largest CPU limit a client may ask for, in cores.
    #[arg(long, env = "SANDBOXD_MAX_CPU", default_value_t = defaults().max_cpu)]
    max_cpu: f64,
    /// Default per-execution wall-clock timeout, seconds.
    #[arg(long, env = "SANDBOXD_DEFAULT_TIMEOUT_S", default_value_t = defaults().default_timeout_s)]
    default_timeout_s: f64,
    /// Largest per-execution timeout a client may ask for, seconds.
    #[arg(long, env = "SANDBOXD_MAX_TIMEOUT_S", default_value_t = defaults().max_timeout_s)]
    max_timeout_s: f64,
    /// Bytes of stdout and of stderr kept per execution; the rest is dropped and flagged.
    #[arg(long, env = "SANDBOXD_OUTPUT_LIMIT_BYTES", default_value_t = defaults().output_limit_bytes)]
    output_limit_bytes: usize,
    /// Bytes all outputs of one execution may take together (streams, displays, results,
    /// errors); the rest is dropped and `outputs_truncated` set. At most 16 MiB.
    #[arg(long, env = "SANDBOXD_OUTPUTS_LIMIT_BYTES", default_value_t = defaults().outputs_limit_bytes)]
    outputs_limit_bytes: usize,
    /// Keep a finished execution's record this many seconds (0: forever).
    #[arg(long, env = "SANDBOXD_EXECUTION_RETENTION_S", default_value_t = defaults().execution_retention_s)]
    execution_retention_s: u64,
    /// Keep at most this many finished executions per session, the newest (0: no limit).
    #[arg(long, env = "SANDBOXD_MAX_EXECUTIONS_PER_SESSION", default_value_t = defaults().max_executions_per_session)]
    max_executions_per_session: usize,
    /// Largest request body accepted (413 above it).
    #[arg(long, env = "SANDBOXD_MAX_BODY_BYTES", default_value_t = defaults().max_body_bytes)]
    max_body_bytes: usize,
    /// A connection must send a whole request head within this many seconds, and an idle
    /// keep-alive connection is closed after it (slow or stalled clients hold no connection).
    #[arg(long, env = "SANDBOXD_HEADER_READ_TIMEOUT_S", default_value_t = defaults().header_read_timeout_s)]
    header_read_timeout_s: f64,
    /// Connections served at once; past it, a few more are kept for /healthz, /readyz and
    /// /metrics, and the rest are answered 503.
    #[arg(long, env = "SANDBOXD_MAX_CONNECTIONS", default_value_t = defaults().max_connections)]
    max_connections: usize,
    /// Sandboxes started at once (default: one per CPU); later starts wait their turn.
    #[arg(long, env = "SANDBOXD_MAX_CONCURRENT_STARTS", default_value_t = defaults().max_concurrent_starts)]
    max_concurrent_starts: usize,
    /// Sandbox starts that may wait for their turn; past it, a request that needs a new
    /// sandbox is refused at once with 429 and `Retry-After`.
    #[arg(long, env = "SANDBOXD_MAX_QUEUED_STARTS", default_value_t = defaults().max_queued_starts)]
    max_queued_starts: usize,
    /// New sessions are refused (503) when the memory limits of the sandboxes that run would
    /// add up to more than this many times the host's memory.
    #[arg(long, env = "SANDBOXD_MEMORY_OVERCOMMIT", default_value_t = defaults().memory_overcommit)]
    memory_overcommit: f64,
    /// New sessions are refused (503) when the quotas of the workspaces kept would add up to
    /// more than this many times the disk they can use (free, plus what they use already).
    #[arg(long, env = "SANDBOXD_DISK_OVERCOMMIT", default_value_t = defaults().disk_overcommit)]
    disk_overcommit: f64,
    /// New sessions are refused (503) while the data dir's disk has less free than this, MiB.
    #[arg(long, env = "SANDBOXD_MIN_FREE_DISK_MB", default_value_t = defaults().min_free_disk_mb)]
    min_free_disk_mb: u64,
    /// Executions that may wait in one session's queue; more are refused with 429.
    #[arg(long, env = "SANDBOXD_MAX_QUEUE", default_value_t = defaults().max_queue)]
    max_queue: usize,
    /// Started, idle sandboxes kept for `POST /v1/run` (0 = start each one cold).
    #[arg(long, env = "SANDBOXD_RUN_POOL", default_value_t = defaults().run_pool)]
    run_pool: usize,
    /// Started sandboxes with a warm Python kernel kept for new sessions (0 = start cold).
    #[arg(long, env = "SANDBOXD_SESSION_POOL", default_value_t = defaults().session_pool)]
    session_pool: usize,
    /// Stop a session's sandbox after this many seconds without use (the workspace stays).
    #[arg(long, env = "SANDBOXD_IDLE_TIMEOUT_S", default_value_t = defaults().idle_timeout_s)]
    idle_timeout_s: u64,
    /// Stop a session's sandbox this many seconds after it started, used or not.
    #[arg(long, env = "SANDBOXD_MAX_LIFETIME_S", default_value_t = defaults().max_lifetime_s)]
    max_lifetime_s: u64,
    /// Keep the workspace of a stopped or deleted session this many seconds (0: forever).
    #[arg(long, env = "SANDBOXD_RETENTION_S", default_value_t = defaults().retention_s)]
    retention_s: u64,
    /// How often the idle sweep looks for idle and expired sessions (and prunes, unmounts and
    /// removes what is due), seconds.
    #[arg(long, alias = "reaper-interval-s", env = "SANDBOXD_SWEEP_INTERVAL_S", default_value_t = defaults().sweep_interval_s)]
    sweep_interval_s: f64,
    /// Largest file one upload may write to a workspace (413 above it).
    #[arg(long, env = "SANDBOXD_MAX_FILE_BYTES", default_value_t = defaults().max_file_bytes)]
    max_file_bytes: u64,
    /// Bytes of files a workspace may hold; uploads beyond it are refused with 507.
    #[arg(long, env = "SANDBOXD_WORKSPACE_QUOTA_BYTES", default_value_t = defaults().workspace_quota_bytes)]
    workspace_quota_bytes: u64,
    /// Package index for template and session package installs (default: PyPI, or pip's own
    /// configuration).
    #[arg(long, env = "SANDBOXD_PIP_INDEX_URL")]
    pip_index_url: Option<String>,
    /// Time limit of one package installation, seconds.
    #[arg(long, env = "SANDBOXD_PACKAGE_TIMEOUT_S", default_value_t = defaults().package_timeout_s)]
    package_timeout_s: u64,
    /// Where workspaces are kept: `local` (directories under the data dir), or
    /// `s3://bucket[/prefix]` (an S3-compatible bucket; the directories become its cache).
    /// Endpoint, region and credentials come from the flags below or the usual `AWS_*`
    /// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
    #[arg(long, env = "SANDBOXD_STORAGE", default_value_t = defaults().storage)]
    storage: String,
    /// S3 endpoint URL (for S3-compatible servers other than AWS).
    #[arg(long, env = "SANDBOXD_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region (else `AWS_REGION`).
    #[arg(long, env = "SANDBOXD_S3_REGION")]
    s3_region: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    #[arg(long, env = "SANDBOXD_S3_ACCESS_KEY_ID")]
    s3_access_key_id: Option<String>,
    /// Prefer the environment for this one: a flag is visible to every user in `ps`.
    #[arg(long, env = "SANDBOXD_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// With S3 storage, how often running sessions' changed files are written back, seconds
    /// (they are also written back after each execution and when a session stops).
    #[arg(long, env = "SANDBOXD_SYNC_INTERVAL_S", default_value_t = defaults().sync_interval_s)]
    sync_interval_s: f64,
    /// Where the server may send requests that callers point it at (execution callbacks)
    /// besides public addresses: CIDRs, addresses or host names, comma-separated. Loopback,
    /// private, link-local and other internal addresses are refused unless listed here.
    #[arg(long, env = "SANDBOXD_OUTBOUND_ALLOW", value_delimiter = ',')]
    outbound_allow: Vec<String>,
    /// Settings of the local runtime (last: its help heading applies to what follows).
    #[command(flatten, next_help_heading = "Local runtime")]
    local: LocalFlags,
    #[command(flatten, next_help_heading = "Docker runtime")]
    docker: DockerFlags,
    #[command(flatten, next_help_heading = "Kubernetes runtime")]
    kubernetes: KubernetesFlags,
    #[command(flatten, next_help_heading = "Limits of each tenant")]
    tenant: TenantFlags,
}

impl From<ConfigFlags> for Config {
    fn from(f: ConfigFlags) -> Config {
        Config {
            listen: f.listen,
            insecure_no_auth: f.insecure_no_auth,
            mcp_allowed_hosts: f.mcp_allowed_hosts,
            e2b_domain: f.e2b_domain,
            data_dir: f.data_dir,
            database_url: f.database_url,
            replica_id: f.replica_id,
            advertise_url: f.advertise_url,
            replica_lease_s: f.replica_lease_s,
            runtime: f.runtime,
            default_memory_mb: f.default_memory_mb,
            max_memory_mb: f.max_memory_mb,
            default_pids: f.default_pids,
            max_pids: f.max_pids,
            default_cpu: f.default_cpu,
            max_cpu: f.max_cpu,
            default_timeout_s: f.default_timeout_s,
            max_timeout_s: f.max_timeout_s,
            output_limit_bytes: f.output_limit_bytes,
            outputs_limit_bytes: f.outputs_limit_bytes,
            execution_retention_s: f.execution_retention_s,
            max_executions_per_session: f.max_executions_per_session,
            max_body_bytes: f.max_body_bytes,
            header_read_timeout_s: f.header_read_timeout_s,
            max_connections: f.max_connections,
            max_concurrent_starts: f.max_concurrent_starts,
            max_queued_starts: f.max_queued_starts,
            memory_overcommit: f.memory_overcommit,
            disk_overcommit: f.disk_overcommit,
            min_free_disk_mb: f.min_free_disk_mb,
            max_queue: f.max_queue,
            run_pool: f.run_pool,
            session_pool: f.session_pool,
            idle_timeout_s: f.idle_timeout_s,
            max_lifetime_s: f.max_lifetime_s,
            retention_s: f.retention_s,
            sweep_interval_s: f.sweep_interval_s,
            max_file_bytes: f.max_file_bytes,
            workspace_quota_bytes: f.workspace_quota_bytes,
            pip_index_url: f.pip_index_url,
            package_timeout_s: f.package_timeout_s,
            storage: f.storage,
            s3_endpoint: f.s3_endpoint,
            s3_region: f.s3_region,
            s3_access_key_id: f.s3_access_key_id,
            s3_secret_access_key: f.s3_secret_access_key,
            sync_interval_s: f.sync_interval_s,
            outbound_allow: f.outbound_allow,
            local: f.local.into(),
            docker: f.docker.into(),
            kubernetes: f.kubernetes.into(),
            tenant: f.tenant.into(),
        }
    }
}

/// What each tenant may hold at once.
#[derive(Debug, clap::Args)]
pub struct TenantFlags {
    /// Running sessions (with a sandbox) one tenant may have.
    #[arg(long = "tenant-max-sessions", env = "SANDBOXD_TENANT_MAX_SESSIONS", default_value_t = defaults().tenant.max_sessions)]
    max_sessions: u64,
    /// Executions one tenant may have queued or running at once, over all its sessions and
    /// `/v1/run`.
    #[arg(long = "tenant-max-executions", env = "SANDBOXD_TENANT_MAX_EXECUTIONS", default_value_t = defaults().tenant.max_executions)]
    max_executions: u64,
    /// Bytes of files all of one tenant's workspaces on this host may hold, MiB: checked when a
    /// session is made and at each upload (code in a sandbox is held by its workspace quota).
    #[arg(long = "tenant-max-workspace-mb", env = "SANDBOXD_TENANT_MAX_WORKSPACE_MB", default_value_t = defaults().tenant.max_workspace_mb)]
    max_workspace_mb: u64,
}

impl From<TenantFlags> for TenantLimits {
    fn from(f: TenantFlags) -> TenantLimits {
        TenantLimits {
            max_sessions: f.max_sessions,
            max_executions: f.max_executions,
            max_workspace_mb: f.max_workspace_mb,
        }
    }
}

/// The local runtime's settings.
#[derive(Debug, clap::Args)]
pub struct LocalFlags {
    /// The bubblewrap binary (a path, or a name looked up on PATH).
    #[arg(long, env = "SANDBOXD_BWRAP", default_value_os_t = defaults().local.bwrap)]
    bwrap: PathBuf,
    /// The sandbox-executor binary; by default the one next to sandboxd.
    #[arg(long, env = "SANDBOXD_EXECUTOR")]
    executor: Option<PathBuf>,
    /// Host user sandboxes run as when sandboxd runs as root.
    #[arg(long, env = "SANDBOXD_SANDBOX_USER", default_value_t = defaults().local.sandbox_user)]
    sandbox_user: String,
    /// cgroup version for limits: auto (v2, else v1), v2, v1, or off (no limits).
    #[arg(long, env = "SANDBOXD_CGROUPS", default_value_t = defaults().local.cgroups)]
    cgroups: CgroupMode,
    /// Size of each sandbox's private /tmp, MiB.
    #[arg(long, env = "SANDBOXD_TMP_SIZE_MB", default_value_t = defaults().local.tmp_size_mb)]
    tmp_size_mb: u64,
    /// Workspaces as volumes of their own, so the quota holds for what code writes (ENOSPC in
    /// the sandbox): `auto` (when the host allows: root, loop devices, mkfs.ext4), `on`
    /// (refuse to start without), `off`. The system volume follows the same setting.
    #[arg(long, env = "SANDBOXD_WORKSPACE_VOLUMES", default_value_t = defaults().local.workspace_volumes)]
    workspace_volumes: VolumeMode,
    /// Size of the system volume, which holds what sandboxes mount besides their workspace:
    /// template environments, session packages, pip's cache and the runtime's files. Sparse:
    /// it takes only what is written. Installs past it fail with "no space left".
    #[arg(long, env = "SANDBOXD_SYSTEM_VOLUME_BYTES", default_value_t = defaults().local.system_volume_bytes)]
    system_volume_bytes: u64,
    /// How the file API reaches workspaces: `host` (on this disk, the fast way) or `executor`
    /// (through the executor inside the session's sandbox, as a runtime whose sandboxes do not
    /// share this disk must: to try that path on one host).
    #[arg(long, env = "SANDBOXD_FILE_ACCESS", default_value_t = defaults().local.file_access)]
    file_access: FileAccess,
}

impl From<LocalFlags> for LocalSection {
    fn from(f: LocalFlags) -> LocalSection {
        LocalSection {
            bwrap: f.bwrap,
            executor: f.executor,
            sandbox_user: f.sandbox_user,
            cgroups: f.cgroups,
            tmp_size_mb: f.tmp_size_mb,
            workspace_volumes: f.workspace_volumes,
            system_volume_bytes: f.system_volume_bytes,
            file_access: f.file_access,
        }
    }
}

/// The Docker runtime's settings.
#[derive(Debug, clap::Args)]
pub struct DockerFlags {
    /// The Docker engine: `unix:///var/run/docker.sock`, `tcp://host:2375`, ...; by default
    /// `DOCKER_HOST`, else the local socket. The API version is negotiated with the engine.
    #[arg(long = "docker-host", env = "DOCKER_HOST")]
    host: Option<String>,
    /// The image of sandboxes without a template image of their own
    /// (`scripts/build-sandbox-image.sh` builds it).
    #[arg(long = "docker-image", env = "SANDBOXD_DOCKER_IMAGE", default_value_t = defaults().docker.image)]
    image: String,
    /// The second isolation layer, bubblewrap inside each container: `auto` (on where the
    /// engine allows it; readiness says plainly when it does not), `on` (no sandbox without
    /// it), `off`.
    #[arg(long = "docker-second-layer", env = "SANDBOXD_DOCKER_SECOND_LAYER", default_value_t = defaults().docker.second_layer)]
    second_layer: SecondLayer,
}

impl From<DockerFlags> for DockerSection {
    fn from(f: DockerFlags) -> DockerSection {
        DockerSection { host: f.host, image: f.image, second_layer: f.second_layer }
    }
}

/// The Kubernetes runtime's settings.
#[derive(Debug, clap::Args)]
pub struct KubernetesFlags {
    /// The namespace of sandbox pods (the chart makes it and its NetworkPolicy).
    /// A kubeconfig file naming the cluster; without one, it is found as kubectl finds it
    /// (KUBECONFIG, ~/.kube/config, or the pod's service account).
    #[arg(id = "kubernetes-kubeconfig", long = "kubernetes-kubeconfig", env = "SANDBOXD_KUBERNETES_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    #[arg(id = "kubernetes-namespace", long = "kubernetes-namespace", env = "SANDBOXD_KUBERNETES_NAMESPACE", default_value_t = defaults().kubernetes.namespace)]
    namespace: String,
    /// The image of sandboxes without a template image of their own.
    #[arg(id = "kubernetes-image", long = "kubernetes-image", env = "SANDBOXD_KUBERNETES_IMAGE", default_value_t = defaults().kubernetes.image)]
    image: String,
    /// The uid:gid code runs as in sandbox pods (never 0).
    #[arg(id = "kubernetes-user", long = "kubernetes-user", env = "SANDBOXD_KUBERNETES_USER", default_value = "1000:1000", value_parser = parse_user)]
    user: (u32, u32),
    /// The second layer inside each pod (bubblewrap, and the seccomp profile below): `on`
    /// needs user namespaces for pods; `off` runs pods with the RuntimeDefault profile and
    /// sessions name the missing layer.
    #[arg(id = "kubernetes-second-layer", long = "kubernetes-second-layer", env = "SANDBOXD_KUBERNETES_SECOND_LAYER", default_value = "off", value_parser = parse_on_off)]
    second_layer: bool,
    /// A `Localhost` seccomp profile on every node, relative to the kubelet's seccomp
    /// directory (the chart can install ours).
    #[arg(
        id = "kubernetes-seccomp-profile",
        long = "kubernetes-seccomp-profile",
        env = "SANDBOXD_KUBERNETES_SECCOMP_PROFILE"
    )]
    seccomp_profile: Option<String>,
    /// A RuntimeClass for sandbox pods (gVisor, Kata), where the cluster has one.
    #[arg(
        id = "kubernetes-runtime-class",
        long = "kubernetes-runtime-class",
        env = "SANDBOXD_KUBERNETES_RUNTIME_CLASS"
    )]
    runtime_class: Option<String>,
    /// Node labels sandbox pods must land on, as a JSON object.
    #[arg(
        id = "kubernetes-node-selector",
        long = "kubernetes-node-selector",
        env = "SANDBOXD_KUBERNETES_NODE_SELECTOR"
    )]
    node_selector: Option<String>,
    /// Tolerations of sandbox pods, as the API's JSON list.
    #[arg(id = "kubernetes-tolerations", long = "kubernetes-tolerations", env = "SANDBOXD_KUBERNETES_TOLERATIONS")]
    tolerations: Option<String>,
    /// A ReadWriteMany PersistentVolumeClaim holding every workspace, one directory each;
    /// without one, each pod's workspace is an emptyDir.
    #[arg(
        id = "kubernetes-workspace-claim",
        long = "kubernetes-workspace-claim",
        env = "SANDBOXD_KUBERNETES_WORKSPACE_CLAIM"
    )]
    workspace_claim: Option<String>,
    /// Size of a pod's emptyDir workspace, MiB.
    #[arg(id = "kubernetes-workspace-mb", long = "kubernetes-workspace-mb", env = "SANDBOXD_KUBERNETES_WORKSPACE_MB", default_value_t = defaults().kubernetes.workspace_mb)]
    workspace_mb: u64,
    /// Size of a pod's /tmp, MiB.
    #[arg(id = "kubernetes-tmp-mb", long = "kubernetes-tmp-mb", env = "SANDBOXD_KUBERNETES_TMP_MB", default_value_t = defaults().kubernetes.tmp_mb)]
    tmp_mb: u64,
    /// How long a pod may take to be ready before its start fails with the cluster's reason.
    #[arg(id = "kubernetes-start-timeout-s", long = "kubernetes-start-timeout-s", env = "SANDBOXD_KUBERNETES_START_TIMEOUT_S", default_value_t = defaults().kubernetes.start_timeout_s)]
    start_timeout_s: f64,
}

impl From<KubernetesFlags> for KubernetesSection {
    fn from(f: KubernetesFlags) -> KubernetesSection {
        KubernetesSection {
            kubeconfig: f.kubeconfig,
            namespace: f.namespace,
            image: f.image,
            user: f.user,
            second_layer: f.second_layer,
            seccomp_profile: f.seccomp_profile,
            runtime_class: f.runtime_class,
            node_selector: f.node_selector,
            tolerations: f.tolerations,
            workspace_claim: f.workspace_claim,
            workspace_mb: f.workspace_mb,
            tmp_mb: f.tmp_mb,
            start_timeout_s: f.start_timeout_s,
        }
    }
}

/// `uid:gid`, neither 0.
fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected uid:gid"))?;
    let parse = |n: &str| n.parse::<u32>().map_err(|_| format!("{s:?}: expected uid:gid, numbers"));
    match (parse(uid)?, parse(gid)?) {
        (0, _) | (_, 0) => Err(format!("{s:?}: sandboxes never run as root")),
        ids => Ok(ids),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?}: expected on, off")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[command(flatten)]
        config: ConfigFlags,
    }

    fn parse(args: &[&str]) -> Config {
        let argv = std::iter::once("sandboxd").chain(args.iter().copied());
        Config::from(Args::try_parse_from(argv).expect("parses").config)
    }

    #[test]
    fn no_flags_give_the_configs_defaults() {
        assert_eq!(format!("{:?}", parse(&[])), format!("{:?}", Config::default()));
    }

    #[test]
    fn flags_reach_every_section() {
        let c = parse(&[
            "--runtime=docker",
            "--max-queue=7",
            "--cgroups=v1",
            "--file-access=executor",
            "--docker-second-layer=off",
            "--tenant-max-sessions=3",
            "--outbound-allow=10.0.0.0/8,example.com",
        ]);
        assert_eq!(c.runtime, RuntimeKind::Docker);
        assert_eq!(c.max_queue, 7);
        assert_eq!(c.local.cgroups, CgroupMode::V1);
        assert_eq!(c.local.file_access, FileAccess::Executor);
        assert_eq!(c.docker.second_layer, SecondLayer::Off);
        assert_eq!(c.tenant.max_sessions, 3);
        assert_eq!(c.outbound_allow, ["10.0.0.0/8", "example.com"]);
    }

    #[test]
    fn a_bad_value_is_refused_with_the_choices() {
        let err = Args::try_parse_from(["sandboxd", "--runtime=qemu"]).expect_err("refused").to_string();
        assert!(err.contains("expected local, docker, kubernetes"), "{err}");
    }
}
