//! Executions: validating a request, turning it into an executor request, and turning the
//! outcome into the stored, returned record.

pub mod callback;
pub mod invoke;
pub mod queue;

use std::collections::BTreeMap;

use chrono::Utc;
use sandbox_api::{Execution, ExecutionReason, ExecutionStatus, Language, Limits, LimitsRequest, Metrics};
use sandbox_protocol::{ExecRequest, ExecResult};
use sandbox_runtime::{ExecOutcome, LimitKind, RuntimeError};

use crate::access::auth::Caller;
use crate::config::Config;
use crate::error::ServiceError;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Environment every process of a sandbox gets beneath the user's: thread pools of numeric
/// libraries sized to the CPU limit. Left to guess, OpenBLAS starts a thread per host core, and
/// under a CFS quota the extra threads' spinning halves the speed of single-threaded code
/// (measured: a matplotlib savefig took 226 ms instead of 122 ms under a 1-core limit).
/// Also `PYTHONPATH`: installed packages (the session's, its template's) before the user's own.
pub fn sandbox_env(limits: &Limits, user: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let threads = (limits.cpu.ceil() as u64).max(1).to_string();
    let mut env: BTreeMap<String, String> =
        ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"]
            .into_iter()
            .map(|k| (k.to_string(), threads.clone()))
            .collect();
    env.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
    let python_path = crate::templates::packages::python_path(user.get("PYTHONPATH").map(String::as_str));
    env.insert("PYTHONPATH".into(), python_path);
    env
}

/// Checks a client-chosen execution id (it becomes a key and appears in URLs).
pub fn check_execution_id(id: String) -> Result<String, ServiceError> {
    let ok = (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(id)
    } else {
        Err(ServiceError::Invalid("execution_id must be 1 to 128 of A-Z a-z 0-9 _ - . :".into()))
    }
}

/// Checks a timeout in seconds against the server's bounds.
pub fn check_timeout(config: &Config, timeout_s: Option<f64>, default: f64) -> Result<f64, ServiceError> {
    let t = timeout_s.unwrap_or(default);
    if !t.is_finite() || t <= 0.0 || t > config.max_timeout_s {
        return Err(ServiceError::Invalid(format!("timeout_s must be > 0 and <= {} (got {t})", config.max_timeout_s)));
    }
    Ok(t)
}

/// Checks environment variable names and values (they become a process environment).
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ServiceError::Invalid(format!(
                "invalid environment variable {k:?}: names must be non-empty without '=' or NUL, values without NUL"
            )));
        }
    }
    Ok(())
}

/// Resolves requested limits against defaults and maxima.
pub fn resolve_limits(config: &Config, req: Option<&LimitsRequest>) -> Result<Limits, ServiceError> {
    let r = req.cloned().unwrap_or_default();
    let l = Limits {
        memory_mb: r.memory_mb.unwrap_or(config.default_memory_mb),
        pids: r.pids.unwrap_or(config.default_pids),
        cpu: r.cpu.unwrap_or(config.default_cpu),
    };
    if l.memory_mb < 32 || l.memory_mb > config.max_memory_mb {
        return Err(ServiceError::Invalid(format!("limits.memory_mb must be between 32 and {}", config.max_memory_mb)));
    }
    if l.pids < 8 || l.pids > config.max_pids {
        return Err(ServiceError::Invalid(format!("limits.pids must be between 8 and {}", config.max_pids)));
    }
    if !l.cpu.is_finite() || l.cpu < 0.01 || l.cpu > config.max_cpu {
        return Err(ServiceError::Invalid(format!("limits.cpu must be between 0.01 and {}", config.max_cpu)));
    }
    Ok(l)
}

/// What the runtime is given for `l`.
pub fn limits_from(l: &Limits) -> sandbox_runtime::ResourceLimits {
    sandbox_runtime::ResourceLimits { memory_bytes: l.memory_mb << 20, pids: l.pids, cpus: l.cpu }
}

/// What every execution needs, whichever endpoint it came from; made only by
/// [`Plan::in_session`] and [`Plan::one_shot`], which check it.
pub struct Plan {
    pub id: String,
    pub session_id: Option<String>,
    pub language: Language,
    pub code: String,
    pub stdin: Option<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_s: f64,
    /// Run in the session kernel rather than as a fresh process.
    pub kernel: bool,
    /// The kernel namespace (see `CreateExecution::context`), and whether to drop it.
    pub context: Option<String>,
    pub forget_context: bool,
}

