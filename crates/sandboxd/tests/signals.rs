//! The real `sandboxd` binary: flags and environment, one log line per request, and a clean
//! shutdown on SIGTERM and SIGINT that takes every sandbox with it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox_api::{CreateSession, Language};
use sandbox_client::Client;
use sandbox_test_support::exec_req;

struct Daemon {
    child: Child,
    url: String,
    data: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

/// Starts sandboxd on a free port (via the environment variables) and waits for its banner.
fn start() -> anyhow::Result<Daemon> {
    let data = tempfile::Builder::new().prefix("sandboxd-bin-").tempdir_in("/tmp")?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandboxd"))
        .env("SANDBOXD_LISTEN", "127.0.0.1:0")
        .env("SANDBOXD_DATA_DIR", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().map(|mut l| l.push(line)).ok();
        }
    });
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().ok_or_else(|| anyhow::anyhow!("sandboxd exited before listening"))??;
        if let Some(url) = line.strip_prefix("sandboxd listening on ") {
            break url.to_string();
        }
    };
    // Keep draining the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Daemon { child, url, data, log })
}

/// Host processes whose command line mentions `needle` (bwrap names the workspace path).
fn processes_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                })
                .count()
        })
        .unwrap_or(0)
}

fn wait_exit(child: &mut Child, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        anyhow::ensure!(start.elapsed() < limit, "sandboxd did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn stop_with(signal: i32) -> anyhow::Result<()> {
    let mut d = start()?;
    let client = Client::new(&d.url);
    let s = client.create_session(&CreateSession::default()).await?;
    let running = {
        let client = client.clone();
        let id = s.id.clone();
        tokio::spawn(async move { client.execute(&id, &exec_req(Language::Bash, "sleep 60")).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let needle = d.data.path().to_string_lossy().to_string();
    assert!(processes_mentioning(&needle) >= 1, "the session's sandbox should be running");

    let pid = i32::try_from(d.child.id())?;
    // std has no kill(); the kill command does the same without unsafe code here.
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    assert!(status.success());
    let exit = wait_exit(&mut d.child, Duration::from_secs(15))?;
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
    for flag in ["--listen", "--data-dir", "--bwrap", "--cgroups", "SANDBOXD_LISTEN", "SANDBOXD_DATA_DIR"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    Ok(())
}
