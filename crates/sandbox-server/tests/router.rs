//! The router in-process over the in-memory FakeRuntime: HTTP plumbing without sandboxes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sandbox_runtime::fake::FakeRuntime;
use sandbox_server::{app, Config, Service};
use sandbox_store::Store;
use tower::ServiceExt;

async fn state(data: &std::path::Path, runtime: Arc<FakeRuntime>) -> anyhow::Result<Arc<Service>> {
    // The fake runtime never mounts a workspace, and nothing here shuts the state down.
    let mut config = Config { data_dir: data.to_path_buf(), ..Config::default() };
    config.local.workspace_volumes = sandbox_server::config::VolumeMode::Off;
    Ok(Arc::new(Service::new(config, Store::open_in_memory().await?, runtime)?))
}

async fn send(
    state: &Arc<Service>,
    method: &str,
    uri: &str,
    body: &str,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body.to_string()))?;
    let resp = app(Arc::clone(state)).oneshot(req).await?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
    let json = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes)? };
    Ok((status, json))
}

#[tokio::test]
async fn session_limits_reach_the_runtime_and_executions_come_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = Arc::new(FakeRuntime::default());
    let st = state(dir.path(), Arc::clone(&runtime)).await?;
    let (status, s) = send(
        &st,
        "POST",
        "/v1/sessions",
        r#"{"limits":{"memory_mb":100,"pids":20,"cpu":0.5},"metadata":{"owner":"t"}}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(s["metadata"]["owner"], "t");
    let spec = runtime.created.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[0].clone();
    assert_eq!((spec.limits.memory_bytes, spec.limits.pids, spec.limits.cpus), (100 << 20, 20, 0.5));
    assert!(spec.workspace.ends_with(s["id"].as_str().unwrap_or("?")));

    let uri = format!("/v1/sessions/{}/executions", s["id"].as_str().unwrap_or("?"));
    let (status, e) = send(&st, "POST", &uri, r#"{"code":"echo me","language":"bash"}"#).await?;
    assert_eq!(
        (status, e["stdout"].as_str(), e["status"].as_str()),
        (StatusCode::OK, Some("echo me"), Some("succeeded"))
    );
    Ok(())
}

#[tokio::test]
async fn a_runtime_that_is_not_ready_gives_503_with_its_cause() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = Arc::new(FakeRuntime::default());
    *runtime.not_ready.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some("no namespaces here".into());
    let st = state(dir.path(), runtime).await?;
    let (status, body) = send(&st, "POST", "/v1/sessions", "{}").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("no namespaces here")), "{body}");
    assert_eq!(
        send(&st, "GET", "/v1/sessions", "").await?.1["sessions"],
        serde_json::json!([]),
        "failed create leaves no record"
    );
    let (status, body) = send(&st, "GET", "/readyz", "").await?;
    assert_eq!((status, body["ready"].as_bool()), (StatusCode::SERVICE_UNAVAILABLE, Some(false)));
    Ok(())
}

/// Lists come a page at a time: `limit`, and `cursor` from the page before, until
/// `next_cursor` is null. A limit out of range is 400.
#[tokio::test]
async fn lists_are_paged_with_cursors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let st = state(dir.path(), Arc::new(FakeRuntime::default())).await?;
    let mut made = Vec::new();
    for _ in 0..5 {
        let (status, s) = send(&st, "POST", "/v1/sessions", "{}").await?;
        assert_eq!(status, StatusCode::CREATED);
        made.push(s["id"].as_str().unwrap_or_default().to_string());
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/sessions?limit=2".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = send(&st, "GET", &uri, "").await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(
            page["sessions"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str().map(String::from)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/sessions?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, made), "in creation order, each once");
    let (_, all) = send(&st, "GET", "/v1/sessions", "").await?;
    assert_eq!((all["sessions"].as_array().map(Vec::len), all["next_cursor"].is_null()), (Some(5), true));

    // Templates: the built-in one heads the first page.
    let (_, t) = send(&st, "GET", "/v1/templates?limit=1", "").await?;
    assert_eq!((t["templates"][0]["name"].as_str(), t["next_cursor"].is_null()), (Some("default"), true));
    // With one stored, a page of one is the built-in one and a cursor to the rest.
    let (status, _) = send(&st, "POST", "/v1/templates", r#"{"name": "stored"}"#).await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, t) = send(&st, "GET", "/v1/templates?limit=1", "").await?;
    assert_eq!((status, t["templates"][0]["name"].as_str()), (StatusCode::OK, Some("default")), "{t}");
    let next = t["next_cursor"].as_str().unwrap_or_default().to_string();
    let (_, rest) = send(&st, "GET", &format!("/v1/templates?limit=1&cursor={next}"), "").await?;
    assert_eq!((rest["templates"][0]["name"].as_str(), rest["next_cursor"].is_null()), (Some("stored"), true));

    // Any cursor is a place in the order: one no page gave is taken as a key (after "zz": none).
    let (status, after) = send(&st, "GET", "/v1/sessions?cursor=zz", "").await?;
    assert_eq!((status, after["sessions"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    for bad in ["/v1/sessions?limit=0", "/v1/sessions?limit=1001", "/v1/sessions?limit=x"] {
        let (status, body) = send(&st, "GET", bad, "").await?;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{bad}");
    }
    Ok(())
}
