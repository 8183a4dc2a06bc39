//! Two real `sandboxd` processes on one real PostgreSQL database (each test a database of its
//! own on the server `scripts/test.sh` starts) and, where files must survive a replica, the S3
//! test server: what replicas share, what each owns, and what happens when one goes.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language, SessionStatus};
use sandbox_client::{Client, ClientError};
use sandbox_store::testing::TestDatabase;
use sandbox_store::Backend;
use sandbox_test_support::{Daemon, S3Server};

/// A replica's lease in these tests: short, so that an adoption happens within seconds, and
/// long enough that a replica starved of CPU on a loaded 2-core machine is not taken for lost
/// (with 1 s, one was, once, in a run beside the whole suite).
const LEASE_S: &str = "3";

/// One database, and the settings every replica of a test shares.
struct Cluster {
    db: TestDatabase,
    env: Vec<(String, String)>,
    dirs: Vec<tempfile::TempDir>,
    _s3: Option<S3Server>,
}

impl Cluster {
    async fn new(extra: &[(&str, &str)]) -> anyhow::Result<Cluster> {
        let db = TestDatabase::new(Backend::Postgres).await?;
        let mut env: Vec<(String, String)> = [
            ("SANDBOXD_DATABASE_URL", db.url.as_str()),
            ("SANDBOXD_REPLICA_LEASE_S", LEASE_S),
            ("SANDBOXD_SWEEP_INTERVAL_S", "0.3"),
            ("SANDBOXD_SESSION_POOL", "0"),
            ("SANDBOXD_RUN_POOL", "0"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.sort();
        Ok(Cluster { db, env, dirs: Vec::new(), _s3: None })
    }

    /// The same, with workspaces kept in a bucket of the S3 test server (which replicas share).
    async fn with_s3() -> anyhow::Result<Cluster> {
        let s3 = S3Server::start().await?;
        s3.create_bucket("replicas").await?;
        let endpoint = s3.endpoint.clone();
        let mut cluster = Cluster::new(&[
            ("SANDBOXD_STORAGE", "s3://replicas/ws"),
            ("SANDBOXD_S3_ENDPOINT", &endpoint),
            ("SANDBOXD_S3_REGION", "us-east-1"),
            ("SANDBOXD_S3_ACCESS_KEY_ID", "test-key"),
            ("SANDBOXD_S3_SECRET_ACCESS_KEY", "test-secret"),
        ])
        .await?;
        cluster._s3 = Some(s3);
        Ok(cluster)
    }

    /// A data dir for a replica of its own.
    fn data_dir(&mut self) -> anyhow::Result<std::path::PathBuf> {
        let dir = tempfile::Builder::new().prefix("sandboxd-replica-").tempdir_in("/tmp")?;
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        Ok(path)
    }

    fn start(&self, data_dir: &std::path::Path) -> anyhow::Result<Daemon> {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Daemon::start(data_dir, &env)
    }

    /// Two replicas started at once.
    fn start_two(&mut self) -> anyhow::Result<(Daemon, Daemon)> {
        let (a_dir, b_dir) = (self.data_dir()?, self.data_dir()?);
        let env: Vec<(String, String)> = self.env.clone();
        let started = std::thread::scope(|scope| {
            let a = scope.spawn(|| start_with(&a_dir, &env));
            let b = scope.spawn(|| start_with(&b_dir, &env));
            (a.join(), b.join())
        });
        match started {
            (Ok(a), Ok(b)) => Ok((a?, b?)),
            _ => anyhow::bail!("a replica's start panicked"),
        }
    }
}

impl Drop for Cluster {
    /// The replicas are gone by now (a test's daemons are dropped before its cluster); one
    /// killed and never started again left its volumes mounted, as a crash does.
    fn drop(&mut self) {
        for dir in &self.dirs {
            sandbox_test_support::unmount_under(dir.path());
        }
    }
}

fn start_with(data_dir: &std::path::Path, env: &[(String, String)]) -> anyhow::Result<Daemon> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start(data_dir, &env)
}

async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    while !cond().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The id a replica gives itself in `/v1/replicas`.
async fn id_of(c: &Client) -> anyhow::Result<String> {
    let replicas = c.replicas().await?;
    Ok(replicas.into_iter().find(|r| r.this).map(|r| r.id).unwrap_or_default())
}

async fn python(c: &Client, session: &str, code: &str) -> anyhow::Result<sandbox_api::Execution> {
    Ok(c.execute(session, &CreateExecution::new(Language::Python, code)).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_started_at_once_on_an_empty_database_migrate_once_and_see_each_other() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    for c in [&ca, &cb] {
        let (status, r) = c.readiness().await?;
        assert!(status.is_success() && r.ready && r.replica.ok, "{r:?}");
        assert!(
            r.storage.message.contains("other replicas do not see"),
            "local storage is named: {}",
            r.storage.message
        );
    }
    let listed = ca.replicas().await?;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|r| r.alive && r.adopted_by.is_none() && r.version == env!("CARGO_PKG_VERSION")));
    assert_eq!(listed.iter().filter(|r| r.this).count(), 1);
    let (ida, idb) = (id_of(&ca).await?, id_of(&cb).await?);
    assert_ne!(ida, idb);
    assert!(listed.iter().any(|r| r.id == idb && r.address == b.url), "B advertises where it listens: {listed:?}");
    // Each migration step ran once.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&cluster.db.url).await?;
    let steps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_version").fetch_one(&pool).await?;
    let distinct: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT version) FROM schema_version").fetch_one(&pool).await?;
    assert_eq!((steps, distinct), (sandbox_store::SCHEMA_VERSIONS.1 as i64, sandbox_store::SCHEMA_VERSIONS.1 as i64));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_adopted_once_and_its_session_resumes_on_another_with_every_file() -> anyhow::Result<()> {
    let mut cluster = Cluster::with_s3().await?;
    let (mut a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    let (ida, idb) = (id_of(&ca).await?, id_of(&cb).await?);
    let s = ca.create_session(&CreateSession::default()).await?;
    assert_eq!(s.replica.as_deref(), Some(ida.as_str()), "it runs where it was made");
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    ca.upload(&s.id, "in/data.bin", data.clone(), None).await?;
    let wrote = python(&ca, &s.id, "open('made.txt', 'w').write('written by code on A')").await?;
    assert_eq!(wrote.status, ExecutionStatus::Succeeded, "{wrote:?}");
    // In flight when A dies.
    let cut = CreateExecution {
        execution_id: Some("cut-off".into()),
        ..CreateExecution::new(Language::Python, "import time; time.sleep(60)")
    };
    let (c1, sid) = (ca.clone(), s.id.clone());
    let in_flight = tokio::spawn(async move { c1.execute(&sid, &cut).await });
    sandbox_test_support::until_running(&ca, "cut-off").await?;

    a.signal(9)?;
    a.wait_exit(Duration::from_secs(5))?;
    let _ = in_flight.await;
    eventually("B to adopt A", Duration::from_secs(15), || async {
        let listed = cb.replicas().await?;
        Ok(listed.iter().any(|r| r.id == ida && r.adopted_by.as_deref() == Some(idb.as_str()) && !r.alive))
    })
    .await?;
    let stopped = cb.get_session(&s.id).await?;
    assert_eq!((stopped.status, stopped.stop_reason.as_deref()), (SessionStatus::Stopped, Some("replica_lost")));
    assert_eq!(stopped.replica, None, "a stopped session belongs to no replica");
    let cut = cb.get_execution("cut-off").await?;
    assert_eq!(cut.status, ExecutionStatus::Interrupted, "{cut:?}");

    // It resumes on B, with every file byte for byte.
    let back = python(&cb, &s.id, "print(open('made.txt').read(), len(open('in/data.bin', 'rb').read()))").await?;
    assert_eq!(back.stdout, format!("written by code on A {}\n", data.len()), "{back:?}");
    assert_eq!(cb.get_session(&s.id).await?.replica.as_deref(), Some(idb.as_str()));
    assert_eq!(cb.read_file(&s.id, "in/data.bin").await?, data);
    let adoptions = b.log.lock().map(|l| l.iter().filter(|l| l.contains("adopted a replica")).count()).unwrap_or(0);
    assert_eq!(adoptions, 1, "adopted once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_stopped_by_its_owner_alone() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let ca = a.client();
    let s = ca.create_session(&CreateSession { idle_timeout_s: Some(2), ..Default::default() }).await?;
    // In use on A for longer than its idle timeout: B, which sweeps every 0.3 s too, must not
    // take it for idle (B has never seen it used).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert_eq!(python(&ca, &s.id, "1").await?.status, ExecutionStatus::Succeeded);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ca.get_session(&s.id).await?.status, SessionStatus::Running, "in use: not stopped");
    eventually("A to stop the idle session", Duration::from_secs(10), || async {
        Ok(ca.get_session(&s.id).await?.status == SessionStatus::Stopped)
    })
    .await?;
    assert_eq!(ca.get_session(&s.id).await?.stop_reason.as_deref(), Some("idle"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stops = |d: &Daemon| -> usize {
        let lines = d.log.lock().map(|l| l.clone()).unwrap_or_default();
        lines.iter().filter(|l| l.contains("session stopped") && l.contains(&s.id)).count()
    };
    assert_eq!((stops(&a), stops(&b)), (1, 0), "stopped once, by its owner");
    Ok(())
}

/// A tenant's limits hold across replicas: its running sessions, and the bytes of its
/// workspaces, wherever each is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_limit_on_one_replica_is_refused_on_the_other() -> anyhow::Result<()> {
    let mut cluster =
        Cluster::new(&[("SANDBOXD_TENANT_MAX_SESSIONS", "2"), ("SANDBOXD_TENANT_MAX_WORKSPACE_MB", "1")]).await?;
    let (a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    let on_a = ca.create_session(&CreateSession::default()).await?;
    let on_b = cb.create_session(&CreateSession::default()).await?;
    let refused = |what: &str, got: Result<_, ClientError>, status: u16, flag: &str| match got {
        Err(ClientError::Api { status: s, message, .. }) if s.as_u16() == status && message.contains(flag) => Ok(()),
        other => Err(anyhow::anyhow!("{what}: expected {status} naming {flag}, got {other:?}")),
    };
    refused(
        "a third session, on A",
        ca.create_session(&CreateSession::default()).await.map(drop),
        429,
        "--tenant-max-sessions 2",
    )?;

    // 600 KiB in the workspace on A; 600 KiB more on B is past the tenant's MiB.
    ca.upload(&on_a.id, "a.bin", vec![1u8; 600 << 10], None).await?;
    refused(
        "an upload on B",
        cb.upload(&on_b.id, "b.bin", vec![2u8; 600 << 10], None).await.map(drop),
        507,
        "--tenant-max-workspace-mb 1",
    )?;
    // Bytes code writes count too, once the execution ends.
    python(&cb, &on_b.id, "open('c.bin', 'wb').write(bytes(300 << 10))").await?;
    eventually("B's bytes to count on A", Duration::from_secs(10), || async {
        Ok(ca.upload(&on_a.id, "d.bin", vec![3u8; 200 << 10], None).await.is_err())
    })
    .await?;
    // Room again once B's file is gone.
    python(&cb, &on_b.id, "import os; os.remove('c.bin')").await?;
    eventually("B's freed bytes to count on A", Duration::from_secs(10), || async {
        Ok(ca.upload(&on_a.id, "d.bin", vec![3u8; 200 << 10], None).await.is_ok())
    })
    .await?;
    Ok(())
}

/// A template's environment is built once, by one replica, and every replica's sandboxes use
/// it: built by the replica that takes the build over when its creator dies mid-build, fetched
/// from storage by the others (pools included), and gone from all of them with the template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_is_built_once_and_its_environment_reaches_every_replica() -> anyhow::Result<()> {
    let mut cluster = Cluster::with_s3().await?;
    let (a_dir, b_dir) = (cluster.data_dir()?, cluster.data_dir()?);
    let (mut a, b) = (cluster.start(&a_dir)?, cluster.start(&b_dir)?);
    let (ca, cb) = (a.client(), b.client());
    let (ida, idb) = (id_of(&ca).await?, id_of(&cb).await?);
    let req = sandbox_api::CreateTemplate {
        name: "writer".into(),
        packages: Some(vec!["tomli-w".into()]),
        pool_size: Some(1),
        ..Default::default()
    };
    assert_eq!(ca.create_template(&req).await?.status, sandbox_api::TemplateStatus::Building);
    // A dies while it builds: B takes the build over once A's lease lapses.
    a.signal(9)?;
    a.wait_exit(Duration::from_secs(5))?;
    drop(a);
    let built = cb.wait_template("writer", Duration::from_secs(240)).await?;
    assert_eq!(built.status, sandbox_api::TemplateStatus::Ready, "{built:?}");
    assert_eq!(environments(&b, &idb).await?, (1, 0), "B built it");
    let probe = "import tomli_w; print(tomli_w.__file__)";
    let on_b = cb.create_session(&CreateSession { template: Some("writer".into()), ..Default::default() }).await?;
    let e = python(&cb, &on_b.id, probe).await?;
    assert!(e.stdout.starts_with("/opt/sandbox/template/"), "{e:?}");

    // A comes back: it builds nothing, fetches B's build, and fills its pool with it.
    let a = cluster.start(&a_dir)?;
    let ca = a.client();
    eventually("A's pool of the template", Duration::from_secs(60), || async {
        let text = reqwest::get(format!("{}/metrics", a.url)).await?.text().await?;
        let series = format!("sandboxd_pooled_sandboxes{{pool=\"session\",template=\"writer\",replica=\"{ida}\"}}");
        Ok(sandbox_test_support::metric_value(&text, &series) == Some(1))
    })
    .await?;
    assert_eq!(environments(&a, &ida).await?, (0, 1), "A fetched it");
    let on_a = ca.create_session(&CreateSession { template: Some("writer".into()), ..Default::default() }).await?;
    assert_eq!(on_a.replica.as_deref(), Some(ida.as_str()));
    let e = python(&ca, &on_a.id, probe).await?;
    assert!(e.stdout.starts_with("/opt/sandbox/template/"), "{e:?}");

    // Deleted through A: B lets its copy and its pool go.
    ca.delete_session(&on_a.id).await?;
    cb.delete_session(&on_b.id).await?;
    ca.delete_template("writer").await?;
    let b_copy = b_dir.join("system/templates/writer");
    eventually("B to let its copy go", Duration::from_secs(15), || async { Ok(!b_copy.exists()) }).await?;
    assert!(!a_dir.join("system/templates/writer").exists());
    Ok(())
}

/// The template environments a replica built and fetched, from its `/metrics`.
async fn environments(d: &Daemon, id: &str) -> anyhow::Result<(u64, u64)> {
    let text = reqwest::get(format!("{}/metrics", d.url)).await?.text().await?;
    let count = |how: &str| {
        let series = format!("sandboxd_template_environments_total{{how=\"{how}\",replica=\"{id}\"}}");
        sandbox_test_support::metric_value(&text, &series).unwrap_or(0)
    };
    Ok((count("built"), count("fetched")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_one_replica_leaves_the_others_sessions_running() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a_dir, b_dir) = (cluster.data_dir()?, cluster.data_dir()?);
    let (mut a, b) = (cluster.start(&a_dir)?, cluster.start(&b_dir)?);
    let (ca, cb) = (a.client(), b.client());
    let on_a = ca.create_session(&CreateSession::default()).await?;
    let on_b = cb.create_session(&CreateSession::default()).await?;
    python(&cb, &on_b.id, "x = 41").await?;

    a.signal(9)?;
    a.wait_exit(Duration::from_secs(5))?;
    drop(a);
    let a = cluster.start(&a_dir)?;
    let ca = a.client();
    let a_again = ca.get_session(&on_a.id).await?;
    // Stopped by A's own recovery, or by B if B saw A's lease lapse first.
    assert_eq!(a_again.status, SessionStatus::Stopped);
    assert!(matches!(a_again.stop_reason.as_deref(), Some("server_restart" | "replica_lost")), "{a_again:?}");
    let b_kept = cb.get_session(&on_b.id).await?;
    assert_eq!((b_kept.status, b_kept.replica), (SessionStatus::Running, Some(id_of(&cb).await?)));
    let e = python(&cb, &on_b.id, "print(x + 1)").await?;
    assert_eq!(e.stdout, "42\n", "B's kernel kept its state: {e:?}");
    Ok(())
}

/// Every request for a session, through a replica that does not run it, reaches the one that
/// does: JSON, a Server-Sent Events stream, an upload and a download of several MiB, a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_session_reach_it_through_any_replica() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    let ida = id_of(&ca).await?;
    let s = ca.create_session(&CreateSession::default()).await?;
    assert_eq!(python(&ca, &s.id, "x = 20").await?.status, ExecutionStatus::Succeeded);
    // Through B: the kernel is A's.
    let e = python(&cb, &s.id, "import os; print(x + 22, os.getpid() > 0)").await?;
    assert_eq!(e.stdout, "42 True\n", "{e:?}");
    assert_eq!(cb.get_session(&s.id).await?.replica.as_deref(), Some(ida.as_str()), "it stays on A");
    // A stream through B arrives as it is made.
    let mut outputs = Vec::new();
    let code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)";
    let streamed = cb
        .execute_stream(&s.id, &CreateExecution::new(Language::Python, code), |event, data| {
            outputs.push(format!("{event}: {data}"))
        })
        .await?;
    assert_eq!(streamed.stdout, "0\n1\n2\n", "{streamed:?}");
    assert!(outputs.len() >= 3, "the outputs came as events: {outputs:?}");
    // Files both ways through B, several MiB.
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    cb.upload(&s.id, "big/data.bin", data.clone(), None).await?;
    assert_eq!(ca.read_file(&s.id, "big/data.bin").await?, data, "it landed on A");
    assert_eq!(cb.read_file(&s.id, "big/data.bin").await?, data, "and reads back through B");
    let seen = python(&ca, &s.id, "print(len(open('big/data.bin', 'rb').read()))").await?;
    assert_eq!(seen.stdout, format!("{}\n", data.len()));
    // A request that claims to come from a replica without the replicas' secret is refused.
    let forged = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{}", b.url, s.id))
        .header("x-sandboxd-replica-secret", "guessed")
        .header("x-sandboxd-caller", "open")
        .send()
        .await?;
    assert_eq!(forged.status().as_u16(), 401);
    // Deleted through B: A's sandbox goes.
    cb.delete_session(&s.id).await?;
    assert_eq!(ca.get_session(&s.id).await?.status, SessionStatus::Deleted);
    let a_dir = cluster.dirs[0].path().to_string_lossy().to_string();
    eventually("A's sandbox to go", Duration::from_secs(10), || async {
        Ok(sandbox_test_support::processes_mentioning(&a_dir) == 0)
    })
    .await?;
    Ok(())
}

/// The E2B door through the replica that does not run the sandbox: the control API, and the
/// code interpreter with the session's access token (one replica's token opens it on another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_e2b_door_reaches_a_sandbox_through_any_replica() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let s = a.client().create_session(&CreateSession::default()).await?;
    assert_eq!(python(&a.client(), &s.id, "x = 6 * 7").await?.status, ExecutionStatus::Succeeded);
    let http = reqwest::Client::new();
    let detail: serde_json::Value =
        http.get(format!("{}/e2b/sandboxes/{}", b.url, s.id)).send().await?.error_for_status()?.json().await?;
    let token = detail["envdAccessToken"].as_str().unwrap_or_default().to_string();
    assert!(!token.is_empty(), "{detail}");
    let ran = http
        .post(format!("{}/e2b/sandbox/execute", b.url))
        .header("e2b-sandbox-id", &s.id)
        .header("x-access-token", &token)
        .json(&serde_json::json!({"code": "print(x)"}))
        .send()
        .await?;
    assert!(ran.status().is_success(), "{}", ran.status());
    let lines = ran.text().await?;
    assert!(lines.contains("42"), "A's kernel answered through B: {lines}");
    let refreshed = http
        .post(format!("{}/e2b/sandboxes/{}/timeout", b.url, s.id))
        .json(&serde_json::json!({"timeout": 600}))
        .send()
        .await?;
    assert!(refreshed.status().is_success(), "the control API through B: {}", refreshed.status());
    let wrong = http
        .post(format!("{}/e2b/sandbox/execute", b.url))
        .header("e2b-sandbox-id", &s.id)
        .header("x-access-token", "not-the-token")
        .json(&serde_json::json!({"code": "print(1)"}))
        .send()
        .await?;
    assert_eq!(wrong.status().as_u16(), 404, "a wrong token opens nothing, on any replica");
    Ok(())
}

/// The same execution id posted through both replicas at once runs once, and both callers
/// get its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_id_through_both_replicas_at_once_runs_once() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    let s = ca.create_session(&CreateSession::default()).await?;
    python(&ca, &s.id, "runs = 0").await?;
    let req = CreateExecution {
        execution_id: Some("once".into()),
        ..CreateExecution::new(Language::Python, "import time; time.sleep(0.5); runs += 1; print(runs)")
    };
    let (ra, rb) = tokio::join!(ca.execute(&s.id, &req), cb.execute(&s.id, &req));
    let (ra, rb) = (ra?, rb?);
    assert_eq!((ra.id.as_str(), rb.id.as_str()), ("once", "once"));
    assert_eq!((ra.stdout.as_str(), rb.stdout.as_str()), ("1\n", "1\n"), "{ra:?} {rb:?}");
    assert_eq!(python(&ca, &s.id, "print(runs)").await?.stdout, "1\n", "it ran once");
    Ok(())
}

