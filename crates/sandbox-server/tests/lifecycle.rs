//! Session lifecycle with a real idle sweep and real sandboxes: idle and lifetime stops, resume
//! (automatic and explicit), workspace retention, and continuing in another's workspace.

use std::time::{Duration, Instant};

use sandbox_api::{CreateSession, ExecutionStatus, Language, Session, SessionStatus};
use sandbox_test_support::TestServer;

fn status_of(e: &sandbox_client::ClientError) -> u16 {
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

/// A server whose idle sweep looks every 200 ms.
async fn server(retention_s: u64) -> anyhow::Result<TestServer> {
    TestServer::start_with(|c| {
        c.sweep_interval_s = 0.2;
        c.retention_s = retention_s;
    })
    .await
}

async fn wait_status(t: &TestServer, id: &str, want: SessionStatus, within: Duration) -> anyhow::Result<Session> {
    let deadline = Instant::now() + within;
    loop {
        let s = t.client.get_session(id).await?;
        if s.status == want {
            return Ok(s);
        }
        anyhow::ensure!(Instant::now() < deadline, "session {id} is still {:?}, not {want:?}", s.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Processes in a session's sandboxes, from their cgroups (`<id>.<n>`; v1 pids controller, as
/// on this host, or v2).
fn sandbox_processes(id: &str) -> usize {
    let prefix = format!("{id}.");
    let mut n = 0;
    for root in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
        for d in std::fs::read_dir(root).into_iter().flatten().flatten() {
            if !d.file_name().to_string_lossy().starts_with("sandboxd-") {
                continue;
            }
            for g in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if g.file_name().to_string_lossy().starts_with(&prefix) {
                    n += std::fs::read_to_string(g.path().join("cgroup.procs")).map_or(0, |p| p.lines().count());
                }
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_stop_and_resume_with_their_files() -> anyhow::Result<()> {
    let t = server(3600).await?;
    let req = CreateSession { idle_timeout_s: Some(1), ..Default::default() };
    let s = t.client.create_session(&req).await?;
    assert_eq!((s.idle_timeout_s, s.auto_resume), (1, true));
    t.exec(&s.id, Language::Python, "x = 1\nopen('notes.txt', 'w').write('kept')").await?;
    assert!(sandbox_processes(&s.id) > 0, "the sandbox runs");

    let stopped = wait_status(&t, &s.id, SessionStatus::Stopped, Duration::from_secs(10)).await?;
    assert_eq!(stopped.stop_reason.as_deref(), Some("idle"));
    assert!(stopped.stopped_at.is_some());
    assert_eq!(sandbox_processes(&s.id), 0, "its sandbox and memory are gone");
    // Files can still be read while it is stopped, and nothing restarts for that.
    assert_eq!(t.client.read_file(&s.id, "notes.txt").await?, b"kept");
    let metrics = t.client.raw(reqwest::Method::GET, "/metrics", None).await?.1;
    assert!(metrics.contains("sandboxd_sessions{status=\"stopped\"} 1"), "{metrics}");
    let stopped_idle =
        sandbox_test_support::metric_value(&metrics, "sandboxd_sweep_actions_total{action=\"stopped_idle\",");
    assert_eq!(stopped_idle, Some(1), "{metrics}");
    // 4 bytes of notes.txt; on volumes, whole blocks and a block or two of each empty volume.
    let bytes = sandbox_test_support::metric_value(&metrics, "sandboxd_workspace_bytes{")
        .ok_or_else(|| anyhow::anyhow!("no workspace bytes in {metrics}"))?;
    assert!((4..64 << 10).contains(&bytes), "workspace bytes: {bytes}");

    // The next execution resumes it: the files are there, the kernel is new.
    let e = t.exec(&s.id, Language::Python, "print(open('notes.txt').read()); print('x' in dir())").await?;
    assert_eq!(e.stdout, "kept\nFalse\n", "{e:?}");
    let s2 = t.client.get_session(&s.id).await?;
    assert_eq!((s2.status, s2.stop_reason), (SessionStatus::Running, None));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_execution_is_never_cut_off_by_the_idle_sweep() -> anyhow::Result<()> {
    let t = server(3600).await?;
    let req = CreateSession { idle_timeout_s: Some(1), max_lifetime_s: Some(2), ..Default::default() };
    let s = t.client.create_session(&req).await?;
    // Longer than both limits: it finishes, and the stop waits for it.
    let e = t.exec(&s.id, Language::Bash, "sleep 4; echo finished").await?;
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "finished\n"), "{e:?}");
    let stopped = wait_status(&t, &s.id, SessionStatus::Stopped, Duration::from_secs(10)).await?;
    assert_eq!(stopped.stop_reason.as_deref(), Some("lifetime"), "past its lifetime, used or not");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_resume_a_stopped_session_waits_for_resume() -> anyhow::Result<()> {
    let t = server(3600).await?;
    let s = t.client.create_session(&CreateSession { auto_resume: Some(false), ..Default::default() }).await?;
    t.exec(&s.id, Language::Bash, "echo hi > f").await?;
    let stopped = t.client.stop_session(&s.id).await?;
    assert_eq!((stopped.status, stopped.stop_reason.as_deref()), (SessionStatus::Stopped, Some("user")));
    let e =
        t.client.execute(&s.id, &sandbox_test_support::exec_req(Language::Bash, "cat f")).await.expect_err("stopped");
    assert_eq!(status_of(&e), 409, "{e}");
    assert!(e.to_string().contains("resume"), "{e}");
    let resumed = t.client.resume_session(&s.id).await?;
    assert_eq!(resumed.status, SessionStatus::Running);
    assert!(sandbox_processes(&s.id) > 0, "resume starts the sandbox");
    assert_eq!(t.exec(&s.id, Language::Bash, "cat f").await?.stdout, "hi\n");
    // Resuming a running session changes nothing.
    assert_eq!(t.client.resume_session(&s.id).await?.status, SessionStatus::Running);
    let e = t.client.resume_session("ses_nope").await.expect_err("unknown");
    assert_eq!(status_of(&e), 404);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_are_removed_after_the_retention_period() -> anyhow::Result<()> {
    let t = server(1).await?;
    let stopped = t.session().await?;
    let deleted = t.session().await?;
    let running = t.session().await?;
    for s in [&stopped, &deleted, &running] {
        t.client.upload(&s.id, "data.csv", b"a,b".to_vec(), None).await?;
    }
    t.client.stop_session(&stopped.id).await?;
    t.client.delete_session(&deleted.id).await?;
    let ws = |id: &str| t.data_dir().join("workspaces").join(id);
    assert!(ws(&deleted.id).exists(), "a deleted session's workspace stays for the retention period");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ws(&stopped.id).exists() || ws(&deleted.id).exists() {
        anyhow::ensure!(Instant::now() < deadline, "workspaces were not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ws(&running.id).exists(), "a running session keeps its workspace");
    let s = t.client.get_session(&stopped.id).await?;
    assert!(s.workspace_removed_at.is_some());
    let e = t.client.resume_session(&stopped.id).await.expect_err("nothing to resume");
    assert_eq!(status_of(&e), 409);
    let e = t.client.read_file(&stopped.id, "data.csv").await.expect_err("gone");
    assert_eq!(status_of(&e), 409);
    assert!(e.to_string().contains("removed"), "{e}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_can_continue_in_an_old_workspace() -> anyhow::Result<()> {
    let t = server(3600).await?;
    let old = t.session().await?;
    t.exec(&old.id, Language::Bash, "mkdir -p work && echo draft > work/report.md").await?;
    let from = |id: &str| CreateSession { workspace_from: Some(id.to_string()), ..Default::default() };
    let e = t.client.create_session(&from(&old.id)).await.expect_err("still running");
    assert_eq!(status_of(&e), 409);
    t.client.stop_session(&old.id).await?;
    let new = t.client.create_session(&from(&old.id)).await?;
    let e = t.exec(&new.id, Language::Bash, "cat work/report.md").await?;
    assert_eq!(e.stdout, "draft\n", "{e:?}");
    let old_now = t.client.get_session(&old.id).await?;
    assert_eq!(old_now.status, SessionStatus::Deleted, "the files moved; the old session is done");
    assert!(old_now.workspace_removed_at.is_some());
    let e = t.client.create_session(&from(&old.id)).await.expect_err("already taken");
    assert_eq!(status_of(&e), 409);
    let e = t.client.create_session(&from("ses_nope")).await.expect_err("unknown");
    assert_eq!(status_of(&e), 422);
    // Deleted sessions hand over their workspace too, within the retention period.
    let other = t.session().await?;
    t.client.upload(&other.id, "a.txt", b"A".to_vec(), None).await?;
    t.client.delete_session(&other.id).await?;
    let heir = t.client.create_session(&from(&other.id)).await?;
    assert_eq!(t.client.read_file(&heir.id, "a.txt").await?, b"A");
    t.shutdown().await;
    Ok(())
}
