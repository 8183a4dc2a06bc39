//! Python packages for templates and sessions.
//!
//! Sessions have no network, so packages are installed by the runtime in a separate,
//! network-enabled sandbox that runs only `pip` (wheels only: no package code runs during the
//! install) into a directory the runtime keeps (see `sandbox_runtime::Dir`). A session's sandbox mounts its own package directory and its
//! template's environment read-only, both on `PYTHONPATH` (the session's first). The pip cache
//! is shared, so a wheel is downloaded once per host.

use std::time::{Duration, Instant};

use sandbox_api::{InstallStatus, InstalledPackage, PackageInstallResult};
use sandbox_runtime::{Dir, PackageInstall, ResourceLimits, Runtime};

use crate::access::auth::Caller;
use crate::error::ServiceError;

/// Where a session's own packages appear inside its sandbox.
pub const SESSION_MOUNT: &str = "/opt/sandbox/packages";
/// Where its template's environment appears.
pub const TEMPLATE_MOUNT: &str = "/opt/sandbox/template";

/// The most packages one request may name.
const MAX_PACKAGES: usize = 64;
const MAX_SPEC_LEN: usize = 200;

/// What an installation may use: pip resolving and unpacking wheels (pandas' take ~300 MiB).
const INSTALL_LIMITS: ResourceLimits = ResourceLimits { memory_bytes: 2 << 30, pids: 256, cpus: 2.0 };

/// `PYTHONPATH` of a sandbox: the session's packages, then its template's, then the user's own.
pub fn python_path(user: Option<&str>) -> String {
    match user {
        Some(u) if !u.is_empty() => format!("{SESSION_MOUNT}:{TEMPLATE_MOUNT}:{u}"),
        _ => format!("{SESSION_MOUNT}:{TEMPLATE_MOUNT}"),
    }
}

/// Checks requirement specifiers: a name with optional extras and version constraints
/// (`pandas`, `six==1.17.0`, `requests[socks]>=2,<3`). Options, URLs, paths and environment
/// markers are refused: what pip is given can only ever name packages on the index.
pub fn check_specs(specs: &[String]) -> Result<(), ServiceError> {
    if specs.is_empty() {
        return Err(ServiceError::Invalid("packages must name at least one package".into()));
    }
    if specs.len() > MAX_PACKAGES {
        return Err(ServiceError::Invalid(format!(
            "at most {MAX_PACKAGES} packages per request (got {})",
            specs.len()
        )));
    }
    for spec in specs {
        let ok = (1..=MAX_SPEC_LEN).contains(&spec.len())
            && spec.starts_with(|c: char| c.is_ascii_alphanumeric())
            && spec.chars().all(|c| c.is_ascii_alphanumeric() || "._-[],<>=!~*+ ".contains(c));
        if !ok {
            return Err(ServiceError::Invalid(format!(
                "invalid package {spec:?}: give a name with optional extras and versions, such as \"pandas\" or \
                 \"six==1.17.0\" (options, URLs, paths and markers are not accepted)"
            )));
        }
    }
    Ok(())
}

/// Installs `packages` into `into` through `runtime` and says what changed.
pub async fn install(
    runtime: &dyn Runtime,
    name: &str,
    packages: &[String],
    into: Dir,
    index_url: Option<String>,
    timeout: Duration,
) -> Result<PackageInstallResult, ServiceError> {
    let started = Instant::now();
    let req = PackageInstall {
        name: name.to_string(),
        packages: packages.to_vec(),
        into,
        index_url,
        limits: INSTALL_LIMITS,
        timeout,
    };
    let outcome = runtime.install_packages(req).await?;
    let changed = outcome.installed.into_iter().map(|(name, version)| InstalledPackage { name, version }).collect();
    let error = (!outcome.success).then(|| pip_error(&outcome.log, outcome.timed_out));
    Ok(PackageInstallResult {
        status: if outcome.success { InstallStatus::Succeeded } else { InstallStatus::Failed },
        requested: packages.to_vec(),
        installed: changed,
        error,
        log: outcome.log,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The lines of pip's output that say why it failed.
fn pip_error(log: &str, timed_out: bool) -> String {
    if timed_out {
        return log.trim().to_string();
    }
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("ERROR:")).collect();
    if errors.is_empty() {
        log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("pip failed").trim().to_string()
    } else {
        errors.join("\n")
    }
}

impl crate::Service {
    /// Installs Python packages for session `session_id` alone. pip runs with network access in
    /// a sandbox of its own (the session stays offline) into the session's package directory,
    /// which its kernel and processes have on `PYTHONPATH`: a new `import` finds them at once.
    pub async fn install_packages(
        &self,
        caller: &Caller,
        session_id: &str,
        packages: &[String],
    ) -> Result<PackageInstallResult, ServiceError> {
        self.active_session(caller, session_id).await?;
        check_specs(packages)?;
        let live = self.sessions.live(session_id);
        // One installation per session at a time: two pips in one directory would trip on each other.
        let _installing = live.installing.lock().await;
        self.dirs.packages.ensure(session_id)?;
        let into = Dir::SessionPackages(session_id.to_string());
        let timeout = Duration::from_secs(self.config.package_timeout_s);
        let index = self.config.pip_index_url.clone();
        let result = install(self.runtime.as_ref(), session_id, packages, into, index, timeout).await?;
        tracing::info!(session = %session_id, status = ?result.status, installed = result.installed.len(), "packages installed");
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_and_versions_pass_options_urls_and_paths_do_not() {
        assert!(
            check_specs(&specs(&["six", "six==1.17.0", "requests[socks]>=2,<3", "zope.interface", "a_b-c"])).is_ok()
        );
        for bad in [
            "--index-url=http://evil",
            "-r/etc/passwd",
            "git+https://x/y",
            "pkg @ https://x/y.whl",
            "/tmp/x.whl",
            "./local",
            "six; os_name=='posix'",
            "",
            "six\n--pre",
        ] {
            assert!(check_specs(&specs(&[bad])).is_err(), "{bad:?} must be refused");
        }
        assert!(check_specs(&[]).is_err());
        assert!(check_specs(&vec!["six".to_string(); MAX_PACKAGES + 1]).is_err());
    }

    #[test]
    fn pip_errors_are_picked_out_of_the_log() {
        let log = "Collecting nope\nERROR: Could not find a version that satisfies the requirement nope\nERROR: No matching distribution found for nope\n";
        assert_eq!(
            pip_error(log, false),
            "ERROR: Could not find a version that satisfies the requirement nope\nERROR: No matching distribution found for nope"
        );
        assert_eq!(pip_error("Traceback\nOSError: boom\n", false), "OSError: boom");
    }

    #[test]
    fn the_sessions_packages_come_first_on_the_path() {
        assert_eq!(python_path(None), "/opt/sandbox/packages:/opt/sandbox/template");
        assert_eq!(python_path(Some("/workspace/lib")), "/opt/sandbox/packages:/opt/sandbox/template:/workspace/lib");
    }
}
