//! The service API in-process, with no socket and no HTTP: a whole session driven through
//! [`Service`] over the real local runtime, as a door other than REST would drive it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language, SessionStatus};
use sandbox_service::access::auth::Caller;
use sandbox_service::executions::queue::Submission;
use sandbox_service::{Page, Service, ServiceError};
use sandbox_store::testing::TestDatabase;
use sandbox_store::Backend;
use sandbox_workspace::RelPath;

async fn run(service: &Arc<Service>, session: &str, code: &str) -> anyhow::Result<sandbox_api::Execution> {
    match service.submit_execution(&Caller::Open, session, CreateExecution::new(Language::Python, code), false).await? {
        Submission::Finished(e) => Ok(e),
        _ => anyhow::bail!("a waiting submission must answer with the finished execution"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_through_the_service_api() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandbox-service-test-").tempdir_in("/tmp")?;
    let config = sandbox_test_support::test_config(data.path())?;
    let service = Arc::new(sandbox_service::Service::open(config).await?);
    let _down = ShutDown(Arc::clone(&service));
    drive(&service).await
}

/// The same session with the store on a real PostgreSQL server: every query the service makes
/// on its way, on the other backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_with_the_store_on_postgresql() -> anyhow::Result<()> {
    let db = TestDatabase::new(Backend::Postgres).await?;
    let data = tempfile::Builder::new().prefix("sandbox-service-test-").tempdir_in("/tmp")?;
    let mut config = sandbox_test_support::test_config(data.path())?;
    config.database_url = Some(db.url.parse().map_err(anyhow::Error::msg)?);
    let service = Arc::new(sandbox_service::Service::open(config).await?);
    let _down = ShutDown(Arc::clone(&service));
    drive(&service).await
}

/// Shuts the service down when the test ends, passed or failed: a failed assertion must not
/// leave sandboxes running or volumes mounted under a removed data dir.
struct ShutDown(Arc<Service>);

impl Drop for ShutDown {
    fn drop(&mut self) {
        let service = Arc::clone(&self.0);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(service.shut_down_sandboxes());
        });
        self.0.unmount_system_dir();
    }
}

async fn drive(service: &Arc<Service>) -> anyhow::Result<()> {
    let readiness = service.readiness().await;
    anyhow::ensure!(readiness.ready, "not ready: {}", readiness.sandbox.message);
    let session = service.create_session(&Caller::Open, CreateSession::default()).await?;
    let id = session.id.as_str();

    // State carries over between executions in the kernel.
    assert_eq!(run(service, id, "x = 20").await?.status, ExecutionStatus::Succeeded);
    let e = run(service, id, "print(x + 22)").await?;
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "42\n"), "{e:?}");

    // Files: uploaded through the service, read by code, written by code, listed, read back.
    let files = service.files(&Caller::Open, id).await?;
    let body = Bytes::from_static(b"from the service");
    let mut stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(body.clone())]);
    let uploaded = files.upload(RelPath::parse("in/a.txt")?, Some(body.len() as u64), &mut stream).await?;
    assert_eq!(uploaded.size, body.len() as u64);
    let e = run(service, id, "print(open('in/a.txt').read()); open('out.txt', 'w').write('from code')").await?;
    assert_eq!(e.stdout, "from the service\n", "{e:?}");
    let (listed, truncated) = files.list(RelPath::root(), true).await?;
    let paths: Vec<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!((paths.as_slice(), truncated), (["in", "in/a.txt", "out.txt"].as_slice(), false));
    let (text, entry) = files.read_all(RelPath::parse("out.txt")?, 1 << 20).await?;
    assert_eq!((text.as_slice(), entry.size), (&b"from code"[..], 9));
    drop(files);

    // Interrupt: a long cell ends with KeyboardInterrupt and the kernel keeps its variables.
    let code = "import time\nopen('started', 'w').close()\ntime.sleep(60)";
    let mut sleeper = CreateExecution::new(Language::Python, code);
    sleeper.wait = Some(false);
    let Submission::Accepted(queued) = service.submit_execution(&Caller::Open, id, sleeper, false).await? else {
        anyhow::bail!("wait: false must be accepted");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while service.files(&Caller::Open, id).await?.stat(RelPath::parse("started")?).await.is_err() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the cell never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.interrupt(&Caller::Open, id).await?, "a live sandbox to interrupt");
    let e = run(service, id, "print(x)").await?;
    assert_eq!(e.stdout, "20\n", "{e:?}");
    let interrupted = service.execution(&Caller::Open, &queued.id).await?;
    let ended_by = interrupted.outputs.last().and_then(|o| match o {
        sandbox_api::Output::Error { ename, .. } => Some(ename.as_str()),
        _ => None,
    });
    assert_eq!((interrupted.status, ended_by), (ExecutionStatus::Failed, Some("KeyboardInterrupt")));

    // Stop and resume: the files stay, the kernel is new.
    assert_eq!(service.stop_session(&Caller::Open, id).await?.status, SessionStatus::Stopped);
    assert_eq!(service.resume_session(&Caller::Open, id).await?.status, SessionStatus::Running);
    let e = run(service, id, "import os; print(os.path.exists('out.txt'), 'x' in globals())").await?;
    assert_eq!(e.stdout, "True False\n", "{e:?}");
    // Listed a page at a time: the cursor carries on where the page ended.
    let (first, next) = service.executions(&Caller::Open, id, false, Page { limit: Some(4), cursor: None }).await?;
    let (rest, end) =
        service.executions(&Caller::Open, id, false, Page { limit: Some(4), cursor: next.clone() }).await?;
    assert_eq!((first.len(), next.is_some(), rest.len(), end), (4, true, 2, None));
    let ids: Vec<&str> = first.iter().chain(&rest).map(|e| e.id.as_str()).collect();
    assert!(ids.contains(&queued.id.as_str()) && ids.windows(2).all(|w| w[0] != w[1]), "{ids:?}");

    // Delete: the session is gone for work, with domain errors, not statuses.
    service.delete_session(&Caller::Open, id).await?;
    assert_eq!(service.session(&Caller::Open, id).await?.status, SessionStatus::Deleted);
    let refused = service.submit_execution(&Caller::Open, id, CreateExecution::new(Language::Python, "1"), false).await;
    assert!(matches!(refused, Err(ServiceError::Conflict(_))), "a deleted session takes no code");
    assert!(matches!(service.session(&Caller::Open, "ses_none").await, Err(ServiceError::NotFound(_))));
    Ok(())
}

