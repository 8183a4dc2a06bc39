//! One execution at a time per session, in order; a bounded queue; cancel_pending; idempotent
//! and asynchronous submissions.

use std::time::Duration;

use reqwest::Method;
use sandbox_api::{CreateExecution, Execution, ExecutionStatus, Language, OnError};
use sandbox_test_support::TestServer;

fn bash(code: &str) -> CreateExecution {
    CreateExecution::new(Language::Bash, code)
}

fn nowait(code: &str) -> CreateExecution {
    CreateExecution { wait: Some(false), ..bash(code) }
}

/// POSTs and returns (status, execution).
async fn submit(t: &TestServer, session: &str, req: &CreateExecution) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = serde_json::to_vec(req)?;
    let (status, text) = t.client.raw(Method::POST, &format!("/v1/sessions/{session}/executions"), Some(body)).await?;
    Ok((status.as_u16(), serde_json::from_str(&text)?))
}

async fn wait_done(t: &TestServer, id: &str) -> anyhow::Result<Execution> {
    for _ in 0..300 {
        let e = t.client.get_execution(id).await?;
        if !e.status.is_pending() {
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("execution {id} never finished")
}

fn id_of(v: &serde_json::Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_run_one_at_a_time_in_arrival_order() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let (status, a) = submit(&t, &s.id, &nowait("sleep 0.5; echo -n A >> order")).await?;
    assert_eq!((status, a["status"].as_str()), (202, Some("queued")), "{a}");
    let (_, b) = submit(&t, &s.id, &nowait("echo -n B >> order")).await?;
    let (_, c) = submit(&t, &s.id, &nowait("echo -n C >> order")).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.client.get_execution(&id_of(&b)).await?.status, ExecutionStatus::Queued, "B waits for A");
    for e in [&a, &b, &c] {
        assert_eq!(wait_done(&t, &id_of(e)).await?.status, ExecutionStatus::Succeeded);
    }
    assert_eq!(t.exec(&s.id, Language::Bash, "cat order").await?.stdout, "ABC");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.max_queue = 2).await?;
    let s = t.session().await?;
    let (_, running) = submit(&t, &s.id, &nowait("sleep 2")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(submit(&t, &s.id, &nowait("true")).await?.0, 202);
    assert_eq!(submit(&t, &s.id, &nowait("true")).await?.0, 202);
    let (status, err) = submit(&t, &s.id, &nowait("true")).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (429, Some("rate_limited")), "{err}");
    wait_done(&t, &id_of(&running)).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pending_skips_what_was_queued_behind_a_failure() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let (_, failing) = submit(&t, &s.id, &nowait("sleep 0.5; exit 3")).await?;
    let cancel = CreateExecution { on_error: Some(OnError::CancelPending), ..nowait("echo ran >> log") };
    let (_, skipped) = submit(&t, &s.id, &cancel).await?;
    let (_, kept) = submit(&t, &s.id, &nowait("echo continued >> log")).await?;
    assert_eq!(wait_done(&t, &id_of(&failing)).await?.status, ExecutionStatus::Failed);
    let skipped = wait_done(&t, &id_of(&skipped)).await?;
    assert_eq!(
        (skipped.status, skipped.reason),
        (ExecutionStatus::Cancelled, Some(sandbox_api::ExecutionReason::EarlierFailure))
    );
    assert_eq!(wait_done(&t, &id_of(&kept)).await?.status, ExecutionStatus::Succeeded);
    assert_eq!(t.exec(&s.id, Language::Bash, "cat log").await?.stdout, "continued\n", "the cancelled one never ran");
    // With nothing failed since it was submitted, cancel_pending runs as usual.
    let fine = CreateExecution { on_error: Some(OnError::CancelPending), ..bash("echo fine") };
    assert_eq!(t.client.execute(&s.id, &fine).await?.status, ExecutionStatus::Succeeded);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_execution_id_never_runs_twice() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let once =
        CreateExecution { execution_id: Some("job-1".into()), ..bash("sleep 0.5; echo run >> runs; cat runs | wc -l") };
    let first = CreateExecution { wait: Some(false), ..once.clone() };
    let (status, queued) = submit(&t, &s.id, &first).await?;
    assert_eq!((status, id_of(&queued).as_str()), (202, "job-1"));
    // Repeated while it is still running: waits for it and returns the same execution.
    let (status, repeat) = submit(&t, &s.id, &once).await?;
    assert_eq!(
        (status, repeat["status"].as_str(), repeat["stdout"].as_str()),
        (200, Some("succeeded"), Some("1\n")),
        "{repeat}"
    );
    // Repeated after it finished: the stored execution, not a second run.
    let again = t.client.execute(&s.id, &once).await?;
    assert_eq!(again.stdout, "1\n");
    assert_eq!(t.exec(&s.id, Language::Bash, "cat runs | wc -l").await?.stdout, "1\n");
    // The id belongs to that session.
    let other = t.session().await?;
    assert_eq!(submit(&t, &other.id, &once).await?.0, 409);
    let bad = CreateExecution { execution_id: Some("../x".into()), ..bash("true") };
    assert_eq!(submit(&t, &s.id, &bad).await?.0, 422);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_retried_until_delivered_and_recorded() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    // A receiver on loopback that fails once, then accepts.
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0u32));
    let app = {
        let (received, calls) = (Arc::clone(&received), Arc::clone(&calls));
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let (received, calls) = (Arc::clone(&received), Arc::clone(&calls));
                async move {
                    let mut n = calls.lock().unwrap_or_else(|p| p.into_inner());
                    *n += 1;
                    if *n == 1 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    received.lock().unwrap_or_else(|p| p.into_inner()).push(body);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Loopback receivers are refused unless the operator allows them.
    let t = TestServer::start_with(|c| c.outbound_allow = vec!["127.0.0.1".into()]).await?;
    let s = t.session().await?;
    let req = CreateExecution { callback_url: Some(url.clone()), ..bash("echo hooked") };
    let e = t.client.execute(&s.id, &req).await?;
    assert_eq!(e.callback.as_ref().map(|c| c.url.as_str()), Some(url.as_str()));
    let mut delivered = None;
    for _ in 0..100 {
        let now = t.client.get_execution(&e.id).await?;
        if now.callback.as_ref().is_some_and(|c| c.delivered) {
            delivered = now.callback;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let callback = delivered.ok_or_else(|| anyhow::anyhow!("never delivered"))?;
    let statuses: Vec<_> = callback.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(200)]);
    let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["id"].as_str(), got[0]["stdout"].as_str()), (Some(e.id.as_str()), Some("hooked\n")));

    let bad = CreateExecution { callback_url: Some("file:///etc/passwd".into()), ..bash("true") };
    assert_eq!(submit(&t, &s.id, &bad).await?.0, 422);
    t.shutdown().await;
    Ok(())
}
