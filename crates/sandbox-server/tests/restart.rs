//! Durability across restarts, and readiness when the host cannot run sandboxes.

use reqwest::Method;
use sandbox_api::{CreateSession, ExecutionStatus, Language};
use sandbox_test_support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_executions_and_files_survive_a_restart() -> anyhow::Result<()> {
    let mut t = TestServer::start().await?;
    let s = t.session().await?;
    let e = t.exec(&s.id, Language::Bash, "echo durable > kept.txt; echo done").await?;

    // An execution in flight when the server stops must not stay "running".
    let client = t.client.clone();
    let sid = s.id.clone();
    let in_flight =
        tokio::spawn(
            async move { client.execute(&sid, &sandbox_test_support::exec_req(Language::Bash, "sleep 60")).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    t.restart().await?;
    let _ = in_flight.await;

    let sessions = t.client.list_sessions().await?.sessions;
    assert_eq!(sessions.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), vec![s.id.as_str()]);
    let execs = t.client.list_executions_with_outputs(&s.id).await?.executions;
    assert_eq!(execs.len(), 2);
    assert_eq!(execs[0], e);
    assert!(execs.iter().all(|x| x.status != ExecutionStatus::Running), "{execs:?}");

    // The session gets a new sandbox on demand, on the same workspace.
    let again = t.exec(&s.id, Language::Bash, "cat kept.txt").await?;
    assert_eq!(again.stdout, "durable\n", "{again:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bubblewrap_means_not_ready_never_unsandboxed() -> anyhow::Result<()> {
    let t = TestServer::start_unchecked(|c| c.local.bwrap = "/nonexistent/bwrap".into()).await?;
    let (status, _) = t.client.raw(Method::GET, "/healthz", None).await?;
    assert_eq!(status, 200, "the process still serves");
    let (status, r) = t.client.readiness().await?;
    assert_eq!(status, 503);
    assert!(!r.ready && r.sandbox.message.contains("bubblewrap"), "{r:?}");
    let err = t.client.create_session(&CreateSession::default()).await.expect_err("must refuse");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert!(err.to_string().contains("bubblewrap"), "{err}");
    let run = sandbox_api::RunRequest::new(Language::Python, "print(1)");
    assert_eq!(t.client.run(&run).await.expect_err("must refuse").status().map(|s| s.as_u16()), Some(503));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_the_checks() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let (status, r) = t.client.readiness().await?;
    assert_eq!(status, 200);
    assert!(r.ready && r.sandbox.ok && r.store.ok);
    let cgroup = r.runtime_detail.get("cgroup").map(String::as_str).unwrap_or_default();
    assert!(["v1", "v2"].contains(&cgroup), "limits must be enforced: {r:?}");
    t.shutdown().await;
    Ok(())
}
