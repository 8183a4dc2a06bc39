//! S3 workspace storage against a real S3-compatible server (moto's, started per test): files
//! written by uploads and by code reach the bucket, only changed files are sent, a restart
//! with an empty local cache finds every file, and changes made in the bucket are seen.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use sandbox_api::{CreateSession, ExecutionStatus, Language, SessionStatus};
use sandbox_test_support::{configure_s3, S3Server, TestServer};

const BUCKET: &str = "workspaces";

/// A server on a new bucket of `s3`, writing running sessions back every `sync_interval_s`.
async fn s3_server_syncing_every(s3: &S3Server, sync_interval_s: f64) -> anyhow::Result<TestServer> {
    s3.create_bucket(BUCKET).await?;
    TestServer::start_with(|c| {
        s3.configure(c, &format!("s3://{BUCKET}/team-a"));
        c.sync_interval_s = sync_interval_s;
    })
    .await
}

/// The same, with no interval syncs during a test: only the syncs under test.
async fn s3_server(s3: &S3Server) -> anyhow::Result<TestServer> {
    s3_server_syncing_every(s3, 3600.0).await
}

/// The session's files in the bucket, by path, with their sizes.
async fn objects(s3: &S3Server, session: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let bucket = s3.bucket(BUCKET)?;
    let prefix = Key::from(format!("team-a/workspaces/{session}"));
    let mut found = Vec::new();
    let mut list = bucket.list(Some(&prefix));
    while let Some(meta) = list.next().await {
        let meta = meta?;
        let rel: Vec<String> =
            meta.location.prefix_match(&prefix).into_iter().flatten().map(|p| p.as_ref().to_string()).collect();
        found.push((rel.join("/"), meta.size));
    }
    found.sort();
    Ok(found)
}

