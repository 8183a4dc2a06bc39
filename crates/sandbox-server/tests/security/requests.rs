//! Hostile requests: package-spec injection, hostile template names, reuse of a deleted
//! session, and a link swapped under the file API while it works (a check-then-use race).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_specs_that_are_not_names_never_reach_pip() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let hostile = [
        "--index-url=http://evil.example/simple",
        "-r /etc/passwd",
        "--pre",
        "six; rm -rf /",
        "six @ file:///etc/passwd",
        "https://evil.example/x.whl",
        "../../etc/passwd",
        "./local-dir",
        "six==1.0; python_version>'0'",
        "six$(id)",
        "six`id`",
        "six\nother",
        "",
    ];
    for spec in hostile {
        let body = serde_json::to_vec(&serde_json::json!({"packages": [spec]}))?;
        let (status, text) = t.client.raw(Method::POST, &format!("/v1/sessions/{}/packages", s.id), Some(body)).await?;
        assert_eq!(status, 422, "{spec:?}: {text}");
        assert!(text.contains(r#""code":"invalid""#), "{spec:?}: {text}");
        let (status, text) = t
            .client
            .raw(
                Method::POST,
                "/v1/templates",
                Some(serde_json::to_vec(&serde_json::json!({"name": "t1", "packages": [spec]}))?),
            )
            .await?;
        assert_eq!(status, 422, "template {spec:?}: {text}");
    }
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_template_names_are_refused() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let long = "a".repeat(65);
    for name in ["../etc", "a/b", "A", "-x", "x y", "", "x\u{0}y", "ünï", "a.b", &long] {
        let body = serde_json::to_vec(&serde_json::json!({"name": name}))?;
        let (status, text) = t.client.raw(Method::POST, "/v1/templates", Some(body)).await?;
        assert_eq!(status, 422, "{name:?}: {text}");
        let body = serde_json::to_vec(&serde_json::json!({"template": name}))?;
        let (status, text) = t.client.raw(Method::POST, "/v1/sessions", Some(body)).await?;
        assert!(status == 404 || status == 422, "session of template {name:?}: {status} {text}");
    }
    // And through the path of the API.
    for raw in ["%2e%2e%2fetc", "..", "a%2fb"] {
        let (status, text) = t.client.raw(Method::GET, &format!("/v1/templates/{raw}"), None).await?;
        assert!(status == 404 || status == 422, "GET {raw}: {status} {text}");
    }
    assert!(!t.data_dir().join("etc").exists());
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_cannot_be_used_again() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let bystander = t.session().await?;
    t.exec(&s.id, Language::Bash, "echo kept > f.txt").await?;
    t.client.delete_session(&s.id).await?;
    let id = &s.id;
    let exec = serde_json::to_vec(&bash("echo again"))?;
    for (method, path, body) in [
        (Method::POST, format!("/v1/sessions/{id}/executions"), Some(exec.clone())),
        (Method::POST, format!("/v1/sessions/{id}/resume"), None),
        (Method::POST, format!("/v1/sessions/{id}/stop"), None),
        (Method::POST, format!("/v1/sessions/{id}/restart"), None),
        (Method::POST, format!("/v1/sessions/{id}/interrupt"), None),
        (Method::PUT, format!("/v1/sessions/{id}/files/new.txt"), Some(b"x".to_vec())),
        (Method::GET, format!("/v1/sessions/{id}/files/f.txt"), None),
        (Method::GET, format!("/v1/sessions/{id}/archive"), None),
        (Method::POST, format!("/v1/sessions/{id}/packages"), Some(br#"{"packages":["six"]}"#.to_vec())),
    ] {
        let (status, text) = t.client.raw(method.clone(), &path, body).await?;
        assert_eq!(status, 409, "{method} {path}: {text}");
        assert!(text.contains(r#""code":"conflict""#), "{method} {path}: {text}");
    }
    // Deleting again is idempotent, and the record stays readable.
    t.client.delete_session(id).await?;
    assert_eq!(t.client.get_session(id).await?.status, SessionStatus::Deleted);
    t.assert_healthy(&bystander.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_swapped_in_while_the_file_api_works_never_leads_out() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // For three seconds, `d` flips between a directory and a link to the root.
    let race = "end=$((SECONDS+3)); while [ $SECONDS -lt $end ]; do mkdir -p d; rmdir d; ln -sfn / d; rm -f d; done; echo done";
    let racer = {
        let client = t.client.clone();
        let id = s.id.clone();
        tokio::spawn(async move { client.execute(&id, &bash(race)).await })
    };
    let planted = format!("/tmp/planted-{}", std::process::id());
    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..150 {
        let name = planted.trim_start_matches('/');
        let (status, body) =
            t.client.raw(Method::GET, &format!("/v1/sessions/{}/files/d/etc/passwd", s.id), None).await?;
        assert!(!body.contains("root:x:0:0"), "read /etc/passwd through the link (attempt {i})");
        *outcomes.entry(status.as_u16()).or_default() += 1;
        let (status, _) =
            t.client.raw(Method::PUT, &format!("/v1/sessions/{}/files/d/{name}", s.id), Some(b"x".to_vec())).await?;
        *outcomes.entry(status.as_u16()).or_default() += 1;
        let (status, body) =
            t.client.raw(Method::GET, &format!("/v1/sessions/{}/files?path=d&recursive=true", s.id), None).await?;
        assert!(!body.contains("passwd"), "listed the host's /etc through the link (attempt {i})");
        *outcomes.entry(status.as_u16()).or_default() += 1;
    }
    assert!(!std::path::Path::new(&planted).exists(), "wrote through the link");
    let e = racer.await??;
    assert_eq!(e.stdout, "done\n", "{e:?}");
    // Only answers that say "not there" or "not through a link", and writes inside when `d`
    // was a directory: never a server error.
    assert!(outcomes.keys().all(|s| [200, 201, 404, 409].contains(s)), "{outcomes:?}");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