/// A kernel context's name, if the request gives one; it needs the kernel.
pub fn check_context(context: Option<String>, forget: bool, kernel: bool) -> Result<Option<String>, ServiceError> {
    let Some(name) = context else {
        return match forget {
            true => Err(ServiceError::Invalid("forget_context needs a context".into())),
            false => Ok(None),
        };
    };
    if !kernel {
        return Err(ServiceError::Invalid(
            "context needs the session's Python kernel (language python, not fresh, a session with a kernel)".into(),
        ));
    }
    let ok = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match ok {
        true => Ok(Some(name)),
        false => Err(ServiceError::Invalid(format!("invalid context {name:?}: 1 to 64 of A-Z a-z 0-9 _ -"))),
    }
}

/// What a caller asks to run, before it is checked.
pub struct Code {
    pub language: Language,
    pub code: String,
    pub stdin: Option<String>,
    /// Environment on top of the sandbox's own (and the session's).
    pub env: BTreeMap<String, String>,
    pub timeout_s: Option<f64>,
}

impl Plan {
    /// The checked plan of execution `id` in `session` (its environment and timeout apply),
    /// in its kernel when `kernel`.
    pub fn in_session(
        config: &Config,
        session: &sandbox_api::Session,
        id: String,
        code: Code,
        kernel: bool,
    ) -> Result<Plan, ServiceError> {
        let mut env = sandbox_env(&session.limits, &session.env);
        env.extend(code.env);
        let timeout_s = check_timeout(config, code.timeout_s, session.timeout_s)?;
        let (language, stdin, code) = (code.language, code.stdin, code.code);
        let (context, forget_context) = (None, false);
        Plan {
            id,
            session_id: Some(session.id.clone()),
            language,
            code,
            stdin,
            env,
            timeout_s,
            kernel,
            context,
            forget_context,
        }
        .checked()
    }

    /// The checked plan of a one-shot execution in a sandbox of `limits` (`POST /v1/run`).
    pub fn one_shot(config: &Config, limits: &Limits, code: Code) -> Result<Plan, ServiceError> {
        let env = sandbox_env(limits, &code.env);
        let timeout_s = check_timeout(config, code.timeout_s, config.default_timeout_s)?;
        let (language, stdin, code) = (code.language, code.stdin, code.code);
        let id = new_id("exe");
        let (kernel, context, forget_context) = (false, None, false);
        Plan { id, session_id: None, language, code, stdin, env, timeout_s, kernel, context, forget_context }.checked()
    }

    fn checked(self) -> Result<Plan, ServiceError> {
        if self.code.contains('\0') {
            return Err(ServiceError::Invalid("code must not contain NUL characters".into()));
        }
        check_env(&self.env)?;
        Ok(self)
    }

    /// The record of a submission still waiting for its turn.
    pub fn queued_record(&self) -> Execution {
        Execution { status: ExecutionStatus::Queued, ..self.running_record() }
    }

    pub fn running_record(&self) -> Execution {
        Execution::new(self.id.clone(), self.session_id.clone(), self.language, ExecutionStatus::Running)
    }

    pub fn request(&self, config: &Config) -> ExecRequest {
        ExecRequest {
            id: self.id.clone(),
            language: self.language,
            code: self.code.clone(),
            stdin: self.stdin.clone(),
            env: self.env.clone(),
            timeout_ms: (self.timeout_s * 1000.0).ceil() as u64,
            output_limit: config.output_limit_bytes,
            outputs_limit: config.outputs_limit_bytes,
            kernel: self.kernel,
            context: self.context.clone(),
            forget_context: self.forget_context,
            // The runtime turns it on when the caller hands it a sink.
            stream: false,
        }
    }
}

fn limit_reason(kind: LimitKind) -> ExecutionReason {
    match kind {
        LimitKind::Memory => ExecutionReason::Memory,
        LimitKind::Pids => ExecutionReason::Pids,
    }
}

/// The record of a queued execution that never ran: its session was deleted meanwhile (a
/// conflict), or no sandbox could start for it.
pub fn never_ran(record: Execution, why: &ServiceError) -> Execution {
    let (status, reason) = match why {
        ServiceError::Conflict(_) => (ExecutionStatus::Killed, ExecutionReason::SessionDeleted),
        _ => (ExecutionStatus::Failed, ExecutionReason::NotStarted),
    };
    Execution { status, reason: Some(reason), stderr: why.to_string(), finished_at: Some(Utc::now()), ..record }
}

