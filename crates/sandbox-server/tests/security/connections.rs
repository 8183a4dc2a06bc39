//! Connections and request parts: slowloris, floods, oversized heads, bodies and fields.

use super::*;

/// Reads from `stream` until the peer closes it or `limit` passes; returns what came and
/// whether it was closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

async fn connect(t: &TestServer) -> anyhow::Result<tokio::net::TcpStream> {
    Ok(tokio::net::TcpStream::connect(("127.0.0.1", t.port())).await?)
}

/// One request on a fresh connection; the whole answer, as text.
async fn raw_request(t: &TestServer, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut s = connect(t).await?;
    s.write_all(request).await?;
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_sent_requests_and_idle_connections_are_closed() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let t = TestServer::start_with(|c| c.header_read_timeout_s = 1.0).await?;
    let s = t.session().await?;
    let mut partial = Vec::new();
    for _ in 0..60 {
        let mut c = connect(&t).await?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await?;
        partial.push(c);
    }
    // And one that sent a whole request, was answered, and then said nothing more.
    let mut idle = connect(&t).await?;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let started = std::time::Instant::now();
    for c in partial.iter_mut() {
        let (_, closed) = read_until_closed(c, Duration::from_secs(4)).await;
        assert!(closed, "a half-sent request was still open after {:?}", started.elapsed());
    }
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(4)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert!(closed, "an idle keep-alive connection was still open after {:?}", started.elapsed());
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_keeps_room_for_health_checks_and_refuses_the_rest() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_connections = 4;
        c.header_read_timeout_s = 30.0;
    })
    .await?;
    let s = t.session().await?;
    // Four silent connections take every ordinary slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&t).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth gets a reserved slot: health checks are served, the API is not.
    let health = raw_request(&t, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let api = raw_request(&t, b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
    assert!(api.starts_with("HTTP/1.1 503"), "{api}");
    assert!(api.contains(r#""code":"overloaded""#) && api.to_lowercase().contains("retry-after: 1"), "{api}");
    // Every reserved slot taken too: a plain 503, at once.
    for _ in 0..sandbox_server::serve::RESERVED_CONNECTIONS {
        held.push(connect(&t).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = raw_request(&t, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains(r#""code":"overloaded""#), "{refused}");
    // Freed slots serve again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_bodies_and_form_fields_are_refused() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // 200 headers, and one header of 100 KiB: refused before any handler runs.
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw_request(&t, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await?;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    let huge = "a".repeat(100 << 10);
    let answer =
        raw_request(&t, format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n").as_bytes()).await?;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);

    // JSON nested 100,000 deep: an error, not a crash.
    let nested = format!(r#"{{"language":"python","code":"1","env":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) =
        t.client.raw(Method::POST, &format!("/v1/sessions/{}/executions", s.id), Some(nested.into_bytes())).await?;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.contains(r#""error""#), "{body}");
    // (A JSON body over --max-body-bytes is 413: api_errors.rs.)

    // A multipart text field of 8 MiB (it was read whole), and a form of 1,001 parts.
    let form = reqwest::multipart::Form::new()
        .text("path", "x".repeat(8 << 20))
        .part("file", reqwest::multipart::Part::bytes(b"hi".to_vec()).file_name("a.txt"));
    let url = format!("{}/v1/sessions/{}/files", t.client.base(), s.id);
    let resp = reqwest::Client::new().post(&url).multipart(form).send().await?;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await?.contains("payload_too_large"));
    let mut form = reqwest::multipart::Form::new();
    for i in 0..1001 {
        form = form.text(format!("f{i}"), "v");
    }
    let resp = reqwest::Client::new().post(&url).multipart(form).send().await?;
    assert_eq!(resp.status(), 413);
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
