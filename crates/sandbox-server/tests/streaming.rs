//! Server-Sent Events: outputs arrive while the code runs, not in one burst at the end.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, Execution, ExecutionStatus, Language};
use sandbox_test_support::TestServer;

/// (event, data, when it arrived) for each event of a streamed execution, through the client's
/// own SSE reader; the final `done` carries the execution as JSON. A refusal is its status.
async fn stream(
    t: &TestServer,
    session: &str,
    req: &CreateExecution,
) -> anyhow::Result<(u16, Vec<(String, String, Instant)>)> {
    let mut events = Vec::new();
    let result = t
        .client
        .execute_stream(session, req, |name, data| events.push((name.to_string(), data.to_string(), Instant::now())))
        .await;
    match result {
        Ok(exec) => {
            events.push(("done".to_string(), serde_json::to_string(&exec)?, Instant::now()));
            Ok((200, events))
        }
        Err(e) => Ok((e.status().map_or(0, |s| s.as_u16()), events)),
    }
}

fn done(events: &[(String, String, Instant)]) -> anyhow::Result<(Execution, Instant)> {
    let (_, data, at) =
        events.iter().find(|(n, ..)| n == "done").ok_or_else(|| anyhow::anyhow!("no done: {events:?}"))?;
    Ok((serde_json::from_str(data)?, *at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_output_streams_as_it_is_printed() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let code = "import time\nfor i in range(5):\n    print(i)\n    time.sleep(0.2)";
    let (status, events) = stream(&t, &s.id, &CreateExecution::new(Language::Python, code)).await?;
    assert_eq!(status, 200);
    let stdout: Vec<_> = events.iter().filter(|(n, ..)| n == "stdout").collect();
    let text: String = stdout.iter().map(|(_, d, _)| d.as_str()).collect();
    assert_eq!(text.replace('\n', ""), "01234", "{events:?}");
    let (exec, done_at) = done(&events)?;
    assert_eq!((exec.status, exec.stdout.as_str()), (ExecutionStatus::Succeeded, "0\n1\n2\n3\n4\n"));
    // Five prints 0.2 s apart: the first arrives long before the end, not in a final burst.
    let spread = done_at.duration_since(stdout[0].2);
    assert!(spread >= Duration::from_millis(600), "first output only {spread:?} before done");
    // The record is stored like any other.
    assert_eq!(t.client.get_execution(&exec.id).await?, exec);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_output_streams_too_and_errors_are_events() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let code = "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.3; done";
    let (_, events) = stream(&t, &s.id, &CreateExecution::new(Language::Bash, code)).await?;
    let first = events.iter().find(|(n, ..)| n == "stdout").ok_or_else(|| anyhow::anyhow!("no stdout: {events:?}"))?;
    let (exec, done_at) = done(&events)?;
    assert!(done_at.duration_since(first.2) >= Duration::from_millis(400), "{events:?}");
    assert!(events.iter().any(|(n, d, _)| n == "stderr" && d.contains("e1")), "{events:?}");
    assert_eq!(exec.stdout, "1\n2\n3\n");

    let (_, events) = stream(&t, &s.id, &CreateExecution::new(Language::Python, "1/0")).await?;
    let err = events.iter().find(|(n, ..)| n == "error").ok_or_else(|| anyhow::anyhow!("no error: {events:?}"))?;
    assert!(err.1.contains("ZeroDivisionError"));
    assert_eq!(done(&events)?.0.status, ExecutionStatus::Failed);

    // Refusals are plain JSON errors with their status, before any stream starts.
    let (status, events) = stream(&t, "ses_nope", &CreateExecution::new(Language::Python, "1")).await?;
    assert_eq!(status, 404, "{events:?}");
    t.shutdown().await;
    Ok(())
}