/// With the file API through the executor (as for a runtime whose sandboxes do not share this
/// disk), files are reached where the sandbox is: a stopped session is started for them, large
/// files go in several chunks each way, and a session that may not resume on demand says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_through_the_executor_are_reached_in_the_sandbox() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandbox-service-test-").tempdir_in("/tmp")?;
    let mut config = sandbox_test_support::test_config(data.path())?;
    config.local.file_access = sandbox_service::config::FileAccess::Executor;
    let service = Arc::new(sandbox_service::Service::open(config).await?);
    let _down = ShutDown(Arc::clone(&service));
    let id = service.create_session(&Caller::Open, CreateSession::default()).await?.id;
    run(&service, &id, "open('a.txt', 'w').write('x' * 5_000_000)").await?;
    service.stop_session(&Caller::Open, &id).await?;

    let files = service.files(&Caller::Open, &id).await?;
    assert_eq!(
        service.session(&Caller::Open, &id).await?.status,
        SessionStatus::Running,
        "reaching the files started the sandbox"
    );
    let (read, entry) = files.read_all(RelPath::parse("a.txt")?, 10 << 20).await?;
    assert_eq!((read.len(), entry.size), (5_000_000, 5_000_000));
    assert!(read.iter().all(|b| *b == b'x'), "every chunk in its place");
    let chunk = Bytes::from(vec![b'y'; 64 << 10]);
    let mut body = futures_util::stream::iter((0..100).map(|_| Ok::<Bytes, std::io::Error>(chunk.clone())));
    let uploaded = files.upload(RelPath::parse("in/b.bin")?, None, &mut body).await?;
    assert_eq!(uploaded.size, 100 * (64 << 10));
    let e =
        run(&service, &id, "import os\nprint(os.path.getsize('in/b.bin'), set(open('in/b.bin','rb').read()))").await?;
    assert_eq!(e.stdout, "6553600 {121}\n", "{e:?}");

    let fixed = CreateSession { auto_resume: Some(false), ..Default::default() };
    let pinned = service.create_session(&Caller::Open, fixed).await?.id;
    service.stop_session(&Caller::Open, &pinned).await?;
    let refused = service.files(&Caller::Open, &pinned).await;
    assert!(matches!(refused, Err(ServiceError::Conflict(_))), "a session that does not resume on demand");
    Ok(())
}

/// What a crash leaves of warm sandboxes and one-shot runs (workspaces no session owns) is
/// removed at the next start; the workspace of a session of any status stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_removes_workspaces_no_session_owns() -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandbox-service-test-").tempdir_in("/tmp")?;
    let (running, deleted) = {
        let service = Arc::new(sandbox_service::Service::open(sandbox_test_support::test_config(data.path())?).await?);
        let _down = ShutDown(Arc::clone(&service));
        let running = service.create_session(&Caller::Open, CreateSession::default()).await?.id;
        run(&service, &running, "open('mine.txt', 'w').write('kept')").await?;
        let deleted = service.create_session(&Caller::Open, CreateSession::default()).await?.id;
        run(&service, &deleted, "open('old.txt', 'w').write('retained')").await?;
        service.delete_session(&Caller::Open, &deleted).await?;
        (running, deleted)
    };
    let workspaces = data.path().join("workspaces");
    let strays = ["ses_00000000000000000000000000000000", "run-exe_0000", "run-pool_0000"];
    for stray in strays {
        std::fs::create_dir_all(workspaces.join(stray).join("sub"))?;
        std::fs::write(workspaces.join(stray).join("sub/file"), "left by a crash")?;
    }

    let service = Arc::new(sandbox_service::Service::open(sandbox_test_support::test_config(data.path())?).await?);
    let _down = ShutDown(Arc::clone(&service));
    for stray in strays {
        assert!(!workspaces.join(stray).exists(), "{stray} is removed");
    }
    let (mine, _) = service.files(&Caller::Open, &running).await?.read_all(RelPath::parse("mine.txt")?, 100).await?;
    assert_eq!(mine, b"kept");
    let heir = CreateSession { workspace_from: Some(deleted), ..Default::default() };
    let heir = service.create_session(&Caller::Open, heir).await?.id;
    let (old, _) = service.files(&Caller::Open, &heir).await?.read_all(RelPath::parse("old.txt")?, 100).await?;
    assert_eq!(old, b"retained", "a deleted session's workspace stays for its retention");
    Ok(())
}
