//! A sandbox that dies under the server never takes the server down, and the session comes back.

use std::time::Duration;

use sandbox_api::{ExecutionStatus, Language};
use sandbox_test_support::TestServer;

/// Host pids whose command line names `needle` (bwrap names the workspace path).
fn host_processes_naming(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_fails_its_execution_and_the_session_recovers() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Bash, "echo survives > kept.txt").await?;

    let workspace = t.data_dir().join("workspaces").join(&s.id).display().to_string();
    let running = t.exec(&s.id, Language::Bash, "sleep 30");
    let crash = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids = host_processes_naming(&workspace);
        assert!(!pids.is_empty(), "the session's bwrap should be running");
        for pid in pids {
            sandbox_sys::kill(pid, libc::SIGKILL)?;
        }
        anyhow::Ok(())
    };
    let (e, crashed) = tokio::join!(running, crash);
    crashed?;
    let e = e?;
    assert_eq!(
        (e.status, e.reason),
        (ExecutionStatus::Killed, Some(sandbox_api::ExecutionReason::SandboxDied)),
        "{e:?}"
    );

    let (status, _) = t.client.raw(reqwest::Method::GET, "/healthz", None).await?;
    assert_eq!(status, 200);
    let again = t.exec(&s.id, Language::Bash, "cat kept.txt").await?;
    assert_eq!(again.stdout, "survives\n", "a new sandbox on the same workspace: {again:?}");
    t.shutdown().await;
    Ok(())
}
