//! The real `sandboxd` binary: flags and environment (S3 storage from the `AWS_*` variables), one
//! log line per request, and a clean shutdown on SIGTERM and SIGINT that takes every sandbox with
//! it.

use std::process::Command;
use std::time::{Duration, Instant};

use sandbox_api::{CreateSession, Language};
use sandbox_test_support::{exec_req, processes_mentioning, Daemon};

struct Started {
    daemon: Daemon,
    data: tempfile::TempDir,
}

/// Starts sandboxd on a free port and a fresh data dir (via the environment variables).
fn start() -> anyhow::Result<Started> {
    let data = tempfile::Builder::new().prefix("sandboxd-bin-").tempdir_in("/tmp")?;
    Ok(Started { daemon: Daemon::start(data.path(), &[])?, data })
}

async fn stop_with(signal: i32) -> anyhow::Result<()> {
    let Started { daemon: mut d, data } = start()?;
    let client = d.client();
    let s = client.create_session(&CreateSession::default()).await?;
    let running = {
        let client = client.clone();
        let id = s.id.clone();
        tokio::spawn(async move { client.execute(&id, &exec_req(Language::Bash, "sleep 60")).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let needle = data.path().to_string_lossy().to_string();
    assert!(processes_mentioning(&needle) >= 1, "the session's sandbox should be running");

    d.signal(signal)?;
    let exit = d.wait_exit(Duration::from_secs(15))?;
    assert!(exit.success(), "sandboxd exited with {exit:?}");
    let _ = running.await;
    // The pid namespace dies with its PID 1; give the kernel a moment to reap.
    let start = Instant::now();
    while processes_mentioning(&needle) > 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_mentioning(&needle), 0, "sandboxes must die with sandboxd");
    let log = d.log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let created: Vec<_> = log.iter().filter(|l| l.contains("uri=/v1/sessions ") && l.contains("status=201")).collect();
    assert_eq!(created.len(), 1, "one log line per request: {log:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_kills_sandboxes() -> anyhow::Result<()> {
    stop_with(libc::SIGTERM).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_and_kills_sandboxes() -> anyhow::Result<()> {
    stop_with(libc::SIGINT).await
}

#[test]
fn help_lists_every_setting() -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_sandboxd")).arg("--help").output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--bwrap",
        "--cgroups",
        "--tenant-max-sessions",
        "SANDBOXD_LISTEN",
        "SANDBOXD_DATA_DIR",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    Ok(())
}

/// S3 storage set up the way operators of AWS tools expect: the bucket in `SANDBOXD_STORAGE`,
/// endpoint, region and keys in the usual `AWS_*` variables, no S3 flag at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage_takes_the_aws_variables() -> anyhow::Result<()> {
    let s3 = sandbox_test_support::S3Server::start().await?;
    s3.create_bucket("from-env").await?;
    let data = tempfile::Builder::new().prefix("sandboxd-env-").tempdir_in("/tmp")?;
    let env = [
        ("SANDBOXD_STORAGE", "s3://from-env/site"),
        ("SANDBOXD_SESSION_POOL", "0"),
        ("SANDBOXD_RUN_POOL", "0"),
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "env-key"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
    ];
    let d = Daemon::start(data.path(), &env)?;
    let ready = reqwest::get(format!("{}/readyz", d.url)).await?.text().await?;
    assert!(ready.contains("s3://from-env/site reachable"), "/readyz: {ready}");

    let c = d.client();
    let s = c.create_session(&CreateSession::default()).await?;
    c.upload(&s.id, "notes.txt", b"kept in the bucket".to_vec(), None).await?;
    let object = s3.object("from-env", &format!("site/workspaces/{}/notes.txt", s.id)).await?;
    assert_eq!(object, b"kept in the bucket");
    Ok(())
}
