//! Every error is JSON `{"error": {"code", "message"}}` with the right status.

use reqwest::Method;
use sandbox_api::{ErrorBody, Language, SessionStatus};
use sandbox_test_support::TestServer;

/// Sends a raw request and checks status, error shape and code.
async fn expect_error(
    t: &TestServer,
    method: Method,
    path: &str,
    body: Option<&str>,
    status: u16,
    code: &str,
) -> anyhow::Result<String> {
    let (got, text) = t.client.raw(method.clone(), path, body.map(|b| b.as_bytes().to_vec())).await?;
    assert_eq!(got.as_u16(), status, "{method} {path}: {text}");
    let err: ErrorBody =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("not the error shape ({e}): {text}"))?;
    assert_eq!(err.error.code, code, "{text}");
    assert!(!err.error.message.is_empty());
    Ok(err.error.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_invalid_requests() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let exec_path = format!("/v1/sessions/{}/executions", s.id);
    expect_error(&t, Method::POST, "/v1/sessions", Some("{not json"), 400, "bad_request").await?;
    expect_error(&t, Method::POST, &exec_path, Some(""), 400, "bad_request").await?;
    expect_error(&t, Method::GET, "/v1/sessions/ses_nope", None, 404, "not_found").await?;
    expect_error(&t, Method::GET, "/v1/executions/exe_nope", None, 404, "not_found").await?;
    expect_error(&t, Method::GET, "/v1/sessions/ses_nope/executions", None, 404, "not_found").await?;
    expect_error(
        &t,
        Method::POST,
        "/v1/sessions/ses_nope/executions",
        Some(r#"{"code":"1","language":"python"}"#),
        404,
        "not_found",
    )
    .await?;
    expect_error(&t, Method::DELETE, "/v1/sessions/ses_nope", None, 404, "not_found").await?;
    expect_error(&t, Method::GET, "/v2/whatever", None, 404, "not_found").await?;
    expect_error(&t, Method::PUT, "/v1/sessions", None, 405, "method_not_allowed").await?;

    let msg =
        expect_error(&t, Method::POST, &exec_path, Some(r#"{"code":"1","language":"cobol"}"#), 422, "invalid").await?;
    assert!(msg.contains("cobol"), "{msg}");
    let invalid_bodies = [
        r#"{"code":"1","language":"python","tiemout_s":1}"#,
        r#"{"code":"1","language":"python","timeout_s":-1}"#,
        r#"{"code":"1","language":"python","timeout_s":999999}"#,
        r#"{"code":1,"language":"python"}"#,
        r#"{"language":"python"}"#,
        r#"{"code":"1","language":"python","env":{"A=B":"x"}}"#,
        r#"{"code":"print(1)\u0000","language":"python"}"#,
    ];
    for body in invalid_bodies {
        expect_error(&t, Method::POST, &exec_path, Some(body), 422, "invalid").await?;
    }
    for body in [
        r#"{"template":"gpu"}"#,
        r#"{"limits":{"memory_mb":99999999}}"#,
        r#"{"limits":{"pids":0}}"#,
        r#"{"limits":{"cpu":0}}"#,
    ] {
        expect_error(&t, Method::POST, "/v1/sessions", Some(body), 422, "invalid").await?;
    }
    expect_error(&t, Method::POST, "/v1/run", Some(r#"{"code":"1","language":"ruby"}"#), 422, "invalid").await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_sessions_keep_their_record_and_refuse_work() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Bash, "echo x > f").await?;
    t.client.delete_session(&s.id).await?;
    let after = t.client.get_session(&s.id).await?;
    assert_eq!(after.status, SessionStatus::Deleted);
    assert!(after.deleted_at.is_some());
    let path = format!("/v1/sessions/{}/executions", s.id);
    expect_error(&t, Method::POST, &path, Some(r#"{"code":"echo hi","language":"bash"}"#), 409, "conflict").await?;
    assert_eq!(t.client.list_executions(&s.id).await?.executions.len(), 1, "history stays readable");
    // Deleting again is a no-op.
    t.client.delete_session(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_kills_its_running_execution() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let running = t.exec(&s.id, Language::Bash, "sleep 30");
    let delete = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        t.client.delete_session(&s.id).await
    };
    let (e, deleted) = tokio::join!(running, delete);
    deleted?;
    let e = e?;
    assert_eq!(
        (e.status, e.reason),
        (sandbox_api::ExecutionStatus::Killed, Some(sandbox_api::ExecutionReason::SessionDeleted)),
        "{e:?}"
    );
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.max_body_bytes = 4096).await?;
    let s = t.session().await?;
    let body = serde_json::json!({"code": "x".repeat(10_000), "language": "python"}).to_string();
    expect_error(&t, Method::POST, &format!("/v1/sessions/{}/executions", s.id), Some(&body), 413, "payload_too_large")
        .await?;
    expect_error(&t, Method::POST, "/v1/run", Some(&body), 413, "payload_too_large").await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_describes_the_api() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let (status, text) = t.client.raw(Method::GET, "/openapi.json", None).await?;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/executions",
        "/v1/executions/{id}",
        "/v1/run",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"].get("Execution").is_some());
    t.shutdown().await;
    Ok(())
}
