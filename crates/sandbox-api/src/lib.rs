//! Types of the REST API v1, shared by the server (`sandbox-server`), the client
//! (`sandbox-client`, `sbx`) and the store. Request types refuse unknown fields, so a typo is
//! a 422 rather than a silently ignored option.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use sandbox_protocol::{Language, Output, StreamName};

pub type Timestamp = DateTime<Utc>;

/// Percent-encodes everything but RFC 3986's unreserved characters: a name as one URL path
/// segment (the client) or as an RFC 5987 `filename*` value (the server's downloads).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: bad_request, not_found, conflict, payload_too_large,
    /// invalid, rate_limited, not_ready, insufficient_storage, internal.
    pub code: String,
    pub message: String,
}

/// Resource limits asked for; each omitted field takes the server's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// Memory of the whole sandbox, in MiB.
    #[serde(default, deserialize_with = "whole::optional")]
    pub memory_mb: Option<u64>,
    /// Processes and threads in the sandbox.
    #[serde(default, deserialize_with = "whole::optional")]
    pub pids: Option<u32>,
    /// CPU cores' worth of time (0.5 = half a core).
    pub cpu: Option<f64>,
}

/// Limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    pub memory_mb: u64,
    pub pids: u32,
    pub cpu: f64,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Template name ("default" if omitted): the session's defaults for everything below,
    /// and the Python packages its sessions see.
    pub template: Option<String>,
    /// Environment variables of every execution in the session.
    pub env: Option<BTreeMap<String, String>>,
    pub limits: Option<LimitsRequest>,
    /// Default per-execution timeout, in seconds.
    pub timeout_s: Option<f64>,
    /// Free-form labels, stored and returned as given.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// "python" (the default): Python executions run in a stateful kernel, variables and
    /// imports persist between them. "none": every execution is a fresh process.
    pub kernel: Option<String>,
    /// Stop the sandbox after this many seconds without use (the workspace stays); the
    /// template's, else the server's default (15 min).
    #[serde(default, deserialize_with = "whole::optional")]
    pub idle_timeout_s: Option<u64>,
    /// Stop the sandbox this many seconds after it started, used or not (default 24 h).
    #[serde(default, deserialize_with = "whole::optional")]
    pub max_lifetime_s: Option<u64>,
    /// Whether an execution on a stopped session starts a new sandbox on its workspace
    /// (default true); otherwise it is refused until `POST .../resume`.
    pub auto_resume: Option<bool>,
    /// Continue in the workspace of another session, which must be stopped or deleted: its
    /// files move to this session (and that session is deleted, if it was not).
    pub workspace_from: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Running,
    /// No sandbox (idle, past its lifetime, stopped by a user or a server restart); the
    /// workspace is kept, and the session resumes on demand.
    Stopped,
    Deleted,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Running => "running",
            SessionStatus::Stopped => "stopped",
            SessionStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<SessionStatus> {
        [Self::Running, Self::Stopped, Self::Deleted].into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    /// Whose it is: the tenant of the API key that made it ("default" when made with no key).
    /// Only that tenant's keys, and admin keys, see it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub status: SessionStatus,
    pub template: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub timeout_s: f64,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// "python", or `None` when executions are fresh processes.
    pub kernel: Option<String>,
    /// How often the kernel died and was replaced by a fresh one.
    pub kernel_restarts: u64,
    /// Why the kernel last died ("killed by signal 9 ...", "exited with code 1", "the pid
    /// limit was hit", ...), and whether between executions or during one.
    #[serde(default)]
    pub last_kernel_death: Option<String>,
    /// The isolation layers of its latest sandbox, in plain words, as the runtime set them
    /// up ("container ... + bubblewrap + executor seccomp"); a missing layer is named.
    /// `None` before its first sandbox started.
    #[serde(default)]
    pub isolation: Option<String>,
    /// The sandboxd replica that runs its sandbox (`GET /v1/replicas`); none while it is
    /// stopped or deleted.
    #[serde(default)]
    pub replica: Option<String>,
    /// Its first sandbox came from the warm pool (started, kernel warm) rather than cold.
    #[serde(default)]
    pub from_pool: bool,
    pub idle_timeout_s: u64,
    pub max_lifetime_s: u64,
    pub auto_resume: bool,
    /// Why it is stopped: "idle", "lifetime", "user", "server_restart" (the replica that ran it
    /// restarted), or "replica_lost" (its lease lapsed and another replica stopped it).
    pub stop_reason: Option<String>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// When its workspace was removed: the retention period after a stop or delete ended, or
    /// the files moved to another session (`workspace_from`).
    pub workspace_removed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    /// Where the next page starts (pass it as `cursor`); `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/sessions/{id}/executions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecution {
    pub code: String,
    pub language: Language,
    /// Wall-clock limit in seconds; the session's default if omitted.
    pub timeout_s: Option<f64>,
    /// Text fed to the process's standard input.
    pub stdin: Option<String>,
    /// Added to (and overriding) the session's environment (fresh processes only: the
    /// kernel keeps the environment it started with).
    pub env: Option<BTreeMap<String, String>>,
    /// Run Python as a fresh process even in a session with a kernel.
    pub fresh: Option<bool>,
    /// A namespace of the session's Python kernel to run in, made on first use (1 to 64 of
    /// `A-Z a-z 0-9 _ -`): its variables are not seen from the kernel's own namespace or from
    /// another context; files and imported modules are shared. Left out: the kernel's own.
    #[serde(default)]
    pub context: Option<String>,
    /// With `context`: drop that namespace and its variables; `code` is not run.
    #[serde(default)]
    pub forget_context: Option<bool>,
    /// "continue" (default) or "cancel_pending": if an execution of the session fails while
    /// this one waits in the queue, this one is not run and ends as "cancelled".
    pub on_error: Option<OnError>,
    /// A client-chosen id that makes the request idempotent: a repeat returns the same
    /// execution (waiting for it if it is still queued or running) and never runs it twice.
    /// 1 to 128 of `A-Z a-z 0-9 _ - . :`.
    pub execution_id: Option<String>,
    /// `false`: answer 202 at once with the queued execution; poll `GET /v1/executions/{id}`.
    pub wait: Option<bool>,
    /// http(s) URL that receives a POST of the finished execution (JSON), retried with
    /// backoff until it answers 2xx; the attempts are in the execution's `callback`.
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Continue,
    CancelPending,
}

