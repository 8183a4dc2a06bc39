//! `load`: many sessions at once, with faults, and nothing lost.
//!
//! `sessions` sessions are created at once; each runs `executions` stateful cells (each with a
//! client `execution_id`), and writes and reads back a small file after each. Meanwhile kernels,
//! sandboxes and sandboxd itself are killed (SIGKILL) at random moments; sandboxd is started
//! again on the same data dir and port. Clients retry what failed for want of a server (no
//! answer, 429, 503) with the same execution id, as an agent would.
//!
//! When the dust settles, every submitted execution must have exactly one final record (none
//! left queued or running), and every file the API acknowledged must hold its exact bytes.
//! Everything is bounded in count and time, and talks to 127.0.0.1 only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sandbox_api::{CreateExecution, CreateSession, Execution, ExecutionStatus, Language, LimitsRequest};
use sandbox_client::{Client, ClientError};

/// The longest the whole scenario may take before it gives up.
const TIME_CAP: Duration = Duration::from_secs(15 * 60);
/// sandboxd's log lines, appended across its restarts (warnings and errors only).
const LOG: &str = "/tmp/sandbox-bench-load.log";
/// The longest one request is retried while the server is away or busy.
const RETRY_CAP: Duration = Duration::from_secs(180);

/// sandboxd as a child process on a fixed port, so it can be killed and started again.
struct Daemon {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    fn start(&self) -> anyhow::Result<()> {
        let child = Command::new(&self.bin)
            .env("SANDBOXD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("SANDBOXD_DATA_DIR", &self.data)
            .env("SANDBOXD_LOG", "warn")
            // 200 sessions of 128 MiB on a 24 GiB host: their kernels use ~50 MiB each.
            .env("SANDBOXD_MEMORY_OVERCOMMIT", "4")
            .env("SANDBOXD_DEFAULT_MEMORY_MB", "128")
            .env("SANDBOXD_WORKSPACE_QUOTA_BYTES", (64u64 << 20).to_string())
            .env("SANDBOXD_MAX_QUEUED_STARTS", "1000")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(LOG)?)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(())
    }