/// The record of a queued execution skipped because an earlier one failed
/// (`on_error: "cancel_pending"`).
pub fn cancelled(record: Execution) -> Execution {
    Execution {
        status: ExecutionStatus::Cancelled,
        reason: Some(ExecutionReason::EarlierFailure),
        duration_ms: Some(0),
        finished_at: Some(Utc::now()),
        ..record
    }
}

/// Fills a running record in from how the execution ended. With [`never_ran`], [`cancelled`]
/// and the store's recovery (`server_restart`), the one place an execution's end is decided.
pub fn finish(mut e: Execution, outcome: Result<ExecOutcome, RuntimeError>, deleted: bool) -> Execution {
    e.finished_at = Some(Utc::now());
    match outcome {
        Ok(ExecOutcome { result, limit, cpu_ms, peak_memory_bytes }) => {
            e.metrics = Some(Metrics { wall_ms: result.duration_ms, cpu_ms, peak_memory_bytes });
            let ExecResult {
                exit_code,
                signal,
                timed_out,
                stdout,
                stderr,
                stdout_truncated,
                stderr_truncated,
                duration_ms,
                spawn_error,
                outputs,
                kernel_died,
                outputs_truncated,
                ..
            } = result;
            e.exit_code = exit_code;
            e.stdout = stdout;
            e.stderr = stderr;
            e.stdout_truncated = stdout_truncated;
            e.stderr_truncated = stderr_truncated;
            e.outputs = outputs;
            e.outputs_truncated = outputs_truncated;
            e.duration_ms = Some(duration_ms);
            (e.status, e.reason) = match (spawn_error, limit, timed_out, exit_code, signal) {
                (Some(msg), ..) => {
                    e.stderr = msg;
                    (ExecutionStatus::Failed, Some(ExecutionReason::SpawnError))
                }
                // A fork bomb: the pid limit explains the rest (a kernel is restarted for it).
                (None, Some(LimitKind::Pids), _, code, _) if code != Some(0) => {
                    if kernel_died {
                        e.stderr.push_str(
                            "the pid limit was hit; a fresh kernel was started and earlier variables are gone\n",
                        );
                    }
                    (ExecutionStatus::Killed, Some(ExecutionReason::Pids))
                }
                // A cell that outran its timeout and would not stop cost the kernel its life.
                (None, _, true, ..) if kernel_died => {
                    (ExecutionStatus::TimedOut, Some(ExecutionReason::TimeoutKernelRestarted))
                }
                (None, limit, false, ..) if kernel_died => {
                    let why = match limit {
                        Some(kind) => format!("the kernel was killed by its {} limit", kind.as_str()),
                        None => "the kernel exited or was killed".to_string(),
                    };
                    e.stderr.push_str(&format!("{why}; a fresh kernel was started and earlier variables are gone\n"));
                    (ExecutionStatus::KernelDied, Some(limit.map_or(ExecutionReason::KernelExited, limit_reason)))
                }
                // A limit explains a timeout too (a fork bomb runs until the clock stops it), but
                // not a clean exit: code may catch a failed fork and carry on.
                (None, Some(kind), _, code, _) if code != Some(0) => {
                    (ExecutionStatus::Killed, Some(limit_reason(kind)))
                }
                (None, _, true, ..) => (ExecutionStatus::TimedOut, Some(ExecutionReason::Timeout)),
                (None, _, false, Some(0), _) => (ExecutionStatus::Succeeded, None),
                (None, _, false, Some(_), _) => (ExecutionStatus::Failed, None),
                (None, _, false, None, Some(sig)) => {
                    e.signal = Some(sig);
                    (ExecutionStatus::Failed, Some(ExecutionReason::Signal))
                }
                (None, _, false, None, None) => (ExecutionStatus::Failed, Some(ExecutionReason::Unknown)),
            };
        }
        Err(err) => {
            e.status = ExecutionStatus::Killed;
            e.duration_ms = Some((Utc::now() - e.started_at).num_milliseconds().max(0) as u64);
            e.reason = Some(if deleted { ExecutionReason::SessionDeleted } else { ExecutionReason::SandboxDied });
            e.stderr = err.to_string();
        }
    }
    e
}

