//! sandboxd killed with SIGKILL in the middle of an execution and of an upload, then started
//! again on the same data dir: no workspace file is lost, nothing stays "running", and the
//! half-sent upload never replaced the file it was meant to replace.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language, SessionStatus};
use sandbox_test_support::{processes_mentioning, Daemon};

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_no_file_and_leaves_nothing_running() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandboxd-crash-").tempdir_in("/tmp")?;
    let quiet = [("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0")];
    let mut d = Daemon::start(data.path(), &quiet)?;
    let c = d.client();
    let s = c.create_session(&CreateSession::default()).await?;
    c.upload(&s.id, "report.csv", b"old,content\n".to_vec(), None).await?;
    let e = c.execute(&s.id, &CreateExecution::new(Language::Bash, "echo kept > kept.txt")).await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded);

    // In flight at the crash: an execution, and an upload that sent 1 MiB of a promised 8.
    let running =
        CreateExecution { execution_id: Some("cut-off".into()), ..CreateExecution::new(Language::Bash, "sleep 60") };
    let (c1, sid) = (c.clone(), s.id.clone());
    let exec_task = tokio::spawn(async move { c1.execute(&sid, &running).await });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![b'x'; 1 << 20])).await?;
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let (c2, sid) = (c.clone(), s.id.clone());
    let upload_task = tokio::spawn(async move { c2.upload(&sid, "report.csv", body, Some(8 << 20)).await });
    // The upload is written to an unnamed file in the workspace: an open fd, and no name.
    let workspace = data.path().join("workspaces").join(&s.id);
    let fds = format!("/proc/{}/fd", d.child.id());
    let unnamed_upload = || {
        std::fs::read_dir(&fds).into_iter().flatten().flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.starts_with(&workspace) && t.to_string_lossy().ends_with("(deleted)"))
        })
    };
    eventually("the upload to be written", unnamed_upload).await?;
    sandbox_test_support::until_running(&c, "cut-off").await?;

    d.signal(9)?;
    d.wait_exit(Duration::from_secs(5))?;
    let _ = (exec_task.await, upload_task.await);
    drop(tx);
    // The sandboxes die with it (bwrap's --die-with-parent), even without a clean shutdown.
    let needle = data.path().to_string_lossy().to_string();
    eventually("the sandbox to die", || processes_mentioning(&needle) == 0).await?;

    let d2 = Daemon::start(data.path(), &quiet)?;
    let c = d2.client();
    let cut = c.get_execution("cut-off").await?;
    assert_eq!(
        (cut.status, cut.reason),
        (ExecutionStatus::Interrupted, Some(sandbox_api::ExecutionReason::ServerRestart))
    );
    assert!(cut.finished_at.is_some());
    let all = c.list_executions(&s.id).await?.executions;
    assert!(all.iter().all(|e| !e.status.is_pending()), "nothing stays queued or running: {all:?}");
    let session = c.get_session(&s.id).await?;
    assert_eq!((session.status, session.stop_reason.as_deref()), (SessionStatus::Stopped, Some("server_restart")));
    // The half-sent upload replaced nothing, and left nothing behind.
    assert_eq!(c.read_file(&s.id, "report.csv").await?, b"old,content\n");
    let mut names: Vec<_> = std::fs::read_dir(&workspace)?.flatten().map(|e| e.file_name()).collect();
    names.sort();
    assert_eq!(names, ["kept.txt", "report.csv"], "no partial file anywhere");
    // The session resumes on demand, on the same files.
    let again = c.execute(&s.id, &CreateExecution::new(Language::Bash, "cat kept.txt report.csv")).await?;
    assert_eq!(again.stdout, "kept\nold,content\n", "{again:?}");
    assert_eq!(c.get_session(&s.id).await?.status, SessionStatus::Running);
    Ok(())
}