/// The count of one idle-sweep action in a replica's `/metrics`.
async fn swept(d: &Daemon, action: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", d.url)).await?.text().await?;
    let id = d.client().replicas().await?.into_iter().find(|r| r.this).map(|r| r.id).unwrap_or_default();
    let series = format!("sandboxd_sweep_actions_total{{action=\"{action}\",replica=\"{id}\"}}");
    Ok(sandbox_test_support::metric_value(&text, &series).unwrap_or(0))
}

/// What the replicas share is done once: a workspace whose retention is over is removed by one
/// replica (and the replica that held it lets its copy go), old executions are pruned by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_pruning_are_done_once() -> anyhow::Result<()> {
    let mut cluster =
        Cluster::new(&[("SANDBOXD_RETENTION_S", "1"), ("SANDBOXD_MAX_EXECUTIONS_PER_SESSION", "2")]).await?;
    let (a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    let kept = ca.create_session(&CreateSession::default()).await?;
    // Executions over several sweeps, so that pruning happens in several of them: a replica
    // that is not the one to prune would have its turns.
    for i in 0..8 {
        python(&ca, &kept.id, &format!("print({i})")).await?;
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let gone = cb.create_session(&CreateSession::default()).await?;
    cb.upload(&gone.id, "f.txt", b"retained a while".to_vec(), None).await?;
    cb.delete_session(&gone.id).await?;
    let b_dir = cluster.dirs[1].path().join("workspaces").join(&gone.id);
    eventually("the workspace's retention to end", Duration::from_secs(15), || async {
        Ok(cb.get_session(&gone.id).await?.workspace_removed_at.is_some() && !b_dir.exists())
    })
    .await?;
    eventually("the executions to be pruned", Duration::from_secs(10), || async {
        Ok(ca.list_executions(&kept.id).await?.executions.len() == 2)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The live replica of the lowest id does it all; the other none of it.
    let (leader, other) = if id_of(&ca).await? < id_of(&cb).await? { (&a, &b) } else { (&b, &a) };
    for (action, done) in [("workspace_removed", 1), ("execution_pruned", 6)] {
        assert_eq!((swept(leader, action).await?, swept(other, action).await?), (done, 0), "{action}");
    }
    Ok(())
}

/// A replica that stalls past its lease (SIGSTOP) finds, when it runs again, that another
/// adopted its work: it destroys the sandboxes the database no longer calls its own, says so
/// in its log, registers again, and the session resumes when next used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_replica_lets_go_of_what_was_adopted() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let (ca, cb) = (a.client(), b.client());
    let (ida, idb) = (id_of(&ca).await?, id_of(&cb).await?);
    let s = ca.create_session(&CreateSession::default()).await?;
    python(&ca, &s.id, "x = 1").await?;
    let a_dir = cluster.dirs[0].path().to_string_lossy().to_string();
    assert!(sandbox_test_support::processes_mentioning(&a_dir) > 0, "A runs the sandbox");

    a.signal(19)?; // SIGSTOP: A's heartbeats stop, its sandbox stays
    eventually("B to adopt A", Duration::from_secs(15), || async {
        Ok(cb.replicas().await?.iter().any(|r| r.id == ida && r.adopted_by.as_deref() == Some(idb.as_str())))
    })
    .await?;
    assert_eq!(cb.get_session(&s.id).await?.stop_reason.as_deref(), Some("replica_lost"));
    a.signal(18)?; // SIGCONT
    eventually("A to let its sandbox go", Duration::from_secs(15), || async {
        Ok(sandbox_test_support::processes_mentioning(&a_dir) == 0)
    })
    .await?;
    // Said before the sandboxes went; the log reaches the test through a reader thread.
    eventually("A to say why it destroyed its sandboxes", Duration::from_secs(5), || async {
        Ok(a.log.lock().map(|l| l.iter().any(|l| l.contains("lease lapsed and another adopted"))).unwrap_or(false))
    })
    .await?;
    eventually("A to hold a lease again", Duration::from_secs(10), || async { Ok(ca.readiness().await?.1.replica.ok) })
        .await?;
    // The session runs again, on whichever replica is asked: a new kernel.
    let e = python(&cb, &s.id, "print('x' in globals())").await?;
    assert_eq!(e.stdout, "False\n", "a new kernel: {e:?}");
    Ok(())
}

/// One JSON-RPC call to `/mcp` at `url` (with `session`, once one was given): the answer's
/// JSON, from a plain body or the event stream, and the MCP session the server named.
async fn mcp_call(
    url: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<(serde_json::Value, Option<String>)> {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = req.send().await?;
    anyhow::ensure!(resp.status().is_success(), "{}: {}", resp.status(), resp.text().await?);
    let named = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = resp.text().await?;
    let json = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim).or(Some(l)))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(serde_json::Value::Null);
    Ok((json, named))
}

/// An MCP tool call on the replica that does not run the session reaches the one that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_tool_call_reaches_the_session_through_any_replica() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    let s = a.client().create_session(&CreateSession::default()).await?;
    python(&a.client(), &s.id, "x = 'made on A'").await?;
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (_, mcp_session) = mcp_call(&b.url, None, init).await?;
    let initialized = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let _ = mcp_call(&b.url, mcp_session.as_deref(), initialized).await;
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "run_code", "arguments": {"session_id": s.id, "code": "print(x)"}}});
    let (answer, _) = mcp_call(&b.url, mcp_session.as_deref(), call).await?;
    let text = answer["result"]["content"].to_string();
    assert!(text.contains("made on A"), "A's kernel answered through B: {answer}");
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    Ok(())
}

