//! Requests the server makes where callers point it (SSRF): callbacks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

/// Waits until execution `id` has at least `n` callback attempts recorded.
async fn attempts(t: &TestServer, id: &str, n: usize) -> anyhow::Result<Execution> {
    for _ in 0..200 {
        let e = t.client.get_execution(id).await?;
        if e.callback.as_ref().is_some_and(|c| c.attempts.len() >= n) {
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("execution {id} never got {n} callback attempts")
}

/// A receiver on `ip` that counts what reaches it and answers each POST with `answer`.
async fn receiver(ip: &str, answer: axum::response::Response<String>) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let hits = Arc::new(AtomicUsize::new(0));
    let (status, headers, body) = {
        let (parts, body) = answer.into_parts();
        (parts.status, parts.headers, body)
    };
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let (headers, body) = (headers.clone(), body.clone());
        async move { (status, headers, body) }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), hits))
}

fn redirect_to(location: &str) -> anyhow::Result<axum::response::Response<String>> {
    Ok(axum::response::Response::builder().status(307).header("location", location).body(String::new())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_callbacks_to_internal_addresses_are_refused_at_submission() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let port = t.port();
    for url in [
        format!("http://127.0.0.1:{port}/v1/sessions/{}/stop", s.id),
        format!("http://[::1]:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_string(),
        "http://100.100.100.200/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[64:ff9b::7f00:1]/".to_string(),
    ] {
        let req = CreateExecution { callback_url: Some(url.clone()), ..bash("true") };
        let (status, body) = submit(&t, &s.id, &req).await?;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(body.contains("refused by policy"), "{url}: {body}");
    }
    assert_eq!(t.client.get_session(&s.id).await?.status, SessionStatus::Running);
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_a_name_that_resolves_to_loopback_is_refused_by_policy() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let victim = t.session().await?;
    let attacker = t.session().await?;
    // The attack the issue reproduced: stop another session through the server itself.
    let url = format!("http://localhost:{}/v1/sessions/{}/stop", t.port(), victim.id);
    let req = CreateExecution { callback_url: Some(url), ..bash("true") };
    let e = t.client.execute(&attacker.id, &req).await?;
    let e = attempts(&t, &e.id, 1).await?;
    tokio::time::sleep(Duration::from_millis(800)).await; // a retry would have come by now
    let e = t.client.get_execution(&e.id).await?;
    let callback = e.callback.ok_or_else(|| anyhow::anyhow!("no callback record"))?;
    assert_eq!(callback.attempts.len(), 1, "a refusal is not retried: {callback:?}");
    assert_eq!(callback.attempts[0].status, None);
    assert_eq!(callback.attempts[0].error.as_deref(), Some("refused by policy: localhost has no public address"));
    assert!(!callback.delivered);
    assert_eq!(t.client.get_session(&victim.id).await?.status, SessionStatus::Running);
    t.assert_healthy(&victim.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_redirects_are_not_followed() -> anyhow::Result<()> {
    // The receiver is allowed (127.0.0.2); where it redirects (sandboxd on 127.0.0.1) is not,
    // and a 307 would keep the POST.
    let t = TestServer::start_with(|c| c.outbound_allow = vec!["127.0.0.2".into()]).await?;
    let victim = t.session().await?;
    let attacker = t.session().await?;
    let (target, target_hits) = receiver("127.0.0.1", axum::response::Response::new(String::new())).await?;
    let (hook, hook_hits) = receiver("127.0.0.2", redirect_to(&format!("{target}/x"))?).await?;
    let stop = format!("http://127.0.0.1:{}/v1/sessions/{}/stop", t.port(), victim.id);
    let (hook2, _) = receiver("127.0.0.2", redirect_to(&stop)?).await?;
    let e1 = t.client.execute(&attacker.id, &CreateExecution { callback_url: Some(hook), ..bash("true") }).await?;
    let e2 = t.client.execute(&attacker.id, &CreateExecution { callback_url: Some(hook2), ..bash("true") }).await?;
    let e1 = attempts(&t, &e1.id, 2).await?;
    attempts(&t, &e2.id, 2).await?;
    let statuses: Vec<_> = e1.callback.iter().flat_map(|c| c.attempts.iter().map(|a| a.status)).collect();
    assert_eq!(statuses[..2], [Some(307), Some(307)], "a redirect is an answer, not a hop");
    assert!(hook_hits.load(Ordering::SeqCst) >= 2);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    assert_eq!(t.client.get_session(&victim.id).await?.status, SessionStatus::Running);
    t.assert_healthy(&victim.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_failed_attempts_reveal_no_network_detail() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.outbound_allow = vec!["127.0.0.0/8".into()]).await?;
    let s = t.session().await?;
    // A port nobody listens on: the record says only that it could not connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let req = CreateExecution { callback_url: Some(format!("http://{closed}/hook")), ..bash("true") };
    let e = t.client.execute(&s.id, &req).await?;
    let e = attempts(&t, &e.id, 1).await?;
    let first = &e.callback.as_ref().ok_or_else(|| anyhow::anyhow!("no callback"))?.attempts[0];
    assert_eq!((first.status, first.error.as_deref()), (None, Some("could not connect")));
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