impl CreateExecution {
    /// `code` in `language` with the session's defaults for everything else.
    pub fn new(language: Language, code: impl Into<String>) -> Self {
        CreateExecution {
            code: code.into(),
            language,
            timeout_s: None,
            stdin: None,
            env: None,
            fresh: None,
            context: None,
            forget_context: None,
            on_error: None,
            execution_id: None,
            wait: None,
            callback_url: None,
        }
    }
}

/// `POST /v1/run`: a throwaway sandbox for one execution.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub code: String,
    pub language: Language,
    pub timeout_s: Option<f64>,
    pub stdin: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub limits: Option<LimitsRequest>,
}

impl RunRequest {
    /// `code` in `language` with the server's defaults for everything else.
    pub fn new(language: Language, code: impl Into<String>) -> Self {
        RunRequest { code: code.into(), language, timeout_s: None, stdin: None, env: None, limits: None }
    }
}

/// Why an execution ended as it did, when its status alone does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionReason {
    /// Killed by the memory limit (OOM).
    Memory,
    /// Killed by the process limit (a fork bomb).
    Pids,
    /// Past its timeout.
    Timeout,
    /// Past its timeout and would not stop: the kernel was replaced.
    TimeoutKernelRestarted,
    /// The kernel exited or was killed by something other than a limit.
    KernelExited,
    /// Ended by a signal (`signal` says which).
    Signal,
    /// It could not be started.
    SpawnError,
    /// It ended without an exit code, a signal or a limit to explain it.
    Unknown,
    /// Its session was deleted while it was queued or ran.
    SessionDeleted,
    /// Its sandbox died under it (killed from outside, or the host failed it).
    SandboxDied,
    /// No sandbox could be started for it.
    NotStarted,
    /// `on_error: "cancel_pending"` and an earlier execution failed.
    EarlierFailure,
    /// sandboxd restarted while it was queued or ran.
    ServerRestart,
}

