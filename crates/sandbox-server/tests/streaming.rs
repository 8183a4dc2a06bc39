//! Server-Sent Events: outputs arrive while the code runs, not in one burst at the end.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, Execution, ExecutionStatus, Language};
use sandbox_test_support::TestServer;

/// (event, data, when it arrived) for each event of a streamed execution.
async fn stream(
    t: &TestServer,
    session: &str,
    req: &CreateExecution,
) -> anyhow::Result<(u16, Vec<(String, String, Instant)>)> {
    let mut resp = reqwest::Client::new()
        .post(format!("{}/v1/sessions/{session}/executions", t.client.base()))
        .header("accept", "text/event-stream")
        .json(req)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let mut events = Vec::new();
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await? {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut name, mut data) = (String::from("message"), Vec::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            if !data.is_empty() {
                events.push((name, data.join("\n"), now));
            }
        }
        if status != 200 {
            events.push(("body".into(), buf.clone(), now));
        }
    }
    Ok((status, events))
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