    /// SIGKILL: no clean shutdown, as in a crash.
    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&self, client: &Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(client.readiness().await, Ok((s, r)) if s.is_success() && r.ready) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("sandboxd did not become ready within 60 s")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

#[derive(Default)]
struct Tally {
    retries: AtomicUsize,
    refusals: AtomicUsize,
    kernel_kills: AtomicUsize,
    sandbox_kills: AtomicUsize,
    server_kills: AtomicUsize,
}

/// Whether `e` means "try again": no server (killed, restarting), or a bound (429, 503).
fn retryable(e: &ClientError) -> bool {
    match e.status() {
        None => true,
        Some(s) => s.as_u16() == 429 || s.as_u16() == 503,
    }
}

/// Runs `call` until it answers, retrying while the server is away or busy.
async fn with_retry<T, F, Fut>(tally: &Tally, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let start = Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && start.elapsed() < RETRY_CAP => {
                if e.status().is_some() {
                    tally.refusals.fetch_add(1, Ordering::Relaxed);
                }
                tally.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A tiny xorshift: the faults need no more randomness than this.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Pids of host processes whose command line contains `needle`.
fn pids_of(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// What one session did, for the final check.
#[derive(Default)]
struct Ledger {
    /// Execution ids submitted, by session.
    executions: BTreeMap<String, Vec<String>>,
    /// The bytes of each file the API acknowledged last, by session and name.
    files: BTreeMap<(String, String), Vec<u8>>,
    /// How long each execution took to answer (retries included), ms.
    latencies: Vec<f64>,
    statuses: BTreeMap<String, usize>,
    create_ms: Vec<f64>,
}

pub async fn run(bin: &Path, sessions: usize, executions: usize, faults: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let _ = std::fs::remove_file(LOG);
    let data = tempfile::Builder::new().prefix("sandbox-bench-load-").tempdir_in("/tmp")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let daemon =
        Arc::new(Daemon { bin: bin.to_path_buf(), data: data.path().to_path_buf(), port, child: Mutex::new(None) });
    daemon.start()?;
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    daemon.wait_ready(&client).await?;
    println!("load: {sessions} sessions x {executions} stateful executions and files, faults {faults}; sandboxd's log: {LOG}");

    let tally = Arc::new(Tally::default());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let done = Arc::new(AtomicBool::new(false));

    let injector = {
        let (daemon, client, tally, done) =
            (Arc::clone(&daemon), client.clone(), Arc::clone(&tally), Arc::clone(&done));
        tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
            while faults && !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1000 + rng.below(2000) as u64)).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                match rng.below(20) {
                    0..=9 => {
                        let kernels = pids_of("/tmp/.sandbox/kernel.py");
                        if let Some(&pid) = kernels.get(rng.below(kernels.len())) {
                            sigkill(pid);
                            tally.kernel_kills.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    10..=16 => {
                        let sandboxes = pids_of("/.sandbox/executor");
                        if let Some(&pid) = sandboxes.get(rng.below(sandboxes.len())) {
                            sigkill(pid);
                            tally.sandbox_kills.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ if tally.server_kills.load(Ordering::Relaxed) < 3 => {
                        daemon.kill();
                        tally.server_kills.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if daemon.start().is_err() || daemon.wait_ready(&client).await.is_err() {
                            eprintln!("load: sandboxd did not come back");
                            return;
                        }
                    }
                    _ => {}
                }
            }
        })
    };

    let work_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..sessions {
        let (client, tally, ledger) = (client.clone(), Arc::clone(&tally), Arc::clone(&ledger));
        tasks.spawn(async move { one_session(s, executions, &client, &tally, &ledger).await });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tokio::time::timeout(TIME_CAP.saturating_sub(started.elapsed()), tasks.join_next())
        .await
        .context("the load did not finish within its time cap")?
    {
        if let Err(e) = joined.context("session task panicked")? {
            failures.push(e.to_string());
        }
    }
    let work = work_started.elapsed();
    done.store(true, Ordering::SeqCst);
    let _ = injector.await;
    if !failures.is_empty() {
        bail!("{} sessions failed outright, first: {}", failures.len(), failures[0]);
    }

    // The check: after everything, one final record per execution and every file intact.
    daemon.wait_ready(&client).await?;
    let ledger = std::mem::take(&mut *ledger.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut missing, mut duplicated, mut stuck, mut wrong_files) = (0, 0, 0, 0);
    for (session, ids) in &ledger.executions {
        let listed = with_retry(&tally, || client.list_executions(session)).await?.executions;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &listed {
            *seen.entry(e.id.as_str()).or_default() += 1;
            if e.status.is_pending() {
                stuck += 1;
            }
        }
        for id in ids {
            match seen.get(id.as_str()) {
                None => missing += 1,
                Some(1) => {}
                Some(_) => duplicated += 1,
            }
        }
    }
    for ((session, name), bytes) in &ledger.files {
        let got = with_retry(&tally, || client.read_file(session, name)).await?;
        if &got != bytes {
            wrong_files += 1;
        }
    }
    let total: usize = ledger.executions.values().map(Vec::len).sum();
    let lat = crate::stats(ledger.latencies.clone());
    let create = crate::stats(ledger.create_ms.clone());
    println!(
        "load: {total} executions in {:.1} s = {:.1}/s; execution p50 {:.0} ms p99 {:.0} ms; create p50 {:.0} ms p99 {:.0} ms",
        work.as_secs_f64(),
        total as f64 / work.as_secs_f64(),
        lat.p50,
        lat.p99,
        create.p50,
        create.p99
    );
    println!("load: outcomes {:?}", ledger.statuses);
    println!(
        "load: faults: {} kernels, {} sandboxes, {} sandboxd killed; {} retries ({} refusals with 429/503)",
        tally.kernel_kills.load(Ordering::Relaxed),
        tally.sandbox_kills.load(Ordering::Relaxed),
        tally.server_kills.load(Ordering::Relaxed),
        tally.retries.load(Ordering::Relaxed),
        tally.refusals.load(Ordering::Relaxed)
    );
    println!(
        "load: check: {missing} executions without a record, {duplicated} with two, {stuck} stuck, {wrong_files} of {} files wrong",
        ledger.files.len()
    );
    if missing + duplicated + stuck + wrong_files > 0 {
        bail!("something was lost");
    }
    println!("load: nothing lost");
    Ok(())
}

async fn one_session(
    s: usize,
    executions: usize,
    client: &Client,
    tally: &Tally,
    ledger: &Mutex<Ledger>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let req = CreateSession {
        limits: Some(LimitsRequest { memory_mb: Some(128), ..Default::default() }),
        ..Default::default()
    };
    let session = with_retry(tally, || client.create_session(&req)).await?;
    let id = session.id.clone();
    {
        let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.create_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        l.executions.insert(id.clone(), Vec::new());
    }
    for i in 0..executions {
        let exec_id = format!("exe_load-{s}-{i}");
        let code = if i == 0 { "n = 0".to_string() } else { "n = globals().get('n', 0) + 1\nprint(n)".to_string() };
        let req = CreateExecution {
            execution_id: Some(exec_id.clone()),
            timeout_s: Some(60.0),
            ..CreateExecution::new(Language::Python, &code)
        };
        ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .executions
            .entry(id.clone())
            .or_default()
            .push(exec_id.clone());
        let t = Instant::now();
        let mut e: Execution = with_retry(tally, || client.execute(&id, &req)).await?;
        // A repeat that joined the first submission while it was still queued answers the same.
        while e.status.is_pending() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            e = with_retry(tally, || client.get_execution(&exec_id)).await?;
        }
        {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            *l.statuses.entry(status_name(e.status)).or_default() += 1;
        }
        let name = format!("f{}.txt", i % 5);
        let bytes = format!("{s}:{i}:{}", "x".repeat(i * 7)).into_bytes();
        with_retry(tally, || client.upload(&id, &name, bytes.clone(), Some(bytes.len() as u64))).await?;
        ledger.lock().unwrap_or_else(|p| p.into_inner()).files.insert((id.clone(), name.clone()), bytes.clone());
        let back = with_retry(tally, || client.read_file(&id, &name)).await?;
        if back != bytes {
            bail!("session {id}: {name} read back {} bytes, wrote {}", back.len(), bytes.len());
        }
    }
    Ok(())
}

fn status_name(s: ExecutionStatus) -> String {
    s.as_str().to_string()
}