impl ExecutionReason {
    pub const ALL: [ExecutionReason; 13] = [
        Self::Memory,
        Self::Pids,
        Self::Timeout,
        Self::TimeoutKernelRestarted,
        Self::KernelExited,
        Self::Signal,
        Self::SpawnError,
        Self::Unknown,
        Self::SessionDeleted,
        Self::SandboxDied,
        Self::NotStarted,
        Self::EarlierFailure,
        Self::ServerRestart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Timeout => "timeout",
            Self::TimeoutKernelRestarted => "timeout_kernel_restarted",
            Self::KernelExited => "kernel_exited",
            Self::Signal => "signal",
            Self::SpawnError => "spawn_error",
            Self::Unknown => "unknown",
            Self::SessionDeleted => "session_deleted",
            Self::SandboxDied => "sandbox_died",
            Self::NotStarted => "not_started",
            Self::EarlierFailure => "earlier_failure",
            Self::ServerRestart => "server_restart",
        }
    }

    /// The reason stored as `s` (records from before it was typed said `signal 9`).
    pub fn parse(s: &str) -> Option<ExecutionReason> {
        if s.starts_with("signal") {
            return Some(Self::Signal);
        }
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Waiting for the session's earlier executions.
    Queued,
    Running,
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit, a signal, or the process could not start.
    Failed,
    TimedOut,
    /// A resource limit ended it; `reason` says which.
    Killed,
    /// The session's kernel died during it; a fresh kernel was started (variables are lost).
    KernelDied,
    /// Never run: an earlier execution failed and this one asked for `cancel_pending`.
    Cancelled,
    /// Cut off: sandboxd stopped (or crashed) while it was queued or running.
    Interrupted,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::TimedOut => "timed_out",
            ExecutionStatus::Killed => "killed",
            ExecutionStatus::KernelDied => "kernel_died",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Interrupted => "interrupted",
        }
    }

    /// Queued or running: not finished yet.
    pub fn is_pending(self) -> bool {
        matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }

    /// Counts as a failure for `on_error: "cancel_pending"`.
    pub fn is_failure(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running | ExecutionStatus::Succeeded)
    }

    pub fn parse(s: &str) -> Option<ExecutionStatus> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::TimedOut,
            Self::Killed,
            Self::KernelDied,
            Self::Cancelled,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Execution {
    pub id: String,
    /// `None` for `POST /v1/run`.
    pub session_id: Option<String>,
    pub language: Language,
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    /// Why it ended as it did, when the status alone does not say.
    pub reason: Option<ExecutionReason>,
    /// The signal that ended it (`reason: "signal"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Everything it produced, in order, in Jupyter's message model: `stream`,
    /// `display_data`, `execute_result`, `error`. `stdout`/`stderr` hold the stream text.
    pub outputs: Vec<Output>,
    /// Some output was dropped: all outputs together reached the server's outputs limit
    /// (`--outputs-limit-bytes`, 8 MiB by default).
    #[serde(default)]
    pub outputs_truncated: bool,
    /// What it used, once finished.
    pub metrics: Option<Metrics>,
    /// Where the finished execution is POSTed, and how that went so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    pub duration_ms: Option<u64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Execution {
    /// An execution that has produced nothing yet, started now.
    pub fn new(id: String, session_id: Option<String>, language: Language, status: ExecutionStatus) -> Execution {
        Execution {
            id,
            session_id,
            language,
            status,
            exit_code: None,
            reason: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            outputs: Vec::new(),
            outputs_truncated: false,
            metrics: None,
            callback: None,
            duration_ms: None,
            started_at: Utc::now(),
            finished_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Callback {
    pub url: String,
    pub delivered: bool,
    pub attempts: Vec<CallbackAttempt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallbackAttempt {
    pub at: DateTime<Utc>,
    /// The HTTP status the receiver answered, if it answered.
    pub status: Option<u16>,
    /// Why no answer came (connection refused, timeout, ...).
    pub error: Option<String>,
}

/// Resources an execution used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metrics {
    pub wall_ms: u64,
    /// CPU time (user + system) of every process in the sandbox during the execution.
    pub cpu_ms: Option<u64>,
    /// Peak memory of the sandbox: during the execution on cgroup v1; since the sandbox
    /// started on cgroup v2.
    pub peak_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionList {
    pub executions: Vec<Execution>,
    /// Where the next page starts (pass it as `cursor`); `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/sessions/{id}/invoke`: call `func(event, context)` in the session's kernel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// "module.func" (imported from /workspace, reloaded so edits count) or "path/file.py:func".
    pub handler: String,
    /// The event, passed to the handler as parsed JSON.
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
    pub timeout_s: Option<f64>,
}

/// What an invocation returned, with the execution that ran it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvokeResult {
    /// The handler's return value, when it returned JSON.
    #[schema(value_type = Option<Object>)]
    pub return_value: Option<serde_json::Value>,
    /// Set when the handler ran but returned something that is not JSON (`invalid_return`).
    pub error: Option<ErrorDetail>,
    #[serde(flatten)]
    pub execution: Execution,
}

/// `POST /v1/sessions/{id}/interrupt`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Interrupted {
    /// False when the session had no running sandbox to interrupt.
    pub interrupted: bool,
}

/// One readiness check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    pub message: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub runtime: String,
    /// Can sandboxes be created (for the local runtime: bubblewrap, namespaces, cgroups, the
    /// executor)?
    pub sandbox: Check,
    /// Facts of the runtime alone (local: `cgroup`, the version that enforces limits: "v2",
    /// "v1", "off" or "none").
    #[serde(default)]
    pub runtime_detail: std::collections::BTreeMap<String, String>,
    pub store: Check,
    /// Free space where workspaces live (not ready below 64 MiB).
    pub disk: Check,
    pub data_dir_free_bytes: u64,
    /// Can workspace storage be written (the local data dir) and, with S3 storage, is the
    /// bucket reachable?
    pub storage: Check,
    /// Started sandboxes waiting in each pool now.
    pub pools: Pools,
    /// Whether this replica holds its lease in the database (not ready without it: another
    /// replica may have adopted its work).
    pub replica: Check,
}

/// A sandboxd process sharing this one's database (`GET /v1/replicas`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Replica {
    pub id: String,
    /// Where other replicas reach it (`--advertise-url`).
    pub address: String,
    /// Its sandboxd version.
    pub version: String,
    /// When it last started (RFC 3339).
    pub started_at: String,
    /// Milliseconds since its last heartbeat, on the database's clock.
    pub heartbeat_age_ms: u64,
    /// Its lease holds: a heartbeat within `--replica-lease-s`, and not adopted.
    pub alive: bool,
    /// The replica that adopted its work when its lease lapsed.
    pub adopted_by: Option<String>,
    /// Sessions whose sandboxes it runs.
    pub sessions: u64,
    /// The replica that answered this request.
    pub this: bool,
}

