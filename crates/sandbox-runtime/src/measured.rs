//! One execution through the executor, measured by the sandbox's cgroup where sandboxd can
//! read it: which limit ended it, the CPU time and peak memory it took. Shared by every
//! runtime whose executor speaks over a stream ([`ExecutorClient`]).

use std::time::Duration;

use sandbox_protocol::ExecRequest;

use crate::cgroup::SandboxCgroup;
use crate::executor_client::{ExecutorClient, OutputSink};
use crate::runtime::ExecOutcome;
use crate::RuntimeError;

/// Extra time the executor gets beyond an execution's own timeout before sandboxd gives up on it.
pub const BACKSTOP: Duration = Duration::from_secs(10);

/// Runs `req`. An error means the sandbox is lost (its executor died or stopped answering):
/// the caller destroys it. `tail` gives the sandbox's last words for the error.
pub async fn exec(
    client: &ExecutorClient,
    cgroup: Option<&SandboxCgroup>,
    req: ExecRequest,
    sink: Option<OutputSink>,
    tail: impl Fn() -> String,
) -> Result<ExecOutcome, RuntimeError> {
    if let Some(cg) = cgroup {
        cg.reset_peak();
    }
    let before = cgroup.map(SandboxCgroup::counters).unwrap_or_default();
    let limit = Duration::from_millis(req.timeout_ms) + BACKSTOP;
    let result = match tokio::time::timeout(limit, client.exec(req, sink)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // The whole sandbox died: most likely its memory limit took the executor too.
            let after = cgroup.map(SandboxCgroup::counters).unwrap_or_default();
            let detail = match before.limit_hit(&after) {
                Some(kind) => format!("{e} (the sandbox hit its {} limit)", kind.as_str()),
                None => format!("{e} {}", tail()),
            };
            return Err(RuntimeError::SandboxDied(detail.trim().to_string()));
        }
        Err(_) => return Err(RuntimeError::Unresponsive(limit.as_secs())),
    };
    let after = cgroup.map(SandboxCgroup::counters).unwrap_or_default();
    let cpu_ms = after.cpu_ns.zip(before.cpu_ns).map(|(a, b)| a.saturating_sub(b) / 1_000_000);
    Ok(ExecOutcome { result, limit: before.limit_hit(&after), cpu_ms, peak_memory_bytes: after.peak_memory_bytes })
}