async fn wait_for_objects(s3: &S3Server, session: &str, want: &[(&str, u64)]) -> anyhow::Result<()> {
    let want: Vec<(String, u64)> = want.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = objects(s3, session).await?;
        if found == want {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "bucket has {found:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(t: &TestServer, line: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", t.client.base())).await?.text().await?;
    sandbox_test_support::metric_value(&text, line).ok_or_else(|| anyhow::anyhow!("no {line} in {text}"))
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_an_empty_cache_finds_every_file() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let mut t = s3_server(&s3).await?;
    let s = t.session().await?;

    // 20 MiB goes up in parts (multipart upload); the name is in another script.
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    t.client.upload(&s.id, "数据/销售数据 2026.bin", big.clone(), Some(big.len() as u64)).await?;
    t.client.upload(&s.id, "drop-me.txt", b"soon gone".to_vec(), None).await?;
    let e = t
        .exec(
            &s.id,
            Language::Python,
            "import os\nos.makedirs('out', exist_ok=True)\nopen('out/report.txt','w').write('made by code')",
        )
        .await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    t.client.delete_file(&s.id, "drop-me.txt", false).await?;
    t.client.stop_session(&s.id).await?;
    wait_for_objects(&s3, &s.id, &[("out/report.txt", 12), ("数据/销售数据 2026.bin", 20 << 20)]).await?;

    // The machine's disk is lost: no workspace, no manifest. The store (a database that would
    // live elsewhere in a cluster) and the bucket remain.
    if let Some(server) = t.server.take() {
        server.shutdown().await;
    }
    for dir in ["workspaces", "volumes", "sync"] {
        std::fs::remove_dir_all(t.data_dir().join(dir))?;
    }
    t.restart().await?;

    let listed = t.client.list_files(&s.id, "", true).await?;
    let files: Vec<(&str, u64)> = listed
        .files
        .iter()
        .filter(|f| f.kind == sandbox_api::FileType::File)
        .map(|f| (f.path.as_str(), f.size))
        .collect();
    assert_eq!(files, [("out/report.txt", 12), ("数据/销售数据 2026.bin", 20 << 20)]);
    let back = t.client.read_file(&s.id, "数据/销售数据 2026.bin").await?;
    assert_eq!(sha(&back), sha(&big), "the large file came back byte for byte");
    assert_eq!(t.client.get_session(&s.id).await?.status, SessionStatus::Stopped);

    // The session resumes on it, and code sees the files.
    let code = "import os\nprint(open('out/report.txt').read(), os.path.exists('drop-me.txt'))";
    let e = t.exec(&s.id, Language::Python, code).await?;
    assert_eq!(e.stdout, "made by code False\n", "{e:?}");

    // Another session continues in this workspace: the bucket moves with it.
    t.client.stop_session(&s.id).await?;
    let next =
        t.client.create_session(&CreateSession { workspace_from: Some(s.id.clone()), ..Default::default() }).await?;
    wait_for_objects(&s3, &next.id, &[("out/report.txt", 12), ("数据/销售数据 2026.bin", 20 << 20)]).await?;
    assert_eq!(objects(&s3, &s.id).await?, [], "the old session's objects are gone");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_write_back_only_what_changed() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let t = s3_server(&s3).await?;
    let s = t.session().await?;
    let up = r#"sandboxd_storage_bytes_total{direction="up","#;

    t.exec(&s.id, Language::Python, "open('large.bin','wb').write(b'x' * 3_000_000)").await?;
    wait_for_objects(&s3, &s.id, &[("large.bin", 3_000_000)]).await?;
    let before = metric(&t, up).await?;

    // A small change: only that file goes up, not the large one again.
    t.exec(&s.id, Language::Python, "open('small.txt','w').write('12345')").await?;
    wait_for_objects(&s3, &s.id, &[("large.bin", 3_000_000), ("small.txt", 5)]).await?;
    assert_eq!(metric(&t, up).await? - before, 5);

    // Nothing changed: nothing is sent. A deletion deletes the object.
    t.exec(&s.id, Language::Python, "x = 1").await?;
    t.exec(&s.id, Language::Python, "import os\nos.remove('large.bin')").await?;
    wait_for_objects(&s3, &s.id, &[("small.txt", 5)]).await?;
    assert_eq!(metric(&t, up).await? - before, 5);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_code_writes_between_executions_goes_up_on_the_interval() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let t = s3_server_syncing_every(&s3, 0.5).await?;
    let s = t.session().await?;
    // A thread of the kernel writes after its cell has ended: no execution follows to push it.
    let later = "import threading, time\ndef later():\n    time.sleep(1.5)\n    open('late.txt', 'w').write('late')\nthreading.Thread(target=later).start()";
    let e = t.exec(&s.id, Language::Python, later).await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    assert_eq!(objects(&s3, &s.id).await?, [], "not written yet when the cell ended");
    wait_for_objects(&s3, &s.id, &[("late.txt", 4)]).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_in_the_bucket_are_seen_by_a_stopped_session() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let t = s3_server(&s3).await?;
    let s = t.session().await?;
    t.client.upload(&s.id, "a.txt", b"old".to_vec(), None).await?;
    t.client.upload(&s.id, "b.txt", b"stays?".to_vec(), None).await?;
    t.client.stop_session(&s.id).await?;

    // Another replica changed a.txt, removed b.txt and added c.txt.
    let bucket = s3.bucket(BUCKET)?;
    let key = |p: &str| Key::from(format!("team-a/workspaces/{}/{p}", s.id));
    bucket.put(&key("a.txt"), b"new".to_vec().into()).await?;
    bucket.delete(&key("b.txt")).await?;
    bucket.put(&key("c.txt"), b"added".to_vec().into()).await?;

    assert_eq!(t.client.read_file(&s.id, "a.txt").await?, b"new");
    assert_eq!(t.client.read_file(&s.id, "c.txt").await?, b"added");
    let gone = t.client.read_file(&s.id, "b.txt").await.expect_err("deleted in the bucket");
    assert_eq!(gone.status().map(|s| s.as_u16()), Some(404));
    let e = t.exec(&s.id, Language::Python, "print(open('a.txt').read() + open('c.txt').read())").await?;
    assert_eq!(e.stdout, "newadded\n", "{e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_makes_the_server_not_ready() -> anyhow::Result<()> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let t = TestServer::start_unchecked(|c| configure_s3(c, "s3://nowhere/x", &format!("http://127.0.0.1:{closed}")))
        .await?;
    let (status, r) = t.client.readiness().await?;
    assert_eq!(status.as_u16(), 503);
    assert!(!r.storage.ok && r.storage.message.contains("workspace storage"), "{:?}", r.storage);
    // A session cannot start on storage that does not answer: 503, and nothing is left behind.
    let err = t.session().await.expect_err("storage is down");
    assert!(err.to_string().contains("storage"), "{err}");
    t.shutdown().await;
    Ok(())
}