/// The official MCP client behind a balancer that sends each request to the other replica in
/// turn (`tests/mcp/alternate.py`): the tools work, and the session's one kernel counts on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_mcp_client_works_with_its_requests_alternating_between_replicas() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let (a, b) = cluster.start_two()?;
    sandbox_test_support::run_check_script("tests/mcp/alternate.py", &[&a.url, &b.url], &[])
}

/// A sandboxd older than its database's schema (a newer one migrated it) refuses to start, and
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_older_than_the_schema_refuses_to_start() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(&[]).await?;
    let dir = cluster.data_dir()?;
    drop(cluster.start(&dir)?); // migrates the database to this build's schema
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&cluster.db.url).await?;
    let newer = sandbox_store::SCHEMA_VERSIONS.1 + 1;
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO schema_version (version) VALUES ({newer})")))
        .execute(&pool)
        .await?;
    let out = std::process::Command::new(sandbox_test_support::binary("sandboxd")?)
        .env("SANDBOXD_LISTEN", "127.0.0.1:0")
        .env("SANDBOXD_DATA_DIR", cluster.data_dir()?)
        .env("SANDBOXD_DATABASE_URL", &cluster.db.url)
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not start: {said}");
    assert!(said.contains(&format!("schema is version {newer}, newer than this sandboxd knows")), "{said}");
    Ok(())
}
