//! Executions in each language, state in files (not variables), stdin, env and the records.

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language, RunRequest};
use sandbox_test_support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_language_prints() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    for (lang, code, want) in [
        (Language::Python, "print(6 * 7)", "42\n"),
        (Language::Node, "console.log([1, 2, 3].map(x => x * 2).join(','))", "2,4,6\n"),
        (Language::Bash, "for i in 1 2; do echo \"n=$i\"; done", "n=1\nn=2\n"),
    ] {
        let e = t.exec(&s.id, lang, code).await?;
        assert_eq!(
            (e.status, e.exit_code, e.stdout.as_str()),
            (ExecutionStatus::Succeeded, Some(0), want),
            "{lang:?}: {e:?}"
        );
        assert!(e.duration_ms.is_some() && e.finished_at.is_some());
    }
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_carry_exit_code_and_stderr() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let e = t.exec(&s.id, Language::Bash, "echo oops >&2; exit 3").await?;
    assert_eq!((e.status, e.exit_code, e.stderr.as_str()), (ExecutionStatus::Failed, Some(3), "oops\n"));
    let e = t.exec(&s.id, Language::Python, "1/0").await?;
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert!(e.stderr.contains("ZeroDivisionError"), "{}", e.stderr);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_kernel_files_persist_between_executions_but_variables_do_not() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.client.create_session(&CreateSession { kernel: Some("none".into()), ..Default::default() }).await?;
    assert_eq!(s.kernel, None);
    let e = t
        .exec(
            &s.id,
            Language::Python,
            "x = 41\nopen('notes.txt', 'w').write('kept')\nopen('helper.py', 'w').write('def f(): return 42')",
        )
        .await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    let e = t.exec(&s.id, Language::Bash, "cat notes.txt; pwd").await?;
    assert_eq!(e.stdout, "kept/workspace\n");
    // Workspace modules import as in a notebook's working directory.
    let e = t.exec(&s.id, Language::Python, "import helper; print(helper.f())").await?;
    assert_eq!(e.stdout, "42\n", "{e:?}");
    let e = t.exec(&s.id, Language::Python, "print(x)").await?;
    assert!(e.stderr.contains("NameError"), "variables must not survive a one-shot run: {e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_env_and_large_code() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t
        .client
        .create_session(&CreateSession {
            env: Some([("GREETING".to_string(), "hi".to_string()), ("WHO".to_string(), "session".to_string())].into()),
            ..Default::default()
        })
        .await?;
    let req = CreateExecution {
        stdin: Some("from stdin".into()),
        env: Some([("WHO".to_string(), "execution".to_string())].into()),
        fresh: Some(true),
        ..CreateExecution::new(
            Language::Python,
            "import os, sys; print(os.environ['GREETING'], os.environ['WHO'], sys.stdin.read().upper())",
        )
    };
    let e = t.client.execute(&s.id, &req).await?;
    assert_eq!(e.stdout, "hi execution FROM STDIN\n", "{e:?}");

    // Above the 128 KiB argument limit: goes through a file, same semantics as -c.
    let code = format!("data = '{}'\nprint(len(data), __name__)\n", "x".repeat(300 * 1024));
    let e = t.exec(&s.id, Language::Python, &code).await?;
    assert_eq!(e.stdout, format!("{} __main__\n", 300 * 1024), "{e:?}");
    let e = t.exec(&s.id, Language::Bash, &format!("# {}\necho big bash", "y".repeat(200 * 1024))).await?;
    assert_eq!(e.stdout, "big bash\n");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_stored_and_listed() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let a = t.exec(&s.id, Language::Bash, "echo a").await?;
    let b = t.exec(&s.id, Language::Bash, "echo b").await?;
    let list = t.client.list_executions(&s.id).await?;
    let ids: Vec<_> = list.executions.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec![a.id.as_str(), b.id.as_str()]);
    assert_eq!(t.client.get_execution(&b.id).await?, b);
    assert_eq!(t.client.list_sessions().await?.sessions.len(), 1);
    t.shutdown().await;
    Ok(())
}

fn run_req(code: &str) -> RunRequest {
    RunRequest { timeout_s: Some(10.0), ..RunRequest::new(Language::Bash, code) }
}

/// Names of the throwaway workspaces on disk.
fn run_workspaces(t: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.data_dir().join("workspaces"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("run-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_run_uses_a_throwaway_sandbox() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.run_pool = 0).await?;
    let run = run_req;
    let e = t.client.run(&run("echo left > f; ls")).await?;
    assert_eq!((e.status, e.session_id.as_deref()), (ExecutionStatus::Succeeded, None));
    assert_eq!(e.stdout, "f\n", "{e:?}");
    let e2 = t.client.run(&run("ls | wc -l")).await?;
    assert_eq!(e2.stdout, "0\n", "a new run must not see the last run's files");
    assert_eq!(t.client.get_execution(&e.id).await?.stdout, e.stdout);
    // Its workspace is removed after the answer.
    assert!(wait_for(|| run_workspaces(&t).is_empty()).await, "left behind: {:?}", run_workspaces(&t));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_serves_runs_and_refills_with_fresh_sandboxes() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.run_pool = 2).await?;
    // Ready sandboxes, not just their workspaces (those exist while a sandbox still starts).
    let ready = || async { t.client.readiness().await.map(|(_, r)| r.pools.run).unwrap_or(0) };
    for _ in 0..500 {
        if ready().await == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ready().await, 2, "pool never filled");
    let before = run_workspaces(&t);

    let e = t.client.run(&run_req("echo mine > f; ls")).await?;
    assert_eq!(e.stdout, "f\n");
    let e = t.client.run(&run_req("ls | wc -l")).await?;
    assert_eq!(e.stdout, "0\n", "each run gets its own sandbox and workspace");

    // The two used sandboxes are gone and two new ones wait.
    let refilled = || {
        let now = run_workspaces(&t);
        now.len() == 2 && now.iter().all(|n| !before.contains(n))
    };
    assert!(wait_for(refilled).await, "before {before:?}, now {:?}", run_workspaces(&t));

    // A run with other limits cannot use the pool's sandboxes and starts one cold.
    let mut custom = run_req("echo cold");
    custom.limits = Some(sandbox_api::LimitsRequest { memory_mb: Some(64), pids: None, cpu: None });
    assert_eq!(t.client.run(&custom).await?.stdout, "cold\n");
    t.shutdown().await;
    Ok(())
}
