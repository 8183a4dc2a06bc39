//! Limits: timeout, memory, pids, output size. Each must end the execution cleanly, leave
//! nothing running, and leave the server and the session usable.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language, LimitsRequest};
use sandbox_test_support::TestServer;

/// A one-shot process (not the session kernel) with a timeout.
fn req(language: Language, code: &str, timeout_s: f64) -> CreateExecution {
    CreateExecution { timeout_s: Some(timeout_s), fresh: Some(true), ..CreateExecution::new(language, code) }
}

/// Every process in the session's sandbox but the executor and the one listing them.
async fn other_processes(t: &TestServer, session: &str) -> anyhow::Result<Vec<String>> {
    let code = "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) not in (1, os.getpid()):\n        print(open(f'/proc/{p}/cmdline').read().replace('\\0', ' '))";
    let e = t.exec(session, Language::Python, code).await?;
    anyhow::ensure!(e.status == ExecutionStatus::Succeeded, "{e:?}");
    Ok(e.stdout.lines().map(String::from).collect())
}

async fn limited_session(t: &TestServer, memory_mb: u64, pids: u32) -> anyhow::Result<String> {
    let limits = LimitsRequest { memory_mb: Some(memory_mb), pids: Some(pids), cpu: None };
    Ok(t.client.create_session(&CreateSession { limits: Some(limits), ..Default::default() }).await?.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_tree_within_two_seconds() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let started = Instant::now();
    let e = t.client.execute(&s.id, &req(Language::Python, "while True: pass", 1.0)).await?;
    let took = started.elapsed();
    assert_eq!((e.status, e.reason), (ExecutionStatus::TimedOut, Some(sandbox_api::ExecutionReason::Timeout)));
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Children, grandchildren and a child that left the session with setsid all go too.
    let code = "sleep 301 & (sleep 302 &) ; setsid sleep 303 & python3 -c 'while True: pass'";
    let e = t.client.execute(&s.id, &req(Language::Bash, code, 1.0)).await?;
    assert_eq!(e.status, ExecutionStatus::TimedOut);
    assert_eq!(other_processes(&t, &s.id).await?, Vec::<String>::new());
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_end_with_their_execution() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let started = Instant::now();
    let e = t.exec(&s.id, Language::Bash, "sleep 100 & nohup sleep 101 >/dev/null 2>&1 & echo started").await?;
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "started\n"));
    assert!(started.elapsed() < Duration::from_secs(5), "a background child must not hold the answer");
    assert_eq!(other_processes(&t, &s.id).await?, Vec::<String>::new());
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_killed_for_memory_and_the_session_goes_on() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = limited_session(&t, 128, 64).await?;
    let code = "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))";
    let e = t.client.execute(&s, &req(Language::Python, code, 20.0)).await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::Killed, Some(sandbox_api::ExecutionReason::Memory)), "{e:?}");
    let e = t.exec(&s, Language::Python, "print('still here')").await?;
    assert_eq!(e.stdout, "still here\n");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bombs_are_contained_and_the_server_stays_healthy() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = limited_session(&t, 256, 32).await?;
    let python_bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
    let e = t.client.execute(&s, &req(Language::Python, python_bomb, 2.0)).await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::Killed, Some(sandbox_api::ExecutionReason::Pids)), "{e:?}");
    let (status, _) = t.client.raw(reqwest::Method::GET, "/healthz", None).await?;
    assert_eq!(status, 200);

    // The classic: its first process exits at once and its children keep forking.
    let e = t.client.execute(&s, &req(Language::Bash, ":(){ :|:& };:", 5.0)).await?;
    assert!(e.status != ExecutionStatus::Running, "{e:?}");
    assert_eq!(other_processes(&t, &s).await?, Vec::<String>::new());
    let other = t.session().await?;
    assert_eq!(t.exec(&other.id, Language::Bash, "echo fine").await?.stdout, "fine\n");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_of_output_are_truncated_and_flagged() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let code = "import sys\nsys.stdout.write('a' * 10_000_000)\nsys.stderr.write('small')";
    let e = t.exec(&s.id, Language::Python, code).await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert!(e.stdout_truncated && !e.stderr_truncated);
    assert_eq!(e.stdout.len(), 1 << 20);
    assert_eq!(e.stderr, "small");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_reaps_orphans_like_an_init() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // The subshell exits at once, so its children are re-parented to PID 1 and die there.
    let code =
        "for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 0.6; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l";
    let e = t.exec(&s.id, Language::Bash, code).await?;
    assert_eq!(e.stdout, "0\n", "zombies left unreaped: {e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_limit_caps_cpu_time() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let limits = LimitsRequest { memory_mb: None, pids: None, cpu: Some(0.25) };
    let s = t.client.create_session(&CreateSession { limits: Some(limits), ..Default::default() }).await?;
    let code = "import os, time\nstart = time.time()\nwhile time.time() - start < 2: pass\nc = os.times()\nprint(round((c.user + c.system) / 2, 2))";
    let e = t.client.execute(&s.id, &req(Language::Python, code, 20.0)).await?;
    let share: f64 = e.stdout.trim().parse().map_err(|err| anyhow::anyhow!("{err}: {e:?}"))?;
    // At most a quarter of a core, give or take scheduling granularity (unlimited would be
    // ~1.0). The lower bound only rejects a broken measurement: a loaded CI may give less.
    assert!((0.02..=0.40).contains(&share), "CPU share {share} with a 0.25 limit");
    t.shutdown().await;
    Ok(())
}

/// A process ended by a signal says which, typed: `reason: "signal"` and `signal: 9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_named_with_its_number() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let e = t.exec(&s.id, Language::Bash, "kill -9 $$").await?;
    assert_eq!(
        (e.status, e.reason, e.signal, e.exit_code),
        (ExecutionStatus::Failed, Some(sandbox_api::ExecutionReason::Signal), Some(9), None),
        "{e:?}"
    );
    let stored = t.client.get_execution(&e.id).await?;
    assert_eq!((stored.reason, stored.signal), (e.reason, e.signal), "the store keeps both");
    t.shutdown().await;
    Ok(())
}