/// `GET /v1/replicas`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaList {
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Pools {
    pub run: usize,
    /// Warm session sandboxes of all templates.
    pub session: usize,
    /// Warm session sandboxes by template.
    #[serde(default)]
    pub templates: BTreeMap<String, usize>,
}

/// What a workspace entry is. Links are shown as links and never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device node made by code in the sandbox.
    Other,
}

/// A file or directory in a session's workspace; `path` is relative to `/workspace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    /// Bytes (files only; 0 for the rest).
    pub size: u64,
    pub modified_at: DateTime<Utc>,
}

/// `GET /v1/sessions/{id}/files?path=DIR&recursive=true`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub files: Vec<FileInfo>,
    /// The listing stopped at the server's limit of entries.
    pub truncated: bool,
}

/// A file as written by an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadedFile {
    pub path: String,
    pub size: u64,
    pub modified_at: DateTime<Utc>,
    /// Hex SHA-256 of the content received.
    pub sha256: String,
}

/// `POST /v1/sessions/{id}/files` (multipart): every file written.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadedFiles {
    pub files: Vec<UploadedFile>,
}

/// `POST /v1/sessions/{id}/files/{path}:move`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveFile {
    /// The new path, relative to `/workspace`; its directories are created. Nothing is replaced.
    pub to: String,
}