impl crate::Service {
    /// Execution `id`, whole, if `caller` may see it.
    pub async fn execution(&self, caller: &Caller, id: &str) -> Result<Execution, ServiceError> {
        self.store.get_execution(id, caller.scope()).await?.ok_or_else(|| ServiceError::not_found("execution", id))
    }

    /// A page of session `session_id`'s executions, oldest first: summaries (no stdout, stderr
    /// or outputs) unless `with_outputs`; and the next page's cursor.
    pub async fn executions(
        &self,
        caller: &Caller,
        session_id: &str,
        with_outputs: bool,
        page: crate::Page,
    ) -> Result<(Vec<Execution>, Option<String>), ServiceError> {
        self.session(caller, session_id).await?;
        let p = self.store.page_executions(session_id, with_outputs, page.limit(), page.cursor.as_deref()).await?;
        Ok((p.items, p.next))
    }

    /// Runs code once in a sandbox of its own (a warm one from the run pool when the limits
    /// match), and destroys the sandbox after answering. The execution is `caller`'s tenant's.
    pub async fn run_once(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        req: sandbox_api::RunRequest,
    ) -> Result<Execution, ServiceError> {
        let config = &self.config;
        let limits = resolve_limits(config, req.limits.as_ref())?;
        let code = Code {
            language: req.language,
            code: req.code,
            stdin: req.stdin,
            env: req.env.unwrap_or_default(),
            timeout_s: req.timeout_s,
        };
        let plan = Plan::one_shot(config, &limits, code)?;
        crate::access::admission::check_tenant_executions(self, caller.tenant()).await?;
        let limits = limits_from(&limits);
        let warm = if limits == self.run_pool.limits() { self.run_pool.take(&self.dirs) } else { None };
        let (name, sandbox) = match warm {
            Some(w) => {
                self.run_pool.refill(&self.runtime, &self.dirs);
                (w.name, w.sandbox)
            }
            None => {
                crate::access::admission::check_memory(self, limits.memory_bytes).await?;
                let name = format!("run-{}", plan.id);
                let sandbox = self.start_bare_sandbox(&name, limits).await?;
                (name, sandbox)
            }
        };
        let record = plan.running_record();
        let stored = self.store.insert_execution(&record, &plan.code, caller.tenant(), &self.replica.id).await;
        // Nothing runs unless its record exists; either way tear-down is not the caller's wait.
        let outcome = match &stored {
            Ok(()) => Some(sandbox.exec(plan.request(config), None).await),
            Err(_) => None,
        };
        let this = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            sandbox.destroy().await;
            this.dirs.remove(&name);
        });
        stored?;
        let Some(outcome) = outcome else { return Err(ServiceError::Internal("execution not stored".into())) };
        let done = finish(record, outcome, false);
        self.store.finish_execution(&done).await?;
        Ok(done)
    }

    /// Interrupts the running kernel cell (it ends with KeyboardInterrupt; variables are
    /// kept); true if there was a live sandbox to interrupt. Does not wait for the session's
    /// turn: that is the cell being interrupted.
    pub async fn interrupt(&self, caller: &Caller, session_id: &str) -> Result<bool, ServiceError> {
        self.active_session(caller, session_id).await?;
        match self.sessions.live(session_id).current() {
            Some(sandbox) if sandbox.is_alive() => {
                sandbox.interrupt().await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Replaces the session's kernel with a fresh one (a running cell ends as kernel_died)
    /// and answers when the new kernel is ready. Files in the workspace are untouched.
    pub async fn restart_kernel(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<sandbox_api::Session, ServiceError> {
        let session = self.active_session(caller, session_id).await?;
        if session.kernel.is_none() {
            return Err(ServiceError::Conflict(format!("session {session_id} has no kernel")));
        }
        if let Some(sandbox) = self.sessions.live(session_id).current().filter(|sb| sb.is_alive()) {
            sandbox.restart_kernel().await?;
        }
        // With no live sandbox the next execution starts one, and with it a fresh kernel.
        self.session_record(session_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            id: "e".into(),
            session_id: None,
            language: Language::Python,
            code: "1".into(),
            stdin: None,
            env: BTreeMap::new(),
            timeout_s: 1.0,
            kernel: false,
            context: None,
            forget_context: false,
        }
    }

    fn outcome(r: ExecResult, limit: Option<LimitKind>) -> Result<ExecOutcome, RuntimeError> {
        Ok(ExecOutcome { result: r, limit, cpu_ms: None, peak_memory_bytes: None })
    }

    #[test]
    fn statuses_follow_the_outcome() {
        let rec = plan().running_record();
        let ok = finish(rec.clone(), outcome(ExecResult { exit_code: Some(0), ..Default::default() }, None), false);
        assert_eq!(ok.status, ExecutionStatus::Succeeded);
        let failed = finish(rec.clone(), outcome(ExecResult { exit_code: Some(2), ..Default::default() }, None), false);
        assert_eq!((failed.status, failed.exit_code), (ExecutionStatus::Failed, Some(2)));
        let timeout = finish(
            rec.clone(),
            outcome(ExecResult { timed_out: true, signal: Some(9), ..Default::default() }, None),
            false,
        );
        assert_eq!(timeout.status, ExecutionStatus::TimedOut);
        let oom = finish(
            rec.clone(),
            outcome(ExecResult { signal: Some(9), ..Default::default() }, Some(LimitKind::Memory)),
            false,
        );
        assert_eq!((oom.status, oom.reason), (ExecutionStatus::Killed, Some(ExecutionReason::Memory)));
        let caught = finish(
            rec.clone(),
            outcome(ExecResult { exit_code: Some(0), ..Default::default() }, Some(LimitKind::Pids)),
            false,
        );
        assert_eq!(caught.status, ExecutionStatus::Succeeded);
        let dead_kernel = ExecResult { kernel_died: true, ..Default::default() };
        let k = finish(rec.clone(), outcome(dead_kernel, Some(LimitKind::Memory)), false);
        assert_eq!((k.status, k.reason), (ExecutionStatus::KernelDied, Some(ExecutionReason::Memory)));
        assert!(k.stderr.contains("fresh kernel"));
        let died = finish(rec, Err(RuntimeError::SandboxDied("x".into())), true);
        assert_eq!((died.status, died.reason), (ExecutionStatus::Killed, Some(ExecutionReason::SessionDeleted)));
    }

    #[test]
    fn thread_pools_follow_the_cpu_limit_unless_the_user_says_otherwise() {
        let limits = Limits { memory_mb: 64, pids: 16, cpu: 1.5 };
        let env = sandbox_env(&limits, &BTreeMap::from([("OMP_NUM_THREADS".to_string(), "4".to_string())]));
        assert_eq!(env["OPENBLAS_NUM_THREADS"], "2");
        assert_eq!(env["OMP_NUM_THREADS"], "4");
        let small = sandbox_env(&Limits { cpu: 0.25, ..limits }, &BTreeMap::new());
        assert_eq!(small["MKL_NUM_THREADS"], "1");
        assert_eq!(small["PYTHONPATH"], "/opt/sandbox/packages:/opt/sandbox/template");
        let own = sandbox_env(&limits, &BTreeMap::from([("PYTHONPATH".to_string(), "/workspace/lib".to_string())]));
        assert_eq!(own["PYTHONPATH"], "/opt/sandbox/packages:/opt/sandbox/template:/workspace/lib");
    }

    #[test]
    fn bad_env_and_limits_are_invalid() {
        let config = Config::default();
        let limits = Limits { memory_mb: 64, pids: 16, cpu: 1.0 };
        let code = |env: &[(&str, &str)], code: &str| Code {
            language: Language::Python,
            code: code.into(),
            stdin: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            timeout_s: None,
        };
        for (env, text) in [(&[("A=B", "1")][..], "1"), (&[][..], "a\0b")] {
            let refused = Plan::one_shot(&config, &limits, code(env, text));
            assert!(matches!(refused, Err(ServiceError::Invalid(_))), "{env:?} {text:?}");
        }
        let ok = Plan::one_shot(&config, &limits, code(&[("A", "1")], "print(1)")).expect("a plan");
        assert_eq!((ok.env["A"].as_str(), ok.timeout_s), ("1", config.default_timeout_s));
        let too_big = LimitsRequest { memory_mb: Some(1 << 30), ..Default::default() };
        assert!(resolve_limits(&config, Some(&too_big)).is_err());
        assert!(resolve_limits(&config, None).is_ok());
        assert!(check_timeout(&config, Some(f64::NAN), 1.0).is_err());
        assert!(check_timeout(&config, Some(0.0), 1.0).is_err());
        assert_eq!(check_timeout(&config, None, 7.0).expect("default"), 7.0);
    }
}
