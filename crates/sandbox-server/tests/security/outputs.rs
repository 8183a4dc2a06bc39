//! Huge and invalid outputs, and the store they would fill.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_huge_results_and_displays_are_cut_and_the_kernel_lives() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.default_memory_mb = 1024).await?;
    let s = t.session().await?;
    let db = t.data_dir().join("db");
    let db_size = || -> u64 {
        std::fs::read_dir(&db)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    let before = db_size();

    // A 20 MB result: it was stored whole (the database grew by 21 MiB).
    let e = t.exec(&s.id, Language::Python, "kept = 5\n'x' * 20_000_000").await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::Succeeded, "{e:?}");
    assert!(e.outputs_truncated, "{:?}", e.outputs.len());
    assert!(serde_json::to_vec(&e)?.len() < 9 << 20);

    // Ten displays of 8 MB: 80 MB, more than one protocol frame. This lost the sandbox (and the
    // kernel with it) after the timeout and 10 s more.
    let started = std::time::Instant::now();
    let code = "from IPython.display import display\nfor i in range(10):\n    display({'text/plain': str(i) * 8_000_000}, raw=True)\nprint('shown')";
    let e = t
        .client
        .execute(&s.id, &CreateExecution { timeout_s: Some(30.0), ..CreateExecution::new(Language::Python, code) })
        .await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::Succeeded, "{:?} {}", e.status, e.stderr);
    assert!(e.outputs_truncated);
    assert!(e.stdout.contains("shown"));
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());

    // Junk written straight to the kernel's event pipe, with no newline.
    let e = t.exec(&s.id, Language::Python, "import os\nos.write(4, b'x' * 30_000_000)\nprint('after')").await?;
    assert_eq!((e.status, e.stdout.as_str()), (sandbox_api::ExecutionStatus::Succeeded, "after\n"), "{}", e.stderr);
    assert!(e.outputs_truncated);

    // The kernel kept its state through all of it.
    let e = t.exec(&s.id, Language::Python, "print(kept)").await?;
    assert_eq!(e.stdout, "5\n");
    assert_eq!(t.client.get_session(&s.id).await?.kernel_restarts, 0);
    let grown = db_size().saturating_sub(before);
    assert!(grown < 40 << 20, "the database grew by {grown} bytes");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_listings_are_summaries_and_old_executions_are_pruned() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_executions_per_session = 3;
        c.sweep_interval_s = 0.1;
    })
    .await?;
    let s = t.session().await?;
    for i in 0..6 {
        t.exec(&s.id, Language::Bash, &format!("echo run-{i}")).await?;
    }
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = t.client.list_executions(&s.id).await?.executions;
        if listed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 3, "the newest three are kept");
    assert!(listed.iter().all(|e| e.stdout.is_empty() && e.outputs.is_empty()), "a listing is summaries");
    let full = t.client.list_executions_with_outputs(&s.id).await?.executions;
    let out: Vec<&str> = full.iter().map(|e| e.stdout.as_str()).collect();
    assert_eq!(out, ["run-3\n", "run-4\n", "run-5\n"]);
    let (status, _) =
        t.client.raw(Method::GET, &format!("/v1/sessions/{}/executions?outputs=maybe", s.id), None).await?;
    assert_eq!(status, 400);
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