/// `POST /v1/templates`: a named set of session defaults and a Python environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// 1 to 64 of `a-z 0-9 - _`, starting with a letter or digit.
    pub name: String,
    pub description: Option<String>,
    /// The root filesystem sessions see: "host" (the default; the host's `/usr`, read-only) is
    /// the one the local runtime offers.
    pub rootfs: Option<String>,
    /// The Docker runtime's image for its sessions instead of the default one (build it `FROM`
    /// the sandbox image: it must hold the executor, bubblewrap and tini). It must exist on the
    /// engine (422 names it if not); the local runtime runs no images.
    pub image: Option<String>,
    /// Default limits of its sessions (each omitted field: the server's default).
    pub limits: Option<LimitsRequest>,
    /// Default per-execution timeout of its sessions, in seconds.
    pub timeout_s: Option<f64>,
    /// "python" (default) or "none", as for a session.
    pub kernel: Option<String>,
    /// Environment of its sessions (a session's own `env` adds to it and overrides it).
    pub env: Option<BTreeMap<String, String>>,
    /// Python requirement specifiers (`"pandas"`, `"six==1.17.0"`, `"attrs>=23"`) installed
    /// once, into an environment its sessions see read-only. Wheels only.
    pub packages: Option<Vec<String>>,
    /// Sandboxes with a warm kernel kept ready for its sessions (default 0).
    #[serde(default, deserialize_with = "whole::optional")]
    pub pool_size: Option<usize>,
    /// Defaults of its sessions' idle timeout and lifetime, in seconds.
    #[serde(default, deserialize_with = "whole::optional")]
    pub idle_timeout_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::optional")]
    pub max_lifetime_s: Option<u64>,
    /// File types its sessions accept as uploads, by extension (`[".xlsx", ".csv"]`); the
    /// content must match the extension too. Omitted or empty: any file.
    pub allowed_uploads: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateStatus {
    /// Its packages are being installed; sessions cannot use it yet.
    Building,
    Ready,
    /// The installation failed (`error` says why); sessions cannot use it.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// The tenant it belongs to, whose keys alone see it; `null`: shared with every tenant
    /// (built in, or made by an admin key or with no key).
    #[serde(default)]
    pub tenant: Option<String>,
    pub description: String,
    pub rootfs: String,
    /// Its own image (the Docker runtime); `null`: the runtime's default.
    #[serde(default)]
    pub image: Option<String>,
    pub limits: Limits,
    pub timeout_s: f64,
    pub kernel: Option<String>,
    pub env: BTreeMap<String, String>,
    pub packages: Vec<String>,
    pub pool_size: usize,
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    #[serde(default = "default_max_lifetime_s")]
    pub max_lifetime_s: u64,
    /// Extensions (lower case, without the dot) uploads must have; empty: any.
    #[serde(default)]
    pub allowed_uploads: Vec<String>,
    pub status: TemplateStatus,
    /// Why the build failed.
    pub error: Option<String>,
    /// What the build installed (the requested packages and their dependencies).
    pub installed: Vec<InstalledPackage>,
    /// Built into the server ("default"): cannot be replaced or deleted.
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The tenant of what is made with no API key, and of what was stored before tenants existed.
pub const DEFAULT_TENANT: &str = "default";

pub fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

/// The defaults that a template stored before these settings existed gets.
pub fn default_idle_timeout_s() -> u64 {
    15 * 60
}

pub fn default_max_lifetime_s() -> u64 {
    24 * 3600
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
    /// Where the next page starts (pass it as `cursor`); `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/sessions/{id}/packages`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallPackages {
    /// Python requirement specifiers, as for a template. Wheels only.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstallStatus {
    Succeeded,
    Failed,
}

/// What an installation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PackageInstallResult {
    pub status: InstallStatus,
    pub requested: Vec<String>,
    /// Packages new or changed by this installation (dependencies included).
    pub installed: Vec<InstalledPackage>,
    /// Why it failed: pip's error lines, or the time limit.
    pub error: Option<String>,
    /// The end of pip's output.
    pub log: String,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(percent_encode("销售 a.b"), "%E9%94%80%E5%94%AE%20a.b");
        assert_eq!(percent_encode("a/b?c#d"), "a%2Fb%3Fc%23d");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<CreateExecution>(r#"{"code":"1","language":"python","tiemout_s":1}"#)
            .expect_err("typo must be refused");
        assert!(err.to_string().contains("tiemout_s"));
    }

    #[test]
    fn unknown_language_is_a_data_error() {
        let err = serde_json::from_str::<CreateExecution>(r#"{"code":"1","language":"cobol"}"#).expect_err("cobol");
        assert_eq!(err.classify(), serde_json::error::Category::Data);
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            "queued",
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "killed",
            "kernel_died",
            "cancelled",
            "interrupted",
        ] {
            assert_eq!(ExecutionStatus::parse(s).map(|v| v.as_str()), Some(s));
        }
    }
}

/// Whole numbers as JSON has them: `8` and `8.0` are the same number, and clients in languages
/// that compute in floats (Python's `512 * 1.0`) send the second. Anything with a fraction, or
/// out of the field's range, is refused.
mod whole {
    use serde::{Deserialize, Deserializer};

    pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
        let whole = match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Some(u),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Some(f as u64),
            _ => None,
        };
        let value = whole.and_then(|u| T::try_from(u).ok());
        value.map(Some).ok_or_else(|| serde::de::Error::custom(format!("expected a whole number in range, not {n}")))
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "super::optional")]
            n: Option<u32>,
        }

        fn n(json: &str) -> Result<Option<u32>, serde_json::Error> {
            serde_json::from_str::<T>(json).map(|t| t.n)
        }

        #[test]
        fn integral_floats_are_whole_numbers_and_fractions_are_not() {
            assert_eq!(n(r#"{"n": 8}"#).ok(), Some(Some(8)));
            assert_eq!(n(r#"{"n": 8.0}"#).ok(), Some(Some(8)));
            assert_eq!(n(r#"{"n": null}"#).ok(), Some(None));
            assert_eq!(n("{}").ok(), Some(None));
            for bad in [r#"{"n": 8.5}"#, r#"{"n": -1}"#, r#"{"n": 4294967296}"#, r#"{"n": "8"}"#, r#"{"n": 1e300}"#] {
                assert!(n(bad).is_err(), "{bad}");
            }
        }
    }
}
